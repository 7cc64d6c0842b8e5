//! The whole inference path: text → tokens → encoder → emissions → CRF → entities.
//!
//! Active types come in label groups: the bundle's own active types, then one group per label
//! pack. Each group is decoded as its own CRF (own type softmax, own unfolded CDT transitions),
//! so adding a pack leaves the emissions, paths and scores of every other group bit-identical.
//! A pack with tuned heads (`adapt --tune-heads`) scores its group with its own boundary head and
//! type projection applied to the encoder's last hidden state; every other group keeps the
//! bundle's heads. The groups' entities are then merged (see [`Tagger::tag`]).

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::associated_memory::{self, AssociatedMemory, ReadScratch};
use crate::bundle::{tensor_names, Bundle, CdtParams};
use crate::decode::{self, Decoder, Tag, Transitions};
use crate::emissions::emissions_with_offsets;
use crate::encoder::{
    ContextFusion, ContextGate, ContextWindow, Encoder, Heads, PieceScores, PieceSeq, Prompts,
    SpecialIds,
};
use crate::pack::LabelPack;
use crate::tokenizer::{Encoding, Tokenizer};
use crate::{spans, Error, Result};

mod groups;
mod merge;

pub use groups::{resolve_groups, TypeSource};

/// One entity found in a text.
#[derive(Clone, Debug, PartialEq)]
pub struct TaggedEntity {
    /// Byte range in the tagged text (on char boundaries).
    pub span: Range<usize>,
    /// Index into [`Tagger::type_names`].
    pub type_index: usize,
    /// CRF marginal probability that exactly this entity is present, under the CRF of the label
    /// group its type belongs to.
    pub score: f32,
}

/// The tagging of one text.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaggedText {
    /// Byte ranges of the words (BERT basic tokens) of the text.
    pub words: Vec<Range<usize>>,
    /// Label index per word (layout of [`decode::Tag`], type indices into
    /// [`Tagger::type_names`]).
    pub labels: Vec<usize>,
    /// Entities, in text order, non-overlapping.
    pub entities: Vec<TaggedEntity>,
    /// Encoder windows the text needed (more than 1 means it was longer than the positions).
    pub windows: usize,
    /// With context ([`Tagger::tag_in_context`]): the mean opening of the context gate over
    /// the text's pieces (0: the context was ignored, 1: only the encoding with context was
    /// used). `None` when the text was encoded without context.
    pub context_opening: Option<f32>,
}

/// Time spent in each stage of [`Tagger::tag`] and [`Tagger::tag_words`] since the tagger was
/// built, summed over calls (wall time of the stage, whatever the thread count).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StageTimes {
    /// Tokenizing the texts into word pieces.
    pub tokenize: std::time::Duration,
    /// Running the encoder on every batch.
    pub encode: std::time::Duration,
    /// Emissions, CRF decoding, marginals, entity spans and group merging.
    pub decode: std::time::Duration,
}

/// [`StageTimes`] as atomic nanosecond counters, so that `&Tagger` can add to them.
#[derive(Default)]
struct StageClock {
    tokenize: AtomicU64,
    encode: AtomicU64,
    decode: AtomicU64,
}

impl StageClock {
    fn add(counter: &AtomicU64, since: Instant) {
        let nanos = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        counter.fetch_add(nanos, Ordering::Relaxed);
    }

    fn read(&self) -> StageTimes {
        let d = |c: &AtomicU64| Duration::from_nanos(c.load(Ordering::Relaxed));
        StageTimes {
            tokenize: d(&self.tokenize),
            encode: d(&self.encode),
            decode: d(&self.decode),
        }
    }
}

/// One label group: types decoded together under one CRF.
struct LabelGroup {
    /// Index of the group's first type in [`Tagger::type_names`].
    offset: usize,
    n_types: usize,
    /// `[decoded, d]`: the group's prototypes, then the "other" prototype when the bundle has
    /// one.
    prototypes: Vec<f32>,
    /// Types the CRF decodes: `n_types`, plus one for "other" (whose spans are not reported).
    decoded: usize,
    /// Unfolded for `decoded` types.
    transitions: Transitions,
    /// The CDT numbers `transitions` was unfolded from.
    cdt: CdtParams,
    /// The group's own heads (a pack with tuned heads); `None`: the bundle's.
    heads: Option<Heads>,
    /// Which encoder pass scores the group: 0 the bundle's encoder, `i` the prompted encoder
    /// `i - 1` of [`Tagger::prompted`] (a pack with prompts).
    pass: usize,
    /// The associated memory the group reads (the bundle's for the bundle's group, a pack's
    /// support sentences for its group), when there is one.
    memory: Option<GroupMemory>,
}

/// An associated memory as one group reads it.
struct GroupMemory {
    memory: Arc<AssociatedMemory>,
    /// Each memory type's index among the group's types (`None`: not decoded here).
    types: Vec<Option<usize>>,
    /// The label map built from `types` ([`associated_memory::group_label_map`]).
    map: Vec<u16>,
}

impl LabelGroup {
    /// A group of `n_types` types with `prototypes` (`[n_types, d]`), decoded beside `other`
    /// (`[d]`) when given.
    fn new(
        offset: usize,
        n_types: usize,
        mut prototypes: Vec<f32>,
        other: Option<&[f32]>,
        cdt: &CdtParams,
        heads: Option<Heads>,
    ) -> LabelGroup {
        let decoded = n_types + usize::from(other.is_some() && n_types > 0);
        if decoded > n_types {
            prototypes.extend_from_slice(other.unwrap_or_default());
        }
        LabelGroup {
            offset,
            n_types,
            prototypes,
            decoded,
            transitions: decode::unfold(cdt, decoded),
            cdt: cdt.clone(),
            heads,
            pass: 0,
            memory: None,
        }
    }

    /// Reads `memory`, whose type `k` is the group's type `types[k]` (`None`: not decoded
    /// here).
    fn read_memory(&mut self, memory: Arc<AssociatedMemory>, types: Vec<Option<usize>>) {
        let other = (self.decoded > self.n_types).then_some(self.n_types);
        let map = associated_memory::group_label_map(&types, other, self.decoded);
        self.memory = Some(GroupMemory { memory, types, map });
    }

    /// Whether the group scores with type vectors of its own rather than the bundle encoder's.
    fn own_vectors(&self) -> bool {
        self.heads.is_some() || self.pass > 0
    }

    /// The same group decoded without its "other" prototype.
    fn without_other(&mut self, d: usize) {
        if self.decoded > self.n_types {
            self.prototypes.truncate(self.n_types * d);
            self.decoded = self.n_types;
            self.transitions = decode::unfold(&self.cdt, self.n_types);
            if let Some(m) = self.memory.take() {
                self.read_memory(m.memory, m.types);
            }
        }
    }
}

/// The bundle's "none of these types" prototypes (`labels.other`, `[2, d]`), if it has them.
fn other_prototypes(bundle: &Bundle) -> Result<Option<Vec<f32>>> {
    if bundle.tensor_info(tensor_names::OTHER_PROTOTYPES).is_err() {
        return Ok(None);
    }
    let rows = bundle.to_f32_vec(tensor_names::OTHER_PROTOTYPES)?;
    if rows.iter().any(|x| !x.is_finite()) {
        return Err(Error::Bundle(format!(
            "{}: tensor {:?} has non-finite values",
            bundle.name(),
            tensor_names::OTHER_PROTOTYPES
        )));
    }
    Ok(Some(rows))
}

/// A candidate type while the groups are assembled: its name and prototype.
struct Candidate {
    name: String,
    prototype: Vec<f32>,
}

/// A ready-to-run tagger for one bundle, its label packs and one active type set.
pub struct Tagger {
    tokenizer: Tokenizer,
    encoder: Encoder,
    type_names: Vec<String>,
    groups: Vec<LabelGroup>,
    /// The bundle's "other" prototypes `[2, d]`: row 0 beside bank types, row 1 beside types
    /// adapted from examples.
    other: Option<Vec<f32>>,
    /// How texts with context are scored; `None` until [`Tagger::enable_context`].
    fusion: Option<ContextFusion>,
    /// The encoder run with each prompted pack's prompts, in pack order.
    prompted: Vec<Encoder>,
    /// Memory sentences a text reads.
    memory_retrieve: usize,
    clock: StageClock,
}

/// Builds the tokenizer and encoder plan of `bundle`, with the hidden state as an extra output
/// when `expose_hidden` ([`Encoder::load_exposing_hidden`]).
pub(crate) fn load_model(bundle: &Bundle, expose_hidden: bool) -> Result<(Tokenizer, Encoder)> {
    let meta = bundle.metadata();
    let vocab = std::str::from_utf8(bundle.bytes(tensor_names::VOCAB)?)
        .map_err(|e| Error::Bundle(format!("{}: vocabulary is not UTF-8: {e}", bundle.name())))?;
    let charsmap = if meta.tokenizer.kind == "unigram" {
        Some(bundle.bytes(tensor_names::CHARSMAP)?)
    } else {
        None
    };
    let tokenizer = Tokenizer::from_parts(&meta.tokenizer, vocab, charsmap)?;
    if tokenizer.vocab_size() != meta.encoder.vocab_size {
        return Err(Error::Bundle(format!(
            "{}: vocabulary has {} tokens but the encoder expects {}",
            bundle.name(),
            tokenizer.vocab_size(),
            meta.encoder.vocab_size
        )));
    }
    let encoder = load_encoder(bundle, &tokenizer, expose_hidden, None)?;
    Ok((tokenizer, encoder))
}

/// Builds the encoder plan of `bundle`, whose tokenizer is `tokenizer` (for the special ids),
/// rewritten to take `prompts` when given ([`Encoder::load_with_prompts`]), then releases the
/// pages of the graph's bytes ([`Bundle::release_pages`]).
fn load_encoder(
    bundle: &Bundle,
    tokenizer: &Tokenizer,
    expose_hidden: bool,
    prompts: Option<&Prompts>,
) -> Result<Encoder> {
    let special = SpecialIds {
        cls: tokenizer.cls_id(),
        sep: tokenizer.sep_id(),
        pad: tokenizer.pad_id(),
    };
    let meta = &bundle.metadata().encoder;
    let onnx = bundle.bytes(tensor_names::ENCODER_ONNX)?;
    let encoder = match (prompts, expose_hidden) {
        (Some(p), _) => Encoder::load_with_prompts(onnx, meta, special, expose_hidden, p),
        (None, true) => Encoder::load_exposing_hidden(onnx, meta, special),
        (None, false) => Encoder::load(onnx, meta, special),
    }?;
    bundle.release_pages(tensor_names::ENCODER_ONNX)?;
    Ok(encoder)
}

impl Tagger {
    /// Builds the tokenizer, encoder plan, prototype matrix and unfolded transitions.
    /// `types` selects the active types by name (default: the bundle's `default_active`).
    pub fn new(bundle: &Bundle, types: Option<&[String]>) -> Result<Tagger> {
        Tagger::with_packs(bundle, &[], types, false)
    }

    /// A tagger for `bundle` with label `packs` active on top of it.
    ///
    /// Every pack must have been adapted on `bundle` ([`LabelPack::check_base`]). Which types
    /// are active and which source's group each belongs to is [`resolve_groups`]: the bundle's
    /// group first, then each pack's, in the order given; groups left without types are dropped.
    pub fn with_packs(
        bundle: &Bundle,
        packs: &[LabelPack],
        types: Option<&[String]>,
        allow_override: bool,
    ) -> Result<Tagger> {
        for pack in packs {
            pack.check_base(bundle)?;
        }
        let meta = bundle.metadata();
        let bundle_source = TypeSource {
            label: format!("bundle {}", bundle.name()),
            names: meta.labels.types.iter().map(|t| t.name.clone()).collect(),
        };
        let pack_sources: Vec<TypeSource> = packs
            .iter()
            .map(|p| TypeSource {
                label: format!("label pack {}", p.name()),
                names: p.type_names(),
            })
            .collect();
        let active = resolve_groups(
            &bundle_source,
            &meta.labels.default_active,
            &pack_sources,
            types,
            allow_override,
        )?;
        let (tokenizer, encoder) = load_model(bundle, packs.iter().any(|p| p.heads().is_some()))?;
        let d = meta.encoder.type_dim;
        let bank = bundle.to_f32_vec(tensor_names::PROTOTYPES)?;
        let other = other_prototypes(bundle)?;
        let other_row = |row: usize| other.as_deref().map(|o| &o[row * d..(row + 1) * d]);
        let bundle_type = |name: &str| -> Result<Vec<f32>> {
            let row = meta
                .labels
                .types
                .iter()
                .find(|t| t.name == name)
                .map(|t| t.prototype_row);
            row.and_then(|r| bank.get(r * d..(r + 1) * d))
                .map(<[f32]>::to_vec)
                .ok_or_else(|| Error::Bundle(format!("prototype row of type {name:?} is missing")))
        };
        let pack_type = |pack: &LabelPack, name: &str| -> Result<Vec<f32>> {
            pack.metadata()
                .types
                .iter()
                .position(|t| t.name == name)
                .and_then(|k| pack.prototype(k))
                .map(<[f32]>::to_vec)
                .ok_or_else(|| {
                    Error::Bundle(format!(
                        "label pack {}: prototype of type {name:?} is missing",
                        pack.name()
                    ))
                })
        };
        // Per source: its active types with their prototypes, its own heads, and which "other"
        // row its prototypes are decoded beside (0: bank prototypes, 1: adapted from examples).
        let mut sources: Vec<(Vec<Candidate>, Option<Heads>, usize, usize)> =
            Vec::with_capacity(active.len());
        let mut prompted: Vec<Encoder> = Vec::new();
        for (i, names) in active.into_iter().enumerate() {
            let pack = i.checked_sub(1).map(|k| &packs[k]);
            let mut group = Vec::with_capacity(names.len());
            for name in names {
                let prototype = match pack {
                    None => bundle_type(&name)?,
                    Some(p) => pack_type(p, &name)?,
                };
                group.push(Candidate { name, prototype });
            }
            let (heads, row) = match pack {
                None => (None, 0),
                Some(p) => (p.heads().cloned(), 1),
            };
            let mut pass = 0;
            if let (Some(p), false) = (pack.and_then(LabelPack::prompts), group.is_empty()) {
                let shared = prompted.iter().find(|e| e.prompt_len() == Some(p.len));
                let e = match shared {
                    Some(e) => e.with_prompts(p)?,
                    None => load_encoder(bundle, &tokenizer, encoder.heads().is_some(), Some(p))?,
                };
                prompted.push(e);
                pass = prompted.len();
            }
            sources.push((group, heads, row, pass));
        }

        let memory =
            AssociatedMemory::from_bundle(bundle, d, meta.labels.types.len())?.map(Arc::new);
        let mut type_names = Vec::new();
        let mut groups = Vec::new();
        for (source, (group, heads, row, pass)) in sources.into_iter().enumerate() {
            if group.is_empty() {
                continue;
            }
            let position = |name: &str| group.iter().position(|c| c.name == name);
            let group_memory: Option<(Arc<AssociatedMemory>, Vec<Option<usize>>)> =
                match (source.checked_sub(1).map(|k| &packs[k]), &memory) {
                    (_, None) => None,
                    (None, Some(m)) => Some((
                        Arc::clone(m),
                        meta.labels
                            .types
                            .iter()
                            .map(|t| position(&t.name))
                            .collect(),
                    )),
                    (Some(pack), Some(m)) => match pack.memory() {
                        None => None,
                        Some(bank) if bank.width() != m.params.width() => {
                            return Err(Error::Bundle(format!(
                                "label pack {}: its memory keys are {} wide, the bundle's read \
                                 takes {}",
                                pack.name(),
                                bank.width(),
                                m.params.width()
                            )))
                        }
                        Some(bank) => Some((
                            Arc::new(AssociatedMemory {
                                params: m.params.clone(),
                                bank: bank.clone(),
                            }),
                            pack.metadata()
                                .types
                                .iter()
                                .map(|t| position(&t.name))
                                .collect(),
                        )),
                    },
                };
            let n_types = group.len();
            check_group_size(n_types + usize::from(other.is_some()))?;
            let offset = type_names.len();
            let mut prototypes = Vec::with_capacity((n_types + 1) * d);
            for c in group {
                prototypes.extend_from_slice(&c.prototype);
                type_names.push(c.name);
            }
            let mut group = LabelGroup::new(
                offset,
                n_types,
                prototypes,
                other_row(row),
                &meta.transitions,
                heads,
            );
            group.pass = pass;
            if let Some((m, types)) = group_memory {
                group.read_memory(m, types);
            }
            groups.push(group);
        }
        if groups.is_empty() {
            groups.push(LabelGroup::new(
                0,
                0,
                Vec::new(),
                None,
                &meta.transitions,
                None,
            ));
        }
        Ok(Tagger {
            tokenizer,
            encoder,
            type_names,
            groups,
            other,
            fusion: None,
            prompted,
            memory_retrieve: associated_memory::DEFAULT_RETRIEVE,
            clock: StageClock::default(),
        })
    }

    /// Stops reading associated memories (the bundle's and the packs'; the ablation); nothing
    /// changes for a bundle without one.
    pub fn disable_memory(&mut self) {
        for g in &mut self.groups {
            g.memory = None;
        }
    }

    /// Whether any active type reads an associated memory.
    pub fn reads_memory(&self) -> bool {
        self.groups.iter().any(|g| g.memory.is_some())
    }

    /// How many memory sentences a text reads (default
    /// [`associated_memory::DEFAULT_RETRIEVE`]).
    pub fn set_memory_retrieve(&mut self, sentences: usize) {
        self.memory_retrieve = sentences;
    }

    /// Stops decoding the bundle's "other" prototypes (`labels.other`): every entity the
    /// boundary head finds then gets the most likely active type, as with a bundle without
    /// them. Applies to the current groups and to later [`Tagger::set_types`] calls.
    pub fn disable_other(&mut self) {
        let d = self.encoder.type_dim();
        self.other = None;
        for g in &mut self.groups {
            g.without_other(d);
        }
    }

    /// Whether the "other" prototypes are decoded (the bundle has them and they are enabled).
    pub fn decodes_other(&self) -> bool {
        self.other.is_some()
    }

    /// Reloads the encoder with its hidden state exposed ([`Encoder::load_exposing_hidden`]),
    /// as [`Tagger::set_types`] with tuned heads needs; nothing happens if it already is.
    /// `bundle` must be the one the tagger was built from.
    pub fn expose_hidden(&mut self, bundle: &Bundle) -> Result<()> {
        if self.encoder.heads().is_none() {
            let max_pieces = self.encoder.max_pieces();
            let mut encoder = load_encoder(bundle, &self.tokenizer, true, None)?;
            encoder.set_max_pieces(max_pieces);
            self.encoder = encoder;
        }
        Ok(())
    }

    /// Replaces every active type (bundle and packs alike) by exactly `names`, one label group
    /// with prototype `i` = row `i` of `prototypes` (`[names.len(), type_dim]`) decoded under
    /// `transitions`, scored with `heads` when given (else the bundle's), keeping the loaded
    /// tokenizer and encoder (e.g. to tag each few-shot episode with its own adapted types).
    /// The prototypes are taken as adapted from examples: when the bundle has "other"
    /// prototypes, its row for adapted types is decoded beside them, as for a label pack.
    /// No types at all is allowed (every word is `O`).
    ///
    /// Errors ([`Error::Usage`]), leaving the tagger unchanged: a prototype matrix of the wrong
    /// size, a repeated name, more types than the decoder supports, heads whose sizes do not
    /// match the encoder or an encoder that does not expose its hidden state
    /// ([`Tagger::expose_hidden`]).
    pub fn set_types(
        &mut self,
        names: &[String],
        prototypes: &[f32],
        transitions: &CdtParams,
        heads: Option<&Heads>,
    ) -> Result<()> {
        let d = self.encoder.type_dim();
        if let Some(h) = heads {
            if self.encoder.hidden_dim() != h.hidden || h.type_dim != d {
                return Err(Error::Usage(format!(
                    "tuned heads read a hidden state of {} into {} dimensions, but the encoder \
                     exposes {} (0: not exposed, see Tagger::expose_hidden) and has type_dim {d}",
                    h.hidden,
                    h.type_dim,
                    self.encoder.hidden_dim()
                )));
            }
        }
        if prototypes.len() != names.len() * d {
            return Err(Error::Usage(format!(
                "{} prototype values for {} types of dimension {d}",
                prototypes.len(),
                names.len()
            )));
        }
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                return Err(Error::Usage(format!("entity type {name:?} is given twice")));
            }
        }
        let n_types = names.len();
        check_group_size(n_types + usize::from(self.other.is_some()))?;
        let other = self.other.as_deref().map(|o| &o[d..2 * d]);
        self.type_names = names.to_vec();
        self.prompted.clear();
        self.groups = vec![LabelGroup::new(
            0,
            n_types,
            prototypes.to_vec(),
            other,
            transitions,
            heads.cloned(),
        )];
        Ok(())
    }

    /// Lets [`Tagger::tag_in_context`] use context: exposes the encoder's hidden state
    /// ([`Tagger::expose_hidden`]) and takes the bundle's context gate, or with `replace` always
    /// the encoding with context (the no-gate ablation). Errors ([`Error::Usage`]) when the
    /// gate is asked for and `bundle` (the one the tagger was built from) has none.
    pub fn enable_context(&mut self, bundle: &Bundle, replace: bool) -> Result<()> {
        let fusion = if replace {
            ContextFusion::Replace
        } else {
            let hidden = bundle.metadata().encoder.hidden;
            match ContextGate::from_bundle(bundle, hidden)? {
                Some(gate) => ContextFusion::Gate(gate),
                None => {
                    return Err(Error::Usage(format!(
                        "{} has no context gate (tensors {:?}, {:?}): it was not trained to use \
                         context; tag without context, or use a bundle trained with \
                         `ner-train context-gate`",
                        bundle.name(),
                        crate::encoder::fusion::GATE_WEIGHT,
                        crate::encoder::fusion::GATE_BIAS
                    )))
                }
            }
        };
        self.expose_hidden(bundle)?;
        self.fusion = Some(fusion);
        Ok(())
    }

    /// How texts with context are scored, once [`Tagger::enable_context`] was called.
    pub fn context_fusion(&self) -> Option<&ContextFusion> {
        self.fusion.as_ref()
    }

    /// Tags texts, each with an optional context ([`crate::encoder::fusion`]): text `i` is
    /// encoded alone and, when `contexts[i]` holds words, also after the end of its context in
    /// one window; the gate mixes the two encodings per piece. Offsets refer to the text only.
    /// Of a context, the words nearest the text that fit the window beside it are used (none
    /// when the text alone fills the window). Texts without context are scored from the
    /// encoder's own outputs, as by [`Tagger::tag`] (batching may move the last bits of a
    /// score); the result does not depend on `threads`.
    ///
    /// Errors ([`Error::Usage`]) when `contexts` and `texts` differ in length, or when a
    /// context is given before [`Tagger::enable_context`].
    pub fn tag_in_context(
        &self,
        texts: &[&str],
        contexts: &[Option<&str>],
        threads: usize,
    ) -> Result<Vec<TaggedText>> {
        let Some(fusion) = self.context_check(texts.len(), contexts)? else {
            return self.tag(texts, threads);
        };
        let encodings = self.encode_texts(texts, threads)?;
        self.tag_encoded_in_context(fusion, texts, encodings, contexts, threads)
    }

    /// [`Tagger::tag_words`] with a context per sentence, as [`Tagger::tag_in_context`].
    pub fn tag_words_in_context(
        &self,
        sentences: &[Vec<&str>],
        contexts: &[Option<&str>],
        threads: usize,
    ) -> Result<Vec<TaggedText>> {
        let Some(fusion) = self.context_check(sentences.len(), contexts)? else {
            return self.tag_words(sentences, threads);
        };
        let (encodings, joined) = self.encode_word_sentences(sentences, threads)?;
        let texts: Vec<&str> = joined.iter().map(String::as_str).collect();
        self.tag_encoded_in_context(fusion, &texts, encodings, contexts, threads)
    }

    /// The fusion to tag `n` texts with `contexts` under, `None` when no context holds words
    /// and fusion is off (tag without context).
    fn context_check(&self, n: usize, contexts: &[Option<&str>]) -> Result<Option<&ContextFusion>> {
        if contexts.len() != n {
            return Err(Error::Usage(format!(
                "{} contexts for {n} texts",
                contexts.len()
            )));
        }
        match &self.fusion {
            Some(f) => Ok(Some(f)),
            None if contexts.iter().any(|c| has_words(c)) => Err(Error::Usage(
                "a context was given but context fusion is not enabled (Tagger::enable_context)"
                    .into(),
            )),
            None => Ok(None),
        }
    }

    fn tag_encoded_in_context(
        &self,
        fusion: &ContextFusion,
        texts: &[&str],
        encodings: Vec<Encoding>,
        contexts: &[Option<&str>],
        threads: usize,
    ) -> Result<Vec<TaggedText>> {
        if !self.prompted.is_empty() {
            return Err(Error::Usage(
                "label packs with prompts cannot be combined with context yet; tag without \
                 context or without those packs"
                    .into(),
            ));
        }
        let start = Instant::now();
        let context_encodings: Vec<Option<Encoding>> = on_threads(contexts, threads, |part| {
            Ok(part
                .iter()
                .map(|c| has_words(c).then(|| self.tokenizer.encode(c.unwrap_or(""))))
                .collect())
        })?;
        StageClock::add(&self.clock.tokenize, start);

        let start = Instant::now();
        let max = self.encoder.max_pieces();
        let joined: Vec<Option<ContextWindow>> = encodings
            .iter()
            .zip(&context_encodings)
            .map(|(text, ctx)| ContextWindow::new(ctx.as_ref()?, text, max))
            .collect();
        let mut seqs: Vec<PieceSeq<'_>> = encodings.iter().map(PieceSeq::from).collect();
        seqs.extend(joined.iter().flatten().map(|j| PieceSeq {
            ids: &j.ids,
            shapes: &j.shapes,
        }));
        let (mut scores, mut windows) = self.encoder.encode_on(&seqs, threads)?;
        let with_context = scores.split_off(texts.len());
        windows.truncate(texts.len());
        let heads = self.encoder.heads().ok_or_else(|| {
            Error::Encoder("context fusion needs the encoder's hidden state".into())
        })?;
        let h = heads.hidden;
        let mut openings = vec![None; texts.len()];
        let mut fused = Vec::new();
        let mut next = with_context.into_iter();
        for (i, j) in joined.iter().enumerate() {
            let (Some(j), sc) = (j, &mut scores[i]) else {
                continue;
            };
            let ctx = next.next().ok_or_else(|| {
                Error::Encoder("the encoder returned fewer sequences than it was given".into())
            })?;
            let n = encodings[i].ids.len();
            let c = ctx
                .hidden
                .get(j.offset * h..(j.offset + n) * h)
                .ok_or_else(|| {
                    Error::Encoder("hidden state of a context window is short".into())
                })?;
            let opened = fusion.fuse(h, &sc.hidden, c, &mut fused);
            heads.apply(&fused, &mut sc.boundary, &mut sc.types);
            std::mem::swap(&mut sc.hidden, &mut fused);
            openings[i] = Some(opened / n.max(1) as f32);
        }
        StageClock::add(&self.clock.encode, start);
        let scores = scores.into_iter().map(|sc| vec![sc]).collect();
        let mut tagged = self.decode_scored(texts, encodings, scores, windows, threads)?;
        for (t, o) in tagged.iter_mut().zip(openings) {
            t.context_opening = o;
        }
        Ok(tagged)
    }

    /// Names of the active types, in label order (bundle group first, then each pack's).
    pub fn type_names(&self) -> &[String] {
        &self.type_names
    }

    /// The tokenizer of the bundle.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The encoder of the bundle.
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// The encoder of the bundle (mutable to adjust its window, e.g. in tests).
    pub fn encoder_mut(&mut self) -> &mut Encoder {
        &mut self.encoder
    }

    /// Tags texts, splitting the work over up to `threads` threads; results keep input order.
    ///
    /// With several label groups, each group's entities come from its own Viterbi path, and
    /// they are merged as follows: an entity that overlaps no entity of another group is kept
    /// as is. Where entities of different groups overlap, each gets a conflict score, the mean
    /// over its words of its type's probability under a softmax of the word's type vector
    /// against every active prototype; entities are then taken greedily by descending conflict
    /// score (ties: earlier group, i.e. the bundle first; then earlier start), skipping any that
    /// overlaps one already taken. Entities of a group that nothing overlaps are therefore
    /// exactly those (and with exactly the scores) the group would give alone.
    ///
    /// The result does not depend on `threads`: the encoder batches are formed from all of
    /// `texts` ([`Encoder::encode_on`]), and tokenizing and decoding are per text.
    pub fn tag(&self, texts: &[&str], threads: usize) -> Result<Vec<TaggedText>> {
        let encodings = self.encode_texts(texts, threads)?;
        self.decode_all(texts, encodings, threads)
    }

    /// Tags already-split sentences (e.g. CoNLL tokens), each given word being exactly one
    /// word of the result ([`Tokenizer::encode_words`]): `labels[i]` is the label of
    /// `sentences[s][i]`, and word and entity byte ranges refer to the words joined with
    /// single spaces. Work is split over up to `threads` threads; results keep input order and
    /// do not depend on `threads` (as for [`Tagger::tag`]).
    pub fn tag_words(&self, sentences: &[Vec<&str>], threads: usize) -> Result<Vec<TaggedText>> {
        let (encodings, joined) = self.encode_word_sentences(sentences, threads)?;
        let texts: Vec<&str> = joined.iter().map(String::as_str).collect();
        self.decode_all(&texts, encodings, threads)
    }

    /// Tokenizes `texts` on up to `threads` threads, timed as the tokenize stage.
    fn encode_texts(&self, texts: &[&str], threads: usize) -> Result<Vec<Encoding>> {
        let start = Instant::now();
        let encodings = on_threads(texts, threads, |part| {
            Ok(part.iter().map(|t| self.tokenizer.encode(t)).collect())
        })?;
        StageClock::add(&self.clock.tokenize, start);
        Ok(encodings)
    }

    /// Tokenizes already-split sentences as [`Tagger::tag_words`] does, with the text each
    /// stands for (its words joined with single spaces).
    fn encode_word_sentences(
        &self,
        sentences: &[Vec<&str>],
        threads: usize,
    ) -> Result<(Vec<Encoding>, Vec<String>)> {
        let start = Instant::now();
        let encodings = on_threads(sentences, threads, |part| {
            Ok(part
                .iter()
                .map(|w| self.tokenizer.encode_words(w))
                .collect())
        })?;
        StageClock::add(&self.clock.tokenize, start);
        Ok((encodings, sentences.iter().map(|w| w.join(" ")).collect()))
    }

    /// The BIO tag strings (`O`, `B-NAME`, `I-NAME`) of a result's [`TaggedText::labels`].
    pub fn bio_tags(&self, tagged: &TaggedText) -> Vec<String> {
        tagged
            .labels
            .iter()
            .map(|&l| match Tag::from_index(l) {
                Tag::O => "O".to_string(),
                Tag::B(k) => format!("B-{}", self.type_name_or_unknown(k)),
                Tag::I(k) => format!("I-{}", self.type_name_or_unknown(k)),
            })
            .collect()
    }

    fn type_name_or_unknown(&self, k: usize) -> &str {
        self.type_names.get(k).map_or("?", String::as_str)
    }

    /// Encodes all of `encodings` (of `texts`) in one set of batches, then decodes each text;
    /// both on up to `threads` threads.
    fn decode_all(
        &self,
        texts: &[&str],
        encodings: Vec<Encoding>,
        threads: usize,
    ) -> Result<Vec<TaggedText>> {
        let start = Instant::now();
        let ids: Vec<PieceSeq<'_>> = encodings.iter().map(PieceSeq::from).collect();
        let passes = 1 + self.prompted.len();
        let mut scores: Vec<Vec<PieceScores>> = vec![Vec::with_capacity(passes); ids.len()];
        let mut windows = None;
        for pass in 0..passes {
            let encoder = match pass {
                0 => &self.encoder,
                p => &self.prompted[p - 1],
            };
            if !self.groups.iter().any(|g| g.pass == pass) {
                scores
                    .iter_mut()
                    .for_each(|s| s.push(PieceScores::default()));
                continue;
            }
            let (sc, w) = encoder.encode_on(&ids, threads)?;
            windows.get_or_insert(w);
            for (all, one) in scores.iter_mut().zip(sc) {
                all.push(one);
            }
        }
        let windows = windows
            .ok_or_else(|| Error::Encoder("no label group needed an encoder pass".into()))?;
        StageClock::add(&self.clock.encode, start);
        self.decode_scored(texts, encodings, scores, windows, threads)
    }

    /// Decodes each text from its encoding, piece scores and window count, on up to `threads`
    /// threads.
    fn decode_scored(
        &self,
        texts: &[&str],
        encodings: Vec<Encoding>,
        scores: Vec<Vec<PieceScores>>,
        windows: Vec<usize>,
        threads: usize,
    ) -> Result<Vec<TaggedText>> {
        let start = Instant::now();
        let items: Vec<(&str, Encoding, Vec<PieceScores>, usize)> = texts
            .iter()
            .zip(encodings)
            .zip(scores)
            .zip(windows)
            .map(|(((text, enc), sc), w)| (*text, enc, sc, w))
            .collect();
        let tagged = on_threads(&items, threads, |part| {
            let mut scratch = Scratch::default();
            Ok(part
                .iter()
                .map(|(text, enc, sc, w)| self.decode_text(text, enc, sc, *w, &mut scratch))
                .collect())
        });
        StageClock::add(&self.clock.decode, start);
        let mut tagged = tagged?;
        for (t, (_, enc, _, _)) in tagged.iter_mut().zip(items) {
            t.words = enc.words;
        }
        Ok(tagged)
    }

    /// Wall time spent in each stage of tagging so far ([`StageTimes`]).
    pub fn stage_times(&self) -> StageTimes {
        self.clock.read()
    }

    /// The tagging of one text from its encoding and piece scores; its `words` are left empty
    /// for the caller to move in from the encoding.
    fn decode_text(
        &self,
        text: &str,
        enc: &Encoding,
        passes: &[PieceScores],
        windows: usize,
        s: &mut Scratch,
    ) -> TaggedText {
        let d = self.encoder.type_dim();
        let h = self.encoder.hidden_dim();
        let n_words = enc.words.len();
        let first = &enc.word_first_piece;
        if self.groups.iter().any(|g| g.pass == 0) {
            gather_words(
                &passes[0],
                first,
                d,
                h,
                &mut s.boundary,
                &mut s.types,
                &mut s.hidden,
            );
        }
        if s.decoders.len() < self.groups.len() {
            s.decoders.resize_with(self.groups.len(), Decoder::default);
        }
        s.group_types.resize_with(self.groups.len(), Vec::new);
        let mut found: Vec<(usize, spans::Entity)> = Vec::new();
        for (g, group) in self.groups.iter().enumerate() {
            let n_labels = decode::label_count(group.decoded);
            let (boundary, types) = match (&group.heads, group.pass) {
                (Some(heads), 0) => {
                    heads.apply(&s.hidden, &mut s.group_boundary, &mut s.group_types[g]);
                    (&s.group_boundary, &s.group_types[g])
                }
                (None, 0) => (&s.boundary, &s.types),
                (heads, pass) => {
                    let own = &mut s.group_types[g];
                    gather_words(
                        &passes[pass],
                        first,
                        d,
                        h,
                        &mut s.group_boundary,
                        own,
                        &mut s.pass_hidden,
                    );
                    if let Some(heads) = heads {
                        heads.apply(&s.pass_hidden, &mut s.group_boundary, own);
                    }
                    (&s.group_boundary, &s.group_types[g])
                }
            };
            let (boundary, offsets): (&[f32], &[f32]) = match &group.memory {
                Some(m) => {
                    s.read_boundary.clear();
                    s.read_boundary.extend_from_slice(boundary);
                    m.memory.read(
                        types,
                        group.decoded,
                        self.memory_retrieve,
                        &m.map,
                        &mut s.read_boundary,
                        &mut s.type_offsets,
                        &mut s.read,
                    );
                    (&s.read_boundary, &s.type_offsets)
                }
                None => (boundary, &[]),
            };
            emissions_with_offsets(
                boundary,
                types,
                d,
                &group.prototypes,
                group.decoded,
                offsets,
                &mut s.emissions,
            );
            s.decoders[g].viterbi(&s.emissions, n_labels, &group.transitions, &mut s.path);
            let marginals = decode::marginals(&s.emissions, n_labels, &group.transitions);
            let real = group.n_types;
            found.extend(
                spans::extract_entities(&s.path, Some(&marginals))
                    .into_iter()
                    .filter(|e| e.end_word <= n_words && e.start_word < e.end_word)
                    .filter(|e| e.type_index < real)
                    .map(|mut e| {
                        e.type_index += group.offset;
                        (g, e)
                    }),
            );
        }
        let labels = if self.groups.len() == 1 {
            let real = self.groups[0].n_types;
            let mut path = std::mem::take(&mut s.path);
            for l in &mut path {
                if Tag::from_index(*l).type_index().is_some_and(|k| k >= real) {
                    *l = decode::O_INDEX;
                }
            }
            path
        } else {
            let vectors: Vec<&[f32]> = self
                .groups
                .iter()
                .zip(&s.group_types)
                .map(|(group, own)| match group.own_vectors() {
                    true => own.as_slice(),
                    false => s.types.as_slice(),
                })
                .collect();
            found = merge::merge_groups(found, |e| self.conflict_score(e, &vectors, d));
            let mut labels = vec![decode::O_INDEX; n_words];
            for (_, e) in &found {
                labels[e.start_word] = Tag::B(e.type_index).to_index();
                for l in &mut labels[e.start_word + 1..e.end_word] {
                    *l = Tag::I(e.type_index).to_index();
                }
            }
            labels
        };
        let entities = found
            .into_iter()
            .map(|(_, e)| TaggedEntity {
                span: enc
                    .entity_span(text, e.start_word..e.end_word)
                    .unwrap_or(enc.words[e.start_word].start..enc.words[e.end_word - 1].end),
                type_index: e.type_index,
                score: e.score,
            })
            .collect();
        TaggedText {
            words: Vec::new(),
            labels,
            entities,
            windows,
            context_opening: None,
        }
    }

    /// The conflict score of entity `e` (see [`Tagger::tag`]): the mean over its words of its
    /// type's probability under a softmax of the word's type vector against every active
    /// prototype; `vectors[g]` holds the `[words, d]` type vectors group `g` scores with.
    fn conflict_score(&self, e: &spans::Entity, vectors: &[&[f32]], d: usize) -> f64 {
        let mut probs = vec![0.0f64; self.type_names.len()];
        let mut sum = 0.0f64;
        for w in e.start_word..e.end_word {
            self.joint_type_probs(vectors, w, d, &mut probs);
            sum += probs.get(e.type_index).copied().unwrap_or(0.0);
        }
        sum / (e.end_word - e.start_word).max(1) as f64
    }
}

/// Fails with [`Error::Usage`] when `decoded` types in one group are more than the decoder
/// supports.
fn check_group_size(decoded: usize) -> Result<()> {
    if decode::label_count(decoded) > decode::MAX_LABELS {
        return Err(Error::Usage(format!(
            "{decoded} decoded types in one group (the \"other\" type included) is more than \
             the decoder supports ({})",
            (decode::MAX_LABELS - 1) / 2
        )));
    }
    Ok(())
}

/// Runs `work` on up to `threads` contiguous chunks of `items` in scoped threads and
/// concatenates the results in input order; one thread runs on the caller's. `work` must give
/// each item a result that does not depend on the other items of its chunk.
fn on_threads<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    work: impl Fn(&[T]) -> Result<Vec<R>> + Sync,
) -> Result<Vec<R>> {
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return work(items);
    }
    let chunk = items.len().div_ceil(threads);
    let work = &work;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(move || work(part)))
            .collect();
        let mut all = Vec::with_capacity(items.len());
        for h in handles {
            let part = h
                .join()
                .map_err(|_| Error::Encoder("a tagging thread panicked".into()))??;
            all.extend(part);
        }
        Ok(all)
    })
}

impl Tagger {
    /// Softmax over every active prototype of its dot product with word `w`'s type vector of
    /// the prototype's own group (`vectors[g]`: `[words, d]`), into `out` (`[type_names.len()]`).
    fn joint_type_probs(&self, vectors: &[&[f32]], w: usize, d: usize, out: &mut [f64]) {
        if d == 0 {
            out.fill(0.0);
            return;
        }
        let mut max = f64::NEG_INFINITY;
        for (group, own) in self.groups.iter().zip(vectors) {
            let v = own.get(w * d..(w + 1) * d).unwrap_or(&[]);
            let range = group.offset..group.offset + group.n_types;
            for (o, p) in out[range].iter_mut().zip(group.prototypes.chunks_exact(d)) {
                *o = v
                    .iter()
                    .zip(p)
                    .map(|(&a, &b)| f64::from(a) * f64::from(b))
                    .sum();
                max = max.max(*o);
            }
        }
        normalise_exp(out, max);
    }
}

/// `out[i] = exp(out[i] - max) / Σ exp(out[j] - max)` (left unnormalised if the sum is 0 or
/// not finite).
fn normalise_exp(out: &mut [f64], max: f64) {
    let mut z = 0.0;
    for o in out.iter_mut() {
        *o = (*o - max).exp();
        z += *o;
    }
    if z > 0.0 && z.is_finite() {
        for o in out.iter_mut() {
            *o /= z;
        }
    }
}

/// True when `context` holds something other than whitespace.
fn has_words(context: &Option<&str>) -> bool {
    context.is_some_and(|c| !c.trim().is_empty())
}

/// Clears the three buffers and fills them with the rows of each word's first piece (`first`)
/// from `sc`: boundary logits `[words, 3]`, type vectors `[words, d]` and, when `h > 0`, hidden
/// states `[words, h]`.
fn gather_words(
    sc: &PieceScores,
    first: &[u32],
    d: usize,
    h: usize,
    boundary: &mut Vec<f32>,
    types: &mut Vec<f32>,
    hidden: &mut Vec<f32>,
) {
    boundary.clear();
    types.clear();
    hidden.clear();
    for &p in first {
        let p = p as usize;
        boundary.extend_from_slice(&sc.boundary[p * 3..p * 3 + 3]);
        types.extend_from_slice(&sc.types[p * d..(p + 1) * d]);
        if h > 0 {
            hidden.extend_from_slice(&sc.hidden[p * h..(p + 1) * h]);
        }
    }
}

#[derive(Default)]
struct Scratch {
    /// `[words, hidden]` first-piece hidden states of a prompted pass.
    pass_hidden: Vec<f32>,
    boundary: Vec<f32>,
    types: Vec<f32>,
    /// `[words, hidden]` first-piece hidden states (only when the encoder exposes them).
    hidden: Vec<f32>,
    /// Boundary logits of the group being decoded, when it has its own heads.
    group_boundary: Vec<f32>,
    /// Per group: its own type vectors when it has its own heads (else empty).
    group_types: Vec<Vec<f32>>,
    emissions: Vec<f32>,
    path: Vec<usize>,
    decoders: Vec<Decoder>,
    /// Boundary logits plus what the associated memory read adds.
    read_boundary: Vec<f32>,
    /// `[words, decoded]` type-score offsets of the memory read.
    type_offsets: Vec<f32>,
    read: ReadScratch,
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn bundle() -> Bundle {
        Bundle::open(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/bundles/tiny.nerb"))
            .unwrap()
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn tag_words_gives_one_label_per_given_word() {
        let b = bundle();
        let tagger = Tagger::new(&b, None).unwrap();
        let plain = vec!["aspirin", "reduced", "the", "fever"];
        let split = vec!["u.s.", "troops", "don't", "x"];
        let tagged = tagger
            .tag_words(&[plain.clone(), split.clone(), Vec::new()], 2)
            .unwrap();
        assert_eq!(tagged.len(), 3);
        assert_eq!(tagged[0].labels.len(), 4);
        assert_eq!(tagged[1].labels.len(), 4);
        assert!(tagged[2].labels.is_empty() && tagged[2].entities.is_empty());
        assert!(
            tagger.tag(&["u.s. troops don't x"], 1).unwrap()[0]
                .words
                .len()
                > 4
        );
        let by_text = tagger.tag(&["aspirin reduced the fever"], 1).unwrap();
        assert_eq!(tagged[0].labels, by_text[0].labels);
        assert_eq!(tagged[0].entities, by_text[0].entities);
        assert_eq!(tagger.tag_words(&[split], 1).unwrap()[0], tagged[1]);
        for t in &tagged {
            let tags = tagger.bio_tags(t);
            assert_eq!(tags.len(), t.labels.len());
            let n_labels = decode::label_count(tagger.type_names().len());
            assert!(decode::is_valid_bio(&t.labels, n_labels));
            for tag in tags {
                let ok = tag == "O"
                    || tagger
                        .type_names()
                        .iter()
                        .any(|n| tag == format!("B-{n}") || tag == format!("I-{n}"));
                assert!(ok, "{tag}");
            }
        }
    }

    #[test]
    fn set_types_replaces_the_active_types_or_leaves_them() {
        let b = bundle();
        let d = b.metadata().encoder.type_dim;
        let transitions = &b.metadata().transitions;
        let base = Tagger::new(&b, None).unwrap();
        let mut t = Tagger::new(&b, Some(&[])).unwrap();
        assert!(t.type_names().is_empty());
        let words = vec!["aspirin", "reduced", "the", "fever"];
        let none = t.tag_words(std::slice::from_ref(&words), 1).unwrap();
        assert!(none[0].labels.iter().all(|&l| l == decode::O_INDEX));

        let bank = b.to_f32_vec(tensor_names::PROTOTYPES).unwrap();
        let own: Vec<String> = base.type_names().to_vec();
        let mut rows = Vec::new();
        for name in &own {
            let ty = b.metadata().labels.types.iter().find(|x| &x.name == name);
            let r = ty.unwrap().prototype_row;
            rows.extend_from_slice(&bank[r * d..(r + 1) * d]);
        }
        t.set_types(&own, &rows, transitions, None).unwrap();
        assert_eq!(t.type_names(), base.type_names());
        assert_eq!(
            t.tag_words(std::slice::from_ref(&words), 1).unwrap(),
            base.tag_words(std::slice::from_ref(&words), 1).unwrap()
        );

        let short = t.set_types(&names(&["A", "B"]), &rows[..d], transitions, None);
        assert!(matches!(short, Err(Error::Usage(m)) if m.contains("for 2 types")));
        let twice = t.set_types(&names(&["A", "A"]), &vec![0.0; 2 * d], transitions, None);
        assert!(matches!(twice, Err(Error::Usage(m)) if m.contains("given twice")));
        assert_eq!(t.type_names(), base.type_names());
    }
}
