//! Times meta-training optimiser steps on the CUDA path (encoder forward and backward on the GPU,
//! episode losses on the CPU) and splits each step by phase.
//!
//! Usage: `gpu-train-step [STEPS] [EPISODES_PER_STEP] [--cpu]` (defaults 10 and 16), run from
//! the repository root; `--cpu` times the same steps on the CPU path instead (the baseline, on
//! all cores). The model has the MiniLM-L6 shape with random weights; the episodes are
//! synthetic, of Few-NERD-like size (5-way 1~2-shot: 5–10 support and 5–10 query sentences of
//! 18–34 words, a fifth of them two pieces long), so nothing is read besides the optimiser and
//! loss settings of `fixtures/train/tiny.toml` and nothing is downloaded. Every phase ends with
//! a stream synchronisation, so the split is exact and the sum is the step time.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ner_edge_trainer::cuda::cuda_unavailable_reason;
use ner_edge_trainer::cuda::train::{CudaTrainer, PhaseTimes};
use ner_edge_trainer::model::rng::SplitMix64;
use ner_edge_trainer::model::{random_init, EncoderConfig};
use ner_edge_trainer::train::config::TrainConfig;
use ner_edge_trainer::train::data::{EncodedEpisode, EncodedSentence};
use ner_edge_trainer::train::meta::{apply_update, compute_gradients, fresh_state, TrainState};
use ner_edge_trainer::train::step::StepWorker;

fn main() {
    if let Err(e) = run() {
        eprintln!("gpu-train-step: error: {e:#}");
        std::process::exit(2);
    }
}

fn fixture(rel: &str) -> PathBuf {
    let here = Path::new(rel);
    if here.exists() {
        return here.to_path_buf();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn below(rng: &mut SplitMix64, n: usize) -> usize {
    (rng.next_u64() % n as u64) as usize
}

/// One synthetic sentence with an entity of type `must` (and maybe one more of another type).
fn sentence(rng: &mut SplitMix64, n_way: usize, must: usize) -> EncodedSentence {
    let words = 18 + below(rng, 17);
    let mut labels = vec![0usize; words];
    let mut place = |ty: usize, rng: &mut SplitMix64| {
        let len = 1 + below(rng, 3);
        let start = below(rng, words - len);
        if labels[start..start + len].iter().all(|&l| l == 0) {
            labels[start] = 1 + 2 * ty;
            for l in &mut labels[start + 1..start + len] {
                *l = 2 + 2 * ty;
            }
        }
    };
    place(must, rng);
    if below(rng, 2) == 0 {
        let other = below(rng, n_way);
        place(other, rng);
    }
    if labels.iter().all(|&l| l == 0) {
        labels[0] = 1 + 2 * must;
    }
    let mut ids = vec![101u32];
    let mut first_piece = Vec::with_capacity(words);
    for _ in 0..words {
        first_piece.push(ids.len());
        let pieces = if below(rng, 5) == 0 { 2 } else { 1 };
        for _ in 0..pieces {
            ids.push(1000 + below(rng, 29_000) as u32);
        }
    }
    ids.push(102);
    EncodedSentence {
        shapes: vec![0; ids.len()],
        ids,
        first_piece,
        labels,
    }
}

fn episode(rng: &mut SplitMix64, index: usize) -> EncodedEpisode {
    let n_way = 5;
    let n_support = n_way + below(rng, n_way + 1);
    let n_query = n_way + below(rng, n_way + 1);
    let support = (0..n_support)
        .map(|j| sentence(rng, n_way, j % n_way))
        .collect();
    let query = (0..n_query)
        .map(|_| {
            let t = below(rng, n_way);
            sentence(rng, n_way, t)
        })
        .collect();
    EncodedEpisode {
        source: format!("synthetic-{}", index % 4),
        types: (0..n_way)
            .map(|k| format!("type{}", (index + k) % 12))
            .collect(),
        support,
        query,
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn run() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let cpu = args.iter().any(|a| a == "--cpu");
    args.retain(|a| a != "--cpu");
    let steps: usize = args
        .first()
        .map_or(Ok(10), |s| s.parse())
        .context("STEPS")?;
    let per_step: usize = args
        .get(1)
        .map_or(Ok(16), |s| s.parse())
        .context("EPISODES_PER_STEP")?;
    if steps == 0 || per_step == 0 {
        bail!("STEPS and EPISODES_PER_STEP must be positive");
    }
    let mut config = TrainConfig::load(&fixture("fixtures/train/tiny.toml"))?;
    config.episodes_per_step = per_step;
    config.threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(per_step));
    let c = EncoderConfig::minilm_l6();
    let mut state = fresh_state(&config, random_init(&c, 1), Vec::new())?;
    if cpu {
        return cpu_baseline(&config, &mut state, steps);
    }
    if let Some(why) = cuda_unavailable_reason() {
        bail!("no CUDA device ({why})");
    }
    let t = Instant::now();
    let mut trainer = CudaTrainer::open(&state, &config)?;
    println!(
        "device: {} ({}); kernels compiled, weights uploaded in {:.2} s",
        trainer.device().name,
        trainer.device().arch,
        t.elapsed().as_secs_f64()
    );
    println!(
        "model: MiniLM-L6 shape, {} parameters, random weights; {per_step} episodes per step; \
         losses on {} CPU threads",
        trainer.model().parameter_count(),
        config.threads
    );
    let mut rng = SplitMix64::new(7);
    let mut totals = Vec::new();
    let mut phases: Vec<PhaseTimes> = Vec::new();
    let mut pieces = Vec::new();
    for step in 0..=steps {
        let episodes: Vec<EncodedEpisode> = (0..per_step)
            .map(|i| episode(&mut rng, step * per_step + i))
            .collect();
        let t = Instant::now();
        let out = trainer.step(&mut state, &episodes, &[], &config, 1.0)?;
        let wall = t.elapsed().as_secs_f64();
        for ((source, name), v) in out.share.pushes {
            state.memory.push(&source, &name, &v)?;
        }
        state.step += 1;
        let loss = out.share.terms.iter().map(|t| t.total).sum::<f64>() / per_step as f64;
        let p = out.phases;
        println!(
            "{} {step}: {:.1} ms, {} pieces, loss {loss:.4}, |g| {:.3}",
            if step == 0 { "warm-up step" } else { "step" },
            wall * 1e3,
            out.tokens,
            out.grad_norm
        );
        if step > 0 {
            totals.push(wall);
            phases.push(p);
            pieces.push(out.tokens as f64);
        }
    }
    let step_s = median(&mut totals);
    println!(
        "\nmedian step over {steps} steps: {:.1} ms, {:.1} episodes/s, {:.0} pieces per step",
        step_s * 1e3,
        per_step as f64 / step_s,
        median(&mut pieces)
    );
    println!("| phase | median ms | share |");
    println!("|---|---:|---:|");
    type Phase = fn(&PhaseTimes) -> f64;
    let rows: [(&str, Phase); 6] = [
        ("batch packing + ids upload", |p| p.upload),
        ("encoder + heads forward (GPU)", |p| p.forward),
        ("transfers (outputs down, output grads up)", |p| p.transfers),
        ("episode losses (host)", |p| p.losses),
        ("encoder + heads backward (GPU)", |p| p.backward),
        ("norm, clip, AdamW", |p| p.optimiser),
    ];
    let sum: f64 = rows
        .iter()
        .map(|(_, f)| median(&mut phases.iter().map(f).collect::<Vec<_>>()))
        .sum();
    for (name, f) in rows {
        let m = median(&mut phases.iter().map(f).collect::<Vec<_>>());
        println!("| {name} | {:.2} | {:.1}% |", m * 1e3, 100.0 * m / sum);
    }
    println!("| sum of medians | {:.2} | |", sum * 1e3);
    Ok(())
}

/// The same synthetic steps through the CPU path of `ner-train meta` (one worker per thread).
fn cpu_baseline(config: &TrainConfig, state: &mut TrainState, steps: usize) -> Result<()> {
    let per_step = config.episodes_per_step;
    let mut workers: Vec<StepWorker> = (0..config.threads)
        .map(|_| {
            StepWorker::new(
                &state.weights.config,
                &state.heads,
                &state.classes,
                per_step,
                0,
                0.0,
            )
        })
        .collect();
    println!(
        "CPU baseline: MiniLM-L6 shape, random weights, {per_step} episodes per step on {} threads",
        config.threads
    );
    let mut rng = SplitMix64::new(7);
    let mut totals = Vec::new();
    for step in 0..=steps {
        let episodes: Vec<EncodedEpisode> = (0..per_step)
            .map(|i| episode(&mut rng, step * per_step + i))
            .collect();
        let t = Instant::now();
        let (terms, _, pushes) = compute_gradients(state, &episodes, &[], &mut workers, config)?;
        let norm = apply_update(state, &mut workers, config, 1.0)?;
        let wall = t.elapsed().as_secs_f64();
        for ((source, name), v) in pushes {
            state.memory.push(&source, &name, &v)?;
        }
        state.step += 1;
        let loss = terms.iter().map(|t| t.total).sum::<f64>() / per_step as f64;
        println!(
            "{} {step}: {:.1} ms, loss {loss:.4}, |g| {norm:.3}",
            if step == 0 { "warm-up step" } else { "step" },
            wall * 1e3
        );
        if step > 0 {
            totals.push(wall);
        }
    }
    let step_s = median(&mut totals);
    println!(
        "\nCPU median step over {steps} steps: {:.1} ms, {:.2} episodes/s",
        step_s * 1e3,
        per_step as f64 / step_s
    );
    Ok(())
}
