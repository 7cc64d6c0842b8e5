//! Dense layer `y = x W + b` over all `N` rows at once, `W` row-major `[d_in, d_out]`.

use super::gemm::{gemm, mat, mat_mut};
use super::scalar::Real;

/// Whether a backward pass overwrites an input gradient or adds to what is already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GradMode {
    /// `dx = …`
    Assign,
    /// `dx += …`
    Accumulate,
}

impl GradMode {
    fn beta<T: Real>(self) -> T {
        match self {
            GradMode::Assign => T::ZERO,
            GradMode::Accumulate => T::ONE,
        }
    }
}

/// `y = x W + b`: `x` `[N, d_in]`, `w` `[d_in, d_out]`, `b` `[d_out]`, `y` `[N, d_out]`
/// (overwritten). `d_out = b.len()`, `d_in = w.len() / d_out`, `N = x.len() / d_in`.
pub fn linear_forward<T: Real>(x: &[T], w: &[T], b: &[T], y: &mut [T]) {
    let d_out = b.len();
    let d_in = w.len() / d_out;
    let n = x.len() / d_in;
    debug_assert_eq!(w.len(), d_in * d_out);
    debug_assert_eq!(x.len(), n * d_in);
    debug_assert_eq!(y.len(), n * d_out);
    for row in y.chunks_exact_mut(d_out) {
        row.copy_from_slice(b);
    }
    gemm(
        T::ONE,
        &mat(x, n, d_in, d_in),
        &mat(w, d_in, d_out, d_out),
        T::ONE,
        &mut mat_mut(y, n, d_out, d_out),
    );
}

/// Backward of [`linear_forward`] given `dy = ∂L/∂y` `[N, d_out]`: `dx = dy Wᵀ` (assigned or
/// accumulated per `dx_mode`), and always accumulated `dw += xᵀ dy`, `db += Σ_rows dy`.
pub fn linear_backward<T: Real>(
    x: &[T],
    w: &[T],
    dy: &[T],
    dx: &mut [T],
    dx_mode: GradMode,
    dw: &mut [T],
    db: &mut [T],
) {
    let d_out = db.len();
    let d_in = w.len() / d_out;
    let n = x.len() / d_in;
    debug_assert_eq!(dw.len(), w.len());
    debug_assert_eq!(dy.len(), n * d_out);
    debug_assert_eq!(dx.len(), x.len());
    let dyv = mat(dy, n, d_out, d_out);
    gemm(
        T::ONE,
        &dyv,
        &mat(w, d_in, d_out, d_out).t(),
        dx_mode.beta(),
        &mut mat_mut(dx, n, d_in, d_in),
    );
    gemm(
        T::ONE,
        &mat(x, n, d_in, d_in).t(),
        &dyv,
        T::ONE,
        &mut mat_mut(dw, d_in, d_out, d_out),
    );
    for row in dy.chunks_exact(d_out) {
        for (g, &v) in db.iter_mut().zip(row) {
            *g += v;
        }
    }
}

/// The input half of [`linear_backward`]: `dx = dy Wᵀ` (assigned or accumulated per
/// `dx_mode`) for a layer with `d_out` outputs, without the weight gradients (a frozen layer).
pub fn linear_backward_input<T: Real>(
    w: &[T],
    dy: &[T],
    dx: &mut [T],
    dx_mode: GradMode,
    d_out: usize,
) {
    let d_in = w.len() / d_out;
    let n = dy.len() / d_out;
    debug_assert_eq!(dx.len(), n * d_in);
    gemm(
        T::ONE,
        &mat(dy, n, d_out, d_out),
        &mat(w, d_in, d_out, d_out).t(),
        dx_mode.beta(),
        &mut mat_mut(dx, n, d_in, d_in),
    );
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_grad_close, numeric_grad, random_vec, weighted_sum};
    use super::*;

    #[test]
    fn linear_matches_naive_and_finite_differences() {
        let (n, d_in, d_out) = (5, 7, 3);
        let x = random_vec(n * d_in, 1.0, 1);
        let w = random_vec(d_in * d_out, 1.0, 2);
        let b = random_vec(d_out, 1.0, 3);
        let r = random_vec(n * d_out, 1.0, 4);
        let mut y = vec![0.0; n * d_out];
        linear_forward(&x, &w, &b, &mut y);
        for i in 0..n {
            for j in 0..d_out {
                let want = b[j]
                    + (0..d_in)
                        .map(|k| x[i * d_in + k] * w[k * d_out + j])
                        .sum::<f64>();
                assert!((y[i * d_out + j] - want).abs() < 1e-12);
            }
        }
        let loss = |x: &[f64], w: &[f64], b: &[f64]| {
            let mut y = vec![0.0; n * d_out];
            linear_forward(x, w, b, &mut y);
            weighted_sum(&y, &r)
        };
        let mut dx = vec![0.5; n * d_in];
        let mut dw = vec![0.25; d_in * d_out];
        let mut db = vec![-1.0; d_out];
        linear_backward(&x, &w, &r, &mut dx, GradMode::Accumulate, &mut dw, &mut db);
        let shift = |v: &[f64], c: f64| v.iter().map(|g| g - c).collect::<Vec<_>>();
        assert_grad_close(
            "dx",
            &shift(&dx, 0.5),
            &numeric_grad(&x, |x| loss(x, &w, &b)),
        );
        assert_grad_close(
            "dw",
            &shift(&dw, 0.25),
            &numeric_grad(&w, |w| loss(&x, w, &b)),
        );
        assert_grad_close(
            "db",
            &shift(&db, -1.0),
            &numeric_grad(&b, |b| loss(&x, &w, b)),
        );
        let mut dx2 = vec![f64::NAN; n * d_in];
        linear_backward(&x, &w, &r, &mut dx2, GradMode::Assign, &mut dw, &mut db);
        assert_grad_close("dx assigned", &dx2, &shift(&dx, 0.5));
    }
}
