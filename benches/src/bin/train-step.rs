//! Times meta-training optimiser steps on CPU and splits one step's time by layer family.
//!
//! Usage: `train-step [CONFIG] [STEPS]` (default `configs/cross-domain.toml`, 3 steps). The
//! episodes are the config's own (its corpora must be readable); the encoder is the cached
//! all-MiniLM-L6-v2 when present, else random weights of the same shape (same speed).
//!
//! Part 1 runs whole steps exactly as `ner-train meta` does (all configured threads). Part 2
//! re-times the first step's episodes one layer family at a time on one thread, by calling each
//! layer's forward and backward on that episode's packed batch as often as the model does, and
//! reports each family's share of the summed single-thread time.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use ner_edge::tokenizer::{bert_uncased_meta, Tokenizer};
use ner_edge_trainer::backprop::attention::{attention_backward, attention_forward, probs_len};
use ner_edge_trainer::backprop::embeddings::{embeddings_backward, embeddings_forward};
use ner_edge_trainer::backprop::gelu::{gelu_backward, gelu_forward};
use ner_edge_trainer::backprop::layernorm::{layernorm_backward, layernorm_forward};
use ner_edge_trainer::backprop::linear::{linear_backward, linear_forward};
use ner_edge_trainer::backprop::{GradMode, PieceBatch};
use ner_edge_trainer::model::{random_init, EncoderConfig};
use ner_edge_trainer::train::config::TrainConfig;
use ner_edge_trainer::train::data::{self, EncodedEpisode};
use ner_edge_trainer::train::dense::DenseSampler;
use ner_edge_trainer::train::meta::{
    apply_update, class_names, compute_gradients, cpu_workers, dense_weights, distill_teacher,
    fresh_state, initial_weights, step_dense, step_episodes,
};

fn main() {
    if let Err(e) = run() {
        eprintln!("train-step: error: {e:#}");
        std::process::exit(2);
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config_path = PathBuf::from(args.first().map_or("configs/cross-domain.toml", |s| s));
    let steps: u64 = args.get(1).map_or(Ok(3), |s| s.parse()).context("STEPS")?;
    let config = TrainConfig::load(&config_path)?;
    let (weights, vocab) = match initial_weights(&config) {
        Ok((w, origin)) => {
            println!("encoder: {} ({})", origin.source, config_path.display());
            (w, origin.vocab_text)
        }
        Err(e) => {
            println!("encoder: random MiniLM-L6 shape ({e:#})");
            let c = EncoderConfig::minilm_l6();
            (
                random_init(&c, 1),
                ner_edge_trainer::export::fixture::MINILM_VOCAB.to_string(),
            )
        }
    };
    let tokenizer = Tokenizer::new(&bert_uncased_meta(), &vocab)?;
    let data = data::load(&config.data, &tokenizer)?;
    let mut state = fresh_state(&config, weights, class_names(&config, &data))?;
    let dense_sampler = if config.dense_on() {
        Some(DenseSampler::new(
            &data,
            &state.classes,
            &tokenizer,
            &dense_weights(&config),
        )?)
    } else {
        None
    };
    let teacher = distill_teacher(&config, &state.weights.config)?;
    let mut workers = cpu_workers(&config, &state, teacher.as_ref());

    let mut first: Vec<EncodedEpisode> = Vec::new();
    let mut times = Vec::new();
    for step in 0..=steps {
        let t0 = Instant::now();
        let episodes = step_episodes(&config, &data, step)?;
        let encoded: Vec<EncodedEpisode> = episodes
            .iter()
            .map(|e| data::encode_episode(e, &tokenizer))
            .collect::<Result<_>>()?;
        let dense = match &dense_sampler {
            Some(s) => step_dense(&config, s, &tokenizer, step)?,
            None => Vec::new(),
        };
        let t_sample = ms(t0);
        let t1 = Instant::now();
        let (_, _, pushes) = compute_gradients(&state, &encoded, &dense, &mut workers, &config)?;
        let t_grad = ms(t1);
        let t2 = Instant::now();
        apply_update(&mut state, &mut workers, &config, 1.0)?;
        for ((source, name), v) in pushes {
            state.memory.push(&source, &name, &v)?;
        }
        let t_update = ms(t2);
        let pieces: usize = encoded
            .iter()
            .flat_map(|e| e.support.iter().chain(&e.query))
            .chain(dense.iter().map(|d| &d.sentence))
            .map(|s| s.ids.len())
            .sum();
        if step == 0 {
            first = encoded;
            println!(
                "warm-up step: {:.0} ms ({pieces} pieces)",
                t_sample + t_grad + t_update
            );
            continue;
        }
        println!(
            "step {step}: {:.0} ms = sample+encode {t_sample:.1} + forward/loss/backward {t_grad:.0} + reduce/clip/AdamW {t_update:.0}; {pieces} pieces, {:.2} episodes/s",
            t_sample + t_grad + t_update,
            config.episodes_per_step as f64 / ((t_sample + t_grad + t_update) / 1e3)
        );
        times.push(t_sample + t_grad + t_update);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "median step over {} steps: {:.0} ms on {} threads, {} episodes and {} dense sequences per step",
        times.len(),
        times[times.len() / 2],
        workers.len(),
        config.episodes_per_step,
        config.dense.sequences_per_step
    );
    split_by_layer(&state.weights.config, &first)
}

#[derive(Default)]
struct Split {
    rows: Vec<(&'static str, f64, f64)>,
}

impl Split {
    fn add(&mut self, name: &'static str, fwd: f64, bwd: f64) {
        match self.rows.iter_mut().find(|r| r.0 == name) {
            Some(r) => {
                r.1 += fwd;
                r.2 += bwd;
            }
            None => self.rows.push((name, fwd, bwd)),
        }
    }
}

fn time(mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    f();
    ms(t)
}

fn split_by_layer(c: &EncoderConfig, episodes: &[EncodedEpisode]) -> Result<()> {
    let w = random_init(c, 3);
    let mut g = ner_edge_trainer::ModelWeights::zeros(c);
    let (d, i_dim) = (c.hidden, c.intermediate);
    let mut split = Split::default();
    for ep in episodes {
        let mut batch = PieceBatch::default();
        for s in ep.support.iter().chain(&ep.query) {
            batch.push_shaped(c, &s.ids, Some(&s.shapes))?;
        }
        let n = batch.tokens();
        let offsets = batch.offsets().to_vec();
        let x: Vec<f32> = (0..n * d)
            .map(|k| ((k % 97) as f32 - 48.0) / 50.0)
            .collect();
        let mut y = vec![0.0f32; n * d];
        let mut dx = vec![0.0f32; n * d];
        let mut big = vec![0.0f32; n * i_dim];
        let mut big_d = vec![0.0f32; n * i_dim];
        let mut cdf = vec![0.0f32; n * i_dim];
        let mut mean = vec![0.0f32; n];
        let mut rstd = vec![0.0f32; n];
        let mut probs = vec![0.0f32; probs_len(&offsets, c.heads)];
        let (mut dq, mut dk, mut dv) = (vec![0.0; n * d], vec![0.0; n * d], vec![0.0; n * d]);
        let mut scratch = Vec::new();
        let mut dq2 = vec![0.0f32; n * d];
        let l0 = &w.layers[0];
        let gl = &mut g.layers[0];
        let layers = c.layers as f64;

        let f = time(|| {
            embeddings_forward(
                &w.word_embeddings,
                &w.position_embeddings,
                &w.token_type_embedding,
                (!w.shape_embeddings.is_empty()).then(|| (&w.shape_embeddings[..], batch.shapes())),
                batch.ids(),
                &offsets,
                &mut y,
            )
        });
        let b = time(|| {
            embeddings_backward(
                batch.ids(),
                &offsets,
                &x,
                &mut g.word_embeddings,
                &mut g.position_embeddings,
                &mut g.token_type_embedding,
                (!g.shape_embeddings.is_empty())
                    .then(|| (&mut g.shape_embeddings[..], batch.shapes())),
            )
        });
        split.add("embeddings (gather / scatter-add)", f, b);

        let mut f = 0.0;
        let mut b = 0.0;
        for _ in 0..4 {
            f += time(|| linear_forward(&x, &l0.query.weight, &l0.query.bias, &mut y));
            b += time(|| {
                linear_backward(
                    &x,
                    &l0.query.weight,
                    &y,
                    &mut dx,
                    GradMode::Assign,
                    &mut gl.query.weight,
                    &mut gl.query.bias,
                )
            });
        }
        split.add(
            "attention projections Q/K/V/O (GEMM)",
            f * layers,
            b * layers,
        );

        let f = time(|| attention_forward(&x, &y, &dx, &offsets, c.heads, &mut probs, &mut dq));
        let b = time(|| {
            attention_backward(
                &x,
                &y,
                &dx,
                &probs,
                &dq,
                &offsets,
                c.heads,
                &mut dq2,
                &mut dk,
                &mut dv,
                &mut scratch,
            )
        });
        split.add("attention scores/softmax/context", f * layers, b * layers);

        let f = time(|| linear_forward(&x, &l0.ffn_in.weight, &l0.ffn_in.bias, &mut big));
        let b = time(|| {
            linear_backward(
                &x,
                &l0.ffn_in.weight,
                &big,
                &mut dx,
                GradMode::Assign,
                &mut gl.ffn_in.weight,
                &mut gl.ffn_in.bias,
            )
        });
        let f2 = time(|| linear_forward(&big, &l0.ffn_out.weight, &l0.ffn_out.bias, &mut y));
        let b2 = time(|| {
            linear_backward(
                &big,
                &l0.ffn_out.weight,
                &y,
                &mut big_d,
                GradMode::Assign,
                &mut gl.ffn_out.weight,
                &mut gl.ffn_out.bias,
            )
        });
        split.add("FFN in/out (GEMM)", (f + f2) * layers, (b + b2) * layers);

        let f = time(|| gelu_forward(&big, &mut big_d, &mut cdf));
        let b = time(|| gelu_backward(&big, &cdf, &mut big_d));
        split.add("GELU", f * layers, b * layers);

        let f = time(|| {
            layernorm_forward(
                &x,
                &l0.attn_ln.gamma,
                &l0.attn_ln.beta,
                1e-12,
                &mut y,
                &mut mean,
                &mut rstd,
            )
        });
        let b = time(|| {
            layernorm_backward(
                &x,
                &mean,
                &rstd,
                &l0.attn_ln.gamma,
                &y,
                &mut dx,
                &mut gl.attn_ln.gamma,
                &mut gl.attn_ln.beta,
            )
        });
        split.add(
            "layer norms",
            f * (2.0 * layers + 1.0),
            b * (2.0 * layers + 1.0),
        );

        let mut head_y = vec![0.0f32; n * c.type_dim];
        let f = time(|| linear_forward(&x, &w.types.weight, &w.types.bias, &mut head_y));
        let b = time(|| {
            linear_backward(
                &x,
                &w.types.weight,
                &head_y,
                &mut dx,
                GradMode::Assign,
                &mut g.types.weight,
                &mut g.types.bias,
            )
        });
        split.add("heads (type projection, boundary)", f, b);
    }
    let total: f64 = split.rows.iter().map(|r| r.1 + r.2).sum();
    println!(
        "\nsingle-thread time of the first step's {} episodes by layer family (ms; the step's threads split this):",
        episodes.len()
    );
    println!("| layer family | forward | backward | share |");
    println!("|---|---:|---:|---:|");
    let mut rows = split.rows;
    rows.sort_by(|a, b| (b.1 + b.2).total_cmp(&(a.1 + a.2)));
    for (name, f, b) in &rows {
        println!(
            "| {name} | {f:.1} | {b:.1} | {:.1}% |",
            100.0 * (f + b) / total
        );
    }
    println!("| total | | | {total:.0} ms |");
    println!("biggest cost: {}", rows[0].0);
    Ok(())
}
