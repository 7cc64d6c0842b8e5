//! SentencePiece's precompiled normalisation map (`precompiled_charsmap`): a darts-clone double
//! array over UTF-8 keys whose leaf values index NUL-terminated replacement strings.
//!
//! Layout: `u32` little-endian byte length `T` of the double array, `T / 4` little-endian `u32`
//! units, then the replacement blob. Every unit read and every blob index is bounds-checked, so a
//! hostile map yields no match or an error, never an out-of-bounds read.

use crate::{Error, Result};

/// A parsed precompiled normalisation map.
#[derive(Clone, Debug, Default)]
pub struct CharsMap {
    units: Vec<u32>,
    blob: Vec<u8>,
}

impl CharsMap {
    /// Parses the binary map (the base64-decoded `precompiled_charsmap` of a `tokenizer.json`).
    ///
    /// Fails with [`Error::Bundle`] when the header is missing, the array length is not a
    /// multiple of 4 or runs past the end of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<CharsMap> {
        let header: [u8; 4] = bytes
            .get(..4)
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| Error::Bundle("charsmap: shorter than its 4-byte header".into()))?;
        let trie_len = u32::from_le_bytes(header) as usize;
        if !trie_len.is_multiple_of(4) {
            return Err(Error::Bundle(format!(
                "charsmap: double array length {trie_len} is not a multiple of 4"
            )));
        }
        let trie = bytes.get(4..4 + trie_len).ok_or_else(|| {
            Error::Bundle(format!(
                "charsmap: double array of {trie_len} bytes runs past the map's {} bytes",
                bytes.len()
            ))
        })?;
        let units = trie
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(CharsMap {
            units,
            blob: bytes[4 + trie_len..].to_vec(),
        })
    }

    /// The serialised form [`CharsMap::parse`] reads.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.units.len() * 4 + self.blob.len());
        out.extend_from_slice(&((self.units.len() * 4) as u32).to_le_bytes());
        for u in &self.units {
            out.extend_from_slice(&u.to_le_bytes());
        }
        out.extend_from_slice(&self.blob);
        out
    }

    /// Whether the map has no entries (then normalisation changes nothing).
    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// The replacement of the shortest key that is a prefix of `chunk`, as SentencePiece's
    /// normaliser takes it; `None` when no key is a prefix or the entry is malformed.
    pub fn transform(&self, chunk: &str) -> Option<&str> {
        let value = self.first_prefix_value(chunk.as_bytes())? as usize;
        let tail = self.blob.get(value..)?;
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        std::str::from_utf8(&tail[..end]).ok()
    }

    fn unit(&self, pos: usize) -> Option<u32> {
        self.units.get(pos).copied()
    }

    fn first_prefix_value(&self, key: &[u8]) -> Option<u32> {
        let mut pos = offset(self.unit(0)?);
        for &c in key {
            if c == 0 {
                return None;
            }
            pos ^= c as usize;
            let unit = self.unit(pos)?;
            if label(unit) != c as u32 {
                return None;
            }
            pos ^= offset(unit);
            if has_leaf(unit) {
                return Some(self.unit(pos)? & 0x7fff_ffff);
            }
        }
        None
    }
}

fn offset(unit: u32) -> usize {
    ((unit >> 10) << ((unit & (1 << 9)) >> 6)) as usize
}

fn label(unit: u32) -> u32 {
    unit & ((1 << 31) | 0xff)
}

fn has_leaf(unit: u32) -> bool {
    (unit >> 8) & 1 == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_or_overlong_maps_are_errors() {
        assert!(CharsMap::parse(&[1, 0]).is_err());
        assert!(CharsMap::parse(&[8, 0, 0, 0, 1, 2, 3, 4]).is_err());
        assert!(CharsMap::parse(&[3, 0, 0, 0, 1, 2, 3]).is_err());
        let empty = CharsMap::parse(&[0, 0, 0, 0]).unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.transform("a"), None);
    }

    #[test]
    fn garbage_units_never_read_out_of_bounds() {
        let mut bytes = vec![16, 0, 0, 0];
        for u in [0xffff_ffffu32, 0x0000_0161, 0x8000_0041, 0x7fff_ffff] {
            bytes.extend_from_slice(&u.to_le_bytes());
        }
        bytes.extend_from_slice(b"x\0");
        let map = CharsMap::parse(&bytes).unwrap();
        for s in ["a", "A", "\u{ffff}", "abc", "\0"] {
            let _ = map.transform(s);
        }
        assert_eq!(CharsMap::parse(&map.to_bytes()).unwrap().units, map.units);
    }
}
