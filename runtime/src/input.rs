//! Reading documents from a file or stdin in bounded pieces.
//!
//! A document is one line (default), a blank-line-separated paragraph, or one record of a
//! JSON-lines or `text<TAB>context` file, which may give each text a context (see
//! [`DocumentMode`]). Documents longer than the segment limit are delivered as several
//! [`Segment`]s cut at whitespace, so memory stays bounded by the limit however long a line is
//! (a record is read whole, up to [`MAX_RECORD_BYTES`]); nothing is dropped.

use std::io::BufRead;

use crate::{Error, Result};

/// How input text is split into documents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DocumentMode {
    /// Each line is a document (the line terminator is not part of it).
    Lines,
    /// Documents are separated by one or more blank lines; inner newlines are kept.
    Paragraphs,
    /// Each non-blank line is a JSON object `{"text": "...", "context": "..."}`: `text` is the
    /// document, the optional `context` (a string or null) its context; other fields are
    /// ignored and blank lines skipped.
    Jsonl,
    /// Each line is `text<TAB>context` (split at the first TAB; a line without a TAB has no
    /// context).
    TextContext,
}

/// A piece of one document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Zero-based index of the document this segment belongs to.
    pub doc: usize,
    /// One-based input line where this segment starts.
    pub line: usize,
    /// Offset of this segment's first char within its document, in chars.
    pub char_offset: usize,
    /// The text of the segment (valid UTF-8; with `lossy`, invalid bytes became U+FFFD).
    pub text: String,
    /// True for the first segment of a document.
    pub first: bool,
    /// True for the last segment of a document.
    pub last: bool,
    /// The document's context ([`DocumentMode::Jsonl`], [`DocumentMode::TextContext`]), the
    /// same for every segment of the document; `None` when it has none.
    pub context: Option<String>,
}

/// Streams [`Segment`]s from a reader.
pub struct SegmentReader<R> {
    reader: R,
    source: String,
    mode: DocumentMode,
    lossy: bool,
    max_segment_bytes: usize,
    line_no: usize,
    byte_pos: u64,
    doc: usize,
    pending: Vec<u8>,
    pending_line: usize,
    pending_line_byte: usize,
    doc_chars: usize,
    doc_open: bool,
    line_buf: Vec<u8>,
    line_partial: bool,
    eof: bool,
    out: std::collections::VecDeque<Segment>,
    /// Context of the record being emitted.
    context: Option<String>,
}

/// Largest line of a [`DocumentMode::Jsonl`] or [`DocumentMode::TextContext`] input, in bytes.
pub const MAX_RECORD_BYTES: usize = 64 << 20;

/// Default segment limit: long enough that cutting at whitespace almost never splits an entity.
pub const DEFAULT_MAX_SEGMENT_BYTES: usize = 64 * 1024;

/// A block ([`SegmentReader::next_block`]) stops taking segments once it holds this many bytes
/// (each segment counted with one byte more, for its line terminator).
pub const BLOCK_BYTES: usize = 256 * 1024;

/// A block ([`SegmentReader::next_block`]) holds at most this many segments.
pub const BLOCK_SEGMENTS: usize = 512;

impl<R: BufRead> SegmentReader<R> {
    /// `source` names the input in error messages (a path or `"<stdin>"`). Segments hold at
    /// most `max_segment_bytes` bytes (at least 64), cut at the last whitespace before the limit
    /// when there is one.
    pub fn new(
        reader: R,
        source: &str,
        mode: DocumentMode,
        lossy: bool,
        max_segment_bytes: usize,
    ) -> Self {
        SegmentReader {
            reader,
            source: source.to_string(),
            mode,
            lossy,
            max_segment_bytes: max_segment_bytes.max(64),
            line_no: 0,
            byte_pos: 0,
            doc: 0,
            pending: Vec::new(),
            pending_line: 1,
            pending_line_byte: 0,
            doc_chars: 0,
            doc_open: false,
            line_buf: Vec::new(),
            line_partial: false,
            eof: false,
            out: std::collections::VecDeque::new(),
            context: None,
        }
    }

    /// Reads at most `limit` bytes of the current line into `line_buf`. Returns
    /// `(bytes_read, ended_with_newline)`; `(0, false)` at end of input.
    fn read_line_part(&mut self, limit: usize) -> Result<(usize, bool)> {
        self.line_buf.clear();
        loop {
            let available = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::Io {
                        context: format!("read {} at byte {}", self.source, self.byte_pos),
                        source: e,
                    })
                }
            };
            if available.is_empty() {
                return Ok((self.line_buf.len(), false));
            }
            let room = limit - self.line_buf.len();
            let take = available.len().min(room);
            if let Some(nl) = available[..take].iter().position(|&b| b == b'\n') {
                self.line_buf.extend_from_slice(&available[..nl]);
                self.reader.consume(nl + 1);
                self.byte_pos += nl as u64 + 1;
                return Ok((self.line_buf.len() + 1, true));
            }
            self.line_buf.extend_from_slice(&available[..take]);
            self.reader.consume(take);
            self.byte_pos += take as u64;
            if self.line_buf.len() >= limit {
                return Ok((self.line_buf.len(), false));
            }
        }
    }

    /// Decodes segment bytes that start at byte `pending_line_byte` of line `pending_line`.
    fn decode(&self, bytes: Vec<u8>) -> Result<String> {
        match String::from_utf8(bytes) {
            Ok(s) => Ok(s),
            Err(e) if self.lossy => Ok(String::from_utf8_lossy(e.as_bytes()).into_owned()),
            Err(e) => {
                let bad = e.utf8_error().valid_up_to();
                let (line, byte) = advance_position(
                    self.pending_line,
                    self.pending_line_byte,
                    &e.as_bytes()[..bad],
                );
                Err(Error::Input(format!(
                    "{}: line {line}, byte {} of the line: invalid UTF-8 (use --lossy to replace invalid bytes)",
                    self.source,
                    byte + 1
                )))
            }
        }
    }

    /// Moves complete segments out of `pending`; with `flush` the rest becomes a segment too.
    fn emit(&mut self, flush: bool) -> Result<()> {
        while self.pending.len() > self.max_segment_bytes || (flush && !self.pending.is_empty()) {
            let cut = if self.pending.len() > self.max_segment_bytes {
                cut_point(&self.pending, self.max_segment_bytes)
            } else {
                self.pending.len()
            };
            let rest = self.pending.split_off(cut);
            let bytes = std::mem::replace(&mut self.pending, rest);
            let (next_line, next_byte) = if self.is_record() {
                (self.pending_line, 0)
            } else {
                advance_position(self.pending_line, self.pending_line_byte, &bytes)
            };
            let text = self.decode(bytes)?;
            let chars = text.chars().count();
            let last = flush && self.pending.is_empty();
            self.out.push_back(Segment {
                doc: self.doc,
                line: self.pending_line,
                char_offset: self.doc_chars,
                text,
                first: !self.doc_open,
                last,
                context: self.context.clone(),
            });
            self.pending_line = next_line;
            self.pending_line_byte = next_byte;
            self.doc_open = true;
            self.doc_chars += chars;
        }
        Ok(())
    }

    fn end_document(&mut self) -> Result<()> {
        if self.pending.is_empty() && self.doc_open {
            if let Some(seg) = self.out.back_mut() {
                seg.last = true;
            }
        } else if self.pending.is_empty() {
            self.out.push_back(Segment {
                doc: self.doc,
                line: self.pending_line,
                char_offset: 0,
                text: String::new(),
                first: true,
                last: true,
                context: self.context.clone(),
            });
        } else {
            self.emit(true)?;
        }
        self.doc += 1;
        self.doc_open = false;
        self.doc_chars = 0;
        Ok(())
    }

    fn is_record(&self) -> bool {
        matches!(self.mode, DocumentMode::Jsonl | DocumentMode::TextContext)
    }

    /// Reads one whole line as a record: its text becomes the next document, with its context.
    fn step_record(&mut self) -> Result<()> {
        let mut record = Vec::new();
        let mut any = false;
        loop {
            let (n, newline) = self.read_line_part(self.max_segment_bytes)?;
            if n == 0 && !newline {
                self.eof = true;
                break;
            }
            if !any {
                self.line_no += 1;
                any = true;
            }
            if record.len() + self.line_buf.len() > MAX_RECORD_BYTES {
                return Err(Error::Input(format!(
                    "{}: line {}: longer than {MAX_RECORD_BYTES} bytes",
                    self.source, self.line_no
                )));
            }
            record.extend_from_slice(&self.line_buf);
            if newline {
                break;
            }
        }
        if !any {
            return Ok(());
        }
        if record.last() == Some(&b'\r') {
            record.pop();
        }
        self.pending_line = self.line_no;
        self.pending_line_byte = 0;
        let (text, context) = match self.mode {
            DocumentMode::Jsonl => {
                if record.iter().all(|b| b.is_ascii_whitespace()) {
                    return Ok(());
                }
                let record = if self.lossy {
                    String::from_utf8_lossy(&record).into_owned().into_bytes()
                } else {
                    record
                };
                let doc: JsonDocument = serde_json::from_slice(&record).map_err(|e| {
                    Error::Input(format!(
                        "{}: line {}: not a JSON object with a \"text\" string and an optional \
                         \"context\" string: {e}",
                        self.source, self.line_no
                    ))
                })?;
                (doc.text, doc.context)
            }
            _ => {
                let line = self.decode(record)?;
                match line.split_once('\t') {
                    Some((text, context)) => (text.to_string(), Some(context.to_string())),
                    None => (line, None),
                }
            }
        };
        self.context = context.filter(|c| !c.trim().is_empty());
        self.pending = text.into_bytes();
        self.end_document()
    }

    fn step(&mut self) -> Result<()> {
        if self.is_record() {
            return self.step_record();
        }
        let limit = self.max_segment_bytes;
        let continuing = self.line_partial;
        let (n, newline) = self.read_line_part(limit)?;
        if n == 0 && !newline {
            self.eof = true;
            if self.doc_open || !self.pending.is_empty() {
                self.end_document()?;
            }
            return Ok(());
        }
        if !continuing {
            self.line_no += 1;
        }
        self.line_partial = !newline;
        let mut part = std::mem::take(&mut self.line_buf);
        if newline && part.last() == Some(&b'\r') {
            part.pop();
        }
        match self.mode {
            DocumentMode::Lines => {
                if !continuing && !self.doc_open && self.pending.is_empty() {
                    self.pending_line = self.line_no;
                    self.pending_line_byte = 0;
                }
                self.pending.extend_from_slice(&part);
                self.emit(false)?;
                if newline {
                    self.end_document()?;
                }
            }
            DocumentMode::Jsonl | DocumentMode::TextContext => {}
            DocumentMode::Paragraphs => {
                let blank = !continuing && newline && part.iter().all(|b| b.is_ascii_whitespace());
                if blank {
                    if self.doc_open || !self.pending.is_empty() {
                        self.end_document()?;
                    }
                } else {
                    if !self.doc_open && self.pending.is_empty() {
                        self.pending_line = self.line_no;
                        self.pending_line_byte = 0;
                    } else if !continuing && self.pending.is_empty() {
                        self.pending_line = self.line_no - 1;
                        self.pending_line_byte = usize::MAX;
                        self.pending.push(b'\n');
                    } else if !continuing {
                        self.pending.push(b'\n');
                    }
                    self.pending.extend_from_slice(&part);
                    self.emit(false)?;
                }
            }
        }
        self.line_buf = part;
        Ok(())
    }

    /// Next segment, `None` at end of input.
    pub fn next_segment(&mut self) -> Result<Option<Segment>> {
        while self.out.is_empty() && !self.eof {
            self.step()?;
        }
        Ok(self.out.pop_front())
    }

    /// Replaces the contents of `block` with the next segments, as many as `ner-edge predict`
    /// tags at once: segments are taken while the block holds fewer than [`BLOCK_BYTES`] bytes
    /// (segment text plus one) and fewer than [`BLOCK_SEGMENTS`] segments. Returns the bytes
    /// counted; `block` is empty at end of input.
    ///
    /// The encoder forms its batches from one block ([`crate::pipeline::Tagger::tag`]), and a
    /// score's last bits depend on the batch it was computed in, so tagging the same segments
    /// in the same blocks is what reproduces `ner-edge predict`'s output byte for byte.
    pub fn next_block(&mut self, block: &mut Vec<Segment>) -> Result<usize> {
        block.clear();
        let mut bytes = 0;
        while bytes < BLOCK_BYTES && block.len() < BLOCK_SEGMENTS {
            match self.next_segment()? {
                Some(s) => {
                    bytes += s.text.len() + 1;
                    block.push(s);
                }
                None => break,
            }
        }
        Ok(bytes)
    }
}

/// One line of a [`DocumentMode::Jsonl`] input.
#[derive(serde::Deserialize)]
struct JsonDocument {
    text: String,
    #[serde(default)]
    context: Option<String>,
}

/// Line and byte-in-line reached after reading `bytes` from (`line`, `byte`); a `\n` starts a
/// new line. `byte == usize::MAX` marks the position of a line's own terminator.
fn advance_position(line: usize, byte: usize, bytes: &[u8]) -> (usize, usize) {
    match bytes.iter().rposition(|&b| b == b'\n') {
        Some(nl) => {
            let newlines = bytes.iter().filter(|&&b| b == b'\n').count();
            (line + newlines, bytes.len() - nl - 1)
        }
        None => (line, byte.wrapping_add(bytes.len())),
    }
}

/// Byte index in `bytes[..=limit]` at which to cut: just after the last ASCII whitespace, else at
/// the last char boundary not after `limit`.
fn cut_point(bytes: &[u8], limit: usize) -> usize {
    let window = &bytes[..limit.min(bytes.len())];
    if let Some(ws) = window.iter().rposition(|b| b.is_ascii_whitespace()) {
        if ws > 0 {
            return ws + 1;
        }
    }
    let mut cut = window.len();
    while cut > 0 && (bytes.get(cut).is_some_and(|b| b & 0xC0 == 0x80)) {
        cut -= 1;
    }
    if cut == 0 {
        window.len()
    } else {
        cut
    }
}

impl<R: BufRead> Iterator for SegmentReader<R> {
    type Item = Result<Segment>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_segment().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(input: &[u8], mode: DocumentMode, limit: usize) -> Result<Vec<Segment>> {
        SegmentReader::new(input, "t.txt", mode, false, limit).collect()
    }

    fn docs(segs: &[Segment]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in segs {
            if s.first {
                out.push(String::new());
            }
            if let Some(d) = out.last_mut() {
                d.push_str(&s.text);
            }
        }
        out
    }

    #[test]
    fn lines_are_documents_and_empty_lines_are_kept() {
        let segs = read_all(b"alpha beta\n\ngamma\r\ndelta", DocumentMode::Lines, 1024).unwrap();
        assert_eq!(docs(&segs), vec!["alpha beta", "", "gamma", "delta"]);
        assert_eq!(
            segs.iter().map(|s| s.line).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert!(segs.iter().all(|s| s.first && s.last));
    }

    #[test]
    fn empty_input_gives_no_segment() {
        assert!(read_all(b"", DocumentMode::Lines, 1024).unwrap().is_empty());
        assert!(read_all(b"\n\n \n", DocumentMode::Paragraphs, 1024)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn paragraphs_join_lines() {
        let segs = read_all(b"a b\nc\n\n\nd\n", DocumentMode::Paragraphs, 1024).unwrap();
        assert_eq!(docs(&segs), vec!["a b\nc", "d"]);
        assert_eq!(segs[1].line, 5);
    }

    #[test]
    fn long_line_is_split_at_whitespace_without_loss() {
        let line: String = (0..500).map(|i| format!("w{i} ")).collect();
        let input = format!("{line}\nshort\n");
        let segs = read_all(input.as_bytes(), DocumentMode::Lines, 100).unwrap();
        let d = docs(&segs);
        assert_eq!(d, vec![line.clone(), "short".to_string()]);
        let first_doc: Vec<&Segment> = segs.iter().filter(|s| s.doc == 0).collect();
        assert!(first_doc.len() > 10);
        assert!(first_doc.iter().all(|s| s.text.len() <= 100));
        let mut expect = 0;
        for s in &first_doc {
            assert_eq!(s.char_offset, expect);
            expect += s.text.chars().count();
            assert!(s.text.ends_with(' ') || s.last);
        }
        assert!(first_doc[0].first && first_doc.last().unwrap().last);
    }

    #[test]
    fn split_never_cuts_inside_a_char() {
        let line = "é".repeat(300);
        let segs = read_all(line.as_bytes(), DocumentMode::Lines, 65).unwrap();
        assert_eq!(docs(&segs), vec![line]);
    }

    #[test]
    fn blocks_stop_at_the_segment_or_byte_limit_and_lose_nothing() {
        let read_blocks = |input: &[u8]| -> Vec<Vec<Segment>> {
            let mut reader = SegmentReader::new(
                input,
                "t",
                DocumentMode::Lines,
                false,
                DEFAULT_MAX_SEGMENT_BYTES,
            );
            let mut blocks = Vec::new();
            let mut block = Vec::new();
            while reader.next_block(&mut block).unwrap() > 0 {
                blocks.push(block.clone());
            }
            assert!(block.is_empty());
            blocks
        };
        // Short lines: whole blocks of BLOCK_SEGMENTS lines, then the rest.
        let short = "a b c\n".repeat(BLOCK_SEGMENTS * 2 + 3);
        let sizes: Vec<usize> = read_blocks(short.as_bytes()).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![BLOCK_SEGMENTS, BLOCK_SEGMENTS, 3]);
        // 1,000-byte lines: a block closes at the first segment that reaches BLOCK_BYTES.
        let line = format!("{}\n", "x".repeat(999));
        let long = line.repeat(600);
        let blocks = read_blocks(long.as_bytes());
        let per_block = BLOCK_BYTES.div_ceil(1000);
        assert_eq!(blocks[0].len(), per_block);
        assert_eq!(blocks.iter().map(Vec::len).sum::<usize>(), 600);
        assert_eq!(blocks[1][0].doc, per_block);
        assert!(read_blocks(b"").is_empty());
    }

    #[test]
    fn json_lines_give_text_and_context_and_skip_blank_lines() {
        let input = b"{\"text\": \"Tim Cook\\nspoke\", \"context\": \"Apple\", \"id\": 3}\r\n\n\
            {\"text\": \"\"}\n{\"text\": \"b\", \"context\": null}\n{\"text\": \"c\", \"context\": \" \"}";
        let segs = read_all(input, DocumentMode::Jsonl, 1024).unwrap();
        assert_eq!(docs(&segs), vec!["Tim Cook\nspoke", "", "b", "c"]);
        let contexts: Vec<Option<&str>> = segs.iter().map(|s| s.context.as_deref()).collect();
        assert_eq!(contexts, vec![Some("Apple"), None, None, None]);
        assert_eq!(
            segs.iter().map(|s| (s.doc, s.line)).collect::<Vec<_>>(),
            vec![(0, 1), (1, 3), (2, 4), (3, 5)]
        );
    }

    #[test]
    fn a_long_record_is_cut_into_segments_that_share_its_context() {
        let text: String = (0..300).map(|i| format!("w{i} ")).collect();
        let line = format!("{text}\tthe context\nnext\n");
        let segs = read_all(line.as_bytes(), DocumentMode::TextContext, 100).unwrap();
        assert_eq!(docs(&segs), vec![text.clone(), "next".to_string()]);
        let first: Vec<&Segment> = segs.iter().filter(|s| s.doc == 0).collect();
        assert!(first.len() > 5);
        assert!(first
            .iter()
            .all(|s| s.context.as_deref() == Some("the context") && s.line == 1));
        assert_eq!(segs.last().unwrap().context, None);
        assert_eq!(segs.last().unwrap().line, 2);
    }

    #[test]
    fn bad_records_name_the_line() {
        let msg = read_all(b"{\"text\": \"a\"}\n[1, 2]\n", DocumentMode::Jsonl, 1024)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("t.txt: line 2: not a JSON object"), "{msg}");
        let msg = read_all(b"{\"context\": \"a\"}\n", DocumentMode::Jsonl, 1024)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("line 1") && msg.contains("text"), "{msg}");
        let msg = read_all(b"ok\tfine\nbad\xff\tx\n", DocumentMode::TextContext, 1024)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("line 2") && msg.contains("UTF-8"), "{msg}");
    }

    #[test]
    fn invalid_utf8_names_line_and_byte() {
        let err = read_all(b"ok\nab\xffcd\n", DocumentMode::Lines, 1024).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("t.txt") && msg.contains("line 2") && msg.contains("byte 3"),
            "{msg}"
        );
        let mut long = b"x ".repeat(100);
        long.extend_from_slice(b"\xfe tail\n");
        let msg = read_all(&long, DocumentMode::Lines, 64)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("line 1, byte 201 "), "{msg}");
        let msg = read_all(b"a\nb\xc3\n", DocumentMode::Paragraphs, 1024)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("line 2, byte 2 "), "{msg}");
        let segs: Vec<Segment> =
            SegmentReader::new(&b"ab\xffcd\n"[..], "t", DocumentMode::Lines, true, 1024)
                .collect::<Result<_>>()
                .unwrap();
        assert_eq!(segs[0].text, "ab\u{fffd}cd");
    }
}
