//! Launch wrappers for `trainer/kernels/ot.cu`: batched entropic OT between small point clouds
//! (`ner_edge::adapt::memory::sinkhorn` and the barycentric map of `ner_edge::adapt::memory::retrieval`).
//!
//! An [`OtBatch`] describes B independent problems: problem `b` is `m[b] × n[b]`, its cost and
//! transport plan live at `cost_off[b]` of buffers of [`OtBatch::cost_len`] f64 values, its
//! point clouds are rows `x_row[b]..` of `X` and `y_row[b]..` of `Y` (`[*, d]` f32), and its
//! barycentric map goes to rows `out_row[b]..` of the output.

use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use cudarc::driver::{CudaSlice, CudaStream, PushKernelArg};
use ner_edge::adapt::memory::SinkhornConfig;

use super::{
    check_len, check_min_len, check_stream, cooperative_threads, grid_config, launch, mul, to_i32,
    to_i64, DeviceIn, DeviceOut,
};
use crate::cuda::CudaKernels;

/// Largest side of one problem (`OT_MAX_SIDE` in ot.cu).
pub const OT_MAX_SIDE: usize = 1024;
/// Threads per block, at most.
const OT_THREADS: u32 = 256;

/// `status` of a solved problem.
pub const OT_OK: i32 = 0;
/// `status` of rejected input (bad shape, ε or offsets, non-finite cost).
pub const OT_INVALID_INPUT: i32 = 1;
/// `status` of a numerical breakdown (non-finite or negative plan).
pub const OT_BREAKDOWN: i32 = 2;

/// One problem of a batch: an `m × n` plan between rows `x_row..x_row+m` of `X` and
/// `y_row..y_row+n` of `Y`, mapped onto rows `out_row..out_row+m` of the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OtProblem {
    /// Rows of the plan (points taken from `X`).
    pub m: usize,
    /// Columns of the plan (points taken from `Y`).
    pub n: usize,
    /// First row of `X`.
    pub x_row: usize,
    /// First row of `Y`.
    pub y_row: usize,
    /// First output row.
    pub out_row: usize,
}

/// The problems of a batch on the device, with the cost offsets laid out back to back.
pub struct OtBatch {
    problems: Vec<OtProblem>,
    cost_len: usize,
    m: CudaSlice<i32>,
    n: CudaSlice<i32>,
    x_row: CudaSlice<i32>,
    y_row: CudaSlice<i32>,
    out_row: CudaSlice<i32>,
    cost_off: CudaSlice<i64>,
}

impl OtBatch {
    /// Uploads `problems` on `stream`; each side must be in `1..=OT_MAX_SIDE`.
    pub fn new(stream: &Arc<CudaStream>, problems: &[OtProblem]) -> Result<OtBatch> {
        const K: &str = "OtBatch";
        ensure!(
            problems.len() <= i32::MAX as usize,
            "{K}: too many problems"
        );
        let mut off = Vec::with_capacity(problems.len());
        let mut at = 0usize;
        for (b, p) in problems.iter().enumerate() {
            ensure!(
                (1..=OT_MAX_SIDE).contains(&p.m) && (1..=OT_MAX_SIDE).contains(&p.n),
                "{K}: problem {b} is {} x {}, each side must be in 1..={OT_MAX_SIDE}",
                p.m,
                p.n
            );
            off.push(to_i64(K, "cost offset", at)?);
            at = at
                .checked_add(p.m * p.n)
                .context("OtBatch: cost length overflows")?;
        }
        let ints = |f: fn(&OtProblem) -> usize, what: &str| -> Result<CudaSlice<i32>> {
            let host = problems
                .iter()
                .map(|p| to_i32(K, what, f(p)))
                .collect::<Result<Vec<i32>>>()?;
            stream
                .clone_htod(&host)
                .with_context(|| format!("{K}: uploading {what}"))
        };
        Ok(OtBatch {
            problems: problems.to_vec(),
            cost_len: at,
            m: ints(|p| p.m, "m")?,
            n: ints(|p| p.n, "n")?,
            x_row: ints(|p| p.x_row, "x_row")?,
            y_row: ints(|p| p.y_row, "y_row")?,
            out_row: ints(|p| p.out_row, "out_row")?,
            cost_off: stream
                .clone_htod(&off)
                .context("OtBatch: uploading cost offsets")?,
        })
    }

    /// The problems.
    pub fn problems(&self) -> &[OtProblem] {
        &self.problems
    }

    /// Number of problems.
    pub fn len(&self) -> usize {
        self.problems.len()
    }

    /// Whether the batch has no problems.
    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    /// Values in a cost, transport or kernel-scratch buffer: `Σ m·n`.
    pub fn cost_len(&self) -> usize {
        self.cost_len
    }

    /// Offset of problem `b`'s block in the cost and transport buffers.
    pub fn cost_offset(&self, b: usize) -> usize {
        self.problems[..b].iter().map(|p| p.m * p.n).sum()
    }

    fn threads(&self, width: usize) -> u32 {
        cooperative_threads(width, OT_THREADS)
    }
}

/// Per-problem outcome of [`ot_sinkhorn`], each `[batch]` on the device.
pub struct OtResults {
    /// `⟨C, T⟩`, NaN unless solved.
    pub distance: CudaSlice<f64>,
    /// Sinkhorn iterations run (each updates `u` then `v`); 0 for rejected input.
    pub iterations: CudaSlice<i32>,
    /// L1 marginal error of the plan, NaN unless solved.
    pub error: CudaSlice<f64>,
    /// 1 when `error <= tol`.
    pub converged: CudaSlice<i32>,
    /// [`OT_OK`], [`OT_INVALID_INPUT`] or [`OT_BREAKDOWN`].
    pub status: CudaSlice<i32>,
}

impl OtResults {
    /// Zeroed results for `batch` problems.
    pub fn zeros(stream: &Arc<CudaStream>, batch: usize) -> Result<OtResults> {
        let n = batch.max(1);
        Ok(OtResults {
            distance: stream.alloc_zeros(n)?,
            iterations: stream.alloc_zeros(n)?,
            error: stream.alloc_zeros(n)?,
            converged: stream.alloc_zeros(n)?,
            status: stream.alloc_zeros(n)?,
        })
    }
}

/// Normalised squared Euclidean costs of every problem (`squared_euclidean_cost`) into `cost`
/// (`[cost_len]`, f64), from `x` `[x_rows, d]` and `y` `[y_rows, d]`. Problems whose rows fall
/// outside `x` or `y` get NaN costs, which [`ot_sinkhorn`] rejects.
pub fn ot_cost(
    k: &CudaKernels,
    stream: &CudaStream,
    batch: &OtBatch,
    x: &impl DeviceIn<f32>,
    y: &impl DeviceIn<f32>,
    d: usize,
    cost: &mut impl DeviceOut<f64>,
) -> Result<()> {
    const K: &str = "ot_cost";
    check_stream(K, k, stream)?;
    let (x, y, mut cost) = (x.view_in(), y.view_in(), cost.view_out());
    ensure!(d > 0, "{K}: d = 0");
    ensure!(
        x.len().is_multiple_of(d) && y.len().is_multiple_of(d),
        "{K}: x ({}) and y ({}) are not multiples of d = {d}",
        x.len(),
        y.len()
    );
    check_len(K, "cost", cost.len(), batch.cost_len())?;
    if batch.is_empty() {
        return Ok(());
    }
    let (xr, yr, di) = (
        to_i32(K, "x rows", x.len() / d)?,
        to_i32(K, "y rows", y.len() / d)?,
        to_i32(K, "d", d)?,
    );
    let bi = to_i32(K, "batch", batch.len())?;
    let cl = to_i64(K, "cost_len", batch.cost_len())?;
    let widest = batch.problems.iter().map(|p| p.m * p.n).max().unwrap_or(1);
    let cfg = grid_config((batch.len(), 1, 1), batch.threads(widest));
    let mut b = stream.launch_builder(k.function(K)?);
    b.arg(&x).arg(&xr).arg(&y).arg(&yr).arg(&di);
    b.arg(&batch.m)
        .arg(&batch.n)
        .arg(&batch.x_row)
        .arg(&batch.y_row)
        .arg(&batch.cost_off);
    b.arg(&bi).arg(&cl).arg(&mut cost);
    // SAFETY: arguments match the kernel's parameters; one block (power-of-two threads) per
    // problem, and the kernel bounds every access by x_rows, y_rows and cost_len.
    unsafe { launch(K, &mut b, cfg) }
}

/// Batched Sinkhorn with uniform marginals (`SinkhornWorkspace::solve`, same stopping rule and
/// domains) on `cost` (`[cost_len]`): plans into `transport`, `kbuf` scratch (both
/// `[cost_len]`), outcomes into `results`.
#[allow(clippy::too_many_arguments)]
pub fn ot_sinkhorn(
    k: &CudaKernels,
    stream: &CudaStream,
    batch: &OtBatch,
    cost: &impl DeviceIn<f64>,
    cfg: &SinkhornConfig,
    transport: &mut impl DeviceOut<f64>,
    kbuf: &mut impl DeviceOut<f64>,
    results: &mut OtResults,
) -> Result<()> {
    const K: &str = "ot_sinkhorn";
    check_stream(K, k, stream)?;
    let (cost, mut transport, mut kbuf) = (cost.view_in(), transport.view_out(), kbuf.view_out());
    let len = batch.cost_len();
    check_len(K, "cost", cost.len(), len)?;
    check_len(K, "transport", transport.len(), len)?;
    check_len(K, "kbuf", kbuf.len(), len)?;
    for (what, l) in [
        ("distance", results.distance.len()),
        ("iterations", results.iterations.len()),
        ("error", results.error.len()),
        ("converged", results.converged.len()),
        ("status", results.status.len()),
    ] {
        check_min_len(K, what, l, batch.len())?;
    }
    if batch.is_empty() {
        return Ok(());
    }
    let bi = to_i32(K, "batch", batch.len())?;
    let cl = to_i64(K, "cost_len", len)?;
    let iters = to_i32(K, "max_iters", cfg.max_iters)?;
    let every = to_i32(K, "check_every", cfg.check_every)?;
    let (eps, tol) = (cfg.epsilon, cfg.tol);
    let widest = batch
        .problems
        .iter()
        .map(|p| p.m.max(p.n))
        .max()
        .unwrap_or(1);
    let lc = grid_config((batch.len(), 1, 1), batch.threads(widest));
    let mut b = stream.launch_builder(k.function(K)?);
    b.arg(&cost)
        .arg(&batch.m)
        .arg(&batch.n)
        .arg(&batch.cost_off)
        .arg(&bi)
        .arg(&cl);
    b.arg(&eps).arg(&iters).arg(&tol).arg(&every);
    b.arg(&mut transport).arg(&mut kbuf);
    b.arg(&mut results.distance)
        .arg(&mut results.iterations)
        .arg(&mut results.error);
    b.arg(&mut results.converged).arg(&mut results.status);
    // SAFETY: arguments match the kernel's parameters; one block (power-of-two threads) per
    // problem; the kernel bounds each problem's block by cost_len = the length of cost,
    // transport and kbuf, sides by OT_MAX_SIDE, and the result buffers hold >= batch values.
    unsafe { launch(K, &mut b, lc) }
}

/// Barycentric map (`barycentric_map_into`) of every solved problem onto its support rows of
/// `y` (`[y_rows, d]`): rows `out_row[b]..+m[b]` of `out` (`[out_rows, d]`) are written; problems
/// whose `status` is not [`OT_OK`] leave theirs untouched.
#[allow(clippy::too_many_arguments)]
pub fn ot_barycentric_map(
    k: &CudaKernels,
    stream: &CudaStream,
    batch: &OtBatch,
    transport: &impl DeviceIn<f64>,
    status: &impl DeviceIn<i32>,
    y: &impl DeviceIn<f32>,
    d: usize,
    out: &mut impl DeviceOut<f32>,
) -> Result<()> {
    const K: &str = "ot_barycentric_map";
    check_stream(K, k, stream)?;
    let (transport, status, y, mut out) = (
        transport.view_in(),
        status.view_in(),
        y.view_in(),
        out.view_out(),
    );
    ensure!(d > 0, "{K}: d = 0");
    ensure!(
        y.len().is_multiple_of(d) && out.len().is_multiple_of(d),
        "{K}: y ({}) and out ({}) are not multiples of d = {d}",
        y.len(),
        out.len()
    );
    check_len(K, "transport", transport.len(), batch.cost_len())?;
    check_min_len(K, "status", status.len(), batch.len())?;
    if batch.is_empty() {
        return Ok(());
    }
    let bi = to_i32(K, "batch", batch.len())?;
    let cl = to_i64(K, "cost_len", batch.cost_len())?;
    let (yr, di, orows) = (
        to_i32(K, "y rows", y.len() / d)?,
        to_i32(K, "d", d)?,
        to_i32(K, "out rows", out.len() / d)?,
    );
    let widest = batch
        .problems
        .iter()
        .map(|p| mul(K, p.m, d))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .max()
        .unwrap_or(1);
    let cfg = grid_config((batch.len(), 1, 1), batch.threads(widest));
    let mut b = stream.launch_builder(k.function(K)?);
    b.arg(&transport)
        .arg(&batch.m)
        .arg(&batch.n)
        .arg(&batch.cost_off)
        .arg(&status);
    b.arg(&bi)
        .arg(&cl)
        .arg(&y)
        .arg(&yr)
        .arg(&batch.y_row)
        .arg(&di);
    b.arg(&batch.out_row).arg(&orows).arg(&mut out);
    // SAFETY: arguments match the kernel's parameters; one block per problem; the kernel bounds
    // transport by cost_len, y by y_rows and out by out_rows, status holds >= batch values.
    unsafe { launch(K, &mut b, cfg) }
}
