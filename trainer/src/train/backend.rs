//! Where a training step's forward and backward passes run. The loop of [`super::meta`] drives
//! one [`StepBackend`] and knows neither implementation: [`CpuBackend`] (the reference, worker
//! threads) here, the CUDA one in `crate::cuda::train` (opened through
//! [`crate::cuda::open_step_backend`], which is a stub that fails in builds without the `cuda`
//! feature).

use std::sync::Arc;

use anyhow::Result;

use super::collective::{Collective, StepShare};
use super::config::TrainConfig;
use super::data::EncodedEpisode;
use super::dense::DenseSeq;
use super::meta::{apply_update_ranked, compute_gradients, cpu_workers, TrainState};
use super::step::StepWorker;
use crate::cuda::Backend;
use crate::model::ModelWeights;

/// One optimiser step at a time, on some compute backend.
pub trait StepBackend {
    /// One optimiser step on this rank's share of the step's episodes and dense sequences:
    /// gradients summed over the ranks, clipped, the AdamW update applied (`factor`: the
    /// learning-rate schedule's multiplier); returns the share's loss terms and label-memory
    /// rows and the gradient norm of the whole step.
    fn step(
        &mut self,
        state: &mut TrainState,
        episodes: &[EncodedEpisode],
        dense: &[DenseSeq],
        config: &TrainConfig,
        factor: f32,
        collective: &mut dyn Collective,
    ) -> Result<(StepShare, f64)>;

    /// Brings the host copy of `state` up to date (weights and optimiser moments), before a
    /// checkpoint, a validation or the export.
    fn sync(&mut self, state: &mut TrainState) -> Result<()>;
}

/// The CPU reference: the step's episodes spread over worker threads, each with its own
/// gradient buffers, summed before the update.
pub struct CpuBackend {
    workers: Vec<StepWorker>,
}

impl CpuBackend {
    /// Workers for `config` (one per thread, at most one per episode), distilling from
    /// `teacher` when given.
    pub fn new(
        config: &TrainConfig,
        state: &TrainState,
        teacher: Option<&Arc<ModelWeights>>,
    ) -> CpuBackend {
        CpuBackend {
            workers: cpu_workers(config, state, teacher),
        }
    }
}

impl StepBackend for CpuBackend {
    fn step(
        &mut self,
        state: &mut TrainState,
        episodes: &[EncodedEpisode],
        dense: &[DenseSeq],
        config: &TrainConfig,
        factor: f32,
        collective: &mut dyn Collective,
    ) -> Result<(StepShare, f64)> {
        let (terms, dense_terms, pushes) =
            compute_gradients(state, episodes, dense, &mut self.workers, config)?;
        let grad_norm = apply_update_ranked(state, &mut self.workers, config, factor, collective)?;
        Ok((
            StepShare {
                terms,
                pushes,
                dense: dense_terms,
            },
            grad_norm,
        ))
    }

    fn sync(&mut self, _state: &mut TrainState) -> Result<()> {
        Ok(())
    }
}

/// The backend `backend` names, ready for `state`; `teacher` is the distillation teacher
/// when the config distils.
pub fn open(
    backend: Backend,
    state: &TrainState,
    config: &TrainConfig,
    teacher: Option<&Arc<ModelWeights>>,
) -> Result<Box<dyn StepBackend>> {
    match backend {
        Backend::Cpu => Ok(Box::new(CpuBackend::new(config, state, teacher))),
        Backend::Cuda => crate::cuda::open_step_backend(state, config, teacher.is_some()),
    }
}
