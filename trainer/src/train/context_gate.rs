//! `ner-train context-gate`: learns the context gate ([`ner_edge::encoder::fusion`]) of a
//! trained bundle, with its encoder, heads, prototypes and transitions frozen.
//!
//! Every chosen training sentence is encoded alone (`E`) and twice more after a context: the
//! sentences before it in its document (true context) and as many sentences of a random other
//! document (wrong context, [`ContextKind::Random`]). The gate mixes `E` with each encoding
//! with context; the bundle's heads score the mix, and the loss is the dense objective
//! ([`dense_loss`]: CRF NLL, boundary and type cross-entropy) against the bundle's own
//! prototypes of the corpus's types (and its "other" prototype when it has one). Since the
//! loss sees the gate's output under true and under wrong context, the gate learns to open
//! where the context helps and to shut where it is noise. The encodings are computed once
//! (frozen encoder), so training runs on cached first-piece hidden states.
//!
//! The result is the input bundle with the two gate tensors added (or replaced).

use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use ner_edge::bundle::{tensor_names, Bundle, BundleWriter};
use ner_edge::encoder::fusion::{GATE_BIAS, GATE_WEIGHT};
use ner_edge::encoder::{ContextWindow, Heads, PieceSeq};
use ner_edge::pipeline::Tagger;
use ner_edge::tokenizer::Encoding;
use ner_edge_corpus::context::{sentence_contexts, ContextKind};
use ner_edge_corpus::Corpus;

use super::dense::below;
use crate::backprop::gate::{gate_backward, gate_forward, GateParams};
use crate::loss::dense::dense_loss;
use crate::loss::episode::{LossWeights, SentenceRef};
use crate::model::rng::SplitMix64;

/// Settings of [`train_context_gate`].
#[derive(Clone, Debug)]
pub struct GateOptions {
    /// Most sentences in one context.
    pub context_sentences: usize,
    /// Training sentences drawn from each corpus (all when it has fewer).
    pub sentences_per_corpus: usize,
    /// Passes over the examples.
    pub epochs: usize,
    /// Examples per Adam step.
    pub batch: usize,
    /// Adam learning rate.
    pub lr: f32,
    /// Seed of the sentence choice, the random contexts and the example order.
    pub seed: u64,
    /// Encoder threads.
    pub threads: usize,
    /// The gate also reads `(C − E)²` ([`crate::backprop::gate`]).
    pub distance: bool,
}

impl Default for GateOptions {
    fn default() -> Self {
        GateOptions {
            context_sentences: 3,
            sentences_per_corpus: 4000,
            epochs: 4,
            batch: 32,
            lr: 3e-3,
            seed: 1,
            threads: 1,
            distance: true,
        }
    }
}

/// One sentence with one context, as cached first-piece hidden states.
struct Example {
    /// Index of its corpus's prototype set.
    set: usize,
    /// Label per word over the set's types.
    labels: Vec<usize>,
    /// `[words, H]` encoded alone.
    alone: Vec<f32>,
    /// `[words, H]` encoded after the context.
    with_context: Vec<f32>,
    /// The context is from another document.
    random: bool,
}

/// Mean loss and gate opening of one pass, per context kind.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PassStats {
    /// Mean dense loss with true context.
    pub loss_true: f64,
    /// Mean dense loss with random context.
    pub loss_random: f64,
    /// Mean opening over words with true context.
    pub opening_true: f64,
    /// Mean opening over words with random context.
    pub opening_random: f64,
}

/// What [`train_context_gate`] did.
#[derive(Clone, Debug, Default)]
pub struct GateReport {
    /// Training examples (sentence × context kind).
    pub examples: usize,
    /// Of them, with true context.
    pub true_examples: usize,
    /// Validation examples.
    pub validation_examples: usize,
    /// Training statistics of each epoch (during the pass).
    pub train: Vec<PassStats>,
    /// Validation statistics after each epoch (empty without validation data).
    pub validation: Vec<PassStats>,
    /// Validation losses with the gate shut (the text alone) and fully open (only the encoding
    /// with context), for comparison.
    pub validation_shut_open: Option<(PassStats, PassStats)>,
    /// Epoch (1-based) whose gate was kept: best validation loss, else the last.
    pub kept_epoch: usize,
    /// Seconds spent encoding.
    pub encode_seconds: f64,
    /// Seconds spent training.
    pub train_seconds: f64,
}

/// The frozen model parts the gate is trained against.
struct Frozen<'a> {
    heads: &'a Heads,
    /// Per corpus: `[n, d]` prototypes of its types (then "other").
    sets: Vec<Vec<f32>>,
    cdt: ner_edge::bundle::CdtParams,
}

/// Trains the gate of `bundle` on `train` (with the best epoch chosen on `validation` when it
/// is given) and returns it with a report.
pub fn train_context_gate(
    bundle: &Bundle,
    train: &[Corpus],
    validation: Option<&Corpus>,
    opts: &GateOptions,
) -> Result<(GateParams, GateReport)> {
    ensure!(
        opts.batch > 0 && opts.epochs > 0,
        "batch and epochs must be positive"
    );
    let mut tagger = Tagger::new(bundle, Some(&[]))?;
    tagger.expose_hidden(bundle)?;
    let heads = tagger
        .encoder()
        .heads()
        .context("the bundle's graph does not expose its heads")?;
    let hidden = heads.hidden;
    let mut all: Vec<&Corpus> = train.iter().collect();
    all.extend(validation);
    let sets = all
        .iter()
        .map(|c| prototype_set(bundle, c))
        .collect::<Result<Vec<_>>>()?;
    let frozen = Frozen {
        heads,
        sets,
        cdt: bundle.metadata().transitions.clone(),
    };
    let mut report = GateReport::default();
    let start = Instant::now();
    let mut examples = Vec::new();
    for (i, corpus) in train.iter().enumerate() {
        examples.extend(
            encode_examples(&tagger, corpus, i, opts, opts.sentences_per_corpus)
                .with_context(|| format!("encoding {}", corpus.name))?,
        );
    }
    ensure!(
        !examples.is_empty(),
        "no training sentence had a context (the corpora have too few sentences)"
    );
    let held_out = match validation {
        Some(v) => encode_examples(&tagger, v, train.len(), opts, opts.sentences_per_corpus)
            .with_context(|| format!("encoding {}", v.name))?,
        None => Vec::new(),
    };
    report.encode_seconds = start.elapsed().as_secs_f64();
    report.examples = examples.len();
    report.true_examples = examples.iter().filter(|e| !e.random).count();
    report.validation_examples = held_out.len();

    if !held_out.is_empty() {
        let fixed = |bias: [f32; 2]| -> Result<PassStats> {
            let mut g = GateParams::<f32>::zeros(hidden, false);
            g.bias = bias;
            let mut acc = Accumulator::default();
            for ex in &held_out {
                let (loss, opened) = example_loss(&frozen, &g, ex, None)?;
                acc.add(ex, loss, opened);
            }
            Ok(acc.finish())
        };
        report.validation_shut_open = Some((fixed([40.0, -40.0])?, fixed([-40.0, 40.0])?));
    }
    let start = Instant::now();
    let mut gate = GateParams::<f32>::zeros(hidden, opts.distance);
    let mut adam = Adam::new(gate.weight.len() + 2);
    let mut best: Option<(f64, GateParams, usize)> = None;
    let mut rng = SplitMix64::new(opts.seed ^ 0x6a7e);
    let mut order: Vec<usize> = (0..examples.len()).collect();
    for epoch in 1..=opts.epochs {
        for i in (1..order.len()).rev() {
            order.swap(i, below(&mut rng, i + 1));
        }
        let mut stats = Accumulator::default();
        for batch in order.chunks(opts.batch) {
            let mut grad = GateParams::<f32>::zeros(hidden, opts.distance);
            for &i in batch {
                let (loss, opened) = example_loss(&frozen, &gate, &examples[i], Some(&mut grad))?;
                stats.add(&examples[i], loss, opened);
            }
            let scale = 1.0 / batch.len() as f32;
            let mut flat: Vec<f32> = grad.weight.iter().map(|g| g * scale).collect();
            flat.extend(grad.bias.iter().map(|g| g * scale));
            adam.step(&mut gate, &flat, opts.lr);
        }
        report.train.push(stats.finish());
        if !held_out.is_empty() {
            let mut v = Accumulator::default();
            for ex in &held_out {
                let (loss, opened) = example_loss(&frozen, &gate, ex, None)?;
                v.add(ex, loss, opened);
            }
            let s = v.finish();
            let total = s.loss_true + s.loss_random;
            if best.as_ref().is_none_or(|(b, _, _)| total < *b) {
                best = Some((total, gate.clone(), epoch));
            }
            report.validation.push(s);
        }
    }
    report.train_seconds = start.elapsed().as_secs_f64();
    let (gate, kept) = match best {
        Some((_, g, e)) => (g, e),
        None => (gate, opts.epochs),
    };
    report.kept_epoch = kept;
    Ok((gate, report))
}

/// `bundle` with `gate` added as [`GATE_WEIGHT`] and [`GATE_BIAS`] (replacing any gate it
/// had) and `note` appended to its provenance notes, written atomically to `out`.
pub fn write_with_gate(
    bundle: &Bundle,
    gate: &GateParams,
    note: &str,
    out: &std::path::Path,
) -> Result<()> {
    let mut writer =
        BundleWriter::copy_of(bundle, |name| name != GATE_WEIGHT && name != GATE_BIAS)?;
    let notes = &mut writer.metadata_mut().provenance.notes;
    if !notes.is_empty() {
        if !notes.ends_with('.') {
            notes.push('.');
        }
        notes.push(' ');
    }
    notes.push_str(note);
    writer.add_f32(GATE_WEIGHT, &[gate.weight.len() / 2, 2], &gate.weight)?;
    writer.add_f32(GATE_BIAS, &[2], &gate.bias)?;
    writer
        .write(out)
        .with_context(|| format!("writing {}", out.display()))
}

/// The bundle's prototypes of every type of `corpus` (its "other" row 0 last, when it has
/// one); a type the bank lacks is an error.
fn prototype_set(bundle: &Bundle, corpus: &Corpus) -> Result<Vec<f32>> {
    let meta = bundle.metadata();
    let d = meta.encoder.type_dim;
    let bank = bundle.to_f32_vec(tensor_names::PROTOTYPES)?;
    let mut set = Vec::with_capacity((corpus.types.len() + 1) * d);
    for name in &corpus.types {
        let Some(t) = meta.labels.types.iter().find(|t| &t.name == name) else {
            bail!(
                "{}: type {name:?} has no prototype in {}",
                corpus.name,
                bundle.name()
            );
        };
        let row = bank
            .get(t.prototype_row * d..(t.prototype_row + 1) * d)
            .with_context(|| format!("prototype row {} of {name:?}", t.prototype_row))?;
        set.extend_from_slice(row);
    }
    if bundle.tensor_info(tensor_names::OTHER_PROTOTYPES).is_ok() {
        let other = bundle.to_f32_vec(tensor_names::OTHER_PROTOTYPES)?;
        set.extend_from_slice(
            other
                .get(..d)
                .context("labels.other is shorter than one row")?,
        );
    }
    Ok(set)
}

/// Labels of `tags` over `types` (`O` 0, `B-k` 1 + 2k, `I-k` 2 + 2k).
fn labels_of(tags: &[String], types: &[String]) -> Result<Vec<usize>> {
    tags.iter()
        .map(|tag| {
            if tag == "O" {
                return Ok(0);
            }
            let (offset, name) = match (tag.strip_prefix("B-"), tag.strip_prefix("I-")) {
                (Some(n), _) => (1, n),
                (_, Some(n)) => (2, n),
                _ => bail!("tag {tag:?} is not O, B-TYPE or I-TYPE"),
            };
            let k = types
                .iter()
                .position(|t| t == name)
                .with_context(|| format!("tag {tag:?} names no type of the corpus"))?;
            Ok(offset + 2 * k)
        })
        .collect()
}

/// Up to `limit` sentences of `corpus`, each with its true context (when it has one) and a
/// random one, encoded by `tagger`'s frozen encoder.
fn encode_examples(
    tagger: &Tagger,
    corpus: &Corpus,
    set: usize,
    opts: &GateOptions,
    limit: usize,
) -> Result<Vec<Example>> {
    let n = opts.context_sentences;
    let truth = sentence_contexts(corpus, ContextKind::Document, n, opts.seed);
    let noise = sentence_contexts(corpus, ContextKind::Random, n, opts.seed.wrapping_add(1));
    let mut rng = SplitMix64::new(opts.seed ^ (set as u64).wrapping_mul(0x9e37));
    let mut chosen: Vec<usize> = (0..corpus.sentences.len()).collect();
    for i in (1..chosen.len()).rev() {
        chosen.swap(i, below(&mut rng, i + 1));
    }
    chosen.truncate(limit);
    chosen.sort_unstable();
    let tokenizer = tagger.tokenizer();
    let encoder = tagger.encoder();
    let h = encoder.hidden_dim();
    let max = encoder.max_pieces();
    let mut out = Vec::new();
    for part in chosen.chunks(256) {
        struct Item {
            sentence: usize,
            text: Encoding,
            windows: Vec<(ContextWindow, bool)>,
        }
        let mut items = Vec::with_capacity(part.len());
        for &i in part {
            let s = &corpus.sentences[i];
            let words: Vec<&str> = s.tokens.iter().map(String::as_str).collect();
            let text = tokenizer.encode_words(&words);
            let mut windows = Vec::new();
            for (ctx, random) in [(&truth[i], false), (&noise[i], true)] {
                if let Some(c) = ctx {
                    if let Some(w) = ContextWindow::new(&tokenizer.encode(c), &text, max) {
                        windows.push((w, random));
                    }
                }
            }
            if !windows.is_empty() {
                items.push(Item {
                    sentence: i,
                    text,
                    windows,
                });
            }
        }
        let mut seqs: Vec<PieceSeq<'_>> = items.iter().map(|it| PieceSeq::from(&it.text)).collect();
        for it in &items {
            seqs.extend(it.windows.iter().map(|(w, _)| PieceSeq {
                ids: &w.ids,
                shapes: &w.shapes,
            }));
        }
        let (scores, _) = encoder.encode_on(&seqs, opts.threads)?;
        let (alone_scores, mut rest) = (&scores[..items.len()], scores[items.len()..].iter());
        for (it, alone) in items.iter().zip(alone_scores) {
            let sentence = &corpus.sentences[it.sentence];
            let labels = labels_of(&sentence.tags, &corpus.types)
                .with_context(|| format!("sentence {}", it.sentence + 1))?;
            ensure!(
                labels.len() == it.text.word_first_piece.len(),
                "sentence {}: {} tags for {} words",
                it.sentence + 1,
                labels.len(),
                it.text.word_first_piece.len()
            );
            let firsts: Vec<usize> = it
                .text
                .word_first_piece
                .iter()
                .map(|&p| p as usize)
                .collect();
            let rows = |hidden: &[f32], offset: usize| -> Vec<f32> {
                firsts
                    .iter()
                    .flat_map(|&p| {
                        hidden[(offset + p) * h..(offset + p + 1) * h]
                            .iter()
                            .copied()
                    })
                    .collect()
            };
            let e = rows(&alone.hidden, 0);
            for (w, random) in &it.windows {
                let c = rest
                    .next()
                    .context("the encoder returned too few sequences")?;
                out.push(Example {
                    set,
                    labels: labels.clone(),
                    alone: e.clone(),
                    with_context: rows(&c.hidden, w.offset),
                    random: *random,
                });
            }
        }
    }
    Ok(out)
}

/// Dense loss of one example under `gate`, with the gate's gradient added into `grad` when
/// given; also returns the sum of the openings.
fn example_loss(
    frozen: &Frozen<'_>,
    gate: &GateParams,
    ex: &Example,
    grad: Option<&mut GateParams>,
) -> Result<(f64, f64)> {
    let h = gate.hidden;
    let words = ex.labels.len();
    let mut fused = vec![0.0f32; words * h];
    let mut openings = vec![0.0f32; words];
    gate_forward(gate, &ex.alone, &ex.with_context, &mut fused, &mut openings);
    let heads = frozen.heads;
    let d = heads.type_dim;
    let (mut boundary, mut types) = (Vec::new(), Vec::new());
    heads.apply(&fused, &mut boundary, &mut types);
    let loss = dense_loss(
        &SentenceRef {
            boundary: &boundary,
            types: &types,
            labels: &ex.labels,
        },
        &frozen.sets[ex.set],
        d,
        &frozen.cdt,
        &LossWeights::default(),
    )?;
    if let Some(grad) = grad {
        let mut d_fused = vec![0.0f32; words * h];
        for t in 0..words {
            let db = &loss.grad.boundary[t * 3..t * 3 + 3];
            let dt = &loss.grad.types[t * d..(t + 1) * d];
            for (k, o) in d_fused[t * h..(t + 1) * h].iter_mut().enumerate() {
                let wb = &heads.boundary_weight[k * 3..k * 3 + 3];
                let wt = &heads.types_weight[k * d..(k + 1) * d];
                *o = db.iter().zip(wb).map(|(a, b)| a * b).sum::<f32>()
                    + dt.iter().zip(wt).map(|(a, b)| a * b).sum::<f32>();
            }
        }
        gate_backward(
            gate,
            &ex.alone,
            &ex.with_context,
            &openings,
            &d_fused,
            grad,
            None,
        );
    }
    let opened = openings.iter().map(|&g| f64::from(g)).sum();
    Ok((loss.terms.total, opened))
}

#[derive(Default)]
struct Accumulator {
    loss: [f64; 2],
    count: [usize; 2],
    opened: [f64; 2],
    words: [usize; 2],
}

impl Accumulator {
    fn add(&mut self, ex: &Example, loss: f64, opened: f64) {
        let k = usize::from(ex.random);
        self.loss[k] += loss;
        self.count[k] += 1;
        self.opened[k] += opened;
        self.words[k] += ex.labels.len();
    }

    fn finish(&self) -> PassStats {
        let mean = |a: f64, n: usize| a / n.max(1) as f64;
        PassStats {
            loss_true: mean(self.loss[0], self.count[0]),
            loss_random: mean(self.loss[1], self.count[1]),
            opening_true: mean(self.opened[0], self.words[0]),
            opening_random: mean(self.opened[1], self.words[1]),
        }
    }
}

/// Adam (no weight decay) over the gate's `4 H + 2` numbers.
struct Adam {
    m: Vec<f32>,
    v: Vec<f32>,
    t: i32,
}

impl Adam {
    fn new(n: usize) -> Self {
        Adam {
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
        }
    }

    fn step(&mut self, gate: &mut GateParams, grad: &[f32], lr: f32) {
        const B1: f32 = 0.9;
        const B2: f32 = 0.999;
        self.t += 1;
        let c1 = 1.0 - B1.powi(self.t);
        let c2 = 1.0 - B2.powi(self.t);
        let params = gate.weight.iter_mut().chain(gate.bias.iter_mut());
        for (((p, &g), m), v) in params.zip(grad).zip(&mut self.m).zip(&mut self.v) {
            *m = B1 * *m + (1.0 - B1) * g;
            *v = B2 * *v + (1.0 - B2) * g * g;
            *p -= lr * (*m / c1) / ((*v / c2).sqrt() + 1e-8);
        }
    }
}
