//! Exact GELU, `y = x · Φ(x)` with `Φ(x) = ½ (1 + erf(x / √2))`, elementwise.

use super::scalar::Real;

const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// `y = x · Φ(x)`; also stores `cdf = Φ(x)`, which the backward reuses. Outputs overwritten.
pub fn gelu_forward<T: Real>(x: &[T], y: &mut [T], cdf: &mut [T]) {
    debug_assert_eq!(y.len(), x.len());
    debug_assert_eq!(cdf.len(), x.len());
    let half = T::from_f64(0.5);
    let inv_sqrt2 = T::from_f64(std::f64::consts::FRAC_1_SQRT_2);
    for ((o, c), &v) in y.iter_mut().zip(cdf.iter_mut()).zip(x) {
        let phi = half * (T::ONE + (v * inv_sqrt2).erf());
        *c = phi;
        *o = v * phi;
    }
}

/// `y = x · cdf`: the forward output again from the saved `cdf` of [`gelu_forward`], without
/// evaluating `erf`.
pub fn gelu_recompute<T: Real>(x: &[T], cdf: &[T], y: &mut [T]) {
    debug_assert_eq!(cdf.len(), x.len());
    debug_assert_eq!(y.len(), x.len());
    for ((o, &v), &c) in y.iter_mut().zip(x).zip(cdf) {
        *o = v * c;
    }
}

/// Backward of [`gelu_forward`] in place: on entry `d = ∂L/∂y`, on return `∂L/∂x =
/// d · (Φ(x) + x · φ(x))` with `φ` the standard normal density and `Φ(x)` read from `cdf`.
pub fn gelu_backward<T: Real>(x: &[T], cdf: &[T], d: &mut [T]) {
    debug_assert_eq!(cdf.len(), x.len());
    debug_assert_eq!(d.len(), x.len());
    let c = T::from_f64(FRAC_1_SQRT_2PI);
    let neg_half = T::from_f64(-0.5);
    for ((g, &v), &phi) in d.iter_mut().zip(x).zip(cdf) {
        let density = c * (neg_half * v * v).exp();
        *g *= phi + v * density;
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_grad_close, numeric_grad, random_vec, weighted_sum};
    use super::*;
    use crate::model::reference;

    #[test]
    fn gelu_f32_matches_reference() {
        let x: Vec<f32> = (0..2001).map(|i| -8.0 + i as f32 * 0.008).collect();
        let (mut y, mut c) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        gelu_forward(&x, &mut y, &mut c);
        for (&v, &o) in x.iter().zip(&y) {
            let want = reference::gelu(v);
            assert!(
                (o - want).abs() <= 1e-6 * want.abs().max(1.0),
                "{v}: {o} vs {want}"
            );
        }
        let mut again = vec![0.0; x.len()];
        gelu_recompute(&x, &c, &mut again);
        assert_eq!(again, y);
    }

    #[test]
    fn gelu_gradient_matches_finite_differences() {
        let mut x = random_vec(40, 2.0, 8);
        x.extend([0.0, -4.0, 4.0, 7.0]);
        let r = random_vec(x.len(), 1.0, 9);
        let loss = |x: &[f64]| {
            let (mut y, mut c) = (vec![0.0; x.len()], vec![0.0; x.len()]);
            gelu_forward(x, &mut y, &mut c);
            weighted_sum(&y, &r)
        };
        let (mut y, mut c) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        gelu_forward(&x, &mut y, &mut c);
        let mut d = r.clone();
        gelu_backward(&x, &c, &mut d);
        assert_grad_close("dx", &d, &numeric_grad(&x, loss));
    }
}
