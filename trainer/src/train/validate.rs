//! Evaluation with the trainer's own forward pass, as the runtime decodes: gradient-free
//! episodes (prototypes from the support set: label-memory retrieval, prior MLP, γ) and
//! supervised tagging of a fully annotated corpus with the learned class vectors; both through
//! the runtime's emissions, CDT unfolding and Viterbi, scored as entity-level micro F1. When
//! the run has "other" vectors they are decoded as one more type whose spans are dropped, as the
//! runtime does.

use anyhow::{bail, Context, Result};
use ner_edge::decode::{cdt::unfold, label_count, viterbi::Decoder, Tag};
use ner_edge::emissions::emissions;
use ner_edge::tokenizer::Tokenizer;
use ner_edge_corpus::metrics::{Scheme, Scorer};
use ner_edge_corpus::Corpus;

use super::data::{EncodedEpisode, EncodedSentence};
use super::meta::TrainState;
use super::step::{gather_words, sentence_refs};
use crate::backprop::{forward, PieceBatch, Tape};
use crate::loss::{
    entity_vectors, prior_prototypes, EpisodeInput, OTHER_BESIDE_CLASSES, OTHER_BESIDE_SUPPORT,
};

/// Viterbi paths of `words` (boundary `[T, 3]` and types `[T, d]` per sentence) against
/// `prototypes` (`[n, d]`), with `other` appended as type `n` when given; labels of that type
/// come back as O.
fn decode(
    state: &TrainState,
    words: impl Iterator<Item = (Vec<f32>, Vec<f32>)>,
    prototypes: &[f32],
    other: Option<&[f32]>,
) -> Vec<Vec<usize>> {
    let d = state.weights.config.type_dim;
    let n = prototypes.len() / d;
    let mut all = prototypes.to_vec();
    if let Some(o) = other {
        all.extend_from_slice(o);
    }
    let m = all.len() / d;
    let transitions = unfold(&state.heads.cdt, m);
    let n_labels = label_count(m);
    let mut decoder = Decoder::new();
    let mut scores = Vec::new();
    words
        .map(|(boundary, types)| {
            emissions(&boundary, &types, d, &all, m, &mut scores);
            let mut path = Vec::new();
            decoder.viterbi(&scores, n_labels, &transitions, &mut path);
            for l in &mut path {
                if Tag::from_index(*l).type_index().is_some_and(|k| k >= n) {
                    *l = 0;
                }
            }
            path
        })
        .collect()
}

/// Predicted label paths of every query sentence of `ep`, adapting gradient-free on its support
/// set with the whole label memory available (no slot is excluded).
pub fn predict_episode(
    state: &TrainState,
    ep: &EncodedEpisode,
    batch: &mut PieceBatch,
    tape: &mut Tape,
) -> Result<Vec<Vec<usize>>> {
    let w = &state.weights;
    let dt = w.config.type_dim;
    let n = ep.types.len();
    batch.clear();
    for s in ep.support.iter().chain(&ep.query) {
        batch.push_shaped(&w.config, &s.ids, Some(&s.shapes))?;
    }
    forward(w, batch, tape);
    let support_out = gather_words(tape, batch, &ep.support, 0, dt);
    let query_out = gather_words(tape, batch, &ep.query, ep.support.len(), dt);
    let support = sentence_refs(&support_out, &ep.support);
    let mapped_means: Vec<Option<Vec<f32>>> = entity_vectors(&support, dt, n)?
        .iter()
        .map(|v| state.memory.retrieve(v, None))
        .collect();
    let prototypes = prior_prototypes(
        &EpisodeInput {
            n_types: n,
            type_dim: dt,
            type_names: &ep.types,
            support: &support,
            query: &[],
            mapped_means: &mapped_means,
            other: None,
        },
        &state.heads.prior,
    )?;
    Ok(decode(
        state,
        query_out.into_iter().map(|q| (q.boundary, q.types)),
        &prototypes,
        state.classes.other_row(OTHER_BESIDE_SUPPORT),
    ))
}

/// BIO tag strings of a label path for an episode's types.
pub fn tags(path: &[usize], types: &[String]) -> Vec<String> {
    path.iter()
        .map(|&l| match Tag::from_index(l) {
            Tag::O => "O".to_string(),
            Tag::B(k) => format!("B-{}", types[k]),
            Tag::I(k) => format!("I-{}", types[k]),
        })
        .collect()
}

/// Micro F1 over the query sentences of all `episodes` (entity-level exact match).
pub fn micro_f1(state: &TrainState, episodes: &[EncodedEpisode]) -> Result<f64> {
    let mut batch = PieceBatch::default();
    let mut tape = Tape::new();
    let mut scorer = Scorer::new();
    for (i, ep) in episodes.iter().enumerate() {
        let paths = predict_episode(state, ep, &mut batch, &mut tape)
            .with_context(|| format!("validation episode {}", i + 1))?;
        for (q, path) in ep.query.iter().zip(&paths) {
            scorer
                .add(
                    &tags(&q.labels, &ep.types),
                    &tags(path, &ep.types),
                    Scheme::Bio,
                )
                .with_context(|| format!("validation episode {}", i + 1))?;
        }
    }
    Ok(scorer.micro().f1)
}

/// Sentences encoded per forward pass in [`supervised_f1`].
const SUPERVISED_BATCH: usize = 32;

/// Micro F1 of tagging every sentence of `corpus` with the class vectors of its types (and the
/// "other" vector beside them, when the run has one), one sentence per input as in its file.
/// Fails when a type of the corpus has no class vector. Runs on two threads.
pub fn supervised_f1(state: &TrainState, corpus: &Corpus, tokenizer: &Tokenizer) -> Result<f64> {
    let classes = &state.classes;
    let mut prototypes = Vec::new();
    for t in &corpus.types {
        match classes.index(t) {
            Some(i) => prototypes.extend_from_slice(classes.class(i)),
            None => bail!(
                "validation corpus {}: type {t:?} has no class vector (the training corpora \
                 define: {})",
                corpus.name,
                classes.names.join(", ")
            ),
        }
    }
    let index: std::collections::BTreeMap<&str, usize> = corpus
        .types
        .iter()
        .enumerate()
        .map(|(k, t)| (t.as_str(), k))
        .collect();
    let encoded: Vec<EncodedSentence> = corpus
        .sentences
        .iter()
        .enumerate()
        .map(|(i, s)| {
            super::data::encode_sentence(s, tokenizer, &index)
                .with_context(|| format!("validation corpus {}: sentence {}", corpus.name, i + 1))
        })
        .collect::<Result<_>>()?;
    let config = &state.weights.config;
    let positions = config.max_positions;
    let half = encoded.len().div_ceil(2);
    let paths: Vec<Result<Vec<Vec<usize>>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = encoded
            .chunks(half.max(1))
            .map(|part| {
                let prototypes = &prototypes;
                scope.spawn(move || -> Result<Vec<Vec<usize>>> {
                    let mut batch = PieceBatch::default();
                    let mut tape = Tape::new();
                    let mut out = Vec::with_capacity(part.len());
                    for chunk in part.chunks(SUPERVISED_BATCH) {
                        batch.clear();
                        let mut kept = Vec::with_capacity(chunk.len());
                        for s in chunk {
                            if s.ids.len() <= positions {
                                batch.push_shaped(config, &s.ids, Some(&s.shapes))?;
                                kept.push(s.clone());
                            }
                        }
                        forward(&state.weights, &batch, &mut tape);
                        let words = gather_words(&tape, &batch, &kept, 0, config.type_dim);
                        let mut decoded = decode(
                            state,
                            words.into_iter().map(|w| (w.boundary, w.types)),
                            prototypes,
                            classes.other_row(OTHER_BESIDE_CLASSES),
                        )
                        .into_iter();
                        for s in chunk {
                            out.push(if s.ids.len() <= positions {
                                decoded.next().unwrap_or_default()
                            } else {
                                vec![0; s.labels.len()]
                            });
                        }
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a validation thread panicked")))
            })
            .collect()
    });
    let mut scorer = Scorer::new();
    let mut at = 0;
    for part in paths {
        for path in part? {
            let s = &encoded[at];
            scorer.add(
                &tags(&s.labels, &corpus.types),
                &tags(&path, &corpus.types),
                Scheme::Bio,
            )?;
            at += 1;
        }
    }
    Ok(scorer.micro().f1)
}
