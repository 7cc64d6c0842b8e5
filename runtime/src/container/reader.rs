//! Reading a container: header, checksums, metadata JSON and tensor table (FORMAT.md
//! "Validation order", steps 1–7). What the metadata means is the concern of the kind on top
//! ([`crate::bundle`], [`crate::pack`]).

use std::collections::HashSet;
use std::fmt;

use super::format::*;
use super::{ChecksumSection, FormatProblem};
use crate::error::{Error, Result};

/// A [`FormatProblem::Layout`] error of the file `name`.
pub(crate) fn bad(name: &str, msg: impl fmt::Display) -> Error {
    bad_as(name, FormatProblem::Layout, msg)
}

/// An [`Error::Format`] of the file `name`: `problem` for programs, `msg` for people.
pub(crate) fn bad_as(name: &str, problem: FormatProblem, msg: impl fmt::Display) -> Error {
    Error::Format {
        problem,
        message: format!("{name}: {msg}"),
    }
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

/// A structurally valid container: header, checksums, metadata JSON and tensor table checked.
pub(crate) struct Container<M> {
    pub version: u32,
    pub metadata: M,
    pub tensors: Vec<TensorInfo>,
    pub content_id: String,
}

/// Steps 1–7 of FORMAT.md "Validation order" for a container of `kind`: everything except
/// the kind-specific cross-references. `name` prefixes every error message.
pub(crate) fn parse_container<M: serde::de::DeserializeOwned>(
    bytes: &[u8],
    name: &str,
    kind: &ContainerKind,
) -> Result<Container<M>> {
    let header = bytes.first_chunk::<HEADER_LEN>().ok_or_else(|| {
        bad_as(
            name,
            FormatProblem::Truncated,
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
        return Err(bad_as(
            name,
            FormatProblem::ChecksumMismatch {
                section: ChecksumSection::Header,
                stored,
                computed,
            },
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
        return Err(bad_as(
            name,
            FormatProblem::ChecksumMismatch {
                section: ChecksumSection::Data,
                stored,
                computed,
            },
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
        bad_as(
            name,
            FormatProblem::Metadata,
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
        return Err(bad_as(
            name,
            FormatProblem::BadMagic {
                found: h.magic,
                expected: kind.magic,
            },
            format!(
                "bad magic {:02x?} at byte 0, expected {:02x?} ({:?}): not a {}{hint}",
                h.magic,
                kind.magic,
                String::from_utf8_lossy(&kind.magic),
                kind.what
            ),
        ));
    }
    if h.version != kind.version {
        return Err(bad_as(
            name,
            FormatProblem::UnsupportedVersion {
                found: h.version,
                supported: kind.version,
            },
            format!(
                "unsupported structural version {} at byte {AT_VERSION}; this reader reads \
                 version {}",
                h.version, kind.version
            ),
        ));
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
        return Err(bad_as(
            name,
            FormatProblem::Truncated,
            format!(
                "truncated: file is {actual} bytes, the header (byte {AT_FILE_LEN}) declares {}",
                h.file_len
            ),
        ));
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
            None => Err(bad_as(
                self.bundle,
                FormatProblem::Truncated,
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
        let tshape = |m: String| {
            bad_as(
                name,
                FormatProblem::TensorShape {
                    tensor: t_name.clone(),
                },
                format!("tensor {t_name:?} (table entry {i}): {m}"),
            )
        };
        let dtype_at = c.abs();
        let code = c.u8("dtype")?;
        let dtype = DType::from_code(code)
            .ok_or_else(|| tshape(format!("unknown dtype code {code} at byte {dtype_at}")))?;
        let rank_at = c.abs();
        let rank = c.u8("rank")? as usize;
        if rank > MAX_RANK {
            return Err(tshape(format!(
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
                .ok_or_else(|| {
                    tshape(format!("dimension {d} = {dim} at byte {at} is too large"))
                })?;
            n_elements = n_elements.checked_mul(dim).ok_or_else(|| {
                tshape(format!(
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
            .ok_or_else(|| tshape(format!("byte size of shape {shape:?} x {dtype} overflows")))?;
        if expected != len {
            return Err(tshape(format!(
                "byte length {len} at byte {len_at} does not match shape {shape:?} x {dtype} \
                 ({expected} bytes)"
            )));
        }
        if dtype == DType::Bytes && rank != 1 {
            return Err(tshape(format!(
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
