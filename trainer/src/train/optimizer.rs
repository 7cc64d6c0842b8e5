//! AdamW with per-group learning rates, the linear warm-up/decay schedule and global-norm
//! gradient clipping.

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

/// AdamW hyper-parameters shared by every parameter group (Loshchilov & Hutter: the decay is
/// applied to the weights directly, `w -= lr·wd·w`, not through the gradient).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamWConfig {
    /// Decay of the first moment `m` (default 0.9).
    pub beta1: f32,
    /// Decay of the second moment `v` (default 0.999).
    pub beta2: f32,
    /// Added to `sqrt(v̂)` in the denominator (default 1e-8).
    pub eps: f32,
    /// Decoupled weight decay: decayed tensors are scaled by `1 - lr·weight_decay` each update
    /// (default 0.01).
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// One parameter tensor handed to [`AdamW::step`]: the values, their gradient, the learning
/// rate for this step and whether weight decay applies (not for biases, layer norms, CDT).
pub struct ParamUpdate<'a> {
    /// The tensor, updated in place.
    pub value: &'a mut [f32],
    /// Its gradient, same length as `value`.
    pub grad: &'a [f32],
    /// Learning rate of this update (schedule applied).
    pub lr: f32,
    /// Whether weight decay applies.
    pub decay: bool,
}

/// AdamW state: first and second moments per tensor and the step count.
///
/// The tensors passed to [`AdamW::step`] must come in the same order and with the same lengths
/// as the `sizes` given to [`AdamW::new`] on every call.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamW {
    /// Hyper-parameters of every update.
    pub config: AdamWConfig,
    /// Updates done so far (the bias-correction exponent of the next update is `t + 1`).
    pub t: u64,
    /// First moments, one vector per tensor, each of its tensor's length.
    pub m: Vec<Vec<f32>>,
    /// Second moments, laid out as `m`.
    pub v: Vec<Vec<f32>>,
}

/// The per-tensor scalars of one AdamW update, computed in f64 and rounded to f32 once: the
/// one place the bias corrections are formed, used by [`AdamW::step`] on the CPU and passed to
/// the CUDA `adamw_update` kernel, so both backends apply the same numbers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWScalars {
    /// `lr / (1 - beta1^t)`.
    pub step: f32,
    /// `1 / (1 - beta2^t)`.
    pub inv_bc2: f32,
    /// Decay of the first moment, [`AdamWConfig::beta1`].
    pub beta1: f32,
    /// Decay of the second moment, [`AdamWConfig::beta2`].
    pub beta2: f32,
    /// Added to `sqrt(v̂)` in the denominator, [`AdamWConfig::eps`].
    pub eps: f32,
    /// `1 - lr·weight_decay` for decayed tensors, else 1.
    pub decay: f32,
}

impl AdamWScalars {
    /// Scalars for update number `t` (1-based: [`AdamW::t`] after its increment) of a tensor
    /// with learning rate `lr`, decayed or not.
    pub fn new(config: &AdamWConfig, t: u64, lr: f32, decay: bool) -> AdamWScalars {
        let bc1 = 1.0 - f64::from(config.beta1).powf(t as f64);
        let bc2 = 1.0 - f64::from(config.beta2).powf(t as f64);
        AdamWScalars {
            step: (f64::from(lr) / bc1) as f32,
            inv_bc2: (1.0 / bc2) as f32,
            beta1: config.beta1,
            beta2: config.beta2,
            eps: config.eps,
            decay: if decay {
                1.0 - lr * config.weight_decay
            } else {
                1.0
            },
        }
    }

    /// One update of `w` (with its moments `m`, `v`) from gradient `g`, all the same length;
    /// the arithmetic of the CUDA `adamw_update` kernel.
    pub fn apply(&self, w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        let (b1, b2) = (self.beta1, self.beta2);
        for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v) {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            *w = *w * self.decay - self.step * *m / ((*v * self.inv_bc2).sqrt() + self.eps);
        }
    }
}

impl AdamW {
    /// Zero moments for tensors of the given lengths.
    pub fn new(config: AdamWConfig, sizes: &[usize]) -> AdamW {
        AdamW {
            config,
            t: 0,
            m: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            v: sizes.iter().map(|&n| vec![0.0; n]).collect(),
        }
    }

    /// One update of every tensor. Fails, changing nothing, when the tensor list does not match
    /// the moments in count or lengths.
    pub fn step(&mut self, params: &mut [ParamUpdate<'_>]) -> Result<()> {
        ensure!(
            params.len() == self.m.len(),
            "optimizer: {} tensors given, state has {}",
            params.len(),
            self.m.len()
        );
        for (i, p) in params.iter().enumerate() {
            ensure!(
                p.value.len() == self.m[i].len() && p.grad.len() == p.value.len(),
                "optimizer: tensor {i} has {} values and {} gradients, state has {}",
                p.value.len(),
                p.grad.len(),
                self.m[i].len()
            );
        }
        self.t += 1;
        for (p, (m, v)) in params
            .iter_mut()
            .zip(self.m.iter_mut().zip(self.v.iter_mut()))
        {
            AdamWScalars::new(&self.config, self.t, p.lr, p.decay).apply(p.value, p.grad, m, v);
        }
        Ok(())
    }
}

/// Learning-rate multiplier for optimiser step `step` (0-based) of `total`: linear warm-up over
/// the first `warmup` steps from `1/warmup` to 1, then linear decay reaching 0 after the last step.
pub fn schedule(step: u64, total: u64, warmup: u64) -> f32 {
    if total == 0 {
        return 0.0;
    }
    if step < warmup {
        return (step + 1) as f32 / warmup as f32;
    }
    let left = total.saturating_sub(step) as f32;
    let span = total.saturating_sub(warmup).max(1) as f32;
    (left / span).clamp(0.0, 1.0)
}

/// Euclidean norm over all gradient tensors, accumulated in f64.
pub fn global_norm<'a>(grads: impl IntoIterator<Item = &'a [f32]>) -> f64 {
    grads
        .into_iter()
        .flat_map(|g| g.iter())
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
}

/// The factor that brings a gradient of norm `norm` down to at most `max_norm` (1 when it is
/// already within, or when `max_norm` is not positive, i.e. clipping is off).
pub fn clip_factor(norm: f64, max_norm: f32) -> f32 {
    if max_norm > 0.0 && norm > f64::from(max_norm) {
        (f64::from(max_norm) / norm) as f32
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adamw_first_step_moves_by_lr_against_the_gradient_sign() {
        let mut opt = AdamW::new(
            AdamWConfig {
                weight_decay: 0.0,
                ..AdamWConfig::default()
            },
            &[3],
        );
        let mut w = vec![1.0f32, -2.0, 0.5];
        let g = vec![0.3f32, -4.0, 0.0];
        opt.step(&mut [ParamUpdate {
            value: &mut w,
            grad: &g,
            lr: 0.1,
            decay: true,
        }])
        .unwrap();
        assert!((w[0] - 0.9).abs() < 1e-6, "{w:?}");
        assert!((w[1] + 1.9).abs() < 1e-6, "{w:?}");
        assert_eq!(w[2], 0.5);
    }

    #[test]
    fn adamw_matches_a_float64_reference_over_several_steps() {
        let cfg = AdamWConfig::default();
        let mut opt = AdamW::new(cfg.clone(), &[2]);
        let mut w = vec![0.7f32, -0.2];
        let (mut rw, mut rm, mut rv) = ([0.7f64, -0.2], [0.0f64; 2], [0.0f64; 2]);
        for t in 1..=5 {
            let g: Vec<f32> = w.iter().map(|&x| 2.0 * x - 0.1 * t as f32).collect();
            let lr = 0.01 * t as f32;
            opt.step(&mut [ParamUpdate {
                value: &mut w,
                grad: &g,
                lr,
                decay: true,
            }])
            .unwrap();
            for i in 0..2 {
                let gi = f64::from(g[i]);
                rm[i] = 0.9 * rm[i] + 0.1 * gi;
                rv[i] = 0.999 * rv[i] + 0.001 * gi * gi;
                let mh = rm[i] / (1.0 - 0.9f64.powi(t));
                let vh = rv[i] / (1.0 - 0.999f64.powi(t));
                let lr = f64::from(lr);
                rw[i] = rw[i] * (1.0 - lr * 0.01) - lr * mh / (vh.sqrt() + 1e-8);
            }
        }
        for i in 0..2 {
            assert!((f64::from(w[i]) - rw[i]).abs() < 1e-5, "{w:?} {rw:?}");
        }
    }

    #[test]
    fn adamw_refuses_mismatched_tensors() {
        let mut opt = AdamW::new(AdamWConfig::default(), &[2]);
        let mut w = vec![0.0f32; 3];
        let err = opt
            .step(&mut [ParamUpdate {
                value: &mut w,
                grad: &[0.0; 3],
                lr: 0.1,
                decay: false,
            }])
            .unwrap_err();
        assert!(err.to_string().contains("state has 2"), "{err}");
        assert_eq!(opt.t, 0);
    }

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        let f: Vec<f32> = (0..10).map(|s| schedule(s, 10, 2)).collect();
        assert_eq!(f[0], 0.5);
        assert_eq!(f[1], 1.0);
        assert_eq!(f[2], 1.0);
        assert!((f[6] - 0.5).abs() < 1e-6);
        assert!((f[9] - 0.125).abs() < 1e-6);
        assert_eq!(schedule(10, 10, 2), 0.0);
        assert_eq!(schedule(0, 4, 0), 1.0);
    }

    #[test]
    fn clipping_scales_only_large_gradients() {
        let g = [3.0f32, 4.0];
        let n = global_norm([&g[..]]);
        assert!((n - 5.0).abs() < 1e-12);
        assert!((clip_factor(n, 1.0) - 0.2).abs() < 1e-7);
        assert_eq!(clip_factor(n, 10.0), 1.0);
        assert_eq!(clip_factor(n, 0.0), 1.0);
    }
}
