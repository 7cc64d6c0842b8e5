//! The CUDA training path against the CPU reference: (a) forward and backward of a small random
//! model on odd-length sentences give the same outputs and parameter gradients to 1e-5
//! relative (each tensor against its largest value, at least 1% of the model's largest
//! gradient), without and with word-shape input; (b) 20 meta-training steps on
//! `fixtures/train/tiny.toml` (episodes) and on `fixtures/train/tiny-dense.toml` (the dense
//! objective: word shapes, dense sequences, class vectors, the "other" type) give the same
//! losses on both backends to 1e-4 relative.
//!
//! Without a usable CUDA device each test prints `skipped: no CUDA device (<reason>)` and
//! passes, unless `NER_EDGE_REQUIRE_CUDA=1`, which turns the skip into a failure. Run from the
//! repository root (the fixtures are found relative to it, or to the crate when built here).

mod common;
use common::runs::fixture;

/// Whether CUDA can be used; prints the skip line (or panics under `NER_EDGE_REQUIRE_CUDA=1`).
fn cuda_or_skip() -> bool {
    match ner_edge_trainer::cuda::cuda_unavailable_reason() {
        None => true,
        Some(why) => {
            if std::env::var("NER_EDGE_REQUIRE_CUDA").as_deref() == Ok("1") {
                panic!("NER_EDGE_REQUIRE_CUDA=1 but CUDA is unusable: {why}");
            }
            println!("skipped: no CUDA device ({why})");
            false
        }
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_feature_missing() {
    assert!(!cuda_or_skip());
    let _ = fixture("fixtures");
}

#[cfg(feature = "cuda")]
mod with_cuda {
    use std::sync::Mutex;

    use ner_edge_trainer::backprop::{backward, forward, BackwardScratch, PieceBatch, Tape};
    use ner_edge_trainer::cuda::dev::Gpu;
    use ner_edge_trainer::cuda::model::CudaModel;
    use ner_edge_trainer::cuda::Backend;
    use ner_edge_trainer::model::rng::SplitMix64;
    use ner_edge_trainer::model::{random_init, EncoderConfig, ModelWeights};
    use ner_edge_trainer::train::config::TrainConfig;
    use ner_edge_trainer::train::{run_meta_on, RunOptions};

    use super::common::runs::logged_losses as losses;
    use super::{cuda_or_skip, fixture};

    /// The GPU tests of this binary run one at a time.
    static GPU: Mutex<()> = Mutex::new(());

    fn uniform(rng: &mut SplitMix64) -> f32 {
        (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    /// Random weights whose biases and layer norms are away from their initial values.
    fn weights(c: &EncoderConfig, seed: u64) -> ModelWeights {
        let mut w = random_init(c, seed);
        let mut rng = SplitMix64::new(seed ^ 0x5eed);
        for (name, t) in w.tensors_mut() {
            let base = if name.ends_with(".gamma") { 1.0 } else { 0.0 };
            for v in t.iter_mut() {
                *v = base + 0.4 * uniform(&mut rng);
            }
        }
        w
    }

    /// Worst `|a − b| / max(max|b|, floor)` over a tensor. For gradients `floor` is 1% of the
    /// largest gradient of the model, so a tensor whose exact gradient is 0 (the key bias:
    /// softmax ignores a constant shift of the scores) compares its rounding noise against the
    /// scale of the terms it is summed from, not against ~0.
    fn rel_err(a: &[f32], b: &[f32], floor: f32) -> f32 {
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(floor, |m, v| m.max(v.abs()));
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() / scale)
            .fold(0.0, f32::max)
    }

    #[test]
    fn forward_and_backward_match_the_cpu() {
        if !cuda_or_skip() {
            return;
        }
        let _guard = GPU.lock().unwrap_or_else(|e| e.into_inner());
        forward_and_backward(0);
        forward_and_backward(5);
    }

    /// Part (a) with `shape_classes` word-shape rows (0: no shape input), random shapes.
    fn forward_and_backward(shape_classes: usize) {
        println!("== shape classes: {shape_classes}");
        let c = EncoderConfig {
            vocab_size: 57,
            hidden: 24,
            layers: 2,
            heads: 3,
            intermediate: 37,
            max_positions: 19,
            type_dim: 7,
            layer_norm_eps: 1e-12,
            shape_classes,
        };
        let w = weights(&c, 11);
        let mut rng = SplitMix64::new(3);
        let sentences: Vec<Vec<u32>> = [1usize, 5, 0, 13, 2, 19, 7, 11]
            .iter()
            .map(|&len| (0..len).map(|_| (rng.next_u64() % 57) as u32).collect())
            .collect();
        let mut batch = PieceBatch::default();
        for s in &sentences {
            let shapes: Vec<u8> = s
                .iter()
                .map(|_| (rng.next_u64() % shape_classes.max(1) as u64) as u8)
                .collect();
            batch.push_shaped(&c, s, Some(&shapes)).unwrap();
        }
        let n = batch.tokens();
        let d_boundary: Vec<f32> = (0..n * 3).map(|_| uniform(&mut rng)).collect();
        let d_types: Vec<f32> = (0..n * c.type_dim).map(|_| uniform(&mut rng)).collect();

        let mut tape = Tape::new();
        forward(&w, &batch, &mut tape);
        let mut cpu_grads = ModelWeights::zeros(&c);
        backward(
            &w,
            &batch,
            &tape,
            &d_boundary,
            &d_types,
            &mut cpu_grads,
            &mut BackwardScratch::new(),
        );

        let gpu = Gpu::open(0).unwrap();
        println!(
            "device: {} ({})",
            gpu.kernels.device.name, gpu.kernels.device.arch
        );
        let mut model = CudaModel::new(gpu, &w).unwrap();
        let mut worst = 0.0f32;
        let mut failures = Vec::new();
        let mut check = |what: String, a: &[f32], b: &[f32], floor: f32| {
            let tol = 1e-5;
            let e = rel_err(a, b, floor);
            worst = worst.max(e);
            println!("{what}: relative error {e:.2e}");
            if e.is_nan() || e > tol {
                failures.push(format!("{what}: {e:.2e} > {tol:.0e}"));
            }
        };
        for round in 0..2 {
            model.forward(&batch).unwrap();
            let (mut boundary, mut types) = (Vec::new(), Vec::new());
            model.outputs(&mut boundary, &mut types).unwrap();
            check(
                format!("round {round} boundary"),
                &boundary,
                tape.boundary(),
                1e-5,
            );
            check(format!("round {round} types"), &types, tape.types(), 1e-5);
            check(
                format!("round {round} hidden"),
                &model.hidden().unwrap(),
                tape.hidden(),
                1e-3,
            );
            model.zero_grads().unwrap();
            model.backward(&d_boundary, &d_types).unwrap();
        }
        model.forward(&batch).unwrap();
        model.backward(&d_boundary, &d_types).unwrap();
        let mut gpu_grads = ModelWeights::zeros(&c);
        model.download_grads(&mut gpu_grads).unwrap();
        let twice: Vec<Vec<f32>> = cpu_grads
            .tensors()
            .iter()
            .map(|(_, g)| g.iter().map(|v| 2.0 * v).collect())
            .collect();
        let global = twice.iter().flatten().fold(0.0f32, |m, v| m.max(v.abs()));
        for ((name, g), want) in gpu_grads.tensors().into_iter().zip(&twice) {
            check(
                format!("grad {name} (accumulated twice)"),
                g,
                want,
                1e-2 * global,
            );
        }
        println!("worst relative error {worst:.2e}");
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn model_round_trips_weights_and_rejects_bad_gradients() {
        if !cuda_or_skip() {
            return;
        }
        let _guard = GPU.lock().unwrap_or_else(|e| e.into_inner());
        let c = EncoderConfig {
            vocab_size: 20,
            hidden: 8,
            layers: 1,
            heads: 2,
            intermediate: 12,
            max_positions: 6,
            type_dim: 4,
            layer_norm_eps: 1e-12,
            shape_classes: 0,
        };
        let w = weights(&c, 5);
        let mut model = CudaModel::new(Gpu::open(0).unwrap(), &w).unwrap();
        let mut back = ModelWeights::zeros(&c);
        model.download_weights(&mut back).unwrap();
        assert_eq!(back, w);
        let batch = PieceBatch::new(&c, &[vec![1u32, 2, 3]]).unwrap();
        model.forward(&batch).unwrap();
        assert!(model.backward(&[0.0; 8], &[0.0; 12]).is_err());
        let empty = PieceBatch::new(&c, &[Vec::<u32>::new()]).unwrap();
        model.forward(&empty).unwrap();
        model.zero_grads().unwrap();
        model.backward(&[], &[]).unwrap();
        let mut g = ModelWeights::zeros(&c);
        model.download_grads(&mut g).unwrap();
        assert_eq!(g, ModelWeights::zeros(&c));
    }

    #[test]
    fn twenty_steps_match_the_cpu_losses() {
        if !cuda_or_skip() {
            return;
        }
        let _guard = GPU.lock().unwrap_or_else(|e| e.into_inner());
        twenty_steps("tiny.toml");
    }

    /// Part (b) on the dense objective: word shapes, dense sequences, class vectors and the
    /// "other" type (`tiny-dense.toml`), dense loss compared too.
    #[test]
    fn twenty_dense_steps_match_the_cpu_losses() {
        if !cuda_or_skip() {
            return;
        }
        let _guard = GPU.lock().unwrap_or_else(|e| e.into_inner());
        twenty_steps("tiny-dense.toml");
    }

    fn dense_losses(out: &std::path::Path) -> Vec<f64> {
        std::fs::read_to_string(out.join("log.jsonl"))
            .unwrap()
            .lines()
            .filter_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["dense"]["total"].as_f64()
            })
            .collect()
    }

    fn twenty_steps(name: &str) {
        let mut cfg = TrainConfig::load(&fixture(&format!("fixtures/train/{name}"))).unwrap();
        cfg.steps = 20;
        cfg.checkpoint_every = 0;
        cfg.log_every = 1000;
        let root = std::env::temp_dir().join(format!(
            "ner-cuda-train-{}-{}",
            std::process::id(),
            name.trim_end_matches(".toml")
        ));
        let mut runs = Vec::new();
        for backend in [Backend::Cpu, Backend::Cuda] {
            let out = root.join(backend.to_string());
            let _ = std::fs::remove_dir_all(&out);
            let opts = RunOptions {
                out: out.clone(),
                resume: false,
                stop_after: None,
                progress: false,
                corpora: None,
                time_limit: None,
            };
            run_meta_on(&cfg, &opts, backend).unwrap();
            assert!(out.join("model.nerb").is_file());
            let mut all = losses(&out);
            all.extend(dense_losses(&out));
            runs.push(all);
        }
        let _ = std::fs::remove_dir_all(&root);
        let (cpu, gpu) = (&runs[0], &runs[1]);
        let per_step = if cfg.dense_on() { 40 } else { 20 };
        assert_eq!(cpu.len(), per_step, "{name}");
        assert_eq!(gpu.len(), per_step, "{name}");
        let mut worst = 0.0f64;
        for (i, (a, b)) in cpu.iter().zip(gpu).enumerate() {
            let rel = (a - b).abs() / a.abs().max(1e-12);
            worst = worst.max(rel);
            println!("step {:2}: cpu {a:.8} cuda {b:.8} rel {rel:.2e}", i + 1);
        }
        println!("worst relative loss difference {worst:.2e}");
        assert!(worst <= 1e-4, "losses differ by {worst:.2e} > 1e-4");
    }
}
