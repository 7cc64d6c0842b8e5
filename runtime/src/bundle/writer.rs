//! Building bundle files.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::Path;

use half::f16;

use super::format::*;
use super::metadata::Metadata;
use super::reader::parse;
use crate::error::{Error, Result};

struct Pending {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    data: Vec<u8>,
}

/// Tensors waiting to be laid out, with the checks of [`BundleWriter::add_raw`]; shared by the
/// bundle and label-pack writers.
#[derive(Default)]
pub(crate) struct TensorList {
    tensors: Vec<Pending>,
    names: HashSet<String>,
}

/// Collects metadata and tensors and lays them out as a format-v1 bundle.
///
/// Tensors are stored in the order they were added, each at the next 64-byte boundary of the
/// data section. [`BundleWriter::to_bytes`] and [`BundleWriter::write`] only produce bundles that
/// [`super::Bundle`] accepts: they run the reader's full validation on the result.
pub struct BundleWriter {
    metadata: Metadata,
    tensors: TensorList,
}

fn werr(name: &str, msg: impl std::fmt::Display) -> Error {
    Error::Bundle(format!("bundle writer: tensor {name:?}: {msg}"))
}

impl BundleWriter {
    /// A writer with `metadata` and no tensors.
    pub fn new(metadata: Metadata) -> Self {
        BundleWriter {
            metadata,
            tensors: TensorList::default(),
        }
    }

    /// The metadata that will be written.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Mutable access to the metadata, e.g. to fill in provenance last.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }

    /// Adds a tensor from little-endian `data`. Fails on a repeated or invalid name (empty, over
    /// 256 bytes, control characters), rank over 8, `bytes` with rank other than 1, or
    /// `data.len() != product(shape) * dtype.size()`.
    pub fn add_raw(
        &mut self,
        name: &str,
        dtype: DType,
        shape: &[usize],
        data: Vec<u8>,
    ) -> Result<()> {
        self.tensors.add_raw(name, dtype, shape, data)
    }

    /// Adds an f32 tensor; `data.len()` must equal `product(shape)`.
    pub fn add_f32(&mut self, name: &str, shape: &[usize], data: &[f32]) -> Result<()> {
        let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.add_raw(name, DType::F32, shape, bytes)
    }

    /// Adds an f16 tensor, rounding each f32 to the nearest f16.
    pub fn add_f16(&mut self, name: &str, shape: &[usize], data: &[f32]) -> Result<()> {
        let bytes = data
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect();
        self.add_raw(name, DType::F16, shape, bytes)
    }

    /// Adds an f16 tensor from f16 values as they are.
    pub fn add_f16_values(&mut self, name: &str, shape: &[usize], data: &[f16]) -> Result<()> {
        let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.add_raw(name, DType::F16, shape, bytes)
    }

    /// Adds an i8 tensor.
    pub fn add_i8(&mut self, name: &str, shape: &[usize], data: &[i8]) -> Result<()> {
        let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.add_raw(name, DType::I8, shape, bytes)
    }

    /// Adds a u8 tensor.
    pub fn add_u8(&mut self, name: &str, shape: &[usize], data: &[u8]) -> Result<()> {
        self.add_raw(name, DType::U8, shape, data.to_vec())
    }

    /// Adds an opaque byte string (dtype `bytes`, shape `[data.len()]`).
    pub fn add_bytes(&mut self, name: &str, data: &[u8]) -> Result<()> {
        self.add_raw(name, DType::Bytes, &[data.len()], data.to_vec())
    }

    /// The complete bundle, validated exactly as [`super::Bundle::from_vec`] would.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let bytes = self.to_bytes_unchecked()?;
        parse(&bytes, "bundle writer output")?;
        Ok(bytes)
    }

    /// The complete bundle without the metadata/cross-reference validation (layout and
    /// checksums are still correct). For tests that need structurally valid but semantically
    /// wrong bundles.
    #[doc(hidden)]
    pub fn to_bytes_unchecked(&self) -> Result<Vec<u8>> {
        let meta = serde_json::to_vec(&self.metadata)
            .map_err(|e| Error::Bundle(format!("bundle writer: cannot serialise metadata: {e}")))?;
        self.tensors.assemble(MAGIC, FORMAT_VERSION, &meta)
    }

    /// Writes the bundle to `path` atomically: a temporary file in the same directory is written,
    /// flushed to disk and renamed over `path`, so readers never see a partial file and existing
    /// memory maps of an older file at `path` stay valid.
    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomically(path, &self.to_bytes()?)
    }
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
    /// See [`BundleWriter::add_raw`].
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reseal_never_panics_on_garbage() {
        for len in [0, 1, 87, 88, 95, 96, 127, 128, 200] {
            for fill in [0u8, 0x40, 0xff] {
                let mut b = vec![fill; len];
                reseal(&mut b);
            }
        }
    }

    #[test]
    fn reseal_restores_a_written_bundle() {
        let w = crate::bundle::sample_writer(2, 4).unwrap();
        let good = w.to_bytes().unwrap();
        let mut b = good.clone();
        b[80..96].fill(0);
        assert!(parse(&b, "t").is_err());
        reseal(&mut b);
        assert_eq!(b, good);
    }
}
