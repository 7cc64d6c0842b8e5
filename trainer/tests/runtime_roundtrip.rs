//! Golden round trip: a model exported by the trainer, read back by the runtime, gives the
//! trainer's own forward pass (encoder outputs, emissions and decoded labels), with and without
//! the word-shape (casing) input.
//!
//! Tolerances (max abs diff, divided by max(1, largest |reference value|)): ≤ 1e-5 with f32
//! weights; with f16 weights ≤ 1e-5 against the reference run on the f16-rounded weights and
//! ≤ 1e-3 against the original f32 weights.

use ner_edge::bundle::{Bundle, CdtParams, Provenance};
use ner_edge::decode::{label_count, unfold, viterbi};
use ner_edge::emissions::emissions;
use ner_edge::encoder::{Encoder, PieceSeq, SpecialIds};
use ner_edge::pipeline::Tagger;
use ner_edge::tokenizer::bert_uncased_meta;
use ner_edge::tokenizer::{Encoding, Tokenizer, SHAPE_CLASSES};
use ner_edge_trainer::export::{export_bundle, BundleContents, TypeState};
use ner_edge_trainer::model::rng::SplitMix64;
use ner_edge_trainer::{
    random_init, reference_forward_shaped, EncoderConfig, ModelWeights, WeightDtype,
};

const VOCAB: &str = include_str!("../../fixtures/minilm/vocab.txt");

const TEXTS: &[&str] = &[
    "Angela Merkel visited the Siemens plant in Erlangen on Tuesday.",
    "Zürich",
    "The U.N. said 3,000 people fled Khartoum; officials in Jeddah denied it.",
    "北京大学 hosted Prof. Ñúñez at 10:30 — see https://example.org/a?b=c",
];

/// A small random model over a vocabulary of `vocab_size` ids.
fn model_with_vocab(seed: u64, vocab_size: usize) -> ModelWeights {
    let mut w = model(seed, false);
    let cfg = EncoderConfig {
        vocab_size,
        ..w.config.clone()
    };
    let fresh = random_init(&cfg, seed);
    w.config = cfg;
    w.word_embeddings = fresh.word_embeddings;
    w
}

/// The XLM-R fixture tokenizer (`fixtures/tokenizer/xlmr`) as a bundle stores it: `piece⇥score`
/// lines, its settings and its normalisation map, and the number of pieces.
fn unigram_parts() -> (String, ner_edge::bundle::TokenizerMeta, Vec<u8>, usize) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tokenizer/xlmr");
    let (lines, meta, charsmap) = ner_edge_trainer::train::meta::encoder_vocabulary(&dir).unwrap();
    let n = lines.lines().count();
    (lines, meta, charsmap.unwrap(), n)
}

/// A small random model; `shaped` gives it a word-shape table with large random rows, so that
/// casing visibly changes its outputs.
fn model(seed: u64, shaped: bool) -> ModelWeights {
    let cfg = EncoderConfig {
        vocab_size: 30522,
        hidden: 20,
        layers: 2,
        heads: 4,
        intermediate: 36,
        max_positions: 96,
        type_dim: 12,
        layer_norm_eps: 1e-12,
        shape_classes: 0,
    };
    let mut w = random_init(&cfg, seed);
    let mut rng = SplitMix64::new(seed + 1);
    w.boundary.weight = rng.normal_vec(cfg.hidden * 3, 0.7);
    w.boundary.bias = vec![0.0, 0.5, 0.8];
    w.types.weight = rng.normal_vec(cfg.hidden * cfg.type_dim, 0.5);
    if shaped {
        w = w.with_shape_classes(SHAPE_CLASSES);
        w.shape_embeddings = rng.normal_vec(SHAPE_CLASSES * cfg.hidden, 0.5);
    }
    w
}

fn contents(type_dim: usize, seed: u64) -> BundleContents {
    let mut rng = SplitMix64::new(seed);
    let types = ["PER", "ORG", "LOC"]
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
        default_active: vec!["PER".into(), "ORG".into(), "LOC".into()],
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
            created_by: "runtime_roundtrip test".into(),
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

/// Reference outputs for the pieces of `encodings` (ids and shapes, without specials), cut to
/// the pieces (no `[CLS]`/`[SEP]`).
fn reference_pieces(
    w: &ModelWeights,
    tok: &Tokenizer,
    encodings: &[Encoding],
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let wrapped: Vec<Vec<u32>> = encodings
        .iter()
        .map(|e| {
            std::iter::once(tok.cls_id())
                .chain(e.ids.iter().copied())
                .chain([tok.sep_id()])
                .collect()
        })
        .collect();
    let shapes: Vec<Vec<u8>> = encodings
        .iter()
        .map(|e| {
            std::iter::once(0)
                .chain(e.shapes.iter().copied())
                .chain([0])
                .collect()
        })
        .collect();
    let ids: Vec<&Vec<u32>> = encodings.iter().map(|e| &e.ids).collect();
    let out = reference_forward_shaped(w, &wrapped, &shapes);
    let d = w.config.type_dim;
    let boundary = out
        .boundary
        .iter()
        .zip(&ids)
        .map(|(b, s)| b[3..3 * (s.len() + 1)].to_vec())
        .collect();
    let types = out
        .types
        .iter()
        .zip(&ids)
        .map(|(t, s)| t[d..d * (s.len() + 1)].to_vec())
        .collect();
    (boundary, types)
}

/// Viterbi paths of `encodings` from the reference forward of `w`: first-piece outputs, the
/// runtime's emissions against `protos` (`n` types) and `cdt` unfolded for them.
fn reference_paths(
    w: &ModelWeights,
    tok: &Tokenizer,
    encodings: &[Encoding],
    protos: &[f32],
    n: usize,
    cdt: &CdtParams,
) -> Vec<Vec<usize>> {
    let (rb, rt) = reference_pieces(w, tok, encodings);
    let d = w.config.type_dim;
    let trans = unfold(cdt, n);
    encodings
        .iter()
        .enumerate()
        .map(|(i, enc)| {
            let mut b = Vec::new();
            let mut t = Vec::new();
            for &p in &enc.word_first_piece {
                let p = p as usize;
                b.extend_from_slice(&rb[i][3 * p..3 * p + 3]);
                t.extend_from_slice(&rt[i][d * p..d * (p + 1)]);
            }
            let mut em = Vec::new();
            emissions(&b, &t, d, protos, n, &mut em);
            let mut path = Vec::new();
            viterbi(&em, label_count(n), &trans, &mut path);
            path
        })
        .collect()
}

fn check_encoder(dtype: WeightDtype, against: &ModelWeights, exported: &ModelWeights, tol: f32) {
    let bytes = export_bundle(exported, &contents(exported.config.type_dim, 3), dtype).unwrap();
    let bundle = Bundle::from_vec(bytes, "roundtrip.nerb").unwrap();
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
    assert_eq!(enc.takes_shapes(), exported.config.shape_classes > 0);
    let encodings: Vec<Encoding> = TEXTS.iter().map(|t| tok.encode(t)).collect();
    let refs: Vec<PieceSeq<'_>> = encodings.iter().map(PieceSeq::from).collect();
    let (scores, windows) = enc.encode(&refs).unwrap();
    assert!(windows.iter().all(|&w| w == 1));
    let (rb, rt) = reference_pieces(against, &tok, &encodings);
    for i in 0..TEXTS.len() {
        let scale = |v: &[f32]| v.iter().fold(1.0f32, |m, x| m.max(x.abs()));
        let db = max_abs_diff(&scores[i].boundary, &rb[i]) / scale(&rb[i]);
        let dt = max_abs_diff(&scores[i].types, &rt[i]) / scale(&rt[i]);
        eprintln!("{dtype:?} text {i}: relative diff boundary {db:.2e}, types {dt:.2e}");
        assert!(
            db <= tol && dt <= tol,
            "{dtype:?} text {i}: {db} / {dt} > {tol}"
        );
    }
}

#[test]
fn runtime_encoder_equals_trainer_forward_f32() {
    for shaped in [false, true] {
        let w = model(11, shaped);
        check_encoder(WeightDtype::F32, &w, &w, 1e-5);
    }
}

#[test]
fn runtime_encoder_equals_trainer_forward_f16() {
    for shaped in [false, true] {
        let w = model(12, shaped);
        check_encoder(WeightDtype::F16, &w.f16_effective(), &w, 1e-5);
        check_encoder(WeightDtype::F16, &w, &w, 1e-3);
    }
}

#[test]
fn casing_reaches_a_shaped_model_only() {
    let text = "Angela Merkel visited the Siemens plant in Erlangen.";
    for shaped in [false, true] {
        let w = model(15, shaped);
        let bundle = Bundle::from_vec(
            export_bundle(&w, &contents(w.config.type_dim, 7), WeightDtype::F32).unwrap(),
            "case.nerb",
        )
        .unwrap();
        let tagger = Tagger::new(&bundle, None).unwrap();
        let tok = tagger.tokenizer();
        let cased = tok.encode(text);
        let lower = tok.encode(&text.to_lowercase());
        assert_eq!(cased.ids, lower.ids);
        assert_ne!(cased.shapes, lower.shapes);
        let (scores, _) = tagger
            .encoder()
            .encode(&[PieceSeq::from(&cased), PieceSeq::from(&lower)])
            .unwrap();
        assert_eq!(
            scores[0].types == scores[1].types,
            !shaped,
            "shaped model: {shaped}"
        );
    }
}

#[test]
fn runtime_predictions_equal_decoding_of_trainer_forward() {
    let w = model(13, true);
    let c = contents(w.config.type_dim, 5);
    let bundle =
        Bundle::from_vec(export_bundle(&w, &c, WeightDtype::F32).unwrap(), "rt.nerb").unwrap();
    let tagger = Tagger::new(&bundle, None).unwrap();
    let tagged = tagger.tag(TEXTS, 1).unwrap();
    let tok = tagger.tokenizer();
    let encodings: Vec<_> = TEXTS.iter().map(|t| tok.encode(t)).collect();
    let protos: Vec<f32> = c.types.iter().flat_map(|t| t.prototype.clone()).collect();
    let paths = reference_paths(&w, tok, &encodings, &protos, c.types.len(), &c.transitions);
    let mut entity_count = 0;
    for (i, (enc, path)) in encodings.iter().zip(paths).enumerate() {
        assert_eq!(tagged[i].labels, path, "text {i}");
        assert_eq!(tagged[i].words, enc.words);
        entity_count += tagged[i].entities.len();
    }
    assert!(entity_count > 0, "the test model should produce entities");
}

/// With `labels.other`, the runtime decodes one more type beside the bank's (row 0) and drops
/// its spans: its labels equal Viterbi over the four types with the fourth mapped to O.
#[test]
fn runtime_decodes_the_other_type_and_drops_its_spans() {
    let w = model(16, true);
    let mut c = contents(w.config.type_dim, 8);
    let d = w.config.type_dim;
    let mut other: Vec<f32> = c.types[0].prototype.iter().map(|x| 1.5 * x).collect();
    other.extend(vec![0.0; d]);
    c.other_prototypes = Some(other.clone());
    let bundle = Bundle::from_vec(
        export_bundle(&w, &c, WeightDtype::F32).unwrap(),
        "other.nerb",
    )
    .unwrap();
    let tagger = Tagger::new(&bundle, None).unwrap();
    let tagged = tagger.tag(TEXTS, 1).unwrap();
    let tok = tagger.tokenizer();
    let encodings: Vec<_> = TEXTS.iter().map(|t| tok.encode(t)).collect();
    let mut protos: Vec<f32> = c.types.iter().flat_map(|t| t.prototype.clone()).collect();
    protos.extend_from_slice(&other[..d]);
    let n = c.types.len() + 1;
    let paths = reference_paths(&w, tok, &encodings, &protos, n, &c.transitions);
    let mut other_words = 0;
    for (i, mut path) in paths.into_iter().enumerate() {
        for l in &mut path {
            if *l >= label_count(n - 1) {
                other_words += 1;
                *l = 0;
            }
        }
        assert_eq!(tagged[i].labels, path, "text {i}");
        assert!(tagged[i]
            .entities
            .iter()
            .all(|e| e.type_index < c.types.len()));
    }
    assert!(
        other_words > 0,
        "the other type should win some words in this test"
    );

    let mut plain = Tagger::new(&bundle, None).unwrap();
    assert!(plain.decodes_other());
    plain.disable_other();
    assert!(!plain.decodes_other());
    c.other_prototypes = None;
    let without =
        Bundle::from_vec(export_bundle(&w, &c, WeightDtype::F32).unwrap(), "no.nerb").unwrap();
    let want = Tagger::new(&without, None).unwrap().tag(TEXTS, 1).unwrap();
    let got = plain.tag(TEXTS, 1).unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.labels, w.labels);
    }
}

/// `bundle` re-written with its encoder metadata changed by `edit`.
fn with_encoder_meta(
    bundle: &Bundle,
    edit: impl FnOnce(&mut ner_edge::bundle::EncoderMeta),
) -> Bundle {
    let mut meta = bundle.metadata().clone();
    edit(&mut meta.encoder);
    let mut writer = ner_edge::bundle::BundleWriter::new(meta);
    for t in bundle.tensors() {
        writer
            .add_raw(
                &t.name,
                t.dtype,
                &t.shape,
                bundle.bytes(&t.name).unwrap().to_vec(),
            )
            .unwrap();
    }
    Bundle::from_vec(writer.to_bytes().unwrap(), "edited.nerb").unwrap()
}

/// A shape scheme this runtime does not know, or metadata that disagrees with the graph's
/// inputs, is refused with a message naming the problem; a trained window caps the windows.
#[test]
fn shape_scheme_and_trained_window_are_checked() {
    let shaped = model(17, true);
    let c = contents(shaped.config.type_dim, 9);
    let bundle = Bundle::from_vec(
        export_bundle(&shaped, &c, WeightDtype::F32).unwrap(),
        "s.nerb",
    )
    .unwrap();
    assert_eq!(
        bundle.metadata().encoder.shape_scheme.as_deref(),
        Some("case6-v1")
    );
    let unknown = with_encoder_meta(&bundle, |e| e.shape_scheme = Some("case9-v2".into()));
    let err = Tagger::new(&unknown, None)
        .err()
        .expect("unknown scheme")
        .to_string();
    assert!(
        err.contains("case9-v2") && err.contains("case6-v1"),
        "{err}"
    );
    let missing = with_encoder_meta(&bundle, |e| e.shape_scheme = None);
    let err = Tagger::new(&missing, None)
        .err()
        .expect("graph has shape_ids")
        .to_string();
    assert!(err.contains("shape_ids"), "{err}");

    let plain = model(17, false);
    let bundle = Bundle::from_vec(
        export_bundle(&plain, &c, WeightDtype::F32).unwrap(),
        "p.nerb",
    )
    .unwrap();
    let claimed = with_encoder_meta(&bundle, |e| e.shape_scheme = Some("case6-v1".into()));
    let err = Tagger::new(&claimed, None)
        .err()
        .expect("graph lacks shape_ids")
        .to_string();
    assert!(err.contains("shape_ids"), "{err}");

    assert_eq!(
        Tagger::new(&bundle, None).unwrap().encoder().max_pieces(),
        94
    );
    let windowed = with_encoder_meta(&bundle, |e| e.trained_window = Some(16));
    let tagger = Tagger::new(&windowed, None).unwrap();
    assert_eq!(tagger.encoder().max_pieces(), 16);
    let long = TEXTS.join(" ");
    let tagged = tagger.tag(&[long.as_str()], 1).unwrap();
    assert!(
        tagged[0].windows > 1,
        "a text longer than the trained window is windowed"
    );
    let zero = with_encoder_meta(&bundle, |e| e.trained_window = Some(0));
    assert!(Tagger::new(&zero, None).is_err());
}

#[test]
fn non_finite_prototypes_do_not_panic() {
    let w = model(14, false);
    let mut c = contents(w.config.type_dim, 6);
    c.types[0].prototype[0] = f32::NAN;
    c.types[1].prototype[1] = f32::INFINITY;
    let bundle =
        Bundle::from_vec(export_bundle(&w, &c, WeightDtype::F16).unwrap(), "nan.nerb").unwrap();
    let tagger = Tagger::new(&bundle, None).unwrap();
    let tagged = tagger.tag(TEXTS, 2).unwrap();
    for (t, text) in tagged.iter().zip(TEXTS) {
        assert_eq!(t.labels.len(), t.words.len());
        for e in &t.entities {
            assert!(text.get(e.span.clone()).is_some());
        }
    }
}

/// A bundle with a unigram tokenizer (XLM-R pieces, the precompiled map): the runtime reads it,
/// tags Chinese and mixed text with every ideograph a word, and its labels equal Viterbi over
/// the trainer's forward pass of the same pieces.
#[test]
fn unigram_bundles_tag_chinese_text_as_the_trainer_computes() {
    let (vocab, meta, charsmap, n) = unigram_parts();
    let w = model_with_vocab(17, n);
    let mut c = contents(w.config.type_dim, 9);
    c.vocab_text = vocab;
    c.tokenizer = meta;
    c.charsmap = Some(charsmap);
    let bundle =
        Bundle::from_vec(export_bundle(&w, &c, WeightDtype::F32).unwrap(), "zh.nerb").unwrap();
    let tagger = Tagger::new(&bundle, None).unwrap();
    let tok = tagger.tokenizer();
    assert_eq!(tok.kind(), "unigram");
    let texts = [
        "浙商银行企业信贷部叶老桂博士则从另一个角度对五道门槛进行了解读。",
        "苹果公司CEO蒂姆·库克访问了北京。",
        TEXTS[0],
    ];
    let tagged = tagger.tag(&texts, 1).unwrap();
    let encodings: Vec<_> = texts.iter().map(|t| tok.encode(t)).collect();
    let protos: Vec<f32> = c.types.iter().flat_map(|t| t.prototype.clone()).collect();
    let paths = reference_paths(&w, tok, &encodings, &protos, c.types.len(), &c.transitions);
    let mut entities = 0;
    for (i, (enc, path)) in encodings.iter().zip(paths).enumerate() {
        assert_eq!(tagged[i].labels, path, "text {i}");
        assert_eq!(tagged[i].words, enc.words);
        for e in &tagged[i].entities {
            assert!(
                texts[i].is_char_boundary(e.span.start) && texts[i].is_char_boundary(e.span.end)
            );
            assert!(!texts[i][e.span.clone()].starts_with(' '));
        }
        entities += tagged[i].entities.len();
    }
    let first = &encodings[0];
    assert_eq!(
        first.words.len(),
        texts[0].chars().count(),
        "one word per ideograph or mark"
    );
    assert!(entities > 0, "the test model should produce entities");
}

/// Length `[T, n]` of the type offsets of a text of type vectors `t` (`[T, d]`).
fn offsets_len(t: &[f32], d: usize, n: usize) -> usize {
    t.len() / d * n
}

/// First-piece boundary logits and type vectors of every word of `encodings` from the
/// reference forward of `w`.
fn reference_words(
    w: &ModelWeights,
    tok: &Tokenizer,
    encodings: &[Encoding],
) -> Vec<(Vec<f32>, Vec<f32>)> {
    let (rb, rt) = reference_pieces(w, tok, encodings);
    let d = w.config.type_dim;
    encodings
        .iter()
        .enumerate()
        .map(|(i, enc)| {
            let (mut b, mut t) = (Vec::new(), Vec::new());
            for &p in &enc.word_first_piece {
                let p = p as usize;
                b.extend_from_slice(&rb[i][3 * p..3 * p + 3]);
                t.extend_from_slice(&rt[i][d * p..d * (p + 1)]);
            }
            (b, t)
        })
        .collect()
}

/// A bundle with an associated memory tags as the trainer's read computes: the memory words'
/// keys are the trainer's type vectors of the memory sentences under `Wk`, rounded to f16 as
/// stored; the runtime's read of every text (retrieval, label map, attention) equals the read
/// over every stored memory word within 1e-5 of the largest offset, and the trainer's
/// `assoc_forward` over the unrounded type vectors within 2e-2 (the f16 keys); its labels equal Viterbi over the emissions with the read's offsets.
/// `--no-memory` gives the plain bundle's labels.
#[test]
fn runtime_reads_the_associated_memory_as_the_trainer_computes() {
    use ner_edge::associated_memory::{AssociatedMemory, MemoryBank};
    use ner_edge::emissions::emissions_with_offsets;
    use ner_edge_trainer::loss::assoc::{assoc_forward, init_assoc};
    use ner_edge_trainer::train::export::{memory_tensors, with_tensors};

    let w = model(21, false);
    let c = contents(w.config.type_dim, 9);
    let d = w.config.type_dim;
    let n = c.types.len();
    let plain_bytes = export_bundle(&w, &c, WeightDtype::F32).unwrap();
    let plain = Bundle::from_vec(plain_bytes.clone(), "plain.nerb").unwrap();
    let tok = Tagger::new(&plain, None).unwrap().tokenizer().clone();

    let mut rng = SplitMix64::new(4);
    let mut p = init_assoc(d, 2, 3, 17);
    p.tag_values = rng.normal_vec(2 * 9, 3.0);
    p.type_gain = vec![6.0, -4.0];
    let memory_texts = [
        "Siemens opened a plant in Erlangen.",
        "Merkel met officials in Khartoum.",
        "The U.N. office in Jeddah said so.",
    ];
    let memory_encodings: Vec<_> = memory_texts.iter().map(|t| tok.encode(t)).collect();
    let mut bank = MemoryBank::empty(p.width());
    let mut memory_types = Vec::new();
    let mut memory_labels = Vec::new();
    for (i, (_, types)) in reference_words(&w, &tok, &memory_encodings)
        .into_iter()
        .enumerate()
    {
        let words = types.len() / d;
        let labels: Vec<u16> = (0..words)
            .map(|k| match (k + i) % 4 {
                0 => 0,
                1 => 1 + 2 * (k % n) as u16,
                _ => 0,
            })
            .collect();
        let mut keys = Vec::new();
        p.project(&p.key, &types, &mut keys);
        AssociatedMemory::round_keys_to_f16(&mut keys);
        bank.push_sentence(&keys, &labels).unwrap();
        memory_types.extend(types);
        memory_labels.extend(labels);
    }
    let bytes = with_tensors(plain_bytes, memory_tensors(&p, &bank).unwrap()).unwrap();
    let bundle = Bundle::from_vec(bytes, "memory.nerb").unwrap();
    let tagger = Tagger::new(&bundle, None).unwrap();
    assert!(tagger.reads_memory());
    let tagged = tagger.tag(TEXTS, 1).unwrap();

    let encodings: Vec<_> = TEXTS.iter().map(|t| tok.encode(t)).collect();
    let protos: Vec<f32> = c.types.iter().flat_map(|t| t.prototype.clone()).collect();
    let trans = unfold(&c.transitions, n);
    let memory = AssociatedMemory {
        params: p.clone(),
        bank,
    };
    let mut changed = 0;
    for (i, (b, t)) in reference_words(&w, &tok, &encodings)
        .into_iter()
        .enumerate()
    {
        let exact = assoc_forward(&p, &t, &memory_types, &memory_labels, n).unwrap();
        let (all_keys, all_labels, _) = memory.bank.parts();
        let mut queries = Vec::new();
        p.project(&p.query, &t, &mut queries);
        let mut stored_b = vec![0.0; b.len()];
        let mut stored_t = vec![0.0; offsets_len(&t, d, n)];
        p.attend(
            &queries,
            all_keys,
            all_labels,
            n,
            &mut stored_b,
            &mut stored_t,
            None,
        );
        let mut read_b = b.clone();
        let mut offsets = Vec::new();
        let mut scratch = Default::default();
        memory.read(&t, n, 32, &[], &mut read_b, &mut offsets, &mut scratch);
        let read_delta: Vec<f32> = read_b.iter().zip(&b).map(|(x, y)| x - y).collect();
        let relative = |a: &[f32], b: &[f32]| {
            max_abs_diff(a, b) / b.iter().fold(1.0f32, |m, x| m.max(x.abs()))
        };
        let stored = (
            relative(&read_delta, &stored_b),
            relative(&offsets, &stored_t),
        );
        assert!(stored.0 < 1e-5 && stored.1 < 1e-5, "text {i}: {stored:?}");
        let rounding = (
            relative(&read_delta, &exact.boundary),
            relative(&offsets, &exact.type_offsets),
        );
        assert!(
            rounding.0 < 2e-2 && rounding.1 < 2e-2,
            "text {i}: {rounding:?}"
        );
        let mut em = Vec::new();
        emissions_with_offsets(&read_b, &t, d, &protos, n, &offsets, &mut em);
        let mut path = Vec::new();
        viterbi(&em, label_count(n), &trans, &mut path);
        assert_eq!(tagged[i].labels, path, "text {i}");
        let mut plain_em = Vec::new();
        emissions(&b, &t, d, &protos, n, &mut plain_em);
        let mut plain_path = Vec::new();
        viterbi(&plain_em, label_count(n), &trans, &mut plain_path);
        changed += usize::from(plain_path != path);
    }
    assert!(
        changed > 0,
        "the memory should change some labels in this test"
    );

    let mut ablated = Tagger::new(&bundle, None).unwrap();
    ablated.disable_memory();
    assert!(!ablated.reads_memory());
    let want = Tagger::new(&plain, None).unwrap().tag(TEXTS, 1).unwrap();
    for (g, w) in ablated.tag(TEXTS, 1).unwrap().iter().zip(&want) {
        assert_eq!(g.labels, w.labels);
    }
}
