//! The exported ONNX graph, run by tract, against the trainer's `reference_forward`: f32 exports
//! of small random models agree to 1e-5 on padded batches, single tokens and full-length
//! sequences, with the dims left symbolic or set explicitly; f16 exports agree to 1e-5 with the
//! reference on the f16-rounded weights; the MiniLM-L6 f16 export agrees to 1e-4 (skipped,
//! passing, when the MiniLM weights or the golden reference output are absent).

mod common;

use std::sync::Arc;

use common::{max_abs_diff, minilm_and_reference};
use ner_edge_trainer::model::BOUNDARY_LABELS;
use ner_edge_trainer::{
    export_onnx, random_init, reference_forward, EncoderConfig, ModelWeights, WeightDtype,
};
use tract_onnx::prelude::*;

type Runnable = Arc<TypedRunnableModel>;

fn small_config() -> EncoderConfig {
    EncoderConfig {
        vocab_size: 97,
        hidden: 24,
        layers: 2,
        heads: 3,
        intermediate: 40,
        max_positions: 40,
        type_dim: 12,
        layer_norm_eps: 1e-12,
        shape_classes: 0,
    }
}

fn load(bytes: &[u8]) -> Runnable {
    tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .expect("model_for_read")
        .into_optimized()
        .expect("into_optimized")
        .into_runnable()
        .expect("into_runnable")
}

/// Runs `model` on right-padded `ids` and returns `(boundary, types)` per sentence, padding cut.
fn run(model: &Runnable, ids: &[Vec<u32>], type_dim: usize) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let b = ids.len();
    let t = ids.iter().map(Vec::len).max().unwrap();
    let input = tract_ndarray::Array2::from_shape_fn((b, t), |(i, j)| {
        ids[i].get(j).map_or(0, |&x| x as i64)
    });
    let mask = tract_ndarray::Array2::from_shape_fn((b, t), |(i, j)| (j < ids[i].len()) as i64);
    let out = model
        .run(tvec!(Tensor::from(input).into(), Tensor::from(mask).into()))
        .expect("run");
    let boundary = out[0].to_plain_array_view::<f32>().unwrap();
    let types = out[1].to_plain_array_view::<f32>().unwrap();
    assert_eq!(boundary.shape(), &[b, t, BOUNDARY_LABELS]);
    assert_eq!(types.shape(), &[b, t, type_dim]);
    let cut = |a: &tract_ndarray::ArrayViewD<f32>, i: usize, width: usize| -> Vec<f32> {
        a.as_slice().unwrap()[i * t * width..][..ids[i].len() * width].to_vec()
    };
    (
        (0..b).map(|i| cut(&boundary, i, BOUNDARY_LABELS)).collect(),
        (0..b).map(|i| cut(&types, i, type_dim)).collect(),
    )
}

/// Max abs difference between tract and `reference_forward(reference)` over real tokens.
fn compare(model: &Runnable, reference: &ModelWeights, ids: &[Vec<u32>]) -> f32 {
    let want = reference_forward(reference, ids);
    let (boundary, types) = run(model, ids, reference.config.type_dim);
    let mut diff = 0.0f32;
    for i in 0..ids.len() {
        diff = diff.max(max_abs_diff(&boundary[i], &want.boundary[i]));
        diff = diff.max(max_abs_diff(&types[i], &want.types[i]));
    }
    diff
}

fn sentences() -> Vec<Vec<u32>> {
    vec![
        vec![1, 50, 96, 3, 17, 0, 42],
        (0..13).map(|i| (i * 7 + 5) % 97).collect(),
        vec![2, 95, 64],
    ]
}

#[test]
fn f32_export_matches_reference_on_padded_batch() {
    let w = random_init(&small_config(), 11);
    let model = load(&export_onnx(&w, WeightDtype::F32).unwrap());
    let diff = compare(&model, &w, &sentences());
    println!("F32 export, batch of 3 (7, 13, 3 tokens): max |tract - reference| = {diff:.3e}");
    assert!(diff <= 1e-5, "{diff}");
}

#[test]
fn f32_export_handles_single_token_single_sentence_and_full_length() {
    let w = random_init(&small_config(), 12);
    let model = load(&export_onnx(&w, WeightDtype::F32).unwrap());
    let full: Vec<u32> = (0..40).map(|i| (i * 13 + 1) % 97).collect();
    let cases: Vec<(&str, Vec<Vec<u32>>)> = vec![
        ("seq 1, batch 1", vec![vec![7]]),
        ("seq 1, batch 3", vec![vec![7], vec![96], vec![0]]),
        ("batch 1, seq 9", vec![vec![5, 4, 3, 2, 1, 0, 9, 8, 7]]),
        ("batch 2, seq max_positions", vec![full.clone(), vec![3, 3]]),
    ];
    for (name, ids) in cases {
        let diff = compare(&model, &w, &ids);
        println!("F32 export, {name}: max |tract - reference| = {diff:.3e}");
        assert!(diff <= 1e-5, "{name}: {diff}");
    }
}

#[test]
fn explicit_symbolic_facts_serve_any_shape() {
    use tract_onnx::tract_core::dims;
    let w = random_init(&small_config(), 14);
    let bytes = export_onnx(&w, WeightDtype::F32).unwrap();
    let mut model = tract_onnx::onnx().model_for_read(&mut &bytes[..]).unwrap();
    let batch = model.symbols.sym("batch");
    let seq = model.symbols.sym("seq");
    model
        .set_input_fact(0, i64::fact(dims!(batch, seq)).into())
        .unwrap();
    model
        .set_input_fact(1, i64::fact(dims!(batch, seq)).into())
        .unwrap();
    let model = model.into_optimized().unwrap().into_runnable().unwrap();
    for ids in [
        sentences(),
        vec![vec![4, 8, 15, 16, 23, 42]],
        sentences()[..2].to_vec(),
    ] {
        let diff = compare(&model, &w, &ids);
        println!(
            "explicit facts, batch {}: max |tract - reference| = {diff:.3e}",
            ids.len()
        );
        assert!(diff <= 1e-5, "{diff}");
    }
}

#[test]
fn f16_export_matches_reference_on_f16_weights() {
    let w = random_init(&small_config(), 13);
    let bytes16 = export_onnx(&w, WeightDtype::F16).unwrap();
    let bytes32 = export_onnx(&w, WeightDtype::F32).unwrap();
    println!(
        "export sizes: F16 {} bytes, F32 {} bytes",
        bytes16.len(),
        bytes32.len()
    );
    assert!(bytes16.len() < bytes32.len());
    let model = load(&bytes16);
    let diff = compare(&model, &w.f16_effective(), &sentences());
    let loose = compare(&model, &w, &sentences());
    println!(
        "F16 export, batch of 3: max |tract - reference(f16 weights)| = {diff:.3e}, \
         vs reference(f32 weights) = {loose:.3e}"
    );
    assert!(diff <= 1e-5, "{diff}");
    assert!(loose <= 1e-3, "{loose}");
}

#[test]
fn minilm_f16_export_matches_reference() {
    let Some((w, reference)) = minilm_and_reference(128, 3) else {
        return;
    };
    let bytes = export_onnx(&w, WeightDtype::F16).unwrap();
    let model = load(&bytes);
    let ids = vec![
        reference.input_ids.clone(),
        reference.input_ids[..5].to_vec(),
    ];
    let diff = compare(&model, &w.f16_effective(), &ids);
    let loose = compare(&model, &w, &ids);
    println!(
        "MiniLM F16 export ({} bytes): max |tract - reference(f16 weights)| = {diff:.3e}, \
         vs reference(f32 weights) = {loose:.3e}",
        bytes.len()
    );
    assert!(diff <= 1e-4, "{diff}");
    assert!(loose <= 2e-2, "{loose}");
}
