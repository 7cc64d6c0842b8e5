//! The container file format shared by bundles and label packs (`runtime/FORMAT.md`).
//!
//! A container is one little-endian file: a 128-byte header (a four-byte magic naming the
//! kind, structural version, section offsets and lengths, two checksums), a metadata JSON
//! document, a tensor table, and a data section in which every tensor starts on a 64-byte
//! boundary. This module knows the layout and nothing of what the metadata means:
//!
//! * [`format`](mod@format): constants, header fields, [`DType`], [`TensorInfo`], checksums.
//! * `reader`: every structural check of FORMAT.md "Validation order" steps 1–7; a kind
//!   ([`crate::bundle`] or [`crate::pack`]) adds its own cross-references on top.
//! * `writer`: the canonical layout, written atomically.
//!
//! Every error names the file and, where there is one, the byte. [`FormatProblem`] tells
//! programs which structural rule was broken.

mod checksum;
pub mod format;
pub(crate) mod reader;
pub(crate) mod writer;

#[doc(hidden)]
pub use checksum::xxh64;
pub use format::{DType, TensorInfo, ALIGNMENT, HEADER_LEN, MAX_RANK, MAX_TENSOR_NAME_LEN};
pub(crate) use reader::{bad, bad_as, parse_container, Container, ContainerKind};
#[doc(hidden)]
pub use writer::reseal;
pub(crate) use writer::{write_atomically, TensorList};

/// Which structural rule of a bundle or label pack file is broken; carried by
/// [`crate::Error::Format`] beside the one-line message for people.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatProblem {
    /// The first four bytes are not the magic of the expected kind (`NERB` for a bundle,
    /// `NERP` for a label pack).
    BadMagic {
        /// The file's first four bytes.
        found: [u8; 4],
        /// The magic of the kind that was expected.
        expected: [u8; 4],
    },
    /// The header's structural version is not the one this reader reads.
    UnsupportedVersion {
        /// Version stored in the file.
        found: u32,
        /// The version this reader reads.
        supported: u32,
    },
    /// The file ends before what it declares: shorter than the header, than the length the
    /// header states, or a tensor-table entry cut short.
    Truncated,
    /// A stored checksum differs from the one computed over the bytes it covers.
    ChecksumMismatch {
        /// Which checksum.
        section: ChecksumSection,
        /// The value stored in the header.
        stored: u64,
        /// The value computed from the file.
        computed: u64,
    },
    /// A tensor's dtype, rank, dimensions or byte length do not match its declaration or the
    /// role the metadata gives it.
    TensorShape {
        /// The tensor's name.
        tensor: String,
    },
    /// A tensor the kind requires is not in the table.
    MissingTensor {
        /// The name looked for.
        tensor: String,
    },
    /// The metadata JSON does not parse, or a field is out of range or contradicts the tensors.
    Metadata,
    /// Any other violation of the layout: header fields, section bounds, tensor offsets,
    /// alignment, overlaps, names, trailing bytes.
    Layout,
}

/// The two checksums of a container header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumSection {
    /// Covers the header (checksum fields zeroed), metadata and tensor table: bytes
    /// `0..data_offset`.
    Header,
    /// Covers the data section.
    Data,
}
