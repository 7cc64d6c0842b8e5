//! BERT WordPiece: basic tokenisation (cleaning, CJK and punctuation split, lower-casing and
//! accent stripping) then greedy longest-match pieces; see the module docs of
//! [`crate::tokenizer`] for the reference behaviour it reproduces.

use super::normalize::{self, ASCII_CLASS, A_PUNCT, A_REMOVED, A_SPACE};
use super::vocab::Vocab;
use super::{Encoding, Shape, MASK_TOKEN};
use crate::bundle::TokenizerMeta;
use crate::{Error, Result};

/// A BERT WordPiece tokenizer.
#[derive(Clone, Debug)]
pub(crate) struct WordPiece {
    vocab: Vocab,
    unk: u32,
    cls: u32,
    sep: u32,
    pad: u32,
    /// Special tokens matched literally in raw text, longest first.
    specials: Vec<(String, u32)>,
    /// Whether some special token starts with this byte.
    special_first: [bool; 256],
    lowercase: bool,
    strip_accents: bool,
    chinese: bool,
    max_chars: usize,
}

impl WordPiece {
    /// Builds a tokenizer from bundle settings and the text of `vocab.txt` (one token per line,
    /// id = line number).
    ///
    /// Fails with [`Error::Bundle`] when `meta.kind` is not `"wordpiece"`, the vocabulary is empty
    /// or has a token twice, or one of the special tokens of `meta` is not in it.
    pub fn new(meta: &TokenizerMeta, vocab_text: &str) -> Result<WordPiece> {
        if !meta.kind.eq_ignore_ascii_case("wordpiece") {
            return Err(Error::Bundle(format!(
                "tokenizer kind {:?} is not supported (only \"wordpiece\")",
                meta.kind
            )));
        }
        let vocab = Vocab::parse(vocab_text, &meta.continuing_subword_prefix)?;
        let special = |name: &str, token: &str| {
            vocab.id(token).ok_or_else(|| {
                Error::Bundle(format!(
                    "tokenizer {name} token {token:?} is not in the vocabulary"
                ))
            })
        };
        let unk = special("unknown", &meta.unk_token)?;
        let cls = special("CLS", &meta.cls_token)?;
        let sep = special("SEP", &meta.sep_token)?;
        let pad = special("padding", &meta.pad_token)?;
        let mut specials: Vec<(String, u32)> = Vec::new();
        let mask = vocab.id(MASK_TOKEN).map(|id| (MASK_TOKEN, id));
        let named = [
            (&*meta.pad_token, pad),
            (&*meta.unk_token, unk),
            (&*meta.cls_token, cls),
        ];
        for (token, id) in named
            .into_iter()
            .chain([(&*meta.sep_token, sep)])
            .chain(mask)
        {
            if !token.is_empty() && !specials.iter().any(|(t, _)| t == token) {
                specials.push((token.to_string(), id));
            }
        }
        specials.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
        let mut special_first = [false; 256];
        for (t, _) in &specials {
            if let Some(&b) = t.as_bytes().first() {
                special_first[b as usize] = true;
            }
        }
        Ok(WordPiece {
            vocab,
            unk,
            cls,
            sep,
            pad,
            specials,
            special_first,
            lowercase: meta.lowercase,
            strip_accents: meta.strip_accents,
            chinese: meta.tokenize_chinese_chars,
            max_chars: meta.max_input_chars_per_word,
        })
    }

    /// Id of the `[CLS]` token.
    pub fn cls_id(&self) -> u32 {
        self.cls
    }

    /// Id of the `[SEP]` token.
    pub fn sep_id(&self) -> u32 {
        self.sep
    }

    /// Id of the `[PAD]` token.
    pub fn pad_id(&self) -> u32 {
        self.pad
    }

    /// Id of the `[UNK]` token.
    pub fn unk_id(&self) -> u32 {
        self.unk
    }

    /// Number of tokens in the vocabulary (ids are `0..vocab_size()`).
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// Text of token `id` (continuation pieces keep their prefix, e.g. `"##ing"`).
    pub fn token(&self, id: u32) -> Option<&str> {
        self.vocab.token(id)
    }

    /// Id of the vocabulary token `token`, matched exactly.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.vocab.id(token)
    }

    /// Raw text -> words (BERT basic tokens: whitespace split, punctuation and CJK chars split
    /// off) and their WordPiece ids. No [CLS]/[SEP] added.
    ///
    /// A piece spans the original chars its normalised chars came from; a `[UNK]` piece spans its
    /// whole word. A word additionally covers the chars that normalisation deleted right after
    /// it (or, at the start of a whitespace-delimited chunk, right before it), e.g. a combining
    /// accent or a zero-width space. Chars deleted by normalisation that are not next to a word
    /// belong to no word. Never fails and never panics.
    pub fn encode(&self, text: &str) -> Encoding {
        let mut enc = Encoding::default();
        let guess = text.len() / 5 + 1;
        enc.words.reserve(guess);
        enc.word_first_piece.reserve(guess);
        enc.ids.reserve(guess + guess / 4);
        enc.piece_spans.reserve(guess + guess / 4);
        let mut scratch = Scratch::default();
        self.basic(text, 0, &mut enc, &mut scratch);
        enc.shapes.reserve(enc.ids.len());
        enc.push_shapes(text, 0);
        enc.piece_word.reserve(enc.ids.len());
        for w in 0..enc.word_first_piece.len() {
            if let Some(r) = enc.word_pieces(w) {
                enc.piece_word
                    .extend(std::iter::repeat_n(w as u32, r.len()));
            }
        }
        enc
    }

    /// Already-split words (e.g. CoNLL tokens). Each given word is ONE entry in `words` (its byte
    /// range in the string you get by joining the words with single spaces); its pieces come from
    /// basic-tokenizing + WordPiece of that word alone. A word that yields no pieces at all (e.g.
    /// only control chars) gets a single [UNK] piece so every word has >= 1 piece.
    ///
    /// Piece spans are byte ranges in that joined string too. Never panics.
    pub fn encode_words(&self, words: &[&str]) -> Encoding {
        let mut enc = Encoding::default();
        enc.words.reserve(words.len());
        enc.word_first_piece.reserve(words.len());
        let mut sub = Encoding::default();
        let mut scratch = Scratch::default();
        let mut offset = 0;
        for (w, word) in words.iter().enumerate() {
            sub.clear();
            self.basic(word, offset, &mut sub, &mut scratch);
            let range = offset..offset + word.len();
            enc.word_first_piece.push(enc.ids.len() as u32);
            if sub.ids.is_empty() {
                enc.ids.push(self.unk);
                enc.piece_spans.push(range.clone());
                enc.shapes.push(Shape::of(word) as u8);
            } else {
                sub.push_shapes(word, offset);
                enc.ids.extend_from_slice(&sub.ids);
                enc.piece_spans.append(&mut sub.piece_spans);
                enc.shapes.append(&mut sub.shapes);
            }
            enc.piece_word.resize(enc.ids.len(), w as u32);
            enc.words.push(range);
            offset += word.len() + 1;
        }
        enc
    }

    /// Basic tokenization + WordPiece of `text`, appending to `enc` (without `piece_word`) with
    /// offsets shifted by `base`.
    fn basic(&self, text: &str, base: usize, enc: &mut Encoding, scratch: &mut Scratch) {
        let mut b = Builder {
            tok: self,
            enc,
            s: scratch,
            open: false,
            chunk_has_word: false,
            pending: None,
            consumed: (base, base),
        };
        b.s.clear();
        let bytes = text.as_bytes();
        let mut i = 0;
        while let Some(&byte) = bytes.get(i) {
            if self.special_first[byte as usize] {
                if let Some(n) = self.special_at(text, i, &mut b, base) {
                    i += n;
                    continue;
                }
            }
            if byte < 0x80 {
                let at = base + i;
                let class = ASCII_CLASS.get(byte as usize).copied().unwrap_or(A_REMOVED);
                if class != A_REMOVED {
                    b.settle_marks();
                }
                match class {
                    A_SPACE => b.whitespace(),
                    A_REMOVED => b.removed(at, at + 1),
                    A_PUNCT => b.single(char::from(byte), at, at + 1),
                    _ => {
                        let c = if self.lowercase {
                            byte.to_ascii_lowercase()
                        } else {
                            byte
                        };
                        b.word_char(char::from(c), at, at + 1);
                    }
                }
                i += 1;
                continue;
            }
            let Some(c) = text.get(i..).and_then(|rest| rest.chars().next()) else {
                break;
            };
            let (start, end) = (base + i, base + i + c.len_utf8());
            i += c.len_utf8();
            if normalize::is_removed(c) {
                b.removed(start, end);
            } else if normalize::is_whitespace(c) {
                b.settle_marks();
                b.whitespace();
            } else if self.chinese && normalize::is_cjk(c) {
                b.settle_marks();
                b.flush();
                b.normalized(c, start, end);
                b.settle_marks();
                b.flush();
            } else {
                b.normalized(c, start, end);
            }
        }
        b.settle_marks();
        b.flush();
    }

    /// Matches a special token at byte `i` of `text`; on a match, emits it as a word and returns
    /// its length.
    fn special_at(&self, text: &str, i: usize, b: &mut Builder<'_>, base: usize) -> Option<usize> {
        let rest = text.get(i..)?;
        let (token, id) = self
            .specials
            .iter()
            .find(|(t, _)| rest.starts_with(t.as_str()))?;
        b.settle_marks();
        b.flush();
        b.open_word(base + i);
        b.enc.ids.push(*id);
        b.enc.piece_spans.push(base + i..base + i + token.len());
        if let Some(w) = b.enc.words.last_mut() {
            w.end = base + i + token.len();
        }
        b.open = false;
        Some(token.len())
    }

    /// Greedy longest-match WordPiece of the open word in `s`, appending to `enc`.
    fn wordpiece(&self, s: &Scratch, enc: &mut Encoding) {
        let n = s.starts.len();
        let (Some(first), Some(last)) = (s.spans.first(), s.spans.last()) else {
            return;
        };
        let whole = first.0..last.1;
        if n > self.max_chars {
            enc.ids.push(self.unk);
            enc.piece_spans.push(whole);
            return;
        }
        let byte_at = |k: usize| s.starts.get(k).map_or(s.norm.len(), |&b| b as usize);
        let first_piece = enc.ids.len();
        let mut start = 0;
        while start < n {
            let initial = start == 0;
            let from = byte_at(start);
            let limit = from + self.vocab.max_key_len(initial);
            let mut end = n;
            while end > start + 1 && byte_at(end) > limit {
                end -= 1;
            }
            let mut found = None;
            while end > start {
                let id = s.norm.get(from..byte_at(end)).and_then(|piece| {
                    if initial {
                        self.vocab.id(piece)
                    } else {
                        self.vocab.continuing_id(piece)
                    }
                });
                if let Some(id) = id {
                    found = Some(id);
                    break;
                }
                end -= 1;
            }
            let piece = found.and_then(|id| {
                Some((
                    id,
                    s.spans.get(start)?.0,
                    s.spans.get(end.checked_sub(1)?)?.1,
                ))
            });
            let Some((id, a, z)) = piece else {
                enc.ids.truncate(first_piece);
                enc.piece_spans.truncate(first_piece);
                enc.ids.push(self.unk);
                enc.piece_spans.push(whole);
                return;
            };
            enc.ids.push(id);
            enc.piece_spans.push(a..z);
            start = end;
        }
    }
}

/// Buffers of the word being built, reused across words.
#[derive(Default)]
struct Scratch {
    /// Normalised chars of the open word.
    norm: String,
    /// Byte offset in `norm` of each char.
    starts: Vec<u32>,
    /// Original byte range (shifted by the base) of each char.
    spans: Vec<(usize, usize)>,
    /// Decomposed non-starters since the last starter.
    marks: Vec<Mark>,
    /// Original byte ranges that the first chars of `marks` take, in text order.
    mark_spans: Vec<(usize, usize)>,
    /// Original byte ranges of the chars deleted by cleaning while `marks` wait.
    late_drops: Vec<(usize, usize)>,
}

/// A decomposed non-starter waiting for canonical reordering.
struct Mark {
    class: u8,
    c: char,
    /// First char of the decomposition of its original char.
    first: bool,
    /// Original byte range of its original char.
    span: (usize, usize),
}

impl Scratch {
    fn clear(&mut self) {
        self.clear_word();
        self.marks.clear();
        self.mark_spans.clear();
        self.late_drops.clear();
    }

    fn clear_word(&mut self) {
        self.norm.clear();
        self.starts.clear();
        self.spans.clear();
    }
}

/// The smallest range covering `range` (if any) and `start..end`.
fn union(range: Option<(usize, usize)>, start: usize, end: usize) -> (usize, usize) {
    range.map_or((start, end), |(a, z)| (a.min(start), z.max(end)))
}

/// Turns a stream of normalised chars into words and pieces.
struct Builder<'a> {
    tok: &'a WordPiece,
    enc: &'a mut Encoding,
    s: &'a mut Scratch,
    /// A word is open: its chars are in `s` and it is the last entry of `enc.words`.
    open: bool,
    /// A word was started since the last whitespace.
    chunk_has_word: bool,
    /// Range of the chars deleted at the start of the current whitespace-delimited chunk.
    pending: Option<(usize, usize)>,
    /// Original byte range of the char that the last decomposition-initial char came from.
    consumed: (usize, usize),
}

impl Builder<'_> {
    fn open_word(&mut self, start: usize) {
        let (start, end) = match self.pending.take() {
            Some((a, z)) => (a.min(start), z.max(start)),
            None => (start, start),
        };
        if self.chunk_has_word {
            if let (Some(prev), Some(piece)) =
                (self.enc.words.last_mut(), self.enc.piece_spans.last())
            {
                if prev.end > start {
                    prev.end = start.max(piece.end);
                }
            }
        }
        self.enc.words.push(start..end);
        self.enc.word_first_piece.push(self.enc.ids.len() as u32);
        self.open = true;
        self.chunk_has_word = true;
    }

    /// Appends a char (not whitespace, not punctuation) to the open word, opening one if needed.
    #[inline]
    fn word_char(&mut self, c: char, start: usize, end: usize) {
        if !self.open {
            self.open_word(start);
        }
        self.s.starts.push(self.s.norm.len() as u32);
        self.s.norm.push(c);
        self.s.spans.push((start, end));
        if let Some(w) = self.enc.words.last_mut() {
            w.end = w.end.max(end);
        }
    }

    /// A char that is a word of its own.
    fn single(&mut self, c: char, start: usize, end: usize) {
        self.flush();
        self.word_char(c, start, end);
        self.flush();
    }

    /// A normalised char of any class.
    fn any_char(&mut self, c: char, start: usize, end: usize) {
        if normalize::is_whitespace(c) {
            self.whitespace();
        } else if normalize::is_punctuation(c) {
            self.single(c, start, end);
        } else {
            self.word_char(c, start, end);
        }
    }

    /// Accent stripping (when on) and lower-casing of one non-ASCII char. Decomposed
    /// non-starters wait in `s.marks` for canonical reordering until the next starter.
    #[inline]
    fn normalized(&mut self, c: char, start: usize, end: usize) {
        if !self.tok.strip_accents {
            self.emit(c, start, end);
            return;
        }
        for (j, d) in normalize::decompose(c).enumerate() {
            let class = normalize::combining_class(d);
            if class != 0 {
                self.s.marks.push(Mark {
                    class,
                    c: d,
                    first: j == 0,
                    span: (start, end),
                });
                continue;
            }
            self.settle_marks();
            if j == 0 {
                self.consumed = (start, end);
            }
            let (a, z) = self.consumed;
            if normalize::is_nonspacing_mark(d) {
                self.dropped(a, z);
            } else {
                self.emit(d, a, z);
            }
        }
    }

    /// Canonical reordering of the waiting non-starters, with the reference's offsets: the chars
    /// are sorted stably by combining class; then each char that was first in its decomposition
    /// takes the next original char in text order, and each other char the last one taken.
    /// Nonspacing marks are then dropped and the rest is emitted.
    #[inline]
    fn settle_marks(&mut self) {
        if self.s.marks.is_empty() {
            return;
        }
        let mut marks = std::mem::take(&mut self.s.marks);
        let mut queue = std::mem::take(&mut self.s.mark_spans);
        let mut late = std::mem::take(&mut self.s.late_drops);
        queue.clear();
        queue.extend(marks.iter().filter(|m| m.first).map(|m| m.span));
        marks.sort_by_key(|m| m.class);
        let mut next = queue.iter();
        let mut late_iter = late.iter().peekable();
        for m in &marks {
            if m.first {
                self.consumed = next.next().copied().unwrap_or(m.span);
            }
            let (a, z) = self.consumed;
            while let Some(&(da, dz)) = late_iter.next_if(|d| d.0 < a) {
                self.dropped(da, dz);
            }
            if normalize::is_nonspacing_mark(m.c) {
                self.dropped(a, z);
            } else {
                self.emit(m.c, a, z);
            }
        }
        for &(da, dz) in late_iter {
            self.dropped(da, dz);
        }
        marks.clear();
        queue.clear();
        late.clear();
        self.s.marks = marks;
        self.s.mark_spans = queue;
        self.s.late_drops = late;
    }

    /// Lower-casing (when on) of a normalised char, then word building.
    #[inline]
    fn emit(&mut self, c: char, start: usize, end: usize) {
        if self.tok.lowercase {
            for l in c.to_lowercase() {
                self.any_char(l, start, end);
            }
        } else {
            self.any_char(c, start, end);
        }
    }

    /// A char that normalisation deleted: it joins the last word of the chunk, or the next one.
    fn dropped(&mut self, start: usize, end: usize) {
        if self.chunk_has_word {
            if let Some(w) = self.enc.words.last_mut() {
                w.end = w.end.max(end);
            }
        } else {
            self.pending = Some(union(self.pending, start, end));
        }
    }

    /// A char that text cleaning deleted; it waits for the non-starters before it, if any.
    fn removed(&mut self, start: usize, end: usize) {
        if self.s.marks.is_empty() {
            self.dropped(start, end);
        } else {
            self.s.late_drops.push((start, end));
        }
    }

    fn whitespace(&mut self) {
        self.flush();
        self.chunk_has_word = false;
        self.pending = None;
    }

    /// Closes the open word: WordPiece of its chars.
    fn flush(&mut self) {
        if self.open {
            self.tok.wordpiece(self.s, self.enc);
            self.s.clear_word();
            self.open = false;
        }
    }
}
