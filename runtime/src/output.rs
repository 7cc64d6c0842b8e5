//! Writing tagged documents as JSON lines, CoNLL columns or inline markup.
//!
//! Writers receive one [`Segment`] at a time with its [`TaggedText`] and stream the output, so a
//! document that arrives in many segments is written without holding its text in memory.

use std::io::Write;
use std::ops::Range;

use crate::decode::Tag;
use crate::input::Segment;
use crate::pipeline::TaggedText;
use crate::{Error, Result};

/// Output format of `ner-edge predict`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per document: `{"text": ..., "entities": [{start, end, type, text, score}]}`,
    /// with `start`/`end` in chars (end exclusive) from the start of the document.
    Jsonl,
    /// One `word<TAB>tag` line per word (BIO tags), a blank line after each document.
    Conll,
    /// The document text with entities marked as `[text](TYPE)`, one document per line
    /// (a blank line after each document in paragraph mode).
    Inline,
}

impl std::str::FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "jsonl" | "json" => Ok(Format::Jsonl),
            "conll" => Ok(Format::Conll),
            "inline" => Ok(Format::Inline),
            other => Err(Error::Usage(format!(
                "unknown format {other:?} (expected jsonl, conll or inline)"
            ))),
        }
    }
}

/// Streams tagged segments to `out` in one [`Format`].
pub struct DocumentWriter<W: Write> {
    out: W,
    format: Format,
    type_names: Vec<String>,
    paragraphs: bool,
    pending_entities: Vec<u8>,
    entity_count: usize,
}

impl<W: Write> DocumentWriter<W> {
    /// `type_names[k]` is the output name of active type `k`; `paragraphs` separates documents
    /// by a blank line in inline format.
    pub fn new(out: W, format: Format, type_names: Vec<String>, paragraphs: bool) -> Self {
        DocumentWriter {
            out,
            format,
            type_names,
            paragraphs,
            pending_entities: Vec::new(),
            entity_count: 0,
        }
    }

    /// Writes one segment. Segments of a document must arrive in order.
    pub fn write_segment(&mut self, seg: &Segment, tagged: &TaggedText) -> Result<()> {
        self.write_inner(seg, tagged).map_err(|e| Error::Io {
            context: "write output".into(),
            source: e,
        })
    }

    /// Flushes buffered output.
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| Error::Io {
            context: "write output".into(),
            source: e,
        })
    }

    fn write_inner(&mut self, seg: &Segment, tagged: &TaggedText) -> std::io::Result<()> {
        match self.format {
            Format::Jsonl => self.write_jsonl(seg, tagged),
            Format::Conll => self.write_conll(seg, tagged),
            Format::Inline => self.write_inline(seg, tagged),
        }
    }

    fn write_jsonl(&mut self, seg: &Segment, tagged: &TaggedText) -> std::io::Result<()> {
        if seg.first {
            self.out.write_all(b"{\"text\":\"")?;
            self.pending_entities.clear();
            self.entity_count = 0;
        }
        let quoted = serde_json::to_string(&seg.text).map_err(std::io::Error::other)?;
        self.out
            .write_all(&quoted.as_bytes()[1..quoted.len() - 1])?;
        let mut chars = CharCounter::new(&seg.text);
        for e in &tagged.entities {
            let start = seg.char_offset + chars.chars_before(e.span.start);
            let end = seg.char_offset + chars.chars_before(e.span.end);
            let text = seg.text.get(e.span.clone()).unwrap_or("");
            let obj = EntityJson {
                start,
                end,
                kind: type_name(&self.type_names, e.type_index),
                text,
                score: round4(e.score),
            };
            if self.entity_count > 0 {
                self.pending_entities.push(b',');
            }
            serde_json::to_writer(&mut self.pending_entities, &obj)
                .map_err(std::io::Error::other)?;
            self.entity_count += 1;
        }
        if seg.last {
            self.out.write_all(b"\",\"entities\":[")?;
            self.out.write_all(&self.pending_entities)?;
            self.out.write_all(b"]}\n")?;
            self.pending_entities.clear();
            self.entity_count = 0;
        }
        Ok(())
    }

    fn write_conll(&mut self, seg: &Segment, tagged: &TaggedText) -> std::io::Result<()> {
        for (w, &label) in tagged.words.iter().zip(&tagged.labels) {
            let word = seg.text.get(w.clone()).unwrap_or("");
            let tag = match Tag::from_index(label) {
                Tag::O => "O".to_string(),
                Tag::B(k) => format!("B-{}", type_name(&self.type_names, k)),
                Tag::I(k) => format!("I-{}", type_name(&self.type_names, k)),
            };
            writeln!(self.out, "{word}\t{tag}")?;
        }
        if seg.last {
            writeln!(self.out)?;
        }
        Ok(())
    }

    fn write_inline(&mut self, seg: &Segment, tagged: &TaggedText) -> std::io::Result<()> {
        let mut at = 0;
        for e in &tagged.entities {
            let Range { start, end } = e.span.clone();
            if start < at || end > seg.text.len() {
                continue;
            }
            self.out.write_all(&seg.text.as_bytes()[at..start])?;
            let name = type_name(&self.type_names, e.type_index);
            write!(self.out, "[{}]({})", &seg.text[start..end], name)?;
            at = end;
        }
        self.out.write_all(&seg.text.as_bytes()[at..])?;
        if seg.last {
            self.out
                .write_all(if self.paragraphs { b"\n\n" } else { b"\n" })?;
        }
        Ok(())
    }
}

fn type_name(names: &[String], k: usize) -> &str {
    names.get(k).map(String::as_str).unwrap_or("?")
}

#[derive(serde::Serialize)]
struct EntityJson<'a> {
    start: usize,
    end: usize,
    #[serde(rename = "type")]
    kind: &'a str,
    text: &'a str,
    score: f64,
}

fn round4(x: f32) -> f64 {
    (f64::from(x) * 1e4).round() / 1e4
}

/// Converts increasing byte offsets of one string into char (code point) offsets in amortised
/// O(1); the JSONL writer's offsets, and Python's `str` indices.
pub struct CharCounter<'a> {
    text: &'a str,
    byte: usize,
    chars: usize,
}

impl<'a> CharCounter<'a> {
    /// A counter at the start of `text`.
    pub fn new(text: &'a str) -> Self {
        CharCounter {
            text,
            byte: 0,
            chars: 0,
        }
    }

    /// Chars before byte `byte` (a char boundary, clamped to the text's length); `byte` may go
    /// backwards, which recounts from the start.
    pub fn chars_before(&mut self, byte: usize) -> usize {
        if byte < self.byte {
            self.byte = 0;
            self.chars = 0;
        }
        let end = byte.min(self.text.len());
        self.chars += self
            .text
            .get(self.byte..end)
            .map_or(0, |s| s.chars().count());
        self.byte = end;
        self.chars
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::TaggedEntity;

    fn seg(text: &str, first: bool, last: bool, char_offset: usize) -> Segment {
        Segment {
            doc: 0,
            line: 1,
            char_offset,
            text: text.to_string(),
            first,
            last,
            context: None,
        }
    }

    fn tagged_tim_cook() -> TaggedText {
        TaggedText {
            words: vec![0..3, 4..8, 9..15, 16..20],
            labels: vec![1, 2, 0, 0],
            entities: vec![TaggedEntity {
                span: 0..8,
                type_index: 0,
                score: 0.87654,
            }],
            windows: 1,
            context_opening: None,
        }
    }

    fn render(format: Format, segs: &[(Segment, TaggedText)]) -> String {
        let mut buf = Vec::new();
        let mut w = DocumentWriter::new(&mut buf, format, vec!["PER".into()], false);
        for (s, t) in segs {
            w.write_segment(s, t).unwrap();
        }
        w.flush().unwrap();
        drop(w);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn jsonl_has_char_offsets_and_escapes_text() {
        let text = "Tim Cook visits \"Köln\"";
        let t = TaggedText {
            words: vec![],
            labels: vec![],
            ..tagged_tim_cook()
        };
        let out = render(Format::Jsonl, &[(seg(text, true, true, 0), t)]);
        let v: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
        assert_eq!(v["text"], text);
        assert_eq!(v["entities"][0]["start"], 0);
        assert_eq!(v["entities"][0]["end"], 8);
        assert_eq!(v["entities"][0]["type"], "PER");
        assert_eq!(v["entities"][0]["text"], "Tim Cook");
        assert_eq!(v["entities"][0]["score"], 0.8765);
    }

    #[test]
    fn jsonl_joins_segments_of_one_document() {
        let a = seg("ÄÄ ", true, false, 0);
        let b = seg("Tim Cook", false, true, 3);
        let tb = TaggedText {
            words: vec![0..3, 4..8],
            labels: vec![1, 2],
            entities: vec![TaggedEntity {
                span: 0..8,
                type_index: 0,
                score: 0.5,
            }],
            windows: 1,
            context_opening: None,
        };
        let ta = TaggedText {
            words: std::iter::once(0..4).collect(),
            labels: vec![0],
            entities: vec![],
            windows: 1,
            context_opening: None,
        };
        let out = render(Format::Jsonl, &[(a, ta), (b, tb)]);
        assert_eq!(out.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
        assert_eq!(v["text"], "ÄÄ Tim Cook");
        assert_eq!(v["entities"][0]["start"], 3);
        assert_eq!(v["entities"][0]["end"], 11);
    }

    #[test]
    fn conll_and_inline() {
        let text = "Tim Cook visits Rome";
        let out = render(
            Format::Conll,
            &[(seg(text, true, true, 0), tagged_tim_cook())],
        );
        assert_eq!(out, "Tim\tB-PER\nCook\tI-PER\nvisits\tO\nRome\tO\n\n");
        let out = render(
            Format::Inline,
            &[(seg(text, true, true, 0), tagged_tim_cook())],
        );
        assert_eq!(out, "[Tim Cook](PER) visits Rome\n");
    }
}
