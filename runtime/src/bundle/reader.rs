//! Opening and validating a bundle; zero-copy tensor views.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::path::Path;

use half::f16;

use super::format::*;
use super::metadata::{tensor_names, Metadata};
use crate::error::{Error, Result};

enum Storage {
    Mmap(memmap2::Mmap),
    Static(&'static [u8]),
    Owned {
        buf: Vec<u8>,
        start: usize,
        len: usize,
    },
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mmap(m) => m,
            Storage::Static(s) => s,
            Storage::Owned { buf, start, len } => start
                .checked_add(*len)
                .and_then(|end| buf.get(*start..end))
                .unwrap_or(&[]),
        }
    }
}

/// A validated, read-only bundle (format v1).
///
/// Every structural property listed in `runtime/FORMAT.md` has been checked when a constructor
/// returns `Ok`: header fields, section bounds, both checksums, the tensor table (bounds,
/// alignment, shapes, no duplicates or overlaps), the metadata JSON and its cross-references to
/// the tensors. Accessors therefore never read out of bounds; they return [`Error::Bundle`] for
/// unknown names or a dtype mismatch.
pub struct Bundle {
    name: String,
    storage: Storage,
    version: u32,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    index: HashMap<String, usize>,
    content_id: String,
}

impl fmt::Debug for Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bundle")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("file_len", &self.file_len())
            .field("content_id", &self.content_id)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

fn bad(name: &str, msg: impl fmt::Display) -> Error {
    Error::Bundle(format!("{name}: {msg}"))
}

impl Bundle {
    /// Memory-maps the file at `path` read-only and validates it.
    ///
    /// The file must not be modified or truncated while the bundle is alive (see FORMAT.md,
    /// "Memory mapping"); writers in this crate replace files by rename, never in place.
    pub fn open(path: &Path) -> Result<Bundle> {
        let file = File::open(path).map_err(|e| Error::io("open bundle", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat bundle", path, e))?
            .len();
        let name = path.display().to_string();
        if len < HEADER_LEN as u64 {
            return Err(bad(
                &name,
                format!("truncated: file is {len} bytes, the header alone needs {HEADER_LEN}"),
            ));
        }
        // SAFETY: the map is read-only and private to this process. Undefined behaviour is
        // possible only if another process modifies or truncates the file while it is mapped;
        // FORMAT.md states that bundles are immutable once written and BundleWriter::write
        // replaces files by rename, which leaves existing maps on the old inode.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| Error::io("memory-map bundle", path, e))?;
        Bundle::new(Storage::Mmap(map), name)
    }

    /// Validates bundle bytes that live for the whole program, reading them in place.
    ///
    /// `bytes` must start at a 64-byte-aligned address: wrap `include_bytes!` in a
    /// `#[repr(align(64))]` struct. A misaligned slice is an [`Error::Bundle`].
    pub fn from_static(bytes: &'static [u8], name: &str) -> Result<Bundle> {
        Bundle::new(Storage::Static(bytes), name.to_string())
    }

    /// Validates owned bundle bytes. The vector is kept as is when it starts 64-byte aligned,
    /// otherwise copied once into an aligned buffer.
    pub fn from_vec(bytes: Vec<u8>, name: &str) -> Result<Bundle> {
        let len = bytes.len();
        let storage = if bytes.as_ptr().addr().is_multiple_of(ALIGNMENT) {
            Storage::Owned {
                buf: bytes,
                start: 0,
                len,
            }
        } else {
            let mut buf = vec![0u8; len + (ALIGNMENT - 1)];
            let start = (ALIGNMENT - buf.as_ptr().addr() % ALIGNMENT) % ALIGNMENT;
            if let Some(dst) = buf.get_mut(start..start + len) {
                dst.copy_from_slice(&bytes);
            }
            Storage::Owned { buf, start, len }
        };
        Bundle::new(storage, name.to_string())
    }

    fn new(storage: Storage, name: String) -> Result<Bundle> {
        let bytes = storage.bytes();
        let parsed = parse(bytes, &name)?;
        let misalignment = bytes.as_ptr().addr() % ALIGNMENT;
        if misalignment != 0 {
            return Err(bad(
                &name,
                format!(
                    "bundle bytes start at an address {misalignment} bytes past a \
                     {ALIGNMENT}-byte boundary; wrap them in a #[repr(align(64))] struct"
                ),
            ));
        }
        let index = parsed
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Bundle {
            name,
            storage,
            version: parsed.version,
            metadata: parsed.metadata,
            tensors: parsed.tensors,
            index,
            content_id: parsed.content_id,
        })
    }

    /// The name given at construction (the path for [`Bundle::open`]); used in error messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Structural format version (always [`FORMAT_VERSION`] for a bundle that opened).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Length of the whole bundle in bytes.
    pub fn file_len(&self) -> usize {
        self.storage.bytes().len()
    }

    /// The whole bundle, byte for byte.
    pub fn as_bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    /// The parsed, cross-checked metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// All tensors, in table order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The table entry of tensor `name`; [`Error::Bundle`] if there is none.
    pub fn tensor_info(&self, name: &str) -> Result<&TensorInfo> {
        self.index
            .get(name)
            .and_then(|&i| self.tensors.get(i))
            .ok_or_else(|| bad(&self.name, format!("no tensor named {name:?}")))
    }

    /// Raw little-endian bytes of tensor `name`, whatever its dtype.
    pub fn bytes(&self, name: &str) -> Result<&[u8]> {
        let info = self.tensor_info(name)?;
        info.offset
            .checked_add(info.len)
            .and_then(|end| self.storage.bytes().get(info.offset..end))
            .ok_or_else(|| bad(&self.name, format!("tensor {name:?} lies outside the file")))
    }

    fn typed<T: Pod>(&self, name: &str, want: DType) -> Result<&[T]> {
        let info = self.tensor_info(name)?;
        if info.dtype != want {
            return Err(bad(
                &self.name,
                format!("tensor {name:?} is {}, not {want}", info.dtype),
            ));
        }
        if cfg!(target_endian = "big") {
            return Err(bad(
                &self.name,
                format!("zero-copy view of {name:?} needs a little-endian target; use to_f32_vec"),
            ));
        }
        cast_slice(self.bytes(name)?).ok_or_else(|| {
            bad(
                &self.name,
                format!("tensor {name:?} is not aligned for {want} in memory"),
            )
        })
    }

    /// Zero-copy view of an f16 tensor; [`Error::Bundle`] if its dtype is not f16.
    pub fn f16_view(&self, name: &str) -> Result<&[f16]> {
        self.typed(name, DType::F16)
    }

    /// Zero-copy view of an f32 tensor; [`Error::Bundle`] if its dtype is not f32.
    pub fn f32_view(&self, name: &str) -> Result<&[f32]> {
        self.typed(name, DType::F32)
    }

    /// Zero-copy view of an i8 tensor; [`Error::Bundle`] if its dtype is not i8.
    pub fn i8_view(&self, name: &str) -> Result<&[i8]> {
        self.typed(name, DType::I8)
    }

    /// Copy of an f16 or f32 tensor as f32 (works on any target endianness).
    pub fn to_f32_vec(&self, name: &str) -> Result<Vec<f32>> {
        let info = self.tensor_info(name)?;
        let bytes = self.bytes(name)?;
        match info.dtype {
            DType::F32 => Ok(bytes
                .as_chunks::<4>()
                .0
                .iter()
                .map(|c| f32::from_le_bytes(*c))
                .collect()),
            DType::F16 => Ok(bytes
                .as_chunks::<2>()
                .0
                .iter()
                .map(|c| f16::from_le_bytes(*c).to_f32())
                .collect()),
            other => Err(bad(
                &self.name,
                format!("tensor {name:?} is {other}; to_f32_vec reads f16 or f32 tensors"),
            )),
        }
    }

    /// 32 hex digits identifying this bundle's exact content (header, metadata, table and, through
    /// the stored data checksum, every tensor byte). Label packs record it to name their base
    /// bundle. Not cryptographic: it tells bundles apart, it does not authenticate them.
    pub fn content_id(&self) -> String {
        self.content_id.clone()
    }
}

/// Element types that may be viewed in place: every bit pattern is a valid value.
trait Pod: Copy {}
impl Pod for f32 {}
impl Pod for f16 {}
impl Pod for i8 {}

fn cast_slice<T: Pod>(bytes: &[u8]) -> Option<&[T]> {
    let size = std::mem::size_of::<T>();
    if cfg!(target_endian = "big")
        || !bytes.len().is_multiple_of(size)
        || !bytes
            .as_ptr()
            .addr()
            .is_multiple_of(std::mem::align_of::<T>())
    {
        return None;
    }
    // SAFETY: the pointer is non-null and aligned for T (checked above), the new slice covers
    // exactly the `bytes.len()` initialised bytes borrowed from `bytes` (length is a multiple of
    // size_of::<T>()), its lifetime is tied to that borrow, T is one of f32, f16, i8 for which
    // every bit pattern is valid, and the target is little-endian as the file is.
    Some(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), bytes.len() / size) })
}

pub(crate) struct Parsed {
    pub version: u32,
    pub metadata: Metadata,
    pub tensors: Vec<TensorInfo>,
    pub content_id: String,
}

struct Sections {
    metadata: (usize, usize),
    table: (usize, usize),
    data: (usize, usize),
}

/// Which file kind a container holds: bundles and label packs share the layout of FORMAT.md
/// (header, metadata JSON, tensor table, aligned data, checksums) under different magics.
pub(crate) struct ContainerKind {
    /// First four bytes.
    pub magic: [u8; 4],
    /// The one structural version this reader accepts.
    pub version: u32,
    /// What the file is called in messages, e.g. `"ner-edge bundle"`.
    pub what: &'static str,
    /// The magic of the sibling kind and a hint to print when a file of that kind is given.
    pub sibling: ([u8; 4], &'static str),
}

/// The bundle kind (`NERB`).
pub(crate) const BUNDLE_KIND: ContainerKind = ContainerKind {
    magic: MAGIC,
    version: FORMAT_VERSION,
    what: "ner-edge bundle",
    sibling: (
        *b"NERP",
        "it is a label pack: pass it with --pack, and the bundle with --bundle",
    ),
};

/// A structurally valid container: header, checksums, metadata JSON and tensor table checked.
pub(crate) struct Container<M> {
    pub version: u32,
    pub metadata: M,
    pub tensors: Vec<TensorInfo>,
    pub content_id: String,
}

/// Validates `bytes` as a complete bundle. `name` prefixes every error message.
pub(crate) fn parse(bytes: &[u8], name: &str) -> Result<Parsed> {
    let c: Container<Metadata> = parse_container(bytes, name, &BUNDLE_KIND)?;
    validate(&c.metadata, &c.tensors, bytes, name)?;
    Ok(Parsed {
        version: c.version,
        metadata: c.metadata,
        tensors: c.tensors,
        content_id: c.content_id,
    })
}

/// Steps 1–7 of FORMAT.md "Validation order" for a container of `kind`: everything except
/// the kind-specific cross-references. `name` prefixes every error message.
pub(crate) fn parse_container<M: serde::de::DeserializeOwned>(
    bytes: &[u8],
    name: &str,
    kind: &ContainerKind,
) -> Result<Container<M>> {
    let header = bytes.first_chunk::<HEADER_LEN>().ok_or_else(|| {
        bad(
            name,
            format!(
                "truncated: file is {} bytes, the header alone needs {HEADER_LEN}",
                bytes.len()
            ),
        )
    })?;
    let h = RawHeader::read(header);
    let sections = check_header(&h, bytes.len(), name, kind)?;
    let (data_offset, data_len) = sections.data;

    let stored = h.header_checksum;
    let computed = header_checksum(bytes, data_offset).unwrap_or(!stored);
    if stored != computed {
        return Err(bad(
            name,
            format!(
                "header checksum mismatch (bytes 0..{data_offset}, stored at byte \
                 {AT_HEADER_CHECKSUM}): stored {stored:016x}, computed {computed:016x}; the \
                 header, metadata or tensor table is corrupt"
            ),
        ));
    }
    let stored = h.data_checksum;
    let computed = data_checksum(bytes, data_offset, data_len).unwrap_or(!stored);
    if stored != computed {
        return Err(bad(
            name,
            format!(
                "data checksum mismatch (bytes {data_offset}..{}, stored at byte \
                 {AT_DATA_CHECKSUM}): stored {stored:016x}, computed {computed:016x}; tensor \
                 data is corrupt",
                data_offset + data_len
            ),
        ));
    }

    let (m_off, m_len) = sections.metadata;
    let m_bytes = bytes.get(m_off..m_off + m_len).unwrap_or(&[]);
    let metadata: M = serde_json::from_slice(m_bytes).map_err(|e| {
        bad(
            name,
            format!(
                "metadata JSON (bytes {m_off}..{}) does not parse: {e}",
                m_off + m_len
            ),
        )
    })?;

    let tensors = parse_table(bytes, &h, &sections, name)?;
    Ok(Container {
        version: h.version,
        metadata,
        tensors,
        content_id: content_id(bytes, data_offset),
    })
}

fn check_header(
    h: &RawHeader,
    actual_len: usize,
    name: &str,
    kind: &ContainerKind,
) -> Result<Sections> {
    let fail = |m: String| bad(name, m);
    if h.magic != kind.magic {
        let hint = if h.magic == kind.sibling.0 {
            format!("; {}", kind.sibling.1)
        } else {
            String::new()
        };
        return Err(fail(format!(
            "bad magic {:02x?} at byte 0, expected {:02x?} ({:?}): not a {}{hint}",
            h.magic,
            kind.magic,
            String::from_utf8_lossy(&kind.magic),
            kind.what
        )));
    }
    if h.version != kind.version {
        return Err(fail(format!(
            "unsupported structural version {} at byte {AT_VERSION}; this reader reads version \
             {}",
            h.version, kind.version
        )));
    }
    if h.flags != 0 {
        return Err(fail(format!(
            "unknown flags 0x{:08x} at byte {AT_FLAGS}; version 1 defines none",
            h.flags
        )));
    }
    if h.header_len as usize != HEADER_LEN {
        return Err(fail(format!(
            "header length {} at byte {AT_HEADER_LEN}, expected {HEADER_LEN}",
            h.header_len
        )));
    }
    if !h.reserved_zero {
        return Err(fail(format!(
            "reserved header bytes {AT_RESERVED}..{HEADER_LEN} are not zero"
        )));
    }
    let actual = actual_len as u64;
    if h.file_len > actual {
        return Err(fail(format!(
            "truncated: file is {actual} bytes, the header (byte {AT_FILE_LEN}) declares {}",
            h.file_len
        )));
    }
    if h.file_len < actual {
        return Err(fail(format!(
            "{} bytes of trailing garbage after the declared end of the file at byte {} \
             (header byte {AT_FILE_LEN})",
            actual - h.file_len,
            h.file_len
        )));
    }
    let section = |what: &str, at_off: usize, off: u64, len: u64, prev_end: u64, prev: &str| {
        let end = off.checked_add(len).ok_or_else(|| {
            fail(format!(
                "{what} offset {off} + length {len} (header bytes {at_off}, {}) overflows",
                at_off + 8
            ))
        })?;
        if off < prev_end {
            return Err(fail(format!(
                "{what} offset {off} (header byte {at_off}) overlaps the {prev} (ends at byte \
                 {prev_end})"
            )));
        }
        if end > actual {
            return Err(fail(format!(
                "{what} bytes {off}..{end} (header bytes {at_off}, {}) run past the end of the \
                 file ({actual} bytes)",
                at_off + 8
            )));
        }
        Ok(end)
    };
    let m_end = section(
        "metadata",
        AT_METADATA_OFFSET,
        h.metadata_offset,
        h.metadata_len,
        HEADER_LEN as u64,
        "header",
    )?;
    let t_end = section(
        "tensor table",
        AT_TABLE_OFFSET,
        h.table_offset,
        h.table_len,
        m_end,
        "metadata",
    )?;
    let d_end = section(
        "data section",
        AT_DATA_OFFSET,
        h.data_offset,
        h.data_len,
        t_end,
        "tensor table",
    )?;
    if !h.data_offset.is_multiple_of(ALIGNMENT as u64) {
        return Err(fail(format!(
            "data section offset {} (header byte {AT_DATA_OFFSET}) is not a multiple of \
             {ALIGNMENT}",
            h.data_offset
        )));
    }
    if d_end != actual {
        return Err(fail(format!(
            "data section ends at byte {d_end} (header bytes {AT_DATA_OFFSET}, {AT_DATA_LEN}) but \
             the file ends at byte {actual}"
        )));
    }
    let us = |v: u64| v as usize;
    Ok(Sections {
        metadata: (us(h.metadata_offset), us(h.metadata_len)),
        table: (us(h.table_offset), us(h.table_len)),
        data: (us(h.data_offset), us(h.data_len)),
    })
}

struct Cursor<'a> {
    table: &'a [u8],
    base: usize,
    pos: usize,
    bundle: &'a str,
    entry: usize,
    entry_at: usize,
}

impl<'a> Cursor<'a> {
    fn abs(&self) -> usize {
        self.base + self.pos
    }

    fn remaining(&self) -> usize {
        self.table.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let table = self.table;
        match table.get(self.pos..).and_then(|s| s.get(..n)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(bad(
                self.bundle,
                format!(
                    "tensor table entry {} (starting at byte {}) is truncated: {what} at byte {} \
                     needs {n} bytes, {} left in the table",
                    self.entry,
                    self.entry_at,
                    self.abs(),
                    self.remaining()
                ),
            )),
        }
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?.first().copied().unwrap_or(0))
    }

    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(read_u16(self.take(2, what)?, 0).unwrap_or(0))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(read_u64(self.take(8, what)?, 0).unwrap_or(0))
    }
}

fn parse_table(
    bytes: &[u8],
    h: &RawHeader,
    sections: &Sections,
    name: &str,
) -> Result<Vec<TensorInfo>> {
    let (t_off, t_len) = sections.table;
    let (d_off, d_len) = sections.data;
    let max_count = (t_len / MIN_ENTRY_LEN) as u64;
    if h.tensor_count > max_count {
        return Err(bad(
            name,
            format!(
                "tensor count {} (header byte {AT_TENSOR_COUNT}) cannot fit in the {t_len}-byte \
                 tensor table (at most {max_count} entries)",
                h.tensor_count
            ),
        ));
    }
    let count = h.tensor_count as usize;
    let mut c = Cursor {
        table: bytes.get(t_off..t_off + t_len).unwrap_or(&[]),
        base: t_off,
        pos: 0,
        bundle: name,
        entry: 0,
        entry_at: t_off,
    };
    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(count);
    let mut seen: HashSet<String> = HashSet::with_capacity(count);
    for i in 0..count {
        c.entry = i;
        c.entry_at = c.abs();
        let name_len_at = c.abs();
        let name_len = c.u16("name length")? as usize;
        if name_len == 0 || name_len > MAX_TENSOR_NAME_LEN {
            return Err(bad(
                name,
                format!(
                    "tensor table entry {i}: name length {name_len} at byte {name_len_at} is not \
                     in 1..={MAX_TENSOR_NAME_LEN}"
                ),
            ));
        }
        let name_at = c.abs();
        let raw_name = c.take(name_len, "name")?;
        let t_name = std::str::from_utf8(raw_name)
            .ok()
            .filter(|s| !s.chars().any(char::is_control))
            .ok_or_else(|| {
                bad(
                    name,
                    format!(
                        "tensor table entry {i}: name at byte {name_at} is not UTF-8 without \
                         control characters"
                    ),
                )
            })?
            .to_string();
        let tbad = |m: String| bad(name, format!("tensor {t_name:?} (table entry {i}): {m}"));
        let dtype_at = c.abs();
        let code = c.u8("dtype")?;
        let dtype = DType::from_code(code)
            .ok_or_else(|| tbad(format!("unknown dtype code {code} at byte {dtype_at}")))?;
        let rank_at = c.abs();
        let rank = c.u8("rank")? as usize;
        if rank > MAX_RANK {
            return Err(tbad(format!(
                "rank {rank} at byte {rank_at} exceeds {MAX_RANK}"
            )));
        }
        let mut shape = Vec::with_capacity(rank);
        let mut n_elements: usize = 1;
        for d in 0..rank {
            let at = c.abs();
            let dim = c.u64("dimension")?;
            let dim = usize::try_from(dim)
                .ok()
                .filter(|&v| v <= isize::MAX as usize)
                .ok_or_else(|| tbad(format!("dimension {d} = {dim} at byte {at} is too large")))?;
            n_elements = n_elements.checked_mul(dim).ok_or_else(|| {
                tbad(format!(
                    "element count overflows at dimension {d} (byte {at})"
                ))
            })?;
            shape.push(dim);
        }
        let offset_at = c.abs();
        let rel = c.u64("offset")?;
        let len_at = c.abs();
        let len = c.u64("byte length")?;
        let end = rel.checked_add(len).ok_or_else(|| {
            tbad(format!(
                "offset {rel} (byte {offset_at}) + length {len} (byte {len_at}) overflows"
            ))
        })?;
        if end > d_len as u64 {
            return Err(tbad(format!(
                "data {rel}..{end} relative to the data section (offset at byte {offset_at}, \
                 length at byte {len_at}) runs past its end ({d_len} bytes)"
            )));
        }
        let (rel, len) = (rel as usize, len as usize);
        if !rel.is_multiple_of(ALIGNMENT) {
            return Err(tbad(format!(
                "offset {rel} at byte {offset_at} is not a multiple of {ALIGNMENT}"
            )));
        }
        let expected = n_elements
            .checked_mul(dtype.size())
            .ok_or_else(|| tbad(format!("byte size of shape {shape:?} x {dtype} overflows")))?;
        if expected != len {
            return Err(tbad(format!(
                "byte length {len} at byte {len_at} does not match shape {shape:?} x {dtype} \
                 ({expected} bytes)"
            )));
        }
        if dtype == DType::Bytes && rank != 1 {
            return Err(tbad(format!(
                "dtype bytes needs rank 1 (shape [len]), found rank {rank}"
            )));
        }
        if !seen.insert(t_name.clone()) {
            return Err(tbad("duplicate tensor name".to_string()));
        }
        tensors.push(TensorInfo {
            name: t_name,
            dtype,
            shape,
            offset: d_off + rel,
            len,
        });
    }
    if c.remaining() != 0 {
        return Err(bad(
            name,
            format!(
                "{} unused bytes at the end of the tensor table (bytes {}..{})",
                c.remaining(),
                c.abs(),
                t_off + t_len
            ),
        ));
    }
    let mut order: Vec<&TensorInfo> = tensors.iter().filter(|t| t.len > 0).collect();
    order.sort_by_key(|t| t.offset);
    for pair in order.windows(2) {
        if let [a, b] = pair {
            if a.offset + a.len > b.offset {
                return Err(bad(
                    name,
                    format!(
                        "tensors {:?} (bytes {}..{}) and {:?} (bytes {}..{}) overlap",
                        a.name,
                        a.offset,
                        a.offset + a.len,
                        b.name,
                        b.offset,
                        b.offset + b.len
                    ),
                ));
            }
        }
    }
    Ok(tensors)
}

fn validate(meta: &Metadata, tensors: &[TensorInfo], bytes: &[u8], name: &str) -> Result<()> {
    let fail = |m: String| bad(name, m);
    let find = |t: &str| {
        tensors.iter().find(|x| x.name == t).ok_or_else(|| {
            fail(format!(
                "required tensor {t:?} is missing (format v1, FORMAT.md §Tensors)"
            ))
        })
    };
    let onnx = find(tensor_names::ENCODER_ONNX)?;
    let vocab = find(tensor_names::VOCAB)?;
    let protos = find(tensor_names::PROTOTYPES)?;
    let memory = find(tensor_names::LABEL_MEMORY)?;
    for t in [onnx, vocab] {
        if t.dtype != DType::Bytes {
            return Err(fail(format!(
                "tensor {:?} must have dtype bytes, found {}",
                t.name, t.dtype
            )));
        }
    }
    for t in [protos, memory] {
        if !matches!(t.dtype, DType::F16 | DType::F32) {
            return Err(fail(format!(
                "tensor {:?} must be f16 or f32, found {}",
                t.name, t.dtype
            )));
        }
    }

    let enc = &meta.encoder;
    if enc.type_dim == 0 {
        return Err(fail(
            "metadata field encoder.type_dim must be at least 1".to_string(),
        ));
    }
    if !matches!(enc.weight_dtype.as_str(), "f16" | "f32" | "int8" | "mixed") {
        return Err(fail(format!(
            "metadata field encoder.weight_dtype = {:?}, expected \"f16\", \"f32\", \"int8\" or \"mixed\"",
            enc.weight_dtype
        )));
    }
    if meta.tokenizer.kind != "wordpiece" {
        return Err(fail(format!(
            "metadata field tokenizer.kind = {:?}; format v1 defines only \"wordpiece\"",
            meta.tokenizer.kind
        )));
    }

    let vocab_text = bytes
        .get(vocab.offset..vocab.offset + vocab.len)
        .and_then(|b| std::str::from_utf8(b).ok())
        .ok_or_else(|| {
            fail(format!(
                "tensor {:?} (bytes {}..{}) is not valid UTF-8",
                vocab.name,
                vocab.offset,
                vocab.offset + vocab.len
            ))
        })?;
    let tokens: Vec<&str> = vocab_text.lines().collect();
    if tokens.len() != enc.vocab_size {
        return Err(fail(format!(
            "tensor {:?} has {} lines but metadata field encoder.vocab_size = {}",
            vocab.name,
            tokens.len(),
            enc.vocab_size
        )));
    }
    let tk = &meta.tokenizer;
    for (field, tok) in [
        ("unk_token", &tk.unk_token),
        ("cls_token", &tk.cls_token),
        ("sep_token", &tk.sep_token),
        ("pad_token", &tk.pad_token),
    ] {
        if !tokens.contains(&tok.as_str()) {
            return Err(fail(format!(
                "metadata field tokenizer.{field} = {tok:?} is not in tensor {:?}",
                vocab.name
            )));
        }
    }

    let types = &meta.labels.types;
    let want = [types.len(), enc.type_dim];
    if protos.shape != want {
        return Err(fail(format!(
            "tensor {:?} has shape {:?}, expected [labels.types.len(), encoder.type_dim] = {want:?}",
            protos.name, protos.shape
        )));
    }
    let mut rows_used = HashSet::new();
    let mut names = HashSet::new();
    for (i, t) in types.iter().enumerate() {
        if t.name.is_empty() || !names.insert(t.name.as_str()) {
            return Err(fail(format!(
                "metadata field labels.types[{i}].name = {:?} is empty or repeated",
                t.name
            )));
        }
        if t.prototype_row >= types.len() {
            return Err(fail(format!(
                "metadata field labels.types[{i}].prototype_row = {} is out of range: tensor {:?} \
                 has {} rows",
                t.prototype_row,
                protos.name,
                types.len()
            )));
        }
        if !rows_used.insert(t.prototype_row) {
            return Err(fail(format!(
                "metadata field labels.types[{i}].prototype_row = {} is used by another type",
                t.prototype_row
            )));
        }
    }
    for (i, a) in meta.labels.default_active.iter().enumerate() {
        if !names.contains(a.as_str()) {
            return Err(fail(format!(
                "metadata field labels.default_active[{i}] = {a:?} is not in labels.types"
            )));
        }
    }

    let cdt = &meta.transitions;
    if !cdt
        .matrix
        .iter()
        .flatten()
        .chain(&cdt.start)
        .chain(&cdt.end)
        .all(|v| v.is_finite())
    {
        return Err(fail(
            "metadata field transitions holds a non-finite number".to_string(),
        ));
    }

    if memory.shape.len() != 2 || memory.shape.get(1) != Some(&enc.type_dim) {
        return Err(fail(format!(
            "tensor {:?} has shape {:?}, expected [rows, encoder.type_dim = {}]",
            memory.name, memory.shape, enc.type_dim
        )));
    }
    let mem_rows = memory.shape.first().copied().unwrap_or(0);
    let layout = &meta.label_memory;
    let mut spans: Vec<(usize, usize, usize)> = Vec::with_capacity(layout.slots.len());
    for (i, s) in layout.slots.iter().enumerate() {
        let end = s
            .first_row
            .checked_add(s.rows)
            .filter(|&e| e <= mem_rows)
            .ok_or_else(|| {
                fail(format!(
                "metadata field label_memory.slots[{i}] rows {}..+{} run past the {mem_rows} rows \
                 of tensor {:?}",
                s.first_row, s.rows, memory.name
            ))
            })?;
        if s.rows > layout.capacity {
            return Err(fail(format!(
                "metadata field label_memory.slots[{i}].rows = {} exceeds label_memory.capacity = \
                 {}",
                s.rows, layout.capacity
            )));
        }
        if s.type_name.is_empty() {
            return Err(fail(format!(
                "metadata field label_memory.slots[{i}].type_name is empty"
            )));
        }
        if s.rows > 0 {
            spans.push((s.first_row, end, i));
        }
    }
    spans.sort_unstable();
    for pair in spans.windows(2) {
        if let [(_, a_end, a), (b_start, _, b)] = pair {
            if a_end > b_start {
                return Err(fail(format!(
                    "metadata fields label_memory.slots[{a}] and label_memory.slots[{b}] overlap \
                     in tensor {:?}",
                    memory.name
                )));
            }
        }
    }
    validate_prior(tensors, enc.type_dim, name)?;
    validate_other(tensors, enc.type_dim, name)
}

/// The optional "other" prototypes: f16/f32 `[2, d]` (`d` = `encoder.type_dim`).
fn validate_other(tensors: &[TensorInfo], d: usize, name: &str) -> Result<()> {
    let Some(info) = tensors
        .iter()
        .find(|t| t.name == tensor_names::OTHER_PROTOTYPES)
    else {
        return Ok(());
    };
    if !matches!(info.dtype, DType::F16 | DType::F32) || info.shape != [2, d] {
        return Err(bad(
            name,
            format!(
                "tensor {:?} is {} {:?}, expected f16 or f32 [2, {d}] (encoder.type_dim = {d})",
                tensor_names::OTHER_PROTOTYPES,
                info.dtype,
                info.shape
            ),
        ));
    }
    Ok(())
}

/// The optional prior MLP tensors: none, or all four with f16/f32 dtype and the shapes of
/// FORMAT.md (`d` = `encoder.type_dim`).
fn validate_prior(tensors: &[TensorInfo], d: usize, name: &str) -> Result<()> {
    let want = [
        (tensor_names::PRIOR_FC1_WEIGHT, [2 * d, d].to_vec()),
        (tensor_names::PRIOR_FC1_BIAS, [d].to_vec()),
        (tensor_names::PRIOR_FC2_WEIGHT, [d, d].to_vec()),
        (tensor_names::PRIOR_FC2_BIAS, [d].to_vec()),
    ];
    let found: Vec<Option<&TensorInfo>> = want
        .iter()
        .map(|(n, _)| tensors.iter().find(|t| t.name == *n))
        .collect();
    let present = found.iter().filter(|f| f.is_some()).count();
    if present == 0 {
        return Ok(());
    }
    for ((tensor, shape), info) in want.iter().zip(&found) {
        let Some(info) = info else {
            return Err(bad(
                name,
                format!(
                    "prior MLP tensor {tensor:?} is missing: the four prior.* tensors are \
                     optional but come together ({present} of 4 present)"
                ),
            ));
        };
        if !matches!(info.dtype, DType::F16 | DType::F32) || &info.shape != shape {
            return Err(bad(
                name,
                format!(
                    "tensor {tensor:?} is {} {:?}, expected f16 or f32 {shape:?} \
                     (encoder.type_dim = {d})",
                    info.dtype, info.shape
                ),
            ));
        }
    }
    Ok(())
}
