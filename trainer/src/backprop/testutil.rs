//! Helpers shared by the backprop tests: deterministic random data and central-difference
//! gradients in f64.

use crate::model::rng::SplitMix64;

/// Central-difference step. In f64 the truncation error is O(h²) ≈ 1e-12 for the smooth,
/// O(1)-scaled functions tested here, and the rounding error about ε·|L|/h ≈ 1e-10.
pub const FD_STEP: f64 = 1e-6;

/// Agreement required between analytic and central-difference gradients (f64):
/// `|a - n| ≤ FD_TOL · max(1, |n|)`, three orders of magnitude above the expected FD error
/// and far below what any missing or wrong term would give.
pub const FD_TOL: f64 = 1e-6;

pub fn random_vec(n: usize, std: f64, seed: u64) -> Vec<f64> {
    let mut rng = SplitMix64::new(seed);
    (0..n).map(|_| rng.next_normal() * std).collect()
}

pub fn weighted_sum(y: &[f64], r: &[f64]) -> f64 {
    assert_eq!(y.len(), r.len());
    y.iter().zip(r).map(|(a, b)| a * b).sum()
}

/// `∂f/∂x_i` for every `i` by central differences with step [`FD_STEP`].
pub fn numeric_grad(x: &[f64], mut f: impl FnMut(&[f64]) -> f64) -> Vec<f64> {
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            xp[i] = x[i] + FD_STEP;
            let up = f(&xp);
            xp[i] = x[i] - FD_STEP;
            let down = f(&xp);
            xp[i] = x[i];
            (up - down) / (2.0 * FD_STEP)
        })
        .collect()
}

/// Panics naming the first entry where `analytic` and `numeric` differ by more than
/// [`FD_TOL`]` · max(1, |numeric|)`.
pub fn assert_grad_close(what: &str, analytic: &[f64], numeric: &[f64]) {
    assert_eq!(analytic.len(), numeric.len(), "{what}: lengths differ");
    for (i, (a, n)) in analytic.iter().zip(numeric).enumerate() {
        assert!(
            (a - n).abs() <= FD_TOL * n.abs().max(1.0),
            "{what}[{i}]: analytic {a:e}, finite difference {n:e}"
        );
    }
}
