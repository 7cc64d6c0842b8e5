//! Adding a label pack does not change what the bundle's own types produce: bit-identical
//! output for the old types on fixed texts before and after an unrelated pack is added.

use std::path::{Path, PathBuf};

use ner_edge::adapt::{adapt, read_support, AdaptOptions, SupportFormat, TuneOptions};
use ner_edge::bundle::Bundle;
use ner_edge::encoder::Prompts;
use ner_edge::pack::{pack_to_bytes, prompted_pack_to_bytes, LabelPack, PackPrompts};
use ner_edge::pipeline::{TaggedText, Tagger};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn drug_pack(bundle: &Bundle, tune: Option<TuneOptions>) -> LabelPack {
    let support = read_support(
        &repo().join("fixtures/adapt/drugs.txt"),
        SupportFormat::Auto,
        1 << 20,
    )
    .unwrap();
    let opts = AdaptOptions {
        tune,
        ..AdaptOptions::default()
    };
    let a = adapt(bundle, Some(&support), &opts).unwrap();
    LabelPack::from_bytes(
        &pack_to_bytes(&a.metadata, &a.prototypes, a.heads.as_ref()).unwrap(),
        "drug.nerp",
    )
    .unwrap()
}

/// `(byte span, type name, score bits)` of every entity of a type in `old`.
fn old_entities(
    t: &TaggedText,
    names: &[String],
    old: &[String],
) -> Vec<(usize, usize, String, u32)> {
    t.entities
        .iter()
        .filter(|e| old.contains(&names[e.type_index]))
        .map(|e| {
            (
                e.span.start,
                e.span.end,
                names[e.type_index].clone(),
                e.score.to_bits(),
            )
        })
        .collect()
}

#[test]
fn old_types_are_bit_identical_after_adding_an_unrelated_pack() {
    let bundle = Bundle::open(&repo().join("fixtures/bundles/tiny.nerb")).unwrap();
    assert_old_types_unchanged(&bundle, &drug_pack(&bundle, None));
}

#[test]
fn old_types_are_bit_identical_after_adding_a_pack_with_tuned_heads() {
    let bundle = Bundle::open(&repo().join("fixtures/bundles/tiny.nerb")).unwrap();
    let tuned = drug_pack(&bundle, Some(TuneOptions::with_steps(20)));
    assert!(tuned.heads().is_some());
    assert_old_types_unchanged(&bundle, &tuned);
}

#[test]
fn old_types_are_bit_identical_after_adding_a_pack_with_prompts() {
    let bundle = Bundle::open(&repo().join("fixtures/bundles/tiny.nerb")).unwrap();
    for tune in [None, Some(TuneOptions::with_steps(20))] {
        let plain = drug_pack(&bundle, tune);
        let e = &bundle.metadata().encoder;
        let len = 4;
        let wave =
            |n: usize, f: f32| -> Vec<f32> { (0..n).map(|i| (i as f32 * f).sin()).collect() };
        let prompts = Prompts {
            len,
            layers: e.layers,
            heads: e.heads,
            hidden: e.hidden,
            key: wave(e.layers * len * e.hidden, 0.37),
            value: wave(e.layers * len * e.hidden, 0.11),
            gate: wave(e.layers * e.heads, 0.7),
        };
        let mut metadata = plain.metadata().clone();
        metadata.prompts = Some(PackPrompts {
            len,
            layers: e.layers,
            heads: e.heads,
            hidden: e.hidden,
            steps: 0,
            learning_rate: 0.0,
            loss_before: 0.0,
            loss_after: 0.0,
        });
        let prototypes: Vec<f32> = (0..plain.type_names().len())
            .flat_map(|k| plain.prototype(k).unwrap().to_vec())
            .collect();
        let bytes =
            prompted_pack_to_bytes(&metadata, &prototypes, plain.heads(), Some(&prompts)).unwrap();
        let pack = LabelPack::from_bytes(&bytes, "drug-prompted.nerp").unwrap();
        assert!(pack.prompts().is_some());
        assert_old_types_unchanged(&bundle, &pack);
    }
}

fn assert_old_types_unchanged(bundle: &Bundle, pack: &LabelPack) {
    let alone = Tagger::new(bundle, None).unwrap();
    let with = Tagger::with_packs(bundle, std::slice::from_ref(pack), None, false).unwrap();
    let old: Vec<String> = alone.type_names().to_vec();
    assert_eq!(&with.type_names()[..old.len()], &old[..]);
    assert_eq!(with.type_names().last().map(String::as_str), Some("DRUG"));

    // Fixed texts on which the DRUG pack wins no overlap with an old entity.
    let texts = [
        "Angela Merkel visited the Siemens plant in Erlangen on Tuesday.",
        "Apple chief executive Tim Cook met investors in New York before flying to Tokyo.",
        "Novak Djokovic beat Carlos Alcaraz in the final at Wimbledon.",
    ];
    let a = alone.tag(&texts, 1).unwrap();
    let b = with.tag(&texts, 1).unwrap();
    let mut n = 0;
    for ((x, y), text) in a.iter().zip(&b).zip(texts) {
        let before = old_entities(x, alone.type_names(), &old);
        let after = old_entities(y, with.type_names(), &old);
        assert_eq!(before, after, "{text}");
        assert_eq!(x.labels, y.labels, "{text}");
        n += before.len();
    }
    assert!(
        n > 0,
        "the texts must have old-type entities for the test to mean anything"
    );
}
