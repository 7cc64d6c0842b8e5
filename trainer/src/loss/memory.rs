//! The training-side label memory (MANNER): one FIFO slot of detached type vectors per source
//! entity type, and OT retrieval through [`ner_edge::adapt::memory`] with the MANNER Sinkhorn setting
//! (cost divided by its maximum, ε = 0.1, at most 1000 iterations, stop at marginal error 1e-9).

use anyhow::{ensure, Result};
use ner_edge::adapt::memory::{mean_rows, Retriever, SinkhornConfig};
use ner_edge::bundle::metadata::{LabelMemoryLayout, MemorySlot};
use serde::{Deserialize, Serialize};

/// Default capacity M of a slot (MANNER).
pub const DEFAULT_CAPACITY: usize = 15;

/// Identity of a slot: the source corpus and the entity type name within it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SlotKey {
    /// Corpus the type comes from, e.g. `"conll2003"`.
    pub source: String,
    /// Entity type name within that corpus, e.g. `"PER"`.
    pub type_name: String,
}

impl SlotKey {
    /// A key from its two parts.
    pub fn new(source: impl Into<String>, type_name: impl Into<String>) -> SlotKey {
        SlotKey {
            source: source.into(),
            type_name: type_name.into(),
        }
    }
}

/// One slot: up to `capacity` rows, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Slot {
    key: SlotKey,
    /// `[rows, dim]` row-major, oldest row first.
    data: Vec<f32>,
}

/// The result of [`LabelMemory::retrieve_slot`].
#[derive(Clone, Debug, PartialEq)]
pub struct Retrieved {
    /// The winning slot.
    pub key: SlotKey,
    /// Its OT distance `⟨C, T⟩` to the support.
    pub distance: f64,
    /// `[dim]` mean of its rows after the barycentric map onto the support.
    pub mapped_mean: Vec<f32>,
    /// Whether the winning Sinkhorn plan met the tolerance.
    pub converged: bool,
}

/// Label memory: slots sorted by [`SlotKey`], each holding the newest `capacity` pushed rows.
///
/// Invariants (checked on deserialisation): `capacity > 0`, `dim > 0`, keys strictly
/// increasing, every slot holds between 1 and `capacity` whole rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "LabelMemoryRepr", into = "LabelMemoryRepr")]
pub struct LabelMemory {
    capacity: usize,
    dim: usize,
    slots: Vec<Slot>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelMemoryRepr {
    capacity: usize,
    dim: usize,
    slots: Vec<Slot>,
}

impl From<LabelMemory> for LabelMemoryRepr {
    fn from(m: LabelMemory) -> Self {
        LabelMemoryRepr {
            capacity: m.capacity,
            dim: m.dim,
            slots: m.slots,
        }
    }
}

impl TryFrom<LabelMemoryRepr> for LabelMemory {
    type Error = String;

    fn try_from(r: LabelMemoryRepr) -> std::result::Result<Self, String> {
        if r.capacity == 0 || r.dim == 0 {
            return Err("label memory capacity and dim must be positive".into());
        }
        for pair in r.slots.windows(2) {
            if pair[0].key >= pair[1].key {
                return Err(format!(
                    "label memory slots not strictly sorted at {:?}",
                    pair[1].key
                ));
            }
        }
        for s in &r.slots {
            let rows = s.data.len() / r.dim;
            if s.data.is_empty() || !s.data.len().is_multiple_of(r.dim) || rows > r.capacity {
                return Err(format!(
                    "label memory slot {:?} holds {} values, not 1..={} rows of {}",
                    s.key,
                    s.data.len(),
                    r.capacity,
                    r.dim
                ));
            }
        }
        Ok(LabelMemory {
            capacity: r.capacity,
            dim: r.dim,
            slots: r.slots,
        })
    }
}

impl LabelMemory {
    /// An empty memory of `capacity` rows per slot for vectors of length `dim`.
    pub fn new(capacity: usize, dim: usize) -> Result<LabelMemory> {
        ensure!(
            capacity > 0 && dim > 0,
            "label memory capacity ({capacity}) and dim ({dim}) must be positive"
        );
        Ok(LabelMemory {
            capacity,
            dim,
            slots: Vec::new(),
        })
    }

    /// Capacity M of each slot.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Vector length.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of non-empty slots.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no slot holds anything.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Appends the rows of `vectors` (`[rows, dim]`, row-major, in order) to the slot
    /// `(source, type_name)`, creating it if needed, then drops the oldest rows beyond the
    /// capacity. Pushing nothing is a no-op.
    ///
    /// Errors: `vectors.len()` is not a multiple of `dim`, or a value is not finite.
    pub fn push(&mut self, source: &str, type_name: &str, vectors: &[f32]) -> Result<()> {
        let key = &SlotKey::new(source, type_name);
        ensure!(
            vectors.len().is_multiple_of(self.dim),
            "label memory push of {} values is not whole rows of {}",
            vectors.len(),
            self.dim
        );
        ensure!(
            vectors.iter().all(|v| v.is_finite()),
            "label memory push for {key:?} contains non-finite values"
        );
        if vectors.is_empty() {
            return Ok(());
        }
        let i = match self.slots.binary_search_by(|s| s.key.cmp(key)) {
            Ok(i) => i,
            Err(i) => {
                self.slots.insert(
                    i,
                    Slot {
                        key: key.clone(),
                        data: Vec::new(),
                    },
                );
                i
            }
        };
        let data = &mut self.slots[i].data;
        data.extend_from_slice(vectors);
        let keep = self.capacity * self.dim;
        if data.len() > keep {
            data.drain(..data.len() - keep);
        }
        Ok(())
    }

    /// The rows of slot `key` (`[rows, dim]`, oldest first), if it exists.
    pub fn rows(&self, key: &SlotKey) -> Option<&[f32]> {
        self.slots
            .binary_search_by(|s| s.key.cmp(key))
            .ok()
            .map(|i| &self.slots[i].data[..])
    }

    /// Slots in key order as `(source, type, rows, data)` with `data` `[rows, dim]` oldest
    /// first: the order of the bundle export.
    pub fn slots(&self) -> impl Iterator<Item = (&str, &str, usize, &[f32])> + '_ {
        self.slots.iter().map(move |s| {
            (
                s.key.source.as_str(),
                s.key.type_name.as_str(),
                s.data.len() / self.dim,
                &s.data[..],
            )
        })
    }

    /// The memory as the bundle stores it: the `[total_rows, dim]` matrix (slots concatenated
    /// in key order) and its layout, optionally without the slot `exclude`.
    pub fn to_bundle(&self, exclude: Option<&SlotKey>) -> (Vec<f32>, LabelMemoryLayout) {
        let mut data = Vec::new();
        let mut slots = Vec::new();
        for s in self.slots.iter().filter(|s| Some(&s.key) != exclude) {
            slots.push(MemorySlot {
                type_name: s.key.type_name.clone(),
                source: s.key.source.clone(),
                first_row: data.len() / self.dim,
                rows: s.data.len() / self.dim,
            });
            data.extend_from_slice(&s.data);
        }
        let layout = LabelMemoryLayout {
            capacity: self.capacity,
            slots,
        };
        (data, layout)
    }

    /// OT retrieval for one support set (`[n, dim]` row-major, `n = support.len() / dim`) over
    /// every slot except `exclude`, with [`SinkhornConfig::default`] (the runtime's
    /// [`ner_edge::adapt::memory::retrieve`]). `None` when the support is empty or not whole rows, or
    /// no slot qualifies.
    pub fn retrieve_slot(&self, support: &[f32], exclude: Option<&SlotKey>) -> Option<Retrieved> {
        if support.is_empty() || !support.len().is_multiple_of(self.dim) {
            return None;
        }
        let (memory, layout) = self.to_bundle(exclude);
        let n = support.len() / self.dim;
        let r = Retriever::with_config(SinkhornConfig::default()).retrieve(
            &memory,
            &layout.slots,
            self.dim,
            support,
            n,
        )?;
        let slot = &layout.slots[r.slot];
        let mapped_mean = mean_rows(&r.mapped, slot.rows, self.dim)?;
        Some(Retrieved {
            key: SlotKey::new(&slot.source, &slot.type_name),
            distance: r.distance,
            mapped_mean,
            converged: r.converged,
        })
    }

    /// The mapped-memory mean of [`LabelMemory::retrieve_slot`] alone.
    pub fn retrieve(&self, support: &[f32], exclude: Option<&SlotKey>) -> Option<Vec<f32>> {
        self.retrieve_slot(support, exclude).map(|r| r.mapped_mean)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(t: &str) -> SlotKey {
        SlotKey::new("src", t)
    }

    fn push(m: &mut LabelMemory, key: &SlotKey, v: &[f32]) -> Result<()> {
        m.push(&key.source, &key.type_name, v)
    }

    #[test]
    fn fifo_keeps_the_newest_rows_in_order() {
        let mut m = LabelMemory::new(3, 2).unwrap();
        push(&mut m, &key("a"), &[1.0, 1.0, 2.0, 2.0]).unwrap();
        push(&mut m, &key("a"), &[3.0, 3.0]).unwrap();
        assert_eq!(m.rows(&key("a")).unwrap(), &[1.0, 1.0, 2.0, 2.0, 3.0, 3.0]);
        push(&mut m, &key("a"), &[4.0, 4.0, 5.0, 5.0]).unwrap();
        assert_eq!(m.rows(&key("a")).unwrap(), &[3.0, 3.0, 4.0, 4.0, 5.0, 5.0]);
        push(&mut m, &key("a"), &[6.0, 6.0, 7.0, 7.0, 8.0, 8.0, 9.0, 9.0]).unwrap();
        assert_eq!(m.rows(&key("a")).unwrap(), &[7.0, 7.0, 8.0, 8.0, 9.0, 9.0]);
        push(&mut m, &key("b"), &[]).unwrap();
        assert!(m.rows(&key("b")).is_none());
        assert!(push(&mut m, &key("b"), &[1.0]).is_err());
        assert!(push(&mut m, &key("b"), &[1.0, f32::NAN]).is_err());
        assert!(LabelMemory::new(0, 2).is_err());
    }

    #[test]
    fn slots_come_in_key_order() {
        let mut m = LabelMemory::new(15, 1).unwrap();
        push(&mut m, &SlotKey::new("z", "a"), &[1.0]).unwrap();
        push(&mut m, &SlotKey::new("a", "z"), &[2.0, 3.0]).unwrap();
        push(&mut m, &SlotKey::new("a", "b"), &[4.0]).unwrap();
        let got: Vec<_> = m
            .slots()
            .map(|(s, t, r, d)| (s, t, r, d.to_vec()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", "b", 1, vec![4.0]),
                ("a", "z", 2, vec![2.0, 3.0]),
                ("z", "a", 1, vec![1.0]),
            ]
        );
        let (data, layout) = m.to_bundle(None);
        assert_eq!(data, vec![4.0, 2.0, 3.0, 1.0]);
        assert_eq!(layout.slots[1].first_row, 1);
        assert_eq!(layout.slots[2].first_row, 3);
        assert_eq!(layout.capacity, 15);
    }

    #[test]
    fn retrieval_picks_the_near_slot_and_honours_exclusion() {
        let mut m = LabelMemory::new(DEFAULT_CAPACITY, 2).unwrap();
        push(&mut m, &key("far"), &[-5.0, -5.0, -6.0, -5.0, -5.0, -6.0]).unwrap();
        push(&mut m, &key("near"), &[10.0, 10.0, 11.0, 10.0]).unwrap();
        push(&mut m, &key("mid"), &[3.0, 3.0]).unwrap();
        let support = [10.2, 10.1, 11.2, 10.1, 10.5, 10.4];
        let r = m.retrieve_slot(&support, None).unwrap();
        assert_eq!(r.key, key("near"));
        assert!(r.converged);
        let mean = m.retrieve(&support, None).unwrap();
        assert_eq!(mean, r.mapped_mean);
        assert!(
            (mean[0] - 10.63).abs() < 0.1 && (mean[1] - 10.2).abs() < 0.1,
            "{mean:?}"
        );
        let r = m.retrieve_slot(&support, Some(&key("near"))).unwrap();
        assert_ne!(r.key, key("near"));
        for v in &r.mapped_mean {
            assert!(
                (10.0..=11.3).contains(v),
                "mapped into the support hull: {v}"
            );
        }
        assert!(m.retrieve(&support[..3], None).is_none());
        assert!(m.retrieve(&[], None).is_none());
        let mut lone = LabelMemory::new(4, 2).unwrap();
        assert!(lone.retrieve(&support, None).is_none());
        push(&mut lone, &key("only"), &[0.0, 0.0]).unwrap();
        assert!(lone.retrieve(&support, Some(&key("only"))).is_none());
    }

    #[test]
    fn serde_round_trip_and_validation() {
        let mut m = LabelMemory::new(2, 3).unwrap();
        m.push("conll", "PER", &[0.1, -0.2, 0.3, 1e-7, 5.0, -6.5])
            .unwrap();
        push(&mut m, &SlotKey::new("ai", "algorithm"), &[1.0, 2.0, 3.0]).unwrap();
        let json = serde_json::to_string(&m).unwrap();
        let back: LabelMemory = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        let bad = json.replace("\"capacity\":2", "\"capacity\":1");
        assert!(serde_json::from_str::<LabelMemory>(&bad).is_err());
        let unsorted = r#"{"capacity":2,"dim":1,"slots":[
            {"key":{"source":"b","type_name":"x"},"data":[1.0]},
            {"key":{"source":"a","type_name":"x"},"data":[1.0]}]}"#;
        assert!(serde_json::from_str::<LabelMemory>(unsorted).is_err());
        let ragged = r#"{"capacity":2,"dim":2,"slots":[
            {"key":{"source":"a","type_name":"x"},"data":[1.0]}]}"#;
        assert!(serde_json::from_str::<LabelMemory>(ragged).is_err());
    }
}
