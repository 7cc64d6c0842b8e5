//! Emission scores: per-token log-probabilities over the active label set `{O, B-k, I-k}`.
//!
//! The boundary head gives type-agnostic logits over (O, B, I); the type head gives a vector per
//! token that is scored against the prototype of each active type by dot product. The two are
//! combined as (DESIGN §3)
//!
//! ```text
//! log P(O)   = log_softmax(boundary)[O]
//! log P(B-k) = log_softmax(boundary)[B] + log_softmax_k(types · prototypes)
//! log P(I-k) = log_softmax(boundary)[I] + log_softmax_k(types · prototypes)
//! ```
//!
//! The label layout is the one of [`crate::decode::labels`]: index 0 is O, `1 + 2k` is B-k and
//! `2 + 2k` is I-k.

use crate::decode::label_count;

/// Computes the emission matrix `[T, 1 + 2 n_types]` (row-major) into `out`.
///
/// * `boundary`: `[T, 3]` unnormalised logits over (O, B, I); `T = boundary.len() / 3`.
/// * `types`: `[T, d]` type vectors, row-major.
/// * `prototypes`: `[n_types, d]` prototypes of the active types, row-major.
///
/// `out` is cleared and resized; its capacity is reused, so a caller that keeps the vector
/// between sentences allocates nothing in the steady state.
///
/// With `n_types >= 1` every row is a normalised distribution (its logsumexp is 0). With
/// `n_types == 0` the only label is O and its score is `log_softmax(boundary)[O]`, which is the
/// same constant for every path and therefore does not change decoding.
///
/// Preconditions: `types.len() == T * d` and `prototypes.len() == n_types * d`. They are checked
/// with `debug_assert`; with inconsistent lengths in a release build the function does not
/// panic, it scores only the tokens and prototypes that are fully present (missing prototype
/// components count as zero). With `d == 0` all type scores are 0, so the types are uniform.
pub fn emissions(
    boundary: &[f32],
    types: &[f32],
    d: usize,
    prototypes: &[f32],
    n_types: usize,
    out: &mut Vec<f32>,
) {
    emissions_with_offsets(boundary, types, d, prototypes, n_types, &[], out);
}

/// [`emissions`] with `type_offsets` (`[T, n_types]`, or empty for none) added to the type
/// scores `types · prototypes` before their log-softmax: how the associated memory
/// ([`crate::associated_memory`]) says "words like this one were of type k".
pub fn emissions_with_offsets(
    boundary: &[f32],
    types: &[f32],
    d: usize,
    prototypes: &[f32],
    n_types: usize,
    type_offsets: &[f32],
    out: &mut Vec<f32>,
) {
    debug_assert_eq!(boundary.len() % 3, 0, "boundary must be [T, 3]");
    debug_assert_eq!(types.len(), boundary.len() / 3 * d, "types must be [T, d]");
    debug_assert_eq!(
        prototypes.len(),
        n_types * d,
        "prototypes must be [n_types, d]"
    );
    let n_labels = label_count(n_types);
    let t_len = (boundary.len() / 3).min(types.len().checked_div(d).unwrap_or(usize::MAX));
    out.clear();
    out.resize(t_len * n_labels, 0.0);
    for (t, row) in out.chunks_exact_mut(n_labels).enumerate() {
        let b = &boundary[3 * t..3 * t + 3];
        let [lo, lb, li] = log_softmax3([b[0], b[1], b[2]]);
        row[0] = lo;
        if n_types == 0 {
            continue;
        }
        let vector = if d == 0 {
            &[][..]
        } else {
            &types[t * d..(t + 1) * d]
        };
        let mut max = f32::NEG_INFINITY;
        for (k, pair) in row[1..].chunks_exact_mut(2).enumerate() {
            let start = (k * d).min(prototypes.len());
            let end = ((k + 1) * d).min(prototypes.len());
            let s = dot(vector, &prototypes[start..end])
                + type_offsets.get(t * n_types + k).copied().unwrap_or(0.0);
            pair[0] = s;
            max = max.max(s);
        }
        let mut sum = 0.0f32;
        for pair in row[1..].chunks_exact(2) {
            sum += (pair[0] - max).exp();
        }
        let lse = max + sum.ln();
        for pair in row[1..].chunks_exact_mut(2) {
            let lt = pair[0] - lse;
            pair[0] = lb + lt;
            pair[1] = li + lt;
        }
    }
}

/// Numerically stable log-softmax of three logits.
#[inline]
fn log_softmax3(x: [f32; 3]) -> [f32; 3] {
    let m = x[0].max(x[1]).max(x[2]);
    let lse = m + ((x[0] - m).exp() + (x[1] - m).exp() + (x[2] - m).exp()).ln();
    [x[0] - lse, x[1] - lse, x[2] - lse]
}

/// Dot product over the common prefix of `a` and `b`, with eight independent accumulators so
/// that the compiler can keep them in vector registers.
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let n = a.len().min(b.len());
    let (a, a_tail) = a[..n].as_chunks::<LANES>();
    let (b, b_tail) = b[..n].as_chunks::<LANES>();
    let mut acc = [0.0f32; LANES];
    for (x, y) in a.iter().zip(b) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in a_tail.iter().zip(b_tail) {
        tail += x * y;
    }
    let a4 = [
        acc[0] + acc[4],
        acc[1] + acc[5],
        acc[2] + acc[6],
        acc[3] + acc[7],
    ];
    (a4[0] + a4[2]) + (a4[1] + a4[3]) + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn logsumexp(xs: &[f32]) -> f64 {
        let m = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        m + xs.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln()
    }

    /// Reference: the formula of the module doc, computed in f64 with no tricks beyond shifting.
    fn reference(
        boundary: &[f32],
        types: &[f32],
        d: usize,
        prototypes: &[f32],
        n: usize,
    ) -> Vec<f64> {
        let t_len = boundary.len() / 3;
        let mut out = Vec::new();
        for t in 0..t_len {
            let b: Vec<f64> = boundary[3 * t..3 * t + 3]
                .iter()
                .map(|&x| x as f64)
                .collect();
            let bm = b.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let bz: f64 = b.iter().map(|x| (x - bm).exp()).sum();
            let pb: Vec<f64> = b.iter().map(|x| (x - bm).exp() / bz).collect();
            let s: Vec<f64> = (0..n)
                .map(|k| {
                    (0..d)
                        .map(|i| types[t * d + i] as f64 * prototypes[k * d + i] as f64)
                        .sum()
                })
                .collect();
            let sm = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sz: f64 = s.iter().map(|x| (x - sm).exp()).sum();
            out.push(pb[0].ln());
            for &sk in &s {
                let pt = (sk - sm).exp() / sz;
                out.push((pb[1] * pt).ln());
                out.push((pb[2] * pt).ln());
            }
        }
        out
    }

    #[test]
    fn no_types_gives_only_o() {
        let mut out = vec![1.0; 7];
        emissions(&[0.0, 0.0, 0.0, 1.0, 2.0, 3.0], &[], 0, &[], 0, &mut out);
        assert_eq!(out.len(), 2);
        assert!((out[0] - (1.0f32 / 3.0).ln()).abs() < 1e-6);
        let expected = 1.0 - logsumexp(&[1.0, 2.0, 3.0]);
        assert!((out[1] as f64 - expected).abs() < 1e-6);
    }

    #[test]
    fn empty_sequence_gives_empty_output() {
        let mut out = vec![1.0; 3];
        emissions(&[], &[], 4, &[0.0; 8], 2, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn large_logits_stay_finite() {
        let mut out = Vec::new();
        emissions(
            &[1e4, -1e4, 0.0],
            &[100.0, -100.0],
            2,
            &[100.0, 0.0, -100.0, 0.0],
            2,
            &mut out,
        );
        assert!(out.iter().all(|x| !x.is_nan()), "{out:?}");
        assert!((out[0]).abs() < 1e-3);
    }

    proptest! {
        #[test]
        fn rows_are_normalised_and_match_reference(
            t_len in 0usize..6,
            n in 1usize..6,
            d in 1usize..20,
            seed in proptest::collection::vec(-4.0f32..4.0, 3 * 6 + 6 * 20 + 6 * 20),
        ) {
            let boundary = &seed[..3 * t_len];
            let types = &seed[18..18 + t_len * d];
            let prototypes = &seed[18 + 120..18 + 120 + n * d];
            let mut out = Vec::new();
            emissions(boundary, types, d, prototypes, n, &mut out);
            let l = 1 + 2 * n;
            prop_assert_eq!(out.len(), t_len * l);
            for row in out.chunks_exact(l) {
                let z = logsumexp(row);
                prop_assert!(z.abs() < 1e-5, "row logsumexp {}", z);
            }
            let want = reference(boundary, types, d, prototypes, n);
            for (i, (&got, &w)) in out.iter().zip(&want).enumerate() {
                prop_assert!((got as f64 - w).abs() < 1e-4 * (1.0 + w.abs()), "at {}: {} vs {}", i, got, w);
            }
        }

        #[test]
        fn dot_matches_naive(v in proptest::collection::vec(-3.0f32..3.0, 0..80)) {
            let (a, b) = v.split_at(v.len() / 2);
            let naive: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
            prop_assert!((dot(a, b) as f64 - naive).abs() < 1e-4);
        }
    }
}
