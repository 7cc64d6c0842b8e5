//! The meta-training loop (`ner-train meta`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use ner_edge::corpus::Episode;
use ner_edge::tokenizer::{bert_uncased_meta, Tokenizer};
use serde::{Deserialize, Serialize};

use super::checkpoint;
use super::config::{EncoderInit, TrainConfig};
use super::data::{self, EncodedEpisode, TrainingData};
use super::optimizer::{clip_factor, global_norm, schedule, AdamW, ParamUpdate};
use super::step::{EpisodeTerms, MemoryPushes, StepWorker};
use crate::cuda::Backend;
use crate::episodes::{EpisodeSampler, OtherTypes, SourceWeighting};
use crate::loss::{HeadParams, LabelMemory};
use crate::model::rng::SplitMix64;
use crate::model::weights::is_no_decay;
use crate::model::{random_init, ModelWeights};

/// Where a run writes and how it starts.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Output directory (created if missing).
    pub out: PathBuf,
    /// Continue from `out/checkpoint.ckpt`.
    pub resume: bool,
    /// Stop after this many completed steps (a checkpoint is written; no export).
    pub stop_after: Option<u64>,
    /// Draw a progress line on stderr when it is a terminal.
    pub progress: bool,
}

/// Everything that changes during training.
#[derive(Clone, Debug)]
pub struct TrainState {
    pub weights: ModelWeights,
    pub heads: HeadParams,
    pub memory: LabelMemory,
    pub opt: AdamW,
    /// Completed optimiser steps.
    pub step: u64,
}

/// The JSON part of a checkpoint.
#[derive(Serialize, Deserialize)]
struct CheckpointState {
    step: u64,
    adam_t: u64,
    config: TrainConfig,
    memory: LabelMemory,
}

/// Provenance of the initial encoder.
#[derive(Clone, Debug)]
pub struct EncoderOrigin {
    pub vocab_text: String,
    pub source: String,
    pub sha256: String,
}

/// Loss terms and speed of one optimiser step, as logged.
#[derive(Clone, Debug, Serialize)]
pub struct StepLog {
    pub step: u64,
    pub loss: f64,
    pub crf: f64,
    pub span: f64,
    pub type_ce: f64,
    pub kl: f64,
    pub grad_norm: f64,
    pub lr_encoder: f32,
    pub episodes_per_s: f64,
    pub tokens: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_f1: Option<f64>,
}

/// File name of the checkpoint inside a run's output directory.
pub const CHECKPOINT: &str = "checkpoint.ckpt";

/// Initial weights, vocabulary and their origin for `config`.
pub fn initial_weights(config: &TrainConfig) -> Result<(ModelWeights, EncoderOrigin)> {
    match &config.encoder {
        EncoderInit::Minilm { dir, type_dim } => {
            let dir = match dir {
                Some(d) => d.clone(),
                None => crate::default_minilm_dir()
                    .context("no MiniLM directory: set encoder.dir, NER_EDGE_CACHE or HOME")?,
            };
            if !dir.join("model.safetensors").is_file() {
                bail!(
                    "{} has no model.safetensors; run `ner-tools fetch-encoder` first",
                    dir.display()
                );
            }
            let weights = crate::import_minilm(&dir, *type_dim, config.seed)?;
            let vocab_path = dir.join("vocab.txt");
            let vocab_text = std::fs::read_to_string(&vocab_path)
                .with_context(|| format!("cannot read {}", vocab_path.display()))?;
            let sha256 = sha256_file(&dir.join("model.safetensors"))?;
            Ok((
                weights,
                EncoderOrigin {
                    vocab_text,
                    source: "sentence-transformers/all-MiniLM-L6-v2".into(),
                    sha256,
                },
            ))
        }
        EncoderInit::Random { shape, vocab } => {
            let vocab_text = std::fs::read_to_string(vocab)
                .with_context(|| format!("cannot read {}", vocab.display()))?;
            let lines = vocab_text.lines().count();
            ensure!(
                lines == shape.vocab_size,
                "{} has {lines} tokens but encoder.shape.vocab_size is {}",
                vocab.display(),
                shape.vocab_size
            );
            Ok((
                random_init(shape, config.seed),
                EncoderOrigin {
                    vocab_text,
                    source: format!("random-init seed={}", config.seed),
                    sha256: String::new(),
                },
            ))
        }
    }
}

fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// A fresh training state: initial weights, heads, empty memory, zero optimiser moments.
pub fn fresh_state(config: &TrainConfig, weights: ModelWeights) -> Result<TrainState> {
    let heads = HeadParams::init(weights.config.type_dim, config.seed ^ 0x4845_4144);
    let memory = LabelMemory::new(config.export.memory_capacity, weights.config.type_dim)?;
    let mut state = TrainState {
        weights,
        heads,
        memory,
        opt: AdamW::new(config.optim.adamw.clone(), &[]),
        step: 0,
    };
    let sizes: Vec<usize> = param_sizes(&mut state);
    state.opt = AdamW::new(config.optim.adamw.clone(), &sizes);
    Ok(state)
}

fn param_sizes(state: &mut TrainState) -> Vec<usize> {
    let mut sizes: Vec<usize> = state
        .weights
        .tensors()
        .iter()
        .map(|(_, v)| v.len())
        .collect();
    sizes.extend(state.heads.tensors().iter().map(|(_, v)| v.len()));
    sizes
}

/// Samples the episodes of optimiser step `step`; they depend only on the data, the config and
/// `step`.
pub fn step_episodes(config: &TrainConfig, data: &TrainingData, step: u64) -> Result<Vec<Episode>> {
    let mut seeder = SplitMix64::new(config.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut sampler =
        EpisodeSampler::from_corpora(&data.corpora, SourceWeighting::Uniform, seeder.next_u64())?
            .with_other_types(if config.episodes.exclude_other_types {
                OtherTypes::Exclude
            } else {
                OtherTypes::Relabel
            });
    let e = &config.episodes;
    (0..config.episodes_per_step)
        .map(|i| {
            let j = i % e.n_way.len();
            sampler
                .sample(e.n_way[j], e.k_shot[j], e.query_k[j])
                .with_context(|| format!("step {step}, episode {}", i + 1))
        })
        .collect()
}

/// Runs (or resumes) meta-training as configured on the CPU, then exports `out/model.nerb`.
pub fn run_meta(config: &TrainConfig, opts: &RunOptions) -> Result<()> {
    run_meta_on(config, opts, Backend::Cpu)
}

/// Where the forward and backward passes of a run execute.
enum Engine {
    Cpu(Vec<StepWorker>),
    #[cfg(feature = "cuda")]
    Cuda(Box<crate::cuda::train::CudaTrainer>),
}

impl Engine {
    fn new(backend: Backend, state: &TrainState, config: &TrainConfig) -> Result<Engine> {
        match backend {
            Backend::Cpu => {
                let threads = config.threads.min(config.episodes_per_step).max(1);
                Ok(Engine::Cpu(
                    (0..threads)
                        .map(|_| StepWorker::new(&state.weights.config, config.episodes_per_step))
                        .collect(),
                ))
            }
            #[cfg(feature = "cuda")]
            Backend::Cuda => {
                let t = crate::cuda::train::CudaTrainer::open(state, config)?;
                eprintln!(
                    "ner-train: training on CUDA device {} ({}, {}); episode losses on {} CPU threads",
                    t.device().ordinal,
                    t.device().name,
                    t.device().arch,
                    config.threads.max(1)
                );
                Ok(Engine::Cuda(Box::new(t)))
            }
            #[cfg(not(feature = "cuda"))]
            Backend::Cuda => bail!("this binary was built without the `cuda` feature"),
        }
    }

    /// One optimiser step: loss terms, label-memory rows and the gradient norm.
    fn step(
        &mut self,
        state: &mut TrainState,
        encoded: &[EncodedEpisode],
        config: &TrainConfig,
        factor: f32,
    ) -> Result<(Vec<EpisodeTerms>, MemoryPushes, f64)> {
        match self {
            Engine::Cpu(workers) => {
                let (terms, pushes) = compute_gradients(state, encoded, workers, config)?;
                let grad_norm = apply_update(state, workers, config, factor)?;
                Ok((terms, pushes, grad_norm))
            }
            #[cfg(feature = "cuda")]
            Engine::Cuda(t) => {
                let out = t.step(state, encoded, config, factor)?;
                Ok((out.terms, out.pushes, out.grad_norm))
            }
        }
    }

    /// Brings the host copy of `state` up to date (weights and optimiser moments).
    fn sync(&mut self, state: &mut TrainState) -> Result<()> {
        match self {
            Engine::Cpu(_) => {
                let _ = state;
                Ok(())
            }
            #[cfg(feature = "cuda")]
            Engine::Cuda(t) => t.sync_to_host(state),
        }
    }
}

/// [`run_meta`] with the encoder's forward and backward on `backend` (the episode losses run
/// on the CPU either way).
pub fn run_meta_on(config: &TrainConfig, opts: &RunOptions, backend: Backend) -> Result<()> {
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("cannot create {}", opts.out.display()))?;
    let (weights, origin) = initial_weights(config)?;
    let tokenizer = Tokenizer::new(&bert_uncased_meta(), &origin.vocab_text)
        .context("building the tokenizer from the encoder's vocabulary")?;
    let data = data::load(&config.data, &tokenizer)?;
    for (c, dropped) in data.corpora.iter().zip(&data.dropped) {
        eprintln!(
            "ner-train: {}: {} sentences, {} types{}",
            c.name,
            c.sentences.len(),
            c.types.len(),
            if *dropped > 0 {
                format!(
                    ", {dropped} longer than {} pieces left out",
                    config.data.max_pieces
                )
            } else {
                String::new()
            }
        );
    }
    let mut state = fresh_state(config, weights)?;
    let ckpt_path = opts.out.join(CHECKPOINT);
    if opts.resume {
        load_checkpoint(&ckpt_path, config, &mut state)?;
        eprintln!("ner-train: resumed at step {}", state.step);
    } else {
        std::fs::write(opts.out.join("config.toml"), toml::to_string(config)?)
            .context("writing config.toml")?;
        let _ = std::fs::remove_file(opts.out.join("log.jsonl"));
    }
    let validation = load_validation(config, &tokenizer)?;
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(opts.out.join("log.jsonl"))
        .context("opening log.jsonl")?;
    let mut engine = Engine::new(backend, &state, config)?;
    let warmup = config.warmup_steps();
    let end = opts.stop_after.unwrap_or(config.steps).min(config.steps);
    let show_progress = opts.progress && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let started = Instant::now();
    let first = state.step;
    while state.step < end {
        let t0 = Instant::now();
        let episodes = step_episodes(config, &data, state.step)?;
        let encoded: Vec<EncodedEpisode> = episodes
            .iter()
            .map(|e| data::encode_episode(e, &tokenizer))
            .collect::<Result<_>>()?;
        let factor = schedule(state.step, config.steps, warmup);
        let (terms, pushes, grad_norm) = engine.step(&mut state, &encoded, config, factor)?;
        for (key, vectors) in pushes {
            state.memory.push(&key.0, &key.1, &vectors)?;
        }
        state.step += 1;
        let seconds = t0.elapsed().as_secs_f64();
        let n = encoded.len() as f64;
        let mut entry = StepLog {
            step: state.step,
            loss: terms.iter().map(|t| t.total).sum::<f64>() / n,
            crf: terms.iter().map(|t| t.crf).sum::<f64>() / n,
            span: terms.iter().map(|t| t.span).sum::<f64>() / n,
            type_ce: terms.iter().map(|t| t.type_ce).sum::<f64>() / n,
            kl: terms.iter().map(|t| t.kl).sum::<f64>() / n,
            grad_norm,
            lr_encoder: config.optim.lr_encoder * factor,
            episodes_per_s: n / seconds,
            tokens: encoded
                .iter()
                .flat_map(|e| e.support.iter().chain(&e.query))
                .map(|s| s.ids.len())
                .sum(),
            validation_f1: None,
        };
        if let Some(v) = &validation {
            if config.data.validate_every > 0 && state.step % config.data.validate_every == 0 {
                engine.sync(&mut state)?;
                entry.validation_f1 = Some(super::validate::micro_f1(&state, v)?);
            }
        }
        writeln!(log, "{}", serde_json::to_string(&entry)?).context("writing log.jsonl")?;
        if state.step % config.log_every == 0 || state.step == end {
            let done = state.step - first;
            let rate = done as f64 / started.elapsed().as_secs_f64();
            let eta = (end - state.step) as f64 / rate.max(1e-9);
            let line = format!(
                "step {}/{} loss {:.4} (crf {:.4} span {:.4} type {:.4} kl {:.4}) |g| {:.3} {:.2} episodes/s eta {:.0}s{}",
                state.step,
                config.steps,
                entry.loss,
                entry.crf,
                entry.span,
                entry.type_ce,
                entry.kl,
                grad_norm,
                entry.episodes_per_s,
                eta,
                entry
                    .validation_f1
                    .map(|f| format!(" val-F1 {f:.4}"))
                    .unwrap_or_default()
            );
            if show_progress {
                eprint!("\r\x1b[2K{line}");
                if state.step == end {
                    eprintln!();
                }
            } else {
                eprintln!("ner-train: {line}");
            }
        }
        let periodic = config.checkpoint_every > 0 && state.step % config.checkpoint_every == 0;
        if periodic || state.step == end {
            engine.sync(&mut state)?;
            save_checkpoint(&ckpt_path, config, &state)?;
        }
    }
    if state.step < config.steps {
        eprintln!(
            "ner-train: stopped after step {} of {}; continue with --resume",
            state.step, config.steps
        );
        return Ok(());
    }
    engine.sync(&mut state)?;
    let bundle = super::export::export_trained(config, &state, &data, &tokenizer, &origin)?;
    let path = opts.out.join("model.nerb");
    std::fs::write(&path, &bundle).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "ner-train: wrote {} ({} bytes) after {} steps",
        path.display(),
        bundle.len(),
        state.step
    );
    Ok(())
}

/// Forward and backward of every episode of a step, spread over the workers (episode `i` goes
/// to worker `i % workers`, so the sums are the same on every run with the same thread count).
/// Returns each episode's loss terms and the label-memory rows to push, in episode order.
pub fn compute_gradients(
    state: &TrainState,
    episodes: &[EncodedEpisode],
    workers: &mut [StepWorker],
    config: &TrainConfig,
) -> Result<(Vec<EpisodeTerms>, MemoryPushes)> {
    let n_workers = workers.len();
    let results: Vec<Result<Vec<(usize, EpisodeTerms, MemoryPushes)>>> =
        std::thread::scope(|scope| {
            let handles: Vec<_> = workers
                .iter_mut()
                .enumerate()
                .map(|(w, worker)| {
                    scope.spawn(move || {
                        worker.zero_grads();
                        let mut out = Vec::new();
                        for (i, ep) in episodes.iter().enumerate().skip(w).step_by(n_workers) {
                            let (terms, pushes) = worker
                                .episode(state, ep, &config.loss)
                                .with_context(|| format!("episode {} of the step", i + 1))?;
                            out.push((i, terms, pushes));
                        }
                        Ok(out)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a training thread panicked")))
                })
                .collect()
        });
    let mut all = Vec::with_capacity(episodes.len());
    for r in results {
        all.extend(r?);
    }
    all.sort_by_key(|(i, _, _)| *i);
    let mut terms = Vec::with_capacity(all.len());
    let mut pushes = Vec::new();
    for (_, t, p) in all {
        terms.push(t);
        pushes.extend(p);
    }
    Ok((terms, pushes))
}

/// Sums the workers' gradients into worker 0, clips and applies AdamW with the learning rates
/// times `factor`; returns the gradient norm before clipping.
pub fn apply_update(
    state: &mut TrainState,
    workers: &mut [StepWorker],
    config: &TrainConfig,
    factor: f32,
) -> Result<f64> {
    let (first, rest) = workers.split_first_mut().context("no workers")?;
    for other in rest.iter() {
        first.add_grads_from(other);
    }
    let grads = first.grads_flat();
    let norm = global_norm(grads.iter().map(|(_, g)| *g));
    ensure!(
        norm.is_finite(),
        "gradient norm is {norm} at step {}: training diverged",
        state.step + 1
    );
    let clip = clip_factor(norm, config.optim.clip_norm);
    let scaled: Vec<Vec<f32>> = grads
        .iter()
        .map(|(_, g)| g.iter().map(|x| x * clip).collect())
        .collect();
    let lr_enc = config.optim.lr_encoder * factor;
    let lr_heads = config.optim.lr_heads * factor;
    let mut params: Vec<(String, &mut [f32])> = state.weights.tensors_mut();
    params.extend(state.heads.tensors_mut());
    ensure!(
        params.len() == scaled.len(),
        "internal: {} parameter tensors but {} gradients",
        params.len(),
        scaled.len()
    );
    let mut updates: Vec<ParamUpdate<'_>> = params
        .into_iter()
        .zip(&scaled)
        .map(|((name, value), grad)| ParamUpdate {
            lr: if is_head_tensor(&name) {
                lr_heads
            } else {
                lr_enc
            },
            decay: decays(&name),
            value,
            grad,
        })
        .collect();
    state.opt.step(&mut updates)?;
    Ok(norm)
}

/// Whether `name` is a head tensor (learning rate `lr_heads`): token heads, CDT, prior MLP.
pub(crate) fn is_head_tensor(name: &str) -> bool {
    name.starts_with("boundary.")
        || name.starts_with("types.")
        || name.starts_with("cdt")
        || name.starts_with("prior.")
}

/// Whether AdamW's weight decay applies to tensor `name`.
pub(crate) fn decays(name: &str) -> bool {
    !is_no_decay(name) && !name.starts_with("cdt")
}

fn save_checkpoint(path: &Path, config: &TrainConfig, state: &TrainState) -> Result<()> {
    let mut tensors: Vec<(String, &[f32])> = state.weights.tensors();
    tensors.extend(state.heads.tensors());
    let names: Vec<String> = tensors.iter().map(|(n, _)| n.clone()).collect();
    for (name, m) in names.iter().zip(&state.opt.m) {
        tensors.push((format!("adam.m.{name}"), m));
    }
    for (name, v) in names.iter().zip(&state.opt.v) {
        tensors.push((format!("adam.v.{name}"), v));
    }
    checkpoint::write(
        path,
        &CheckpointState {
            step: state.step,
            adam_t: state.opt.t,
            config: config.clone(),
            memory: state.memory.clone(),
        },
        &tensors,
    )
}

/// The state saved in checkpoint `path` by a run of `config`: initial weights of the config
/// overwritten by the checkpoint's tensors, optimiser moments, memory and step count.
pub fn load_state(config: &TrainConfig, path: &Path) -> Result<TrainState> {
    let (weights, _) = initial_weights(config)?;
    let mut state = fresh_state(config, weights)?;
    load_checkpoint(path, config, &mut state)?;
    Ok(state)
}

fn load_checkpoint(path: &Path, config: &TrainConfig, state: &mut TrainState) -> Result<()> {
    let mut ckpt = checkpoint::read(path)?;
    let saved: CheckpointState = serde_json::from_value(ckpt.state.clone())
        .with_context(|| format!("checkpoint {}: state", path.display()))?;
    let comparable = |c: &TrainConfig| {
        let mut c = c.clone();
        c.log_every = 1;
        c.checkpoint_every = 0;
        c.export.dtype.clear();
        c.export.default_active.clear();
        c.export.prototype_sentences = 0;
        c
    };
    ensure!(
        comparable(&saved.config) == comparable(config),
        "checkpoint {} was written with a different config; resuming needs the same one \
         (only log_every, checkpoint_every and the export settings other than \
         memory_capacity may change)",
        path.display()
    );
    let mut restore = |name: String, dst: &mut [f32]| -> Result<()> {
        let v = ckpt.take(&name, dst.len())?;
        dst.copy_from_slice(&v);
        Ok(())
    };
    let mut names = Vec::new();
    for (name, dst) in state.weights.tensors_mut() {
        names.push(name.clone());
        restore(name, dst)?;
    }
    for (name, dst) in state.heads.tensors_mut() {
        names.push(name.clone());
        restore(name, dst)?;
    }
    for (i, name) in names.iter().enumerate() {
        restore(format!("adam.m.{name}"), &mut state.opt.m[i])?;
        restore(format!("adam.v.{name}"), &mut state.opt.v[i])?;
    }
    state.opt.t = saved.adam_t;
    state.step = saved.step;
    state.memory = saved.memory;
    Ok(())
}

fn load_validation(
    config: &TrainConfig,
    tokenizer: &Tokenizer,
) -> Result<Option<Vec<EncodedEpisode>>> {
    let Some(path) = &config.data.validation else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read validation episodes {}", path.display()))?;
    let mut episodes = crate::episodes::parse_jsonl(&text, &path.display().to_string())?;
    if config.data.validation_episodes > 0 {
        episodes.truncate(config.data.validation_episodes);
    }
    let encoded = episodes
        .iter()
        .map(|e| data::encode_episode(e, tokenizer))
        .collect::<Result<Vec<_>>>()
        .with_context(|| format!("validation episodes {}", path.display()))?;
    Ok(Some(encoded))
}
