//! SentencePiece-unigram tokenizer (XLM-R, multilingual-e5): text → normalised chars (precompiled
//! map, space runs collapsed, metaspace) → words split before every `▁` → the most probable
//! segmentation of each word into vocabulary pieces (Viterbi over piece log-probabilities) → ids
//! with byte offsets into the original text.
//!
//! [`UnigramTokenizer::encode`] reproduces the ids and offsets of the Hugging Face `tokenizers`
//! pipeline of XLM-R (`Precompiled` + `Replace(" {2,}", " ")` + `Metaspace` + `Unigram` with
//! fused unknowns), except that special-token text such as `<s>` typed in the input is tokenised
//! like any other text. [`UnigramTokenizer::encode_units`] is the labelling variant: a CJK
//! ideograph or a CJK/general punctuation mark (book-title marks, full stops, quotes) never
//! shares a piece with another char, so every ideograph can start and end an entity and no
//! entity is glued to the punctuation beside it.

mod charsmap;
mod normalize;

use std::collections::HashMap;
use std::ops::Range;

pub use charsmap::CharsMap;
pub use normalize::METASPACE;

use normalize::Aligned;

use super::normalize::is_cjk;
use crate::{Error, Result};

/// Whether labelling units keep `c` in a piece and unit of its own: a CJK ideograph, or a
/// mark of the CJK symbols and punctuation, general punctuation, CJK compatibility forms or
/// full-width forms blocks (what NFKC leaves of them).
pub fn stands_alone(c: char) -> bool {
    is_cjk(c)
        || matches!(
            u32::from(c),
            0x2010..=0x205E | 0x3001..=0x303F | 0xFE30..=0xFE4F | 0xFF01..=0xFF65
        )
}

/// Log-probability penalty of an unknown char below the lowest piece score, as SentencePiece.
pub const UNK_PENALTY: f32 = 10.0;

/// Everything a unigram tokenizer is made of.
#[derive(Clone, Debug)]
pub struct UnigramSpec {
    /// Piece text and log-probability; the index is the id.
    pub pieces: Vec<(String, f32)>,
    /// Id of the unknown piece.
    pub unk_id: u32,
    /// Score of an unknown char. The reference uses the lowest score of its full vocabulary
    /// minus [`UNK_PENALTY`]; a pruned vocabulary keeps the full one's value.
    pub unk_score: f32,
    /// Ids of the sequence start, end and padding pieces.
    pub bos_id: u32,
    /// See `bos_id`.
    pub eos_id: u32,
    /// See `bos_id`.
    pub pad_id: u32,
    /// The precompiled normalisation map, serialised ([`CharsMap::parse`]).
    pub charsmap: Vec<u8>,
}

#[derive(serde::Deserialize, serde::Serialize)]
struct VocabFile {
    unk_id: u32,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    unk_score: f32,
    pieces: Vec<(String, f32, u32)>,
}

impl UnigramSpec {
    /// Reads the JSON vocabulary form `{"unk_id", "bos_id", "eos_id", "pad_id", "unk_score",
    /// "pieces": [[text, score, source_id], …]}` (ids index `pieces`; `source_id` is the piece's
    /// id in the vocabulary it was pruned from) with the serialised normalisation map
    /// `charsmap`. Returns the spec and the source ids. Fails with [`Error::Bundle`] on JSON
    /// that does not have this shape; the contents are checked by [`UnigramTokenizer::new`].
    pub fn from_json(text: &str, charsmap: Vec<u8>) -> Result<(UnigramSpec, Vec<u32>)> {
        let file: VocabFile = serde_json::from_str(text)
            .map_err(|e| Error::Bundle(format!("unigram vocabulary JSON: {e}")))?;
        let source = file.pieces.iter().map(|p| p.2).collect();
        let spec = UnigramSpec {
            pieces: file.pieces.into_iter().map(|(p, s, _)| (p, s)).collect(),
            unk_id: file.unk_id,
            unk_score: file.unk_score,
            bos_id: file.bos_id,
            eos_id: file.eos_id,
            pad_id: file.pad_id,
            charsmap,
        };
        Ok((spec, source))
    }

    /// The vocabulary as a bundle's `tokenizer.vocab` tensor holds it: one `piece⇥score` line
    /// per id. Fails with [`Error::Bundle`] when a piece has a tab or a line break.
    pub fn vocab_text(&self) -> Result<String> {
        let mut text = String::with_capacity(self.pieces.len() * 16);
        for (i, (piece, score)) in self.pieces.iter().enumerate() {
            if piece.contains(['\t', '\n', '\r']) {
                return Err(Error::Bundle(format!(
                    "unigram piece {i} ({piece:?}) has a tab or a line break"
                )));
            }
            text.push_str(piece);
            text.push('\t');
            text.push_str(&score.to_string());
            text.push('\n');
        }
        Ok(text)
    }

    /// The JSON form [`UnigramSpec::from_json`] reads, with `source` ids (one per piece).
    pub fn to_json(&self, source: &[u32]) -> Result<String> {
        if source.len() != self.pieces.len() {
            return Err(Error::Bundle(format!(
                "{} source ids for {} pieces",
                source.len(),
                self.pieces.len()
            )));
        }
        let file = VocabFile {
            unk_id: self.unk_id,
            bos_id: self.bos_id,
            eos_id: self.eos_id,
            pad_id: self.pad_id,
            unk_score: self.unk_score,
            pieces: self
                .pieces
                .iter()
                .zip(source)
                .map(|((p, s), &id)| (p.clone(), *s, id))
                .collect(),
        };
        serde_json::to_string(&file)
            .map_err(|e| Error::Bundle(format!("unigram vocabulary JSON: {e}")))
    }
}

/// One piece of an encoding: its id and the byte range of the original text it covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnigramPiece {
    /// Vocabulary id.
    pub id: u32,
    /// Byte range in the original text (empty only for a piece made of inserted chars).
    pub span: Range<usize>,
    /// Byte range in the original text of the piece's chars other than `▁` (empty, at the end
    /// of `span`, for a piece of markers only): the text the piece stands for, without the
    /// space its `▁` came from.
    pub core: Range<usize>,
    /// Whether this piece starts a labelling unit: a `▁`-word or, in
    /// [`UnigramTokenizer::encode_units`], a CJK ideograph or the text after one.
    pub unit_start: bool,
}

/// A SentencePiece-unigram tokenizer. Immutable; share it between threads freely.
#[derive(Clone, Debug)]
pub struct UnigramTokenizer {
    pieces: Vec<String>,
    scores: Vec<f32>,
    lookup: HashMap<String, u32>,
    max_piece_bytes: usize,
    unk: u32,
    unk_score: f32,
    bos: u32,
    eos: u32,
    pad: u32,
    charsmap: CharsMap,
}

#[derive(Clone, Copy)]
struct Best {
    score: f32,
    from: usize,
    id: u32,
    reached: bool,
}

impl UnigramTokenizer {
    /// Builds the tokenizer.
    ///
    /// Fails with [`Error::Bundle`] when the vocabulary is empty, has an empty or repeated piece,
    /// a non-finite score, a special id out of range, or the map does not parse.
    pub fn new(spec: UnigramSpec) -> Result<UnigramTokenizer> {
        let n = spec.pieces.len();
        if n == 0 {
            return Err(Error::Bundle("unigram vocabulary is empty".into()));
        }
        for (name, id) in [
            ("unknown", spec.unk_id),
            ("start", spec.bos_id),
            ("end", spec.eos_id),
            ("padding", spec.pad_id),
        ] {
            if id as usize >= n {
                return Err(Error::Bundle(format!(
                    "unigram {name} id {id} is outside the vocabulary of {n} pieces"
                )));
            }
        }
        if !spec.unk_score.is_finite() {
            return Err(Error::Bundle("unigram unknown score is not finite".into()));
        }
        let mut lookup = HashMap::with_capacity(n);
        let mut pieces = Vec::with_capacity(n);
        let mut scores = Vec::with_capacity(n);
        let mut max_piece_bytes = 1;
        for (id, (piece, score)) in spec.pieces.into_iter().enumerate() {
            if piece.is_empty() {
                return Err(Error::Bundle(format!("unigram piece {id} is empty")));
            }
            if !score.is_finite() {
                return Err(Error::Bundle(format!(
                    "unigram piece {id} ({piece:?}) has a non-finite score"
                )));
            }
            if lookup.insert(piece.clone(), id as u32).is_some() {
                return Err(Error::Bundle(format!(
                    "unigram piece {piece:?} appears twice (second at id {id})"
                )));
            }
            max_piece_bytes = max_piece_bytes.max(piece.len());
            pieces.push(piece);
            scores.push(score);
        }
        Ok(UnigramTokenizer {
            pieces,
            scores,
            lookup,
            max_piece_bytes,
            unk: spec.unk_id,
            unk_score: spec.unk_score,
            bos: spec.bos_id,
            eos: spec.eos_id,
            pad: spec.pad_id,
            charsmap: CharsMap::parse(&spec.charsmap)?,
        })
    }

    /// Number of pieces (ids are `0..vocab_size()`).
    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// Text of piece `id`.
    pub fn piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(String::as_str)
    }

    /// Id of the piece `piece`, matched exactly.
    pub fn piece_id(&self, piece: &str) -> Option<u32> {
        self.lookup.get(piece).copied()
    }

    /// Id of the unknown piece.
    pub fn unk_id(&self) -> u32 {
        self.unk
    }

    /// Id of the sequence-start piece (`<s>`).
    pub fn bos_id(&self) -> u32 {
        self.bos
    }

    /// Id of the sequence-end piece (`</s>`).
    pub fn eos_id(&self) -> u32 {
        self.eos
    }

    /// Id of the padding piece.
    pub fn pad_id(&self) -> u32 {
        self.pad
    }

    /// The reference tokenisation of `text`: pieces without `<s>`/`</s>`, consecutive unknown
    /// chars fused into one unknown piece. Never fails and never panics.
    pub fn encode(&self, text: &str) -> Vec<UnigramPiece> {
        self.encode_with(text, false)
    }

    /// [`encode`](Self::encode) with every char that [`stands_alone`] (CJK ideographs and
    /// wide punctuation) a piece of its own (with the `▁` before it, if any) that starts a
    /// unit, and the text after it starting a new unit, so that entity boundaries can fall on
    /// any ideograph and never inside `》。`. Unknown chars are not fused across such a char.
    pub fn encode_units(&self, text: &str) -> Vec<UnigramPiece> {
        self.encode_with(text, true)
    }

    fn normalized(&self, text: &str) -> Vec<Aligned> {
        let mut chars = normalize::precompiled(&self.charsmap, text);
        normalize::collapse_spaces(&mut chars);
        normalize::metaspace(&mut chars);
        chars
    }

    fn encode_with(&self, text: &str, split_cjk: bool) -> Vec<UnigramPiece> {
        let chars = self.normalized(text);
        let mut out = Vec::with_capacity(chars.len() / 2 + 1);
        let mut best = Vec::new();
        let mut word = String::new();
        let mut bounds = Vec::new();
        for range in normalize::split_words(&chars) {
            let slice = &chars[range];
            word.clear();
            bounds.clear();
            for a in slice {
                bounds.push(word.len());
                word.push(a.c);
            }
            bounds.push(word.len());
            self.viterbi(&word, &bounds, slice, split_cjk, &mut best);
            self.backtrack(slice, split_cjk, &best, &mut out);
        }
        out
    }

    fn allowed(slice: &[Aligned], from: usize, to: usize) -> bool {
        let cjk_at = slice[from..to].iter().position(|a| stands_alone(a.c));
        match cjk_at {
            None => true,
            Some(0) => to - from == 1,
            Some(1) => to - from == 2 && slice[from].c == METASPACE,
            Some(_) => false,
        }
    }

    fn viterbi(
        &self,
        word: &str,
        bounds: &[usize],
        slice: &[Aligned],
        split_cjk: bool,
        best: &mut Vec<Best>,
    ) {
        let n = slice.len();
        best.clear();
        best.resize(
            n + 1,
            Best {
                score: 0.0,
                from: 0,
                id: 0,
                reached: false,
            },
        );
        best[0].reached = true;
        for start in 0..n {
            let here = best[start].score;
            let mut single = false;
            for end in start + 1..=n {
                let len = bounds[end] - bounds[start];
                if len > self.max_piece_bytes {
                    break;
                }
                if split_cjk && !Self::allowed(slice, start, end) {
                    continue;
                }
                let Some(&id) = self.lookup.get(&word[bounds[start]..bounds[end]]) else {
                    continue;
                };
                let score = here + self.scores[id as usize];
                let target = &mut best[end];
                if !target.reached || score > target.score {
                    *target = Best {
                        score,
                        from: start,
                        id,
                        reached: true,
                    };
                }
                if end == start + 1 {
                    single = true;
                }
            }
            if !single {
                let score = here + self.unk_score;
                let target = &mut best[start + 1];
                if !target.reached || score > target.score {
                    *target = Best {
                        score,
                        from: start,
                        id: self.unk,
                        reached: true,
                    };
                }
            }
        }
    }

    fn backtrack(
        &self,
        slice: &[Aligned],
        split_cjk: bool,
        best: &[Best],
        out: &mut Vec<UnigramPiece>,
    ) {
        let mut cuts: Vec<(usize, usize, u32)> = Vec::new();
        let mut end = slice.len();
        while end > 0 {
            let node = best[end];
            let start = node.from;
            let fuse = node.id == self.unk
                && cuts.last().is_some_and(|&(s, _, id)| {
                    id == self.unk
                        && !(split_cjk
                            && (stands_alone(slice[s].c) || stands_alone(slice[end - 1].c)))
                });
            if fuse {
                if let Some(last) = cuts.last_mut() {
                    last.0 = start;
                }
            } else {
                cuts.push((start, end, node.id));
            }
            end = start;
        }
        let first = out.len();
        for (i, &(start, end, id)) in cuts.iter().rev().enumerate() {
            let span = slice[start].orig.start..slice[end - 1].orig.end;
            let text_chars = || slice[start..end].iter().filter(|a| a.c != METASPACE);
            let core = match (text_chars().next(), text_chars().next_back()) {
                (Some(first), Some(last)) => first.orig.start..last.orig.end.max(first.orig.start),
                _ => span.end..span.end,
            };
            let after_cjk = split_cjk && start > 0 && stands_alone(slice[start - 1].c);
            let unit_start = i == 0
                || (split_cjk && slice[start..end].iter().any(|a| stands_alone(a.c)))
                || after_cjk;
            out.push(UnigramPiece {
                id,
                span,
                core,
                unit_start,
            });
        }
        debug_assert!(out.len() > first || slice.is_empty());
    }
}

#[cfg(test)]
mod tests;
