//! Training emissions in `f64`, the same function as [`ner_edge::emissions::emissions`], with
//! the backward pass to boundary logits, type vectors and prototypes.
//!
//! ```text
//! log P(O)   = log_softmax(boundary)[O]
//! log P(B-k) = log_softmax(boundary)[B] + log_softmax_k(types · prototypes)
//! log P(I-k) = log_softmax(boundary)[I] + log_softmax_k(types · prototypes)
//! ```
//!
//! The two log-softmax factors are kept apart ([`Emissions::log_boundary`],
//! [`Emissions::log_types`]) so that the span and type cross-entropies can add their gradients
//! to the same backward pass.

use anyhow::{ensure, Result};
use ner_edge::decode::label_count;

/// The two log-softmax factors of the emissions of one sentence.
#[derive(Clone, Debug, PartialEq)]
pub struct Emissions {
    /// Sentence length `T`.
    pub len: usize,
    /// Number of active types `n`.
    pub n_types: usize,
    /// `[T, 3]` `log_softmax(boundary)` over (O, B, I).
    pub log_boundary: Vec<f64>,
    /// `[T, n]` `log_softmax_k(types · prototypes)`.
    pub log_types: Vec<f64>,
}

/// `log_softmax` of `x` into `out` (same length, non-empty).
fn log_softmax_into(x: &[f64], out: &mut [f64]) {
    let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + x.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
    for (o, v) in out.iter_mut().zip(x) {
        *o = v - lse;
    }
}

/// Adds to `dx` the gradient through `y = log_softmax(x)` given `y` and `dy`:
/// `dx_i += dy_i − softmax_i · Σ_j dy_j`.
fn log_softmax_backward(y: &[f64], dy: &[f64], dx: &mut [f64]) {
    let total: f64 = dy.iter().sum();
    for ((d, &g), &ly) in dx.iter_mut().zip(dy).zip(y) {
        *d += g - ly.exp() * total;
    }
}

impl Emissions {
    /// Computes both factors for a sentence with `boundary` `[T, 3]`, `types` `[T, d]` and
    /// `prototypes` `[n_types, d]` (all row-major). With `n_types == 0` only the boundary factor
    /// is computed (and `types`, `d` are ignored beyond the shape check).
    ///
    /// Errors: inconsistent shapes, `d == 0` with types present, or non-finite inputs.
    pub fn compute(
        boundary: &[f64],
        types: &[f64],
        d: usize,
        prototypes: &[f64],
        n_types: usize,
    ) -> Result<Emissions> {
        Emissions::compute_with_offsets(boundary, types, d, prototypes, n_types, &[])
    }

    /// [`Emissions::compute`] with `type_offsets` (`[T, n_types]`, or empty for none) added
    /// to the type scores before their log-softmax, as
    /// [`ner_edge::emissions::emissions_with_offsets`]. Errors also on an offset length that
    /// is neither 0 nor `T · n_types` and on non-finite offsets.
    pub fn compute_with_offsets(
        boundary: &[f64],
        types: &[f64],
        d: usize,
        prototypes: &[f64],
        n_types: usize,
        type_offsets: &[f64],
    ) -> Result<Emissions> {
        ensure!(
            boundary.len().is_multiple_of(3),
            "boundary must be [T, 3], got {} values",
            boundary.len()
        );
        let len = boundary.len() / 3;
        ensure!(
            d > 0 || n_types == 0,
            "type dimension must be positive when types are active"
        );
        ensure!(
            types.len() == len * d,
            "types must be [{len}, {d}], got {} values",
            types.len()
        );
        ensure!(
            prototypes.len() == n_types * d,
            "prototypes must be [{n_types}, {d}], got {} values",
            prototypes.len()
        );
        ensure!(
            boundary
                .iter()
                .chain(types)
                .chain(prototypes)
                .all(|x| x.is_finite()),
            "emission inputs must be finite"
        );
        ensure!(
            type_offsets.is_empty() || type_offsets.len() == len * n_types,
            "type offsets must be [{len}, {n_types}], got {} values",
            type_offsets.len()
        );
        ensure!(
            type_offsets.iter().all(|x| x.is_finite()),
            "type offsets must be finite"
        );
        let mut log_boundary = vec![0.0; 3 * len];
        for (x, y) in boundary
            .chunks_exact(3)
            .zip(log_boundary.chunks_exact_mut(3))
        {
            log_softmax_into(x, y);
        }
        let mut log_types = vec![0.0; n_types * len];
        if n_types > 0 {
            let mut scores = vec![0.0; n_types];
            for (t, (v, y)) in types
                .chunks_exact(d)
                .zip(log_types.chunks_exact_mut(n_types))
                .enumerate()
            {
                for (k, (s, p)) in scores
                    .iter_mut()
                    .zip(prototypes.chunks_exact(d))
                    .enumerate()
                {
                    *s = v.iter().zip(p).map(|(a, b)| a * b).sum::<f64>()
                        + type_offsets.get(t * n_types + k).copied().unwrap_or(0.0);
                }
                log_softmax_into(&scores, y);
            }
        }
        Ok(Emissions {
            len,
            n_types,
            log_boundary,
            log_types,
        })
    }

    /// Number of labels `L = 1 + 2 n_types`.
    pub fn n_labels(&self) -> usize {
        label_count(self.n_types)
    }

    /// The emission matrix `[T, L]` (layout of [`ner_edge::decode::labels`]).
    pub fn scores(&self) -> Vec<f64> {
        let (n, l) = (self.n_types, self.n_labels());
        let mut out = vec![0.0; self.len * l];
        for (t, row) in out.chunks_exact_mut(l).enumerate() {
            let lb = &self.log_boundary[3 * t..3 * t + 3];
            row[0] = lb[0];
            for k in 0..n {
                let lt = self.log_types[t * n + k];
                row[1 + 2 * k] = lb[1] + lt;
                row[2 + 2 * k] = lb[2] + lt;
            }
        }
        out
    }

    /// Adds the gradient wrt the two factors implied by `d_scores` (`[T, L]`, the gradient wrt
    /// [`Emissions::scores`]) into `d_log_boundary` (`[T, 3]`) and `d_log_types` (`[T, n]`).
    ///
    /// Precondition (debug-asserted): the three lengths match this sentence.
    pub fn split_grad(
        &self,
        d_scores: &[f64],
        d_log_boundary: &mut [f64],
        d_log_types: &mut [f64],
    ) {
        let (n, l) = (self.n_types, self.n_labels());
        debug_assert_eq!(d_scores.len(), self.len * l);
        debug_assert_eq!(d_log_boundary.len(), self.len * 3);
        debug_assert_eq!(d_log_types.len(), self.len * n);
        for (t, row) in d_scores.chunks_exact(l).enumerate() {
            let db = &mut d_log_boundary[3 * t..3 * t + 3];
            db[0] += row[0];
            for k in 0..n {
                let (gb, gi) = (row[1 + 2 * k], row[2 + 2 * k]);
                db[1] += gb;
                db[2] += gi;
                d_log_types[t * n + k] += gb + gi;
            }
        }
    }

    /// The gradient wrt the type scores (`types · prototypes` plus any offsets, before their
    /// log-softmax), `[T, n]`, given the gradient wrt [`Emissions::log_types`].
    pub fn type_score_grads(&self, d_log_types: &[f64]) -> Vec<f64> {
        let n = self.n_types;
        let mut out = vec![0.0; self.len * n];
        if n == 0 {
            return out;
        }
        for ((y, dy), o) in self
            .log_types
            .chunks_exact(n)
            .zip(d_log_types.chunks_exact(n))
            .zip(out.chunks_exact_mut(n))
        {
            log_softmax_backward(y, dy, o);
        }
        out
    }

    /// Backward pass: given the gradients wrt the two factors, adds the gradients wrt
    /// `boundary` (`[T, 3]`), `types` (`[T, d]`) and `prototypes` (`[n, d]`) into the three
    /// accumulators. `types` and `prototypes` are the inputs given to [`Emissions::compute`].
    ///
    /// Precondition (debug-asserted): every length matches the sentence given to `compute`;
    /// with `n_types == 0` only the boundary arrays are used (the others may be empty).
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        types: &[f64],
        d: usize,
        prototypes: &[f64],
        d_log_boundary: &[f64],
        d_log_types: &[f64],
        d_boundary: &mut [f64],
        d_types: &mut [f64],
        d_prototypes: &mut [f64],
    ) {
        let n = self.n_types;
        debug_assert_eq!(d_log_boundary.len(), self.len * 3);
        debug_assert_eq!(d_log_types.len(), self.len * n);
        debug_assert_eq!(d_boundary.len(), self.len * 3);
        for t in 0..self.len {
            let r = 3 * t..3 * t + 3;
            log_softmax_backward(
                &self.log_boundary[r.clone()],
                &d_log_boundary[r.clone()],
                &mut d_boundary[r],
            );
        }
        if n == 0 {
            return;
        }
        debug_assert_eq!(types.len(), self.len * d);
        debug_assert_eq!(d_types.len(), self.len * d);
        debug_assert_eq!(prototypes.len(), n * d);
        debug_assert_eq!(d_prototypes.len(), n * d);
        let mut ds = vec![0.0; n];
        for t in 0..self.len {
            ds.fill(0.0);
            let r = t * n..(t + 1) * n;
            log_softmax_backward(&self.log_types[r.clone()], &d_log_types[r], &mut ds);
            let v = &types[t * d..(t + 1) * d];
            let dv = &mut d_types[t * d..(t + 1) * d];
            for (k, &g) in ds.iter().enumerate() {
                if g == 0.0 {
                    continue;
                }
                let p = &prototypes[k * d..(k + 1) * d];
                let dp = &mut d_prototypes[k * d..(k + 1) * d];
                for i in 0..d {
                    dv[i] += g * p[i];
                    dp[i] += g * v[i];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::rng::SplitMix64;

    fn wide(v: &[f32]) -> Vec<f64> {
        v.iter().map(|&x| f64::from(x)).collect()
    }

    /// The runtime computes in f32; on inputs in ±2.5 with d = 5 its rounding stays below
    /// `1e-6·(1 + |x|)` of the f64 value.
    #[test]
    fn equals_the_runtime_emissions() {
        let mut rng = SplitMix64::new(3);
        for (len, n, d) in [
            (1, 1, 5),
            (4, 3, 5),
            (7, 2, 1),
            (5, 0, 4),
            (0, 2, 3),
            (6, 4, 17),
        ] {
            let boundary = rng.normal_vec(3 * len, 1.2);
            let types = rng.normal_vec(len * d, 0.8);
            let protos = rng.normal_vec(n * d, 0.8);
            let mut want = Vec::new();
            ner_edge::emissions::emissions(&boundary, &types, d, &protos, n, &mut want);
            let got = Emissions::compute(&wide(&boundary), &wide(&types), d, &wide(&protos), n)
                .unwrap()
                .scores();
            assert_eq!(got.len(), want.len());
            for (g, &w) in got.iter().zip(&want) {
                let w = f64::from(w);
                assert!((g - w).abs() <= 1e-6 * (1.0 + w.abs()), "{g} vs {w}");
            }
        }
    }

    #[test]
    fn bad_shapes_are_rejected() {
        assert!(Emissions::compute(&[0.0; 4], &[], 0, &[], 0).is_err());
        assert!(Emissions::compute(&[0.0; 6], &[0.0; 5], 3, &[0.0; 3], 1).is_err());
        assert!(Emissions::compute(&[0.0; 6], &[0.0; 6], 3, &[0.0; 5], 2).is_err());
        assert!(Emissions::compute(&[0.0; 3], &[], 0, &[], 1).is_err());
        assert!(Emissions::compute(&[f64::NAN, 0.0, 0.0], &[0.0], 1, &[0.0], 1).is_err());
    }

    /// Central differences (step 1e-5, f64) of `Σ g ⊙ scores` wrt every boundary logit, type
    /// component and prototype component agree with the backward pass within `1e-8 + 1e-6·|g|`.
    #[test]
    fn backward_matches_finite_differences() {
        let mut rng = SplitMix64::new(11);
        let (len, n, d) = (4, 3, 5);
        let l = label_count(n);
        let b: Vec<f64> = (0..3 * len).map(|_| rng.next_normal()).collect();
        let v: Vec<f64> = (0..len * d).map(|_| rng.next_normal()).collect();
        let p: Vec<f64> = (0..n * d).map(|_| rng.next_normal()).collect();
        let g: Vec<f64> = (0..len * l).map(|_| rng.next_normal()).collect();
        let f = |b: &[f64], v: &[f64], p: &[f64]| -> f64 {
            let e = Emissions::compute(b, v, d, p, n).unwrap().scores();
            e.iter().zip(&g).map(|(x, y)| x * y).sum()
        };
        let e = Emissions::compute(&b, &v, d, &p, n).unwrap();
        let (mut dlb, mut dlt) = (vec![0.0; 3 * len], vec![0.0; len * n]);
        e.split_grad(&g, &mut dlb, &mut dlt);
        let (mut db, mut dv, mut dp) = (vec![0.0; b.len()], vec![0.0; v.len()], vec![0.0; p.len()]);
        e.backward(&v, d, &p, &dlb, &dlt, &mut db, &mut dv, &mut dp);
        let h = 1e-5;
        let check = |an: f64, plus: f64, minus: f64, what: &str| {
            let fd = (plus - minus) / (2.0 * h);
            assert!(
                (fd - an).abs() < 1e-8 + 1e-6 * an.abs(),
                "{what}: {fd} vs {an}"
            );
        };
        for i in 0..b.len() {
            let (mut bp, mut bm) = (b.clone(), b.clone());
            bp[i] += h;
            bm[i] -= h;
            check(db[i], f(&bp, &v, &p), f(&bm, &v, &p), "boundary");
        }
        for i in 0..v.len() {
            let (mut vp, mut vm) = (v.clone(), v.clone());
            vp[i] += h;
            vm[i] -= h;
            check(dv[i], f(&b, &vp, &p), f(&b, &vm, &p), "types");
        }
        for i in 0..p.len() {
            let (mut pp, mut pm) = (p.clone(), p.clone());
            pp[i] += h;
            pm[i] -= h;
            check(dp[i], f(&b, &v, &pp), f(&b, &v, &pm), "prototypes");
        }
    }
}
