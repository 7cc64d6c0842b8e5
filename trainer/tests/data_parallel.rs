//! Data-parallel training on the CPU: N ranks (threads of this process, exchanging through
//! [`ThreadGroup`]) must train the same model as one rank that computes every episode of each
//! step itself.

use std::path::Path;

use ner_edge_trainer::cuda::Backend;
use ner_edge_trainer::train::collective::{Collective, ThreadGroup};
use ner_edge_trainer::train::config::TrainConfig;
use ner_edge_trainer::train::meta::{load_state, TrainState, CHECKPOINT};
use ner_edge_trainer::train::{run_meta_on, run_meta_ranked};

mod common;
use common::runs::{logged_losses, run_options as opts, temp_run_dir};

fn config(name: &str) -> TrainConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/train")
        .join(name);
    TrainConfig::load(&path).unwrap()
}

/// Runs `config` as `n` thread ranks writing into `out`; returns each rank's result.
fn run_ranks(config: &TrainConfig, out: &Path, n: usize) -> Vec<anyhow::Result<()>> {
    let ranks = ThreadGroup::ranks(n).unwrap();
    std::thread::scope(|s| {
        let handles: Vec<_> = ranks
            .into_iter()
            .map(|mut g| s.spawn(move || run_meta_ranked(config, &opts(out), Backend::Cpu, &mut g)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// `‖a − b‖ / ‖a‖` over all weights, over all first moments and over all second moments of
/// AdamW (the largest of the three): the weights as one vector, so that a tensor whose exact
/// gradient is zero (the attention key bias) and whose values are rounding noise is not
/// compared with itself.
fn relative_difference(a: &TrainState, b: &TrainState) -> f64 {
    let weights = |s: &TrainState| -> Vec<f32> {
        s.weights
            .tensors()
            .into_iter()
            .chain(s.heads.tensors())
            .chain(s.classes.tensors())
            .flat_map(|(_, v)| v.to_vec())
            .collect()
    };
    let rel = |x: &[f32], y: &[f32]| -> f64 {
        assert_eq!(x.len(), y.len());
        let (mut d, mut n) = (0.0f64, 0.0f64);
        for (p, q) in x.iter().zip(y) {
            d += (f64::from(*p) - f64::from(*q)).powi(2);
            n += f64::from(*p).powi(2);
        }
        (d / n.max(f64::MIN_POSITIVE)).sqrt()
    };
    [
        rel(&weights(a), &weights(b)),
        rel(&a.opt.m.concat(), &b.opt.m.concat()),
        rel(&a.opt.v.concat(), &b.opt.v.concat()),
    ]
    .into_iter()
    .fold(0.0, f64::max)
}

fn check_ranks_match_one_rank(file: &str, worlds: &[usize]) {
    let mut cfg = config(file);
    cfg.steps = 5;
    cfg.episodes_per_step = 6;
    cfg.checkpoint_every = 0;
    let single_dir = temp_run_dir("dp", &format!("{file}-single"));
    run_meta_on(&cfg, &opts(&single_dir), Backend::Cpu).unwrap();
    let single = load_state(&cfg, &single_dir.join(CHECKPOINT)).unwrap();
    let single_losses = logged_losses(&single_dir);
    assert_eq!(single.step, 5);

    for &n in worlds {
        let dir = temp_run_dir("dp", &format!("{file}-ranks{n}"));
        for (rank, r) in run_ranks(&cfg, &dir, n).into_iter().enumerate() {
            r.unwrap_or_else(|e| panic!("rank {rank} of {n}: {e:#}"));
        }
        let ranked = load_state(&cfg, &dir.join(CHECKPOINT)).unwrap();
        assert_eq!(ranked.step, single.step);
        assert_eq!(ranked.opt.t, single.opt.t);
        let rel = relative_difference(&single, &ranked);
        eprintln!("{file}: {n} ranks vs one rank after 5 steps: relative difference {rel:e}");
        assert!(
            rel <= 1e-6,
            "{file}: {n} ranks differ from one rank by {rel:e} (relative)"
        );
        let slots = |s: &TrainState| -> Vec<(String, String, usize, Vec<f32>)> {
            s.memory
                .slots()
                .map(|(a, b, n, rows)| (a.to_string(), b.to_string(), n, rows.to_vec()))
                .collect()
        };
        let (want, got) = (slots(&single), slots(&ranked));
        assert_eq!(
            want.len(),
            got.len(),
            "{file}: label memory slots of {n} ranks"
        );
        for (w, g) in want.iter().zip(&got) {
            assert_eq!(
                (&w.0, &w.1, w.2),
                (&g.0, &g.1, g.2),
                "{file}: memory slot order"
            );
            for (x, y) in w.3.iter().zip(&g.3) {
                assert!(
                    (x - y).abs() <= 1e-5 * x.abs().max(1.0),
                    "{file}: memory row {x} vs {y}"
                );
            }
        }
        let losses = logged_losses(&dir);
        assert_eq!(losses.len(), single_losses.len());
        for (a, b) in losses.iter().zip(&single_losses) {
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "{file}: loss {a} vs {b}"
            );
        }
        assert!(
            dir.join("model.nerb").is_file(),
            "rank 0 exports the bundle"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_dir_all(&single_dir);
}

#[test]
fn episode_training_on_n_ranks_matches_one_rank_with_all_the_episodes() {
    check_ranks_match_one_rank("tiny.toml", &[1, 2, 3]);
}

#[test]
fn dense_training_on_n_ranks_matches_one_rank() {
    check_ranks_match_one_rank("tiny-dense.toml", &[2]);
}

#[test]
fn ranks_with_different_configs_refuse_to_start() {
    let cfg = config("tiny.toml");
    let mut other = cfg.clone();
    other.seed += 1;
    let dir = temp_run_dir("dp", "mismatch");
    let ranks = ThreadGroup::ranks(2).unwrap();
    let results: Vec<anyhow::Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = ranks
            .into_iter()
            .zip([&cfg, &other])
            .map(|(mut g, c)| {
                let out = dir.join(format!("rank{}", g.rank()));
                s.spawn(move || run_meta_ranked(c, &opts(&out), Backend::Cpu, &mut g))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &results {
        let e = format!("{:#}", r.as_ref().unwrap_err());
        assert!(e.contains("another config or initial state"), "{e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
