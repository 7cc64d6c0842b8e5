//! Minimal safetensors reader: 8-byte little-endian header length, JSON header, raw data.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use half::f16;
use serde::Deserialize;

/// Description of one tensor in a safetensors header.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct TensorInfo {
    /// safetensors dtype string (`F32`, `F16`, `I64`, ...).
    pub dtype: String,
    /// Dimensions, outermost first (row-major); empty for a scalar.
    pub shape: Vec<usize>,
    /// `[begin, end)` byte range relative to the start of the data section.
    pub data_offsets: [usize; 2],
}

/// A fully read safetensors file with a validated header: every tensor's byte range lies inside
/// the data section and matches its dtype and shape.
#[derive(Clone, Debug)]
pub struct SafeTensors {
    bytes: Vec<u8>,
    data_start: usize,
    tensors: BTreeMap<String, TensorInfo>,
}

fn dtype_size(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" => 8,
        _ => return None,
    })
}

impl SafeTensors {
    /// Reads and validates the file at `path`.
    pub fn read(path: &Path) -> Result<SafeTensors> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        SafeTensors::parse(bytes).with_context(|| format!("parsing {}", path.display()))
    }

    /// Validates `bytes` as a safetensors file.
    pub fn parse(bytes: Vec<u8>) -> Result<SafeTensors> {
        ensure!(
            bytes.len() >= 8,
            "file too short for a safetensors header ({} bytes)",
            bytes.len()
        );
        let mut len = [0u8; 8];
        len.copy_from_slice(&bytes[..8]);
        let header_len = u64::from_le_bytes(len);
        let data_start = usize::try_from(header_len)
            .ok()
            .and_then(|h| h.checked_add(8))
            .filter(|&s| s <= bytes.len())
            .with_context(|| {
                format!(
                    "header length {header_len} exceeds file size {}",
                    bytes.len()
                )
            })?;
        let header: BTreeMap<String, serde_json::Value> =
            serde_json::from_slice(&bytes[8..data_start])
                .context("safetensors header is not a JSON object")?;
        let data_len = bytes.len() - data_start;
        let mut tensors = BTreeMap::new();
        for (name, value) in header {
            if name == "__metadata__" {
                continue;
            }
            let info: TensorInfo = serde_json::from_value(value)
                .with_context(|| format!("tensor `{name}`: malformed header entry"))?;
            let [begin, end] = info.data_offsets;
            ensure!(
                begin <= end && end <= data_len,
                "tensor `{name}`: data offsets [{begin}, {end}) outside the data section of {data_len} bytes"
            );
            if let Some(size) = dtype_size(&info.dtype) {
                let bytes_needed = info
                    .shape
                    .iter()
                    .try_fold(size, |acc, &d| acc.checked_mul(d))
                    .with_context(|| {
                        format!("tensor `{name}`: shape {:?} overflows", info.shape)
                    })?;
                ensure!(
                    bytes_needed == end - begin,
                    "tensor `{name}`: {} {:?} needs {bytes_needed} bytes, header gives {}",
                    info.dtype,
                    info.shape,
                    end - begin
                );
            }
            tensors.insert(name, info);
        }
        Ok(SafeTensors {
            bytes,
            data_start,
            tensors,
        })
    }

    /// Header entry of tensor `name`, if present.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }

    /// Names of all tensors, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Tensor `name` as f32 values, checking that it is stored as `F32` or `F16` (widened
    /// exactly) with exactly `shape`.
    pub fn f32_tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let info = self
            .tensors
            .get(name)
            .with_context(|| format!("tensor `{name}` is missing"))?;
        ensure!(
            info.shape == shape,
            "tensor `{name}`: expected shape {shape:?}, found {:?}",
            info.shape
        );
        let raw = self.raw(info);
        match info.dtype.as_str() {
            "F32" => Ok(raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()),
            "F16" => Ok(raw
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect()),
            other => bail!("tensor `{name}`: expected dtype F32 or F16, found {other}"),
        }
    }

    fn raw(&self, info: &TensorInfo) -> &[u8] {
        let [begin, end] = info.data_offsets;
        &self.bytes[self.data_start + begin..self.data_start + end]
    }

    /// This file with every `F32` tensor stored as `F16` (round to nearest; other dtypes and
    /// `__metadata__`-free header otherwise unchanged): half the bytes of an f32 checkpoint,
    /// which [`SafeTensors::f32_tensor`] reads back widened. Fails when a value is finite in
    /// f32 but out of f16's range, naming the tensor.
    pub fn to_f16_bytes(&self) -> Result<Vec<u8>> {
        let mut header = serde_json::Map::new();
        let mut data = Vec::new();
        for (name, info) in &self.tensors {
            let raw = self.raw(info);
            let begin = data.len();
            let dtype = if info.dtype == "F32" {
                for b in raw.chunks_exact(4) {
                    let x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    let h = f16::from_f32(x);
                    ensure!(
                        h.is_finite() || !x.is_finite(),
                        "tensor `{name}`: value {x} is out of the f16 range"
                    );
                    data.extend_from_slice(&h.to_le_bytes());
                }
                "F16"
            } else {
                data.extend_from_slice(raw);
                info.dtype.as_str()
            };
            header.insert(
                name.clone(),
                serde_json::json!({
                    "dtype": dtype,
                    "shape": info.shape,
                    "data_offsets": [begin, data.len()],
                }),
            );
        }
        file_bytes(&header, &data)
    }
}

/// A safetensors file: the 8-byte header length, the JSON header padded with spaces to a
/// multiple of 8 bytes, then the data.
fn file_bytes(header: &serde_json::Map<String, serde_json::Value>, data: &[u8]) -> Result<Vec<u8>> {
    let mut text = serde_json::to_vec(header)?;
    while (8 + text.len()) % 8 != 0 {
        text.push(b' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(data);
    Ok(out)
}

/// An f32 tensor to write: name, shape, values (row-major).
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// A safetensors file of f32 tensors `(name, shape, values)`, in the given order. Fails when a
/// tensor's value count differs from its shape's product, naming it.
pub fn f32_safetensors(tensors: &[NamedTensor]) -> Result<Vec<u8>> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape, values) in tensors {
        let count: usize = shape.iter().product();
        ensure!(
            count == values.len(),
            "tensor `{name}`: {} values for shape {shape:?}",
            values.len()
        );
        let begin = data.len();
        for v in values {
            data.extend_from_slice(&v.to_le_bytes());
        }
        header.insert(
            name.clone(),
            serde_json::json!({
                "dtype": "F32",
                "shape": shape,
                "data_offsets": [begin, data.len()],
            }),
        );
    }
    file_bytes(&header, &data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn an_f16_copy_reads_back_as_the_rounded_values() {
        let values = [1.0f32, -2.5, 3.3333, 1e-3, -65504.0, 0.1];
        let data: Vec<u8> = values.iter().flat_map(|f| f.to_le_bytes()).collect();
        let header = r#"{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"i":{"dtype":"I64","shape":[1],"data_offsets":[24,32]}}"#;
        let mut bytes = data.clone();
        bytes.extend_from_slice(&7i64.to_le_bytes());
        let st = SafeTensors::parse(file(header, &bytes)).unwrap();
        let half = SafeTensors::parse(st.to_f16_bytes().unwrap()).unwrap();
        assert_eq!(half.info("w").unwrap().dtype, "F16");
        assert_eq!(half.info("i").unwrap().dtype, "I64");
        let back = half.f32_tensor("w", &[2, 3]).unwrap();
        for (a, b) in values.iter().zip(&back) {
            assert_eq!(*b, f16::from_f32(*a).to_f32());
            assert!((a - b).abs() <= 1e-3 * a.abs().max(1e-3), "{a} vs {b}");
        }
        let too_big = file(
            r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
            &1e6f32.to_le_bytes(),
        );
        let e = SafeTensors::parse(too_big)
            .unwrap()
            .to_f16_bytes()
            .unwrap_err();
        assert!(e.to_string().contains("out of the f16 range"), "{e}");
    }

    #[test]
    fn written_f32_files_read_back() {
        let bytes = f32_safetensors(&[
            ("a".into(), vec![2, 2], vec![1.0, -2.0, 3.5, 0.25]),
            ("b".into(), vec![1], vec![7.0]),
        ])
        .unwrap();
        let st = SafeTensors::parse(bytes).unwrap();
        assert_eq!(st.f32_tensor("a", &[2, 2]).unwrap(), [1.0, -2.0, 3.5, 0.25]);
        assert_eq!(st.f32_tensor("b", &[1]).unwrap(), [7.0]);
        assert!(f32_safetensors(&[("c".into(), vec![3], vec![1.0])]).is_err());
    }

    #[test]
    fn reads_f32() {
        let data: Vec<u8> = [1.0f32, -2.5, 3.0, 0.5]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        let st = SafeTensors::parse(file(
            r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#,
            &data,
        ))
        .unwrap();
        assert_eq!(
            st.f32_tensor("a", &[2, 2]).unwrap(),
            vec![1.0, -2.5, 3.0, 0.5]
        );
        let err = st.f32_tensor("a", &[4]).unwrap_err().to_string();
        assert!(err.contains("`a`") && err.contains("shape"), "{err}");
        assert!(st
            .f32_tensor("b", &[1])
            .unwrap_err()
            .to_string()
            .contains("`b`"));
    }

    #[test]
    fn rejects_hostile_headers() {
        assert!(SafeTensors::parse(vec![1, 2, 3]).is_err());
        assert!(SafeTensors::parse(u64::MAX.to_le_bytes().to_vec()).is_err());
        assert!(SafeTensors::parse(file(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}}"#,
            &[0; 8]
        ))
        .is_err());
        assert!(SafeTensors::parse(file(
            r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[8,0]}}"#,
            &[0; 16]
        ))
        .is_err());
        assert!(SafeTensors::parse(file(
            r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#,
            &[0; 16]
        ))
        .is_err());
        assert!(SafeTensors::parse(file("not json", &[])).is_err());
        let st = SafeTensors::parse(file(
            r#"{"a":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}"#,
            &[0; 16],
        ))
        .unwrap();
        assert!(st
            .f32_tensor("a", &[2])
            .unwrap_err()
            .to_string()
            .contains("I64"));
    }
}
