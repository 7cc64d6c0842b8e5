//! Whole-model forward and backward over a [`PieceBatch`]: embeddings, the post-LN layers and
//! both token heads, with every activation the backward needs kept on a reusable [`Tape`].

use crate::model::{EncoderConfig, ModelWeights};

use super::attention::{attention_backward, attention_forward, probs_len};
use super::batch::PieceBatch;
use super::embeddings::{embeddings_backward, embeddings_forward};
use super::gelu::{gelu_backward, gelu_forward, gelu_recompute};
use super::layernorm::{layernorm_backward, layernorm_forward};
use super::linear::{linear_backward, linear_backward_input, linear_forward, GradMode};
use super::prefix::{prefix_attention_backward, prefix_attention_forward, Prefixes};
use super::residual::{residual_backward, residual_forward};
use super::scalar::Real;

/// Weight and bias of a linear layer, as slices (`S = &[T]`) or mutable slices (`&mut [T]`).
pub(crate) struct LinearParams<S> {
    pub w: S,
    pub b: S,
}

/// Layer-norm scale and shift.
pub(crate) struct NormParams<S> {
    pub gamma: S,
    pub beta: S,
}

pub(crate) struct LayerParams<S> {
    pub query: LinearParams<S>,
    pub key: LinearParams<S>,
    pub value: LinearParams<S>,
    pub attn_output: LinearParams<S>,
    pub attn_ln: NormParams<S>,
    pub ffn_in: LinearParams<S>,
    pub ffn_out: LinearParams<S>,
    pub ffn_ln: NormParams<S>,
}

/// Every parameter tensor of the model, borrowed; the layout of [`ModelWeights`] without owning
/// it, so that the same code runs on `f32` weights and gradients and on `f64` copies in tests.
pub(crate) struct Params<S> {
    pub word: S,
    pub position: S,
    pub token_type: S,
    pub embeddings_ln: NormParams<S>,
    pub layers: Vec<LayerParams<S>>,
    pub boundary: LinearParams<S>,
    pub types: LinearParams<S>,
    /// The word-shape table, when the model has one.
    pub shape: Option<S>,
}

impl<S> Params<S> {
    /// Takes the tensors in the order of [`ModelWeights::tensors`]. Panics if there are not
    /// `5 + 16 · layers + 4` of them, or one more (the shape table).
    pub fn from_tensors(layers: usize, tensors: impl IntoIterator<Item = S>) -> Params<S> {
        let mut it = tensors.into_iter();
        let mut next = || it.next().expect("fewer tensors than the model has");
        let word = next();
        let position = next();
        let token_type = next();
        let embeddings_ln = NormParams {
            gamma: next(),
            beta: next(),
        };
        let mut linear = || LinearParams {
            w: next(),
            b: next(),
        };
        let mut stack = Vec::with_capacity(layers);
        for _ in 0..layers {
            let query = linear();
            let key = linear();
            let value = linear();
            let attn_output = linear();
            let attn_ln = {
                let LinearParams { w, b } = linear();
                NormParams { gamma: w, beta: b }
            };
            let ffn_in = linear();
            let ffn_out = linear();
            let LinearParams { w, b } = linear();
            stack.push(LayerParams {
                query,
                key,
                value,
                attn_output,
                attn_ln,
                ffn_in,
                ffn_out,
                ffn_ln: NormParams { gamma: w, beta: b },
            });
        }
        let boundary = linear();
        let types = linear();
        let shape = it.next();
        assert!(it.next().is_none(), "more tensors than the model has");
        Params {
            word,
            position,
            token_type,
            embeddings_ln,
            layers: stack,
            boundary,
            types,
            shape,
        }
    }
}

impl<'a> Params<&'a [f32]> {
    pub fn of(w: &'a ModelWeights) -> Params<&'a [f32]> {
        Params::from_tensors(w.layers.len(), w.tensors().into_iter().map(|(_, t)| t))
    }
}

impl<'a> Params<&'a mut [f32]> {
    pub fn of_mut(w: &'a mut ModelWeights) -> Params<&'a mut [f32]> {
        let layers = w.layers.len();
        Params::from_tensors(layers, w.tensors_mut().into_iter().map(|(_, t)| t))
    }
}

/// Activations of one layer kept for its backward.
#[derive(Clone, Debug, Default)]
struct LayerTape<T> {
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
    probs: Vec<T>,
    ctx: Vec<T>,
    h1_pre: Vec<T>,
    ln1_mean: Vec<T>,
    ln1_rstd: Vec<T>,
    h1: Vec<T>,
    ffn_pre: Vec<T>,
    ffn_cdf: Vec<T>,
    h2_pre: Vec<T>,
    ln2_mean: Vec<T>,
    ln2_rstd: Vec<T>,
    /// `[heads, N, P]`, the prefix softmax (forward passes with prefixes only).
    prefix_probs: Vec<T>,
    /// `[N, D]`, the ungated prefix term.
    prefix_branch: Vec<T>,
}

/// Activations of one [`forward`] pass, kept for [`backward`], plus its outputs.
///
/// Buffers are resized, never shrunk below their capacity, so reusing one tape across batches
/// allocates only when a batch is larger than any before. For `N` pieces it holds about
/// `N · (layers · (8·D + 2·intermediate) + 2·D + intermediate + type_dim)` values plus the
/// attention probabilities (`layers · heads · Σ T²`): about 100 MB for MiniLM-L6 at N = 600.
#[derive(Clone, Debug, Default)]
pub struct Tape<T = f32> {
    tokens: usize,
    emb_sum: Vec<T>,
    emb_mean: Vec<T>,
    emb_rstd: Vec<T>,
    /// `layers + 1` blocks of `[N, D]`: the embedding output, then each layer's output.
    resid: Vec<T>,
    layers: Vec<LayerTape<T>>,
    ffn_act: Vec<T>,
    boundary: Vec<T>,
    types: Vec<T>,
}

fn fit<T: Real>(buf: &mut Vec<T>, len: usize) {
    buf.resize(len, T::ZERO);
}

impl<T: Real> Tape<T> {
    /// An empty tape; buffers grow on the first [`forward`].
    pub fn new() -> Tape<T> {
        Tape {
            tokens: 0,
            emb_sum: Vec::new(),
            emb_mean: Vec::new(),
            emb_rstd: Vec::new(),
            resid: Vec::new(),
            layers: Vec::new(),
            ffn_act: Vec::new(),
            boundary: Vec::new(),
            types: Vec::new(),
        }
    }

    /// Number of pieces `N` of the last forward pass.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// Final hidden states `[N, D]` of the last forward pass.
    pub fn hidden(&self) -> &[T] {
        let nd = self.emb_sum.len();
        &self.resid[self.resid.len() - nd..]
    }

    /// Boundary logits (`O`, `B`, `I`) `[N, 3]` of the last forward pass.
    pub fn boundary(&self) -> &[T] {
        &self.boundary
    }

    /// Type projections `[N, type_dim]` of the last forward pass.
    pub fn types(&self) -> &[T] {
        &self.types
    }

    /// Layer `l`'s key and value projections `[N, D]` of the last forward pass.
    pub fn layer_keys_values(&self, l: usize) -> (&[T], &[T]) {
        (&self.layers[l].k, &self.layers[l].v)
    }

    fn fit(&mut self, c: &EncoderConfig, batch: &PieceBatch) {
        let n = batch.tokens();
        let nd = n * c.hidden;
        let ni = n * c.intermediate;
        let probs = probs_len(batch.offsets(), c.heads);
        self.tokens = n;
        fit(&mut self.emb_sum, nd);
        fit(&mut self.emb_mean, n);
        fit(&mut self.emb_rstd, n);
        fit(&mut self.resid, (c.layers + 1) * nd);
        self.layers.resize_with(c.layers, LayerTape::default);
        for l in &mut self.layers {
            for buf in [
                &mut l.q,
                &mut l.k,
                &mut l.v,
                &mut l.ctx,
                &mut l.h1_pre,
                &mut l.h1,
            ] {
                fit(buf, nd);
            }
            fit(&mut l.h2_pre, nd);
            fit(&mut l.probs, probs);
            for buf in [
                &mut l.ln1_mean,
                &mut l.ln1_rstd,
                &mut l.ln2_mean,
                &mut l.ln2_rstd,
            ] {
                fit(buf, n);
            }
            fit(&mut l.ffn_pre, ni);
            fit(&mut l.ffn_cdf, ni);
        }
        fit(&mut self.ffn_act, ni);
        fit(&mut self.boundary, n * crate::model::BOUNDARY_LABELS);
        fit(&mut self.types, n * c.type_dim);
    }
}

/// Work buffers of [`backward`], reusable across calls like a [`Tape`].
#[derive(Clone, Debug, Default)]
pub struct BackwardScratch<T = f32> {
    d_x: Vec<T>,
    d_pre: Vec<T>,
    d_h1: Vec<T>,
    d_ctx: Vec<T>,
    dq: Vec<T>,
    dk: Vec<T>,
    dv: Vec<T>,
    act: Vec<T>,
    d_act: Vec<T>,
    d_probs: Vec<T>,
}

impl<T: Real> BackwardScratch<T> {
    /// Empty buffers; they grow on the first [`backward`].
    pub fn new() -> BackwardScratch<T> {
        BackwardScratch {
            d_x: Vec::new(),
            d_pre: Vec::new(),
            d_h1: Vec::new(),
            d_ctx: Vec::new(),
            dq: Vec::new(),
            dk: Vec::new(),
            dv: Vec::new(),
            act: Vec::new(),
            d_act: Vec::new(),
            d_probs: Vec::new(),
        }
    }

    fn fit(&mut self, c: &EncoderConfig, n: usize) {
        let nd = n * c.hidden;
        for buf in [
            &mut self.d_x,
            &mut self.d_pre,
            &mut self.d_h1,
            &mut self.d_ctx,
            &mut self.dq,
            &mut self.dk,
            &mut self.dv,
        ] {
            fit(buf, nd);
        }
        fit(&mut self.act, n * c.intermediate);
        fit(&mut self.d_act, n * c.intermediate);
    }
}

/// Runs the encoder and both heads on `batch`, leaving outputs and activations on `tape`:
/// [`Tape::hidden`] `[N, D]`, [`Tape::boundary`] `[N, 3]`, [`Tape::types`] `[N, type_dim]`, rows
/// in the batch's piece order. Each sentence attends only to itself, so its rows equal
/// [`crate::model::reference_forward`] on that sentence alone (to f32 rounding; GELU uses
/// [`super::scalar::erf_f32`]).
///
/// Single-threaded. Panics if `w` is inconsistent (see [`ModelWeights::check`]; checked in
/// debug builds, a length mismatch panics anyway) or if `batch` was validated against a config
/// with a larger vocabulary or `max_positions` than `w.config`.
pub fn forward(w: &ModelWeights, batch: &PieceBatch, tape: &mut Tape) {
    debug_assert!(w.check().is_ok(), "forward: inconsistent weights");
    forward_params(&Params::of(w), &w.config, batch, None, tape);
}

/// [`forward`] with prompt-guided attention ([`super::prefix`]): every layer's context also
/// gets its prefix term. Panics, besides as [`forward`], if `prefixes` does not cover every
/// layer of `w` at its width and head count.
pub fn forward_with_prefixes(
    w: &ModelWeights,
    batch: &PieceBatch,
    prefixes: &Prefixes,
    tape: &mut Tape,
) {
    check_prefixes(&w.config, prefixes);
    forward_params(&Params::of(w), &w.config, batch, Some(prefixes), tape);
}

fn check_prefixes<T: Real>(c: &EncoderConfig, prefixes: &Prefixes<T>) {
    let pd = c.layers * prefixes.len * c.hidden;
    assert!(
        prefixes.len > 0
            && prefixes.key.len() == pd
            && prefixes.value.len() == pd
            && prefixes.gate.len() == c.layers * c.heads,
        "prefixes do not fit the model config"
    );
}

/// Backward of the last [`forward_with_prefixes`] on `tape` (same `w`, `batch`, `prefixes`)
/// with the encoder frozen: adds `∂L/∂θ` into `prefix_grads` (same shape as `prefixes`) and
/// into the two heads of `grads` (`+=`). No encoder weight gradient is computed: the linear
/// weights, biases and embeddings of `grads` are left alone, and its layer-norm tensors receive
/// the layer norms' parameter gradients as a by-product (meaningless to the caller). Panics as
/// [`backward`] does, and if the prefix shapes differ.
#[allow(clippy::too_many_arguments)]
pub fn backward_into_prefixes(
    w: &ModelWeights,
    batch: &PieceBatch,
    tape: &Tape,
    prefixes: &Prefixes,
    d_boundary: &[f32],
    d_types: &[f32],
    grads: &mut ModelWeights,
    prefix_grads: &mut Prefixes,
    scratch: &mut BackwardScratch,
) {
    assert_eq!(
        grads.config, w.config,
        "backward: gradients and weights have different configs"
    );
    check_prefixes(&w.config, prefixes);
    check_prefixes(&w.config, prefix_grads);
    assert_eq!(
        prefixes.len, prefix_grads.len,
        "backward: prefix lengths differ"
    );
    backward_params(
        &Params::of(w),
        &w.config,
        batch,
        tape,
        d_boundary,
        d_types,
        &mut Params::of_mut(grads),
        scratch,
        Some((prefixes, prefix_grads)),
    );
}

/// Backward of the last [`forward`] on `tape` (same `w` and `batch`), given the loss gradients
/// `d_boundary = ∂L/∂boundary` `[N, 3]` and `d_types = ∂L/∂types` `[N, type_dim]`: adds
/// `∂L/∂θ` for every parameter θ into the same-shaped tensor of `grads` (`+=`, so gradients of
/// several batches accumulate; zero `grads` first to start afresh). Word and position
/// embedding gradients are scatter-added into the rows the batch used; the token-type row gets
/// the sum over all pieces.
///
/// Single-threaded. Panics if `grads` has another config than `w`, if `tape` does not hold a
/// forward of `batch`, or if the gradient lengths are not `N · 3` and `N · type_dim`.
pub fn backward(
    w: &ModelWeights,
    batch: &PieceBatch,
    tape: &Tape,
    d_boundary: &[f32],
    d_types: &[f32],
    grads: &mut ModelWeights,
    scratch: &mut BackwardScratch,
) {
    assert_eq!(
        grads.config, w.config,
        "backward: gradients and weights have different configs"
    );
    debug_assert!(grads.check().is_ok(), "backward: inconsistent gradients");
    backward_params(
        &Params::of(w),
        &w.config,
        batch,
        tape,
        d_boundary,
        d_types,
        &mut Params::of_mut(grads),
        scratch,
        None,
    );
}

pub(crate) fn forward_params<T: Real>(
    p: &Params<&[T]>,
    c: &EncoderConfig,
    batch: &PieceBatch,
    prefixes: Option<&Prefixes<T>>,
    tape: &mut Tape<T>,
) {
    assert!(
        batch.fits(c),
        "forward: batch has ids or lengths out of range for the model config"
    );
    tape.fit(c, batch);
    let n = batch.tokens();
    let nd = n * c.hidden;
    let offsets = batch.offsets();
    let eps = T::from_f32(c.layer_norm_eps);
    let Tape {
        emb_sum,
        emb_mean,
        emb_rstd,
        resid,
        layers,
        ffn_act,
        boundary,
        types,
        ..
    } = tape;
    embeddings_forward(
        p.word,
        p.position,
        p.token_type,
        p.shape.map(|table| (table, batch.shapes())),
        batch.ids(),
        offsets,
        emb_sum,
    );
    let ln = &p.embeddings_ln;
    layernorm_forward(
        emb_sum,
        ln.gamma,
        ln.beta,
        eps,
        &mut resid[..nd],
        emb_mean,
        emb_rstd,
    );
    for (l, (lp, t)) in p.layers.iter().zip(layers.iter_mut()).enumerate() {
        let (before, after) = resid.split_at_mut((l + 1) * nd);
        let x = &before[l * nd..];
        let out = &mut after[..nd];
        linear_forward(x, lp.query.w, lp.query.b, &mut t.q);
        linear_forward(x, lp.key.w, lp.key.b, &mut t.k);
        linear_forward(x, lp.value.w, lp.value.b, &mut t.v);
        attention_forward(&t.q, &t.k, &t.v, offsets, c.heads, &mut t.probs, &mut t.ctx);
        if let Some(pf) = prefixes {
            prefix_attention_forward(
                &t.q,
                pf.layer(l, c.hidden, c.heads),
                c.heads,
                &mut t.prefix_probs,
                &mut t.prefix_branch,
                &mut t.ctx,
            );
        }
        linear_forward(&t.ctx, lp.attn_output.w, lp.attn_output.b, &mut t.h1_pre);
        residual_forward(&mut t.h1_pre, x);
        let ln = &lp.attn_ln;
        layernorm_forward(
            &t.h1_pre,
            ln.gamma,
            ln.beta,
            eps,
            &mut t.h1,
            &mut t.ln1_mean,
            &mut t.ln1_rstd,
        );
        linear_forward(&t.h1, lp.ffn_in.w, lp.ffn_in.b, &mut t.ffn_pre);
        gelu_forward(&t.ffn_pre, ffn_act, &mut t.ffn_cdf);
        linear_forward(ffn_act, lp.ffn_out.w, lp.ffn_out.b, &mut t.h2_pre);
        residual_forward(&mut t.h2_pre, &t.h1);
        let ln = &lp.ffn_ln;
        layernorm_forward(
            &t.h2_pre,
            ln.gamma,
            ln.beta,
            eps,
            out,
            &mut t.ln2_mean,
            &mut t.ln2_rstd,
        );
    }
    let hidden = &resid[c.layers * nd..];
    linear_forward(hidden, p.boundary.w, p.boundary.b, boundary);
    linear_forward(hidden, p.types.w, p.types.b, types);
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_params<T: Real>(
    p: &Params<&[T]>,
    c: &EncoderConfig,
    batch: &PieceBatch,
    tape: &Tape<T>,
    d_boundary: &[T],
    d_types: &[T],
    g: &mut Params<&mut [T]>,
    s: &mut BackwardScratch<T>,
    mut prefixes: Option<(&Prefixes<T>, &mut Prefixes<T>)>,
) {
    let frozen = prefixes.is_some();
    let n = batch.tokens();
    let nd = n * c.hidden;
    assert!(
        tape.tokens == n
            && tape.layers.len() == c.layers
            && tape.resid.len() == (c.layers + 1) * nd,
        "backward: tape does not hold a forward pass of this batch"
    );
    assert_eq!(
        d_boundary.len(),
        n * crate::model::BOUNDARY_LABELS,
        "backward: d_boundary length"
    );
    assert_eq!(d_types.len(), n * c.type_dim, "backward: d_types length");
    s.fit(c, n);
    let offsets = batch.offsets();
    let hidden = tape.hidden();
    linear_backward(
        hidden,
        p.boundary.w,
        d_boundary,
        &mut s.d_x,
        GradMode::Assign,
        g.boundary.w,
        g.boundary.b,
    );
    linear_backward(
        hidden,
        p.types.w,
        d_types,
        &mut s.d_x,
        GradMode::Accumulate,
        g.types.w,
        g.types.b,
    );
    for l in (0..c.layers).rev() {
        let (lp, gl, t) = (&p.layers[l], &mut g.layers[l], &tape.layers[l]);
        let x = &tape.resid[l * nd..(l + 1) * nd];
        layernorm_backward(
            &t.h2_pre,
            &t.ln2_mean,
            &t.ln2_rstd,
            lp.ffn_ln.gamma,
            &s.d_x,
            &mut s.d_pre,
            gl.ffn_ln.gamma,
            gl.ffn_ln.beta,
        );
        residual_backward(&s.d_pre, &mut s.d_h1);
        gelu_recompute(&t.ffn_pre, &t.ffn_cdf, &mut s.act);
        layer_linear_backward(
            frozen,
            &s.act,
            lp.ffn_out.w,
            &s.d_pre,
            &mut s.d_act,
            GradMode::Assign,
            gl.ffn_out.w,
            gl.ffn_out.b,
        );
        gelu_backward(&t.ffn_pre, &t.ffn_cdf, &mut s.d_act);
        layer_linear_backward(
            frozen,
            &t.h1,
            lp.ffn_in.w,
            &s.d_act,
            &mut s.d_h1,
            GradMode::Accumulate,
            gl.ffn_in.w,
            gl.ffn_in.b,
        );
        layernorm_backward(
            &t.h1_pre,
            &t.ln1_mean,
            &t.ln1_rstd,
            lp.attn_ln.gamma,
            &s.d_h1,
            &mut s.d_pre,
            gl.attn_ln.gamma,
            gl.attn_ln.beta,
        );
        residual_backward(&s.d_pre, &mut s.d_x);
        layer_linear_backward(
            frozen,
            &t.ctx,
            lp.attn_output.w,
            &s.d_pre,
            &mut s.d_ctx,
            GradMode::Assign,
            gl.attn_output.w,
            gl.attn_output.b,
        );
        attention_backward(
            &t.q,
            &t.k,
            &t.v,
            &t.probs,
            &s.d_ctx,
            offsets,
            c.heads,
            &mut s.dq,
            &mut s.dk,
            &mut s.dv,
            &mut s.d_probs,
        );
        if let Some((pf, pg)) = prefixes.as_mut() {
            prefix_attention_backward(
                &t.q,
                pf.layer(l, c.hidden, c.heads),
                c.heads,
                &t.prefix_probs,
                &t.prefix_branch,
                &s.d_ctx,
                &mut s.dq,
                pg.layer_mut(l, c.hidden, c.heads),
                &mut s.d_probs,
            );
        }
        layer_linear_backward(
            frozen,
            x,
            lp.query.w,
            &s.dq,
            &mut s.d_x,
            GradMode::Accumulate,
            gl.query.w,
            gl.query.b,
        );
        layer_linear_backward(
            frozen,
            x,
            lp.key.w,
            &s.dk,
            &mut s.d_x,
            GradMode::Accumulate,
            gl.key.w,
            gl.key.b,
        );
        layer_linear_backward(
            frozen,
            x,
            lp.value.w,
            &s.dv,
            &mut s.d_x,
            GradMode::Accumulate,
            gl.value.w,
            gl.value.b,
        );
    }
    if frozen {
        return;
    }
    let ln = &p.embeddings_ln;
    layernorm_backward(
        &tape.emb_sum,
        &tape.emb_mean,
        &tape.emb_rstd,
        ln.gamma,
        &s.d_x,
        &mut s.d_pre,
        g.embeddings_ln.gamma,
        g.embeddings_ln.beta,
    );
    embeddings_backward(
        batch.ids(),
        offsets,
        &s.d_pre,
        g.word,
        g.position,
        g.token_type,
        g.shape.as_deref_mut().map(|table| (table, batch.shapes())),
    );
}

/// [`linear_backward`], or only its input gradient when the encoder is `frozen`.
#[allow(clippy::too_many_arguments)]
fn layer_linear_backward<T: Real>(
    frozen: bool,
    x: &[T],
    w: &[T],
    dy: &[T],
    dx: &mut [T],
    dx_mode: GradMode,
    dw: &mut [T],
    db: &mut [T],
) {
    if frozen {
        linear_backward_input(w, dy, dx, dx_mode, db.len());
    } else {
        linear_backward(x, w, dy, dx, dx_mode, dw, db);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{
        assert_grad_close, numeric_grad, random_vec, weighted_sum, FD_STEP,
    };
    use super::*;
    use crate::model::{random_init, reference_forward_shaped};

    fn config(hidden: usize, heads: usize, intermediate: usize, layers: usize) -> EncoderConfig {
        EncoderConfig {
            vocab_size: 13,
            hidden,
            layers,
            heads,
            intermediate,
            max_positions: 9,
            type_dim: 5,
            layer_norm_eps: 1e-12,
            shape_classes: 0,
        }
    }

    /// Random weights where biases and layer norms are not at their trivial initial values.
    fn weights(c: &EncoderConfig, seed: u64) -> ModelWeights {
        let mut w = random_init(c, seed);
        for (i, (name, t)) in w.tensors_mut().into_iter().enumerate() {
            let noise = random_vec(t.len(), 0.4, seed * 1000 + i as u64);
            let base = if name.ends_with(".gamma") { 1.0 } else { 0.0 };
            for (v, e) in t.iter_mut().zip(noise) {
                *v = base + e as f32;
            }
        }
        w
    }

    fn sentences() -> Vec<Vec<u32>> {
        vec![
            vec![7],
            vec![3, 12],
            vec![1, 5, 3, 3, 0],
            vec![11, 2, 9, 4, 6, 8, 3],
        ]
    }

    /// A word-shape id for every piece of [`sentences`], with every class below 3 used.
    fn shapes() -> Vec<Vec<u8>> {
        sentences()
            .iter()
            .enumerate()
            .map(|(s, ids)| (0..ids.len()).map(|i| ((s + 2 * i) % 3) as u8).collect())
            .collect()
    }

    /// `c` with a word-shape table of 3 rows.
    fn shaped(c: EncoderConfig) -> EncoderConfig {
        EncoderConfig {
            shape_classes: 3,
            ..c
        }
    }

    /// The batch of [`sentences`], with [`shapes`] when `c` has a shape table.
    fn batch_for(c: &EncoderConfig) -> PieceBatch {
        let mut b = PieceBatch::default();
        for (ids, sh) in sentences().iter().zip(shapes()) {
            b.push_shaped(c, ids, Some(&sh)).unwrap();
        }
        b
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn forward_matches_reference() {
        for c in [
            config(6, 2, 10, 2),
            config(12, 3, 20, 3),
            config(8, 1, 7, 1),
            shaped(config(6, 2, 10, 2)),
        ] {
            let w = weights(&c, 3);
            let batch = batch_for(&c);
            let mut tape = Tape::new();
            forward(&w, &batch, &mut tape);
            let want = reference_forward_shaped(&w, &sentences(), &shapes());
            let cat = |v: &Vec<Vec<f32>>| v.concat();
            let dh = max_diff(tape.hidden(), &cat(&want.hidden));
            let db = max_diff(tape.boundary(), &cat(&want.boundary));
            let dt = max_diff(tape.types(), &cat(&want.types));
            assert!(
                dh <= 1e-5 && db <= 1e-5 && dt <= 1e-5,
                "{c:?}: {dh} {db} {dt}"
            );
        }
    }

    #[test]
    fn tape_reuse_gives_fresh_results() {
        let c = config(6, 2, 10, 2);
        let w = weights(&c, 4);
        let big = PieceBatch::new(&c, &sentences()).unwrap();
        let small = PieceBatch::new(&c, &[vec![4, 4, 1], vec![], vec![2]]).unwrap();
        let mut reused = Tape::new();
        let mut scratch = BackwardScratch::new();
        let mut g_reused = ModelWeights::zeros(&c);
        for (first, second) in [(&big, &small), (&small, &big)] {
            forward(&w, first, &mut reused);
            let db = vec![0.3; first.tokens() * 3];
            let dt = vec![-0.2; first.tokens() * c.type_dim];
            backward(&w, first, &reused, &db, &dt, &mut g_reused, &mut scratch);
            forward(&w, second, &mut reused);
            let mut fresh = Tape::new();
            forward(&w, second, &mut fresh);
            assert_eq!(reused.tokens(), second.tokens());
            assert_eq!(reused.hidden(), fresh.hidden());
            assert_eq!(reused.boundary(), fresh.boundary());
            assert_eq!(reused.types(), fresh.types());
            let db = random_vec(second.tokens() * 3, 1.0, 5);
            let dt = random_vec(second.tokens() * c.type_dim, 1.0, 6);
            let db: Vec<f32> = db.iter().map(|&v| v as f32).collect();
            let dt: Vec<f32> = dt.iter().map(|&v| v as f32).collect();
            g_reused = ModelWeights::zeros(&c);
            backward(&w, second, &reused, &db, &dt, &mut g_reused, &mut scratch);
            let mut g_fresh = ModelWeights::zeros(&c);
            let mut fresh_scratch = BackwardScratch::new();
            backward(
                &w,
                second,
                &fresh,
                &db,
                &dt,
                &mut g_fresh,
                &mut fresh_scratch,
            );
            assert_eq!(g_reused, g_fresh);
        }
    }

    #[test]
    fn empty_batch_is_a_no_op() {
        let c = config(6, 2, 10, 2);
        let w = weights(&c, 5);
        let batch = PieceBatch::new(&c, &[Vec::<u32>::new()]).unwrap();
        let mut tape = Tape::new();
        forward(&w, &batch, &mut tape);
        assert!(tape.hidden().is_empty() && tape.boundary().is_empty() && tape.types().is_empty());
        let mut g = ModelWeights::zeros(&c);
        backward(
            &w,
            &batch,
            &tape,
            &[],
            &[],
            &mut g,
            &mut BackwardScratch::new(),
        );
        assert_eq!(g, ModelWeights::zeros(&c));
    }

    fn to_f64(w: &ModelWeights) -> Vec<Vec<f64>> {
        w.tensors()
            .iter()
            .map(|(_, t)| t.iter().map(|&v| v as f64).collect())
            .collect()
    }

    fn loss_f64(
        c: &EncoderConfig,
        tensors: &[Vec<f64>],
        batch: &PieceBatch,
        r_b: &[f64],
        r_t: &[f64],
        tape: &mut Tape<f64>,
    ) -> f64 {
        let p = Params::from_tensors(c.layers, tensors.iter().map(Vec::as_slice));
        forward_params(&p, c, batch, None, tape);
        weighted_sum(tape.boundary(), r_b) + weighted_sum(tape.types(), r_t)
    }

    /// Central differences of `L = Σ r_b ⊙ boundary + Σ r_t ⊙ types` (f64) against the analytic
    /// gradient of every entry of every tensor, with the tolerance of
    /// [`super::super::testutil::FD_TOL`].
    #[test]
    fn whole_model_gradients_match_finite_differences() {
        for (c, seed) in [
            (config(6, 2, 10, 2), 7),
            (config(9, 3, 5, 1), 8),
            (shaped(config(6, 2, 10, 1)), 9),
        ] {
            let w = weights(&c, seed);
            let batch = batch_for(&c);
            let n = batch.tokens();
            let r_b = random_vec(n * 3, 1.0, 11);
            let r_t = random_vec(n * c.type_dim, 1.0, 12);
            let mut tensors = to_f64(&w);
            let mut tape = Tape::<f64>::new();
            loss_f64(&c, &tensors, &batch, &r_b, &r_t, &mut tape);
            let mut grads: Vec<Vec<f64>> = tensors.iter().map(|t| vec![0.0; t.len()]).collect();
            {
                let p = Params::from_tensors(c.layers, tensors.iter().map(Vec::as_slice));
                let mut g = Params::from_tensors(c.layers, grads.iter_mut().map(Vec::as_mut_slice));
                let mut s = BackwardScratch::new();
                backward_params(&p, &c, &batch, &tape, &r_b, &r_t, &mut g, &mut s, None);
            }
            let names: Vec<String> = w.tensors().into_iter().map(|(n, _)| n).collect();
            for (ti, name) in names.iter().enumerate() {
                let numeric: Vec<f64> = (0..tensors[ti].len())
                    .map(|i| {
                        let orig = tensors[ti][i];
                        tensors[ti][i] = orig + FD_STEP;
                        let up = loss_f64(&c, &tensors, &batch, &r_b, &r_t, &mut tape);
                        tensors[ti][i] = orig - FD_STEP;
                        let down = loss_f64(&c, &tensors, &batch, &r_b, &r_t, &mut tape);
                        tensors[ti][i] = orig;
                        (up - down) / (2.0 * FD_STEP)
                    })
                    .collect();
                assert_grad_close(name, &grads[ti], &numeric);
            }
            assert!(grads.iter().flatten().any(|&g| g.abs() > 1e-2));
        }
    }

    /// The f32 entry points compute the same gradients as the f64 path (relative to each
    /// tensor's largest gradient, 1e-4, plus 1e-6 absolute for tensors whose exact gradient is 0 such
    /// as the key bias: f32 rounding through a few layers), and accumulate.
    #[test]
    fn f32_backward_agrees_with_f64_and_accumulates() {
        let c = config(12, 3, 20, 2);
        let w = weights(&c, 9);
        let batch = PieceBatch::new(&c, &sentences()).unwrap();
        let n = batch.tokens();
        let r_b = random_vec(n * 3, 1.0, 13);
        let r_t = random_vec(n * c.type_dim, 1.0, 14);
        let tensors = to_f64(&w);
        let mut tape64 = Tape::<f64>::new();
        loss_f64(&c, &tensors, &batch, &r_b, &r_t, &mut tape64);
        let mut g64: Vec<Vec<f64>> = tensors.iter().map(|t| vec![0.0; t.len()]).collect();
        {
            let p = Params::from_tensors(c.layers, tensors.iter().map(Vec::as_slice));
            let mut g = Params::from_tensors(c.layers, g64.iter_mut().map(Vec::as_mut_slice));
            backward_params(
                &p,
                &c,
                &batch,
                &tape64,
                &r_b,
                &r_t,
                &mut g,
                &mut BackwardScratch::new(),
                None,
            );
        }
        let mut tape = Tape::new();
        forward(&w, &batch, &mut tape);
        let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        let mut g32 = ModelWeights::zeros(&c);
        let mut scratch = BackwardScratch::new();
        for _ in 0..2 {
            backward(
                &w,
                &batch,
                &tape,
                &f32s(&r_b),
                &f32s(&r_t),
                &mut g32,
                &mut scratch,
            );
        }
        for ((name, a), b) in g32.tensors().into_iter().zip(&g64) {
            let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for (x, y) in a.iter().zip(b) {
                let diff = (*x as f64 - 2.0 * y).abs();
                assert!(
                    diff <= 1e-4 * scale + 1e-6,
                    "{name}: {x} vs 2 × {y} (scale {scale})"
                );
            }
        }
    }

    #[test]
    fn params_follow_tensor_order() {
        let c = config(6, 2, 10, 2);
        let mut w = weights(&c, 10);
        let p = Params::of(&w);
        assert_eq!(p.layers.len(), 2);
        assert!(std::ptr::eq(
            p.layers[1].attn_ln.beta,
            w.layers[1].attn_ln.beta.as_slice()
        ));
        assert!(std::ptr::eq(
            p.layers[0].ffn_out.b,
            w.layers[0].ffn_out.bias.as_slice()
        ));
        assert!(std::ptr::eq(p.types.w, w.types.weight.as_slice()));
        assert!(std::ptr::eq(
            p.token_type,
            w.token_type_embedding.as_slice()
        ));
        let mut q = Params::of_mut(&mut w);
        q.layers[1].value.w[0] = 42.0;
        q.embeddings_ln.beta[1] = -3.0;
        assert_eq!(w.layers[1].value.weight[0], 42.0);
        assert_eq!(w.embeddings_ln.beta[1], -3.0);
    }

    /// MiniLM-L6 forward + backward on 20 sentences × 30 pieces; run with
    /// `cargo test --release -p ner-edge-trainer --lib minilm_timing -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing, run in release"]
    fn minilm_timing() {
        let c = EncoderConfig::minilm_l6();
        let w = random_init(&c, 1);
        let sentences: Vec<Vec<u32>> = (0..20)
            .map(|s| {
                (0..30)
                    .map(|i| ((s * 131 + i * 17) % 30000) as u32)
                    .collect()
            })
            .collect();
        let batch = PieceBatch::new(&c, &sentences).unwrap();
        let n = batch.tokens();
        let db = vec![0.01f32; n * 3];
        let dt = vec![0.01f32; n * c.type_dim];
        let mut tape = Tape::new();
        let mut scratch = BackwardScratch::new();
        let mut grads = ModelWeights::zeros(&c);
        let (mut fwd, mut bwd) = (f64::MAX, f64::MAX);
        for _ in 0..5 {
            let t0 = std::time::Instant::now();
            forward(&w, &batch, &mut tape);
            let t1 = std::time::Instant::now();
            backward(&w, &batch, &tape, &db, &dt, &mut grads, &mut scratch);
            let t2 = std::time::Instant::now();
            fwd = fwd.min((t1 - t0).as_secs_f64());
            bwd = bwd.min((t2 - t1).as_secs_f64());
        }
        println!(
            "MiniLM-L6, {n} pieces: forward {:.1} ms, backward {:.1} ms, total {:.1} ms",
            fwd * 1e3,
            bwd * 1e3,
            (fwd + bwd) * 1e3
        );
    }

    /// Central differences of the same loss with respect to every prefix key, value and gate
    /// and to the two heads, against [`backward_into_prefixes`]'s frozen-encoder backward; and
    /// closed gates give the model without prefixes exactly.
    #[test]
    fn prefix_gradients_match_finite_differences() {
        use super::super::prefix::Prefixes;
        for (c, seed) in [(config(6, 2, 10, 2), 21), (shaped(config(9, 3, 5, 1)), 22)] {
            let w = weights(&c, seed);
            let batch = batch_for(&c);
            let n = batch.tokens();
            let tensors = to_f64(&w);
            let p_len = 3;
            let mut prefixes = Prefixes::<f64>::zeros(c.layers, p_len, c.hidden, c.heads);
            let mut closed_tape = Tape::<f64>::new();
            {
                let p = Params::from_tensors(c.layers, tensors.iter().map(Vec::as_slice));
                let mut open = Tape::<f64>::new();
                forward_params(&p, &c, &batch, None, &mut open);
                prefixes.key = random_vec(prefixes.key.len(), 1.0, seed + 1);
                prefixes.value = random_vec(prefixes.value.len(), 1.0, seed + 2);
                forward_params(&p, &c, &batch, Some(&prefixes), &mut closed_tape);
                assert_eq!(open.boundary(), closed_tape.boundary());
                assert_eq!(open.types(), closed_tape.types());
            }
            prefixes.gate = random_vec(prefixes.gate.len(), 1.0, seed + 3);
            let r_b = random_vec(n * 3, 1.0, 11);
            let r_t = random_vec(n * c.type_dim, 1.0, 12);
            let loss = |tensors: &[Vec<f64>], pf: &Prefixes<f64>| {
                let p = Params::from_tensors(c.layers, tensors.iter().map(Vec::as_slice));
                let mut tape = Tape::<f64>::new();
                forward_params(&p, &c, &batch, Some(pf), &mut tape);
                weighted_sum(tape.boundary(), &r_b) + weighted_sum(tape.types(), &r_t)
            };
            let mut tape = Tape::<f64>::new();
            let mut grads: Vec<Vec<f64>> = tensors.iter().map(|t| vec![0.0; t.len()]).collect();
            let mut pg = Prefixes::<f64>::zeros(c.layers, p_len, c.hidden, c.heads);
            {
                let p = Params::from_tensors(c.layers, tensors.iter().map(Vec::as_slice));
                forward_params(&p, &c, &batch, Some(&prefixes), &mut tape);
                let mut g = Params::from_tensors(c.layers, grads.iter_mut().map(Vec::as_mut_slice));
                let mut s = BackwardScratch::new();
                let pair = Some((&prefixes, &mut pg));
                backward_params(&p, &c, &batch, &tape, &r_b, &r_t, &mut g, &mut s, pair);
            }
            let fd = |which: usize| {
                let base = [&prefixes.key, &prefixes.value, &prefixes.gate][which].clone();
                numeric_grad(&base, |x| {
                    let mut pf = prefixes.clone();
                    *pf.tensors_mut()[which] = x.to_vec();
                    loss(&tensors, &pf)
                })
            };
            assert_grad_close("prefix key", &pg.key, &fd(0));
            assert_grad_close("prefix value", &pg.value, &fd(1));
            assert_grad_close("prefix gate", &pg.gate, &fd(2));
            let names: Vec<String> = w.tensors().into_iter().map(|(n, _)| n).collect();
            for (ti, name) in names.iter().enumerate() {
                if !(name.starts_with("boundary.") || name.starts_with("types.")) {
                    continue;
                }
                let numeric = numeric_grad(&tensors[ti], |x| {
                    let mut t = tensors.clone();
                    t[ti] = x.to_vec();
                    loss(&t, &prefixes)
                });
                assert_grad_close(name, &grads[ti], &numeric);
            }
        }
    }
}
