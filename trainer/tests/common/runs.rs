//! Helpers of the tests that run `ner-train meta` on the fixtures.

use std::path::{Path, PathBuf};

use ner_edge_trainer::train::RunOptions;

/// `fixtures/…` relative to the working directory (the repository root on a GPU machine that
/// runs copied test binaries), else relative to this crate's source.
pub fn fixture(rel: &str) -> PathBuf {
    let here = Path::new(rel);
    if here.exists() {
        return here.to_path_buf();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// A fresh, empty directory for run `name` of test binary `test`, unique to this process.
pub fn temp_run_dir(test: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ner-train-{test}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A fresh run into `out`: no resume, no stop, no progress bar.
pub fn run_options(out: &Path) -> RunOptions {
    RunOptions {
        out: out.to_path_buf(),
        resume: false,
        stop_after: None,
        progress: false,
        corpora: None,
        time_limit: None,
    }
}

/// The `loss` of every line of `out/log.jsonl`.
pub fn logged_losses(out: &Path) -> Vec<f64> {
    std::fs::read_to_string(out.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}
