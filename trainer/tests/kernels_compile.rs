//! Every kernel file compiles with NVRTC for sm_80 and sm_90, and a compile error is reported
//! as `trainer/kernels/<file>:<line>`. Needs NVRTC (no GPU): without it the tests print
//! `skipped: NVRTC not found (...)` and pass, unless `NER_EDGE_REQUIRE_NVRTC=1`.

#![cfg(feature = "cuda")]

use ner_edge_trainer::cuda::{nvrtc, KERNEL_SOURCES};

const ARCHS: [&str; 2] = ["sm_80", "sm_90"];

/// `true` when NVRTC is usable; otherwise prints why and returns `false`, or panics when
/// `NER_EDGE_REQUIRE_NVRTC=1`.
fn nvrtc_or_skip() -> bool {
    match nvrtc::available() {
        Ok(()) => true,
        Err(why) => {
            let required = std::env::var("NER_EDGE_REQUIRE_NVRTC").is_ok_and(|v| v == "1");
            assert!(!required, "NER_EDGE_REQUIRE_NVRTC=1 but {why}");
            println!("skipped: NVRTC not found ({why})");
            false
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn every_kernel_file_compiles_for_sm80_and_sm90() {
    if !nvrtc_or_skip() {
        return;
    }
    let version = nvrtc::version().expect("NVRTC version");
    println!(
        "NVRTC {}.{}, include dirs {:?}",
        version.0,
        version.1,
        nvrtc::include_dirs()
    );
    let mut failures = Vec::new();
    for k in &KERNEL_SOURCES {
        for arch in ARCHS {
            match nvrtc::compile_cubin(k, arch) {
                Ok(cubin) => {
                    assert!(
                        cubin.starts_with(b"\x7fELF"),
                        "{} for {arch}: not an ELF cubin",
                        k.path
                    );
                    for name in k.kernels {
                        assert!(
                            contains(&cubin, name.as_bytes()),
                            "{} for {arch}: kernel {name} missing from the cubin",
                            k.path
                        );
                    }
                    println!("{} for {arch}: {} bytes", k.path, cubin.len());
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn compile_errors_name_the_kernel_file_and_line() {
    if !nvrtc_or_skip() {
        return;
    }
    for k in &KERNEL_SOURCES {
        let body = k.source.trim_end();
        let line = body.lines().count() + 2;
        let broken =
            format!("{body}\n\n__device__ int ne_broken() {{ return ne_undefined_identifier; }}\n");
        let err = nvrtc::compile_source(k.path, &broken, "sm_80", &nvrtc::include_dirs())
            .expect_err("a source with an undefined identifier must not compile");
        let want = format!("{}:{line}: error", k.path);
        assert!(err.path == k.path && err.arch == "sm_80", "{err:?}");
        assert!(err.code.contains("COMPILATION"), "{err}");
        assert!(err.log.contains(&want), "expected `{want}` in:\n{err}");
        assert!(err.to_string().contains("ne_undefined_identifier"), "{err}");
    }
}
