//! End-to-end tests of `ner-edge adapt` and `ner-edge predict --pack` on the fixture bundle.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use ner_edge::bundle::{reseal, Bundle};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn bundle_path() -> PathBuf {
    repo().join("fixtures/bundles/tiny.nerb")
}

fn adapt_fixture(name: &str) -> PathBuf {
    repo().join("fixtures/adapt").join(name)
}

fn sample() -> PathBuf {
    repo().join("fixtures/samples/news.txt")
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ner-edge-adapt-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn tmp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let p = tmp(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ner-edge"))
        .args(args)
        .env_remove("NER_EDGE_BUNDLE")
        .stdin(Stdio::null())
        .output()
        .expect("run ner-edge")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn assert_ok(o: &Output) {
    assert!(o.status.success(), "stderr: {}", stderr(o));
}

fn assert_one_line_error(o: &Output, needles: &[&str]) {
    assert_eq!(o.status.code(), Some(2), "stderr: {}", stderr(o));
    let err = stderr(o);
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "error must be one line: {err:?}"
    );
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "error {err:?} lacks {n:?}");
    }
}

/// Adapts `support` (plus `extra` arguments) on the fixture bundle into a new pack file.
fn adapt(support: Option<&Path>, out: &str, extra: &[&str]) -> (PathBuf, Output) {
    let out = tmp(out);
    let b = bundle_path();
    let mut args = vec!["adapt", "--bundle", s(&b), "--out", s(&out)];
    args.extend_from_slice(extra);
    if let Some(p) = support {
        args.push(s(p));
    }
    let o = run(&args);
    (out, o)
}

fn predict(extra: &[&str], input: &Path) -> Output {
    let b = bundle_path();
    let mut args = vec!["predict", "--bundle", s(&b)];
    args.extend_from_slice(extra);
    args.push(s(input));
    run(&args)
}

#[derive(Debug, Clone, PartialEq)]
struct Ent {
    start: u64,
    end: u64,
    kind: String,
    /// The score as printed, compared as text.
    score: String,
}

fn parse_jsonl(out: &str) -> Vec<Vec<Ent>> {
    out.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["entities"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| Ent {
                    start: e["start"].as_u64().unwrap(),
                    end: e["end"].as_u64().unwrap(),
                    kind: e["type"].as_str().unwrap().to_string(),
                    score: e["score"].to_string(),
                })
                .collect()
        })
        .collect()
}

fn drug_pack() -> PathBuf {
    let (p, o) = adapt(Some(&adapt_fixture("drugs.txt")), "drug.nerp", &[]);
    assert_ok(&o);
    p
}

#[test]
fn adapts_from_every_support_format() {
    for (file, mentions) in [
        ("drugs.txt", 6),
        ("drugs.tsv", 2),
        ("drugs.conll", 2),
        ("drugs.jsonl", 2),
    ] {
        let out = format!("{file}.nerp");
        let (pack, o) = adapt(Some(&adapt_fixture(file)), &out, &[]);
        assert_ok(&o);
        let err = stderr(&o);
        assert!(
            err.contains(&format!("type DRUG: examples from {mentions} mentions")),
            "{file}: {err}"
        );
        let o = run(&["inspect", s(&pack)]);
        assert_ok(&o);
        let text = stdout(&o);
        assert!(
            text.contains("label pack:") && text.contains("DRUG"),
            "{text}"
        );
        assert!(text.contains("prior MLP:       bundle"), "{text}");
    }
}

#[test]
fn predict_with_a_pack_tags_the_new_type() {
    let pack = drug_pack();
    let o = predict(&["--pack", s(&pack), "--types", "DRUG"], &sample());
    assert_ok(&o);
    let docs = parse_jsonl(&stdout(&o));
    let kinds: HashSet<_> = docs.iter().flatten().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, HashSet::from(["DRUG"]));
    let o = predict(&["--pack", s(&pack), "--format", "conll"], &sample());
    assert_ok(&o);
    assert!(stdout(&o).contains("B-DRUG"), "{}", stdout(&o));
    let o = predict(
        &[
            "--pack",
            s(&pack),
            "--types",
            "PER,DRUG",
            "--format",
            "inline",
        ],
        &sample(),
    );
    assert_ok(&o);
}

#[test]
fn zero_shot_type_names_make_a_pack() {
    let (pack, o) = adapt(
        None,
        "zero.nerp",
        &["--type-name", "DRUG=medication or drug name"],
    );
    assert_ok(&o);
    assert!(
        stderr(&o).contains("type DRUG: zero-shot"),
        "{}",
        stderr(&o)
    );
    let o = predict(&["--pack", s(&pack), "--types", "DRUG"], &sample());
    assert_ok(&o);
    assert!(parse_jsonl(&stdout(&o))
        .iter()
        .flatten()
        .any(|e| e.kind == "DRUG"));
    let (_, o) = adapt(
        Some(&adapt_fixture("drugs.txt")),
        "combined.nerp",
        &["--type-name", "DRUG=medication"],
    );
    assert_ok(&o);
    assert!(stderr(&o).contains("type DRUG: combined"), "{}", stderr(&o));
    let (_, o) = adapt(
        Some(&adapt_fixture("drugs.txt")),
        "examples-only.nerp",
        &["--type-name", "DRUG=medication", "--examples-only"],
    );
    assert_ok(&o);
    assert!(stderr(&o).contains("type DRUG: examples"), "{}", stderr(&o));
}

/// No forgetting: the bundle's entities that no new-type entity overlaps come out exactly as
/// without the pack (same offsets, type, score); the others are replaced only by overlapping
/// entities of the new type.
#[test]
fn adding_a_pack_leaves_untouched_old_entities_identical() {
    let pack = drug_pack();
    let before = parse_jsonl(&stdout(&predict(&[], &sample())));
    let o = predict(&["--pack", s(&pack)], &sample());
    assert_ok(&o);
    let after = parse_jsonl(&stdout(&o));
    assert_eq!(before.len(), after.len());
    let mut kept = 0;
    for (a, b) in before.iter().zip(&after) {
        let new: Vec<&Ent> = b.iter().filter(|e| e.kind == "DRUG").collect();
        for e in b.iter().filter(|e| e.kind != "DRUG") {
            assert!(
                a.contains(e),
                "old-type entity {e:?} is not in the output without the pack"
            );
        }
        for e in a {
            if b.contains(e) {
                kept += 1;
            } else {
                assert!(
                    new.iter().any(|n| n.start < e.end && e.start < n.end),
                    "{e:?} vanished without a new-type entity overlapping it"
                );
            }
        }
    }
    assert!(kept > 0);
}

#[test]
fn conflicting_type_names_need_override() {
    let per = tmp_file("per.txt", b"[Angela Merkel](PER) visited Paris\n");
    let (per_pack, o) = adapt(Some(&per), "per.nerp", &[]);
    assert_ok(&o);
    let o = predict(&["--pack", s(&per_pack)], &sample());
    assert_one_line_error(&o, &["\"PER\"", "per.nerp", "--override"]);
    let o = predict(&["--pack", s(&per_pack), "--override"], &sample());
    assert_ok(&o);

    let drug = drug_pack();
    let (drug2, o) = adapt(Some(&adapt_fixture("drugs.tsv")), "drug2.nerp", &[]);
    assert_ok(&o);
    let o = predict(&["--pack", s(&drug), "--pack", s(&drug2)], &sample());
    assert_one_line_error(&o, &["\"DRUG\"", "drug.nerp", "drug2.nerp", "--override"]);
    let o = predict(
        &["--pack", s(&drug), "--pack", s(&drug2), "--override"],
        &sample(),
    );
    assert_ok(&o);
}

#[test]
fn a_pack_for_another_bundle_is_refused() {
    let pack = drug_pack();
    let mut bytes = std::fs::read(bundle_path()).unwrap();
    let at = bytes
        .windows(14)
        .position(|w| w == b"random weights")
        .expect("fixture notes");
    bytes[at] = b'R';
    reseal(&mut bytes);
    let other = tmp_file("other.nerb", &bytes);
    Bundle::open(&other).expect("still a valid bundle");
    let o = run(&[
        "predict",
        "--bundle",
        s(&other),
        "--pack",
        s(&pack),
        s(&sample()),
    ]);
    assert_one_line_error(&o, &["drug.nerp", "tiny.nerb", "other.nerb", "adapt"]);
    let o = run(&["predict", "--bundle", s(&pack), s(&sample())]);
    assert_one_line_error(&o, &["not a ner-edge bundle", "--pack"]);
    let o = predict(&["--pack", s(&bundle_path())], &sample());
    assert_one_line_error(&o, &["not a ner-edge label pack", "--bundle"]);
}

/// File name, contents, extra `adapt` arguments, substrings the error must contain.
type BadCase = (
    &'static str,
    &'static [u8],
    Vec<&'static str>,
    Vec<&'static str>,
);

#[test]
fn bad_support_input_is_one_line_with_file_and_line() {
    let cases: Vec<BadCase> = vec![
        ("empty.txt", b"\n\n", vec![], vec!["empty.txt", "empty support set"]),
        (
            "zero.txt",
            b"[aspirin](DRUG) helps\n",
            vec!["--types", "DRUG,DOSE"],
            vec!["zero.txt", "DOSE has zero examples"],
        ),
        ("notbio.tsv", b"aspirin\tB-DRUG\nhelps\tX-O\n", vec![], vec!["notbio.tsv: line 2:", "malformed tag"]),
        ("bare.tsv", b"aspirin\tDRUG\n", vec![], vec!["bare.tsv: line 1:", "malformed tag"]),
        (
            "mismatch.jsonl",
            b"{\"tokens\": [\"a\"], \"tags\": [\"B-X\"]}\n{\"tokens\": [\"a\", \"b\"], \"tags\": [\"O\"]}\n",
            vec![],
            vec!["mismatch.jsonl: line 2:", "2 tokens but 1 tags"],
        ),
        (
            "big.txt",
            b"[aspirin](DRUG) reduced the fever\n",
            vec!["--max-support-bytes", "10"],
            vec!["big.txt", "10-byte limit"],
        ),
        ("latin1.txt", b"[a](X)\n\xe9t\xe9\n", vec![], vec!["latin1.txt: line 2:", "invalid UTF-8"]),
        ("markup.txt", b"ok\n[a](two words)\n", vec![], vec!["markup.txt: line 2:"]),
    ];
    for (name, bytes, extra, needles) in cases {
        let support = tmp_file(name, bytes);
        let (out, o) = adapt(Some(&support), &format!("{name}.nerp"), &extra);
        assert_one_line_error(&o, &needles);
        assert!(!out.exists(), "{name}: no pack is written on error");
    }
    let (_, o) = adapt(None, "none.nerp", &["--type-name", "DRUG"]);
    assert_one_line_error(&o, &["NAME=DESCRIPTION"]);
    let (_, o) = adapt(None, "none.nerp", &[]);
    assert_one_line_error(&o, &["SUPPORT"]);
    let (_, o) = adapt(Some(&tmp("missing.txt")), "none.nerp", &[]);
    assert_one_line_error(&o, &["missing.txt"]);
    let o = predict(&["--pack", s(&tmp("missing.nerp"))], &sample());
    assert_one_line_error(&o, &["missing.nerp"]);
}

#[test]
fn tuned_heads_make_a_pack_that_predict_uses() {
    let (pack, o) = adapt(
        Some(&adapt_fixture("drugs.txt")),
        "tuned.nerp",
        &["--tune-heads", "15", "--tune-lr", "0.01"],
    );
    assert_ok(&o);
    assert!(
        stderr(&o).contains("tuned heads: 15 steps, loss"),
        "{}",
        stderr(&o)
    );
    let o = run(&["inspect", s(&pack)]);
    assert_ok(&o);
    let text = stdout(&o);
    assert!(text.contains("heads:           tuned, 15 steps"), "{text}");
    assert!(text.contains("pack.head.types.weight"), "{text}");

    let o = predict(&["--pack", s(&pack), "--format", "conll"], &sample());
    assert_ok(&o);
    let tuned = stdout(&o);
    let plain = drug_pack();
    let o = predict(&["--pack", s(&plain), "--format", "conll"], &sample());
    assert_ok(&o);
    let words = |t: &str| {
        t.lines()
            .map(|l| l.split('\t').next().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(words(&tuned), words(&stdout(&o)), "same words either way");
}

#[test]
fn bad_tuning_options_are_usage_errors() {
    let (_, o) = adapt(
        None,
        "zero-tuned.nerp",
        &["--type-name", "DRUG=medication", "--tune-heads", "5"],
    );
    assert_one_line_error(&o, &["--tune-heads", "support"]);
    let (_, o) = adapt(
        Some(&adapt_fixture("drugs.txt")),
        "bad-lr.nerp",
        &["--tune-heads", "5", "--tune-lr", "0"],
    );
    assert_one_line_error(&o, &["--tune-lr"]);
}
