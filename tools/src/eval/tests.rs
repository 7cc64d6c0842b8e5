use std::path::{Path, PathBuf};

use ner_edge_corpus::read_hou_episodes;

use super::overlap::{self, Overlap};
use super::*;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture_bundle() -> Bundle {
    Bundle::open(&root().join("fixtures/bundles/tiny.nerb")).unwrap()
}

fn tags(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

fn sentence(tokens: &str, t: &str) -> Sentence {
    Sentence {
        tokens: tags(tokens),
        tags: tags(t),
        text: None,
    }
}

fn opts(scheme: Scheme) -> EvalOptions {
    EvalOptions {
        scheme,
        threads: 1,
        other: true,
    }
}

#[test]
fn confusion_counts_only_exact_boundaries_with_another_type() {
    let mut scorer = Scorer::new();
    let mut c = Confusion::default();
    score_sentence(
        &tags("B-PER I-PER O B-LOC B-ORG I-ORG"),
        &tags("B-ORG I-ORG O B-LOC B-PER O"),
        Scheme::Bio,
        &mut scorer,
        &mut c,
        &|| "s".into(),
    )
    .unwrap();
    assert_eq!(c.pairs(), vec![("PER", "ORG", 1)]);
    assert_eq!(c.total(), 1);
    assert_eq!(c.get("ORG", "PER"), 0);
    let micro = scorer.micro();
    assert_eq!((micro.tp, micro.predicted, micro.gold), (1, 3, 3));
}

#[test]
fn io_scoring_merges_adjacent_entities_of_one_type() {
    let gold = tags("B-person I-person B-person O");
    let pred = tags("B-person I-person I-person O");
    let mut bio = Scorer::new();
    let mut io = Scorer::new();
    let mut c = Confusion::default();
    score_sentence(&gold, &pred, Scheme::Bio, &mut bio, &mut c, &|| "s".into()).unwrap();
    score_sentence(&gold, &pred, Scheme::Io, &mut io, &mut c, &|| "s".into()).unwrap();
    assert_eq!(bio.micro().tp, 0);
    assert_eq!(bio.micro().gold, 2);
    assert_eq!((io.micro().tp, io.micro().gold, io.micro().f1), (1, 1, 1.0));
    let err = score_sentence(&gold, &tags("O"), Scheme::Bio, &mut bio, &mut c, &|| {
        "f: sentence 3".into()
    })
    .unwrap_err();
    assert!(format!("{err:#}").contains("f: sentence 3: 4 gold tags but 1 predicted"));
}

#[test]
fn type_maps_rename_predictions_and_reject_bad_pairs() {
    let map = parse_map(&tags("person=PER organisation=ORG")).unwrap();
    assert_eq!(map_tag("B-person".into(), &map), "B-PER");
    assert_eq!(map_tag("I-organisation".into(), &map), "I-ORG");
    assert_eq!(map_tag("B-misc".into(), &map), "B-misc");
    assert_eq!(map_tag("O".into(), &map), "O");
    for bad in ["person", "=PER", "person=", "a b=PER"] {
        assert!(parse_map(&[bad.to_string()]).is_err(), "{bad}");
    }
    let twice = parse_map(&tags("person=PER person=PERSON")).unwrap_err();
    assert!(twice.to_string().contains("mapped twice"));
}

#[test]
fn episode_scores_pool_the_per_episode_counts() {
    let b = fixture_bundle();
    let path = root().join("fixtures/corpus/hou/news_1shot.json");
    let episodes = read_hou_episodes(&path).unwrap();
    assert_eq!(episodes.len(), 2);
    let all = eval_episodes(
        &b,
        &episodes,
        "hou",
        AdaptMode::GradientFree,
        &Descriptions::default(),
        Some(1),
        opts(Scheme::Bio),
    )
    .unwrap();
    let summary = all.episodes.unwrap();
    assert_eq!(summary.episodes, 2);
    assert_eq!(all.sentences, 4);
    let gold: usize = episodes
        .iter()
        .flat_map(|e| &e.query)
        .map(Sentence::entity_count)
        .sum();
    assert_eq!(all.scorer.micro().gold, gold);
    let per_type_gold: usize = all.scorer.per_type().iter().map(|(_, p)| p.gold).sum();
    assert_eq!(per_type_gold, gold);

    let mut f1s = Vec::new();
    let mut tp = 0;
    let mut predicted = 0;
    for (i, e) in episodes.iter().enumerate() {
        let one = eval_episodes(
            &b,
            std::slice::from_ref(e),
            "hou",
            AdaptMode::GradientFree,
            &Descriptions::default(),
            Some(1),
            opts(Scheme::Bio),
        )
        .unwrap();
        assert_eq!(one.episodes.unwrap().episodes, 1, "episode {i}");
        f1s.push(one.scorer.micro().f1);
        tp += one.scorer.micro().tp;
        predicted += one.scorer.micro().predicted;
    }
    assert_eq!(
        (all.scorer.micro().tp, all.scorer.micro().predicted),
        (tp, predicted)
    );
    assert!((summary.mean_f1 - (f1s[0] + f1s[1]) / 2.0).abs() < 1e-12);
    assert!((summary.std_f1 - (f1s[0] - f1s[1]).abs() / 2f64.sqrt()).abs() < 1e-12);
    assert!(all
        .protocol
        .contains("1-shot, 2 episodes, adaptation gradient-free"));

    let again = eval_episodes(
        &b,
        &episodes,
        "hou",
        AdaptMode::GradientFree,
        &Descriptions::default(),
        Some(1),
        opts(Scheme::Bio),
    )
    .unwrap();
    assert_eq!(again.scorer, all.scorer);
}

#[test]
fn an_episode_without_support_entities_is_an_error_naming_it() {
    let b = fixture_bundle();
    let episode = Episode {
        domain: String::new(),
        support: vec![sentence("a b", "O O")],
        query: vec![sentence("c d", "B-X O")],
        types: vec!["X".into()],
        repairs: 0,
    };
    let err = eval_episodes(
        &b,
        &[episode],
        "eps.jsonl",
        AdaptMode::GradientFree,
        &Descriptions::default(),
        None,
        opts(Scheme::Bio),
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("eps.jsonl: episode 1: no entity mentions"),
        "{err:#}"
    );
}

#[test]
fn supervised_scores_use_the_map_and_the_gold_words() {
    let b = fixture_bundle();
    let own = b.metadata().labels.default_active.clone();
    let tagger = Tagger::new(&b, Some(&own)).unwrap();
    let test = vec![
        sentence("john lives in u.s.", "B-PER O O B-LOC"),
        sentence("nothing here", "O O"),
    ];
    let map: Vec<(String, String)> = own.iter().map(|t| (t.clone(), "PER".to_string())).collect();
    let r = eval_supervised(&tagger, &test, "t.txt", &map, None, opts(Scheme::Bio)).unwrap();
    assert_eq!((r.sentences, r.words), (2, 6));
    assert_eq!(r.scorer.micro().gold, 2);
    for (kind, p) in r.scorer.per_type() {
        assert!(kind == "PER" || kind == "LOC", "{kind}");
        assert!(p.tp <= p.gold.min(p.predicted));
    }
    assert!(r.protocol.contains("type mapping"));
    assert!(r.episodes.is_none());
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("no \"other\" prototypes were decoded")),
        "{:?}",
        r.notes
    );
}

#[test]
fn overlap_is_counted_on_long_sentences_and_refused_past_the_threshold() {
    let train = [
        sentence("The Cat sat on the mat", "O O O O O O"),
        sentence("short one", "O O"),
    ];
    let mut hashes: Vec<u64> = train.iter().map(sentence_hash_of).collect();
    hashes.sort_unstable();
    let test = [
        sentence("the cat sat on the mat", "O O O O O O"),
        sentence("short one", "O O"),
        sentence("a different sentence of words", "O O O O O"),
    ];
    let o = overlap::check(Some(&hashes), &test);
    assert_eq!(
        o,
        Overlap::Checked {
            checked: 2,
            overlapping: 1
        }
    );
    assert!(overlap::refuse_if_overlapping(o, "t", 0.5).is_ok());
    let refused = overlap::refuse_if_overlapping(o, "t.txt", 0.05).unwrap_err();
    assert!(refused
        .to_string()
        .contains("t.txt: refusing to report: 1 of 2"));
    let none = overlap::check(None, &test);
    assert_eq!(none, Overlap::Unavailable);
    assert!(overlap::refuse_if_overlapping(none, "t", 0.0).is_ok());
    assert!(none.describe().contains("could not be checked"));
}

fn sentence_hash_of(s: &Sentence) -> u64 {
    overlap::sentence_hash(&s.tokens)
}

#[test]
fn training_hashes_round_trip_through_a_bundle() {
    let b = fixture_bundle();
    assert_eq!(overlap::training_hashes(&b).unwrap(), None);
    let with =
        ner_edge_trainer::train::export::add_sentence_hashes(b.as_bytes().to_vec(), &[9, 3, 3, 7])
            .unwrap();
    let b2 = Bundle::from_vec(with, "with-hashes").unwrap();
    assert_eq!(overlap::training_hashes(&b2).unwrap(), Some(vec![3, 7, 9]));
    assert_eq!(b2.metadata(), b.metadata());
    for t in b.tensors() {
        assert_eq!(b2.bytes(&t.name).unwrap(), b.bytes(&t.name).unwrap());
    }
}

#[test]
fn reports_and_pictures_name_every_type() {
    let mut scorer = Scorer::new();
    let mut c = Confusion::default();
    score_sentence(
        &tags("B-PER O B-LOC I-LOC B-MISC"),
        &tags("B-LOC O B-LOC I-LOC O"),
        Scheme::Bio,
        &mut scorer,
        &mut c,
        &|| "s".into(),
    )
    .unwrap();
    let r = EvalResult {
        name: "unit".into(),
        data: "d.txt".into(),
        protocol: "supervised".into(),
        scorer,
        episodes: None,
        confusion: c,
        shots: None,
        sentences: 1,
        words: 5,
        seconds: 0.0,
        notes: vec!["a note".into()],
    };
    let dir = std::env::temp_dir().join(format!("ner-tools-report-{}", std::process::id()));
    let pics = report::write_pictures(
        &r,
        &report::Pictures {
            dir: &dir,
            link: "pics",
        },
    )
    .unwrap();
    assert_eq!(
        pics.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>(),
        [
            "pics/unit-f1.svg",
            "pics/unit-pr.svg",
            "pics/unit-confusion.svg"
        ]
    );
    for name in ["unit-f1.svg", "unit-pr.svg", "unit-confusion.svg"] {
        let svg = std::fs::read_to_string(dir.join(name)).unwrap();
        assert!(svg.starts_with("<svg"), "{name}");
        for kind in ["PER", "LOC", "MISC"] {
            assert!(svg.contains(kind), "{name} lacks {kind}");
        }
    }
    let md = report::result(&r, &pics);
    assert!(
        md.contains("| LOC | 1 | 2 | 1 | 50.00 | 100.00 | 66.67 |"),
        "{md}"
    );
    assert!(md.contains("| PER | LOC | 1 |"), "{md}");
    assert!(md.contains("- a note"));
    assert!(md.contains("![unit: type confusions](pics/unit-confusion.svg)"));
    let shots = plots::f1_vs_shots("t", &[("micro".into(), vec![(1, 0.2), (5, 0.4)])]).unwrap();
    assert!(shots.contains("micro") && shots.contains("<polyline"));
    std::fs::remove_dir_all(&dir).unwrap();
}
