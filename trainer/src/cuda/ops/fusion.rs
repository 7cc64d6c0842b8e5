//! Launch wrappers for `trainer/kernels/fusion.cu`: the context gate of
//! [`crate::backprop::gate`] (forward, backward into both encodings, parameter gradients).

use anyhow::{ensure, Result};
use cudarc::driver::{CudaStream, PushKernelArg};

use super::{
    check_len, check_stream, grid_config, launch, to_i32, DeviceIn, DeviceOut, MAX_GRID_YZ,
};
use crate::cuda::CudaKernels;

/// Threads per block of the gate kernels (the kernels' `GATE_THREADS`).
const GATE_THREADS: u32 = 256;

/// The gate's shape: `rows` hidden states of width `hidden`, and whether the gate also reads
/// `(C − E)²` (weight `[3 hidden, 2]` instead of `[2 hidden, 2]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GateShape {
    /// Rows (tokens).
    pub rows: usize,
    /// Width of each hidden state.
    pub hidden: usize,
    /// The squared-difference features are present.
    pub distance: bool,
}

impl GateShape {
    fn features(&self) -> usize {
        (if self.distance { 3 } else { 2 }) * self.hidden
    }

    fn ints(&self, kernel: &str) -> Result<(i32, i32, i32)> {
        Ok((
            to_i32(kernel, "rows", self.rows)?,
            to_i32(kernel, "hidden", self.hidden)?,
            i32::from(self.distance),
        ))
    }
}

fn row_grid(rows: usize) -> cudarc::driver::LaunchConfig {
    grid_config((rows.clamp(1, MAX_GRID_YZ), 1, 1), GATE_THREADS)
}

/// `gate_forward`: `out` (`[rows, hidden]`) and `openings` (`[rows]`) overwritten from `alone`,
/// `with_context` (`[rows, hidden]`), `weight` (`[features, 2]`) and `bias` (`[2]`).
#[allow(clippy::too_many_arguments)]
pub fn gate_forward(
    k: &CudaKernels,
    stream: &CudaStream,
    shape: GateShape,
    alone: &impl DeviceIn<f32>,
    with_context: &impl DeviceIn<f32>,
    weight: &impl DeviceIn<f32>,
    bias: &impl DeviceIn<f32>,
    out: &mut impl DeviceOut<f32>,
    openings: &mut impl DeviceOut<f32>,
) -> Result<()> {
    const K: &str = "context_gate_forward";
    check_stream(K, k, stream)?;
    let (e, c, w, b) = (
        alone.view_in(),
        with_context.view_in(),
        weight.view_in(),
        bias.view_in(),
    );
    let (mut o, mut g) = (out.view_out(), openings.view_out());
    let n = shape.rows * shape.hidden;
    check_len(K, "alone", e.len(), n)?;
    check_len(K, "with_context", c.len(), n)?;
    check_len(K, "weight", w.len(), 2 * shape.features())?;
    check_len(K, "bias", b.len(), 2)?;
    check_len(K, "out", o.len(), n)?;
    check_len(K, "openings", g.len(), shape.rows)?;
    if n == 0 {
        return Ok(());
    }
    let (rows, hidden, distance) = shape.ints(K)?;
    let mut l = stream.launch_builder(k.function(K)?);
    l.arg(&e)
        .arg(&c)
        .arg(&w)
        .arg(&b)
        .arg(&rows)
        .arg(&hidden)
        .arg(&distance)
        .arg(&mut o)
        .arg(&mut g);
    // SAFETY: arguments match the kernel's parameters and every length was checked above.
    unsafe { launch(K, &mut l, row_grid(shape.rows)) }
}

/// Gradients of [`gate_forward`]'s inputs and parameters from `d_out`: `d_alone`,
/// `d_with_context` (`[rows, hidden]`) and the scratch `dz` (`[rows]`) overwritten; `d_weight`
/// (`[features, 2]`) and `d_bias` (`[2]`) accumulated.
pub struct GateGrads<'a, O> {
    /// `[rows, hidden]`, overwritten.
    pub d_alone: &'a mut O,
    /// `[rows, hidden]`, overwritten.
    pub d_with_context: &'a mut O,
    /// `[rows]` scratch, overwritten.
    pub dz: &'a mut O,
    /// `[features, 2]`, accumulated.
    pub d_weight: &'a mut O,
    /// `[2]`, accumulated.
    pub d_bias: &'a mut O,
}

/// Backward of [`gate_forward`] (`gate_backward` of the CPU reference) from the forward's
/// `openings` and the gradient `d_out` of its output.
#[allow(clippy::too_many_arguments)]
pub fn gate_backward<O: DeviceOut<f32>>(
    k: &CudaKernels,
    stream: &CudaStream,
    shape: GateShape,
    alone: &impl DeviceIn<f32>,
    with_context: &impl DeviceIn<f32>,
    weight: &impl DeviceIn<f32>,
    openings: &impl DeviceIn<f32>,
    d_out: &impl DeviceIn<f32>,
    grads: GateGrads<'_, O>,
) -> Result<()> {
    const K: &str = "context_gate_backward";
    const P: &str = "context_gate_param_backward";
    check_stream(K, k, stream)?;
    let (e, c, w) = (alone.view_in(), with_context.view_in(), weight.view_in());
    let (g, d) = (openings.view_in(), d_out.view_in());
    let mut de = grads.d_alone.view_out();
    let mut dc = grads.d_with_context.view_out();
    let mut dz = grads.dz.view_out();
    let mut dw = grads.d_weight.view_out();
    let mut db = grads.d_bias.view_out();
    let n = shape.rows * shape.hidden;
    for (what, len, want) in [
        ("alone", e.len(), n),
        ("with_context", c.len(), n),
        ("weight", w.len(), 2 * shape.features()),
        ("openings", g.len(), shape.rows),
        ("d_out", d.len(), n),
        ("d_alone", de.len(), n),
        ("d_with_context", dc.len(), n),
        ("dz", dz.len(), shape.rows),
        ("d_weight", dw.len(), 2 * shape.features()),
        ("d_bias", db.len(), 2),
    ] {
        check_len(K, what, len, want)?;
    }
    if n == 0 {
        return Ok(());
    }
    let (rows, hidden, distance) = shape.ints(K)?;
    let mut l = stream.launch_builder(k.function(K)?);
    l.arg(&e)
        .arg(&c)
        .arg(&w)
        .arg(&g)
        .arg(&d)
        .arg(&rows)
        .arg(&hidden)
        .arg(&distance)
        .arg(&mut dz)
        .arg(&mut de)
        .arg(&mut dc);
    // SAFETY: arguments match the kernel's parameters and every length was checked above.
    unsafe { launch(K, &mut l, row_grid(shape.rows))? };
    let threads = shape.features() + 1;
    let blocks = threads.div_ceil(GATE_THREADS as usize);
    ensure!(blocks <= MAX_GRID_YZ, "{P}: {threads} features is too many");
    let mut l = stream.launch_builder(k.function(P)?);
    l.arg(&e)
        .arg(&c)
        .arg(&mut dz)
        .arg(&rows)
        .arg(&hidden)
        .arg(&distance)
        .arg(&mut dw)
        .arg(&mut db);
    // SAFETY: arguments match the kernel's parameters; threads past `features` return at once.
    unsafe { launch(P, &mut l, grid_config((blocks, 1, 1), GATE_THREADS)) }
}
