//! Data-parallel training: the ranks of a run and how they combine each step.
//!
//! Every rank samples the same episodes for a step (they depend only on the config, the data
//! and the step number) and runs the forward and backward passes of its contiguous share of
//! them ([`rank_share`]). The ranks then sum their gradients ([`Collective::all_reduce_sum`]),
//! so every rank applies the same AdamW update to the same weights, and exchange their loss
//! terms and label-memory rows ([`Collective::all_gather`]), so every rank's label memory takes
//! the same rows in episode order. N ranks with E episodes per step therefore train the same
//! model as one rank with E episodes per step, up to the order of floating-point sums.
//!
//! Implementations: [`SingleRank`] (no peers), [`ThreadGroup`] (ranks as threads of one process,
//! for tests and for checking the arithmetic on a machine without GPUs) and, with the `cuda`
//! feature, `cuda::nccl::NcclRank` (one process per GPU over NCCL).

use std::any::Any;
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex};

use anyhow::{bail, ensure, Context, Result};

use super::step::{EpisodeTerms, MemoryPushes};
use crate::loss::LossTerms;

/// How one rank of a data-parallel run exchanges data with the others. Every rank must make
/// the same sequence of calls with buffers of the same length (a mismatch is an error where
/// the implementation can see it, a hang where it cannot, as with NCCL).
pub trait Collective: Send {
    /// This rank, `0..world_size`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn world_size(&self) -> usize;
    /// Replaces `values` by their element-wise sum over the ranks; every rank receives the
    /// same values, bit for bit.
    fn all_reduce_sum(&mut self, values: &mut [f32]) -> Result<()>;
    /// Every rank's `mine`, in rank order.
    fn all_gather(&mut self, mine: &[u8]) -> Result<Vec<Vec<u8>>>;
    /// Whether every collective of this implementation is the identity (one rank and nothing
    /// to exchange), so callers may skip them. Only [`SingleRank`] says so: a real
    /// communicator with one rank still runs its collectives, which is how a one-GPU machine
    /// checks the NCCL path.
    fn is_identity(&self) -> bool {
        false
    }
    /// The implementation, so that a backend can reach a faster path of a collective it knows
    /// (the CUDA trainer sums device gradients in place with NCCL).
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// The only rank of a run without peers: every collective is the identity.
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleRank;

impl Collective for SingleRank {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&mut self, _values: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_gather(&mut self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(vec![mine.to_vec()])
    }
    fn is_identity(&self) -> bool {
        true
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// The share of `total` items (episodes, dense sequences) that `rank` of `world` ranks
/// computes: contiguous, in rank order, sizes differing by at most one.
pub fn rank_share(total: usize, rank: usize, world: usize) -> Range<usize> {
    let world = world.max(1);
    total * rank / world..total * (rank + 1) / world
}

/// What one deposit of an exchange carries.
#[derive(Clone, Debug)]
enum Payload {
    Floats(Vec<f32>),
    Bytes(Vec<u8>),
}

/// The rendezvous of a [`ThreadGroup`]: deposits of the exchange in progress and the result of
/// the last completed one.
#[derive(Debug)]
struct Rendezvous {
    generation: u64,
    deposits: Vec<Option<Payload>>,
    arrived: usize,
    completed: Arc<Vec<Payload>>,
    /// The first rank that was dropped (it stopped, normally or with an error).
    left: Option<usize>,
}

#[derive(Debug)]
struct Shared {
    world: usize,
    state: Mutex<Rendezvous>,
    turn: Condvar,
}

/// Ranks that are threads of one process and exchange through shared memory.
///
/// [`ThreadGroup::ranks`] makes the `n` handles; give each to the thread that runs that rank.
/// When a rank's handle is dropped while others still exchange (its thread stopped on an
/// error), their pending and later exchanges fail instead of waiting forever.
#[derive(Debug)]
pub struct ThreadGroup {
    rank: usize,
    shared: Arc<Shared>,
}

impl ThreadGroup {
    /// The `n` ranks of a new group, rank `i` at index `i`.
    pub fn ranks(n: usize) -> Result<Vec<ThreadGroup>> {
        ensure!(n >= 1, "a thread group needs at least one rank");
        let shared = Arc::new(Shared {
            world: n,
            state: Mutex::new(Rendezvous {
                generation: 0,
                deposits: vec![None; n],
                arrived: 0,
                completed: Arc::new(Vec::new()),
                left: None,
            }),
            turn: Condvar::new(),
        });
        Ok((0..n)
            .map(|rank| ThreadGroup {
                rank,
                shared: Arc::clone(&shared),
            })
            .collect())
    }

    /// Deposits `mine`, waits until every rank has deposited, returns all deposits in rank
    /// order.
    fn exchange(&self, mine: Payload) -> Result<Arc<Vec<Payload>>> {
        let shared = &*self.shared;
        let mut st = shared
            .state
            .lock()
            .map_err(|_| anyhow::anyhow!("thread group: a rank panicked"))?;
        if let Some(r) = st.left {
            bail!(
                "thread group: rank {r} stopped, so rank {} cannot exchange",
                self.rank
            );
        }
        ensure!(
            st.deposits[self.rank].is_none(),
            "thread group: rank {} exchanged twice in one round",
            self.rank
        );
        st.deposits[self.rank] = Some(mine);
        st.arrived += 1;
        let generation = st.generation;
        if st.arrived == shared.world {
            let deposits: Vec<Payload> = st.deposits.iter_mut().filter_map(Option::take).collect();
            st.completed = Arc::new(deposits);
            st.arrived = 0;
            st.generation += 1;
            shared.turn.notify_all();
            return Ok(Arc::clone(&st.completed));
        }
        while st.generation == generation {
            if let Some(r) = st.left {
                bail!(
                    "thread group: rank {r} stopped while rank {} waited for it",
                    self.rank
                );
            }
            st = shared
                .turn
                .wait(st)
                .map_err(|_| anyhow::anyhow!("thread group: a rank panicked"))?;
        }
        Ok(Arc::clone(&st.completed))
    }
}

impl Drop for ThreadGroup {
    fn drop(&mut self) {
        if let Ok(mut st) = self.shared.state.lock() {
            st.left.get_or_insert(self.rank);
            self.shared.turn.notify_all();
        }
    }
}

impl Collective for ThreadGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.shared.world
    }
    fn all_reduce_sum(&mut self, values: &mut [f32]) -> Result<()> {
        let all = self.exchange(Payload::Floats(values.to_vec()))?;
        values.fill(0.0);
        for (r, p) in all.iter().enumerate() {
            let Payload::Floats(v) = p else {
                bail!(
                    "thread group: rank {r} gathered bytes while rank {} summed floats",
                    self.rank
                );
            };
            ensure!(
                v.len() == values.len(),
                "thread group: rank {r} summed {} values, rank {} {}",
                v.len(),
                self.rank,
                values.len()
            );
            values.iter_mut().zip(v).for_each(|(d, s)| *d += s);
        }
        Ok(())
    }
    fn all_gather(&mut self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        let all = self.exchange(Payload::Bytes(mine.to_vec()))?;
        all.iter()
            .enumerate()
            .map(|(r, p)| match p {
                Payload::Bytes(b) => Ok(b.clone()),
                Payload::Floats(_) => bail!(
                    "thread group: rank {r} summed floats while rank {} gathered bytes",
                    self.rank
                ),
            })
            .collect()
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// One rank's results of a step that every rank needs: the loss terms and label-memory rows
/// of its episodes (in episode order) and the sum of its dense-sequence loss terms.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepShare {
    /// Loss terms of each episode of the share.
    pub terms: Vec<EpisodeTerms>,
    /// Label-memory rows of the share's episodes, in episode order.
    pub pushes: MemoryPushes,
    /// Summed loss terms of the share's dense sequences.
    pub dense: LossTerms,
}

impl StepShare {
    /// Little-endian binary form (exact: floats travel as their bits).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let terms = |out: &mut Vec<u8>, t: &LossTerms| {
            for x in [t.crf, t.span, t.type_ce, t.kl, t.distill, t.total] {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
        out.extend_from_slice(&(self.terms.len() as u64).to_le_bytes());
        for t in &self.terms {
            terms(&mut out, t);
        }
        out.extend_from_slice(&(self.pushes.len() as u64).to_le_bytes());
        for ((source, type_name), rows) in &self.pushes {
            for s in [source, type_name] {
                out.extend_from_slice(&(s.len() as u64).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            out.extend_from_slice(&(rows.len() as u64).to_le_bytes());
            for x in rows {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        terms(&mut out, &self.dense);
        out
    }

    /// Reads [`StepShare::encode`]'s output back; `rank` names the sender in errors.
    pub fn decode(bytes: &[u8], rank: usize) -> Result<StepShare> {
        let mut r = ByteReader { bytes, at: 0 };
        let read_terms = |r: &mut ByteReader<'_>| -> Result<LossTerms> {
            Ok(LossTerms {
                crf: r.f64()?,
                span: r.f64()?,
                type_ce: r.f64()?,
                kl: r.f64()?,
                distill: r.f64()?,
                total: r.f64()?,
            })
        };
        let decode = |r: &mut ByteReader<'_>| -> Result<StepShare> {
            let n = r.len(48)?;
            let terms = (0..n).map(|_| read_terms(r)).collect::<Result<Vec<_>>>()?;
            let n = r.len(24)?;
            let mut pushes = Vec::with_capacity(n);
            for _ in 0..n {
                let source = r.string()?;
                let type_name = r.string()?;
                let rows = r.len(4)?;
                let v = (0..rows).map(|_| r.f32()).collect::<Result<Vec<_>>>()?;
                pushes.push(((source, type_name), v));
            }
            let dense = read_terms(r)?;
            ensure!(
                r.at == r.bytes.len(),
                "{} trailing bytes",
                r.bytes.len() - r.at
            );
            Ok(StepShare {
                terms,
                pushes,
                dense,
            })
        };
        decode(&mut r).with_context(|| format!("step results of rank {rank} are malformed"))
    }
}

struct ByteReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl ByteReader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .with_context(|| {
                format!(
                    "{n} bytes wanted at byte {}, {} there",
                    self.at,
                    self.bytes.len()
                )
            })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    /// A count of items of at least `min_item` bytes each, checked against the bytes left.
    fn len(&mut self, min_item: usize) -> Result<usize> {
        let n = self.u64()?;
        let left = (self.bytes.len() - self.at) as u64;
        ensure!(
            n.saturating_mul(min_item as u64) <= left,
            "count {n} at byte {} exceeds the {left} bytes left",
            self.at - 8
        );
        Ok(n as usize)
    }
    fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_bits(self.u64()?))
    }
    fn f32(&mut self) -> Result<f32> {
        let b = self.take(4)?;
        Ok(f32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn string(&mut self) -> Result<String> {
        let n = self.len(1)?;
        let at = self.at;
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| anyhow::anyhow!("string at byte {at} is not UTF-8"))
    }
}

/// Every rank's [`StepShare`] joined in rank order, which is episode order.
pub fn gather_step(collective: &mut dyn Collective, mine: &StepShare) -> Result<StepShare> {
    if collective.is_identity() {
        return Ok(mine.clone());
    }
    let all = collective.all_gather(&mine.encode())?;
    let mut joined = StepShare::default();
    for (rank, bytes) in all.iter().enumerate() {
        let share = StepShare::decode(bytes, rank)?;
        joined.terms.extend(share.terms);
        joined.pushes.extend(share.pushes);
        joined.dense.crf += share.dense.crf;
        joined.dense.span += share.dense.span;
        joined.dense.type_ce += share.dense.type_ce;
        joined.dense.kl += share.dense.kl;
        joined.dense.distill += share.dense.distill;
        joined.dense.total += share.dense.total;
    }
    Ok(joined)
}

/// Fails unless every rank holds the same `fingerprint` (of its config and initial state), so
/// ranks that would train different models stop before the first step.
pub fn check_same_start(collective: &mut dyn Collective, fingerprint: &[u8]) -> Result<()> {
    if collective.is_identity() {
        return Ok(());
    }
    let all = collective.all_gather(fingerprint)?;
    for (rank, f) in all.iter().enumerate() {
        ensure!(
            f.as_slice() == fingerprint,
            "rank {rank} starts from another config or initial state than rank {} \
             (same config file, data and checkpoint needed on every rank)",
            collective.rank()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_ranks<R: Send + 'static>(
        n: usize,
        work: impl Fn(ThreadGroup) -> R + Send + Sync + 'static,
    ) -> Vec<R> {
        let work = Arc::new(work);
        let handles: Vec<_> = ThreadGroup::ranks(n)
            .unwrap()
            .into_iter()
            .map(|g| {
                let work = Arc::clone(&work);
                std::thread::spawn(move || work(g))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn all_reduce_gives_every_rank_the_same_bits_of_the_sum() {
        let out = on_ranks(3, |mut g| {
            let mut results = Vec::new();
            for round in 0..50 {
                let r = g.rank() as f32;
                let mut v: Vec<f32> = (0..7)
                    .map(|i| (i as f32 + 0.1) * (r + 1.0) / 3.0 + round as f32)
                    .collect();
                g.all_reduce_sum(&mut v).unwrap();
                results.push(v);
            }
            results
        });
        for round in 0..50 {
            let want: Vec<f32> = (0..7)
                .map(|i| {
                    (0..3).fold(0.0f32, |acc, r| {
                        acc + ((i as f32 + 0.1) * (r as f32 + 1.0) / 3.0 + round as f32)
                    })
                })
                .collect();
            for rank in &out {
                assert_eq!(
                    rank[round].iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    want.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
                );
            }
        }
    }

    #[test]
    fn all_gather_returns_deposits_in_rank_order() {
        let out = on_ranks(4, |mut g| {
            let mine = vec![g.rank() as u8; g.rank() + 1];
            g.all_gather(&mine).unwrap()
        });
        for got in out {
            assert_eq!(
                got,
                vec![vec![0], vec![1, 1], vec![2, 2, 2], vec![3, 3, 3, 3]]
            );
        }
    }

    #[test]
    fn a_rank_that_stops_fails_its_peers_instead_of_hanging_them() {
        let out = on_ranks(3, |mut g| {
            if g.rank() == 1 {
                return Ok(());
            }
            let mut v = vec![1.0f32; 4];
            g.all_reduce_sum(&mut v)
        });
        assert!(out[1].is_ok());
        for r in [0, 2] {
            let e = out[r].as_ref().unwrap_err().to_string();
            assert!(e.contains("rank 1 stopped"), "{e}");
        }
    }

    #[test]
    fn mismatched_lengths_are_reported() {
        let out = on_ranks(2, |mut g| {
            let mut v = vec![1.0f32; 3 + g.rank()];
            g.all_reduce_sum(&mut v)
        });
        assert!(out.iter().all(|r| r.is_err()));
        let e = out[0].as_ref().unwrap_err().to_string();
        assert!(e.contains("summed 4 values"), "{e}");
    }

    #[test]
    fn shares_cover_every_item_once_in_order() {
        for total in 0..20 {
            for world in 1..6 {
                let shares: Vec<_> = (0..world).map(|r| rank_share(total, r, world)).collect();
                assert_eq!(shares[0].start, 0);
                assert_eq!(shares[world - 1].end, total);
                for w in shares.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
                let (min, max) = shares.iter().fold((usize::MAX, 0), |(a, b), s| {
                    (a.min(s.len()), b.max(s.len()))
                });
                assert!(max - min <= 1);
            }
        }
    }

    #[test]
    fn step_shares_round_trip_exactly_and_reject_truncation() {
        let share = StepShare {
            terms: vec![
                LossTerms {
                    crf: 1.0 / 3.0,
                    span: f64::MIN_POSITIVE,
                    type_ce: -0.0,
                    kl: 7.5,
                    distill: 0.25,
                    total: 1e300,
                },
                LossTerms::default(),
            ],
            pushes: vec![
                (
                    ("conll2003".into(), "PER".into()),
                    vec![0.1, -2.5, f32::EPSILON],
                ),
                (("few-nerd".into(), "art-música".into()), vec![]),
            ],
            dense: LossTerms {
                crf: 2.0,
                span: 3.0,
                type_ce: 4.0,
                kl: 0.0,
                distill: 0.5,
                total: 9.0,
            },
        };
        let bytes = share.encode();
        let back = StepShare::decode(&bytes, 0).unwrap();
        assert_eq!(back, share);
        assert_eq!(back.terms[0].type_ce.to_bits(), (-0.0f64).to_bits());
        for cut in [0, 1, 8, 48, bytes.len() - 1] {
            let e = StepShare::decode(&bytes[..cut], 3).unwrap_err();
            assert!(format!("{e:#}").contains("rank 3"), "{e:#}");
        }
        let mut huge = bytes.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(StepShare::decode(&huge, 0).is_err());
    }
}
