//! `ner-train meta --gpus N`: the launcher's errors on any machine, and on a CUDA machine with
//! NCCL a one-GPU NCCL run against the plain CUDA run (same weights to 1e-6 relative), plus
//! two in-process ranks sharing the GPU against one rank.
//!
//! The GPU tests print `skipped: ...` and pass without a usable CUDA device or without NCCL
//! (found on the library path, or as `$NER_EDGE_NCCL_DIR/libnccl.so.2`), unless
//! `NER_EDGE_REQUIRE_CUDA=1`, which turns the skip into a failure. Multi-GPU runs are not
//! tested here: the machines lent to this project have one GPU.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::runs::{fixture, temp_run_dir};

/// `ner-train meta --config CONFIG --out OUT EXTRA...` with the `ner-train` of this build, or
/// `$NER_TRAIN_BIN` (the GPU scripts copy the binaries to a machine without this build tree):
/// whether it succeeded, and its stderr.
fn meta(config: &Path, out: &Path, extra: &[&str]) -> (bool, String) {
    let exe = std::env::var_os("NER_TRAIN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ner-train")));
    let out = Command::new(exe)
        .arg("meta")
        .arg("--config")
        .arg(config)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .expect("running ner-train");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn gpus_with_the_cpu_backend_or_zero_gpus_is_refused() {
    let config = fixture("fixtures/train/tiny.toml");
    let out = temp_run_dir("nccl", "refused");
    let (ok, err) = meta(&config, &out, &["--gpus", "1", "--backend", "cpu"]);
    assert!(!ok);
    assert!(err.contains("cannot run with --backend cpu"), "{err}");
    let (ok, err) = meta(&config, &out, &["--gpus", "0"]);
    assert!(!ok);
    assert!(err.contains("at least 1"), "{err}");
    let _ = std::fs::remove_dir_all(&out);
}

#[cfg(feature = "cuda")]
#[test]
fn a_rank_that_cannot_start_fails_the_launch_and_says_why() {
    if ner_edge_trainer::cuda::cuda_unavailable_reason().is_none() {
        println!("skipped: this machine has CUDA; the failing-rank path needs one without");
        return;
    }
    let config = fixture("fixtures/train/tiny.toml");
    let out = temp_run_dir("nccl", "no-gpu");
    let (ok, err) = meta(&config, &out, &["--gpus", "1", "--quiet"]);
    assert!(!ok);
    assert!(err.contains("rank 0 failed"), "{err}");
    assert!(err.contains("CUDA"), "the rank says why: {err}");
    let _ = std::fs::remove_dir_all(&out);
}

#[cfg(feature = "cuda")]
mod with_cuda {
    use ner_edge_trainer::cuda::Backend;
    use ner_edge_trainer::train::collective::ThreadGroup;
    use ner_edge_trainer::train::config::TrainConfig;
    use ner_edge_trainer::train::meta::{load_state, TrainState, CHECKPOINT};
    use ner_edge_trainer::train::{run_meta_on, run_meta_ranked};

    use super::common::runs::{fixture, run_options as opts, temp_run_dir};
    use super::meta;

    /// Whether CUDA and NCCL can be used; prints the skip line (or panics under
    /// `NER_EDGE_REQUIRE_CUDA=1`).
    fn cuda_and_nccl_or_skip() -> bool {
        let why = ner_edge_trainer::cuda::cuda_unavailable_reason().or_else(|| {
            if std::env::var_os(ner_edge_trainer::cuda::nccl::NCCL_DIR_VAR).is_some() {
                None
            } else {
                ner_edge_trainer::cuda::nccl::nccl_unavailable_reason()
            }
        });
        match why {
            None => true,
            Some(why) => {
                if std::env::var("NER_EDGE_REQUIRE_CUDA").as_deref() == Ok("1") {
                    panic!("NER_EDGE_REQUIRE_CUDA=1 but CUDA or NCCL is unusable: {why}");
                }
                println!("skipped: {why}");
                false
            }
        }
    }

    fn config() -> TrainConfig {
        let mut cfg = TrainConfig::load(&fixture("fixtures/train/tiny.toml")).unwrap();
        cfg.steps = 6;
        cfg.episodes_per_step = 4;
        cfg.checkpoint_every = 0;
        cfg
    }

    fn weights(s: &TrainState) -> Vec<f32> {
        s.weights
            .tensors()
            .into_iter()
            .chain(s.heads.tensors())
            .flat_map(|(_, v)| v.to_vec())
            .collect()
    }

    fn relative(a: &[f32], b: &[f32]) -> f64 {
        let (mut d, mut n) = (0.0f64, 0.0f64);
        for (p, q) in a.iter().zip(b) {
            d += (f64::from(*p) - f64::from(*q)).powi(2);
            n += f64::from(*p).powi(2);
        }
        (d / n).sqrt()
    }

    #[test]
    fn one_gpu_over_nccl_and_two_ranks_sharing_it_train_the_cuda_model() {
        if !cuda_and_nccl_or_skip() {
            return;
        }
        let cfg = config();
        let plain = temp_run_dir("nccl", "cuda-plain");
        run_meta_on(&cfg, &opts(&plain), Backend::Cuda).unwrap();
        let want = weights(&load_state(&cfg, &plain.join(CHECKPOINT)).unwrap());

        let cfg_file = plain.join("config.toml");
        let nccl = temp_run_dir("nccl", "cuda-nccl");
        let (ok, err) = meta(&cfg_file, &nccl, &["--gpus", "1", "--quiet"]);
        assert!(ok, "ner-train --gpus 1 failed: {err}");
        let got = weights(&load_state(&cfg, &nccl.join(CHECKPOINT)).unwrap());
        let rel = relative(&want, &got);
        println!("NCCL world size 1 vs plain CUDA: relative difference {rel:e}");
        assert!(rel <= 1e-6, "NCCL world size 1 vs plain CUDA: {rel:e}");

        let shared = temp_run_dir("nccl", "cuda-threads");
        let ranks = ThreadGroup::ranks(2).unwrap();
        std::thread::scope(|s| {
            let handles: Vec<_> = ranks
                .into_iter()
                .map(|mut g| {
                    let (cfg, shared) = (&cfg, &shared);
                    s.spawn(move || run_meta_ranked(cfg, &opts(shared), Backend::Cuda, &mut g))
                })
                .collect();
            for h in handles {
                h.join().unwrap().unwrap();
            }
        });
        let got = weights(&load_state(&cfg, &shared.join(CHECKPOINT)).unwrap());
        let rel = relative(&want, &got);
        println!("2 CUDA ranks (host all-reduce) vs 1: relative difference {rel:e}");
        assert!(rel <= 1e-6, "2 CUDA ranks vs 1: {rel:e}");
        for d in [plain, nccl, shared] {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
