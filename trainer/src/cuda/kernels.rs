//! Device probing and kernel loading through the CUDA driver.
//!
//! Not exercised without a GPU: on a CUDA machine, [`CudaKernels::load`] compiles kernel
//! families for the device's architecture and loads each listed kernel, so a missing or misnamed
//! kernel fails at start-up rather than at first launch. Training compiles only the families it
//! launches ([`TRAINING_KERNEL_FILES`]); the parity tests compile them all.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::Ptx;

use super::{nvrtc, KERNEL_SOURCES};

/// The device a context was opened on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// CUDA device index, as given to [`CudaKernels::load`].
    pub ordinal: usize,
    /// Device name as the driver reports it (`unknown device` when it cannot be read).
    pub name: String,
    /// NVRTC architecture, e.g. `sm_90`.
    pub arch: String,
}

/// Checks, in this order, that the driver library loads, that it reports a device, that NVRTC
/// loads, that a context opens on device 0 and that cuBLAS (which the training path needs)
/// loads; returns the first failure as a one-line reason.
pub(super) fn probe() -> Result<DeviceInfo, String> {
    let (_, info) = open_device(0)?;
    // SAFETY: only tries to open libcublas by its candidate names; calls nothing in it.
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return Err("cuBLAS missing (libcublas.so.13 not found on the loader path)".into());
    }
    Ok(info)
}

fn open_device(ordinal: usize) -> Result<(Arc<CudaContext>, DeviceInfo), String> {
    // SAFETY: only tries to open libcuda by its candidate names; calls nothing in it.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("no CUDA driver found (libcuda.so.1 not loadable)".into());
    }
    let count = CudaContext::device_count()
        .map_err(|e| format!("CUDA driver present but not usable ({e})"))?;
    if count <= ordinal as i32 {
        return Err(if count == 0 {
            "no CUDA device (the driver reports none)".to_string()
        } else {
            format!("no CUDA device {ordinal} (the driver reports {count})")
        });
    }
    nvrtc::available()?;
    let ctx = CudaContext::new(ordinal)
        .map_err(|e| format!("cannot open a CUDA context on device {ordinal} ({e})"))?;
    let (major, minor) = ctx
        .compute_capability()
        .map_err(|e| format!("cannot read the compute capability ({e})"))?;
    let name = ctx.name().unwrap_or_else(|_| "unknown device".into());
    Ok((
        ctx,
        DeviceInfo {
            ordinal,
            name,
            arch: nvrtc::arch_for(major, minor),
        },
    ))
}

/// The kernel files whose kernels the training step launches (through [`super::dev::Gpu`]);
/// the others (OT, CRF, context gate) are compiled only by the parity tests.
pub const TRAINING_KERNEL_FILES: [&str; 2] =
    ["trainer/kernels/encoder.cu", "trainer/kernels/optimiser.cu"];

/// Kernels of [`KERNEL_SOURCES`], compiled for one device and loaded into its context.
pub struct CudaKernels {
    /// The context the modules are loaded into; streams launching these kernels must belong
    /// to it.
    pub ctx: Arc<CudaContext>,
    /// The device of [`CudaKernels::ctx`].
    pub device: DeviceInfo,
    functions: HashMap<&'static str, CudaFunction>,
    _modules: Vec<Arc<CudaModule>>,
}

impl CudaKernels {
    /// Opens device `ordinal`, compiles each kernel file with NVRTC for its architecture and
    /// loads every kernel. Errors name the file and line (compilation) or the kernel (loading).
    pub fn load(ordinal: usize) -> Result<CudaKernels> {
        let all: Vec<&str> = KERNEL_SOURCES.iter().map(|k| k.path).collect();
        CudaKernels::load_files(ordinal, &all)
    }

    /// [`CudaKernels::load`] of the kernel files named in `files` (paths as in
    /// [`KERNEL_SOURCES`]) only; an unknown name is an error.
    pub fn load_files(ordinal: usize, files: &[&str]) -> Result<CudaKernels> {
        if let Some(unknown) = files
            .iter()
            .find(|f| !KERNEL_SOURCES.iter().any(|k| k.path == **f))
        {
            return Err(anyhow!("no kernel file {unknown} in KERNEL_SOURCES"));
        }
        let (ctx, device) = open_device(ordinal).map_err(|e| anyhow!(e))?;
        let mut functions = HashMap::new();
        let mut modules = Vec::new();
        for k in KERNEL_SOURCES.iter().filter(|k| files.contains(&k.path)) {
            let cubin = nvrtc::compile_cubin(k, &device.arch)?;
            let module = ctx
                .load_module(Ptx::from_binary(cubin))
                .with_context(|| format!("loading the cubin of {} on {}", k.path, device.name))?;
            for &name in k.kernels {
                let f = module
                    .load_function(name)
                    .with_context(|| format!("kernel {name} of {}", k.path))?;
                functions.insert(name, f);
            }
            modules.push(module);
        }
        Ok(CudaKernels {
            ctx,
            device,
            functions,
            _modules: modules,
        })
    }

    /// The loaded kernel `name`.
    pub fn function(&self, name: &str) -> Result<&CudaFunction> {
        self.functions.get(name).ok_or_else(|| {
            anyhow!("kernel {name} is not loaded (its file was not compiled at start-up)")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel the training launch layer (`dev.rs`) launches is in a file that
    /// [`TRAINING_KERNEL_FILES`] compiles, so training never meets an unloaded kernel.
    #[test]
    fn every_kernel_training_launches_is_compiled_for_training() {
        let dev = include_str!("dev.rs");
        let launched: Vec<&str> = dev
            .match_indices("launch!(")
            .filter_map(|(at, _)| {
                let rest = &dev[at..];
                let open = rest.find('"')?;
                let close = rest[open + 1..].find('"')?;
                Some(&rest[open + 1..open + 1 + close])
            })
            .filter(|name| !name.contains('$'))
            .collect();
        assert!(launched.len() >= 15, "{launched:?}");
        let training: Vec<&str> = KERNEL_SOURCES
            .iter()
            .filter(|k| TRAINING_KERNEL_FILES.contains(&k.path))
            .flat_map(|k| k.kernels.iter().copied())
            .collect();
        for name in &launched {
            assert!(
                training.contains(name),
                "{name} is launched but not compiled for training"
            );
        }
        assert_eq!(
            TRAINING_KERNEL_FILES
                .iter()
                .filter(|f| KERNEL_SOURCES.iter().any(|k| k.path == **f))
                .count(),
            TRAINING_KERNEL_FILES.len()
        );
    }
}
