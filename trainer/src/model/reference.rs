//! Plain f32 forward pass: the numerical reference for the ONNX export and the training backends.
//!
//! Written for clarity, not speed: one sentence at a time, straightforward loops.

use super::weights::{LayerNorm, LayerWeights, Linear, ModelWeights};

/// Additive attention bias on padded keys, as in the exported graph.
pub const ATTENTION_MASK_VALUE: f32 = -10000.0;

/// Per-sentence outputs of [`reference_forward`], each row-major and cut to the sentence's own
/// length `T` (padding removed).
#[derive(Clone, Debug, PartialEq)]
pub struct ForwardOutput {
    /// Final hidden states, `[T, D]` per sentence.
    pub hidden: Vec<Vec<f32>>,
    /// Boundary logits (`O`, `B`, `I`), `[T, 3]` per sentence.
    pub boundary: Vec<Vec<f32>>,
    /// Type projections, `[T, type_dim]` per sentence.
    pub types: Vec<Vec<f32>>,
}

/// Runs the encoder and both heads on a batch of token-id sequences.
///
/// Sentences are right-padded with id 0 to the longest length in the batch; padded keys get
/// [`ATTENTION_MASK_VALUE`] added to their attention scores, so the result for a sentence does
/// not depend on what else is in the batch (up to exact zeros of `exp(-10000)`).
///
/// Panics if `w` is inconsistent (see [`ModelWeights::check`]), if an id is not below
/// `vocab_size`, or if a sentence is longer than `max_positions`.
pub fn reference_forward(w: &ModelWeights, ids: &[Vec<u32>]) -> ForwardOutput {
    let shapes: Vec<Vec<u8>> = ids.iter().map(|s| vec![0; s.len()]).collect();
    reference_forward_shaped(w, ids, &shapes)
}

/// [`reference_forward`] with the word-shape id of every piece (`shapes[s][i]` for piece `i`
/// of sentence `s`); the shapes are ignored when the model has no shape table.
///
/// Panics as [`reference_forward`] does, and when `shapes` does not match `ids` in length or a
/// shape is not below the model's `shape_classes`.
pub fn reference_forward_shaped(
    w: &ModelWeights,
    ids: &[Vec<u32>],
    shapes: &[Vec<u8>],
) -> ForwardOutput {
    assert_eq!(
        ids.len(),
        shapes.len(),
        "reference_forward: one shape row per sentence"
    );
    if let Err(e) = w.check() {
        panic!("reference_forward: inconsistent weights: {e:#}");
    }
    let c = &w.config;
    let t = ids.iter().map(Vec::len).max().unwrap_or(0);
    assert!(
        t <= c.max_positions,
        "reference_forward: sentence of {t} tokens exceeds max_positions {}",
        c.max_positions
    );
    let mut out = ForwardOutput {
        hidden: vec![],
        boundary: vec![],
        types: vec![],
    };
    for (sentence, shape) in ids.iter().zip(shapes) {
        assert_eq!(
            sentence.len(),
            shape.len(),
            "reference_forward: one shape per piece"
        );
        let valid: Vec<bool> = (0..t).map(|j| j < sentence.len()).collect();
        let padded: Vec<u32> = (0..t)
            .map(|j| sentence.get(j).copied().unwrap_or(0))
            .collect();
        let padded_shapes: Vec<u8> = (0..t).map(|j| shape.get(j).copied().unwrap_or(0)).collect();
        let mut x = embed(w, &padded, &padded_shapes);
        for layer in &w.layers {
            x = layer_forward(layer, &x, &valid, c.heads, c.layer_norm_eps);
        }
        let n = sentence.len();
        x.truncate(n * c.hidden);
        out.boundary.push(linear(&x, &w.boundary));
        out.types.push(linear(&x, &w.types));
        out.hidden.push(x);
    }
    out
}

fn embed(w: &ModelWeights, ids: &[u32], shapes: &[u8]) -> Vec<f32> {
    let d = w.config.hidden;
    let mut x = Vec::with_capacity(ids.len() * d);
    for (pos, (&id, &shape)) in ids.iter().zip(shapes).enumerate() {
        let id = id as usize;
        assert!(
            id < w.config.vocab_size,
            "reference_forward: token id {id} out of vocabulary ({})",
            w.config.vocab_size
        );
        let word = &w.word_embeddings[id * d..(id + 1) * d];
        let position = &w.position_embeddings[pos * d..(pos + 1) * d];
        let start = x.len();
        for k in 0..d {
            x.push(word[k] + position[k] + w.token_type_embedding[k]);
        }
        if w.config.shape_classes > 0 {
            let s = usize::from(shape);
            assert!(
                s < w.config.shape_classes,
                "reference_forward: shape {s} out of range ({})",
                w.config.shape_classes
            );
            for (v, &r) in x[start..]
                .iter_mut()
                .zip(&w.shape_embeddings[s * d..(s + 1) * d])
            {
                *v += r;
            }
        }
    }
    layer_norm(&mut x, &w.embeddings_ln, w.config.layer_norm_eps);
    x
}

fn layer_forward(l: &LayerWeights, x: &[f32], valid: &[bool], heads: usize, eps: f32) -> Vec<f32> {
    let attn = attention(l, x, valid, heads);
    let mut h1: Vec<f32> = x.iter().zip(&attn).map(|(a, b)| a + b).collect();
    layer_norm(&mut h1, &l.attn_ln, eps);
    let mut inner = linear(&h1, &l.ffn_in);
    inner.iter_mut().for_each(|v| *v = gelu(*v));
    let ffn = linear(&inner, &l.ffn_out);
    let mut h2: Vec<f32> = h1.iter().zip(&ffn).map(|(a, b)| a + b).collect();
    layer_norm(&mut h2, &l.ffn_ln, eps);
    h2
}

fn attention(l: &LayerWeights, x: &[f32], valid: &[bool], heads: usize) -> Vec<f32> {
    let d = l.query.d_in;
    let t = valid.len();
    let dh = d / heads;
    let q = linear(x, &l.query);
    let k = linear(x, &l.key);
    let v = linear(x, &l.value);
    let scale = 1.0 / (dh as f32).sqrt();
    let mut context = vec![0.0f32; t * d];
    let mut scores = vec![0.0f32; t];
    for h in 0..heads {
        let cols = h * dh..(h + 1) * dh;
        for i in 0..t {
            let qi = &q[i * d..][cols.clone()];
            for j in 0..t {
                let kj = &k[j * d..][cols.clone()];
                let dot: f32 = qi.iter().zip(kj).map(|(a, b)| a * b).sum();
                let bias = if valid[j] { 0.0 } else { ATTENTION_MASK_VALUE };
                scores[j] = dot * scale + bias;
            }
            softmax(&mut scores);
            let ci = &mut context[i * d..][cols.clone()];
            for j in 0..t {
                let vj = &v[j * d..][cols.clone()];
                for (c, &vv) in ci.iter_mut().zip(vj) {
                    *c += scores[j] * vv;
                }
            }
        }
    }
    linear(&context, &l.attn_output)
}

/// `y = x W + b` for each row of `x` (`[rows, d_in]` → `[rows, d_out]`).
pub fn linear(x: &[f32], l: &Linear) -> Vec<f32> {
    let mut y = Vec::with_capacity(x.len() / l.d_in * l.d_out);
    for row in x.chunks(l.d_in) {
        let mut acc = l.bias.clone();
        for (i, &xi) in row.iter().enumerate() {
            let w_row = &l.weight[i * l.d_out..(i + 1) * l.d_out];
            for (a, &wv) in acc.iter_mut().zip(w_row) {
                *a += xi * wv;
            }
        }
        y.extend_from_slice(&acc);
    }
    y
}

/// In-place layer normalisation of each `D`-wide row: biased variance, `eps` inside the root.
pub fn layer_norm(x: &mut [f32], ln: &LayerNorm, eps: f32) {
    let d = ln.gamma.len();
    for row in x.chunks_mut(d) {
        let mean = row.iter().sum::<f32>() / d as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for (k, v) in row.iter_mut().enumerate() {
            *v = (*v - mean) * inv * ln.gamma[k] + ln.beta[k];
        }
    }
}

/// In-place numerically stable softmax.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    x.iter_mut().for_each(|v| *v /= sum);
}

/// Exact GELU, `x · Φ(x) = ½ x (1 + erf(x / √2))`, evaluated in f64.
pub fn gelu(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + erf(x * std::f64::consts::FRAC_1_SQRT_2))) as f32
}

/// Error function, absolute error below 1e-13 (Maclaurin series for |x| < 2.5, continued
/// fraction for erfc above).
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let r = if a < 2.5 {
        let x2 = a * a;
        let mut term = a;
        let mut sum = a;
        for n in 1..=60u32 {
            term *= -x2 / n as f64;
            let contribution = term / (2 * n + 1) as f64;
            sum += contribution;
            if contribution.abs() <= 1e-17 * sum.abs() {
                break;
            }
        }
        sum * std::f64::consts::FRAC_2_SQRT_PI
    } else if a < 6.5 {
        let mut f = a;
        for k in (1..=80).rev() {
            f = a + (k as f64 / 2.0) / f;
        }
        1.0 - (-a * a).exp() * 0.5 * std::f64::consts::FRAC_2_SQRT_PI / f
    } else {
        1.0
    };
    r.copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{random_init, EncoderConfig};

    #[test]
    fn erf_known_values() {
        for (x, want) in [
            (0.0, 0.0),
            (0.1, 0.1124629160182849),
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (2.0, 0.9953222650189527),
            (2.4999, 0.9995928300996666),
            (2.5, 0.999593047982555),
            (3.0, 0.9999779095030014),
            (4.0, 0.9999999845827421),
            (-1.5, -0.9661051464753108),
        ] {
            assert!(
                (erf(x) - want).abs() < 1e-13,
                "erf({x}) = {} want {want}",
                erf(x)
            );
        }
        assert_eq!(erf(10.0), 1.0);
        assert_eq!(erf(-10.0), -1.0);
    }

    #[test]
    fn padding_does_not_change_results() {
        let c = EncoderConfig {
            vocab_size: 23,
            hidden: 8,
            layers: 2,
            heads: 2,
            intermediate: 12,
            max_positions: 9,
            type_dim: 4,
            layer_norm_eps: 1e-12,
            shape_classes: 0,
        };
        let w = random_init(&c, 5);
        let short = vec![3, 1, 4];
        let long = vec![1, 5, 9, 2, 6, 5, 3];
        let alone = reference_forward(&w, std::slice::from_ref(&short));
        let batch = reference_forward(&w, &[short.clone(), long, vec![]]);
        assert_eq!(batch.hidden[0].len(), 3 * 8);
        assert_eq!(batch.types[1].len(), 7 * 4);
        assert!(batch.boundary[2].is_empty());
        let diff = alone.hidden[0]
            .iter()
            .zip(&batch.hidden[0])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-6, "{diff}");
    }
}
