//! Prompt adapters end to end on the tiny fixture bundle: the runtime's prompted graph computes
//! what the trainer's forward pass computes, and `ner-train prompt`'s training lowers its loss
//! and yields a pack the runtime reads back with the same prompts.

use std::path::{Path, PathBuf};

use ner_edge::adapt::{read_support, AdaptOptions, SupportFormat};
use ner_edge::bundle::{tensor_names, Bundle};
use ner_edge::encoder::{Encoder, PieceSeq, Prompts, SpecialIds};
use ner_edge::pack::{prompted_pack_to_bytes, LabelPack};
use ner_edge::pipeline::Tagger;
use ner_edge::tokenizer::Tokenizer;
use ner_edge_trainer::backprop::model::forward_with_prefixes;
use ner_edge_trainer::backprop::prefix::Prefixes;
use ner_edge_trainer::backprop::{PieceBatch, Tape};
use ner_edge_trainer::import::bundle::weights_from_bundle;
use ner_edge_trainer::model::rng::SplitMix64;
use ner_edge_trainer::train::prompt::{train_prompts, PromptOptions};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tiny() -> Bundle {
    Bundle::open(&repo().join("fixtures/bundles/tiny.nerb")).unwrap()
}

fn tokenizer(bundle: &Bundle) -> Tokenizer {
    let vocab = std::str::from_utf8(bundle.bytes(tensor_names::VOCAB).unwrap()).unwrap();
    Tokenizer::new(&bundle.metadata().tokenizer, vocab).unwrap()
}

fn random_prompts(bundle: &Bundle, len: usize, seed: u64) -> Prompts {
    let e = &bundle.metadata().encoder;
    let mut rng = SplitMix64::new(seed);
    let pd = e.layers * len * e.hidden;
    Prompts {
        len,
        layers: e.layers,
        heads: e.heads,
        hidden: e.hidden,
        key: rng.normal_vec(pd, 1.0),
        value: rng.normal_vec(pd, 1.0),
        gate: rng.normal_vec(e.layers * e.heads, 0.8),
    }
}

#[test]
fn the_prompted_graph_computes_the_trainer_forward() {
    let bundle = tiny();
    let tok = tokenizer(&bundle);
    let meta = &bundle.metadata().encoder;
    let special = SpecialIds {
        cls: tok.cls_id(),
        sep: tok.sep_id(),
        pad: tok.pad_id(),
    };
    let onnx = bundle.bytes(tensor_names::ENCODER_ONNX).unwrap();
    let texts = [
        "Angela Merkel visited the Siemens plant in Erlangen.",
        "Aspirin",
        "Doctors prescribed ibuprofen for the back pain last week.",
    ];
    let encodings: Vec<_> = texts.iter().map(|t| tok.encode(t)).collect();
    let w = weights_from_bundle(&bundle).unwrap();
    for (len, seed) in [(1, 3), (4, 4)] {
        let prompts = random_prompts(&bundle, len, seed);
        let encoder = Encoder::load_with_prompts(onnx, meta, special, false, &prompts).unwrap();
        let seqs: Vec<PieceSeq<'_>> = encodings.iter().map(PieceSeq::from).collect();
        let runtime = encoder.run_batch(&seqs).unwrap();

        let prefixes = Prefixes {
            len,
            key: prompts.key.clone(),
            value: prompts.value.clone(),
            gate: prompts.gate.clone(),
        };
        for (enc, got) in encodings.iter().zip(&runtime) {
            let mut ids = vec![tok.cls_id()];
            ids.extend_from_slice(&enc.ids);
            ids.push(tok.sep_id());
            let mut shapes = vec![0u8; ids.len()];
            if !enc.shapes.is_empty() {
                shapes[1..=enc.ids.len()].copy_from_slice(&enc.shapes);
            }
            let mut batch = PieceBatch::default();
            batch.push_shaped(&w.config, &ids, Some(&shapes)).unwrap();
            let mut tape = Tape::new();
            forward_with_prefixes(&w, &batch, &prefixes, &mut tape);
            let n = enc.ids.len();
            let d = meta.type_dim;
            let want_b = &tape.boundary()[3..3 * (n + 1)];
            let want_t = &tape.types()[d..d * (n + 1)];
            let worst = |a: &[f32], b: &[f32]| {
                assert_eq!(a.len(), b.len());
                a.iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f32::max)
            };
            let (db, dt) = (worst(&got.boundary, want_b), worst(&got.types, want_t));
            assert!(db < 1e-4 && dt < 1e-4, "P={len}: boundary {db}, types {dt}");
        }
    }

    let mut closed = random_prompts(&bundle, 3, 5);
    closed.gate.fill(0.0);
    let plain = Encoder::load(onnx, meta, special).unwrap();
    let prompted = Encoder::load_with_prompts(onnx, meta, special, false, &closed).unwrap();
    let seqs: Vec<PieceSeq<'_>> = encodings.iter().map(PieceSeq::from).collect();
    assert_eq!(
        plain.run_batch(&seqs).unwrap(),
        prompted.run_batch(&seqs).unwrap(),
        "closed gates must give the plain encoder's outputs"
    );
}

#[test]
fn prompt_training_lowers_the_loss_and_its_pack_keeps_the_bundle_types() {
    let bundle = tiny();
    let support = read_support(
        &repo().join("fixtures/adapt/five_types.txt"),
        SupportFormat::Auto,
        1 << 20,
    )
    .unwrap();
    for tune_heads in [false, true] {
        let opts = PromptOptions {
            len: 3,
            epochs: 4,
            batch: 4,
            lr: 3e-2,
            tune_heads,
            threads: 2,
            ..PromptOptions::default()
        };
        let (adapted, prompts, report) =
            train_prompts(&bundle, &support, &AdaptOptions::default(), &opts).unwrap();
        assert!(
            report.loss_after < report.loss_before,
            "loss {} -> {}",
            report.loss_before,
            report.loss_after
        );
        assert_eq!(report.steps, 4 * 25usize.div_ceil(4));
        assert_eq!(adapted.heads.is_some(), tune_heads);
        assert!(prompts.gate.iter().any(|&g| g != 0.0));
        let bytes = prompted_pack_to_bytes(
            &adapted.metadata,
            &adapted.prototypes,
            adapted.heads.as_ref(),
            Some(&prompts),
        )
        .unwrap();
        let pack = LabelPack::from_bytes(&bytes, "prompted.nerp").unwrap();
        assert_eq!(
            pack.prompts(),
            Some(&prompts),
            "prompts are stored as trained"
        );

        let texts = [
            "Angela Merkel visited the Siemens plant in Erlangen on Tuesday.",
            "Doctors prescribed ibuprofen for the back pain.",
        ];
        let alone = Tagger::new(&bundle, None).unwrap();
        let with = Tagger::with_packs(&bundle, std::slice::from_ref(&pack), None, false).unwrap();
        let old = alone.type_names().len();
        let a = alone.tag(&texts, 1).unwrap();
        let b = with.tag(&texts, 2).unwrap();
        for (x, y) in a.iter().zip(&b) {
            let keep = |t: &ner_edge::pipeline::TaggedText| -> Vec<(usize, usize, usize, u32)> {
                t.entities
                    .iter()
                    .filter(|e| e.type_index < old)
                    .map(|e| (e.span.start, e.span.end, e.type_index, e.score.to_bits()))
                    .collect()
            };
            let overlaps_new = y.entities.iter().any(|e| e.type_index >= old);
            if !overlaps_new {
                assert_eq!(
                    keep(x),
                    keep(y),
                    "bundle types changed with a prompted pack"
                );
            }
        }
    }
}
