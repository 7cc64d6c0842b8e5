//! Reading a support set for `ner-edge adapt`: labelled sentences as text plus entity spans.
//!
//! Four layouts, all reduced to [`SupportSentence`] (text and byte spans):
//!
//! | format | layout |
//! |---|---|
//! | `conll` | `token POS chunk NER` (CoNLL-2003), blank-line-separated sentences |
//! | `tsv` | `token<TAB>tag`, or `token tag` split on the last space, blank-line-separated |
//! | `jsonl` | one object per line: `{"text", "entities": [{"start", "end", "type"}]}` (chars, end exclusive, as `predict` writes), `{"text", "label": {TYPE: {MENTION: [[s, e]]}}}` (CLUENER, inclusive), or `{"tokens": [..], "tags": [..]}` |
//! | `inline` | one sentence per line with `[mention](TYPE)` markup |
//!
//! Tags must be BIO (`O`, `B-X`, `I-X`); a stray `I-X` is read as `B-X` and counted in
//! [`SupportSet::repairs`]. Token sentences become text by joining the tokens with one space.
//! Every error is an [`Error::Input`] of the form `FILE: line N: what is wrong`.

use std::ops::Range;
use std::path::Path;

use serde_json::Value;

use super::bio::{normalize_tags, spans, Scheme, TagScheme};
use super::columns::{
    decode_utf8, input_error as line_error, is_docstart, numbered_lines as lines, parse_conll2003,
    parse_mit, parse_token_tag,
};
use crate::bundle::xxh64;
use crate::pack::valid_type_name;
use crate::{Error, Result};

/// Largest support file read by default (`ner-edge adapt --max-support-bytes`).
pub const DEFAULT_MAX_SUPPORT_BYTES: u64 = 64 << 20;

/// Layout of a support file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SupportFormat {
    /// Detected from the first non-blank line (see [`detect_format`]).
    Auto,
    /// `token POS chunk NER`, blank-line-separated sentences.
    Conll,
    /// `token<TAB>tag` or `token tag`, blank-line-separated sentences.
    Tsv,
    /// One JSON object per line (char spans, CLUENER labels, or tokens and tags).
    Jsonl,
    /// One sentence per line with `[mention](TYPE)` markup.
    Inline,
}

impl std::str::FromStr for SupportFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(SupportFormat::Auto),
            "conll" => Ok(SupportFormat::Conll),
            "tsv" | "bio" => Ok(SupportFormat::Tsv),
            "jsonl" | "json" => Ok(SupportFormat::Jsonl),
            "inline" => Ok(SupportFormat::Inline),
            other => Err(Error::Usage(format!(
                "unknown support format {other:?} (expected auto, conll, tsv, jsonl or inline)"
            ))),
        }
    }
}

/// One labelled mention.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SupportEntity {
    /// Byte range in [`SupportSentence::text`], on char boundaries, non-empty.
    pub span: Range<usize>,
    /// The entity type.
    pub type_name: String,
}

/// One support sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SupportSentence {
    /// 1-based line of the file where the sentence starts.
    pub line: usize,
    /// The sentence text (token sentences joined with one space).
    pub text: String,
    /// Non-overlapping mentions in text order.
    pub entities: Vec<SupportEntity>,
}

/// A parsed support file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SupportSet {
    /// The file as named in messages.
    pub source: String,
    /// The sentences in file order.
    pub sentences: Vec<SupportSentence>,
    /// Stray `I-X` tags read as `B-X`.
    pub repairs: usize,
    /// XXH64 (seed 0) of the file's bytes, 16 hex digits.
    pub xxh64: String,
}

/// Reads the support file at `path`. Files over `max_bytes` are refused before reading, files
/// that are not UTF-8 with the line of the first bad byte.
pub fn read_support(path: &Path, format: SupportFormat, max_bytes: u64) -> Result<SupportSet> {
    let source = path.display().to_string();
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io("read support file", path, e))?
        .len();
    if len > max_bytes {
        return Err(Error::Input(format!(
            "{source}: {len} bytes is more than the {max_bytes}-byte limit for a support set; \
             split it or raise --max-support-bytes"
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io("read support file", path, e))?;
    let text = decode_utf8(bytes, &source)?;
    parse_support(&text, &source, format)
}

/// [`read_support`] on the text of a file; `source` names it in messages.
pub fn parse_support(text: &str, source: &str, format: SupportFormat) -> Result<SupportSet> {
    let body = text.strip_prefix('\u{feff}').unwrap_or(text);
    let format = match format {
        SupportFormat::Auto => detect_format(body),
        f => f,
    };
    let (sentences, repairs) = match format {
        SupportFormat::Conll | SupportFormat::Tsv => parse_columns(body, source, format)?,
        SupportFormat::Jsonl => (parse_jsonl(body, source)?, 0),
        SupportFormat::Inline | SupportFormat::Auto => (parse_inline(body, source)?, 0),
    };
    Ok(SupportSet {
        source: source.to_string(),
        sentences,
        repairs,
        xxh64: format!("{:016x}", xxh64(text.as_bytes(), 0)),
    })
}

/// The format of `text` from its first non-blank line that is not `-DOCSTART-`: `{` → jsonl;
/// a TAB → tsv; `[…](…)` markup → inline; 4 space-separated fields → conll; 2 fields whose
/// second is `O` or starts with `B-`/`I-` → tsv (space-separated); anything else → inline.
pub fn detect_format(text: &str) -> SupportFormat {
    let Some(first) = lines(text)
        .map(|(_, l)| l)
        .find(|l| !l.trim().is_empty() && !is_docstart(l))
    else {
        return SupportFormat::Inline;
    };
    let fields: Vec<&str> = first.split_ascii_whitespace().collect();
    if first.trim_start().starts_with('{') {
        SupportFormat::Jsonl
    } else if first.contains('\t') {
        SupportFormat::Tsv
    } else if first.contains("](") {
        SupportFormat::Inline
    } else if fields.len() == 4 {
        SupportFormat::Conll
    } else if fields.len() == 2 && is_bio_tag(fields[1]) {
        SupportFormat::Tsv
    } else {
        SupportFormat::Inline
    }
}

fn is_bio_tag(t: &str) -> bool {
    t == "O" || t.starts_with("B-") || t.starts_with("I-")
}

/// Token-per-line formats through the column parsers of [`super::columns`] (which check the
/// tags and name the line of a bad one), then joined into text.
fn parse_columns(
    text: &str,
    source: &str,
    format: SupportFormat,
) -> Result<(Vec<SupportSentence>, usize)> {
    let tab = text.lines().any(|l| l.contains('\t'));
    let parsed = match format {
        SupportFormat::Conll => parse_conll2003(text, source)?,
        _ if tab => parse_token_tag(text, source, TagScheme::Bio)?,
        _ => parse_mit(text, source)?,
    };
    let mut out = Vec::with_capacity(parsed.sentences.len());
    for (sentence, &line) in parsed.sentences.iter().zip(&parsed.starts) {
        let (text, entities) = joined_with_entities(&sentence.tokens, &sentence.tags)
            .map_err(|e| line_error(source, line, e))?;
        out.push(SupportSentence {
            line,
            text,
            entities,
        });
    }
    Ok((out, parsed.repairs))
}

/// The text of a token sentence (the tokens joined with one space) and its mentions as byte
/// spans, from `tags` already normalised to BIO ([`spans`] chunks them).
fn joined_with_entities<T: AsRef<str>>(
    tokens: &[T],
    tags: &[String],
) -> Result<(String, Vec<SupportEntity>), String> {
    let mut text = String::new();
    let mut ranges = Vec::with_capacity(tokens.len());
    for token in tokens {
        if !text.is_empty() {
            text.push(' ');
        }
        let start = text.len();
        text.push_str(token.as_ref());
        ranges.push(start..text.len());
    }
    let entities = spans(tags, Scheme::Bio)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter_map(|s| {
            let first = ranges.get(s.start)?;
            let last = ranges.get(s.end.checked_sub(1)?)?;
            Some(SupportEntity {
                span: first.start..last.end,
                type_name: s.kind,
            })
        })
        .collect();
    Ok((text, entities))
}

/// Byte offset of every char boundary of `text`, plus `text.len()`.
fn char_bounds(text: &str) -> Vec<usize> {
    let mut b: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    b.push(text.len());
    b
}

fn parse_jsonl(text: &str, source: &str) -> Result<Vec<SupportSentence>> {
    let mut out = Vec::new();
    for (n, line) in lines(text) {
        if line.trim().is_empty() {
            continue;
        }
        let err = |m: String| line_error(source, n, m);
        let value: Value = serde_json::from_str(line).map_err(|e| {
            line_error(
                source,
                n,
                format!("column {}: invalid JSON: {e}", e.column()),
            )
        })?;
        let Some(obj) = value.as_object() else {
            return Err(err("expected a JSON object".into()));
        };
        let sentence = if let Some(tokens) = obj.get("tokens") {
            jsonl_tokens(tokens, obj.get("tags")).map_err(err)?
        } else {
            let Some(text) = obj.get("text").and_then(Value::as_str) else {
                return Err(err(
                    "expected a \"text\" string (with \"entities\" or \"label\") or \"tokens\" \
                     and \"tags\" arrays"
                        .into(),
                ));
            };
            let bounds = char_bounds(text);
            let mut entities = Vec::new();
            if let Some(list) = obj.get("entities") {
                jsonl_entities(list, text, &bounds, &mut entities).map_err(err)?;
            }
            if let Some(label) = obj.get("label") {
                jsonl_cluener(label, text, &bounds, &mut entities).map_err(err)?;
            }
            SupportSentence {
                line: n,
                text: text.to_string(),
                entities,
            }
        };
        let mut sentence = sentence;
        sentence.line = n;
        check_entities(&mut sentence.entities, &sentence.text)
            .map_err(|m| line_error(source, n, m))?;
        out.push(sentence);
    }
    Ok(out)
}

fn check_type(ty: &str) -> Result<(), String> {
    if valid_type_name(ty) {
        Ok(())
    } else {
        Err(format!(
            "entity type {ty:?} is empty or has whitespace or control characters"
        ))
    }
}

/// Char span `[start, end)` of `text` as bytes, or a message.
fn char_span(bounds: &[usize], start: i64, end: i64, what: &str) -> Result<Range<usize>, String> {
    let chars = bounds.len() - 1;
    match (usize::try_from(start), usize::try_from(end)) {
        (Ok(s), Ok(e)) if s < e && e <= chars => Ok(bounds[s]..bounds[e]),
        _ => Err(format!(
            "{what} [{start}, {end}) is not a non-empty range within the {chars} characters of \
             the text"
        )),
    }
}

fn jsonl_entities(
    list: &Value,
    text: &str,
    bounds: &[usize],
    out: &mut Vec<SupportEntity>,
) -> Result<(), String> {
    let Some(list) = list.as_array() else {
        return Err("\"entities\" must be an array".into());
    };
    for (i, e) in list.iter().enumerate() {
        let start = e.get("start").and_then(Value::as_i64);
        let end = e.get("end").and_then(Value::as_i64);
        let ty = e.get("type").and_then(Value::as_str);
        let (Some(start), Some(end), Some(ty)) = (start, end, ty) else {
            return Err(format!(
                "entities[{i}] needs integer \"start\" and \"end\" (chars, end exclusive) and a \
                 \"type\" string"
            ));
        };
        check_type(ty)?;
        let span = char_span(bounds, start, end, &format!("entities[{i}]"))?;
        if let Some(mention) = e.get("text").and_then(Value::as_str) {
            if &text[span.clone()] != mention {
                return Err(format!(
                    "entities[{i}] [{start}, {end}) covers {:?}, not its \"text\" {mention:?}",
                    &text[span]
                ));
            }
        }
        out.push(SupportEntity {
            span,
            type_name: ty.to_string(),
        });
    }
    Ok(())
}

fn jsonl_cluener(
    label: &Value,
    text: &str,
    bounds: &[usize],
    out: &mut Vec<SupportEntity>,
) -> Result<(), String> {
    let Some(types) = label.as_object() else {
        return Err("\"label\" must be an object {TYPE: {MENTION: [[start, end], ...]}}".into());
    };
    for (ty, mentions) in types {
        check_type(ty)?;
        let Some(mentions) = mentions.as_object() else {
            return Err(format!("label {ty:?} must map mentions to span lists"));
        };
        for (mention, ranges) in mentions {
            let ranges = ranges.as_array().map(Vec::as_slice).unwrap_or(&[]);
            if ranges.is_empty() {
                return Err(format!(
                    "label {ty:?} mention {mention:?} has no [start, end] span"
                ));
            }
            for r in ranges {
                let pair = r.as_array().map(Vec::as_slice).unwrap_or(&[]);
                let (Some(s), Some(e)) = (
                    pair.first().and_then(Value::as_i64),
                    pair.get(1).and_then(Value::as_i64),
                ) else {
                    return Err(format!(
                        "label {ty:?} mention {mention:?}: spans are [start, end] integer pairs"
                    ));
                };
                let span = char_span(
                    bounds,
                    s,
                    e.saturating_add(1),
                    &format!("span [{s}, {e}] of {ty}"),
                )?;
                if &text[span.clone()] != mention {
                    return Err(format!(
                        "span [{s}, {e}] of {ty} covers {:?}, not the mention {mention:?}",
                        &text[span]
                    ));
                }
                out.push(SupportEntity {
                    span,
                    type_name: ty.clone(),
                });
            }
        }
    }
    Ok(())
}

fn jsonl_tokens(tokens: &Value, tags: Option<&Value>) -> Result<SupportSentence, String> {
    let strings = |v: &Value, what: &str| -> Result<Vec<String>, String> {
        v.as_array()
            .and_then(|a| a.iter().map(|x| x.as_str().map(str::to_string)).collect())
            .ok_or_else(|| format!("\"{what}\" must be an array of strings"))
    };
    let tokens = strings(tokens, "tokens")?;
    let tags = strings(tags.ok_or("\"tokens\" needs a \"tags\" array")?, "tags")?;
    if tokens.len() != tags.len() {
        return Err(format!(
            "{} tokens but {} tags: every token needs exactly one tag",
            tokens.len(),
            tags.len()
        ));
    }
    if let Some(i) = tokens.iter().position(|t| t.trim().is_empty()) {
        return Err(format!("token {} is empty or whitespace", i + 1));
    }
    let normalized = normalize_tags(&tags, TagScheme::Bio).map_err(|e| e.to_string())?;
    let (text, entities) = joined_with_entities(&tokens, &normalized.tags)?;
    Ok(SupportSentence {
        line: 0,
        text,
        entities,
    })
}

/// Sorts `entities` and refuses overlapping or whitespace-only mentions.
fn check_entities(entities: &mut [SupportEntity], text: &str) -> Result<(), String> {
    entities.sort_by(|a, b| {
        (a.span.start, a.span.end, &a.type_name).cmp(&(b.span.start, b.span.end, &b.type_name))
    });
    for e in entities.iter() {
        if text[e.span.clone()].trim().is_empty() {
            return Err(format!(
                "mention {:?} of {} is only whitespace",
                &text[e.span.clone()],
                e.type_name
            ));
        }
    }
    for pair in entities.windows(2) {
        if pair[1].span.start < pair[0].span.end {
            return Err(format!(
                "mentions {:?} ({}) and {:?} ({}) overlap; a support sentence needs one type per \
                 token",
                &text[pair[0].span.clone()],
                pair[0].type_name,
                &text[pair[1].span.clone()],
                pair[1].type_name
            ));
        }
    }
    Ok(())
}

fn parse_inline(text: &str, source: &str) -> Result<Vec<SupportSentence>> {
    let mut out = Vec::new();
    for (n, line) in lines(text) {
        if line.trim().is_empty() {
            continue;
        }
        let sentence = parse_markup(line).map_err(|m| line_error(source, n, m))?;
        out.push(SupportSentence {
            line: n,
            text: sentence.0,
            entities: sentence.1,
        });
    }
    Ok(out)
}

/// One line of inline markup: `[mention](TYPE)` marks an entity; a `[` that does not open
/// `[mention](TYPE)` (no `](` before the next `[`, `]` or end of line) is plain text.
fn parse_markup(line: &str) -> Result<(String, Vec<SupportEntity>), String> {
    let mut text = String::with_capacity(line.len());
    let mut entities = Vec::new();
    let mut rest = line;
    let mut col = 0usize;
    while let Some(open) = rest.find('[') {
        text.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find([']', '[']);
        let markup = close
            .filter(|&c| after[c..].starts_with("]("))
            .and_then(|c| after[c + 2..].find(')').map(|t| (c, t)));
        let Some((c, t)) = markup else {
            text.push('[');
            col += rest[..open].chars().count() + 1;
            rest = after;
            continue;
        };
        let mention = &after[..c];
        let ty = &after[c + 2..c + 2 + t];
        let at = col + rest[..open].chars().count() + 1;
        if mention.trim().is_empty() {
            return Err(format!("column {at}: empty mention in [{mention}]({ty})"));
        }
        if !valid_type_name(ty) {
            return Err(format!(
                "column {at}: type {ty:?} in [{mention}]({ty}) is empty or has whitespace"
            ));
        }
        let start = text.len();
        text.push_str(mention);
        entities.push(SupportEntity {
            span: start..text.len(),
            type_name: ty.to_string(),
        });
        let consumed = open + 1 + c + 2 + t + 1;
        col += rest[..consumed].chars().count();
        rest = &rest[consumed..];
    }
    text.push_str(rest);
    Ok((text, entities))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, f: SupportFormat) -> SupportSet {
        parse_support(text, "s.txt", f).unwrap()
    }

    fn mentions(s: &SupportSentence) -> Vec<(&str, &str)> {
        s.entities
            .iter()
            .map(|e| (&s.text[e.span.clone()], e.type_name.as_str()))
            .collect()
    }

    fn input_err(text: &str, f: SupportFormat) -> String {
        match parse_support(text, "s.txt", f) {
            Err(Error::Input(m)) => m,
            other => panic!("expected an input error, got {other:?}"),
        }
    }

    #[test]
    fn every_format_gives_the_same_sentence() {
        let want = ("aspirin reduced the fever", vec![("aspirin", "DRUG")]);
        for (text, f) in [
            ("aspirin\tB-DRUG\nreduced\tO\nthe\tO\nfever\tO\n", SupportFormat::Auto),
            ("aspirin B-DRUG\nreduced O\nthe O\nfever O\n", SupportFormat::Auto),
            (
                "-DOCSTART- -X- -X- O\n\naspirin NN B-NP B-DRUG\nreduced VB B-VP O\nthe DT B-NP O\nfever NN I-NP O\n",
                SupportFormat::Auto,
            ),
            (
                r#"{"text": "aspirin reduced the fever", "entities": [{"start": 0, "end": 7, "type": "DRUG"}]}"#,
                SupportFormat::Auto,
            ),
            (
                r#"{"text": "aspirin reduced the fever", "label": {"DRUG": {"aspirin": [[0, 6]]}}}"#,
                SupportFormat::Auto,
            ),
            (
                r#"{"tokens": ["aspirin", "reduced", "the", "fever"], "tags": ["B-DRUG", "O", "O", "O"]}"#,
                SupportFormat::Auto,
            ),
            ("[aspirin](DRUG) reduced the fever\n", SupportFormat::Auto),
        ] {
            let s = parse(text, f);
            assert_eq!(s.sentences.len(), 1, "{text}");
            assert_eq!(s.sentences[0].text, want.0, "{text}");
            assert_eq!(mentions(&s.sentences[0]), want.1, "{text}");
        }
    }

    #[test]
    fn sentences_remember_their_first_line() {
        let s = parse("a\tB-X\nb\tI-X\n\n\nc\tO\nd\tB-Y\n", SupportFormat::Tsv);
        assert_eq!(
            s.sentences.iter().map(|x| x.line).collect::<Vec<_>>(),
            [1, 5]
        );
        assert_eq!(mentions(&s.sentences[0]), [("a b", "X")]);
        let s = parse("\n[x y](T) z\n\nplain\n", SupportFormat::Inline);
        assert_eq!(
            s.sentences.iter().map(|x| x.line).collect::<Vec<_>>(),
            [2, 4]
        );
    }

    #[test]
    fn inline_markup_edge_cases() {
        let (t, e) = parse_markup("see [1] and [New York](LOC), [x](A)[y](B)").unwrap();
        assert_eq!(t, "see [1] and New York, xy");
        assert_eq!(e.len(), 3);
        assert_eq!(&t[e[0].span.clone()], "New York");
        let (t, e) = parse_markup("[a [b](T)").unwrap();
        assert_eq!(t, "[a b");
        assert_eq!(&t[e[0].span.clone()], "b");
        assert!(parse_markup("[x](two words)")
            .unwrap_err()
            .contains("column 1"));
        assert!(parse_markup("ok [ ](T)").unwrap_err().contains("column 4"));
    }

    #[test]
    fn bad_input_names_file_and_line() {
        let cases = [
            ("a\tB-X\nb\tX-Y\n", SupportFormat::Tsv, "s.txt: line 2:"),
            ("a\tB-X\n\nb\tPER\n", SupportFormat::Tsv, "s.txt: line 3:"),
            (
                "\n{\"tokens\": [\"a\", \"b\"], \"tags\": [\"O\"]}\n",
                SupportFormat::Jsonl,
                "s.txt: line 2: 2 tokens but 1 tags",
            ),
            (
                "{\"text\": \"ab\", \"entities\": [{\"start\": 0, \"end\": 5, \"type\": \"X\"}]}",
                SupportFormat::Jsonl,
                "s.txt: line 1: entities[0] [0, 5)",
            ),
            ("{\"text\": \"ab\"", SupportFormat::Jsonl, "s.txt: line 1: column"),
            (
                "{\"text\": \"abc\", \"entities\": [{\"start\": 0, \"end\": 2, \"type\": \"X\"}, {\"start\": 1, \"end\": 3, \"type\": \"Y\"}]}",
                SupportFormat::Jsonl,
                "overlap",
            ),
            ("ok\n[a](B C)\n", SupportFormat::Inline, "s.txt: line 2:"),
            ("a NN B-NP B-X\nb NN\n", SupportFormat::Conll, "s.txt: line 2:"),
        ];
        for (text, f, needle) in cases {
            let m = input_err(text, f);
            assert!(m.contains(needle), "{m:?} lacks {needle:?}");
        }
    }

    #[test]
    fn stray_inside_tags_are_repaired_and_counted() {
        let s = parse("a\tI-X\nb\tO\n", SupportFormat::Tsv);
        assert_eq!(s.repairs, 1);
        assert_eq!(mentions(&s.sentences[0]), [("a", "X")]);
    }

    #[test]
    fn detection() {
        assert_eq!(detect_format("{}"), SupportFormat::Jsonl);
        assert_eq!(detect_format("\n\na\tO"), SupportFormat::Tsv);
        assert_eq!(detect_format("a b c d"), SupportFormat::Conll);
        assert_eq!(detect_format("a B-X"), SupportFormat::Tsv);
        assert_eq!(detect_format("just some text"), SupportFormat::Inline);
        assert_eq!(detect_format("one two"), SupportFormat::Inline);
        assert_eq!(detect_format("[a](B) c d e"), SupportFormat::Inline);
    }
}
