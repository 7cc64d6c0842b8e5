//! N-way K~2K-shot episode sampling (Few-NERD's greedy sampler, Ding et al. 2021) and the JSONL
//! episode format.
//!
//! # Sampling rule
//!
//! One episode is drawn as follows, every random choice coming from one [`SplitMix64`]:
//!
//! 1. A source corpus is picked (see [`SourceWeighting`]) among the sources with at least
//!    `n_way` entity types, then `n_way` distinct types are drawn uniformly from its types.
//! 2. The candidates are the sentences mentioning at least one drawn type (with
//!    [`OtherTypes::Exclude`], also mentioning no other type).
//! 3. **Support**, greedy: the candidates are visited in a fresh random order, and a sentence is
//!    added when, counting entities (`B-` tags) of the drawn types only,
//!    * adding it keeps every drawn type at most `2·k_shot` entities in the support, and
//!    * at least one drawn type it mentions still has fewer than `k_shot` entities;
//!
//!    the pass stops as soon as every drawn type has at least `k_shot` entities.
//! 4. **Query**: the same greedy pass with `query_k` in place of `k_shot`, over the candidates
//!    not in the support, in a new random order. This is Few-NERD's rule: the query holds
//!    `query_k`~`2·query_k` entities of every drawn type, not a fixed number of sentences.
//! 5. In both sets every entity of a type that was not drawn is relabelled `O`.
//!
//! When a draw cannot be completed (no candidates, or a pass runs out of sentences before every
//! type reaches its minimum), the draw is discarded and steps 1–5 are repeated, up to
//! [`EpisodeSampler::with_max_attempts`] times (default [`DEFAULT_MAX_ATTEMPTS`]); then
//! [`EpisodeSampler::sample`] fails naming the last reason.
//!
//! Differences from Few-NERD's Python sampler: it draws candidates with replacement until done
//! (and loops forever when the constraints cannot be met); here each pass visits every
//! candidate at most once and a failed draw is retried a bounded number of times. Few-NERD
//! also never uses a sentence that mentions a type outside the draw, which is
//! [`OtherTypes::Exclude`]; the default, [`OtherTypes::Relabel`], keeps such sentences and
//! relabels the foreign entities `O`.
//!
//! # JSONL
//!
//! One episode per line, see [`to_jsonl_line`]:
//! `{"support": [{"tokens": [...], "tags": [...]}], "query": [...], "types": [...], "domain": "..."}`.

use std::collections::BTreeSet;
use std::fmt;

use anyhow::{bail, ensure, Context, Result};
use ner_edge_corpus::{normalize_tags, Corpus, Episode, Sentence, TagScheme};
use serde::{Deserialize, Serialize};

use crate::model::rng::SplitMix64;

/// Type draws tried by [`EpisodeSampler::sample`] before it gives up, unless changed with
/// [`EpisodeSampler::with_max_attempts`].
pub const DEFAULT_MAX_ATTEMPTS: usize = 100;

/// What happens to sentences that mention entity types outside an episode's drawn types.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OtherTypes {
    /// Keep the sentence; its entities of other types become `O` in the episode.
    #[default]
    Relabel,
    /// Never use the sentence in that episode (exactly Few-NERD's sampler).
    Exclude,
    /// Keep the sentence; its entities of other types are tagged with the reserved type
    /// [`OTHER_TAG`] (`B-__other__`, `I-__other__`), so that a loss can teach them as "an entity,
    /// but none of the drawn types" rather than as `O`.
    Mark,
}

/// The reserved type name [`OtherTypes::Mark`] gives entities of undrawn types.
pub const OTHER_TAG: &str = "__other__";

/// How [`EpisodeSampler`] picks the source corpus of each type draw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SourceWeighting {
    /// Every eligible source (one with at least `n_way` types) equally likely.
    #[default]
    Uniform,
    /// Eligible sources in proportion to their number of sentences.
    BySize,
}

/// One source corpus: its sentences and the entity types they mention.
#[derive(Clone, Debug)]
struct Source<'a> {
    name: String,
    sentences: &'a [Sentence],
    /// Sorted distinct entity types of `sentences`.
    types: Vec<String>,
    /// Per sentence: `(index into types, entity count)`, sorted by type index.
    counts: Vec<Vec<(usize, usize)>>,
}

impl<'a> Source<'a> {
    fn new(name: String, sentences: &'a [Sentence]) -> Self {
        let types: Vec<String> = sentences
            .iter()
            .flat_map(|s| s.tags.iter().filter_map(|t| t.strip_prefix("B-")))
            .collect::<BTreeSet<&str>>()
            .into_iter()
            .map(str::to_string)
            .collect();
        let counts = sentences
            .iter()
            .map(|s| {
                let mut per_type: Vec<(usize, usize)> = Vec::new();
                for ty in s.tags.iter().filter_map(|t| t.strip_prefix("B-")) {
                    if let Ok(i) = types.binary_search_by(|probe| probe.as_str().cmp(ty)) {
                        match per_type.iter_mut().find(|(t, _)| *t == i) {
                            Some((_, n)) => *n += 1,
                            None => per_type.push((i, 1)),
                        }
                    }
                }
                per_type.sort_unstable();
                per_type
            })
            .collect();
        Source {
            name,
            sentences,
            types,
            counts,
        }
    }
}

/// Seeded, deterministic N-way K~2K-shot episode sampler over one or more source corpora.
///
/// The same sources, settings and seed give the same sequence of episodes on every platform.
/// See the [module documentation](self) for the sampling rule.
#[derive(Clone, Debug)]
pub struct EpisodeSampler<'a> {
    sources: Vec<Source<'a>>,
    weighting: SourceWeighting,
    other_types: OtherTypes,
    max_attempts: usize,
    rng: SplitMix64,
}

impl<'a> EpisodeSampler<'a> {
    /// A sampler over one corpus; its episodes have an empty [`Episode::domain`].
    pub fn new(sentences: &'a [Sentence], seed: u64) -> Self {
        EpisodeSampler {
            sources: vec![Source::new(String::new(), sentences)],
            weighting: SourceWeighting::Uniform,
            other_types: OtherTypes::default(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            rng: SplitMix64::new(seed),
        }
    }

    /// A sampler over several named corpora, each with its own label set; each type draw first
    /// picks one source by `weighting`, and the episode's [`Episode::domain`] is that source's
    /// name. Fails when `sources` is empty.
    pub fn from_sources(
        sources: impl IntoIterator<Item = (String, &'a [Sentence])>,
        weighting: SourceWeighting,
        seed: u64,
    ) -> Result<Self> {
        let sources: Vec<Source<'a>> = sources
            .into_iter()
            .map(|(name, sentences)| Source::new(name, sentences))
            .collect();
        ensure!(
            !sources.is_empty(),
            "episode sampling needs at least one corpus"
        );
        Ok(EpisodeSampler {
            sources,
            weighting,
            other_types: OtherTypes::default(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            rng: SplitMix64::new(seed),
        })
    }

    /// [`EpisodeSampler::from_sources`] over corpora, named by [`Corpus::name`].
    pub fn from_corpora(
        corpora: &'a [Corpus],
        weighting: SourceWeighting,
        seed: u64,
    ) -> Result<Self> {
        Self::from_sources(
            corpora
                .iter()
                .map(|c| (c.name.clone(), c.sentences.as_slice())),
            weighting,
            seed,
        )
    }

    /// Sets what happens to sentences mentioning types outside the draw (default
    /// [`OtherTypes::Relabel`]).
    pub fn with_other_types(mut self, other_types: OtherTypes) -> Self {
        self.other_types = other_types;
        self
    }

    /// Sets how many type draws [`EpisodeSampler::sample`] tries before failing (at least 1).
    pub fn with_max_attempts(mut self, attempts: usize) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Entity types of every source, sorted and distinct, in source order.
    pub fn source_types(&self) -> Vec<(&str, &[String])> {
        self.sources
            .iter()
            .map(|s| (s.name.as_str(), s.types.as_slice()))
            .collect()
    }

    /// Samples one `n_way`-way `k_shot`~`2·k_shot`-shot episode whose query holds
    /// `query_k`~`2·query_k` entities of each type.
    ///
    /// The episode's [`Episode::types`] are the `n_way` drawn types, sorted; every entity of
    /// another type is tagged `O`; support and query are disjoint sets of corpus sentences
    /// (a sentence listed twice in the corpus counts as two). Fails when an argument is 0, no
    /// source has `n_way` types, or no draw succeeds within the attempt limit.
    pub fn sample(&mut self, n_way: usize, k_shot: usize, query_k: usize) -> Result<Episode> {
        ensure!(
            n_way > 0 && k_shot > 0 && query_k > 0,
            "n-way, k-shot and query-k must be at least 1 (got {n_way}, {k_shot}, {query_k})"
        );
        let eligible: Vec<usize> = (0..self.sources.len())
            .filter(|&i| self.sources[i].types.len() >= n_way)
            .collect();
        if eligible.is_empty() {
            let have = self
                .sources
                .iter()
                .map(|s| format!("{} has {}", display_name(&s.name), s.types.len()))
                .collect::<Vec<_>>()
                .join(", ");
            bail!(
                "cannot sample {n_way}-way episodes: no corpus has {n_way} entity types ({have})"
            );
        }
        let mut last = None;
        for _ in 0..self.max_attempts {
            let source = self.pick_source(&eligible);
            match self.attempt(source, n_way, k_shot, query_k) {
                Ok(episode) => return Ok(episode),
                Err(why) => last = Some(why),
            }
        }
        let why = last.map_or_else(String::new, |w| format!("; last draw: {w}"));
        bail!(
            "could not sample a {n_way}-way {k_shot}~{}-shot episode with {query_k}~{} query \
             entities per type in {} type draws{why}",
            k_shot.saturating_mul(2),
            query_k.saturating_mul(2),
            self.max_attempts
        )
    }

    fn pick_source(&mut self, eligible: &[usize]) -> usize {
        match self.weighting {
            SourceWeighting::Uniform => eligible[below(&mut self.rng, eligible.len())],
            SourceWeighting::BySize => {
                let total: usize = eligible
                    .iter()
                    .map(|&i| self.sources[i].sentences.len())
                    .sum();
                if total == 0 {
                    return eligible[below(&mut self.rng, eligible.len())];
                }
                let mut r = below(&mut self.rng, total);
                for &i in eligible {
                    let size = self.sources[i].sentences.len();
                    if r < size {
                        return i;
                    }
                    r -= size;
                }
                eligible[eligible.len() - 1]
            }
        }
    }

    /// One type draw from `source_index`; on failure, why.
    fn attempt(
        &mut self,
        source_index: usize,
        n_way: usize,
        k_shot: usize,
        query_k: usize,
    ) -> Result<Episode, DrawFailure> {
        let source = &self.sources[source_index];
        let mut order: Vec<usize> = (0..source.types.len()).collect();
        for i in 0..n_way {
            let j = i + below(&mut self.rng, order.len() - i);
            order.swap(i, j);
        }
        let mut drawn = order[..n_way].to_vec();
        drawn.sort_unstable();
        let mut slot = vec![None; source.types.len()];
        for (s, &t) in drawn.iter().enumerate() {
            slot[t] = Some(s);
        }
        let names = || drawn.iter().map(|&t| source.types[t].clone()).collect();

        let mut candidates: Vec<usize> = (0..source.sentences.len())
            .filter(|&i| {
                let counts = &source.counts[i];
                counts.iter().any(|&(t, _)| slot[t].is_some())
                    && (self.other_types != OtherTypes::Exclude
                        || counts.iter().all(|&(t, _)| slot[t].is_some()))
            })
            .collect();
        if candidates.is_empty() {
            return Err(DrawFailure::NoCandidates(names()));
        }

        let mut used = vec![false; source.sentences.len()];
        let support = greedy_fill(
            &mut candidates,
            &mut used,
            &source.counts,
            &slot,
            k_shot,
            &mut self.rng,
        )
        .map_err(|short| DrawFailure::Short("support", names(), short))?;
        let query = greedy_fill(
            &mut candidates,
            &mut used,
            &source.counts,
            &slot,
            query_k,
            &mut self.rng,
        )
        .map_err(|short| DrawFailure::Short("query", names(), short))?;

        let mark = self.other_types == OtherTypes::Mark;
        let relabel = |i: usize| restrict(&source.sentences[i], &source.types, &slot, mark);
        Ok(Episode {
            domain: source.name.clone(),
            support: support.into_iter().map(relabel).collect(),
            query: query.into_iter().map(relabel).collect(),
            types: names(),
            repairs: 0,
        })
    }
}

/// Why one type draw failed.
enum DrawFailure {
    /// No sentence qualifies for the drawn types.
    NoCandidates(Vec<String>),
    /// A set (`support`/`query`) ran out of sentences; the drawn types, and `(type, count)` of
    /// those short of the minimum.
    Short(&'static str, Vec<String>, Vec<(usize, usize)>),
}

impl fmt::Display for DrawFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DrawFailure::NoCandidates(types) => {
                write!(f, "types {types:?}: no sentence mentions them")
            }
            DrawFailure::Short(set, types, short) => {
                let short: Vec<String> = short
                    .iter()
                    .map(|&(s, n)| format!("{} has {n}", types[s]))
                    .collect();
                write!(
                    f,
                    "types {types:?}: the {set} ran out of sentences ({})",
                    short.join(", ")
                )
            }
        }
    }
}

/// Greedy K~2K pass over the unused `candidates` in a fresh random order (incremental
/// Fisher–Yates). Marks and returns the chosen sentence indices in the order chosen, or the
/// `(slot, count)` pairs below `k` when the candidates run out first.
fn greedy_fill(
    candidates: &mut [usize],
    used: &mut [bool],
    counts: &[Vec<(usize, usize)>],
    slot: &[Option<usize>],
    k: usize,
    rng: &mut SplitMix64,
) -> Result<Vec<usize>, Vec<(usize, usize)>> {
    let n_way = slot.iter().flatten().count();
    let max = k.saturating_mul(2);
    let mut have = vec![0usize; n_way];
    let mut chosen = Vec::new();
    let mut done = 0;
    for i in 0..candidates.len() {
        let j = i + below(rng, candidates.len() - i);
        candidates.swap(i, j);
        let sentence = candidates[i];
        if used[sentence] {
            continue;
        }
        let mentions = || {
            counts[sentence]
                .iter()
                .filter_map(|&(t, n)| slot[t].map(|s| (s, n)))
        };
        let fits = mentions().all(|(s, n)| have[s] + n <= max);
        let helps = mentions().any(|(s, _)| have[s] < k);
        if !(fits && helps) {
            continue;
        }
        for (s, n) in mentions() {
            if have[s] < k && have[s] + n >= k {
                done += 1;
            }
            have[s] += n;
        }
        used[sentence] = true;
        chosen.push(sentence);
        if done == n_way {
            return Ok(chosen);
        }
    }
    for &s in &chosen {
        used[s] = false;
    }
    Err(have
        .into_iter()
        .enumerate()
        .filter(|&(_, n)| n < k)
        .collect())
}

/// `sentence` with every entity of a type without a slot tagged `O`, or, with `mark`, tagged
/// with the type [`OTHER_TAG`].
fn restrict(sentence: &Sentence, types: &[String], slot: &[Option<usize>], mark: bool) -> Sentence {
    let kept = |ty: &str| {
        types
            .binary_search_by(|probe| probe.as_str().cmp(ty))
            .is_ok_and(|t| slot[t].is_some())
    };
    let tags = sentence
        .tags
        .iter()
        .map(|tag| {
            let ty = tag.strip_prefix("B-").or_else(|| tag.strip_prefix("I-"));
            match ty {
                Some(ty) if !kept(ty) && mark => format!("{}{OTHER_TAG}", &tag[..2]),
                Some(ty) if !kept(ty) => "O".to_string(),
                _ => tag.clone(),
            }
        })
        .collect();
    Sentence {
        tokens: sentence.tokens.clone(),
        tags,
        text: sentence.text.clone(),
    }
}

/// Uniform integer in `0..n` (`n > 0`), without modulo bias.
fn below(rng: &mut SplitMix64, n: usize) -> usize {
    let n = n as u64;
    let zone = u64::MAX - (u64::MAX % n);
    loop {
        let x = rng.next_u64();
        if x < zone {
            return (x % n) as usize;
        }
    }
}

fn display_name(name: &str) -> &str {
    if name.is_empty() {
        "the corpus"
    } else {
        name
    }
}

#[derive(Serialize, Deserialize)]
struct EpisodeLine {
    support: Vec<SentenceLine>,
    query: Vec<SentenceLine>,
    types: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    domain: String,
}

#[derive(Serialize, Deserialize)]
struct SentenceLine {
    tokens: Vec<String>,
    tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
}

/// One JSON line (without the newline) for `episode`:
/// `{"support": [{"tokens": [...], "tags": [...]}, ...], "query": [...], "types": [...]}`,
/// plus `"domain"` when it is not empty and a sentence's `"text"` when it has one.
/// [`Episode::repairs`] is not written.
pub fn to_jsonl_line(episode: &Episode) -> Result<String> {
    let sentences = |set: &[Sentence]| {
        set.iter()
            .map(|s| SentenceLine {
                tokens: s.tokens.clone(),
                tags: s.tags.clone(),
                text: s.text.clone(),
            })
            .collect()
    };
    let line = EpisodeLine {
        support: sentences(&episode.support),
        query: sentences(&episode.query),
        types: episode.types.clone(),
        domain: episode.domain.clone(),
    };
    serde_json::to_string(&line).context("serialising an episode to JSON")
}

/// Parses one line written by [`to_jsonl_line`] (unknown members are ignored; `domain`
/// defaults to empty, [`Episode::repairs`] is 0).
///
/// Fails on invalid JSON, a sentence whose token and tag counts differ, an empty token, a tag
/// that is not valid BIO (`O`, `B-X`, `I-X` continuing `X`), or a tag type missing from
/// `types`; the error names the set and 1-based sentence number.
pub fn from_jsonl_line(line: &str) -> Result<Episode> {
    let parsed: EpisodeLine = serde_json::from_str(line).context("invalid episode JSON")?;
    let known: BTreeSet<&str> = parsed.types.iter().map(String::as_str).collect();
    let check = |set: &str, sentences: Vec<SentenceLine>| -> Result<Vec<Sentence>> {
        sentences
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                check_sentence(&s, &known).with_context(|| format!("{set} sentence {}", i + 1))?;
                Ok(Sentence {
                    tokens: s.tokens,
                    tags: s.tags,
                    text: s.text,
                })
            })
            .collect()
    };
    let support = check("support", parsed.support)?;
    let query = check("query", parsed.query)?;
    Ok(Episode {
        domain: parsed.domain,
        support,
        query,
        types: parsed.types,
        repairs: 0,
    })
}

/// Parses JSONL text (one [`from_jsonl_line`] episode per non-blank line); errors are prefixed
/// with `source: line N:`.
pub fn parse_jsonl(text: &str, source: &str) -> Result<Vec<Episode>> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| from_jsonl_line(line).with_context(|| format!("{source}: line {}", i + 1)))
        .collect()
}

fn check_sentence(s: &SentenceLine, known: &BTreeSet<&str>) -> Result<()> {
    ensure!(
        s.tokens.len() == s.tags.len(),
        "{} tokens but {} tags",
        s.tokens.len(),
        s.tags.len()
    );
    if let Some(i) = s.tokens.iter().position(String::is_empty) {
        bail!("token {} is empty", i + 1);
    }
    let normalized = normalize_tags(&s.tags, TagScheme::Bio).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(i) = (0..s.tags.len()).find(|&i| normalized.tags[i] != s.tags[i]) {
        bail!(
            "tag {}: {:?} does not continue an entity of its type",
            i + 1,
            s.tags[i]
        );
    }
    for (i, tag) in s.tags.iter().enumerate() {
        if let Some(ty) = tag.get(2..).filter(|_| tag != "O") {
            ensure!(
                known.contains(ty),
                "tag {}: type {ty:?} is not in the episode's types",
                i + 1
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;

    fn sentence(spec: &str) -> Sentence {
        let mut tokens = Vec::new();
        let mut tags = Vec::new();
        for (i, word) in spec.split_whitespace().enumerate() {
            match word.split_once('/') {
                Some((ty, len)) => {
                    let len: usize = len.parse().unwrap();
                    for j in 0..len {
                        tokens.push(format!("w{i}{j}"));
                        tags.push(format!("{}-{ty}", if j == 0 { 'B' } else { 'I' }));
                    }
                }
                None => {
                    tokens.push(word.to_string());
                    tags.push("O".to_string());
                }
            }
        }
        Sentence {
            tokens,
            tags,
            text: None,
        }
    }

    /// 240 distinct sentences (first token `s<i>`) with 0–3 entities of types A..F each.
    fn synthetic() -> Vec<Sentence> {
        let types = ["A", "B", "C", "D", "E", "F"];
        let mut rng = SplitMix64::new(99);
        (0..240)
            .map(|i| {
                let mut spec = vec![format!("s{i}")];
                for _ in 0..below(&mut rng, 4) {
                    let ty = types[below(&mut rng, types.len())];
                    spec.push(format!("{ty}/{}", 1 + below(&mut rng, 3)));
                    spec.push("and".to_string());
                }
                sentence(&spec.join(" "))
            })
            .collect()
    }

    fn type_counts(sentences: &[Sentence]) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for s in sentences {
            for t in s.tags.iter().filter_map(|t| t.strip_prefix("B-")) {
                *counts.entry(t.to_string()).or_insert(0) += 1;
            }
        }
        counts
    }

    fn check_episode(e: &Episode, n: usize, k: usize, q: usize) {
        assert_eq!(e.types.len(), n);
        assert!(e.types.windows(2).all(|w| w[0] < w[1]), "{:?}", e.types);
        for (set, min) in [(&e.support, k), (&e.query, q)] {
            let counts = type_counts(set);
            assert!(counts.keys().all(|t| e.types.contains(t)), "{counts:?}");
            for ty in &e.types {
                let c = counts.get(ty).copied().unwrap_or(0);
                assert!(
                    min <= c && c <= 2 * min,
                    "{ty}: {c} not in {min}..={}",
                    2 * min
                );
            }
            for s in set.iter() {
                assert!(s.entity_count() > 0);
                assert_eq!(s.tokens.len(), s.tags.len());
            }
        }
    }

    #[test]
    fn episodes_are_deterministic_per_seed() {
        let corpus = synthetic();
        let run = |seed| {
            let mut sampler = EpisodeSampler::new(&corpus, seed);
            (0..10)
                .map(|_| sampler.sample(3, 2, 2).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn episodes_respect_k_to_2k_and_relabel_other_types() {
        let corpus = synthetic();
        for (n, k, q) in [(1, 1, 1), (3, 1, 1), (3, 2, 3), (5, 2, 2), (6, 1, 2)] {
            let mut sampler = EpisodeSampler::new(&corpus, 7);
            let mut relabelled = 0;
            for _ in 0..20 {
                let e = sampler.sample(n, k, q).unwrap();
                check_episode(&e, n, k, q);
                for s in e.support.iter().chain(&e.query) {
                    let original = corpus.iter().find(|c| c.tokens == s.tokens).unwrap();
                    for (a, b) in original.tags.iter().zip(&s.tags) {
                        let ty = &a[a.len().min(2)..];
                        if a != "O" && !e.types.iter().any(|t| t == ty) {
                            assert_eq!(b, "O");
                            relabelled += 1;
                        } else {
                            assert_eq!(a, b);
                        }
                    }
                }
            }
            if n < 6 {
                assert!(relabelled > 0, "{n}-way: no foreign entity seen");
            }
        }
    }

    #[test]
    fn mark_mode_tags_foreign_entities_as_other_with_their_boundaries() {
        let corpus = synthetic();
        let mut relabel = EpisodeSampler::new(&corpus, 9);
        let mut mark = EpisodeSampler::new(&corpus, 9).with_other_types(OtherTypes::Mark);
        let mut marked = 0;
        for _ in 0..20 {
            let plain = relabel.sample(3, 1, 1).unwrap();
            let e = mark.sample(3, 1, 1).unwrap();
            assert_eq!(plain.types, e.types, "same draws, same seed");
            for (p, s) in plain
                .support
                .iter()
                .chain(&plain.query)
                .zip(e.support.iter().chain(&e.query))
            {
                let original = corpus.iter().find(|c| c.tokens == s.tokens).unwrap();
                for ((a, b), c) in original.tags.iter().zip(&s.tags).zip(&p.tags) {
                    let ty = &a[a.len().min(2)..];
                    if a != "O" && !e.types.iter().any(|t| t == ty) {
                        assert_eq!(b, &format!("{}{OTHER_TAG}", &a[..2]));
                        assert_eq!(c, "O");
                        marked += 1;
                    } else {
                        assert_eq!(a, b);
                    }
                }
            }
        }
        assert!(marked > 0, "no foreign entity seen");
    }

    #[test]
    fn episodes_query_is_disjoint_from_support() {
        let corpus = synthetic();
        let mut sampler = EpisodeSampler::new(&corpus, 3);
        for _ in 0..30 {
            let e = sampler.sample(4, 2, 2).unwrap();
            check_episode(&e, 4, 2, 2);
            let ids: BTreeSet<&String> = e.support.iter().map(|s| &s.tokens[0]).collect();
            assert_eq!(ids.len(), e.support.len());
            assert!(e.query.iter().all(|s| !ids.contains(&s.tokens[0])));
        }
    }

    #[test]
    fn episodes_exclude_mode_uses_only_pure_sentences() {
        let corpus = synthetic();
        let mut sampler = EpisodeSampler::new(&corpus, 5).with_other_types(OtherTypes::Exclude);
        for _ in 0..20 {
            let e = sampler.sample(3, 1, 1).unwrap();
            check_episode(&e, 3, 1, 1);
            for s in e.support.iter().chain(&e.query) {
                assert!(corpus.contains(s), "sentence was relabelled: {s:?}");
            }
        }
    }

    #[test]
    fn episodes_fail_clearly_when_constraints_cannot_be_met() {
        let corpus = vec![sentence("x A/1 B/1"), sentence("y A/1"), sentence("z B/1")];
        let mut sampler = EpisodeSampler::new(&corpus, 1);
        let err = sampler.sample(3, 1, 1).unwrap_err().to_string();
        assert!(err.contains("no corpus has 3 entity types"), "{err}");
        let err = sampler.sample(2, 2, 1).unwrap_err().to_string();
        assert!(
            err.contains("in 100 type draws") && err.contains("ran out of sentences"),
            "{err}"
        );
        let err = sampler.sample(2, 0, 1).unwrap_err().to_string();
        assert!(err.contains("at least 1"), "{err}");
        let mut sampler = EpisodeSampler::new(&corpus, 1).with_max_attempts(3);
        let err = sampler.sample(2, 2, 1).unwrap_err().to_string();
        assert!(err.contains("in 3 type draws"), "{err}");
        let empty: Vec<Sentence> = Vec::new();
        assert!(EpisodeSampler::new(&empty, 0).sample(1, 1, 1).is_err());
        assert!(EpisodeSampler::from_sources(Vec::new(), SourceWeighting::Uniform, 0).is_err());
    }

    #[test]
    fn episodes_from_several_sources_keep_their_label_sets() {
        let news: Vec<Sentence> = (0..60)
            .map(|i| sentence(&format!("n{i} PER/1 ORG/{}", 1 + i % 2)))
            .collect();
        let movies: Vec<Sentence> = (0..20)
            .map(|i| sentence(&format!("m{i} ACTOR/1 TITLE/2 YEAR/1")))
            .collect();
        let tiny = vec![sentence("t ONLY/1")];
        for weighting in [SourceWeighting::Uniform, SourceWeighting::BySize] {
            let sources = vec![
                ("news".to_string(), news.as_slice()),
                ("movies".to_string(), movies.as_slice()),
                ("tiny".to_string(), tiny.as_slice()),
            ];
            let mut sampler = EpisodeSampler::from_sources(sources, weighting, 11).unwrap();
            let mut seen = BTreeMap::new();
            for _ in 0..200 {
                let e = sampler.sample(2, 1, 1).unwrap();
                check_episode(&e, 2, 1, 1);
                let allowed: &[&str] = match e.domain.as_str() {
                    "news" => &["ORG", "PER"],
                    "movies" => &["ACTOR", "TITLE", "YEAR"],
                    other => panic!("unexpected domain {other}"),
                };
                assert!(e.types.iter().all(|t| allowed.contains(&t.as_str())));
                *seen.entry(e.domain).or_insert(0usize) += 1;
            }
            let (news_n, movies_n) = (seen["news"], seen["movies"]);
            match weighting {
                SourceWeighting::Uniform => assert!((70..=130).contains(&news_n), "{seen:?}"),
                SourceWeighting::BySize => assert!(news_n > 2 * movies_n, "{seen:?}"),
            }
        }
    }

    #[test]
    fn episodes_jsonl_round_trip() {
        let corpus = synthetic();
        let mut sampler = EpisodeSampler::new(&corpus, 21);
        let mut episodes: Vec<Episode> = (0..5).map(|_| sampler.sample(3, 1, 2).unwrap()).collect();
        episodes[0].domain = "news \"quoted\"".to_string();
        episodes[1].support[0].text = Some("raw text".to_string());
        let mut text = String::new();
        for e in &episodes {
            let line = to_jsonl_line(e).unwrap();
            assert!(!line.contains('\n'));
            assert_eq!(&from_jsonl_line(&line).unwrap(), e);
            text.push_str(&line);
            text.push('\n');
        }
        assert_eq!(parse_jsonl(&text, "mem").unwrap(), episodes);
        let line = to_jsonl_line(&episodes[2]).unwrap();
        assert!(line.starts_with(r#"{"support":[{"tokens":["#), "{line}");
        assert!(!line.contains("domain") && !line.contains("text"), "{line}");
    }

    #[test]
    fn episodes_jsonl_rejects_bad_lines() {
        let cases = [
            ("{", "invalid episode JSON"),
            (
                r#"{"support":[{"tokens":["a"],"tags":["O","O"]}],"query":[],"types":[]}"#,
                "support sentence 1",
            ),
            (
                r#"{"support":[],"query":[{"tokens":["a","b"],"tags":["O","I-X"]}],"types":["X"]}"#,
                "query sentence 1",
            ),
            (
                r#"{"support":[{"tokens":["a"],"tags":["B-Y"]}],"query":[],"types":["X"]}"#,
                "not in the episode's types",
            ),
            (
                r#"{"support":[{"tokens":[""],"tags":["O"]}],"query":[],"types":[]}"#,
                "empty",
            ),
            (
                r#"{"support":[{"tokens":["a"],"tags":["X"]}],"query":[],"types":["X"]}"#,
                "malformed tag",
            ),
        ];
        for (line, want) in cases {
            let err = format!("{:#}", from_jsonl_line(line).unwrap_err());
            assert!(err.contains(want), "{line}: {err}");
        }
        let err = format!("{:#}", parse_jsonl("\n{}\n", "f.jsonl").unwrap_err());
        assert!(err.contains("f.jsonl: line 2"), "{err}");
    }

    #[test]
    fn episodes_fewnerd_inter_dev_5_way_1_2_shot() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/fewnerd/inter/dev.txt");
        if !path.is_file() {
            println!("skipped: {} not found", path.display());
            return;
        }
        let corpus = ner_edge_corpus::read_corpus(&path).unwrap();
        assert_eq!(corpus.types.len(), 13);
        for mode in [OtherTypes::Relabel, OtherTypes::Exclude] {
            let mut sampler = EpisodeSampler::new(&corpus.sentences, 2021).with_other_types(mode);
            for _ in 0..50 {
                let e = sampler.sample(5, 1, 1).unwrap();
                check_episode(&e, 5, 1, 1);
                assert!(e.types.iter().all(|t| corpus.types.contains(t)));
            }
        }
    }
}
