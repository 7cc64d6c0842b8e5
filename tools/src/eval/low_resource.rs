//! The low-resource protocol of LightNER (Chen et al. 2022, §4.3) as our data allows: a target
//! corpus's training set is cut down to `K` sentences per entity type, a label pack is learnt
//! on that subset with each adaptation mode, and the pack's types alone tag the target's whole
//! test set (conlleval micro F1). Repeated over several random subsets.
//!
//! Modes: gradient-free `adapt`, head tuning (`adapt --tune-heads`), prompt adapters
//! (`ner-train prompt`) and prompt adapters with head tuning (`ner-train prompt --tune-heads`).
//! All modes of one subset see the same sentences.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{Context, Result};
use ner_edge::adapt::bio::{spans, Scheme};
use ner_edge::adapt::{
    adapt, AdaptOptions, Adapted, SupportEntity, SupportSentence, SupportSet, TuneOptions,
};
use ner_edge::bundle::Bundle;
use ner_edge::encoder::Prompts;
use ner_edge::pack::{prompted_pack_to_bytes, LabelPack};
use ner_edge::pipeline::Tagger;
use ner_edge_corpus::{Corpus, Sentence};
use ner_edge_trainer::model::rng::SplitMix64;
use ner_edge_trainer::train::prompt::{train_prompts, PromptOptions};

use super::{eval_supervised, EvalOptions};

/// How a subset's pack is learnt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LowResourceMode {
    /// Prototypes only (`ner-edge adapt`).
    GradientFree,
    /// Prototypes, then the heads tuned (`ner-edge adapt --tune-heads`).
    HeadTune,
    /// Prototypes, then prompt adapters (`ner-train prompt`).
    Prompts,
    /// Prototypes, then prompt adapters and heads together (`ner-train prompt --tune-heads`).
    PromptsHeads,
}

impl LowResourceMode {
    /// The name in tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            LowResourceMode::GradientFree => "gradient-free",
            LowResourceMode::HeadTune => "head-tune",
            LowResourceMode::Prompts => "prompts",
            LowResourceMode::PromptsHeads => "prompts+heads",
        }
    }
}

/// Settings of [`eval_low_resource`].
#[derive(Clone, Debug)]
pub struct LowResourceOptions {
    /// Training sentences per type, one row group each.
    pub per_type: Vec<usize>,
    /// Random subsets per `K`.
    pub samples: usize,
    /// Seed of the first subset (subset `s` uses `seed + s`).
    pub seed: u64,
    /// The modes compared.
    pub modes: Vec<LowResourceMode>,
    /// Head tuning of [`LowResourceMode::HeadTune`].
    pub tune: TuneOptions,
    /// Prompt training of the two prompt modes (its `tune_heads` is set per mode).
    pub prompt: PromptOptions,
    /// Tagging and scoring.
    pub eval: EvalOptions,
}

/// One mode on one subset.
#[derive(Clone, Debug)]
pub struct LowResourceRun {
    pub per_type: usize,
    pub mode: LowResourceMode,
    /// Sentences in the subset.
    pub sentences: usize,
    /// Micro F1 (percent) on the test set.
    pub f1: f64,
    /// Micro precision (percent).
    pub precision: f64,
    /// Micro recall (percent).
    pub recall: f64,
    /// Seconds to learn the pack.
    pub adapt_seconds: f64,
    /// Bytes of the pack.
    pub pack_bytes: usize,
}

/// `K` sentences per type of `train`: types in name order, each taking sentences that mention
/// it, in a random order drawn from `seed`, until it has `K` among the sentences already
/// taken (a sentence counts for every type it mentions). Returns sentence indices in order.
pub fn sample_per_type(train: &Corpus, k: usize, seed: u64) -> Vec<usize> {
    let mentions: Vec<BTreeSet<String>> = train
        .sentences
        .iter()
        .map(|s| {
            spans(&s.tags, Scheme::Bio)
                .map(|v| v.into_iter().map(|sp| sp.kind).collect())
                .unwrap_or_default()
        })
        .collect();
    let types: BTreeSet<&String> = mentions.iter().flatten().collect();
    let mut order: Vec<usize> = (0..train.sentences.len()).collect();
    let mut rng = SplitMix64::new(seed);
    for i in (1..order.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    let mut taken: BTreeSet<usize> = BTreeSet::new();
    for t in types {
        let mut have = taken.iter().filter(|&&i| mentions[i].contains(t)).count();
        for &i in &order {
            if have >= k {
                break;
            }
            if !taken.contains(&i) && mentions[i].contains(t) {
                taken.insert(i);
                have += 1;
            }
        }
    }
    taken.into_iter().collect()
}

/// The sentences as a support set: tokens joined with one space, entities as byte spans.
fn support_of(train: &Corpus, which: &[usize], source: &str) -> Result<SupportSet> {
    let mut sentences = Vec::with_capacity(which.len());
    for &i in which {
        let s: &Sentence = &train.sentences[i];
        let mut text = String::new();
        let mut at = Vec::with_capacity(s.tokens.len() + 1);
        for (j, tok) in s.tokens.iter().enumerate() {
            if j > 0 {
                text.push(' ');
            }
            at.push(text.len());
            text.push_str(tok);
        }
        at.push(text.len() + 1);
        let entities = spans(&s.tags, Scheme::Bio)
            .with_context(|| format!("{source}: sentence {}", i + 1))?
            .into_iter()
            .map(|sp| SupportEntity {
                span: at[sp.start]..at[sp.end] - 1,
                type_name: sp.kind,
            })
            .collect();
        sentences.push(SupportSentence {
            line: i + 1,
            text,
            entities,
        });
    }
    Ok(SupportSet {
        source: format!("{source} (subset)"),
        sentences,
        repairs: 0,
        xxh64: String::new(),
    })
}

/// Runs every mode on `opts.samples` subsets of `train` per `K` and scores on `test`.
pub fn eval_low_resource(
    bundle: &Bundle,
    train: &Corpus,
    test: &[Sentence],
    source: &str,
    opts: &LowResourceOptions,
) -> Result<Vec<LowResourceRun>> {
    let mut runs = Vec::new();
    for &k in &opts.per_type {
        for sample in 0..opts.samples {
            let which = sample_per_type(train, k, opts.seed + sample as u64);
            let support = support_of(train, &which, source)?;
            for &mode in &opts.modes {
                let start = Instant::now();
                let (adapted, prompts) = learn(bundle, &support, mode, opts)?;
                let adapt_seconds = start.elapsed().as_secs_f64();
                let bytes = prompted_pack_to_bytes(
                    &adapted.metadata,
                    &adapted.prototypes,
                    adapted.heads.as_ref(),
                    prompts.as_ref(),
                )?;
                let pack = LabelPack::from_bytes(&bytes, mode.name())?;
                let names = pack.type_names();
                let mut tagger =
                    Tagger::with_packs(bundle, std::slice::from_ref(&pack), Some(&names), true)?;
                if !opts.eval.other {
                    tagger.disable_other();
                }
                let r = eval_supervised(&tagger, test, source, &[], None, opts.eval)?;
                let micro = r.scorer.micro();
                let (f1, precision, recall) = (
                    100.0 * micro.f1,
                    100.0 * micro.precision,
                    100.0 * micro.recall,
                );
                eprintln!(
                    "ner-tools: K={k} sample {} {}: {} sentences, F1 {f1:.2} (P {precision:.2} / \
                     R {recall:.2}; learnt in {adapt_seconds:.1} s, tagged in {:.1} s)",
                    sample + 1,
                    mode.name(),
                    which.len(),
                    r.seconds
                );
                runs.push(LowResourceRun {
                    per_type: k,
                    mode,
                    sentences: which.len(),
                    f1,
                    precision,
                    recall,
                    adapt_seconds,
                    pack_bytes: bytes.len(),
                });
            }
        }
    }
    Ok(runs)
}

fn learn(
    bundle: &Bundle,
    support: &SupportSet,
    mode: LowResourceMode,
    opts: &LowResourceOptions,
) -> Result<(Adapted, Option<Prompts>)> {
    let plain = AdaptOptions::default();
    Ok(match mode {
        LowResourceMode::GradientFree => (adapt(bundle, Some(support), &plain)?, None),
        LowResourceMode::HeadTune => {
            let tuned = AdaptOptions {
                tune: Some(opts.tune),
                ..plain
            };
            (adapt(bundle, Some(support), &tuned)?, None)
        }
        LowResourceMode::Prompts | LowResourceMode::PromptsHeads => {
            let p = PromptOptions {
                tune_heads: mode == LowResourceMode::PromptsHeads,
                ..opts.prompt.clone()
            };
            let (adapted, prompts, _) = train_prompts(bundle, support, &plain, &p)?;
            (adapted, Some(prompts))
        }
    })
}

/// Mean and sample standard deviation.
fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// A Markdown table: one row per `K`, one column per mode, `mean ± std (runs)` F1.
pub fn low_resource_table(runs: &[LowResourceRun], opts: &LowResourceOptions) -> String {
    let mut s = String::new();
    let _ = write!(s, "| K per type | sentences |");
    for m in &opts.modes {
        let _ = write!(s, " {} |", m.name());
    }
    let _ = writeln!(s);
    let _ = write!(s, "|---:|---:|");
    for _ in &opts.modes {
        let _ = write!(s, "---:|");
    }
    let _ = writeln!(s);
    for &k in &opts.per_type {
        let of_k: Vec<&LowResourceRun> = runs.iter().filter(|r| r.per_type == k).collect();
        let sentences: Vec<f64> = of_k
            .iter()
            .filter(|r| r.mode == opts.modes[0])
            .map(|r| r.sentences as f64)
            .collect();
        let _ = write!(s, "| {k} | {:.0} |", mean_std(&sentences).0);
        for &m in &opts.modes {
            let f: Vec<f64> = of_k.iter().filter(|r| r.mode == m).map(|r| r.f1).collect();
            let (mean, std) = mean_std(&f);
            let _ = write!(s, " {mean:.2} ± {std:.2} |");
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "\nMean micro precision / recall:\n");
    let _ = write!(s, "| K per type |");
    for m in &opts.modes {
        let _ = write!(s, " {} |", m.name());
    }
    let _ = writeln!(s);
    let _ = write!(s, "|---:|");
    for _ in &opts.modes {
        let _ = write!(s, "---:|");
    }
    let _ = writeln!(s);
    for &k in &opts.per_type {
        let _ = write!(s, "| {k} |");
        for &m in &opts.modes {
            let of: Vec<&LowResourceRun> = runs
                .iter()
                .filter(|r| r.per_type == k && r.mode == m)
                .collect();
            let p: Vec<f64> = of.iter().map(|r| r.precision).collect();
            let r: Vec<f64> = of.iter().map(|r| r.recall).collect();
            let _ = write!(s, " {:.2} / {:.2} |", mean_std(&p).0, mean_std(&r).0);
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "\nMean seconds to learn a pack / mean pack size:\n");
    for &m in &opts.modes {
        let of_m: Vec<&LowResourceRun> = runs.iter().filter(|r| r.mode == m).collect();
        let secs: Vec<f64> = of_m.iter().map(|r| r.adapt_seconds).collect();
        let kb: Vec<f64> = of_m.iter().map(|r| r.pack_bytes as f64 / 1024.0).collect();
        let _ = writeln!(
            s,
            "- {}: {:.1} s, {:.0} KiB",
            m.name(),
            mean_std(&secs).0,
            mean_std(&kb).0
        );
    }
    s
}
