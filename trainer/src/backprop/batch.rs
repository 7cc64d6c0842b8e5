//! Packed batches of word-piece ids: sentences back to back, no padding.

use anyhow::{bail, Result};

use crate::model::EncoderConfig;

/// Sentences of word-piece ids packed back to back: sentence `s` is
/// `ids[offsets[s]..offsets[s + 1]]`, and `shapes` holds the word-shape id of every piece (0
/// for sentences pushed without shapes). Every id is below the `vocab_size`, every shape below
/// `shape_classes` (or 0 when there are none) and every sentence at most `max_positions` long
/// for the config it was validated against. Empty sentences are allowed (they contribute no
/// tokens), and so is an empty batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PieceBatch {
    ids: Vec<u32>,
    shapes: Vec<u8>,
    offsets: Vec<usize>,
    id_bound: usize,
    shape_bound: usize,
    max_len: usize,
}

impl Default for PieceBatch {
    fn default() -> PieceBatch {
        PieceBatch {
            ids: Vec::new(),
            shapes: Vec::new(),
            offsets: vec![0],
            id_bound: 0,
            shape_bound: 0,
            max_len: 0,
        }
    }
}

impl PieceBatch {
    /// Packs `sentences`, checking each against `config`. The error names the first bad
    /// sentence (by index) and what is wrong with it.
    pub fn new<S: AsRef<[u32]>>(config: &EncoderConfig, sentences: &[S]) -> Result<PieceBatch> {
        let mut batch = PieceBatch::default();
        for s in sentences {
            batch.push(config, s.as_ref())?;
        }
        Ok(batch)
    }

    /// Empties the batch, keeping its allocations.
    pub fn clear(&mut self) {
        self.ids.clear();
        self.shapes.clear();
        self.offsets.clear();
        self.offsets.push(0);
        self.id_bound = 0;
        self.shape_bound = 0;
        self.max_len = 0;
    }

    /// Appends one sentence with every piece of shape 0, after checking it against `config`;
    /// on error the batch is unchanged.
    pub fn push(&mut self, config: &EncoderConfig, sentence: &[u32]) -> Result<()> {
        self.push_shaped(config, sentence, None)
    }

    /// Appends one sentence with the word-shape id of each piece (`None`: all 0), after
    /// checking both against `config`; on error the batch is unchanged. A config without shape
    /// classes ignores `shapes` (the model has no shape input).
    pub fn push_shaped(
        &mut self,
        config: &EncoderConfig,
        sentence: &[u32],
        shapes: Option<&[u8]>,
    ) -> Result<()> {
        let index = self.len();
        let shapes = shapes.filter(|_| config.shape_classes > 0);
        if let Some(shapes) = shapes {
            if shapes.len() != sentence.len() {
                bail!(
                    "sentence {index}: {} shapes for {} pieces",
                    shapes.len(),
                    sentence.len()
                );
            }
            if let Some((piece, &s)) = shapes
                .iter()
                .enumerate()
                .find(|(_, &s)| usize::from(s) >= config.shape_classes)
            {
                bail!(
                    "sentence {index}: piece {piece} has shape {s}, not below shape_classes {}",
                    config.shape_classes
                );
            }
        }
        if sentence.len() > config.max_positions {
            bail!(
                "sentence {index}: {} pieces exceed max_positions {}",
                sentence.len(),
                config.max_positions
            );
        }
        if let Some((piece, &id)) = sentence
            .iter()
            .enumerate()
            .find(|(_, &id)| id as usize >= config.vocab_size)
        {
            bail!(
                "sentence {index}: piece {piece} has id {id}, not below vocab_size {}",
                config.vocab_size
            );
        }
        self.ids.extend_from_slice(sentence);
        match shapes {
            Some(s) => {
                self.shapes.extend_from_slice(s);
                let top = s.iter().map(|&x| usize::from(x) + 1).max().unwrap_or(0);
                self.shape_bound = self.shape_bound.max(top);
            }
            None => self.shapes.resize(self.ids.len(), 0),
        }
        self.offsets.push(self.ids.len());
        let top = sentence
            .iter()
            .map(|&id| id as usize + 1)
            .max()
            .unwrap_or(0);
        self.id_bound = self.id_bound.max(top);
        self.max_len = self.max_len.max(sentence.len());
        Ok(())
    }

    /// Number of sentences.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Whether there are no sentences.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total number of pieces `N` over all sentences.
    pub fn tokens(&self) -> usize {
        self.ids.len()
    }

    /// All ids, sentence after sentence.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// The word-shape id of every piece, parallel to [`PieceBatch::ids`].
    pub fn shapes(&self) -> &[u8] {
        &self.shapes
    }

    /// Sentence bounds: `len() + 1` non-decreasing values from 0 to `tokens()`.
    pub fn offsets(&self) -> &[usize] {
        &self.offsets
    }

    /// The ids of sentence `s`. Panics if `s >= len()`.
    pub fn sentence(&self, s: usize) -> &[u32] {
        &self.ids[self.offsets[s]..self.offsets[s + 1]]
    }

    /// Length of the longest sentence.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Whether every id and sentence length is in range for `config`.
    pub fn fits(&self, config: &EncoderConfig) -> bool {
        self.id_bound <= config.vocab_size
            && self.max_len <= config.max_positions
            && self.shape_bound <= config.shape_classes.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> EncoderConfig {
        EncoderConfig {
            vocab_size: 10,
            max_positions: 4,
            ..EncoderConfig::minilm_l6()
        }
    }

    #[test]
    fn packs_sentences_back_to_back() {
        let b = PieceBatch::new(&config(), &[vec![1, 2], vec![], vec![9, 0, 3, 3]]).unwrap();
        assert_eq!(b.len(), 3);
        assert_eq!(b.tokens(), 6);
        assert_eq!(b.offsets(), &[0, 2, 2, 6]);
        assert_eq!(b.sentence(2), &[9, 0, 3, 3]);
        assert!(b.sentence(1).is_empty());
        assert_eq!(b.max_len(), 4);
        assert!(b.fits(&config()));
        let empty = PieceBatch::new::<Vec<u32>>(&config(), &[]).unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.tokens(), 0);
        assert_eq!(empty.offsets(), &[0]);
    }

    #[test]
    fn rejects_bad_sentences_with_context() {
        let err = PieceBatch::new(&config(), &[vec![1], vec![3, 10]])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sentence 1") && err.contains("piece 1"),
            "{err}"
        );
        assert!(
            err.contains("id 10") && err.contains("vocab_size 10"),
            "{err}"
        );
        let err = PieceBatch::new(&config(), &[vec![1; 5]])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sentence 0") && err.contains("max_positions 4"),
            "{err}"
        );
        let mut b = PieceBatch::new(&config(), &[vec![1, 2]]).unwrap();
        let before = b.clone();
        assert!(b.push(&config(), &[11]).is_err());
        assert_eq!(b, before);
        b.clear();
        assert_eq!(b, PieceBatch::default());
    }

    #[test]
    fn shapes_are_kept_checked_or_ignored_by_the_config() {
        let shaped = EncoderConfig {
            shape_classes: 3,
            ..config()
        };
        let mut b = PieceBatch::default();
        b.push_shaped(&shaped, &[1, 2, 3], Some(&[0, 2, 1]))
            .unwrap();
        b.push(&shaped, &[4]).unwrap();
        assert_eq!(b.shapes(), &[0, 2, 1, 0]);
        assert!(b.fits(&shaped));
        let before = b.clone();
        let err = b
            .push_shaped(&shaped, &[1, 2], Some(&[0, 3]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("piece 1") && err.contains("shape 3"), "{err}");
        assert!(b.push_shaped(&shaped, &[1, 2], Some(&[0])).is_err());
        assert_eq!(b, before);
        let mut plain = PieceBatch::default();
        plain
            .push_shaped(&config(), &[1, 2], Some(&[5, 4]))
            .unwrap();
        assert_eq!(
            plain.shapes(),
            &[0, 0],
            "a model without shapes ignores them"
        );
        assert!(
            !b.fits(&config()),
            "shape ids beyond a shapeless config do not fit"
        );
    }
}
