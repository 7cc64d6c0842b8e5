//! Episodic meta-training: configuration, data, optimiser, checkpoints and the training loop.
//!
//! `ner-train meta --config C --out DIR` runs [`run_meta`]: every optimiser step samples
//! `episodes_per_step` N-way K-shot episodes (seeded by the config seed and the step number, so a
//! resumed run sees the same episodes), runs the encoder forward and backward on each episode's
//! support and query sentences, sums the gradients of the episode losses, clips them and applies
//! AdamW. The label memory takes the episode's entity vectors after each step. With dense
//! supervision ([`config::DenseConfig`]) each step also trains on packed, fully annotated
//! sequences ([`dense`]) scored against learned class vectors.

pub mod backend;
pub mod checkpoint;
pub mod collective;
pub mod config;
pub mod context_gate;
pub mod data;
pub mod dense;
pub mod export;
pub mod meta;
pub mod optimizer;
pub mod prompt;
pub mod step;
pub mod validate;

pub use config::TrainConfig;
pub use meta::{run_meta, run_meta_on, run_meta_ranked, RunOptions};
