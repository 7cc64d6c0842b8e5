//! Entropic optimal transport between two uniform point clouds (Sinkhorn–Knopp).
//!
//! The problem, for a cost matrix `C` (`m × n`, row-major) and `ε > 0`:
//!
//! ```text
//! minimise ⟨C, T⟩ − ε·H(T)   subject to   T·1 = a,  Tᵀ·1 = b,  T ≥ 0,   a = 1/m,  b = 1/n
//! ```
//!
//! Its solution is `T = diag(u)·K·diag(v)` with `K = exp(−C/ε)`. Starting from `v = 1`, one
//! iteration is `u = a / (K v)` followed by `v = b / (Kᵀ u)`. After each iteration the column
//! sums of `T` equal `b` up to rounding; the row sums approach `a`.
//!
//! All arithmetic is `f64`: the stopping tolerance (1e-9 on marginals whose entries are `1/m`)
//! lies below `f32` resolution (`f32::EPSILON ≈ 1.2e-7`), so an `f32` solver could not reach it.
//!
//! Two numerically different evaluations of the same iteration are used:
//!
//! * **scaling domain** when the cost spread `(max C − min C)/ε` is at most 200. The kernel is
//!   built from `C − min C` (a constant shift of `C` rescales `u` and leaves `T` unchanged), so
//!   its entries lie in `[e^−200, 1]`, and every `u`, `v`, `K v`, `Kᵀ u` stays within about
//!   `e^±200 ≈ 10^±87`: no overflow, no underflow to zero. The MANNER setting (cost scaled to
//!   `[0, 1]`, `ε = 0.1`) has spread at most 10, so it always takes this path.
//! * **log domain** otherwise, with potentials `f = ε log u`, `g = ε log v` and max-shifted
//!   log-sum-exp, so that tiny `ε` or large costs do not underflow. It computes the same iterates
//!   and costs an `exp` per entry per half-iteration.

/// Largest `(max C − min C)/ε` solved in the scaling domain (see the module docs).
const MAX_SCALING_SPREAD: f64 = 200.0;

/// Sinkhorn settings. [`Default`] is the MANNER setting: `ε = 0.1`, at most 1000 iterations,
/// stop at marginal error `1e-9`, checked every 10 iterations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SinkhornConfig {
    /// Entropic regularisation `ε`; must be finite and positive.
    pub epsilon: f64,
    /// Upper bound on the number of iterations (one `u` and one `v` update each).
    pub max_iters: usize,
    /// Stop once [`Plan::marginal_error`] is at most this.
    pub tol: f64,
    /// Evaluate the marginal error after every `check_every`-th iteration (`0` is read as `1`).
    pub check_every: usize,
}

impl Default for SinkhornConfig {
    fn default() -> Self {
        SinkhornConfig {
            epsilon: 0.1,
            max_iters: 1000,
            tol: 1e-9,
            check_every: 10,
        }
    }
}

/// The result of [`sinkhorn`].
///
/// For valid input, `transport` is the `m × n` row-major plan `T` (every entry `≥ 0`), and
/// `marginal_error` is measured on exactly that `T`:
///
/// ```text
/// marginal_error = Σ_i |Σ_j T_ij − 1/m| + Σ_j |Σ_i T_ij − 1/n|
/// ```
///
/// so every row sum is within `marginal_error` of `1/m` and every column sum within it of `1/n`.
///
/// Rejected input (see [`sinkhorn`]) gives an empty `transport`, `distance = NaN`,
/// `marginal_error = +∞`, `iterations = 0` and `converged = false`. A numerical breakdown
/// (possible only in the log domain, for `ε` so small that `C/ε` overflows) gives the same,
/// with `iterations` set to those performed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Rows of `T` (the first point cloud).
    pub m: usize,
    /// Columns of `T` (the second point cloud).
    pub n: usize,
    /// `T`, row-major `[m, n]`.
    pub transport: Vec<f64>,
    /// The transport cost `⟨C, T⟩ = Σ_ij C_ij T_ij` (without the entropy term).
    pub distance: f64,
    /// Iterations performed.
    pub iterations: usize,
    /// L1 marginal violation of `transport`, defined above.
    pub marginal_error: f64,
    /// `marginal_error <= tol` for the returned `transport`.
    pub converged: bool,
}

impl Plan {
    /// `T_ij`, or `None` outside the plan.
    pub fn get(&self, i: usize, j: usize) -> Option<f64> {
        if i >= self.m || j >= self.n {
            return None;
        }
        self.transport.get(i * self.n + j).copied()
    }

    /// Whether this plan holds a solution (`transport` has `m × n` entries), i.e. the input was
    /// not rejected and the solver did not break down.
    pub fn is_valid(&self) -> bool {
        !self.transport.is_empty() && self.m.checked_mul(self.n) == Some(self.transport.len())
    }

    fn reject(&mut self, m: usize, n: usize) {
        self.m = m;
        self.n = n;
        self.transport.clear();
        self.distance = f64::NAN;
        self.iterations = 0;
        self.marginal_error = f64::INFINITY;
        self.converged = false;
    }
}

/// Solves the entropic OT problem for `cost` (`m × n`, row-major) with uniform marginals.
///
/// Input is rejected (see [`Plan`]) when `m == 0`, `n == 0`, `cost.len() != m·n`, any cost entry
/// is not finite (e.g. NaN), or `cfg.epsilon` is not finite and positive. Otherwise the returned
/// plan is finite and non-negative, and `converged` says whether it meets `cfg.tol`; a plan that
/// did not converge is still returned, with its honest `marginal_error`. Never panics.
///
/// Allocates the plan and scratch buffers; use [`SinkhornWorkspace`] to reuse them.
pub fn sinkhorn(cost: &[f64], m: usize, n: usize, cfg: &SinkhornConfig) -> Plan {
    let mut plan = Plan::default();
    SinkhornWorkspace::new().solve(cost, m, n, cfg, &mut plan);
    plan
}

/// Squared Euclidean distances between the rows of `x` (`[m, d]`) and `y` (`[n, d]`), divided by
/// their maximum: entry `(i, j)` of the row-major `[m, n]` result is
/// `‖x_i − y_j‖² / max_kl ‖x_k − y_l‖²`, in `[0, 1]`. When the maximum is zero (all points
/// equal) the cost is all zeros. Accumulated in `f64`.
///
/// Returns an empty vector when `d == 0`, `x.len() != m·d` or `y.len() != n·d`, and all `NaN`
/// when a coordinate is not finite; [`sinkhorn`] rejects both.
pub fn squared_euclidean_cost(x: &[f32], m: usize, y: &[f32], n: usize, d: usize) -> Vec<f64> {
    let mut out = Vec::new();
    squared_euclidean_cost_into(x, m, y, n, d, &mut out);
    out
}

/// [`squared_euclidean_cost`] writing into `out` (cleared first), reusing its allocation.
pub fn squared_euclidean_cost_into(
    x: &[f32],
    m: usize,
    y: &[f32],
    n: usize,
    d: usize,
    out: &mut Vec<f64>,
) {
    out.clear();
    if d == 0 || m.checked_mul(d) != Some(x.len()) || n.checked_mul(d) != Some(y.len()) {
        return;
    }
    let mut max = 0.0f64;
    let mut finite = true;
    for i in 0..m {
        let xi = &x[i * d..(i + 1) * d];
        for j in 0..n {
            let yj = &y[j * d..(j + 1) * d];
            let mut s = 0.0f64;
            for k in 0..d {
                let diff = f64::from(xi[k]) - f64::from(yj[k]);
                s += diff * diff;
            }
            if !s.is_finite() {
                finite = false;
            } else if s > max {
                max = s;
            }
            out.push(s);
        }
    }
    if !finite {
        out.fill(f64::NAN);
    } else if max > 0.0 {
        for c in out.iter_mut() {
            *c /= max;
        }
    }
}

/// Scratch buffers for [`sinkhorn`], reused across calls: a solve allocates nothing once the
/// buffers have grown to the largest `m × n` seen.
#[derive(Clone, Debug, Default)]
pub struct SinkhornWorkspace {
    kernel: Vec<f64>,
    u: Vec<f64>,
    v: Vec<f64>,
    row_sums: Vec<f64>,
    col_sums: Vec<f64>,
}

impl SinkhornWorkspace {
    /// Empty buffers.
    pub fn new() -> Self {
        Self::default()
    }

    /// [`sinkhorn`] writing into `plan` (its `transport` allocation is reused).
    pub fn solve(
        &mut self,
        cost: &[f64],
        m: usize,
        n: usize,
        cfg: &SinkhornConfig,
        plan: &mut Plan,
    ) {
        let valid_shape = m > 0 && n > 0 && m.checked_mul(n) == Some(cost.len());
        let valid_eps = cfg.epsilon.is_finite() && cfg.epsilon > 0.0;
        if !valid_shape || !valid_eps || cost.iter().any(|c| !c.is_finite()) {
            plan.reject(m, n);
            return;
        }
        let mut c_min = f64::INFINITY;
        let mut c_max = f64::NEG_INFINITY;
        for &c in cost {
            c_min = c_min.min(c);
            c_max = c_max.max(c);
        }
        plan.m = m;
        plan.n = n;
        plan.transport.clear();
        plan.transport.resize(m * n, 0.0);
        self.u.clear();
        self.u.resize(m, 0.0);
        self.v.clear();
        self.v.resize(n, 0.0);
        let spread = (c_max - c_min) / cfg.epsilon;
        let (iterations, error) = if spread.is_finite() && spread <= MAX_SCALING_SPREAD {
            self.solve_scaling(cost, c_min, m, n, cfg, &mut plan.transport)
        } else {
            self.solve_log(cost, m, n, cfg, &mut plan.transport)
        };
        let Some(error) = error else {
            plan.reject(m, n);
            plan.iterations = iterations;
            return;
        };
        let mut distance = 0.0;
        for (c, t) in cost.iter().zip(&plan.transport) {
            distance += c * t;
        }
        plan.distance = distance;
        plan.iterations = iterations;
        plan.marginal_error = error;
        plan.converged = error <= cfg.tol;
    }

    /// Scaling-domain iterations; `u`, `v` hold the scalings. Returns the iterations performed
    /// and the marginal error of `t` (`None` on a numerical breakdown).
    fn solve_scaling(
        &mut self,
        cost: &[f64],
        c_min: f64,
        m: usize,
        n: usize,
        cfg: &SinkhornConfig,
        t: &mut [f64],
    ) -> (usize, Option<f64>) {
        let a = 1.0 / m as f64;
        let b = 1.0 / n as f64;
        self.kernel.clear();
        self.kernel
            .extend(cost.iter().map(|&c| (-(c - c_min) / cfg.epsilon).exp()));
        let k = &self.kernel;
        let (u, v) = (&mut self.u, &mut self.v);
        v.fill(1.0);
        let every = cfg.check_every.max(1);
        let mut iterations = 0;
        let mut checked_at = None;
        let mut error = f64::INFINITY;
        while iterations < cfg.max_iters {
            for i in 0..m {
                let row = &k[i * n..(i + 1) * n];
                let mut kv = 0.0;
                for j in 0..n {
                    kv += row[j] * v[j];
                }
                u[i] = a / kv;
            }
            v.fill(0.0);
            for i in 0..m {
                let row = &k[i * n..(i + 1) * n];
                for j in 0..n {
                    v[j] += row[j] * u[i];
                }
            }
            for vj in v.iter_mut() {
                *vj = b / *vj;
            }
            iterations += 1;
            if iterations.is_multiple_of(every) {
                scaling_plan(k, u, v, m, n, t);
                error = marginal_error(t, m, n, &mut self.row_sums, &mut self.col_sums);
                checked_at = Some(iterations);
                if error <= cfg.tol || error.is_nan() {
                    break;
                }
            }
        }
        if checked_at != Some(iterations) {
            scaling_plan(k, u, v, m, n, t);
            error = marginal_error(t, m, n, &mut self.row_sums, &mut self.col_sums);
        }
        (iterations, sanitise(error, t))
    }

    /// Log-domain iterations; `u`, `v` hold the potentials `f`, `g`. Same contract as
    /// [`Self::solve_scaling`].
    fn solve_log(
        &mut self,
        cost: &[f64],
        m: usize,
        n: usize,
        cfg: &SinkhornConfig,
        t: &mut [f64],
    ) -> (usize, Option<f64>) {
        let eps = cfg.epsilon;
        let log_a = -(m as f64).ln();
        let log_b = -(n as f64).ln();
        let (f, g) = (&mut self.u, &mut self.v);
        g.fill(0.0);
        let every = cfg.check_every.max(1);
        let mut iterations = 0;
        let mut checked_at = None;
        let mut error = f64::INFINITY;
        while iterations < cfg.max_iters {
            for i in 0..m {
                let row = &cost[i * n..(i + 1) * n];
                let mut hi = f64::NEG_INFINITY;
                for j in 0..n {
                    hi = hi.max((g[j] - row[j]) / eps);
                }
                let mut s = 0.0;
                for j in 0..n {
                    s += ((g[j] - row[j]) / eps - hi).exp();
                }
                f[i] = eps * (log_a - hi - s.ln());
            }
            for j in 0..n {
                let mut hi = f64::NEG_INFINITY;
                for i in 0..m {
                    hi = hi.max((f[i] - cost[i * n + j]) / eps);
                }
                let mut s = 0.0;
                for i in 0..m {
                    s += ((f[i] - cost[i * n + j]) / eps - hi).exp();
                }
                g[j] = eps * (log_b - hi - s.ln());
            }
            iterations += 1;
            if iterations.is_multiple_of(every) {
                log_plan(cost, f, g, eps, m, n, t);
                error = marginal_error(t, m, n, &mut self.row_sums, &mut self.col_sums);
                checked_at = Some(iterations);
                if error <= cfg.tol || error.is_nan() {
                    break;
                }
            }
        }
        if checked_at != Some(iterations) {
            log_plan(cost, f, g, eps, m, n, t);
            error = marginal_error(t, m, n, &mut self.row_sums, &mut self.col_sums);
        }
        (iterations, sanitise(error, t))
    }
}

/// `t = diag(u)·K·diag(v)`.
fn scaling_plan(k: &[f64], u: &[f64], v: &[f64], m: usize, n: usize, t: &mut [f64]) {
    for i in 0..m {
        for j in 0..n {
            t[i * n + j] = u[i] * k[i * n + j] * v[j];
        }
    }
}

/// `t_ij = exp((f_i + g_j − C_ij)/ε)`.
fn log_plan(cost: &[f64], f: &[f64], g: &[f64], eps: f64, m: usize, n: usize, t: &mut [f64]) {
    for i in 0..m {
        for j in 0..n {
            t[i * n + j] = ((f[i] + g[j] - cost[i * n + j]) / eps).exp();
        }
    }
}

/// `Σ_i |rowsum_i − 1/m| + Σ_j |colsum_j − 1/n|` of `t`.
fn marginal_error(
    t: &[f64],
    m: usize,
    n: usize,
    row_sums: &mut Vec<f64>,
    col_sums: &mut Vec<f64>,
) -> f64 {
    row_sums.clear();
    row_sums.resize(m, 0.0);
    col_sums.clear();
    col_sums.resize(n, 0.0);
    for i in 0..m {
        for j in 0..n {
            let x = t[i * n + j];
            row_sums[i] += x;
            col_sums[j] += x;
        }
    }
    let a = 1.0 / m as f64;
    let b = 1.0 / n as f64;
    let mut error = 0.0;
    for r in row_sums.iter() {
        error += (r - a).abs();
    }
    for c in col_sums.iter() {
        error += (c - b).abs();
    }
    error
}

/// `Some(error)` when `t` is finite and non-negative, `None` on a numerical breakdown.
fn sanitise(error: f64, t: &[f64]) -> Option<f64> {
    let ok = error.is_finite() && t.iter().all(|x| x.is_finite() && *x >= 0.0);
    ok.then_some(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid_cost(m: usize, n: usize) -> Vec<f64> {
        let x: Vec<f32> = (0..m).map(|i| i as f32 * 0.37).collect();
        let y: Vec<f32> = (0..n).map(|j| 0.2 + j as f32 * 0.51).collect();
        squared_euclidean_cost(&x, m, &y, n, 1)
    }

    #[test]
    fn zero_cost_gives_the_independent_plan() {
        let plan = sinkhorn(&[0.0; 12], 3, 4, &SinkhornConfig::default());
        assert!(plan.converged);
        assert_eq!(plan.iterations, 10);
        for t in &plan.transport {
            assert!((t - 1.0 / 12.0).abs() < 1e-15);
        }
        assert_eq!(plan.distance, 0.0);
    }

    #[test]
    fn single_row_or_column_is_exact() {
        let cost = grid_cost(1, 5);
        let plan = sinkhorn(&cost, 1, 5, &SinkhornConfig::default());
        assert!(plan.converged);
        for t in &plan.transport {
            assert!((t - 0.2).abs() < 1e-15);
        }
        let cost = grid_cost(4, 1);
        let plan = sinkhorn(&cost, 4, 1, &SinkhornConfig::default());
        assert!(plan.converged);
        for t in &plan.transport {
            assert!((t - 0.25).abs() < 1e-15);
        }
    }

    #[test]
    fn invalid_input_is_rejected_without_panic() {
        let cfg = SinkhornConfig::default();
        let mut cost = grid_cost(3, 3);
        for (c, m, n) in [(&cost[..], 0, 3), (&cost[..], 3, 0), (&cost[..8], 3, 3)] {
            let plan = sinkhorn(c, m, n, &cfg);
            assert!(!plan.is_valid() && !plan.converged && plan.distance.is_nan());
        }
        cost[4] = f64::NAN;
        let plan = sinkhorn(&cost, 3, 3, &cfg);
        assert!(!plan.is_valid() && !plan.converged);
        assert_eq!(plan.marginal_error, f64::INFINITY);
        let cost = grid_cost(3, 3);
        for epsilon in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let plan = sinkhorn(&cost, 3, 3, &SinkhornConfig { epsilon, ..cfg });
            assert!(!plan.is_valid() && !plan.converged);
        }
        let plan = sinkhorn(&[1.0], usize::MAX, 2, &cfg);
        assert!(!plan.is_valid());
    }

    #[test]
    fn nan_or_mismatched_points_give_a_rejected_cost() {
        let cost = squared_euclidean_cost(&[0.0, f32::NAN], 2, &[1.0], 1, 1);
        assert_eq!(cost.len(), 2);
        assert!(cost.iter().all(|c| c.is_nan()));
        assert!(!sinkhorn(&cost, 2, 1, &SinkhornConfig::default()).is_valid());
        assert!(squared_euclidean_cost(&[0.0; 3], 2, &[1.0; 2], 1, 2).is_empty());
        assert!(squared_euclidean_cost(&[], 2, &[], 1, 0).is_empty());
    }

    #[test]
    fn log_domain_computes_the_same_iterates() {
        let (m, n) = (5, 7);
        let cost = grid_cost(m, n);
        let cfg = SinkhornConfig {
            max_iters: 37,
            tol: 0.0,
            ..SinkhornConfig::default()
        };
        let mut ws = SinkhornWorkspace::new();
        ws.u.resize(m, 0.0);
        ws.v.resize(n, 0.0);
        let mut t_scaling = vec![0.0; m * n];
        let (it_s, err_s) = ws.solve_scaling(&cost, 0.0, m, n, &cfg, &mut t_scaling);
        let mut t_log = vec![0.0; m * n];
        let (it_l, err_l) = ws.solve_log(&cost, m, n, &cfg, &mut t_log);
        assert_eq!((it_s, it_l), (37, 37));
        assert!((err_s.unwrap() - err_l.unwrap()).abs() < 1e-12);
        for (s, l) in t_scaling.iter().zip(&t_log) {
            assert!((s - l).abs() < 1e-13, "{s} vs {l}");
        }
    }

    #[test]
    fn a_constant_cost_shift_leaves_the_plan_unchanged() {
        let (m, n) = (6, 4);
        let cost = grid_cost(m, n);
        let shifted: Vec<f64> = cost.iter().map(|c| c + 100.0).collect();
        let cfg = SinkhornConfig::default();
        let (p, q) = (sinkhorn(&cost, m, n, &cfg), sinkhorn(&shifted, m, n, &cfg));
        assert_eq!(p.iterations, q.iterations);
        for (s, t) in p.transport.iter().zip(&q.transport) {
            assert!((s - t).abs() < 1e-12);
        }
    }

    #[test]
    fn large_cost_spread_takes_the_log_domain_and_stays_feasible() {
        let (m, n) = (6, 4);
        let cost = grid_cost(m, n);
        for epsilon in [1e-3, 1e-6] {
            let cfg = SinkhornConfig {
                epsilon,
                ..SinkhornConfig::default()
            };
            let plan = sinkhorn(&cost, m, n, &cfg);
            assert!(plan.is_valid());
            assert!(plan.transport.iter().all(|t| t.is_finite() && *t >= 0.0));
            let mut rows = Vec::new();
            let mut cols = Vec::new();
            let error = marginal_error(&plan.transport, m, n, &mut rows, &mut cols);
            assert_eq!(error, plan.marginal_error);
            assert_eq!(plan.converged, error <= cfg.tol);
        }
        let cfg = SinkhornConfig {
            epsilon: 1e-300,
            ..SinkhornConfig::default()
        };
        assert!(!sinkhorn(&cost, m, n, &cfg).converged);
    }

    #[test]
    fn zero_iterations_report_the_kernel_plan_honestly() {
        let cost = grid_cost(3, 4);
        let plan = sinkhorn(
            &cost,
            3,
            4,
            &SinkhornConfig {
                max_iters: 0,
                ..Default::default()
            },
        );
        assert_eq!(plan.iterations, 0);
        assert!(plan.is_valid() && !plan.converged);
        assert!(plan.marginal_error > 1.0);
    }

    #[test]
    fn workspace_reuse_matches_fresh_solves() {
        let cfg = SinkhornConfig::default();
        let mut ws = SinkhornWorkspace::new();
        let mut plan = Plan::default();
        for (m, n) in [(7, 3), (2, 9), (7, 3)] {
            let cost = grid_cost(m, n);
            ws.solve(&cost, m, n, &cfg, &mut plan);
            assert_eq!(plan, sinkhorn(&cost, m, n, &cfg));
        }
    }
}
