//! What the integration tests (of this crate and of `ner-edge-corpus`) share: how a test that
//! needs files outside the repository (`../shared`) decides to skip.
//!
//! Only a missing file may skip a test, and it says so. With `NER_EDGE_REQUIRE_DATA=1` (set by
//! `.ci/run` when `../shared/data` is present) a missing file fails the test instead. Any other
//! error reading the file fails the test.

use std::path::Path;

/// Whether `NER_EDGE_REQUIRE_DATA=1` is set.
fn data_required() -> bool {
    std::env::var("NER_EDGE_REQUIRE_DATA").is_ok_and(|v| v == "1")
}

/// True when `path` exists. When it does not, prints why the calling test is skipped and
/// returns false, or panics under `NER_EDGE_REQUIRE_DATA=1`.
pub fn present(path: &Path) -> bool {
    match std::fs::metadata(path) {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                !data_required(),
                "{} not found, and NER_EDGE_REQUIRE_DATA=1 forbids skipping",
                path.display()
            );
            eprintln!("skipped: {} not found", path.display());
            false
        }
        Err(e) => panic!("cannot read {}: {e}", path.display()),
    }
}

/// The text of `path`; `None` (the test skips, see [`present`]) only when it does not exist.
#[allow(dead_code)]
pub fn read_if_present(path: &Path) -> Option<String> {
    if !present(path) {
        return None;
    }
    Some(
        std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display())),
    )
}
