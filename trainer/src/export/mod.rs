//! Export of trained weights for the runtime: the ONNX encoder graph and the whole bundle.

pub mod bundle;
pub mod fixture;
pub mod onnx;

pub use bundle::{export_bundle, BundleContents, PriorWeights, TypeState};
pub use onnx::{export_onnx, int8_effective, quantised_effective, WeightDtype};
