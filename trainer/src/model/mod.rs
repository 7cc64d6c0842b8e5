//! The encoder model: configuration, parameters and the f32 reference forward pass.

pub mod config;
pub mod reference;
pub mod rng;
pub mod weights;

pub use config::{EncoderConfig, BOUNDARY_LABELS};
pub use reference::{
    reference_forward, reference_forward_shaped, ForwardOutput, ATTENTION_MASK_VALUE,
};
pub use weights::{random_heads, random_init, LayerNorm, LayerWeights, Linear, ModelWeights};
