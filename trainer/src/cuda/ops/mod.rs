//! Safe launch wrappers for every kernel of [`super::KERNEL_SOURCES`], one module per kernel
//! family.
//!
//! Each wrapper takes the loaded [`CudaKernels`], the stream to launch on, device buffers and
//! the sizes, checks every length against the sizes (an `anyhow` error naming the kernel and the
//! buffer, before anything is launched), picks the grid and block the kernel's comment asks for
//! and enqueues the launch. Launches are asynchronous: kernel faults surface at the next
//! synchronising call on the stream. Buffers are anything implementing [`DeviceIn`] (read) or
//! [`DeviceOut`] (written): a `CudaSlice`, or a `CudaView`/`CudaViewMut` of part of one.
//! Zero-sized launches are skipped (their outputs left as they are).

use anyhow::{bail, ensure, Context, Result};
use cudarc::driver::{CudaSlice, CudaStream, CudaView, CudaViewMut, LaunchArgs, LaunchConfig};

use super::CudaKernels;

pub mod crf;
pub mod encoder;
pub mod fusion;
pub mod optimiser;
pub mod ot;

/// A device buffer a kernel reads.
pub trait DeviceIn<T> {
    /// The whole buffer as a view.
    fn view_in(&self) -> CudaView<'_, T>;
}

/// A device buffer a kernel writes (and may read).
pub trait DeviceOut<T>: DeviceIn<T> {
    /// The whole buffer as a mutable view.
    fn view_out(&mut self) -> CudaViewMut<'_, T>;
}

impl<T> DeviceIn<T> for CudaSlice<T> {
    fn view_in(&self) -> CudaView<'_, T> {
        self.as_view()
    }
}

impl<T> DeviceIn<T> for CudaView<'_, T> {
    fn view_in(&self) -> CudaView<'_, T> {
        self.slice(..)
    }
}

impl<T> DeviceIn<T> for CudaViewMut<'_, T> {
    fn view_in(&self) -> CudaView<'_, T> {
        self.as_view()
    }
}

impl<T> DeviceOut<T> for CudaSlice<T> {
    fn view_out(&mut self) -> CudaViewMut<'_, T> {
        self.as_view_mut()
    }
}

impl<T> DeviceOut<T> for CudaViewMut<'_, T> {
    fn view_out(&mut self) -> CudaViewMut<'_, T> {
        self.slice_mut(..)
    }
}

/// Threads per block of the elementwise (grid-stride) kernels.
pub(crate) const ELEMENTWISE_THREADS: u32 = 256;
/// Most blocks of a grid-stride launch; the kernels loop over what lies beyond.
pub(crate) const MAX_STRIDE_BLOCKS: u64 = 65_535;
/// Largest grid y or z dimension.
pub(crate) const MAX_GRID_YZ: usize = 65_535;

/// A 1-D grid-stride launch over `len` elements (`len > 0`).
pub(crate) fn stride_config(len: usize) -> LaunchConfig {
    let blocks = (len as u64)
        .div_ceil(u64::from(ELEMENTWISE_THREADS))
        .clamp(1, MAX_STRIDE_BLOCKS);
    LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (ELEMENTWISE_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One thread per element of `len > 0` elements, 256 per block.
pub(crate) fn per_element_config(kernel: &str, len: usize) -> Result<LaunchConfig> {
    let blocks = len.div_ceil(ELEMENTWISE_THREADS as usize);
    ensure!(
        blocks <= i32::MAX as usize,
        "{kernel}: {len} elements need more blocks than a grid holds"
    );
    Ok(LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (ELEMENTWISE_THREADS, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// Block size for a block that cooperates over `width` values: a power of two in
/// `[32, max]` (`max` a power of two), the smallest covering `width` when one does.
pub(crate) fn cooperative_threads(width: usize, max: u32) -> u32 {
    (width.max(1).next_power_of_two() as u64).clamp(32, u64::from(max)) as u32
}

/// A grid of `grid` blocks of `threads` threads.
pub(crate) fn grid_config(grid: (usize, usize, usize), threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (grid.0 as u32, grid.1 as u32, grid.2 as u32),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// `v` as a kernel `int`, or an error naming the kernel and the quantity.
pub(crate) fn to_i32(kernel: &str, what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).with_context(|| format!("{kernel}: {what} = {v} does not fit a kernel int"))
}

/// `v` as a kernel `long long`.
pub(crate) fn to_i64(kernel: &str, what: &str, v: usize) -> Result<i64> {
    i64::try_from(v)
        .with_context(|| format!("{kernel}: {what} = {v} does not fit a kernel long long"))
}

/// Fails unless `buf` holds exactly `want` elements.
pub(crate) fn check_len(kernel: &str, what: &str, len: usize, want: usize) -> Result<()> {
    ensure!(
        len == want,
        "{kernel}: {what} holds {len} elements, expected {want}"
    );
    Ok(())
}

/// Fails unless `buf` holds at least `want` elements.
pub(crate) fn check_min_len(kernel: &str, what: &str, len: usize, want: usize) -> Result<()> {
    ensure!(
        len >= want,
        "{kernel}: {what} holds {len} elements, at least {want} needed"
    );
    Ok(())
}

/// `a * b`, or an error when it overflows.
pub(crate) fn mul(kernel: &str, a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b)
        .with_context(|| format!("{kernel}: size {a} x {b} overflows"))
}

/// The stream must belong to the context the kernels were loaded into.
pub(crate) fn check_stream(kernel: &str, kernels: &CudaKernels, stream: &CudaStream) -> Result<()> {
    if !std::sync::Arc::ptr_eq(stream.context(), &kernels.ctx) {
        bail!("{kernel}: the stream belongs to another CUDA context than the loaded kernels");
    }
    Ok(())
}

/// Enqueues the launch built in `args` with `cfg`.
///
/// # Safety
///
/// The arguments pushed into `args` must match the kernel's parameter list in number, order and
/// type, and the sizes passed must keep every access of the kernel inside the buffers.
pub(crate) unsafe fn launch(
    kernel: &str,
    args: &mut LaunchArgs<'_>,
    cfg: LaunchConfig,
) -> Result<()> {
    // SAFETY: the caller guarantees (`# Safety`) that the pushed arguments match the kernel's
    // parameters and that `cfg` and the sizes keep every access inside the buffers.
    unsafe { args.launch(cfg) }
        .map(|_| ())
        .with_context(|| format!("launching {kernel}"))
}

/// Host-validated sentence boundaries of a packed batch, with their device copy.
///
/// Sentence `s` is rows `host[s]..host[s+1]`; `host[0] == 0` and the values never decrease.
/// Kernels whose indexing follows the offsets take this type, so the wrappers can bound every
/// access from the host copy.
pub struct PackedOffsets {
    host: Vec<i32>,
    dev: CudaSlice<i32>,
}

impl PackedOffsets {
    /// Checks `offsets` (ascending from 0, at least one entry) and uploads them on `stream`.
    pub fn new(stream: &std::sync::Arc<CudaStream>, offsets: &[usize]) -> Result<PackedOffsets> {
        ensure!(
            offsets.first() == Some(&0),
            "sentence offsets must start at 0 (got {:?})",
            offsets.first()
        );
        ensure!(
            offsets.windows(2).all(|w| w[0] <= w[1]),
            "sentence offsets must not decrease"
        );
        let host = offsets
            .iter()
            .map(|&o| i32::try_from(o).context("sentence offset does not fit a kernel int"))
            .collect::<Result<Vec<i32>>>()?;
        let dev = stream
            .clone_htod(&host)
            .context("uploading sentence offsets")?;
        Ok(PackedOffsets { host, dev })
    }

    /// Number of sentences.
    pub fn sentences(&self) -> usize {
        self.host.len() - 1
    }

    /// Total rows (`offsets[sentences]`).
    pub fn rows(&self) -> usize {
        *self.host.last().unwrap_or(&0) as usize
    }

    /// Length of the longest sentence (0 when there are none).
    pub fn max_len(&self) -> usize {
        self.host
            .windows(2)
            .map(|w| (w[1] - w[0]) as usize)
            .max()
            .unwrap_or(0)
    }

    /// The offsets as given (as kernel ints).
    pub fn host(&self) -> &[i32] {
        &self.host
    }

    /// The device copy.
    pub fn device(&self) -> &CudaSlice<i32> {
        &self.dev
    }
}
