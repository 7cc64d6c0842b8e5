use std::path::Path;

use super::columns::Sentence;
use super::*;
use crate::adapt::memory::retrieve;
use crate::pack::{pack_to_bytes, LabelPack};

fn bundle() -> Bundle {
    Bundle::open(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/bundles/tiny.nerb"))
        .unwrap()
}

fn inline(text: &str) -> SupportSet {
    parse_support(text, "s.txt", SupportFormat::Inline).unwrap()
}

fn input_error(r: Result<Adapted>) -> String {
    match r {
        Err(Error::Input(m)) => m,
        other => panic!("expected an input error, got {other:?}"),
    }
}

#[test]
fn adapts_types_from_examples_into_a_valid_pack() {
    let b = bundle();
    let s = inline("[aspirin](DRUG) reduced the [high fever](SYMPTOM)\n[ibuprofen](DRUG) helps\n");
    let a = adapt(&b, Some(&s), &AdaptOptions::default()).unwrap();
    let d = b.metadata().encoder.type_dim;
    let t = &a.metadata.types;
    assert_eq!(
        t.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["DRUG", "SYMPTOM"]
    );
    assert_eq!(
        (
            t[0].support_entities,
            t[0].support_sentences,
            t[0].support_tokens
        ),
        (2, 2, 2)
    );
    assert_eq!((t[1].support_entities, t[1].support_tokens), (1, 2));
    assert!(t
        .iter()
        .all(|t| t.method == Method::Examples && t.memory_slot.is_some()));
    assert_eq!(a.prototypes.len(), 2 * d);
    assert!(a.prototypes.iter().all(|v| v.is_finite()));
    assert_eq!(a.metadata.transitions, b.metadata().transitions);
    let pack = LabelPack::from_bytes(
        &pack_to_bytes(&a.metadata, &a.prototypes, None).unwrap(),
        "p",
    )
    .unwrap();
    pack.check_base(&b).unwrap();
}

#[test]
fn prototype_is_the_manner_prior_of_the_support_vectors() {
    let b = bundle();
    let a = adapt(
        &b,
        Some(&inline("[aspirin](DRUG) reduced it\n")),
        &AdaptOptions::default(),
    )
    .unwrap();
    let (tokenizer, encoder) = load_model(&b, false).unwrap();
    let d = encoder.type_dim();
    let enc = tokenizer.encode("aspirin reduced it");
    let (scores, _) = encoder.encode(&[(&enc).into()]).unwrap();
    let p = enc.word_first_piece[0] as usize;
    let support = &scores[0].types[p * d..(p + 1) * d];
    let memory = b.to_f32_vec(tensor_names::LABEL_MEMORY).unwrap();
    let slots = &b.metadata().label_memory.slots;
    let r = retrieve(&memory, slots, d, support, 1).unwrap();
    let mapped = mean_rows(&r.mapped, slots[r.slot].rows, d).unwrap();
    let net = PriorNet::from_bundle(&b).unwrap();
    let forward = |x: &[f32]| net.as_ref().map_or_else(Vec::new, |n| n.forward(x));
    let mlp: Option<PriorMlp<'_>> = net.as_ref().map(|_| &forward as PriorMlp<'_>);
    let want = prior_prototype(support, &mapped, mlp, PRIOR_GAMMA).unwrap();
    assert_eq!(a.prototypes, want);
    assert_eq!(
        a.metadata.types[0].memory_slot.as_deref(),
        Some(slots[r.slot].type_name.as_str())
    );
    let expected_prior = if net.is_some() { "bundle" } else { "fallback" };
    assert_eq!(a.metadata.provenance.prior, expected_prior);
}

#[test]
fn descriptions_seed_zero_shot_types_and_can_be_combined() {
    let b = bundle();
    let s = inline("[fever](SYMPTOM) again\n[aspirin](DRUG) now\n");
    let desc = vec![("DOSE".to_string(), "amount of a medication".to_string())];
    let opts = AdaptOptions {
        descriptions: desc.clone(),
        ..AdaptOptions::default()
    };
    let a = adapt(&b, Some(&s), &opts).unwrap();
    let dose = &a.metadata.types[2];
    assert_eq!(
        (dose.name.as_str(), dose.method),
        ("DOSE", Method::ZeroShot)
    );
    assert_eq!((dose.support_entities, dose.support_tokens), (0, 4));
    assert_eq!(dose.description, "amount of a medication");

    let desc = vec![("DRUG".to_string(), "medication or drug name".to_string())];
    let plain = adapt(
        &b,
        Some(&s),
        &AdaptOptions {
            descriptions: desc.clone(),
            examples_only: true,
            ..AdaptOptions::default()
        },
    )
    .unwrap();
    let combined = adapt(
        &b,
        Some(&s),
        &AdaptOptions {
            descriptions: desc,
            ..AdaptOptions::default()
        },
    )
    .unwrap();
    let (p, c) = (&plain.metadata.types[1], &combined.metadata.types[1]);
    assert_eq!((p.method, p.support_tokens), (Method::Examples, 1));
    assert_eq!((c.method, c.support_tokens), (Method::Combined, 5));
    let only_desc = adapt(
        &b,
        None,
        &AdaptOptions {
            descriptions: vec![("DRUG".into(), "drug".into())],
            ..AdaptOptions::default()
        },
    )
    .unwrap();
    assert_eq!(only_desc.metadata.types[0].method, Method::ZeroShot);
    assert_eq!(only_desc.metadata.provenance.support_file, "");
}

#[test]
fn types_option_selects_and_orders() {
    let b = bundle();
    let s = inline("[a](X) [b](Y) [c](Z)\n");
    let opts = AdaptOptions {
        types: Some(vec!["Z".into(), "X".into()]),
        ..AdaptOptions::default()
    };
    let a = adapt(&b, Some(&s), &opts).unwrap();
    let names: Vec<_> = a.metadata.types.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["Z", "X"]);
}

#[test]
fn bad_support_sets_are_clear_errors() {
    let b = bundle();
    let empty = parse_support("\n\n", "empty.txt", SupportFormat::Auto).unwrap();
    let m = input_error(adapt(&b, Some(&empty), &AdaptOptions::default()));
    assert!(
        m.contains("empty.txt") && m.contains("empty support set"),
        "{m}"
    );

    let plain = inline("no entities here\n");
    let m = input_error(adapt(&b, Some(&plain), &AdaptOptions::default()));
    assert!(m.contains("s.txt") && m.contains("nothing to adapt"), "{m}");

    let opts = AdaptOptions {
        types: Some(vec!["X".into(), "MISSING".into()]),
        ..AdaptOptions::default()
    };
    let m = input_error(adapt(&b, Some(&inline("[a](X)\n")), &opts));
    assert!(
        m.contains("s.txt") && m.contains("MISSING has zero examples"),
        "{m}"
    );

    let s = parse_support(
        "\n{\"text\": \"a \\u0001 b\", \"entities\": [{\"start\": 2, \"end\": 3, \"type\": \"X\"}]}\n",
        "s.jsonl",
        SupportFormat::Jsonl,
    )
    .unwrap();
    let m = input_error(adapt(&b, Some(&s), &AdaptOptions::default()));
    assert!(
        m.contains("s.jsonl: line 2:") && m.contains("covers no word"),
        "{m}"
    );

    for (name, text) in [("A B", "x"), ("A", " ")] {
        let opts = AdaptOptions {
            descriptions: vec![(name.into(), text.into())],
            ..AdaptOptions::default()
        };
        assert!(matches!(adapt(&b, None, &opts), Err(Error::Usage(_))));
    }
}

/// MANNER pads a support set to the memory size by repeating its points; with uniform
/// marginals that is the same transport problem, so adapt does not pad (module docs).
#[test]
fn padding_by_repetition_changes_nothing() {
    let b = bundle();
    let d = b.metadata().encoder.type_dim;
    let memory = b.to_f32_vec(tensor_names::LABEL_MEMORY).unwrap();
    let slots = &b.metadata().label_memory.slots;
    let support: Vec<f32> = (0..3 * d)
        .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.3)
        .collect();
    let once = retrieve(&memory, slots, d, &support, 3).unwrap();
    let repeated: Vec<f32> = support.iter().copied().cycle().take(5 * 3 * d).collect();
    let padded = retrieve(&memory, slots, d, &repeated, 15).unwrap();
    assert_eq!(once.slot, padded.slot);
    assert!(
        (once.distance - padded.distance).abs() < 1e-9,
        "{} {}",
        once.distance,
        padded.distance
    );
    for (a, b) in once.mapped.iter().zip(&padded.mapped) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

fn sentence(tokens: &str, tags: &str) -> Sentence {
    Sentence {
        tokens: tokens.split_whitespace().map(String::from).collect(),
        tags: tags.split_whitespace().map(String::from).collect(),
        text: None,
    }
}

#[test]
fn an_adapter_gives_exactly_the_packs_of_adapt() {
    let b = bundle();
    let (tokenizer, encoder) = load_model(&b, false).unwrap();
    let adapter = Adapter::new(&b, &tokenizer, &encoder).unwrap();
    let s = inline("[aspirin](DRUG) reduced the [high fever](SYMPTOM)\n[ibuprofen](DRUG) helps\n");
    let opts = AdaptOptions {
        descriptions: vec![("DOSE".into(), "an amount of a drug".into())],
        ..AdaptOptions::default()
    };
    let once = adapt(&b, Some(&s), &opts).unwrap();
    assert_eq!(adapter.adapt(Some(&s), &opts).unwrap(), once);
    assert_eq!(adapter.adapt(Some(&s), &opts).unwrap(), once);
    assert_eq!(
        input_error(adapter.adapt(Some(&inline("")), &opts)),
        input_error(adapt(&b, Some(&inline("")), &opts))
    );
}

#[test]
fn token_support_uses_the_first_piece_of_every_given_word() {
    let b = bundle();
    let (tokenizer, encoder) = load_model(&b, false).unwrap();
    let adapter = Adapter::new(&b, &tokenizer, &encoder).unwrap();
    let support = [
        sentence("u.s. troops left", "B-LOC O O"),
        sentence("the new york office", "O B-LOC I-LOC O"),
    ];
    let a = adapter
        .adapt_tokens(&support, "episode 1", &EpisodeOptions::default())
        .unwrap();
    let t = &a.metadata.types;
    assert_eq!(t.len(), 1);
    assert_eq!(
        (
            t[0].name.as_str(),
            t[0].support_entities,
            t[0].support_sentences,
            t[0].support_tokens
        ),
        ("LOC", 2, 2, 3)
    );

    assert!(tokenizer.encode("u.s. troops left").words.len() > 3);
    let d = encoder.type_dim();
    let mut vectors = Vec::new();
    for (words, wanted) in [
        (vec!["u.s.", "troops", "left"], vec![0]),
        (vec!["the", "new", "york", "office"], vec![1, 2]),
    ] {
        let enc = tokenizer.encode_words(&words);
        assert_eq!(enc.words.len(), words.len());
        let (scores, _) = encoder.encode(&[(&enc).into()]).unwrap();
        for w in wanted {
            let p = enc.word_first_piece[w] as usize;
            vectors.extend_from_slice(&scores[0].types[p * d..(p + 1) * d]);
        }
    }
    let memory = b.to_f32_vec(tensor_names::LABEL_MEMORY).unwrap();
    let slots = &b.metadata().label_memory.slots;
    let r = retrieve(&memory, slots, d, &vectors, 3).unwrap();
    let mapped = mean_rows(&r.mapped, slots[r.slot].rows, d).unwrap();
    let net = PriorNet::from_bundle(&b).unwrap();
    let forward = |x: &[f32]| net.as_ref().map_or_else(Vec::new, |n| n.forward(x));
    let mlp: Option<PriorMlp<'_>> = net.as_ref().map(|_| &forward as PriorMlp<'_>);
    let support_mean = mean_rows(&vectors, 3, d).unwrap();
    let want = prior_prototype(&support_mean, &mapped, mlp, PRIOR_GAMMA).unwrap();
    assert_eq!(a.prototypes, want);
    assert_eq!(a.metadata.provenance.support_file, "episode 1");
    assert_eq!(a.metadata.provenance.support_xxh64.len(), 16);
}

#[test]
fn token_support_types_follow_first_mention_and_bad_sentences_are_named() {
    let b = bundle();
    let (tokenizer, encoder) = load_model(&b, false).unwrap();
    let adapter = Adapter::new(&b, &tokenizer, &encoder).unwrap();
    let a = adapter
        .adapt_tokens(
            &[
                sentence("x y", "O O"),
                sentence("paris is in france", "B-LOC O O I-GPE"),
                sentence("acme corp", "B-ORG I-ORG"),
            ],
            "ep",
            &EpisodeOptions::default(),
        )
        .unwrap();
    let names: Vec<&str> = a.metadata.types.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["LOC", "GPE", "ORG"]);

    let e = input_error(adapter.adapt_tokens(
        &[sentence("a b", "O O")],
        "ep",
        &EpisodeOptions::default(),
    ));
    assert!(e.contains("ep: no entity mentions"), "{e}");
    let e = input_error(adapter.adapt_tokens(&[], "ep", &EpisodeOptions::default()));
    assert!(e.contains("ep: empty support set"), "{e}");
    let e = input_error(adapter.adapt_tokens(
        &[sentence("a b", "B-X I-X"), sentence("a b", "O")],
        "ep",
        &EpisodeOptions::default(),
    ));
    assert!(e.contains("ep: sentence 2: 2 tokens but 1 tags"), "{e}");
    let e = input_error(adapter.adapt_tokens(
        &[sentence("a b", "B-X Z")],
        "ep",
        &EpisodeOptions::default(),
    ));
    assert!(e.contains("ep: sentence 1:"), "{e}");
}

#[test]
fn exposed_hidden_state_through_the_read_heads_gives_the_graph_outputs() {
    let b = bundle();
    let (tokenizer, encoder) = load_model(&b, true).unwrap();
    let heads = encoder.heads().unwrap().clone();
    assert_eq!(heads.hidden, b.metadata().encoder.hidden);
    let enc = tokenizer.encode("Aspirin reduced the fever within an hour in Paris.");
    let (scores, _) = encoder.encode(&[(&enc).into()]).unwrap();
    let sc = &scores[0];
    assert_eq!(sc.hidden.len(), enc.ids.len() * heads.hidden);
    let (mut boundary, mut types) = (Vec::new(), Vec::new());
    heads.apply(&sc.hidden, &mut boundary, &mut types);
    for (got, want) in boundary
        .iter()
        .chain(&types)
        .zip(sc.boundary.iter().chain(&sc.types))
    {
        assert!(
            (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
            "{got} vs {want}"
        );
    }
    let (_, plain) = load_model(&b, false).unwrap();
    let (plain_scores, _) = plain.encode(&[(&enc).into()]).unwrap();
    assert_eq!(plain_scores[0].boundary, sc.boundary);
    assert_eq!(plain_scores[0].types, sc.types);
    assert!(plain_scores[0].hidden.is_empty());
}

fn tuned_drug_pack(b: &Bundle, steps: usize) -> Adapted {
    let s = inline(
        "[aspirin](DRUG) reduced the fever\nDoctors prescribed [ibuprofen](DRUG) for pain\n\
         nothing here at all\n",
    );
    let opts = AdaptOptions {
        tune: Some(TuneOptions {
            steps,
            learning_rate: 1e-2,
            l2: 1e-3,
        }),
        ..AdaptOptions::default()
    };
    adapt(b, Some(&s), &opts).unwrap()
}

#[test]
fn tuned_heads_round_trip_through_the_pack_and_lower_the_support_loss() {
    let b = bundle();
    let plain = adapt(
        &b,
        Some(&inline(
            "[aspirin](DRUG) reduced the fever\nDoctors prescribed [ibuprofen](DRUG) for pain\n\
             nothing here at all\n",
        )),
        &AdaptOptions::default(),
    )
    .unwrap();
    let a = tuned_drug_pack(&b, 40);
    assert_eq!(
        a.prototypes, plain.prototypes,
        "tuning keeps the prototypes"
    );
    let t = a.metadata.tuned_heads.clone().unwrap();
    assert_eq!((t.steps, t.hidden), (40, b.metadata().encoder.hidden));
    assert!(t.loss_after < t.loss_before, "{t:?}");
    let heads = a.heads.clone().unwrap();
    let (_, encoder) = load_model(&b, true).unwrap();
    assert_ne!(&heads, encoder.heads().unwrap());

    let bytes = pack_to_bytes(&a.metadata, &a.prototypes, a.heads.as_ref()).unwrap();
    let pack = LabelPack::from_bytes(&bytes, "p").unwrap();
    pack.check_base(&b).unwrap();
    assert_eq!(pack.heads(), Some(&heads));
    assert!(pack.describe().contains("tuned, 40 steps"));
    let e = pack_to_bytes(&a.metadata, &a.prototypes, None).unwrap_err();
    assert!(e.to_string().contains("must come together"), "{e}");

    let mut other = a.metadata.clone();
    other.tuned_heads.as_mut().unwrap().hidden += 1;
    let e = pack_to_bytes(&other, &a.prototypes, a.heads.as_ref()).unwrap_err();
    assert!(e.to_string().contains("pack.head.boundary.weight"), "{e}");
}

#[test]
fn tuning_needs_an_encoder_with_its_hidden_state() {
    let b = bundle();
    let (tokenizer, encoder) = load_model(&b, false).unwrap();
    let adapter = Adapter::new(&b, &tokenizer, &encoder).unwrap();
    let e = adapter
        .adapt_tokens(
            &[sentence("aspirin helps", "B-DRUG O")],
            "ep",
            &EpisodeOptions {
                tune: Some(TuneOptions::with_steps(3)),
                ..EpisodeOptions::default()
            },
        )
        .unwrap_err();
    assert!(matches!(e, Error::Usage(_)), "{e}");
}

#[test]
fn episode_descriptions_combine_with_or_replace_the_examples() {
    let b = bundle();
    let (tokenizer, encoder) = load_model(&b, false).unwrap();
    let adapter = Adapter::new(&b, &tokenizer, &encoder).unwrap();
    let support = [
        sentence("aspirin helps", "B-DRUG O"),
        sentence("in paris today", "O B-LOC O"),
    ];
    let descriptions = vec![("DRUG".to_string(), "medication or drug name".to_string())];
    let run = |use_descriptions, descriptions: &Vec<(String, String)>| {
        adapter.adapt_tokens(
            &support,
            "ep",
            &EpisodeOptions {
                descriptions: descriptions.clone(),
                use_descriptions,
                tune: None,
            },
        )
    };
    let plain = run(DescriptionUse::Ignore, &descriptions).unwrap();
    let combined = run(DescriptionUse::Combine, &descriptions).unwrap();
    let methods = |a: &Adapted| {
        a.metadata
            .types
            .iter()
            .map(|t| t.method)
            .collect::<Vec<_>>()
    };
    assert_eq!(methods(&plain), [Method::Examples, Method::Examples]);
    assert_eq!(methods(&combined), [Method::Combined, Method::Examples]);
    let d = encoder.type_dim();
    assert_ne!(plain.prototypes[..d], combined.prototypes[..d]);
    assert_eq!(plain.prototypes[d..], combined.prototypes[d..]);

    let e = input_error(run(DescriptionUse::Only, &descriptions));
    assert!(e.contains("type LOC has no description"), "{e}");
    let mut both = descriptions.clone();
    both.push(("LOC".into(), "city or country".into()));
    let zero = run(DescriptionUse::Only, &both).unwrap();
    assert_eq!(methods(&zero), [Method::ZeroShot, Method::ZeroShot]);
    assert_eq!(zero.metadata.types[0].support_entities, 0);

    let e = adapter
        .adapt_tokens(
            &support,
            "ep",
            &EpisodeOptions {
                descriptions: both,
                use_descriptions: DescriptionUse::Only,
                tune: Some(TuneOptions::with_steps(2)),
            },
        )
        .unwrap_err();
    assert!(matches!(e, Error::Usage(_)), "{e}");
}

#[test]
fn text_and_token_support_sets_give_the_same_pack() {
    let b = bundle();
    let (tokenizer, encoder) = load_model(&b, true).unwrap();
    let adapter = Adapter::new(&b, &tokenizer, &encoder).unwrap();
    let tune = Some(TuneOptions {
        steps: 4,
        learning_rate: 1e-2,
        l2: 1e-3,
    });
    let mut text = String::new();
    let mut tokens = Vec::new();
    for i in 0..40 {
        let (words, tags) = match i % 3 {
            0 => (
                "aspirin reduced the high fever",
                "B-DRUG O O B-SYMPTOM I-SYMPTOM",
            ),
            1 => ("doctors prescribed ibuprofen", "O O B-DRUG"),
            _ => ("nothing here at all", "O O O O"),
        };
        for (w, t) in words.split(' ').zip(tags.split(' ')) {
            text.push_str(&format!("{w}\t{t}\n"));
        }
        text.push('\n');
        tokens.push(sentence(words, tags));
    }
    let set = parse_support(&text, "s.tsv", SupportFormat::Tsv).unwrap();
    let opts = AdaptOptions {
        tune,
        ..AdaptOptions::default()
    };
    let from_text = adapter.adapt(Some(&set), &opts).unwrap();
    let episode = EpisodeOptions {
        tune,
        ..EpisodeOptions::default()
    };
    let from_tokens = adapter.adapt_tokens(&tokens, "s.tsv", &episode).unwrap();
    assert_eq!(from_text.prototypes, from_tokens.prototypes);
    assert_eq!(from_text.heads, from_tokens.heads);
    let counts = |a: &Adapted| -> Vec<(String, usize, usize, usize)> {
        a.metadata
            .types
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    t.support_sentences,
                    t.support_entities,
                    t.support_tokens,
                )
            })
            .collect()
    };
    assert_eq!(
        counts(&from_text),
        [
            ("DRUG".to_string(), 27, 27, 27),
            ("SYMPTOM".to_string(), 14, 14, 28)
        ]
    );
    assert_eq!(counts(&from_text), counts(&from_tokens));
}
