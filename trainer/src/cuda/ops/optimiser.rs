//! Launch wrappers for `trainer/kernels/optimiser.cu`: the AdamW update and global-norm
//! gradient clipping of `crate::train::optimizer`, with the norm kept on the device.
//!
//! Clipping over several tensors: zero a one-element f64 `total`, call [`sum_squares`] for every
//! gradient tensor (each adds into `total`), then [`clip_scale`] every tensor with that `total`.

use anyhow::{ensure, Result};
use cudarc::driver::{CudaStream, PushKernelArg};

use super::{
    check_len, check_min_len, check_stream, cooperative_threads, grid_config, launch,
    stride_config, to_i32, to_i64, DeviceIn, DeviceOut,
};
use crate::cuda::CudaKernels;
pub use crate::train::optimizer::AdamWScalars;

/// Threads per block of the reductions.
const REDUCE_THREADS: u32 = 256;
/// Blocks of [`sum_squares`]' first pass, at most: the length its `partial` scratch needs.
pub const SUM_SQUARES_MAX_BLOCKS: usize = 1024;

/// One AdamW update of a tensor in place (`AdamW::step` for one `ParamUpdate`): `w`, `m`, `v`
/// updated from `g`, all the same length.
pub fn adamw_update(
    k: &CudaKernels,
    stream: &CudaStream,
    w: &mut impl DeviceOut<f32>,
    g: &impl DeviceIn<f32>,
    m: &mut impl DeviceOut<f32>,
    v: &mut impl DeviceOut<f32>,
    s: &AdamWScalars,
) -> Result<()> {
    const K: &str = "adamw_update";
    check_stream(K, k, stream)?;
    let (mut w, g, mut m, mut v) = (w.view_out(), g.view_in(), m.view_out(), v.view_out());
    let len = w.len();
    check_len(K, "g", g.len(), len)?;
    check_len(K, "m", m.len(), len)?;
    check_len(K, "v", v.len(), len)?;
    if len == 0 {
        return Ok(());
    }
    let li = to_i64(K, "len", len)?;
    let mut b = stream.launch_builder(k.function(K)?);
    b.arg(&mut w).arg(&g).arg(&mut m).arg(&mut v).arg(&li);
    b.arg(&s.step)
        .arg(&s.inv_bc2)
        .arg(&s.beta1)
        .arg(&s.beta2)
        .arg(&s.eps)
        .arg(&s.decay);
    // SAFETY: arguments match the kernel's parameters; the four buffers hold len values.
    unsafe { launch(K, &mut b, stride_config(len)) }
}

/// `total[0] += Σ x²` in f64 (`global_norm`'s sum), in two launches: per-block partial sums
/// into `partial` (scratch, at least [`SUM_SQUARES_MAX_BLOCKS`] values, or as many as blocks
/// are needed), then their sum added into the one-element `total`.
pub fn sum_squares(
    k: &CudaKernels,
    stream: &CudaStream,
    x: &impl DeviceIn<f32>,
    partial: &mut impl DeviceOut<f64>,
    total: &mut impl DeviceOut<f64>,
) -> Result<()> {
    const K: &str = "sum_squares_partial";
    check_stream(K, k, stream)?;
    let (x, mut partial) = (x.view_in(), partial.view_out());
    let len = x.len();
    if len == 0 {
        return Ok(());
    }
    let blocks = len
        .div_ceil(REDUCE_THREADS as usize)
        .min(SUM_SQUARES_MAX_BLOCKS);
    check_min_len(K, "partial", partial.len(), blocks)?;
    check_len("sum_partials_accumulate", "total", total.view_in().len(), 1)?;
    let li = to_i64(K, "len", len)?;
    let mut b = stream.launch_builder(k.function(K)?);
    b.arg(&x).arg(&li).arg(&mut partial);
    // SAFETY: arguments match the kernel's parameters; `blocks` <= partial.len() blocks of a
    // power-of-two size, x holds len values.
    unsafe { launch(K, &mut b, grid_config((blocks, 1, 1), REDUCE_THREADS)) }?;
    let partial = partial.slice(..blocks);
    sum_partials_accumulate(k, stream, &partial, total)
}

/// `total[0] += Σ partial` in f64 (one block): the second pass of [`sum_squares`].
pub fn sum_partials_accumulate(
    k: &CudaKernels,
    stream: &CudaStream,
    partial: &impl DeviceIn<f64>,
    total: &mut impl DeviceOut<f64>,
) -> Result<()> {
    const K: &str = "sum_partials_accumulate";
    check_stream(K, k, stream)?;
    let (partial, mut total) = (partial.view_in(), total.view_out());
    check_len(K, "total", total.len(), 1)?;
    let count = partial.len();
    if count == 0 {
        return Ok(());
    }
    let ci = to_i32(K, "count", count)?;
    let cfg = grid_config((1, 1, 1), cooperative_threads(count, REDUCE_THREADS));
    let mut b = stream.launch_builder(k.function(K)?);
    b.arg(&partial).arg(&ci).arg(&mut total);
    // SAFETY: arguments match the kernel's parameters; one block of a power-of-two size reads
    // count partials and writes total[0].
    unsafe { launch(K, &mut b, cfg) }
}

/// Gradient clipping in place (`clip_factor`): with `norm = sqrt(sumsq[0])`, `x *= max_norm /
/// norm` (as f32) when `max_norm > 0` and `norm > max_norm`; otherwise `x` is left bit-identical.
pub fn clip_scale(
    k: &CudaKernels,
    stream: &CudaStream,
    x: &mut impl DeviceOut<f32>,
    sumsq: &impl DeviceIn<f64>,
    max_norm: f32,
) -> Result<()> {
    const K: &str = "clip_scale";
    check_stream(K, k, stream)?;
    let (mut x, sumsq) = (x.view_out(), sumsq.view_in());
    check_len(K, "sumsq", sumsq.len(), 1)?;
    ensure!(!max_norm.is_nan(), "{K}: max_norm is NaN");
    let len = x.len();
    if len == 0 {
        return Ok(());
    }
    let li = to_i64(K, "len", len)?;
    let mut b = stream.launch_builder(k.function(K)?);
    b.arg(&mut x).arg(&li).arg(&sumsq).arg(&max_norm);
    // SAFETY: arguments match the kernel's parameters; x holds len values, sumsq one.
    unsafe { launch(K, &mut b, stride_config(len)) }
}
