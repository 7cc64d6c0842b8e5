//! cuBLAS GEMMs of the CUDA training path, in the row-major layouts of the CPU backend.
//!
//! cuBLAS is column-major; a row-major `C[m, n] = op(A) · op(B)` is the column-major
//! `Cᵀ = op(B)ᵀ · op(A)ᵀ`, so [`Blas::gemm`] swaps the operands and passes each matrix's row
//! stride as its leading dimension. The handle runs plain f32 math (`CUBLAS_DEFAULT_MATH`: no
//! TF32 tensor cores), so products agree with the CPU's f32 GEMMs to summation order.
//!
//! Linear layers follow [`crate::backprop::linear`]: `x` `[N, d_in]`, weight `[d_in, d_out]`
//! row-major, `y = x·W + b`. Attention GEMMs run strided-batched over `sentences × heads` on
//! the padded layout `[n_sent, heads, tmax, dh]` of `pack_to_padded` (`encoder.cu`), with score
//! matrices `[n_sent, heads, tmax, tmax]`.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use cudarc::cublas::{result as cb, sys, CudaBlas};
use cudarc::driver::CudaStream;

use super::dev::DevPtr;
use crate::backprop::GradMode;

/// A cuBLAS handle bound to one stream, f32 math without TF32.
pub struct Blas {
    handle: CudaBlas,
}

fn int(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v).with_context(|| format!("GEMM {what} = {v} does not fit a cuBLAS int"))
}

fn op(t: bool) -> sys::cublasOperation_t {
    if t {
        sys::cublasOperation_t::CUBLAS_OP_T
    } else {
        sys::cublasOperation_t::CUBLAS_OP_N
    }
}

/// Shape of one row-major product `C[m, n] = alpha · op(A) · op(B) + beta · C`, `op(A)`
/// `[m, k]`, `op(B)` `[k, n]`; `lda`, `ldb`, `ldc` are the row strides of the stored matrices
/// (`A` is stored `[k, m]` when `ta`).
#[derive(Clone, Copy, Debug)]
pub struct Gemm {
    /// `op(A) = Aᵀ` (`A` stored `[k, m]`) when set, else `A` (stored `[m, k]`).
    pub ta: bool,
    /// `op(B) = Bᵀ` (`B` stored `[n, k]`) when set, else `B` (stored `[k, n]`).
    pub tb: bool,
    /// Rows of `C` and of `op(A)`.
    pub m: usize,
    /// Columns of `C` and of `op(B)`.
    pub n: usize,
    /// The summed dimension: columns of `op(A)`, rows of `op(B)`.
    pub k: usize,
    /// Scale of the product.
    pub alpha: f32,
    /// Row stride of the stored `A`, in values (at least its row length).
    pub lda: usize,
    /// Row stride of the stored `B`, in values.
    pub ldb: usize,
    /// Scale of the previous `C`: 0 overwrites (`C` need not be initialised), 1 accumulates.
    pub beta: f32,
    /// Row stride of `C`, in values.
    pub ldc: usize,
}

/// The column-major cuBLAS arguments of a row-major [`Gemm`]: operands swapped (`A'` is the
/// row-major `B`, `B'` the row-major `A`), `m` and `n` exchanged, each transpose flag moving
/// with its operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColMajor {
    /// cuBLAS `transa`: the row-major [`Gemm::tb`].
    pub transa: bool,
    /// cuBLAS `transb`: the row-major [`Gemm::ta`].
    pub transb: bool,
    /// Rows of the column-major `Cᵀ`: the row-major [`Gemm::n`].
    pub m: usize,
    /// Columns of the column-major `Cᵀ`: the row-major [`Gemm::m`].
    pub n: usize,
    /// The summed dimension, unchanged.
    pub k: usize,
    /// Leading dimension of `A'`: the row-major [`Gemm::ldb`], at least 1.
    pub lda: usize,
    /// Leading dimension of `B'`: the row-major [`Gemm::lda`], at least 1.
    pub ldb: usize,
    /// Leading dimension of `Cᵀ`: the row-major [`Gemm::ldc`], at least 1.
    pub ldc: usize,
}

impl Gemm {
    /// The cuBLAS call computing this product.
    pub fn col_major(&self) -> ColMajor {
        ColMajor {
            transa: self.tb,
            transb: self.ta,
            m: self.n,
            n: self.m,
            k: self.k,
            lda: self.ldb.max(1),
            ldb: self.lda.max(1),
            ldc: self.ldc.max(1),
        }
    }

    /// `y[n, d_out] = x[n, d_in] · w[d_in, d_out]`.
    pub fn linear_forward(n: usize, d_in: usize, d_out: usize) -> Gemm {
        Gemm {
            ta: false,
            tb: false,
            m: n,
            n: d_out,
            k: d_in,
            alpha: 1.0,
            lda: d_in,
            ldb: d_out,
            beta: 0.0,
            ldc: d_out,
        }
    }

    /// `dx[n, d_in] (+)= dy[n, d_out] · w[d_in, d_out]ᵀ`, `beta` 0 or 1.
    pub fn linear_dx(n: usize, d_in: usize, d_out: usize, beta: f32) -> Gemm {
        Gemm {
            ta: false,
            tb: true,
            m: n,
            n: d_in,
            k: d_out,
            alpha: 1.0,
            lda: d_out,
            ldb: d_out,
            beta,
            ldc: d_in,
        }
    }

    /// `dw[d_in, d_out] += x[n, d_in]ᵀ · dy[n, d_out]`.
    pub fn linear_dw(n: usize, d_in: usize, d_out: usize) -> Gemm {
        Gemm {
            ta: true,
            tb: false,
            m: d_in,
            n: d_out,
            k: n,
            alpha: 1.0,
            lda: d_in,
            ldb: d_out,
            beta: 1.0,
            ldc: d_out,
        }
    }

    /// `out[1, d] += ones[1, n] · x[n, d]`.
    pub fn column_sum(n: usize, d: usize) -> Gemm {
        Gemm {
            ta: false,
            tb: false,
            m: 1,
            n: d,
            k: n,
            alpha: 1.0,
            lda: n,
            ldb: d,
            beta: 1.0,
            ldc: d,
        }
    }

    /// One `[t, t]` block of `alpha · X · Yᵀ` from `X`, `Y` `[t, dh]` (scores, `dP`).
    pub fn scores(t: usize, dh: usize, alpha: f32) -> Gemm {
        Gemm {
            ta: false,
            tb: true,
            m: t,
            n: t,
            k: dh,
            alpha,
            lda: dh,
            ldb: dh,
            beta: 0.0,
            ldc: t,
        }
    }

    /// One `[t, dh]` block of `alpha · op(P) · X`, `P` `[t, t]` (transposed when `tp`), `X`
    /// `[t, dh]`.
    pub fn apply(tp: bool, t: usize, dh: usize, alpha: f32) -> Gemm {
        Gemm {
            ta: tp,
            tb: false,
            m: t,
            n: dh,
            k: t,
            alpha,
            lda: t,
            ldb: dh,
            beta: 0.0,
            ldc: dh,
        }
    }
}

impl Blas {
    /// A handle on `stream` with `CUBLAS_DEFAULT_MATH` (f32 FMA, never TF32). Fails, without
    /// calling into it, when libcublas cannot be loaded.
    pub fn new(stream: &Arc<CudaStream>) -> Result<Blas> {
        // SAFETY: only tries to open the library by its candidate names.
        if !unsafe { sys::is_culib_present() } {
            bail!("cuBLAS missing (libcublas.so.13 not found on the loader path)");
        }
        let handle = CudaBlas::new(stream.clone()).context("creating the cuBLAS handle")?;
        // SAFETY: the handle is live; the call only sets a mode flag on it.
        unsafe { sys::cublasSetMathMode(*handle.handle(), sys::cublasMath_t::CUBLAS_DEFAULT_MATH) }
            .result()
            .context("cublasSetMathMode")?;
        Ok(Blas { handle })
    }

    /// Row-major `C = alpha · op(A) · op(B) + beta · C` (see [`Gemm`]). Nothing happens when
    /// `m` or `n` is 0.
    ///
    /// # Safety
    ///
    /// `a`, `b`, `c` must address live f32 matrices of the shapes and strides in `g`.
    pub unsafe fn gemm(&self, g: Gemm, a: DevPtr, b: DevPtr, c: DevPtr) -> Result<()> {
        if g.m == 0 || g.n == 0 {
            return Ok(());
        }
        let cm = g.col_major();
        let (m, n, k) = (int(cm.m, "m")?, int(cm.n, "n")?, int(cm.k, "k")?);
        let (lda, ldb, ldc) = (
            int(cm.lda, "lda")?,
            int(cm.ldb, "ldb")?,
            int(cm.ldc, "ldc")?,
        );
        // SAFETY: the handle is live for `self`; the caller guarantees (`# Safety`) live f32
        // matrices at `a`, `b`, `c` with the shapes and row strides of `g`, which are exactly
        // the column-major sizes and leading dimensions passed here (operands swapped).
        unsafe {
            cb::sgemm(
                *self.handle.handle(),
                op(cm.transa),
                op(cm.transb),
                m,
                n,
                k,
                &g.alpha,
                b.0 as *const f32,
                lda,
                a.0 as *const f32,
                ldb,
                &g.beta,
                c.0 as *mut f32,
                ldc,
            )
        }
        .context("cublasSgemm")
    }

    /// [`Blas::gemm`] on `batch` matrix triples, the `i`-th at `a + i·stride_a` (likewise `b`,
    /// `c`; strides in values).
    ///
    /// # Safety
    ///
    /// Every matrix of every batch entry must lie in live f32 memory.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn gemm_batched(
        &self,
        g: Gemm,
        a: DevPtr,
        stride_a: usize,
        b: DevPtr,
        stride_b: usize,
        c: DevPtr,
        stride_c: usize,
        batch: usize,
    ) -> Result<()> {
        if g.m == 0 || g.n == 0 || batch == 0 {
            return Ok(());
        }
        let cm = g.col_major();
        let (m, n, k) = (int(cm.m, "m")?, int(cm.n, "n")?, int(cm.k, "k")?);
        let (lda, ldb, ldc) = (
            int(cm.lda, "lda")?,
            int(cm.ldb, "ldb")?,
            int(cm.ldc, "ldc")?,
        );
        let batch = int(batch, "batch")?;
        // SAFETY: the handle is live for `self`; the caller guarantees (`# Safety`) that every
        // matrix `a + i·stride_a`, `b + i·stride_b`, `c + i·stride_c` for `i < batch` lies in
        // live f32 memory with the shapes and row strides of `g`.
        unsafe {
            cb::sgemm_strided_batched(
                *self.handle.handle(),
                op(cm.transa),
                op(cm.transb),
                m,
                n,
                k,
                &g.alpha,
                b.0 as *const f32,
                lda,
                stride_b as i64,
                a.0 as *const f32,
                ldb,
                stride_a as i64,
                &g.beta,
                c.0 as *mut f32,
                ldc,
                stride_c as i64,
                batch,
            )
        }
        .context("cublasSgemmStridedBatched")
    }

    /// `y = x · w` without the bias (`x` `[n, d_in]`, `w` `[d_in, d_out]`, `y` `[n, d_out]`);
    /// the bias (and residual) follow with `bias_residual_forward`.
    ///
    /// # Safety
    ///
    /// The three matrices must be live with those shapes; `y` must not alias the inputs.
    pub unsafe fn linear_forward(
        &self,
        x: DevPtr,
        w: DevPtr,
        n: usize,
        d_in: usize,
        d_out: usize,
        y: DevPtr,
    ) -> Result<()> {
        // SAFETY: `Gemm::linear_forward` describes exactly the `[n, d_in]`, `[d_in, d_out]` and
        // `[n, d_out]` matrices the caller guarantees (`# Safety`).
        unsafe { self.gemm(Gemm::linear_forward(n, d_in, d_out), x, w, y) }
    }

    /// Backward of a linear layer as [`crate::backprop::linear::linear_backward`]:
    /// `dx = dy · wᵀ` (assigned or accumulated per `dx_mode`), `dw += xᵀ · dy`,
    /// `db += 1ᵀ · dy` (`ones` holds at least `n` ones).
    ///
    /// # Safety
    ///
    /// `x` `[n, d_in]`, `w`, `dw` `[d_in, d_out]`, `dy` `[n, d_out]`, `dx` `[n, d_in]`, `db`
    /// `[d_out]`, `ones` `[n]`, all live; outputs must not alias inputs.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn linear_backward(
        &self,
        x: DevPtr,
        w: DevPtr,
        dy: DevPtr,
        n: usize,
        d_in: usize,
        d_out: usize,
        dx: DevPtr,
        dx_mode: GradMode,
        dw: DevPtr,
        db: DevPtr,
        ones: DevPtr,
    ) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let beta = match dx_mode {
            GradMode::Assign => 0.0,
            GradMode::Accumulate => 1.0,
        };
        // SAFETY: each product's `Gemm` describes the shapes the caller guarantees (`# Safety`):
        // `dy` `[n, d_out]` · `w`ᵀ into `dx` `[n, d_in]`, `x`ᵀ · `dy` into `dw` `[d_in, d_out]`,
        // and `dy`'s column sums into `db` `[d_out]` through `ones` `[n]`.
        unsafe {
            self.gemm(Gemm::linear_dx(n, d_in, d_out, beta), dy, w, dx)?;
            self.gemm(Gemm::linear_dw(n, d_in, d_out), x, dy, dw)?;
            self.column_sum_accumulate(dy, n, d_out, db, ones)
        }
    }

    /// `out[k] += Σ_i x[i, k]` over `x` `[n, d]`, as `1ᵀ · x`.
    ///
    /// # Safety
    ///
    /// `x` `[n, d]`, `out` `[d]`, `ones` `[n]` ones, all live.
    pub unsafe fn column_sum_accumulate(
        &self,
        x: DevPtr,
        n: usize,
        d: usize,
        out: DevPtr,
        ones: DevPtr,
    ) -> Result<()> {
        // SAFETY: `Gemm::column_sum` reads `ones` as `[1, n]` and `x` as `[n, d]` and updates
        // `out` `[1, d]`, the buffers the caller guarantees (`# Safety`).
        unsafe { self.gemm(Gemm::column_sum(n, d), ones, x, out) }
    }

    /// Attention scores `S[b] = scale · Q[b] · K[b]ᵀ` for `b < batch` (`batch = n_sent · heads`),
    /// `Q`, `K` padded `[batch, t, dh]`, `S` `[batch, t, t]`.
    ///
    /// # Safety
    ///
    /// All three padded tensors must be live with those shapes.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn attention_scores(
        &self,
        q: DevPtr,
        k: DevPtr,
        batch: usize,
        t: usize,
        dh: usize,
        scale: f32,
        scores: DevPtr,
    ) -> Result<()> {
        // SAFETY: `batch` blocks of `[t, dh]` (`q`, `k`, stride `t·dh`) and `[t, t]` (`scores`,
        // stride `t²`): the padded tensors the caller guarantees (`# Safety`).
        unsafe {
            self.gemm_batched(
                Gemm::scores(t, dh, scale),
                q,
                t * dh,
                k,
                t * dh,
                scores,
                t * t,
                batch,
            )
        }
    }

    /// `C[b] = alpha · op(P[b]) · X[b]` with `P` `[batch, t, t]` (transposed when `tp`) and `X`,
    /// `C` `[batch, t, dh]`: the context `P·V` (forward), `dV = Pᵀ·dC`, `dQ = scale·dS·K` and
    /// `dK = scale·dSᵀ·Q` (backward).
    ///
    /// # Safety
    ///
    /// All three padded tensors must be live with those shapes.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn attention_apply(
        &self,
        p: DevPtr,
        tp: bool,
        x: DevPtr,
        batch: usize,
        t: usize,
        dh: usize,
        alpha: f32,
        c: DevPtr,
    ) -> Result<()> {
        // SAFETY: `batch` blocks of `[t, t]` (`p`, stride `t²`) and `[t, dh]` (`x`, `c`, stride
        // `t·dh`): the padded tensors the caller guarantees (`# Safety`).
        unsafe {
            self.gemm_batched(
                Gemm::apply(tp, t, dh, alpha),
                p,
                t * t,
                x,
                t * dh,
                c,
                t * dh,
                batch,
            )
        }
    }

    /// `dP[b] = dC[b] · V[b]ᵀ` (`dC`, `V` `[batch, t, dh]`, `dP` `[batch, t, t]`).
    ///
    /// # Safety
    ///
    /// All three padded tensors must be live with those shapes.
    pub unsafe fn attention_dprobs(
        &self,
        d_ctx: DevPtr,
        v: DevPtr,
        batch: usize,
        t: usize,
        dh: usize,
        d_probs: DevPtr,
    ) -> Result<()> {
        // SAFETY: the same layouts as `attention_scores` (`d_ctx`, `v` as `Q`, `K`; `d_probs` as
        // the scores), which the caller guarantees (`# Safety`).
        unsafe { self.attention_scores(d_ctx, v, batch, t, dh, 1.0, d_probs) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backprop::attention::{
        attention_backward, attention_forward, probs_len, softmax_backward_in_place,
        softmax_in_place,
    };
    use crate::backprop::linear::{linear_backward, linear_forward};

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    /// Column-major SGEMM as cuBLAS defines it, with its leading-dimension checks.
    fn sgemm_cm(cm: ColMajor, alpha: f32, a: &[f32], b: &[f32], beta: f32, c: &mut [f32]) {
        let a_rows = if cm.transa { cm.k } else { cm.m };
        let b_rows = if cm.transb { cm.n } else { cm.k };
        assert!(cm.lda >= a_rows.max(1), "lda {cm:?}");
        assert!(cm.ldb >= b_rows.max(1), "ldb {cm:?}");
        assert!(cm.ldc >= cm.m.max(1), "ldc {cm:?}");
        for j in 0..cm.n {
            for i in 0..cm.m {
                let mut s = 0.0f32;
                for p in 0..cm.k {
                    let aip = if cm.transa {
                        a[p + i * cm.lda]
                    } else {
                        a[i + p * cm.lda]
                    };
                    let bpj = if cm.transb {
                        b[j + p * cm.ldb]
                    } else {
                        b[p + j * cm.ldb]
                    };
                    s += aip * bpj;
                }
                let o = &mut c[i + j * cm.ldc];
                *o = alpha * s + if beta == 0.0 { 0.0 } else { beta * *o };
            }
        }
    }

    /// What [`Blas::gemm`] asks cuBLAS for, on host slices.
    fn run(g: Gemm, a: &[f32], b: &[f32], c: &mut [f32]) {
        sgemm_cm(g.col_major(), g.alpha, b, a, g.beta, c);
    }

    #[allow(clippy::too_many_arguments)]
    fn run_batched(
        g: Gemm,
        a: &[f32],
        sa: usize,
        b: &[f32],
        sb: usize,
        c: &mut [f32],
        sc: usize,
        batch: usize,
    ) {
        for i in 0..batch {
            run(g, &a[i * sa..], &b[i * sb..], &mut c[i * sc..]);
        }
    }

    fn close(what: &str, a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len(), "{what}");
        let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= 1e-5 * scale, "{what}[{i}]: {x} vs {y}");
        }
    }

    #[test]
    fn linear_layers_match_the_cpu_layout() {
        let (n, d_in, d_out) = (5, 7, 3);
        let x = random(n * d_in, 1);
        let w = random(d_in * d_out, 2);
        let b = random(d_out, 3);
        let dy = random(n * d_out, 4);
        let mut want_y = vec![0.0; n * d_out];
        linear_forward(&x, &w, &b, &mut want_y);
        let mut y = vec![f32::NAN; n * d_out];
        run(Gemm::linear_forward(n, d_in, d_out), &x, &w, &mut y);
        for row in y.chunks_exact_mut(d_out) {
            row.iter_mut().zip(&b).for_each(|(v, bb)| *v += bb);
        }
        close("y", &y, &want_y);

        for (mode, beta) in [(GradMode::Assign, 0.0), (GradMode::Accumulate, 1.0)] {
            let mut want_dx = random(n * d_in, 5);
            let mut want_dw = random(d_in * d_out, 6);
            let mut want_db = random(d_out, 7);
            let (mut dx, mut dw, mut db) = (want_dx.clone(), want_dw.clone(), want_db.clone());
            if mode == GradMode::Assign {
                dx.fill(f32::NAN);
            }
            linear_backward(&x, &w, &dy, &mut want_dx, mode, &mut want_dw, &mut want_db);
            run(Gemm::linear_dx(n, d_in, d_out, beta), &dy, &w, &mut dx);
            run(Gemm::linear_dw(n, d_in, d_out), &x, &dy, &mut dw);
            run(Gemm::column_sum(n, d_out), &vec![1.0; n], &dy, &mut db);
            close("dx", &dx, &want_dx);
            close("dw", &dw, &want_dw);
            close("db", &db, &want_db);
        }
    }

    fn pack_to_padded(
        packed: &[f32],
        offsets: &[usize],
        heads: usize,
        tmax: usize,
        dh: usize,
    ) -> Vec<f32> {
        let n_sent = offsets.len() - 1;
        let mut out = vec![0.0; n_sent * heads * tmax * dh];
        for s in 0..n_sent {
            for h in 0..heads {
                for q in 0..offsets[s + 1] - offsets[s] {
                    for c in 0..dh {
                        out[((s * heads + h) * tmax + q) * dh + c] =
                            packed[(offsets[s] + q) * heads * dh + h * dh + c];
                    }
                }
            }
        }
        out
    }

    fn padded_to_pack(
        padded: &[f32],
        offsets: &[usize],
        heads: usize,
        tmax: usize,
        dh: usize,
    ) -> Vec<f32> {
        let n = *offsets.last().unwrap();
        let mut out = vec![f32::NAN; n * heads * dh];
        for s in 0..offsets.len() - 1 {
            for h in 0..heads {
                for q in 0..offsets[s + 1] - offsets[s] {
                    for c in 0..dh {
                        out[(offsets[s] + q) * heads * dh + h * dh + c] =
                            padded[((s * heads + h) * tmax + q) * dh + c];
                    }
                }
            }
        }
        out
    }

    /// The attention sequence of `CudaModel` (padded layout, strided-batched GEMMs, masked
    /// softmax as `attention_softmax_*_padded`) against `backprop::attention` on the packed
    /// layout, forward and backward.
    #[test]
    fn padded_attention_matches_the_cpu() {
        let (heads, dh) = (3, 2);
        let d = heads * dh;
        let offsets = [0usize, 3, 3, 8, 9];
        let n = 9;
        let n_sent = offsets.len() - 1;
        let tmax = 5;
        let batch = n_sent * heads;
        let scale = 1.0 / (dh as f32).sqrt();
        let (q, k, v) = (random(n * d, 1), random(n * d, 2), random(n * d, 3));
        let d_ctx = random(n * d, 4);
        let mut probs = vec![0.0; probs_len(&offsets, heads)];
        let mut want_ctx = vec![0.0; n * d];
        attention_forward(&q, &k, &v, &offsets, heads, &mut probs, &mut want_ctx);
        let (mut want_dq, mut want_dk, mut want_dv) =
            (vec![0.0; n * d], vec![0.0; n * d], vec![0.0; n * d]);
        attention_backward(
            &q,
            &k,
            &v,
            &probs,
            &d_ctx,
            &offsets,
            heads,
            &mut want_dq,
            &mut want_dk,
            &mut want_dv,
            &mut Vec::new(),
        );

        let lens: Vec<usize> = offsets.windows(2).map(|w| w[1] - w[0]).collect();
        let (qp, kp, vp) = (
            pack_to_padded(&q, &offsets, heads, tmax, dh),
            pack_to_padded(&k, &offsets, heads, tmax, dh),
            pack_to_padded(&v, &offsets, heads, tmax, dh),
        );
        let (tt, td) = (tmax * tmax, tmax * dh);
        let mut p = vec![f32::NAN; batch * tt];
        run_batched(
            Gemm::scores(tmax, dh, scale),
            &qp,
            td,
            &kp,
            td,
            &mut p,
            tt,
            batch,
        );
        for (bi, block) in p.chunks_exact_mut(tt).enumerate() {
            let t = lens[bi / heads];
            for (r, row) in block.chunks_exact_mut(tmax).enumerate() {
                if r < t {
                    softmax_in_place(&mut row[..t]);
                    row[t..].fill(0.0);
                } else {
                    row.fill(0.0);
                }
            }
        }
        let mut ctx_pad = vec![f32::NAN; batch * td];
        run_batched(
            Gemm::apply(false, tmax, dh, 1.0),
            &p,
            tt,
            &vp,
            td,
            &mut ctx_pad,
            td,
            batch,
        );
        close(
            "ctx",
            &padded_to_pack(&ctx_pad, &offsets, heads, tmax, dh),
            &want_ctx,
        );

        let dcp = pack_to_padded(&d_ctx, &offsets, heads, tmax, dh);
        let mut dp = vec![f32::NAN; batch * tt];
        run_batched(
            Gemm::scores(tmax, dh, 1.0),
            &dcp,
            td,
            &vp,
            td,
            &mut dp,
            tt,
            batch,
        );
        let mut dvp = vec![f32::NAN; batch * td];
        run_batched(
            Gemm::apply(true, tmax, dh, 1.0),
            &p,
            tt,
            &dcp,
            td,
            &mut dvp,
            td,
            batch,
        );
        for (bi, (block, pblock)) in dp.chunks_exact_mut(tt).zip(p.chunks_exact(tt)).enumerate() {
            let t = lens[bi / heads];
            for (r, (row, prow)) in block
                .chunks_exact_mut(tmax)
                .zip(pblock.chunks_exact(tmax))
                .enumerate()
            {
                if r < t {
                    softmax_backward_in_place(&prow[..t], &mut row[..t]);
                    row[t..].fill(0.0);
                } else {
                    row.fill(0.0);
                }
            }
        }
        let mut dqp = vec![f32::NAN; batch * td];
        let mut dkp = vec![f32::NAN; batch * td];
        run_batched(
            Gemm::apply(false, tmax, dh, scale),
            &dp,
            tt,
            &kp,
            td,
            &mut dqp,
            td,
            batch,
        );
        run_batched(
            Gemm::apply(true, tmax, dh, scale),
            &dp,
            tt,
            &qp,
            td,
            &mut dkp,
            td,
            batch,
        );
        close(
            "dq",
            &padded_to_pack(&dqp, &offsets, heads, tmax, dh),
            &want_dq,
        );
        close(
            "dk",
            &padded_to_pack(&dkp, &offsets, heads, tmax, dh),
            &want_dk,
        );
        close(
            "dv",
            &padded_to_pack(&dvp, &offsets, heads, tmax, dh),
            &want_dv,
        );
    }
}
