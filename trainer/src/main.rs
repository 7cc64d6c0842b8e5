//! `ner-train`: episodic meta-training of the ner-edge model on CPU, exported as a bundle.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use ner_edge_trainer::cuda::{self, Backend, BackendRequest};
use ner_edge_trainer::train::{self, TrainConfig};

#[derive(Parser)]
#[command(name = "ner-train", version, about = "Meta-train the ner-edge model")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Meta-train on N-way K-shot episodes from the configured corpora and export a bundle.
    ///
    /// Writes into OUT: `checkpoint.ckpt` (every `checkpoint_every` steps and at the end),
    /// `log.jsonl` (one line per logged step), `model.nerb` (the bundle) and `config.toml`
    /// (the resolved config). With `--resume`, continues from OUT's checkpoint; the result is
    /// bit-identical to an uninterrupted run.
    Meta {
        /// Training configuration (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Continue from OUT/checkpoint.ckpt.
        #[arg(long)]
        resume: bool,
        /// Stop after this step (a checkpoint is written), without exporting; for splitting a run.
        #[arg(long)]
        stop_after: Option<u64>,
        /// Never draw a progress bar (it is drawn only on a terminal anyway).
        #[arg(long)]
        quiet: bool,
        /// Compute backend. auto: CUDA when a usable device is found, else the CPU, with one
        /// line on stderr saying why; cpu: the CPU reference; cuda: fail (exit 2) without a
        /// usable device. On CUDA the encoder's forward and backward (all episodes of a step in
        /// one batch), clipping and AdamW run on the GPU; the episode losses stay on the CPU.
        #[arg(long, value_enum, default_value_t = BackendRequest::Auto)]
        backend: BackendRequest,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ner-train: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Meta {
            config,
            out,
            resume,
            stop_after,
            quiet,
            backend,
        } => {
            let backend = select_backend(backend)?;
            let cfg = TrainConfig::load(&config)?;
            train::run_meta_on(
                &cfg,
                &train::RunOptions {
                    out,
                    resume,
                    stop_after,
                    progress: !quiet,
                },
                backend,
            )
        }
    }
}

/// Resolves `--backend`, saying on stderr why `auto` fell back to the CPU.
fn select_backend(requested: BackendRequest) -> Result<Backend> {
    let (backend, why) = cuda::detect(requested)?;
    if let Some(why) = why {
        eprintln!("ner-train: backend auto: using the CPU: {why}");
    }
    Ok(backend)
}
