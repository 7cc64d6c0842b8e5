//! Explicit forward and backward passes of the encoder and its two token heads, layer by layer,
//! over packed batches of sentences (the CPU training backend).
//!
//! llm.c style: each layer family has a `*_forward` writing into caller-owned buffers and a
//! `*_backward` that overwrites input gradients and accumulates (`+=`) parameter gradients. All
//! layers are generic over [`Real`] (`f32` for training, `f64` for gradient checks). Linear
//! layers run on all `N` pieces of a [`PieceBatch`] at once; attention runs per sentence, so no
//! padding or mask is needed. Matrix products go through `ndarray`/`matrixmultiply`,
//! single-threaded.
//!
//! Entry points: [`forward`] fills a [`Tape`]; [`backward`] adds gradients into a
//! [`crate::model::ModelWeights`] made with [`crate::model::ModelWeights::zeros`].

pub mod attention;
pub mod batch;
pub mod embeddings;
pub mod gate;
pub mod gelu;
mod gemm;
pub mod layernorm;
pub mod linear;
pub mod model;
pub mod prefix;
pub mod residual;
pub mod scalar;
#[cfg(test)]
mod testutil;

pub use batch::PieceBatch;
pub use linear::GradMode;
pub use model::{backward, forward, BackwardScratch, Tape};
pub use scalar::{erf_f32, Real};
