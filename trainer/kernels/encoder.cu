// ner-edge encoder kernels (f32): embeddings, layer norm, GELU, bias/residual, attention softmax.
//
// Each kernel mirrors a CPU reference in trainer/src/backprop/ (named per kernel) operation for
// operation, so that parity tests hold at 1e-5 relative error. GEMMs (linear layers, QK^T, PV)
// go through cuBLAS and are not here. Layout: activations are packed `[N, D]` row-major, N pieces
// of all sentences back to back; sentence s is rows `offsets[s]..offsets[s+1]`.
//
// Conventions: every index is bounds-checked; an out-of-range id or position makes its output
// row NaN (so a bad batch shows up in the loss instead of reading foreign memory). Row kernels
// take one block per row and need blockDim.x a power of two in [32, 1024].

#include <cuda_fp16.h>

// NVRTC has no <math.h>: +inf as a float (widens exactly to a double +inf).
#ifndef INFINITY
#define INFINITY (__int_as_float(0x7f800000))
#endif

#define NE_MAX_THREADS 1024

// Block-wide sum of `v` (blockDim.x a power of two); every thread gets the total. `buf` holds
// blockDim.x floats. Ends with a barrier, so `buf` may be reused right after.
__device__ __forceinline__ float ne_block_sum(float v, float* buf) {
    buf[threadIdx.x] = v;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) buf[threadIdx.x] += buf[threadIdx.x + s];
        __syncthreads();
    }
    float total = buf[0];
    __syncthreads();
    return total;
}

// Block-wide max of `v`, same contract as ne_block_sum.
__device__ __forceinline__ float ne_block_max(float v, float* buf) {
    buf[threadIdx.x] = v;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) buf[threadIdx.x] = fmaxf(buf[threadIdx.x], buf[threadIdx.x + s]);
        __syncthreads();
    }
    float m = buf[0];
    __syncthreads();
    return m;
}

// ---------------------------------------------------------------------------------------------
// Embeddings (backprop/embeddings.rs)

// out[i,:] = word[ids[i],:] + position[pos[i],:] + token_type[:] for i < n; pos[i] is the index
// of piece i within its sentence (host-computed from offsets). Grid-stride over n*d elements.
extern "C" __global__ void embedding_forward(const float* __restrict__ word,
                                             const float* __restrict__ position,
                                             const float* __restrict__ token_type,
                                             const unsigned* __restrict__ ids,
                                             const int* __restrict__ pos, int n, int d, int vocab,
                                             int max_pos, float* __restrict__ out) {
    long long total = (long long)n * d;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        long long i = e / d;
        int k = (int)(e - i * d);
        unsigned id = ids[i];
        int p = pos[i];
        if (id >= (unsigned)vocab || p < 0 || p >= max_pos) {
            out[e] = __int_as_float(0x7fc00000);
            continue;
        }
        out[e] = word[(long long)id * d + k] + position[(long long)p * d + k] + token_type[k];
    }
}

// Backward of embedding_forward: d_word[ids[i],:] += d_out[i,:] and d_position[pos[i],:] +=
// d_out[i,:] by atomicAdd (summation order differs from the CPU: ~1 ulp per add); rows with an
// out-of-range id or position are skipped. d_token_type is column_sum_accumulate of d_out.
extern "C" __global__ void embedding_backward(const unsigned* __restrict__ ids,
                                              const int* __restrict__ pos,
                                              const float* __restrict__ d_out, int n, int d,
                                              int vocab, int max_pos, float* __restrict__ d_word,
                                              float* __restrict__ d_position) {
    long long total = (long long)n * d;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        long long i = e / d;
        int k = (int)(e - i * d);
        unsigned id = ids[i];
        int p = pos[i];
        if (id >= (unsigned)vocab || p < 0 || p >= max_pos) continue;
        float g = d_out[e];
        atomicAdd(&d_word[(long long)id * d + k], g);
        atomicAdd(&d_position[(long long)p * d + k], g);
    }
}

// out[i,:] += shape[shapes[i],:] for i < n: the word-shape (casing) rows added after
// embedding_forward, so the sum is ((word + position) + token_type) + shape as on the CPU.
// Rows with a shape id >= classes become NaN, as out-of-range ids do.
extern "C" __global__ void shape_embedding_add(const float* __restrict__ shape,
                                               const unsigned* __restrict__ shapes, int n, int d,
                                               int classes, float* __restrict__ out) {
    long long total = (long long)n * d;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        long long i = e / d;
        int k = (int)(e - i * d);
        unsigned s = shapes[i];
        if (s >= (unsigned)classes) {
            out[e] = __int_as_float(0x7fc00000);
            continue;
        }
        out[e] += shape[(long long)s * d + k];
    }
}

// Backward of shape_embedding_add: d_shape[shapes[i],:] += d_out[i,:] by atomicAdd; rows with
// an out-of-range shape id are skipped.
extern "C" __global__ void shape_embedding_backward(const unsigned* __restrict__ shapes,
                                                    const float* __restrict__ d_out, int n, int d,
                                                    int classes, float* __restrict__ d_shape) {
    long long total = (long long)n * d;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        long long i = e / d;
        int k = (int)(e - i * d);
        unsigned s = shapes[i];
        if (s >= (unsigned)classes) continue;
        atomicAdd(&d_shape[(long long)s * d + k], d_out[e]);
    }
}

// out[k] += sum_i x[i,k] for k < d (x is [n, d]); one thread per column, rows summed in order as
// the CPU does. Used for d_token_type and bias gradients (linear.rs).
extern "C" __global__ void column_sum_accumulate(const float* __restrict__ x, int n, int d,
                                                 float* __restrict__ out) {
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= d) return;
    float s = 0.0f;
    for (long long i = 0; i < n; ++i) s += x[i * d + k];
    out[k] += s;
}

// ---------------------------------------------------------------------------------------------
// Layer norm (backprop/layernorm.rs), one block per row, row < n.

// y = (x - mean) * rstd * gamma + beta per row of width d, rstd = 1/sqrt(var + eps), biased
// variance from the centred values; writes mean[row], rstd[row].
extern "C" __global__ void layernorm_forward(const float* __restrict__ x,
                                             const float* __restrict__ gamma,
                                             const float* __restrict__ beta, float eps, int n,
                                             int d, float* __restrict__ y,
                                             float* __restrict__ mean, float* __restrict__ rstd) {
    __shared__ float buf[NE_MAX_THREADS];
    int row = blockIdx.x;
    if (row >= n) return;
    const float* xr = x + (long long)row * d;
    float* yr = y + (long long)row * d;
    float inv_d = 1.0f / (float)d;
    float s = 0.0f;
    for (int k = threadIdx.x; k < d; k += blockDim.x) s += xr[k];
    float mu = ne_block_sum(s, buf) * inv_d;
    float q = 0.0f;
    for (int k = threadIdx.x; k < d; k += blockDim.x) {
        float c = xr[k] - mu;
        q += c * c;
    }
    float var = ne_block_sum(q, buf) * inv_d;
    float inv = 1.0f / sqrtf(var + eps);
    for (int k = threadIdx.x; k < d; k += blockDim.x) yr[k] = (xr[k] - mu) * inv * gamma[k] + beta[k];
    if (threadIdx.x == 0) {
        mean[row] = mu;
        rstd[row] = inv;
    }
}

// dx = rstd * (dy*gamma - mean(dy*gamma) - xhat * mean(dy*gamma*xhat)) per row (overwrites dx),
// xhat = (x - mean) * rstd. Parameter gradients: layernorm_param_backward.
extern "C" __global__ void layernorm_backward(const float* __restrict__ x,
                                              const float* __restrict__ mean,
                                              const float* __restrict__ rstd,
                                              const float* __restrict__ gamma,
                                              const float* __restrict__ dy, int n, int d,
                                              float* __restrict__ dx) {
    __shared__ float buf[NE_MAX_THREADS];
    int row = blockIdx.x;
    if (row >= n) return;
    const float* xr = x + (long long)row * d;
    const float* dyr = dy + (long long)row * d;
    float* dxr = dx + (long long)row * d;
    float mu = mean[row], r = rstd[row];
    float inv_d = 1.0f / (float)d;
    float s_dn = 0.0f, s_dnx = 0.0f;
    for (int k = threadIdx.x; k < d; k += blockDim.x) {
        float dn = dyr[k] * gamma[k];
        s_dn += dn;
        s_dnx += dn * (xr[k] - mu) * r;
    }
    float mean_dn = ne_block_sum(s_dn, buf) * inv_d;
    float mean_dnx = ne_block_sum(s_dnx, buf) * inv_d;
    for (int k = threadIdx.x; k < d; k += blockDim.x) {
        float xhat = (xr[k] - mu) * r;
        dxr[k] = r * (dyr[k] * gamma[k] - mean_dn - xhat * mean_dnx);
    }
}

// dgamma[k] += sum_rows dy*xhat, dbeta[k] += sum_rows dy. blockDim (32, NE_LN_LANES), one block
// per 32 columns: threadIdx.x picks the column, threadIdx.y sums rows y, y + NE_LN_LANES, ... in
// order, and the lanes are added in lane order (deterministic; no atomics). Reads of a row are
// coalesced across the 32 columns.
#define NE_LN_LANES 32
extern "C" __global__ void layernorm_param_backward(const float* __restrict__ x,
                                                    const float* __restrict__ mean,
                                                    const float* __restrict__ rstd,
                                                    const float* __restrict__ dy, int n, int d,
                                                    float* __restrict__ dgamma,
                                                    float* __restrict__ dbeta) {
    __shared__ float part_g[NE_LN_LANES][33];
    __shared__ float part_b[NE_LN_LANES][33];
    int k = blockIdx.x * 32 + threadIdx.x;
    float g = 0.0f, b = 0.0f;
    if (k < d && threadIdx.y < NE_LN_LANES) {
        for (long long i = threadIdx.y; i < n; i += blockDim.y) {
            float v = dy[i * d + k];
            g += v * ((x[i * d + k] - mean[i]) * rstd[i]);
            b += v;
        }
    }
    if (threadIdx.y < NE_LN_LANES) {
        part_g[threadIdx.y][threadIdx.x] = g;
        part_b[threadIdx.y][threadIdx.x] = b;
    }
    __syncthreads();
    if (threadIdx.y == 0 && k < d) {
        float tg = 0.0f, tb = 0.0f;
        int lanes = min((int)blockDim.y, NE_LN_LANES);
        for (int j = 0; j < lanes; ++j) {
            tg += part_g[j][threadIdx.x];
            tb += part_b[j][threadIdx.x];
        }
        dgamma[k] += tg;
        dbeta[k] += tb;
    }
}

// ---------------------------------------------------------------------------------------------
// GELU, exact erf (backprop/gelu.rs), elementwise over len values.

// cdf = 0.5 * (1 + erf(x / sqrt 2)), y = x * cdf.
extern "C" __global__ void gelu_forward(const float* __restrict__ x, long long len,
                                        float* __restrict__ y, float* __restrict__ cdf) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < len;
         i += (long long)gridDim.x * blockDim.x) {
        float v = x[i];
        float phi = 0.5f * (1.0f + erff(v * 0.70710678118654752f));
        cdf[i] = phi;
        y[i] = v * phi;
    }
}

// y = x * cdf from the saved cdf (recomputation without erf).
extern "C" __global__ void gelu_recompute(const float* __restrict__ x,
                                          const float* __restrict__ cdf, long long len,
                                          float* __restrict__ y) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < len;
         i += (long long)gridDim.x * blockDim.x)
        y[i] = x[i] * cdf[i];
}

// In place: d = dL/dy on entry, dL/dx = d * (cdf + x * pdf(x)) on return.
extern "C" __global__ void gelu_backward(const float* __restrict__ x,
                                         const float* __restrict__ cdf, long long len,
                                         float* __restrict__ d) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < len;
         i += (long long)gridDim.x * blockDim.x) {
        float v = x[i];
        float density = 0.398942280401432678f * expf(-0.5f * v * v);
        d[i] *= cdf[i] + v * density;
    }
}

// ---------------------------------------------------------------------------------------------
// Bias and residual (backprop/linear.rs, residual.rs).

// out[i,k] = out[i,k] + bias[k] (+ skip[i,k] when skip != NULL), out [n, d]: the linear layer's
// bias after its cuBLAS GEMM, fused with the residual connection. The backward is a copy of d_out
// to the skip input plus column_sum_accumulate for the bias.
extern "C" __global__ void bias_residual_forward(float* __restrict__ out,
                                                 const float* __restrict__ bias,
                                                 const float* __restrict__ skip, int n, int d) {
    long long total = (long long)n * d;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        int k = (int)(e % d);
        float v = out[e] + bias[k];
        if (skip != nullptr) v += skip[e];
        out[e] = v;
    }
}

// x[i] *= s for i < len (loss scaling, gradient averaging).
extern "C" __global__ void scale_inplace(float* __restrict__ x, long long len, float s) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < len;
         i += (long long)gridDim.x * blockDim.x)
        x[i] *= s;
}

// ---------------------------------------------------------------------------------------------
// Attention softmax (backprop/attention.rs). Scores come from cuBLAS with the 1/sqrt(dh) scale
// folded into alpha; these kernels do the row softmax and its backward.

// Softmax of one row of t values in place, as attention.rs softmax_in_place: max, exp(v - max),
// multiply by 1/sum. Whole block cooperates.
__device__ void ne_softmax_row(float* row, int t, float* buf) {
    float m = -INFINITY;
    for (int j = threadIdx.x; j < t; j += blockDim.x) m = fmaxf(m, row[j]);
    m = ne_block_max(m, buf);
    float s = 0.0f;
    for (int j = threadIdx.x; j < t; j += blockDim.x) {
        float e = expf(row[j] - m);
        row[j] = e;
        s += e;
    }
    float inv = 1.0f / ne_block_sum(s, buf);
    for (int j = threadIdx.x; j < t; j += blockDim.x) row[j] *= inv;
}

// d = p * (d - sum(p*d)) for one row of t values in place (softmax_backward_in_place).
__device__ void ne_softmax_backward_row(const float* p, float* d, int t, float* buf) {
    float dot = 0.0f;
    for (int j = threadIdx.x; j < t; j += blockDim.x) dot += p[j] * d[j];
    dot = ne_block_sum(dot, buf);
    for (int j = threadIdx.x; j < t; j += blockDim.x) d[j] = p[j] * (d[j] - dot);
}

// Sentence of token i (offsets[0..=n_sent] ascending, offsets[0] = 0): the s with
// offsets[s] <= i < offsets[s+1], or -1.
__device__ int ne_sentence_of(const int* offsets, int n_sent, int i) {
    int lo = 0, hi = n_sent;
    if (i < offsets[0] || i >= offsets[n_sent]) return -1;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (offsets[mid] <= i) lo = mid; else hi = mid;
    }
    return lo;
}

// Packed layout of attention.rs: probs holds per sentence s, per head h, a [T_s, T_s] block at
// prob_offsets[s] + h*T_s*T_s (prob_offsets[s] = heads * sum_{s'<s} T_s'^2). Grid (n_tokens,
// heads): block (i, h) softmaxes row i - offsets[s] of block (s, h) in place.
extern "C" __global__ void attention_softmax_forward_packed(float* __restrict__ probs,
                                                            const int* __restrict__ offsets,
                                                            const long long* __restrict__ prob_offsets,
                                                            int n_sent, int heads,
                                                            long long probs_len) {
    __shared__ float buf[NE_MAX_THREADS];
    int i = blockIdx.x, h = blockIdx.y;
    if (h >= heads) return;
    int s = ne_sentence_of(offsets, n_sent, i);
    if (s < 0) return;
    int t = offsets[s + 1] - offsets[s];
    long long at = prob_offsets[s] + ((long long)h * t + (i - offsets[s])) * t;
    if (at < 0 || at + t > probs_len) return;
    ne_softmax_row(probs + at, t, buf);
}

// Backward of attention_softmax_forward_packed: on entry dprobs = dL/dP (same layout as probs),
// on return dL/dscores (unscaled; the 1/sqrt(dh) goes into the dQ/dK GEMMs' alpha).
extern "C" __global__ void attention_softmax_backward_packed(const float* __restrict__ probs,
                                                             float* __restrict__ dprobs,
                                                             const int* __restrict__ offsets,
                                                             const long long* __restrict__ prob_offsets,
                                                             int n_sent, int heads,
                                                             long long probs_len) {
    __shared__ float buf[NE_MAX_THREADS];
    int i = blockIdx.x, h = blockIdx.y;
    if (h >= heads) return;
    int s = ne_sentence_of(offsets, n_sent, i);
    if (s < 0) return;
    int t = offsets[s + 1] - offsets[s];
    long long at = prob_offsets[s] + ((long long)h * t + (i - offsets[s])) * t;
    if (at < 0 || at + t > probs_len) return;
    ne_softmax_backward_row(probs + at, dprobs + at, t, buf);
}

// Padded layout for strided-batched cuBLAS: probs [n_sent, heads, tmax, tmax]; sentence s has
// lens[s] <= tmax valid tokens. Grid (tmax, heads, n_sent): rows q < lens[s] get a softmax over
// their first lens[s] keys and zeros after (the key mask); padding rows become all zero.
extern "C" __global__ void attention_softmax_forward_padded(float* __restrict__ probs,
                                                            const int* __restrict__ lens,
                                                            int n_sent, int heads, int tmax) {
    __shared__ float buf[NE_MAX_THREADS];
    int q = blockIdx.x, h = blockIdx.y, s = blockIdx.z;
    if (q >= tmax || h >= heads || s >= n_sent) return;
    int t = min(max(lens[s], 0), tmax);
    float* row = probs + (((long long)s * heads + h) * tmax + q) * tmax;
    if (q < t) ne_softmax_row(row, t, buf);
    for (int j = (q < t ? t : 0) + threadIdx.x; j < tmax; j += blockDim.x) row[j] = 0.0f;
}

// Backward of attention_softmax_forward_padded in place on dprobs; padded entries get zero.
extern "C" __global__ void attention_softmax_backward_padded(const float* __restrict__ probs,
                                                             float* __restrict__ dprobs,
                                                             const int* __restrict__ lens,
                                                             int n_sent, int heads, int tmax) {
    __shared__ float buf[NE_MAX_THREADS];
    int q = blockIdx.x, h = blockIdx.y, s = blockIdx.z;
    if (q >= tmax || h >= heads || s >= n_sent) return;
    int t = min(max(lens[s], 0), tmax);
    long long at = (((long long)s * heads + h) * tmax + q) * tmax;
    if (q < t) ne_softmax_backward_row(probs + at, dprobs + at, t, buf);
    for (int j = (q < t ? t : 0) + threadIdx.x; j < tmax; j += blockDim.x) dprobs[at + j] = 0.0f;
}

// Packed [N, heads*dh] (sentence s = rows offsets[s]..offsets[s+1]) -> padded
// [n_sent, heads, tmax, dh], zero-filled past each sentence, for strided-batched GEMMs.
// One thread per padded element.
extern "C" __global__ void pack_to_padded(const float* __restrict__ packed,
                                          const int* __restrict__ offsets, int n_sent, int heads,
                                          int tmax, int dh, float* __restrict__ padded) {
    long long total = (long long)n_sent * heads * tmax * dh;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        int c = (int)(e % dh);
        long long r = e / dh;
        int q = (int)(r % tmax);
        r /= tmax;
        int h = (int)(r % heads);
        int s = (int)(r / heads);
        int t = offsets[s + 1] - offsets[s];
        padded[e] = q < t ? packed[((long long)offsets[s] + q) * heads * dh + h * dh + c] : 0.0f;
    }
}

// Inverse of pack_to_padded (padding dropped): packed row i, head h, column c from padded.
extern "C" __global__ void padded_to_pack(const float* __restrict__ padded,
                                          const int* __restrict__ offsets, int n_sent, int heads,
                                          int tmax, int dh, float* __restrict__ packed) {
    int n = offsets[n_sent];
    long long width = (long long)heads * dh;
    long long total = (long long)n * width;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        int i = (int)(e / width);
        int col = (int)(e - (long long)i * width);
        int h = col / dh, c = col - h * dh;
        int s = ne_sentence_of(offsets, n_sent, i);
        int q = s < 0 ? tmax : i - offsets[s];
        if (q >= tmax) {
            packed[e] = __int_as_float(0x7fc00000);
            continue;
        }
        packed[e] = padded[(((long long)s * heads + h) * tmax + q) * dh + c];
    }
}

// ---------------------------------------------------------------------------------------------
// Precision casts for half-precision GEMM inputs (cuBLAS with f32 accumulation).

// dst[i] = (half)src[i], round to nearest even.
extern "C" __global__ void cast_f32_to_f16(const float* __restrict__ src, long long len,
                                           __half* __restrict__ dst) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < len;
         i += (long long)gridDim.x * blockDim.x)
        dst[i] = __float2half_rn(src[i]);
}
