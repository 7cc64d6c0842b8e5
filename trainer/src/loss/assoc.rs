//! Training side of the associated memory ([`ner_edge::associated_memory`]): initial
//! parameters, the forward the runtime computes (its own f32 code) and the backward pass.
//!
//! During training the memory of a dense sequence is the other sequences of its batch, with
//! their gold labels mapped to its type set: its own labels are never in its memory.
//! Gradients reach the read parameters, the sequence's type vectors (through the queries) and
//! the memory words' type vectors (through the keys).

use anyhow::{ensure, Result};
use ner_edge::associated_memory::{label_tag, label_type, AssocParams};

use crate::model::rng::SplitMix64;

/// Fresh parameters: `Wq = Wk`, one matrix normal with standard deviation `1/√type_dim`, so
/// that attention starts as similarity of type vectors (`q·k ≈ τ·μ · H·dk / type_dim`); `E` and
/// `γ` zero, so a fresh memory reads nothing and the model starts as without it.
pub fn init_assoc(type_dim: usize, heads: usize, key_dim: usize, seed: u64) -> AssocParams {
    let mut rng = SplitMix64::new(seed);
    let w = heads * key_dim;
    let std = 1.0 / (type_dim as f32).sqrt();
    let projection = rng.normal_vec(type_dim * w, std);
    AssocParams {
        type_dim,
        heads,
        key_dim,
        query: projection.clone(),
        key: projection,
        tag_values: vec![0.0; heads * 9],
        type_gain: vec![0.0; heads],
    }
}

/// Same shapes as `p`, all zero: a gradient accumulator.
pub fn zeros_like(p: &AssocParams) -> AssocParams {
    AssocParams {
        type_dim: p.type_dim,
        heads: p.heads,
        key_dim: p.key_dim,
        query: vec![0.0; p.query.len()],
        key: vec![0.0; p.key.len()],
        tag_values: vec![0.0; p.tag_values.len()],
        type_gain: vec![0.0; p.type_gain.len()],
    }
}

/// What the backward pass needs of one read.
#[derive(Clone, Debug, Default)]
pub struct AssocRead {
    /// `[T, H·dk]`.
    pub queries: Vec<f32>,
    /// `[M, H·dk]`.
    pub keys: Vec<f32>,
    /// `[H, T, M]` attention weights.
    pub probs: Vec<f32>,
    /// `[T, 3]` added to the boundary logits.
    pub boundary: Vec<f32>,
    /// `[T, n_types]` added to the type scores.
    pub type_offsets: Vec<f32>,
}

/// The read of `words` (`[T, d]` type vectors) over `memory` (`[M, d]`, labels `labels`),
/// exactly as the runtime computes it.
pub fn assoc_forward(
    p: &AssocParams,
    words: &[f32],
    memory: &[f32],
    labels: &[u16],
    n_types: usize,
) -> Result<AssocRead> {
    let d = p.type_dim;
    ensure!(
        words.len().is_multiple_of(d) && memory.len() == labels.len() * d,
        "associated memory: words ({}) and memory ({} for {} labels) must be rows of {d}",
        words.len(),
        memory.len(),
        labels.len()
    );
    let t = words.len() / d;
    let mut r = AssocRead {
        boundary: vec![0.0; 3 * t],
        type_offsets: vec![0.0; n_types * t],
        ..AssocRead::default()
    };
    p.project(&p.query, words, &mut r.queries);
    p.project(&p.key, memory, &mut r.keys);
    p.attend(
        &r.queries,
        &r.keys,
        labels,
        n_types,
        &mut r.boundary,
        &mut r.type_offsets,
        Some(&mut r.probs),
    );
    Ok(r)
}

/// Gradients of one read wrt its inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct AssocInputGrads {
    /// `[T, d]` wrt the words' type vectors.
    pub words: Vec<f32>,
    /// `[M, d]` wrt the memory words' type vectors.
    pub memory: Vec<f32>,
}

/// Backward of [`assoc_forward`] (same inputs, its result `r`) given `d_boundary` (`[T, 3]`)
/// and `d_types` (`[T, n_types]`), the loss gradients wrt the two offsets: adds `scale ·` the
/// parameter gradients into `grads` and returns the input gradients (unscaled).
#[allow(clippy::too_many_arguments)]
pub fn assoc_backward(
    p: &AssocParams,
    words: &[f32],
    memory: &[f32],
    labels: &[u16],
    n_types: usize,
    r: &AssocRead,
    d_boundary: &[f32],
    d_types: &[f32],
    scale: f32,
    grads: &mut AssocParams,
) -> AssocInputGrads {
    let (d, h_count, dk, w) = (p.type_dim, p.heads, p.key_dim, p.width());
    let t_len = words.len() / d;
    let m = labels.len();
    let mut d_q = vec![0.0f32; t_len * w];
    let mut d_k = vec![0.0f32; m * w];
    let inv = 1.0 / (dk as f32).sqrt();
    let mut da = vec![0.0f32; m];
    for h in 0..h_count {
        let values = &p.tag_values[h * 9..(h + 1) * 9];
        let gain = p.type_gain[h];
        for t in 0..t_len {
            let a = &r.probs[(h * t_len + t) * m..(h * t_len + t + 1) * m];
            let db = &d_boundary[3 * t..3 * t + 3];
            let dl = &d_types[t * n_types..(t + 1) * n_types];
            let mut weighted = 0.0f32;
            for j in 0..m {
                let y = labels[j];
                let tag = label_tag(y);
                let v = &values[tag * 3..tag * 3 + 3];
                let mut g = v[0] * db[0] + v[1] * db[1] + v[2] * db[2];
                let dv = &mut grads.tag_values[h * 9 + tag * 3..h * 9 + tag * 3 + 3];
                for (o, &g_c) in dv.iter_mut().zip(db) {
                    *o += scale * a[j] * g_c;
                }
                if let Some(k) = label_type(y).filter(|&k| k < n_types) {
                    g += gain * dl[k];
                    grads.type_gain[h] += scale * a[j] * dl[k];
                }
                da[j] = g;
                weighted += a[j] * g;
            }
            let q = &r.queries[t * w + h * dk..t * w + (h + 1) * dk];
            for j in 0..m {
                let ds = a[j] * (da[j] - weighted) * inv;
                if ds == 0.0 {
                    continue;
                }
                let k = &r.keys[j * w + h * dk..j * w + (h + 1) * dk];
                let dq = &mut d_q[t * w + h * dk..t * w + (h + 1) * dk];
                for (o, &x) in dq.iter_mut().zip(k) {
                    *o += ds * x;
                }
                let dkj = &mut d_k[j * w + h * dk..j * w + (h + 1) * dk];
                for (o, &x) in dkj.iter_mut().zip(q) {
                    *o += ds * x;
                }
            }
        }
    }
    let project_back = |x: &[f32], dy: &[f32], weight: &[f32], dw: &mut [f32]| -> Vec<f32> {
        let mut dx = vec![0.0f32; x.len()];
        for ((xr, dyr), dxr) in x
            .chunks_exact(d)
            .zip(dy.chunks_exact(w))
            .zip(dx.chunks_exact_mut(d))
        {
            for (i, (&xi, dxi)) in xr.iter().zip(dxr.iter_mut()).enumerate() {
                let wrow = &weight[i * w..(i + 1) * w];
                let dwrow = &mut dw[i * w..(i + 1) * w];
                let mut acc = 0.0f32;
                for ((&g, &wv), dwv) in dyr.iter().zip(wrow).zip(dwrow.iter_mut()) {
                    acc += g * wv;
                    *dwv += scale * xi * g;
                }
                *dxi = acc;
            }
        }
        dx
    };
    let d_words = project_back(words, &d_q, &p.query, &mut grads.query);
    let d_memory = project_back(memory, &d_k, &p.key, &mut grads.key);
    AssocInputGrads {
        words: d_words,
        memory: d_memory,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loss(
        p: &AssocParams,
        words: &[f32],
        memory: &[f32],
        labels: &[u16],
        n: usize,
        cb: &[f32],
        ct: &[f32],
    ) -> f64 {
        let r = assoc_forward(p, words, memory, labels, n).unwrap();
        let a: f64 = r
            .boundary
            .iter()
            .zip(cb)
            .map(|(x, c)| f64::from(x * c))
            .sum();
        let b: f64 = r
            .type_offsets
            .iter()
            .zip(ct)
            .map(|(x, c)| f64::from(x * c))
            .sum();
        a + b
    }

    /// Central differences of a random linear function of both offsets agree with every
    /// analytic gradient (parameters, words and memory).
    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = SplitMix64::new(11);
        let (d, heads, dk, t, m, n) = (5, 2, 3, 4, 6, 3);
        let mut p = init_assoc(d, heads, dk, 3);
        p.tag_values = rng.normal_vec(heads * 9, 1.0);
        p.type_gain = rng.normal_vec(heads, 1.0);
        let words = rng.normal_vec(t * d, 1.0);
        let memory = rng.normal_vec(m * d, 1.0);
        let labels: Vec<u16> = vec![0, 1, 2, 5, 7, 4];
        let cb = rng.normal_vec(3 * t, 1.0);
        let ct = rng.normal_vec(n * t, 1.0);
        let r = assoc_forward(&p, &words, &memory, &labels, n).unwrap();
        let mut g = zeros_like(&p);
        let gi = assoc_backward(&p, &words, &memory, &labels, n, &r, &cb, &ct, 1.0, &mut g);
        let h = 1e-2f32;
        let check = |analytic: f32, f: &dyn Fn(f32) -> f64, what: String| {
            let num = (f(h) - f(-h)) / (2.0 * f64::from(h));
            assert!(
                (num - f64::from(analytic)).abs() <= 2e-3 * (1.0 + num.abs()),
                "{what}: finite difference {num} vs analytic {analytic}"
            );
        };
        let with = |edit: &dyn Fn(&mut AssocParams, f32), e: f32| {
            let mut q = p.clone();
            edit(&mut q, e);
            loss(&q, &words, &memory, &labels, n, &cb, &ct)
        };
        for i in 0..p.query.len() {
            check(
                g.query[i],
                &|e| with(&|q, e| q.query[i] += e, e),
                format!("Wq {i}"),
            );
            check(
                g.key[i],
                &|e| with(&|q, e| q.key[i] += e, e),
                format!("Wk {i}"),
            );
        }
        for i in 0..p.tag_values.len() {
            let f = |e| with(&|q, e| q.tag_values[i] += e, e);
            check(g.tag_values[i], &f, format!("E {i}"));
        }
        for i in 0..heads {
            let f = |e| with(&|q, e| q.type_gain[i] += e, e);
            check(g.type_gain[i], &f, format!("γ {i}"));
        }
        for i in 0..words.len() {
            let f = |e: f32| {
                let mut x = words.clone();
                x[i] += e;
                loss(&p, &x, &memory, &labels, n, &cb, &ct)
            };
            check(gi.words[i], &f, format!("word {i}"));
        }
        for i in 0..memory.len() {
            let f = |e: f32| {
                let mut x = memory.clone();
                x[i] += e;
                loss(&p, &words, &x, &labels, n, &cb, &ct)
            };
            check(gi.memory[i], &f, format!("memory {i}"));
        }
    }

    #[test]
    fn a_fresh_read_adds_nothing() {
        let p = init_assoc(4, 2, 2, 1);
        let r = assoc_forward(&p, &[1.0; 8], &[0.5; 12], &[0, 1, 2], 1).unwrap();
        assert!(r.boundary.iter().chain(&r.type_offsets).all(|&x| x == 0.0));
        assert!(assoc_forward(&p, &[1.0; 7], &[], &[], 1).is_err());
    }
}
