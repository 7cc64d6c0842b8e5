//! A bundle's associated memory as the runtime reads it: a well-formed memory is read by the
//! bundle's types, and every malformed part (missing tensors, sizes, offsets, labels,
//! non-finite values, arbitrary bytes) is an error naming the bundle, never a panic or an
//! out-of-bounds read.

use std::path::Path;

use ner_edge::associated_memory::tensor_names as t;
use ner_edge::bundle::{Bundle, BundleWriter, DType};
use ner_edge::pipeline::Tagger;
use proptest::prelude::*;

fn tiny() -> Bundle {
    Bundle::open(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/bundles/tiny.nerb"))
        .unwrap()
}

const HEADS: usize = 2;
const KEY_DIM: usize = 3;

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The memory tensors of a two-sentence memory (5 words) for a bundle of `type_dim`.
fn memory_parts(type_dim: usize) -> Vec<(&'static str, DType, Vec<usize>, Vec<u8>)> {
    let w = HEADS * KEY_DIM;
    let weight: Vec<f32> = (0..type_dim * w)
        .map(|i| ((i % 7) as f32 - 3.0) * 0.1)
        .collect();
    let keys: Vec<u8> = (0..5 * w)
        .flat_map(|i| half::f16::from_f32((i % 5) as f32 * 0.3 - 0.6).to_le_bytes())
        .collect();
    let labels: Vec<u8> = [0u16, 1, 2, 0, 3]
        .iter()
        .flat_map(|y| y.to_le_bytes())
        .collect();
    let offsets: Vec<u8> = [0u32, 3, 5].iter().flat_map(|o| o.to_le_bytes()).collect();
    vec![
        (t::QUERY, DType::F32, vec![type_dim, w], f32_bytes(&weight)),
        (t::KEY, DType::F32, vec![type_dim, w], f32_bytes(&weight)),
        (
            t::TAG_VALUES,
            DType::F32,
            vec![HEADS, 3, 3],
            f32_bytes(&[2.0; HEADS * 9]),
        ),
        (
            t::TYPE_GAIN,
            DType::F32,
            vec![HEADS],
            f32_bytes(&[3.0, -1.0]),
        ),
        (t::MEMORY_KEYS, DType::F16, vec![5, w], keys),
        (t::MEMORY_LABELS, DType::Bytes, vec![10], labels),
        (t::MEMORY_SENTENCES, DType::Bytes, vec![12], offsets),
    ]
}

/// A tensor to add: name, dtype, shape, bytes (`None`: left out).
type Part = (&'static str, DType, Vec<usize>, Option<Vec<u8>>);

/// `tiny.nerb` with `parts` added (a part whose bytes are `None` is left out).
fn with_parts(parts: Vec<Part>) -> Bundle {
    let base = tiny();
    let mut writer = BundleWriter::new(base.metadata().clone());
    for info in base.tensors() {
        writer
            .add_raw(
                &info.name,
                info.dtype,
                &info.shape,
                base.bytes(&info.name).unwrap().to_vec(),
            )
            .unwrap();
    }
    for (name, dtype, shape, bytes) in parts {
        if let Some(bytes) = bytes {
            writer.add_raw(name, dtype, &shape, bytes).unwrap();
        }
    }
    Bundle::from_vec(writer.to_bytes().unwrap(), "memory.nerb").unwrap()
}

/// `tiny.nerb` with its memory, part `name` replaced by `bytes` (shape: its length in
/// elements) or left out.
fn with_changed(name: &str, bytes: Option<Vec<u8>>) -> Bundle {
    let d = tiny().metadata().encoder.type_dim;
    let parts = memory_parts(d)
        .into_iter()
        .map(|(n, dtype, shape, b)| {
            if n == name {
                let len = bytes.as_ref().map_or(0, Vec::len);
                let shape = vec![len / dtype.size().max(1)];
                (n, dtype, shape, bytes.clone())
            } else {
                (n, dtype, shape, Some(b))
            }
        })
        .collect();
    with_parts(parts)
}

fn load_error(bundle: &Bundle) -> String {
    match Tagger::new(bundle, None) {
        Ok(_) => panic!("{} should not load", bundle.name()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_well_formed_memory_is_read_and_can_be_turned_off() {
    let d = tiny().metadata().encoder.type_dim;
    let parts = memory_parts(d)
        .into_iter()
        .map(|(n, dt, s, b)| (n, dt, s, Some(b)))
        .collect();
    let bundle = with_parts(parts);
    let mut tagger = Tagger::new(&bundle, None).unwrap();
    assert!(tagger.reads_memory());
    let texts = ["Angela Merkel visited Siemens in Erlangen.", ""];
    let with = tagger.tag(&texts, 1).unwrap();
    tagger.disable_memory();
    assert!(!tagger.reads_memory());
    let without = tagger.tag(&texts, 1).unwrap();
    let plain = Tagger::new(&tiny(), None).unwrap().tag(&texts, 1).unwrap();
    assert_eq!(without[0].labels, plain[0].labels);
    assert_eq!(with[0].words, plain[0].words);
    assert!(!Tagger::new(&tiny(), None).unwrap().reads_memory());
    let described = ner_edge::bundle::describe(&bundle);
    assert!(described.contains("2 sentences, 5 words"), "{described}");
}

#[test]
fn malformed_memories_are_errors_naming_the_problem() {
    let cases: Vec<(&str, Option<Vec<u8>>, &str)> = vec![
        (t::MEMORY_KEYS, None, "needs all of"),
        (t::TYPE_GAIN, Some(f32_bytes(&[])), "key"),
        (
            t::TAG_VALUES,
            Some(f32_bytes(&[1.0; 10])),
            "assoc.tag_values",
        ),
        (t::QUERY, Some(f32_bytes(&[0.5; 7])), "key width"),
        (t::KEY, Some(f32_bytes(&[0.5; 7])), "assoc.key has 7 values"),
        (
            t::TYPE_GAIN,
            Some(f32_bytes(&[f32::NAN, 1.0])),
            "non-finite",
        ),
        (
            t::MEMORY_LABELS,
            Some(
                [0u16, 1, 2, 0, 999]
                    .iter()
                    .flat_map(|y| y.to_le_bytes())
                    .collect(),
            ),
            "label 999",
        ),
        (t::MEMORY_LABELS, Some(vec![0, 0, 1]), "u16"),
        (
            t::MEMORY_LABELS,
            Some([0u16, 1].iter().flat_map(|y| y.to_le_bytes()).collect()),
            "assoc.memory.keys",
        ),
        (
            t::MEMORY_SENTENCES,
            Some([0u32, 4, 3].iter().flat_map(|o| o.to_le_bytes()).collect()),
            "non-decreasing",
        ),
        (
            t::MEMORY_SENTENCES,
            Some([1u32, 5].iter().flat_map(|o| o.to_le_bytes()).collect()),
            "non-decreasing",
        ),
        (t::MEMORY_SENTENCES, Some(vec![]), "non-decreasing"),
    ];
    for (name, bytes, want) in cases {
        let e = load_error(&with_changed(name, bytes));
        assert!(e.contains(want), "{name}: {e}");
        assert!(e.contains("memory.nerb"), "{name}: {e}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Arbitrary label and offset bytes either load (and then tag without panicking) or are
    /// refused with an error.
    #[test]
    fn arbitrary_label_and_offset_bytes_never_panic(
        labels in proptest::collection::vec(any::<u8>(), 0..14),
        offsets in proptest::collection::vec(any::<u8>(), 0..20),
    ) {
        let d = tiny().metadata().encoder.type_dim;
        let parts = memory_parts(d)
            .into_iter()
            .map(|(n, dt, s, b)| match n {
                t::MEMORY_LABELS => (n, dt, vec![labels.len()], Some(labels.clone())),
                t::MEMORY_SENTENCES => (n, dt, vec![offsets.len()], Some(offsets.clone())),
                _ => (n, dt, s, Some(b)),
            })
            .collect();
        let bundle = with_parts(parts);
        if let Ok(tagger) = Tagger::new(&bundle, None) {
            let tagged = tagger.tag(&["Merkel visited Erlangen."], 1).unwrap();
            prop_assert_eq!(tagged.len(), 1);
        }
    }
}

fn memory_bundle() -> Bundle {
    let d = tiny().metadata().encoder.type_dim;
    with_parts(
        memory_parts(d)
            .into_iter()
            .map(|(n, dt, s, b)| (n, dt, s, Some(b)))
            .collect(),
    )
}

/// `adapt` on a bundle with a memory keeps the support sentences as the pack's memory
/// (labels over the pack's types), the pack file carries it through, and the pack's types
/// read it; on a bundle without a memory the pack has none.
#[test]
fn adapt_grows_a_memory_from_the_support_sentences() {
    use ner_edge::adapt::{adapt, parse_support, AdaptOptions, SupportFormat};
    use ner_edge::pack::{full_pack_to_bytes, LabelPack};

    let support = parse_support(
        "Take [ibuprofen](DRUG) for pain .\nHe took [aspirin](DRUG) with [Merkel](PER2) .\n",
        "drugs.txt",
        SupportFormat::Auto,
    )
    .unwrap();
    let bundle = memory_bundle();
    let adapted = adapt(&bundle, Some(&support), &AdaptOptions::default()).unwrap();
    let bank = adapted
        .memory
        .clone()
        .expect("a memory bundle gives the pack a memory");
    assert_eq!(bank.sentences(), 2);
    let (_, labels, offsets) = bank.parts();
    assert_eq!(offsets, [0, 5, 11]);
    assert_eq!(labels[1], 1, "ibuprofen is B-DRUG (type 0)");
    assert_eq!(&labels[8..10], [0, 3], "with O, Merkel B-PER2 (type 1)");
    let bytes = adapted.to_pack_bytes().unwrap();
    let pack = LabelPack::from_bytes(&bytes, "drugs.nerp").unwrap();
    assert_eq!(pack.memory(), Some(&bank));
    let mut tagger = Tagger::with_packs(&bundle, &[pack], None, false).unwrap();
    assert!(tagger.reads_memory());
    let tagged = tagger.tag(&["He took ibuprofen ."], 1).unwrap();
    assert_eq!(tagged[0].words.len(), 4);
    tagger.disable_memory();
    assert!(!tagger.reads_memory());

    let plain = adapt(&tiny(), Some(&support), &AdaptOptions::default()).unwrap();
    assert!(plain.memory.is_none());

    let mut bad = bank.clone();
    bad.push_sentence(&vec![0.0; bank.width()], &[9]).unwrap();
    let e = full_pack_to_bytes(
        &adapted.metadata,
        &adapted.prototypes,
        None,
        None,
        Some(&bad),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("label 9"), "{e}");
}
