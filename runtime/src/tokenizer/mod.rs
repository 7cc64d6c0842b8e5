//! Tokenizers: text → words (the units entities are labelled on) → subword ids, with byte
//! offsets into the original text. A bundle names its kind ([`TokenizerMeta::kind`]):
//!
//! * `"wordpiece"` (`wordpiece.rs`): BERT basic tokenisation + WordPiece, reproducing the ids
//!   and offsets of the Hugging Face `tokenizers` pipeline `BertNormalizer` + `BertPreTokenizer`
//!   \+ `WordPiece` (the tokenizer of `sentence-transformers/all-MiniLM-L6-v2`):
//!   1. special tokens (`[CLS]`, `[SEP]`, `[PAD]`, `[UNK]`, `[MASK]`) written literally in the
//!      text are matched first, before any normalisation, and become words of their own;
//!   2. cleaning deletes control, format and private-use chars (but `\t \n \r`), U+0000 and
//!      U+FFFD, and turns whitespace into word breaks;
//!   3. CJK ideographs become words of their own (`tokenize_chinese_chars`);
//!   4. accents are stripped (NFD with canonical reordering, then nonspacing marks dropped) and
//!      text is lower-cased char by char, when the settings say so;
//!   5. punctuation chars become words of their own;
//!   6. each word is split greedily into the longest vocabulary pieces; a word longer than
//!      `max_input_chars_per_word` chars, or one that cannot be split, is one `[UNK]` piece.
//!
//!   Each normalised char remembers the original char it came from, so offsets always refer to
//!   the original text. The Unicode tables follow the reference's (older) Unicode data; see
//!   `tools/scripts/gen_unicode_tables.py`.
//! * `"unigram"` ([`unigram`]): SentencePiece unigram (XLM-R, multilingual-e5). Words are the
//!   labelling units of [`unigram::UnigramTokenizer::encode_units`]: `▁`-words, with every CJK
//!   ideograph a word of its own.

mod normalize;
pub mod shape;
#[rustfmt::skip]
mod tables;
pub mod unigram;
mod vocab;
mod wordpiece;

use std::ops::Range;

use crate::bundle::TokenizerMeta;
use crate::{Error, Result};

pub use shape::{Shape, SHAPE_CLASSES, SHAPE_SCHEME};
use unigram::{UnigramPiece, UnigramSpec, UnigramTokenizer};
use wordpiece::WordPiece;

/// A char that belongs to the character before it: a nonspacing mark (general category Mn,
/// e.g. U+0301 or the variation selector U+FE0F) or a char with a nonzero canonical combining
/// class. Such chars at the end of a word stay with it in [`Encoding::entity_span`].
pub fn is_combining_mark(c: char) -> bool {
    normalize::is_nonspacing_mark(c) || normalize::combining_class(c) != 0
}

/// BERT's mask token; matched in text like the special tokens of [`TokenizerMeta`] when the
/// vocabulary has it (it is an added token of the reference tokenizer).
pub const MASK_TOKEN: &str = "[MASK]";

/// Settings of `sentence-transformers/all-MiniLM-L6-v2` (and of `bert-base-uncased`).
pub fn bert_uncased_meta() -> TokenizerMeta {
    TokenizerMeta {
        kind: "wordpiece".into(),
        lowercase: true,
        strip_accents: true,
        tokenize_chinese_chars: true,
        unk_token: "[UNK]".into(),
        cls_token: "[CLS]".into(),
        sep_token: "[SEP]".into(),
        pad_token: "[PAD]".into(),
        continuing_subword_prefix: "##".into(),
        max_input_chars_per_word: 100,
        unk_score: None,
    }
}

/// The tokenization of one text.
///
/// Invariants: `words` are in text order and do not overlap; every word has at least one piece;
/// the pieces of word `w` are `word_first_piece[w]..word_first_piece[w + 1]` (or `..ids.len()`
/// for the last word), and `piece_word` maps each piece back to its word.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Encoding {
    /// Byte range in the original text of each word (for encode) — start..end, on char boundaries.
    pub words: Vec<Range<usize>>,
    /// WordPiece ids, no special tokens.
    pub ids: Vec<u32>,
    /// Byte range in the original text of each piece.
    pub piece_spans: Vec<Range<usize>>,
    /// Index into `words` of each piece.
    pub piece_word: Vec<u32>,
    /// Index into `ids` of the first piece of each word.
    pub word_first_piece: Vec<u32>,
    /// [`Shape`] id of each piece: the class of the BERT basic token it belongs to, from the
    /// original (cased) characters of that token.
    pub shapes: Vec<u8>,
}

impl Encoding {
    /// Range of indices into `ids` of the pieces of word `word`, `None` if there is no such word.
    pub fn word_pieces(&self, word: usize) -> Option<Range<usize>> {
        let start = *self.word_first_piece.get(word)? as usize;
        let end = match self.word_first_piece.get(word + 1) {
            Some(&next) => next as usize,
            None => self.ids.len(),
        };
        Some(start..end)
    }

    /// Byte range in `text` (the text this encoding was made from) of the entity that covers
    /// words `words`: from the first character of their pieces to the last, then over the
    /// combining marks ([`is_combining_mark`]) that directly follow inside the last word, so a
    /// character is never split from its accents. The range never starts or ends on whitespace
    /// or on a character the tokenizer drops (control, format or zero-width characters, and
    /// marks before the first kept character); such characters are kept only inside it.
    /// `None` for an empty or out-of-range `words`.
    pub fn entity_span(&self, text: &str, words: Range<usize>) -> Option<Range<usize>> {
        if words.is_empty() {
            return None;
        }
        let first = self.word_pieces(words.start)?.start;
        let last_word = words.end - 1;
        let last = self.word_pieces(last_word)?.end;
        let spans = self.piece_spans.get(first..last)?;
        let start = spans.iter().map(|s| s.start).min()?;
        let mut end = spans.iter().map(|s| s.end).max()?;
        let limit = self.words.get(last_word)?.end;
        while let Some(c) = text.get(end..limit).and_then(|rest| rest.chars().next()) {
            if !is_combining_mark(c) {
                break;
            }
            end += c.len_utf8();
        }
        Some(start..end)
    }

    /// Fills `piece_word` from `word_first_piece`.
    fn fill_piece_word(&mut self) {
        self.piece_word.clear();
        self.piece_word.reserve(self.ids.len());
        for w in 0..self.word_first_piece.len() {
            if let Some(r) = self.word_pieces(w) {
                self.piece_word
                    .extend(std::iter::repeat_n(w as u32, r.len()));
            }
        }
    }

    fn clear(&mut self) {
        self.words.clear();
        self.ids.clear();
        self.piece_spans.clear();
        self.piece_word.clear();
        self.word_first_piece.clear();
        self.shapes.clear();
    }

    /// Appends the shape of every piece of every word, each word being a
    /// basic token whose original text is `text[range - base]`.
    fn push_shapes(&mut self, text: &str, base: usize) {
        for w in 0..self.words.len() {
            let Some(pieces) = self.word_pieces(w) else {
                continue;
            };
            let r = &self.words[w];
            let shape = text
                .get(r.start.saturating_sub(base)..r.end.saturating_sub(base))
                .map_or(Shape::Other, Shape::of);
            self.shapes
                .extend(std::iter::repeat_n(shape as u8, pieces.len()));
        }
    }
}

/// Settings of a SentencePiece-unigram tokenizer with XLM-R's special pieces; `unk_score` is
/// the score of an unknown char ([`UnigramSpec::unk_score`]).
pub fn xlmr_unigram_meta(unk_score: f32) -> TokenizerMeta {
    TokenizerMeta {
        kind: "unigram".into(),
        lowercase: false,
        strip_accents: false,
        tokenize_chinese_chars: true,
        unk_token: "<unk>".into(),
        cls_token: "<s>".into(),
        sep_token: "</s>".into(),
        pad_token: "<pad>".into(),
        continuing_subword_prefix: String::new(),
        max_input_chars_per_word: 0,
        unk_score: Some(unk_score),
    }
}

/// The tokenizer a bundle names: BERT WordPiece or SentencePiece unigram. Immutable after
/// construction; share it between threads freely.
#[derive(Clone, Debug)]
pub struct Tokenizer {
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    WordPiece(Box<WordPiece>),
    Unigram(Box<UnigramTokenizer>),
}

impl Tokenizer {
    /// A WordPiece tokenizer from bundle settings and the text of `vocab.txt` (one token per
    /// line, id = line number); [`Tokenizer::from_parts`] without a normalisation map.
    ///
    /// Fails with [`Error::Bundle`] when `meta.kind` is not `"wordpiece"`, the vocabulary is empty
    /// or has a token twice, or one of the special tokens of `meta` is not in it.
    pub fn new(meta: &TokenizerMeta, vocab_text: &str) -> Result<Tokenizer> {
        Tokenizer::from_parts(meta, vocab_text, None)
    }

    /// The tokenizer of `meta.kind` from a bundle's parts. `"wordpiece"`: `vocab_text` is
    /// `vocab.txt`. `"unigram"`: `vocab_text` has one `piece⇥score` line per id, `charsmap` is
    /// the serialised precompiled normalisation map ([`unigram::CharsMap::parse`]) and
    /// `meta.unk_score` must be set; `<s>`, `</s>`, `<pad>`, `<unk>` are `meta`'s CLS, SEP, pad
    /// and unknown tokens.
    ///
    /// Fails with [`Error::Bundle`] for another kind, a missing map or score, a malformed line
    /// (named by number), or a vocabulary the tokenizer of that kind refuses.
    pub fn from_parts(
        meta: &TokenizerMeta,
        vocab_text: &str,
        charsmap: Option<&[u8]>,
    ) -> Result<Tokenizer> {
        let kind = match meta.kind.to_ascii_lowercase().as_str() {
            "wordpiece" => Kind::WordPiece(Box::new(WordPiece::new(meta, vocab_text)?)),
            "unigram" => Kind::Unigram(Box::new(unigram_from_parts(meta, vocab_text, charsmap)?)),
            other => {
                return Err(Error::Bundle(format!(
                    "tokenizer kind {other:?} is not supported (\"wordpiece\" or \"unigram\")"
                )))
            }
        };
        Ok(Tokenizer { kind })
    }

    /// `"wordpiece"` or `"unigram"`.
    pub fn kind(&self) -> &'static str {
        match &self.kind {
            Kind::WordPiece(_) => "wordpiece",
            Kind::Unigram(_) => "unigram",
        }
    }

    /// The unigram tokenizer, when this is one.
    pub fn as_unigram(&self) -> Option<&UnigramTokenizer> {
        match &self.kind {
            Kind::Unigram(u) => Some(u),
            Kind::WordPiece(_) => None,
        }
    }

    /// Id of the token the encoder puts before every window (`[CLS]`, `<s>`).
    pub fn cls_id(&self) -> u32 {
        match &self.kind {
            Kind::WordPiece(w) => w.cls_id(),
            Kind::Unigram(u) => u.bos_id(),
        }
    }

    /// Id of the token the encoder puts after every window (`[SEP]`, `</s>`).
    pub fn sep_id(&self) -> u32 {
        match &self.kind {
            Kind::WordPiece(w) => w.sep_id(),
            Kind::Unigram(u) => u.eos_id(),
        }
    }

    /// Id of the padding token.
    pub fn pad_id(&self) -> u32 {
        match &self.kind {
            Kind::WordPiece(w) => w.pad_id(),
            Kind::Unigram(u) => u.pad_id(),
        }
    }

    /// Id of the unknown token.
    pub fn unk_id(&self) -> u32 {
        match &self.kind {
            Kind::WordPiece(w) => w.unk_id(),
            Kind::Unigram(u) => u.unk_id(),
        }
    }

    /// Number of tokens in the vocabulary (ids are `0..vocab_size()`).
    pub fn vocab_size(&self) -> usize {
        match &self.kind {
            Kind::WordPiece(w) => w.vocab_size(),
            Kind::Unigram(u) => u.vocab_size(),
        }
    }

    /// Text of token `id` (WordPiece continuation pieces keep their prefix, e.g. `"##ing"`;
    /// unigram pieces their `▁`).
    pub fn token(&self, id: u32) -> Option<&str> {
        match &self.kind {
            Kind::WordPiece(w) => w.token(id),
            Kind::Unigram(u) => u.piece(id),
        }
    }

    /// Id of the vocabulary token `token`, matched exactly.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        match &self.kind {
            Kind::WordPiece(w) => w.token_id(token),
            Kind::Unigram(u) => u.piece_id(token),
        }
    }

    /// Raw text -> words and their piece ids, no CLS/SEP added. WordPiece: BERT basic tokens
    /// (see the rules in the module docs). Unigram: the units of
    /// [`UnigramTokenizer::encode_units`] (a `▁` piece standing alone joins the unit after it, or
    /// the one before it at the end of the text); a piece spans the original chars it stands
    /// for, without the space its `▁` came from. Never fails and never panics.
    pub fn encode(&self, text: &str) -> Encoding {
        match &self.kind {
            Kind::WordPiece(w) => w.encode(text),
            Kind::Unigram(u) => {
                let mut enc = Encoding::default();
                push_units(&mut enc, 0, &u.encode_units(text), None);
                enc.push_shapes(text, 0);
                enc.fill_piece_word();
                enc
            }
        }
    }

    /// Already-split words (e.g. CoNLL tokens). Each given word is ONE entry in `words` (its byte
    /// range in the string you get by joining the words with single spaces), with the pieces of
    /// that word alone; a word without pieces (e.g. only control chars) gets one unknown piece.
    /// Piece spans are byte ranges in that joined string too. Never panics.
    pub fn encode_words(&self, words: &[&str]) -> Encoding {
        match &self.kind {
            Kind::WordPiece(w) => w.encode_words(words),
            Kind::Unigram(u) => {
                let mut enc = Encoding::default();
                let mut offset = 0;
                for (w, word) in words.iter().enumerate() {
                    let range = offset..offset + word.len();
                    let first = enc.ids.len();
                    push_units(&mut enc, offset, &u.encode_units(word), Some(w));
                    if enc.ids.len() == first {
                        enc.ids.push(u.unk_id());
                        enc.piece_spans.push(range.clone());
                    }
                    enc.words.push(range);
                    enc.word_first_piece.push(first as u32);
                    enc.shapes.resize(enc.ids.len(), Shape::of(word) as u8);
                    enc.piece_word.resize(enc.ids.len(), w as u32);
                    offset += word.len() + 1;
                }
                enc
            }
        }
    }
}

fn unigram_from_parts(
    meta: &TokenizerMeta,
    vocab_text: &str,
    charsmap: Option<&[u8]>,
) -> Result<UnigramTokenizer> {
    let charsmap = charsmap
        .ok_or_else(|| Error::Bundle("unigram tokenizer without its normalisation map".into()))?;
    let unk_score = meta
        .unk_score
        .ok_or_else(|| Error::Bundle("unigram tokenizer without tokenizer.unk_score".into()))?;
    let mut pieces = Vec::new();
    for (i, line) in vocab_text.lines().enumerate() {
        let parsed = line
            .rsplit_once('\t')
            .and_then(|(p, s)| Some((p.to_string(), s.parse::<f32>().ok()?)));
        let Some(piece) = parsed else {
            return Err(Error::Bundle(format!(
                "unigram vocabulary line {}: expected piece<TAB>score, found {line:?}",
                i + 1
            )));
        };
        pieces.push(piece);
    }
    let id = |name: &str, token: &str| {
        pieces
            .iter()
            .position(|(p, _)| p == token)
            .map(|i| i as u32)
            .ok_or_else(|| {
                Error::Bundle(format!(
                    "tokenizer {name} token {token:?} is not in the vocabulary"
                ))
            })
    };
    let spec = UnigramSpec {
        unk_id: id("unknown", &meta.unk_token)?,
        bos_id: id("CLS", &meta.cls_token)?,
        eos_id: id("SEP", &meta.sep_token)?,
        pad_id: id("padding", &meta.pad_token)?,
        unk_score,
        charsmap: charsmap.to_vec(),
        pieces,
    };
    UnigramTokenizer::new(spec)
}

/// Appends unigram pieces (spans relative to `text`, shifted by `base`) to `enc`: as units
/// (new words) when `word` is `None`, else all to word `word` (the caller pushes the word).
fn push_units(enc: &mut Encoding, base: usize, pieces: &[UnigramPiece], word: Option<usize>) {
    let mut groups: Vec<Range<usize>> = Vec::new();
    let mut bare_start = false;
    for (i, p) in pieces.iter().enumerate() {
        let bare = p.core.is_empty();
        let joins_marker = bare_start && groups.last().is_some_and(|g| g.end == i && g.len() == 1);
        if groups.is_empty() || (p.unit_start && !joins_marker) {
            groups.push(i..i + 1);
            bare_start = bare;
        } else if let Some(g) = groups.last_mut() {
            g.end = i + 1;
        }
    }
    if groups.len() > 1 {
        if let Some(last) = groups.last() {
            if pieces[last.clone()].iter().all(|p| p.core.is_empty()) {
                let end = last.end;
                groups.pop();
                if let Some(prev) = groups.last_mut() {
                    prev.end = end;
                }
            }
        }
    }
    for g in groups {
        let group = &pieces[g];
        let cores = group.iter().filter(|p| !p.core.is_empty());
        let start = cores.clone().map(|p| p.core.start).min();
        let end = cores.map(|p| p.core.end).max();
        let (Some(start), Some(end)) = (start, end) else {
            continue;
        };
        if word.is_none() {
            enc.word_first_piece.push(enc.ids.len() as u32);
            enc.words.push(base + start..base + end);
        }
        for p in group {
            enc.ids.push(p.id);
            let span = if p.core.is_empty() {
                base + start..base + start
            } else {
                base + p.core.start..base + p.core.end
            };
            enc.piece_spans.push(span);
        }
    }
}

#[cfg(test)]
mod tests;
