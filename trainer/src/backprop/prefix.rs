//! Prompt-guided attention: learned prefix key/value vectors every token also attends to
//! (LightNER's prompts), in the zero-initialised gated form of LLaMA-Adapter.
//!
//! Per layer there are `P` prefix keys `Kp` and values `Vp` (`[P, D]`, head `h` owning columns
//! `h·dh .. (h+1)·dh` as in [`super::attention`]) and one gate `g_h` per head. Each token's
//! query `q` (`[N, D]`, the layer's query projection) adds to its self-attention context
//!
//! ```text
//! ctx_h += g_h · softmax(q_h Kp_hᵀ / √dh) Vp_h
//! ```
//!
//! The prefix softmax is separate from the self-attention's, so a zero gate leaves the frozen
//! model's outputs exactly as they were and training starts from it; no mask is involved (the
//! prefixes are there for every token) and no token interacts with another through this term.
//! The runtime's graph ([`ner_edge::encoder::prefix`]) computes the same expression.

use super::attention::{softmax_backward_in_place, softmax_in_place};
use super::gemm::{gemm, mat, mat_mut};
use super::scalar::Real;

/// The prefixes of every layer of a model: `len` = `P` vectors per layer.
#[derive(Clone, Debug, PartialEq)]
pub struct Prefixes<T = f32> {
    /// Prefix vectors per layer (`P`, at least 1).
    pub len: usize,
    /// `[layers, P, D]`.
    pub key: Vec<T>,
    /// `[layers, P, D]`.
    pub value: Vec<T>,
    /// `[layers, heads]`.
    pub gate: Vec<T>,
}

impl<T: Real> Prefixes<T> {
    /// All-zero prefixes of length `len` for `layers` layers of width `hidden` with `heads` heads.
    pub fn zeros(layers: usize, len: usize, hidden: usize, heads: usize) -> Prefixes<T> {
        Prefixes {
            len,
            key: vec![T::ZERO; layers * len * hidden],
            value: vec![T::ZERO; layers * len * hidden],
            gate: vec![T::ZERO; layers * heads],
        }
    }

    /// Number of layers the prefixes cover (0 when `len` is 0).
    pub fn layers(&self, hidden: usize) -> usize {
        self.key.len() / (self.len * hidden).max(1)
    }

    /// Layer `l`'s keys, values (`[P, D]`) and gates (`[heads]`).
    pub fn layer(&self, l: usize, hidden: usize, heads: usize) -> PrefixLayer<'_, T> {
        let pd = self.len * hidden;
        PrefixLayer {
            len: self.len,
            key: &self.key[l * pd..(l + 1) * pd],
            value: &self.value[l * pd..(l + 1) * pd],
            gate: &self.gate[l * heads..(l + 1) * heads],
        }
    }

    /// Layer `l`'s tensors as a gradient to accumulate into.
    pub fn layer_mut(&mut self, l: usize, hidden: usize, heads: usize) -> PrefixLayerGrad<'_, T> {
        let pd = self.len * hidden;
        PrefixLayerGrad {
            key: &mut self.key[l * pd..(l + 1) * pd],
            value: &mut self.value[l * pd..(l + 1) * pd],
            gate: &mut self.gate[l * heads..(l + 1) * heads],
        }
    }

    /// The three tensors, mutably, in the order key, value, gate.
    pub fn tensors_mut(&mut self) -> [&mut Vec<T>; 3] {
        [&mut self.key, &mut self.value, &mut self.gate]
    }
}

/// One layer's prefixes, borrowed.
#[derive(Clone, Copy)]
pub struct PrefixLayer<'a, T> {
    /// `P`, at least 1.
    pub len: usize,
    /// `[P, D]`.
    pub key: &'a [T],
    /// `[P, D]`.
    pub value: &'a [T],
    /// `[heads]`.
    pub gate: &'a [T],
}

/// Forward of one layer's prefix term: `q` `[N, D]`; adds the gated term into `ctx` `[N, D]`,
/// and overwrites `probs` (`[heads, N, P]`, the prefix softmax) and `branch` (`[N, D]`, the
/// ungated `softmax(·) Vp`) for the backward.
pub fn prefix_attention_forward<T: Real>(
    q: &[T],
    prefix: PrefixLayer<'_, T>,
    heads: usize,
    probs: &mut Vec<T>,
    branch: &mut Vec<T>,
    ctx: &mut [T],
) {
    let p = prefix.len;
    let d = prefix.key.len() / p.max(1);
    let n = q.len() / d.max(1);
    let dh = d / heads;
    debug_assert_eq!(ctx.len(), n * d);
    probs.resize(heads * n * p, T::ZERO);
    branch.resize(n * d, T::ZERO);
    if n == 0 || p == 0 {
        return;
    }
    let scale = T::ONE / T::from_f64(dh as f64).sqrt();
    for h in 0..heads {
        let a = &mut probs[h * n * p..(h + 1) * n * p];
        let qv = mat(&q[h * dh..], n, dh, d);
        let kv = mat(&prefix.key[h * dh..], p, dh, d);
        gemm(scale, &qv, &kv.t(), T::ZERO, &mut mat_mut(a, n, p, p));
        for row in a.chunks_exact_mut(p) {
            softmax_in_place(row);
        }
        gemm(
            T::ONE,
            &mat(a, n, p, p),
            &mat(&prefix.value[h * dh..], p, dh, d),
            T::ZERO,
            &mut mat_mut(&mut branch[h * dh..], n, dh, d),
        );
        let g = prefix.gate[h];
        for (c, b) in ctx.chunks_exact_mut(d).zip(branch.chunks_exact(d)) {
            for (o, &v) in c[h * dh..(h + 1) * dh]
                .iter_mut()
                .zip(&b[h * dh..(h + 1) * dh])
            {
                *o += g * v;
            }
        }
    }
}

/// Gradients of one layer's prefixes, accumulated (`+=`).
pub struct PrefixLayerGrad<'a, T> {
    /// `[P, D]`.
    pub key: &'a mut [T],
    /// `[P, D]`.
    pub value: &'a mut [T],
    /// `[heads]`.
    pub gate: &'a mut [T],
}

/// Backward of [`prefix_attention_forward`] given `d_ctx = ∂L/∂ctx`: adds `∂L/∂q` into `dq`
/// and the prefix gradients into `grad`. `scratch` is resized to hold one `[N, P]` block.
#[allow(clippy::too_many_arguments)]
pub fn prefix_attention_backward<T: Real>(
    q: &[T],
    prefix: PrefixLayer<'_, T>,
    heads: usize,
    probs: &[T],
    branch: &[T],
    d_ctx: &[T],
    dq: &mut [T],
    grad: PrefixLayerGrad<'_, T>,
    scratch: &mut Vec<T>,
) {
    let p = prefix.len;
    let d = prefix.key.len() / p.max(1);
    let n = q.len() / d.max(1);
    debug_assert_eq!(d_ctx.len(), n * d);
    if n == 0 || p == 0 {
        return;
    }
    let dh = d / heads;
    let scale = T::ONE / T::from_f64(dh as f64).sqrt();
    scratch.resize(n * p, T::ZERO);
    for h in 0..heads {
        let cols = h * dh..(h + 1) * dh;
        let g = prefix.gate[h];
        let mut dg = T::ZERO;
        for (dc, b) in d_ctx.chunks_exact(d).zip(branch.chunks_exact(d)) {
            for (&x, &y) in dc[cols.clone()].iter().zip(&b[cols.clone()]) {
                dg += x * y;
            }
        }
        grad.gate[h] += dg;
        let a = &probs[h * n * p..(h + 1) * n * p];
        let av = mat(a, n, p, p);
        let dcv = mat(&d_ctx[h * dh..], n, dh, d);
        let da = &mut scratch[..n * p];
        gemm(
            g,
            &dcv,
            &mat(&prefix.value[h * dh..], p, dh, d).t(),
            T::ZERO,
            &mut mat_mut(da, n, p, p),
        );
        gemm(
            g,
            &av.t(),
            &dcv,
            T::ONE,
            &mut mat_mut(&mut grad.value[h * dh..], p, dh, d),
        );
        for (dr, pr) in da.chunks_exact_mut(p).zip(a.chunks_exact(p)) {
            softmax_backward_in_place(pr, dr);
        }
        let dsv = mat(da, n, p, p);
        gemm(
            scale,
            &dsv,
            &mat(&prefix.key[h * dh..], p, dh, d),
            T::ONE,
            &mut mat_mut(&mut dq[h * dh..], n, dh, d),
        );
        gemm(
            scale,
            &dsv.t(),
            &mat(&q[h * dh..], n, dh, d),
            T::ONE,
            &mut mat_mut(&mut grad.key[h * dh..], p, dh, d),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_grad_close, numeric_grad, random_vec, weighted_sum};
    use super::*;

    const N: usize = 5;
    const D: usize = 6;
    const HEADS: usize = 2;
    const P: usize = 3;

    fn ctx_of(q: &[f64], key: &[f64], value: &[f64], gate: &[f64]) -> Vec<f64> {
        let base = random_vec(N * D, 1.0, 9);
        let mut ctx = base.clone();
        let (mut probs, mut branch) = (Vec::new(), Vec::new());
        let prefix = PrefixLayer {
            len: P,
            key,
            value,
            gate,
        };
        prefix_attention_forward(q, prefix, HEADS, &mut probs, &mut branch, &mut ctx);
        ctx
    }

    #[test]
    fn gradients_match_finite_differences() {
        let q = random_vec(N * D, 1.0, 1);
        let key = random_vec(P * D, 1.0, 2);
        let value = random_vec(P * D, 1.0, 3);
        let gate = vec![0.7, -1.3];
        let r = random_vec(N * D, 1.0, 4);
        let loss =
            |q: &[f64], k: &[f64], v: &[f64], g: &[f64]| weighted_sum(&ctx_of(q, k, v, g), &r);
        let mut ctx = vec![0.0; N * D];
        let (mut probs, mut branch) = (Vec::new(), Vec::new());
        let prefix = PrefixLayer {
            len: P,
            key: &key,
            value: &value,
            gate: &gate,
        };
        prefix_attention_forward(&q, prefix, HEADS, &mut probs, &mut branch, &mut ctx);
        let mut dq = vec![0.5; N * D];
        let (mut dk, mut dv, mut dg) = (vec![0.0; P * D], vec![0.0; P * D], vec![0.0; HEADS]);
        let grad = PrefixLayerGrad {
            key: &mut dk,
            value: &mut dv,
            gate: &mut dg,
        };
        let mut scratch = Vec::new();
        prefix_attention_backward(
            &q,
            prefix,
            HEADS,
            &probs,
            &branch,
            &r,
            &mut dq,
            grad,
            &mut scratch,
        );
        let dq: Vec<f64> = dq.iter().map(|g| g - 0.5).collect();
        assert_grad_close(
            "dq",
            &dq,
            &numeric_grad(&q, |x| loss(x, &key, &value, &gate)),
        );
        assert_grad_close(
            "d_key",
            &dk,
            &numeric_grad(&key, |x| loss(&q, x, &value, &gate)),
        );
        assert_grad_close(
            "d_value",
            &dv,
            &numeric_grad(&value, |x| loss(&q, &key, x, &gate)),
        );
        assert_grad_close(
            "d_gate",
            &dg,
            &numeric_grad(&gate, |x| loss(&q, &key, &value, x)),
        );
    }

    #[test]
    fn a_zero_gate_leaves_the_context_unchanged() {
        let q = random_vec(N * D, 1.0, 5);
        let key = random_vec(P * D, 3.0, 6);
        let value = random_vec(P * D, 3.0, 7);
        let base = ctx_of(&q, &key, &value, &[0.0, 0.0]);
        assert_eq!(base, random_vec(N * D, 1.0, 9));
        let opened = ctx_of(&q, &key, &value, &[0.0, 1.0]);
        assert_eq!(opened[..D / 2], base[..D / 2]);
        assert_ne!(opened[D / 2..D], base[D / 2..D]);
    }
}
