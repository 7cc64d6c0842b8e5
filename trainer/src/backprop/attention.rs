//! Multi-head scaled dot-product self-attention within each sentence of a packed batch (no
//! padding, no mask). Head `h` owns columns `h·dh .. (h+1)·dh` of `q`, `k`, `v` and the context,
//! as in [`crate::model::reference`].
//!
//! Per sentence `s` of `T` tokens and head `h`: `P = softmax(Q Kᵀ / √dh)` (rows over keys),
//! `ctx = P V`. The probabilities are stored per sentence, then per head, each block `[T, T]`
//! row-major; [`probs_len`] gives the total length.

use super::gemm::{gemm, mat, mat_mut};
use super::scalar::Real;

/// Length of the probability buffer for a batch with sentence `offsets` and `heads` heads:
/// `heads · Σ_s T_s²`.
pub fn probs_len(offsets: &[usize], heads: usize) -> usize {
    heads
        * offsets
            .windows(2)
            .map(|w| (w[1] - w[0]).pow(2))
            .sum::<usize>()
}

/// Forward: `q`, `k`, `v`, `ctx` `[N, D]`, `offsets` the sentence bounds (`offsets[0] = 0`, last
/// `= N`), `probs` of [`probs_len`]. `probs` and `ctx` are overwritten.
pub fn attention_forward<T: Real>(
    q: &[T],
    k: &[T],
    v: &[T],
    offsets: &[usize],
    heads: usize,
    probs: &mut [T],
    ctx: &mut [T],
) {
    let n = *offsets.last().unwrap_or(&0);
    let d = q.len() / n.max(1);
    let dh = d / heads;
    debug_assert_eq!(q.len(), n * d);
    debug_assert_eq!(probs.len(), probs_len(offsets, heads));
    let scale = T::ONE / T::from_f64(dh as f64).sqrt();
    let mut p_at = 0;
    for w in offsets.windows(2) {
        let (start, t) = (w[0], w[1] - w[0]);
        if t == 0 {
            continue;
        }
        for h in 0..heads {
            let at = start * d + h * dh;
            let p = &mut probs[p_at..p_at + t * t];
            p_at += t * t;
            let qv = mat(&q[at..], t, dh, d);
            let kv = mat(&k[at..], t, dh, d);
            gemm(scale, &qv, &kv.t(), T::ZERO, &mut mat_mut(p, t, t, t));
            for row in p.chunks_exact_mut(t) {
                softmax_in_place(row);
            }
            gemm(
                T::ONE,
                &mat(p, t, t, t),
                &mat(&v[at..], t, dh, d),
                T::ZERO,
                &mut mat_mut(&mut ctx[at..], t, dh, d),
            );
        }
    }
}

/// Backward of [`attention_forward`] given `d_ctx = ∂L/∂ctx`: overwrites `dq`, `dk`, `dv`
/// `[N, D]`. `scratch` is resized to hold one `[T, T]` block.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward<T: Real>(
    q: &[T],
    k: &[T],
    v: &[T],
    probs: &[T],
    d_ctx: &[T],
    offsets: &[usize],
    heads: usize,
    dq: &mut [T],
    dk: &mut [T],
    dv: &mut [T],
    scratch: &mut Vec<T>,
) {
    let n = *offsets.last().unwrap_or(&0);
    let d = q.len() / n.max(1);
    let dh = d / heads;
    debug_assert_eq!(d_ctx.len(), n * d);
    debug_assert_eq!(probs.len(), probs_len(offsets, heads));
    let scale = T::ONE / T::from_f64(dh as f64).sqrt();
    let mut p_at = 0;
    for w in offsets.windows(2) {
        let (start, t) = (w[0], w[1] - w[0]);
        if t == 0 {
            continue;
        }
        scratch.resize(scratch.len().max(t * t), T::ZERO);
        for h in 0..heads {
            let at = start * d + h * dh;
            let p = &probs[p_at..p_at + t * t];
            p_at += t * t;
            let pv = mat(p, t, t, t);
            let dcv = mat(&d_ctx[at..], t, dh, d);
            let ds = &mut scratch[..t * t];
            gemm(
                T::ONE,
                &dcv,
                &mat(&v[at..], t, dh, d).t(),
                T::ZERO,
                &mut mat_mut(ds, t, t, t),
            );
            gemm(
                T::ONE,
                &pv.t(),
                &dcv,
                T::ZERO,
                &mut mat_mut(&mut dv[at..], t, dh, d),
            );
            for (dr, pr) in ds.chunks_exact_mut(t).zip(p.chunks_exact(t)) {
                softmax_backward_in_place(pr, dr);
            }
            let dsv = mat(ds, t, t, t);
            gemm(
                scale,
                &dsv,
                &mat(&k[at..], t, dh, d),
                T::ZERO,
                &mut mat_mut(&mut dq[at..], t, dh, d),
            );
            gemm(
                scale,
                &dsv.t(),
                &mat(&q[at..], t, dh, d),
                T::ZERO,
                &mut mat_mut(&mut dk[at..], t, dh, d),
            );
        }
    }
}

/// Numerically stable softmax of one row, as [`crate::model::reference::softmax`].
pub fn softmax_in_place<T: Real>(row: &mut [T]) {
    let max = row.iter().copied().fold(row[0], T::max);
    let mut sum = T::ZERO;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = T::ONE / sum;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// Softmax backward for one row with probabilities `p`: on entry `d = ∂L/∂p`, on return
/// `∂L/∂logits = p ⊙ (d - Σ p⊙d)`.
pub fn softmax_backward_in_place<T: Real>(p: &[T], d: &mut [T]) {
    let dot: T = p.iter().zip(d.iter()).map(|(&a, &b)| a * b).sum();
    for (g, &pi) in d.iter_mut().zip(p) {
        *g = pi * (*g - dot);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_grad_close, numeric_grad, random_vec, weighted_sum};
    use super::*;

    fn run(q: &[f64], k: &[f64], v: &[f64], offsets: &[usize], heads: usize) -> Vec<f64> {
        let mut probs = vec![0.0; probs_len(offsets, heads)];
        let mut ctx = vec![f64::NAN; q.len()];
        attention_forward(q, k, v, offsets, heads, &mut probs, &mut ctx);
        ctx
    }

    #[test]
    fn attention_matches_naive_per_sentence() {
        let (d, heads) = (6, 3);
        let offsets = [0, 1, 3, 3, 7];
        let n = 7;
        let q = random_vec(n * d, 1.0, 1);
        let k = random_vec(n * d, 1.0, 2);
        let v = random_vec(n * d, 1.0, 3);
        let ctx = run(&q, &k, &v, &offsets, heads);
        let dh = d / heads;
        for w in offsets.windows(2) {
            for h in 0..heads {
                for i in w[0]..w[1] {
                    let mut s: Vec<f64> = (w[0]..w[1])
                        .map(|j| {
                            (0..dh)
                                .map(|c| q[i * d + h * dh + c] * k[j * d + h * dh + c])
                                .sum::<f64>()
                                / (dh as f64).sqrt()
                        })
                        .collect();
                    softmax_in_place(&mut s);
                    for c in 0..dh {
                        let want: f64 = (w[0]..w[1])
                            .map(|j| s[j - w[0]] * v[j * d + h * dh + c])
                            .sum();
                        assert!((ctx[i * d + h * dh + c] - want).abs() < 1e-12);
                    }
                }
            }
        }
    }

    #[test]
    fn attention_gradients_match_finite_differences() {
        let (d, heads) = (6, 2);
        let offsets = [0, 2, 3, 8];
        let n = 8;
        let q = random_vec(n * d, 1.0, 4);
        let k = random_vec(n * d, 1.0, 5);
        let v = random_vec(n * d, 1.0, 6);
        let r = random_vec(n * d, 1.0, 7);
        let mut probs = vec![0.0; probs_len(&offsets, heads)];
        let mut ctx = vec![0.0; n * d];
        attention_forward(&q, &k, &v, &offsets, heads, &mut probs, &mut ctx);
        let (mut dq, mut dk, mut dv) = (vec![f64::NAN; n * d], vec![0.0; n * d], vec![0.0; n * d]);
        let mut scratch = Vec::new();
        attention_backward(
            &q,
            &k,
            &v,
            &probs,
            &r,
            &offsets,
            heads,
            &mut dq,
            &mut dk,
            &mut dv,
            &mut scratch,
        );
        let loss =
            |q: &[f64], k: &[f64], v: &[f64]| weighted_sum(&run(q, k, v, &offsets, heads), &r);
        assert_grad_close("dq", &dq, &numeric_grad(&q, |q| loss(q, &k, &v)));
        assert_grad_close("dk", &dk, &numeric_grad(&k, |k| loss(&q, k, &v)));
        assert_grad_close("dv", &dv, &numeric_grad(&v, |v| loss(&q, &k, v)));
    }
}
