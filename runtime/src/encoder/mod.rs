//! The encoder: the bundle's ONNX graph run by tract on CPU.
//!
//! One optimised plan is built per bundle load, with symbolic batch and sequence length.
//! Sequences longer than the window (the graph's positions, or the bundle's
//! `encoder.trained_window` when that is shorter) are split into overlapping [`windows`] and
//! their per-piece scores merged, so no input is ever truncated.

pub mod fusion;
pub mod heads;
pub mod prompts;
pub mod windows;

use std::sync::Arc;

use tract_onnx::prelude::*;

use crate::bundle::EncoderMeta;
use crate::tokenizer::{Encoding, SHAPE_CLASSES, SHAPE_SCHEME};
use crate::{Error, Result};

pub use fusion::{ContextFusion, ContextGate, ContextWindow};
pub use heads::Heads;
pub use prompts::Prompts;
pub use windows::{plan_windows, Window};

/// Per-piece encoder outputs of one sequence.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PieceScores {
    /// `[pieces, 3]` unnormalised boundary logits (O, B, I).
    pub boundary: Vec<f32>,
    /// `[pieces, type_dim]` type-space vectors.
    pub types: Vec<f32>,
    /// `[pieces, hidden]` last hidden states (the heads' input); empty unless the encoder was
    /// loaded with [`Encoder::load_exposing_hidden`].
    pub hidden: Vec<f32>,
}

/// One sequence to encode: word-piece ids (no `[CLS]`/`[SEP]`) and the word-shape id of each
/// piece ([`crate::tokenizer::Shape`]). Graphs without a shape input ignore `shapes`; an empty
/// `shapes` means every piece has shape 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PieceSeq<'a> {
    /// Word-piece ids.
    pub ids: &'a [u32],
    /// Shape id of each piece, or empty.
    pub shapes: &'a [u8],
}

impl<'a> PieceSeq<'a> {
    /// Ids with every shape 0.
    pub fn unshaped(ids: &'a [u32]) -> PieceSeq<'a> {
        PieceSeq { ids, shapes: &[] }
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn slice(&self, from: usize, to: usize) -> PieceSeq<'a> {
        PieceSeq {
            ids: &self.ids[from..to],
            shapes: self.shapes.get(from..to).unwrap_or(&[]),
        }
    }
}

impl<'a> From<&'a Encoding> for PieceSeq<'a> {
    fn from(enc: &'a Encoding) -> PieceSeq<'a> {
        PieceSeq {
            ids: &enc.ids,
            shapes: &enc.shapes,
        }
    }
}

/// Special token ids the encoder wraps every window with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpecialIds {
    /// Id of the token before every window.
    pub cls: u32,
    /// Id of the token after every window.
    pub sep: u32,
    /// Id that pads shorter sequences of a batch.
    pub pad: u32,
}

/// A loaded, optimised encoder graph (cloning shares the plan).
#[derive(Clone)]
pub struct Encoder {
    plan: Arc<TypedSimplePlan>,
    type_dim: usize,
    max_pieces: usize,
    vocab_size: usize,
    special: SpecialIds,
    batch_tokens: usize,
    /// The heads, when the hidden state is a third output.
    heads: Option<Heads>,
    /// The graph takes `shape_ids` as its third input.
    shape_input: bool,
    /// The graph takes prompts ([`prompts`]) of this length after its other inputs, and these
    /// are the values fed.
    prompts: Option<PromptValues>,
}

/// The prompt inputs fed on every run of a prompted plan.
#[derive(Clone)]
struct PromptValues {
    len: usize,
    key: Tensor,
    value: Tensor,
    gate: Tensor,
}

impl PromptValues {
    fn new(p: &Prompts) -> Result<PromptValues> {
        let err = |e: TractError| Error::Encoder(format!("prompt tensors: {e:#}"));
        Ok(PromptValues {
            len: p.len,
            key: Tensor::from_shape(&[p.layers, p.len, p.hidden], &p.key).map_err(err)?,
            value: Tensor::from_shape(&[p.layers, p.len, p.hidden], &p.value).map_err(err)?,
            gate: Tensor::from_shape(&[p.layers, p.heads], &p.gate).map_err(err)?,
        })
    }
}

/// Upper bound on padded tokens (batch × length) per encoder call. Small batches keep the
/// activations of a layer in the core's cache: on the 2-core development VM, 256 tagged the
/// CoNLL-2003 test text 1.47× faster than 2,048 on one thread and 1.59× on two, with a lower
/// peak RSS (`benches/scripts/batch_tokens.sh`, `benches/RESULTS.md`).
pub const DEFAULT_BATCH_TOKENS: usize = 256;

impl Encoder {
    /// Parses and optimises `onnx` (the graph contract is documented on [`EncoderMeta`]) and
    /// checks its outputs against `meta`.
    pub fn load(onnx: &[u8], meta: &EncoderMeta, special: SpecialIds) -> Result<Encoder> {
        Encoder::load_with(onnx, meta, special, false, None)
    }

    /// [`Encoder::load`] (or [`Encoder::load_exposing_hidden`] when `expose_hidden`) of the
    /// graph rewritten to take `prompts` ([`prompts::add_prompt_inputs`]), which every run
    /// feeds. Errors when the prompts do not fit `meta` or the graph cannot take them.
    pub fn load_with_prompts(
        onnx: &[u8],
        meta: &EncoderMeta,
        special: SpecialIds,
        expose_hidden: bool,
        prompts: &Prompts,
    ) -> Result<Encoder> {
        Encoder::load_with(onnx, meta, special, expose_hidden, Some(prompts))
    }

    /// This encoder's plan fed with other `prompts` of the same length (no new plan is built).
    /// Errors when the encoder takes no prompts or they differ in shape.
    pub fn with_prompts(&self, prompts: &Prompts) -> Result<Encoder> {
        match &self.prompts {
            Some(v)
                if v.len == prompts.len && v.gate.shape() == [prompts.layers, prompts.heads] =>
            {
                prompts.check("prompts")?;
                let mut e = self.clone();
                e.prompts = Some(PromptValues::new(prompts)?);
                Ok(e)
            }
            _ => Err(Error::Encoder(
                "this encoder plan takes no prompts of that shape".into(),
            )),
        }
    }

    /// The length of the prompts this encoder feeds, if it takes any.
    pub fn prompt_len(&self) -> Option<usize> {
        self.prompts.as_ref().map(|p| p.len)
    }

    /// [`Encoder::load`], with the heads' input (the last hidden state) as a third graph output,
    /// filled into [`PieceScores::hidden`], and the heads read out of the graph
    /// ([`Encoder::heads`]); for head tuning and for label packs with tuned heads. Errors
    /// ([`Error::Encoder`]) when the graph's heads are not in a form [`Heads::from_onnx`] reads.
    pub fn load_exposing_hidden(
        onnx: &[u8],
        meta: &EncoderMeta,
        special: SpecialIds,
    ) -> Result<Encoder> {
        Encoder::load_with(onnx, meta, special, true, None)
    }

    fn load_with(
        onnx: &[u8],
        meta: &EncoderMeta,
        special: SpecialIds,
        expose_hidden: bool,
        prompts: Option<&Prompts>,
    ) -> Result<Encoder> {
        let err = |stage: &str, e: TractError| Error::Encoder(format!("{stage}: {e:#}"));
        if meta.max_positions < 3 {
            return Err(Error::Bundle(format!(
                "encoder.max_positions is {}, need at least 3",
                meta.max_positions
            )));
        }
        let framework = tract_onnx::onnx();
        let mut proto = framework
            .proto_model_for_read(&mut &onnx[..])
            .map_err(|e| err("cannot parse encoder.onnx", e))?;
        let prompt_values = match prompts {
            None => None,
            Some(p) => {
                p.check("prompts")?;
                if (p.layers, p.heads, p.hidden) != (meta.layers, meta.heads, meta.hidden) {
                    return Err(Error::Bundle(format!(
                        "prompts for {} layers, {} heads, hidden {} do not fit an encoder of {} \
                         layers, {} heads, hidden {}",
                        p.layers, p.heads, p.hidden, meta.layers, meta.heads, meta.hidden
                    )));
                }
                prompts::add_prompt_inputs(&mut proto, p.layers, p.heads, p.hidden, p.len)?;
                Some(PromptValues::new(p)?)
            }
        };
        let parsed = framework
            .parse(&proto, None)
            .map_err(|e| err("cannot parse encoder.onnx", e))?;
        if !parsed.unresolved_inputs.is_empty() {
            return Err(Error::Encoder(format!(
                "cannot parse encoder.onnx: unresolved inputs {:?}",
                parsed.unresolved_inputs
            )));
        }
        let mut model = parsed.model;
        let mut heads = None;
        if expose_hidden {
            let graph = proto
                .graph
                .as_ref()
                .ok_or_else(|| Error::Encoder("encoder.onnx has no graph".into()))?;
            let (h, input) = Heads::from_onnx(graph, &framework)?;
            if h.type_dim != meta.type_dim || h.hidden != meta.hidden {
                return Err(Error::Encoder(format!(
                    "the graph's heads are [{}, 3] and [{}, {}] but the bundle says hidden {} \
                     and type_dim {}",
                    h.hidden, h.hidden, h.type_dim, meta.hidden, meta.type_dim
                )));
            }
            let outlet = parsed.outlets_by_name.get(&input).copied().ok_or_else(|| {
                Error::Encoder(format!("the heads' input {input:?} is not a graph value"))
            })?;
            let mut outputs = model
                .output_outlets()
                .map_err(|e| err("cannot read graph outputs", e))?
                .to_vec();
            outputs.push(outlet);
            model
                .select_output_outlets(&outputs)
                .map_err(|e| err("cannot add the hidden state as an output", e))?;
            heads = Some(h);
        }
        drop(parsed.outlets_by_name);
        drop(proto);
        let shape_input = match meta.shape_scheme.as_deref() {
            None => false,
            Some(SHAPE_SCHEME) => true,
            Some(other) => {
                return Err(Error::Bundle(format!(
                    "the bundle's encoder uses word-shape scheme {other:?}; this ner-edge knows \
                     only {SHAPE_SCHEME:?} (a newer ner-edge is needed)"
                )))
            }
        };
        let input_names: Vec<String> = model
            .input_outlets()
            .map_err(|e| err("cannot read graph inputs", e))?
            .iter()
            .map(|o| model.node(o.node).name.clone())
            .collect();
        let model = model
            .into_optimized()
            .map_err(|e| err("cannot optimise encoder graph", e))?;
        let mut want_inputs = vec!["input_ids", "attention_mask"];
        if shape_input {
            want_inputs.push("shape_ids");
        }
        if prompt_values.is_some() {
            want_inputs.extend([
                prompts::PROMPT_KEY,
                prompts::PROMPT_VALUE,
                prompts::PROMPT_GATE,
            ]);
        }
        let want_outputs = if expose_hidden { 3 } else { 2 };
        if input_names != want_inputs || model.outputs.len() != want_outputs {
            return Err(Error::Encoder(format!(
                "encoder graph has inputs {input_names:?} and {} outputs, expected {want_inputs:?} \
                 (encoder.shape_scheme is {:?}) and {want_outputs} outputs (boundary, types{})",
                model.outputs.len(),
                meta.shape_scheme,
                if expose_hidden { ", hidden" } else { "" }
            )));
        }
        let mut expected = vec![("boundary", 3usize), ("types", meta.type_dim)];
        if expose_hidden {
            expected.push(("hidden", meta.hidden));
        }
        for (i, (what, last)) in expected.iter().enumerate() {
            let fact = model
                .output_fact(i)
                .map_err(|e| err("cannot read output shape", e))?;
            let got = fact
                .shape
                .last()
                .and_then(|d| d.as_i64())
                .and_then(|d| usize::try_from(d).ok());
            if fact.rank() != 3 || got != Some(*last) {
                return Err(Error::Encoder(format!(
                    "encoder output {i} ({what}) has shape {:?}, expected [batch, seq, {last}]",
                    fact.shape
                )));
            }
        }
        let plan = model
            .into_runnable()
            .map_err(|e| err("cannot plan encoder graph", e))?;
        let positions = meta.max_positions - 2;
        let max_pieces = match meta.trained_window {
            Some(0) => {
                return Err(Error::Bundle(
                    "encoder.trained_window is 0; it must be at least 1".into(),
                ))
            }
            Some(w) => w.min(positions),
            None => positions,
        };
        Ok(Encoder {
            plan,
            type_dim: meta.type_dim,
            max_pieces,
            vocab_size: meta.vocab_size,
            special,
            batch_tokens: DEFAULT_BATCH_TOKENS,
            heads,
            shape_input,
            prompts: prompt_values,
        })
    }

    /// The boundary head and type projection read from the graph, when the encoder was loaded
    /// with [`Encoder::load_exposing_hidden`].
    pub fn heads(&self) -> Option<&Heads> {
        self.heads.as_ref()
    }

    /// Width of the hidden state in [`PieceScores::hidden`] (0 unless it is exposed).
    pub fn hidden_dim(&self) -> usize {
        self.heads.as_ref().map_or(0, |h| h.hidden)
    }

    /// Width of the type vectors.
    pub fn type_dim(&self) -> usize {
        self.type_dim
    }

    /// Whether the graph takes word shapes (the bundle's `encoder.shape_scheme` is set).
    pub fn takes_shapes(&self) -> bool {
        self.shape_input
    }

    /// Most pieces one window holds: positions minus `[CLS]` and `[SEP]`, or the bundle's
    /// `encoder.trained_window` when that is smaller.
    pub fn max_pieces(&self) -> usize {
        self.max_pieces
    }

    /// Overrides the window length (at most [`Self::max_pieces`]); used to exercise windowing.
    pub fn set_max_pieces(&mut self, n: usize) {
        self.max_pieces = n.clamp(1, self.max_pieces);
    }

    /// Upper bound on padded tokens (batch × length) per encoder call; default
    /// [`DEFAULT_BATCH_TOKENS`]. Changes speed and memory, not scores beyond float rounding.
    pub fn batch_tokens(&self) -> usize {
        self.batch_tokens
    }

    /// Sets [`Encoder::batch_tokens`] (at least 1).
    pub fn set_batch_tokens(&mut self, n: usize) {
        self.batch_tokens = n.max(1);
    }

    /// Runs one padded batch; every sequence must hold at most [`Self::max_pieces`] ids, and
    /// either no shapes or one valid shape id per piece.
    pub fn run_batch(&self, seqs: &[PieceSeq<'_>]) -> Result<Vec<PieceScores>> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let longest = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        if longest > self.max_pieces {
            return Err(Error::Encoder(format!(
                "sequence of {longest} pieces exceeds the window of {}",
                self.max_pieces
            )));
        }
        let width = longest + 2;
        let mut ids = vec![i64::from(self.special.pad); seqs.len() * width];
        let mut mask = vec![0i64; seqs.len() * width];
        let mut shapes = vec![
            0i64;
            if self.shape_input {
                seqs.len() * width
            } else {
                0
            }
        ];
        for (b, seq) in seqs.iter().enumerate() {
            if self.shape_input && !seq.shapes.is_empty() {
                if seq.shapes.len() != seq.ids.len() {
                    return Err(Error::Encoder(format!(
                        "{} shapes for {} pieces",
                        seq.shapes.len(),
                        seq.ids.len()
                    )));
                }
                let row = &mut shapes[b * width + 1..b * width + 1 + seq.len()];
                for (slot, &s) in row.iter_mut().zip(seq.shapes) {
                    if usize::from(s) >= SHAPE_CLASSES {
                        return Err(Error::Encoder(format!(
                            "word-shape id {s} outside the {SHAPE_CLASSES} classes"
                        )));
                    }
                    *slot = i64::from(s);
                }
            }
            let row = &mut ids[b * width..(b + 1) * width];
            row[0] = i64::from(self.special.cls);
            for (slot, &id) in row[1..].iter_mut().zip(seq.ids.iter()) {
                if id as usize >= self.vocab_size {
                    return Err(Error::Encoder(format!(
                        "token id {id} outside the vocabulary of {}",
                        self.vocab_size
                    )));
                }
                *slot = i64::from(id);
            }
            row[seq.len() + 1] = i64::from(self.special.sep);
            mask[b * width..b * width + seq.len() + 2].fill(1);
        }
        let err = |e: TractError| Error::Encoder(format!("encoder run failed: {e:#}"));
        let shape = [seqs.len(), width];
        let mut inputs: TVec<TValue> = tvec!(
            Tensor::from_shape(&shape, &ids).map_err(err)?.into_tvalue(),
            Tensor::from_shape(&shape, &mask)
                .map_err(err)?
                .into_tvalue(),
        );
        if self.shape_input {
            inputs.push(
                Tensor::from_shape(&shape, &shapes)
                    .map_err(err)?
                    .into_tvalue(),
            );
        }
        if let Some(p) = &self.prompts {
            inputs.extend([
                p.key.clone().into_tvalue(),
                p.value.clone().into_tvalue(),
                p.gate.clone().into_tvalue(),
            ]);
        }
        let outputs = self.plan.run(inputs).map_err(err)?;
        let boundary = outputs[0]
            .try_as_plain_ram()
            .and_then(|v| v.as_slice::<f32>())
            .map_err(err)?;
        let types = outputs[1]
            .try_as_plain_ram()
            .and_then(|v| v.as_slice::<f32>())
            .map_err(err)?;
        let d = self.type_dim;
        let h = self.hidden_dim();
        let hidden: &[f32] = if h > 0 {
            outputs[2]
                .try_as_plain_ram()
                .and_then(|v| v.as_slice::<f32>())
                .map_err(err)?
        } else {
            &[]
        };
        if boundary.len() != seqs.len() * width * 3
            || types.len() != seqs.len() * width * d
            || hidden.len() != seqs.len() * width * h
        {
            return Err(Error::Encoder(format!(
                "encoder returned {} boundary, {} type and {} hidden values for a [{}, {width}] \
                 batch",
                boundary.len(),
                types.len(),
                hidden.len(),
                seqs.len()
            )));
        }
        Ok(seqs
            .iter()
            .enumerate()
            .map(|(b, seq)| {
                let first = b * width + 1;
                let last = first + seq.len();
                PieceScores {
                    boundary: boundary[first * 3..last * 3].to_vec(),
                    types: types[first * d..last * d].to_vec(),
                    hidden: hidden[first * h..last * h].to_vec(),
                }
            })
            .collect())
    }

    /// Scores every piece of every sequence, whatever its length: long sequences go through
    /// overlapping windows, windows are grouped by length into batches. Also returns the
    /// number of windows used per sequence. Same as [`Encoder::encode_on`] with one thread.
    pub fn encode(&self, seqs: &[PieceSeq<'_>]) -> Result<(Vec<PieceScores>, Vec<usize>)> {
        self.encode_on(seqs, 1)
    }

    /// [`Encoder::encode`] with the batches run on up to `threads` threads. The batches are
    /// formed from all of `seqs` before any thread starts and each thread runs whole batches,
    /// so the scores are bit-identical whatever `threads` is. On errors, the error of the
    /// first failing batch (in batch order) is returned.
    pub fn encode_on(
        &self,
        seqs: &[PieceSeq<'_>],
        threads: usize,
    ) -> Result<(Vec<PieceScores>, Vec<usize>)> {
        struct Job {
            seq: usize,
            window: Window,
        }
        let mut jobs = Vec::new();
        let mut window_counts = Vec::with_capacity(seqs.len());
        for (i, s) in seqs.iter().enumerate() {
            let ws = plan_windows(s.len(), self.max_pieces);
            window_counts.push(ws.len());
            jobs.extend(ws.into_iter().map(|window| Job { seq: i, window }));
        }
        jobs.sort_by_key(|j| std::cmp::Reverse(j.window.end - j.window.start));
        let mut batches: Vec<&[Job]> = Vec::new();
        let mut at = 0;
        while at < jobs.len() {
            let width = jobs[at].window.end - jobs[at].window.start + 2;
            let per_batch = (self.batch_tokens / width).max(1);
            let end = (at + per_batch).min(jobs.len());
            batches.push(&jobs[at..end]);
            at = end;
        }
        let run = |batch: &&[Job]| {
            let inputs: Vec<PieceSeq<'_>> = batch
                .iter()
                .map(|j| seqs[j.seq].slice(j.window.start, j.window.end))
                .collect();
            self.run_batch(&inputs)
        };
        let results = run_batches(&batches, threads, run)?;
        let mut out: Vec<PieceScores> = seqs
            .iter()
            .map(|s| PieceScores {
                boundary: vec![0.0; s.len() * 3],
                types: vec![0.0; s.len() * self.type_dim],
                hidden: vec![0.0; s.len() * self.hidden_dim()],
            })
            .collect();
        let d = self.type_dim;
        let h = self.hidden_dim();
        for (batch, scores) in batches.iter().zip(results) {
            for (job, sc) in batch.iter().zip(scores) {
                let w = job.window;
                let from = w.keep_start - w.start;
                let n = w.keep_end - w.keep_start;
                let dst = &mut out[job.seq];
                dst.boundary[w.keep_start * 3..w.keep_end * 3]
                    .copy_from_slice(&sc.boundary[from * 3..(from + n) * 3]);
                dst.types[w.keep_start * d..w.keep_end * d]
                    .copy_from_slice(&sc.types[from * d..(from + n) * d]);
                dst.hidden[w.keep_start * h..w.keep_end * h]
                    .copy_from_slice(&sc.hidden[from * h..(from + n) * h]);
            }
        }
        Ok((out, window_counts))
    }
}

/// Runs `run` on every batch, on up to `threads` scoped threads that each take the next batch
/// not yet taken; returns the results in batch order, or the error of the first failing batch.
fn run_batches<B: Sync, R: Send>(
    batches: &[B],
    threads: usize,
    run: impl Fn(&B) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let threads = threads.clamp(1, batches.len().max(1));
    if threads == 1 {
        return batches.iter().map(run).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let (next, run) = (&next, &run);
    let mut done: Vec<(usize, Result<R>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(move || {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(batch) = batches.get(i) else {
                            return mine;
                        };
                        mine.push((i, run(batch)));
                    }
                })
            })
            .collect();
        let mut all = Vec::with_capacity(batches.len());
        for h in handles {
            all.extend(
                h.join()
                    .map_err(|_| Error::Encoder("an encoder thread panicked".into()))?,
            );
        }
        Ok::<_, Error>(all)
    })?;
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}
