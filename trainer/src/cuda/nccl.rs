//! NCCL ranks: data-parallel training with one process per GPU ([`NcclRank`], a
//! [`Collective`]).
//!
//! NCCL is loaded at run time like the rest of CUDA. cudarc looks it up by the names of
//! [`cudarc::get_lib_name_candidates`] (`libnccl.so`, ...), which do not include `libnccl.so.2`,
//! the name NVIDIA's `nvidia-nccl-cu13` wheel ships; `ner-train meta --gpus N` therefore puts a
//! `libnccl.so` link to `$NER_EDGE_NCCL_DIR/libnccl.so.2` on its ranks' `LD_LIBRARY_PATH`
//! ([`library_dir_for_ranks`]). [`nccl_unavailable_reason`] is checked before any NCCL call,
//! because cudarc panics when the library is missing.

use std::any::Any;
use std::ffi::{c_char, c_void};
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use cudarc::driver::{CudaContext, CudaStream};
use cudarc::nccl::{result as nccl, sys};

use super::dev::{DevBuf, DevPtr};
use crate::train::collective::Collective;

/// Environment variable naming a directory that holds `libnccl.so.2` (e.g. the `lib` folder of
/// the `nvidia-nccl-cu13` wheel).
pub const NCCL_DIR_VAR: &str = "NER_EDGE_NCCL_DIR";

/// Size of an NCCL unique id in bytes.
pub const ID_BYTES: usize = 128;

/// Why NCCL cannot be used in this process, or `None` when a library of one of cudarc's names
/// loads.
pub fn nccl_unavailable_reason() -> Option<String> {
    let names = cudarc::get_lib_name_candidates("nccl");
    for name in &names {
        // SAFETY: loading NCCL runs its initialisers, which have no preconditions; the handle
        // is dropped at once (cudarc loads it again, by the same name, and keeps it).
        if unsafe { libloading::Library::new(name) }.is_ok() {
            return None;
        }
    }
    Some(format!(
        "no NCCL library could be loaded (tried {}); put its directory on LD_LIBRARY_PATH, or \
         set {NCCL_DIR_VAR} to a directory holding libnccl.so.2 and start the ranks with \
         `ner-train meta --gpus N`",
        names.join(", ")
    ))
}

/// A directory for the ranks' `LD_LIBRARY_PATH` in which `libnccl.so` links to the newest
/// `libnccl.so.*` of `$NER_EDGE_NCCL_DIR`, created under `scratch`; `None` when the variable
/// is unset.
pub fn library_dir_for_ranks(scratch: &Path) -> Result<Option<PathBuf>> {
    let Some(dir) = std::env::var_os(NCCL_DIR_VAR) else {
        return Ok(None);
    };
    let dir = PathBuf::from(dir);
    let mut libs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("{NCCL_DIR_VAR}={}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libnccl.so"))
        })
        .collect();
    libs.sort();
    let Some(lib) = libs.pop() else {
        bail!("{NCCL_DIR_VAR}={}: no libnccl.so* there", dir.display());
    };
    let lib = lib
        .canonicalize()
        .with_context(|| format!("resolving {}", lib.display()))?;
    let links = scratch.join("nccl-lib");
    std::fs::create_dir_all(&links).with_context(|| format!("creating {}", links.display()))?;
    let link = links.join("libnccl.so");
    let _ = std::fs::remove_file(&link);
    #[cfg(unix)]
    std::os::unix::fs::symlink(&lib, &link)
        .with_context(|| format!("linking {} to {}", link.display(), lib.display()))?;
    #[cfg(not(unix))]
    std::fs::copy(&lib, &link)
        .with_context(|| format!("copying {} to {}", lib.display(), link.display()))?;
    Ok(Some(links))
}

/// A new NCCL unique id (rank 0 makes it; every rank of the run needs the same one).
pub fn new_id() -> Result<[u8; ID_BYTES]> {
    if let Some(why) = nccl_unavailable_reason() {
        bail!("{why}");
    }
    let id = nccl::get_uniqueid().map_err(|e| anyhow::anyhow!("ncclGetUniqueId: {e:?}"))?;
    Ok(id.internal.map(|c| c as u8))
}

/// One rank of an NCCL communicator on CUDA device 0 of this process (a launcher gives each
/// rank its GPU through `CUDA_VISIBLE_DEVICES`).
pub struct NcclRank {
    comm: sys::ncclComm_t,
    rank: usize,
    world: usize,
    stream: Arc<CudaStream>,
}

// SAFETY: an NCCL communicator may be used from any thread as long as calls on it are not
// concurrent; `NcclRank` is used through `&mut self` only.
unsafe impl Send for NcclRank {}

impl NcclRank {
    /// Joins the communicator `id` as `rank` of `world` ranks (blocks until every rank has
    /// joined).
    pub fn join(rank: usize, world: usize, id: &[u8; ID_BYTES]) -> Result<NcclRank> {
        ensure!(
            world >= 1 && rank < world,
            "rank {rank} of {world} ranks is not a rank"
        );
        if let Some(why) = nccl_unavailable_reason() {
            bail!("{why}");
        }
        let ctx = CudaContext::new(0).context("opening CUDA device 0 for NCCL")?;
        ctx.bind_to_thread().context("binding the CUDA context")?;
        let stream = ctx.default_stream();
        let unique = sys::ncclUniqueId {
            internal: id.map(|b| b as c_char),
        };
        let mut comm = MaybeUninit::uninit();
        // SAFETY: `comm` is a valid place for the communicator handle, which ncclCommInitRank
        // writes before returning success.
        let comm = unsafe {
            nccl::comm_init_rank(comm.as_mut_ptr(), world as i32, unique, rank as i32)
                .map_err(|e| anyhow::anyhow!("ncclCommInitRank (rank {rank} of {world}): {e:?}"))?;
            comm.assume_init()
        };
        Ok(NcclRank {
            comm,
            rank,
            world,
            stream,
        })
    }

    /// Sums `len` `f32` values at `values` over the ranks, in place, ordered on `stream`.
    ///
    /// # Safety
    ///
    /// `values` must address `len` live `f32` values on this process's device 0, not used by
    /// other work until `stream` reaches this operation's end.
    pub unsafe fn all_reduce_device(
        &mut self,
        values: DevPtr,
        len: usize,
        stream: &CudaStream,
    ) -> Result<()> {
        let p = values.0 as *mut c_void;
        // SAFETY: the caller guarantees `len` live values at `values` (in and out buffer are
        // the same, which NCCL allows); `self.comm` is a live communicator.
        unsafe {
            nccl::all_reduce(
                p as *const c_void,
                p,
                len,
                sys::ncclDataType_t::ncclFloat32,
                sys::ncclRedOp_t::ncclSum,
                self.comm,
                stream.cu_stream() as sys::cudaStream_t,
            )
        }
        .map_err(|e| anyhow::anyhow!("ncclAllReduce of {len} values: {e:?}"))?;
        Ok(())
    }

    fn gather_u64(&mut self, value: u64) -> Result<Vec<u64>> {
        let send = DevBuf::from_host(&self.stream, &[value])?;
        let recv = DevBuf::<u64>::zeros(&self.stream, self.world)?;
        // SAFETY: `send` holds 1 value and `recv` `world` values, both live until the
        // download below synchronises the stream.
        unsafe {
            nccl::all_gather(
                send.ptr().0 as *const c_void,
                recv.ptr().0 as *mut c_void,
                1,
                sys::ncclDataType_t::ncclUint64,
                self.comm,
                self.stream.cu_stream() as sys::cudaStream_t,
            )
        }
        .map_err(|e| anyhow::anyhow!("ncclAllGather of lengths: {e:?}"))?;
        let mut out = vec![0u64; self.world];
        recv.download(&self.stream, 0, &mut out)?;
        Ok(out)
    }
}

impl Collective for NcclRank {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.world
    }
    fn all_reduce_sum(&mut self, values: &mut [f32]) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        let buf = DevBuf::from_host(&self.stream, values)?;
        let stream = Arc::clone(&self.stream);
        // SAFETY: `buf` holds `values.len()` live values until the download below synchronises
        // the stream the reduction is ordered on.
        unsafe { self.all_reduce_device(buf.ptr(), values.len(), &stream)? };
        buf.download(&self.stream, 0, values)
    }
    fn all_gather(&mut self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        let lens = self.gather_u64(mine.len() as u64)?;
        let width = lens.iter().copied().max().unwrap_or(0) as usize;
        let mut padded = mine.to_vec();
        padded.resize(width.max(1), 0);
        let send = DevBuf::from_host(&self.stream, &padded)?;
        let recv = DevBuf::<u8>::zeros(&self.stream, padded.len() * self.world)?;
        // SAFETY: `send` holds `padded.len()` bytes and `recv` `world` times as many, both
        // live until the download below synchronises the stream.
        unsafe {
            nccl::all_gather(
                send.ptr().0 as *const c_void,
                recv.ptr().0 as *mut c_void,
                padded.len(),
                sys::ncclDataType_t::ncclUint8,
                self.comm,
                self.stream.cu_stream() as sys::cudaStream_t,
            )
        }
        .map_err(|e| anyhow::anyhow!("ncclAllGather of {} bytes: {e:?}", padded.len()))?;
        let mut all = vec![0u8; padded.len() * self.world];
        recv.download(&self.stream, 0, &mut all)?;
        Ok(all
            .chunks(padded.len())
            .zip(&lens)
            .map(|(c, &n)| c[..n as usize].to_vec())
            .collect())
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl Drop for NcclRank {
    fn drop(&mut self) {
        // SAFETY: `self.comm` is a live communicator, destroyed once here.
        let _ = unsafe { nccl::comm_destroy(self.comm) };
    }
}
