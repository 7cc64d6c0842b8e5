//! Layer normalisation of each `D`-wide row: biased variance, `eps` inside the square root, as
//! [`crate::model::reference::layer_norm`].

use super::scalar::Real;

/// `y = (x - mean) · rstd · gamma + beta` per row, with `rstd = 1 / sqrt(var + eps)`.
/// `x`, `y` `[N, D]` with `D = gamma.len()`; `mean`, `rstd` `[N]` receive the row statistics the
/// backward needs. Outputs are overwritten.
pub fn layernorm_forward<T: Real>(
    x: &[T],
    gamma: &[T],
    beta: &[T],
    eps: T,
    y: &mut [T],
    mean: &mut [T],
    rstd: &mut [T],
) {
    let d = gamma.len();
    debug_assert_eq!(beta.len(), d);
    debug_assert_eq!(y.len(), x.len());
    debug_assert_eq!(mean.len() * d, x.len());
    debug_assert_eq!(rstd.len(), mean.len());
    let inv_d = T::ONE / T::from_f64(d as f64);
    for (((xr, yr), m), r) in x
        .chunks_exact(d)
        .zip(y.chunks_exact_mut(d))
        .zip(mean.iter_mut())
        .zip(rstd.iter_mut())
    {
        let mu = xr.iter().copied().sum::<T>() * inv_d;
        let var = xr.iter().map(|&v| (v - mu) * (v - mu)).sum::<T>() * inv_d;
        let inv = T::ONE / (var + eps).sqrt();
        for (((o, &v), &g), &b) in yr.iter_mut().zip(xr).zip(gamma).zip(beta) {
            *o = (v - mu) * inv * g + b;
        }
        *m = mu;
        *r = inv;
    }
}

/// Backward of [`layernorm_forward`] given its input `x`, the saved `mean`/`rstd` and
/// `dy = ∂L/∂y`: overwrites `dx`, accumulates `dgamma += Σ dy·x̂` and `dbeta += Σ dy`, where
/// `x̂ = (x - mean)·rstd` and `dx = rstd · (dy·γ - mean(dy·γ) - x̂ · mean(dy·γ·x̂))`.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward<T: Real>(
    x: &[T],
    mean: &[T],
    rstd: &[T],
    gamma: &[T],
    dy: &[T],
    dx: &mut [T],
    dgamma: &mut [T],
    dbeta: &mut [T],
) {
    let d = gamma.len();
    debug_assert_eq!(dy.len(), x.len());
    debug_assert_eq!(dx.len(), x.len());
    debug_assert_eq!(mean.len() * d, x.len());
    let inv_d = T::ONE / T::from_f64(d as f64);
    for ((((xr, dyr), dxr), &mu), &r) in x
        .chunks_exact(d)
        .zip(dy.chunks_exact(d))
        .zip(dx.chunks_exact_mut(d))
        .zip(mean)
        .zip(rstd)
    {
        let mut sum_dn = T::ZERO;
        let mut sum_dn_xhat = T::ZERO;
        for ((&v, &g), &gy) in xr.iter().zip(gamma).zip(dyr) {
            let dn = gy * g;
            sum_dn += dn;
            sum_dn_xhat += dn * (v - mu) * r;
        }
        let mean_dn = sum_dn * inv_d;
        let mean_dn_xhat = sum_dn_xhat * inv_d;
        for (k, o) in dxr.iter_mut().enumerate() {
            let xhat = (xr[k] - mu) * r;
            dgamma[k] += dyr[k] * xhat;
            dbeta[k] += dyr[k];
            *o = r * (dyr[k] * gamma[k] - mean_dn - xhat * mean_dn_xhat);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_grad_close, numeric_grad, random_vec, weighted_sum};
    use super::*;
    use crate::model::reference;
    use crate::model::LayerNorm;

    #[test]
    fn layernorm_f32_matches_reference() {
        let (n, d) = (4, 7);
        let x: Vec<f32> = random_vec(n * d, 2.0, 1)
            .iter()
            .map(|&v| v as f32)
            .collect();
        let ln = LayerNorm {
            gamma: random_vec(d, 1.0, 2).iter().map(|&v| v as f32).collect(),
            beta: random_vec(d, 1.0, 3).iter().map(|&v| v as f32).collect(),
        };
        let mut want = x.clone();
        reference::layer_norm(&mut want, &ln, 1e-12);
        let (mut y, mut m, mut r) = (vec![0.0; n * d], vec![0.0; n], vec![0.0; n]);
        layernorm_forward(&x, &ln.gamma, &ln.beta, 1e-12, &mut y, &mut m, &mut r);
        for (a, b) in y.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn layernorm_gradients_match_finite_differences() {
        let (n, d) = (3, 5);
        let x = random_vec(n * d, 1.5, 4);
        let gamma = random_vec(d, 1.0, 5);
        let beta = random_vec(d, 1.0, 6);
        let r = random_vec(n * d, 1.0, 7);
        let eps = 1e-5;
        let loss = |x: &[f64], g: &[f64], b: &[f64]| {
            let (mut y, mut m, mut s) = (vec![0.0; n * d], vec![0.0; n], vec![0.0; n]);
            layernorm_forward(x, g, b, eps, &mut y, &mut m, &mut s);
            weighted_sum(&y, &r)
        };
        let (mut y, mut m, mut s) = (vec![0.0; n * d], vec![0.0; n], vec![0.0; n]);
        layernorm_forward(&x, &gamma, &beta, eps, &mut y, &mut m, &mut s);
        let mut dx = vec![f64::NAN; n * d];
        let (mut dg, mut db) = (vec![0.0; d], vec![0.0; d]);
        layernorm_backward(&x, &m, &s, &gamma, &r, &mut dx, &mut dg, &mut db);
        assert_grad_close("dx", &dx, &numeric_grad(&x, |x| loss(x, &gamma, &beta)));
        assert_grad_close("dgamma", &dg, &numeric_grad(&gamma, |g| loss(&x, g, &beta)));
        assert_grad_close("dbeta", &db, &numeric_grad(&beta, |b| loss(&x, &gamma, b)));
    }
}
