//! Forward–backward in log space: partition function, per-position label marginals and exact
//! entity (span) probabilities of the linear-chain CRF.

use super::cdt::{apply_bio_constraints, Transitions};
use super::labels::Tag;

/// Result of [`marginals`]: the CRF posterior of one sentence, over valid BIO sequences.
///
/// Forward and backward scores are kept in f64 log space so that long sentences lose no
/// precision; probabilities are handed out as f32.
#[derive(Clone, Debug)]
pub struct Marginals {
    n_labels: usize,
    len: usize,
    log_z: f64,
    /// `[T, L]` log forward scores: log-sum over prefixes ending in each label, incl. its emission.
    alpha: Vec<f64>,
    /// `[T, L]` log backward scores: sum over suffixes after each label, incl. end scores.
    beta: Vec<f64>,
    /// `[T, L]` label marginals.
    probs: Vec<f32>,
    emissions: Vec<f32>,
    trans: Vec<f32>,
    end: Vec<f32>,
}

impl Marginals {
    /// Number of labels `L`.
    pub fn n_labels(&self) -> usize {
        self.n_labels
    }

    /// Sentence length `T`.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the sentence is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Log partition function `log Σ_paths exp(score(path))` (0 for the empty sentence; `-inf`
    /// when every path is forbidden).
    pub fn log_z(&self) -> f64 {
        self.log_z
    }

    /// `[T, L]` row-major label marginals `P(y_t = label)`; each row sums to 1 (to rounding)
    /// unless every path is forbidden, in which case it is all zeros.
    pub fn probs(&self) -> &[f32] {
        &self.probs
    }

    /// `P(y_position = label)`, 0 when out of range.
    pub fn prob(&self, position: usize, label: usize) -> f32 {
        if position < self.len && label < self.n_labels {
            self.probs[position * self.n_labels + label]
        } else {
            0.0
        }
    }

    /// Exact probability that positions `start..=end_inclusive` are labelled
    /// B-k, I-k, …, I-k and position `end_inclusive + 1` (if any) is not I-k, i.e. that this exact
    /// entity of type `type_k` is present. Returns 0 for an empty or out-of-range span or type.
    pub fn span_probability(&self, start: usize, end_inclusive: usize, type_k: usize) -> f32 {
        let l = self.n_labels;
        if type_k >= l / 2
            || start > end_inclusive
            || end_inclusive >= self.len
            || !self.log_z.is_finite()
        {
            return 0.0;
        }
        let b = Tag::B(type_k).to_index();
        let i = Tag::I(type_k).to_index();
        let at = |t: usize, j: usize| t * l + j;
        let mut score = self.alpha[at(start, b)];
        let mut prev = b;
        for t in start + 1..=end_inclusive {
            score += self.trans[prev * l + i] as f64 + self.emissions[at(t, i)] as f64;
            prev = i;
        }
        let tail = if end_inclusive + 1 < self.len {
            let t = end_inclusive + 1;
            logsumexp((0..l).filter(|&j| j != i).map(|j| {
                self.trans[prev * l + j] as f64
                    + self.emissions[at(t, j)] as f64
                    + self.beta[at(t, j)]
            }))
        } else {
            self.end[prev] as f64
        };
        let p = (score + tail - self.log_z).exp();
        if p.is_nan() {
            0.0
        } else {
            p.min(1.0) as f32
        }
    }
}

/// `log Σ exp(x)` that treats `-inf` entries as zero mass: never NaN for inputs in
/// `[-inf, +inf)`, `-inf` for an empty or all-`-inf` input.
fn logsumexp(xs: impl Iterator<Item = f64> + Clone) -> f64 {
    let m = xs.clone().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + xs.map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// Below this a scaled sum is recomputed exactly in log space (it may have lost terms to underflow).
const TINY: f64 = 1e-280;

/// Runs forward–backward over `emissions` (`[T, n_labels]`, `T = emissions.len() / n_labels`)
/// with transitions `t`; the path score is the one defined on [`Transitions`]. As in
/// [`super::viterbi()`], hard BIO constraints are enforced whatever `t` contains, so the
/// distribution is over valid BIO sequences only.
///
/// Scores are kept as f64 logarithms. Each step shifts by the largest previous score and by the
/// largest transition, sums in linear space, and takes the logarithm; a sum small enough that
/// underflow could have lost terms is recomputed with a per-label logsumexp, so the result is
/// exact to rounding whatever the dynamic range, and `-inf` entries never produce NaN.
///
/// Preconditions as for [`super::viterbi()`]: `t.n_labels == n_labels`, `t` passes
/// [`Transitions::check`], emissions are not NaN or `+inf`. `n_labels == 0` gives an empty result.
pub fn marginals(emissions: &[f32], n_labels: usize, t: &Transitions) -> Marginals {
    debug_assert_eq!(
        t.n_labels, n_labels,
        "transitions are for another label count"
    );
    debug_assert!(t.check().is_ok(), "malformed transitions");
    let l = n_labels;
    let t_len = emissions.len().checked_div(l).unwrap_or(0);
    let emissions = emissions[..t_len * l].to_vec();
    let mut start = t.start[..l].to_vec();
    let mut trans = t.trans[..l * l].to_vec();
    apply_bio_constraints(&mut start, &mut trans, l);
    let end = t.end[..l].to_vec();
    let mut alpha = vec![f64::NEG_INFINITY; t_len * l];
    let mut beta = vec![f64::NEG_INFINITY; t_len * l];
    let mut probs = vec![0.0f32; t_len * l];
    if t_len == 0 {
        return Marginals {
            n_labels: l,
            len: 0,
            log_z: 0.0,
            alpha,
            beta,
            probs,
            emissions,
            trans,
            end,
        };
    }

    let shift = trans
        .iter()
        .copied()
        .filter(|w| w.is_finite())
        .fold(f32::NEG_INFINITY, f32::max);
    let shift = if shift.is_finite() { shift as f64 } else { 0.0 };
    let scaled: Vec<f64> = trans.iter().map(|&w| (w as f64 - shift).exp()).collect();
    let mut lin = vec![0.0f64; l];
    let mut sum = vec![0.0f64; l];

    for j in 0..l {
        alpha[j] = start[j] as f64 + emissions[j] as f64;
    }
    for step in 1..t_len {
        let (done, rest) = alpha.split_at_mut(step * l);
        let prev = &done[(step - 1) * l..];
        let cur = &mut rest[..l];
        let m = max(prev);
        if m == f64::NEG_INFINITY {
            continue;
        }
        for (a, &p) in lin.iter_mut().zip(prev) {
            *a = (p - m).exp();
        }
        sum.fill(0.0);
        for (&a, row) in lin.iter().zip(scaled.chunks_exact(l)) {
            if a != 0.0 {
                for (s, &w) in sum.iter_mut().zip(row) {
                    *s += a * w;
                }
            }
        }
        let em = &emissions[step * l..(step + 1) * l];
        for (j, c) in cur.iter_mut().enumerate() {
            let log_sum = if sum[j] > TINY {
                m + shift + sum[j].ln()
            } else {
                logsumexp(
                    prev.iter()
                        .zip(trans[j..].iter().step_by(l))
                        .map(|(&p, &w)| p + w as f64),
                )
            };
            *c = em[j] as f64 + log_sum;
        }
    }
    let last = (t_len - 1) * l;
    let log_z = logsumexp((0..l).map(|j| alpha[last + j] + end[j] as f64));

    for j in 0..l {
        beta[last + j] = end[j] as f64;
    }
    let mut ahead = vec![0.0f64; l];
    for step in (0..t_len - 1).rev() {
        let (head, tail) = beta.split_at_mut((step + 1) * l);
        let next = &tail[..l];
        let cur = &mut head[step * l..];
        for ((u, &e), &b) in ahead.iter_mut().zip(&emissions[(step + 1) * l..]).zip(next) {
            *u = e as f64 + b;
        }
        let m = max(&ahead);
        if m == f64::NEG_INFINITY {
            continue;
        }
        for (x, &u) in lin.iter_mut().zip(&ahead) {
            *x = (u - m).exp();
        }
        for ((c, row), trow) in cur
            .iter_mut()
            .zip(scaled.chunks_exact(l))
            .zip(trans.chunks_exact(l))
        {
            let s: f64 = row.iter().zip(&lin).map(|(w, x)| w * x).sum();
            *c = if s > TINY {
                m + shift + s.ln()
            } else {
                logsumexp(trow.iter().zip(&ahead).map(|(&w, &u)| w as f64 + u))
            };
        }
    }

    if log_z.is_finite() {
        for ((p, &a), &b) in probs.iter_mut().zip(&alpha).zip(&beta) {
            let v = a + b - log_z;
            *p = if v == f64::NEG_INFINITY || v.is_nan() {
                0.0
            } else {
                v.exp().min(1.0) as f32
            };
        }
    }
    Marginals {
        n_labels: l,
        len: t_len,
        log_z,
        alpha,
        beta,
        probs,
        emissions,
        trans,
        end,
    }
}

fn max(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}
