//! `ner-edge`: tag entities in text with a ner-edge bundle.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use ner_edge::bundle::{describe, Bundle};
use ner_edge::input::{DocumentMode, Segment, SegmentReader, DEFAULT_MAX_SEGMENT_BYTES};
use ner_edge::output::{DocumentWriter, Format};
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
    /// Print a bundle's version, metadata, tensors and entity types.
    Inspect {
        /// Bundle file; the embedded default bundle when omitted.
        bundle: Option<PathBuf>,
    },
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
    /// Comma-separated entity types to tag (default: the bundle's default set).
    #[arg(long, value_delimiter = ',')]
    types: Option<Vec<String>>,
    /// Documents are separated by blank lines instead of one per line.
    #[arg(long)]
    paragraphs: bool,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Predict(args) => predict(args),
        Command::Inspect { bundle } => inspect(bundle),
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
    let bundle = load_bundle(path)?;
    let text = describe(&bundle);
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| Error::Io {
            context: "write output".into(),
            source: e,
        })
}

/// Documents handed to the tagger at once: bounds memory and keeps threads busy.
const BLOCK_BYTES: usize = 256 * 1024;
const BLOCK_SEGMENTS: usize = 512;

fn predict(args: PredictArgs) -> Result<()> {
    let bundle = load_bundle(args.bundle.clone())?;
    let mut tagger = Tagger::new(&bundle, args.types.as_deref())?;
    if let Some(w) = args.window {
        tagger.encoder_mut().set_max_pieces(w);
    }
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
    let mode = if args.paragraphs {
        DocumentMode::Paragraphs
    } else {
        DocumentMode::Lines
    };
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
    let mut block: Vec<Segment> = Vec::new();
    let mut done = false;
    while !done {
        block.clear();
        let mut bytes = 0;
        while bytes < BLOCK_BYTES && block.len() < BLOCK_SEGMENTS {
            match segments.next_segment()? {
                Some(s) => {
                    bytes += s.text.len() + 1;
                    block.push(s);
                }
                None => {
                    done = true;
                    break;
                }
            }
        }
        if block.is_empty() {
            break;
        }
        let texts: Vec<&str> = block.iter().map(|s| s.text.as_str()).collect();
        let tagged = tagger.tag(&texts, args.threads)?;
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
    writer.flush()
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
