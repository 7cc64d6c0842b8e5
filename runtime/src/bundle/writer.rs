//! Building bundle files.

use std::path::Path;

use half::f16;

use super::metadata::Metadata;
use super::reader::parse;
use super::{FORMAT_VERSION, MAGIC};
use crate::container::{write_atomically, DType, TensorList};
use crate::error::{Error, Result};

/// Collects metadata and tensors and lays them out as a format-v1 bundle.
///
/// Tensors are stored in the order they were added, each at the next 64-byte boundary of the
/// data section. [`BundleWriter::to_bytes`] and [`BundleWriter::write`] only produce bundles that
/// [`super::Bundle`] accepts: they run the reader's full validation on the result.
pub struct BundleWriter {
    metadata: Metadata,
    tensors: TensorList,
}

impl BundleWriter {
    /// A writer with `metadata` and no tensors.
    pub fn new(metadata: Metadata) -> Self {
        BundleWriter {
            metadata,
            tensors: TensorList::default(),
        }
    }

    /// A writer holding `bundle`'s metadata and, in its order, every tensor whose name `keep`
    /// accepts (bytes copied as stored): the start of a bundle derived from another one.
    pub fn copy_of(bundle: &super::Bundle, keep: impl Fn(&str) -> bool) -> Result<Self> {
        let mut writer = BundleWriter::new(bundle.metadata().clone());
        for t in bundle.tensors().iter().filter(|t| keep(&t.name)) {
            writer.add_raw(&t.name, t.dtype, &t.shape, bundle.bytes(&t.name)?.to_vec())?;
        }
        Ok(writer)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::reseal;

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
