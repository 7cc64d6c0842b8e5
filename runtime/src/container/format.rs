//! Constants and fixed layout of container format v1 (`runtime/FORMAT.md`), shared by bundles
//! and label packs.

use std::fmt;

use super::checksum::xxh64;

/// Length of the fixed header in bytes.
pub const HEADER_LEN: usize = 128;
/// Alignment, in bytes, of the data section and of every tensor inside it (absolute file offsets).
pub const ALIGNMENT: usize = 64;
/// Longest tensor name, in UTF-8 bytes.
pub const MAX_TENSOR_NAME_LEN: usize = 256;
/// Largest tensor rank.
pub const MAX_RANK: usize = 8;
/// Smallest possible tensor-table entry: name length, one name byte, dtype, rank, offset, length.
pub(crate) const MIN_ENTRY_LEN: usize = 2 + 1 + 1 + 1 + 8 + 8;

pub(crate) const AT_VERSION: usize = 4;
pub(crate) const AT_FLAGS: usize = 8;
pub(crate) const AT_HEADER_LEN: usize = 12;
pub(crate) const AT_FILE_LEN: usize = 16;
pub(crate) const AT_METADATA_OFFSET: usize = 24;
pub(crate) const AT_METADATA_LEN: usize = 32;
pub(crate) const AT_TABLE_OFFSET: usize = 40;
pub(crate) const AT_TABLE_LEN: usize = 48;
pub(crate) const AT_TENSOR_COUNT: usize = 56;
pub(crate) const AT_DATA_OFFSET: usize = 64;
pub(crate) const AT_DATA_LEN: usize = 72;
pub(crate) const AT_DATA_CHECKSUM: usize = 80;
pub(crate) const AT_HEADER_CHECKSUM: usize = 88;
pub(crate) const AT_RESERVED: usize = 96;

const CONTENT_ID_SEEDS: [u64; 2] = [0x4E45_5242_2D49_4431, 0x4E45_5242_2D49_4432];

/// Element type of a tensor. The on-disk code is [`DType::code`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE-754 binary32, little-endian. Code 0.
    F32,
    /// IEEE-754 binary16, little-endian. Code 1.
    F16,
    /// Signed byte. Code 2.
    I8,
    /// Unsigned byte. Code 3.
    U8,
    /// Opaque byte string (ONNX graph, vocabulary); shape is always `[len]`. Code 4.
    Bytes,
}

impl DType {
    /// All dtypes, in code order.
    pub const ALL: [DType; 5] = [DType::F32, DType::F16, DType::I8, DType::U8, DType::Bytes];

    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 => 2,
            DType::I8 | DType::U8 | DType::Bytes => 1,
        }
    }

    /// The byte stored in the tensor table.
    pub fn code(self) -> u8 {
        match self {
            DType::F32 => 0,
            DType::F16 => 1,
            DType::I8 => 2,
            DType::U8 => 3,
            DType::Bytes => 4,
        }
    }

    /// The dtype stored as `code`, or `None` for a code format v1 does not define.
    pub fn from_code(code: u8) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.code() == code)
    }

    /// Lower-case name as written in `FORMAT.md` and by `describe`.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::Bytes => "bytes",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One validated tensor-table entry.
///
/// Invariants once a [`super::Bundle`] holds it: `offset` is an absolute file offset and a
/// multiple of [`ALIGNMENT`]; `offset + len <= file_len`; `len == product(shape) * dtype.size()`;
/// for [`DType::Bytes`] `shape == [len]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Name, unique in the file: 1 to 256 UTF-8 bytes without control characters.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Dimensions, at most [`MAX_RANK`].
    pub shape: Vec<usize>,
    /// Absolute offset of the first byte in the file.
    pub offset: usize,
    /// Length in bytes.
    pub len: usize,
}

impl TensorInfo {
    /// Number of elements (`product(shape)`, 1 for rank 0).
    pub fn n_elements(&self) -> usize {
        self.len / self.dtype.size()
    }
}

/// The fixed header, field by field, as stored (no validation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RawHeader {
    pub magic: [u8; 4],
    pub version: u32,
    pub flags: u32,
    pub header_len: u32,
    pub file_len: u64,
    pub metadata_offset: u64,
    pub metadata_len: u64,
    pub table_offset: u64,
    pub table_len: u64,
    pub tensor_count: u64,
    pub data_offset: u64,
    pub data_len: u64,
    pub data_checksum: u64,
    pub header_checksum: u64,
    pub reserved_zero: bool,
}

pub(crate) fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(*b.get(at..)?.first_chunk::<2>()?))
}

pub(crate) fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(*b.get(at..)?.first_chunk::<4>()?))
}

pub(crate) fn read_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(*b.get(at..)?.first_chunk::<8>()?))
}

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    if let Some(dst) = b.get_mut(at..).and_then(|s| s.get_mut(..v.len())) {
        dst.copy_from_slice(v);
    }
}

impl RawHeader {
    pub fn read(h: &[u8; HEADER_LEN]) -> RawHeader {
        let u32_at = |at| read_u32(h, at).unwrap_or(0);
        let u64_at = |at| read_u64(h, at).unwrap_or(0);
        RawHeader {
            magic: *h.first_chunk::<4>().unwrap_or(&[0; 4]),
            version: u32_at(AT_VERSION),
            flags: u32_at(AT_FLAGS),
            header_len: u32_at(AT_HEADER_LEN),
            file_len: u64_at(AT_FILE_LEN),
            metadata_offset: u64_at(AT_METADATA_OFFSET),
            metadata_len: u64_at(AT_METADATA_LEN),
            table_offset: u64_at(AT_TABLE_OFFSET),
            table_len: u64_at(AT_TABLE_LEN),
            tensor_count: u64_at(AT_TENSOR_COUNT),
            data_offset: u64_at(AT_DATA_OFFSET),
            data_len: u64_at(AT_DATA_LEN),
            data_checksum: u64_at(AT_DATA_CHECKSUM),
            header_checksum: u64_at(AT_HEADER_CHECKSUM),
            reserved_zero: h
                .get(AT_RESERVED..)
                .is_some_and(|r| r.iter().all(|&b| b == 0)),
        }
    }

    /// Writes every field except the two checksums into `out[..HEADER_LEN]`.
    pub fn write(&self, out: &mut [u8]) {
        put(out, 0, &self.magic);
        put(out, AT_VERSION, &self.version.to_le_bytes());
        put(out, AT_FLAGS, &self.flags.to_le_bytes());
        put(out, AT_HEADER_LEN, &self.header_len.to_le_bytes());
        for (at, v) in [
            (AT_FILE_LEN, self.file_len),
            (AT_METADATA_OFFSET, self.metadata_offset),
            (AT_METADATA_LEN, self.metadata_len),
            (AT_TABLE_OFFSET, self.table_offset),
            (AT_TABLE_LEN, self.table_len),
            (AT_TENSOR_COUNT, self.tensor_count),
            (AT_DATA_OFFSET, self.data_offset),
            (AT_DATA_LEN, self.data_len),
        ] {
            put(out, at, &v.to_le_bytes());
        }
    }
}

/// Header checksum: `xxh64(bytes[96..data_offset], seed = xxh64(bytes[0..88], 0))`, i.e. every
/// byte before the data section except the stored header checksum itself. `None` when
/// `data_offset` is outside `HEADER_LEN..=bytes.len()`.
pub(crate) fn header_checksum(bytes: &[u8], data_offset: usize) -> Option<u64> {
    let head = bytes.get(..AT_HEADER_CHECKSUM)?;
    let rest = bytes.get(AT_RESERVED..data_offset.max(HEADER_LEN))?;
    Some(xxh64(rest, xxh64(head, 0)))
}

/// Data checksum: `xxh64(bytes[data_offset..data_offset + data_len], 0)`.
pub(crate) fn data_checksum(bytes: &[u8], data_offset: usize, data_len: usize) -> Option<u64> {
    let end = data_offset.checked_add(data_len)?;
    Some(xxh64(bytes.get(data_offset..end)?, 0))
}

/// 32 hex digits: two seeded XXH64 of `bytes[0..data_offset]` (which holds both checksums).
pub(crate) fn content_id(bytes: &[u8], data_offset: usize) -> String {
    let prefix = bytes.get(..data_offset).unwrap_or(bytes);
    let [a, b] = CONTENT_ID_SEEDS.map(|seed| xxh64(prefix, seed));
    format!("{a:016x}{b:016x}")
}

/// `x` rounded up to a multiple of [`ALIGNMENT`], `None` on overflow.
pub(crate) fn align_up(x: usize) -> Option<usize> {
    Some(x.checked_add(ALIGNMENT - 1)? / ALIGNMENT * ALIGNMENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_codes_round_trip_and_unknown_codes_are_rejected() {
        for d in DType::ALL {
            assert_eq!(DType::from_code(d.code()), Some(d));
            assert_eq!(d.to_string(), d.name());
        }
        assert!((5..=u8::MAX).all(|c| DType::from_code(c).is_none()));
        assert_eq!(DType::ALL.map(DType::size), [4, 2, 1, 1, 1]);
    }

    #[test]
    fn align_up_rounds_and_detects_overflow() {
        assert_eq!(align_up(0), Some(0));
        assert_eq!(align_up(1), Some(64));
        assert_eq!(align_up(64), Some(64));
        assert_eq!(align_up(65), Some(128));
        assert_eq!(align_up(usize::MAX - 62), None);
    }

    #[test]
    fn header_fields_round_trip() {
        let h = RawHeader {
            magic: *b"TEST",
            version: 7,
            flags: 3,
            header_len: 128,
            file_len: 1,
            metadata_offset: 2,
            metadata_len: 3,
            table_offset: 4,
            table_len: 5,
            tensor_count: 6,
            data_offset: 7,
            data_len: u64::MAX,
            reserved_zero: true,
            ..RawHeader::default()
        };
        let mut out = [0u8; HEADER_LEN];
        h.write(&mut out);
        assert_eq!(RawHeader::read(&out), h);
        assert_eq!(header_checksum(&out, 1000), None);
        assert_eq!(data_checksum(&out, 100, usize::MAX), None);
    }
}
