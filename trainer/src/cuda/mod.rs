//! CUDA backend: backend selection, the embedded kernel sources and their NVRTC
//! compilation, and kernel loading through the driver.
//!
//! Everything CUDA is loaded at run time (cudarc's `dynamic-loading`), so the crate builds and
//! runs on machines without CUDA; [`detect`] probes, in this order and before any other CUDA
//! call, for the driver library, a device, NVRTC, a context and cuBLAS, and says why it settles
//! on the CPU. The CUDA training path ([`train`]) runs the encoder forward and backward on the GPU
//! ([`model`], GEMMs through cuBLAS in [`gemm`], kernel launches in [`dev`]) and the losses on
//! the CPU, behind the loop's [`crate::train::backend::StepBackend`] interface.

use std::fmt;

use anyhow::{bail, Result};

#[cfg(feature = "cuda")]
pub mod dev;
#[cfg(feature = "cuda")]
pub mod gemm;
#[cfg(feature = "cuda")]
mod kernels;
#[cfg(feature = "cuda")]
pub mod launch;
#[cfg(feature = "cuda")]
pub mod model;
#[cfg(feature = "cuda")]
pub mod nccl;
#[cfg(feature = "cuda")]
pub mod nvrtc;
#[cfg(feature = "cuda")]
pub mod ops;
#[cfg(feature = "cuda")]
pub mod train;

#[cfg(feature = "cuda")]
pub use kernels::{CudaKernels, DeviceInfo, TRAINING_KERNEL_FILES};
#[cfg(feature = "cuda")]
pub use train::open_step_backend;

/// Without the `cuda` feature there is no CUDA backend: opening it is an error.
#[cfg(not(feature = "cuda"))]
pub fn open_step_backend(
    _state: &crate::train::meta::TrainState,
    _config: &crate::train::config::TrainConfig,
    _distilling: bool,
) -> Result<Box<dyn crate::train::backend::StepBackend>> {
    bail!("this binary was built without the `cuda` feature")
}

/// One kernel family: its file under `trainer/kernels/` and its source, embedded in the binary.
#[derive(Clone, Copy, Debug)]
pub struct KernelSource {
    /// Path relative to the workspace root, used as the NVRTC program name, so compile errors
    /// read `trainer/kernels/<file>:<line>: ...`.
    pub path: &'static str,
    /// The CUDA C++ source.
    pub source: &'static str,
    /// The `extern "C" __global__` kernels it defines.
    pub kernels: &'static [&'static str],
}

/// The kernel families; training compiles the ones it launches ([`TRAINING_KERNEL_FILES`]),
/// the parity tests all of them.
pub const KERNEL_SOURCES: [KernelSource; 5] = [
    KernelSource {
        path: "trainer/kernels/encoder.cu",
        source: include_str!("../../kernels/encoder.cu"),
        kernels: &[
            "embedding_forward",
            "embedding_backward",
            "shape_embedding_add",
            "shape_embedding_backward",
            "column_sum_accumulate",
            "layernorm_forward",
            "layernorm_backward",
            "layernorm_param_backward",
            "gelu_forward",
            "gelu_recompute",
            "gelu_backward",
            "bias_residual_forward",
            "scale_inplace",
            "attention_softmax_forward_packed",
            "attention_softmax_backward_packed",
            "attention_softmax_forward_padded",
            "attention_softmax_backward_padded",
            "pack_to_padded",
            "padded_to_pack",
            "cast_f32_to_f16",
        ],
    },
    KernelSource {
        path: "trainer/kernels/ot.cu",
        source: include_str!("../../kernels/ot.cu"),
        kernels: &["ot_cost", "ot_sinkhorn", "ot_barycentric_map"],
    },
    KernelSource {
        path: "trainer/kernels/crf.cu",
        source: include_str!("../../kernels/crf.cu"),
        kernels: &["crf_forward", "crf_backward", "crf_viterbi"],
    },
    KernelSource {
        path: "trainer/kernels/fusion.cu",
        source: include_str!("../../kernels/fusion.cu"),
        kernels: &[
            "context_gate_forward",
            "context_gate_backward",
            "context_gate_param_backward",
        ],
    },
    KernelSource {
        path: "trainer/kernels/optimiser.cu",
        source: include_str!("../../kernels/optimiser.cu"),
        kernels: &[
            "adamw_update",
            "sum_squares_partial",
            "sum_partials_accumulate",
            "clip_scale",
        ],
    },
];

/// Names of the kernels declared in `source` as `extern "C" __global__ void NAME(` at the start
/// of a line, in order of appearance (the style every kernel file follows).
pub fn declared_kernels(source: &str) -> Vec<String> {
    source
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("extern \"C\" __global__ void "))
        .filter_map(|rest| rest.split('(').next())
        .map(|name| name.trim().to_string())
        .collect()
}

/// What the user asked for with `--backend`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendRequest {
    /// CUDA when a usable device is there, else the CPU (saying why on stderr).
    #[default]
    Auto,
    /// The CPU reference backend.
    Cpu,
    /// CUDA, or an error when there is no usable device.
    Cuda,
}

/// The backend settled on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The CPU reference backend ([`crate::backprop`]).
    Cpu,
    /// Encoder forward and backward on CUDA device 0, episode losses on the CPU (needs the
    /// `cuda` feature).
    Cuda,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Cpu => "cpu",
            Backend::Cuda => "cuda",
        })
    }
}

/// Why CUDA cannot be used here, or `None` when device 0 is usable (driver, device, NVRTC and a
/// context all present). Never panics: the libraries are probed before anything calls into them.
pub fn cuda_unavailable_reason() -> Option<String> {
    #[cfg(feature = "cuda")]
    {
        kernels::probe().err()
    }
    #[cfg(not(feature = "cuda"))]
    {
        Some("this binary was built without the `cuda` feature".to_string())
    }
}

/// Resolves `requested` to a backend: `Cpu` → CPU; `Auto` → CUDA when usable, else CPU with the
/// reason (for one line on stderr); `Cuda` → CUDA, or an error carrying the reason.
pub fn detect(requested: BackendRequest) -> Result<(Backend, Option<String>)> {
    match requested {
        BackendRequest::Cpu => Ok((Backend::Cpu, None)),
        BackendRequest::Auto => Ok(match cuda_unavailable_reason() {
            None => (Backend::Cuda, None),
            Some(why) => (Backend::Cpu, Some(why)),
        }),
        BackendRequest::Cuda => match cuda_unavailable_reason() {
            None => Ok((Backend::Cuda, None)),
            Some(why) => bail!("--backend cuda: {why}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_lists_match_the_sources() {
        for k in &KERNEL_SOURCES {
            assert_eq!(declared_kernels(k.source), k.kernels, "{}", k.path);
        }
    }

    #[test]
    fn cpu_is_always_available_and_auto_never_fails() {
        assert_eq!(detect(BackendRequest::Cpu).unwrap(), (Backend::Cpu, None));
        let (backend, why) = detect(BackendRequest::Auto).unwrap();
        assert_eq!(backend == Backend::Cpu, why.is_some());
        match detect(BackendRequest::Cuda) {
            Ok((b, None)) => assert_eq!(b, Backend::Cuda),
            Ok(other) => panic!("{other:?}"),
            Err(e) => assert!(e.to_string().starts_with("--backend cuda: "), "{e}"),
        }
    }
}
