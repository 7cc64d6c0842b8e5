use proptest::prelude::*;

use super::*;
use crate::bundle::{reseal, sample_bundle_bytes};

fn metadata(content_id: &str, names: &[&str], d: usize) -> PackMetadata {
    PackMetadata {
        base_bundle: BaseBundle {
            content_id: content_id.to_string(),
            name: "base.nerb".into(),
            type_dim: d,
        },
        types: names
            .iter()
            .enumerate()
            .map(|(i, n)| PackType {
                name: n.to_string(),
                description: String::new(),
                prototype_row: i,
                method: Method::Examples,
                support_sentences: 1,
                support_entities: 1,
                support_tokens: 1,
                memory_slot: Some("PER".into()),
                memory_distance: Some(0.25),
            })
            .collect(),
        transitions: CdtParams {
            matrix: [[0.1; 5]; 3],
            start: [0.0; 3],
            end: [0.0; 3],
        },
        provenance: PackProvenance {
            created_by: "test".into(),
            support_file: "s.txt".into(),
            support_xxh64: String::new(),
            prior: "fallback".into(),
            notes: String::new(),
        },
        tuned_heads: None,
        prompts: None,
    }
}

const ID: &str = "0123456789abcdef0123456789abcdef";

fn sample_pack() -> Vec<u8> {
    pack_to_bytes(
        &metadata(ID, &["DRUG", "DOSE"], 4),
        &[1., 2., 3., 4., 5., 6., 7., 8.],
        None,
    )
    .unwrap()
}

/// Metadata of two types with tuned heads over a hidden state of 5, type_dim 4.
fn tuned_metadata() -> PackMetadata {
    let mut meta = metadata(ID, &["DRUG", "DOSE"], 4);
    meta.tuned_heads = Some(TunedHeads {
        hidden: 5,
        steps: 3,
        learning_rate: 1e-3,
        l2: 1.0,
        loss_before: 2.0,
        loss_after: 1.0,
    });
    meta
}

/// A pack of [`tuned_metadata`] with its four head tensors.
fn tuned_pack() -> Vec<u8> {
    let meta = tuned_metadata();
    let heads = Heads {
        hidden: 5,
        type_dim: 4,
        boundary_weight: (0..15).map(|i| i as f32 * 0.1).collect(),
        boundary_bias: vec![0.1, 0.2, 0.3],
        types_weight: (0..20).map(|i| i as f32 * -0.05).collect(),
        types_bias: vec![1.0, 2.0, 3.0, 4.0],
    };
    pack_to_bytes(&meta, &[1., 2., 3., 4., 5., 6., 7., 8.], Some(&heads)).unwrap()
}

/// Pack bytes without the writer's validation, for hostile-content tests.
fn unchecked(meta: &PackMetadata, prototypes: &[f32], shape: &[usize]) -> Vec<u8> {
    let json = serde_json::to_vec(meta).unwrap();
    let mut t = TensorList::default();
    t.add_f32(PROTOTYPES_TENSOR, shape, prototypes).unwrap();
    t.assemble(PACK_MAGIC, PACK_VERSION, &json).unwrap()
}

fn format_err(r: Result<LabelPack>) -> (FormatProblem, String) {
    match r {
        Err(Error::Format { problem, message }) => (problem, message),
        other => panic!("expected a format error, got {other:?}"),
    }
}

fn bundle_err(r: Result<LabelPack>) -> String {
    format_err(r).1
}

#[test]
fn round_trips_and_starts_every_tensor_aligned() {
    let bytes = sample_pack();
    assert_eq!(&bytes[..4], b"NERP");
    let p = LabelPack::from_bytes(&bytes, "p.nerp").unwrap();
    assert_eq!(p.type_names(), ["DRUG", "DOSE"]);
    assert_eq!(p.prototype(1).unwrap(), &[5., 6., 7., 8.]);
    assert!(p.prototype(2).is_none());
    assert_eq!(p.metadata(), &metadata(ID, &["DRUG", "DOSE"], 4));
    assert!(p.tensors.iter().all(|t| t.offset % 64 == 0));
    let text = p.describe();
    assert!(
        text.contains("DRUG") && text.contains("memory slot PER"),
        "{text}"
    );
}

#[test]
fn tuned_heads_round_trip_and_missing_head_tensors_are_named() {
    let p = LabelPack::from_bytes(&tuned_pack(), "t.nerp").unwrap();
    let h = p.heads().unwrap();
    assert_eq!((h.hidden, h.type_dim), (5, 4));
    assert_eq!(h.types_bias, [1.0, 2.0, 3.0, 4.0]);
    assert!(LabelPack::from_bytes(&sample_pack(), "p")
        .unwrap()
        .heads()
        .is_none());

    let (problem, e) = format_err(LabelPack::from_bytes(
        &unchecked(&tuned_metadata(), &[0.0; 8], &[2, 4]),
        "t.nerp",
    ));
    assert_eq!(
        problem,
        FormatProblem::MissingTensor {
            tensor: HEAD_BOUNDARY_WEIGHT.into()
        }
    );
    assert!(
        e.contains("t.nerp") && e.contains("pack.head.boundary.weight") && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn refuses_a_bundle_it_was_not_made_for() {
    let bundle = Bundle::from_vec(sample_bundle_bytes(2, 4).unwrap(), "other.nerb").unwrap();
    let p = LabelPack::from_bytes(&sample_pack(), "p.nerp").unwrap();
    let m = p.check_base(&bundle).unwrap_err().to_string();
    assert!(
        m.contains("p.nerp") && m.contains("base.nerb") && m.contains("other.nerb"),
        "{m}"
    );
    let mut meta = metadata(&bundle.content_id(), &["DRUG"], 4);
    let ok = LabelPack::from_bytes(&pack_to_bytes(&meta, &[0.0; 4], None).unwrap(), "p").unwrap();
    ok.check_base(&bundle).unwrap();
    meta.base_bundle.type_dim = 2;
    let wrong =
        LabelPack::from_bytes(&pack_to_bytes(&meta, &[0.0; 2], None).unwrap(), "p").unwrap();
    assert!(wrong.check_base(&bundle).is_err());
}

#[test]
fn bundles_and_packs_are_told_apart() {
    let (problem, m) = format_err(LabelPack::from_bytes(
        &sample_bundle_bytes(2, 4).unwrap(),
        "b.nerb",
    ));
    assert_eq!(
        problem,
        FormatProblem::BadMagic {
            found: *b"NERB",
            expected: *b"NERP"
        }
    );
    assert!(
        m.contains("not a ner-edge label pack") && m.contains("--bundle"),
        "{m}"
    );
    let e = Bundle::from_vec(sample_pack(), "p.nerp").unwrap_err();
    assert!(matches!(
        &e,
        Error::Format {
            problem: FormatProblem::BadMagic { found, .. },
            ..
        } if found == b"NERP"
    ));
    let m = e.to_string();
    assert!(
        m.contains("not a ner-edge bundle") && m.contains("--pack"),
        "{m}"
    );
}

#[test]
fn semantic_errors_are_named() {
    let cases: Vec<(PackMetadata, Vec<f32>, Vec<usize>, &str)> = vec![
        (
            metadata("xyz", &["A"], 2),
            vec![0.0; 2],
            vec![1, 2],
            "content_id",
        ),
        (
            metadata(ID, &["A", "A"], 2),
            vec![0.0; 4],
            vec![2, 2],
            "types[1].name",
        ),
        (
            metadata(ID, &["A B"], 2),
            vec![0.0; 2],
            vec![1, 2],
            "types[0].name",
        ),
        (metadata(ID, &[], 2), vec![], vec![0, 2], "types is empty"),
        (
            metadata(ID, &["A"], 2),
            vec![0.0; 3],
            vec![1, 3],
            "expected f32",
        ),
        (
            metadata(ID, &["A"], 2),
            vec![0.0, f32::NAN],
            vec![1, 2],
            "non-finite",
        ),
        (metadata(ID, &["A"], 0), vec![], vec![1, 0], "type_dim"),
    ];
    for (meta, protos, shape, needle) in cases {
        let (problem, m) = format_err(LabelPack::from_bytes(
            &unchecked(&meta, &protos, &shape),
            "p",
        ));
        assert!(m.contains(needle), "{m:?} lacks {needle:?}");
        let want = if needle == "expected f32" {
            FormatProblem::TensorShape {
                tensor: PROTOTYPES_TENSOR.into(),
            }
        } else {
            FormatProblem::Metadata
        };
        assert_eq!(problem, want, "{m}");
    }
    let mut meta = metadata(ID, &["A", "B"], 1);
    meta.types[1].prototype_row = 0;
    let m = bundle_err(LabelPack::from_bytes(
        &unchecked(&meta, &[0.0; 2], &[2, 1]),
        "p",
    ));
    assert!(m.contains("prototype_row"), "{m}");
    let mut meta = metadata(ID, &["A"], 1);
    meta.transitions.start[0] = f32::INFINITY;
    let json = serde_json::to_string(&meta).unwrap();
    assert!(json.contains("null"), "JSON cannot hold inf: {json}");
    let bytes = unchecked(&meta, &[0.0], &[1, 1]);
    assert!(LabelPack::from_bytes(&bytes, "p").is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn mutated_packs_never_panic(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in proptest::option::of(any::<usize>()),
        seal in any::<bool>(),
        tuned in any::<bool>(),
    ) {
        let mut bytes = if tuned { tuned_pack() } else { sample_pack() };
        for (at, v) in edits {
            let i = at % bytes.len();
            bytes[i] = v;
        }
        if let Some(c) = cut {
            bytes.truncate(c % (bytes.len() + 1));
        }
        if seal {
            reseal(&mut bytes);
        }
        if let Ok(p) = LabelPack::from_bytes(&bytes, "fuzz") {
            let n = p.metadata().types.len();
            for k in 0..=n {
                let _ = p.prototype(k);
            }
            let _ = p.describe();
            if let Some(h) = p.heads() {
                prop_assert!(h.check("fuzz").is_ok());
            }
        }
    }

    #[test]
    fn mutated_metadata_json_never_panics(edits in proptest::collection::vec((any::<usize>(), 0x20u8..0x7f), 1..6)) {
        let meta = metadata(ID, &["DRUG", "DOSE"], 4);
        let mut json = serde_json::to_vec(&meta).unwrap();
        for (at, v) in edits {
            let i = at % json.len();
            json[i] = v;
        }
        let mut t = TensorList::default();
        t.add_f32(PROTOTYPES_TENSOR, &[2, 4], &[0.5; 8]).unwrap();
        let bytes = t.assemble(PACK_MAGIC, PACK_VERSION, &json).unwrap();
        let _ = LabelPack::from_bytes(&bytes, "fuzz");
    }
}

/// Metadata of two types with prompts of length 2 for 1 layer, 2 heads, hidden 4.
fn prompted_metadata() -> PackMetadata {
    let mut meta = metadata(ID, &["DRUG", "DOSE"], 4);
    meta.prompts = Some(PackPrompts {
        len: 2,
        layers: 1,
        heads: 2,
        hidden: 4,
        steps: 7,
        learning_rate: 1e-2,
        loss_before: 3.0,
        loss_after: 1.5,
    });
    meta
}

fn sample_prompts() -> Prompts {
    Prompts {
        len: 2,
        layers: 1,
        heads: 2,
        hidden: 4,
        key: vec![0.5, -1.0, 0.25, 2.0, 1.0, 0.0, -0.5, 0.125],
        value: vec![1.5, 1.0, -0.25, 0.0, 3.0, 0.5, 0.75, -2.0],
        gate: vec![0.1, -0.2],
    }
}

#[test]
fn prompts_round_trip_and_are_described() {
    let meta = prompted_metadata();
    let prompts = sample_prompts();
    let bytes = prompted_pack_to_bytes(
        &meta,
        &[1., 2., 3., 4., 5., 6., 7., 8.],
        None,
        Some(&prompts),
    )
    .unwrap();
    let p = LabelPack::from_bytes(&bytes, "p.nerp").unwrap();
    assert_eq!(p.prompts(), Some(&prompts), "values exact in f16 survive");
    assert_eq!(p.metadata(), &meta);
    assert!(p
        .describe()
        .contains("prompts:         2 per layer x 1 layers, 7 steps"));
    let e = prompted_pack_to_bytes(&meta, &[0.0; 8], None, None).unwrap_err();
    assert!(e.to_string().contains("must come together"), "{e}");
    let mut wrong = prompts.clone();
    wrong.len = 3;
    assert!(prompted_pack_to_bytes(&meta, &[0.0; 8], None, Some(&wrong)).is_err());
}

#[test]
fn hostile_prompt_tensors_are_named_errors() {
    let meta = prompted_metadata();
    let prompts = sample_prompts();
    let json = serde_json::to_vec(&meta).unwrap();
    let build = |key_shape: &[usize], with_gate: bool| {
        let mut t = TensorList::default();
        t.add_f32(PROTOTYPES_TENSOR, &[2, 4], &[0.0; 8]).unwrap();
        let n: usize = key_shape.iter().product();
        t.add_f32(PROMPT_KEY_TENSOR, key_shape, &vec![0.5; n])
            .unwrap();
        t.add_f32(PROMPT_VALUE_TENSOR, &[1, 2, 4], &prompts.value)
            .unwrap();
        if with_gate {
            t.add_f32(PROMPT_GATE_TENSOR, &[1, 2], &prompts.gate)
                .unwrap();
        }
        t.assemble(PACK_MAGIC, PACK_VERSION, &json).unwrap()
    };
    assert!(LabelPack::from_bytes(&build(&[1, 2, 4], true), "ok").is_ok());
    let (problem, msg) = format_err(LabelPack::from_bytes(&build(&[2, 2, 2], true), "p"));
    assert!(
        matches!(problem, FormatProblem::TensorShape { ref tensor } if tensor == PROMPT_KEY_TENSOR),
        "{msg}"
    );
    let (problem, msg) = format_err(LabelPack::from_bytes(&build(&[1, 2, 4], false), "p"));
    assert!(
        matches!(problem, FormatProblem::MissingTensor { ref tensor } if tensor == PROMPT_GATE_TENSOR),
        "{msg}"
    );
    let mut huge = prompted_metadata();
    huge.prompts.as_mut().unwrap().len = usize::MAX / 2;
    let json = serde_json::to_vec(&huge).unwrap();
    let mut t = TensorList::default();
    t.add_f32(PROTOTYPES_TENSOR, &[2, 4], &[0.0; 8]).unwrap();
    let bytes = t.assemble(PACK_MAGIC, PACK_VERSION, &json).unwrap();
    assert!(LabelPack::from_bytes(&bytes, "p").is_err());
}
