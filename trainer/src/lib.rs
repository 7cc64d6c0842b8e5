//! ner-edge trainer: the encoder model with its f32 reference forward pass, import of pretrained
//! weights, and ONNX export for the runtime.

pub mod backprop;
pub mod cuda;
pub mod episodes;
pub mod export;
pub mod import;
pub mod loss;
pub mod model;
pub mod train;

pub use export::onnx::{export_onnx, WeightDtype};
pub use import::{default_minilm_dir, import_minilm, write_f16_copy};
pub use model::{
    random_init, reference_forward, reference_forward_shaped, EncoderConfig, ForwardOutput,
    ModelWeights,
};
