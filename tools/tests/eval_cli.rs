//! `ner-tools eval` end to end on the fixture bundle (random weights: structure only).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn ner_tools(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ner-tools"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ner-tools-eval-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn episodes_report_states_provenance_scores_and_pictures() {
    let dir = scratch("episodes");
    let report = dir.join("r.md");
    let out = ner_tools(&[
        "eval",
        "episodes",
        "--bundle",
        "fixtures/bundles/tiny.nerb",
        "--episodes",
        "fixtures/corpus/hou/news_1shot.json",
        "--shots",
        "1",
        "--report",
        report.to_str().unwrap(),
        "--plots",
        dir.join("pics").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("overlap could not be checked"), "{stderr}");
    assert!(stderr.contains("per-episode F1"), "{stderr}");
    let md = std::fs::read_to_string(&report).unwrap();
    for want in [
        "- training corpora:",
        "- encoder:",
        "### news_1shot",
        "1-shot, 2 episodes, adaptation gradient-free",
        "| micro precision / recall / F1 (%) |",
        "| per-episode F1, mean ± std (%) |",
        "(2 episodes,",
        "![news_1shot: F1 per type](pics/news_1shot-f1.svg)",
    ] {
        assert!(md.contains(want), "missing {want:?} in\n{md}");
    }
    assert!(dir.join("pics/news_1shot-f1.svg").is_file());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn supervised_maps_types_and_bad_input_exits_2_naming_it() {
    let out = ner_tools(&[
        "eval",
        "supervised",
        "--bundle",
        "fixtures/bundles/tiny.nerb",
        "--test",
        "fixtures/corpus/conll2003/sample.txt",
        "--map",
        "PER=person",
        "--map",
        "LOC=location",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("bundle types PER, LOC, type mapping PER→person, LOC→location"),
        "{stdout}"
    );
    assert!(stdout.contains("### sample"), "{stdout}");
    assert!(
        stdout.contains("| entities: gold / predicted / correct | 5 / "),
        "{stdout}"
    );
    assert!(stdout.contains("| LOC | 1 | 0 | 0 |"), "{stdout}");
    assert!(stdout.contains("| PER | 1 | 0 | 0 |"), "{stdout}");

    let unknown = ner_tools(&[
        "eval",
        "supervised",
        "--bundle",
        "fixtures/bundles/tiny.nerb",
        "--test",
        "fixtures/corpus/conll2003/sample.txt",
        "--map",
        "person=PER",
    ]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown entity type \"person\""));

    let bad = ner_tools(&[
        "eval",
        "supervised",
        "--bundle",
        "fixtures/bundles/tiny.nerb",
        "--test",
        "fixtures/corpus/conll2003/sample.txt",
        "--map",
        "PER",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--map \"PER\": expected"));

    let missing = ner_tools(&[
        "eval",
        "episodes",
        "--bundle",
        "fixtures/bundles/tiny.nerb",
        "--episodes",
        "fixtures/corpus/bad/hou_invalid.json",
    ]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("hou_invalid.json"));
}

#[test]
fn test_data_in_the_training_hashes_is_refused() {
    let dir = scratch("overlap");
    let bundle =
        ner_edge::bundle::Bundle::open(&root().join("fixtures/bundles/tiny.nerb")).unwrap();
    let test =
        ner_edge_corpus::read_conll2003(&root().join("fixtures/corpus/conll2003/sample.txt"))
            .unwrap();
    let hashes: Vec<u64> = test
        .sentences
        .iter()
        .map(|s| ner_edge_trainer::train::export::sentence_hash(&s.tokens))
        .collect();
    let bytes =
        ner_edge_trainer::train::export::add_sentence_hashes(bundle.as_bytes().to_vec(), &hashes)
            .unwrap();
    let path = dir.join("trained-on-test.nerb");
    std::fs::write(&path, bytes).unwrap();
    let type_name = bundle.metadata().labels.default_active[0].clone();
    let out = ner_tools(&[
        "eval",
        "supervised",
        "--bundle",
        path.to_str().unwrap(),
        "--test",
        "fixtures/corpus/conll2003/sample.txt",
        "--map",
        &format!("{type_name}=PER"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("sample.txt: refusing to report:")
            && stderr.contains("are in the bundle's training data"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
