//! `ner-train`: episodic meta-training of the ner-edge model on CPU, exported as a bundle.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
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
        } => {
            let cfg = TrainConfig::load(&config)?;
            train::run_meta(
                &cfg,
                &train::RunOptions {
                    out,
                    resume,
                    stop_after,
                    progress: !quiet,
                },
            )
        }
    }
}
