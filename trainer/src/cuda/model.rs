//! The encoder and both token heads on the GPU: device weights and gradients, a device tape,
//! and [`CudaModel::forward`] / [`CudaModel::backward`] over a whole [`PieceBatch`], computing
//! what [`crate::backprop::forward`] and [`crate::backprop::backward`] compute on the CPU.
//!
//! Weights, gradients (and the optimiser moments of [`super::train`]) each live in one device
//! allocation holding every tensor back to back in the order of [`ModelWeights::tensors`]
//! ([`CudaModel::table`]). Activations are packed `[N, D]` as on the CPU, except the attention's
//! per-head `Q`, `K`, `V` and probabilities, which are kept padded (`[n_sent, heads, tmax, dh]`
//! and `[n_sent, heads, tmax, tmax]`) for strided-batched cuBLAS.

use anyhow::{ensure, Context, Result};

use super::dev::{DevBuf, DevPtr, Gpu};
use crate::backprop::model::Params;
use crate::backprop::{GradMode, PieceBatch};
use crate::model::{EncoderConfig, ModelWeights, BOUNDARY_LABELS};

/// One parameter tensor inside the device allocations: name, first value, length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSlot {
    /// The tensor's name in [`ModelWeights::tensors`].
    pub name: String,
    /// Index of its first value in the allocation (values, not bytes).
    pub offset: usize,
    /// Number of values.
    pub len: usize,
}

#[derive(Default)]
struct Layer {
    q: Option<DevBuf<f32>>,
    k: Option<DevBuf<f32>>,
    v: Option<DevBuf<f32>>,
    probs: Option<DevBuf<f32>>,
    ctx: Option<DevBuf<f32>>,
    h1_pre: Option<DevBuf<f32>>,
    ln1_mean: Option<DevBuf<f32>>,
    ln1_rstd: Option<DevBuf<f32>>,
    h1: Option<DevBuf<f32>>,
    ffn_pre: Option<DevBuf<f32>>,
    ffn_cdf: Option<DevBuf<f32>>,
    h2_pre: Option<DevBuf<f32>>,
    ln2_mean: Option<DevBuf<f32>>,
    ln2_rstd: Option<DevBuf<f32>>,
}

/// Device buffers that grow to the largest batch seen: the tape of the forward pass and the
/// work buffers of the backward.
struct Buffers {
    ids: DevBuf<u32>,
    /// Word-shape id of each piece (only filled when the model has shape classes).
    shapes: DevBuf<u32>,
    pos: DevBuf<i32>,
    offsets: DevBuf<i32>,
    lens: DevBuf<i32>,
    emb_sum: DevBuf<f32>,
    emb_mean: DevBuf<f32>,
    emb_rstd: DevBuf<f32>,
    resid: DevBuf<f32>,
    layers: Vec<Layer>,
    packed: DevBuf<f32>,
    ffn_act: DevBuf<f32>,
    ctx_pad: DevBuf<f32>,
    boundary: DevBuf<f32>,
    types: DevBuf<f32>,
    d_x: DevBuf<f32>,
    d_pre: DevBuf<f32>,
    d_h1: DevBuf<f32>,
    d_ctx: DevBuf<f32>,
    dq: DevBuf<f32>,
    dk: DevBuf<f32>,
    dv: DevBuf<f32>,
    act: DevBuf<f32>,
    d_act: DevBuf<f32>,
    dq_pad: DevBuf<f32>,
    dk_pad: DevBuf<f32>,
    dv_pad: DevBuf<f32>,
    d_probs: DevBuf<f32>,
    ones: DevBuf<f32>,
    ones_filled: usize,
    d_boundary: DevBuf<f32>,
    d_types: DevBuf<f32>,
}

/// Shape of the batch held by the tape.
#[derive(Clone, Copy, Debug, Default)]
struct Shape {
    n: usize,
    n_sent: usize,
    tmax: usize,
}

/// The model on one GPU: weights, accumulated gradients and the activations of the last
/// forward pass.
pub struct CudaModel {
    /// The device, its kernels and cuBLAS handle.
    pub gpu: Gpu,
    config: EncoderConfig,
    table: Vec<TensorSlot>,
    weights: DevBuf<f32>,
    grads: DevBuf<f32>,
    buf: Buffers,
    uploaded: Option<Shape>,
    shape: Option<Shape>,
    grads_ready: bool,
}

fn layer_buf(b: &Option<DevBuf<f32>>) -> DevPtr {
    b.as_ref().expect("layer buffer allocated by fit").ptr()
}

/// Every tensor of `w` back to back, in [`ModelWeights::tensors`] order.
fn flatten(w: &ModelWeights) -> Vec<f32> {
    let tensors = w.tensors();
    let mut flat = Vec::with_capacity(tensors.iter().map(|(_, t)| t.len()).sum());
    for (_, t) in tensors {
        flat.extend_from_slice(t);
    }
    flat
}

fn unflatten(flat: &[f32], w: &mut ModelWeights) {
    let mut at = 0;
    for (_, t) in w.tensors_mut() {
        t.copy_from_slice(&flat[at..at + t.len()]);
        at += t.len();
    }
}

impl CudaModel {
    /// Uploads `w` to the GPU of `gpu`, with zero gradients and an empty tape.
    pub fn new(gpu: Gpu, w: &ModelWeights) -> Result<CudaModel> {
        w.check().context("weights for the GPU")?;
        let mut table = Vec::new();
        let mut offset = 0;
        for (name, t) in w.tensors() {
            table.push(TensorSlot {
                name,
                offset,
                len: t.len(),
            });
            offset += t.len();
        }
        let s = &gpu.stream;
        let weights = DevBuf::from_host(s, &flatten(w))?;
        let grads = DevBuf::zeros(s, offset)?;
        let z = |len: usize| DevBuf::<f32>::zeros(s, len);
        let buf = Buffers {
            ids: DevBuf::zeros(s, 0)?,
            shapes: DevBuf::zeros(s, 0)?,
            pos: DevBuf::zeros(s, 0)?,
            offsets: DevBuf::zeros(s, 1)?,
            lens: DevBuf::zeros(s, 0)?,
            emb_sum: z(0)?,
            emb_mean: z(0)?,
            emb_rstd: z(0)?,
            resid: z(0)?,
            layers: (0..w.config.layers).map(|_| Layer::default()).collect(),
            packed: z(0)?,
            ffn_act: z(0)?,
            ctx_pad: z(0)?,
            boundary: z(0)?,
            types: z(0)?,
            d_x: z(0)?,
            d_pre: z(0)?,
            d_h1: z(0)?,
            d_ctx: z(0)?,
            dq: z(0)?,
            dk: z(0)?,
            dv: z(0)?,
            act: z(0)?,
            d_act: z(0)?,
            dq_pad: z(0)?,
            dk_pad: z(0)?,
            dv_pad: z(0)?,
            d_probs: z(0)?,
            ones: z(0)?,
            ones_filled: 0,
            d_boundary: z(0)?,
            d_types: z(0)?,
        };
        gpu.sync()?;
        Ok(CudaModel {
            gpu,
            config: w.config.clone(),
            table,
            weights,
            grads,
            buf,
            uploaded: None,
            shape: None,
            grads_ready: false,
        })
    }

    /// The model configuration.
    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// Where each parameter tensor lies in [`CudaModel::weights_ptr`] and
    /// [`CudaModel::grads_ptr`] (same layout).
    pub fn table(&self) -> &[TensorSlot] {
        &self.table
    }

    /// Total number of parameters.
    pub fn parameter_count(&self) -> usize {
        self.weights.len()
    }

    /// Address of the weight allocation.
    pub fn weights_ptr(&self) -> DevPtr {
        self.weights.ptr()
    }

    /// Address of the gradient allocation.
    pub fn grads_ptr(&self) -> DevPtr {
        self.grads.ptr()
    }

    /// Replaces the device weights by `w` (same config).
    pub fn upload_weights(&mut self, w: &ModelWeights) -> Result<()> {
        ensure!(
            w.config == self.config,
            "upload_weights: another model config"
        );
        self.weights.upload(&self.gpu.stream, 0, &flatten(w))
    }

    /// Copies the device weights into `w` (same config).
    pub fn download_weights(&self, w: &mut ModelWeights) -> Result<()> {
        ensure!(
            w.config == self.config,
            "download_weights: another model config"
        );
        let mut flat = vec![0.0; self.weights.len()];
        self.weights.download(&self.gpu.stream, 0, &mut flat)?;
        unflatten(&flat, w);
        Ok(())
    }

    /// Copies the accumulated gradients into `g` (same config), overwriting it.
    pub fn download_grads(&self, g: &mut ModelWeights) -> Result<()> {
        ensure!(
            g.config == self.config,
            "download_grads: another model config"
        );
        let mut flat = vec![0.0; self.grads.len()];
        self.grads.download(&self.gpu.stream, 0, &mut flat)?;
        unflatten(&flat, g);
        Ok(())
    }

    /// Copies the accumulated gradients, in [`CudaModel::table`] layout, into `out`
    /// (`parameter_count` values).
    pub fn download_grads_flat(&self, out: &mut [f32]) -> Result<()> {
        ensure!(
            out.len() == self.grads.len(),
            "download_grads_flat: {} values for {} gradients",
            out.len(),
            self.grads.len()
        );
        self.grads.download(&self.gpu.stream, 0, out)
    }

    /// Replaces the accumulated gradients by `values` ([`CudaModel::table`] layout).
    pub fn upload_grads_flat(&mut self, values: &[f32]) -> Result<()> {
        ensure!(
            values.len() == self.grads.len(),
            "upload_grads_flat: {} values for {} gradients",
            values.len(),
            self.grads.len()
        );
        self.grads.upload(&self.gpu.stream, 0, values)?;
        self.gpu.sync()
    }

    /// Sets every accumulated gradient to zero.
    pub fn zero_grads(&mut self) -> Result<()> {
        let len = self.grads.len();
        self.grads.zero(&self.gpu.stream, 0, len)
    }

    fn params(&self, base: DevPtr) -> Params<DevPtr> {
        Params::from_tensors(
            self.config.layers,
            self.table.iter().map(|t| base.f32_at(t.offset)),
        )
    }

    fn fit(&mut self, sh: Shape) -> Result<()> {
        let c = &self.config;
        let s = &self.gpu.stream;
        let (n, d, i) = (sh.n, c.hidden, c.intermediate);
        let nd = n * d;
        let padded = sh.n_sent * sh.tmax * d;
        let probs = sh.n_sent * c.heads * sh.tmax * sh.tmax;
        let b = &mut self.buf;
        b.ids.fit(s, n)?;
        b.shapes.fit(s, n)?;
        b.pos.fit(s, n)?;
        b.offsets.fit(s, sh.n_sent + 1)?;
        b.lens.fit(s, sh.n_sent)?;
        for (buf, len) in [
            (&mut b.emb_sum, nd),
            (&mut b.emb_mean, n),
            (&mut b.emb_rstd, n),
            (&mut b.resid, (c.layers + 1) * nd),
            (&mut b.packed, nd),
            (&mut b.ffn_act, n * i),
            (&mut b.ctx_pad, padded),
            (&mut b.boundary, n * BOUNDARY_LABELS),
            (&mut b.types, n * c.type_dim),
            (&mut b.d_x, nd),
            (&mut b.d_pre, nd),
            (&mut b.d_h1, nd),
            (&mut b.d_ctx, nd),
            (&mut b.dq, nd),
            (&mut b.dk, nd),
            (&mut b.dv, nd),
            (&mut b.act, n * i),
            (&mut b.d_act, n * i),
            (&mut b.dq_pad, padded),
            (&mut b.dk_pad, padded),
            (&mut b.dv_pad, padded),
            (&mut b.d_probs, probs),
            (&mut b.d_boundary, n * BOUNDARY_LABELS),
            (&mut b.d_types, n * c.type_dim),
        ] {
            buf.fit(s, len)?;
        }
        for l in &mut b.layers {
            for (slot, len) in [
                (&mut l.q, padded),
                (&mut l.k, padded),
                (&mut l.v, padded),
                (&mut l.probs, probs),
                (&mut l.ctx, nd),
                (&mut l.h1_pre, nd),
                (&mut l.ln1_mean, n),
                (&mut l.ln1_rstd, n),
                (&mut l.h1, nd),
                (&mut l.ffn_pre, n * i),
                (&mut l.ffn_cdf, n * i),
                (&mut l.h2_pre, nd),
                (&mut l.ln2_mean, n),
                (&mut l.ln2_rstd, n),
            ] {
                match slot {
                    Some(buf) => buf.fit(s, len)?,
                    None => *slot = Some(DevBuf::zeros(s, len)?),
                }
            }
        }
        if b.ones_filled < n {
            b.ones.fit(s, n)?;
            b.ones.upload(s, 0, &vec![1.0f32; n])?;
            b.ones_filled = n;
        } else {
            let keep = b.ones_filled;
            b.ones.fit(s, keep)?;
        }
        Ok(())
    }

    /// Runs the encoder and both heads on `batch`, keeping the activations for
    /// [`CudaModel::backward`]. Outputs: [`CudaModel::outputs`], [`CudaModel::hidden`].
    pub fn forward(&mut self, batch: &PieceBatch) -> Result<()> {
        self.upload_batch(batch)?;
        self.forward_uploaded()
    }

    /// First half of [`CudaModel::forward`]: sizes the buffers for `batch` and copies its ids,
    /// positions and sentence offsets to the device.
    pub fn upload_batch(&mut self, batch: &PieceBatch) -> Result<()> {
        ensure!(
            batch.fits(&self.config),
            "forward: batch has ids or lengths out of range for the model config"
        );
        let offsets = batch.offsets();
        let n = batch.tokens();
        let n_sent = offsets.len() - 1;
        let tmax = offsets.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        ensure!(
            i32::try_from(n).is_ok(),
            "forward: {n} pieces are too many for one batch"
        );
        let sh = Shape { n, n_sent, tmax };
        self.shape = None;
        self.uploaded = None;
        self.grads_ready = false;
        self.fit(sh)?;
        let pos: Vec<i32> = offsets
            .windows(2)
            .flat_map(|w| 0..(w[1] - w[0]) as i32)
            .collect();
        let off32: Vec<i32> = offsets.iter().map(|&o| o as i32).collect();
        let lens: Vec<i32> = offsets.windows(2).map(|w| (w[1] - w[0]) as i32).collect();
        let s = &self.gpu.stream;
        self.buf.ids.upload(s, 0, batch.ids())?;
        if self.config.shape_classes > 0 {
            let shapes: Vec<u32> = if batch.shapes().is_empty() {
                vec![0; n]
            } else {
                batch.shapes().iter().map(|&x| u32::from(x)).collect()
            };
            self.buf.shapes.upload(s, 0, &shapes)?;
        }
        self.buf.pos.upload(s, 0, &pos)?;
        self.buf.offsets.upload(s, 0, &off32)?;
        self.buf.lens.upload(s, 0, &lens)?;
        self.uploaded = Some(sh);
        Ok(())
    }

    /// Second half of [`CudaModel::forward`], on the batch of the last
    /// [`CudaModel::upload_batch`].
    pub fn forward_uploaded(&mut self) -> Result<()> {
        let sh = self.uploaded.context("forward: no batch uploaded")?;
        if sh.n > 0 {
            // SAFETY: every buffer was sized for this batch by `fit` in `upload_batch`; the
            // weight pointers come from the table of the weight allocation.
            unsafe { self.forward_device(sh)? };
        }
        self.shape = Some(sh);
        Ok(())
    }

    /// The device work of [`CudaModel::forward_uploaded`] for a batch of shape `sh`.
    ///
    /// # Safety
    ///
    /// `sh` must be the shape the buffers were last sized for by [`CudaModel::fit`] (the
    /// batch of the last [`CudaModel::upload_batch`]).
    unsafe fn forward_device(&self, sh: Shape) -> Result<()> {
        let c = &self.config;
        let g = &self.gpu;
        let b = &self.buf;
        let p = self.params(self.weights.ptr());
        let Shape { n, n_sent, tmax } = sh;
        let (d, inter, heads) = (c.hidden, c.intermediate, c.heads);
        let dh = d / heads;
        let nd = n * d;
        let batch = n_sent * heads;
        let scale = 1.0f32 / (dh as f32).sqrt();
        let eps = c.layer_norm_eps;
        // SAFETY: by this fn's contract every tape and work buffer was sized by `fit` for `sh`,
        // so each pointer below addresses a live buffer of the shape its call states (`[n, d]`,
        // `[n, inter]`, padded `[n_sent, heads, tmax, dh]` and `[n_sent, heads, tmax, tmax]`);
        // parameter pointers come from `table` over the weight allocation; each GEMM output is
        // a buffer apart from its inputs.
        unsafe {
            g.embedding_forward(
                p.word,
                p.position,
                p.token_type,
                b.ids.ptr(),
                b.pos.ptr(),
                n,
                d,
                c.vocab_size,
                c.max_positions,
                b.emb_sum.ptr(),
            )?;
            if let Some(shape) = p.shape {
                g.shape_embedding_add(
                    shape,
                    b.shapes.ptr(),
                    n,
                    d,
                    c.shape_classes,
                    b.emb_sum.ptr(),
                )?;
            }
            g.layernorm_forward(
                b.emb_sum.ptr(),
                p.embeddings_ln.gamma,
                p.embeddings_ln.beta,
                eps,
                n,
                d,
                b.resid.ptr(),
                b.emb_mean.ptr(),
                b.emb_rstd.ptr(),
            )?;
            let offs = b.offsets.ptr();
            for (l, (lp, t)) in p.layers.iter().zip(&b.layers).enumerate() {
                let x = b.resid.ptr().f32_at(l * nd);
                let out = b.resid.ptr().f32_at((l + 1) * nd);
                for (lin, dst) in [(&lp.query, &t.q), (&lp.key, &t.k), (&lp.value, &t.v)] {
                    g.blas.linear_forward(x, lin.w, n, d, d, b.packed.ptr())?;
                    g.bias_residual(b.packed.ptr(), lin.b, DevPtr::NULL, n, d)?;
                    g.pack_to_padded(
                        b.packed.ptr(),
                        offs,
                        n_sent,
                        heads,
                        tmax,
                        dh,
                        layer_buf(dst),
                    )?;
                }
                let probs = layer_buf(&t.probs);
                g.blas.attention_scores(
                    layer_buf(&t.q),
                    layer_buf(&t.k),
                    batch,
                    tmax,
                    dh,
                    scale,
                    probs,
                )?;
                g.softmax_forward_padded(probs, b.lens.ptr(), n_sent, heads, tmax)?;
                g.blas.attention_apply(
                    probs,
                    false,
                    layer_buf(&t.v),
                    batch,
                    tmax,
                    dh,
                    1.0,
                    b.ctx_pad.ptr(),
                )?;
                let ctx = layer_buf(&t.ctx);
                g.padded_to_pack(b.ctx_pad.ptr(), offs, n, n_sent, heads, tmax, dh, ctx)?;
                let h1_pre = layer_buf(&t.h1_pre);
                g.blas
                    .linear_forward(ctx, lp.attn_output.w, n, d, d, h1_pre)?;
                g.bias_residual(h1_pre, lp.attn_output.b, x, n, d)?;
                let h1 = layer_buf(&t.h1);
                g.layernorm_forward(
                    h1_pre,
                    lp.attn_ln.gamma,
                    lp.attn_ln.beta,
                    eps,
                    n,
                    d,
                    h1,
                    layer_buf(&t.ln1_mean),
                    layer_buf(&t.ln1_rstd),
                )?;
                let ffn_pre = layer_buf(&t.ffn_pre);
                g.blas
                    .linear_forward(h1, lp.ffn_in.w, n, d, inter, ffn_pre)?;
                g.bias_residual(ffn_pre, lp.ffn_in.b, DevPtr::NULL, n, inter)?;
                g.gelu_forward(ffn_pre, n * inter, b.ffn_act.ptr(), layer_buf(&t.ffn_cdf))?;
                let h2_pre = layer_buf(&t.h2_pre);
                g.blas
                    .linear_forward(b.ffn_act.ptr(), lp.ffn_out.w, n, inter, d, h2_pre)?;
                g.bias_residual(h2_pre, lp.ffn_out.b, h1, n, d)?;
                g.layernorm_forward(
                    h2_pre,
                    lp.ffn_ln.gamma,
                    lp.ffn_ln.beta,
                    eps,
                    n,
                    d,
                    out,
                    layer_buf(&t.ln2_mean),
                    layer_buf(&t.ln2_rstd),
                )?;
            }
            let hidden = b.resid.ptr().f32_at(c.layers * nd);
            let nb = BOUNDARY_LABELS;
            g.blas
                .linear_forward(hidden, p.boundary.w, n, d, nb, b.boundary.ptr())?;
            g.bias_residual(b.boundary.ptr(), p.boundary.b, DevPtr::NULL, n, nb)?;
            g.blas
                .linear_forward(hidden, p.types.w, n, d, c.type_dim, b.types.ptr())?;
            g.bias_residual(b.types.ptr(), p.types.b, DevPtr::NULL, n, c.type_dim)?;
        }
        Ok(())
    }

    /// Number of pieces of the last forward pass.
    pub fn tokens(&self) -> usize {
        self.shape.map_or(0, |s| s.n)
    }

    /// Copies the boundary logits `[N, 3]` and type projections `[N, type_dim]` of the last
    /// forward pass to the host (resizing both vectors).
    pub fn outputs(&self, boundary: &mut Vec<f32>, types: &mut Vec<f32>) -> Result<()> {
        let n = self.tokens();
        let s = &self.gpu.stream;
        boundary.resize(n * BOUNDARY_LABELS, 0.0);
        types.resize(n * self.config.type_dim, 0.0);
        self.buf.boundary.download(s, 0, boundary)?;
        self.buf.types.download(s, 0, types)
    }

    /// The final hidden states `[N, D]` of the last forward pass, copied to the host.
    pub fn hidden(&self) -> Result<Vec<f32>> {
        let nd = self.tokens() * self.config.hidden;
        let mut out = vec![0.0; nd];
        self.buf
            .resid
            .download(&self.gpu.stream, self.config.layers * nd, &mut out)?;
        Ok(out)
    }

    /// Backward of the last [`CudaModel::forward`] given `d_boundary` `[N, 3]` and `d_types`
    /// `[N, type_dim]` (host slices): adds every parameter gradient into the device gradients
    /// (`+=`, as [`crate::backprop::backward`]).
    pub fn backward(&mut self, d_boundary: &[f32], d_types: &[f32]) -> Result<()> {
        self.upload_output_grads(d_boundary, d_types)?;
        self.backward_uploaded()
    }

    /// First half of [`CudaModel::backward`]: copies the output gradients to the device.
    pub fn upload_output_grads(&mut self, d_boundary: &[f32], d_types: &[f32]) -> Result<()> {
        let sh = self
            .shape
            .context("backward: no forward pass on the tape")?;
        let n = sh.n;
        ensure!(
            d_boundary.len() == n * BOUNDARY_LABELS,
            "backward: d_boundary has {} values, want {}",
            d_boundary.len(),
            n * BOUNDARY_LABELS
        );
        ensure!(
            d_types.len() == n * self.config.type_dim,
            "backward: d_types has {} values, want {}",
            d_types.len(),
            n * self.config.type_dim
        );
        let s = &self.gpu.stream;
        self.buf.d_boundary.upload(s, 0, d_boundary)?;
        self.buf.d_types.upload(s, 0, d_types)?;
        self.grads_ready = true;
        Ok(())
    }

    /// Second half of [`CudaModel::backward`], with the gradients of the last
    /// [`CudaModel::upload_output_grads`].
    pub fn backward_uploaded(&mut self) -> Result<()> {
        let sh = self
            .shape
            .context("backward: no forward pass on the tape")?;
        ensure!(self.grads_ready, "backward: no output gradients uploaded");
        self.grads_ready = false;
        if sh.n == 0 {
            return Ok(());
        }
        // SAFETY: the tape holds a forward pass of this shape, so every buffer is sized for
        // it; parameter and gradient pointers come from the same table.
        unsafe { self.backward_device(sh) }
    }

    /// The device work of [`CudaModel::backward_uploaded`] for a batch of shape `sh`.
    ///
    /// # Safety
    ///
    /// `sh` must be the shape the buffers were last sized for by [`CudaModel::fit`] (that of
    /// the forward pass on the tape), so that `ones` also holds at least `sh.n` ones.
    unsafe fn backward_device(&self, sh: Shape) -> Result<()> {
        let c = &self.config;
        let g = &self.gpu;
        let b = &self.buf;
        let p = self.params(self.weights.ptr());
        let gr = self.params(self.grads.ptr());
        let Shape { n, n_sent, tmax } = sh;
        let (d, inter, heads) = (c.hidden, c.intermediate, c.heads);
        let dh = d / heads;
        let nd = n * d;
        let batch = n_sent * heads;
        let scale = 1.0f32 / (dh as f32).sqrt();
        let ones = b.ones.ptr();
        let offs = b.offsets.ptr();
        let lens = b.lens.ptr();
        let hidden = b.resid.ptr().f32_at(c.layers * nd);
        let (d_x, d_pre, d_h1) = (b.d_x.ptr(), b.d_pre.ptr(), b.d_h1.ptr());
        // SAFETY: by this fn's contract the tape and work buffers were sized by `fit` for `sh`, so
        // each pointer below addresses a live buffer of the shape its call states; parameter and
        // gradient pointers come from the same `table` over two allocations of equal length;
        // `ones` holds `n` ones (`fit` keeps `ones_filled >= n`); the outputs that must not
        // alias (GEMM outputs, `layernorm_backward`'s `dx`) are buffers apart from their inputs.
        unsafe {
            g.blas.linear_backward(
                hidden,
                p.boundary.w,
                b.d_boundary.ptr(),
                n,
                d,
                BOUNDARY_LABELS,
                d_x,
                GradMode::Assign,
                gr.boundary.w,
                gr.boundary.b,
                ones,
            )?;
            g.blas.linear_backward(
                hidden,
                p.types.w,
                b.d_types.ptr(),
                n,
                d,
                c.type_dim,
                d_x,
                GradMode::Accumulate,
                gr.types.w,
                gr.types.b,
                ones,
            )?;
            for l in (0..c.layers).rev() {
                let (lp, gl, t) = (&p.layers[l], &gr.layers[l], &b.layers[l]);
                let x = b.resid.ptr().f32_at(l * nd);
                let (ffn_pre, ffn_cdf) = (layer_buf(&t.ffn_pre), layer_buf(&t.ffn_cdf));
                g.layernorm_backward(
                    layer_buf(&t.h2_pre),
                    layer_buf(&t.ln2_mean),
                    layer_buf(&t.ln2_rstd),
                    lp.ffn_ln.gamma,
                    d_x,
                    n,
                    d,
                    d_pre,
                    gl.ffn_ln.gamma,
                    gl.ffn_ln.beta,
                )?;
                g.copy_f32(d_h1, d_pre, nd)?;
                g.gelu_recompute(ffn_pre, ffn_cdf, n * inter, b.act.ptr())?;
                g.blas.linear_backward(
                    b.act.ptr(),
                    lp.ffn_out.w,
                    d_pre,
                    n,
                    inter,
                    d,
                    b.d_act.ptr(),
                    GradMode::Assign,
                    gl.ffn_out.w,
                    gl.ffn_out.b,
                    ones,
                )?;
                g.gelu_backward(ffn_pre, ffn_cdf, n * inter, b.d_act.ptr())?;
                g.blas.linear_backward(
                    layer_buf(&t.h1),
                    lp.ffn_in.w,
                    b.d_act.ptr(),
                    n,
                    d,
                    inter,
                    d_h1,
                    GradMode::Accumulate,
                    gl.ffn_in.w,
                    gl.ffn_in.b,
                    ones,
                )?;
                g.layernorm_backward(
                    layer_buf(&t.h1_pre),
                    layer_buf(&t.ln1_mean),
                    layer_buf(&t.ln1_rstd),
                    lp.attn_ln.gamma,
                    d_h1,
                    n,
                    d,
                    d_pre,
                    gl.attn_ln.gamma,
                    gl.attn_ln.beta,
                )?;
                g.copy_f32(d_x, d_pre, nd)?;
                g.blas.linear_backward(
                    layer_buf(&t.ctx),
                    lp.attn_output.w,
                    d_pre,
                    n,
                    d,
                    d,
                    b.d_ctx.ptr(),
                    GradMode::Assign,
                    gl.attn_output.w,
                    gl.attn_output.b,
                    ones,
                )?;
                let (q, k, v, probs) = (
                    layer_buf(&t.q),
                    layer_buf(&t.k),
                    layer_buf(&t.v),
                    layer_buf(&t.probs),
                );
                let dctx_pad = b.ctx_pad.ptr();
                g.pack_to_padded(b.d_ctx.ptr(), offs, n_sent, heads, tmax, dh, dctx_pad)?;
                g.blas
                    .attention_dprobs(dctx_pad, v, batch, tmax, dh, b.d_probs.ptr())?;
                g.blas.attention_apply(
                    probs,
                    true,
                    dctx_pad,
                    batch,
                    tmax,
                    dh,
                    1.0,
                    b.dv_pad.ptr(),
                )?;
                g.softmax_backward_padded(probs, b.d_probs.ptr(), lens, n_sent, heads, tmax)?;
                g.blas.attention_apply(
                    b.d_probs.ptr(),
                    false,
                    k,
                    batch,
                    tmax,
                    dh,
                    scale,
                    b.dq_pad.ptr(),
                )?;
                g.blas.attention_apply(
                    b.d_probs.ptr(),
                    true,
                    q,
                    batch,
                    tmax,
                    dh,
                    scale,
                    b.dk_pad.ptr(),
                )?;
                for (src, dst) in [(&b.dq_pad, &b.dq), (&b.dk_pad, &b.dk), (&b.dv_pad, &b.dv)] {
                    g.padded_to_pack(src.ptr(), offs, n, n_sent, heads, tmax, dh, dst.ptr())?;
                }
                for (lin, glin, dy) in [
                    (&lp.query, &gl.query, &b.dq),
                    (&lp.key, &gl.key, &b.dk),
                    (&lp.value, &gl.value, &b.dv),
                ] {
                    g.blas.linear_backward(
                        x,
                        lin.w,
                        dy.ptr(),
                        n,
                        d,
                        d,
                        d_x,
                        GradMode::Accumulate,
                        glin.w,
                        glin.b,
                        ones,
                    )?;
                }
            }
            g.layernorm_backward(
                b.emb_sum.ptr(),
                b.emb_mean.ptr(),
                b.emb_rstd.ptr(),
                p.embeddings_ln.gamma,
                d_x,
                n,
                d,
                d_pre,
                gr.embeddings_ln.gamma,
                gr.embeddings_ln.beta,
            )?;
            g.embedding_backward(
                b.ids.ptr(),
                b.pos.ptr(),
                d_pre,
                n,
                d,
                c.vocab_size,
                c.max_positions,
                gr.word,
                gr.position,
            )?;
            if let Some(d_shape) = gr.shape {
                g.shape_embedding_backward(b.shapes.ptr(), d_pre, n, d, c.shape_classes, d_shape)?;
            }
            g.blas
                .column_sum_accumulate(d_pre, n, d, gr.token_type, ones)?;
        }
        Ok(())
    }
}
