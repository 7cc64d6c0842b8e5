//! Token-per-line labelled sentences, the support-set side of the runtime: the column layouts
//! `ner-edge adapt` reads support files in ([`super::support`]), parsed into labelled
//! [`Sentence`]s whose tags are valid BIO ([`super::bio::normalize_tags`]).
//!
//! | layout | parser |
//! |---|---|
//! | `token POS chunk NER` (CoNLL-2003) | [`parse_conll2003`] |
//! | `token<TAB>tag` | [`parse_token_tag`] |
//! | `word tag`, split on the last space or TAB (MIT) | [`parse_mit`] |
//!
//! Sentences are separated by blank lines and `-DOCSTART-` lines. Errors are [`Error::Input`]
//! messages of the form `SOURCE: line N: what is wrong`, with `N` counted from 1; no parser
//! panics on bad input. The dataset readers of the training and evaluation crate
//! `ner-edge-corpus` (its `read_conll2003`, `read_token_tag`, `read_mit`, `read_corpus`) are
//! built on these parsers and helpers.

use std::fmt::Display;

use super::bio::{normalize_tags, TagScheme};
use crate::{Error, Result};

/// One labelled sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sentence {
    /// The tokens, never empty strings.
    pub tokens: Vec<String>,
    /// One valid BIO tag per token (`O`, `B-TYPE`, `I-TYPE`), after conversion and repair.
    pub tags: Vec<String>,
    /// The original character text when the source has it (CLUENER), else `None`.
    pub text: Option<String>,
}

impl Sentence {
    /// Number of entities, i.e. of `B-` tags.
    pub fn entity_count(&self) -> usize {
        self.tags.iter().filter(|t| t.starts_with("B-")).count()
    }

    /// The text of a char-level sentence (CLUENER: one token per char of `text`, whitespace
    /// included); `None` for a sentence of words.
    pub fn char_level_text(&self) -> Option<&str> {
        let text = self.text.as_deref()?;
        let mut chars = text.chars();
        let matches = self.tokens.iter().all(|t| {
            let mut tc = t.chars();
            matches!((tc.next(), tc.next(), chars.next()), (Some(a), None, Some(b)) if a == b)
        });
        (matches && chars.next().is_none()).then_some(text)
    }

    /// Char-level BIO tags of `text` (one per char) from labelled words: `words[i]` (a byte
    /// range of `text`) tagged `tags[i]`. A word's `B-` tag goes to its first char and `I-` to
    /// the rest; chars outside every word are `O`, except between two words of one entity
    /// (whitespace inside a name), which continue it.
    pub fn char_tags(text: &str, words: &[std::ops::Range<usize>], tags: &[String]) -> Vec<String> {
        let starts: Vec<usize> = text.char_indices().map(|(b, _)| b).collect();
        let char_of = |byte: usize| starts.partition_point(|&b| b < byte);
        let mut out: Vec<Option<String>> = vec![None; starts.len()];
        for (range, tag) in words.iter().zip(tags) {
            let (first, end) = (char_of(range.start), char_of(range.end));
            for (k, slot) in out.iter_mut().enumerate().take(end).skip(first) {
                *slot = Some(match tag.split_once('-') {
                    Some(("B", ty)) if k > first => format!("I-{ty}"),
                    _ => tag.clone(),
                });
            }
        }
        let mut tags_out: Vec<String> = Vec::with_capacity(out.len());
        for k in 0..out.len() {
            let tag = match &out[k] {
                Some(t) => t.clone(),
                None => {
                    let prev = tags_out.last();
                    let next = out[k + 1..].iter().flatten().next();
                    match (prev, next) {
                        (Some(p), Some(n))
                            if p != "O" && n.starts_with("I-") && p.get(2..) == n.get(2..) =>
                        {
                            n.clone()
                        }
                        _ => "O".to_string(),
                    }
                }
            };
            tags_out.push(tag);
        }
        tags_out
    }
}

/// The sentences of one token-per-line text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Labelled {
    /// The sentences in source order; sentences without tokens are skipped.
    pub sentences: Vec<Sentence>,
    /// 1-based line of the first token of each sentence (parallel to `sentences`).
    pub starts: Vec<usize>,
    /// Index in `sentences` of the first sentence after each `-DOCSTART-` line, in order
    /// (a document start after the last sentence is `sentences.len()`); empty when the text
    /// has no document markers.
    pub documents: Vec<usize>,
    /// Stray `I-X` tags turned into `B-X` (see [`TagScheme::Bio`]).
    pub repairs: usize,
}

/// What one line of a token-per-line file is.
enum LineKind<'a> {
    /// Ends the current sentence (Twitter `IMGID:` lines).
    Boundary,
    /// A token and its raw tag.
    Token(&'a str, &'a str),
}

/// Decodes the bytes of `source` as UTF-8 (a byte-order mark is kept); invalid UTF-8 is an
/// [`Error::Input`] naming the line of the first bad byte.
pub fn decode_utf8(bytes: Vec<u8>, source: &str) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = 1 + valid.iter().filter(|&&b| b == b'\n').count();
        input_error(source, line, "invalid UTF-8")
    })
}

/// Lines of `text` numbered from 1, without their `\n` or `\r\n` terminator.
pub fn numbered_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .enumerate()
        .map(|(i, l)| (i + 1, l))
}

/// An [`Error::Input`] naming `source` and the 1-based `line`.
pub fn input_error(source: &str, line: usize, message: impl Display) -> Error {
    Error::Input(format!("{source}: line {line}: {message}"))
}

/// True for a CoNLL document-start line: its first space- or TAB-separated field is `-DOCSTART-`.
pub fn is_docstart(line: &str) -> bool {
    line.split(['\t', ' ']).next() == Some("-DOCSTART-")
}

/// True for a Twitter image-id line: `IMGID:` followed by no TAB.
pub fn is_imgid_line(line: &str) -> bool {
    line.starts_with("IMGID:") && !line.contains('\t')
}

/// The raw tag (text after the last TAB, trimmed) of every line of `text` that has a TAB.
pub fn tab_tags(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .filter_map(|l| l.rsplit_once('\t'))
        .map(|(_, tag)| tag.trim_ascii())
}

/// Reads blank-line-separated sentences of one token per line. Blank (whitespace-only) lines
/// end a sentence, as do lines whose first field is `-DOCSTART-` and lines that `classify`
/// calls [`LineKind::Boundary`]; sentences without tokens are skipped.
fn parse_blocks<'a>(
    text: &'a str,
    source: &str,
    scheme: TagScheme,
    classify: impl Fn(&'a str) -> Result<LineKind<'a>, String>,
) -> Result<Labelled> {
    let mut sentences = Vec::new();
    let mut starts = Vec::new();
    let mut repairs = 0;
    let mut tokens: Vec<&str> = Vec::new();
    let mut tags: Vec<&str> = Vec::new();
    let mut lines: Vec<usize> = Vec::new();
    let mut documents = Vec::new();
    let mut flush =
        |tokens: &mut Vec<&str>, tags: &mut Vec<&str>, lines: &mut Vec<usize>| -> Result<()> {
            if tokens.is_empty() {
                return Ok(());
            }
            let normalized = normalize_tags(tags, scheme)
                .map_err(|e| input_error(source, lines[e.index], e.message))?;
            repairs += normalized.repairs;
            sentences.push(Sentence {
                tokens: tokens.iter().map(|t| t.to_string()).collect(),
                tags: normalized.tags,
                text: None,
            });
            starts.push(lines[0]);
            tokens.clear();
            tags.clear();
            lines.clear();
            Ok(())
        };
    for (line_no, line) in numbered_lines(text) {
        if line.trim_ascii().is_empty() || is_docstart(line) {
            flush(&mut tokens, &mut tags, &mut lines)?;
            if is_docstart(line) {
                documents.push(line_no);
            }
            continue;
        }
        match classify(line).map_err(|m| input_error(source, line_no, m))? {
            LineKind::Boundary => flush(&mut tokens, &mut tags, &mut lines)?,
            LineKind::Token(token, tag) => {
                tokens.push(token);
                tags.push(tag);
                lines.push(line_no);
            }
        }
    }
    flush(&mut tokens, &mut tags, &mut lines)?;
    let documents = documents
        .into_iter()
        .map(|line| starts.partition_point(|&s| s < line))
        .collect();
    Ok(Labelled {
        sentences,
        starts,
        documents,
        repairs,
    })
}

/// Parses `token<TAB>tag` text (CrossNER, Twitter-2015/2017, CONTaiNER support sets, Few-NERD)
/// whose tags are in `scheme` (Few-NERD: [`TagScheme::Io`]; the others: [`TagScheme::Bio`]);
/// `source` names the text in errors.
///
/// Lines are split on TAB only, so tokens may be any other character (U+00A0, U+200B); the
/// tag is trimmed of ASCII whitespace, the token is kept as-is. Every non-blank line must have
/// exactly one TAB and a non-empty token, except `IMGID:` lines without a TAB (Twitter), which
/// end the current sentence like blank lines and `-DOCSTART-` lines.
pub fn parse_token_tag(text: &str, source: &str, scheme: TagScheme) -> Result<Labelled> {
    parse_blocks(text, source, scheme, |line| {
        if is_imgid_line(line) {
            return Ok(LineKind::Boundary);
        }
        let mut fields = line.split('\t');
        match (fields.next(), fields.next(), fields.next()) {
            (Some(""), Some(_), None) => Err("empty token before the TAB".to_string()),
            (Some(token), Some(tag), None) => Ok(LineKind::Token(token, tag.trim_ascii())),
            _ => Err(format!(
                "expected token<TAB>tag, found {} tab-separated fields",
                line.split('\t').count()
            )),
        }
    })
}

/// Parses MIT Movie / MIT Restaurant text: word first, BIO tag second, separated by the last
/// space or TAB of the line (`eng*` files use TAB, `trivia10k13*` and restaurant files a single
/// space). Both fields are trimmed of ASCII whitespace and must be non-empty.
pub fn parse_mit(text: &str, source: &str) -> Result<Labelled> {
    parse_blocks(text, source, TagScheme::Bio, |line| {
        let line = line.trim_ascii();
        let Some(cut) = line.rfind([' ', '\t']) else {
            return Err("expected a word and a tag separated by a space or TAB".to_string());
        };
        Ok(LineKind::Token(line[..cut].trim_ascii(), &line[cut + 1..]))
    })
}

/// Parses CoNLL-2003 text: one token per line as 4 fields separated by ASCII whitespace
/// (`token POS chunk NER`), sentences separated by blank lines, `-DOCSTART-` lines skipped.
///
/// The NER column is read as [`TagScheme::Bio`]; original IOB1 files therefore come out as
/// IOB2, with every `I-` that starts an entity counted in [`Labelled::repairs`]. A line with
/// another number of fields is an error.
pub fn parse_conll2003(text: &str, source: &str) -> Result<Labelled> {
    parse_blocks(text, source, TagScheme::Bio, |line| {
        let mut fields = line.split_ascii_whitespace();
        match (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) {
            (Some(token), Some(_), Some(_), Some(tag), None) => Ok(LineKind::Token(token, tag)),
            _ => Err(format!(
                "expected 4 space-separated columns (token POS chunk NER), found {}",
                line.split_ascii_whitespace().count()
            )),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_tags_expand_words_and_continue_entities_over_inner_spaces() {
        let tags = |v: &[&str]| v.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        let text = "New York 北京";
        let words = [0..3, 4..8, 9..12, 12..15];
        let got = Sentence::char_tags(text, &words, &tags(&["B-LOC", "I-LOC", "B-GPE", "I-GPE"]));
        let want = tags(&[
            "B-LOC", "I-LOC", "I-LOC", "I-LOC", "I-LOC", "I-LOC", "I-LOC", "I-LOC", "O", "B-GPE",
            "I-GPE",
        ]);
        assert_eq!(got, want);
        let apart = Sentence::char_tags("a b", &[0..1, 2..3], &tags(&["B-X", "B-X"]));
        assert_eq!(apart, tags(&["B-X", "O", "B-X"]));
    }

    fn message(result: Result<Labelled>) -> String {
        match result {
            Err(Error::Input(m)) => m,
            other => panic!("expected an input error, got {other:?}"),
        }
    }

    #[test]
    fn lines_are_numbered_from_one_without_terminators() {
        let lines: Vec<_> = numbered_lines("a\r\nb\n\nc").collect();
        assert_eq!(lines, vec![(1, "a"), (2, "b"), (3, ""), (4, "c")]);
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let err = decode_utf8(b"a\nb\n\xe9t\xe9\n".to_vec(), "x.txt").unwrap_err();
        assert_eq!(err.to_string(), "input error: x.txt: line 3: invalid UTF-8");
        assert_eq!(
            decode_utf8(b"\xef\xbb\xbfa".to_vec(), "x").unwrap(),
            "\u{feff}a"
        );
    }

    #[test]
    fn crlf_blank_runs_and_missing_final_newline() {
        let parsed =
            parse_token_tag("a\tB-X\r\nb\tI-X\r\n\r\n\r\n \nc\tO", "mem", TagScheme::Bio).unwrap();
        assert_eq!(parsed.sentences.len(), 2);
        assert_eq!(parsed.sentences[0].tags, ["B-X", "I-X"]);
        assert_eq!(parsed.sentences[1].tokens, ["c"]);
        assert_eq!(parsed.starts, [1, 6]);
    }

    #[test]
    fn imgid_and_docstart_end_sentences() {
        let text = "IMGID:1\na\tB-X\nIMGID:2\nb\tO\n-DOCSTART-\tO\nc\tI-Y\n";
        let l = parse_token_tag(text, "t", TagScheme::Bio).unwrap();
        assert_eq!(
            l.documents,
            vec![2],
            "the document marker comes before sentence 3"
        );
        let parsed = parse_token_tag(text, "mem", TagScheme::Bio).unwrap();
        let tokens: Vec<_> = parsed
            .sentences
            .iter()
            .map(|s| s.tokens.join(" "))
            .collect();
        assert_eq!(tokens, ["a", "b", "c"]);
        assert_eq!(parsed.starts, [2, 4, 6]);
        assert_eq!(parsed.sentences[2].tags, ["B-Y"]);
        assert_eq!(parsed.repairs, 1);
        assert_eq!(parsed.sentences[0].entity_count(), 1);
    }

    #[test]
    fn bioes_input_is_converted() {
        let parsed = parse_token_tag("a\tS-X\nb\tB-Y\nc\tE-Y\n", "mem", TagScheme::Bioes).unwrap();
        assert_eq!(parsed.sentences[0].tags, ["B-X", "B-Y", "I-Y"]);
    }

    #[test]
    fn token_tag_errors_name_source_and_line() {
        let m = message(parse_token_tag("a\tO\n\tO\n", "mem.tsv", TagScheme::Bio));
        assert!(m.contains("mem.tsv: line 2: empty token"), "{m}");
        let m = message(parse_token_tag("a\tO\nb\tI-\n", "mem.tsv", TagScheme::Bio));
        assert!(m.contains("mem.tsv: line 2: malformed tag \"I-\""), "{m}");
        let m = message(parse_token_tag(
            "a\tO\nno tab here\n",
            "mem.tsv",
            TagScheme::Bio,
        ));
        assert!(
            m.contains("mem.tsv: line 2: expected token<TAB>tag, found 1"),
            "{m}"
        );
    }

    #[test]
    fn mit_splits_on_the_last_separator() {
        let parsed = parse_mit("new york\tB-LOC\nsushi  bar O \n", "mem").unwrap();
        assert_eq!(parsed.sentences[0].tokens, ["new york", "sushi  bar"]);
        assert_eq!(parsed.sentences[0].tags, ["B-LOC", "O"]);
    }

    #[test]
    fn mit_bad_tag_names_source_and_line() {
        let m = message(parse_mit("a O\nb Z-Actor\n", "mem.txt"));
        assert!(
            m.contains("mem.txt: line 2: malformed tag \"Z-Actor\""),
            "{m}"
        );
    }

    #[test]
    fn conll_iob1_input_becomes_iob2() {
        let parsed = parse_conll2003("EU NNP I-NP I-ORG\nrejects VBZ I-VP O\n", "mem").unwrap();
        assert_eq!(parsed.sentences[0].tags, ["B-ORG", "O"]);
        assert_eq!(parsed.repairs, 1);
    }

    #[test]
    fn conll_bad_tag_and_column_count_name_source_and_line() {
        let m = message(parse_conll2003(
            "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-\n",
            "mem.txt",
        ));
        assert!(m.contains("mem.txt: line 3: malformed tag \"B-\""), "{m}");
        let m = message(parse_conll2003("EU NNP B-NP B-ORG\nx NN O\n", "mem.txt"));
        assert!(
            m.contains("mem.txt: line 2: expected 4 space-separated columns"),
            "{m}"
        );
        assert!(m.ends_with("found 3"), "{m}");
    }
}
