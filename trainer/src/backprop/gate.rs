//! The context gate (MFNER's denoising network; the runtime's
//! [`ner_edge::encoder::fusion`]): forward and backward over rows of hidden states.
//!
//! ```text
//! x_t = [E_t ; C_t]  or  [E_t ; C_t ; (C_t − E_t)²]   (2H or 3H)
//! g_t = σ(x_t · (W[:,1] − W[:,0]) + b1 − b0)          (= softmax(x_t W + b)[1])
//! F_t = E_t + g_t (C_t − E_t)
//! ```
//!
//! `W` is `[2H, 2]` or `[3H, 2]` row-major, as stored in the bundle. The squared difference
//! (element-wise) lets the gate see how far the context moved each token, which a gate linear
//! in `E` and `C` cannot.

use super::scalar::Real;

/// Gate parameters (or their gradients): `weight` `[2 hidden, 2]` or, with the distance
/// features, `[3 hidden, 2]`; `bias` `[2]`.
#[derive(Clone, Debug, PartialEq)]
pub struct GateParams<R = f32> {
    /// Width of the hidden states.
    pub hidden: usize,
    /// `[2 hidden, 2]` or `[3 hidden, 2]` row-major.
    pub weight: Vec<R>,
    /// `[2]`.
    pub bias: [R; 2],
}

impl<R: Real> GateParams<R> {
    /// All zeros: every opening is ½ (or a zero gradient); with `distance`, the gate also
    /// reads `(C − E)²`.
    pub fn zeros(hidden: usize, distance: bool) -> Self {
        GateParams {
            hidden,
            weight: vec![R::ZERO; if distance { 6 } else { 4 } * hidden],
            bias: [R::ZERO; 2],
        }
    }

    /// Whether the gate reads `(C − E)²`.
    pub fn has_distance(&self) -> bool {
        self.weight.len() == 6 * self.hidden
    }
}

fn sigmoid<R: Real>(x: R) -> R {
    if x >= R::ZERO {
        R::ONE / (R::ONE + (-x).exp())
    } else {
        let e = x.exp();
        e / (R::ONE + e)
    }
}

/// Writes `F` (`out`, `[rows, H]`) and the openings `g` (`openings`, `[rows]`) from `alone` (`E`)
/// and `with_context` (`C`), both `[rows, H]`.
pub fn gate_forward<R: Real>(
    p: &GateParams<R>,
    alone: &[R],
    with_context: &[R],
    out: &mut [R],
    openings: &mut [R],
) {
    let h = p.hidden;
    for (t, g_out) in openings.iter_mut().enumerate() {
        let e = &alone[t * h..(t + 1) * h];
        let c = &with_context[t * h..(t + 1) * h];
        let mut z = p.bias[1] - p.bias[0];
        for (x, w) in e.iter().chain(c).zip(p.weight.chunks_exact(2)) {
            z += *x * (w[1] - w[0]);
        }
        if p.has_distance() {
            let rows = p.weight.chunks_exact(2).skip(2 * h);
            for ((&a, &b), w) in e.iter().zip(c).zip(rows) {
                z += (b - a) * (b - a) * (w[1] - w[0]);
            }
        }
        let g = sigmoid(z);
        *g_out = g;
        for ((f, &a), &b) in out[t * h..(t + 1) * h].iter_mut().zip(e).zip(c) {
            *f = a + g * (b - a);
        }
    }
}

/// Backward of [`gate_forward`]: from `d_out` (`[rows, H]`) and the forward's `openings`,
/// accumulates the parameter gradients into `grad` and, when `d_inputs` is given, overwrites
/// its gradients wrt `alone` and `with_context` (both `[rows, H]`).
pub fn gate_backward<R: Real>(
    p: &GateParams<R>,
    alone: &[R],
    with_context: &[R],
    openings: &[R],
    d_out: &[R],
    grad: &mut GateParams<R>,
    mut d_inputs: Option<(&mut [R], &mut [R])>,
) {
    let h = p.hidden;
    for (t, &g) in openings.iter().enumerate() {
        let e = &alone[t * h..(t + 1) * h];
        let c = &with_context[t * h..(t + 1) * h];
        let df = &d_out[t * h..(t + 1) * h];
        let mut dg = R::ZERO;
        for ((&d, &a), &b) in df.iter().zip(e).zip(c) {
            dg += d * (b - a);
        }
        let dz = dg * g * (R::ONE - g);
        for (x, w) in e.iter().chain(c).zip(grad.weight.chunks_exact_mut(2)) {
            w[1] += dz * *x;
            w[0] -= dz * *x;
        }
        grad.bias[1] += dz;
        grad.bias[0] -= dz;
        let distance = p.has_distance();
        if distance {
            let rows = grad.weight.chunks_exact_mut(2).skip(2 * h);
            for ((&a, &b), w) in e.iter().zip(c).zip(rows) {
                w[1] += dz * (b - a) * (b - a);
                w[0] -= dz * (b - a) * (b - a);
            }
        }
        if let Some((de, dc)) = d_inputs.as_mut() {
            let two = R::ONE + R::ONE;
            for i in 0..h {
                let d = df[i];
                let w_e = &p.weight[2 * i..2 * i + 2];
                let w_c = &p.weight[2 * (h + i)..2 * (h + i) + 2];
                let mut ge = (R::ONE - g) * d + dz * (w_e[1] - w_e[0]);
                let mut gc = g * d + dz * (w_c[1] - w_c[0]);
                if distance {
                    let w_d = &p.weight[2 * (2 * h + i)..2 * (2 * h + i) + 2];
                    let pull = dz * two * (c[i] - e[i]) * (w_d[1] - w_d[0]);
                    ge -= pull;
                    gc += pull;
                }
                de[t * h + i] = ge;
                dc[t * h + i] = gc;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::rng::SplitMix64;

    fn random(n: usize, rng: &mut SplitMix64) -> Vec<f64> {
        (0..n)
            .map(|_| (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 - 0.5)
            .collect()
    }

    fn loss(p: &GateParams<f64>, e: &[f64], c: &[f64], coef: &[f64]) -> f64 {
        let rows = e.len() / p.hidden;
        let mut out = vec![0.0; e.len()];
        let mut g = vec![0.0; rows];
        gate_forward(p, e, c, &mut out, &mut g);
        out.iter().zip(coef).map(|(a, b)| a * b).sum()
    }

    #[test]
    fn gradients_match_finite_differences() {
        check_gradients(false);
        check_gradients(true);
    }

    fn check_gradients(distance: bool) {
        let mut rng = SplitMix64::new(5);
        let (h, rows) = (4, 3);
        let width = if distance { 6 } else { 4 } * h;
        let p = GateParams {
            hidden: h,
            weight: random(width, &mut rng).iter().map(|x| 3.0 * x).collect(),
            bias: [0.2, -0.1],
        };
        let e = random(rows * h, &mut rng);
        let c = random(rows * h, &mut rng);
        let coef = random(rows * h, &mut rng);
        let mut out = vec![0.0; rows * h];
        let mut g = vec![0.0; rows];
        gate_forward(&p, &e, &c, &mut out, &mut g);
        let mut grad = GateParams::zeros(h, distance);
        let mut de = vec![0.0; rows * h];
        let mut dc = vec![0.0; rows * h];
        gate_backward(&p, &e, &c, &g, &coef, &mut grad, Some((&mut de, &mut dc)));
        let eps = 1e-6;
        let check = |analytic: f64, plus: f64, minus: f64, what: &str| {
            let numeric = (plus - minus) / (2.0 * eps);
            assert!(
                (analytic - numeric).abs() <= 1e-7 * (1.0 + numeric.abs()),
                "{what}: analytic {analytic} numeric {numeric}"
            );
        };
        for i in 0..width {
            let (mut a, mut b) = (p.clone(), p.clone());
            a.weight[i] += eps;
            b.weight[i] -= eps;
            let (fa, fb) = (loss(&a, &e, &c, &coef), loss(&b, &e, &c, &coef));
            check(grad.weight[i], fa, fb, &format!("weight {i}"));
        }
        for j in 0..2 {
            let (mut a, mut b) = (p.clone(), p.clone());
            a.bias[j] += eps;
            b.bias[j] -= eps;
            let (fa, fb) = (loss(&a, &e, &c, &coef), loss(&b, &e, &c, &coef));
            check(grad.bias[j], fa, fb, &format!("bias {j}"));
        }
        for i in 0..rows * h {
            let (mut a, mut b) = (e.clone(), e.clone());
            a[i] += eps;
            b[i] -= eps;
            check(de[i], loss(&p, &a, &c, &coef), loss(&p, &b, &c, &coef), "E");
            let (mut a, mut b) = (c.clone(), c.clone());
            a[i] += eps;
            b[i] -= eps;
            check(dc[i], loss(&p, &e, &a, &coef), loss(&p, &e, &b, &coef), "C");
        }
    }

    #[test]
    fn the_forward_is_the_runtime_fusion() {
        for width in [4, 6] {
            let mut rng = SplitMix64::new(9);
            let (h, rows) = (8, 5);
            let weight: Vec<f32> = random(width * h, &mut rng)
                .iter()
                .map(|&x| x as f32)
                .collect();
            let p = GateParams {
                hidden: h,
                weight: weight.clone(),
                bias: [0.3f32, -0.4],
            };
            let e: Vec<f32> = random(rows * h, &mut rng)
                .iter()
                .map(|&x| x as f32)
                .collect();
            let c: Vec<f32> = random(rows * h, &mut rng)
                .iter()
                .map(|&x| 3.0 * x as f32)
                .collect();
            let mut out = vec![0.0f32; rows * h];
            let mut g = vec![0.0f32; rows];
            gate_forward(&p, &e, &c, &mut out, &mut g);
            let runtime = ner_edge::encoder::ContextFusion::Gate(ner_edge::encoder::ContextGate {
                hidden: h,
                weight,
                bias: [0.3, -0.4],
            });
            let mut fused = Vec::new();
            let opened = runtime.fuse(h, &e, &c, &mut fused);
            assert!(
                (opened - g.iter().sum::<f32>()).abs() < 1e-5,
                "width {width}"
            );
            for (a, b) in out.iter().zip(&fused) {
                assert!((a - b).abs() < 1e-5, "width {width}: {a} vs {b}");
            }
        }
    }
}
