//! `ner-tools`: fixtures, data generation and (later) evaluation for ner-edge.

mod synthetic_text;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ner_edge::bundle::{tensor_names, Bundle};
use ner_edge_trainer::export::fixture;
use ner_edge_trainer::WeightDtype;

#[derive(Parser)]
#[command(name = "ner-tools", version, about = "ner-edge data, fixture and evaluation tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a random-weight bundle (the test fixture, or a MiniLM-shaped one for speed tests).
    MakeFixture {
        #[arg(long, value_enum, default_value = "tiny")]
        shape: fixture::Shape,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Store weights as f32 instead of f16.
        #[arg(long)]
        f32: bool,
        #[arg(long)]
        out: PathBuf,
    },
    /// Copy a bundle's encoder graph out as a standalone .onnx file.
    ExtractOnnx { bundle: PathBuf, out: PathBuf },
    /// Write deterministic news-like sentences, one per line (for speed benchmarks).
    GenText {
        #[arg(long, default_value_t = 2000)]
        sentences: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("ner-tools: {e:#}");
        std::process::exit(2);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::MakeFixture { shape, seed, f32, out } => {
            let dtype = if f32 { WeightDtype::F32 } else { WeightDtype::F16 };
            let bytes = fixture::random_bundle(shape, seed, dtype)?;
            let bundle = Bundle::from_vec(bytes, &out.display().to_string())?;
            std::fs::write(&out, bundle.as_bytes()).with_context(|| format!("writing {}", out.display()))?;
            eprintln!("wrote {} ({} bytes)", out.display(), bundle.file_len());
        }
        Command::ExtractOnnx { bundle, out } => {
            let b = Bundle::open(&bundle)?;
            std::fs::write(&out, b.bytes(tensor_names::ENCODER_ONNX)?)
                .with_context(|| format!("writing {}", out.display()))?;
        }
        Command::GenText { sentences, seed, out } => {
            let mut text = synthetic_text::news_sentences(sentences, seed).join("\n");
            text.push('\n');
            std::fs::write(&out, text).with_context(|| format!("writing {}", out.display()))?;
        }
    }
    Ok(())
}
