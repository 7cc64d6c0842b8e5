//! One worker's share of an optimiser step: encoder forward, episode or dense loss, encoder
//! backward, gradients accumulated in the worker's own buffers.

use std::sync::Arc;

use anyhow::{ensure, Context, Result};

use super::data::{EncodedEpisode, EncodedSentence};
use super::dense::DenseSeq;
use super::meta::TrainState;
use crate::backprop::{backward, forward, BackwardScratch, PieceBatch, Tape};
use crate::loss::assoc::{assoc_backward, assoc_forward};
use crate::loss::{
    dense_loss_with_offsets, distill_loss, entity_vectors, episode_loss, ClassParams, DenseLoss,
    DistillWeights, EpisodeLoss, HeadParams, LossTerms, LossWeights, SentenceGrad, SentenceRef,
    OTHER_BESIDE_CLASSES, OTHER_BESIDE_SUPPORT,
};
use crate::model::{EncoderConfig, ModelWeights};
use ner_edge::associated_memory::AssocParams;

/// Loss terms of one episode.
pub type EpisodeTerms = LossTerms;

/// Label-memory rows produced by one episode: `((source, type), vectors [rows, type_dim])`.
pub type MemoryPushes = Vec<((String, String), Vec<f32>)>;

/// Buffers of one training thread, reused across steps.
pub struct StepWorker {
    batch: PieceBatch,
    tape: Tape,
    scratch: BackwardScratch,
    grads: ModelWeights,
    head_grads: HeadParams,
    class_grads: ClassParams,
    d_boundary: Vec<f32>,
    d_types: Vec<f32>,
    /// Gradient scale of one episode: `1 / episodes_per_step`.
    scale: f32,
    /// Gradient scale of one dense sequence: `dense.weight / dense.sequences_per_step`.
    dense_scale: f32,
    /// The teacher of distillation, when on.
    distiller: Option<Distiller>,
}

/// A distillation teacher and its forward buffers: it runs on each batch the student trains
/// on, and its outputs become extra output gradients of the student (see
/// [`crate::loss::distill`]).
pub struct Distiller {
    teacher: Arc<ModelWeights>,
    weights: DistillWeights,
    tape: Tape,
}

impl Distiller {
    /// A distiller with teacher `teacher` (shared by every worker) and term `weights`.
    pub fn new(teacher: Arc<ModelWeights>, weights: DistillWeights) -> Distiller {
        Distiller {
            teacher,
            weights,
            tape: Tape::new(),
        }
    }

    /// Runs the teacher on `batch` and adds `scale ·` the distillation gradient wrt the
    /// student's outputs in `student` (the tape of the student's forward on the same batch)
    /// into `d_boundary` and `d_types`; returns the weighted distillation loss.
    fn add_grads(
        &mut self,
        batch: &PieceBatch,
        student: &Tape,
        scale: f32,
        d_boundary: &mut [f32],
        d_types: &mut [f32],
    ) -> f64 {
        forward(&self.teacher, batch, &mut self.tape);
        distill_loss(
            student.boundary(),
            student.types(),
            self.tape.boundary(),
            self.tape.types(),
            self.teacher.config.type_dim,
            self.weights,
            scale,
            d_boundary,
            d_types,
        )
        .total
    }
}

/// Word-level head outputs of one sentence, gathered from its first pieces.
pub struct WordOutputs {
    /// `[words, 3]` boundary logits (O, B, I).
    pub boundary: Vec<f32>,
    /// `[words, type_dim]` type vectors.
    pub types: Vec<f32>,
}

/// Gathers the first-piece rows of every sentence of `sentences`, packed in `batch` order
/// starting at sentence index `first`, from the outputs of a forward pass.
pub fn gather_words(
    tape: &Tape,
    batch: &PieceBatch,
    sentences: &[EncodedSentence],
    first: usize,
    type_dim: usize,
) -> Vec<WordOutputs> {
    gather_words_from(
        tape.boundary(),
        tape.types(),
        batch.offsets(),
        sentences,
        first,
        type_dim,
    )
}

/// [`gather_words`] from piece-level outputs held elsewhere: `boundary` `[N, 3]` and `types`
/// `[N, type_dim]` of a batch with sentence `offsets`.
pub fn gather_words_from(
    boundary: &[f32],
    types: &[f32],
    offsets: &[usize],
    sentences: &[EncodedSentence],
    first: usize,
    type_dim: usize,
) -> Vec<WordOutputs> {
    sentences
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let base = offsets[first + i];
            let mut b = Vec::with_capacity(s.first_piece.len() * 3);
            let mut t = Vec::with_capacity(s.first_piece.len() * type_dim);
            for &p in &s.first_piece {
                let row = base + p;
                b.extend_from_slice(&boundary[row * 3..row * 3 + 3]);
                t.extend_from_slice(&types[row * type_dim..(row + 1) * type_dim]);
            }
            WordOutputs {
                boundary: b,
                types: t,
            }
        })
        .collect()
}

/// Refs for the loss from gathered outputs and their sentences.
pub fn sentence_refs<'a>(
    outputs: &'a [WordOutputs],
    sentences: &'a [EncodedSentence],
) -> Vec<SentenceRef<'a>> {
    outputs
        .iter()
        .zip(sentences)
        .map(|(o, s)| SentenceRef {
            boundary: &o.boundary,
            types: &o.types,
            labels: &s.labels,
        })
        .collect()
}

impl StepWorker {
    /// Buffers for a model of `config` with class vectors shaped like `classes`; each
    /// episode's gradient is scaled by `1 / episodes_per_step`, so a step's gradient is the mean
    /// over its episodes, and each dense sequence's by `dense_weight / dense_per_step`.
    pub fn new(
        config: &EncoderConfig,
        heads: &HeadParams,
        classes: &ClassParams,
        episodes_per_step: usize,
        dense_per_step: usize,
        dense_weight: f32,
    ) -> StepWorker {
        StepWorker {
            batch: PieceBatch::default(),
            tape: Tape::new(),
            scratch: BackwardScratch::new(),
            grads: ModelWeights::zeros(config),
            head_grads: heads.zeros_like(),
            class_grads: classes.zeros_like(),
            d_boundary: Vec::new(),
            d_types: Vec::new(),
            scale: 1.0 / episodes_per_step.max(1) as f32,
            dense_scale: dense_weight / dense_per_step.max(1) as f32,
            distiller: None,
        }
    }

    /// This worker, also distilling from `distiller`'s teacher on every batch.
    pub fn with_distiller(mut self, distiller: Distiller) -> StepWorker {
        self.distiller = Some(distiller);
        self
    }

    /// Sets every accumulated gradient to zero.
    pub fn zero_grads(&mut self) {
        for (_, g) in self.grads.tensors_mut() {
            g.fill(0.0);
        }
        for (_, g) in self.head_grads.tensors_mut() {
            g.fill(0.0);
        }
        for (_, g) in self.class_grads.tensors_mut() {
            g.fill(0.0);
        }
    }

    /// Adds another worker's gradients to this one's.
    pub fn add_grads_from(&mut self, other: &StepWorker) {
        for ((_, dst), (_, src)) in self
            .grads
            .tensors_mut()
            .into_iter()
            .zip(other.grads.tensors())
        {
            dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
        }
        for ((_, dst), (_, src)) in self
            .head_grads
            .tensors_mut()
            .into_iter()
            .zip(other.head_grads.tensors())
        {
            dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
        }
        self.class_grads.add(&other.class_grads);
    }

    /// The accumulated gradients, encoder tensors, head tensors, then class tensors, in the
    /// order of `ModelWeights::tensors`, `HeadParams::tensors` and `ClassParams::tensors`.
    pub fn grads_flat(&self) -> Vec<(String, &[f32])> {
        let mut all = self.grads.tensors();
        all.extend(self.head_grads.tensors());
        all.extend(self.class_grads.tensors());
        all
    }

    /// [`StepWorker::grads_flat`], writable.
    pub fn grads_mut(&mut self) -> Vec<(String, &mut [f32])> {
        let mut all = self.grads.tensors_mut();
        all.extend(self.head_grads.tensors_mut());
        all.extend(self.class_grads.tensors_mut());
        all
    }

    /// Backward of the batch last run forward, from the piece-level gradients in `d_boundary`
    /// and `d_types`, into this worker's encoder gradients.
    fn backward(&mut self, w: &ModelWeights) {
        backward(
            w,
            &self.batch,
            &self.tape,
            &self.d_boundary,
            &self.d_types,
            &mut self.grads,
            &mut self.scratch,
        );
    }

    /// Forward, loss and backward of one episode, adding its scaled gradients to this worker's
    /// buffers. Returns the loss terms and the entity vectors to push into the label memory.
    pub fn episode(
        &mut self,
        state: &TrainState,
        ep: &EncodedEpisode,
        weights: &LossWeights,
    ) -> Result<(EpisodeTerms, MemoryPushes)> {
        let w = &state.weights;
        let c = &w.config;
        let dt = c.type_dim;
        ensure!(!ep.support.is_empty(), "episode has no support sentences");
        self.batch.clear();
        for s in ep.support.iter().chain(&ep.query) {
            self.batch.push_shaped(c, &s.ids, Some(&s.shapes))?;
        }
        forward(w, &self.batch, &mut self.tape);
        let support_out = gather_words(&self.tape, &self.batch, &ep.support, 0, dt);
        let query_out = gather_words(&self.tape, &self.batch, &ep.query, ep.support.len(), dt);
        let (loss, pushes) = episode_head_loss(state, ep, &support_out, &query_out, weights)?;

        let tokens = self.batch.tokens();
        self.d_boundary.clear();
        self.d_boundary.resize(tokens * 3, 0.0);
        self.d_types.clear();
        self.d_types.resize(tokens * dt, 0.0);
        scatter_word_grads(
            &loss,
            ep,
            self.batch.offsets(),
            0,
            self.scale,
            dt,
            &mut self.d_boundary,
            &mut self.d_types,
        );
        let mut terms = loss.terms;
        if let Some(d) = self.distiller.as_mut() {
            terms.distill = d.add_grads(
                &self.batch,
                &self.tape,
                self.scale,
                &mut self.d_boundary,
                &mut self.d_types,
            );
            terms.total += terms.distill;
        }
        self.backward(w);
        self.head_grads.add_cdt_grad(&loss.cdt, self.scale);
        self.head_grads.prior.add_scaled(&loss.prior, self.scale);
        self.class_grads
            .add_to_other(OTHER_BESIDE_SUPPORT, &loss.other, self.scale);
        Ok((terms, pushes))
    }

    /// Forward, dense loss and backward of `seqs` as one batch, adding their scaled gradients
    /// to this worker's buffers (encoder, CDT numbers, class and "other" vectors). Returns the
    /// summed loss terms.
    pub fn dense(
        &mut self,
        state: &TrainState,
        seqs: &[DenseSeq],
        weights: &LossWeights,
    ) -> Result<LossTerms> {
        let mut sum = LossTerms::default();
        if seqs.is_empty() {
            return Ok(sum);
        }
        let w = &state.weights;
        let c = &w.config;
        let dt = c.type_dim;
        self.batch.clear();
        for s in seqs {
            self.batch
                .push_shaped(c, &s.sentence.ids, Some(&s.sentence.shapes))?;
        }
        forward(w, &self.batch, &mut self.tape);
        let sentences: Vec<EncodedSentence> = seqs.iter().map(|s| s.sentence.clone()).collect();
        let outputs = gather_words(&self.tape, &self.batch, &sentences, 0, dt);
        let tokens = self.batch.tokens();
        self.d_boundary.clear();
        self.d_boundary.resize(tokens * 3, 0.0);
        self.d_types.clear();
        self.d_types.resize(tokens * dt, 0.0);
        let losses = match (&state.heads.assoc, self.head_grads.assoc.as_mut()) {
            (Some(p), Some(g)) => {
                dense_losses_with_memory(state, p, seqs, &outputs, weights, self.dense_scale, g)?
            }
            _ => seqs
                .iter()
                .zip(&outputs)
                .map(|(seq, out)| dense_head_loss(state, seq, out, weights))
                .collect::<Result<Vec<_>>>()?,
        };
        for (i, (seq, loss)) in seqs.iter().zip(&losses).enumerate() {
            scatter_dense_grads(
                loss,
                seq,
                self.batch.offsets()[i],
                self.dense_scale,
                dt,
                &mut DenseGrads {
                    boundary: &mut self.d_boundary,
                    types: &mut self.d_types,
                    heads: &mut self.head_grads,
                    classes: &mut self.class_grads,
                },
            );
            sum += &loss.terms;
        }
        if let Some(d) = self.distiller.as_mut() {
            let k = seqs.len();
            let mean = d.add_grads(
                &self.batch,
                &self.tape,
                self.dense_scale * k as f32,
                &mut self.d_boundary,
                &mut self.d_types,
            );
            sum.distill += mean * k as f64;
            sum.total += mean * k as f64;
        }
        self.backward(w);
        Ok(sum)
    }
}

/// The dense loss of one sequence from its gathered word outputs: its words scored against the
/// class vectors of its types (and the "other" vector when the run has one) with the CDT-CRF.
pub fn dense_head_loss(
    state: &TrainState,
    seq: &DenseSeq,
    out: &WordOutputs,
    weights: &LossWeights,
) -> Result<DenseLoss> {
    dense_head_loss_read(state, seq, out, weights, &[])
}

/// [`dense_head_loss`] with the type offsets of an associated-memory read (`[T, n]`, or
/// empty); the read's boundary offsets are already in `out.boundary`.
fn dense_head_loss_read(
    state: &TrainState,
    seq: &DenseSeq,
    out: &WordOutputs,
    weights: &LossWeights,
    type_offsets: &[f32],
) -> Result<DenseLoss> {
    let dt = state.weights.config.type_dim;
    let classes = &state.classes;
    let mut protos: Vec<f32> = Vec::with_capacity((seq.classes.len() + 1) * dt);
    for &row in &seq.classes {
        protos.extend_from_slice(classes.class(row));
    }
    if let Some(o) = classes.other_row(OTHER_BESIDE_CLASSES) {
        protos.extend_from_slice(o);
    }
    let sentence = SentenceRef {
        boundary: &out.boundary,
        types: &out.types,
        labels: &seq.sentence.labels,
    };
    dense_loss_with_offsets(
        &sentence,
        &protos,
        dt,
        &state.heads.cdt,
        weights,
        type_offsets,
    )
    .with_context(|| format!("dense sequence from corpus {}", seq.corpus))
}

/// Label `y` of sequence `from` in the label space of sequence `to`: a type `to` scores keeps
/// its index there; a type `to` does not score becomes `to`'s "other" type when the run has
/// one; "other" itself, and any type without a place, keeps only its tag (type index
/// `n_types`, which the read ignores).
fn memory_label(y: usize, from: &DenseSeq, to: &DenseSeq, other: bool) -> u16 {
    let Some(k) = ner_edge::decode::Tag::from_index(y).type_index() else {
        return 0;
    };
    let n_types = to.classes.len() + usize::from(other);
    let target = from
        .classes
        .get(k)
        .and_then(|row| {
            to.classes
                .iter()
                .position(|r| r == row)
                .or(other.then_some(to.classes.len()))
        })
        .unwrap_or(n_types);
    let inside = usize::from(y.is_multiple_of(2));
    (1 + 2 * target + inside).min(usize::from(u16::MAX)) as u16
}

/// The dense losses of a batch whose sequences read the associated memory made of the other
/// sequences of the batch (their type vectors and gold labels). Adds `scale ·` the read's
/// parameter gradients into `grads`; every loss's type-vector gradient includes what flows
/// back through the reads of the sequence's own words and of its words as others' memory.
fn dense_losses_with_memory(
    state: &TrainState,
    p: &AssocParams,
    seqs: &[DenseSeq],
    outputs: &[WordOutputs],
    weights: &LossWeights,
    scale: f32,
    grads: &mut AssocParams,
) -> Result<Vec<DenseLoss>> {
    let other = state.classes.other_row(OTHER_BESIDE_CLASSES).is_some();
    let mut as_memory: Vec<Vec<f32>> = outputs.iter().map(|o| vec![0.0; o.types.len()]).collect();
    let mut losses = Vec::with_capacity(seqs.len());
    for (i, (seq, out)) in seqs.iter().zip(outputs).enumerate() {
        let n = seq.classes.len() + usize::from(other);
        let mut memory = Vec::new();
        let mut labels = Vec::new();
        let mut owners = Vec::new();
        for (j, (from, o)) in seqs.iter().zip(outputs).enumerate() {
            if j == i {
                continue;
            }
            owners.push((j, memory.len()..memory.len() + o.types.len()));
            memory.extend_from_slice(&o.types);
            labels.extend(
                from.sentence
                    .labels
                    .iter()
                    .map(|&y| memory_label(y, from, seq, other)),
            );
        }
        let read = assoc_forward(p, &out.types, &memory, &labels, n)?;
        let read_out = WordOutputs {
            boundary: out
                .boundary
                .iter()
                .zip(&read.boundary)
                .map(|(a, b)| a + b)
                .collect(),
            types: out.types.clone(),
        };
        let mut loss = dense_head_loss_read(state, seq, &read_out, weights, &read.type_offsets)?;
        let g = assoc_backward(
            p,
            &out.types,
            &memory,
            &labels,
            n,
            &read,
            &loss.grad.boundary,
            &loss.d_type_scores,
            scale,
            grads,
        );
        for (dst, src) in loss.grad.types.iter_mut().zip(&g.words) {
            *dst += src;
        }
        for (j, range) in owners {
            for (dst, src) in as_memory[j].iter_mut().zip(&g.memory[range]) {
                *dst += src;
            }
        }
        losses.push(loss);
    }
    for (loss, extra) in losses.iter_mut().zip(as_memory) {
        for (dst, src) in loss.grad.types.iter_mut().zip(extra) {
            *dst += src;
        }
    }
    Ok(losses)
}

/// Where [`scatter_dense_grads`] adds a dense sequence's gradients.
pub struct DenseGrads<'a> {
    /// Piece-level `[N, 3]` boundary-logit gradients of the batch.
    pub boundary: &'a mut [f32],
    /// Piece-level `[N, type_dim]` type-vector gradients of the batch.
    pub types: &'a mut [f32],
    /// CDT (and prior) gradients.
    pub heads: &'a mut HeadParams,
    /// Class and "other" vector gradients.
    pub classes: &'a mut ClassParams,
}

/// Adds `scale ·` the gradients of `loss` (of `seq`, sentence starting at piece `offset` of
/// its batch) into `grads`.
pub fn scatter_dense_grads(
    loss: &DenseLoss,
    seq: &DenseSeq,
    offset: usize,
    scale: f32,
    type_dim: usize,
    grads: &mut DenseGrads<'_>,
) {
    let dt = type_dim;
    scatter_sentence_grad(
        &loss.grad,
        &seq.sentence,
        offset,
        scale,
        dt,
        grads.boundary,
        grads.types,
    );
    for (k, &row) in seq.classes.iter().enumerate() {
        grads
            .classes
            .add_to_class(row, &loss.d_prototypes[k * dt..(k + 1) * dt], scale);
    }
    if grads.classes.has_other() {
        let k = seq.classes.len();
        grads.classes.add_to_other(
            OTHER_BESIDE_CLASSES,
            &loss.d_prototypes[k * dt..(k + 1) * dt],
            scale,
        );
    }
    grads.heads.add_cdt_grad(&loss.cdt, scale);
}

/// The episode loss of `ep` from its gathered word outputs (support sentences, then query
/// sentences), with label-memory retrieval from `state.memory`; also returns the entity
/// vectors of the episode to push into the label memory after the step.
pub fn episode_head_loss(
    state: &TrainState,
    ep: &EncodedEpisode,
    support_out: &[WordOutputs],
    query_out: &[WordOutputs],
    weights: &LossWeights,
) -> Result<(EpisodeLoss, MemoryPushes)> {
    let dt = state.weights.config.type_dim;
    let n = ep.types.len();
    let other = state.classes.other_row(OTHER_BESIDE_SUPPORT);
    let labelled = n + usize::from(other.is_some());
    let support = sentence_refs(support_out, &ep.support);
    let query = sentence_refs(query_out, &ep.query);
    let support_vectors = entity_vectors(&support, dt, labelled)?;
    let mapped_means: Vec<Option<Vec<f32>>> = ep
        .types
        .iter()
        .zip(&support_vectors)
        .map(|(name, v)| {
            let own = crate::loss::SlotKey::new(ep.source.clone(), name.clone());
            state.memory.retrieve(v, Some(&own))
        })
        .collect();
    let loss = episode_loss(
        &crate::loss::EpisodeInput {
            n_types: n,
            type_dim: dt,
            type_names: &ep.types,
            support: &support,
            query: &query,
            mapped_means: &mapped_means,
            other,
        },
        &state.heads.prior,
        &state.heads.cdt,
        weights,
    )
    .with_context(|| format!("episode from {} with types {:?}", ep.source, ep.types))?;
    let mut all: Vec<SentenceRef<'_>> = support.clone();
    all.extend(query.iter().copied());
    let pushes = entity_vectors(&all, dt, labelled)?
        .into_iter()
        .zip(&ep.types)
        .filter(|(v, _)| !v.is_empty())
        .map(|(v, name)| ((ep.source.clone(), name.clone()), v))
        .collect();
    Ok((loss, pushes))
}

/// Adds `scale ·` the word gradients of `loss` into the first-piece rows of the episode's
/// sentences (support, then query) in the piece-level `d_boundary` `[N, 3]` and `d_types`
/// `[N, type_dim]` of a batch with sentence `offsets`, where the episode's first sentence is
/// sentence `first` of the batch.
#[allow(clippy::too_many_arguments)]
pub fn scatter_word_grads(
    loss: &EpisodeLoss,
    ep: &EncodedEpisode,
    offsets: &[usize],
    first: usize,
    scale: f32,
    type_dim: usize,
    d_boundary: &mut [f32],
    d_types: &mut [f32],
) {
    let grads = loss.support.iter().chain(&loss.query);
    let sentences = ep.support.iter().chain(&ep.query);
    for (i, (g, s)) in grads.zip(sentences).enumerate() {
        scatter_sentence_grad(
            g,
            s,
            offsets[first + i],
            scale,
            type_dim,
            d_boundary,
            d_types,
        );
    }
}

/// Adds `scale ·` the word gradients `g` of sentence `s`, whose pieces start at row `base` of
/// the batch, into the first-piece rows of `d_boundary` `[N, 3]` and `d_types`
/// `[N, type_dim]`.
pub fn scatter_sentence_grad(
    g: &SentenceGrad,
    s: &EncodedSentence,
    base: usize,
    scale: f32,
    type_dim: usize,
    d_boundary: &mut [f32],
    d_types: &mut [f32],
) {
    let dt = type_dim;
    for (word, &p) in s.first_piece.iter().enumerate() {
        let row = base + p;
        for k in 0..3 {
            d_boundary[row * 3 + k] += scale * g.boundary[word * 3 + k];
        }
        for k in 0..dt {
            d_types[row * dt + k] += scale * g.types[word * dt + k];
        }
    }
}
