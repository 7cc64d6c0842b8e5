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
        &std::fs::read_to_string(dir.join("unigram.json")).unwrap(),
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

/// The fixture as a bundle would carry it: `piece⇥score` lines, the map, the unknown score.
fn bundle_tokenizer() -> ner_edge::tokenizer::Tokenizer {
    let dir = fixture_dir();
    let (spec, _) = UnigramSpec::from_json(
        &std::fs::read_to_string(dir.join("unigram.json")).unwrap(),
        std::fs::read(dir.join("charsmap.bin")).unwrap(),
    )
    .unwrap();
    let lines = spec.vocab_text().unwrap();
    let meta = ner_edge::tokenizer::xlmr_unigram_meta(spec.unk_score);
    ner_edge::tokenizer::Tokenizer::from_parts(&meta, &lines, Some(&spec.charsmap)).unwrap()
}

#[test]
fn words_are_ideographs_wide_punctuation_and_space_separated_runs() {
    let tokenizer = bundle_tokenizer();
    assert_eq!(tokenizer.kind(), "unigram");
    let text = "苹果公司CEO蒂姆 访问了 New York。";
    let enc = tokenizer.encode(text);
    let words: Vec<&str> = enc.words.iter().map(|r| &text[r.clone()]).collect();
    assert_eq!(
        words,
        [
            "苹", "果", "公", "司", "CEO", "蒂", "姆", "访", "问", "了", "New", "York", "。"
        ]
    );
    for (p, span) in enc.piece_spans.iter().enumerate() {
        let word = &enc.words[enc.piece_word[p] as usize];
        assert!(
            span.start >= word.start && span.end <= word.end,
            "{span:?} outside {word:?}"
        );
    }
    assert_eq!(
        enc.entity_span(text, 10..12),
        Some(text.find("New").unwrap()..text.find('。').unwrap()),
        "the full stop is a word of its own, outside the entity"
    );
    assert_eq!(
        tokenizer.cls_id(),
        tokenizer.token_id("<s>").unwrap(),
        "CLS is <s>"
    );
    assert!(tokenizer.encode("   ").ids.is_empty());
}

#[test]
fn given_words_stay_one_word_each() {
    let tokenizer = bundle_tokenizer();
    let enc = tokenizer.encode_words(&["EU", "rejects", "北京", "\u{1}"]);
    assert_eq!(enc.words, [0..2, 3..10, 11..17, 18..19]);
    assert_eq!(enc.word_first_piece.len(), 4);
    assert_eq!(enc.ids.last(), Some(&tokenizer.unk_id()));
    assert_eq!(enc.piece_word.len(), enc.ids.len());
    assert_eq!(enc.shapes.len(), enc.ids.len());
}

#[test]
fn malformed_unigram_parts_are_named_errors() {
    let meta = ner_edge::tokenizer::xlmr_unigram_meta(-30.0);
    let vocab = "<s>\t0\n<pad>\t0\n</s>\t0\n<unk>\t0\n";
    let e = ner_edge::tokenizer::Tokenizer::from_parts(&meta, vocab, None).unwrap_err();
    assert!(e.to_string().contains("normalisation map"), "{e}");
    let bad = "<s>\t0\n<pad>\n";
    let e =
        ner_edge::tokenizer::Tokenizer::from_parts(&meta, bad, Some(&[0, 0, 0, 0])).unwrap_err();
    assert!(e.to_string().contains("line 2"), "{e}");
}
