//! The CPU reference forward pass on the imported all-MiniLM-L6-v2 weights reproduces the golden
//! last hidden state (`minilm_l6_ref_output.json` of the shared reference directory) to 1e-5
//! absolute, also from the f16 copy that travels to GPU machines (to f16 rounding). Skipped when
//! the encoder (a download) is absent; the golden file must be there under
//! `NER_EDGE_REQUIRE_DATA=1`.

mod common;

use std::time::Instant;

use common::{max_abs_diff, minilm_and_reference, minilm_files, read_reference};
use ner_edge_trainer::{import_minilm, reference_forward, write_f16_copy};

#[test]
fn reference_forward_reproduces_minilm_last_hidden_state() {
    let Some((weights, reference)) = minilm_and_reference(128, 0) else {
        return;
    };
    let d = weights.config.hidden;
    let start = Instant::now();
    let out = reference_forward(&weights, std::slice::from_ref(&reference.input_ids));
    let elapsed = start.elapsed();
    let want: Vec<f32> = reference
        .last_hidden_state_f32
        .iter()
        .flatten()
        .copied()
        .collect();
    assert_eq!(want.len(), reference.input_ids.len() * d);
    let diff = max_abs_diff(&out.hidden[0], &want);
    println!(
        "MiniLM-L6 reference_forward on {:?} ({} tokens): max |diff| vs golden = {diff:.3e}, {:.2?}",
        reference.sentence,
        reference.input_ids.len(),
        elapsed
    );
    assert!(diff <= 1e-5, "max abs diff {diff}");
}

#[test]
fn the_f16_copy_imports_to_within_f16_rounding_of_the_golden_output() {
    let Some((reference_path, dir)) = minilm_files() else {
        return;
    };
    let reference = read_reference(&reference_path);
    let out = std::env::temp_dir().join(format!("ner-minilm-f16-{}", std::process::id()));
    let size = write_f16_copy(&dir, &out).unwrap();
    let original = std::fs::metadata(dir.join("model.safetensors"))
        .unwrap()
        .len();
    assert!(size < original / 2 + 100_000, "{size} vs {original}");
    let weights = import_minilm(&out, 128, 0).unwrap();
    let _ = std::fs::remove_dir_all(&out);
    let got = reference_forward(&weights, std::slice::from_ref(&reference.input_ids));
    let want: Vec<f32> = reference
        .last_hidden_state_f32
        .iter()
        .flatten()
        .copied()
        .collect();
    let diff = max_abs_diff(&got.hidden[0], &want);
    println!("f16 MiniLM copy: {size} bytes (f32 {original}); max |diff| vs golden {diff:.3e}");
    assert!(diff <= 1e-2, "max abs diff {diff} (3.1e-3 when written)");
    assert!(
        diff > 0.0,
        "the f16 copy should not be bit-identical to f32"
    );
}
