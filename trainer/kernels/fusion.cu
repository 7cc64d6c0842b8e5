// ner-edge context-gate kernels (trainer/src/backprop/gate.rs): MFNER's denoising gate over a
// text's hidden states encoded alone (E) and after its context (C), f32, rows of `hidden` values.
//   x = [E ; C]  or  [E ; C ; (C - E)^2]   (features = 2*hidden or 3*hidden, `distance` 0 or 1)
//   g = sigmoid(x . (W[:,1] - W[:,0]) + b1 - b0),  F = E + g (C - E)
// W is [features, 2] row-major.

#define GATE_THREADS 256

// Block-wide sum of v over GATE_THREADS threads (blockDim.x must be GATE_THREADS); every
// thread gets the sum.
__device__ float gate_block_sum(float v, float* buf) {
    buf[threadIdx.x] = v;
    __syncthreads();
    for (unsigned k = GATE_THREADS / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) buf[threadIdx.x] += buf[threadIdx.x + k];
        __syncthreads();
    }
    float s = buf[0];
    __syncthreads();
    return s;
}

// One block of GATE_THREADS threads per row (grid-stride over rows): out [rows, hidden] and
// openings [rows] overwritten.
extern "C" __global__ void context_gate_forward(const float* __restrict__ e,
                                                const float* __restrict__ c,
                                                const float* __restrict__ w,
                                                const float* __restrict__ b, int rows,
                                                int hidden, int distance,
                                                float* __restrict__ out,
                                                float* __restrict__ openings) {
    __shared__ float buf[GATE_THREADS];
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* er = e + (long long)r * hidden;
        const float* cr = c + (long long)r * hidden;
        float z = 0.0f;
        for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
            float a = er[i], v = cr[i];
            z += a * (w[2 * i + 1] - w[2 * i]);
            z += v * (w[2 * (hidden + i) + 1] - w[2 * (hidden + i)]);
            if (distance) {
                float d = (v - a) * (v - a);
                z += d * (w[2 * (2 * hidden + i) + 1] - w[2 * (2 * hidden + i)]);
            }
        }
        z = gate_block_sum(z, buf) + (b[1] - b[0]);
        float g = z >= 0.0f ? 1.0f / (1.0f + expf(-z)) : expf(z) / (1.0f + expf(z));
        if (threadIdx.x == 0) openings[r] = g;
        float* fr = out + (long long)r * hidden;
        for (int i = threadIdx.x; i < hidden; i += blockDim.x) fr[i] = er[i] + g * (cr[i] - er[i]);
    }
}

// Backward through the mix and the sigmoid, one block of GATE_THREADS threads per row
// (grid-stride): dz [rows] (d loss / d (z1 - z0)), d_e and d_c [rows, hidden] overwritten.
extern "C" __global__ void context_gate_backward(const float* __restrict__ e,
                                                 const float* __restrict__ c,
                                                 const float* __restrict__ w,
                                                 const float* __restrict__ openings,
                                                 const float* __restrict__ d_out, int rows,
                                                 int hidden, int distance,
                                                 float* __restrict__ dz,
                                                 float* __restrict__ d_e,
                                                 float* __restrict__ d_c) {
    __shared__ float buf[GATE_THREADS];
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        long long base = (long long)r * hidden;
        float dg = 0.0f;
        for (int i = threadIdx.x; i < hidden; i += blockDim.x)
            dg += d_out[base + i] * (c[base + i] - e[base + i]);
        dg = gate_block_sum(dg, buf);
        float g = openings[r];
        float z = dg * g * (1.0f - g);
        if (threadIdx.x == 0) dz[r] = z;
        for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
            float d = d_out[base + i];
            float ge = (1.0f - g) * d + z * (w[2 * i + 1] - w[2 * i]);
            float gc = g * d + z * (w[2 * (hidden + i) + 1] - w[2 * (hidden + i)]);
            if (distance) {
                float pull = z * 2.0f * (c[base + i] - e[base + i]) *
                             (w[2 * (2 * hidden + i) + 1] - w[2 * (2 * hidden + i)]);
                ge -= pull;
                gc += pull;
            }
            d_e[base + i] = ge;
            d_c[base + i] = gc;
        }
    }
}

// Parameter gradients from dz: one thread per feature f < features (and thread `features` for
// the bias), each summing over all rows in order (deterministic):
//   dW[f,1] += sum_r dz_r x_{r,f},  dW[f,0] -= the same;  db[1] += sum_r dz_r,  db[0] -= it.
extern "C" __global__ void context_gate_param_backward(const float* __restrict__ e,
                                                       const float* __restrict__ c,
                                                       const float* __restrict__ dz, int rows,
                                                       int hidden, int distance,
                                                       float* __restrict__ d_w,
                                                       float* __restrict__ d_b) {
    int features = (distance ? 3 : 2) * hidden;
    int f = blockIdx.x * blockDim.x + threadIdx.x;
    if (f > features) return;
    float s = 0.0f;
    for (int r = 0; r < rows; ++r) {
        long long base = (long long)r * hidden;
        float x;
        if (f == features) {
            x = 1.0f;
        } else if (f < hidden) {
            x = e[base + f];
        } else if (f < 2 * hidden) {
            x = c[base + f - hidden];
        } else {
            float d = c[base + f - 2 * hidden] - e[base + f - 2 * hidden];
            x = d * d;
        }
        s += dz[r] * x;
    }
    if (f == features) {
        d_b[1] += s;
        d_b[0] -= s;
    } else {
        d_w[2 * f + 1] += s;
        d_w[2 * f] -= s;
    }
}
