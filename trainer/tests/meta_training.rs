//! End-to-end meta-training on the toy corpora of `fixtures/train`: the loss falls, the exported
//! bundle tags with the runtime what the trainer's forward pass decodes, and a run killed
//! mid-way resumes to bit-identical results.
//!
//! Round-trip tolerances (max abs diff / max(1, largest |value|)): ≤ 1e-5 with f32 weights,
//! ≤ 1e-3 with f16 weights.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ner_edge::bundle::Bundle;
use ner_edge::decode::{label_count, unfold, viterbi};
use ner_edge::emissions::emissions;
use ner_edge::pipeline::Tagger;
use ner_edge_trainer::backprop::{forward, PieceBatch, Tape};
use ner_edge_trainer::train::config::TrainConfig;
use ner_edge_trainer::train::meta::{load_state, CHECKPOINT};
use ner_edge_trainer::train::{run_meta, RunOptions};

mod common;
use common::runs::{logged_losses as losses, run_options as opts};

fn temp_dir(name: &str) -> PathBuf {
    common::runs::temp_run_dir("test", name)
}

fn fixture_config() -> TrainConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/train/tiny.toml");
    TrainConfig::load(&path).unwrap()
}

fn learning_config() -> TrainConfig {
    let mut cfg = fixture_config();
    cfg.steps = 240;
    cfg.log_every = 1000;
    cfg.checkpoint_every = 0;
    cfg.optim.lr_encoder = 1e-3;
    cfg.optim.lr_heads = 1e-2;
    cfg
}

#[test]
fn meta_training_learns_and_the_runtime_tags_with_the_export() {
    let cfg = learning_config();
    let out = temp_dir("learn");
    run_meta(&cfg, &opts(&out)).unwrap();
    let l = losses(&out);
    assert_eq!(l.len(), 240);
    let first: f64 = l[..20].iter().sum::<f64>() / 20.0;
    let last: f64 = l[l.len() - 20..].iter().sum::<f64>() / 20.0;
    eprintln!("mean loss of the first 20 steps {first:.3}, of the last 20 {last:.3}");
    assert!(last < 0.35 * first, "loss did not fall: {first} -> {last}");

    let bundle = Bundle::open(&out.join("model.nerb")).unwrap();
    let meta = bundle.metadata();
    assert_eq!(meta.labels.default_active, vec!["person", "location"]);
    assert_eq!(
        meta.provenance.training_corpora,
        vec!["toy-news", "toy-movies"]
    );
    assert_eq!(meta.provenance.training_data_sha256.len(), 64);
    let names: Vec<&str> = meta.labels.types.iter().map(|t| t.name.as_str()).collect();
    for t in [
        "GENRE",
        "TITLE",
        "YEAR",
        "drug",
        "location",
        "organisation",
        "part",
        "person",
    ] {
        assert!(names.contains(&t), "{t} missing from {names:?}");
    }
    let types: Vec<String> = ["person", "location", "organisation", "drug"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let tagger = Tagger::new(&bundle, Some(&types)).unwrap();
    let text = "Sara Novak moved to Lima last year .";
    let tagged = tagger.tag(&[text], 1).unwrap();
    let found: Vec<(&str, &str)> = tagged[0]
        .entities
        .iter()
        .map(|e| {
            (
                &text[e.span.clone()],
                tagger.type_names()[e.type_index].as_str(),
            )
        })
        .collect();
    assert_eq!(found, vec![("Sara Novak", "person"), ("Lima", "location")]);
}

/// The runtime's encoder outputs and decoded labels for the exported trained model equal the
/// trainer's own forward pass and Viterbi over the bundle's prototypes.
fn check_round_trip(dtype: &str, tol: f32) {
    let mut cfg = fixture_config();
    cfg.export.dtype = dtype.into();
    let out = temp_dir(&format!("roundtrip-{dtype}"));
    run_meta(&cfg, &opts(&out)).unwrap();
    let state = load_state(&cfg, &out.join(CHECKPOINT)).unwrap();
    let bundle = Bundle::open(&out.join("model.nerb")).unwrap();
    let tagger = Tagger::new(&bundle, None).unwrap();
    let texts = [
        "Omar Haddad works for Blue Bank .",
        "The doctor gave Ken Ito some codeine in San Jose , Costa Rica .",
    ];
    let tagged = tagger.tag(&texts, 1).unwrap();
    let tok = tagger.tokenizer();
    let w = &state.weights;
    let d = w.config.type_dim;
    let protos = bundle.to_f32_vec("labels.prototypes").unwrap();
    let all_types = &bundle.metadata().labels.types;
    let active: Vec<usize> = tagger
        .type_names()
        .iter()
        .map(|n| {
            all_types
                .iter()
                .find(|t| &t.name == n)
                .unwrap()
                .prototype_row
        })
        .collect();
    let active_protos: Vec<f32> = active
        .iter()
        .flat_map(|&r| protos[r * d..(r + 1) * d].to_vec())
        .collect();
    let trans = unfold(&bundle.metadata().transitions, active.len());
    for (i, text) in texts.iter().enumerate() {
        let enc = tok.encode(text);
        let mut ids = vec![tok.cls_id()];
        ids.extend_from_slice(&enc.ids);
        ids.push(tok.sep_id());
        let batch = PieceBatch::new(&w.config, &[ids]).unwrap();
        let mut tape = Tape::new();
        forward(w, &batch, &mut tape);
        let mut b = Vec::new();
        let mut t = Vec::new();
        for &p in &enc.word_first_piece {
            let p = p as usize + 1;
            b.extend_from_slice(&tape.boundary()[3 * p..3 * p + 3]);
            t.extend_from_slice(&tape.types()[d * p..d * (p + 1)]);
        }
        let (rb, rt) = runtime_word_outputs(&tagger, &bundle, text);
        let scale = |v: &[f32]| v.iter().fold(1.0f32, |m, x| m.max(x.abs()));
        let diff = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max)
        };
        let db = diff(&b, &rb) / scale(&b);
        let dt = diff(&t, &rt) / scale(&t);
        eprintln!("{dtype} text {i}: relative diff boundary {db:.2e}, types {dt:.2e}");
        assert!(
            db <= tol && dt <= tol,
            "{dtype} text {i}: {db} / {dt} > {tol}"
        );
        if dtype == "f32" {
            let mut em = Vec::new();
            emissions(&b, &t, d, &active_protos, active.len(), &mut em);
            let mut path = Vec::new();
            viterbi(&em, label_count(active.len()), &trans, &mut path);
            assert_eq!(tagged[i].labels, path, "text {i}");
        }
    }
}

/// Word-level boundary logits and type vectors of the runtime encoder for `text`.
fn runtime_word_outputs(tagger: &Tagger, bundle: &Bundle, text: &str) -> (Vec<f32>, Vec<f32>) {
    use ner_edge::encoder::{Encoder, SpecialIds};
    let tok = tagger.tokenizer();
    let meta = bundle.metadata();
    let enc = Encoder::load(
        bundle.bytes("encoder.onnx").unwrap(),
        &meta.encoder,
        SpecialIds {
            cls: tok.cls_id(),
            sep: tok.sep_id(),
            pad: tok.pad_id(),
        },
    )
    .unwrap();
    let e = tok.encode(text);
    let (scores, _) = enc.encode(&[(&e).into()]).unwrap();
    let d = meta.encoder.type_dim;
    let mut b = Vec::new();
    let mut t = Vec::new();
    for &p in &e.word_first_piece {
        let p = p as usize;
        b.extend_from_slice(&scores[0].boundary[3 * p..3 * p + 3]);
        t.extend_from_slice(&scores[0].types[d * p..d * (p + 1)]);
    }
    (b, t)
}

#[test]
fn exported_trained_model_round_trips_f32() {
    check_round_trip("f32", 1e-5);
}

#[test]
fn exported_trained_model_round_trips_f16() {
    check_round_trip("f16", 1e-3);
}

fn checkpoint_bytes_without_log(out: &Path) -> (Vec<u8>, Vec<u8>) {
    (
        std::fs::read(out.join("model.nerb")).unwrap(),
        std::fs::read(out.join(CHECKPOINT)).unwrap(),
    )
}

#[test]
fn a_run_killed_mid_way_resumes_bit_identically() {
    let mut cfg = fixture_config();
    cfg.steps = 40;
    cfg.checkpoint_every = 1;
    let dir = temp_dir("kill");
    let config_path = dir.join("config.toml");
    std::fs::write(&config_path, toml::to_string(&cfg).unwrap()).unwrap();
    let exe = env!("CARGO_BIN_EXE_ner-train");
    let run = |out: &Path, extra: &[&str]| {
        let output = Command::new(exe)
            .args(["meta", "--quiet", "--config"])
            .arg(&config_path)
            .arg("--out")
            .arg(out)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "ner-train {extra:?} failed: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    };

    let whole = dir.join("whole");
    run(&whole, &[]);

    let split = dir.join("split");
    run(&split, &["--stop-after", "13"]);
    assert!(!split.join("model.nerb").exists());
    run(&split, &["--resume"]);
    assert_eq!(
        checkpoint_bytes_without_log(&whole),
        checkpoint_bytes_without_log(&split)
    );

    let killed = dir.join("killed");
    let mut child = Command::new(exe)
        .args(["meta", "--quiet", "--config"])
        .arg(&config_path)
        .arg("--out")
        .arg(&killed)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !killed.join(CHECKPOINT).exists() && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    let interrupted = !status.success();
    eprintln!(
        "killed run: {status}; {}",
        if interrupted {
            "resuming from its last checkpoint"
        } else {
            "it had already finished, so only the resume no-op is checked"
        }
    );
    run(&killed, &["--resume"]);
    assert_eq!(
        checkpoint_bytes_without_log(&whole),
        checkpoint_bytes_without_log(&killed)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn resuming_with_another_config_is_refused() {
    let cfg = fixture_config();
    let out = temp_dir("refuse");
    run_meta(
        &cfg,
        &RunOptions {
            stop_after: Some(2),
            ..opts(&out)
        },
    )
    .unwrap();
    let mut other = cfg.clone();
    other.seed += 1;
    let err = run_meta(
        &other,
        &RunOptions {
            resume: true,
            ..opts(&out)
        },
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("different config"), "{err:#}");
}

fn dense_fixture_config() -> TrainConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/train/tiny-dense.toml");
    TrainConfig::load(&path).unwrap()
}

fn log_values(out: &Path, key: &str) -> Vec<(u64, f64)> {
    std::fs::read_to_string(out.join("log.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let x = key
                .split('.')
                .try_fold(&v, |v, k| v.get(k))
                .and_then(|x| x.as_f64())?;
            Some((v["step"].as_u64().unwrap(), x))
        })
        .collect()
}

/// Dense supervision with casing and the "other" type: the dense loss falls, the bundle
/// records the shape scheme, the trained window and the other prototypes, it exports the
/// best-validated weights (the runtime's encoder outputs are those of `best.ckpt`), and its
/// bank types tag a toy sentence.
#[test]
fn dense_training_exports_the_best_validated_casing_model() {
    let mut cfg = dense_fixture_config();
    cfg.steps = 160;
    cfg.log_every = 1000;
    cfg.checkpoint_every = 0;
    cfg.data.validate_every = 20;
    cfg.optim.lr_encoder = 1e-3;
    cfg.optim.lr_heads = 1e-2;
    let out = temp_dir("dense");
    run_meta(&cfg, &opts(&out)).unwrap();
    let dense = log_values(&out, "dense.total");
    assert_eq!(dense.len(), 160);
    let first: f64 = dense[..20].iter().map(|x| x.1).sum::<f64>() / 20.0;
    let last: f64 = dense[dense.len() - 20..].iter().map(|x| x.1).sum::<f64>() / 20.0;
    eprintln!("dense loss: first 20 steps {first:.3}, last 20 {last:.3}");
    assert!(
        last < 0.5 * first,
        "dense loss did not fall: {first} -> {last}"
    );

    let val = log_values(&out, "validation_supervised_f1");
    assert_eq!(val.len(), 8, "validation every 20 steps: {val:?}");
    let best = val.iter().fold(
        (0, f64::NEG_INFINITY),
        |b, &(s, f)| if f > b.1 { (s, f) } else { b },
    );
    eprintln!("validation F1 {val:?}; best {best:?}");
    assert!(best.1 > 0.5, "supervised validation F1 stayed low: {val:?}");

    let bundle = Bundle::open(&out.join("model.nerb")).unwrap();
    let meta = bundle.metadata();
    assert_eq!(meta.encoder.shape_scheme.as_deref(), Some("case6-v1"));
    assert_eq!(meta.encoder.trained_window, Some(48));
    let d = meta.encoder.type_dim;
    assert_eq!(bundle.to_f32_vec("labels.other").unwrap().len(), 2 * d);
    assert!(
        meta.provenance
            .notes
            .ends_with(&format!("weights of step {}", best.0)),
        "{}",
        meta.provenance.notes
    );

    let state = load_state(&cfg, &out.join("best.ckpt")).unwrap();
    assert_eq!(state.step, best.0);
    let types: Vec<String> = ["person", "location"].map(String::from).to_vec();
    let tagger = Tagger::new(&bundle, Some(&types)).unwrap();
    let text = "Sara Novak moved to Lima last year .";
    let e = tagger.tokenizer().encode(text);
    let tok = tagger.tokenizer();
    let ids: Vec<u32> = std::iter::once(tok.cls_id())
        .chain(e.ids.iter().copied())
        .chain([tok.sep_id()])
        .collect();
    let shapes: Vec<u8> = std::iter::once(0)
        .chain(e.shapes.iter().copied())
        .chain([0])
        .collect();
    let mut batch = PieceBatch::default();
    batch
        .push_shaped(&state.weights.config, &ids, Some(&shapes))
        .unwrap();
    let mut tape = Tape::new();
    forward(&state.weights, &batch, &mut tape);
    let (_, rt) = runtime_word_outputs(&tagger, &bundle, text);
    for (w, &p) in e.word_first_piece.iter().enumerate() {
        let p = p as usize + 1;
        for k in 0..d {
            let (a, b) = (tape.types()[p * d + k], rt[w * d + k]);
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + a.abs()),
                "word {w}: {a} vs {b}"
            );
        }
    }
    let tagged = tagger.tag(&[text], 1).unwrap();
    let found: Vec<&str> = tagged[0]
        .entities
        .iter()
        .map(|e| &text[e.span.clone()])
        .collect();
    assert!(
        found.contains(&"Lima") || found.contains(&"Sara Novak"),
        "{found:?}"
    );
}

#[test]
fn dense_training_resumes_bit_identically() {
    let mut cfg = dense_fixture_config();
    cfg.steps = 10;
    cfg.checkpoint_every = 1;
    let whole = temp_dir("dense-whole");
    run_meta(&cfg, &opts(&whole)).unwrap();
    let split = temp_dir("dense-split");
    run_meta(
        &cfg,
        &RunOptions {
            stop_after: Some(5),
            ..opts(&split)
        },
    )
    .unwrap();
    run_meta(
        &cfg,
        &RunOptions {
            resume: true,
            ..opts(&split)
        },
    )
    .unwrap();
    assert_eq!(
        checkpoint_bytes_without_log(&whole),
        checkpoint_bytes_without_log(&split)
    );
    assert_eq!(
        std::fs::read(whole.join("best.ckpt")).unwrap(),
        std::fs::read(split.join("best.ckpt")).unwrap()
    );
}

#[test]
fn a_student_cut_from_a_teacher_checkpoint_keeps_the_chosen_layers_and_trains() {
    use ner_edge_trainer::train::config::EncoderInit;
    use ner_edge_trainer::train::meta::initial_weights;

    let teacher_out = temp_dir("teacher");
    let mut teacher = fixture_config();
    teacher.steps = 4;
    teacher.checkpoint_every = 4;
    run_meta(&teacher, &opts(&teacher_out)).unwrap();
    let ckpt = teacher_out.join(CHECKPOINT);
    let trained = load_state(&teacher, &ckpt).unwrap().weights;
    assert_eq!(trained.layers.len(), 2);

    let mut student = fixture_config();
    student.encoder = EncoderInit::Teacher {
        checkpoint: ckpt.clone(),
        layers: vec![1],
        warm_start: false,
    };
    let (weights, origin) = initial_weights(&student).unwrap();
    assert_eq!(weights.config.layers, 1);
    assert_eq!(weights.layers, [trained.layers[1].clone()]);
    assert_eq!(weights.word_embeddings, trained.word_embeddings);
    assert_eq!(weights.types, trained.types);
    assert!(origin.source.contains("layers [1]"), "{}", origin.source);

    for bad in [vec![], vec![1, 0], vec![2], vec![0, 0]] {
        student.encoder = EncoderInit::Teacher {
            checkpoint: ckpt.clone(),
            layers: bad.clone(),
            warm_start: false,
        };
        let e = initial_weights(&student).unwrap_err().to_string();
        assert!(e.contains("encoder.layers"), "{bad:?}: {e}");
    }

    student.encoder = EncoderInit::Teacher {
        checkpoint: ckpt,
        layers: vec![0],
        warm_start: false,
    };
    student.steps = 2;
    let student_out = temp_dir("student");
    run_meta(&student, &opts(&student_out)).unwrap();
    let bundle = Bundle::open(&student_out.join("model.nerb")).unwrap();
    assert_eq!(bundle.metadata().encoder.layers, 1);
    Tagger::new(&bundle, None).unwrap();
    std::fs::remove_dir_all(&teacher_out).ok();
    std::fs::remove_dir_all(&student_out).ok();
}

/// Mean squared difference of the piece outputs (boundary logits and type vectors) of two
/// models on the fixture sentences.
fn output_distance(a: &ner_edge_trainer::ModelWeights, b: &ner_edge_trainer::ModelWeights) -> f64 {
    let sentences: Vec<Vec<u32>> = (0..8u32)
        .map(|i| vec![101, 2000 + 37 * i, 3000 + 11 * i, 4000 + i, 1012, 102])
        .collect();
    let batch = PieceBatch::new(&a.config, &sentences).unwrap();
    let (mut ta, mut tb) = (Tape::new(), Tape::new());
    forward(a, &batch, &mut ta);
    forward(b, &batch, &mut tb);
    let sq = |x: &[f32], y: &[f32]| -> f64 {
        x.iter()
            .zip(y)
            .map(|(p, q)| f64::from(p - q).powi(2))
            .sum::<f64>()
            / x.len() as f64
    };
    sq(ta.boundary(), tb.boundary()) + sq(ta.types(), tb.types())
}

#[test]
fn distillation_pulls_the_student_towards_its_teacher() {
    use ner_edge_trainer::train::config::{DistillConfig, EncoderInit};

    let teacher_out = temp_dir("distill-teacher");
    let mut teacher = learning_config();
    teacher.steps = 60;
    teacher.checkpoint_every = 60;
    run_meta(&teacher, &opts(&teacher_out)).unwrap();
    let ckpt = teacher_out.join(CHECKPOINT);
    let teacher_weights = load_state(&teacher, &ckpt).unwrap().weights;

    let mut student = learning_config();
    student.steps = 40;
    student.encoder = EncoderInit::Teacher {
        checkpoint: ckpt.clone(),
        layers: vec![0],
        warm_start: false,
    };
    let distances: Vec<f64> = [None, Some(DistillConfig::default())]
        .into_iter()
        .map(|distill| {
            let mut cfg = student.clone();
            let on = distill.is_some();
            cfg.distill = distill.map(|d| DistillConfig {
                boundary: 5.0,
                types: 5.0,
                ..d
            });
            let out = temp_dir(if on { "distill-on" } else { "distill-off" });
            run_meta(&cfg, &opts(&out)).unwrap();
            let logged: Vec<f64> = std::fs::read_to_string(out.join("log.jsonl"))
                .unwrap()
                .lines()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).unwrap()["distill"]
                        .as_f64()
                        .unwrap()
                })
                .collect();
            assert_eq!(
                logged.iter().any(|&d| d > 0.0),
                on,
                "distill term logged: {logged:?}"
            );
            let trained = load_state(&cfg, &out.join(CHECKPOINT)).unwrap().weights;
            std::fs::remove_dir_all(&out).ok();
            output_distance(&trained, &teacher_weights)
        })
        .collect();
    println!("output distance to the teacher without / with distillation: {distances:?}");
    assert!(
        distances[1] < 0.8 * distances[0],
        "distance to the teacher without / with distillation: {distances:?}"
    );

    let mut orphan = student.clone();
    orphan.encoder = fixture_config().encoder;
    orphan.distill = Some(DistillConfig::default());
    let e = orphan.validate().unwrap_err().to_string();
    assert!(e.contains("distill.teacher"), "{e}");
    std::fs::remove_dir_all(&teacher_out).ok();
}

/// `meta --corpora PACK` trains the model a run over the corpus files trains, bit for bit, with
/// the files gone (the machine it is meant for does not have them), and a pack made from
/// another config is refused with the missing entry named.
#[test]
fn a_run_from_a_corpus_pack_equals_the_run_from_the_files() {
    let mut cfg = dense_fixture_config();
    cfg.steps = 4;
    cfg.checkpoint_every = 0;
    let data = temp_dir("pack-data");
    for c in &cfg.data.corpora {
        for rel in &c.paths {
            std::fs::copy(cfg.data.data_root.join(rel), data.join(rel)).unwrap();
        }
    }
    cfg.data.data_root = data.clone();
    cfg.data.validation_supervised = Some(data.join("toy_news.tsv"));

    let from_files = temp_dir("pack-files");
    run_meta(&cfg, &opts(&from_files)).unwrap();

    let pack_path = temp_dir("pack-file").join("corpora.nerc");
    ner_edge_trainer::train::data::pack_config(&cfg)
        .unwrap()
        .write(&pack_path)
        .unwrap();
    std::fs::remove_dir_all(&data).unwrap();
    let from_pack = temp_dir("pack-run");
    run_meta(
        &cfg,
        &RunOptions {
            corpora: Some(pack_path.clone()),
            ..opts(&from_pack)
        },
    )
    .unwrap();
    assert_eq!(
        checkpoint_bytes_without_log(&from_files),
        checkpoint_bytes_without_log(&from_pack)
    );
    assert_eq!(losses(&from_files), losses(&from_pack));

    let mut other = cfg.clone();
    other.data.corpora[0].name = "renamed".into();
    let err = run_meta(
        &other,
        &RunOptions {
            corpora: Some(pack_path),
            ..opts(&temp_dir("pack-other"))
        },
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("no entry \"corpus:renamed:"),
        "{err:#}"
    );
}

/// A run with a time limit it cannot meet stops after the step that crosses it, yet validates,
/// checkpoints and exports a bundle as at the last step, and logs only the steps it ran.
#[test]
fn a_time_limit_ends_the_run_early_with_a_bundle() {
    let mut cfg = dense_fixture_config();
    cfg.steps = 1000;
    cfg.checkpoint_every = 0;
    let out = temp_dir("time-limit");
    run_meta(
        &cfg,
        &RunOptions {
            time_limit: Some(Duration::from_millis(1)),
            ..opts(&out)
        },
    )
    .unwrap();
    let logged = losses(&out);
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(out.join("model.nerb").is_file());
    Bundle::open(&out.join("model.nerb")).unwrap();
    let state = load_state(&cfg, &out.join(CHECKPOINT)).unwrap();
    assert_eq!(state.step, 1);
    let validated = std::fs::read_to_string(out.join("log.jsonl")).unwrap();
    assert!(
        validated.contains("validation_supervised_f1"),
        "{validated}"
    );
}

/// `[assoc]`: dense sequences read the other sequences of their batch, the read's gains leave
/// zero (gradients reach them), the bundle carries the read and a memory of training
/// sentences that the runtime reads; a run continued from that checkpoint with
/// `warm_start` (and without `[assoc]`) starts from its heads and class vectors.
#[test]
fn associated_memory_trains_exports_and_warm_starts() {
    use ner_edge::associated_memory::{tensor_names, AssociatedMemory};
    use ner_edge::pipeline::Tagger;
    use ner_edge_trainer::train::config::{AssocConfig, EncoderInit};

    let mut cfg = dense_fixture_config();
    cfg.steps = 12;
    cfg.data.validate_every = 0;
    cfg.checkpoint_every = 0;
    cfg.assoc = Some(AssocConfig {
        memory_sentences: 7,
        ..AssocConfig::default()
    });
    let out = temp_dir("assoc");
    run_meta(&cfg, &opts(&out)).unwrap();
    let bundle = Bundle::open(&out.join("model.nerb")).unwrap();
    let meta = bundle.metadata();
    let memory =
        AssociatedMemory::from_bundle(&bundle, meta.encoder.type_dim, meta.labels.types.len())
            .unwrap()
            .expect("the bundle has a memory");
    assert_eq!(memory.bank.sentences(), 7);
    assert_eq!((memory.params.heads, memory.params.key_dim), (4, 16));
    assert!(
        memory.params.type_gain.iter().any(|&g| g != 0.0),
        "{:?}",
        memory.params.type_gain
    );
    let (_, labels, _) = memory.bank.parts();
    assert!(
        labels.iter().any(|&y| y != 0),
        "memory words carry gold labels"
    );
    let mut tagger = Tagger::new(&bundle, None).unwrap();
    assert!(tagger.reads_memory());
    let tagged = tagger.tag(&["John Smith visited Paris ."], 1).unwrap();
    assert_eq!(tagged[0].words.len(), 5);
    tagger.disable_memory();
    assert!(!tagger.reads_memory());

    let mut next = dense_fixture_config();
    next.steps = 1;
    next.data.validate_every = 0;
    next.encoder = EncoderInit::Teacher {
        checkpoint: out.join("checkpoint.ckpt"),
        layers: vec![0, 1],
        warm_start: true,
    };
    let state = ner_edge_trainer::train::meta::fresh_state(
        &next,
        ner_edge_trainer::train::meta::initial_weights(&next)
            .unwrap()
            .0,
        Vec::new(),
    );
    let state = state.unwrap();
    assert!(state.heads.assoc.is_none());
    let ckpt = ner_edge_trainer::train::checkpoint::read(&out.join("checkpoint.ckpt")).unwrap();
    let saved = |name: &str| {
        ckpt.tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        saved("cdt.matrix").unwrap(),
        state.heads.cdt.matrix.as_flattened()
    );
    assert!(saved(tensor_names::TYPE_GAIN).is_some());
}
