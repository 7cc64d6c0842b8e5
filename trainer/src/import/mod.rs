//! Import of pretrained encoders.

pub mod bundle;
pub mod e5q4;
pub mod minilm;
pub mod safetensors;

pub use minilm::{default_minilm_dir, import_minilm, write_f16_copy};
pub use safetensors::{f32_safetensors, NamedTensor, SafeTensors};
