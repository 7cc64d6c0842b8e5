// ner-edge optimal-transport kernels: batched entropic OT between small uniform point clouds,
// mirroring runtime/src/memory/sinkhorn.rs and retrieval.rs (barycentric map) in f64.
//
// A batch holds B independent problems. Problem b is an m[b] x n[b] cost matrix stored
// row-major at cost + cost_off[b] (transport plans use the same offsets); its point clouds are
// rows x_row[b].. of X ([*, d], the support) and y_row[b].. of Y ([*, d], a memory slot).
// One block per problem; blockDim.x a power of two <= 1024; m, n <= OT_MAX_SIDE.

// NVRTC has no <math.h>: +inf as a float (widens exactly to a double +inf).
#ifndef INFINITY
#define INFINITY (__int_as_float(0x7f800000))
#endif

#define OT_MAX_THREADS 1024
#define OT_MAX_SIDE 1024
// Largest (max C - min C)/eps solved in the scaling domain (MAX_SCALING_SPREAD in sinkhorn.rs).
#define OT_MAX_SCALING_SPREAD 200.0

// Sinkhorn outcome codes written to status[b].
#define OT_OK 0
#define OT_INVALID_INPUT 1   // bad shape, eps, offsets or non-finite cost (Plan::reject)
#define OT_BREAKDOWN 2       // non-finite or negative plan or error (sanitise -> None)

__device__ __forceinline__ double ot_block_sum(double v, double* buf) {
    buf[threadIdx.x] = v;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) buf[threadIdx.x] += buf[threadIdx.x + s];
        __syncthreads();
    }
    double t = buf[0];
    __syncthreads();
    return t;
}

__device__ __forceinline__ double ot_block_max(double v, double* buf) {
    buf[threadIdx.x] = v;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) buf[threadIdx.x] = fmax(buf[threadIdx.x], buf[threadIdx.x + s]);
        __syncthreads();
    }
    double t = buf[0];
    __syncthreads();
    return t;
}

__device__ __forceinline__ double ot_block_min(double v, double* buf) {
    return -ot_block_max(-v, buf);
}

// Whether problem b's cost block lies inside [0, cost_len).
__device__ __forceinline__ bool ot_in_range(long long off, int m, int n, long long cost_len) {
    return m > 0 && n > 0 && m <= OT_MAX_SIDE && n <= OT_MAX_SIDE && off >= 0 &&
           off + (long long)m * n <= cost_len;
}

// Normalised squared Euclidean cost (squared_euclidean_cost): C_ij = |x_i - y_j|^2 / max C in f64
// from f32 coordinates (all zeros when max C = 0, all NaN when any entry is not finite), for rows
// x_row[b]+i < x_rows and y_row[b]+j < y_rows. Out-of-range problems are filled with NaN where
// they fit, so ot_sinkhorn rejects them.
extern "C" __global__ void ot_cost(const float* __restrict__ x, int x_rows,
                                   const float* __restrict__ y, int y_rows, int d,
                                   const int* __restrict__ m, const int* __restrict__ n,
                                   const int* __restrict__ x_row, const int* __restrict__ y_row,
                                   const long long* __restrict__ cost_off, int batch,
                                   long long cost_len, double* __restrict__ cost) {
    __shared__ double buf[OT_MAX_THREADS];
    int b = blockIdx.x;
    if (b >= batch) return;
    int mb = m[b], nb = n[b];
    long long off = cost_off[b];
    if (!ot_in_range(off, mb, nb, cost_len)) return;
    double* c = cost + off;
    bool rows_ok = d > 0 && x_row[b] >= 0 && y_row[b] >= 0 && x_row[b] + mb <= x_rows &&
                   y_row[b] + nb <= y_rows;
    long long cells = (long long)mb * nb;
    if (!rows_ok) {
        for (long long e = threadIdx.x; e < cells; e += blockDim.x) c[e] = nan("");
        return;
    }
    const float* xb = x + (long long)x_row[b] * d;
    const float* yb = y + (long long)y_row[b] * d;
    double hi = 0.0;
    int finite = 1;
    for (long long e = threadIdx.x; e < cells; e += blockDim.x) {
        int i = (int)(e / nb), j = (int)(e - (long long)i * nb);
        double s = 0.0;
        for (int k = 0; k < d; ++k) {
            double diff = (double)xb[(long long)i * d + k] - (double)yb[(long long)j * d + k];
            s += diff * diff;
        }
        if (!isfinite(s)) finite = 0; else hi = fmax(hi, s);
        c[e] = s;
    }
    hi = ot_block_max(hi, buf);
    double all_finite = ot_block_min((double)finite, buf);
    for (long long e = threadIdx.x; e < cells; e += blockDim.x) {
        if (all_finite == 0.0) c[e] = nan("");
        else if (hi > 0.0) c[e] /= hi;
    }
}

// t = diag(u) K diag(v) (scaling) or t_ij = exp((f_i + g_j - C_ij)/eps) (log), then the marginal
// error sum_i |rowsum_i - 1/m| + sum_j |colsum_j - 1/n| of t. Whole block.
__device__ double ot_plan_and_error(bool log_domain, const double* c, const double* k,
                                    const double* u, const double* v, double eps, int m, int n,
                                    double* t, double* buf) {
    long long cells = (long long)m * n;
    for (long long e = threadIdx.x; e < cells; e += blockDim.x) {
        int i = (int)(e / n), j = (int)(e - (long long)i * n);
        t[e] = log_domain ? exp((u[i] + v[j] - c[e]) / eps) : u[i] * k[e] * v[j];
    }
    __syncthreads();
    double err = 0.0;
    double a = 1.0 / m, bb = 1.0 / n;
    for (int i = threadIdx.x; i < m; i += blockDim.x) {
        double r = 0.0;
        for (int j = 0; j < n; ++j) r += t[(long long)i * n + j];
        err += fabs(r - a);
    }
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        double s = 0.0;
        for (int i = 0; i < m; ++i) s += t[(long long)i * n + j];
        err += fabs(s - bb);
    }
    return ot_block_sum(err, buf);
}

// Batched Sinkhorn-Knopp with uniform marginals (SinkhornWorkspace::solve), one block per
// problem: scaling domain with K = exp(-(C - min C)/eps) when (max C - min C)/eps <= 200, else
// log domain with max-shifted log-sum-exp; v = 1 (g = 0) to start; each iteration updates u then
// v; the marginal error is checked every check_every iterations (0 = 1) and after the last,
// stopping once it is <= tol. Writes transport (at cost_off[b]), distance = <C, T>, iterations,
// marginal error, converged (error <= tol) and status (OT_*). kbuf has the layout of cost
// (scratch for K). Rejected problems get status != OT_OK and distance NaN.
extern "C" __global__ void ot_sinkhorn(const double* __restrict__ cost, const int* __restrict__ m,
                                       const int* __restrict__ n,
                                       const long long* __restrict__ cost_off, int batch,
                                       long long cost_len, double eps, int max_iters, double tol,
                                       int check_every, double* __restrict__ transport,
                                       double* __restrict__ kbuf, double* __restrict__ distance,
                                       int* __restrict__ iterations, double* __restrict__ error,
                                       int* __restrict__ converged, int* __restrict__ status) {
    __shared__ double buf[OT_MAX_THREADS];
    __shared__ double u[OT_MAX_SIDE];
    __shared__ double v[OT_MAX_SIDE];
    int b = blockIdx.x;
    if (b >= batch) return;
    int mb = m[b], nb = n[b];
    long long off = cost_off[b];
    bool valid = ot_in_range(off, mb, nb, cost_len) && isfinite(eps) && eps > 0.0;
    if (!valid) {
        if (threadIdx.x == 0) {
            distance[b] = nan("");
            iterations[b] = 0;
            error[b] = nan("");
            converged[b] = 0;
            status[b] = OT_INVALID_INPUT;
        }
        return;
    }
    const double* c = cost + off;
    double* t = transport + off;
    double* k = kbuf + off;
    long long cells = (long long)mb * nb;
    double lo = INFINITY, hi = -INFINITY, finite = 1.0;
    for (long long e = threadIdx.x; e < cells; e += blockDim.x) {
        double x = c[e];
        if (!isfinite(x)) finite = 0.0;
        lo = fmin(lo, x);
        hi = fmax(hi, x);
    }
    finite = ot_block_min(finite, buf);
    lo = ot_block_min(lo, buf);
    hi = ot_block_max(hi, buf);
    if (finite == 0.0) {
        if (threadIdx.x == 0) {
            distance[b] = nan("");
            iterations[b] = 0;
            error[b] = nan("");
            converged[b] = 0;
            status[b] = OT_INVALID_INPUT;
        }
        return;
    }
    double spread = (hi - lo) / eps;
    bool log_domain = !(isfinite(spread) && spread <= OT_MAX_SCALING_SPREAD);
    if (!log_domain)
        for (long long e = threadIdx.x; e < cells; e += blockDim.x) k[e] = exp(-(c[e] - lo) / eps);
    double a = 1.0 / mb, bb = 1.0 / nb;
    double log_a = -log((double)mb), log_b = -log((double)nb);
    for (int j = threadIdx.x; j < nb; j += blockDim.x) v[j] = log_domain ? 0.0 : 1.0;
    __syncthreads();
    int every = check_every > 0 ? check_every : 1;
    int it = 0, checked_at = -1;
    double err = INFINITY;
    while (it < max_iters) {
        // u (or f) from v (or g).
        for (int i = threadIdx.x; i < mb; i += blockDim.x) {
            const double* row = (log_domain ? c : k) + (long long)i * nb;
            if (log_domain) {
                double top = -INFINITY;
                for (int j = 0; j < nb; ++j) top = fmax(top, (v[j] - row[j]) / eps);
                double s = 0.0;
                for (int j = 0; j < nb; ++j) s += exp((v[j] - row[j]) / eps - top);
                u[i] = eps * (log_a - top - log(s));
            } else {
                double kv = 0.0;
                for (int j = 0; j < nb; ++j) kv += row[j] * v[j];
                u[i] = a / kv;
            }
        }
        __syncthreads();
        // v (or g) from u (or f).
        for (int j = threadIdx.x; j < nb; j += blockDim.x) {
            if (log_domain) {
                double top = -INFINITY;
                for (int i = 0; i < mb; ++i) top = fmax(top, (u[i] - c[(long long)i * nb + j]) / eps);
                double s = 0.0;
                for (int i = 0; i < mb; ++i) s += exp((u[i] - c[(long long)i * nb + j]) / eps - top);
                v[j] = eps * (log_b - top - log(s));
            } else {
                double ktu = 0.0;
                for (int i = 0; i < mb; ++i) ktu += k[(long long)i * nb + j] * u[i];
                v[j] = bb / ktu;
            }
        }
        __syncthreads();
        ++it;
        if (it % every == 0) {
            err = ot_plan_and_error(log_domain, c, k, u, v, eps, mb, nb, t, buf);
            checked_at = it;
            if (err <= tol || isnan(err)) break;
        }
    }
    if (checked_at != it) err = ot_plan_and_error(log_domain, c, k, u, v, eps, mb, nb, t, buf);
    // sanitise: a finite error and a finite, non-negative plan; distance = <C, T>.
    double ok = isfinite(err) ? 1.0 : 0.0;
    double dist = 0.0;
    for (long long e = threadIdx.x; e < cells; e += blockDim.x) {
        double x = t[e];
        if (!(isfinite(x) && x >= 0.0)) ok = 0.0;
        dist += c[e] * x;
    }
    ok = ot_block_min(ok, buf);
    dist = ot_block_sum(dist, buf);
    if (threadIdx.x == 0) {
        iterations[b] = it;
        if (ok == 0.0) {
            distance[b] = nan("");
            error[b] = nan("");
            converged[b] = 0;
            status[b] = OT_BREAKDOWN;
        } else {
            distance[b] = dist;
            error[b] = err;
            converged[b] = err <= tol ? 1 : 0;
            status[b] = OT_OK;
        }
    }
}

// Barycentric map (barycentric_map_into) of each solved problem onto its support Y:
// out[out_row[b] + i, :] = sum_j T_ij y_j / sum_j T_ij in f64, stored f32; a row of non-positive
// mass maps to the mean of the support. Problems with status != OT_OK are skipped (left as is).
// Grid (batch), one thread per (i, coordinate).
extern "C" __global__ void ot_barycentric_map(const double* __restrict__ transport,
                                              const int* __restrict__ m,
                                              const int* __restrict__ n,
                                              const long long* __restrict__ cost_off,
                                              const int* __restrict__ status, int batch,
                                              long long cost_len, const float* __restrict__ y,
                                              int y_rows, const int* __restrict__ y_row, int d,
                                              const int* __restrict__ out_row, int out_rows,
                                              float* __restrict__ out) {
    int b = blockIdx.x;
    if (b >= batch || status[b] != OT_OK) return;
    int mb = m[b], nb = n[b];
    long long off = cost_off[b];
    if (!ot_in_range(off, mb, nb, cost_len) || d <= 0) return;
    if (y_row[b] < 0 || y_row[b] + nb > y_rows || out_row[b] < 0 || out_row[b] + mb > out_rows)
        return;
    const double* t = transport + off;
    const float* yb = y + (long long)y_row[b] * d;
    float* ob = out + (long long)out_row[b] * d;
    long long cells = (long long)mb * d;
    for (long long e = threadIdx.x; e < cells; e += blockDim.x) {
        int i = (int)(e / d), kk = (int)(e - (long long)i * d);
        const double* row = t + (long long)i * nb;
        double mass = 0.0;
        for (int j = 0; j < nb; ++j) mass += row[j];
        double acc = 0.0;
        if (mass > 0.0) {
            for (int j = 0; j < nb; ++j) acc += row[j] * (double)yb[(long long)j * d + kk];
        } else {
            mass = (double)nb;
            for (int j = 0; j < nb; ++j) acc += (double)yb[(long long)j * d + kk];
        }
        ob[e] = (float)(acc / mass);
    }
}
