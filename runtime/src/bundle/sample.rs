//! Small, realistic bundles for tests (not a model: the encoder bytes are not ONNX).

use super::metadata::*;
use super::writer::BundleWriter;
use crate::error::Result;

const SAMPLE_VOCAB: &[&str] = &[
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "of", "in", "and", "to", "is", "was",
    "john", "smith", "paris", "london", "france", "google", "acme", "corp", "visited", "works",
    "at", "for", "new", "york", "city", "##s", "##ing", "##ed", "##er", ".", ",", "!", "?", "'",
    "-", "(", ")", "0", "1", "2", "3", "zurich", "北", "京",
];

const SAMPLE_TYPES: &[(&str, &str)] = &[
    ("PER", "person name"),
    ("LOC", "location"),
    ("ORG", "organisation"),
    ("MISC", "other named entity"),
];

/// Rows per label-memory slot in [`sample_metadata`].
#[doc(hidden)]
pub const SAMPLE_MEMORY_ROWS: usize = 2;

/// The vocabulary of the sample bundles: `vocab.txt` text, one token per line.
#[doc(hidden)]
pub fn sample_vocab() -> String {
    let mut s = SAMPLE_VOCAB.join("\n");
    s.push('\n');
    s
}

/// Valid metadata for a tiny BERT-shaped model with `n_types` entity types (PER, LOC, ORG, MISC,
/// then T4, T5, ...) of prototype width `type_dim`, one label-memory slot of
/// [`SAMPLE_MEMORY_ROWS`] rows per type, and a vocabulary of [`sample_vocab`].
#[doc(hidden)]
pub fn sample_metadata(n_types: usize, type_dim: usize) -> Metadata {
    let names: Vec<(String, String)> = (0..n_types)
        .map(|i| match SAMPLE_TYPES.get(i) {
            Some((n, d)) => (n.to_string(), d.to_string()),
            None => (format!("T{i}"), format!("test type {i}")),
        })
        .collect();
    Metadata {
        encoder: EncoderMeta {
            architecture: "bert".to_string(),
            hidden: 32,
            layers: 2,
            heads: 2,
            intermediate: 64,
            vocab_size: SAMPLE_VOCAB.len(),
            max_positions: 64,
            type_dim,
            weight_dtype: "f16".to_string(),
            shape_scheme: None,
            trained_window: None,
        },
        tokenizer: TokenizerMeta {
            kind: "wordpiece".to_string(),
            lowercase: true,
            strip_accents: true,
            tokenize_chinese_chars: true,
            unk_token: "[UNK]".to_string(),
            cls_token: "[CLS]".to_string(),
            sep_token: "[SEP]".to_string(),
            pad_token: "[PAD]".to_string(),
            continuing_subword_prefix: "##".to_string(),
            max_input_chars_per_word: 100,
            unk_score: None,
        },
        labels: LabelInventory {
            types: names
                .iter()
                .enumerate()
                .map(|(i, (name, description))| EntityType {
                    name: name.clone(),
                    prototype_row: i,
                    source: "conll2003".to_string(),
                    description: description.clone(),
                })
                .collect(),
            default_active: names.iter().map(|(n, _)| n.clone()).collect(),
        },
        transitions: CdtParams {
            matrix: [
                [0.5, -0.2, -4.0, 0.0, 0.0],
                [0.1, -0.3, 0.9, -0.4, -3.0],
                [0.2, -0.3, 0.7, -0.4, -3.0],
            ],
            start: [0.3, 0.1, -5.0],
            end: [0.0, 0.1, 0.1],
        },
        label_memory: LabelMemoryLayout {
            capacity: SAMPLE_MEMORY_ROWS,
            slots: names
                .iter()
                .enumerate()
                .map(|(i, (name, _))| MemorySlot {
                    type_name: name.clone(),
                    source: "conll2003".to_string(),
                    first_row: i * SAMPLE_MEMORY_ROWS,
                    rows: SAMPLE_MEMORY_ROWS,
                })
                .collect(),
        },
        provenance: Provenance {
            encoder_source: "random-init seed=7".to_string(),
            encoder_sha256: String::new(),
            training_data_sha256: String::new(),
            training_corpora: vec!["conll2003".to_string()],
            created_by: concat!("ner-edge ", env!("CARGO_PKG_VERSION"), " sample").to_string(),
            notes: "test bundle; encoder.onnx is not a real ONNX graph".to_string(),
        },
    }
}

fn pseudo_random(n: usize, seed: u64) -> impl Iterator<Item = u64> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n).map(move |_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    })
}

/// A writer holding [`sample_metadata`] and its required tensors: 300 bytes of fake
/// `encoder.onnx`, the [`sample_vocab`], prototypes `[n_types, type_dim]` f16 and label memory
/// `[n_types * SAMPLE_MEMORY_ROWS, type_dim]` f16 with deterministic values in [-1, 1].
#[doc(hidden)]
pub fn sample_writer(n_types: usize, type_dim: usize) -> Result<BundleWriter> {
    let mut w = BundleWriter::new(sample_metadata(n_types, type_dim));
    let onnx: Vec<u8> = pseudo_random(300, 1).map(|v| v as u8).collect();
    w.add_bytes(tensor_names::ENCODER_ONNX, &onnx)?;
    w.add_bytes(tensor_names::VOCAB, sample_vocab().as_bytes())?;
    let unit = |v: u64| (v >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
    let protos: Vec<f32> = pseudo_random(n_types * type_dim, 2).map(unit).collect();
    w.add_f16(tensor_names::PROTOTYPES, &[n_types, type_dim], &protos)?;
    let rows = n_types * SAMPLE_MEMORY_ROWS;
    let memory: Vec<f32> = pseudo_random(rows * type_dim, 3).map(unit).collect();
    w.add_f16(tensor_names::LABEL_MEMORY, &[rows, type_dim], &memory)?;
    Ok(w)
}

/// The bytes of [`sample_writer`]`(n_types, type_dim)`.
#[doc(hidden)]
pub fn sample_bundle_bytes(n_types: usize, type_dim: usize) -> Result<Vec<u8>> {
    sample_writer(n_types, type_dim)?.to_bytes()
}
