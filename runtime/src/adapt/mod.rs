//! `ner-edge adapt`: new entity types from a few examples or a description, as a label pack.
//!
//! For each new type (DESIGN §3, MANNER):
//!
//! 1. **Support vectors**: every support sentence is tokenised and encoded with the bundle's
//!    own tokenizer and encoder; a mention contributes the type vector of the first word piece
//!    of each word it overlaps (the same vectors `predict` scores against prototypes).
//!    A description (`--type-name NAME=DESCRIPTION`) is encoded as a sentence and contributes the
//!    first-piece vector of each of its words.
//! 2. **Memory retrieval**: entropic OT (Sinkhorn, uniform marginals, ε = 0.1) between the
//!    support vectors and every label-memory slot; the slot with the smallest `⟨C, T⟩` is
//!    barycentrically mapped next to the support.
//! 3. **Prior prototype**: `μ = γ·MLP([mean(support); mean(mapped)]) + (1 − γ)·mean(support)`,
//!    `γ = 0.5`, with the bundle's prior MLP or, without one, `MLP([s; m]) = m`.
//!
//! No minimum support size and no padding: OT with uniform marginals is defined for any
//! `n ≥ 1` support vectors, and MANNER-style padding by repeating the support points `k` times
//! leaves the plan (up to the factor `k`), the retrieved slot and the mapped points unchanged
//! (`tests::padding_by_repetition_changes_nothing`), while a partial repetition would weight some
//! support points more than others for no reason.
//!
//! With `--tune-heads N` ([`AdaptOptions::tune`]), the boundary head and type projection are
//! then tuned on the support set with the prototypes fixed ([`tune`]); the pack carries the
//! tuned heads and `predict` scores its types with them.
//!
//! The label memory and its optimal-transport retrieval live in [`memory`], which nothing
//! but adaptation uses (the trainer checks its Sinkhorn kernel against it).
//!
//! Which vectors make the support set ([`Method`]): a type's examples plus its description's
//! vectors when it has both, the description alone when it has no example, the examples alone
//! when it has no description or with `examples_only`. Combining scored higher than examples
//! alone on all three Hou et al. episode sets (`benches/RESULTS.md`, "Head tuning ... and type
//! descriptions").

pub mod bio;
pub mod columns;
pub mod memory;
pub mod support;
pub mod tune;

use std::collections::HashMap;

use crate::associated_memory::{AssociatedMemory, MemoryBank};
use crate::bundle::{tensor_names, xxh64, Bundle};
use crate::decode::{self, Tag};
use crate::encoder::{Encoder, Heads, PieceSeq};
use crate::pack::{
    valid_type_name, BaseBundle, Method, PackMetadata, PackProvenance, PackType, TunedHeads,
};
use crate::pipeline::load_model;
use crate::tokenizer::{Encoding, Tokenizer};
use crate::{Error, Result};
use memory::{mean_rows, prior_prototype, PriorMlp, PriorNet, Retriever, PRIOR_GAMMA};

pub use tune::{TuneOptions, TuneReport};

use bio::Scheme;
use columns::Sentence;

pub use support::{
    detect_format, parse_support, read_support, SupportEntity, SupportFormat, SupportSentence,
    SupportSet, DEFAULT_MAX_SUPPORT_BYTES,
};

/// Sentences encoded per encoder call while reading the support set.
const CHUNK_SENTENCES: usize = 32;

/// Options of [`adapt`].
#[derive(Clone, Debug, Default)]
pub struct AdaptOptions {
    /// `(name, description)` pairs from `--type-name NAME=DESCRIPTION`.
    pub descriptions: Vec<(String, String)>,
    /// The exact types of the pack (`--types`), in order; `None`: every type of the support
    /// set (in order of first mention), then every described type not among them.
    pub types: Option<Vec<String>>,
    /// Use only the examples of a type that has both examples and a description
    /// ([`Method::Examples`]) instead of adding the description's vectors ([`Method::Combined`]).
    pub examples_only: bool,
    /// Written into the pack's provenance notes.
    pub notes: String,
    /// Tune the boundary head and type projection on the support set after building the
    /// prototypes ([`tune`]); needs an encoder that exposes its hidden state.
    pub tune: Option<TuneOptions>,
}

/// The result of [`adapt`]: pack metadata and prototypes, ready for
/// [`crate::pack::write_pack`].
#[derive(Clone, Debug, PartialEq)]
pub struct Adapted {
    /// The pack's metadata: types, how each was made, base bundle, provenance.
    pub metadata: PackMetadata,
    /// `[metadata.types.len(), type_dim]`, row `i` = `metadata.types[i]`.
    pub prototypes: Vec<f32>,
    /// The tuned heads, exactly when `metadata.tuned_heads` is set.
    pub heads: Option<Heads>,
    /// On a bundle with an associated memory: the support sentences as memory sentences (word
    /// keys under the bundle's `Wk`, labels over the pack's types), which the pack's types read
    /// at tagging time.
    pub memory: Option<MemoryBank>,
}

impl Adapted {
    /// The label pack of this adaptation, with everything it made: prototypes, tuned heads and
    /// the support sentences' memory ([`crate::pack::full_pack_to_bytes`]).
    pub fn to_pack_bytes(&self) -> Result<Vec<u8>> {
        crate::pack::full_pack_to_bytes(
            &self.metadata,
            &self.prototypes,
            self.heads.as_ref(),
            None,
            self.memory.as_ref(),
        )
    }
}

/// How [`Adapter::adapt_tokens`] uses type descriptions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DescriptionUse {
    /// Examples only; descriptions are recorded but not used ([`Method::Examples`]).
    #[default]
    Ignore,
    /// A described type's description vectors join its example vectors ([`Method::Combined`]).
    Combine,
    /// Description vectors only, the examples serve only to name the types
    /// ([`Method::ZeroShot`]); every type needs a description.
    Only,
}

/// Options of [`Adapter::adapt_tokens`].
#[derive(Clone, Debug, Default)]
pub struct EpisodeOptions {
    /// `(type name, description)` pairs; types of the support set without one use examples.
    pub descriptions: Vec<(String, String)>,
    /// Whether the descriptions replace, join or are ignored beside the examples.
    pub use_descriptions: DescriptionUse,
    /// Head tuning after the prototypes (not with [`DescriptionUse::Only`]).
    pub tune: Option<TuneOptions>,
}

/// One support sentence kept for head tuning: first-piece hidden states and, per word, the
/// mention type and whether the word begins it.
struct PendingSentence {
    hidden: Vec<f32>,
    marks: Vec<Option<(String, bool)>>,
}

/// Appends the first-piece hidden state of every word of `first_pieces` from `hidden`
/// (`[pieces, width]`).
fn word_hidden(hidden: &[f32], width: usize, first_pieces: &[u32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(first_pieces.len() * width);
    for &p in first_pieces {
        let p = p as usize;
        out.extend_from_slice(&hidden[p * width..(p + 1) * width]);
    }
    out
}

/// One mention of a support sentence: a non-empty run of its words and the type.
struct Mention {
    words: std::ops::Range<usize>,
    type_name: String,
}

/// A support sentence's word type vectors (`[words, d]`) and, per word, the mention type and
/// whether the word begins it.
type SentenceWords = (Vec<f32>, Vec<Option<(String, bool)>>);

/// What [`Adapter::collect`] gathers from a support set.
#[derive(Default)]
struct Collection {
    /// Mentioned types, in order of first mention.
    order: Vec<String>,
    examples: HashMap<String, Collected>,
    /// Sentences kept for head tuning.
    pending: Vec<PendingSentence>,
    /// Every support sentence's word type vectors (`[words, d]`) and per-word marks.
    words: Vec<SentenceWords>,
}

#[derive(Default)]
struct Collected {
    vectors: Vec<f32>,
    sentences: usize,
    entities: usize,
}

/// Builds the prototypes of new types on `bundle` from `support` (may be `None` for
/// description-only adaptation) and `opts`.
///
/// Errors ([`Error::Input`], naming the support file and line where there is one): an empty
/// support set; a mention that covers no word the tokenizer keeps; a type in `opts.types`
/// with neither examples nor a description; an invalid type name or an empty description;
/// nothing to adapt. Encoder failures are [`Error::Encoder`].
///
/// Loads the bundle's encoder on every call; to adapt many times on one bundle, load the model
/// once (e.g. a [`crate::pipeline::Tagger`]'s) and use an [`Adapter`] on it, which gives
/// identical results.
pub fn adapt(
    bundle: &Bundle,
    support: Option<&SupportSet>,
    opts: &AdaptOptions,
) -> Result<Adapted> {
    let (tokenizer, encoder) = load_model(bundle, opts.tune.is_some())?;
    Adapter::new(bundle, &tokenizer, &encoder)?.adapt(support, opts)
}

/// Adaptation on an already loaded tokenizer and encoder of one bundle, with the bundle's label
/// memory and prior MLP read once.
pub struct Adapter<'a> {
    bundle: &'a Bundle,
    tokenizer: &'a Tokenizer,
    encoder: &'a Encoder,
    /// `[memory rows, type_dim]`, the bundle's label memory.
    memory: Vec<f32>,
    prior: Option<PriorNet>,
}

impl<'a> Adapter<'a> {
    /// An adapter for `bundle` using `tokenizer` and `encoder`, which must be the bundle's own
    /// (as loaded by [`crate::pipeline::Tagger::new`], whose accessors give them); reads the
    /// label memory and prior MLP. Errors: [`Error::Bundle`] for an inconsistent bundle.
    pub fn new(
        bundle: &'a Bundle,
        tokenizer: &'a Tokenizer,
        encoder: &'a Encoder,
    ) -> Result<Adapter<'a>> {
        let memory = bundle.to_f32_vec(tensor_names::LABEL_MEMORY)?;
        let prior = PriorNet::from_bundle(bundle)?;
        Ok(Adapter {
            bundle,
            tokenizer,
            encoder,
            memory,
            prior,
        })
    }

    /// Exactly [`adapt`] on this adapter's bundle, without loading the encoder again.
    pub fn adapt(&self, support: Option<&SupportSet>, opts: &AdaptOptions) -> Result<Adapted> {
        if let Some(s) = support {
            if s.sentences.is_empty() {
                return Err(Error::Input(format!(
                    "{}: empty support set: no sentences (expected CoNLL, token<TAB>tag, JSONL \
                     or inline markup)",
                    s.source
                )));
            }
        }
        let source = support.map_or("<no support file>", |s| s.source.as_str());
        let mut descriptions: Vec<(String, String)> = Vec::new();
        for (name, text) in &opts.descriptions {
            if !valid_type_name(name) {
                return Err(Error::Usage(format!(
                    "--type-name {name:?}: a type name must be non-empty without whitespace"
                )));
            }
            if text.trim().is_empty() {
                return Err(Error::Usage(format!(
                    "--type-name {name}=…: the description is empty"
                )));
            }
            if descriptions.iter().any(|(n, _)| n == name) {
                return Err(Error::Usage(format!("--type-name {name} is given twice")));
            }
            descriptions.push((name.clone(), text.clone()));
        }
        if let Some(types) = &opts.types {
            if let Some(t) = types.iter().find(|t| !valid_type_name(t)) {
                return Err(Error::Usage(format!(
                    "--types: {t:?} is not a type name (non-empty, no whitespace)"
                )));
            }
        }

        let tokenizer = self.tokenizer;
        let tuning = opts.tune.is_some();
        if tuning {
            self.base_heads()?;
        }
        let wanted = |ty: &str| {
            opts.types
                .as_ref()
                .is_none_or(|t| t.iter().any(|x| x == ty))
        };
        let sentences = support.map_or(&[][..], |s| s.sentences.as_slice());
        let normalised = sentences.iter().map(|sentence| {
            let enc = tokenizer.encode(&sentence.text);
            let mut mentions = Vec::with_capacity(sentence.entities.len());
            for e in sentence.entities.iter().filter(|e| wanted(&e.type_name)) {
                let first = enc
                    .words
                    .iter()
                    .position(|w| w.start < e.span.end && e.span.start < w.end);
                let Some(first) = first else {
                    return Err(Error::Input(format!(
                        "{source}: line {}: mention {:?} of {} covers no word the tokenizer \
                         keeps (only spaces, control or unknown characters)",
                        sentence.line,
                        &sentence.text[e.span.clone()],
                        e.type_name
                    )));
                };
                let end = enc.words[first..]
                    .iter()
                    .take_while(|w| w.start < e.span.end && e.span.start < w.end)
                    .count();
                mentions.push(Mention {
                    words: first..first + end,
                    type_name: e.type_name.clone(),
                });
            }
            Ok((enc, mentions))
        });
        let Collection {
            order,
            examples,
            pending,
            words,
        } = self.collect(normalised, tuning)?;

        let type_list: Vec<String> = match &opts.types {
            Some(t) => {
                let mut list: Vec<String> = Vec::new();
                for name in t {
                    if !list.contains(name) {
                        list.push(name.clone());
                    }
                }
                list
            }
            None => {
                let mut list = order.clone();
                for (name, _) in &descriptions {
                    if !list.contains(name) {
                        list.push(name.clone());
                    }
                }
                list
            }
        };
        if type_list.is_empty() {
            return Err(Error::Input(format!(
                "{source}: no entity mentions and no --type-name description: nothing to adapt"
            )));
        }
        for name in &type_list {
            if !examples.contains_key(name) && !descriptions.iter().any(|(n, _)| n == name) {
                return Err(Error::Input(format!(
                    "{source}: type {name} has zero examples and no description; label some \
                     mentions as {name} or pass --type-name \"{name}=DESCRIPTION\""
                )));
            }
        }

        let described: Vec<&(String, String)> = descriptions
            .iter()
            .filter(|(n, _)| type_list.contains(n))
            .collect();
        let description_vectors = self.description_vectors(&described)?;

        let mut adapted = self.prototypes(
            &type_list,
            &examples,
            &descriptions,
            &description_vectors,
            !opts.examples_only,
            PackProvenance {
                created_by: String::new(),
                support_file: support.map(|s| s.source.clone()).unwrap_or_default(),
                support_xxh64: support.map(|s| s.xxh64.clone()).unwrap_or_default(),
                prior: String::new(),
                notes: opts.notes.clone(),
            },
        )?;
        adapted.memory = self.support_memory(&words, &type_list)?;
        match &opts.tune {
            Some(t) => {
                let tuned = self.tune(adapted, &pending, t)?;
                self.with_tuned_memory(tuned, &pending, &type_list)
            }
            None => Ok(adapted),
        }
    }

    /// The one loop over support sentences, normalised to an encoding and its mentions as
    /// word ranges: encodes them [`CHUNK_SENTENCES`] at a time, gathers for every mentioned type
    /// the type vector of the first piece of each of its words, counts its mentions and the
    /// sentences that mention it, and (when `tuning`) keeps each sentence's first-piece hidden
    /// states and per-word marks. Types are listed in order of first mention.
    fn collect(
        &self,
        sentences: impl Iterator<Item = Result<(Encoding, Vec<Mention>)>>,
        tuning: bool,
    ) -> Result<Collection> {
        let d = self.encoder.type_dim();
        let width = self.encoder.hidden_dim();
        let mut out = Collection::default();
        let mut chunk: Vec<(Encoding, Vec<Mention>)> = Vec::with_capacity(CHUNK_SENTENCES);
        let mut sentences = sentences.peekable();
        while sentences.peek().is_some() {
            chunk.clear();
            for item in sentences.by_ref().take(CHUNK_SENTENCES) {
                chunk.push(item?);
            }
            let ids: Vec<PieceSeq<'_>> = chunk.iter().map(|(enc, _)| PieceSeq::from(enc)).collect();
            let (scores, _) = self.encoder.encode(&ids)?;
            for ((enc, mentions), sc) in chunk.iter().zip(&scores) {
                let mut seen: Vec<&str> = Vec::new();
                let mut marks: Vec<Option<(String, bool)>> = vec![None; enc.words.len()];
                for m in mentions {
                    if !out.examples.contains_key(&m.type_name) {
                        out.order.push(m.type_name.clone());
                    }
                    let c = out.examples.entry(m.type_name.clone()).or_default();
                    for &p in &enc.word_first_piece[m.words.clone()] {
                        let p = p as usize;
                        c.vectors.extend_from_slice(&sc.types[p * d..(p + 1) * d]);
                    }
                    c.entities += 1;
                    if !seen.contains(&m.type_name.as_str()) {
                        seen.push(&m.type_name);
                        c.sentences += 1;
                    }
                    for w in m.words.clone() {
                        marks[w] = Some((m.type_name.clone(), w == m.words.start));
                    }
                }
                out.words.push((
                    word_hidden(&sc.types, d, &enc.word_first_piece),
                    marks.clone(),
                ));
                if tuning {
                    out.pending.push(PendingSentence {
                        hidden: word_hidden(&sc.hidden, width, &enc.word_first_piece),
                        marks,
                    });
                }
            }
        }
        Ok(out)
    }

    /// The support sentences as associated-memory sentences when the bundle has a memory:
    /// keys under the bundle's `Wk` (rounded to f16 as a bundle stores them), labels over
    /// `type_list` (words of other types are O).
    fn support_memory(
        &self,
        words: &[SentenceWords],
        type_list: &[String],
    ) -> Result<Option<MemoryBank>> {
        let d = self.encoder.type_dim();
        let n_types = self.bundle.metadata().labels.types.len();
        let Some(memory) = AssociatedMemory::from_bundle(self.bundle, d, n_types)? else {
            return Ok(None);
        };
        let p = &memory.params;
        let mut bank = MemoryBank::empty(p.width());
        let mut keys = Vec::new();
        for (types, marks) in words {
            let labels: Vec<u16> = marks
                .iter()
                .map(|m| {
                    let typed = m.as_ref().and_then(|(name, begins)| {
                        let k = type_list.iter().position(|t| t == name)?;
                        Some(if *begins { Tag::B(k) } else { Tag::I(k) }.to_index())
                    });
                    typed.unwrap_or(0).min(usize::from(u16::MAX)) as u16
                })
                .collect();
            p.project(&p.key, types, &mut keys);
            AssociatedMemory::round_keys_to_f16(&mut keys);
            bank.push_sentence(&keys, &labels)?;
        }
        Ok(Some(bank))
    }

    /// `adapted` whose memory (if any) is rebuilt from the type vectors its tuned heads give
    /// the support sentences, the vectors its types are scored with.
    fn with_tuned_memory(
        &self,
        mut adapted: Adapted,
        pending: &[PendingSentence],
        type_list: &[String],
    ) -> Result<Adapted> {
        if let (Some(heads), Some(_)) = (&adapted.heads, &adapted.memory) {
            let mut boundary = Vec::new();
            let words: Vec<SentenceWords> = pending
                .iter()
                .map(|p| {
                    let mut types = Vec::new();
                    heads.apply(&p.hidden, &mut boundary, &mut types);
                    (types, p.marks.clone())
                })
                .collect();
            adapted.memory = self.support_memory(&words, type_list)?;
        }
        Ok(adapted)
    }

    /// The type vectors of the first piece of every word of each description, by type name.
    /// Errors ([`Error::Usage`]): a description without words.
    fn description_vectors<'n>(
        &self,
        described: &[&'n (String, String)],
    ) -> Result<HashMap<&'n str, Vec<f32>>> {
        let d = self.encoder.type_dim();
        let mut out = HashMap::new();
        if described.is_empty() {
            return Ok(out);
        }
        let encodings: Vec<_> = described
            .iter()
            .map(|(_, text)| self.tokenizer.encode(text))
            .collect();
        let ids: Vec<PieceSeq<'_>> = encodings.iter().map(PieceSeq::from).collect();
        let (scores, _) = self.encoder.encode(&ids)?;
        for (((name, text), enc), sc) in described.iter().zip(&encodings).zip(&scores) {
            if enc.words.is_empty() {
                return Err(Error::Usage(format!(
                    "--type-name {name}={text:?}: the description has no words"
                )));
            }
            let mut v = Vec::with_capacity(enc.words.len() * d);
            for &p in &enc.word_first_piece {
                let p = p as usize;
                v.extend_from_slice(&sc.types[p * d..(p + 1) * d]);
            }
            out.insert(name.as_str(), v);
        }
        Ok(out)
    }

    /// The bundle's heads as read from the encoder graph; an error when the encoder does not
    /// expose its hidden state.
    fn base_heads(&self) -> Result<&Heads> {
        self.encoder.heads().ok_or_else(|| {
            Error::Usage(
                "head tuning needs the encoder loaded with its hidden state exposed \
                 (Encoder::load_exposing_hidden)"
                    .into(),
            )
        })
    }

    /// Tunes the heads of `adapted` on `pending` ([`tune::tune_heads`]); mentions of types not
    /// in the pack count as `O`.
    fn tune(
        &self,
        mut adapted: Adapted,
        pending: &[PendingSentence],
        opts: &TuneOptions,
    ) -> Result<Adapted> {
        let base = self.base_heads()?;
        let names: Vec<&str> = adapted
            .metadata
            .types
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        let sentences: Vec<tune::TuneSentence> = pending
            .iter()
            .map(|p| {
                let mut labels = Vec::with_capacity(p.marks.len());
                let mut prev: Option<Tag> = None;
                for mark in &p.marks {
                    let tag = match mark {
                        Some((name, begin)) => match names.iter().position(|n| n == name) {
                            Some(k) if *begin => Tag::B(k),
                            Some(k) if prev == Some(Tag::B(k)) || prev == Some(Tag::I(k)) => {
                                Tag::I(k)
                            }
                            Some(k) => Tag::B(k),
                            None => Tag::O,
                        },
                        None => Tag::O,
                    };
                    labels.push(tag.to_index());
                    prev = Some(tag);
                }
                tune::TuneSentence {
                    hidden: p.hidden.clone(),
                    labels,
                }
            })
            .collect();
        let n_types = names.len();
        let transitions = decode::unfold(&adapted.metadata.transitions, n_types);
        let (heads, report) = tune::tune_heads(
            base,
            &adapted.prototypes,
            n_types,
            &transitions,
            &sentences,
            opts,
        )
        .map_err(|e| Error::Input(format!("{}: {e}", adapted.metadata.provenance.support_file)))?;
        adapted.metadata.tuned_heads = Some(TunedHeads {
            hidden: heads.hidden,
            steps: report.steps,
            learning_rate: opts.learning_rate,
            l2: opts.l2,
            loss_before: report.loss_before,
            loss_after: report.loss_after,
        });
        adapted.heads = Some(heads);
        Ok(adapted)
    }

    /// Adapts on pre-tokenised BIO sentences (e.g. a few-shot episode's support set): the
    /// types are those mentioned, in order of first mention, each from examples only
    /// ([`Method::Examples`]). Each sentence is encoded word by word
    /// ([`Tokenizer::encode_words`], the alignment `predict` uses for given words), and a
    /// mention contributes the type vector of the first piece of each of its words; the
    /// memory retrieval and prior are those of [`Adapter::adapt`].
    ///
    /// Entities are read with conlleval's chunking ([`bio::spans`]), so a stray
    /// `I-X` starts a mention. Errors ([`Error::Input`], naming `source` and the 1-based
    /// sentence): no sentences, token and tag counts that differ, a tag that is not BIO, no
    /// mention at all.
    ///
    /// `opts` may add type descriptions (used as [`EpisodeOptions::descriptions`] says) and head
    /// tuning on the support sentences ([`tune`]).
    pub fn adapt_tokens(
        &self,
        sentences: &[Sentence],
        source: &str,
        opts: &EpisodeOptions,
    ) -> Result<Adapted> {
        let tune = opts.tune.as_ref();
        if tune.is_some() && opts.use_descriptions == DescriptionUse::Only {
            return Err(Error::Usage(
                "head tuning learns from the support examples, so it cannot be combined with \
                 description-only (zero-shot) prototypes"
                    .into(),
            ));
        }
        if sentences.is_empty() {
            return Err(Error::Input(format!(
                "{source}: empty support set: no sentences"
            )));
        }
        if tune.is_some() {
            self.base_heads()?;
        }
        let mut hashed = String::new();
        let mut normalised = Vec::with_capacity(sentences.len());
        for (i, sentence) in sentences.iter().enumerate() {
            let at = i + 1;
            if sentence.tokens.len() != sentence.tags.len() {
                return Err(Error::Input(format!(
                    "{source}: sentence {at}: {} tokens but {} tags",
                    sentence.tokens.len(),
                    sentence.tags.len()
                )));
            }
            let spans = bio::spans(&sentence.tags, Scheme::Bio)
                .map_err(|e| Error::Input(format!("{source}: sentence {at}: {e}")))?;
            hashed.push_str(&sentence.tokens.join(" "));
            hashed.push('\t');
            hashed.push_str(&sentence.tags.join(" "));
            hashed.push('\n');
            let words: Vec<&str> = sentence.tokens.iter().map(String::as_str).collect();
            let mentions = spans
                .into_iter()
                .filter(|s| s.start < s.end && s.end <= words.len())
                .map(|s| Mention {
                    words: s.start..s.end,
                    type_name: s.kind,
                })
                .collect();
            normalised.push((words, mentions));
        }
        let Collection {
            order,
            mut examples,
            pending,
            words,
        } = self.collect(
            normalised
                .into_iter()
                .map(|(words, mentions)| Ok((self.tokenizer.encode_words(&words), mentions))),
            tune.is_some(),
        )?;
        if order.is_empty() {
            return Err(Error::Input(format!(
                "{source}: no entity mentions: nothing to adapt"
            )));
        }
        let described: Vec<&(String, String)> = match opts.use_descriptions {
            DescriptionUse::Ignore => Vec::new(),
            DescriptionUse::Combine | DescriptionUse::Only => opts
                .descriptions
                .iter()
                .filter(|(n, _)| order.contains(n))
                .collect(),
        };
        if opts.use_descriptions == DescriptionUse::Only {
            if let Some(name) = order
                .iter()
                .find(|n| !described.iter().any(|(d, _)| d == *n))
            {
                return Err(Error::Input(format!(
                    "{source}: type {name} has no description (description-only adaptation)"
                )));
            }
            examples.clear();
        }
        let description_vectors = self.description_vectors(&described)?;
        let mut adapted = self.prototypes(
            &order,
            &examples,
            &opts.descriptions,
            &description_vectors,
            opts.use_descriptions == DescriptionUse::Combine,
            PackProvenance {
                created_by: String::new(),
                support_file: source.to_string(),
                support_xxh64: format!("{:016x}", xxh64(hashed.as_bytes(), 0)),
                prior: String::new(),
                notes: String::new(),
            },
        )?;
        adapted.memory = self.support_memory(&words, &order)?;
        match tune {
            Some(t) => {
                let tuned = self.tune(adapted, &pending, t)?;
                self.with_tuned_memory(tuned, &pending, &order)
            }
            None => Ok(adapted),
        }
    }

    /// Steps 2 and 3 of the module docs for every type of `type_list`, each of which has
    /// examples or a description. `provenance` gives the support file, its hash and the notes.
    fn prototypes(
        &self,
        type_list: &[String],
        examples: &HashMap<String, Collected>,
        descriptions: &[(String, String)],
        description_vectors: &HashMap<&str, Vec<f32>>,
        combine_descriptions: bool,
        provenance: PackProvenance,
    ) -> Result<Adapted> {
        let source = if provenance.support_file.is_empty() {
            "<no support file>"
        } else {
            provenance.support_file.as_str()
        };
        let bundle = self.bundle;
        let d = self.encoder.type_dim();
        let slots = &bundle.metadata().label_memory.slots;
        let prior = &self.prior;
        let forward = |x: &[f32]| prior.as_ref().map_or_else(Vec::new, |net| net.forward(x));
        let mlp: Option<PriorMlp<'_>> = prior.as_ref().map(|_| &forward as PriorMlp<'_>);
        let mut retriever = Retriever::new();
        let mut types = Vec::with_capacity(type_list.len());
        let mut prototypes = Vec::with_capacity(type_list.len() * d);
        for (row, name) in type_list.iter().enumerate() {
            let ex = examples.get(name);
            let desc = description_vectors.get(name.as_str());
            let (method, vectors): (Method, Vec<f32>) = match (ex, desc) {
                (Some(e), Some(dv)) if combine_descriptions => {
                    let mut v = e.vectors.clone();
                    v.extend_from_slice(dv);
                    (Method::Combined, v)
                }
                (Some(e), _) => (Method::Examples, e.vectors.clone()),
                (None, Some(dv)) => (Method::ZeroShot, dv.clone()),
                (None, None) => {
                    return Err(Error::Input(format!(
                        "{source}: type {name} has zero examples and no description"
                    )))
                }
            };
            let n = vectors.len() / d;
            let support_mean = mean_rows(&vectors, n, d).ok_or_else(|| {
                Error::Input(format!("{source}: type {name}: no support vectors"))
            })?;
            let retrieval = retriever.retrieve(&self.memory, slots, d, &vectors, n);
            let (prototype, slot, distance) = match &retrieval {
                Some(r) => {
                    let rows = slots[r.slot].rows;
                    let mapped_mean =
                        mean_rows(&r.mapped, rows, d).unwrap_or_else(|| support_mean.clone());
                    let mu = prior_prototype(&support_mean, &mapped_mean, mlp, PRIOR_GAMMA)
                        .unwrap_or_else(|| support_mean.clone());
                    (mu, Some(slots[r.slot].type_name.clone()), Some(r.distance))
                }
                None => (support_mean, None, None),
            };
            if prototype.iter().any(|v| !v.is_finite()) {
                return Err(Error::Encoder(format!(
                    "type {name}: the prototype is not finite (encoder outputs overflowed)"
                )));
            }
            prototypes.extend_from_slice(&prototype);
            types.push(PackType {
                name: name.clone(),
                description: descriptions
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, t)| t.clone())
                    .unwrap_or_default(),
                prototype_row: row,
                method,
                support_sentences: ex.map_or(0, |e| e.sentences),
                support_entities: ex.map_or(0, |e| e.entities),
                support_tokens: n,
                memory_slot: slot,
                memory_distance: distance,
            });
        }
        let meta = bundle.metadata();
        Ok(Adapted {
            memory: None,
            metadata: PackMetadata {
                base_bundle: BaseBundle {
                    content_id: bundle.content_id(),
                    name: bundle.name().to_string(),
                    type_dim: d,
                },
                types,
                transitions: meta.transitions.clone(),
                provenance: PackProvenance {
                    created_by: format!("ner-edge {}", env!("CARGO_PKG_VERSION")),
                    prior: if prior.is_some() {
                        "bundle"
                    } else {
                        "fallback"
                    }
                    .to_string(),
                    ..provenance
                },
                tuned_heads: None,
                prompts: None,
            },
            prototypes,
            heads: None,
        })
    }
}

#[cfg(test)]
mod tests;
