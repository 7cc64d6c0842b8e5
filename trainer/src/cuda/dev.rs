//! Device memory by raw address and minimal launches of the encoder and optimiser kernels, for
//! the CUDA training path ([`super::model`], [`super::train`]).
//!
//! One stream (the context's default stream) carries every copy, launch and cuBLAS call, so
//! work is ordered without events. Buffers own their allocation ([`DevBuf`]) and hand out
//! [`DevPtr`] addresses, which lets one allocation hold many tensors (llm.c style) and lets
//! kernels take pointers into the middle of a buffer.

use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::{
    result as dr, CudaSlice, CudaStream, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg,
    ValidAsZeroBits,
};

use super::gemm::Blas;
use super::kernels::TRAINING_KERNEL_FILES;
use super::CudaKernels;
use crate::train::optimizer::AdamWScalars;

/// A raw device address (bytes). Pointer arithmetic is in elements of the buffer's type through
/// [`DevPtr::f32_at`] and friends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DevPtr(pub CUdeviceptr);

impl DevPtr {
    /// The null pointer (optional kernel arguments).
    pub const NULL: DevPtr = DevPtr(0);

    /// The address `elems` values of `size` bytes further on.
    pub fn offset(self, elems: usize, size: usize) -> DevPtr {
        DevPtr(self.0 + (elems * size) as u64)
    }

    /// The address `elems` `f32` values further on.
    pub fn f32_at(self, elems: usize) -> DevPtr {
        self.offset(elems, 4)
    }
}

/// An owned device allocation of `len` values of `T`, with its raw address.
pub struct DevBuf<T> {
    slice: CudaSlice<T>,
    ptr: DevPtr,
    len: usize,
}

impl<T: DeviceRepr + ValidAsZeroBits> DevBuf<T> {
    /// `len` zeros (at least one value is allocated so the address is never null).
    pub fn zeros(stream: &Arc<CudaStream>, len: usize) -> Result<DevBuf<T>> {
        let slice = stream
            .alloc_zeros::<T>(len.max(1))
            .with_context(|| format!("allocating {len} values on the GPU"))?;
        let ptr = DevPtr(slice.device_ptr(stream).0);
        Ok(DevBuf { slice, ptr, len })
    }

    /// A copy of `data` on the device.
    pub fn from_host(stream: &Arc<CudaStream>, data: &[T]) -> Result<DevBuf<T>> {
        let mut b = DevBuf::zeros(stream, data.len())?;
        b.upload(stream, 0, data)?;
        Ok(b)
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no values.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Address of the first value.
    pub fn ptr(&self) -> DevPtr {
        self.ptr
    }

    /// Address of value `i` (`i <= len`).
    pub fn at(&self, i: usize) -> DevPtr {
        debug_assert!(i <= self.len);
        self.ptr.offset(i, std::mem::size_of::<T>())
    }

    /// Makes room for at least `len` values: reallocates (contents lost, zeroed) when the
    /// allocation is smaller, else only records the new length.
    pub fn fit(&mut self, stream: &Arc<CudaStream>, len: usize) -> Result<()> {
        if len > self.slice.len() {
            *self = DevBuf::zeros(stream, len.next_power_of_two().max(len))?;
        }
        self.len = len;
        Ok(())
    }

    /// Copies `data` to values `at..at + data.len()`.
    pub fn upload(&mut self, stream: &Arc<CudaStream>, at: usize, data: &[T]) -> Result<()> {
        if at + data.len() > self.len {
            bail!(
                "device upload of {} values at {at} into a buffer of {}",
                data.len(),
                self.len
            );
        }
        if data.is_empty() {
            return Ok(());
        }
        // SAFETY: the destination range lies inside this allocation (checked above); the copy
        // is ordered on `stream`, and a host-to-device copy from pageable memory has read
        // `data` when the call returns.
        unsafe { dr::memcpy_htod_async(self.at(at).0, data, stream.cu_stream()) }
            .context("copying to the GPU")?;
        Ok(())
    }

    /// Copies values `at..at + out.len()` to `out`, waiting for the stream.
    pub fn download(&self, stream: &Arc<CudaStream>, at: usize, out: &mut [T]) -> Result<()> {
        if at + out.len() > self.len {
            bail!(
                "device download of {} values at {at} from a buffer of {}",
                out.len(),
                self.len
            );
        }
        if out.is_empty() {
            return Ok(());
        }
        // SAFETY: the source range lies inside this allocation (checked above); the stream is
        // synchronised before `out` is read.
        unsafe { dr::memcpy_dtoh_async(out, self.at(at).0, stream.cu_stream()) }
            .context("copying from the GPU")?;
        stream.synchronize().context("waiting for the GPU")?;
        Ok(())
    }

    /// Sets values `at..at + len` to zero bits.
    pub fn zero(&mut self, stream: &Arc<CudaStream>, at: usize, len: usize) -> Result<()> {
        if at + len > self.len {
            bail!(
                "device memset of {len} values at {at} in a buffer of {}",
                self.len
            );
        }
        if len == 0 {
            return Ok(());
        }
        // SAFETY: the range lies inside this allocation (checked above).
        unsafe {
            dr::memset_d8_async(
                self.at(at).0,
                0,
                len * std::mem::size_of::<T>(),
                stream.cu_stream(),
            )
        }
        .context("clearing GPU memory")?;
        Ok(())
    }
}

/// The CUDA side of the trainer: loaded kernels, the stream and a cuBLAS handle on it.
pub struct Gpu {
    /// The training kernels, compiled and loaded into the device's context.
    pub kernels: CudaKernels,
    /// The context's default stream; every copy, launch and GEMM is queued on it.
    pub stream: Arc<CudaStream>,
    /// cuBLAS handle bound to [`Gpu::stream`].
    pub blas: Blas,
}

const ELEMENTWISE_THREADS: u32 = 256;
const MAX_GRID: usize = 65_535 * 8;

/// Threads for a row kernel (one block per row, power of two in [32, 1024]) over rows of `width`.
fn row_threads(width: usize) -> u32 {
    (width.next_power_of_two().clamp(32, 256)) as u32
}

fn grid_for(total: usize) -> LaunchConfig {
    let blocks = total
        .div_ceil(ELEMENTWISE_THREADS as usize)
        .clamp(1, MAX_GRID);
    LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (ELEMENTWISE_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn i32_of(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| anyhow!("{what} = {v} does not fit a CUDA int"))
}

/// Launches `$name` on `$gpu`'s stream with `$cfg` and the listed arguments (each a local
/// value whose type matches the kernel's parameter: `u64` for pointers, `i32` for `int`, `i64`
/// for `long long`, `f32` for `float`).
///
/// The expansion performs an unsafe launch: invoke it inside an `unsafe` block whose `SAFETY`
/// note covers the argument list and the sizes of the buffers the kernel touches.
macro_rules! launch {
    ($gpu:expr, $name:literal, $cfg:expr, $($arg:expr),+ $(,)?) => {{
        let f = $gpu.kernels.function($name)?;
        let mut b = $gpu.stream.launch_builder(f);
        $( b.arg($arg); )+
        b.launch($cfg).with_context(|| format!("launching {}", $name))?;
    }};
}

impl Gpu {
    /// Opens device `ordinal`, compiles and loads the kernels training launches
    /// ([`TRAINING_KERNEL_FILES`]), and creates a cuBLAS handle with plain f32 math (no TF32)
    /// on the context's default stream.
    pub fn open(ordinal: usize) -> Result<Gpu> {
        let kernels = CudaKernels::load_files(ordinal, &TRAINING_KERNEL_FILES)?;
        let stream = kernels.ctx.default_stream();
        let blas = Blas::new(&stream)?;
        Ok(Gpu {
            kernels,
            stream,
            blas,
        })
    }

    /// Waits until all queued work has finished.
    pub fn sync(&self) -> Result<()> {
        self.stream.synchronize().context("waiting for the GPU")
    }

    /// Device-to-device copy of `len` `f32` values.
    ///
    /// # Safety
    ///
    /// Both ranges must lie inside live allocations and must not overlap.
    pub unsafe fn copy_f32(&self, dst: DevPtr, src: DevPtr, len: usize) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        // SAFETY: the caller guarantees (`# Safety`) `len` live, non-overlapping `f32` values at
        // `src` and `dst`; the copy is ordered on this stream after the work that wrote `src`.
        unsafe { dr::memcpy_dtod_async(dst.0, src.0, len * 4, self.stream.cu_stream()) }
            .context("GPU copy")?;
        Ok(())
    }

    /// `out[i,:] = word[ids[i],:] + position[pos[i],:] + token_type` for `n` pieces of width `d`.
    ///
    /// # Safety
    ///
    /// Every pointer must address a live allocation of the stated shape: `ids`, `pos` `[n]`
    /// (`u32`, `i32`), `word` `[vocab, d]`, `position` `[max_pos, d]`, `token_type` `[d]`,
    /// `out` `[n, d]`.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn embedding_forward(
        &self,
        word: DevPtr,
        position: DevPtr,
        token_type: DevPtr,
        ids: DevPtr,
        pos: DevPtr,
        n: usize,
        d: usize,
        vocab: usize,
        max_pos: usize,
        out: DevPtr,
    ) -> Result<()> {
        let (n32, d32) = (i32_of(n, "n")?, i32_of(d, "d")?);
        let (v32, p32) = (i32_of(vocab, "vocab")?, i32_of(max_pos, "max_pos")?);
        // SAFETY: the arguments follow `embedding_forward` in `encoder.cu` (`u64` pointers, `i32`
        // ints); the caller guarantees (`# Safety`) live buffers of the stated shapes, and the
        // kernel skips ids and positions outside `vocab`, `max_pos`.
        unsafe {
            launch!(
                self,
                "embedding_forward",
                grid_for(n * d),
                &word.0,
                &position.0,
                &token_type.0,
                &ids.0,
                &pos.0,
                &n32,
                &d32,
                &v32,
                &p32,
                &out.0
            );
        }
        Ok(())
    }

    /// `out[i,:] += shape[shapes[i],:]` for `n` pieces of width `d` (the word-shape rows, after
    /// [`Gpu::embedding_forward`]).
    ///
    /// # Safety
    ///
    /// `shape` must address a live `[classes, d]` f32 allocation, `shapes` `[n]` (`u32`) and
    /// `out` `[n, d]`.
    pub unsafe fn shape_embedding_add(
        &self,
        shape: DevPtr,
        shapes: DevPtr,
        n: usize,
        d: usize,
        classes: usize,
        out: DevPtr,
    ) -> Result<()> {
        let (n32, d32, c32) = (
            i32_of(n, "n")?,
            i32_of(d, "d")?,
            i32_of(classes, "classes")?,
        );
        // SAFETY: the arguments follow `shape_embedding_add` in `encoder.cu`; the caller
        // guarantees (`# Safety`) live buffers of the stated shapes, and the kernel does not
        // read rows past `classes`.
        unsafe {
            launch!(
                self,
                "shape_embedding_add",
                grid_for(n * d),
                &shape.0,
                &shapes.0,
                &n32,
                &d32,
                &c32,
                &out.0
            );
        }
        Ok(())
    }

    /// `d_shape[shapes[i],:] += d_out[i,:]` (atomics): the backward of
    /// [`Gpu::shape_embedding_add`].
    ///
    /// # Safety
    ///
    /// As [`Gpu::shape_embedding_add`], with `d_out` `[n, d]` and `d_shape` `[classes, d]`.
    pub unsafe fn shape_embedding_backward(
        &self,
        shapes: DevPtr,
        d_out: DevPtr,
        n: usize,
        d: usize,
        classes: usize,
        d_shape: DevPtr,
    ) -> Result<()> {
        let (n32, d32, c32) = (
            i32_of(n, "n")?,
            i32_of(d, "d")?,
            i32_of(classes, "classes")?,
        );
        // SAFETY: the arguments follow `shape_embedding_backward` in `encoder.cu`; the caller
        // guarantees (`# Safety`) live buffers of the stated shapes, and the kernel skips shape
        // ids past `classes`.
        unsafe {
            launch!(
                self,
                "shape_embedding_backward",
                grid_for(n * d),
                &shapes.0,
                &d_out.0,
                &n32,
                &d32,
                &c32,
                &d_shape.0
            );
        }
        Ok(())
    }

    /// `d_word[ids[i],:] += d_out[i,:]`, `d_position[pos[i],:] += d_out[i,:]` (atomics).
    ///
    /// # Safety
    ///
    /// As [`Gpu::embedding_forward`], with `d_out` `[n, d]`, `d_word` `[vocab, d]`,
    /// `d_position` `[max_pos, d]`.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn embedding_backward(
        &self,
        ids: DevPtr,
        pos: DevPtr,
        d_out: DevPtr,
        n: usize,
        d: usize,
        vocab: usize,
        max_pos: usize,
        d_word: DevPtr,
        d_position: DevPtr,
    ) -> Result<()> {
        let (n32, d32) = (i32_of(n, "n")?, i32_of(d, "d")?);
        let (v32, p32) = (i32_of(vocab, "vocab")?, i32_of(max_pos, "max_pos")?);
        // SAFETY: the arguments follow `embedding_backward` in `encoder.cu`; the caller guarantees
        // (`# Safety`) live buffers of the stated shapes, and the kernel skips ids and positions
        // outside `vocab`, `max_pos`.
        unsafe {
            launch!(
                self,
                "embedding_backward",
                grid_for(n * d),
                &ids.0,
                &pos.0,
                &d_out.0,
                &n32,
                &d32,
                &v32,
                &p32,
                &d_word.0,
                &d_position.0
            );
        }
        Ok(())
    }

    /// Layer norm of `n` rows of width `d` (see `layernorm_forward` in `encoder.cu`).
    ///
    /// # Safety
    ///
    /// `x`, `y` `[n, d]`, `gamma`, `beta` `[d]`, `mean`, `rstd` `[n]`, all live.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn layernorm_forward(
        &self,
        x: DevPtr,
        gamma: DevPtr,
        beta: DevPtr,
        eps: f32,
        n: usize,
        d: usize,
        y: DevPtr,
        mean: DevPtr,
        rstd: DevPtr,
    ) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let (n32, d32) = (i32_of(n, "n")?, i32_of(d, "d")?);
        let cfg = LaunchConfig {
            grid_dim: (n as u32, 1, 1),
            block_dim: (row_threads(d), 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments follow `layernorm_forward` in `encoder.cu`; the caller guarantees
        // (`# Safety`) live buffers of the stated shapes; one block per row of at most 256 threads
        // (the kernel's shared buffer holds 1024).
        unsafe {
            launch!(
                self,
                "layernorm_forward",
                cfg,
                &x.0,
                &gamma.0,
                &beta.0,
                &eps,
                &n32,
                &d32,
                &y.0,
                &mean.0,
                &rstd.0
            );
        }
        Ok(())
    }

    /// Layer-norm backward: overwrites `dx`, accumulates `dgamma`, `dbeta`.
    ///
    /// # Safety
    ///
    /// `x`, `dy`, `dx` `[n, d]`, `mean`, `rstd` `[n]`, `gamma`, `dgamma`, `dbeta` `[d]`, all
    /// live; `dx` must not alias `x` or `dy`.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn layernorm_backward(
        &self,
        x: DevPtr,
        mean: DevPtr,
        rstd: DevPtr,
        gamma: DevPtr,
        dy: DevPtr,
        n: usize,
        d: usize,
        dx: DevPtr,
        dgamma: DevPtr,
        dbeta: DevPtr,
    ) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let (n32, d32) = (i32_of(n, "n")?, i32_of(d, "d")?);
        let cfg = LaunchConfig {
            grid_dim: (n as u32, 1, 1),
            block_dim: (row_threads(d), 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments follow `layernorm_backward` and `layernorm_param_backward` in
        // `encoder.cu`; the caller guarantees (`# Safety`) live buffers of the stated shapes and
        // that `dx` aliases neither input (the kernels take `__restrict__` pointers).
        unsafe {
            launch!(
                self,
                "layernorm_backward",
                cfg,
                &x.0,
                &mean.0,
                &rstd.0,
                &gamma.0,
                &dy.0,
                &n32,
                &d32,
                &dx.0
            );
            let cols = LaunchConfig {
                grid_dim: (d.div_ceil(32) as u32, 1, 1),
                block_dim: (32, 32, 1),
                shared_mem_bytes: 0,
            };
            launch!(
                self,
                "layernorm_param_backward",
                cols,
                &x.0,
                &mean.0,
                &rstd.0,
                &dy.0,
                &n32,
                &d32,
                &dgamma.0,
                &dbeta.0
            );
        }
        Ok(())
    }

    /// GELU (exact erf) of `len` values: `y`, and the saved `cdf`.
    ///
    /// # Safety
    ///
    /// `x`, `y`, `cdf` hold `len` live values.
    pub unsafe fn gelu_forward(&self, x: DevPtr, len: usize, y: DevPtr, cdf: DevPtr) -> Result<()> {
        let l = len as i64;
        // SAFETY: the arguments follow `gelu_forward` in `encoder.cu`; the grid-stride loop stays
        // below `len`, and the caller guarantees (`# Safety`) `len` live values behind each
        // pointer.
        unsafe {
            launch!(self, "gelu_forward", grid_for(len), &x.0, &l, &y.0, &cdf.0);
        }
        Ok(())
    }

    /// `y = x · cdf`.
    ///
    /// # Safety
    ///
    /// `x`, `cdf`, `y` hold `len` live values.
    pub unsafe fn gelu_recompute(
        &self,
        x: DevPtr,
        cdf: DevPtr,
        len: usize,
        y: DevPtr,
    ) -> Result<()> {
        let l = len as i64;
        // SAFETY: the arguments follow `gelu_recompute` in `encoder.cu`; the grid-stride loop
        // stays below `len`, and the caller guarantees (`# Safety`) `len` live values behind each
        // pointer.
        unsafe {
            launch!(
                self,
                "gelu_recompute",
                grid_for(len),
                &x.0,
                &cdf.0,
                &l,
                &y.0
            );
        }
        Ok(())
    }

    /// In place: `d ← d · GELU'(x)`.
    ///
    /// # Safety
    ///
    /// `x`, `cdf`, `d` hold `len` live values.
    pub unsafe fn gelu_backward(
        &self,
        x: DevPtr,
        cdf: DevPtr,
        len: usize,
        d: DevPtr,
    ) -> Result<()> {
        let l = len as i64;
        // SAFETY: the arguments follow `gelu_backward` in `encoder.cu`; the grid-stride loop stays
        // below `len`, and the caller guarantees (`# Safety`) `len` live values behind each
        // pointer.
        unsafe {
            launch!(self, "gelu_backward", grid_for(len), &x.0, &cdf.0, &l, &d.0);
        }
        Ok(())
    }

    /// `out[i,k] += bias[k] (+ skip[i,k])` over `[n, d]`; `skip` may be [`DevPtr::NULL`].
    ///
    /// # Safety
    ///
    /// `out` (and `skip` unless null) `[n, d]`, `bias` `[d]`, all live.
    pub unsafe fn bias_residual(
        &self,
        out: DevPtr,
        bias: DevPtr,
        skip: DevPtr,
        n: usize,
        d: usize,
    ) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let (n32, d32) = (i32_of(n, "n")?, i32_of(d, "d")?);
        // SAFETY: the arguments follow `bias_residual_forward` in `encoder.cu`, which reads `skip`
        // only when it is non-null; the caller guarantees (`# Safety`) live buffers of the stated
        // shapes.
        unsafe {
            launch!(
                self,
                "bias_residual_forward",
                grid_for(n * d),
                &out.0,
                &bias.0,
                &skip.0,
                &n32,
                &d32
            );
        }
        Ok(())
    }

    /// `x[i] *= s` for `len` values.
    ///
    /// # Safety
    ///
    /// `x` holds `len` live values.
    pub unsafe fn scale(&self, x: DevPtr, len: usize, s: f32) -> Result<()> {
        let l = len as i64;
        // SAFETY: the arguments follow `scale_inplace` in `encoder.cu`; the grid-stride loop stays
        // below `len`, and the caller guarantees (`# Safety`) `len` live values.
        unsafe {
            launch!(self, "scale_inplace", grid_for(len), &x.0, &l, &s);
        }
        Ok(())
    }

    /// Row softmax over the padded attention scores `[n_sent, heads, tmax, tmax]` in place.
    ///
    /// # Safety
    ///
    /// `probs` holds `n_sent · heads · tmax²` live values, `lens` `n_sent` `i32` values.
    pub unsafe fn softmax_forward_padded(
        &self,
        probs: DevPtr,
        lens: DevPtr,
        n_sent: usize,
        heads: usize,
        tmax: usize,
    ) -> Result<()> {
        let (s32, h32, t32) = (
            i32_of(n_sent, "sentences")?,
            i32_of(heads, "heads")?,
            i32_of(tmax, "tmax")?,
        );
        let cfg = LaunchConfig {
            grid_dim: (tmax as u32, heads as u32, n_sent as u32),
            block_dim: (row_threads(tmax), 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments follow `attention_softmax_forward_padded` in `encoder.cu`; one
        // block per score row of at most 256 threads, and the caller guarantees (`# Safety`) the
        // `probs` and `lens` sizes the grid covers.
        unsafe {
            launch!(
                self,
                "attention_softmax_forward_padded",
                cfg,
                &probs.0,
                &lens.0,
                &s32,
                &h32,
                &t32
            );
        }
        Ok(())
    }

    /// Softmax backward in place on `dprobs` (padded layout).
    ///
    /// # Safety
    ///
    /// As [`Gpu::softmax_forward_padded`], for `probs` and `dprobs`.
    pub unsafe fn softmax_backward_padded(
        &self,
        probs: DevPtr,
        dprobs: DevPtr,
        lens: DevPtr,
        n_sent: usize,
        heads: usize,
        tmax: usize,
    ) -> Result<()> {
        let (s32, h32, t32) = (
            i32_of(n_sent, "sentences")?,
            i32_of(heads, "heads")?,
            i32_of(tmax, "tmax")?,
        );
        let cfg = LaunchConfig {
            grid_dim: (tmax as u32, heads as u32, n_sent as u32),
            block_dim: (row_threads(tmax), 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments follow `attention_softmax_backward_padded` in `encoder.cu`; one
        // block per score row of at most 256 threads, and the caller guarantees (`# Safety`) the
        // `probs`, `dprobs` and `lens` sizes the grid covers.
        unsafe {
            launch!(
                self,
                "attention_softmax_backward_padded",
                cfg,
                &probs.0,
                &dprobs.0,
                &lens.0,
                &s32,
                &h32,
                &t32
            );
        }
        Ok(())
    }

    /// Packed `[N, heads·dh]` → padded `[n_sent, heads, tmax, dh]` (zeros past each sentence).
    ///
    /// # Safety
    ///
    /// `offsets` holds `n_sent + 1` `i32` values ending at `N`, `packed` `[N, heads·dh]` and
    /// `padded` `n_sent · heads · tmax · dh` live values.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn pack_to_padded(
        &self,
        packed: DevPtr,
        offsets: DevPtr,
        n_sent: usize,
        heads: usize,
        tmax: usize,
        dh: usize,
        padded: DevPtr,
    ) -> Result<()> {
        let (s32, h32, t32, d32) = (
            i32_of(n_sent, "sentences")?,
            i32_of(heads, "heads")?,
            i32_of(tmax, "tmax")?,
            i32_of(dh, "dh")?,
        );
        // SAFETY: the arguments follow `pack_to_padded` in `encoder.cu`; the caller guarantees (`#
        // Safety`) the offsets and both layouts, which bound every row the kernel reads or writes.
        unsafe {
            launch!(
                self,
                "pack_to_padded",
                grid_for(n_sent * heads * tmax * dh),
                &packed.0,
                &offsets.0,
                &s32,
                &h32,
                &t32,
                &d32,
                &padded.0
            );
        }
        Ok(())
    }

    /// Inverse of [`Gpu::pack_to_padded`] for the `n` packed rows.
    ///
    /// # Safety
    ///
    /// As [`Gpu::pack_to_padded`].
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn padded_to_pack(
        &self,
        padded: DevPtr,
        offsets: DevPtr,
        n: usize,
        n_sent: usize,
        heads: usize,
        tmax: usize,
        dh: usize,
        packed: DevPtr,
    ) -> Result<()> {
        let (s32, h32, t32, d32) = (
            i32_of(n_sent, "sentences")?,
            i32_of(heads, "heads")?,
            i32_of(tmax, "tmax")?,
            i32_of(dh, "dh")?,
        );
        // SAFETY: the arguments follow `padded_to_pack` in `encoder.cu`, which takes its row count
        // from `offsets[n_sent]`; the caller guarantees (`# Safety`) the offsets and both layouts.
        unsafe {
            launch!(
                self,
                "padded_to_pack",
                grid_for(n * heads * dh),
                &padded.0,
                &offsets.0,
                &s32,
                &h32,
                &t32,
                &d32,
                &packed.0
            );
        }
        Ok(())
    }

    /// One AdamW update of `len` values with the scalars `s` (see `adamw_update` in
    /// `optimiser.cu`, [`AdamWScalars::apply`] on the CPU).
    ///
    /// # Safety
    ///
    /// `w`, `g`, `m`, `v` hold `len` live values each.
    pub unsafe fn adamw(
        &self,
        w: DevPtr,
        g: DevPtr,
        m: DevPtr,
        v: DevPtr,
        len: usize,
        s: &AdamWScalars,
    ) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let l = len as i64;
        // SAFETY: the arguments follow `adamw_update` in `optimiser.cu`; the grid-stride loop
        // stays below `len`, and the caller guarantees (`# Safety`) `len` live values behind each
        // pointer.
        unsafe {
            launch!(
                self,
                "adamw_update",
                grid_for(len),
                &w.0,
                &g.0,
                &m.0,
                &v.0,
                &l,
                &s.step,
                &s.inv_bc2,
                &s.beta1,
                &s.beta2,
                &s.eps,
                &s.decay
            );
        }
        Ok(())
    }

    /// `*total += Σ x[i]²` (f64) over `len` values, through `partial` (at least
    /// [`SUMSQ_BLOCKS`] `f64` values).
    ///
    /// # Safety
    ///
    /// `x` holds `len` live `f32` values, `partial` [`SUMSQ_BLOCKS`] and `total` one `f64`.
    pub unsafe fn sum_squares_into(
        &self,
        x: DevPtr,
        len: usize,
        partial: DevPtr,
        total: DevPtr,
    ) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let blocks = len.div_ceil(256).clamp(1, SUMSQ_BLOCKS);
        let l = len as i64;
        let cfg = LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments follow `sum_squares_partial` and `sum_partials_accumulate` in
        // `optimiser.cu`; at most `SUMSQ_BLOCKS` blocks write one partial each, and the caller
        // guarantees (`# Safety`) the sizes of `x`, `partial` and `total`.
        unsafe {
            launch!(self, "sum_squares_partial", cfg, &x.0, &l, &partial.0);
            let count = blocks as i32;
            let one = LaunchConfig {
                grid_dim: (1, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            launch!(
                self,
                "sum_partials_accumulate",
                one,
                &partial.0,
                &count,
                &total.0
            );
        }
        Ok(())
    }
}

/// Blocks of the partial sums of squares (length of the `partial` buffer).
pub const SUMSQ_BLOCKS: usize = 1024;
