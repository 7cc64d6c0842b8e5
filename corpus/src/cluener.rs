//! CLUENER2020: JSON lines with character spans (inclusive end), one token per character.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{input_error, json_error, numbered_lines, read_text, Corpus, Sentence};
use crate::Result;

/// What to do when two labelled spans of one record share a character (nested entities, which
/// BIO cannot represent; CLUENER train line 1507 has a book title containing two companies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overlaps {
    /// Fail with an error naming the line and both spans.
    Error,
    /// Keep the longest spans: take spans from longest to shortest (ties: earlier start first,
    /// then type name) and drop any that shares a character with one already kept. Every
    /// dropped span counts in [`Corpus::repairs`].
    KeepLongest,
}

type Labels = BTreeMap<String, BTreeMap<String, Vec<(i64, i64)>>>;

#[derive(Deserialize)]
struct Record {
    text: String,
    #[serde(default)]
    label: Option<Labels>,
}

#[derive(Deserialize)]
struct Probe {
    text: Option<serde::de::IgnoredAny>,
}

/// True when `line` is a JSON object with a `"text"` member.
pub(crate) fn looks_like_record(line: &str) -> bool {
    matches!(
        serde_json::from_str::<Probe>(line),
        Ok(Probe { text: Some(_) })
    )
}

struct Span<'a> {
    start: usize,
    end: usize,
    ty: &'a str,
}

impl Span<'_> {
    fn describe(&self) -> String {
        format!("[{}, {}] ({})", self.start, self.end, self.ty)
    }
}

/// Reads a CLUENER2020 JSON-lines file: one object per non-blank line,
/// `{"text": "…", "label": {"TYPE": {"MENTION": [[start, end], …]}}}`, where `start` and `end`
/// are inclusive character (not byte) indices into `text`.
///
/// Each character of `text`, whitespace included, becomes one token, so token `i` is character
/// `i`; [`Sentence::text`] holds the original text. A span becomes `B-TYPE I-TYPE…`. A record
/// without `label` (the unlabelled `test.json`, whose `id` member is ignored) gives all-`O`
/// tags. Errors name the line: invalid JSON, a span outside the text or with start after end,
/// a span whose characters differ from its mention, an empty type, and (with
/// [`Overlaps::Error`]) overlapping spans. A span listed twice under one type is kept once.
pub fn read_cluener(path: &Path, overlaps: Overlaps) -> Result<Corpus> {
    parse_cluener(&read_text(path)?, &path.display().to_string(), overlaps)
}

/// [`read_cluener`] on the text of a file; `source` names it in errors and in [`Corpus::name`].
pub fn parse_cluener(text: &str, source: &str, overlaps: Overlaps) -> Result<Corpus> {
    let mut sentences = Vec::new();
    let mut repairs = 0;
    for (line_no, line) in numbered_lines(text) {
        if line.trim_ascii().is_empty() {
            continue;
        }
        let record: Record =
            serde_json::from_str(line).map_err(|e| json_error(source, line_no, e.column(), &e))?;
        let (sentence, dropped) =
            sentence_of(&record, overlaps).map_err(|m| input_error(source, line_no, m))?;
        repairs += dropped;
        sentences.push(sentence);
    }
    Ok(Corpus::new(source, sentences, repairs))
}

/// The sentence of one record and the number of spans dropped as overlapping.
fn sentence_of(record: &Record, overlaps: Overlaps) -> Result<(Sentence, usize), String> {
    let text = &record.text;
    let mut bounds: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    let chars = bounds.len();
    bounds.push(text.len());

    let mut spans = Vec::new();
    for (ty, mentions) in record.label.iter().flatten() {
        if ty.is_empty() || ty.chars().any(char::is_whitespace) {
            return Err(format!("entity type {ty:?} is empty or has spaces"));
        }
        for (mention, ranges) in mentions {
            for &(start, end) in ranges {
                let span = match (usize::try_from(start), usize::try_from(end)) {
                    (Ok(s), Ok(e)) if s <= e && e < chars => Span {
                        start: s,
                        end: e,
                        ty,
                    },
                    _ => {
                        return Err(format!(
                            "span [{start}, {end}] of {ty} {mention:?} is not within the {chars} \
                             characters of the text (or starts after it ends)"
                        ))
                    }
                };
                let covered = &text[bounds[span.start]..bounds[span.end + 1]];
                if covered != mention {
                    return Err(format!(
                        "span [{start}, {end}] of {ty} covers {covered:?}, not the mention {mention:?}"
                    ));
                }
                spans.push(span);
            }
        }
    }
    spans.sort_by(|a, b| (a.start, a.end, a.ty).cmp(&(b.start, b.end, b.ty)));
    spans.dedup_by(|b, a| (a.start, a.end, a.ty) == (b.start, b.end, b.ty));

    let mut dropped = 0;
    match overlaps {
        Overlaps::Error => {
            for pair in spans.windows(2) {
                if pair[1].start <= pair[0].end {
                    return Err(format!(
                        "spans {} and {} overlap; BIO cannot represent nested entities",
                        pair[0].describe(),
                        pair[1].describe()
                    ));
                }
            }
        }
        Overlaps::KeepLongest => {
            spans.sort_by(|a, b| {
                (b.end - b.start)
                    .cmp(&(a.end - a.start))
                    .then((a.start, a.ty).cmp(&(b.start, b.ty)))
            });
            let mut taken = vec![false; chars];
            spans.retain(|span| {
                let free = !taken[span.start..=span.end].contains(&true);
                if free {
                    taken[span.start..=span.end].fill(true);
                } else {
                    dropped += 1;
                }
                free
            });
        }
    }

    let mut tags = vec!["O".to_string(); chars];
    for span in &spans {
        tags[span.start] = format!("B-{}", span.ty);
        for tag in &mut tags[span.start + 1..=span.end] {
            *tag = format!("I-{}", span.ty);
        }
    }
    let tokens = text.chars().map(String::from).collect();
    Ok((
        Sentence {
            tokens,
            tags,
            text: Some(text.clone()),
        },
        dropped,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{fixture, input_error_message as message};

    #[test]
    fn char_tokens_and_inclusive_spans() {
        let corpus = read_cluener(&fixture("cluener/dev.json"), Overlaps::Error).unwrap();
        assert_eq!(corpus.sentences.len(), 3);
        let s = &corpus.sentences[0];
        let text = s.text.as_deref().unwrap();
        assert_eq!(s.tokens.len(), text.chars().count());
        assert_eq!(s.tokens.concat(), text);
        assert_eq!(corpus.types, ["address", "game", "name", "organization"]);
        assert_eq!(corpus.repairs, 0);
    }

    #[test]
    fn span_end_is_inclusive() {
        let line = r#"{"text": "浙商银行企业信贷部叶老桂博士", "label": {"name": {"叶老桂": [[9, 11]]}, "company": {"浙商银行": [[0, 3]]}}}"#;
        let corpus = parse_cluener(line, "mem.json", Overlaps::Error).unwrap();
        let tags = &corpus.sentences[0].tags;
        assert_eq!(
            tags[..5],
            ["B-company", "I-company", "I-company", "I-company", "O"]
        );
        assert_eq!(tags[8..13], ["O", "B-name", "I-name", "I-name", "O"]);
        assert_eq!(corpus.entity_count(), 2);
    }

    #[test]
    fn unlabelled_records_are_all_outside() {
        let corpus = read_cluener(&fixture("cluener/test.json"), Overlaps::Error).unwrap();
        assert_eq!(corpus.sentences.len(), 2);
        assert!(corpus.types.is_empty());
        assert!(corpus
            .sentences
            .iter()
            .flat_map(|s| &s.tags)
            .all(|t| t == "O"));
    }

    #[test]
    fn overlapping_spans_fail_or_keep_the_longest() {
        let path = fixture("bad/cluener_overlap.json");
        let m = message(read_cluener(&path, Overlaps::Error));
        assert!(m.contains("cluener_overlap.json: line 2: spans [15, 34] (book) and [16, 19] (company) overlap"), "{m}");

        let corpus = read_cluener(&path, Overlaps::KeepLongest).unwrap();
        assert_eq!(corpus.repairs, 2);
        let tags = &corpus.sentences[1].tags;
        assert_eq!(tags[15], "B-book");
        assert!(tags[16..=34].iter().all(|t| t == "I-book"));
        assert_eq!(corpus.types, ["book", "name"]);
    }

    #[test]
    fn invalid_json_names_file_line_and_column() {
        let m = message(read_cluener(
            &fixture("bad/cluener_invalid.json"),
            Overlaps::Error,
        ));
        assert!(m.contains("cluener_invalid.json: line 2, column "), "{m}");
        assert!(m.contains("invalid JSON"), "{m}");
        let m = message(parse_cluener(
            "{\"label\": {}}\n",
            "mem.json",
            Overlaps::Error,
        ));
        assert!(
            m.contains(
                "mem.json: line 1, column 13: unexpected JSON content: missing field `text`"
            ),
            "{m}"
        );
    }

    #[test]
    fn bad_spans_name_the_line() {
        for (label, expected) in [
            (r#"{"x": {"abc": [[0, 3]]}}"#, "not within the 3 characters"),
            (r#"{"x": {"abc": [[2, 1]]}}"#, "not within"),
            (r#"{"x": {"abc": [[-1, 1]]}}"#, "not within"),
            (
                r#"{"x": {"ab": [[1, 2]]}}"#,
                "covers \"bc\", not the mention \"ab\"",
            ),
            (r#"{"": {"ab": [[0, 1]]}}"#, "entity type \"\" is empty"),
        ] {
            let text =
                format!("{{\"text\": \"abc\"}}\n{{\"text\": \"abc\", \"label\": {label}}}\n");
            let m = message(parse_cluener(&text, "mem.json", Overlaps::Error));
            assert!(
                m.starts_with("mem.json: line 2: ") && m.contains(expected),
                "{m}"
            );
        }
    }

    #[test]
    fn duplicate_spans_are_kept_once() {
        let line = r#"{"text": "abc", "label": {"x": {"ab": [[0, 1], [0, 1]]}}}"#;
        let corpus = parse_cluener(line, "mem", Overlaps::Error).unwrap();
        assert_eq!(corpus.sentences[0].tags, ["B-x", "I-x", "O"]);
    }

    #[test]
    fn probe_tells_records_from_other_json() {
        assert!(looks_like_record(r#"{"id": 0, "text": "x"}"#));
        assert!(!looks_like_record(r#"{"News": []}"#));
        assert!(!looks_like_record("{not json"));
    }
}
