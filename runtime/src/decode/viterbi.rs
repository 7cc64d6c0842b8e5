//! Viterbi decoding: the highest-scoring valid BIO path under [`Transitions`].
//!
//! Two kernels compute the same maximum. When the (constrained) transition matrix has the CDT
//! shape that [`unfold`] produces, a step costs O(L): the best predecessor of B-x among "B of
//! another type" is found from the top two B scores, and likewise for I. Any other matrix goes
//! through the dense O(L²) kernel. The choice is made once per distinct transition matrix and
//! cached in the [`Decoder`].

use super::cdt::CdtParams;
use super::cdt::{apply_bio_constraints, unfold, Transitions};
use super::labels::{repair_bio, type_count};

/// Largest label count the decoder supports (backpointers are stored as `u16`).
pub const MAX_LABELS: usize = u16::MAX as usize + 1;

/// The ten CDT numbers that survive the BIO constraints, named `from_to` by abstract tag
/// (`b2` is B of another type).
#[derive(Clone, Copy, Debug, PartialEq)]
struct CdtScores {
    o_o: f32,
    o_b: f32,
    b_o: f32,
    b_b: f32,
    b_i: f32,
    b_b2: f32,
    i_o: f32,
    i_b: f32,
    i_i: f32,
    i_b2: f32,
}

impl CdtScores {
    /// Reads the numbers back from a constrained matrix for `n >= 1` types and keeps them only if
    /// unfolding them reproduces the matrix exactly.
    fn detect(trans: &[f32], n_types: usize) -> Option<CdtScores> {
        if n_types == 0 {
            return None;
        }
        let l = 1 + 2 * n_types;
        let at = |from: usize, to: usize| trans[from * l + to];
        let other = |from: usize| if n_types > 1 { at(from, 3) } else { 0.0 };
        let c = CdtScores {
            o_o: at(0, 0),
            o_b: at(0, 1),
            b_o: at(1, 0),
            b_b: at(1, 1),
            b_i: at(1, 2),
            b_b2: other(1),
            i_o: at(2, 0),
            i_b: at(2, 1),
            i_i: at(2, 2),
            i_b2: other(2),
        };
        let params = CdtParams {
            matrix: [
                [c.o_o, c.o_b, 0.0, 0.0, 0.0],
                [c.b_o, c.b_b, c.b_i, c.b_b2, 0.0],
                [c.i_o, c.i_b, c.i_i, c.i_b2, 0.0],
            ],
            start: [0.0; 3],
            end: [0.0; 3],
        };
        (unfold(&params, n_types).trans == trans).then_some(c)
    }
}

/// Transitions prepared for decoding, keyed by the matrix they were built from.
#[derive(Clone, Debug, Default)]
struct Plan {
    key_start: Vec<f32>,
    key_trans: Vec<f32>,
    start: Vec<f32>,
    trans: Vec<f32>,
    cdt: Option<CdtScores>,
}

impl Plan {
    fn matches(&self, t: &Transitions, l: usize) -> bool {
        self.key_start.len() == l
            && self.key_start == t.start[..l]
            && self.key_trans == t.trans[..l * l]
    }

    fn rebuild(&mut self, t: &Transitions, l: usize) {
        self.key_start.clear();
        self.key_start.extend_from_slice(&t.start[..l]);
        self.key_trans.clear();
        self.key_trans.extend_from_slice(&t.trans[..l * l]);
        self.start.clone_from(&self.key_start);
        self.trans.clone_from(&self.key_trans);
        apply_bio_constraints(&mut self.start, &mut self.trans, l);
        self.cdt = type_count(l).and_then(|n| CdtScores::detect(&self.trans, n));
    }
}

/// Reusable Viterbi state: scratch buffers and the prepared transitions of the last call. Keeping
/// one `Decoder` per thread and calling [`Decoder::viterbi`] for every sentence allocates nothing
/// once the buffers have grown to the longest sentence.
#[derive(Clone, Debug, Default)]
pub struct Decoder {
    plan: Plan,
    score: Vec<f32>,
    next: Vec<f32>,
    back: Vec<u16>,
}

impl Decoder {
    /// An empty decoder; buffers grow on first use.
    pub fn new() -> Self {
        Self::default()
    }

    /// Finds the best valid path; see [`viterbi`] for the contract.
    pub fn viterbi(
        &mut self,
        emissions: &[f32],
        n_labels: usize,
        t: &Transitions,
        path: &mut Vec<usize>,
    ) -> f32 {
        debug_assert_eq!(
            t.n_labels, n_labels,
            "transitions are for another label count"
        );
        debug_assert!(t.check().is_ok(), "malformed transitions");
        debug_assert!(n_labels <= MAX_LABELS, "too many labels");
        path.clear();
        let l = n_labels;
        if l == 0 || emissions.len() < l {
            return 0.0;
        }
        if !self.plan.matches(t, l) {
            self.plan.rebuild(t, l);
        }
        let t_len = emissions.len() / l;
        let plan = &self.plan;
        self.score.clear();
        self.score
            .extend(plan.start.iter().zip(&emissions[..l]).map(|(s, e)| s + e));
        self.next.clear();
        self.next.resize(l, f32::NEG_INFINITY);
        self.back.clear();
        self.back.resize(t_len * l, 0);

        for (step, em) in emissions[..t_len * l].chunks_exact(l).enumerate().skip(1) {
            let bp = &mut self.back[step * l..(step + 1) * l];
            match &plan.cdt {
                Some(c) => cdt_step(c, &self.score, em, &mut self.next, bp),
                None => dense_step(&plan.trans, &self.score, em, &mut self.next, bp),
            }
            std::mem::swap(&mut self.score, &mut self.next);
        }

        let mut best = f32::NEG_INFINITY;
        let mut best_label = 0usize;
        for (label, (&s, &e)) in self.score.iter().zip(&t.end[..l]).enumerate() {
            let v = s + e;
            if v > best {
                best = v;
                best_label = label;
            }
        }
        path.resize(t_len, 0);
        path[t_len - 1] = best_label;
        for step in (1..t_len).rev() {
            path[step - 1] = self.back[step * l + path[step]] as usize;
        }
        repair_bio(path);
        best
    }
}

/// One O(L²) step: `next[j] = max_i(prev[i] + trans[i][j]) + em[j]`, argmax into `bp`.
fn dense_step(trans: &[f32], prev: &[f32], em: &[f32], next: &mut [f32], bp: &mut [u16]) {
    let l = prev.len();
    next.fill(f32::NEG_INFINITY);
    bp.fill(0);
    for (from, (&s, row)) in prev.iter().zip(trans.chunks_exact(l)).enumerate() {
        if s == f32::NEG_INFINITY {
            continue;
        }
        let from = from as u16;
        for ((n, b), &w) in next.iter_mut().zip(bp.iter_mut()).zip(row) {
            let v = s + w;
            let better = v > *n;
            *n = if better { v } else { *n };
            *b = if better { from } else { *b };
        }
    }
    for (n, &e) in next.iter_mut().zip(em) {
        *n += e;
    }
}

/// Best and second-best of `values` with their positions; `-inf` (position 0) when absent.
#[inline]
fn top2(values: impl Iterator<Item = f32>) -> (f32, usize, f32, usize) {
    let (mut v1, mut k1, mut v2, mut k2) = (f32::NEG_INFINITY, 0, f32::NEG_INFINITY, 0);
    for (k, v) in values.enumerate() {
        if v > v1 {
            (v2, k2) = (v1, k1);
            (v1, k1) = (v, k);
        } else if v > v2 {
            (v2, k2) = (v, k);
        }
    }
    (v1, k1, v2, k2)
}

/// One O(L) step for a CDT-shaped constrained matrix; same result as [`dense_step`].
fn cdt_step(c: &CdtScores, prev: &[f32], em: &[f32], next: &mut [f32], bp: &mut [u16]) {
    #[inline]
    fn take(best: &mut f32, arg: &mut usize, v: f32, from: usize) {
        if v > *best {
            *best = v;
            *arg = from;
        }
    }
    let (b1, kb1, b2, kb2) = top2(prev[1..].iter().step_by(2).copied());
    let (i1, ki1, i2, ki2) = top2(prev[2..].iter().step_by(2).copied());

    let (mut best, mut arg) = (prev[0] + c.o_o, 0);
    take(&mut best, &mut arg, b1 + c.b_o, 1 + 2 * kb1);
    take(&mut best, &mut arg, i1 + c.i_o, 2 + 2 * ki1);
    next[0] = best + em[0];
    bp[0] = arg as u16;

    let from_o = prev[0] + c.o_b;
    let rows = prev[1..].chunks_exact(2).zip(em[1..].chunks_exact(2));
    let outs = next[1..]
        .chunks_exact_mut(2)
        .zip(bp[1..].chunks_exact_mut(2));
    for (x, ((p, e), (n, b))) in rows.zip(outs).enumerate() {
        let (bx, ix) = (p[0], p[1]);
        let (ob, kob) = if x == kb1 { (b2, kb2) } else { (b1, kb1) };
        let (oi, koi) = if x == ki1 { (i2, ki2) } else { (i1, ki1) };

        let (mut best, mut arg) = (from_o, 0);
        take(&mut best, &mut arg, bx + c.b_b, 1 + 2 * x);
        take(&mut best, &mut arg, ix + c.i_b, 2 + 2 * x);
        take(&mut best, &mut arg, ob + c.b_b2, 1 + 2 * kob);
        take(&mut best, &mut arg, oi + c.i_b2, 2 + 2 * koi);
        n[0] = best + e[0];
        b[0] = arg as u16;

        let (mut best, mut arg) = (bx + c.b_i, 1 + 2 * x);
        take(&mut best, &mut arg, ix + c.i_i, 2 + 2 * x);
        n[1] = best + e[1];
        b[1] = arg as u16;
    }
}

/// Highest valid-path score and the path that achieves it (written to `path`, one label per
/// position).
///
/// `emissions` is `[T, n_labels]` row-major with `T = emissions.len() / n_labels` (a trailing
/// partial row is ignored); `T == 0` or `n_labels == 0` returns 0 and an empty path. The score of a
/// path is defined on [`Transitions`].
///
/// Hard BIO constraints are enforced whatever `t` contains (as by
/// [`Transitions::with_bio_constraints`]): the maximum is over valid BIO sequences only, and the
/// returned path is always one ([`super::labels::is_valid_bio`]). When every valid path scores
/// `-inf` (possible only with `-inf` entries) the score is `-inf` and the path is some valid BIO
/// sequence.
///
/// Preconditions: `t.n_labels == n_labels`, `t` passes [`Transitions::check`], and
/// `n_labels <= MAX_LABELS`; emissions are not NaN or `+inf`.
///
/// This convenience allocates its scratch per call; use a [`Decoder`] in loops.
pub fn viterbi(emissions: &[f32], n_labels: usize, t: &Transitions, path: &mut Vec<usize>) -> f32 {
    Decoder::new().viterbi(emissions, n_labels, t, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdt_shape_is_detected_only_for_unfolded_matrices() {
        let params = CdtParams {
            matrix: [
                [0.1, 0.2, 0.3, 0.4, 0.5],
                [1.1, 1.2, 1.3, 1.4, 1.5],
                [2.1, 2.2, 2.3, 2.4, 2.5],
            ],
            start: [0.0; 3],
            end: [0.0; 3],
        };
        let mut plan = Plan::default();
        for n in 1..6 {
            let t = unfold(&params, n);
            plan.rebuild(&t, t.n_labels);
            assert!(plan.cdt.is_some(), "n = {n}");
            assert!(plan.matches(&t, t.n_labels));
            let mut odd = t.clone();
            let l = odd.n_labels;
            // O -> B of the last type; with one type every constrained matrix has the CDT shape.
            odd.trans[l - 2] += 1.0;
            assert!(!plan.matches(&odd, l));
            plan.rebuild(&odd, l);
            assert_eq!(plan.cdt.is_some(), n == 1, "n = {n}");
        }
        let dense = Transitions {
            n_labels: 1,
            start: vec![0.0],
            end: vec![0.0],
            trans: vec![0.0],
        };
        plan.rebuild(&dense, 1);
        assert!(plan.cdt.is_none());
    }

    proptest::proptest! {
        #[test]
        fn cdt_step_equals_dense_step(
            n in 1usize..=12,
            m in proptest::collection::vec(-3.0f32..3.0, 15),
            raw in proptest::collection::vec(-6.0f32..6.0, 2 * 25),
            holes in proptest::collection::vec(proptest::bool::weighted(0.15), 25),
        ) {
            let mut matrix = [[0.0; 5]; 3];
            for (r, row) in matrix.iter_mut().enumerate() {
                row.copy_from_slice(&m[5 * r..5 * r + 5]);
            }
            let t = unfold(&CdtParams { matrix, start: [0.0; 3], end: [0.0; 3] }, n);
            let l = t.n_labels;
            let mut plan = Plan::default();
            plan.rebuild(&t, l);
            let c = plan.cdt.expect("unfolded matrix has the CDT shape");
            let prev: Vec<f32> = (0..l)
                .map(|j| if holes[j] { f32::NEG_INFINITY } else { raw[j] })
                .collect();
            let em = &raw[25..25 + l];
            let (mut n1, mut n2) = (vec![0.0; l], vec![0.0; l]);
            let (mut b1, mut b2) = (vec![0u16; l], vec![0u16; l]);
            cdt_step(&c, &prev, em, &mut n1, &mut b1);
            dense_step(&plan.trans, &prev, em, &mut n2, &mut b2);
            proptest::prop_assert_eq!(&n1, &n2);
            for j in 0..l {
                let via = prev[b1[j] as usize] + plan.trans[b1[j] as usize * l + j] + em[j];
                if n1[j] != f32::NEG_INFINITY {
                    proptest::prop_assert_eq!(via, n1[j], "label {}", j);
                }
            }
        }
    }
}
