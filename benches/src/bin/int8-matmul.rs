//! Is int8 arithmetic faster than f32 in tract on this CPU? Times one linear layer
//! `Y[M, N] = X[M, K] · W[K, N]` as tract runs it from ONNX, three ways: f32 `MatMul`; int8
//! weights dequantised at load (what bundles do today: `DequantizeLinear` folded into an f32
//! `MatMul`, int8 storage only); and int8 arithmetic (`DynamicQuantizeLinear` of X to u8,
//! `MatMulInteger` u8 × i8 → i32, then the two scales).
//!
//! Usage: `int8-matmul [M [REPS]]` (defaults 256, 50) over the MiniLM-L6 layer shapes
//! (K, N) = (384, 384), (384, 1536), (1536, 384); one thread. Prints a markdown table: ms per
//! product, GFLOP/s and the largest error of each int8 way relative to the largest |Y| of f32.

use std::time::Instant;

use ner_edge_trainer::export::onnx::{value_info, Dim};
use tract_onnx::pb::{
    tensor_proto::DataType, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    TensorProto,
};
use tract_onnx::prelude::*;

fn main() {
    if let Err(e) = run() {
        eprintln!("int8-matmul: {e:#}");
        std::process::exit(2);
    }
}

/// How the product is computed.
#[derive(Clone, Copy, PartialEq)]
enum Way {
    F32,
    Int8Storage,
    Int8Arithmetic,
}

fn tensor(name: &str, dims: &[i64], dt: DataType, raw: Vec<u8>) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: dt as i32,
        raw_data: raw,
        ..TensorProto::default()
    }
}

fn node(op: &str, inputs: &[&str], outputs: &[&str], attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        name: outputs[0].to_string(),
        op_type: op.into(),
        attribute,
        ..NodeProto::default()
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The one-product graph of `way` with weight `w` (`[k, n]`, row-major).
fn graph(way: Way, m: usize, k: usize, n: usize, w: &[f32]) -> ModelProto {
    let (k64, n64) = (k as i64, n as i64);
    let mut scales = vec![0f32; n];
    for (j, s) in scales.iter_mut().enumerate() {
        let amax = (0..k).map(|i| w[i * n + j].abs()).fold(0f32, f32::max);
        *s = if amax > 0.0 { amax / 127.0 } else { 1.0 };
    }
    let wq: Vec<u8> = (0..k * n)
        .map(|i| (w[i] / scales[i % n]).round().clamp(-127.0, 127.0) as i8 as u8)
        .collect();
    let (nodes, inits) = match way {
        Way::F32 => (
            vec![node("MatMul", &["x", "w"], &["y"], vec![])],
            vec![tensor("w", &[k64, n64], DataType::Float, f32_bytes(w))],
        ),
        Way::Int8Storage => (
            vec![
                node(
                    "DequantizeLinear",
                    &["wq", "ws"],
                    &["wd"],
                    vec![AttributeProto {
                        name: "axis".into(),
                        i: 1,
                        r#type: tract_onnx::pb::attribute_proto::AttributeType::Int as i32,
                        ..AttributeProto::default()
                    }],
                ),
                node("MatMul", &["x", "wd"], &["y"], vec![]),
            ],
            vec![
                tensor("wq", &[k64, n64], DataType::Int8, wq),
                tensor("ws", &[n64], DataType::Float, f32_bytes(&scales)),
            ],
        ),
        Way::Int8Arithmetic => (
            vec![
                node("DynamicQuantizeLinear", &["x"], &["xq", "xs", "xz"], vec![]),
                node("MatMulInteger", &["xq", "wq", "xz", "wz"], &["yi"], vec![]),
                node(
                    "Cast",
                    &["yi"],
                    &["yf"],
                    vec![AttributeProto {
                        name: "to".into(),
                        i: DataType::Float as i64,
                        r#type: tract_onnx::pb::attribute_proto::AttributeType::Int as i32,
                        ..AttributeProto::default()
                    }],
                ),
                node("Mul", &["yf", "xs"], &["ys"], vec![]),
                node("Mul", &["ys", "ws"], &["y"], vec![]),
            ],
            vec![
                tensor("wq", &[k64, n64], DataType::Int8, wq),
                tensor("wz", &[], DataType::Int8, vec![0]),
                tensor("ws", &[n64], DataType::Float, f32_bytes(&scales)),
            ],
        ),
    };
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(GraphProto {
            name: "linear".into(),
            node: nodes,
            initializer: inits,
            input: vec![value_info(
                "x",
                DataType::Float,
                &[Dim::Fixed(m as i64), Dim::Fixed(k64)],
            )],
            output: vec![value_info(
                "y",
                DataType::Float,
                &[Dim::Fixed(m as i64), Dim::Fixed(n64)],
            )],
            ..GraphProto::default()
        }),
        ..ModelProto::default()
    }
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let m: usize = args.first().map_or(Ok(256), |s| s.parse())?;
    let reps: usize = args.get(1).map_or(Ok(50), |s| s.parse())?;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    println!("| K × N | way | ms per product | GFLOP/s | max error / max |Y| |");
    println!("|---|---|---:|---:|---:|");
    for (k, n) in [(384usize, 384usize), (384, 1536), (1536, 384)] {
        let w: Vec<f32> = (0..k * n).map(|_| next() * 0.05).collect();
        let x: Vec<f32> = (0..m * k).map(|_| next()).collect();
        let input = Tensor::from_shape(&[m, k], &x)?;
        let mut reference: Option<Vec<f32>> = None;
        for way in [Way::F32, Way::Int8Storage, Way::Int8Arithmetic] {
            let plan = tract_onnx::onnx()
                .model_for_proto_model(&graph(way, m, k, n, &w))?
                .into_optimized()?
                .into_runnable()?;
            let y = plan.run(tvec!(input.clone().into_tvalue()))?;
            let y: Vec<f32> = y[0].to_plain_array_view::<f32>()?.iter().copied().collect();
            let start = Instant::now();
            for _ in 0..reps {
                plan.run(tvec!(input.clone().into_tvalue()))?;
            }
            let secs = start.elapsed().as_secs_f64() / reps.max(1) as f64;
            let error = match &reference {
                None => {
                    reference = Some(y);
                    0.0
                }
                Some(r) => {
                    let max = r.iter().fold(0f32, |a, v| a.max(v.abs()));
                    let err = r
                        .iter()
                        .zip(&y)
                        .fold(0f32, |a, (p, q)| a.max((p - q).abs()));
                    err / max
                }
            };
            let name = match way {
                Way::F32 => "f32",
                Way::Int8Storage => "int8 storage (dequantised at load)",
                Way::Int8Arithmetic => "int8 arithmetic (dynamic u8 × i8)",
            };
            println!(
                "| {k} × {n} | {name} | {:.3} | {:.1} | {error:.4} |",
                secs * 1e3,
                2.0 * (m * k * n) as f64 / secs / 1e9
            );
        }
    }
    Ok(())
}
