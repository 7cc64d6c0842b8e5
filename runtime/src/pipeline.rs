//! The whole inference path: text → tokens → encoder → emissions → CRF → entities.

use std::ops::Range;

use crate::bundle::{tensor_names, Bundle};
use crate::decode::{self, Decoder, Transitions};
use crate::emissions::emissions;
use crate::encoder::{Encoder, PieceScores, SpecialIds};
use crate::tokenizer::{Encoding, Tokenizer};
use crate::{spans, Error, Result};

/// One entity found in a text.
#[derive(Clone, Debug, PartialEq)]
pub struct TaggedEntity {
    /// Byte range in the tagged text (on char boundaries).
    pub span: Range<usize>,
    /// Index into [`Tagger::type_names`].
    pub type_index: usize,
    /// CRF marginal probability that exactly this entity is present.
    pub score: f32,
}

/// The tagging of one text.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaggedText {
    /// Byte ranges of the words (BERT basic tokens) of the text.
    pub words: Vec<Range<usize>>,
    /// Label index per word (layout of [`decode::Tag`]).
    pub labels: Vec<usize>,
    /// Entities, in text order, non-overlapping.
    pub entities: Vec<TaggedEntity>,
    /// Encoder windows the text needed (more than 1 means it was longer than the positions).
    pub windows: usize,
}

/// A ready-to-run tagger for one bundle and one active type set.
pub struct Tagger {
    tokenizer: Tokenizer,
    encoder: Encoder,
    type_names: Vec<String>,
    prototypes: Vec<f32>,
    transitions: Transitions,
}

impl Tagger {
    /// Builds the tokenizer, encoder plan, prototype matrix and unfolded transitions.
    /// `types` selects the active types by name (default: the bundle's `default_active`).
    pub fn new(bundle: &Bundle, types: Option<&[String]>) -> Result<Tagger> {
        let meta = bundle.metadata();
        let vocab = std::str::from_utf8(bundle.bytes(tensor_names::VOCAB)?).map_err(|e| {
            Error::Bundle(format!("{}: vocabulary is not UTF-8: {e}", bundle.name()))
        })?;
        let tokenizer = Tokenizer::new(&meta.tokenizer, vocab)?;
        if tokenizer.vocab_size() != meta.encoder.vocab_size {
            return Err(Error::Bundle(format!(
                "{}: vocabulary has {} tokens but the encoder expects {}",
                bundle.name(),
                tokenizer.vocab_size(),
                meta.encoder.vocab_size
            )));
        }
        let special = SpecialIds {
            cls: tokenizer.cls_id(),
            sep: tokenizer.sep_id(),
            pad: tokenizer.pad_id(),
        };
        let encoder = Encoder::load(
            bundle.bytes(tensor_names::ENCODER_ONNX)?,
            &meta.encoder,
            special,
        )?;

        let wanted: Vec<String> = match types {
            Some(t) => t.to_vec(),
            None => meta.labels.default_active.clone(),
        };
        let d = meta.encoder.type_dim;
        let bank = bundle.to_f32_vec(tensor_names::PROTOTYPES)?;
        let mut prototypes = Vec::with_capacity(wanted.len() * d);
        let mut type_names = Vec::with_capacity(wanted.len());
        for name in &wanted {
            if type_names.contains(name) {
                continue;
            }
            let ty = meta
                .labels
                .types
                .iter()
                .find(|t| &t.name == name)
                .ok_or_else(|| {
                    let known: Vec<&str> =
                        meta.labels.types.iter().map(|t| t.name.as_str()).collect();
                    Error::Usage(format!(
                        "unknown entity type {name:?}; this bundle has: {}",
                        known.join(", ")
                    ))
                })?;
            let row = bank
                .get(ty.prototype_row * d..(ty.prototype_row + 1) * d)
                .ok_or_else(|| {
                    Error::Bundle(format!(
                        "prototype row {} of type {name:?} is missing",
                        ty.prototype_row
                    ))
                })?;
            prototypes.extend_from_slice(row);
            type_names.push(name.clone());
        }
        if decode::label_count(type_names.len()) > decode::MAX_LABELS {
            return Err(Error::Usage(format!(
                "{} active types is more than the decoder supports ({})",
                type_names.len(),
                (decode::MAX_LABELS - 1) / 2
            )));
        }
        let transitions = decode::unfold(&meta.transitions, type_names.len());
        Ok(Tagger {
            tokenizer,
            encoder,
            type_names,
            prototypes,
            transitions,
        })
    }

    /// Names of the active types, in label order.
    pub fn type_names(&self) -> &[String] {
        &self.type_names
    }

    /// The tokenizer of the bundle.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The encoder of the bundle (mutable to adjust its window, e.g. in tests).
    pub fn encoder_mut(&mut self) -> &mut Encoder {
        &mut self.encoder
    }

    /// Tags texts, splitting the work over up to `threads` threads; results keep input order.
    pub fn tag(&self, texts: &[&str], threads: usize) -> Result<Vec<TaggedText>> {
        let threads = threads.clamp(1, texts.len().max(1));
        if threads == 1 {
            return self.tag_chunk(texts);
        }
        let chunk = texts.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = texts
                .chunks(chunk)
                .map(|part| scope.spawn(move || self.tag_chunk(part)))
                .collect();
            let mut all = Vec::with_capacity(texts.len());
            for h in handles {
                let part = h
                    .join()
                    .map_err(|_| Error::Encoder("a tagging thread panicked".into()))??;
                all.extend(part);
            }
            Ok(all)
        })
    }

    fn tag_chunk(&self, texts: &[&str]) -> Result<Vec<TaggedText>> {
        let encodings: Vec<Encoding> = texts.iter().map(|t| self.tokenizer.encode(t)).collect();
        let ids: Vec<&[u32]> = encodings.iter().map(|e| e.ids.as_slice()).collect();
        let (scores, windows) = self.encoder.encode(&ids)?;
        let mut scratch = Scratch::default();
        Ok(encodings
            .into_iter()
            .zip(scores)
            .zip(windows)
            .map(|((enc, sc), w)| self.decode_text(enc, &sc, w, &mut scratch))
            .collect())
    }

    fn decode_text(
        &self,
        enc: Encoding,
        sc: &PieceScores,
        windows: usize,
        s: &mut Scratch,
    ) -> TaggedText {
        let d = self.encoder.type_dim();
        let n_words = enc.words.len();
        s.boundary.clear();
        s.types.clear();
        for &p in &enc.word_first_piece {
            let p = p as usize;
            s.boundary.extend_from_slice(&sc.boundary[p * 3..p * 3 + 3]);
            s.types.extend_from_slice(&sc.types[p * d..(p + 1) * d]);
        }
        let n_types = self.type_names.len();
        let n_labels = decode::label_count(n_types);
        emissions(
            &s.boundary,
            &s.types,
            d,
            &self.prototypes,
            n_types,
            &mut s.emissions,
        );
        s.decoder
            .viterbi(&s.emissions, n_labels, &self.transitions, &mut s.path);
        let marginals = decode::marginals(&s.emissions, n_labels, &self.transitions);
        let entities = spans::extract_entities(&s.path, Some(&marginals))
            .into_iter()
            .filter(|e| e.end_word <= n_words && e.start_word < e.end_word)
            .map(|e| TaggedEntity {
                span: enc.words[e.start_word].start..enc.words[e.end_word - 1].end,
                type_index: e.type_index,
                score: e.score,
            })
            .collect();
        TaggedText {
            words: enc.words,
            labels: s.path.clone(),
            entities,
            windows,
        }
    }
}

#[derive(Default)]
struct Scratch {
    boundary: Vec<f32>,
    types: Vec<f32>,
    emissions: Vec<f32>,
    path: Vec<usize>,
    decoder: Decoder,
}
