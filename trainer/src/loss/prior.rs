//! The MANNER prior network and the prior prototype.
//!
//! Architecture (fixed; the bundle stores exactly these four tensors, see
//! `ner_edge::bundle::metadata::tensor_names::PRIOR_*`):
//!
//! ```text
//! x = [support_mean; mapped_mean]            (2d)
//! h = relu(x · fc1_weight + fc1_bias)        fc1_weight [2d, d] row-major
//! y = h · fc2_weight + fc2_bias              fc2_weight [d, d]  row-major
//! μ_prior = γ · y + (1 − γ) · support_mean   γ = ner_edge::adapt::memory::PRIOR_GAMMA
//! ```

use anyhow::{ensure, Result};
use ner_edge::adapt::memory::PRIOR_GAMMA;
use serde::{Deserialize, Serialize};

use crate::model::rng::SplitMix64;

/// Bias of the hidden units at initialisation; see [`PriorParams::init`].
pub const PRIOR_INIT_SHIFT: f32 = 1.0;

/// Standard deviation of the noise added to the initial weights; see [`PriorParams::init`].
pub const PRIOR_INIT_NOISE: f32 = 0.01;

/// Parameters of the prior MLP for type dimension `dim` (also used as their gradient).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorParams {
    /// Type dimension `d`.
    pub dim: usize,
    /// `[2d, d]` row-major.
    pub fc1_weight: Vec<f32>,
    /// `[d]`.
    pub fc1_bias: Vec<f32>,
    /// `[d, d]` row-major.
    pub fc2_weight: Vec<f32>,
    /// `[d]`.
    pub fc2_bias: Vec<f32>,
}

/// Forward values of [`PriorParams::forward`] kept for the backward pass.
#[derive(Clone, Debug, PartialEq)]
pub struct PriorCache {
    /// `[2d]` input.
    pub input: Vec<f64>,
    /// `[d]` pre-activation of the hidden layer.
    pub hidden_pre: Vec<f64>,
    /// `[d]` MLP output `y`.
    pub output: Vec<f64>,
}

impl PriorParams {
    /// All-zero parameters (the zero gradient).
    pub fn zeros(dim: usize) -> PriorParams {
        PriorParams {
            dim,
            fc1_weight: vec![0.0; 2 * dim * dim],
            fc1_bias: vec![0.0; dim],
            fc2_weight: vec![0.0; dim * dim],
            fc2_bias: vec![0.0; dim],
        }
    }

    /// Deterministic initialisation from `seed`, close to the weight-free prior of the runtime
    /// (`MLP([s; m]) = m`, see [`ner_edge::adapt::memory::prior_prototype`]):
    ///
    /// * `fc1_weight = [0; I] + noise`, `fc1_bias = c`: hidden unit `i` is `relu(m_i + c)`;
    /// * `fc2_weight = I + noise`, `fc2_bias = −c`,
    ///
    /// with `c =` [`PRIOR_INIT_SHIFT`] and independent N(0, [`PRIOR_INIT_NOISE`]²) noise drawn
    /// from [`SplitMix64`] (fc1 then fc2, row-major). Without noise the MLP is exactly `m` on
    /// every component with `m_i > −c`, so a fresh model starts from the runtime's fallback
    /// rather than from `μ ≈ (1 − γ)·s`, and every hidden unit starts active with gradient.
    /// The noise breaks the symmetry between support and memory inputs.
    pub fn init(dim: usize, seed: u64) -> PriorParams {
        let mut rng = SplitMix64::new(seed);
        let mut p = PriorParams {
            dim,
            fc1_weight: rng.normal_vec(2 * dim * dim, PRIOR_INIT_NOISE),
            fc1_bias: vec![PRIOR_INIT_SHIFT; dim],
            fc2_weight: rng.normal_vec(dim * dim, PRIOR_INIT_NOISE),
            fc2_bias: vec![-PRIOR_INIT_SHIFT; dim],
        };
        for i in 0..dim {
            p.fc1_weight[(dim + i) * dim + i] += 1.0;
            p.fc2_weight[i * dim + i] += 1.0;
        }
        p
    }

    /// Checks that every tensor has the length `dim` asks for and `dim > 0`.
    pub fn check(&self) -> Result<()> {
        let d = self.dim;
        ensure!(d > 0, "prior MLP dimension must be positive");
        ensure!(
            self.fc1_weight.len() == 2 * d * d
                && self.fc1_bias.len() == d
                && self.fc2_weight.len() == d * d
                && self.fc2_bias.len() == d,
            "prior MLP tensors for dim {d} must have {}/{d}/{}/{d} values, got {}/{}/{}/{}",
            2 * d * d,
            d * d,
            self.fc1_weight.len(),
            self.fc1_bias.len(),
            self.fc2_weight.len(),
            self.fc2_bias.len()
        );
        Ok(())
    }

    /// The four tensors with their bundle names and shapes, in a stable order.
    pub fn tensors(&self) -> [(&'static str, Vec<usize>, &[f32]); 4] {
        use ner_edge::bundle::metadata::tensor_names as n;
        let d = self.dim;
        [
            (n::PRIOR_FC1_WEIGHT, vec![2 * d, d], &self.fc1_weight[..]),
            (n::PRIOR_FC1_BIAS, vec![d], &self.fc1_bias[..]),
            (n::PRIOR_FC2_WEIGHT, vec![d, d], &self.fc2_weight[..]),
            (n::PRIOR_FC2_BIAS, vec![d], &self.fc2_bias[..]),
        ]
    }

    /// Adds `scale · other` to every tensor. Precondition (debug-asserted): equal `dim`.
    pub fn add_scaled(&mut self, other: &PriorParams, scale: f32) {
        debug_assert_eq!(self.dim, other.dim);
        for (a, b) in [
            (&mut self.fc1_weight, &other.fc1_weight),
            (&mut self.fc1_bias, &other.fc1_bias),
            (&mut self.fc2_weight, &other.fc2_weight),
            (&mut self.fc2_bias, &other.fc2_bias),
        ] {
            for (x, y) in a.iter_mut().zip(b) {
                *x += scale * y;
            }
        }
    }

    /// The MLP on `input` (`[2d]`), in `f64`.
    ///
    /// Precondition (debug-asserted): [`PriorParams::check`] holds and `input.len() == 2d`.
    pub fn forward(&self, input: &[f64]) -> PriorCache {
        let d = self.dim;
        debug_assert_eq!(input.len(), 2 * d);
        let mut hidden_pre: Vec<f64> = self.fc1_bias.iter().map(|&b| f64::from(b)).collect();
        for (x, row) in input.iter().zip(self.fc1_weight.chunks_exact(d)) {
            for (h, &w) in hidden_pre.iter_mut().zip(row) {
                *h += x * f64::from(w);
            }
        }
        let mut output: Vec<f64> = self.fc2_bias.iter().map(|&b| f64::from(b)).collect();
        for (&h, row) in hidden_pre.iter().zip(self.fc2_weight.chunks_exact(d)) {
            let h = h.max(0.0);
            for (y, &w) in output.iter_mut().zip(row) {
                *y += h * f64::from(w);
            }
        }
        PriorCache {
            input: input.to_vec(),
            hidden_pre,
            output,
        }
    }

    /// The MLP in `f32` at the interface (computed in `f64`): the function to hand to
    /// [`ner_edge::adapt::memory::prior_prototype`] so that the runtime uses the same network.
    pub fn forward_f32(&self, input: &[f32]) -> Vec<f32> {
        let x: Vec<f64> = input.iter().map(|&v| f64::from(v)).collect();
        self.forward(&x).output.iter().map(|&v| v as f32).collect()
    }

    /// Backward of [`PriorParams::forward`]: given `d_output` (`[d]`), adds the parameter
    /// gradient into `grad` (same shapes as `self`) and the input gradient into `d_input`
    /// (`[2d]`).
    pub fn backward(
        &self,
        cache: &PriorCache,
        d_output: &[f64],
        grad: &mut PriorParams,
        d_input: &mut [f64],
    ) {
        let d = self.dim;
        debug_assert_eq!(d_output.len(), d);
        debug_assert_eq!(d_input.len(), 2 * d);
        debug_assert_eq!(grad.dim, d);
        let mut d_hidden = vec![0.0f64; d];
        for (j, (&h, row)) in cache
            .hidden_pre
            .iter()
            .zip(self.fc2_weight.chunks_exact(d))
            .enumerate()
        {
            let gw = &mut grad.fc2_weight[j * d..(j + 1) * d];
            let h = h.max(0.0);
            let mut acc = 0.0;
            for ((g, &w), &dy) in gw.iter_mut().zip(row).zip(d_output) {
                *g += (h * dy) as f32;
                acc += f64::from(w) * dy;
            }
            d_hidden[j] = if cache.hidden_pre[j] > 0.0 { acc } else { 0.0 };
        }
        for (g, &dy) in grad.fc2_bias.iter_mut().zip(d_output) {
            *g += dy as f32;
        }
        for (g, &dh) in grad.fc1_bias.iter_mut().zip(&d_hidden) {
            *g += dh as f32;
        }
        for (i, (&x, row)) in cache
            .input
            .iter()
            .zip(self.fc1_weight.chunks_exact(d))
            .enumerate()
        {
            let gw = &mut grad.fc1_weight[i * d..(i + 1) * d];
            let mut acc = 0.0;
            for ((g, &w), &dh) in gw.iter_mut().zip(row).zip(&d_hidden) {
                *g += (x * dh) as f32;
                acc += f64::from(w) * dh;
            }
            d_input[i] += acc;
        }
    }
}

/// `γ` of the prior prototype as `f64`.
pub fn gamma() -> f64 {
    f64::from(PRIOR_GAMMA)
}

/// The prior prototype `γ·y + (1 − γ)·support_mean` from the MLP output `y` (both `[d]`).
pub fn combine(mlp_output: &[f64], support_mean: &[f64]) -> Vec<f64> {
    let g = gamma();
    mlp_output
        .iter()
        .zip(support_mean)
        .map(|(&y, &s)| g * y + (1.0 - g) * s)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_params(dim: usize, seed: u64) -> PriorParams {
        let mut rng = SplitMix64::new(seed);
        PriorParams {
            dim,
            fc1_weight: rng.normal_vec(2 * dim * dim, 0.6),
            fc1_bias: rng.normal_vec(dim, 0.3),
            fc2_weight: rng.normal_vec(dim * dim, 0.6),
            fc2_bias: rng.normal_vec(dim, 0.3),
        }
    }

    #[test]
    fn init_is_deterministic_and_close_to_the_runtime_fallback() {
        let d = 6;
        let p = PriorParams::init(d, 9);
        assert_eq!(p, PriorParams::init(d, 9));
        assert_ne!(p, PriorParams::init(d, 10));
        p.check().unwrap();
        let s: Vec<f32> = (0..d).map(|i| 0.3 * i as f32 - 0.7).collect();
        let m: Vec<f32> = (0..d).map(|i| 0.5 - 0.2 * i as f32).collect();
        let x: Vec<f32> = s.iter().chain(&m).copied().collect();
        let y = p.forward_f32(&x);
        for (a, b) in y.iter().zip(&m) {
            assert!((a - b).abs() < 0.1, "{y:?} vs {m:?}");
        }
    }

    #[test]
    fn check_rejects_bad_shapes() {
        let mut p = PriorParams::zeros(3);
        p.check().unwrap();
        p.fc2_bias.pop();
        assert!(p.check().is_err());
        assert!(PriorParams::zeros(0).check().is_err());
    }

    #[test]
    fn serde_round_trip() {
        let p = random_params(5, 1);
        let json = serde_json::to_string(&p).unwrap();
        let q: PriorParams = serde_json::from_str(&json).unwrap();
        assert_eq!(p, q);
    }

    #[test]
    fn runtime_prior_prototype_uses_the_same_network() {
        let d = 5;
        let p = random_params(d, 2);
        let s = [0.3f32, -0.2, 0.9, 0.1, -1.1];
        let m = [0.5f32, 0.4, -0.3, 0.2, 0.0];
        let mlp = |x: &[f32]| p.forward_f32(x);
        let want =
            ner_edge::adapt::memory::prior_prototype(&s, &m, Some(&mlp), PRIOR_GAMMA).unwrap();
        let x: Vec<f64> = s.iter().chain(&m).map(|&v| f64::from(v)).collect();
        let sm: Vec<f64> = s.iter().map(|&v| f64::from(v)).collect();
        let got = combine(&p.forward(&x).output, &sm);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - f64::from(*w)).abs() < 1e-6, "{g} vs {w}");
        }
    }

    #[test]
    fn runtime_prior_net_computes_the_same_mlp() {
        let d = 5;
        let p = random_params(d, 3);
        let net = ner_edge::adapt::memory::PriorNet::new(
            d,
            p.fc1_weight.clone(),
            p.fc1_bias.clone(),
            p.fc2_weight.clone(),
            p.fc2_bias.clone(),
        )
        .unwrap();
        let mut rng = SplitMix64::new(8);
        for _ in 0..20 {
            let x = rng.normal_vec(2 * d, 1.0);
            let (got, want) = (p.forward_f32(&x), net.forward(&x));
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= 1e-6 * (1.0 + w.abs()), "{g} vs {w}");
            }
        }
    }

    /// Central differences of `Σ g ⊙ y` in f64: wrt the input (step 1e-6) and wrt each
    /// parameter (an f32 step of about 1e-3, divided by the step actually taken); agreement
    /// within `1e-6 + 1e-5·|g|`.
    #[test]
    fn backward_matches_finite_differences() {
        let d = 5;
        let p = random_params(d, 4);
        let mut rng = SplitMix64::new(5);
        let x: Vec<f64> = (0..2 * d).map(|_| rng.next_normal()).collect();
        let g: Vec<f64> = (0..d).map(|_| rng.next_normal()).collect();
        let f = |p: &PriorParams, x: &[f64]| -> f64 {
            p.forward(x).output.iter().zip(&g).map(|(a, b)| a * b).sum()
        };
        let cache = p.forward(&x);
        assert!(cache.hidden_pre.iter().any(|&h| h < 0.0));
        assert!(cache.hidden_pre.iter().all(|&h| h.abs() > 1e-3));
        let mut grad = PriorParams::zeros(d);
        let mut dx = vec![0.0; 2 * d];
        p.backward(&cache, &g, &mut grad, &mut dx);
        for i in 0..2 * d {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[i] += 1e-6;
            xm[i] -= 1e-6;
            let fd = (f(&p, &xp) - f(&p, &xm)) / 2e-6;
            assert!((fd - dx[i]).abs() < 1e-6 + 1e-5 * dx[i].abs(), "x[{i}]");
        }
        let n_params = [2 * d * d, d, d * d, d];
        for (t, &n) in n_params.iter().enumerate() {
            for i in 0..n {
                let (mut pp, mut pm) = (p.clone(), p.clone());
                let slot = |q: &mut PriorParams, delta: f32| {
                    let v = match t {
                        0 => &mut q.fc1_weight[i],
                        1 => &mut q.fc1_bias[i],
                        2 => &mut q.fc2_weight[i],
                        _ => &mut q.fc2_bias[i],
                    };
                    *v += delta;
                    f64::from(*v)
                };
                let step = slot(&mut pp, 1e-3) - slot(&mut pm, -1e-3);
                let fd = (f(&pp, &x) - f(&pm, &x)) / step;
                let an = [
                    &grad.fc1_weight,
                    &grad.fc1_bias,
                    &grad.fc2_weight,
                    &grad.fc2_bias,
                ][t][i];
                let an = f64::from(an);
                assert!(
                    (fd - an).abs() < 1e-6 + 1e-5 * an.abs(),
                    "tensor {t}[{i}]: {fd} vs {an}"
                );
            }
        }
    }
}
