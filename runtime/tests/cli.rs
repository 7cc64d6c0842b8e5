//! End-to-end tests of the `ner-edge` binary on the committed fixture bundle.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture_bundle() -> PathBuf {
    repo().join("fixtures/bundles/tiny.nerb")
}

fn sample() -> PathBuf {
    repo().join("fixtures/samples/news.txt")
}

fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ner-edge"));
    cmd.args(args)
        .env_remove("NER_EDGE_BUNDLE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn ner-edge");
    {
        let mut pipe = child.stdin.take().expect("stdin");
        if let Some(data) = stdin {
            pipe.write_all(data).expect("write stdin");
        }
    }
    child.wait_with_output().expect("wait")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn predict(extra: &[&str], input: &Path) -> Output {
    let b = fixture_bundle();
    let mut args = vec!["predict", "--bundle", b.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.push(input.to_str().unwrap());
    run(&args, None)
}

fn tmp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ner-edge-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
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

#[derive(Debug)]
struct Ent {
    start: usize,
    end: usize,
    kind: String,
    text: String,
    score: f64,
}

fn parse_jsonl(out: &str) -> Vec<(String, Vec<Ent>)> {
    out.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("valid JSON line");
            let text = v["text"].as_str().expect("text").to_string();
            let ents = v["entities"]
                .as_array()
                .expect("entities")
                .iter()
                .map(|e| Ent {
                    start: e["start"].as_u64().unwrap() as usize,
                    end: e["end"].as_u64().unwrap() as usize,
                    kind: e["type"].as_str().unwrap().to_string(),
                    text: e["text"].as_str().unwrap().to_string(),
                    score: e["score"].as_f64().unwrap(),
                })
                .collect();
            (text, ents)
        })
        .collect()
}

fn char_slice(s: &str, start: usize, end: usize) -> String {
    s.chars().skip(start).take(end - start).collect()
}

#[test]
fn jsonl_has_one_object_per_line_with_consistent_offsets() {
    let input = std::fs::read_to_string(sample()).unwrap();
    let o = predict(&[], &sample());
    assert!(o.status.success(), "{}", stderr(&o));
    let docs = parse_jsonl(&stdout(&o));
    assert_eq!(docs.len(), input.lines().count());
    let mut total = 0;
    for ((text, ents), line) in docs.iter().zip(input.lines()) {
        assert_eq!(text, line);
        let mut prev_end = 0;
        for e in ents {
            assert!(e.start < e.end && e.start >= prev_end, "{e:?}");
            assert_eq!(char_slice(text, e.start, e.end), e.text);
            assert!(e.score > 0.0 && e.score <= 1.0, "{e:?}");
            assert!(["PER", "ORG", "LOC", "MISC"].contains(&e.kind.as_str()));
            prev_end = e.end;
            total += 1;
        }
    }
    assert!(
        total > 0,
        "the fixture is expected to produce some entities"
    );
}

#[test]
fn formats_agree_with_each_other() {
    let jsonl = parse_jsonl(&stdout(&predict(&[], &sample())));
    let inline = stdout(&predict(&["--format", "inline"], &sample()));
    for ((text, ents), line) in jsonl.iter().zip(inline.lines()) {
        let mut expect = String::new();
        let chars: Vec<char> = text.chars().collect();
        let mut at = 0;
        for e in ents {
            expect.extend(&chars[at..e.start]);
            expect.push_str(&format!("[{}]({})", e.text, e.kind));
            at = e.end;
        }
        expect.extend(&chars[at..]);
        assert_eq!(line, expect);
    }
    let conll = stdout(&predict(&["--format", "conll"], &sample()));
    let blocks: Vec<&str> = conll.split("\n\n").filter(|b| !b.is_empty()).collect();
    assert_eq!(blocks.len(), jsonl.len());
    for (block, (_, ents)) in blocks.iter().zip(&jsonl) {
        let begins = block.lines().filter(|l| l.contains("\tB-")).count();
        assert_eq!(begins, ents.len(), "{block}");
        for l in block.lines() {
            let (word, tag) = l.split_once('\t').expect("word<TAB>tag");
            assert!(!word.is_empty() && !word.contains(char::is_whitespace));
            assert!(
                tag == "O" || tag.starts_with("B-") || tag.starts_with("I-"),
                "{tag}"
            );
        }
    }
}

/// The shipped default model, which the binary embeds.
fn default_model() -> PathBuf {
    repo().join("models/default.nerb")
}

#[test]
fn embedded_bundle_env_var_and_stdin_give_the_same_output() {
    let model = default_model();
    let explicit = run(
        &[
            "predict",
            "--bundle",
            model.to_str().unwrap(),
            sample().to_str().unwrap(),
        ],
        None,
    );
    assert!(explicit.status.success(), "{}", stderr(&explicit));
    let explicit = stdout(&explicit);
    let input = std::fs::read(sample()).unwrap();
    let embedded = run(&["predict", "-"], Some(&input));
    assert!(embedded.status.success(), "{}", stderr(&embedded));
    assert_eq!(stdout(&embedded), explicit);
    let via_env = Command::new(env!("CARGO_BIN_EXE_ner-edge"))
        .args(["predict", sample().to_str().unwrap()])
        .env("NER_EDGE_BUNDLE", &model)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(via_env.stdout).unwrap(), explicit);
}

#[test]
fn default_model_finds_people_places_and_organisations_in_the_sample() {
    let out = run(&["predict", sample().to_str().unwrap()], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let mut found = std::collections::BTreeSet::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for e in v["entities"].as_array().unwrap() {
            found.insert((
                e["text"].as_str().unwrap().to_string(),
                e["type"].as_str().unwrap().to_string(),
            ));
        }
    }
    for (text, ty) in [
        ("Angela Merkel", "PER"),
        ("Christine Lagarde", "PER"),
        ("European Central Bank", "ORG"),
        ("Frankfurt", "LOC"),
    ] {
        assert!(
            found.contains(&(text.to_string(), ty.to_string())),
            "{text} as {ty} not among {found:?}"
        );
    }
}

#[test]
fn entity_text_holds_only_the_entity_not_control_characters_around_it() {
    let p = tmp_file(
        "control.txt",
        b"Angela\0Merkel visited \x07Berlin\x1b today.\n",
    );
    let model = default_model();
    let o = run(
        &[
            "predict",
            "--bundle",
            model.to_str().unwrap(),
            p.to_str().unwrap(),
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let docs = parse_jsonl(&stdout(&o));
    let found: Vec<(&str, &str)> = docs[0]
        .1
        .iter()
        .map(|e| (e.text.as_str(), e.kind.as_str()))
        .collect();
    assert_eq!(found, [("Angela\0Merkel", "PER"), ("Berlin", "LOC")]);
}

#[test]
fn types_restricts_and_unknown_type_is_an_error() {
    let o = predict(&["--types", "PER"], &sample());
    assert!(o.status.success());
    let docs = parse_jsonl(&stdout(&o));
    assert!(docs.iter().flat_map(|(_, e)| e).all(|e| e.kind == "PER"));
    let o = predict(&["--types", "PER,DRUG"], &sample());
    assert_one_line_error(&o, &["DRUG", "PER", "ORG"]);
}

#[test]
fn empty_input_gives_no_output() {
    let p = tmp_file("empty.txt", b"");
    let o = predict(&[], &p);
    assert!(o.status.success());
    assert!(o.stdout.is_empty());
}

#[test]
fn empty_lines_keep_line_alignment() {
    let p = tmp_file("gaps.txt", b"Paris\n\nBerlin\n");
    let docs = parse_jsonl(&stdout(&predict(&[], &p)));
    let texts: Vec<&str> = docs.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(texts, vec!["Paris", "", "Berlin"]);
}

#[test]
fn missing_file_and_bad_utf8_are_one_line_errors() {
    let o = predict(&[], Path::new("/nonexistent/input.txt"));
    assert_one_line_error(&o, &["/nonexistent/input.txt"]);
    let p = tmp_file("bad.txt", b"fine line\nbad \xC3\x28 here\n");
    let o = predict(&[], &p);
    assert_one_line_error(&o, &["bad.txt", "line 2", "byte 5"]);
    let o = predict(&["--lossy"], &p);
    assert!(o.status.success());
    let docs = parse_jsonl(&stdout(&o));
    assert_eq!(docs[1].0, "bad \u{FFFD}( here");
}

#[test]
fn corrupt_bundles_are_one_line_errors() {
    let good = std::fs::read(fixture_bundle()).unwrap();
    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    let mut flipped = good.clone();
    let mid = good.len() / 2;
    flipped[mid] ^= 0x55;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated.nerb", good[..good.len() / 3].to_vec()),
        ("magic.nerb", bad_magic),
        ("flipped.nerb", flipped),
        ("empty.nerb", Vec::new()),
    ];
    for (name, bytes) in cases {
        let p = tmp_file(name, &bytes);
        let o = run(
            &[
                "predict",
                "--bundle",
                p.to_str().unwrap(),
                sample().to_str().unwrap(),
            ],
            None,
        );
        assert_one_line_error(&o, &[name]);
        assert!(o.stdout.is_empty());
        let o = run(&["inspect", p.to_str().unwrap()], None);
        assert_one_line_error(&o, &[name]);
    }
}

#[test]
fn long_lines_are_windowed_not_truncated() {
    let words: Vec<String> = (0..700).map(|i| format!("Word{i} ")).collect();
    let line = words.concat();
    let p = tmp_file("long.txt", format!("{line}\nshort line\n").as_bytes());
    let o = predict(&["-v", "--format", "conll"], &p);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("line 1") && err.contains("windows"), "{err}");
    let out = stdout(&o);
    let first = out.split("\n\n").next().unwrap();
    let tagged: Vec<&str> = first
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    let expect: Vec<String> = line.split_whitespace().map(|w| w.to_lowercase()).collect();
    assert_eq!(tagged.len(), expect.len());
    for (t, e) in tagged.iter().zip(&expect) {
        assert_eq!(t.to_lowercase(), *e);
    }
}

#[test]
fn windowed_and_unwindowed_runs_give_the_same_words_and_nearly_the_same_labels() {
    let news = std::fs::read_to_string(sample()).unwrap();
    let line = news.lines().take(3).collect::<Vec<_>>().join(" ");
    let p = tmp_file("window.txt", format!("{line}\n").as_bytes());
    let model = default_model();
    let tagged = |extra: &[&str]| {
        let mut args = vec!["predict", "--bundle", model.to_str().unwrap(), "-v"];
        args.extend_from_slice(&["--format", "conll"]);
        args.extend_from_slice(extra);
        args.push(p.to_str().unwrap());
        let o = run(&args, None);
        assert!(o.status.success(), "{}", stderr(&o));
        let rows: Vec<(String, String)> = stdout(&o)
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (word, label) = l.split_once('\t').unwrap();
                (word.to_string(), label.to_string())
            })
            .collect();
        (rows, stderr(&o))
    };
    let (full, full_err) = tagged(&[]);
    let (small, small_err) = tagged(&["--window", "24"]);
    assert!(!full_err.contains("windows"), "{full_err}");
    assert!(small_err.contains("windows"), "{small_err}");
    let words = |rows: &[(String, String)]| rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>();
    assert_eq!(words(&full), words(&small));
    let entity_words: Vec<usize> = (0..full.len())
        .filter(|&i| full[i].1 != "O" || small[i].1 != "O")
        .collect();
    assert!(entity_words.len() >= 10, "{full:?}");
    let same = entity_words
        .iter()
        .filter(|&&i| full[i].1 == small[i].1)
        .count();
    assert!(
        same * 10 >= entity_words.len() * 9,
        "{same} of {} entity words keep their label\n{full:?}\n{small:?}",
        entity_words.len()
    );
}

#[test]
fn huge_line_is_segmented_with_bounded_segments_and_one_output_object() {
    let line: String = (0..20_000).map(|i| format!("token{i} ")).collect();
    assert!(line.len() > 150_000);
    let p = tmp_file("huge.txt", format!("{line}\nnext\n").as_bytes());
    let o = predict(&["-v"], &p);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("segment"), "{}", stderr(&o));
    let docs = parse_jsonl(&stdout(&o));
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0].0, line);
    for e in &docs[0].1 {
        assert_eq!(char_slice(&docs[0].0, e.start, e.end), e.text);
    }
}

#[test]
fn paragraph_mode_joins_lines() {
    let p = tmp_file(
        "paras.txt",
        b"First para line one\nline two\n\n\nSecond para\n",
    );
    let docs = parse_jsonl(&stdout(&predict(&["--paragraphs"], &p)));
    let texts: Vec<&str> = docs.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(texts, vec!["First para line one\nline two", "Second para"]);
}

#[test]
fn inspect_lists_version_tensors_and_types() {
    let o = run(&["inspect", fixture_bundle().to_str().unwrap()], None);
    assert!(o.status.success());
    let out = stdout(&o);
    for needle in [
        "format version",
        "encoder.onnx",
        "labels.prototypes",
        "PER",
        "MISC",
        "random-init",
    ] {
        assert!(out.contains(needle), "inspect output lacks {needle:?}");
    }
}
