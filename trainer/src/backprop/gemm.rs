//! Matrix products through `ndarray::linalg::general_mat_mul`, which runs `matrixmultiply`'s
//! packed, runtime-dispatched (AVX2/FMA where present) kernels for `f32` and `f64`.
//!
//! Single-threaded: `matrixmultiply`'s `threading` feature is not enabled, so parallelism is the
//! caller's (e.g. one episode per thread).

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2, ShapeBuilder};

use super::scalar::Real;

/// Row-major view of `rows × cols` elements of `data`: element `(i, j)` is
/// `data[i * row_stride + j]`. Panics if `data` is too short.
pub(crate) fn mat<T>(data: &[T], rows: usize, cols: usize, row_stride: usize) -> ArrayView2<'_, T> {
    if rows == 0 || cols == 0 {
        return ArrayView2::from_shape((rows, cols), &data[..0]).expect("empty matrix view");
    }
    ArrayView2::from_shape((rows, cols).strides((row_stride, 1)), data)
        .expect("matrix view out of bounds")
}

/// Mutable counterpart of [`mat`]; `cols ≤ row_stride` so that elements do not alias.
pub(crate) fn mat_mut<T>(
    data: &mut [T],
    rows: usize,
    cols: usize,
    row_stride: usize,
) -> ArrayViewMut2<'_, T> {
    if rows == 0 || cols == 0 {
        return ArrayViewMut2::from_shape((rows, cols), &mut data[..0]).expect("empty matrix view");
    }
    ArrayViewMut2::from_shape((rows, cols).strides((row_stride, 1)), data)
        .expect("matrix view out of bounds")
}

/// `c ← alpha · a · b + beta · c`. With `beta == 0`, `c` is not read (its old contents may be
/// anything). Panics on mismatched shapes.
pub(crate) fn gemm<T: Real>(
    alpha: T,
    a: &ArrayView2<'_, T>,
    b: &ArrayView2<'_, T>,
    beta: T,
    c: &mut ArrayViewMut2<'_, T>,
) {
    general_mat_mul(alpha, a, b, beta, c);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_and_transposed_products() {
        let a: Vec<f64> = (0..12).map(|v| v as f64).collect();
        let b: Vec<f64> = (0..6).map(|v| (v as f64) - 2.5).collect();
        let mut c = vec![1.0f64; 2 * 5];
        let av = mat(&a[1..], 2, 3, 4);
        let bv = mat(&b, 3, 2, 2);
        gemm(2.0, &av, &bv, 1.0, &mut mat_mut(&mut c, 2, 2, 5));
        for i in 0..2 {
            for j in 0..2 {
                let want: f64 = (0..3).map(|k| a[1 + i * 4 + k] * b[k * 2 + j]).sum();
                assert_eq!(c[i * 5 + j], 2.0 * want + 1.0);
            }
        }
        assert_eq!(c[2], 1.0);
        let mut d = vec![f64::NAN; 4];
        gemm(1.0, &bv.t(), &bv, 0.0, &mut mat_mut(&mut d, 2, 2, 2));
        let want: f64 = (0..3).map(|k| b[k * 2] * b[k * 2 + 1]).sum();
        assert_eq!(d[1], want);
        assert_eq!(d[2], want);
    }
}
