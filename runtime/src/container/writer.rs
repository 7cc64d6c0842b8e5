//! Writing a container: tensors laid out at aligned offsets behind the header, the metadata
//! JSON and the tensor table, with both checksums (FORMAT.md). The bundle and label-pack
//! writers put their metadata on top.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::Path;

use super::format::*;
use crate::error::{Error, Result};

struct Pending {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    data: Vec<u8>,
}

/// Tensors waiting to be laid out, with the checks of [`crate::bundle::BundleWriter::add_raw`]; shared by the
/// bundle and label-pack writers.
#[derive(Default)]
pub(crate) struct TensorList {
    tensors: Vec<Pending>,
    names: HashSet<String>,
}

fn werr(name: &str, msg: impl std::fmt::Display) -> Error {
    Error::Bundle(format!("bundle writer: tensor {name:?}: {msg}"))
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory is written,
/// flushed to disk and renamed over `path`.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::Usage(format!("output path {} has no file name", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = fs::File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .map_err(|e| Error::io("write", &tmp, e))
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| Error::io("rename to", path, e)));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

impl TensorList {
    /// See [`crate::bundle::BundleWriter::add_raw`].
    pub(crate) fn add_raw(
        &mut self,
        name: &str,
        dtype: DType,
        shape: &[usize],
        data: Vec<u8>,
    ) -> Result<()> {
        if name.is_empty() || name.len() > MAX_TENSOR_NAME_LEN || name.chars().any(char::is_control)
        {
            return Err(werr(
                name,
                format!(
                    "name must be 1..={MAX_TENSOR_NAME_LEN} UTF-8 bytes without control characters"
                ),
            ));
        }
        if self.names.contains(name) {
            return Err(werr(name, "added twice"));
        }
        if shape.len() > MAX_RANK {
            return Err(werr(
                name,
                format!("rank {} exceeds {MAX_RANK}", shape.len()),
            ));
        }
        if dtype == DType::Bytes && shape.len() != 1 {
            return Err(werr(name, "dtype bytes needs shape [len]"));
        }
        let expected = shape
            .iter()
            .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| werr(name, format!("byte size of shape {shape:?} overflows")))?;
        if expected != data.len() {
            return Err(werr(
                name,
                format!(
                    "shape {shape:?} x {dtype} needs {expected} bytes, got {}",
                    data.len()
                ),
            ));
        }
        self.names.insert(name.to_string());
        self.tensors.push(Pending {
            name: name.to_string(),
            dtype,
            shape: shape.to_vec(),
            data,
        });
        Ok(())
    }

    /// Adds an f32 tensor; `data.len()` must equal `product(shape)`.
    pub(crate) fn add_f32(&mut self, name: &str, shape: &[usize], data: &[f32]) -> Result<()> {
        let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.add_raw(name, DType::F32, shape, bytes)
    }

    /// The complete container: `magic`, `version`, the metadata JSON `meta` and the tensors in
    /// the canonical layout of FORMAT.md, with both checksums. No semantic validation.
    pub(crate) fn assemble(&self, magic: [u8; 4], version: u32, meta: &[u8]) -> Result<Vec<u8>> {
        let overflow = || Error::Bundle("bundle writer: file size overflows usize".to_string());
        let mut table = Vec::new();
        let mut placed = Vec::with_capacity(self.tensors.len());
        let mut data_len = 0usize;
        for t in &self.tensors {
            let offset = align_up(data_len).ok_or_else(overflow)?;
            data_len = offset.checked_add(t.data.len()).ok_or_else(overflow)?;
            table.extend_from_slice(&(t.name.len() as u16).to_le_bytes());
            table.extend_from_slice(t.name.as_bytes());
            table.push(t.dtype.code());
            table.push(t.shape.len() as u8);
            for &d in &t.shape {
                table.extend_from_slice(&(d as u64).to_le_bytes());
            }
            table.extend_from_slice(&(offset as u64).to_le_bytes());
            table.extend_from_slice(&(t.data.len() as u64).to_le_bytes());
            placed.push(offset);
        }
        let meta_off = HEADER_LEN;
        let table_off = meta_off.checked_add(meta.len()).ok_or_else(overflow)?;
        let table_end = table_off.checked_add(table.len()).ok_or_else(overflow)?;
        let data_off = align_up(table_end).ok_or_else(overflow)?;
        let file_len = data_off.checked_add(data_len).ok_or_else(overflow)?;

        let mut out = vec![0u8; file_len];
        let header = RawHeader {
            magic,
            version,
            flags: 0,
            header_len: HEADER_LEN as u32,
            file_len: file_len as u64,
            metadata_offset: meta_off as u64,
            metadata_len: meta.len() as u64,
            table_offset: table_off as u64,
            table_len: table.len() as u64,
            tensor_count: self.tensors.len() as u64,
            data_offset: data_off as u64,
            data_len: data_len as u64,
            ..RawHeader::default()
        };
        header.write(&mut out);
        copy_into(&mut out, meta_off, meta);
        copy_into(&mut out, table_off, &table);
        for (t, &offset) in self.tensors.iter().zip(&placed) {
            copy_into(&mut out, data_off + offset, &t.data);
        }
        reseal(&mut out);
        Ok(out)
    }
}

fn copy_into(out: &mut [u8], at: usize, src: &[u8]) {
    if let Some(dst) = at
        .checked_add(src.len())
        .and_then(|end| out.get_mut(at..end))
    {
        dst.copy_from_slice(src);
    }
}

/// Recomputes and stores both checksums of `bytes` from the data offset and length found in its
/// header, leaving everything else as it is. Fields that point outside `bytes` leave the
/// corresponding checksum untouched. Never panics. Used by the writer and by fuzz tests that
/// mutate a bundle and need the structural checks behind the checksums to run.
#[doc(hidden)]
pub fn reseal(bytes: &mut [u8]) {
    let field = |at| read_u64(bytes, at).and_then(|v| usize::try_from(v).ok());
    let (Some(data_off), Some(data_len)) = (field(AT_DATA_OFFSET), field(AT_DATA_LEN)) else {
        return;
    };
    if let Some(sum) = data_checksum(bytes, data_off, data_len) {
        copy_into(bytes, AT_DATA_CHECKSUM, &sum.to_le_bytes());
    }
    if let Some(sum) = header_checksum(bytes, data_off) {
        copy_into(bytes, AT_HEADER_CHECKSUM, &sum.to_le_bytes());
    }
}
