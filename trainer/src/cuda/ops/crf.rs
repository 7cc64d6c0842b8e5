//! Launch wrappers for `trainer/kernels/crf.cu`: the batched CRF forward algorithm (NLL),
//! its backward (emission and CDT gradients) in f64 as `crate::loss::crf::crf_nll`, and f32
//! Viterbi as `ner_edge::decode::viterbi`.
//!
//! A [`CrfBatch`] gives the layout: sentence `s` is rows `offsets[s]..offsets[s+1]` of the
//! packed emissions `[n_rows, ld]`, with `n_labels[s]` labels (odd, `<= ld`) and transition set
//! `tset[s]` of `start`/`end` `[n_sets, ld]` and `trans` `[n_sets, ld, ld]`.

use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use cudarc::driver::{CudaSlice, CudaStream, DeviceRepr, PushKernelArg};

use super::{
    check_len, check_stream, cooperative_threads, grid_config, launch, mul, to_i32, DeviceIn,
    DeviceOut,
};
use crate::cuda::CudaKernels;

/// Most labels per sentence (`CRF_MAX_LABELS` in crf.cu).
pub const CRF_MAX_LABELS: usize = 1024;
/// CDT numbers per sentence in `d_cdt`: matrix row-major (15), start (3), end (3).
pub const CDT_LEN: usize = 21;
/// Threads per block, at most.
const CRF_THREADS: u32 = 256;

/// Host-validated layout of a batch of sentences, with its device copy.
pub struct CrfBatch {
    n_sent: usize,
    n_rows: usize,
    ld: usize,
    n_sets: usize,
    max_labels: usize,
    offsets: CudaSlice<i32>,
    n_labels: CudaSlice<i32>,
    tset: CudaSlice<i32>,
}

impl CrfBatch {
    /// Checks and uploads the layout: `offsets` ascending from 0 (`n_sent + 1` entries, the last
    /// is `n_rows`), `n_labels[s]` odd in `1..=ld`, `tset[s] < n_sets`, `ld <= CRF_MAX_LABELS`.
    pub fn new(
        stream: &Arc<CudaStream>,
        offsets: &[usize],
        n_labels: &[usize],
        tset: &[usize],
        ld: usize,
        n_sets: usize,
    ) -> Result<CrfBatch> {
        const K: &str = "CrfBatch";
        ensure!(
            offsets.first() == Some(&0) && offsets.windows(2).all(|w| w[0] <= w[1]),
            "{K}: offsets must ascend from 0"
        );
        let n_sent = offsets.len() - 1;
        check_len(K, "n_labels", n_labels.len(), n_sent)?;
        check_len(K, "tset", tset.len(), n_sent)?;
        ensure!(
            (1..=CRF_MAX_LABELS).contains(&ld),
            "{K}: ld = {ld} outside 1..={CRF_MAX_LABELS}"
        );
        for (s, (&l, &t)) in n_labels.iter().zip(tset).enumerate() {
            ensure!(
                !l.is_multiple_of(2) && l <= ld,
                "{K}: sentence {s} has {l} labels (odd, at most ld = {ld})"
            );
            ensure!(
                t < n_sets,
                "{K}: sentence {s} uses transition set {t} of {n_sets}"
            );
        }
        let ints = |v: &[usize], what: &str| -> Result<CudaSlice<i32>> {
            let host = v
                .iter()
                .map(|&x| to_i32(K, what, x))
                .collect::<Result<Vec<i32>>>()?;
            let host = if host.is_empty() { vec![0] } else { host };
            stream
                .clone_htod(&host)
                .with_context(|| format!("{K}: uploading {what}"))
        };
        Ok(CrfBatch {
            n_sent,
            n_rows: *offsets.last().unwrap_or(&0),
            ld,
            n_sets,
            max_labels: n_labels.iter().copied().max().unwrap_or(1),
            offsets: ints(offsets, "offsets")?,
            n_labels: ints(n_labels, "n_labels")?,
            tset: ints(tset, "tset")?,
        })
    }

    /// Number of sentences.
    pub fn sentences(&self) -> usize {
        self.n_sent
    }

    /// Rows of the packed emissions.
    pub fn rows(&self) -> usize {
        self.n_rows
    }

    /// Row stride of emissions and transitions.
    pub fn ld(&self) -> usize {
        self.ld
    }

    fn check_transitions(
        &self,
        kernel: &str,
        start: usize,
        end: usize,
        trans: usize,
    ) -> Result<()> {
        check_len(kernel, "start", start, mul(kernel, self.n_sets, self.ld)?)?;
        check_len(kernel, "end", end, self.n_sets * self.ld)?;
        check_len(
            kernel,
            "trans",
            trans,
            mul(kernel, self.n_sets * self.ld, self.ld)?,
        )
    }

    fn scalars(&self, kernel: &str) -> Result<[i32; 4]> {
        Ok([
            to_i32(kernel, "n_sent", self.n_sent)?,
            to_i32(kernel, "n_rows", self.n_rows)?,
            to_i32(kernel, "ld", self.ld)?,
            to_i32(kernel, "n_sets", self.n_sets)?,
        ])
    }

    fn config(&self) -> cudarc::driver::LaunchConfig {
        grid_config(
            (self.n_sent, 1, 1),
            cooperative_threads(self.max_labels, CRF_THREADS),
        )
    }
}

/// Dense transitions for the CRF kernels, `start`/`end` `[n_sets, ld]` and `trans`
/// `[n_sets, ld, ld]` (`trans[from·ld + to]`), forbidden entries `-inf`.
pub struct CrfTransitionSets<'a, T: DeviceRepr> {
    /// Score of starting in each label, `[n_sets, ld]`.
    pub start: &'a CudaSlice<T>,
    /// Score of ending in each label, `[n_sets, ld]`.
    pub end: &'a CudaSlice<T>,
    /// Score of each transition, `[n_sets, ld, ld]`, row `from`, column `to`.
    pub trans: &'a CudaSlice<T>,
}

/// Forward algorithm per sentence (`crf_nll`'s α, log Z and NLL): `emissions` `[n_rows, ld]`
/// f64, `gold` `[n_rows]` (valid BIO, checked on the host); writes `alpha` `[n_rows, ld]`
/// (label columns only) and `log_z`, `nll` `[n_sent]`. Empty sentences get 0; bad input NaN.
#[allow(clippy::too_many_arguments)]
pub fn crf_forward(
    k: &CudaKernels,
    stream: &CudaStream,
    batch: &CrfBatch,
    emissions: &impl DeviceIn<f64>,
    gold: &impl DeviceIn<i32>,
    t: &CrfTransitionSets<'_, f64>,
    alpha: &mut impl DeviceOut<f64>,
    log_z: &mut impl DeviceOut<f64>,
    nll: &mut impl DeviceOut<f64>,
) -> Result<()> {
    const K: &str = "crf_forward";
    check_stream(K, k, stream)?;
    let (emissions, gold) = (emissions.view_in(), gold.view_in());
    let (mut alpha, mut log_z, mut nll) = (alpha.view_out(), log_z.view_out(), nll.view_out());
    let cells = mul(K, batch.n_rows, batch.ld)?;
    check_len(K, "emissions", emissions.len(), cells)?;
    check_len(K, "gold", gold.len(), batch.n_rows)?;
    check_len(K, "alpha", alpha.len(), cells)?;
    check_len(K, "log_z", log_z.len(), batch.n_sent)?;
    check_len(K, "nll", nll.len(), batch.n_sent)?;
    batch.check_transitions(K, t.start.len(), t.end.len(), t.trans.len())?;
    if batch.n_sent == 0 {
        return Ok(());
    }
    let [si, ri, li, ti] = batch.scalars(K)?;
    let mut b = stream.launch_builder(k.function(K)?);
    b.arg(&emissions)
        .arg(&gold)
        .arg(&batch.offsets)
        .arg(&batch.n_labels)
        .arg(&batch.tset);
    b.arg(&si)
        .arg(&ri)
        .arg(&li)
        .arg(t.start)
        .arg(t.end)
        .arg(t.trans)
        .arg(&ti);
    b.arg(&mut alpha).arg(&mut log_z).arg(&mut nll);
    // SAFETY: arguments match the kernel's parameters; one block (>= 32 threads) per sentence;
    // the host-validated layout keeps rows < n_rows, labels <= ld, sets < n_sets, and every
    // buffer length was checked above.
    unsafe { launch(K, &mut b, batch.config()) }
}

/// Backward per sentence after [`crf_forward`] (same inputs plus its `alpha`, `log_z`, `nll`):
/// `beta` `[n_rows, ld]` scratch, `d_emissions` `[n_rows, ld]` accumulated (`+=`), `d_cdt`
/// `[n_sent, 21]` overwritten (matrix row-major, start, end: `CdtGrad::to_flat` order).
#[allow(clippy::too_many_arguments)]
pub fn crf_backward(
    k: &CudaKernels,
    stream: &CudaStream,
    batch: &CrfBatch,
    emissions: &impl DeviceIn<f64>,
    gold: &impl DeviceIn<i32>,
    t: &CrfTransitionSets<'_, f64>,
    alpha: &impl DeviceIn<f64>,
    log_z: &impl DeviceIn<f64>,
    nll: &impl DeviceIn<f64>,
    beta: &mut impl DeviceOut<f64>,
    d_emissions: &mut impl DeviceOut<f64>,
    d_cdt: &mut impl DeviceOut<f64>,
) -> Result<()> {
    const K: &str = "crf_backward";
    check_stream(K, k, stream)?;
    let (emissions, gold, alpha) = (emissions.view_in(), gold.view_in(), alpha.view_in());
    let (log_z, nll) = (log_z.view_in(), nll.view_in());
    let (mut beta, mut d_emissions, mut d_cdt) =
        (beta.view_out(), d_emissions.view_out(), d_cdt.view_out());
    let cells = mul(K, batch.n_rows, batch.ld)?;
    check_len(K, "emissions", emissions.len(), cells)?;
    check_len(K, "gold", gold.len(), batch.n_rows)?;
    check_len(K, "alpha", alpha.len(), cells)?;
    check_len(K, "log_z", log_z.len(), batch.n_sent)?;
    check_len(K, "nll", nll.len(), batch.n_sent)?;
    check_len(K, "beta", beta.len(), cells)?;
    check_len(K, "d_emissions", d_emissions.len(), cells)?;
    check_len(K, "d_cdt", d_cdt.len(), mul(K, batch.n_sent, CDT_LEN)?)?;
    batch.check_transitions(K, t.start.len(), t.end.len(), t.trans.len())?;
    if batch.n_sent == 0 {
        return Ok(());
    }
    let [si, ri, li, ti] = batch.scalars(K)?;
    let mut b = stream.launch_builder(k.function(K)?);
    b.arg(&emissions)
        .arg(&gold)
        .arg(&batch.offsets)
        .arg(&batch.n_labels)
        .arg(&batch.tset);
    b.arg(&si)
        .arg(&ri)
        .arg(&li)
        .arg(t.start)
        .arg(t.end)
        .arg(t.trans)
        .arg(&ti);
    b.arg(&alpha).arg(&log_z).arg(&nll);
    b.arg(&mut beta).arg(&mut d_emissions).arg(&mut d_cdt);
    // SAFETY: as crf_forward; beta and d_emissions are [n_rows, ld], d_cdt [n_sent, 21].
    unsafe { launch(K, &mut b, batch.config()) }
}

/// Viterbi per sentence in f32 with BIO repair (`ner_edge::decode::viterbi`): `emissions`
/// `[n_rows, ld]`, `back` `[n_rows, ld]` scratch; writes `path` `[n_rows]` (label per row) and
/// `best` `[n_sent]` (the best score). Bad input: path -1, best NaN.
#[allow(clippy::too_many_arguments)]
pub fn crf_viterbi(
    k: &CudaKernels,
    stream: &CudaStream,
    batch: &CrfBatch,
    emissions: &impl DeviceIn<f32>,
    t: &CrfTransitionSets<'_, f32>,
    back: &mut impl DeviceOut<i32>,
    path: &mut impl DeviceOut<i32>,
    best: &mut impl DeviceOut<f32>,
) -> Result<()> {
    const K: &str = "crf_viterbi";
    check_stream(K, k, stream)?;
    let emissions = emissions.view_in();
    let (mut back, mut path, mut best) = (back.view_out(), path.view_out(), best.view_out());
    let cells = mul(K, batch.n_rows, batch.ld)?;
    check_len(K, "emissions", emissions.len(), cells)?;
    check_len(K, "back", back.len(), cells)?;
    check_len(K, "path", path.len(), batch.n_rows)?;
    check_len(K, "best", best.len(), batch.n_sent)?;
    batch.check_transitions(K, t.start.len(), t.end.len(), t.trans.len())?;
    if batch.n_sent == 0 {
        return Ok(());
    }
    let [si, ri, li, ti] = batch.scalars(K)?;
    let mut b = stream.launch_builder(k.function(K)?);
    b.arg(&emissions)
        .arg(&batch.offsets)
        .arg(&batch.n_labels)
        .arg(&batch.tset);
    b.arg(&si)
        .arg(&ri)
        .arg(&li)
        .arg(t.start)
        .arg(t.end)
        .arg(t.trans)
        .arg(&ti);
    b.arg(&mut back).arg(&mut path).arg(&mut best);
    // SAFETY: as crf_forward; back is [n_rows, ld], path [n_rows], best [n_sent].
    unsafe { launch(K, &mut b, batch.config()) }
}
