//! `ner-edge`: tag entities in text with a ner-edge bundle.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use ner_edge::adapt::{
    adapt, read_support, AdaptOptions, SupportFormat, TuneOptions, DEFAULT_MAX_SUPPORT_BYTES,
};
use ner_edge::bundle::{describe, Bundle};
use ner_edge::input::{DocumentMode, Segment, SegmentReader, DEFAULT_MAX_SEGMENT_BYTES};
use ner_edge::output::{DocumentWriter, Format};
use ner_edge::pack::{write_adapted, LabelPack, PACK_MAGIC};
use ner_edge::pipeline::Tagger;
use ner_edge::{Error, Result};

/// Few-shot named-entity recognition on CPU.
#[derive(Parser)]
#[command(name = "ner-edge", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tag entities in a UTF-8 text file (one document per line) or stdin (`-`).
    Predict(PredictArgs),
    /// Print a bundle's (or a label pack's) version, metadata, tensors and entity types.
    Inspect {
        /// Bundle or label pack file; the embedded default bundle when omitted.
        bundle: Option<PathBuf>,
    },
    /// Adapt new entity types from a few examples (or descriptions) into a label pack.
    Adapt(AdaptArgs),
}

#[derive(clap::Args)]
struct AdaptArgs {
    /// Support set: CoNLL, token<TAB>tag BIO, JSONL with char spans, or inline markup
    /// (`[aspirin](DRUG) reduced the fever`). May be omitted when every type has --type-name.
    support: Option<PathBuf>,
    /// Label pack to write.
    #[arg(long)]
    out: PathBuf,
    /// Base bundle (default: $NER_EDGE_BUNDLE, else the bundle embedded in this binary).
    #[arg(long, env = "NER_EDGE_BUNDLE")]
    bundle: Option<PathBuf>,
    /// Support format: auto, conll, tsv, jsonl or inline.
    #[arg(long, default_value = "auto")]
    format: SupportFormat,
    /// A type description, `NAME=DESCRIPTION` (repeatable): seeds the prototype of a type that
    /// has no examples (zero-shot).
    #[arg(long = "type-name", value_name = "NAME=DESCRIPTION")]
    type_names: Vec<String>,
    /// Comma-separated types of the pack (default: every type of the support set and every
    /// --type-name); other mentions in the support set are ignored.
    #[arg(long, value_delimiter = ',')]
    types: Option<Vec<String>>,
    /// Use only the examples of a type that has both examples and a --type-name description
    /// (default: both, which scored higher on every Hou et al. episode set; see benches/RESULTS.md).
    #[arg(long)]
    examples_only: bool,
    /// Largest support file to read, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_SUPPORT_BYTES)]
    max_support_bytes: u64,
    /// Then tune the boundary head and type projection for N steps on the support set (encoder
    /// and prototypes fixed); the pack carries the tuned heads. 0: no tuning.
    #[arg(long, value_name = "N", default_value_t = 0)]
    tune_heads: usize,
    /// Learning rate of --tune-heads (Adam).
    #[arg(long, default_value_t = ner_edge::adapt::tune::DEFAULT_TUNE_LR)]
    tune_lr: f32,
    /// Weight of the L2 pull of the tuned heads towards the bundle's.
    #[arg(long, default_value_t = ner_edge::adapt::tune::DEFAULT_TUNE_L2)]
    tune_l2: f32,
    /// Print nothing on stderr on success.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum InputFormat {
    Text,
    Jsonl,
    Tsv,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ContextFusionArg {
    Gate,
    Replace,
}

#[derive(clap::Args)]
struct PredictArgs {
    /// Input file, or `-` for stdin.
    input: PathBuf,
    /// Bundle file (default: $NER_EDGE_BUNDLE, else the bundle embedded in this binary).
    #[arg(long, env = "NER_EDGE_BUNDLE")]
    bundle: Option<PathBuf>,
    /// Output format: jsonl, conll or inline.
    #[arg(long, default_value = "jsonl")]
    format: Format,
    /// Comma-separated entity types to tag, from the bundle and the packs (default: the
    /// bundle's default set and every type of every pack).
    #[arg(long, value_delimiter = ',')]
    types: Option<Vec<String>>,
    /// Label pack made by `ner-edge adapt` for this bundle (repeatable): adds its types.
    #[arg(long = "pack", value_name = "PACK")]
    packs: Vec<PathBuf>,
    /// Let a later pack redefine a type name that the bundle or an earlier pack already has.
    #[arg(long = "override")]
    allow_override: bool,
    /// Documents are separated by blank lines instead of one per line.
    #[arg(long)]
    paragraphs: bool,
    /// Input layout: `text` (one document per line, or per paragraph with --paragraphs),
    /// `jsonl` (`{"text": ..., "context": ...}` per line) or `tsv` (`text<TAB>context` per
    /// line). A context is read with the text but not tagged; offsets refer to the text.
    #[arg(long, value_enum, default_value = "text")]
    input_format: InputFormat,
    /// Use the N previous documents (lines, or paragraphs with --paragraphs) as each
    /// document's context, starting afresh after every empty line; text input only.
    #[arg(long, value_name = "N", default_value_t = 0)]
    doc_context: usize,
    /// How a context is used: `gate` (the bundle's learned gate) or `replace` (always the
    /// encoding with context; an ablation).
    #[arg(long, value_enum, default_value = "gate", hide = true)]
    context_fusion: ContextFusionArg,
    /// Do not decode the bundle's "other" prototypes: every entity the model finds gets the
    /// most likely active type, even an entity of a kind that is not active (more recall, less
    /// precision).
    #[arg(long)]
    no_other: bool,
    /// Do not read the bundle's associated memory (labelled memory sentences), for bundles
    /// that have one; the ablation.
    #[arg(long)]
    no_memory: bool,
    /// Memory sentences each text reads, for bundles with an associated memory.
    #[arg(long, value_name = "N", default_value_t = ner_edge::associated_memory::DEFAULT_RETRIEVE)]
    memory_sentences: usize,
    /// Replace invalid UTF-8 with U+FFFD instead of stopping with an error.
    #[arg(long)]
    lossy: bool,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Report on stderr when input is split into windows or segments.
    #[arg(long, short)]
    verbose: bool,
    /// Encoder window in word pieces (default and maximum: the model's positions minus 2).
    #[arg(long, hide = true)]
    window: Option<usize>,
    /// Padded tokens per encoder call (batch × length), for benchmarks.
    #[arg(long, hide = true)]
    batch_tokens: Option<usize>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Predict(args) => predict(args),
        Command::Inspect { bundle } => inspect(bundle),
        Command::Adapt(args) => adapt_command(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ner-edge: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn load_bundle(path: Option<PathBuf>) -> Result<Bundle> {
    match path {
        Some(p) => Bundle::open(&p),
        None => ner_edge::bundle::embedded().unwrap_or_else(|| {
            Err(Error::Usage(
                "no bundle given: pass --bundle FILE or set NER_EDGE_BUNDLE (this binary was built without the embedded default bundle)".into(),
            ))
        }),
    }
}

fn inspect(path: Option<PathBuf>) -> Result<()> {
    let is_pack = path.as_deref().is_some_and(|p| {
        let mut magic = [0u8; 4];
        std::fs::File::open(p)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok_and(|()| magic == PACK_MAGIC)
    });
    let text = match path {
        Some(p) if is_pack => LabelPack::open(&p)?.describe(),
        _ => describe(&load_bundle(path)?),
    };
    write_stdout(&text)
}

fn write_stdout(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| Error::Io {
            context: "write output".into(),
            source: e,
        })
}

fn adapt_command(args: AdaptArgs) -> Result<()> {
    let started = Instant::now();
    let mut descriptions = Vec::with_capacity(args.type_names.len());
    for spec in &args.type_names {
        let (name, text) = spec.split_once('=').ok_or_else(|| {
            Error::Usage(format!(
                "--type-name {spec:?}: expected NAME=DESCRIPTION, e.g. \
                 \"drug=medication or drug name\""
            ))
        })?;
        descriptions.push((name.trim().to_string(), text.trim().to_string()));
    }
    let bundle = load_bundle(args.bundle.clone())?;
    let support = match &args.support {
        Some(p) => Some(read_support(p, args.format, args.max_support_bytes)?),
        None if descriptions.is_empty() => {
            return Err(Error::Usage(
                "adapt needs a SUPPORT file, or --type-name NAME=DESCRIPTION for every type".into(),
            ))
        }
        None => None,
    };
    let opts = AdaptOptions {
        descriptions,
        types: args.types.clone(),
        examples_only: args.examples_only,
        notes: String::new(),
        tune: (args.tune_heads > 0).then_some(TuneOptions {
            steps: args.tune_heads,
            learning_rate: args.tune_lr,
            l2: args.tune_l2,
        }),
    };
    if opts.tune.is_some() && support.is_none() {
        return Err(Error::Usage(
            "--tune-heads needs a support file with examples".into(),
        ));
    }
    if !(args.tune_lr.is_finite()
        && args.tune_lr > 0.0
        && args.tune_l2.is_finite()
        && args.tune_l2 >= 0.0)
    {
        return Err(Error::Usage(format!(
            "--tune-lr must be positive and --tune-l2 non-negative (got {} and {})",
            args.tune_lr, args.tune_l2
        )));
    }
    let adapted = adapt(&bundle, support.as_ref(), &opts)?;
    write_adapted(&args.out, &adapted)?;
    if !args.quiet {
        if let Some(s) = support.as_ref().filter(|s| s.repairs > 0) {
            eprintln!(
                "ner-edge: {}: {} stray I- tags read as B-",
                s.source, s.repairs
            );
        }
        for t in &adapted.metadata.types {
            let slot = match (&t.memory_slot, t.memory_distance) {
                (Some(slot), Some(d)) => format!("memory slot {slot} (OT distance {d:.4})"),
                _ => "no memory slot".into(),
            };
            eprintln!(
                "ner-edge: type {}: {} from {} mentions in {} sentences, {} vectors, {slot}",
                t.name,
                t.method.as_str(),
                t.support_entities,
                t.support_sentences,
                t.support_tokens
            );
        }
        if let Some(t) = &adapted.metadata.tuned_heads {
            eprintln!(
                "ner-edge: tuned heads: {} steps, loss {:.4} -> {:.4}",
                t.steps, t.loss_before, t.loss_after
            );
        }
        eprintln!(
            "ner-edge: wrote {} ({} types, prior MLP: {}) in {:.0} ms",
            args.out.display(),
            adapted.metadata.types.len(),
            adapted.metadata.provenance.prior,
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(())
}

fn predict(args: PredictArgs) -> Result<()> {
    let bundle = load_bundle(args.bundle.clone())?;
    let packs = args
        .packs
        .iter()
        .map(|p| LabelPack::open(p))
        .collect::<Result<Vec<_>>>()?;
    let mut tagger =
        Tagger::with_packs(&bundle, &packs, args.types.as_deref(), args.allow_override)?;
    if let Some(w) = args.window {
        tagger.encoder_mut().set_max_pieces(w);
    }
    if let Some(n) = args.batch_tokens {
        tagger.encoder_mut().set_batch_tokens(n);
    }
    if args.no_other {
        tagger.disable_other();
    }
    if args.no_memory {
        tagger.disable_memory();
    }
    tagger.set_memory_retrieve(args.memory_sentences);
    let (reader, source, total): (Box<dyn BufRead>, String, Option<u64>) =
        if args.input.as_os_str() == "-" {
            (
                Box::new(BufReader::new(std::io::stdin().lock())),
                "<stdin>".into(),
                None,
            )
        } else {
            let file =
                std::fs::File::open(&args.input).map_err(|e| Error::io("open", &args.input, e))?;
            let len = file.metadata().ok().map(|m| m.len());
            (
                Box::new(BufReader::with_capacity(1 << 16, file)),
                args.input.display().to_string(),
                len,
            )
        };
    let mode = match (args.input_format, args.paragraphs) {
        (InputFormat::Text, false) => DocumentMode::Lines,
        (InputFormat::Text, true) => DocumentMode::Paragraphs,
        (InputFormat::Jsonl, false) => DocumentMode::Jsonl,
        (InputFormat::Tsv, false) => DocumentMode::TextContext,
        (_, true) => {
            return Err(Error::Usage(
                "--paragraphs applies to --input-format text only".into(),
            ))
        }
    };
    if args.doc_context > 0 && args.input_format != InputFormat::Text {
        return Err(Error::Usage(
            "--doc-context applies to --input-format text; jsonl and tsv input give each \
             document its own context"
                .into(),
        ));
    }
    let replace = args.context_fusion == ContextFusionArg::Replace;
    if args.doc_context > 0 {
        tagger.enable_context(&bundle, replace)?;
    }
    let mut previous = PreviousDocuments::new(args.doc_context);
    let mut segments =
        SegmentReader::new(reader, &source, mode, args.lossy, DEFAULT_MAX_SEGMENT_BYTES);
    let stdout = std::io::stdout().lock();
    let mut writer = DocumentWriter::new(
        std::io::BufWriter::with_capacity(1 << 16, stdout),
        args.format,
        tagger.type_names().to_vec(),
        args.paragraphs,
    );
    let mut progress = Progress::new(total);
    // Blocks of documents handed to the tagger at once bound memory and keep threads busy.
    let mut block: Vec<Segment> = Vec::new();
    loop {
        let bytes = segments.next_block(&mut block)?;
        if block.is_empty() {
            break;
        }
        if args.doc_context > 0 {
            for seg in &mut block {
                seg.context = previous.context_for(seg);
            }
        }
        let texts: Vec<&str> = block.iter().map(|s| s.text.as_str()).collect();
        let contexts: Vec<Option<&str>> = block.iter().map(|s| s.context.as_deref()).collect();
        if tagger.context_fusion().is_none() && contexts.iter().any(Option::is_some) {
            tagger.enable_context(&bundle, replace)?;
        }
        let tagged = tagger.tag_in_context(&texts, &contexts, args.threads)?;
        for (seg, t) in block.iter().zip(&tagged) {
            if args.verbose {
                if t.windows > 1 {
                    eprintln!(
                        "ner-edge: {source}: line {}: longer than the encoder's positions, tagged in {} overlapping windows",
                        seg.line, t.windows
                    );
                }
                if !seg.first || !seg.last {
                    eprintln!(
                        "ner-edge: {source}: line {}: long document, segment at char {} ({} bytes) tagged separately (cut at whitespace)",
                        seg.line,
                        seg.char_offset,
                        seg.text.len()
                    );
                }
            }
            writer.write_segment(seg, t)?;
        }
        progress.advance(bytes as u64);
    }
    progress.finish();
    writer.flush()?;
    if args.verbose {
        let t = tagger.stage_times();
        eprintln!(
            "ner-edge: time in tagging stages: tokenize {:.3} s, encoder {:.3} s, decode {:.3} s",
            t.tokenize.as_secs_f64(),
            t.encode.as_secs_f64(),
            t.decode.as_secs_f64()
        );
    }
    Ok(())
}

/// Bytes kept of each earlier document for `--doc-context`: more than any encoder window holds
/// beside a text (the context is cut to the words nearest the text that fit).
const CONTEXT_BYTES: usize = 4096;

/// The last documents seen, for `--doc-context`.
struct PreviousDocuments {
    keep: usize,
    texts: std::collections::VecDeque<String>,
    /// Text of the document being read, segment by segment.
    current: String,
}

impl PreviousDocuments {
    fn new(keep: usize) -> Self {
        PreviousDocuments {
            keep,
            texts: std::collections::VecDeque::new(),
            current: String::new(),
        }
    }

    /// The context of `seg`: up to `keep` earlier documents since the last empty one, joined
    /// by spaces; then records `seg`.
    fn context_for(&mut self, seg: &Segment) -> Option<String> {
        let context = (!self.texts.is_empty()).then(|| {
            let parts: Vec<&str> = self.texts.iter().map(String::as_str).collect();
            parts.join(" ")
        });
        if seg.first {
            self.current.clear();
        }
        self.current.push_str(&seg.text);
        if self.current.len() > CONTEXT_BYTES {
            let mut cut = self.current.len() - CONTEXT_BYTES;
            while !self.current.is_char_boundary(cut) {
                cut += 1;
            }
            self.current.drain(..cut);
        }
        if seg.last {
            if self.current.trim().is_empty() {
                self.texts.clear();
            } else {
                self.texts.push_back(std::mem::take(&mut self.current));
                while self.texts.len() > self.keep {
                    self.texts.pop_front();
                }
            }
        }
        context
    }
}

/// A one-line progress report on stderr, only when stderr is a terminal and the input size is known.
struct Progress {
    total: Option<u64>,
    done: u64,
    last: Instant,
    shown: bool,
}

impl Progress {
    fn new(total: Option<u64>) -> Self {
        let total = total.filter(|_| std::io::stderr().is_terminal());
        Progress {
            total,
            done: 0,
            last: Instant::now(),
            shown: false,
        }
    }

    fn advance(&mut self, bytes: u64) {
        self.done += bytes;
        let Some(total) = self.total else { return };
        if self.last.elapsed() < Duration::from_millis(200) {
            return;
        }
        self.last = Instant::now();
        self.shown = true;
        let pct = (self.done.min(total) as f64 / total.max(1) as f64) * 100.0;
        eprint!("\rner-edge: {pct:5.1}% of {:.1} MB", total as f64 / 1e6);
    }

    fn finish(&self) {
        if self.shown {
            eprintln!("\rner-edge: 100.0% done{:20}", "");
        }
    }
}
