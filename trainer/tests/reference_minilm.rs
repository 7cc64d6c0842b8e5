//! The CPU reference forward pass on the imported all-MiniLM-L6-v2 weights reproduces the golden
//! last hidden state (`minilm_l6_ref_output.json` of the shared reference directory) to 1e-5
//! absolute. Skipped, passing, when the weights or the golden file are absent.

mod common;

use std::time::Instant;

use common::{max_abs_diff, minilm_and_reference};
use ner_edge_trainer::reference_forward;

#[test]
fn reference_forward_reproduces_minilm_last_hidden_state() {
    let (weights, reference) = match minilm_and_reference(128, 0) {
        Ok(x) => x,
        Err(reason) => {
            eprintln!("skipped: {reason}");
            return;
        }
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
