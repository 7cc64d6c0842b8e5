//! `ner-tools eval`: entity-level scoring of a bundle under the protocols of DESIGN §7.
//!
//! * **Episodes** ([`eval_episodes`]): for every few-shot episode the types of its support set
//!   are adapted gradient-free ([`Adapter::adapt_tokens`]: prototypes plus OT memory retrieval
//!   and the prior MLP), only those types are active while its query sentences are tagged, and
//!   the query is scored. With [`AdaptMode::HeadTune`] the boundary head and type projection
//!   are then tuned on the support set ([`ner_edge::adapt::tune`]) and the query is scored with
//!   the tuned heads. Reported: micro P/R/F1 over all episodes pooled, and mean ± sample
//!   std of the per-episode micro F1.
//! * **Supervised** ([`eval_supervised`]): a whole labelled test set tagged with the bundle's
//!   own types, predicted type names optionally mapped to the gold names.
//!
//! Sentences are pre-tokenised; they are tagged word by word ([`Tagger::tag_words`]) so that
//! predictions align one to one with the gold words. Scores are those of
//! [`ner_edge_corpus::metrics`] (conlleval / seqeval default mode).

pub mod low_resource;
pub mod overlap;
pub mod plots;
pub mod report;

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ner_edge::adapt::{Adapter, DescriptionUse, EpisodeOptions, TuneOptions};
use ner_edge::bundle::Bundle;
use ner_edge::pipeline::Tagger;
use ner_edge_corpus::metrics::{self, episode_summary, EpisodeSummary, Scheme, Scorer, Span};
use ner_edge_corpus::{Episode, Sentence};

/// How the types of an episode are learnt from its support set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AdaptMode {
    /// Prototypes from the support vectors, OT retrieval from the label memory and the prior
    /// MLP; no weight is changed (the runtime's `ner-edge adapt`).
    GradientFree,
    /// Gradient-free prototypes, then the boundary head and type projection tuned on the
    /// support set (`ner-edge adapt --tune-heads`).
    HeadTune(TuneOptions),
}

impl AdaptMode {
    /// The description used in reports, e.g. `gradient-free` or
    /// `head-tune 30 steps (lr 0.001, l2 0.01)`.
    pub fn describe(self) -> String {
        match self {
            AdaptMode::GradientFree => "gradient-free".into(),
            AdaptMode::HeadTune(t) => format!(
                "head-tune {} steps (lr {}, l2 {})",
                t.steps, t.learning_rate, t.l2
            ),
        }
    }
}

/// Counts of predicted spans whose boundaries match a gold span exactly but whose type does
/// not: `(gold type, predicted type) → count`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Confusion {
    counts: BTreeMap<(String, String), usize>,
}

impl Confusion {
    /// Adds one sentence: every predicted span with the same start and end as a gold span of
    /// another type counts once for that pair.
    pub fn add(&mut self, gold: &[Span], pred: &[Span]) {
        for p in pred {
            if let Some(g) = gold
                .iter()
                .find(|g| g.start == p.start && g.end == p.end && g.kind != p.kind)
            {
                *self
                    .counts
                    .entry((g.kind.clone(), p.kind.clone()))
                    .or_default() += 1;
            }
        }
    }

    /// `((gold, predicted), count)` pairs, largest count first, then by names.
    pub fn pairs(&self) -> Vec<(&str, &str, usize)> {
        let mut out: Vec<(&str, &str, usize)> = self
            .counts
            .iter()
            .map(|((g, p), &n)| (g.as_str(), p.as_str(), n))
            .collect();
        out.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(b.0)).then(a.1.cmp(b.1)));
        out
    }

    /// The count of one pair (0 when absent).
    pub fn get(&self, gold: &str, pred: &str) -> usize {
        self.counts
            .get(&(gold.to_string(), pred.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Total number of wrongly typed exact-boundary spans.
    pub fn total(&self) -> usize {
        self.counts.values().sum()
    }
}

/// The outcome of one protocol run.
#[derive(Clone, Debug)]
pub struct EvalResult {
    /// Short name used in headings and picture file names, e.g. `hou-conll-1shot`.
    pub name: String,
    /// The data file evaluated.
    pub data: String,
    /// One line stating the protocol (mode, shots, scheme, type mapping).
    pub protocol: String,
    /// Counts pooled over every sentence (and episode).
    pub scorer: Scorer,
    /// Per-episode summary; `None` for a supervised run.
    pub episodes: Option<EpisodeSummary>,
    /// Exact-boundary type confusions.
    pub confusion: Confusion,
    /// Shots per type of the episodes (`K` of K-shot), when known.
    pub shots: Option<usize>,
    /// Sentences tagged.
    pub sentences: usize,
    /// Words tagged.
    pub words: usize,
    /// Wall-clock seconds for adaptation, tagging and scoring.
    pub seconds: f64,
    /// Remarks printed under the result (e.g. the overlap check outcome).
    pub notes: Vec<String>,
}

/// Options shared by both protocols.
#[derive(Clone, Copy, Debug)]
pub struct EvalOptions {
    /// `Bio` scores the BIO tags as they are; `Io` strips `B-`/`I-` from gold and predictions
    /// first, so adjacent entities of one type merge (Few-NERD's scoring).
    pub scheme: Scheme,
    /// Threads for tagging.
    pub threads: usize,
    /// [`eval_episodes`]: decode the bundle's "other" prototypes when it has them
    /// (`Tagger::disable_other` otherwise). [`eval_supervised`] scores the tagger it is given,
    /// so its caller decides there.
    pub other: bool,
}

/// Converts BIO tags to the tags scored under `scheme` (`Io`: the bare type, else unchanged).
fn scored_tags(tags: &[String], scheme: Scheme) -> Vec<String> {
    match scheme {
        Scheme::Io => tags
            .iter()
            .map(|t| {
                t.strip_prefix("B-")
                    .or_else(|| t.strip_prefix("I-"))
                    .unwrap_or(t)
                    .to_string()
            })
            .collect(),
        _ => tags.to_vec(),
    }
}

/// Scores one sentence into `scorer` and `confusion`; `at` names the sentence in errors.
fn score_sentence(
    gold: &[String],
    pred: &[String],
    scheme: Scheme,
    scorer: &mut Scorer,
    confusion: &mut Confusion,
    at: &dyn Fn() -> String,
) -> Result<()> {
    if gold.len() != pred.len() {
        bail!(
            "{}: {} gold tags but {} predicted",
            at(),
            gold.len(),
            pred.len()
        );
    }
    let gold = scored_tags(gold, scheme);
    let pred = scored_tags(pred, scheme);
    let g = metrics::spans(&gold, scheme).with_context(|| format!("{}: gold tags", at()))?;
    let p = metrics::spans(&pred, scheme).with_context(|| format!("{}: predicted tags", at()))?;
    scorer.add_spans(&g, &p);
    confusion.add(&g, &p);
    Ok(())
}

fn words_of(sentences: &[Sentence]) -> Vec<Vec<&str>> {
    sentences
        .iter()
        .map(|s| s.tokens.iter().map(String::as_str).collect())
        .collect()
}

/// Type descriptions for the episode protocol and how prototypes use them.
#[derive(Clone, Debug, Default)]
pub struct Descriptions {
    /// `(type name, description)` pairs.
    pub texts: Vec<(String, String)>,
    pub use_them: DescriptionUse,
    /// Where they were read from, for the report.
    pub source: String,
}

impl Descriptions {
    fn describe(&self) -> String {
        match self.use_them {
            DescriptionUse::Ignore => String::new(),
            DescriptionUse::Combine => format!(
                ", description vectors added to the examples ({})",
                self.source
            ),
            DescriptionUse::Only => format!(
                ", prototypes from type descriptions only, zero-shot ({})",
                self.source
            ),
        }
    }
}

/// Runs the episode protocol on `episodes` (read from `source`) with `mode`.
///
/// Every episode is adapted on its own support set and only its support's types are active
/// for its query; the bundle's own types play no part. An episode whose support has no entity
/// fails the run, naming the episode. `shots` is recorded in the result as given.
/// `descriptions` may add type descriptions to the examples or replace them.
pub fn eval_episodes(
    bundle: &Bundle,
    episodes: &[Episode],
    source: &str,
    mode: AdaptMode,
    descriptions: &Descriptions,
    shots: Option<usize>,
    opts: EvalOptions,
) -> Result<EvalResult> {
    let start = Instant::now();
    let transitions = &bundle.metadata().transitions;
    let mut tagger = Tagger::new(bundle, Some(&[]))?;
    if !opts.other {
        tagger.disable_other();
    }
    let tune = match mode {
        AdaptMode::GradientFree => None,
        AdaptMode::HeadTune(t) => {
            tagger.expose_hidden(bundle)?;
            Some(t)
        }
    };
    let mut per_episode = Vec::with_capacity(episodes.len());
    let mut confusion = Confusion::default();
    let mut sentences = 0;
    let mut words = 0;
    for (i, episode) in episodes.iter().enumerate() {
        let name = format!("{source}: episode {}", i + 1);
        let adapted = Adapter::new(bundle, tagger.tokenizer(), tagger.encoder())?.adapt_tokens(
            &episode.support,
            &name,
            &EpisodeOptions {
                descriptions: descriptions.texts.clone(),
                use_descriptions: descriptions.use_them,
                tune,
            },
        )?;
        let names: Vec<String> = adapted
            .metadata
            .types
            .iter()
            .map(|t| t.name.clone())
            .collect();
        tagger
            .set_types(
                &names,
                &adapted.prototypes,
                transitions,
                adapted.heads.as_ref(),
            )
            .with_context(|| name.clone())?;
        let query = words_of(&episode.query);
        let tagged = tagger
            .tag_words(&query, opts.threads)
            .with_context(|| name.clone())?;
        let mut scorer = Scorer::new();
        for (j, (sentence, t)) in episode.query.iter().zip(&tagged).enumerate() {
            let pred = tagger.bio_tags(t);
            score_sentence(
                &sentence.tags,
                &pred,
                opts.scheme,
                &mut scorer,
                &mut confusion,
                &|| format!("{name}: query sentence {}", j + 1),
            )?;
            words += sentence.tokens.len();
        }
        sentences += episode.query.len();
        per_episode.push(scorer);
    }
    let summary = episode_summary(&per_episode);
    let mut pooled = Scorer::new();
    for s in &per_episode {
        pooled.merge(s);
    }
    let shots_text = shots.map_or_else(String::new, |k| format!("{k}-shot, "));
    Ok(EvalResult {
        name: String::new(),
        data: source.to_string(),
        protocol: format!(
            "episodes: {shots_text}{} episodes, adaptation {}{}, only each episode's support \
             types active, scheme {}",
            episodes.len(),
            mode.describe(),
            descriptions.describe(),
            scheme_name(opts.scheme)
        ),
        scorer: pooled,
        episodes: Some(summary),
        confusion,
        shots,
        sentences,
        words,
        seconds: start.elapsed().as_secs_f64(),
        notes: vec![other_note(&tagger)],
    })
}

/// Runs the supervised protocol: every sentence of `test` (read from `source`) tagged by
/// `tagger`, predicted type names replaced through `map` (bundle name → gold name; names not
/// in `map` are kept, so they count as false positives unless the gold uses them too). With
/// `contexts` (one per sentence), sentences are tagged in context
/// ([`Tagger::tag_words_in_context`]) and a note gives the gate's mean opening.
pub fn eval_supervised(
    tagger: &Tagger,
    test: &[Sentence],
    source: &str,
    map: &[(String, String)],
    contexts: Option<&[Option<String>]>,
    opts: EvalOptions,
) -> Result<EvalResult> {
    let start = Instant::now();
    let words = words_of(test);
    let char_texts: Option<Vec<&str>> = match (tagger.tokenizer().as_unigram(), contexts) {
        (Some(_), None) => test.iter().map(Sentence::char_level_text).collect(),
        _ => None,
    };
    let tagged = match (contexts, &char_texts) {
        (Some(c), _) => {
            let c: Vec<Option<&str>> = c.iter().map(Option::as_deref).collect();
            tagger.tag_words_in_context(&words, &c, opts.threads)
        }
        (None, Some(texts)) => tagger.tag(texts, opts.threads),
        (None, None) => tagger.tag_words(&words, opts.threads),
    }
    .with_context(|| source.to_string())?;
    let mut notes = vec![other_note(tagger)];
    if char_texts.is_some() {
        notes.push(
            "char-level sentences tagged as raw text by the unigram tokenizer's units (every \
             ideograph a unit); unit labels expanded to chars for scoring"
                .into(),
        );
    }
    if contexts.is_some() {
        let openings: Vec<f32> = tagged.iter().filter_map(|t| t.context_opening).collect();
        let mean =
            openings.iter().map(|&g| f64::from(g)).sum::<f64>() / openings.len().max(1) as f64;
        notes.push(format!(
            "{} of {} sentences had context; mean gate opening over them {mean:.3}",
            openings.len(),
            test.len()
        ));
    }
    let mut scorer = Scorer::new();
    let mut confusion = Confusion::default();
    for (i, (sentence, t)) in test.iter().zip(&tagged).enumerate() {
        let tags = match &char_texts {
            Some(texts) => Sentence::char_tags(texts[i], &t.words, &tagger.bio_tags(t)),
            None => tagger.bio_tags(t),
        };
        let pred: Vec<String> = tags.into_iter().map(|tag| map_tag(tag, map)).collect();
        score_sentence(
            &sentence.tags,
            &pred,
            opts.scheme,
            &mut scorer,
            &mut confusion,
            &|| format!("{source}: sentence {}", i + 1),
        )?;
    }
    let mapping = if map.is_empty() {
        "none".to_string()
    } else {
        map.iter()
            .map(|(a, b)| format!("{a}→{b}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Ok(EvalResult {
        name: String::new(),
        data: source.to_string(),
        protocol: format!(
            "supervised: whole test set, bundle types {}, type mapping {mapping}, scheme {}",
            tagger.type_names().join(", "),
            scheme_name(opts.scheme)
        ),
        scorer,
        episodes: None,
        confusion,
        shots: None,
        sentences: test.len(),
        words: test.iter().map(|s| s.tokens.len()).sum(),
        seconds: start.elapsed().as_secs_f64(),
        notes,
    })
}

/// The report note saying whether `tagger` decoded "other" prototypes.
fn other_note(tagger: &Tagger) -> String {
    if tagger.decodes_other() {
        "the bundle's \"other\" prototypes were decoded beside the active types (their spans \
         dropped)"
            .into()
    } else {
        "no \"other\" prototypes were decoded (the bundle has none, or --no-other)".into()
    }
}

/// `B-x`/`I-x` with `x` replaced through `map`; `O` and unmapped types unchanged.
fn map_tag(tag: String, map: &[(String, String)]) -> String {
    let Some((prefix, kind)) = tag.split_once('-') else {
        return tag;
    };
    match map.iter().find(|(from, _)| from == kind) {
        Some((_, to)) => format!("{prefix}-{to}"),
        None => tag,
    }
}

/// Parses `--map BUNDLE_TYPE=GOLD_TYPE` values; a bundle type may appear only once.
pub fn parse_map(values: &[String]) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for v in values {
        let Some((from, to)) = v.split_once('=') else {
            bail!("--map {v:?}: expected BUNDLE_TYPE=GOLD_TYPE");
        };
        let (from, to) = (from.trim(), to.trim());
        if from.is_empty() || to.is_empty() || from.contains(char::is_whitespace) {
            bail!("--map {v:?}: expected BUNDLE_TYPE=GOLD_TYPE with non-empty names");
        }
        if out.iter().any(|(f, _)| f == from) {
            bail!("--map: bundle type {from} is mapped twice");
        }
        out.push((from.to_string(), to.to_string()));
    }
    Ok(out)
}

/// `bio`, `io` or `bioes`.
pub fn scheme_name(scheme: Scheme) -> &'static str {
    match scheme {
        Scheme::Bio => "bio",
        Scheme::Io => "io",
        Scheme::Bioes => "bioes",
    }
}

#[cfg(test)]
mod tests;
