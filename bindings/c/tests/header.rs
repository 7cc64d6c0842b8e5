//! The committed C header `include/ner_edge.h` is what cbindgen makes of `src/` now, and it
//! compiles as C and as C++ with every warning an error.
//!
//! Regenerate it after changing the API: `NER_EDGE_BLESS=1 cargo test -p ner-edge-c --test header`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn header_path() -> PathBuf {
    crate_dir().join("include/ner_edge.h")
}

/// The header as cbindgen generates it from `src/` with `cbindgen.toml`.
fn generate() -> String {
    let dir = crate_dir();
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml"))
        .unwrap_or_else(|e| panic!("bindings/c/cbindgen.toml: {e}"));
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/lib.rs"))
        .generate()
        .unwrap_or_else(|e| panic!("cbindgen failed on bindings/c/src: {e}"));
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("cbindgen wrote UTF-8")
}

#[test]
fn committed_header_is_fresh() {
    let fresh = generate();
    let path = header_path();
    if std::env::var_os("NER_EDGE_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &fresh).unwrap();
        eprintln!("wrote {}", path.display());
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != fresh {
        let line = committed
            .lines()
            .zip(fresh.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(fresh.lines().count()));
        panic!(
            "bindings/c/include/ner_edge.h is stale: it differs from what cbindgen generates from \
             bindings/c/src at line {}:\n  committed: {:?}\n  generated: {:?}\nregenerate it with\n  \
             NER_EDGE_BLESS=1 cargo test -p ner-edge-c --test header\nand commit it",
            line + 1,
            committed.lines().nth(line).unwrap_or("<end of file>"),
            fresh.lines().nth(line).unwrap_or("<end of file>"),
        );
    }
}

/// Compiles `source` (which includes the header) with `compiler` and `flags`; `false` when the
/// compiler is not installed.
fn compiles(compiler: &str, flags: &[&str], source: &str, ext: &str) -> bool {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ner-edge-c-header");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("uses_header.{ext}"));
    std::fs::write(&file, source).unwrap();
    let include = crate_dir().join("include");
    let mut cmd = Command::new(compiler);
    cmd.args(flags)
        .arg("-I")
        .arg(&include)
        .arg("-fsyntax-only")
        .arg(&file);
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
        Err(e) => panic!("cannot run {compiler}: {e}"),
    };
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

/// Uses every type, so that a struct the header only declares would fail to compile.
const USES_HEADER: &str = r#"#include "ner_edge.h"
#include <stdio.h>
int main(void) {
    NerEdgeModel *model = NULL;
    NerEdgeEntities *entities = NULL;
    NerEdgeOptions *options = NULL;
    NerEdgeStatus status = ner_edge_options_new(&options);
    const NerEdgeEntity *e = ner_edge_entities_get(entities, 0);
    size_t n = e != NULL ? e->end - e->start + e->char_end - e->char_start + e->type_index : 0;
    printf("%s %s %s %zu %d\n", ner_edge_version(), ner_edge_status_name(status),
           ner_edge_last_error(), n, (int)NER_EDGE_STATUS_INTERNAL);
    ner_edge_options_free(options);
    ner_edge_entities_free(entities);
    ner_edge_model_free(model);
    return 0;
}
"#;

#[test]
fn header_compiles_as_c_and_cpp() {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    for std in ["-std=c99", "-std=c11"] {
        let flags = [std, "-Wall", "-Wextra", "-Werror", "-pedantic"];
        assert!(
            compiles(&cc, &flags, USES_HEADER, "c"),
            "C compiler {cc:?} not found (set CC)"
        );
    }
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let flags = ["-std=c++11", "-Wall", "-Wextra", "-Werror", "-pedantic"];
    if !compiles(&cxx, &flags, USES_HEADER, "cpp") {
        eprintln!("skipping the C++ check: C++ compiler {cxx:?} not found (set CXX)");
    }
}
