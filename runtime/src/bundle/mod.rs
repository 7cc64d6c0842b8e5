//! Bundle file format v1: see `runtime/FORMAT.md`.
//!
//! A bundle is one little-endian file: a 128-byte header (magic `NERB`, structural version,
//! section offsets, checksums), the [`Metadata`] as JSON, a tensor table, and a data section in
//! which every tensor starts on a 64-byte boundary. [`Bundle`] memory-maps and fully validates a
//! file at open; [`BundleWriter`] produces one; [`describe`] prints one for people.

mod checksum;
mod describe;
mod embedded;
mod format;
pub mod metadata;
pub(crate) mod reader;
mod sample;
pub(crate) mod writer;

#[doc(hidden)]
pub use checksum::xxh64;
pub use describe::describe;
pub use embedded::embedded;
pub use format::{
    DType, TensorInfo, ALIGNMENT, FORMAT_VERSION, HEADER_LEN, MAGIC, MAX_RANK, MAX_TENSOR_NAME_LEN,
};
pub use metadata::*;
pub use reader::Bundle;
#[doc(hidden)]
pub use sample::{
    sample_bundle_bytes, sample_metadata, sample_vocab, sample_writer, SAMPLE_MEMORY_ROWS,
};
#[doc(hidden)]
pub use writer::reseal;
pub use writer::BundleWriter;
