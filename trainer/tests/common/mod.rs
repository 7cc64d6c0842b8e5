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

/// The imported MiniLM weights and the golden output, or the reason they are unavailable.
pub fn minilm_and_reference(
    type_dim: usize,
    seed: u64,
) -> Result<(ModelWeights, MiniLmReference), String> {
    let reference_path = shared_reference_path();
    if !reference_path.exists() {
        return Err(format!("{} not found", reference_path.display()));
    }
    let dir = default_minilm_dir()
        .ok_or("neither NER_EDGE_MINILM_DIR, NER_EDGE_CACHE nor HOME is set")?;
    if !dir.join("model.safetensors").exists() {
        return Err(format!("no MiniLM encoder at {}", dir.display()));
    }
    let text = std::fs::read_to_string(&reference_path).map_err(|e| e.to_string())?;
    let reference: MiniLmReference = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let weights = import_minilm(&dir, type_dim, seed).map_err(|e| format!("{e:#}"))?;
    Ok((weights, reference))
}

/// Largest absolute element-wise difference; panics if the lengths differ.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
