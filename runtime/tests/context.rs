//! Context fusion: tagging with a context per text, through the library and the CLI, on the
//! fixture bundle and on a copy of it with a context gate.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use ner_edge::bundle::{Bundle, BundleWriter};
use ner_edge::encoder::fusion::{GATE_BIAS, GATE_WEIGHT};
use ner_edge::pipeline::Tagger;
use ner_edge::Error;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tiny() -> PathBuf {
    repo().join("fixtures/bundles/tiny.nerb")
}

fn tmp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ner-edge-context-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The fixture bundle with a context gate whose opening depends on the hidden states.
fn gated_bundle() -> PathBuf {
    let path = tmp_dir().join("gated.nerb");
    if path.exists() {
        return path;
    }
    let b = Bundle::open(&tiny()).unwrap();
    let h = b.metadata().encoder.hidden;
    let mut w = BundleWriter::copy_of(&b, |_| true).unwrap();
    let weight: Vec<f32> = (0..4 * h)
        .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.05)
        .collect();
    w.add_f32(GATE_WEIGHT, &[2 * h, 2], &weight).unwrap();
    w.add_f32(GATE_BIAS, &[2], &[0.0, 0.5]).unwrap();
    let part = path.with_extension(format!("part{:?}", std::thread::current().id()));
    w.write(&part).unwrap();
    std::fs::rename(&part, &path).unwrap();
    path
}

const TEXTS: [&str; 3] = [
    "Aspirin reduced the fever in Berlin.",
    "Tim Cook met Angela Merkel.",
    "",
];

#[test]
fn texts_without_context_are_tagged_exactly_as_without_fusion() {
    let b = Bundle::open(&gated_bundle()).unwrap();
    let plain = Tagger::new(&b, None).unwrap();
    let mut fused = Tagger::new(&b, None).unwrap();
    fused.enable_context(&b, false).unwrap();
    let none = [None, Some("   "), None];
    let with = fused.tag_in_context(&TEXTS, &none, 1).unwrap();
    assert_eq!(with, plain.tag(&TEXTS, 1).unwrap());
    assert!(with.iter().all(|t| t.context_opening.is_none()));
}

#[test]
fn a_context_changes_the_scores_not_the_words_or_offsets() {
    let b = Bundle::open(&gated_bundle()).unwrap();
    let mut t = Tagger::new(&b, None).unwrap();
    t.enable_context(&b, false).unwrap();
    let contexts = [
        Some("The patient was treated at the Charite hospital."),
        Some("Apple and the German government talked."),
        Some("Nothing to tag here."),
    ];
    let alone = t.tag(&TEXTS, 1).unwrap();
    let one = t.tag_in_context(&TEXTS, &contexts, 1).unwrap();
    let two = t.tag_in_context(&TEXTS, &contexts, 2).unwrap();
    assert_eq!(one, two, "the result does not depend on threads");
    for ((text, a), c) in TEXTS.iter().zip(&alone).zip(&one) {
        assert_eq!(a.words, c.words);
        assert_eq!(a.labels.len(), c.labels.len());
        for e in &c.entities {
            assert!(e.span.end <= text.len() && text.is_char_boundary(e.span.start));
        }
    }
    let g = one[0]
        .context_opening
        .expect("the first text saw its context");
    assert!(g > 0.0 && g < 1.0, "{g}");
    assert_eq!(
        one[2].context_opening, None,
        "an empty text has nothing to fuse"
    );

    let mut replace = Tagger::new(&b, None).unwrap();
    replace.enable_context(&b, true).unwrap();
    let r = replace.tag_in_context(&TEXTS, &contexts, 1).unwrap();
    assert_eq!(r[0].context_opening, Some(1.0));
}

#[test]
fn context_needs_fusion_and_the_gate_needs_a_trained_bundle() {
    let b = Bundle::open(&tiny()).unwrap();
    let mut t = Tagger::new(&b, None).unwrap();
    let err = t
        .tag_in_context(&TEXTS[..1], &[Some("some context")], 1)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Usage(m) if m.contains("not enabled")),
        "{err}"
    );
    let err = t.tag_in_context(&TEXTS[..1], &[None, None], 1).unwrap_err();
    assert!(
        matches!(&err, Error::Usage(m) if m.contains("2 contexts for 1 texts")),
        "{err}"
    );
    let err = t.enable_context(&b, false).unwrap_err();
    assert!(
        matches!(&err, Error::Usage(m) if m.contains("no context gate")),
        "{err}"
    );
    assert!(t.context_fusion().is_none());
    t.enable_context(&b, true).unwrap();
}

fn run(args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ner-edge"))
        .args(args)
        .env_remove("NER_EDGE_BUNDLE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn predict(bundle: &Path, extra: &[&str], stdin: &[u8]) -> Output {
    let mut args = vec!["predict", "--bundle", bundle.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.push("-");
    run(&args, stdin)
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn one_line_error(o: &Output, needle: &str) {
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
}

#[test]
fn jsonl_and_tsv_input_tag_the_text_and_read_the_context() {
    let gated = gated_bundle();
    let lines = "Tim Cook met Angela Merkel.\nAspirin reduced the fever.\n\nBerlin is big.\n";
    let plain = ok(&predict(&tiny(), &[], lines.as_bytes()));

    let jsonl: String = lines
        .lines()
        .map(|l| format!("{}\n", serde_json::json!({ "text": l, "id": 7 })))
        .collect();
    let out = ok(&predict(
        &tiny(),
        &["--input-format", "jsonl"],
        jsonl.as_bytes(),
    ));
    assert_eq!(
        out, plain,
        "JSON lines without context are tagged as plain lines"
    );
    let tsv: String = lines.lines().map(|l| format!("{l}\t\n")).collect();
    assert_eq!(
        ok(&predict(
            &tiny(),
            &["--input-format", "tsv"],
            tsv.as_bytes()
        )),
        plain
    );

    let with: String = lines
        .lines()
        .map(|l| {
            format!(
                "{}\n",
                serde_json::json!({ "text": l, "context": "Apple said so." })
            )
        })
        .collect();
    let out = ok(&predict(
        &gated,
        &["--input-format", "jsonl"],
        with.as_bytes(),
    ));
    let texts: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        texts,
        lines.lines().collect::<Vec<_>>(),
        "the context is not output"
    );
    let tsv: String = lines
        .lines()
        .map(|l| format!("{l}\tApple said so.\n"))
        .collect();
    assert_eq!(
        ok(&predict(&gated, &["--input-format", "tsv"], tsv.as_bytes())),
        out
    );

    one_line_error(
        &predict(
            &tiny(),
            &["--input-format", "jsonl"],
            b"{\"text\": \"a\", \"context\": \"b\"}\n",
        ),
        "no context gate",
    );
    one_line_error(
        &predict(
            &tiny(),
            &["--input-format", "jsonl"],
            b"{\"text\": \"a\"}\n\n{\"txt\": 1}\n",
        ),
        "<stdin>: line 3: not a JSON object",
    );
    one_line_error(
        &predict(&tiny(), &["--input-format", "jsonl", "--paragraphs"], b""),
        "--paragraphs",
    );
}

#[test]
fn doc_context_uses_the_previous_lines_of_the_paragraph() {
    let gated = gated_bundle();
    let lines = "Tim Cook met Angela Merkel.\nThey talked in Berlin.\n\nAspirin helps.\n";
    let out = ok(&predict(&gated, &["--doc-context", "2"], lines.as_bytes()));
    let explicit = [
        ("Tim Cook met Angela Merkel.", None),
        (
            "They talked in Berlin.",
            Some("Tim Cook met Angela Merkel."),
        ),
        ("", None),
        ("Aspirin helps.", None),
    ];
    let jsonl: String = explicit
        .iter()
        .map(|(t, c)| format!("{}\n", serde_json::json!({ "text": t, "context": c })))
        .collect();
    let same = ok(&predict(
        &gated,
        &["--input-format", "jsonl"],
        jsonl.as_bytes(),
    ));
    assert_eq!(
        out, same,
        "--doc-context gives the lines before, reset at a blank line"
    );
    one_line_error(
        &predict(&tiny(), &["--doc-context", "1"], lines.as_bytes()),
        "no context gate",
    );
    one_line_error(
        &predict(
            &gated,
            &["--doc-context", "1", "--input-format", "tsv"],
            b"a\n",
        ),
        "--doc-context",
    );
}

#[test]
fn a_pack_in_context_leaves_the_bundle_types_unchanged() {
    use ner_edge::adapt::{adapt, read_support, AdaptOptions, SupportFormat, TuneOptions};
    use ner_edge::pack::{pack_to_bytes, LabelPack};
    let b = Bundle::open(&gated_bundle()).unwrap();
    let support = read_support(
        &repo().join("fixtures/adapt/drugs.txt"),
        SupportFormat::Auto,
        1 << 20,
    )
    .unwrap();
    for tune in [None, Some(TuneOptions::with_steps(10))] {
        let opts = AdaptOptions {
            tune,
            ..AdaptOptions::default()
        };
        let a = adapt(&b, Some(&support), &opts).unwrap();
        let bytes = pack_to_bytes(&a.metadata, &a.prototypes, a.heads.as_ref()).unwrap();
        let pack = LabelPack::from_bytes(&bytes, "drug.nerp").unwrap();
        let mut alone = Tagger::new(&b, None).unwrap();
        let mut with = Tagger::with_packs(&b, std::slice::from_ref(&pack), None, false).unwrap();
        alone.enable_context(&b, false).unwrap();
        with.enable_context(&b, false).unwrap();
        let texts = [
            "Angela Merkel visited the Siemens plant in Erlangen on Tuesday.",
            "Apple chief executive Tim Cook met investors in New York before flying to Tokyo.",
        ];
        let contexts = [
            Some("The chancellor travelled south."),
            Some("Markets were calm."),
        ];
        let x = alone.tag_in_context(&texts, &contexts, 1).unwrap();
        let y = with.tag_in_context(&texts, &contexts, 1).unwrap();
        let old = alone.type_names().len();
        let mut n = 0;
        for (p, q) in x.iter().zip(&y) {
            let keep = |t: &ner_edge::pipeline::TaggedText| -> Vec<(usize, usize, usize, u32)> {
                t.entities
                    .iter()
                    .filter(|e| e.type_index < old)
                    .map(|e| (e.span.start, e.span.end, e.type_index, e.score.to_bits()))
                    .collect()
            };
            assert_eq!(keep(p), keep(q));
            assert_eq!(p.context_opening, q.context_opening);
            n += keep(p).len();
        }
        assert!(n > 0, "the texts must have bundle-type entities");
    }
}

#[test]
fn a_malformed_gate_is_refused_when_the_bundle_opens() {
    let b = Bundle::open(&tiny()).unwrap();
    let h = b.metadata().encoder.hidden;
    let build = |gate: &[(&str, Vec<usize>)]| {
        let mut w = BundleWriter::copy_of(&b, |_| true).unwrap();
        for (name, shape) in gate {
            let n: usize = shape.iter().product();
            w.add_f32(name, shape, &vec![0.0; n]).unwrap();
        }
        Bundle::from_vec(w.to_bytes_unchecked().unwrap(), "bad.nerb")
    };
    let only_bias = build(&[(GATE_BIAS, vec![2])]).unwrap_err().to_string();
    assert!(
        only_bias.contains("bad.nerb") && only_bias.contains(GATE_WEIGHT),
        "{only_bias}"
    );
    let wrong = build(&[(GATE_WEIGHT, vec![4 * h, 2]), (GATE_BIAS, vec![2])])
        .unwrap_err()
        .to_string();
    assert!(
        wrong.contains(GATE_WEIGHT) && wrong.contains("encoder.hidden"),
        "{wrong}"
    );
    let bias = build(&[(GATE_WEIGHT, vec![2 * h, 2]), (GATE_BIAS, vec![3])])
        .unwrap_err()
        .to_string();
    assert!(bias.contains(GATE_BIAS), "{bias}");
    for rows in [2 * h, 3 * h] {
        build(&[(GATE_WEIGHT, vec![rows, 2]), (GATE_BIAS, vec![2])]).unwrap();
    }
}
