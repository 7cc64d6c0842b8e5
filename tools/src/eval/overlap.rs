//! Refusing to evaluate on the bundle's own training sentences.
//!
//! A bundle written by `ner-train` carries the optional tensor
//! [`SENTENCE_HASHES`] (see `runtime/FORMAT.md`): the sorted, distinct
//! [`sentence_hash`] of every training sentence. A test sentence of at least
//! [`MIN_CHECKED_TOKENS`] tokens whose hash is in that set overlaps the training data; shorter
//! sentences (datelines, scores, headings) recur across honest splits and are not counted.
//! CoNLL-2003 test shares 45 of its 2,767 such sentences (1.6 %, league tables and headings)
//! with CoNLL-2003 train, hence the default threshold [`DEFAULT_MAX_OVERLAP`].

use anyhow::{bail, Result};
use ner_edge::bundle::Bundle;
use ner_edge_corpus::Sentence;
pub use ner_edge_trainer::train::export::{sentence_hash, SENTENCE_HASHES};

/// Test sentences shorter than this many tokens are not checked.
pub const MIN_CHECKED_TOKENS: usize = 5;

/// Largest fraction of checked test sentences that may occur in the training data.
pub const DEFAULT_MAX_OVERLAP: f64 = 0.05;

/// Outcome of [`check`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Overlap {
    /// The bundle has no training-sentence hashes (older or untrained bundle).
    Unavailable,
    /// `overlapping` of the `checked` test sentences (those with at least
    /// [`MIN_CHECKED_TOKENS`] tokens) are training sentences.
    Checked { checked: usize, overlapping: usize },
}

impl Overlap {
    /// One line for a report.
    pub fn describe(&self) -> String {
        match self {
            Overlap::Unavailable => {
                "training-data overlap could not be checked: the bundle has no \
                                     training-sentence hashes"
                    .to_string()
            }
            Overlap::Checked {
                checked,
                overlapping,
            } => format!(
                "training-data overlap: {overlapping} of {checked} test sentences with at least \
                 {MIN_CHECKED_TOKENS} tokens occur in the bundle's training data"
            ),
        }
    }
}

/// The bundle's training-sentence hashes, sorted; `None` without the tensor. A tensor that is
/// not `u8` with a length multiple of 8 is an error.
pub fn training_hashes(bundle: &Bundle) -> Result<Option<Vec<u64>>> {
    if bundle.tensor_info(SENTENCE_HASHES).is_err() {
        return Ok(None);
    }
    let bytes = bundle.bytes(SENTENCE_HASHES)?;
    if bytes.len() % 8 != 0 {
        bail!(
            "{}: tensor {SENTENCE_HASHES} has {} bytes, not a multiple of 8",
            bundle.name(),
            bytes.len()
        );
    }
    let mut hashes: Vec<u64> = bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect();
    hashes.sort_unstable();
    Ok(Some(hashes))
}

/// Counts the test `sentences` that occur among `hashes` (see the module docs).
pub fn check<'a>(
    hashes: Option<&[u64]>,
    sentences: impl IntoIterator<Item = &'a Sentence>,
) -> Overlap {
    let Some(hashes) = hashes else {
        return Overlap::Unavailable;
    };
    let mut checked = 0;
    let mut overlapping = 0;
    for s in sentences {
        if s.tokens.len() < MIN_CHECKED_TOKENS {
            continue;
        }
        checked += 1;
        if hashes.binary_search(&sentence_hash(&s.tokens)).is_ok() {
            overlapping += 1;
        }
    }
    Overlap::Checked {
        checked,
        overlapping,
    }
}

/// Fails, naming `source`, when more than `max_fraction` of the checked sentences overlap.
pub fn refuse_if_overlapping(overlap: Overlap, source: &str, max_fraction: f64) -> Result<()> {
    if let Overlap::Checked {
        checked,
        overlapping,
    } = overlap
    {
        if overlapping > 0 && overlapping as f64 > max_fraction * checked as f64 {
            bail!(
                "{source}: refusing to report: {overlapping} of {checked} test sentences (at least \
                 {MIN_CHECKED_TOKENS} tokens) are in the bundle's training data, more than \
                 {:.1} % (--max-overlap {max_fraction}); evaluate on data the bundle was not \
                 trained on",
                100.0 * max_fraction
            );
        }
    }
    Ok(())
}
