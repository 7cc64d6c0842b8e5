//! Compilation of the embedded kernel sources with NVRTC to a cubin for one GPU architecture.
//!
//! NVRTC (`libnvrtc.so.13` and its `libnvrtc-builtins.so.13.*`) is found by the dynamic loader
//! (`LD_LIBRARY_PATH`, the system paths), or taken from the directory in `NER_EDGE_NVRTC_DIR`,
//! whose libraries are pre-loaded by absolute path so the loader's later look-up by name finds
//! them. Headers such as `cuda_fp16.h` come from the directories in `NER_EDGE_CUDA_INCLUDE`
//! (`:`-separated), `$CUDA_HOME/include`, `$CUDA_PATH/include` and `/usr/local/cuda/include`,
//! those that exist.

use std::ffi::{c_char, CString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cudarc::nvrtc::{result, sys};

use super::KernelSource;

/// Environment variable naming a directory holding `libnvrtc.so.13` and its builtins.
pub const NVRTC_DIR_VAR: &str = "NER_EDGE_NVRTC_DIR";
/// Environment variable with extra include directories, `:`-separated.
pub const INCLUDE_VAR: &str = "NER_EDGE_CUDA_INCLUDE";

/// A failed compilation: the kernel file, and NVRTC's diagnostics with each `file(line): msg`
/// rewritten as `file:line: msg`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileError {
    /// The kernel file as named to NVRTC (e.g. `trainer/kernels/crf.cu`).
    pub path: String,
    /// Target architecture, e.g. `sm_90`.
    pub arch: String,
    /// NVRTC's error code, e.g. `NVRTC_ERROR_COMPILATION`.
    pub code: String,
    /// The program log after [`map_log_lines`]; empty when compilation never started.
    pub log: String,
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "NVRTC failed to compile {} for {} ({})",
            self.path, self.arch, self.code
        )?;
        for line in self.log.lines().filter(|l| !l.trim().is_empty()) {
            write!(f, "\n  {line}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CompileError {}

/// Rewrites NVRTC's `name(123): error: ...` lines to `name:123: error: ...`; other lines pass.
pub fn map_log_lines(log: &str) -> String {
    let mut out = String::new();
    for line in log.lines() {
        let mapped = line.find("): ").and_then(|close| {
            let open = line[..close].rfind('(')?;
            let num = &line[open + 1..close];
            (!num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()))
                .then(|| format!("{}:{}: {}", &line[..open], num, &line[close + 3..]))
        });
        out.push_str(mapped.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Loads NVRTC from `NER_EDGE_NVRTC_DIR` once, if set; the error says what was missing.
fn preload_from_dir() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let Some(dir) = std::env::var_os(NVRTC_DIR_VAR) else {
            return Ok(());
        };
        let dir = PathBuf::from(dir);
        let entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| format!("{NVRTC_DIR_VAR}={}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        let pick = |prefix: &str| {
            let mut v: Vec<&PathBuf> = entries
                .iter()
                .filter(|p| {
                    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    name.starts_with(prefix) && !name.contains(".alt.")
                })
                .collect();
            v.sort();
            v.first().map(|p| (*p).clone())
        };
        // The builtins first: libnvrtc opens them by name when it compiles.
        for prefix in ["libnvrtc-builtins.so", "libnvrtc.so"] {
            let Some(path) = pick(prefix) else {
                return Err(format!(
                    "{NVRTC_DIR_VAR}={} holds no {prefix}*",
                    dir.display()
                ));
            };
            // SAFETY: loading NVRTC runs only its initialisers; the handle is kept for the
            // life of the process (leaked) so cudarc's later look-up by soname finds it.
            let lib = unsafe { libloading::Library::new(&path) }
                .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
            std::mem::forget(lib);
        }
        Ok(())
    })
    .clone()
}

/// `Ok` when NVRTC can be called, else why not (`NVRTC missing (...)`).
pub fn available() -> Result<(), String> {
    preload_from_dir().map_err(|e| format!("NVRTC missing ({e})"))?;
    // SAFETY: only tries to open the library by its candidate names.
    if unsafe { sys::is_culib_present() } {
        Ok(())
    } else {
        Err(format!(
            "NVRTC missing (libnvrtc.so.13 not found on the loader path; set LD_LIBRARY_PATH \
             or {NVRTC_DIR_VAR})"
        ))
    }
}

/// NVRTC's version `(major, minor)`. Call [`available`] first.
pub fn version() -> Result<(i32, i32), String> {
    available()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: NVRTC is loadable (checked above); both pointers are valid.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| format!("nvrtcVersion: {e}"))?;
    Ok((major, minor))
}

/// The include directories handed to NVRTC (see the module docs), those that exist.
pub fn include_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var(INCLUDE_VAR)
        .map(|v| {
            v.split(':')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default();
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(root) = std::env::var_os(var) {
            dirs.push(Path::new(&root).join("include"));
        }
    }
    dirs.push(PathBuf::from("/usr/local/cuda/include"));
    dirs.retain(|d| d.is_dir());
    dirs
}

/// Architecture name for a compute capability, e.g. `(9, 0)` → `sm_90`.
pub fn arch_for(major: i32, minor: i32) -> String {
    format!("sm_{major}{minor}")
}

/// Compiles `kernel` for `arch` (e.g. `sm_90`) to a cubin, with [`include_dirs`]. The caller
/// must have checked [`available`] (calling NVRTC when it is absent panics inside cudarc).
pub fn compile_cubin(kernel: &KernelSource, arch: &str) -> Result<Vec<u8>, CompileError> {
    compile_source(kernel.path, kernel.source, arch, &include_dirs())
}

/// [`compile_cubin`] for any source, named `path` in diagnostics.
pub fn compile_source(
    path: &str,
    source: &str,
    arch: &str,
    includes: &[PathBuf],
) -> Result<Vec<u8>, CompileError> {
    let fail = |code: String, log: String| CompileError {
        path: path.to_string(),
        arch: arch.to_string(),
        code,
        log,
    };
    let src = CString::new(source).map_err(|_| fail("NUL in source".into(), String::new()))?;
    let name = CString::new(path).map_err(|_| fail("NUL in name".into(), String::new()))?;
    let mut options = vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_string(),
        "--device-as-default-execution-space".to_string(),
    ];
    options.extend(
        includes
            .iter()
            .map(|d| format!("--include-path={}", d.display())),
    );
    let prog =
        result::create_program(&src, Some(&name)).map_err(|e| fail(e.to_string(), "".into()))?;
    // SAFETY: `prog` was created above and is destroyed exactly once, below; `src` and `name`
    // outlive it.
    let out = unsafe {
        let compiled = result::compile_program(prog, &options);
        let log = result::get_program_log(prog)
            .map(|chars| c_chars_to_string(&chars))
            .unwrap_or_default();
        let out = match compiled {
            Err(e) => Err(fail(format!("{:?}", e.0), map_log_lines(&log))),
            Ok(()) => get_cubin(prog).map_err(|e| fail(e, map_log_lines(&log))),
        };
        let _ = result::destroy_program(prog);
        out
    };
    out
}

/// The cubin of a compiled program.
///
/// # Safety
///
/// `prog` must be a live program compiled for a real architecture (`sm_XX`).
unsafe fn get_cubin(prog: sys::nvrtcProgram) -> Result<Vec<u8>, String> {
    let mut size = 0usize;
    // SAFETY: `prog` is a live, compiled program (caller's obligation, `# Safety`); `size` is a
    // valid place for the result.
    unsafe { sys::nvrtcGetCUBINSize(prog, &mut size) }
        .result()
        .map_err(|e| format!("nvrtcGetCUBINSize: {e}"))?;
    if size == 0 {
        return Err("NVRTC produced an empty cubin".into());
    }
    let mut buf = vec![0u8; size];
    // SAFETY: `prog` is live and compiled (`# Safety`), and `buf` holds the `size` bytes NVRTC
    // reported for its cubin.
    unsafe { sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut c_char) }
        .result()
        .map_err(|e| format!("nvrtcGetCUBIN: {e}"))?;
    Ok(buf)
}

fn c_chars_to_string(chars: &[c_char]) -> String {
    let bytes: Vec<u8> = chars
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_name_file_and_line() {
        let log = "trainer/kernels/crf.cu(12): error: identifier \"x\" is undefined\n\n\
                   1 error detected in the compilation of \"trainer/kernels/crf.cu\".\n";
        let mapped = map_log_lines(log);
        assert!(
            mapped.starts_with("trainer/kernels/crf.cu:12: error: identifier \"x\" is undefined\n"),
            "{mapped}"
        );
        assert!(mapped.contains("1 error detected in the compilation"));
        assert_eq!(map_log_lines("f(x): no"), "f(x): no\n");
    }

    #[test]
    fn arch_names() {
        assert_eq!(arch_for(9, 0), "sm_90");
        assert_eq!(arch_for(8, 6), "sm_86");
    }
}
