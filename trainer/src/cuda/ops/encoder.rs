//! Launch wrappers for `trainer/kernels/encoder.cu`: embeddings, layer norm, GELU, bias and
//! residual, attention softmax (packed and padded layouts), packing and the f16 cast.
//!
//! Activations are packed `[N, D]` row-major, f32. Each wrapper mirrors the CPU reference named
//! in its docs (`crate::backprop`).

use anyhow::{ensure, Result};
use cudarc::driver::{CudaStream, CudaView, LaunchConfig, PushKernelArg};
use half::f16;

use super::{
    check_len, check_stream, cooperative_threads, grid_config, launch, mul, per_element_config,
    stride_config, to_i32, to_i64, DeviceIn, DeviceOut, PackedOffsets, MAX_GRID_YZ,
};
use crate::cuda::CudaKernels;

/// Threads per block of the row kernels (layer norm), at most.
const ROW_THREADS: u32 = 256;
/// Threads per block of the attention softmax rows, at most.
const SOFTMAX_THREADS: u32 = 128;

/// Position of every piece within its sentence (`pos[i] = i - offsets[s]`), the `pos` input of
/// [`embedding_forward`] and [`embedding_backward`]. `offsets` as in [`PackedOffsets::new`].
pub fn piece_positions(offsets: &[usize]) -> Vec<i32> {
    offsets
        .windows(2)
        .flat_map(|w| (0..w[1].saturating_sub(w[0])).map(|p| p as i32))
        .collect()
}

/// Per-sentence start of its probability blocks in the packed attention layout
/// (`heads · Σ_{s'<s} T_s'²`), the `prob_offsets` input of the packed softmax kernels.
pub fn packed_prob_offsets(offsets: &[usize], heads: usize) -> Vec<i64> {
    let mut at = 0i64;
    offsets
        .windows(2)
        .map(|w| {
            let here = at;
            let t = (w[1] - w[0]) as i64;
            at += heads as i64 * t * t;
            here
        })
        .collect()
}

/// `out[i,:] = word[ids[i],:] + position[pos[i],:] + token_type` (`embeddings_forward`).
/// `word` `[vocab, d]`, `position` `[max_pos, d]`, `token_type` `[d]`, `ids` and `pos` `[n]`
/// (see [`piece_positions`]), `out` `[n, d]` overwritten; a row with an out-of-range id or
/// position becomes NaN.
#[allow(clippy::too_many_arguments)]
pub fn embedding_forward(
    k: &CudaKernels,
    stream: &CudaStream,
    word: &impl DeviceIn<f32>,
    position: &impl DeviceIn<f32>,
    token_type: &impl DeviceIn<f32>,
    ids: &impl DeviceIn<u32>,
    pos: &impl DeviceIn<i32>,
    out: &mut impl DeviceOut<f32>,
) -> Result<()> {
    const K: &str = "embedding_forward";
    check_stream(K, k, stream)?;
    let (word, position, token_type) = (word.view_in(), position.view_in(), token_type.view_in());
    let (ids, pos, mut out) = (ids.view_in(), pos.view_in(), out.view_out());
    let d = token_type.len();
    ensure!(d > 0, "{K}: token_type is empty (hidden size 0)");
    let n = ids.len();
    let (vocab, max_pos) = table_rows(K, word.len(), position.len(), d)?;
    check_len(K, "pos", pos.len(), n)?;
    check_len(K, "out", out.len(), mul(K, n, d)?)?;
    if n == 0 {
        return Ok(());
    }
    let (ni, di) = (to_i32(K, "n", n)?, to_i32(K, "d", d)?);
    let (vi, pi) = (to_i32(K, "vocab", vocab)?, to_i32(K, "max_pos", max_pos)?);
    let mut b = stream.launch_builder(k.function(K)?);
    b.arg(&word)
        .arg(&position)
        .arg(&token_type)
        .arg(&ids)
        .arg(&pos);
    b.arg(&ni).arg(&di).arg(&vi).arg(&pi).arg(&mut out);
    // SAFETY: arguments match the kernel's parameters; `out` holds n*d values and the kernel
    // bounds ids by vocab = word.len()/d and positions by max_pos = position.len()/d.
    unsafe { launch(K, &mut b, stride_config(n * d)) }
}

/// Backward of [`embedding_forward`]: `d_word[ids[i],:] += d_out[i,:]`, `d_position[pos[i],:]
/// += d_out[i,:]` (atomic adds; rows with out-of-range ids or positions skipped). The token-type
/// gradient is [`column_sum_accumulate`] of `d_out`.
#[allow(clippy::too_many_arguments)]
pub fn embedding_backward(
    k: &CudaKernels,
    stream: &CudaStream,
    ids: &impl DeviceIn<u32>,
    pos: &impl DeviceIn<i32>,
    d_out: &impl DeviceIn<f32>,
    d: usize,
    d_word: &mut impl DeviceOut<f32>,
    d_position: &mut impl DeviceOut<f32>,
) -> Result<()> {
    const K: &str = "embedding_backward";
    check_stream(K, k, stream)?;
    let (ids, pos, d_out) = (ids.view_in(), pos.view_in(), d_out.view_in());
    let (mut d_word, mut d_position) = (d_word.view_out(), d_position.view_out());
    ensure!(d > 0, "{K}: hidden size 0");
    let n = ids.len();
    let (vocab, max_pos) = table_rows(K, d_word.len(), d_position.len(), d)?;
    check_len(K, "pos", pos.len(), n)?;
    check_len(K, "d_out", d_out.len(), mul(K, n, d)?)?;
    if n == 0 {
        return Ok(());
    }
    let (ni, di) = (to_i32(K, "n", n)?, to_i32(K, "d", d)?);
    let (vi, pi) = (to_i32(K, "vocab", vocab)?, to_i32(K, "max_pos", max_pos)?);
    let mut b = stream.launch_builder(k.function(K)?);
    b.arg(&ids)
        .arg(&pos)
        .arg(&d_out)
        .arg(&ni)
        .arg(&di)
        .arg(&vi)
        .arg(&pi);
    b.arg(&mut d_word).arg(&mut d_position);
    // SAFETY: arguments match the kernel's parameters; d_out holds n*d values and the kernel
    // bounds ids by vocab = d_word.len()/d and positions by max_pos = d_position.len()/d.
    unsafe { launch(K, &mut b, stride_config(n * d)) }
}

fn table_rows(kernel: &str, word: usize, position: usize, d: usize) -> Result<(usize, usize)> {
    ensure!(
        word.is_multiple_of(d) && position.is_multiple_of(d),
        "{kernel}: table lengths {word} (word) and {position} (position) are not multiples of \
         the hidden size {d}"
    );
    Ok((word / d, position / d))
}

/// `out[k] += Σ_i x[i,k]` for `x` `[n, d]`, `d = out.len()`, rows summed in order: the
/// token-type and bias gradients (`embeddings_backward`, `linear_backward`'s `db`).
pub fn column_sum_accumulate(
    k: &CudaKernels,
    stream: &CudaStream,
    x: &impl DeviceIn<f32>,
    n: usize,
    out: &mut impl DeviceOut<f32>,
) -> Result<()> {
    const K: &str = "column_sum_accumulate";
    check_stream(K, k, stream)?;
    let (x, mut out) = (x.view_in(), out.view_out());
    let d = out.len();
    check_len(K, "x", x.len(), mul(K, n, d)?)?;
    if n == 0 || d == 0 {
        return Ok(());
    }
    let (ni, di) = (to_i32(K, "n", n)?, to_i32(K, "d", d)?);
    let cfg = per_element_config(K, d)?;
    let mut b = stream.launch_builder(k.function(K)?);
    b.arg(&x).arg(&ni).arg(&di).arg(&mut out);
    // SAFETY: arguments match the kernel's parameters; one thread per column k < d of x [n, d].
    unsafe { launch(K, &mut b, cfg) }
}

/// Layer norm of each row of `x` `[n, d]`, `d = gamma.len()` (`layernorm_forward`): `y` `[n, d]`,
/// `mean` and `rstd` `[n]`, all overwritten.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward(
    k: &CudaKernels,
    stream: &CudaStream,
    x: &impl DeviceIn<f32>,
    gamma: &impl DeviceIn<f32>,
    beta: &impl DeviceIn<f32>,
    eps: f32,
    y: &mut impl DeviceOut<f32>,
    mean: &mut impl DeviceOut<f32>,
    rstd: &mut impl DeviceOut<f32>,
) -> Result<()> {
    const K: &str = "layernorm_forward";
    check_stream(K, k, stream)?;
    let (x, gamma, beta) = (x.view_in(), gamma.view_in(), beta.view_in());
    let (mut y, mut mean, mut rstd) = (y.view_out(), mean.view_out(), rstd.view_out());
    let d = gamma.len();
    ensure!(d > 0, "{K}: gamma is empty (width 0)");
    check_len(K, "beta", beta.len(), d)?;
    let n = mean.len();
    check_len(K, "x", x.len(), mul(K, n, d)?)?;
    check_len(K, "y", y.len(), n * d)?;
    check_len(K, "rstd", rstd.len(), n)?;
    if n == 0 {
        return Ok(());
    }
    let (ni, di) = (to_i32(K, "n", n)?, to_i32(K, "d", d)?);
    let cfg = grid_config((n, 1, 1), cooperative_threads(d, ROW_THREADS));
    let mut b = stream.launch_builder(k.function(K)?);
    b.arg(&x).arg(&gamma).arg(&beta).arg(&eps).arg(&ni).arg(&di);
    b.arg(&mut y).arg(&mut mean).arg(&mut rstd);
    // SAFETY: arguments match the kernel's parameters; one block (power-of-two threads in
    // [32, 256]) per row of [n, d] buffers whose lengths were checked above.
    unsafe { launch(K, &mut b, cfg) }
}

/// Input gradient of the layer norm (`layernorm_backward`'s `dx`, overwritten) from `x`, the
/// saved `mean`/`rstd` `[n]`, `gamma` `[d]` and `dy` `[n, d]`. Parameter gradients:
/// [`layernorm_param_backward`].
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward(
    k: &CudaKernels,
    stream: &CudaStream,
    x: &impl DeviceIn<f32>,
    mean: &impl DeviceIn<f32>,
    rstd: &impl DeviceIn<f32>,
    gamma: &impl DeviceIn<f32>,
    dy: &impl DeviceIn<f32>,
    dx: &mut impl DeviceOut<f32>,
) -> Result<()> {
    const K: &str = "layernorm_backward";
    check_stream(K, k, stream)?;
    let (x, mean, rstd) = (x.view_in(), mean.view_in(), rstd.view_in());
    let (gamma, dy, mut dx) = (gamma.view_in(), dy.view_in(), dx.view_out());
    let d = gamma.len();
    ensure!(d > 0, "{K}: gamma is empty (width 0)");
    let n = mean.len();
    check_len(K, "rstd", rstd.len(), n)?;
    check_len(K, "x", x.len(), mul(K, n, d)?)?;
    check_len(K, "dy", dy.len(), n * d)?;
    check_len(K, "dx", dx.len(), n * d)?;
    if n == 0 {
        return Ok(());
    }
    let (ni, di) = (to_i32(K, "n", n)?, to_i32(K, "d", d)?);
    let cfg = grid_config((n, 1, 1), cooperative_threads(d, ROW_THREADS));
    let mut b = stream.launch_builder(k.function(K)?);
    b.arg(&x)
        .arg(&mean)
        .arg(&rstd)
        .arg(&gamma)
        .arg(&dy)
        .arg(&ni)
        .arg(&di)
        .arg(&mut dx);
    // SAFETY: arguments match the kernel's parameters; one block (power-of-two threads in
    // [32, 256]) per row of [n, d] buffers whose lengths were checked above.
    unsafe { launch(K, &mut b, cfg) }
}

/// Layer-norm parameter gradients (`layernorm_backward`'s): `dgamma += Σ_rows dy·x̂`, `dbeta +=
/// Σ_rows dy`, `x`, `dy` `[n, d]`, `mean`, `rstd` `[n]`, `d = dgamma.len()`.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_param_backward(
    k: &CudaKernels,
    stream: &CudaStream,
    x: &impl DeviceIn<f32>,
    mean: &impl DeviceIn<f32>,
    rstd: &impl DeviceIn<f32>,
    dy: &impl DeviceIn<f32>,
    dgamma: &mut impl DeviceOut<f32>,
    dbeta: &mut impl DeviceOut<f32>,
) -> Result<()> {
    const K: &str = "layernorm_param_backward";
    check_stream(K, k, stream)?;
    let (x, mean, rstd, dy) = (x.view_in(), mean.view_in(), rstd.view_in(), dy.view_in());
    let (mut dgamma, mut dbeta) = (dgamma.view_out(), dbeta.view_out());
    let d = dgamma.len();
    check_len(K, "dbeta", dbeta.len(), d)?;
    let n = mean.len();
    check_len(K, "rstd", rstd.len(), n)?;
    check_len(K, "x", x.len(), mul(K, n, d)?)?;
    check_len(K, "dy", dy.len(), n * d)?;
    if n == 0 || d == 0 {
        return Ok(());
    }
    let (ni, di) = (to_i32(K, "n", n)?, to_i32(K, "d", d)?);
    let cfg = LaunchConfig {
        block_dim: (32, 32, 1),
        ..grid_config((d.div_ceil(32), 1, 1), 32)
    };
    let mut b = stream.launch_builder(k.function(K)?);
    b.arg(&x).arg(&mean).arg(&rstd).arg(&dy).arg(&ni).arg(&di);
    b.arg(&mut dgamma).arg(&mut dbeta);
    // SAFETY: arguments match the kernel's parameters; blocks of 32 columns × 32 row lanes
    // cover every column k < d, lengths checked above.
    unsafe { launch(K, &mut b, cfg) }
}

/// Exact GELU (`gelu_forward`): `y = x·Φ(x)` and `cdf = Φ(x)`, both overwritten, same length as
/// `x`.
pub fn gelu_forward(
    k: &CudaKernels,
    stream: &CudaStream,
    x: &impl DeviceIn<f32>,
    y: &mut impl DeviceOut<f32>,
    cdf: &mut impl DeviceOut<f32>,
) -> Result<()> {
    const K: &str = "gelu_forward";
    check_stream(K, k, stream)?;
    let (x, mut y, mut cdf) = (x.view_in(), y.view_out(), cdf.view_out());
    let len = x.len();
    check_len(K, "y", y.len(), len)?;
    check_len(K, "cdf", cdf.len(), len)?;
    if len == 0 {
        return Ok(());
    }
    let li = to_i64(K, "len", len)?;
    let mut b = stream.launch_builder(k.function(K)?);
    b.arg(&x).arg(&li).arg(&mut y).arg(&mut cdf);
    // SAFETY: arguments match the kernel's parameters; all three buffers hold len values.
    unsafe { launch(K, &mut b, stride_config(len)) }
}

/// `y = x·cdf` from the saved `cdf` (`gelu_recompute`), `y` overwritten.
pub fn gelu_recompute(
    k: &CudaKernels,
    stream: &CudaStream,
    x: &impl DeviceIn<f32>,
    cdf: &impl DeviceIn<f32>,
    y: &mut impl DeviceOut<f32>,
) -> Result<()> {
    const K: &str = "gelu_recompute";
    check_stream(K, k, stream)?;
    let (x, cdf, mut y) = (x.view_in(), cdf.view_in(), y.view_out());
    let len = x.len();
    check_len(K, "cdf", cdf.len(), len)?;
    check_len(K, "y", y.len(), len)?;
    if len == 0 {
        return Ok(());
    }
    let li = to_i64(K, "len", len)?;
    let mut b = stream.launch_builder(k.function(K)?);
    b.arg(&x).arg(&cdf).arg(&li).arg(&mut y);
    // SAFETY: arguments match the kernel's parameters; all three buffers hold len values.
    unsafe { launch(K, &mut b, stride_config(len)) }
}

/// GELU backward in place (`gelu_backward`): `d = ∂L/∂y` on entry, `∂L/∂x` on return.
pub fn gelu_backward(
    k: &CudaKernels,
    stream: &CudaStream,
    x: &impl DeviceIn<f32>,
    cdf: &impl DeviceIn<f32>,
    d: &mut impl DeviceOut<f32>,
) -> Result<()> {
    const K: &str = "gelu_backward";
    check_stream(K, k, stream)?;
    let (x, cdf, mut d) = (x.view_in(), cdf.view_in(), d.view_out());
    let len = x.len();
    check_len(K, "cdf", cdf.len(), len)?;
    check_len(K, "d", d.len(), len)?;
    if len == 0 {
        return Ok(());
    }
    let li = to_i64(K, "len", len)?;
    let mut b = stream.launch_builder(k.function(K)?);
    b.arg(&x).arg(&cdf).arg(&li).arg(&mut d);
    // SAFETY: arguments match the kernel's parameters; all three buffers hold len values.
    unsafe { launch(K, &mut b, stride_config(len)) }
}

/// `out[i,:] += bias` and, with `skip`, `+= skip[i,:]`: a linear layer's bias after its GEMM
/// fused with the residual connection (`linear_forward` + `residual_forward`). `out` `[n, d]`
/// with `d = bias.len()`; `skip`, when given, `[n, d]`.
pub fn bias_residual_forward(
    k: &CudaKernels,
    stream: &CudaStream,
    out: &mut impl DeviceOut<f32>,
    bias: &impl DeviceIn<f32>,
    skip: Option<CudaView<'_, f32>>,
) -> Result<()> {
    const K: &str = "bias_residual_forward";
    check_stream(K, k, stream)?;
    let (mut out, bias) = (out.view_out(), bias.view_in());
    let d = bias.len();
    ensure!(d > 0, "{K}: bias is empty (width 0)");
    ensure!(
        out.len().is_multiple_of(d),
        "{K}: out holds {} values, not a multiple of the bias width {d}",
        out.len()
    );
    let n = out.len() / d;
    if let Some(s) = &skip {
        check_len(K, "skip", s.len(), n * d)?;
    }
    if n == 0 {
        return Ok(());
    }
    let (ni, di) = (to_i32(K, "n", n)?, to_i32(K, "d", d)?);
    let null: u64 = 0;
    let mut b = stream.launch_builder(k.function(K)?);
    b.arg(&mut out).arg(&bias);
    match &skip {
        Some(s) => b.arg(s),
        None => b.arg(&null),
    };
    b.arg(&ni).arg(&di);
    // SAFETY: arguments match the kernel's parameters (a null device pointer for an absent
    // skip, which the kernel tests); out and skip hold n*d values, bias d.
    unsafe { launch(K, &mut b, stride_config(n * d)) }
}

/// `x *= s` in place (loss scaling, gradient averaging).
pub fn scale_inplace(
    k: &CudaKernels,
    stream: &CudaStream,
    x: &mut impl DeviceOut<f32>,
    s: f32,
) -> Result<()> {
    const K: &str = "scale_inplace";
    check_stream(K, k, stream)?;
    let mut x = x.view_out();
    let len = x.len();
    if len == 0 {
        return Ok(());
    }
    let li = to_i64(K, "len", len)?;
    let mut b = stream.launch_builder(k.function(K)?);
    b.arg(&mut x).arg(&li).arg(&s);
    // SAFETY: arguments match the kernel's parameters; x holds len values.
    unsafe { launch(K, &mut b, stride_config(len)) }
}

fn check_packed_probs(
    kernel: &str,
    offsets: &PackedOffsets,
    prob_offsets: usize,
    heads: usize,
    probs: usize,
) -> Result<()> {
    ensure!(heads > 0, "{kernel}: heads = 0");
    ensure!(
        heads <= MAX_GRID_YZ,
        "{kernel}: {heads} heads exceed the grid's y dimension"
    );
    check_len(kernel, "prob_offsets", prob_offsets, offsets.sentences())?;
    let want = offsets
        .host()
        .windows(2)
        .map(|w| ((w[1] - w[0]) as usize).pow(2))
        .sum::<usize>()
        * heads;
    check_len(kernel, "probs", probs, want)
}

/// Row softmax in place of the packed attention scores (`attention_forward`'s softmax): per
/// sentence `s` and head `h` a `[T_s, T_s]` block at `prob_offsets[s] + h·T_s²`
/// ([`packed_prob_offsets`]); `probs` has `heads·Σ T_s²` values (`probs_len`).
pub fn attention_softmax_forward_packed(
    k: &CudaKernels,
    stream: &CudaStream,
    probs: &mut impl DeviceOut<f32>,
    offsets: &PackedOffsets,
    prob_offsets: &impl DeviceIn<i64>,
    heads: usize,
) -> Result<()> {
    const K: &str = "attention_softmax_forward_packed";
    check_stream(K, k, stream)?;
    let (mut probs, prob_offsets) = (probs.view_out(), prob_offsets.view_in());
    check_packed_probs(K, offsets, prob_offsets.len(), heads, probs.len())?;
    let n_tokens = offsets.rows();
    if n_tokens == 0 {
        return Ok(());
    }
    let (si, hi) = (
        to_i32(K, "n_sent", offsets.sentences())?,
        to_i32(K, "heads", heads)?,
    );
    let li = to_i64(K, "probs_len", probs.len())?;
    let cfg = grid_config(
        (n_tokens, heads, 1),
        cooperative_threads(offsets.max_len(), SOFTMAX_THREADS),
    );
    let mut b = stream.launch_builder(k.function(K)?);
    b.arg(&mut probs).arg(offsets.device()).arg(&prob_offsets);
    b.arg(&si).arg(&hi).arg(&li);
    // SAFETY: arguments match the kernel's parameters; grid (n_tokens, heads) with n_tokens =
    // offsets[n_sent], offsets holds n_sent+1 ascending values and the kernel keeps each row
    // inside probs_len.
    unsafe { launch(K, &mut b, cfg) }
}

/// Backward of [`attention_softmax_forward_packed`] in place: `dprobs = ∂L/∂P` on entry,
/// `∂L/∂scores` (unscaled) on return (`softmax_backward_in_place` per row).
pub fn attention_softmax_backward_packed(
    k: &CudaKernels,
    stream: &CudaStream,
    probs: &impl DeviceIn<f32>,
    dprobs: &mut impl DeviceOut<f32>,
    offsets: &PackedOffsets,
    prob_offsets: &impl DeviceIn<i64>,
    heads: usize,
) -> Result<()> {
    const K: &str = "attention_softmax_backward_packed";
    check_stream(K, k, stream)?;
    let (probs, mut dprobs) = (probs.view_in(), dprobs.view_out());
    let prob_offsets = prob_offsets.view_in();
    check_packed_probs(K, offsets, prob_offsets.len(), heads, probs.len())?;
    check_len(K, "dprobs", dprobs.len(), probs.len())?;
    let n_tokens = offsets.rows();
    if n_tokens == 0 {
        return Ok(());
    }
    let (si, hi) = (
        to_i32(K, "n_sent", offsets.sentences())?,
        to_i32(K, "heads", heads)?,
    );
    let li = to_i64(K, "probs_len", probs.len())?;
    let cfg = grid_config(
        (n_tokens, heads, 1),
        cooperative_threads(offsets.max_len(), SOFTMAX_THREADS),
    );
    let mut b = stream.launch_builder(k.function(K)?);
    b.arg(&probs)
        .arg(&mut dprobs)
        .arg(offsets.device())
        .arg(&prob_offsets);
    b.arg(&si).arg(&hi).arg(&li);
    // SAFETY: as attention_softmax_forward_packed; dprobs has the length of probs.
    unsafe { launch(K, &mut b, cfg) }
}

fn check_padded(kernel: &str, n_sent: usize, heads: usize, tmax: usize, len: usize) -> Result<()> {
    ensure!(heads > 0, "{kernel}: heads = 0");
    ensure!(
        heads <= MAX_GRID_YZ && n_sent <= MAX_GRID_YZ,
        "{kernel}: {heads} heads or {n_sent} sentences exceed the grid's y/z dimensions"
    );
    let want = mul(
        kernel,
        mul(kernel, n_sent, heads)?,
        mul(kernel, tmax, tmax)?,
    )?;
    check_len(kernel, "probs", len, want)
}

/// Masked row softmax in place of padded scores `[n_sent, heads, tmax, tmax]`: sentence `s` has
/// `lens[s]` valid tokens (clamped to `[0, tmax]`); valid rows are softmaxed over their valid
/// keys with zeros after, padding rows become zero. `n_sent = lens.len()`.
pub fn attention_softmax_forward_padded(
    k: &CudaKernels,
    stream: &CudaStream,
    probs: &mut impl DeviceOut<f32>,
    lens: &impl DeviceIn<i32>,
    heads: usize,
    tmax: usize,
) -> Result<()> {
    const K: &str = "attention_softmax_forward_padded";
    check_stream(K, k, stream)?;
    let (mut probs, lens) = (probs.view_out(), lens.view_in());
    let n_sent = lens.len();
    check_padded(K, n_sent, heads, tmax, probs.len())?;
    if n_sent == 0 || tmax == 0 {
        return Ok(());
    }
    let (si, hi, ti) = (
        to_i32(K, "n_sent", n_sent)?,
        to_i32(K, "heads", heads)?,
        to_i32(K, "tmax", tmax)?,
    );
    let cfg = grid_config(
        (tmax, heads, n_sent),
        cooperative_threads(tmax, SOFTMAX_THREADS),
    );
    let mut b = stream.launch_builder(k.function(K)?);
    b.arg(&mut probs).arg(&lens).arg(&si).arg(&hi).arg(&ti);
    // SAFETY: arguments match the kernel's parameters; grid (tmax, heads, n_sent) over probs
    // of n_sent*heads*tmax*tmax values, lens clamped to [0, tmax] by the kernel.
    unsafe { launch(K, &mut b, cfg) }
}

/// Backward of [`attention_softmax_forward_padded`] in place on `dprobs`; padded entries get
/// zero.
pub fn attention_softmax_backward_padded(
    k: &CudaKernels,
    stream: &CudaStream,
    probs: &impl DeviceIn<f32>,
    dprobs: &mut impl DeviceOut<f32>,
    lens: &impl DeviceIn<i32>,
    heads: usize,
    tmax: usize,
) -> Result<()> {
    const K: &str = "attention_softmax_backward_padded";
    check_stream(K, k, stream)?;
    let (probs, mut dprobs, lens) = (probs.view_in(), dprobs.view_out(), lens.view_in());
    let n_sent = lens.len();
    check_padded(K, n_sent, heads, tmax, probs.len())?;
    check_len(K, "dprobs", dprobs.len(), probs.len())?;
    if n_sent == 0 || tmax == 0 {
        return Ok(());
    }
    let (si, hi, ti) = (
        to_i32(K, "n_sent", n_sent)?,
        to_i32(K, "heads", heads)?,
        to_i32(K, "tmax", tmax)?,
    );
    let cfg = grid_config(
        (tmax, heads, n_sent),
        cooperative_threads(tmax, SOFTMAX_THREADS),
    );
    let mut b = stream.launch_builder(k.function(K)?);
    b.arg(&probs)
        .arg(&mut dprobs)
        .arg(&lens)
        .arg(&si)
        .arg(&hi)
        .arg(&ti);
    // SAFETY: as attention_softmax_forward_padded; dprobs has the length of probs.
    unsafe { launch(K, &mut b, cfg) }
}

fn check_pack(
    kernel: &str,
    offsets: &PackedOffsets,
    heads: usize,
    tmax: usize,
    dh: usize,
    packed: usize,
    padded: usize,
) -> Result<()> {
    ensure!(heads > 0 && dh > 0, "{kernel}: heads = {heads}, dh = {dh}");
    ensure!(
        tmax >= offsets.max_len(),
        "{kernel}: tmax = {tmax} is shorter than the longest sentence ({})",
        offsets.max_len()
    );
    let width = mul(kernel, heads, dh)?;
    check_len(
        kernel,
        "packed",
        packed,
        mul(kernel, offsets.rows(), width)?,
    )?;
    let per_sentence = mul(kernel, mul(kernel, heads, tmax)?, dh)?;
    check_len(
        kernel,
        "padded",
        padded,
        mul(kernel, offsets.sentences(), per_sentence)?,
    )
}

/// Packed `[N, heads·dh]` to padded `[n_sent, heads, tmax, dh]` (zero past each sentence) for
/// strided-batched GEMMs; `tmax` at least the longest sentence.
#[allow(clippy::too_many_arguments)]
pub fn pack_to_padded(
    k: &CudaKernels,
    stream: &CudaStream,
    packed: &impl DeviceIn<f32>,
    offsets: &PackedOffsets,
    heads: usize,
    tmax: usize,
    dh: usize,
    padded: &mut impl DeviceOut<f32>,
) -> Result<()> {
    const K: &str = "pack_to_padded";
    check_stream(K, k, stream)?;
    let (packed, mut padded) = (packed.view_in(), padded.view_out());
    check_pack(K, offsets, heads, tmax, dh, packed.len(), padded.len())?;
    if padded.is_empty() {
        return Ok(());
    }
    let si = to_i32(K, "n_sent", offsets.sentences())?;
    let (hi, ti, di) = (
        to_i32(K, "heads", heads)?,
        to_i32(K, "tmax", tmax)?,
        to_i32(K, "dh", dh)?,
    );
    let len = padded.len();
    let mut b = stream.launch_builder(k.function(K)?);
    b.arg(&packed)
        .arg(offsets.device())
        .arg(&si)
        .arg(&hi)
        .arg(&ti)
        .arg(&di);
    b.arg(&mut padded);
    // SAFETY: arguments match the kernel's parameters; the host copy of offsets bounds every
    // read to packed (rows*heads*dh values) and padded holds n_sent*heads*tmax*dh values.
    unsafe { launch(K, &mut b, stride_config(len)) }
}

/// Padded `[n_sent, heads, tmax, dh]` back to packed `[N, heads·dh]` (padding dropped).
#[allow(clippy::too_many_arguments)]
pub fn padded_to_pack(
    k: &CudaKernels,
    stream: &CudaStream,
    padded: &impl DeviceIn<f32>,
    offsets: &PackedOffsets,
    heads: usize,
    tmax: usize,
    dh: usize,
    packed: &mut impl DeviceOut<f32>,
) -> Result<()> {
    const K: &str = "padded_to_pack";
    check_stream(K, k, stream)?;
    let (padded, mut packed) = (padded.view_in(), packed.view_out());
    check_pack(K, offsets, heads, tmax, dh, packed.len(), padded.len())?;
    if packed.is_empty() {
        return Ok(());
    }
    let si = to_i32(K, "n_sent", offsets.sentences())?;
    let (hi, ti, di) = (
        to_i32(K, "heads", heads)?,
        to_i32(K, "tmax", tmax)?,
        to_i32(K, "dh", dh)?,
    );
    let len = packed.len();
    let mut b = stream.launch_builder(k.function(K)?);
    b.arg(&padded)
        .arg(offsets.device())
        .arg(&si)
        .arg(&hi)
        .arg(&ti)
        .arg(&di);
    b.arg(&mut packed);
    // SAFETY: arguments match the kernel's parameters; the host copy of offsets bounds every
    // access (rows*heads*dh packed values, n_sent*heads*tmax*dh padded values).
    unsafe { launch(K, &mut b, stride_config(len)) }
}

/// `dst = src` rounded to f16 (nearest even), for half-precision GEMM inputs.
pub fn cast_f32_to_f16(
    k: &CudaKernels,
    stream: &CudaStream,
    src: &impl DeviceIn<f32>,
    dst: &mut impl DeviceOut<f16>,
) -> Result<()> {
    const K: &str = "cast_f32_to_f16";
    check_stream(K, k, stream)?;
    let (src, mut dst) = (src.view_in(), dst.view_out());
    let len = src.len();
    check_len(K, "dst", dst.len(), len)?;
    if len == 0 {
        return Ok(());
    }
    let li = to_i64(K, "len", len)?;
    let mut b = stream.launch_builder(k.function(K)?);
    b.arg(&src).arg(&li).arg(&mut dst);
    // SAFETY: arguments match the kernel's parameters; src and dst hold len values.
    unsafe { launch(K, &mut b, stride_config(len)) }
}
