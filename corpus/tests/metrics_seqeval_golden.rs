//! Entity-level scores against the reference: seqeval's default mode on seeded random and
//! hand-picked BIO, BIOES and IO sentences (fixtures/metrics/seqeval_golden.json, made by
//! tools/scripts/gen_seqeval_golden.py), over whole sets, per group (episode), per type, and the
//! mean ± sample standard deviation of per-group F1.

use std::path::{Path, PathBuf};

use ner_edge_corpus::metrics::{episode_summary, Prf, Scheme, Scorer};
use serde_json::Value;

const TOLERANCE: f64 = 1e-9;

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number"))
}

fn count(v: &Value, key: &str) -> usize {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a count")) as usize
}

fn check_prf(what: &str, got: &Prf, want: &Value, failures: &mut Vec<String>) {
    for (name, g) in [
        ("precision", got.precision),
        ("recall", got.recall),
        ("f1", got.f1),
    ] {
        let w = num(want, name);
        if (g - w).abs() > TOLERANCE {
            failures.push(format!("{what}: {name} {g} != seqeval {w}"));
        }
    }
}

fn check_result(what: &str, scorer: &Scorer, want: &Value, failures: &mut Vec<String>) {
    let micro = scorer.micro();
    check_prf(what, &micro, want, failures);
    let counts = (micro.tp, micro.predicted, micro.gold);
    let want_counts = (
        count(want, "tp"),
        count(want, "predicted"),
        count(want, "gold"),
    );
    if counts != want_counts {
        failures.push(format!(
            "{what}: (tp, predicted, gold) {counts:?} != seqeval {want_counts:?}"
        ));
    }
    let want_types = want["per_type"].as_object().expect("per_type");
    let rows = scorer.per_type();
    let names: Vec<&str> = rows.iter().map(|(k, _)| k.as_str()).collect();
    let want_names: Vec<&str> = want_types.keys().map(String::as_str).collect();
    let mut sorted = want_names.clone();
    sorted.sort_unstable();
    if names != sorted {
        failures.push(format!("{what}: types {names:?} != seqeval {want_names:?}"));
        return;
    }
    for (kind, prf) in &rows {
        let row = &want_types[kind];
        check_prf(&format!("{what} type {kind}"), prf, row, failures);
        if prf.gold != count(row, "support") {
            failures.push(format!(
                "{what} type {kind}: gold {} != seqeval support {}",
                prf.gold, row["support"]
            ));
        }
    }
}

fn tags(s: &str) -> Vec<&str> {
    s.split_whitespace().collect()
}

#[test]
fn agrees_with_seqeval() {
    let path = repo_path("fixtures/metrics/seqeval_golden.json");
    let text = std::fs::read_to_string(&path).expect("seqeval_golden.json");
    let golden: Value = serde_json::from_str(&text).expect("golden json");
    let sets = golden["sets"].as_array().expect("sets");
    assert!(!sets.is_empty(), "no sets in {}", path.display());
    let mut failures = Vec::new();
    let mut sentences_seen = 0;
    for set in sets {
        let name = set["name"].as_str().expect("name");
        let scheme: Scheme = set["scheme"]
            .as_str()
            .expect("scheme")
            .parse()
            .expect("known scheme");
        let sentences = set["sentences"].as_array().expect("sentences");
        let groups = set["groups"].as_array().expect("groups");
        let group_results = set["group_results"].as_array().expect("group_results");
        assert_eq!(groups.len(), group_results.len(), "{name}: groups");

        let mut all = Scorer::new();
        let mut episodes = Vec::new();
        for (g, (bounds, want)) in groups.iter().zip(group_results).enumerate() {
            let start = bounds[0].as_u64().expect("group start") as usize;
            let end = bounds[1].as_u64().expect("group end") as usize;
            let mut scorer = Scorer::new();
            for (i, pair) in sentences[start..end].iter().enumerate() {
                let gold = tags(pair[0].as_str().expect("gold"));
                let pred = tags(pair[1].as_str().expect("pred"));
                scorer
                    .add(&gold, &pred, scheme)
                    .unwrap_or_else(|e| panic!("{name} sentence {}: {e}", start + i));
                all.add(&gold, &pred, scheme).expect("valid sentence");
                sentences_seen += 1;
            }
            check_result(&format!("{name} group {g}"), &scorer, want, &mut failures);
            episodes.push(scorer);
        }
        check_result(name, &all, &set["overall"], &mut failures);

        let summary = episode_summary(&episodes);
        check_prf(
            &format!("{name} episode_summary.micro"),
            &summary.micro,
            &set["overall"],
            &mut failures,
        );
        for (what, got, want) in [
            ("mean", summary.mean_f1, num(set, "episode_mean_f1")),
            ("std", summary.std_f1, num(set, "episode_std_f1")),
        ] {
            if (got - want).abs() > TOLERANCE {
                failures.push(format!("{name}: episode {what} F1 {got} != {want}"));
            }
        }
        assert_eq!(summary.episodes, groups.len());
    }
    assert!(sentences_seen >= 300, "only {sentences_seen} sentences");
    assert!(
        failures.is_empty(),
        "{} disagreements with seqeval:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
