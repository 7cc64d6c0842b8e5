//! ner-edge runtime: few-shot named-entity recognition on CPU.
//!
//! Data flow, one module per stage:
//!
//! ```text
//! input (text lines) ─► tokenizer (words + WordPiece, char offsets)
//!   ─► encoder (tract, ONNX from the bundle): boundary logits [T,3], type vectors [T,128]
//!   ─► associated memory (optional: labels of similar memory sentences, read by attention)
//!   ─► emissions (log P over {O, B-X, I-X} for the active types)
//!   ─► decode (CDT transitions, Viterbi with hard BIO constraints, forward–backward marginals)
//!   ─► spans (entities with char offsets and confidence) ─► output (jsonl, conll, inline)
//! ```
//!
//! The [`bundle`] module owns the on-disk format that carries the model; [`adapt`] builds
//! [`pack`]s (label packs: new types on top of one bundle) that [`pipeline::Tagger`] activates
//! next to the bundle's own types.
//!
//! This crate is inference plus adaptation. Of labelled data it reads only support sets, for
//! `ner-edge adapt`: [`adapt::support`] (the file layouts), on top of [`adapt::columns`]
//! (token-per-line sentences) and [`adapt::bio`] (BIO schemes, repair, chunking into
//! entities). Dataset readers and evaluation metrics are training and evaluation concerns and
//! live in the `ner-edge-corpus` crate, which builds on those same primitives.

pub mod adapt;
pub mod associated_memory;
pub mod bundle;
pub mod container;
pub mod decode;
pub mod emissions;
pub mod encoder;
pub mod error;
pub mod input;
pub mod output;
pub mod pack;
pub mod pipeline;
pub mod spans;
pub mod tokenizer;

pub use error::{Error, Result};
