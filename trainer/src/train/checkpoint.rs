//! Training checkpoints: one file with a JSON state and named f32 tensors, written atomically.
//!
//! Layout (little-endian): magic `NERCKPT\0`, u32 version (1), u64 JSON length, the JSON, then
//! the tensors' f32 values back to back in the order the JSON lists them
//! (`{"tensors": [{"name", "len"}], "state": …}`), then the XXH64 (seed 0) of every byte before
//! it. A file is first written next to its destination and renamed into place, so a process
//! killed at any moment leaves either the previous checkpoint or the new one, never a torn file.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use ner_edge::bundle::xxh64;
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 8] = b"NERCKPT\0";
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Header {
    tensors: Vec<TensorEntry>,
    state: serde_json::Value,
}

#[derive(Serialize, Deserialize)]
struct TensorEntry {
    name: String,
    len: usize,
}

/// A checkpoint read back: the JSON state and the tensors in file order.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// The header's `state`: whatever the writer serialised as [`write()`]'s `state`.
    pub state: serde_json::Value,
    /// `(name, values)` of every tensor, in file order.
    pub tensors: Vec<(String, Vec<f32>)>,
}

impl Checkpoint {
    /// Takes the tensor called `name`, failing with the checkpoint's path in the message when it
    /// is missing or does not have `len` values.
    pub fn take(&mut self, name: &str, len: usize) -> Result<Vec<f32>> {
        let i = self
            .tensors
            .iter()
            .position(|(n, _)| n == name)
            .with_context(|| format!("checkpoint has no tensor {name:?}"))?;
        let (_, values) = self.tensors.swap_remove(i);
        ensure!(
            values.len() == len,
            "checkpoint tensor {name:?} has {} values, expected {len}",
            values.len()
        );
        Ok(values)
    }
}

/// Writes a checkpoint to `path` atomically (temporary file in the same directory, then rename).
pub fn write(path: &Path, state: &impl Serialize, tensors: &[(String, &[f32])]) -> Result<()> {
    let header = Header {
        tensors: tensors
            .iter()
            .map(|(name, v)| TensorEntry {
                name: name.clone(),
                len: v.len(),
            })
            .collect(),
        state: serde_json::to_value(state).context("serialising checkpoint state")?,
    };
    let json = serde_json::to_vec(&header)?;
    let total: usize = tensors.iter().map(|(_, v)| v.len() * 4).sum();
    let mut bytes = Vec::with_capacity(8 + 4 + 8 + json.len() + total + 8);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    bytes.extend_from_slice(&(json.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&json);
    for (_, values) in tensors {
        for v in values.iter() {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    let sum = xxh64(&bytes, 0);
    bytes.extend_from_slice(&sum.to_le_bytes());
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(&bytes)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// Reads and verifies a checkpoint; every length is checked against the file size and the
/// checksum must match.
pub fn read(path: &Path) -> Result<Checkpoint> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read checkpoint {}", path.display()))?;
    parse(&bytes).with_context(|| format!("checkpoint {}", path.display()))
}

fn parse(bytes: &[u8]) -> Result<Checkpoint> {
    ensure!(
        bytes.len() >= 28 && &bytes[..8] == MAGIC,
        "not a ner-edge checkpoint (bad magic or too short)"
    );
    let (body, tail) = bytes.split_at(bytes.len() - 8);
    let want = u64::from_le_bytes(tail.try_into().expect("8 bytes"));
    ensure!(
        xxh64(body, 0) == want,
        "checksum mismatch: the file is damaged"
    );
    let version = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        bail!("checkpoint version {version}, this trainer reads version {VERSION}");
    }
    let json_len = u64::from_le_bytes(body[12..20].try_into().expect("8 bytes"));
    let json_end = usize::try_from(json_len)
        .ok()
        .and_then(|n| n.checked_add(20))
        .filter(|&end| end <= body.len())
        .context("JSON length runs past the end of the file")?;
    let header: Header =
        serde_json::from_slice(&body[20..json_end]).context("checkpoint JSON header")?;
    let mut at = json_end;
    let mut tensors = Vec::with_capacity(header.tensors.len());
    for t in header.tensors {
        let end = t
            .len
            .checked_mul(4)
            .and_then(|n| n.checked_add(at))
            .filter(|&end| end <= body.len())
            .with_context(|| format!("tensor {:?} runs past the end of the file", t.name))?;
        let values = body[at..end]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        tensors.push((t.name, values));
        at = end;
    }
    ensure!(
        at == body.len(),
        "{} unexpected bytes after the last tensor",
        body.len() - at
    );
    Ok(Checkpoint {
        state: header.state,
        tensors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ner-edge-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn round_trips_state_and_tensors_bit_exactly() {
        let path = temp_path("a.ckpt");
        let a = vec![1.5f32, -0.0, f32::MIN_POSITIVE, 3.25e-7];
        let b = vec![7.0f32];
        write(
            &path,
            &serde_json::json!({"step": 3}),
            &[("a".into(), &a), ("b".into(), &b)],
        )
        .unwrap();
        let mut c = read(&path).unwrap();
        assert_eq!(c.state["step"], 3);
        let got = c.take("a", 4).unwrap();
        assert_eq!(
            got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            a.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        assert!(c.take("b", 2).is_err());
        assert!(c.take("zzz", 1).is_err());
    }

    #[test]
    fn damaged_files_are_refused_without_panicking() {
        let path = temp_path("b.ckpt");
        write(&path, &1u8, &[("w".into(), &[1.0f32, 2.0][..])]).unwrap();
        let good = std::fs::read(&path).unwrap();
        for cut in [0, 5, 20, good.len() - 9, good.len() - 1] {
            assert!(parse(&good[..cut]).is_err(), "cut {cut}");
        }
        for i in (0..good.len()).step_by(3) {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            assert!(parse(&bad).is_err(), "flip at {i}");
        }
        let msg = format!("{:#}", read(&temp_path("missing.ckpt")).unwrap_err());
        assert!(msg.contains("missing.ckpt"), "{msg}");
    }
}
