//! The tokenizer against the reference: ids and char offsets of HF `tokenizers` for the MiniLM
//! tokenizer (fixtures/tokenizer/golden.jsonl, made by tools/scripts/gen_tokenizer_golden.py),
//! plus structural properties of encodings on arbitrary text.

use std::ops::Range;
use std::path::{Path, PathBuf};

use ner_edge::tokenizer::{bert_uncased_meta, is_combining_mark, Encoding, Tokenizer};
use proptest::prelude::*;
use serde_json::Value;

mod common;

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn minilm() -> Tokenizer {
    let vocab = std::fs::read_to_string(repo_path("fixtures/minilm/vocab.txt")).expect("vocab.txt");
    Tokenizer::new(&bert_uncased_meta(), &vocab).expect("minilm tokenizer")
}

fn char_offset(text: &str, byte: usize) -> usize {
    text.get(..byte).map_or(usize::MAX, |s| s.chars().count())
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("number") as u32)
        .collect()
}

#[test]
fn golden_ids_and_offsets() {
    let tok = minilm();
    let path = repo_path("fixtures/tokenizer/golden.jsonl");
    let golden = std::fs::read_to_string(&path).expect("golden.jsonl");
    let mut lines = 0;
    let mut failures = Vec::new();
    for (n, line) in golden.lines().enumerate() {
        let case: Value = serde_json::from_str(line).expect("golden json");
        let text = case["text"].as_str().expect("text");
        let want_ids = u32s(&case["ids"]);
        let want_offsets: Vec<(usize, usize)> = case["offsets"]
            .as_array()
            .expect("offsets")
            .iter()
            .map(|o| {
                (
                    o[0].as_u64().expect("start") as usize,
                    o[1].as_u64().expect("end") as usize,
                )
            })
            .collect();
        let enc = tok.encode(text);
        check_invariants(text, &enc).unwrap_or_else(|e| panic!("line {}: {text:?}: {e}", n + 1));
        let mut ids = vec![tok.cls_id()];
        ids.extend(&enc.ids);
        ids.push(tok.sep_id());
        let offsets: Vec<(usize, usize)> = enc
            .piece_spans
            .iter()
            .map(|r| (char_offset(text, r.start), char_offset(text, r.end)))
            .collect();
        let inner = want_offsets
            .get(1..want_offsets.len().saturating_sub(1))
            .unwrap_or(&[]);
        if ids != want_ids {
            failures.push(format!(
                "line {}: {text:?}\n  ids  {ids:?}\n  want {want_ids:?}",
                n + 1
            ));
        } else if offsets != inner {
            failures.push(format!(
                "line {}: {text:?}\n  offsets {offsets:?}\n  want    {inner:?}",
                n + 1
            ));
        }
        lines += 1;
    }
    assert!(lines >= 250, "golden file has only {lines} lines");
    assert!(
        failures.is_empty(),
        "{} of {lines} lines differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn reference_model_input_ids() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/reference/minilm_l6_ref_output.json");
    let Some(text) = common::read_if_present(&path) else {
        return;
    };
    let reference: Value = serde_json::from_str(&text).expect("reference json");
    let sentence = reference["sentence"].as_str().expect("sentence");
    let tok = minilm();
    let mut ids = vec![tok.cls_id()];
    ids.extend(tok.encode(sentence).ids);
    ids.push(tok.sep_id());
    assert_eq!(ids, u32s(&reference["input_ids"]));
}

fn on_boundaries(text: &str, r: &Range<usize>) -> bool {
    r.start < r.end
        && r.end <= text.len()
        && text.is_char_boundary(r.start)
        && text.is_char_boundary(r.end)
}

/// Structure shared by `encode` and `encode_words` encodings.
fn check_structure(text: &str, enc: &Encoding) -> Result<(), String> {
    let n = enc.ids.len();
    if enc.piece_spans.len() != n
        || enc.piece_word.len() != n
        || enc.shapes.len() != n
        || enc.word_first_piece.len() != enc.words.len()
    {
        return Err(format!("inconsistent lengths: {enc:?}"));
    }
    for (w, word) in enc.words.iter().enumerate() {
        let empty_ok = word.is_empty() && word.end <= text.len();
        if !(on_boundaries(text, word) || empty_ok) {
            return Err(format!("word {w} {word:?} is not on char boundaries"));
        }
        if let Some(next) = enc.words.get(w + 1) {
            if word.end > next.start || word.start >= next.start {
                return Err(format!(
                    "words {word:?} and {next:?} overlap or are out of order"
                ));
            }
        }
        let pieces = enc.word_pieces(w).ok_or("no pieces")?;
        if pieces.is_empty() || pieces.end > n {
            return Err(format!("word {w} has pieces {pieces:?}"));
        }
        for p in pieces {
            if enc.piece_word[p] as usize != w {
                return Err(format!("piece {p} should belong to word {w}"));
            }
            let span = &enc.piece_spans[p];
            if !on_boundaries(text, span) && span != word {
                return Err(format!("piece {p} {span:?} is not on char boundaries"));
            }
            if span.start < word.start || span.end > word.end {
                return Err(format!("piece {p} {span:?} is outside its word {word:?}"));
            }
        }
    }
    if enc.word_first_piece.first().is_some_and(|&f| f != 0) || (enc.words.is_empty() && n != 0) {
        return Err("pieces before the first word".into());
    }
    Ok(())
}

/// A char that the tokenizer drops when it stands alone (whitespace, control chars, lone marks).
fn dropped_alone(tok: &Tokenizer, c: char) -> bool {
    tok.encode(c.encode_utf8(&mut [0; 4])).words.is_empty()
}

/// A char that separates words: whitespace that cleaning does not delete.
fn separates(tok: &Tokenizer, c: char) -> bool {
    c.is_whitespace() && dropped_alone(tok, c) && tok.encode(&format!("x{c}x")).words.len() == 2
}

/// Structure of an `encode` result, plus coverage: a run of chars between separators is covered
/// by words entirely when one of its chars survives normalisation, and not at all otherwise.
fn check_invariants(text: &str, enc: &Encoding) -> Result<(), String> {
    check_structure(text, enc)?;
    let tok = minilm_cached();
    let covered = |i: usize| enc.words.iter().any(|w| w.start <= i && i < w.end);
    let mut chunk: Vec<(usize, char)> = Vec::new();
    let check_chunk = |chunk: &mut Vec<(usize, char)>| -> Result<(), String> {
        let alive = chunk.iter().any(|&(_, c)| !dropped_alone(tok, c));
        for &(i, c) in chunk.iter() {
            if covered(i) != alive {
                return Err(format!(
                    "char {c:?} at byte {i}: covered {}, expected {alive}",
                    covered(i)
                ));
            }
        }
        chunk.clear();
        Ok(())
    };
    for (i, c) in text.char_indices() {
        if separates(tok, c) {
            if covered(i) {
                return Err(format!("separator {c:?} at byte {i} is inside a word"));
            }
            check_chunk(&mut chunk)?;
        } else {
            chunk.push((i, c));
        }
    }
    check_chunk(&mut chunk)
}

fn minilm_cached() -> &'static Tokenizer {
    static TOK: std::sync::OnceLock<Tokenizer> = std::sync::OnceLock::new();
    TOK.get_or_init(minilm)
}

fn fragment() -> impl Strategy<Value = String> {
    let pick =
        |items: &'static [&'static str]| proptest::sample::select(items).prop_map(str::to_string);
    prop_oneof![
        4 => "[a-zA-Z]{1,12}",
        1 => "[0-9]{1,6}",
        3 => pick(&[" ", " ", "  ", "\t", "\n", "\r\n", "\u{a0}", "\u{3000}", "\u{2003}", "\u{2028}", "\u{85}", "\u{b}"]),
        2 => pick(&[".", ",", "!", "?", "'", "\"", "-", "(", ")", "[", "]", "#", "##", "…", "—", "“", "”", "¿", "、", "。"]),
        2 => pick(&["é", "è", "ñ", "Å", "ü", "ß", "ø", "İ", "ǅ", "e\u{301}", "\u{301}", "\u{308}\u{302}", "\u{94d}", "ﬁ", "Ω"]),
        2 => pick(&["中", "文", "東京", "日本語", "ひらがな", "カタカナ", "한국어", "가", "豈", "𠀀", "\u{2b820}"]),
        2 => pick(&["😀", "🎉", "❤\u{fe0f}", "👍🏽", "👨\u{200d}👩\u{200d}👧", "🇫🇷", "🥰", "1\u{fe0f}\u{20e3}"]),
        2 => pick(&["\u{0}", "\u{7}", "\u{1b}", "\u{200b}", "\u{200d}", "\u{feff}", "\u{fffd}", "\u{ad}", "\u{e000}", "\u{e0067}"]),
        1 => pick(&["[CLS]", "[SEP]", "[MASK]", "[UNK]", "[PAD]", "[sep]"]),
        1 => pick(&["α", "Σ", "ж", "م", "ש", "न", "ส", "€", "∑", "½", "²"]),
        2 => any::<char>().prop_map(String::from),
        1 => "[a-z]{95,110}",
    ]
}

fn text() -> impl Strategy<Value = String> {
    proptest::collection::vec(fragment(), 0..30).prop_map(|v| v.concat())
}

/// A char an entity may start or end on: one the tokenizer keeps, i.e. not whitespace and not
/// deleted when it stands alone (control, format, zero-width, a lone mark).
fn own_char(tok: &Tokenizer, c: char) -> bool {
    !c.is_whitespace() && !dropped_alone(tok, c)
}

/// The entity span of every run of words `a..b` of `enc` starts on a kept char, ends on a kept
/// char followed only by combining marks, stays inside the words, and does not split a char
/// from the marks after it.
fn check_entity_spans(tok: &Tokenizer, text: &str, enc: &Encoding) -> Result<(), String> {
    for a in 0..enc.words.len() {
        for b in a + 1..=enc.words.len() {
            let span = enc
                .entity_span(text, a..b)
                .ok_or_else(|| format!("words {a}..{b}: no span"))?;
            let outer = enc.words[a].start..enc.words[b - 1].end;
            if span.start < outer.start || span.end > outer.end || span.is_empty() {
                return Err(format!("words {a}..{b}: span {span:?} outside {outer:?}"));
            }
            let inside = text
                .get(span.clone())
                .ok_or_else(|| format!("words {a}..{b}: span {span:?} off char boundaries"))?;
            let first = inside.chars().next().unwrap_or(' ');
            if !own_char(tok, first) {
                return Err(format!("words {a}..{b}: {inside:?} starts on {first:?}"));
            }
            let core = inside.trim_end_matches(is_combining_mark);
            match core.chars().next_back() {
                Some(last) if own_char(tok, last) => {}
                other => return Err(format!("words {a}..{b}: {inside:?} ends on {other:?}")),
            }
            if text[span.end..outer.end].starts_with(is_combining_mark) {
                return Err(format!(
                    "words {a}..{b}: {inside:?} leaves a mark of its last char out"
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn entity_spans_hold_only_the_entity() {
    let tok = minilm_cached();
    let text = "Angela\0Merkel visited \x07Berlin\x1b today, \u{200b}Jose\u{301}\u{200b} too.";
    let enc = tok.encode(text);
    let words: Vec<&str> = enc.words.iter().map(|w| &text[w.clone()]).collect();
    let at = |w: &str| words.iter().position(|x| *x == w).unwrap();
    let berlin = at("\x07Berlin\x1b");
    let span = enc.entity_span(text, berlin..berlin + 1).unwrap();
    assert_eq!(&text[span], "Berlin");
    let span = enc.entity_span(text, 0..1).unwrap();
    assert_eq!(&text[span], "Angela\0Merkel");
    let jose = words.iter().position(|x| x.contains("Jose")).unwrap();
    let span = enc.entity_span(text, jose..jose + 1).unwrap();
    assert_eq!(&text[span], "Jose\u{301}");
    check_entity_spans(tok, text, &enc).unwrap();
}

proptest! {
    #[test]
    fn encode_invariants(text in text()) {
        let enc = minilm_cached().encode(&text);
        prop_assert!(check_invariants(&text, &enc).is_ok(), "{:?}", check_invariants(&text, &enc));
    }

    #[test]
    fn entity_spans_start_and_end_on_the_entity(text in text()) {
        let tok = minilm_cached();
        let enc = tok.encode(&text);
        let checked = check_entity_spans(tok, &text, &enc);
        prop_assert!(checked.is_ok(), "{:?}: {:?}", text, checked);
    }

    #[test]
    fn encode_words_invariants(words in proptest::collection::vec(text(), 0..12)) {
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let enc = minilm_cached().encode_words(&words);
        let joined = words.join(" ");
        prop_assert_eq!(enc.words.len(), words.len());
        let mut offset = 0;
        for (w, word) in words.iter().enumerate() {
            prop_assert_eq!(&enc.words[w], &(offset..offset + word.len()));
            offset += word.len() + 1;
        }
        let structure = check_structure(&joined, &enc);
        prop_assert!(structure.is_ok(), "{:?}", structure);
    }

    /// The trainer encodes corpus words with `encode_words`, the runtime encodes raw text with
    /// `encode`: for words without whitespace or special tokens both give the same pieces, so
    /// they must give the same shapes too.
    #[test]
    fn shapes_agree_between_text_and_given_words(
        words in proptest::collection::vec("[a-zA-Z0-9.,'éÉ\\-]{1,10}", 0..10)
    ) {
        let tok = minilm_cached();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let joined = words.join(" ");
        let from_text = tok.encode(&joined);
        let from_words = tok.encode_words(&words);
        prop_assert_eq!(&from_text.ids, &from_words.ids);
        prop_assert_eq!(&from_text.shapes, &from_words.shapes);
        prop_assert_eq!(from_text.shapes.len(), from_text.ids.len());
    }
}
