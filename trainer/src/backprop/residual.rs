//! Residual connection `out = branch + skip`.
//!
//! Its backward passes `∂L/∂out` unchanged to both inputs; the model realises that by starting
//! the skip input's gradient as a copy ([`residual_backward`]) and letting the branch's backward
//! accumulate into it ([`super::linear::GradMode::Accumulate`]).

use super::scalar::Real;

/// `out += skip`: `out` holds the branch output on entry and `branch + skip` on return.
pub fn residual_forward<T: Real>(out: &mut [T], skip: &[T]) {
    debug_assert_eq!(out.len(), skip.len());
    for (o, &s) in out.iter_mut().zip(skip) {
        *o += s;
    }
}

/// `d_skip = d_out`, overwriting `d_skip` (the branch receives `d_out` itself).
pub fn residual_backward<T: Real>(d_out: &[T], d_skip: &mut [T]) {
    d_skip.copy_from_slice(d_out);
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_grad_close, numeric_grad, random_vec, weighted_sum};
    use super::*;

    #[test]
    fn residual_gradients_match_finite_differences() {
        let a = random_vec(9, 1.0, 1);
        let b = random_vec(9, 1.0, 2);
        let r = random_vec(9, 1.0, 3);
        let loss = |a: &[f64], b: &[f64]| {
            let mut out = a.to_vec();
            residual_forward(&mut out, b);
            weighted_sum(&out, &r)
        };
        let mut d_skip = vec![f64::NAN; 9];
        residual_backward(&r, &mut d_skip);
        assert_grad_close("d_skip", &d_skip, &numeric_grad(&b, |b| loss(&a, b)));
        assert_grad_close("d_branch", &r, &numeric_grad(&a, |a| loss(a, &b)));
    }
}
