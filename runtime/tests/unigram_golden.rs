//! The unigram tokenizer against the reference (Hugging Face `tokenizers`, XLM-R's
//! `tokenizer.json` of multilingual-e5-small) on the golden strings of
//! `fixtures/tokenizer/xlmr` (made by `tools/scripts/gen_xlmr_tokenizer_golden.py`): same ids,
//! same char offsets, for every string.

use std::path::PathBuf;

use ner_edge::tokenizer::unigram::{UnigramSpec, UnigramTokenizer};
use serde_json::Value;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tokenizer/xlmr")
}

/// The fixture tokenizer, and the full-vocabulary id of each of its pieces.
fn load() -> (UnigramTokenizer, Vec<u32>) {
    let dir = fixture_dir();
    let (spec, source) = UnigramSpec::from_json(
        &std::fs::read_to_string(dir.join("vocab.json")).unwrap(),
        std::fs::read(dir.join("charsmap.bin")).unwrap(),
    )
    .unwrap();
    (UnigramTokenizer::new(spec).unwrap(), source)
}

fn char_offset(text: &str, byte: usize) -> usize {
    text[..byte].chars().count()
}

#[test]
fn ids_and_offsets_equal_the_reference() {
    let (tokenizer, source) = load();
    let golden = std::fs::read_to_string(fixture_dir().join("golden.jsonl")).unwrap();
    let mut checked = 0;
    let mut failures = Vec::new();
    for line in golden.lines() {
        let case: Value = serde_json::from_str(line).unwrap();
        let text = case["text"].as_str().unwrap();
        let want_ids: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let want_offsets: Vec<(usize, usize)> = case["offsets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                (
                    o[0].as_u64().unwrap() as usize,
                    o[1].as_u64().unwrap() as usize,
                )
            })
            .collect();
        let pieces = tokenizer.encode(text);
        let ids: Vec<u32> = pieces.iter().map(|p| source[p.id as usize]).collect();
        let offsets: Vec<(usize, usize)> = pieces
            .iter()
            .map(|p| {
                (
                    char_offset(text, p.span.start),
                    char_offset(text, p.span.end),
                )
            })
            .collect();
        if ids != want_ids || offsets != want_offsets {
            failures.push(format!(
                "{text:?}\n  ids  {ids:?}\n  want {want_ids:?}\n  offsets {offsets:?}\n  want    {want_offsets:?}"
            ));
        }
        checked += 1;
    }
    assert!(checked >= 200, "only {checked} golden strings");
    assert!(
        failures.is_empty(),
        "{} of {checked} strings differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
