//! `ner-train`: episodic meta-training of the ner-edge model on CPU, exported as a bundle.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{ensure, Context, Result};
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
        /// Read the config's corpus files from this corpus pack (written by `ner-train
        /// pack-corpora` from the same config) instead of the disk: the run sees the same
        /// sentences, so it trains the same model.
        #[arg(long, value_name = "PACK")]
        corpora: Option<PathBuf>,
        /// Stop after the step that ends past this many seconds of wall time (counted from the
        /// start, data loading included), then validate, checkpoint and export as at the last
        /// step: for a run that must end inside a fixed budget (benches/gpu/train.sh). The
        /// learning-rate schedule still follows `steps`. Not with --gpus.
        #[arg(long, value_name = "SECONDS")]
        time_limit_s: Option<f64>,
        /// Compute backend. auto: CUDA when a usable device is found, else the CPU, with one
        /// line on stderr saying why; cpu: the CPU reference; cuda: fail (exit 2) without a
        /// usable device. On CUDA the encoder's forward and backward (all episodes of a step in
        /// one batch), clipping and AdamW run on the GPU; the episode losses stay on the CPU.
        #[arg(long, value_enum, default_value_t = BackendRequest::Auto)]
        backend: BackendRequest,
        /// Data-parallel training on N GPUs: starts one rank process per GPU (the first N of
        /// CUDA_VISIBLE_DEVICES), joined over NCCL; each step's episodes are split between the
        /// ranks and their gradients summed, so the model is the one a single rank would train.
        /// NCCL is found on the library path, or as NER_EDGE_NCCL_DIR/libnccl.so.2.
        #[arg(long, value_name = "N")]
        gpus: Option<usize>,
        /// This process is rank R of a `--gpus` run (set by the launcher).
        #[arg(long, hide = true, requires_all = ["world_size", "nccl_id_file"])]
        rank: Option<usize>,
        /// Number of ranks of a `--gpus` run (set by the launcher).
        #[arg(long, hide = true)]
        world_size: Option<usize>,
        /// Where rank 0 publishes the NCCL id (set by the launcher).
        #[arg(long, hide = true)]
        nccl_id_file: Option<PathBuf>,
    },
    /// Write every corpus file a training config reads (training corpora, supervised and
    /// sampled validation corpora), parsed, into one checksummed corpus pack (`*.nerc`), for
    /// `meta --corpora` on a machine that does not have the files. Prints what it packed.
    PackCorpora {
        /// Training configuration (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Output pack.
        #[arg(long)]
        out: PathBuf,
    },
    /// Learn the context gate of a trained bundle (its encoder, heads and prototypes frozen)
    /// from corpora with document context, and write the bundle with the gate added.
    ///
    /// Each chosen sentence is encoded alone, after the sentences before it in its document
    /// (`-DOCSTART-` documents; else the file) and after sentences of a random other document;
    /// the gate learns to use the first and ignore the second. Prints one line per epoch.
    ContextGate {
        /// The trained bundle.
        #[arg(long)]
        bundle: PathBuf,
        /// Training corpus (any format `ner-tools` reads; repeatable). Every type must have a
        /// prototype in the bundle.
        #[arg(long = "train", required = true)]
        train: Vec<PathBuf>,
        /// Held-out corpus: the epoch with the lowest loss on it is kept.
        #[arg(long)]
        validate: Option<PathBuf>,
        /// Output bundle.
        #[arg(long)]
        out: PathBuf,
        /// Most sentences in one context.
        #[arg(long, default_value_t = 3)]
        context_sentences: usize,
        /// Sentences drawn from each corpus.
        #[arg(long, default_value_t = 4000)]
        sentences: usize,
        #[arg(long, default_value_t = 4)]
        epochs: usize,
        #[arg(long, default_value_t = 32)]
        batch: usize,
        #[arg(long, default_value_t = 3e-3)]
        lr: f32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// A gate linear in the two encodings only, without the squared-difference features.
        #[arg(long)]
        linear_gate: bool,
    },
    /// Learn prompt adapters (LightNER's prompt-guided attention) for new types on a support
    /// set, with the bundle's encoder frozen, and write a label pack that carries them.
    ///
    /// The types' prototypes are those `ner-edge adapt` gives; the prompts (and with
    /// `--tune-heads` the two heads) are trained on the support sentences' CRF likelihood.
    /// `ner-edge predict --pack P` then scores the pack's types with the prompted encoder and
    /// the bundle's types exactly as without the pack.
    Prompt {
        /// The trained bundle the pack is for.
        #[arg(long)]
        bundle: PathBuf,
        /// Support file (CoNLL, token<TAB>tag, JSONL or inline markup, as `ner-edge adapt`).
        #[arg(long)]
        support: PathBuf,
        /// Output label pack (.nerp).
        #[arg(long)]
        out: PathBuf,
        /// Prompt vectors per layer.
        #[arg(long, default_value_t = 10)]
        len: usize,
        /// Passes over the support set.
        #[arg(long, default_value_t = 8)]
        epochs: usize,
        /// Support sentences per Adam step.
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// Adam learning rate of the prompts.
        #[arg(long, default_value_t = train::prompt::DEFAULT_PROMPT_LR)]
        lr: f32,
        /// Also tune the boundary head and type projection (as `ner-edge adapt --tune-heads`).
        #[arg(long)]
        tune_heads: bool,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 1)]
        threads: usize,
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
            corpora,
            time_limit_s,
            backend,
            gpus,
            rank,
            world_size,
            nccl_id_file,
        } => {
            if let Some(gpus) = gpus {
                ensure!(
                    rank.is_none(),
                    "--gpus starts the ranks itself; do not pass --rank"
                );
                ensure!(
                    time_limit_s.is_none(),
                    "--time-limit-s needs a single-rank run; it cannot be used with --gpus"
                );
                ensure!(
                    backend != BackendRequest::Cpu,
                    "--gpus trains on GPUs; it cannot run with --backend cpu"
                );
                let mut args: Vec<OsString> = vec![
                    "meta".into(),
                    "--config".into(),
                    config.into(),
                    "--out".into(),
                    out.clone().into(),
                    "--backend".into(),
                    "cuda".into(),
                ];
                if resume {
                    args.push("--resume".into());
                }
                if let Some(s) = stop_after {
                    args.push("--stop-after".into());
                    args.push(s.to_string().into());
                }
                if quiet {
                    args.push("--quiet".into());
                }
                if let Some(p) = &corpora {
                    args.push("--corpora".into());
                    args.push(p.into());
                }
                return launch_ranks(gpus, &out, &args);
            }
            let backend = select_backend(backend)?;
            let cfg = TrainConfig::load(&config)?;
            let opts = train::RunOptions {
                out,
                resume,
                stop_after,
                progress: !quiet,
                corpora,
                time_limit: time_limit_s
                    .map(|s| {
                        ensure!(
                            s.is_finite() && s > 0.0,
                            "--time-limit-s must be a positive number of seconds, not {s}"
                        );
                        Ok(std::time::Duration::from_secs_f64(s))
                    })
                    .transpose()?,
            };
            match (rank, world_size, nccl_id_file) {
                (Some(rank), Some(world), Some(id_file)) => {
                    run_rank(&cfg, &opts, backend, rank, world, &id_file)
                }
                _ => train::run_meta_on(&cfg, &opts, backend),
            }
        }
        Command::PackCorpora { config, out } => {
            let cfg = TrainConfig::load(&config)?;
            let pack = train::data::pack_config(&cfg)?;
            pack.write(&out)?;
            for (key, c) in &pack.entries {
                eprintln!(
                    "ner-train: {key}: {} sentences, {} tokens",
                    c.sentences.len(),
                    c.token_count()
                );
            }
            let size = std::fs::metadata(&out)
                .with_context(|| format!("reading back {}", out.display()))?
                .len();
            eprintln!(
                "ner-train: wrote {} ({} entries, {size} bytes)",
                out.display(),
                pack.entries.len()
            );
            Ok(())
        }
        Command::ContextGate {
            bundle,
            train,
            validate,
            out,
            context_sentences,
            sentences,
            epochs,
            batch,
            lr,
            seed,
            threads,
            linear_gate,
        } => context_gate(ContextGateArgs {
            bundle,
            train,
            validate,
            out,
            opts: train::context_gate::GateOptions {
                context_sentences,
                sentences_per_corpus: sentences,
                epochs,
                batch,
                lr,
                seed,
                threads,
                distance: !linear_gate,
            },
        }),
        Command::Prompt {
            bundle,
            support,
            out,
            len,
            epochs,
            batch,
            lr,
            tune_heads,
            seed,
            threads,
        } => prompt(
            &bundle,
            &support,
            &out,
            &train::prompt::PromptOptions {
                len,
                epochs,
                batch,
                lr,
                tune_heads,
                seed,
                threads: threads.max(1),
                ..train::prompt::PromptOptions::default()
            },
        ),
    }
}

fn prompt(
    bundle: &std::path::Path,
    support: &std::path::Path,
    out: &std::path::Path,
    opts: &train::prompt::PromptOptions,
) -> Result<()> {
    use ner_edge::adapt::{read_support, AdaptOptions, SupportFormat, DEFAULT_MAX_SUPPORT_BYTES};
    let bundle = ner_edge::bundle::Bundle::open(bundle)?;
    let support = read_support(support, SupportFormat::Auto, DEFAULT_MAX_SUPPORT_BYTES)?;
    let (adapted, prompts, report) =
        train::prompt::train_prompts(&bundle, &support, &AdaptOptions::default(), opts)?;
    ner_edge::pack::write_prompted_pack(
        out,
        &adapted.metadata,
        &adapted.prototypes,
        adapted.heads.as_ref(),
        Some(&prompts),
    )?;
    let size = std::fs::metadata(out)
        .with_context(|| format!("reading back {}", out.display()))?
        .len();
    eprintln!(
        "ner-train: {} sentences ({} pieces), {} steps in {:.1} s: loss {:.4} -> {:.4}; wrote {} \
         ({} types, {size} bytes)",
        report.sentences,
        report.pieces,
        report.steps,
        report.seconds,
        report.loss_before,
        report.loss_after,
        out.display(),
        adapted.metadata.types.len()
    );
    Ok(())
}

struct ContextGateArgs {
    bundle: PathBuf,
    train: Vec<PathBuf>,
    validate: Option<PathBuf>,
    out: PathBuf,
    opts: train::context_gate::GateOptions,
}

fn context_gate(args: ContextGateArgs) -> Result<()> {
    use train::context_gate::{train_context_gate, write_with_gate};
    let bundle = ner_edge::bundle::Bundle::open(&args.bundle)?;
    let read = |p: &PathBuf| {
        ner_edge_corpus::read_corpus(p).with_context(|| format!("reading {}", p.display()))
    };
    let train = args.train.iter().map(read).collect::<Result<Vec<_>>>()?;
    let validation = args.validate.as_ref().map(read).transpose()?;
    let (gate, report) = train_context_gate(&bundle, &train, validation.as_ref(), &args.opts)?;
    eprintln!(
        "ner-train: {} examples ({} with true context), {} held out; encoded in {:.1} s",
        report.examples, report.true_examples, report.validation_examples, report.encode_seconds
    );
    if let Some((shut, open)) = report.validation_shut_open {
        eprintln!(
            "ner-train: held out, gate shut: loss {:.4} / {:.4}; gate open: loss {:.4} / {:.4} \
             (true / random context)",
            shut.loss_true, shut.loss_random, open.loss_true, open.loss_random
        );
    }
    for (i, t) in report.train.iter().enumerate() {
        let v = report
            .validation
            .get(i)
            .map(|v| {
                format!(
                    "; held out: loss {:.4} / {:.4}, opening {:.3} / {:.3}",
                    v.loss_true, v.loss_random, v.opening_true, v.opening_random
                )
            })
            .unwrap_or_default();
        eprintln!(
            "ner-train: epoch {}: loss true/random context {:.4} / {:.4}, opening {:.3} / {:.3}{v}",
            i + 1,
            t.loss_true,
            t.loss_random,
            t.opening_true,
            t.opening_random
        );
    }
    let names: Vec<String> = args.train.iter().map(|p| p.display().to_string()).collect();
    let note = format!(
        "Context gate: `ner-train context-gate` on {} ({} sentence/context examples, up to {} \
         context sentences, true and random-document context), encoder and heads frozen, \
         epoch {} of {} kept.",
        names.join(", "),
        report.examples,
        args.opts.context_sentences,
        report.kept_epoch,
        args.opts.epochs
    );
    write_with_gate(&bundle, &gate, &note, &args.out)?;
    eprintln!(
        "ner-train: trained in {:.1} s; wrote {} (epoch {} kept)",
        report.train_seconds,
        args.out.display(),
        report.kept_epoch
    );
    Ok(())
}

#[cfg(feature = "cuda")]
fn launch_ranks(gpus: usize, out: &Path, args: &[OsString]) -> Result<()> {
    cuda::launch::launch(gpus, out, args)
}

#[cfg(not(feature = "cuda"))]
fn launch_ranks(_gpus: usize, _out: &Path, _args: &[OsString]) -> Result<()> {
    anyhow::bail!("--gpus needs the `cuda` feature, which this binary was built without")
}

/// Rank `rank` of a `--gpus` run: joins the NCCL communicator and trains its share.
#[cfg(feature = "cuda")]
fn run_rank(
    cfg: &TrainConfig,
    opts: &train::RunOptions,
    backend: Backend,
    rank: usize,
    world: usize,
    id_file: &Path,
) -> Result<()> {
    use anyhow::Context;
    ensure!(
        backend == Backend::Cuda,
        "a rank of a --gpus run trains on CUDA"
    );
    let id = cuda::launch::rank_id(rank, id_file)?;
    let mut comm = cuda::nccl::NcclRank::join(rank, world, &id)
        .with_context(|| format!("rank {rank} of {world} joining NCCL"))?;
    train::run_meta_ranked(cfg, opts, backend, &mut comm)
        .with_context(|| format!("rank {rank} of {world}"))
}

#[cfg(not(feature = "cuda"))]
fn run_rank(
    _cfg: &TrainConfig,
    _opts: &train::RunOptions,
    _backend: Backend,
    _rank: usize,
    _world: usize,
    _id_file: &Path,
) -> Result<()> {
    anyhow::bail!("--rank needs the `cuda` feature, which this binary was built without")
}

/// Resolves `--backend`, saying on stderr why `auto` fell back to the CPU.
fn select_backend(requested: BackendRequest) -> Result<Backend> {
    let (backend, why) = cuda::detect(requested)?;
    if let Some(why) = why {
        eprintln!("ner-train: backend auto: using the CPU: {why}");
    }
    Ok(backend)
}
