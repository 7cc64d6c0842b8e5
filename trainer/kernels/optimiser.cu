// ner-edge optimiser kernels: AdamW update, gradient global norm and clipping
// (trainer/src/train/optimizer.rs), f32 parameters with f64 norm accumulation as on the CPU.

#define NO_MAX_THREADS 1024

// One AdamW step over len values, as AdamW::step for one tensor:
//   m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g;  w = w*decay - step*m / (sqrt(v*inv_bc2) + eps)
// with the host-computed f32 scalars step = lr/(1-b1^t), inv_bc2 = 1/(1-b2^t) (both rounded from
// f64 as the CPU does) and decay = 1 - lr*wd (1 for tensors without decay).
extern "C" __global__ void adamw_update(float* __restrict__ w, const float* __restrict__ g,
                                        float* __restrict__ m, float* __restrict__ v,
                                        long long len, float step, float inv_bc2, float b1,
                                        float b2, float eps, float decay) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < len;
         i += (long long)gridDim.x * blockDim.x) {
        float gi = g[i];
        float mi = b1 * m[i] + (1.0f - b1) * gi;
        float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        w[i] = w[i] * decay - step * mi / (sqrtf(vi * inv_bc2) + eps);
    }
}

// Partial sums of squares: partial[blockIdx.x] = sum of x[i]^2 (in f64) over the values this
// block strides over, i < len. Launch with gridDim.x <= the length of `partial` and blockDim.x
// a power of two <= 1024; finish with sum_partials_accumulate.
extern "C" __global__ void sum_squares_partial(const float* __restrict__ x, long long len,
                                               double* __restrict__ partial) {
    __shared__ double buf[NO_MAX_THREADS];
    double s = 0.0;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < len;
         i += (long long)gridDim.x * blockDim.x) {
        double v = (double)x[i];
        s += v * v;
    }
    buf[threadIdx.x] = s;
    __syncthreads();
    for (unsigned k = blockDim.x / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) buf[threadIdx.x] += buf[threadIdx.x + k];
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[blockIdx.x] = buf[0];
}

// *total += sum of partial[0..count] (one block, blockDim.x a power of two <= 1024), so several
// tensors can add into the same total before clip_scale.
extern "C" __global__ void sum_partials_accumulate(const double* __restrict__ partial, int count,
                                                   double* __restrict__ total) {
    __shared__ double buf[NO_MAX_THREADS];
    if (blockIdx.x != 0) return;
    double s = 0.0;
    for (int i = threadIdx.x; i < count; i += blockDim.x) s += partial[i];
    buf[threadIdx.x] = s;
    __syncthreads();
    for (unsigned k = blockDim.x / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) buf[threadIdx.x] += buf[threadIdx.x + k];
        __syncthreads();
    }
    if (threadIdx.x == 0) *total += buf[0];
}

// clip_factor of optimizer.rs from the device-side sum of squares, without a host round trip:
// f = max_norm / sqrt(*sumsq) (as f32) when max_norm > 0 and the norm exceeds it, else 1; then
// x[i] *= f for i < len. f == 1 leaves x bit-identical.
extern "C" __global__ void clip_scale(float* __restrict__ x, long long len,
                                      const double* __restrict__ sumsq, float max_norm) {
    double norm = sqrt(*sumsq);
    float f = (max_norm > 0.0f && norm > (double)max_norm) ? (float)((double)max_norm / norm)
                                                           : 1.0f;
    if (f == 1.0f) return;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < len;
         i += (long long)gridDim.x * blockDim.x)
        x[i] *= f;
}
