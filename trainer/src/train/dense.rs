//! Dense supervision data: runs of consecutive sentences of one corpus, packed up to the
//! training window, with their full annotation over the corpus's own types.
//!
//! Each sequence picks its corpus with probability proportional to the corpus's sentence count
//! times its `dense_weight` (with all weights 1, every training sentence is equally likely), a
//! uniformly random start sentence, and a target
//! length: with probability `single` one sentence, else uniform between a quarter of the window
//! and the whole window; consecutive sentences (wrapping at the end of the corpus) are appended
//! while they fit. The words are joined as one text, exactly as the runtime sees a line holding
//! several sentences. With probability `subset` the sequence scores only a random non-empty
//! subset of its corpus's types, the others becoming the "other" type.

use std::collections::BTreeMap;

use anyhow::{ensure, Context, Result};
use ner_edge::tokenizer::Tokenizer;
use ner_edge_corpus::Sentence;

use super::config::DenseConfig;
use super::data::{encode_sentence, sentence_encoding, EncodedSentence, TrainingData};
use crate::episodes::OTHER_TAG;
use crate::loss::ClassParams;
use crate::model::rng::SplitMix64;

/// One packed, fully annotated sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct DenseSeq {
    /// Index of its corpus in [`TrainingData::corpora`].
    pub corpus: usize,
    /// Row in the class vectors of each scored type: label `1 + 2k` is `B-` of
    /// `classes[k]`; type `classes.len()` is "other" when the run has one.
    pub classes: Vec<usize>,
    /// The packed sentences as one encoded sequence, labels over `classes`.
    pub sentence: EncodedSentence,
    /// Index of its first sentence in the corpus.
    pub first: usize,
    /// Sentences packed into it (consecutive from `first`, wrapping at the corpus's end).
    pub sentences: usize,
}

/// Draws dense sequences for a run.
pub struct DenseSampler<'a> {
    data: &'a TrainingData,
    /// Per corpus, the class row of each of its types (`Corpus::types` order).
    class_rows: Vec<Vec<usize>>,
    /// Per corpus, the piece count of each sentence.
    pieces: Vec<Vec<usize>>,
    /// Cumulative weighted sentence counts, for picking a corpus.
    cumulative: Vec<f64>,
}

impl<'a> DenseSampler<'a> {
    /// A sampler over `data` whose types all have a row in `classes`; corpus `i` is weighted
    /// by `weights[i]` (missing weights are 1).
    pub fn new(
        data: &'a TrainingData,
        classes: &ClassParams,
        tokenizer: &Tokenizer,
        weights: &[f32],
    ) -> Result<Self> {
        let mut class_rows = Vec::with_capacity(data.corpora.len());
        let mut pieces = Vec::with_capacity(data.corpora.len());
        let mut cumulative = Vec::with_capacity(data.corpora.len());
        let mut total = 0.0;
        for (i, c) in data.corpora.iter().enumerate() {
            let rows = c
                .types
                .iter()
                .map(|t| {
                    classes.index(t).with_context(|| {
                        format!("corpus {}: type {t:?} has no class vector", c.name)
                    })
                })
                .collect::<Result<Vec<usize>>>()?;
            class_rows.push(rows);
            pieces.push(
                c.sentences
                    .iter()
                    .map(|s| sentence_encoding(s, tokenizer).0.ids.len())
                    .collect(),
            );
            total += c.sentences.len() as f64 * f64::from(weights.get(i).copied().unwrap_or(1.0));
            cumulative.push(total);
        }
        ensure!(
            total > 0.0,
            "dense supervision needs at least one training sentence with a positive weight"
        );
        Ok(DenseSampler {
            data,
            class_rows,
            pieces,
            cumulative,
        })
    }

    /// `count` sequences drawn with `rng`; `other` says whether the run has an "other" type.
    pub fn sample(
        &self,
        config: &DenseConfig,
        other: bool,
        count: usize,
        rng: &mut SplitMix64,
        tokenizer: &Tokenizer,
    ) -> Result<Vec<DenseSeq>> {
        (0..count)
            .map(|i| {
                self.sample_one(config, other, rng, tokenizer)
                    .with_context(|| format!("dense sequence {}", i + 1))
            })
            .collect()
    }

    fn sample_one(
        &self,
        config: &DenseConfig,
        other: bool,
        rng: &mut SplitMix64,
        tokenizer: &Tokenizer,
    ) -> Result<DenseSeq> {
        let total = *self.cumulative.last().unwrap_or(&0.0);
        let pick = uniform(rng) * total;
        let c = self
            .cumulative
            .partition_point(|&end| end <= pick)
            .min(self.cumulative.len() - 1);
        let corpus = &self.data.corpora[c];
        let n_sent = corpus.sentences.len();
        let start = below(rng, n_sent);
        let window = config.window.max(1);
        let target = if uniform(rng) < f64::from(config.single) {
            0
        } else {
            window / 4 + below(rng, window - window / 4 + 1)
        };
        let mut tokens = Vec::new();
        let mut tags = Vec::new();
        let mut text = Some(String::new());
        let mut used = 0;
        let mut length = 0;
        while used < n_sent {
            let i = (start + used) % n_sent;
            let p = self.pieces[c][i];
            if used > 0 && (length + p > target || length + p > window) {
                break;
            }
            tokens.extend(corpus.sentences[i].tokens.iter().cloned());
            tags.extend(corpus.sentences[i].tags.iter().cloned());
            text = match (text, &corpus.sentences[i].text) {
                (Some(mut acc), Some(t)) => {
                    acc.push_str(t);
                    Some(acc)
                }
                _ => None,
            };
            length += p;
            used += 1;
        }

        let types = &corpus.types;
        let mut scored: Vec<usize> = (0..types.len()).collect();
        if other && types.len() > 1 && uniform(rng) < f64::from(config.subset) {
            let keep = 1 + below(rng, types.len());
            for i in 0..keep {
                let j = i + below(rng, scored.len() - i);
                scored.swap(i, j);
            }
            scored.truncate(keep);
            scored.sort_unstable();
        }
        let mut index: BTreeMap<&str, usize> = BTreeMap::new();
        for (k, &t) in scored.iter().enumerate() {
            index.insert(types[t].as_str(), k);
        }
        if other {
            index.insert(OTHER_TAG, scored.len());
        }
        let tags = tags
            .into_iter()
            .map(|tag| {
                let ty = tag.strip_prefix("B-").or_else(|| tag.strip_prefix("I-"));
                match ty {
                    Some(t) if !index.contains_key(t) => {
                        if other {
                            format!("{}{OTHER_TAG}", &tag[..2])
                        } else {
                            "O".to_string()
                        }
                    }
                    _ => tag,
                }
            })
            .collect();
        let packed = Sentence { tokens, tags, text };
        let sentence = encode_sentence(&packed, tokenizer, &index)?;
        Ok(DenseSeq {
            corpus: c,
            classes: scored.iter().map(|&t| self.class_rows[c][t]).collect(),
            sentence,
            first: start,
            sentences: used,
        })
    }
}

/// Uniform integer in `0..n` (`n > 0`).
pub(crate) fn below(rng: &mut SplitMix64, n: usize) -> usize {
    (rng.next_u64() % n as u64) as usize
}

/// Uniform float in `[0, 1)`.
pub(crate) fn uniform(rng: &mut SplitMix64) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use ner_edge::tokenizer::bert_uncased_meta;
    use ner_edge_corpus::Corpus;

    fn tokenizer() -> Tokenizer {
        Tokenizer::new(&bert_uncased_meta(), crate::export::fixture::MINILM_VOCAB).unwrap()
    }

    fn sentence(words: &str) -> Sentence {
        let mut tokens = Vec::new();
        let mut tags = Vec::new();
        for w in words.split(' ') {
            match w.split_once('/') {
                Some((t, tag)) => {
                    tokens.push(t.to_string());
                    tags.push(tag.to_string());
                }
                None => {
                    tokens.push(w.to_string());
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

    fn data() -> TrainingData {
        let a = Corpus::new(
            "news",
            vec![
                sentence("Merkel/B-PER visited Paris/B-LOC ."),
                sentence("The UN/B-ORG met in New/B-LOC York/I-LOC ."),
                sentence("Nothing happened ."),
                sentence("Obama/B-PER spoke ."),
            ],
            0,
        );
        let b = Corpus::new("movies", vec![sentence("show me Alien/B-TITLE")], 0);
        TrainingData {
            corpora: vec![a, b],
            dropped: vec![0, 0],
            sha256: String::new(),
        }
    }

    #[test]
    fn packed_sequences_keep_every_entity_and_fit_the_window() {
        let data = data();
        let tok = tokenizer();
        let names = ["PER", "LOC", "ORG", "TITLE"].map(String::from).to_vec();
        let classes = ClassParams::init(4, names, true, 1);
        let sampler = DenseSampler::new(&data, &classes, &tok, &[]).unwrap();
        let config = DenseConfig {
            sequences_per_step: 1,
            window: 24,
            weight: 1.0,
            subset: 0.5,
            single: 0.2,
        };
        let mut rng = SplitMix64::new(3);
        let seqs = sampler.sample(&config, true, 200, &mut rng, &tok).unwrap();
        let (mut packed, mut subsets) = (0, 0);
        for s in &seqs {
            assert!(s.sentence.ids.len() - 2 <= config.window);
            let corpus = &data.corpora[s.corpus];
            let n = s.classes.len();
            assert!(n >= 1 && n <= corpus.types.len());
            for &row in &s.classes {
                assert!(corpus.types.contains(&classes.names[row]));
            }
            let source: Vec<&String> = (0..s.sentences)
                .flat_map(|j| &corpus.sentences[(s.first + j) % corpus.sentences.len()].tags)
                .collect();
            assert_eq!(source.len(), s.sentence.labels.len());
            for (tag, &label) in source.iter().zip(&s.sentence.labels) {
                let kind = if tag.starts_with("B-") {
                    1
                } else if tag.starts_with("I-") {
                    2
                } else {
                    0
                };
                let got = if label == 0 { 0 } else { 2 - label % 2 };
                assert_eq!(got, kind, "boundaries survive relabelling");
                if label != 0 {
                    let k = (label - 1) / 2;
                    let want = corpus.types.iter().position(|t| **t == tag[2..]).unwrap();
                    let scored = s
                        .classes
                        .iter()
                        .position(|&r| classes.names[r] == corpus.types[want]);
                    assert_eq!(Some(k).filter(|&k| k < n), scored, "{tag}");
                }
            }
            packed += usize::from(s.sentences > 1);
            subsets += usize::from(n < corpus.types.len());
        }
        assert!(packed > 0, "no sequence packed several sentences");
        assert!(subsets > 0, "no sequence scored a subset");
        let again = sampler
            .sample(&config, true, 200, &mut SplitMix64::new(3), &tok)
            .unwrap();
        assert_eq!(seqs, again);
    }

    #[test]
    fn without_other_every_type_is_scored() {
        let data = data();
        let tok = tokenizer();
        let names = ["PER", "LOC", "ORG", "TITLE"].map(String::from).to_vec();
        let classes = ClassParams::init(4, names, false, 1);
        let sampler = DenseSampler::new(&data, &classes, &tok, &[]).unwrap();
        let config = DenseConfig {
            sequences_per_step: 1,
            ..DenseConfig::default()
        };
        let seqs = sampler
            .sample(&config, false, 50, &mut SplitMix64::new(4), &tok)
            .unwrap();
        for s in &seqs {
            assert_eq!(s.classes.len(), data.corpora[s.corpus].types.len());
            let n = s.classes.len();
            assert!(s.sentence.labels.iter().all(|&l| l < 1 + 2 * n));
        }
    }
}
