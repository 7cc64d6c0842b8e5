//! `ner-train meta --gpus N`: one rank process per GPU, joined over NCCL.
//!
//! The launcher starts N copies of the running `ner-train` with `--rank R --world-size N`,
//! gives rank R the R-th GPU of `CUDA_VISIBLE_DEVICES` (all GPUs when unset) as its only
//! device, and puts NCCL on their library path (see [`super::nccl`]). Rank 0 makes the NCCL
//! unique id and writes it to a file in `OUT/ranks/`, where the other ranks read it. When a
//! rank fails, the launcher stops the others and reports which one failed.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use super::nccl::{self, ID_BYTES};

/// How long a rank waits for rank 0's NCCL id.
const ID_WAIT: Duration = Duration::from_secs(300);

/// The folder under a run's output directory where the launcher and its ranks keep their
/// rendezvous files.
pub fn ranks_dir(out: &Path) -> PathBuf {
    out.join("ranks")
}

/// Runs `rank_args` (a `ner-train meta` command line without the program name) as `gpus`
/// rank processes and waits for all of them; fails as soon as one fails.
pub fn launch(gpus: usize, out: &Path, rank_args: &[OsString]) -> Result<()> {
    ensure!(gpus >= 1, "--gpus must be at least 1");
    let exe = std::env::current_exe().context("finding the ner-train executable")?;
    let dir = ranks_dir(out);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let id_file = dir.join("nccl-id");
    let _ = std::fs::remove_file(&id_file);
    let visible: Vec<String> = match std::env::var("CUDA_VISIBLE_DEVICES") {
        Ok(v) if !v.trim().is_empty() => v.split(',').map(|d| d.trim().to_string()).collect(),
        _ => (0..gpus).map(|g| g.to_string()).collect(),
    };
    ensure!(
        visible.len() >= gpus,
        "--gpus {gpus}, but CUDA_VISIBLE_DEVICES names {} devices",
        visible.len()
    );
    let library_path = match nccl::library_dir_for_ranks(&dir)? {
        Some(links) => {
            let mut paths = vec![links];
            if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
                paths.extend(std::env::split_paths(&old));
            }
            Some(std::env::join_paths(paths).context("building LD_LIBRARY_PATH")?)
        }
        None => None,
    };
    let mut children: Vec<(usize, Child)> = Vec::with_capacity(gpus);
    for (rank, device) in visible.iter().take(gpus).enumerate() {
        let mut cmd = Command::new(&exe);
        cmd.args(rank_args)
            .arg("--rank")
            .arg(rank.to_string())
            .arg("--world-size")
            .arg(gpus.to_string())
            .arg("--nccl-id-file")
            .arg(&id_file)
            .env("CUDA_VISIBLE_DEVICES", device);
        if let Some(p) = &library_path {
            cmd.env("LD_LIBRARY_PATH", p);
        }
        match cmd.spawn() {
            Ok(child) => children.push((rank, child)),
            Err(e) => {
                stop(&mut children);
                bail!("starting rank {rank} ({}): {e}", exe.display());
            }
        }
    }
    let result = wait_all(&mut children);
    let _ = std::fs::remove_file(&id_file);
    result
}

fn wait_all(children: &mut Vec<(usize, Child)>) -> Result<()> {
    while !children.is_empty() {
        let mut i = 0;
        while i < children.len() {
            let (rank, child) = &mut children[i];
            match child.try_wait() {
                Ok(Some(status)) if status.success() => {
                    children.remove(i);
                }
                Ok(Some(status)) => {
                    let rank = *rank;
                    children.remove(i);
                    stop(children);
                    bail!("rank {rank} failed ({status}); the other ranks were stopped");
                }
                Ok(None) => i += 1,
                Err(e) => {
                    let rank = *rank;
                    stop(children);
                    bail!("waiting for rank {rank}: {e}");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn stop(children: &mut [(usize, Child)]) {
    for (_, child) in children.iter_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The NCCL unique id of a run: rank 0 makes it and publishes it in `id_file` (written whole,
/// then renamed into place); the other ranks wait for that file.
pub fn rank_id(rank: usize, id_file: &Path) -> Result<[u8; ID_BYTES]> {
    if rank == 0 {
        let id = nccl::new_id()?;
        let tmp = id_file.with_extension(format!("tmp.{}", std::process::id()));
        std::fs::write(&tmp, id).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, id_file)
            .with_context(|| format!("publishing the NCCL id as {}", id_file.display()))?;
        return Ok(id);
    }
    let started = Instant::now();
    loop {
        match std::fs::read(id_file) {
            Ok(bytes) => {
                let id: [u8; ID_BYTES] = bytes.as_slice().try_into().map_err(|_| {
                    anyhow::anyhow!(
                        "{}: {} bytes, an NCCL id has {ID_BYTES}",
                        id_file.display(),
                        bytes.len()
                    )
                })?;
                return Ok(id);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if started.elapsed() > ID_WAIT {
                    bail!(
                        "rank {rank}: rank 0 published no NCCL id in {} after {} s",
                        id_file.display(),
                        ID_WAIT.as_secs()
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", id_file.display())),
        }
    }
}
