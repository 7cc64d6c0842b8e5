//! Encoder hyper-parameters.

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

/// Number of boundary-head outputs: logits for `O`, `B`, `I`, in that order.
pub const BOUNDARY_LABELS: usize = 3;

/// Shape of a BERT-style post-LN encoder plus the two token heads.
///
/// `hidden` is the model width D, `intermediate` the FFN width, `type_dim` the width of the type
/// projection head. Token-type embeddings are not configurable: the model always uses token type 0.
/// `shape_classes` is the number of rows of the word-shape embedding table (0: no shape input;
/// [`ner_edge::tokenizer::SHAPE_CLASSES`] for the casing feature).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EncoderConfig {
    /// Rows of the word-piece embedding table (size of `vocab.txt`).
    pub vocab_size: usize,
    /// Model width D.
    pub hidden: usize,
    /// Number of encoder layers.
    pub layers: usize,
    /// Attention heads per layer; must divide `hidden`.
    pub heads: usize,
    /// FFN inner width.
    pub intermediate: usize,
    /// Rows of the position-embedding table: the longest sequence, in pieces, the encoder takes.
    pub max_positions: usize,
    /// Width of the type projection head (the prototype space).
    pub type_dim: usize,
    /// ε added to the (biased) variance inside the square root of every layer norm.
    pub layer_norm_eps: f32,
    /// Rows of the word-shape embedding table (0: no shape input; also when the key is absent).
    #[serde(default)]
    pub shape_classes: usize,
}

impl EncoderConfig {
    /// The shape of `sentence-transformers/all-MiniLM-L6-v2` with a 128-wide type head.
    pub fn minilm_l6() -> EncoderConfig {
        EncoderConfig {
            vocab_size: 30522,
            hidden: 384,
            layers: 6,
            heads: 12,
            intermediate: 1536,
            max_positions: 512,
            type_dim: 128,
            layer_norm_eps: 1e-12,
            shape_classes: 0,
        }
    }

    /// Width of one attention head (`hidden / heads`).
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads.max(1)
    }

    /// Checks that every size is positive, that `hidden` splits evenly into `heads`, and that
    /// `layer_norm_eps` is finite and positive.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden", self.hidden),
            ("layers", self.layers),
            ("heads", self.heads),
            ("intermediate", self.intermediate),
            ("max_positions", self.max_positions),
            ("type_dim", self.type_dim),
        ] {
            ensure!(v > 0, "encoder config: {name} must be positive");
        }
        ensure!(
            self.hidden.is_multiple_of(self.heads),
            "encoder config: hidden ({}) is not a multiple of heads ({})",
            self.hidden,
            self.heads
        );
        ensure!(
            self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0,
            "encoder config: layer_norm_eps must be finite and positive, got {}",
            self.layer_norm_eps
        );
        ensure!(
            self.shape_classes <= 256,
            "encoder config: shape_classes ({}) must fit in a byte",
            self.shape_classes
        );
        ensure!(
            self.vocab_size <= i64::MAX as usize && self.max_positions <= i64::MAX as usize,
            "encoder config: sizes out of range"
        );
        Ok(())
    }

    /// Number of scalar parameters in the encoder and heads, as [`super::ModelWeights`] stores
    /// them (one token-type row).
    pub fn parameter_count(&self) -> usize {
        let d = self.hidden;
        let i = self.intermediate;
        let embeddings = (self.vocab_size + self.max_positions + 1) * d + 2 * d;
        let layer = 4 * (d * d + d) + (d * i + i) + (i * d + d) + 4 * d;
        let heads = (d * BOUNDARY_LABELS + BOUNDARY_LABELS) + (d * self.type_dim + self.type_dim);
        embeddings + self.layers * layer + heads + self.shape_classes * d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minilm_is_valid() {
        let c = EncoderConfig::minilm_l6();
        c.validate().unwrap();
        assert_eq!(c.head_dim(), 32);
    }

    #[test]
    fn rejects_uneven_heads() {
        let c = EncoderConfig {
            heads: 5,
            ..EncoderConfig::minilm_l6()
        };
        assert!(c.validate().is_err());
        let c = EncoderConfig {
            layers: 0,
            ..EncoderConfig::minilm_l6()
        };
        assert!(c.validate().is_err());
    }
}
