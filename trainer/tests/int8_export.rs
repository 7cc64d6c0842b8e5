//! Int8 weight export ([`WeightDtype::Int8`]): the runtime (tract, f32 compute) on an int8
//! bundle equals the trainer's reference forward on the dequantised weights, the error against
//! the original f32 weights is measured, and a MiniLM-L6-shaped int8 encoder fits the 32 MB
//! bundle budget.
//!
//! Tolerances (max abs diff divided by max(1, largest |reference value|), as in
//! `runtime_roundtrip.rs`):
//!
//! * ≤ 1e-5 against `reference_forward(int8_effective(w))`: the graph computes with exactly the
//!   dequantised values (`f32(q) * scale`, one rounding, the same in both), so only f32
//!   summation order differs (measured ≈ 2e-7);
//! * ≤ 2e-2 against the original f32 weights on a random model at an odd size (hidden 21).
//!   Symmetric int8 rounds each weight by at most half a step, `amax / 254`, an RMS error of
//!   `amax / (127 √12)`; for Gaussian columns of 21–37 rows (amax ≈ 2.5 σ) that is ≈ 0.6 % of
//!   the weights' RMS per matmul. Twelve quantised matmuls and the word table behind residuals
//!   and layer norms give ≈ 0.3 % measured at the outputs (max over elements); 2e-2 leaves room
//!   for other seeds while still catching a wrong scale axis or a missing scale (≥ 10 %).
//!
//! The real-MiniLM test (skipped without the cached encoder) reports the int8-vs-f32 and
//! f16-vs-f32 differences of the runtime outputs, word-label agreement and entity F1 (f32 as
//! gold) on 8 built-in texts plus the first 200 CoNLL-2003 dev sentences when `shared/data` is
//! present. Its bounds are set from what was measured (RMS relative 3.3e-2, labels 99.0 %,
//! entity F1 0.924; f16: 5.4e-4, 100 %, 1.0), so they catch regressions, not prove accuracy.
//! `mixed` (int8 word table, FFN input and attention output; f16 elsewhere) measured RMS relative
//! 1.6e-2, labels 99.8 %, entity F1 0.980, 29.6 MB: the dtype of the shipped default model.

use ner_edge::bundle::{Bundle, CdtParams, Provenance};
use ner_edge::encoder::{Encoder, PieceScores, PieceSeq, SpecialIds};
use ner_edge::pipeline::Tagger;
use ner_edge::tokenizer::{bert_uncased_meta, Tokenizer};
use ner_edge_trainer::export::onnx::{
    dequantize_int8_columns, dequantize_int8_rows, quantize_int8_columns, quantize_int8_rows,
};
use ner_edge_trainer::export::{
    export_bundle, int8_effective, quantised_effective, BundleContents, TypeState,
};
use ner_edge_trainer::model::rng::SplitMix64;
use ner_edge_trainer::{
    default_minilm_dir, export_onnx, import_minilm, random_init, reference_forward, EncoderConfig,
    ModelWeights, WeightDtype,
};

const VOCAB: &str = include_str!("../../fixtures/minilm/vocab.txt");

const TEXTS: &[&str] = &[
    "Angela Merkel visited the Siemens plant in Erlangen on Tuesday.",
    "Zürich",
    "The U.N. said 3,000 people fled Khartoum; officials in Jeddah denied it.",
    "北京大学 hosted Prof. Ñúñez at 10:30 — see https://example.org/a?b=c",
];

const MORE_TEXTS: &[&str] = &[
    "Apple shares rose 3% after Tim Cook unveiled the new iPhone in Cupertino, California.",
    "The European Central Bank kept rates unchanged, Christine Lagarde told reporters in Frankfurt.",
    "Barcelona beat Real Madrid 2-1 at the Camp Nou on Sunday night.",
    "Dr. Amara Okafor of the World Health Organization arrived in Lagos to review the outbreak.",
];

/// A random model at an odd size (hidden 21, 3 heads of 7, intermediate 37) with heads drawn
/// large enough that the decoded labels are not all `O`.
fn model(seed: u64) -> ModelWeights {
    let cfg = EncoderConfig {
        vocab_size: 30522,
        hidden: 21,
        layers: 2,
        heads: 3,
        intermediate: 37,
        max_positions: 96,
        type_dim: 11,
        layer_norm_eps: 1e-12,
        shape_classes: 0,
    };
    let mut w = random_init(&cfg, seed);
    let mut rng = SplitMix64::new(seed + 1);
    w.boundary.weight = rng.normal_vec(cfg.hidden * 3, 0.7);
    w.boundary.bias = vec![0.0, 0.5, 0.8];
    w.types.weight = rng.normal_vec(cfg.hidden * cfg.type_dim, 0.5);
    w
}

fn contents(type_dim: usize, type_names: &[&str], seed: u64) -> BundleContents {
    let mut rng = SplitMix64::new(seed);
    let types = type_names
        .iter()
        .map(|n| TypeState {
            name: n.to_string(),
            source: "test".into(),
            description: String::new(),
            prototype: rng.normal_vec(type_dim, 1.0),
            memory: rng.normal_vec(3 * type_dim, 1.0),
        })
        .collect();
    BundleContents {
        vocab_text: VOCAB.to_string(),
        tokenizer: bert_uncased_meta(),
        charsmap: None,
        types,
        default_active: type_names.iter().map(|s| s.to_string()).collect(),
        transitions: CdtParams {
            matrix: [
                [0.5, -0.3, 0.0, 0.0, 0.0],
                [-0.2, -0.7, 0.8, -0.6, 0.0],
                [-0.1, -0.7, 0.4, -0.6, 0.0],
            ],
            start: [0.3, -0.1, 0.0],
            end: [0.1, 0.0, 0.0],
        },
        memory_capacity: 3,
        provenance: Provenance {
            encoder_source: "test".into(),
            encoder_sha256: String::new(),
            training_data_sha256: String::new(),
            training_corpora: Vec::new(),
            created_by: "int8_export test".into(),
            notes: String::new(),
        },
        prior: None,
        trained_window: None,
        other_prototypes: None,
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn scale(v: &[f32]) -> f32 {
    v.iter().fold(1.0f32, |m, x| m.max(x.abs()))
}

fn tokenizer() -> Tokenizer {
    Tokenizer::new(&bert_uncased_meta(), VOCAB).unwrap()
}

/// The runtime encoder's piece scores (no `[CLS]`/`[SEP]`) for `texts` on `bundle`.
fn runtime_scores(bundle: &Bundle, texts: &[&str]) -> Vec<PieceScores> {
    let meta = bundle.metadata();
    let tok = Tokenizer::new(&meta.tokenizer, VOCAB).unwrap();
    let special = SpecialIds {
        cls: tok.cls_id(),
        sep: tok.sep_id(),
        pad: tok.pad_id(),
    };
    let enc = Encoder::load(
        bundle.bytes("encoder.onnx").unwrap(),
        &meta.encoder,
        special,
    )
    .unwrap();
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode(t).ids).collect();
    let refs: Vec<PieceSeq<'_>> = ids
        .iter()
        .map(|v| PieceSeq::unshaped(v.as_slice()))
        .collect();
    let (scores, windows) = enc.encode(&refs).unwrap();
    assert!(windows.iter().all(|&w| w == 1));
    scores
}

/// Reference outputs for `texts`, cut to the pieces (no `[CLS]`/`[SEP]`).
fn reference_pieces(w: &ModelWeights, texts: &[&str]) -> Vec<(Vec<f32>, Vec<f32>)> {
    let tok = tokenizer();
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode(t).ids).collect();
    let wrapped: Vec<Vec<u32>> = ids
        .iter()
        .map(|s| {
            std::iter::once(tok.cls_id())
                .chain(s.iter().copied())
                .chain([tok.sep_id()])
                .collect()
        })
        .collect();
    let out = reference_forward(w, &wrapped);
    let d = w.config.type_dim;
    ids.iter()
        .enumerate()
        .map(|(i, s)| {
            (
                out.boundary[i][3..3 * (s.len() + 1)].to_vec(),
                out.types[i][d..d * (s.len() + 1)].to_vec(),
            )
        })
        .collect()
}

/// Largest relative difference (boundary, types) between runtime scores and reference pieces.
fn compare(label: &str, scores: &[PieceScores], reference: &[(Vec<f32>, Vec<f32>)]) -> (f32, f32) {
    let (mut db, mut dt) = (0.0f32, 0.0f32);
    for (i, (s, (rb, rt))) in scores.iter().zip(reference).enumerate() {
        let b = max_abs_diff(&s.boundary, rb) / scale(rb);
        let t = max_abs_diff(&s.types, rt) / scale(rt);
        eprintln!("{label} text {i}: relative diff boundary {b:.2e}, types {t:.2e}");
        db = db.max(b);
        dt = dt.max(t);
    }
    (db, dt)
}

#[test]
fn quantisation_round_trips_within_half_a_step() {
    let mut rng = SplitMix64::new(5);
    let (rows, cols) = (7, 5);
    let mut w = rng.normal_vec(rows * cols, 1.0);
    for r in 0..rows {
        w[r * cols + 2] = 0.0; // an all-zero column
    }
    w[3 * cols..4 * cols].fill(0.0); // an all-zero row
    let (q, s) = quantize_int8_columns(&w, rows, cols);
    assert_eq!(s[2], 0.0);
    let back = dequantize_int8_columns(&q, &s);
    for (i, (&x, &y)) in w.iter().zip(&back).enumerate() {
        let step = s[i % cols];
        assert!(
            (x - y).abs() <= 0.5 * step * (1.0 + 1e-6),
            "{i}: {x} vs {y}"
        );
    }
    assert!(q.iter().all(|&v| v != i8::MIN));
    for c in 0..cols {
        if s[c] > 0.0 {
            assert!(
                (0..rows).any(|r| q[r * cols + c].abs() == 127),
                "column {c}"
            );
        }
    }
    let (q, s) = quantize_int8_rows(&w, rows, cols);
    assert_eq!(s.len(), rows);
    assert_eq!(s[3], 0.0);
    let back = dequantize_int8_rows(&q, &s);
    for (i, (&x, &y)) in w.iter().zip(&back).enumerate() {
        assert!(
            (x - y).abs() <= 0.5 * s[i / cols] * (1.0 + 1e-6),
            "{i}: {x} vs {y}"
        );
    }
}

#[test]
fn int8_export_refuses_non_finite_weights() {
    let mut w = model(20);
    w.layers[1].ffn_in.weight[3] = f32::NAN;
    let err = export_onnx(&w, WeightDtype::Int8).unwrap_err();
    assert!(format!("{err:#}").contains("non-finite"), "{err:#}");
}

#[test]
fn runtime_encoder_on_int8_equals_trainer_forward_on_dequantised_weights() {
    let w = model(21);
    let bytes = export_bundle(
        &w,
        &contents(w.config.type_dim, &["PER", "ORG", "LOC"], 3),
        WeightDtype::Int8,
    )
    .unwrap();
    let bundle = Bundle::from_vec(bytes, "int8.nerb").unwrap();
    assert_eq!(bundle.metadata().encoder.weight_dtype, "int8");
    let scores = runtime_scores(&bundle, TEXTS);

    let (db, dt) = compare(
        "int8 vs reference(dequantised)",
        &scores,
        &reference_pieces(&int8_effective(&w), TEXTS),
    );
    assert!(db <= 1e-5 && dt <= 1e-5, "{db} / {dt} > 1e-5");

    let (db, dt) = compare(
        "int8 vs reference(f32)",
        &scores,
        &reference_pieces(&w, TEXTS),
    );
    println!(
        "random model (hidden 21, 2 layers): int8 vs f32 reference, max relative diff \
         boundary {db:.2e}, types {dt:.2e}"
    );
    assert!(db <= 2e-2 && dt <= 2e-2, "{db} / {dt} > 2e-2");
}

#[test]
fn runtime_encoder_on_mixed_equals_trainer_forward_on_its_effective_weights() {
    let w = model(23);
    let bytes = export_bundle(
        &w,
        &contents(w.config.type_dim, &["PER", "ORG", "LOC"], 5),
        WeightDtype::Mixed,
    )
    .unwrap();
    let bundle = Bundle::from_vec(bytes, "mixed.nerb").unwrap();
    assert_eq!(bundle.metadata().encoder.weight_dtype, "mixed");
    let scores = runtime_scores(&bundle, TEXTS);
    let effective = quantised_effective(&w, WeightDtype::Mixed);
    assert_ne!(effective.layers[0].ffn_in.weight, w.layers[0].ffn_in.weight);
    let (db, dt) = compare(
        "mixed vs reference(effective)",
        &scores,
        &reference_pieces(&effective, TEXTS),
    );
    assert!(db <= 1e-5 && dt <= 1e-5, "{db} / {dt} > 1e-5");
    let int8 = quantised_effective(&w, WeightDtype::Int8);
    assert_eq!(effective.word_embeddings, int8.word_embeddings);
    assert_eq!(
        effective.layers[1].ffn_in.weight,
        int8.layers[1].ffn_in.weight
    );
    assert_ne!(
        effective.layers[1].ffn_out.weight,
        int8.layers[1].ffn_out.weight
    );
}

#[test]
fn int8_and_f32_bundles_decode_the_same_labels_on_a_random_model() {
    let w = model(22);
    let texts: Vec<&str> = TEXTS.iter().chain(MORE_TEXTS).copied().collect();
    let c = contents(w.config.type_dim, &["PER", "ORG", "LOC"], 7);
    let tag = |dtype| {
        let bytes = export_bundle(&w, &c, dtype).unwrap();
        let bundle = Bundle::from_vec(bytes, "labels.nerb").unwrap();
        Tagger::new(&bundle, None).unwrap().tag(&texts, 1).unwrap()
    };
    let (f32_tags, int8_tags) = (tag(WeightDtype::F32), tag(WeightDtype::Int8));
    let (agree, total) = label_agreement(&f32_tags, &int8_tags);
    let entities: usize = f32_tags.iter().map(|t| t.entities.len()).sum();
    println!("random model: int8 labels agree with f32 on {agree}/{total} words ({entities} f32 entities)");
    assert!(entities > 0, "the test model should produce entities");
    assert!(agree as f64 >= 0.95 * total as f64, "{agree}/{total}");
}

fn label_agreement(
    a: &[ner_edge::pipeline::TaggedText],
    b: &[ner_edge::pipeline::TaggedText],
) -> (usize, usize) {
    let mut agree = 0;
    let mut total = 0;
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.words, y.words);
        total += x.labels.len();
        agree += x
            .labels
            .iter()
            .zip(&y.labels)
            .filter(|(p, q)| p == q)
            .count();
    }
    (agree, total)
}

/// Entity-level F1 of `b` taking `a` as the gold standard (exact span and type).
fn entity_f1(a: &[ner_edge::pipeline::TaggedText], b: &[ner_edge::pipeline::TaggedText]) -> f64 {
    let key = |e: &ner_edge::pipeline::TaggedEntity| (e.span.clone(), e.type_index);
    let (mut both, mut na, mut nb) = (0usize, 0usize, 0usize);
    for (x, y) in a.iter().zip(b) {
        let xs: std::collections::HashSet<_> = x.entities.iter().map(key).collect();
        let ys: std::collections::HashSet<_> = y.entities.iter().map(key).collect();
        both += xs.intersection(&ys).count();
        na += xs.len();
        nb += ys.len();
    }
    if na + nb == 0 {
        1.0
    } else {
        2.0 * both as f64 / (na + nb) as f64
    }
}

/// 32 MB bundle budget (issue 7) minus room for vocabulary, metadata, prototype bank and label
/// memory: the int8 ONNX of a MiniLM-L6-shaped encoder must stay at or under 26 MB.
const INT8_MINILM_ONNX_BUDGET: usize = 26_000_000;
const BUNDLE_BUDGET: usize = 32_000_000;

#[test]
fn int8_and_mixed_minilm_shaped_exports_fit_the_budget() {
    let w = random_init(&EncoderConfig::minilm_l6(), 9);
    let onnx = export_onnx(&w, WeightDtype::Int8).unwrap();
    assert!(onnx.len() <= INT8_MINILM_ONNX_BUDGET, "{}", onnx.len());
    let names: Vec<String> = (0..18).map(|i| format!("TYPE{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut c = contents(w.config.type_dim, &names, 4);
    c.memory_capacity = 15;
    let mut rng = SplitMix64::new(10);
    for t in &mut c.types {
        t.memory = rng.normal_vec(15 * w.config.type_dim, 1.0);
    }
    for dtype in [WeightDtype::Int8, WeightDtype::Mixed] {
        let bundle = export_bundle(&w, &c, dtype).unwrap();
        println!(
            "MiniLM-L6 shape, {}: bundle with 18 types x 15 memory rows {} bytes ({:.2} MB)",
            dtype.as_str(),
            bundle.len(),
            bundle.len() as f64 / 1e6
        );
        assert!(bundle.len() <= BUNDLE_BUDGET, "{}", bundle.len());
        Bundle::from_vec(bundle, "minilm-small.nerb").unwrap();
    }
}

#[test]
fn real_minilm_int8_against_f32() {
    let Some(dir) = default_minilm_dir() else {
        eprintln!("skipped: neither NER_EDGE_MINILM_DIR, NER_EDGE_CACHE nor HOME is set");
        return;
    };
    if !dir.join("model.safetensors").exists() {
        eprintln!("skipped: no MiniLM encoder at {}", dir.display());
        return;
    }
    let started = std::time::Instant::now();
    let mut w = import_minilm(&dir, 128, 17).unwrap();
    // Heads wide enough that the decoded labels are a mix of O, B and I (the init std of the
    // imported heads gives near-zero logits, hence all O, which would make agreement trivial).
    let mut rng = SplitMix64::new(29);
    w.boundary.weight = rng.normal_vec(w.config.hidden * 3, HEAD_STD_BOUNDARY);
    w.boundary.bias = vec![0.5, 0.0, 0.0];
    w.types.weight = rng.normal_vec(w.config.hidden * w.config.type_dim, HEAD_STD_TYPES);
    let types = ["PER", "ORG", "LOC", "MISC", "DATE", "PRODUCT"];
    let c = contents(w.config.type_dim, &types, 23);
    let conll = conll_sentences(CONLL_SENTENCES);
    let texts: Vec<&str> = TEXTS
        .iter()
        .chain(MORE_TEXTS)
        .copied()
        .chain(conll.iter().map(String::as_str))
        .collect();
    let mut outputs = Vec::new();
    for dtype in [
        WeightDtype::F32,
        WeightDtype::F16,
        WeightDtype::Int8,
        WeightDtype::Mixed,
    ] {
        let bytes = export_bundle(&w, &c, dtype).unwrap();
        println!(
            "real MiniLM-L6 bundle {:>4}: {} bytes ({:.2} MB)",
            dtype.as_str(),
            bytes.len(),
            bytes.len() as f64 / 1e6
        );
        if matches!(dtype, WeightDtype::Int8 | WeightDtype::Mixed) {
            assert!(bytes.len() <= BUNDLE_BUDGET, "{}", bytes.len());
        }
        let bundle = Bundle::from_vec(bytes, "minilm.nerb").unwrap();
        let scores = runtime_scores(&bundle, &texts);
        let tags = Tagger::new(&bundle, None).unwrap().tag(&texts, 1).unwrap();
        outputs.push((scores, tags));
    }
    let (f32_scores, f32_tags) = &outputs[0];
    let entities = |t: &[ner_edge::pipeline::TaggedText]| -> usize {
        t.iter().map(|x| x.entities.len()).sum()
    };
    let non_o: usize = f32_tags
        .iter()
        .map(|t| t.labels.iter().filter(|&&l| l != 0).count())
        .sum();
    let mut int8_result = (0.0, 0, 0, 0.0);
    for (name, (scores, tags)) in [
        ("f16", &outputs[1]),
        ("mixed", &outputs[3]),
        ("int8", &outputs[2]),
    ] {
        let (mut abs_b, mut abs_t, mut rel_b, mut rel_t) = (0.0f32, 0.0f32, 0.0f32, 0.0f32);
        let (mut err2, mut ref2) = (0.0f64, 0.0f64);
        for (a, b) in f32_scores.iter().zip(scores) {
            for (x, y) in a.types.iter().zip(&b.types) {
                err2 += f64::from(x - y).powi(2);
                ref2 += f64::from(*x).powi(2);
            }
            let (db, dt) = (
                max_abs_diff(&a.boundary, &b.boundary),
                max_abs_diff(&a.types, &b.types),
            );
            abs_b = abs_b.max(db);
            abs_t = abs_t.max(dt);
            rel_b = rel_b.max(db / scale(&a.boundary));
            rel_t = rel_t.max(dt / scale(&a.types));
        }
        let (agree, total) = label_agreement(f32_tags, tags);
        let f1 = entity_f1(f32_tags, tags);
        let rms = (err2 / ref2).sqrt();
        println!(
            "real MiniLM-L6 {name} vs f32 runtime on {} texts: boundary max abs {abs_b:.3e} \
             (relative {rel_b:.2e}), types max abs {abs_t:.3e} (relative {rel_t:.2e}, \
             RMS relative {:.2e}); \
             Viterbi labels agree on {agree}/{total} words ({non_o} non-O in f32); \
             entities f32 {} / {name} {}, entity F1 of {name} against f32 {f1:.4}",
            texts.len(),
            rms,
            entities(f32_tags),
            entities(tags),
        );
        int8_result = (rms, agree, total, f1);
    }
    println!(
        "real MiniLM-L6 test: {} types, random heads and prototypes, {:.1} s",
        types.len(),
        started.elapsed().as_secs_f64()
    );
    let (rms, agree, total, f1) = int8_result;
    assert!(
        non_o * 20 > total,
        "labels should not be (nearly) all O: {non_o}/{total}"
    );
    assert!(
        rms <= 5e-2,
        "int8 RMS relative error of the type outputs {rms}"
    );
    assert!(agree as f64 >= 0.98 * total as f64, "{agree}/{total}");
    assert!(f1 >= 0.9, "entity F1 of int8 against f32 {f1}");
}

/// How many CoNLL-2003 dev sentences the real-MiniLM test adds when `shared/data` is present.
const CONLL_SENTENCES: usize = 200;

/// The first `n` sentences of `shared/data/conll2003/valid.txt` (tokens joined by spaces), or
/// none when the file is absent.
fn conll_sentences(n: usize) -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/conll2003/valid.txt");
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!(
            "note: {} not found, using the built-in texts only",
            path.display()
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let words: Vec<&str> = block
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        if words.is_empty() || words[0] == "-DOCSTART-" {
            continue;
        }
        out.push(words.join(" "));
        if out.len() == n {
            break;
        }
    }
    out
}

const HEAD_STD_BOUNDARY: f32 = 0.15;
const HEAD_STD_TYPES: f32 = 0.1;
