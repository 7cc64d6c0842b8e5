//! The meta-training configuration file (TOML), read by `ner-train meta --config FILE`.
//!
//! Relative paths in the file (`data_root`, `encoder.dir`, `validation`) are resolved against
//! the directory that holds the file, so a committed config works from any working directory.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use super::optimizer::AdamWConfig;
use crate::loss::LossWeights;
use crate::model::EncoderConfig;

/// Everything a meta-training run depends on. Two runs with equal configs (and equal data files)
/// produce bit-identical weights on the same machine and thread count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Seed of initialisation, episode sampling and memory order.
    pub seed: u64,
    /// Optimiser steps.
    pub steps: u64,
    /// Episodes whose gradients are summed into one optimiser step.
    #[serde(default = "default_episodes_per_step")]
    pub episodes_per_step: usize,
    /// Worker threads; episodes of a step are split over them.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// A log line (and a progress update) every this many steps.
    #[serde(default = "default_log_every")]
    pub log_every: u64,
    /// A checkpoint every this many steps (0: only at the end).
    #[serde(default)]
    pub checkpoint_every: u64,
    /// Initial encoder weights and vocabulary (`[encoder]`).
    pub encoder: EncoderInit,
    /// Training corpora and validation sets (`[data]`).
    pub data: DataConfig,
    /// Episode sizes (`[episodes]`; default 5-way 1-shot, `query_k` 1).
    #[serde(default)]
    pub episodes: EpisodeShape,
    /// Dense supervision beside the episodes (off unless `dense.sequences_per_step > 0`).
    #[serde(default)]
    pub dense: DenseConfig,
    /// Learn a "none of these types" prototype: entities of types that are not scored (undrawn
    /// in an episode, left out of a dense sequence's subset) are labelled with it instead of
    /// `O`, and the exported bundle carries it (`labels.other`).
    #[serde(default)]
    pub other_type: bool,
    /// Learning rates, schedule, clipping and AdamW settings (`[optim]`).
    #[serde(default)]
    pub optim: OptimConfig,
    /// Weights of the episode (and dense) loss terms (`[loss]`).
    #[serde(default)]
    pub loss: LossWeights,
    /// Bundle export settings (`[export]`).
    #[serde(default)]
    pub export: ExportConfig,
    /// Teacher–student distillation (`[distill]`; off when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distill: Option<DistillConfig>,
    /// The associated memory (`[assoc]`; off when absent): dense sequences read the labels of
    /// the other sequences of their batch, and the bundle carries a memory of training
    /// sentences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assoc: Option<AssocConfig>,
}

/// Shape of the associated memory's read and of the memory exported with the bundle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AssocConfig {
    /// Attention heads (default 4).
    pub heads: usize,
    /// Query/key width per head (default 16).
    pub key_dim: usize,
    /// Training sentences (records) encoded into the bundle's memory (default 2000), drawn
    /// uniformly over every training sentence, seeded by the run's seed.
    pub memory_sentences: usize,
    /// Peak learning rate of the read's parameters (default 1e-2; same schedule as the
    /// others): its gains start at zero and must grow to logit scale within one run.
    pub lr: f32,
}

impl Default for AssocConfig {
    fn default() -> Self {
        AssocConfig {
            heads: 4,
            key_dim: 16,
            memory_sentences: 2000,
            lr: 1e-2,
        }
    }
}

fn default_episodes_per_step() -> usize {
    16
}
fn default_threads() -> usize {
    2
}
fn default_log_every() -> u64 {
    10
}

/// Where the encoder weights come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "init", rename_all = "snake_case")]
pub enum EncoderInit {
    /// A pretrained encoder imported by `ner-tools fetch-encoder` (all-MiniLM-L6-v2 by default;
    /// `init = "pretrained"` is the same), from `dir` or the cache, with a `type_dim`-wide type
    /// head initialised at random.
    #[serde(alias = "pretrained")]
    Minilm {
        /// Directory holding `config.json`, `model.safetensors` and the vocabulary (`vocab.txt`,
        /// or `unigram.json` + `charsmap.bin`).
        #[serde(default)]
        dir: Option<PathBuf>,
        /// When `dir` is unset: the directory of this name in the ner-edge cache (beside the
        /// MiniLM one), e.g. `"multilingual-e5-small"`; unset means all-MiniLM-L6-v2.
        #[serde(default)]
        cache: Option<String>,
        /// Width of the new type head (default 128).
        #[serde(default = "default_type_dim")]
        type_dim: usize,
        /// Add the word-shape (casing) input, a zero-initialised table of
        /// [`ner_edge::tokenizer::SHAPE_CLASSES`] rows.
        #[serde(default)]
        casing: bool,
    },
    /// A smaller encoder cut from a trained one (the first step towards an edge student):
    /// the weights of checkpoint `checkpoint` (a `ner-train meta` run's `checkpoint.ckpt` or
    /// `best.ckpt`, with the config it was written with), keeping only the transformer layers
    /// listed in `layers` (teacher layer indices, strictly increasing), with the teacher's
    /// embeddings, word-shape table and heads.
    Teacher {
        /// The trained run's checkpoint.
        checkpoint: PathBuf,
        /// Teacher layers the student keeps, in order, e.g. `[0, 2, 4]`.
        layers: Vec<usize>,
        /// Also start the CDT numbers, prior MLP and class vectors from the checkpoint (every
        /// tensor of the same name and size; the others, e.g. a new `[assoc]` read, start
        /// fresh). Continues a run under a changed configuration.
        #[serde(default)]
        warm_start: bool,
    },
    /// Random weights of the given shape, with the vocabulary file `vocab` (`vocab.txt`
    /// format; its line count must equal `shape.vocab_size`).
    Random {
        /// The encoder's shape, checked with [`EncoderConfig::validate`].
        shape: EncoderConfig,
        /// The vocabulary file.
        vocab: PathBuf,
    },
}

fn default_type_dim() -> usize {
    128
}

/// Training corpora.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Directory the corpus paths are relative to.
    pub data_root: PathBuf,
    /// Sentences with more word pieces than this are left out of training (counted and logged).
    #[serde(default = "default_max_pieces")]
    pub max_pieces: usize,
    /// The corpora episodes (and dense sequences) are drawn from; at least one.
    pub corpora: Vec<CorpusEntry>,
    /// Optional JSONL episodes (`ner-tools sample-episodes` format) scored every
    /// `validate_every` steps with gradient-free adaptation.
    #[serde(default)]
    pub validation: Option<PathBuf>,
    /// With a validation set, validate every this many steps and at the last step (0: never);
    /// the best-scoring weights are kept as `best.ckpt`.
    #[serde(default)]
    pub validate_every: u64,
    /// How many validation episodes are scored each time (0: all).
    #[serde(default)]
    pub validation_episodes: usize,
    /// Optional episodes sampled at start-up from a corpus, scored like `validation` (instead
    /// of it).
    #[serde(default)]
    pub validation_sampled: Option<SampledValidation>,
    /// Optional fully annotated corpus (any format `read_corpus` knows) scored every
    /// `validate_every` steps with the learned class vectors (supervised micro F1); needs dense
    /// supervision. With both validation sets, model selection uses their mean F1.
    #[serde(default)]
    pub validation_supervised: Option<PathBuf>,
    /// Probability that a training sequence (episode sentence or dense sequence) is shown with
    /// the word shapes of its all-lower-case text, so casing helps without being required.
    #[serde(default)]
    pub lowercase: f32,
}

fn default_max_pieces() -> usize {
    96
}

/// Validation episodes drawn from a corpus when the run starts: `episodes` N-way K~2K-shot
/// episodes with a query of 1~2 entities per type, sentences that mention other types excluded
/// (Few-NERD's sampler), from `path` (relative to `data_root`) with `seed`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampledValidation {
    /// Corpus file, relative to `data_root`.
    pub path: PathBuf,
    /// Types per episode N (positive).
    pub n_way: usize,
    /// Support entities per type K (positive); a type gets K~2K.
    pub k_shot: usize,
    /// Number of episodes drawn (positive).
    pub episodes: usize,
    /// Seed of the sampler, independent of the run's `seed`.
    pub seed: u64,
}

/// One training corpus: a name (e.g. `"crossner-music"`, the episodes' domain) and the files,
/// relative to `data_root`, that `ner_edge_corpus::read_corpus` understands; several files
/// (e.g. train and dev of one dataset) are concatenated into one corpus with one label set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorpusEntry {
    /// Corpus name: the domain of its episodes and the source of its label-memory slots.
    pub name: String,
    /// Corpus files, relative to `data_root`; at least one.
    pub paths: Vec<PathBuf>,
    /// How often the dense sampler picks this corpus relative to its size: a corpus is drawn
    /// with probability proportional to `dense_weight × sentences` (default 1).
    #[serde(default = "default_dense_weight", skip_serializing_if = "is_one")]
    pub dense_weight: f32,
}

fn default_dense_weight() -> f32 {
    1.0
}

fn is_one(x: &f32) -> bool {
    *x == 1.0
}

/// Episode sizes; each episode uses setting `i % len` of the lists, zipped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EpisodeShape {
    /// Types per episode N, one per setting.
    pub n_way: Vec<usize>,
    /// Support entities per type K (K~2K drawn), one per setting.
    pub k_shot: Vec<usize>,
    /// Query entities per type (`query_k`~`2·query_k` drawn), one per setting.
    pub query_k: Vec<usize>,
    /// Sentences that mention other types are dropped instead of relabelled `O`.
    pub exclude_other_types: bool,
}

impl Default for EpisodeShape {
    fn default() -> Self {
        EpisodeShape {
            n_way: vec![5],
            k_shot: vec![1],
            query_k: vec![1],
            exclude_other_types: false,
        }
    }
}

/// Dense supervision: packed runs of consecutive sentences of one corpus with their full
/// annotation, scored against learned class vectors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DenseConfig {
    /// Packed sequences per optimiser step (0: no dense supervision).
    pub sequences_per_step: usize,
    /// Longest packed sequence in word pieces (without `[CLS]`/`[SEP]`); the exported bundle's
    /// `encoder.trained_window`.
    pub window: usize,
    /// Weight of the mean dense loss beside the mean episode loss.
    pub weight: f32,
    /// Probability that a sequence scores a random non-empty subset of its corpus's types, the
    /// other entities labelled with the "other" type (needs `other_type`).
    pub subset: f32,
    /// Probability that a sequence is one sentence rather than a packed run.
    pub single: f32,
}

impl Default for DenseConfig {
    fn default() -> Self {
        DenseConfig {
            sequences_per_step: 0,
            window: 128,
            weight: 1.0,
            subset: 0.0,
            single: 0.25,
        }
    }
}

/// Teacher–student distillation: on every batch it trains on (episode and dense), the model
/// also matches a trained teacher's outputs on the same word pieces — its O/B/I boundary
/// distributions and its type vectors — so a smaller student learns what the teacher predicts,
/// not only the gold labels. The teacher must share the student's vocabulary, casing input and
/// type width (a student cut from it with `encoder.init = "teacher"` does).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistillConfig {
    /// The teacher's checkpoint (`checkpoint.ckpt` or `best.ckpt` of a `ner-train meta` run);
    /// default: `encoder.checkpoint` when `encoder.init = "teacher"`.
    pub teacher: Option<PathBuf>,
    /// Weight of `T² · KL(teacher ‖ student)` of the boundary distributions at temperature
    /// `T`, mean over the batch's pieces (default 1).
    pub boundary: f32,
    /// Weight of the mean squared difference between student and teacher type vectors, mean
    /// over pieces and dimensions (default 1).
    pub types: f32,
    /// Softmax temperature of the boundary term (default 2).
    pub temperature: f32,
}

impl Default for DistillConfig {
    fn default() -> Self {
        DistillConfig {
            teacher: None,
            boundary: 1.0,
            types: 1.0,
            temperature: 2.0,
        }
    }
}

/// Learning rates, schedule and clipping.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Peak learning rate of the encoder tensors (default 1e-4).
    pub lr_encoder: f32,
    /// Peak learning rate of the head tensors: token heads, CDT, prior MLP, class and "other"
    /// vectors, word-shape table (default 1e-3).
    pub lr_heads: f32,
    /// Fraction of `steps` spent in linear warm-up.
    pub warmup: f32,
    /// Global gradient-norm limit (0: off).
    pub clip_norm: f32,
    /// Moment decays, ε and weight decay (`[optim.adamw]`).
    pub adamw: AdamWConfig,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            lr_encoder: 1e-4,
            lr_heads: 1e-3,
            warmup: 0.1,
            clip_norm: 1.0,
            adamw: AdamWConfig::default(),
        }
    }
}

/// What goes into the exported bundle besides the weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConfig {
    /// `"f16"` (default), `"f32"` or `"int8"` encoder weights (see `export::onnx::WeightDtype`).
    pub dtype: String,
    /// Types active when the user passes no `--types` (default: all).
    pub default_active: Vec<String>,
    /// Label-memory slot capacity M.
    pub memory_capacity: usize,
    /// Sentences per type encoded to build the prototype bank.
    pub prototype_sentences: usize,
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            dtype: "f16".into(),
            default_active: Vec::new(),
            memory_capacity: 15,
            prototype_sentences: 64,
        }
    }
}

impl TrainConfig {
    /// Reads and checks a TOML config; relative paths become relative to the file's directory.
    pub fn load(path: &Path) -> Result<TrainConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let mut config: TrainConfig =
            toml::from_str(&text).with_context(|| format!("config {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        config
            .validate()
            .with_context(|| format!("config {}", path.display()))?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        join(&mut self.data.data_root);
        if let Some(v) = &mut self.data.validation {
            join(v);
        }
        if let Some(v) = &mut self.data.validation_supervised {
            join(v);
        }
        if let Some(v) = &mut self.data.validation_sampled {
            let root = self.data.data_root.clone();
            if v.path.is_relative() {
                v.path = root.join(&v.path);
            }
        }
        match &mut self.encoder {
            EncoderInit::Minilm { dir: Some(d), .. } => join(d),
            EncoderInit::Random { vocab, .. } => join(vocab),
            EncoderInit::Minilm { dir: None, .. } => {}
            EncoderInit::Teacher { checkpoint, .. } => join(checkpoint),
        }
        if let Some(DistillConfig {
            teacher: Some(t), ..
        }) = &mut self.distill
        {
            join(t);
        }
    }

    /// The distillation teacher's checkpoint, when distillation is on.
    pub fn distill_teacher(&self) -> Result<Option<&Path>> {
        let Some(d) = &self.distill else {
            return Ok(None);
        };
        match (&d.teacher, &self.encoder) {
            (Some(t), _) => Ok(Some(t)),
            (None, EncoderInit::Teacher { checkpoint, .. }) => Ok(Some(checkpoint)),
            (None, _) => bail!(
                "[distill] needs distill.teacher (a checkpoint) unless encoder.init = \"teacher\""
            ),
        }
    }

    /// Checks ranges and list lengths; errors name the offending key.
    pub fn validate(&self) -> Result<()> {
        if let Some(d) = &self.distill {
            ensure!(
                d.boundary.is_finite() && d.boundary >= 0.0,
                "distill.boundary must be finite and >= 0"
            );
            ensure!(
                d.types.is_finite() && d.types >= 0.0,
                "distill.types must be finite and >= 0"
            );
            ensure!(
                d.temperature.is_finite() && d.temperature > 0.0,
                "distill.temperature must be finite and > 0"
            );
            self.distill_teacher()?;
        }
        if let Some(a) = &self.assoc {
            ensure!(
                a.heads > 0 && a.key_dim > 0,
                "assoc.heads and assoc.key_dim must be at least 1"
            );
            ensure!(
                a.lr.is_finite() && a.lr >= 0.0,
                "assoc.lr must be finite and >= 0"
            );
            ensure!(
                self.dense.sequences_per_step >= 2,
                "[assoc] reads the other dense sequences of a batch: dense.sequences_per_step \
                 must be at least 2"
            );
        }
        ensure!(self.steps > 0, "steps must be at least 1");
        ensure!(
            self.episodes_per_step > 0,
            "episodes_per_step must be at least 1"
        );
        ensure!(self.threads > 0, "threads must be at least 1");
        ensure!(self.log_every > 0, "log_every must be at least 1");
        ensure!(!self.data.corpora.is_empty(), "data.corpora is empty");
        for c in &self.data.corpora {
            ensure!(!c.paths.is_empty(), "corpus {:?} lists no paths", c.name);
            ensure!(
                c.dense_weight.is_finite() && c.dense_weight >= 0.0,
                "corpus {:?}: dense_weight must be finite and >= 0",
                c.name
            );
        }
        ensure!(
            self.data.validation.is_none() || self.data.validation_sampled.is_none(),
            "data.validation and data.validation_sampled exclude each other"
        );
        if let Some(v) = &self.data.validation_sampled {
            ensure!(
                v.n_way > 0 && v.k_shot > 0 && v.episodes > 0,
                "data.validation_sampled: n_way, k_shot and episodes must be positive"
            );
        }
        ensure!(
            self.data.max_pieces >= 1,
            "data.max_pieces must be positive"
        );
        let e = &self.episodes;
        ensure!(
            !e.n_way.is_empty()
                && e.n_way.len() == e.k_shot.len()
                && e.k_shot.len() == e.query_k.len(),
            "episodes.n_way, k_shot and query_k must be non-empty lists of equal length"
        );
        ensure!(
            e.n_way
                .iter()
                .chain(&e.k_shot)
                .chain(&e.query_k)
                .all(|&x| x > 0),
            "episode sizes must be positive"
        );
        let dn = &self.dense;
        if dn.sequences_per_step > 0 {
            ensure!(
                dn.window >= self.data.max_pieces,
                "dense.window ({}) must be at least data.max_pieces ({})",
                dn.window,
                self.data.max_pieces
            );
            ensure!(
                dn.weight.is_finite() && dn.weight >= 0.0,
                "dense.weight must be finite and >= 0"
            );
        }
        for (name, p) in [
            ("dense.subset", dn.subset),
            ("dense.single", dn.single),
            ("data.lowercase", self.data.lowercase),
        ] {
            ensure!((0.0..=1.0).contains(&p), "{name} must be in [0, 1]");
        }
        ensure!(
            dn.subset == 0.0 || self.other_type,
            "dense.subset needs other_type = true (otherwise left-out entities would be taught as O)"
        );
        ensure!(
            !(self.other_type && self.episodes.exclude_other_types),
            "other_type and episodes.exclude_other_types exclude each other"
        );
        ensure!(
            self.data.validation_supervised.is_none() || dn.sequences_per_step > 0,
            "data.validation_supervised needs dense supervision (dense.sequences_per_step > 0)"
        );
        let o = &self.optim;
        ensure!(
            (0.0..1.0).contains(&o.warmup),
            "optim.warmup must be in [0, 1)"
        );
        for (name, v) in [
            ("optim.lr_encoder", o.lr_encoder),
            ("optim.lr_heads", o.lr_heads),
            ("optim.clip_norm", o.clip_norm),
        ] {
            ensure!(v.is_finite() && v >= 0.0, "{name} must be finite and >= 0");
        }
        if crate::export::WeightDtype::parse(&self.export.dtype).is_none() {
            bail!(
                "export.dtype must be \"f16\", \"f32\", \"int8\" or \"mixed\", not {:?}",
                self.export.dtype
            );
        }
        ensure!(
            self.export.memory_capacity > 0,
            "export.memory_capacity must be positive"
        );
        if let EncoderInit::Random { shape, .. } = &self.encoder {
            shape.validate()?;
        }
        Ok(())
    }

    /// Whether dense supervision is on.
    pub fn dense_on(&self) -> bool {
        self.dense.sequences_per_step > 0
    }

    /// Longest input the run trains on (pieces, without `[CLS]`/`[SEP]`).
    pub fn trained_window(&self) -> usize {
        if self.dense_on() {
            self.dense.window.max(self.data.max_pieces)
        } else {
            self.data.max_pieces
        }
    }

    /// Warm-up length in steps.
    pub fn warmup_steps(&self) -> u64 {
        (self.optim.warmup as f64 * self.steps as f64).round() as u64
    }
}
