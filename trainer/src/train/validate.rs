//! Gradient-free evaluation of episodes with the trainer's own forward pass: prototypes from the
//! support set (label-memory retrieval, prior MLP, γ), the runtime's emissions, CDT unfolding and
//! Viterbi, scored as entity-level micro F1.

use anyhow::{Context, Result};
use ner_edge::decode::{cdt::unfold, label_count, viterbi::Decoder, Tag};
use ner_edge::emissions::emissions;
use ner_edge::metrics::{Scheme, Scorer};

use super::data::EncodedEpisode;
use super::meta::TrainState;
use super::step::{gather_words, sentence_refs};
use crate::backprop::{forward, PieceBatch, Tape};
use crate::loss::{entity_vectors, prior_prototypes, EpisodeInput};

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
        batch.push(&w.config, &s.ids)?;
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
        },
        &state.heads.prior,
    )?;
    let transitions = unfold(&state.heads.cdt, n);
    let n_labels = label_count(n);
    let mut decoder = Decoder::new();
    let mut scores = Vec::new();
    Ok(query_out
        .iter()
        .map(|q| {
            emissions(&q.boundary, &q.types, dt, &prototypes, n, &mut scores);
            let mut path = Vec::new();
            decoder.viterbi(&scores, n_labels, &transitions, &mut path);
            path
        })
        .collect())
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
