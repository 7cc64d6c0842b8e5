// ner-edge linear-chain CRF kernels over CDT transitions: batched forward algorithm (NLL),
// backward (marginals -> emission and CDT gradients) in f64 as trainer/src/loss/crf.rs, and
// Viterbi in f32 as runtime/src/decode/viterbi.rs (dense step, first maximum wins, BIO repair).
//
// Batch layout: sentence s is rows offsets[s]..offsets[s+1] of the packed emissions [N, ld]
// (row stride ld >= its label count); n_labels[s] = L = 1 + 2*types (odd); its transitions are
// set tset[s] of start/end [n_sets, ld] and trans [n_sets, ld, ld] (trans[from*ld + to]), i.e.
// ner_edge::decode::unfold of the episode's CDT numbers with forbidden entries -inf. Label
// indices: 0 = O, 1 + 2k = B-k, 2 + 2k = I-k. One block per sentence, blockDim.x >= 32.
// Gold paths must be valid BIO (checked on the host, as crf_nll does); an out-of-range gold
// label or inconsistent shape gives NaN.

// NVRTC has no <math.h>: +inf as a float (widens exactly to a double +inf).
#ifndef INFINITY
#define INFINITY (__int_as_float(0x7f800000))
#endif

#define CRF_MAX_THREADS 1024
#define CRF_MAX_LABELS 1024

// Abstract CDT kind of a label: O = 0, B = 1, I = 2.
__device__ __forceinline__ int crf_kind(int label) {
    return label == 0 ? 0 : (label % 2 == 1 ? 1 : 2);
}

__device__ __forceinline__ int crf_type(int label) { return label == 0 ? -1 : (label - 1) / 2; }

// transition_cell of crf.rs: index r*5 + c of the CDT matrix cell that unfold copies into the
// dense transition from -> to, or -1 when the hard BIO constraints forbid it.
__device__ int crf_transition_cell(int from, int to) {
    int kf = crf_kind(from), kt = crf_kind(to);
    bool same = crf_type(from) == crf_type(to);
    if (kt == 2 && !(kf != 0 && same)) return -1;  // I-x only after B-x or I-x
    int col;
    if (kt == 0) col = 0;
    else if (kf == 0) col = kt == 1 ? 1 : 2;
    else if (same) col = kt == 1 ? 1 : 2;
    else col = kt == 1 ? 3 : 4;
    return kf * 5 + col;
}

// Shape checks shared by the kernels; false makes the sentence NaN.
__device__ bool crf_sentence_ok(const int* offsets, const int* n_labels, const int* tset, int s,
                                int n_rows, int ld, int n_sets) {
    int l = n_labels[s];
    int lo = offsets[s], hi = offsets[s + 1];
    return l >= 1 && l % 2 == 1 && l <= ld && l <= CRF_MAX_LABELS && lo >= 0 && hi >= lo &&
           hi <= n_rows && tset[s] >= 0 && tset[s] < n_sets;
}

// log-sum-exp over x_i = a[i*sa] + b[i*sb] for i < l, as crf.rs logsumexp (max, then ln of the
// sum of exp(x - max) in index order; -inf when every term is -inf).
__device__ __forceinline__ double crf_lse(const double* a, long long sa, const double* b,
                                          long long sb, const double* c, long long sc, int l) {
    double m = -INFINITY;
    for (int i = 0; i < l; ++i) m = fmax(m, a[i * sa] + b[i * sb] + (c ? c[i * sc] : 0.0));
    if (m == -INFINITY) return m;
    double s = 0.0;
    for (int i = 0; i < l; ++i) s += exp(a[i * sa] + b[i * sb] + (c ? c[i * sc] : 0.0) - m);
    return m + log(s);
}

// Forward algorithm per sentence: alpha[t, j] (rows of the sentence, stride ld) =
// lse_i(alpha[t-1, i] + trans[i, j]) + e[t, j], alpha[0, j] = start[j] + e[0, j];
// log_z[s] = lse_j(alpha[T-1, j] + end[j]); nll[s] = log_z - score(gold) (path_score order).
// Empty sentences get log_z = nll = 0; a non-finite log Z or bad input gives NaN.
extern "C" __global__ void crf_forward(const double* __restrict__ emissions,
                                       const int* __restrict__ gold,
                                       const int* __restrict__ offsets,
                                       const int* __restrict__ n_labels,
                                       const int* __restrict__ tset, int n_sent, int n_rows,
                                       int ld, const double* __restrict__ start,
                                       const double* __restrict__ end,
                                       const double* __restrict__ trans, int n_sets,
                                       double* __restrict__ alpha, double* __restrict__ log_z,
                                       double* __restrict__ nll) {
    int s = blockIdx.x;
    if (s >= n_sent) return;
    if (!crf_sentence_ok(offsets, n_labels, tset, s, n_rows, ld, n_sets)) {
        if (threadIdx.x == 0) log_z[s] = nll[s] = nan("");
        return;
    }
    int l = n_labels[s], r0 = offsets[s], len = offsets[s + 1] - r0;
    if (len == 0) {
        if (threadIdx.x == 0) log_z[s] = nll[s] = 0.0;
        return;
    }
    const double* st = start + (long long)tset[s] * ld;
    const double* en = end + (long long)tset[s] * ld;
    const double* tr = trans + (long long)tset[s] * ld * ld;
    const double* e = emissions + (long long)r0 * ld;
    double* al = alpha + (long long)r0 * ld;
    for (int j = threadIdx.x; j < l; j += blockDim.x) al[j] = st[j] + e[j];
    __syncthreads();
    for (int t = 1; t < len; ++t) {
        for (int j = threadIdx.x; j < l; j += blockDim.x)
            al[(long long)t * ld + j] =
                crf_lse(al + (long long)(t - 1) * ld, 1, tr + j, ld, nullptr, 0, l) +
                e[(long long)t * ld + j];
        __syncthreads();
    }
    if (threadIdx.x != 0) return;
    double lz = crf_lse(al + (long long)(len - 1) * ld, 1, en, 1, nullptr, 0, l);
    const int* g = gold + r0;
    bool gold_ok = true;
    for (int t = 0; t < len; ++t) gold_ok = gold_ok && g[t] >= 0 && g[t] < l;
    if (!gold_ok || !isfinite(lz)) {
        log_z[s] = lz;
        nll[s] = nan("");
        return;
    }
    double score = st[g[0]] + en[g[len - 1]];
    for (int t = 0; t < len; ++t) {
        score += e[(long long)t * ld + g[t]];
        if (t > 0) score += tr[(long long)g[t - 1] * ld + g[t]];
    }
    log_z[s] = lz;
    nll[s] = lz - score;
}

// Backward per sentence after crf_forward (same arguments plus its alpha and log_z): computes
// beta (beta[T-1] = end, beta[t, i] = lse_j(trans[i, j] + e[t+1, j] + beta[t+1, j])), then
// d_emissions[t, j] += p(t, j) - [gold_t == j] (accumulated; rows owned by this sentence) and
// d_cdt[s, 0..21] = expected minus gold counts folded onto the 21 CDT numbers (matrix row-major
// 15, start 3, end 3; overwritten), each cell summed in the CPU's step/from/to order. Sentences
// with a NaN nll (bad input) or no tokens get zero CDT gradient and no emission gradient.
extern "C" __global__ void crf_backward(const double* __restrict__ emissions,
                                        const int* __restrict__ gold,
                                        const int* __restrict__ offsets,
                                        const int* __restrict__ n_labels,
                                        const int* __restrict__ tset, int n_sent, int n_rows,
                                        int ld, const double* __restrict__ start,
                                        const double* __restrict__ end,
                                        const double* __restrict__ trans, int n_sets,
                                        const double* __restrict__ alpha,
                                        const double* __restrict__ log_z,
                                        const double* __restrict__ nll,
                                        double* __restrict__ beta,
                                        double* __restrict__ d_emissions,
                                        double* __restrict__ d_cdt) {
    int s = blockIdx.x;
    if (s >= n_sent) return;
    bool ok = crf_sentence_ok(offsets, n_labels, tset, s, n_rows, ld, n_sets) && !isnan(nll[s]);
    int len = ok ? offsets[s + 1] - offsets[s] : 0;
    if (!ok || len == 0) {
        for (int c = threadIdx.x; c < 21; c += blockDim.x) d_cdt[(long long)s * 21 + c] = 0.0;
        return;
    }
    int l = n_labels[s], r0 = offsets[s];
    double lz = log_z[s];
    const double* st = start + (long long)tset[s] * ld;
    const double* en = end + (long long)tset[s] * ld;
    const double* tr = trans + (long long)tset[s] * ld * ld;
    const double* e = emissions + (long long)r0 * ld;
    const double* al = alpha + (long long)r0 * ld;
    double* be = beta + (long long)r0 * ld;
    double* de = d_emissions + (long long)r0 * ld;
    const int* g = gold + r0;
    long long last = (long long)(len - 1) * ld;
    for (int j = threadIdx.x; j < l; j += blockDim.x) be[last + j] = en[j];
    __syncthreads();
    for (int t = len - 2; t >= 0; --t) {
        long long next = (long long)(t + 1) * ld;
        for (int i = threadIdx.x; i < l; i += blockDim.x)
            be[(long long)t * ld + i] = crf_lse(tr + (long long)i * ld, 1, e + next, 1, be + next, 1, l);
        __syncthreads();
    }
    // Emission gradient: marginals minus the gold indicator.
    for (int j = threadIdx.x; j < l; j += blockDim.x)
        for (int t = 0; t < len; ++t) {
            long long at = (long long)t * ld + j;
            de[at] += exp(al[at] + be[at] - lz);
            if (g[t] == j) de[at] -= 1.0;
        }
    // CDT gradient: thread c owns cell c (0..14 matrix, 15..17 start, 18..20 end).
    for (int c = threadIdx.x; c < 21; c += blockDim.x) {
        double acc = 0.0;
        if (c < 15) {
            for (int t = 1; t < len; ++t) {
                long long prev = (long long)(t - 1) * ld, cur = (long long)t * ld;
                for (int i = 0; i < l; ++i)
                    for (int j = 0; j < l; ++j) {
                        if (crf_transition_cell(i, j) != c) continue;
                        double w = tr[(long long)i * ld + j];
                        acc += exp(al[prev + i] + w + e[cur + j] + be[cur + j] - lz);
                    }
                if (crf_transition_cell(g[t - 1], g[t]) == c) acc -= 1.0;
            }
        } else if (c < 18) {
            int k = c - 15;
            for (int j = 0; j < l; ++j)
                if (st[j] > -INFINITY && crf_kind(j) == k) acc += exp(al[j] + be[j] - lz);
            if (crf_kind(g[0]) == k) acc -= 1.0;
        } else {
            int k = c - 18;
            for (int j = 0; j < l; ++j)
                if (crf_kind(j) == k) acc += exp(al[last + j] + be[last + j] - lz);
            if (crf_kind(g[len - 1]) == k) acc -= 1.0;
        }
        d_cdt[(long long)s * 21 + c] = acc;
    }
}

// Viterbi per sentence in f32 (runtime Decoder::viterbi, dense step): score[j] = start[j] +
// e[0, j]; next[j] = max over from with score[from] > -inf of score[from] + trans[from, j]
// (first maximum wins, back-pointer 0 when none) + e[t, j]; best final label by score + end
// (first maximum); back-track, then repair_bio (an I-x not after B-x/I-x becomes B-x). Writes
// path[r] for the sentence's rows and best[s]; back is [N, ld] scratch. Bad input: path -1,
// best NaN.
extern "C" __global__ void crf_viterbi(const float* __restrict__ emissions,
                                       const int* __restrict__ offsets,
                                       const int* __restrict__ n_labels,
                                       const int* __restrict__ tset, int n_sent, int n_rows,
                                       int ld, const float* __restrict__ start,
                                       const float* __restrict__ end,
                                       const float* __restrict__ trans, int n_sets,
                                       int* __restrict__ back, int* __restrict__ path,
                                       float* __restrict__ best) {
    __shared__ float score[CRF_MAX_LABELS];
    __shared__ float next[CRF_MAX_LABELS];
    int s = blockIdx.x;
    if (s >= n_sent) return;
    if (!crf_sentence_ok(offsets, n_labels, tset, s, n_rows, ld, n_sets)) {
        if (threadIdx.x == 0) best[s] = nanf("");
        int lo = offsets[s], hi = offsets[s + 1];
        if (lo >= 0 && hi <= n_rows)
            for (int r = lo + threadIdx.x; r < hi; r += blockDim.x) path[r] = -1;
        return;
    }
    int l = n_labels[s], r0 = offsets[s], len = offsets[s + 1] - r0;
    if (len == 0) {
        if (threadIdx.x == 0) best[s] = 0.0f;
        return;
    }
    const float* st = start + (long long)tset[s] * ld;
    const float* en = end + (long long)tset[s] * ld;
    const float* tr = trans + (long long)tset[s] * ld * ld;
    const float* e = emissions + (long long)r0 * ld;
    int* bp = back + (long long)r0 * ld;
    for (int j = threadIdx.x; j < l; j += blockDim.x) score[j] = st[j] + e[j];
    __syncthreads();
    for (int t = 1; t < len; ++t) {
        for (int j = threadIdx.x; j < l; j += blockDim.x) {
            float n = -INFINITY;
            int arg = 0;
            for (int from = 0; from < l; ++from) {
                float sc = score[from];
                if (sc == -INFINITY) continue;
                float v = sc + tr[(long long)from * ld + j];
                if (v > n) {
                    n = v;
                    arg = from;
                }
            }
            next[j] = n + e[(long long)t * ld + j];
            bp[(long long)t * ld + j] = arg;
        }
        __syncthreads();
        for (int j = threadIdx.x; j < l; j += blockDim.x) score[j] = next[j];
        __syncthreads();
    }
    if (threadIdx.x != 0) return;
    float b = -INFINITY;
    int label = 0;
    for (int j = 0; j < l; ++j) {
        float v = score[j] + en[j];
        if (v > b) {
            b = v;
            label = j;
        }
    }
    int* p = path + r0;
    p[len - 1] = label;
    for (int t = len - 1; t >= 1; --t) {
        int prev = bp[(long long)t * ld + p[t]];
        p[t - 1] = (prev >= 0 && prev < l) ? prev : 0;
    }
    int prev_label = -1;  // repair_bio; -1 = sentence start
    for (int t = 0; t < len; ++t) {
        int y = p[t];
        if (crf_kind(y) == 2) {
            bool follows = prev_label > 0 && crf_type(prev_label) == crf_type(y);
            if (!follows) y -= 1;  // I-k -> B-k
        }
        p[t] = y;
        prev_label = y;
    }
    best[s] = b;
}
