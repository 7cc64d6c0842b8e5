//! One meta-training optimiser step with the encoder on the GPU and the losses on the CPU
//! ([`CudaTrainer::step`]).
//!
//! Every sentence of every episode of the step and every dense sequence go through the
//! encoder (word shapes included) in one packed batch; the word-level head outputs come back to
//! the host, where each episode's and each dense sequence's loss runs exactly as on the CPU
//! path ([`crate::train::step::episode_head_loss`], [`crate::train::step::dense_head_loss`],
//! spread over the configured threads, [`step_losses`]); the piece-level output gradients go
//! back to the device for one backward pass; the gradient norm, clipping and AdamW run on the
//! device for the encoder and both token heads and on the host for the CDT numbers, the prior
//! MLP and the class / "other" vectors. The host copies of the encoder
//! weights and their AdamW moments are refreshed by [`CudaTrainer::sync_to_host`] (before a
//! checkpoint, a validation or the export).

use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Context, Result};

use super::dev::{DevBuf, Gpu, SUMSQ_BLOCKS};
use super::model::CudaModel;
use super::nccl::NcclRank;
use super::DeviceInfo;
use crate::backprop::PieceBatch;
use crate::loss::{ClassParams, EpisodeLoss, HeadParams, LossTerms, OTHER_BESIDE_SUPPORT};
use crate::model::{EncoderConfig, BOUNDARY_LABELS};
use crate::train::backend::StepBackend;
use crate::train::collective::{Collective, SingleRank, StepShare};
use crate::train::config::TrainConfig;
use crate::train::data::EncodedEpisode;
use crate::train::dense::DenseSeq;
use crate::train::meta::{decays, is_head_tensor, TrainState};
use crate::train::optimizer::{clip_factor, AdamW, AdamWScalars, ParamUpdate};
use crate::train::step::{
    dense_head_loss, episode_head_loss, gather_words_from, scatter_dense_grads, scatter_word_grads,
    DenseGrads,
};

/// Wall-clock seconds of the phases of one [`CudaTrainer::step`], each ended by a stream
/// synchronisation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PhaseTimes {
    /// Packing the batch on the host and copying ids and offsets to the device.
    pub upload: f64,
    /// Encoder and heads forward.
    pub forward: f64,
    /// Head outputs to the host, output gradients to the device.
    pub transfers: f64,
    /// Episode losses on the host (threads), scatter of their gradients.
    pub losses: f64,
    /// Encoder and heads backward.
    pub backward: f64,
    /// Summing the gradients over the ranks of a data-parallel run (0 with one rank).
    pub all_reduce: f64,
    /// Gradient norm, clipping and AdamW (device and host parts).
    pub optimiser: f64,
}

impl PhaseTimes {
    /// Sum of all phases.
    pub fn total(&self) -> f64 {
        self.upload
            + self.forward
            + self.transfers
            + self.losses
            + self.backward
            + self.all_reduce
            + self.optimiser
    }
}

/// What one step produced.
#[derive(Clone, Debug)]
pub struct StepOutcome {
    /// Loss terms of the episodes and dense sequences, label-memory rows to push.
    pub share: StepShare,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Pieces in the step's batch.
    pub tokens: usize,
    /// Time per phase.
    pub phases: PhaseTimes,
}

/// The GPU side of a training run: the model on the device, AdamW moments of its tensors, and
/// reusable host buffers.
pub struct CudaTrainer {
    model: CudaModel,
    m: DevBuf<f32>,
    v: DevBuf<f32>,
    partial: DevBuf<f64>,
    total: DevBuf<f64>,
    batch: PieceBatch,
    boundary: Vec<f32>,
    types: Vec<f32>,
    grads: HostGrads,
    scale: f32,
    dense_scale: f32,
    threads: usize,
    host_stale: bool,
}

impl CudaTrainer {
    /// Opens CUDA device 0 and uploads the weights and AdamW moments of `state`.
    pub fn open(state: &TrainState, config: &TrainConfig) -> Result<CudaTrainer> {
        CudaTrainer::new(Gpu::open(0)?, state, config)
    }

    /// [`CudaTrainer::open`] on an opened device.
    pub fn new(gpu: Gpu, state: &TrainState, config: &TrainConfig) -> Result<CudaTrainer> {
        let model = CudaModel::new(gpu, &state.weights)?;
        let n_enc = model.table().len();
        let n_host = state.heads.tensors().len() + state.classes.tensors().len();
        ensure!(
            state.opt.m.len() == n_enc + n_host && state.opt.v.len() == n_enc + n_host,
            "optimiser state has {} tensors, the model {}",
            state.opt.m.len(),
            n_enc + n_host
        );
        let s = &model.gpu.stream;
        let m = DevBuf::from_host(s, &state.opt.m[..n_enc].concat())?;
        let v = DevBuf::from_host(s, &state.opt.v[..n_enc].concat())?;
        ensure!(
            m.len() == model.parameter_count() && v.len() == model.parameter_count(),
            "optimiser moments do not match the model's tensors"
        );
        let partial = DevBuf::zeros(s, SUMSQ_BLOCKS)?;
        let total = DevBuf::zeros(s, 1)?;
        model.gpu.sync()?;
        Ok(CudaTrainer {
            m,
            v,
            partial,
            total,
            batch: PieceBatch::default(),
            boundary: Vec::new(),
            types: Vec::new(),
            grads: HostGrads::new(state),
            scale: 1.0 / config.episodes_per_step.max(1) as f32,
            dense_scale: config.dense.weight / config.dense.sequences_per_step.max(1) as f32,
            threads: config.threads.max(1),
            host_stale: false,
            model,
        })
    }

    /// The device in use.
    pub fn device(&self) -> &DeviceInfo {
        &self.model.gpu.kernels.device
    }

    /// The model on the device.
    pub fn model(&self) -> &CudaModel {
        &self.model
    }

    /// Copies the device weights and AdamW moments into `state` when a step changed them since
    /// the last copy.
    pub fn sync_to_host(&mut self, state: &mut TrainState) -> Result<()> {
        if !self.host_stale {
            return Ok(());
        }
        self.model.download_weights(&mut state.weights)?;
        let s = &self.model.gpu.stream;
        for (slot, (m, v)) in self
            .model
            .table()
            .iter()
            .zip(state.opt.m.iter_mut().zip(state.opt.v.iter_mut()))
        {
            self.m.download(s, slot.offset, m)?;
            self.v.download(s, slot.offset, v)?;
        }
        self.host_stale = false;
        Ok(())
    }

    /// One optimiser step on `episodes` with the learning rates times `factor`: forward on the
    /// GPU, losses on the host, backward, clipping and AdamW; `state.opt.t` advances, the
    /// CDT/prior parameters and their moments in `state` are updated, the encoder's stay on
    /// the device until [`CudaTrainer::sync_to_host`]. `state.step` and the label memory are
    /// left to the caller, as with the CPU path.
    pub fn step(
        &mut self,
        state: &mut TrainState,
        episodes: &[EncodedEpisode],
        dense: &[DenseSeq],
        config: &TrainConfig,
        factor: f32,
    ) -> Result<StepOutcome> {
        self.step_ranked(state, episodes, dense, config, factor, &mut SingleRank)
    }

    /// [`CudaTrainer::step`] on one rank of a data-parallel run: `episodes` and `dense` are
    /// this rank's share, and the gradients are summed over the ranks (in place on the device
    /// over NCCL, through the host for any other [`Collective`]) before the norm, clipping and
    /// AdamW.
    pub fn step_ranked(
        &mut self,
        state: &mut TrainState,
        episodes: &[EncodedEpisode],
        dense: &[DenseSeq],
        config: &TrainConfig,
        factor: f32,
        collective: &mut dyn Collective,
    ) -> Result<StepOutcome> {
        let mut ph = PhaseTimes::default();
        let c = state.weights.config.clone();

        let t = Instant::now();
        let layout = pack_step(&mut self.batch, episodes, dense, &c)?;
        self.model.upload_batch(&self.batch)?;
        self.model.gpu.sync()?;
        ph.upload = t.elapsed().as_secs_f64();

        let t = Instant::now();
        self.model.forward_uploaded()?;
        self.model.gpu.sync()?;
        ph.forward = t.elapsed().as_secs_f64();

        let t = Instant::now();
        self.model.outputs(&mut self.boundary, &mut self.types)?;
        ph.transfers = t.elapsed().as_secs_f64();

        let t = Instant::now();
        let outputs = StepOutputs {
            offsets: self.batch.offsets(),
            first: &layout.first,
            dense_first: layout.dense_first,
            boundary: &self.boundary,
            types: &self.types,
        };
        let losses = step_losses(
            state,
            episodes,
            dense,
            &outputs,
            config,
            self.threads,
            (self.scale, self.dense_scale),
            &mut self.grads,
        )?;
        let n = self.batch.tokens();
        ph.losses = t.elapsed().as_secs_f64();

        let t = Instant::now();
        self.model
            .upload_output_grads(&self.grads.boundary, &self.grads.types)?;
        self.model.gpu.sync()?;
        ph.transfers += t.elapsed().as_secs_f64();

        let t = Instant::now();
        self.model.zero_grads()?;
        self.model.backward_uploaded()?;
        self.model.gpu.sync()?;
        ph.backward = t.elapsed().as_secs_f64();

        if !collective.is_identity() {
            let t = Instant::now();
            self.all_reduce_grads(collective)
                .with_context(|| format!("summing the gradients of step {}", state.step + 1))?;
            ph.all_reduce = t.elapsed().as_secs_f64();
        }

        let t = Instant::now();
        let grad_norm = self.update(state, config, factor)?;
        ph.optimiser = t.elapsed().as_secs_f64();

        Ok(StepOutcome {
            share: losses,
            grad_norm,
            tokens: n,
            phases: ph,
        })
    }

    /// Sums the device gradients and the host CDT/prior/class gradients over the ranks.
    fn all_reduce_grads(&mut self, collective: &mut dyn Collective) -> Result<()> {
        let n = self.model.parameter_count();
        let grads = self.model.grads_ptr();
        let stream = Arc::clone(&self.model.gpu.stream);
        if let Some(nccl) = collective.as_any_mut().downcast_mut::<NcclRank>() {
            // SAFETY: the gradient allocation holds `parameter_count` values and nothing else
            // touches it until `sync` below.
            unsafe { nccl.all_reduce_device(grads, n, &stream)? };
            self.model.gpu.sync()?;
        } else {
            let mut host = vec![0.0f32; n];
            self.model.download_grads_flat(&mut host)?;
            collective.all_reduce_sum(&mut host)?;
            self.model.upload_grads_flat(&host)?;
        }
        let mut heads = self.grads.host_tensors_mut();
        let mut flat: Vec<f32> = heads.iter().flat_map(|(_, g)| g.iter().copied()).collect();
        collective.all_reduce_sum(&mut flat)?;
        let mut at = 0;
        for (_, g) in heads.iter_mut() {
            g.copy_from_slice(&flat[at..at + g.len()]);
            at += g.len();
        }
        Ok(())
    }

    /// Norm, clipping and AdamW of every tensor; returns the norm before clipping.
    fn update(&mut self, state: &mut TrainState, config: &TrainConfig, factor: f32) -> Result<f64> {
        let gpu = &self.model.gpu;
        let s = &gpu.stream;
        let grads = self.model.grads_ptr();
        let weights = self.model.weights_ptr();
        self.total.zero(s, 0, 1)?;
        for slot in self.model.table() {
            // SAFETY: each slot lies inside the gradient allocation; `partial` holds
            // SUMSQ_BLOCKS values and `total` one.
            unsafe {
                gpu.sum_squares_into(
                    grads.f32_at(slot.offset),
                    slot.len,
                    self.partial.ptr(),
                    self.total.ptr(),
                )?;
            }
        }
        let mut device_sq = [0.0f64];
        self.total.download(s, 0, &mut device_sq)?;
        let head_sq: f64 = self
            .grads
            .host_tensors()
            .iter()
            .flat_map(|(_, g)| g.iter())
            .map(|&x| f64::from(x) * f64::from(x))
            .sum();
        let norm = (device_sq[0] + head_sq).sqrt();
        ensure!(
            norm.is_finite(),
            "gradient norm is {norm} at step {}: training diverged",
            state.step + 1
        );
        let clip = clip_factor(norm, config.optim.clip_norm);
        let lr_enc = config.optim.lr_encoder * factor;
        let lr_heads = config.optim.lr_heads * factor;
        let lr_of = |name: &str| {
            if is_head_tensor(name) {
                lr_heads
            } else {
                lr_enc
            }
        };

        let n_enc = self.model.table().len();
        let scaled: Vec<Vec<f32>> = self
            .grads
            .host_tensors()
            .iter()
            .map(|(_, g)| g.iter().map(|x| x * clip).collect())
            .collect();
        let mut host_opt = AdamW {
            config: state.opt.config.clone(),
            t: state.opt.t,
            m: state.opt.m.split_off(n_enc),
            v: state.opt.v.split_off(n_enc),
        };
        let mut host_params = state.heads.tensors_mut();
        host_params.extend(state.classes.tensors_mut());
        let mut updates: Vec<ParamUpdate<'_>> = host_params
            .into_iter()
            .zip(&scaled)
            .map(|((name, value), grad)| ParamUpdate {
                lr: lr_of(&name),
                decay: decays(&name),
                value,
                grad,
            })
            .collect();
        let host = host_opt.step(&mut updates);
        state.opt.m.append(&mut host_opt.m);
        state.opt.v.append(&mut host_opt.v);
        host?;

        let t = state.opt.t + 1;
        // SAFETY: the gradient allocation holds `parameter_count` values; every slot below
        // lies inside the weight, gradient and moment allocations, which share one layout.
        unsafe {
            if clip != 1.0 {
                gpu.scale(grads, self.model.parameter_count(), clip)?;
            }
            for slot in self.model.table() {
                let scalars =
                    AdamWScalars::new(&state.opt.config, t, lr_of(&slot.name), decays(&slot.name));
                gpu.adamw(
                    weights.f32_at(slot.offset),
                    grads.f32_at(slot.offset),
                    self.m.ptr().f32_at(slot.offset),
                    self.v.ptr().f32_at(slot.offset),
                    slot.len,
                    &scalars,
                )?;
            }
        }
        gpu.sync()?;
        state.opt.t = t;
        self.host_stale = true;
        Ok(norm)
    }
}

/// Opens the CUDA trainer on device 0 as the training loop's [`StepBackend`] (distillation is
/// refused: the teacher has no CUDA forward yet).
pub fn open_step_backend(
    state: &TrainState,
    config: &TrainConfig,
    distilling: bool,
) -> Result<Box<dyn StepBackend>> {
    ensure!(
        !distilling,
        "the CUDA backend does not run distillation yet; train this config with --backend cpu"
    );
    let t = CudaTrainer::open(state, config)?;
    eprintln!(
        "ner-train: training on CUDA device {} ({}, {}); losses on {} CPU threads",
        t.device().ordinal,
        t.device().name,
        t.device().arch,
        config.threads.max(1)
    );
    Ok(Box::new(t))
}

impl StepBackend for CudaTrainer {
    fn step(
        &mut self,
        state: &mut TrainState,
        episodes: &[EncodedEpisode],
        dense: &[DenseSeq],
        config: &TrainConfig,
        factor: f32,
        collective: &mut dyn Collective,
    ) -> Result<(StepShare, f64)> {
        let out = self.step_ranked(state, episodes, dense, config, factor, collective)?;
        Ok((out.share, out.grad_norm))
    }

    fn sync(&mut self, state: &mut TrainState) -> Result<()> {
        self.sync_to_host(state)
    }
}

/// Where a step's parts lie in its batch ([`pack_step`]).
pub(crate) struct StepLayout {
    /// Index of each episode's first sentence.
    pub first: Vec<usize>,
    /// Index of the first dense sequence (after every episode sentence).
    pub dense_first: usize,
}

/// Packs every sentence of `episodes` (each episode's support, then query sentences) and then
/// every dense sequence into `batch`, with their word shapes.
pub(crate) fn pack_step(
    batch: &mut PieceBatch,
    episodes: &[EncodedEpisode],
    dense: &[DenseSeq],
    c: &EncoderConfig,
) -> Result<StepLayout> {
    batch.clear();
    let mut first = Vec::with_capacity(episodes.len());
    for (i, ep) in episodes.iter().enumerate() {
        ensure!(
            !ep.support.is_empty(),
            "episode {} of the step: episode has no support sentences",
            i + 1
        );
        first.push(batch.len());
        for s in ep.support.iter().chain(&ep.query) {
            batch
                .push_shaped(c, &s.ids, Some(&s.shapes))
                .with_context(|| format!("episode {} of the step", i + 1))?;
        }
    }
    let dense_first = batch.len();
    for (i, seq) in dense.iter().enumerate() {
        batch
            .push_shaped(c, &seq.sentence.ids, Some(&seq.sentence.shapes))
            .with_context(|| format!("dense sequence {} of the step", i + 1))?;
    }
    Ok(StepLayout { first, dense_first })
}

/// Piece-level head outputs of a step's batch on the host.
pub(crate) struct StepOutputs<'a> {
    /// Sentence offsets of the batch.
    pub offsets: &'a [usize],
    /// First sentence of each episode.
    pub first: &'a [usize],
    /// Sentence of the first dense sequence.
    pub dense_first: usize,
    /// `[N, 3]`.
    pub boundary: &'a [f32],
    /// `[N, type_dim]`.
    pub types: &'a [f32],
}

/// The host's gradient buffers of a step: piece-level output gradients for the device's
/// backward pass, and the gradients of the parameters that live on the host.
pub(crate) struct HostGrads {
    /// `[N, 3]`.
    pub boundary: Vec<f32>,
    /// `[N, type_dim]`.
    pub types: Vec<f32>,
    /// CDT numbers and prior MLP.
    pub heads: HeadParams,
    /// Class and "other" vectors.
    pub classes: ClassParams,
}

impl HostGrads {
    pub fn new(state: &TrainState) -> HostGrads {
        HostGrads {
            boundary: Vec::new(),
            types: Vec::new(),
            heads: state.heads.zeros_like(),
            classes: state.classes.zeros_like(),
        }
    }

    /// Head then class gradient tensors, in the order of the host AdamW moments.
    pub fn host_tensors(&self) -> Vec<(String, &[f32])> {
        let mut all = self.heads.tensors();
        all.extend(self.classes.tensors());
        all
    }

    /// [`HostGrads::host_tensors`], writable.
    pub fn host_tensors_mut(&mut self) -> Vec<(String, &mut [f32])> {
        let mut all = self.heads.tensors_mut();
        all.extend(self.classes.tensors_mut());
        all
    }

    fn reset(&mut self, tokens: usize, type_dim: usize) {
        self.boundary.clear();
        self.boundary.resize(tokens * BOUNDARY_LABELS, 0.0);
        self.types.clear();
        self.types.resize(tokens * type_dim, 0.0);
        for (_, g) in self.host_tensors_mut() {
            g.fill(0.0);
        }
    }
}

/// `f(i)` for `i < count`, spread over `threads` (index `i` on thread `i % threads`), results
/// in index order; the first error (by index) is returned.
fn fan_out<T: Send>(
    count: usize,
    threads: usize,
    f: impl Fn(usize) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let threads = threads.min(count).max(1);
    let per_thread: Vec<Result<Vec<(usize, T)>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|w| {
                let f = &f;
                scope.spawn(move || {
                    (w..count)
                        .step_by(threads)
                        .map(|i| f(i).map(|r| (i, r)))
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a loss thread panicked")))
            })
            .collect()
    });
    let mut slots: Vec<Option<T>> = (0..count).map(|_| None).collect();
    for r in per_thread {
        for (i, value) in r? {
            slots[i] = Some(value);
        }
    }
    slots
        .into_iter()
        .enumerate()
        .map(|(i, s)| s.with_context(|| format!("internal: no result for item {}", i + 1)))
        .collect()
}

/// The host half of a step: every episode's and dense sequence's loss from the batch's head
/// outputs (returned as this rank's [`StepShare`]) (spread over `threads`), their gradients written into `grads` (reset first) with
/// `scales` = (per episode, per dense sequence), in episode then sequence order.
#[allow(clippy::too_many_arguments)]
pub(crate) fn step_losses(
    state: &TrainState,
    episodes: &[EncodedEpisode],
    dense: &[DenseSeq],
    out: &StepOutputs<'_>,
    config: &TrainConfig,
    threads: usize,
    scales: (f32, f32),
    grads: &mut HostGrads,
) -> Result<StepShare> {
    let dt = state.weights.config.type_dim;
    let (scale, dense_scale) = scales;
    let gather = |set: &[crate::train::data::EncodedSentence], at: usize| {
        gather_words_from(out.boundary, out.types, out.offsets, set, at, dt)
    };
    let episode_losses = fan_out(episodes.len(), threads, |i| {
        let ep = &episodes[i];
        let f = out.first[i];
        let support = gather(&ep.support, f);
        let query = gather(&ep.query, f + ep.support.len());
        episode_head_loss(state, ep, &support, &query, &config.loss)
            .with_context(|| format!("episode {} of the step", i + 1))
    })?;
    let dense_losses = fan_out(dense.len(), threads, |i| {
        let words = gather(
            std::slice::from_ref(&dense[i].sentence),
            out.dense_first + i,
        );
        dense_head_loss(state, &dense[i], &words[0], &config.loss)
            .with_context(|| format!("dense sequence {} of the step", i + 1))
    })?;

    let n = out.offsets.last().copied().unwrap_or(0);
    grads.reset(n, dt);
    let mut terms = Vec::with_capacity(episodes.len());
    let mut pushes = Vec::new();
    for ((ep, &f), (loss, p)) in episodes.iter().zip(out.first).zip(episode_losses) {
        scatter_episode(&loss, ep, out.offsets, f, scale, dt, grads);
        terms.push(loss.terms);
        pushes.extend(p);
    }
    let mut dense_terms = LossTerms::default();
    for (i, (seq, loss)) in dense.iter().zip(&dense_losses).enumerate() {
        scatter_dense_grads(
            loss,
            seq,
            out.offsets[out.dense_first + i],
            dense_scale,
            dt,
            &mut DenseGrads {
                boundary: &mut grads.boundary,
                types: &mut grads.types,
                heads: &mut grads.heads,
                classes: &mut grads.classes,
            },
        );
        dense_terms += &loss.terms;
    }
    Ok(StepShare {
        terms,
        pushes,
        dense: dense_terms,
    })
}

fn scatter_episode(
    loss: &EpisodeLoss,
    ep: &EncodedEpisode,
    offsets: &[usize],
    first: usize,
    scale: f32,
    type_dim: usize,
    grads: &mut HostGrads,
) {
    scatter_word_grads(
        loss,
        ep,
        offsets,
        first,
        scale,
        type_dim,
        &mut grads.boundary,
        &mut grads.types,
    );
    grads.heads.add_cdt_grad(&loss.cdt, scale);
    grads.heads.prior.add_scaled(&loss.prior, scale);
    grads
        .classes
        .add_to_other(OTHER_BESIDE_SUPPORT, &loss.other, scale);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backprop::{backward, forward, BackwardScratch, Tape};
    use crate::model::ModelWeights;
    use crate::train::data;
    use crate::train::dense::DenseSampler;
    use crate::train::meta::{
        class_names, compute_gradients, dense_weights, fresh_state, initial_weights, step_dense,
        step_episodes,
    };
    use crate::train::step::StepWorker;

    /// The host half of the CUDA step ([`step_losses`]: one batch for all episodes and dense
    /// sequences, losses from gathered outputs, gradients scattered back by offset), run with
    /// the CPU encoder, gives the CPU path's loss terms, memory rows and gradients: for the
    /// episode-only objective (`tiny.toml`) and for the dense one with word shapes, class
    /// vectors and the "other" type (`tiny-dense.toml`).
    #[test]
    fn one_batch_step_matches_per_episode_workers() {
        for name in ["tiny.toml", "tiny-dense.toml"] {
            one_batch_step_matches(name);
        }
    }

    fn one_batch_step_matches(name: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/train")
            .join(name);
        let config = TrainConfig::load(&path).unwrap();
        let (weights, origin) = initial_weights(&config).unwrap();
        let tokenizer = origin.tokenizer().unwrap();
        let training = data::load(&config.data, &tokenizer).unwrap();
        let state = fresh_state(&config, weights, class_names(&config, &training)).unwrap();
        let encoded: Vec<EncodedEpisode> = step_episodes(&config, &training, 3)
            .unwrap()
            .iter()
            .map(|e| data::encode_episode(e, &tokenizer).unwrap())
            .collect();
        let dense = if config.dense_on() {
            let sampler = DenseSampler::new(
                &training,
                &state.classes,
                &tokenizer,
                &dense_weights(&config),
            )
            .unwrap();
            step_dense(&config, &sampler, &tokenizer, 3).unwrap()
        } else {
            Vec::new()
        };
        assert_eq!(dense.is_empty(), name == "tiny.toml");
        let c = state.weights.config.clone();

        let mut workers = vec![StepWorker::new(
            &c,
            &state.heads,
            &state.classes,
            config.episodes_per_step,
            config.dense.sequences_per_step,
            config.dense.weight,
        )];
        let (want_terms, want_dense, want_pushes) =
            compute_gradients(&state, &encoded, &dense, &mut workers, &config).unwrap();
        let want: Vec<Vec<f32>> = workers[0]
            .grads_flat()
            .iter()
            .map(|(_, g)| g.to_vec())
            .collect();

        let mut batch = PieceBatch::default();
        let layout = pack_step(&mut batch, &encoded, &dense, &c).unwrap();
        let mut tape = Tape::new();
        forward(&state.weights, &batch, &mut tape);
        let outputs = StepOutputs {
            offsets: batch.offsets(),
            first: &layout.first,
            dense_first: layout.dense_first,
            boundary: tape.boundary(),
            types: tape.types(),
        };
        let mut grads = HostGrads::new(&state);
        let scales = (
            1.0 / config.episodes_per_step as f32,
            config.dense.weight / config.dense.sequences_per_step.max(1) as f32,
        );
        let losses = step_losses(
            &state, &encoded, &dense, &outputs, &config, 3, scales, &mut grads,
        )
        .unwrap();
        let mut encoder_grads = ModelWeights::zeros(&c);
        backward(
            &state.weights,
            &batch,
            &tape,
            &grads.boundary,
            &grads.types,
            &mut encoder_grads,
            &mut BackwardScratch::new(),
        );
        let mut got = encoder_grads.tensors();
        got.extend(grads.host_tensors());

        assert_eq!(losses.terms.len(), want_terms.len());
        for (a, b) in losses.terms.iter().zip(&want_terms) {
            assert!(
                (a.total - b.total).abs() <= 1e-6 * b.total.abs().max(1.0),
                "{name}: {a:?} {b:?}"
            );
        }
        assert!(
            (losses.dense.total - want_dense.total).abs() <= 1e-6 * want_dense.total.abs().max(1.0),
            "{name}: dense {:?} vs {:?}",
            losses.dense,
            want_dense
        );
        assert_eq!(losses.pushes.len(), want_pushes.len());
        for (a, b) in losses.pushes.iter().zip(&want_pushes) {
            assert_eq!(a.0, b.0);
            assert_eq!(a.1.len(), b.1.len());
        }
        assert_eq!(got.len(), want.len());
        for ((tensor, g), w) in got.iter().zip(&want) {
            let scale = w.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
            for (x, y) in g.iter().zip(w) {
                assert!(
                    (x - y).abs() <= 1e-4 * scale,
                    "{name}: {tensor}: {x} vs {y}"
                );
            }
            if name == "tiny-dense.toml"
                && ["shape_embeddings", "classes.weight", "other.weight"].contains(&tensor.as_str())
            {
                assert!(
                    g.iter().any(|&v| v != 0.0),
                    "{name}: {tensor} has no gradient"
                );
            }
        }
        assert!(want.iter().flatten().any(|&v| v != 0.0));
    }
}
