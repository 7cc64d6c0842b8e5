//! Bundles (format v1, `runtime/FORMAT.md`): the model in one file.
//!
//! A bundle is a [`crate::container`] with magic `NERB` whose metadata JSON is the
//! [`Metadata`] (encoder shape, tokenizer, entity types, CDT numbers, label-memory layout) and
//! whose tensors are the encoder graph, the vocabulary, the prototype bank and the label
//! memory. [`Bundle`] memory-maps and fully validates a file at open; [`BundleWriter`]
//! produces one; [`describe`] prints one for people.

mod describe;
mod embedded;
pub mod metadata;
pub(crate) mod reader;
mod sample;
mod writer;

#[doc(hidden)]
pub use crate::container::{reseal, xxh64};
pub use crate::container::{
    DType, TensorInfo, ALIGNMENT, HEADER_LEN, MAX_RANK, MAX_TENSOR_NAME_LEN,
};
pub use describe::describe;
pub use embedded::embedded;

/// First four bytes of every bundle.
pub const MAGIC: [u8; 4] = *b"NERB";
/// Structural version of the bundle format this crate reads and writes.
pub const FORMAT_VERSION: u32 = 1;
pub use metadata::*;
pub use reader::Bundle;
#[doc(hidden)]
pub use sample::{
    sample_bundle_bytes, sample_metadata, sample_vocab, sample_writer, SAMPLE_MEMORY_ROWS,
};
pub use writer::BundleWriter;
