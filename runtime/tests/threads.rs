//! Output does not depend on `--threads`: the encoder batches are formed from the whole input
//! whatever the thread count, and threads take whole batches, so every score is bit-identical.
//!
//! Checked with the shipped default model on `fixtures/samples/news-long.txt` plus its lines
//! joined in pairs (so batches mix lengths), through the library (every `f32` score compared
//! bit for bit) and through `ner-edge predict --threads N` (byte-identical output).

use std::path::Path;
use std::process::Command;

use ner_edge::bundle::Bundle;
use ner_edge::pipeline::{TaggedText, Tagger};

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The fixture's lines, then every pair of consecutive lines joined with a space.
fn texts() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("fixtures/samples/news-long.txt")).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    out.extend(lines.windows(2).map(|w| format!("{} {}", w[0], w[1])));
    out
}

/// Entity spans, word labels and entity scores (as bits) of one tagged text.
type Exact = (Vec<std::ops::Range<usize>>, Vec<usize>, Vec<u32>);

/// Every score of `t` as bits, so that comparisons are exact.
fn bits(t: &[TaggedText]) -> Vec<Exact> {
    t.iter()
        .map(|x| {
            (
                x.entities.iter().map(|e| e.span.clone()).collect(),
                x.labels.clone(),
                x.entities.iter().map(|e| e.score.to_bits()).collect(),
            )
        })
        .collect()
}

#[test]
fn tagging_is_bit_identical_for_any_thread_count() {
    let bundle = Bundle::open(&root().join("models/default.nerb")).expect("models/default.nerb");
    let tagger = Tagger::new(&bundle, None).unwrap();
    let texts = texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let one = tagger.tag(&refs, 1).unwrap();
    assert!(one.iter().map(|t| t.entities.len()).sum::<usize>() > 50);
    for threads in [2, 3, 4] {
        let many = tagger.tag(&refs, threads).unwrap();
        assert_eq!(bits(&one), bits(&many), "tag with {threads} threads");
    }
    let words: Vec<Vec<&str>> = refs.iter().map(|t| t.split(' ').collect()).collect();
    let one = tagger.tag_words(&words, 1).unwrap();
    for threads in [2, 4] {
        let many = tagger.tag_words(&words, threads).unwrap();
        assert_eq!(bits(&one), bits(&many), "tag_words with {threads} threads");
    }
}

#[test]
fn predict_output_is_byte_identical_for_1_2_and_4_threads() {
    let dir = std::env::temp_dir().join(format!("ner-edge-threads-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("input.txt");
    std::fs::write(&input, texts().join("\n") + "\n").unwrap();
    let run = |threads: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_ner-edge"))
            .arg("predict")
            .arg("--bundle")
            .arg(root().join("models/default.nerb"))
            .args(["--threads", threads])
            .arg(&input)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let one = run("1");
    assert!(one.len() > 10_000);
    assert_eq!(one, run("2"), "--threads 2 differs from --threads 1");
    assert_eq!(one, run("4"), "--threads 4 differs from --threads 1");
    std::fs::remove_dir_all(&dir).ok();
}
