//! Head tuning (`ner-edge adapt --tune-heads N`): a few gradient steps on the boundary head and
//! the type projection only, on the support set's cached hidden states.
//!
//! The encoder is run once; its last hidden state `h` of each support word (first piece) is
//! kept. The prototypes of the new types are those of gradient-free adaptation and stay fixed;
//! the CDT transitions are the bundle's. The trained parameters `θ = (Wb, bb, Wt, bt)` start at
//! the bundle's heads ([`Heads`]) and minimise
//!
//! ```text
//! L(θ) = mean over support sentences of the CRF negative log-likelihood of the gold labels
//!        + (λ / 2) · ‖θ − θ₀‖²
//! ```
//!
//! where the emissions are exactly those `predict` computes ([`crate::emissions::emissions`])
//! from `boundary = h·Wb + bb` and `types = h·Wt + bt`. The gradient of the NLL with respect to
//! the emissions is `marginal − one_hot(gold)` (forward–backward, [`crate::decode::marginals`]),
//! taken back through both log-softmaxes and the two affine maps by hand. The optimiser is Adam
//! with a constant learning rate, full batch, deterministic.
//!
//! The L2 pull towards `θ₀` keeps a handful of support sentences from dragging the heads far
//! from what meta-training learnt.

use crate::decode::{self, Transitions};
use crate::emissions::emissions;
use crate::encoder::Heads;
use crate::{Error, Result};

/// Settings of [`tune_heads`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TuneOptions {
    /// Optimiser steps (each over the whole support set).
    pub steps: usize,
    /// Adam learning rate.
    pub learning_rate: f32,
    /// Weight `λ` of the L2 pull towards the bundle's heads.
    pub l2: f32,
}

/// Default learning rate of `--tune-heads` (chosen on Few-NERD INTER dev episodes, see
/// `benches/RESULTS.md`).
pub const DEFAULT_TUNE_LR: f32 = 1e-3;
/// Default L2 weight of `--tune-heads`.
pub const DEFAULT_TUNE_L2: f32 = 1.0;

impl TuneOptions {
    /// `steps` steps with the default learning rate and L2 weight.
    pub fn with_steps(steps: usize) -> TuneOptions {
        TuneOptions {
            steps,
            learning_rate: DEFAULT_TUNE_LR,
            l2: DEFAULT_TUNE_L2,
        }
    }
}

/// One support sentence for tuning.
#[derive(Clone, Debug, PartialEq)]
pub struct TuneSentence {
    /// `[words, hidden]`: the hidden state of each word's first piece.
    pub hidden: Vec<f32>,
    /// Gold label per word in the layout of [`crate::decode::labels`] (0 = O, `1 + 2k` = B-k,
    /// `2 + 2k` = I-k), a valid BIO sequence.
    pub labels: Vec<usize>,
}

/// What a tuning run did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TuneReport {
    /// Adam steps taken.
    pub steps: usize,
    /// `L(θ₀)` (the regulariser is 0 there).
    pub loss_before: f64,
    /// `L(θ)` after the last step.
    pub loss_after: f64,
}

/// Tunes `base` on `sentences` for the types whose prototypes are `prototypes`
/// (`[n_types, base.type_dim]`) under `transitions` (unfolded for `n_types`).
///
/// Errors ([`Error::Input`]): no sentence with at least one word; a sentence whose hidden
/// states and labels disagree in length; a label outside the label set or a label sequence
/// that BIO forbids; a non-finite loss (the tuned heads are then not returned).
pub fn tune_heads(
    base: &Heads,
    prototypes: &[f32],
    n_types: usize,
    transitions: &Transitions,
    sentences: &[TuneSentence],
    opts: &TuneOptions,
) -> Result<(Heads, TuneReport)> {
    check_sentences(base, n_types, transitions, sentences)?;
    let mut theta = base.clone();
    let mut grad = zeros_like(base);
    let mut adam = Adam::new(base);
    let loss = |theta: &Heads, grad: Option<&mut Heads>| {
        loss_and_grad(
            theta,
            base,
            prototypes,
            n_types,
            transitions,
            sentences,
            opts.l2,
            grad,
        )
    };
    let loss_before = loss(&theta, None);
    for step in 1..=opts.steps {
        let l = loss(&theta, Some(&mut grad));
        if !l.is_finite() {
            return Err(Error::Input(format!(
                "head tuning diverged at step {step}: loss {l}"
            )));
        }
        adam.step(&mut theta, &grad, opts.learning_rate, step);
    }
    let loss_after = loss(&theta, None);
    if !loss_after.is_finite() || theta.check("tuned heads").is_err() {
        return Err(Error::Input(format!(
            "head tuning diverged: final loss {loss_after}"
        )));
    }
    Ok((
        theta,
        TuneReport {
            steps: opts.steps,
            loss_before,
            loss_after,
        },
    ))
}

fn check_sentences(
    base: &Heads,
    n_types: usize,
    transitions: &Transitions,
    sentences: &[TuneSentence],
) -> Result<()> {
    let l = decode::label_count(n_types);
    if transitions.n_labels != l {
        return Err(Error::Input(format!(
            "head tuning: transitions for {} labels, but {n_types} types need {l}",
            transitions.n_labels
        )));
    }
    if !sentences.iter().any(|s| !s.labels.is_empty()) {
        return Err(Error::Input(
            "head tuning: the support set has no words".into(),
        ));
    }
    for (i, s) in sentences.iter().enumerate() {
        if s.hidden.len() != s.labels.len() * base.hidden {
            return Err(Error::Input(format!(
                "head tuning: support sentence {}: {} hidden values for {} words of width {}",
                i + 1,
                s.hidden.len(),
                s.labels.len(),
                base.hidden
            )));
        }
        let mut prev: Option<decode::Tag> = None;
        for (w, &label) in s.labels.iter().enumerate() {
            let tag = decode::Tag::from_index(label);
            if label >= l || !tag.may_follow(prev) {
                return Err(Error::Input(format!(
                    "head tuning: support sentence {}, word {}: label {label} is outside the \
                     {l} labels or breaks BIO",
                    i + 1,
                    w + 1
                )));
            }
            prev = Some(tag);
        }
    }
    Ok(())
}

fn zeros_like(h: &Heads) -> Heads {
    Heads {
        hidden: h.hidden,
        type_dim: h.type_dim,
        boundary_weight: vec![0.0; h.boundary_weight.len()],
        boundary_bias: vec![0.0; h.boundary_bias.len()],
        types_weight: vec![0.0; h.types_weight.len()],
        types_bias: vec![0.0; h.types_bias.len()],
    }
}

fn tensors_mut(h: &mut Heads) -> [&mut Vec<f32>; 4] {
    [
        &mut h.boundary_weight,
        &mut h.boundary_bias,
        &mut h.types_weight,
        &mut h.types_bias,
    ]
}

fn tensors(h: &Heads) -> [&Vec<f32>; 4] {
    [
        &h.boundary_weight,
        &h.boundary_bias,
        &h.types_weight,
        &h.types_bias,
    ]
}

/// Score of one label path under `emissions` (`[T, L]`) and `t` (without BIO constraints: the
/// callers' paths are valid).
fn path_score(emissions: &[f32], labels: &[usize], t: &Transitions) -> f64 {
    let l = t.n_labels;
    let mut score = 0.0f64;
    for (i, &y) in labels.iter().enumerate() {
        score += f64::from(emissions[i * l + y]);
        score += f64::from(if i == 0 {
            t.start[y]
        } else {
            t.get(labels[i - 1], y)
        });
    }
    if let Some(&last) = labels.last() {
        score += f64::from(t.end[last]);
    }
    score
}

/// The CRF negative log-likelihood of one sentence's gold `labels` (layout of
/// [`crate::decode::labels`]) under the emissions `predict` computes from `boundary`
/// (`[words, 3]`) and `types` (`[words, d]`) against `prototypes` (`[n_types, d]`) and
/// `transitions`, times `scale`. With `grads`, also `scale · ∂NLL/∂boundary` and
/// `scale · ∂NLL/∂types`, written into `grads.0` (`[words, 3]`) and `grads.1` (`[words, d]`)
/// (both resized). Used by head tuning here and by prompt training in `ner-train prompt`,
/// which takes these gradients back through the encoder.
#[allow(clippy::too_many_arguments)]
pub fn sentence_nll(
    boundary: &[f32],
    types: &[f32],
    d: usize,
    prototypes: &[f32],
    n_types: usize,
    transitions: &Transitions,
    labels: &[usize],
    scale: f64,
    grads: Option<(&mut Vec<f32>, &mut Vec<f32>)>,
) -> f64 {
    let l = decode::label_count(n_types);
    let mut em = Vec::new();
    emissions(boundary, types, d, prototypes, n_types, &mut em);
    let m = decode::marginals(&em, l, transitions);
    let loss = scale * (m.log_z() - path_score(&em, labels, transitions));
    let Some((g_boundary, g_types)) = grads else {
        return loss;
    };
    let words = labels.len();
    g_boundary.clear();
    g_boundary.resize(words * 3, 0.0);
    g_types.clear();
    g_types.resize(words * d, 0.0);
    let probs = m.probs();
    let mut d_scores = vec![0.0f64; n_types];
    let mut d_types = vec![0.0f64; d];
    let mut type_probs = vec![0.0f64; n_types];
    for (t, &gold) in labels.iter().enumerate() {
        let gl = |label: usize| -> f64 {
            let p = f64::from(probs[t * l + label]);
            scale * (p - if label == gold { 1.0 } else { 0.0 })
        };
        let b = &boundary[t * 3..t * 3 + 3];
        let bm = b[0].max(b[1]).max(b[2]);
        let bz: f64 = b.iter().map(|&x| f64::from(x - bm).exp()).sum();
        let mut d_lsb = [gl(0), 0.0, 0.0];
        let mut d_lt_sum = 0.0;
        for (k, ds) in d_scores.iter_mut().enumerate() {
            let (gb, gi) = (gl(1 + 2 * k), gl(2 + 2 * k));
            d_lsb[1] += gb;
            d_lsb[2] += gi;
            *ds = gb + gi;
            d_lt_sum += gb + gi;
        }
        let d_lsb_sum: f64 = d_lsb.iter().sum();
        for ((o, &dl), &bj) in g_boundary[t * 3..t * 3 + 3].iter_mut().zip(&d_lsb).zip(b) {
            let p = f64::from(bj - bm).exp() / bz;
            *o = (dl - p * d_lsb_sum) as f32;
        }
        d_types.fill(0.0);
        if n_types > 0 {
            let v = &types[t * d..(t + 1) * d];
            let mut max = f64::NEG_INFINITY;
            for (k, p) in prototypes.chunks_exact(d).take(n_types).enumerate() {
                let s_k: f64 = v.iter().zip(p).map(|(&a, &b)| f64::from(a * b)).sum();
                type_probs[k] = s_k;
                max = max.max(s_k);
            }
            let z: f64 = type_probs.iter().map(|&s| (s - max).exp()).sum();
            for (k, p) in prototypes.chunks_exact(d).take(n_types).enumerate() {
                let pt = (type_probs[k] - max).exp() / z;
                let ds = d_scores[k] - pt * d_lt_sum;
                for (o, &pi) in d_types.iter_mut().zip(p) {
                    *o += ds * f64::from(pi);
                }
            }
        }
        for (o, &v) in g_types[t * d..(t + 1) * d].iter_mut().zip(&d_types) {
            *o = v as f32;
        }
    }
    loss
}

/// `L(θ)` of the module docs; with `grad`, also its gradient (overwritten).
#[allow(clippy::too_many_arguments)]
pub(crate) fn loss_and_grad(
    theta: &Heads,
    base: &Heads,
    prototypes: &[f32],
    n_types: usize,
    transitions: &Transitions,
    sentences: &[TuneSentence],
    l2: f32,
    mut grad: Option<&mut Heads>,
) -> f64 {
    let h = theta.hidden;
    let d = theta.type_dim;
    let counted = sentences.iter().filter(|s| !s.labels.is_empty()).count();
    let scale = 1.0 / counted.max(1) as f64;
    if let Some(g) = grad.as_deref_mut() {
        for t in tensors_mut(g) {
            t.fill(0.0);
        }
    }
    let mut boundary = Vec::new();
    let mut types = Vec::new();
    let mut d_boundary = Vec::new();
    let mut d_types = Vec::new();
    let mut loss = 0.0f64;
    for s in sentences.iter().filter(|s| !s.labels.is_empty()) {
        theta.apply(&s.hidden, &mut boundary, &mut types);
        loss += sentence_nll(
            &boundary,
            &types,
            d,
            prototypes,
            n_types,
            transitions,
            &s.labels,
            scale,
            grad.is_some().then_some((&mut d_boundary, &mut d_types)),
        );
        let Some(g) = grad.as_deref_mut() else {
            continue;
        };
        for ((x, db), dt) in s
            .hidden
            .chunks_exact(h)
            .zip(d_boundary.chunks_exact(3))
            .zip(d_types.chunks_exact(d))
        {
            for (o, &v) in g.boundary_bias.iter_mut().zip(db) {
                *o += v;
            }
            for (o, &v) in g.types_bias.iter_mut().zip(dt) {
                *o += v;
            }
            for ((&xi, brow), trow) in x
                .iter()
                .zip(g.boundary_weight.chunks_exact_mut(3))
                .zip(g.types_weight.chunks_exact_mut(d))
            {
                for (o, &v) in brow.iter_mut().zip(db) {
                    *o += xi * v;
                }
                for (o, &v) in trow.iter_mut().zip(dt) {
                    *o += xi * v;
                }
            }
        }
    }
    let lambda = f64::from(l2);
    if lambda != 0.0 {
        for (a, b) in tensors(theta).into_iter().zip(tensors(base)) {
            loss += 0.5
                * lambda
                * a.iter()
                    .zip(b.iter())
                    .map(|(&x, &y)| f64::from(x - y).powi(2))
                    .sum::<f64>();
        }
        if let Some(g) = grad {
            for ((gt, a), b) in tensors_mut(g)
                .into_iter()
                .zip(tensors(theta))
                .zip(tensors(base))
            {
                for ((o, &x), &y) in gt.iter_mut().zip(a.iter()).zip(b.iter()) {
                    *o += l2 * (x - y);
                }
            }
        }
    }
    loss
}

/// Adam with bias correction, β = (0.9, 0.999), ε = 1e-8.
struct Adam {
    m: Heads,
    v: Heads,
}

impl Adam {
    fn new(shape: &Heads) -> Adam {
        Adam {
            m: zeros_like(shape),
            v: zeros_like(shape),
        }
    }

    fn step(&mut self, theta: &mut Heads, grad: &Heads, lr: f32, step: usize) {
        const B1: f32 = 0.9;
        const B2: f32 = 0.999;
        const EPS: f32 = 1e-8;
        let c1 = 1.0 - B1.powi(step as i32);
        let c2 = 1.0 - B2.powi(step as i32);
        for (((p, g), m), v) in tensors_mut(theta)
            .into_iter()
            .zip(tensors(grad))
            .zip(tensors_mut(&mut self.m))
            .zip(tensors_mut(&mut self.v))
        {
            for (((p, &g), m), v) in p
                .iter_mut()
                .zip(g.iter())
                .zip(m.iter_mut())
                .zip(v.iter_mut())
            {
                *m = B1 * *m + (1.0 - B1) * g;
                *v = B2 * *v + (1.0 - B2) * g * g;
                *p -= lr * (*m / c1) / ((*v / c2).sqrt() + EPS);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::CdtParams;
    use crate::decode::unfold;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    }

    fn random_heads(hidden: usize, d: usize, seed: &mut u64) -> Heads {
        let mut v = |n: usize| (0..n).map(|_| lcg(seed)).collect::<Vec<f32>>();
        Heads {
            hidden,
            type_dim: d,
            boundary_weight: v(hidden * 3),
            boundary_bias: v(3),
            types_weight: v(hidden * d),
            types_bias: v(d),
        }
    }

    fn cdt(seed: &mut u64) -> CdtParams {
        let mut p = CdtParams {
            matrix: [[0.0; 5]; 3],
            start: [0.0; 3],
            end: [0.0; 3],
        };
        for v in p.matrix.iter_mut().flatten() {
            *v = lcg(seed);
        }
        for v in p.start.iter_mut().chain(p.end.iter_mut()) {
            *v = lcg(seed);
        }
        p
    }

    struct Case {
        base: Heads,
        theta: Heads,
        prototypes: Vec<f32>,
        n_types: usize,
        transitions: Transitions,
        sentences: Vec<TuneSentence>,
    }

    /// Odd sizes: hidden 5, type_dim 3, two types, sentences of 4 and 3 words and one empty.
    fn case(seed: u64) -> Case {
        let mut s = seed;
        let (hidden, d, n_types) = (5, 3, 2);
        let base = random_heads(hidden, d, &mut s);
        let mut theta = base.clone();
        for t in tensors_mut(&mut theta) {
            for x in t.iter_mut() {
                *x += 0.3 * lcg(&mut s);
            }
        }
        let prototypes = (0..n_types * d).map(|_| lcg(&mut s)).collect();
        let transitions = unfold(&cdt(&mut s), n_types);
        let labels = [vec![1, 2, 0, 3], vec![0, 0, 3], vec![]];
        let sentences = labels
            .into_iter()
            .map(|labels| TuneSentence {
                hidden: (0..labels.len() * hidden).map(|_| lcg(&mut s)).collect(),
                labels,
            })
            .collect();
        Case {
            base,
            theta,
            prototypes,
            n_types,
            transitions,
            sentences,
        }
    }

    fn loss(c: &Case, theta: &Heads, l2: f32) -> f64 {
        loss_and_grad(
            theta,
            &c.base,
            &c.prototypes,
            c.n_types,
            &c.transitions,
            &c.sentences,
            l2,
            None,
        )
    }

    #[test]
    fn gradient_matches_finite_differences() {
        for seed in [1u64, 7, 42] {
            let c = case(seed);
            let l2 = 0.37;
            let mut grad = zeros_like(&c.base);
            loss_and_grad(
                &c.theta,
                &c.base,
                &c.prototypes,
                c.n_types,
                &c.transitions,
                &c.sentences,
                l2,
                Some(&mut grad),
            );
            for part in 0..4 {
                let n = tensors(&c.theta)[part].len();
                for i in 0..n {
                    let eps = 1e-2f32;
                    let mut plus = c.theta.clone();
                    tensors_mut(&mut plus)[part][i] += eps;
                    let mut minus = c.theta.clone();
                    tensors_mut(&mut minus)[part][i] -= eps;
                    let numeric = (loss(&c, &plus, l2) - loss(&c, &minus, l2)) / (2.0 * eps as f64);
                    let analytic = f64::from(tensors(&grad)[part][i]);
                    assert!(
                        (numeric - analytic).abs() <= 2e-3 + 2e-3 * numeric.abs(),
                        "seed {seed}, tensor {part}, index {i}: numeric {numeric} vs analytic \
                         {analytic}"
                    );
                }
            }
        }
    }

    #[test]
    fn tuning_lowers_the_loss_and_zero_steps_change_nothing() {
        let c = case(3);
        let opts = TuneOptions {
            steps: 50,
            learning_rate: 1e-2,
            l2: 1e-3,
        };
        let (tuned, report) = tune_heads(
            &c.base,
            &c.prototypes,
            c.n_types,
            &c.transitions,
            &c.sentences,
            &opts,
        )
        .unwrap();
        assert!(report.loss_after < report.loss_before * 0.9, "{report:?}");
        assert_ne!(tuned, c.base);
        let (same, report) = tune_heads(
            &c.base,
            &c.prototypes,
            c.n_types,
            &c.transitions,
            &c.sentences,
            &TuneOptions { steps: 0, ..opts },
        )
        .unwrap();
        assert_eq!(same, c.base);
        assert_eq!(report.loss_before, report.loss_after);
    }

    #[test]
    fn bad_sentences_are_refused() {
        let c = case(5);
        let opts = TuneOptions::with_steps(1);
        let run = |sentences: &[TuneSentence]| {
            tune_heads(
                &c.base,
                &c.prototypes,
                c.n_types,
                &c.transitions,
                sentences,
                &opts,
            )
        };
        let mut broken = c.sentences.clone();
        broken[0].labels = vec![0, 2, 0, 0];
        let e = run(&broken).unwrap_err().to_string();
        assert!(e.contains("sentence 1, word 2"), "{e}");
        let mut broken = c.sentences.clone();
        broken[1].hidden.pop();
        assert!(run(&broken).unwrap_err().to_string().contains("sentence 2"));
        let e = run(&[]).unwrap_err().to_string();
        assert!(e.contains("no words"), "{e}");
    }
}
