//! Random-weight bundles: the committed test fixture and MiniLM-shaped bundles for speed tests.

use anyhow::Result;
use ner_edge::bundle::{CdtParams, Provenance};

use ner_edge::tokenizer::bert_uncased_meta;

use super::bundle::{export_bundle, BundleContents, PriorWeights, TypeState};
use super::onnx::WeightDtype;
use crate::model::rng::SplitMix64;
use crate::model::{random_init, EncoderConfig};

/// The all-MiniLM-L6-v2 WordPiece vocabulary (Apache-2.0), shipped in `fixtures/minilm/`.
pub const MINILM_VOCAB: &str = include_str!("../../../fixtures/minilm/vocab.txt");

/// Model shape of a generated bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// A few hundred KB: 1 layer, hidden 8, 64 positions (the committed test fixture).
    Tiny,
    /// all-MiniLM-L6-v2's shape (6 layers, hidden 384, 512 positions) with random weights.
    Minilm,
}

/// Encoder configuration of a [`Shape`].
pub fn config(shape: Shape) -> EncoderConfig {
    match shape {
        Shape::Tiny => EncoderConfig {
            vocab_size: 30522,
            hidden: 8,
            layers: 1,
            heads: 2,
            intermediate: 16,
            max_positions: 64,
            type_dim: 8,
            layer_norm_eps: 1e-12,
            shape_classes: 0,
        },
        Shape::Minilm => EncoderConfig::minilm_l6(),
    }
}

/// CDT numbers that favour O→O and B→I, as a trained model would; used by random fixtures.
pub fn plausible_transitions() -> CdtParams {
    CdtParams {
        matrix: [
            [0.6, -0.4, 0.0, 0.0, 0.0],
            [-0.3, -1.0, 0.9, -0.8, 0.0],
            [-0.2, -1.0, 0.5, -0.8, 0.0],
        ],
        start: [0.4, -0.2, 0.0],
        end: [0.2, 0.0, 0.0],
    }
}

/// A random-weight bundle with the CoNLL types PER, ORG, LOC, MISC, all active by default, and a
/// random prior MLP (He-scaled normal weights, zero biases).
/// The heads are scaled up so that some (meaningless) entities appear, which lets tests and
/// demos exercise every output path.
pub fn random_bundle(shape: Shape, seed: u64, dtype: WeightDtype) -> Result<Vec<u8>> {
    let cfg = config(shape);
    cfg.validate()?;
    let mut weights = random_init(&cfg, seed);
    let mut rng = SplitMix64::new(seed ^ 0x5eed);
    weights.boundary.weight = rng.normal_vec(cfg.hidden * 3, 0.8);
    weights.boundary.bias = vec![0.0, 0.6, 0.9];
    weights.types.weight = rng.normal_vec(cfg.hidden * cfg.type_dim, 0.5);
    let d = cfg.type_dim;
    let capacity = 5;
    let types = [
        ("PER", "person"),
        ("ORG", "organisation"),
        ("LOC", "location"),
        ("MISC", "other named entity"),
    ]
    .iter()
    .map(|(name, description)| TypeState {
        name: name.to_string(),
        source: "random-fixture".into(),
        description: description.to_string(),
        prototype: rng.normal_vec(d, 1.0),
        memory: rng.normal_vec(capacity * d, 1.0),
    })
    .collect();
    let scale1 = (2.0 / (2 * d) as f64).sqrt();
    let scale2 = (1.0 / d as f64).sqrt();
    let prior = PriorWeights {
        fc1_weight: rng.normal_vec(2 * d * d, scale1 as f32),
        fc1_bias: vec![0.0; d],
        fc2_weight: rng.normal_vec(d * d, scale2 as f32),
        fc2_bias: vec![0.0; d],
    };
    let contents = BundleContents {
        vocab_text: MINILM_VOCAB.to_string(),
        tokenizer: bert_uncased_meta(),
        charsmap: None,
        types,
        default_active: ["PER", "ORG", "LOC", "MISC"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        transitions: plausible_transitions(),
        memory_capacity: capacity,
        provenance: Provenance {
            encoder_source: format!("random-init shape={shape:?} seed={seed}"),
            encoder_sha256: String::new(),
            training_data_sha256: String::new(),
            training_corpora: Vec::new(),
            created_by: format!("ner-edge-trainer {}", env!("CARGO_PKG_VERSION")),
            notes: "random weights: predictions are meaningless; for tests and speed measurements"
                .into(),
        },
        prior: Some(prior),
        trained_window: None,
        other_prototypes: None,
    };
    export_bundle(&weights, &contents, dtype)
}
