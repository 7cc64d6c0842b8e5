//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod runs;

use std::path::{Path, PathBuf};

use ner_edge_trainer::{default_minilm_dir, import_minilm, ModelWeights};
use serde::Deserialize;

/// The golden MiniLM-L6 output in `../shared/reference`.
#[derive(Deserialize)]
pub struct MiniLmReference {
    pub sentence: String,
    pub input_ids: Vec<u32>,
    pub last_hidden_state_f32: Vec<Vec<f32>>,
}

pub fn shared_reference_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference/minilm_l6_ref_output.json")
}

/// Where the golden file and the MiniLM encoder are, or `None` (the calling test skips, and
/// this says why) when one of them is absent. Under `NER_EDGE_REQUIRE_DATA=1` a missing golden
/// file (it is in `../shared`) fails instead; the encoder is a download (`ner-tools
/// fetch-encoder`) that may be absent anywhere.
pub fn minilm_files() -> Option<(PathBuf, PathBuf)> {
    let reference_path = shared_reference_path();
    if !reference_path.exists() {
        assert!(
            std::env::var("NER_EDGE_REQUIRE_DATA").as_deref() != Ok("1"),
            "{} not found, and NER_EDGE_REQUIRE_DATA=1 forbids skipping",
            reference_path.display()
        );
        eprintln!("skipped: {} not found", reference_path.display());
        return None;
    }
    let Some(dir) = default_minilm_dir() else {
        eprintln!("skipped: neither NER_EDGE_MINILM_DIR, NER_EDGE_CACHE nor HOME is set");
        return None;
    };
    if !dir.join("model.safetensors").exists() {
        eprintln!(
            "skipped: no MiniLM encoder at {} (ner-tools fetch-encoder)",
            dir.display()
        );
        return None;
    }
    Some((reference_path, dir))
}

/// The golden output of `path`; a file that exists but cannot be read or parsed fails the test.
pub fn read_reference(path: &Path) -> MiniLmReference {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("cannot parse {}: {e}", path.display()))
}

/// The imported MiniLM weights (from `dir`) and the golden output, or `None` when the files
/// are absent ([`minilm_files`]); an import or parse error fails the test.
pub fn minilm_and_reference(type_dim: usize, seed: u64) -> Option<(ModelWeights, MiniLmReference)> {
    let (reference_path, dir) = minilm_files()?;
    let weights = import_minilm(&dir, type_dim, seed)
        .unwrap_or_else(|e| panic!("importing MiniLM from {}: {e:#}", dir.display()));
    Some((weights, read_reference(&reference_path)))
}

/// Largest absolute element-wise difference; panics if the lengths differ.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
