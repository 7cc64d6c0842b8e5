//! Where the encoder's time goes: runs a bundle's encoder graph through tract's plan with a
//! timer around every node and prints the share of each operator type.
//!
//! Usage: `encoder-profile BUNDLE [BATCH [LEN [REPS]]]` (defaults 8, 32, 20): REPS runs of a
//! `[BATCH, LEN]` batch (LEN counts every position), after one warm-up run, one thread. The plan
//! is built as the runtime builds it (`into_optimized`), without exposing the hidden state.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ner_edge::bundle::{tensor_names, Bundle};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::{eval, SimpleState};

fn main() {
    if let Err(e) = run() {
        eprintln!("encoder-profile: {e:#}");
        std::process::exit(2);
    }
}

fn arg(args: &[String], i: usize, default: usize) -> anyhow::Result<usize> {
    match args.get(i) {
        Some(s) => s
            .parse()
            .map_err(|e| anyhow::anyhow!("argument {}: {s:?}: {e}", i + 1)),
        None => Ok(default),
    }
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args
        .first()
        .ok_or_else(|| anyhow::anyhow!("usage: encoder-profile BUNDLE [BATCH [LEN [REPS]]]"))?;
    let (batch, len, reps) = (arg(&args, 1, 8)?, arg(&args, 2, 32)?, arg(&args, 3, 20)?);
    let bundle = Bundle::open(std::path::Path::new(path))?;
    let onnx = bundle.bytes(tensor_names::ENCODER_ONNX)?;
    let plan = tract_onnx::onnx()
        .model_for_read(&mut &onnx[..])?
        .into_optimized()?
        .into_runnable()?;
    let n = batch * len;
    let ids: Vec<i64> = (0..n).map(|i| 1000 + (i as i64 * 7919) % 19000).collect();
    let ones = vec![1i64; n];
    let with_shapes = bundle.metadata().encoder.shape_scheme.is_some();
    let inputs = || -> anyhow::Result<TVec<TValue>> {
        let t = |v: &[i64]| Tensor::from_shape(&[batch, len], v).map(Tensor::into_tvalue);
        let mut i = tvec!(t(&ids)?, t(&ones)?);
        if with_shapes {
            i.push(t(&ones)?);
        }
        Ok(i)
    };
    plan.run(inputs()?)?;
    let mut by_op: HashMap<String, (Duration, usize)> = HashMap::new();
    let start = Instant::now();
    for _ in 0..reps {
        let mut state = SimpleState::new(&plan)?;
        state.run_plan_with_eval(inputs()?, |ctx, op_state, node, input| {
            let t = Instant::now();
            let out = eval(ctx, op_state, node, input);
            let e = by_op.entry(node.op().name().to_string()).or_default();
            e.0 += t.elapsed();
            e.1 += 1;
            out
        })?;
    }
    let wall = start.elapsed();
    let mut rows: Vec<(String, (Duration, usize))> = by_op.into_iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1 .0));
    let timed: f64 = rows.iter().map(|r| r.1 .0.as_secs_f64()).sum();
    let reps_f = reps.max(1) as f64;
    println!(
        "batch {batch} x {len} positions: {:.2} ms per run, {:.0} positions/s",
        wall.as_secs_f64() * 1e3 / reps_f,
        (reps * n) as f64 / wall.as_secs_f64()
    );
    println!("| operator | share | ms per run | nodes |");
    println!("|---|---:|---:|---:|");
    for (op, (d, calls)) in &rows {
        println!(
            "| {op} | {:.1} % | {:.2} | {} |",
            100.0 * d.as_secs_f64() / timed,
            d.as_secs_f64() * 1e3 / reps_f,
            calls / reps.max(1)
        );
    }
    Ok(())
}
