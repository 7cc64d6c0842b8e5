//! `ner-train prompt`: prompt adapters for a label pack, learnt on its support set with the
//! bundle's encoder frozen (LightNER's prompt-guided attention; the runtime side and the exact
//! expression are in [`ner_edge::encoder::prompts`], the forward/backward in
//! [`crate::backprop::prefix`]).
//!
//! 1. The types' prototypes are those of gradient-free adaptation ([`ner_edge::adapt::adapt`]),
//!    fixed from then on, as in head tuning.
//! 2. The encoder weights are read out of the bundle's graph ([`weights_from_bundle`]).
//! 3. Each layer's `P` prompt keys and values start as the keys and values that layer gives
//!    `P` tokens drawn from the support set (prefix-tuning's initialisation from real
//!    activations), the gates at 0, so training starts exactly at the bundle's outputs.
//! 4. Adam on mini-batches of support sentences minimises the mean CRF negative log-likelihood
//!    of the gold labels under the emissions `predict` computes
//!    ([`ner_edge::adapt::tune::sentence_nll`]); with `tune_heads`, the boundary head and type
//!    projection are trained too, with head tuning's L2 pull towards the bundle's heads.
//!
//! Prompt keys and values are rounded to f16 before the final loss (as the pack stores them),
//! so the reported loss is the stored pack's.

use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use ner_edge::adapt::tune::sentence_nll;
use ner_edge::adapt::{adapt, AdaptOptions, Adapted, SupportSet};
use ner_edge::bundle::{tensor_names, Bundle};
use ner_edge::decode::{self, Tag, Transitions};
use ner_edge::encoder::{Heads, Prompts};
use ner_edge::pack::{PackPrompts, TunedHeads};
use ner_edge::tokenizer::Tokenizer;

use crate::backprop::model::{backward_into_prefixes, forward_with_prefixes};
use crate::backprop::prefix::Prefixes;
use crate::backprop::{forward, BackwardScratch, PieceBatch, Tape};
use crate::import::bundle::weights_from_bundle;
use crate::model::rng::SplitMix64;
use crate::model::ModelWeights;
use crate::train::optimizer::{AdamW, AdamWConfig, ParamUpdate};

/// Default Adam learning rate of the prompts: chosen on ATIS valid (K = 10 sentences per type,
/// CoNLL-only source model, `benches/RESULTS.md`), where 1e-2 / 3e-2 / 5e-2 / 1e-1 / 3e-1 gave
/// prompts+heads F1 61.4 / 69.8 / 69.5 / 74.6 / 0.0; one step below the best for a margin from
/// the collapse.
pub const DEFAULT_PROMPT_LR: f32 = 5e-2;

/// Settings of [`train_prompts`].
#[derive(Clone, Debug)]
pub struct PromptOptions {
    /// Prompt vectors per layer, `P`.
    pub len: usize,
    /// Passes over the support set.
    pub epochs: usize,
    /// Support sentences per Adam step.
    pub batch: usize,
    /// Adam learning rate of the prompts.
    pub lr: f32,
    /// Also train the boundary head and type projection.
    pub tune_heads: bool,
    /// Adam learning rate of the heads.
    pub head_lr: f32,
    /// Weight of the L2 pull of the heads towards the bundle's.
    pub head_l2: f32,
    /// Seed of the initial tokens and the sentence order.
    pub seed: u64,
    /// Threads a mini-batch is split over.
    pub threads: usize,
}

impl Default for PromptOptions {
    fn default() -> Self {
        PromptOptions {
            len: 10,
            epochs: 8,
            batch: 8,
            lr: DEFAULT_PROMPT_LR,
            tune_heads: false,
            head_lr: ner_edge::adapt::tune::DEFAULT_TUNE_LR,
            head_l2: ner_edge::adapt::tune::DEFAULT_TUNE_L2,
            seed: 1,
            threads: 1,
        }
    }
}

/// What a [`train_prompts`] run did.
#[derive(Clone, Debug)]
pub struct PromptReport {
    /// Support sentences trained on.
    pub sentences: usize,
    /// Word pieces in them, `[CLS]`/`[SEP]` included.
    pub pieces: usize,
    /// Adam steps.
    pub steps: usize,
    /// Mean NLL per sentence (plus the head L2 term) before training.
    pub loss_before: f64,
    /// The same after training, with the prompts as stored.
    pub loss_after: f64,
    /// Wall time of the whole run.
    pub seconds: f64,
}

/// One support sentence as the encoder sees it.
struct Example {
    /// `[CLS]`, the pieces, `[SEP]`.
    ids: Vec<u32>,
    shapes: Vec<u8>,
    /// Row of each word's first piece in `ids`.
    first: Vec<usize>,
    /// Gold label per word.
    labels: Vec<usize>,
}

/// The pack (gradient-free prototypes, tuned heads when asked) and prompts learnt on `support`
/// for `bundle`. `adapt_opts` chooses the types and descriptions as for `ner-edge adapt`
/// (its `tune` is ignored; `opts.tune_heads` decides).
pub fn train_prompts(
    bundle: &Bundle,
    support: &SupportSet,
    adapt_opts: &AdaptOptions,
    opts: &PromptOptions,
) -> Result<(Adapted, Prompts, PromptReport)> {
    let started = Instant::now();
    ensure!(opts.len >= 1, "--len must be at least 1");
    ensure!(opts.batch >= 1, "--batch must be at least 1");
    ensure!(
        opts.lr.is_finite() && opts.lr > 0.0,
        "--lr must be positive"
    );
    let mut adapted = adapt(
        bundle,
        Some(support),
        &AdaptOptions {
            tune: None,
            ..adapt_opts.clone()
        },
    )?;
    let mut w = weights_from_bundle(bundle)?;
    let c = w.config.clone();
    let meta = bundle.metadata();
    let vocab = std::str::from_utf8(bundle.bytes(tensor_names::VOCAB)?)
        .context("the bundle's vocabulary is not UTF-8")?;
    let tokenizer = Tokenizer::new(&meta.tokenizer, vocab)?;
    let names: Vec<String> = adapted
        .metadata
        .types
        .iter()
        .map(|t| t.name.clone())
        .collect();
    let window = meta
        .encoder
        .trained_window
        .unwrap_or(c.max_positions - 2)
        .min(c.max_positions - 2);
    let examples = examples(support, &tokenizer, &names, window)?;
    ensure!(
        !examples.is_empty(),
        "{}: no support sentence has a word to train on",
        support.source
    );
    let n_types = names.len();
    let transitions = decode::unfold(&adapted.metadata.transitions, n_types);
    let base_heads = heads_of(&w);

    let mut rng = SplitMix64::new(opts.seed);
    let mut prefixes = initial_prefixes(&w, &examples, opts.len, &mut rng)?;
    let problem = Problem {
        prototypes: &adapted.prototypes,
        n_types,
        transitions: &transitions,
        base_heads: &base_heads,
        head_l2: if opts.tune_heads { opts.head_l2 } else { 0.0 },
    };
    let all: Vec<usize> = (0..examples.len()).collect();
    let mut workers: Vec<Worker> = (0..opts.threads.max(1)).map(|_| Worker::new(&w)).collect();
    let loss_before = problem.loss(&w, &prefixes, &examples, &all, &mut workers, None)?;

    let adam = AdamWConfig {
        weight_decay: 0.0,
        ..AdamWConfig::default()
    };
    let mut adam_prompts = AdamW::new(
        adam.clone(),
        &[
            prefixes.key.len(),
            prefixes.value.len(),
            prefixes.gate.len(),
        ],
    );
    let mut adam_heads = AdamW::new(
        adam,
        &[
            w.boundary.weight.len(),
            w.boundary.bias.len(),
            w.types.weight.len(),
            w.types.bias.len(),
        ],
    );
    let mut order = all.clone();
    let mut steps = 0;
    for _ in 0..opts.epochs {
        shuffle(&mut order, &mut rng);
        for chunk in order.chunks(opts.batch) {
            let mut grads = Grads::zeros(&w, &prefixes);
            let l = problem.loss(
                &w,
                &prefixes,
                &examples,
                chunk,
                &mut workers,
                Some(&mut grads),
            )?;
            if !l.is_finite() {
                bail!("prompt training diverged at step {}: loss {l}", steps + 1);
            }
            steps += 1;
            adam_prompts.step(&mut [
                update(&mut prefixes.key, &grads.prefixes.key, opts.lr),
                update(&mut prefixes.value, &grads.prefixes.value, opts.lr),
                update(&mut prefixes.gate, &grads.prefixes.gate, opts.lr),
            ])?;
            if opts.tune_heads {
                adam_heads.step(&mut [
                    update(
                        &mut w.boundary.weight,
                        &grads.heads.boundary_weight,
                        opts.head_lr,
                    ),
                    update(
                        &mut w.boundary.bias,
                        &grads.heads.boundary_bias,
                        opts.head_lr,
                    ),
                    update(&mut w.types.weight, &grads.heads.types_weight, opts.head_lr),
                    update(&mut w.types.bias, &grads.heads.types_bias, opts.head_lr),
                ])?;
            }
        }
    }
    for v in prefixes.key.iter_mut().chain(prefixes.value.iter_mut()) {
        *v = half::f16::from_f32(*v).to_f32();
    }
    let loss_after = problem.loss(&w, &prefixes, &examples, &all, &mut workers, None)?;
    if !loss_after.is_finite() {
        bail!("prompt training diverged: final loss {loss_after}");
    }
    let prompts = Prompts {
        len: opts.len,
        layers: c.layers,
        heads: c.heads,
        hidden: c.hidden,
        key: prefixes.key,
        value: prefixes.value,
        gate: prefixes.gate,
    };
    prompts.check("trained prompts")?;
    adapted.metadata.prompts = Some(PackPrompts {
        len: opts.len,
        layers: c.layers,
        heads: c.heads,
        hidden: c.hidden,
        steps,
        learning_rate: opts.lr,
        loss_before,
        loss_after,
    });
    if opts.tune_heads {
        let heads = heads_of(&w);
        heads.check("tuned heads")?;
        adapted.metadata.tuned_heads = Some(TunedHeads {
            hidden: c.hidden,
            steps,
            learning_rate: opts.head_lr,
            l2: opts.head_l2,
            loss_before,
            loss_after,
        });
        adapted.heads = Some(heads);
    }
    adapted.metadata.provenance.created_by = format!("ner-train {}", env!("CARGO_PKG_VERSION"));
    let report = PromptReport {
        sentences: examples.len(),
        pieces: examples.iter().map(|e| e.ids.len()).sum(),
        steps,
        loss_before,
        loss_after,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((adapted, prompts, report))
}

/// The support sentences with at least one word, tokenised and labelled over `names` (mentions
/// of other types are `O`). A sentence longer than `window` pieces is an error naming its line.
fn examples(
    support: &SupportSet,
    tokenizer: &Tokenizer,
    names: &[String],
    window: usize,
) -> Result<Vec<Example>> {
    let mut out = Vec::new();
    for s in &support.sentences {
        let enc = tokenizer.encode(&s.text);
        if enc.words.is_empty() {
            continue;
        }
        ensure!(
            enc.ids.len() <= window,
            "{}: line {}: the sentence has {} word pieces, more than the encoder's window of \
             {window}; split it",
            support.source,
            s.line,
            enc.ids.len()
        );
        let mut tags = vec![Tag::O; enc.words.len()];
        for e in &s.entities {
            let Some(k) = names.iter().position(|n| *n == e.type_name) else {
                continue;
            };
            let covered = enc
                .words
                .iter()
                .enumerate()
                .filter(|(_, w)| w.start < e.span.end && e.span.start < w.end)
                .map(|(i, _)| i);
            for (j, i) in covered.enumerate() {
                tags[i] = if j == 0 { Tag::B(k) } else { Tag::I(k) };
            }
        }
        let mut ids = Vec::with_capacity(enc.ids.len() + 2);
        ids.push(tokenizer.cls_id());
        ids.extend_from_slice(&enc.ids);
        ids.push(tokenizer.sep_id());
        let mut shapes = vec![0u8; ids.len()];
        if enc.shapes.len() == enc.ids.len() {
            shapes[1..=enc.ids.len()].copy_from_slice(&enc.shapes);
        }
        out.push(Example {
            ids,
            shapes,
            first: enc
                .word_first_piece
                .iter()
                .map(|&p| p as usize + 1)
                .collect(),
            labels: tags.iter().map(|t| t.to_index()).collect(),
        });
    }
    Ok(out)
}

/// An Adam update without weight decay.
fn update<'a>(value: &'a mut [f32], grad: &'a [f32], lr: f32) -> ParamUpdate<'a> {
    ParamUpdate {
        value,
        grad,
        lr,
        decay: false,
    }
}

/// The heads of `w` in the runtime's form.
fn heads_of(w: &ModelWeights) -> Heads {
    Heads {
        hidden: w.config.hidden,
        type_dim: w.config.type_dim,
        boundary_weight: w.boundary.weight.clone(),
        boundary_bias: w.boundary.bias.clone(),
        types_weight: w.types.weight.clone(),
        types_bias: w.types.bias.clone(),
    }
}

/// Prompts whose keys and values at each layer are those of `len` support tokens drawn at
/// random (without replacement while there are enough), with closed gates.
fn initial_prefixes(
    w: &ModelWeights,
    examples: &[Example],
    len: usize,
    rng: &mut SplitMix64,
) -> Result<Prefixes> {
    let c = &w.config;
    let batch = batch_of(w, examples, &(0..examples.len()).collect::<Vec<_>>())?;
    let mut tape = Tape::new();
    forward(w, &batch, &mut tape);
    let n = batch.tokens();
    let mut pool: Vec<usize> = (0..n).collect();
    shuffle(&mut pool, rng);
    let picked: Vec<usize> = (0..len).map(|i| pool[i % n]).collect();
    let mut p = Prefixes::zeros(c.layers, len, c.hidden, c.heads);
    let h = c.hidden;
    for l in 0..c.layers {
        let (k, v) = tape.layer_keys_values(l);
        let g = p.layer_mut(l, h, c.heads);
        for (j, &t) in picked.iter().enumerate() {
            g.key[j * h..(j + 1) * h].copy_from_slice(&k[t * h..(t + 1) * h]);
            g.value[j * h..(j + 1) * h].copy_from_slice(&v[t * h..(t + 1) * h]);
        }
    }
    Ok(p)
}

fn batch_of(w: &ModelWeights, examples: &[Example], which: &[usize]) -> Result<PieceBatch> {
    let mut b = PieceBatch::default();
    for &i in which {
        let e = &examples[i];
        b.push_shaped(&w.config, &e.ids, Some(&e.shapes))?;
    }
    Ok(b)
}

/// Fisher–Yates with `rng`.
fn shuffle(v: &mut [usize], rng: &mut SplitMix64) {
    for i in (1..v.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

/// Gradients of one step.
struct Grads {
    prefixes: Prefixes,
    heads: Heads,
}

impl Grads {
    fn zeros(w: &ModelWeights, p: &Prefixes) -> Grads {
        let c = &w.config;
        let mut heads = heads_of(w);
        for t in [
            &mut heads.boundary_weight,
            &mut heads.boundary_bias,
            &mut heads.types_weight,
            &mut heads.types_bias,
        ] {
            t.fill(0.0);
        }
        Grads {
            prefixes: Prefixes::zeros(c.layers, p.len, c.hidden, c.heads),
            heads,
        }
    }

    fn add(&mut self, other: &Grads) {
        let pairs = [
            (&mut self.prefixes.key, &other.prefixes.key),
            (&mut self.prefixes.value, &other.prefixes.value),
            (&mut self.prefixes.gate, &other.prefixes.gate),
            (
                &mut self.heads.boundary_weight,
                &other.heads.boundary_weight,
            ),
            (&mut self.heads.boundary_bias, &other.heads.boundary_bias),
            (&mut self.heads.types_weight, &other.heads.types_weight),
            (&mut self.heads.types_bias, &other.heads.types_bias),
        ];
        for (a, b) in pairs {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
    }
}

/// The fixed parts of the objective.
struct Problem<'a> {
    prototypes: &'a [f32],
    n_types: usize,
    transitions: &'a Transitions,
    base_heads: &'a Heads,
    head_l2: f32,
}

impl Problem<'_> {
    /// Mean NLL over the sentences `which` plus the head L2 term; with `grads`, adds the
    /// gradient into it. The sentences are split over the `workers`, one thread each.
    fn loss(
        &self,
        w: &ModelWeights,
        prefixes: &Prefixes,
        examples: &[Example],
        which: &[usize],
        workers: &mut [Worker],
        grads: Option<&mut Grads>,
    ) -> Result<f64> {
        let scale = 1.0 / which.len().max(1) as f64;
        let want_grads = grads.is_some();
        let parts = which.chunks(which.len().div_ceil(workers.len().max(1)).max(1));
        let results: Vec<Result<(f64, Option<Grads>)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = parts
                .zip(workers.iter_mut())
                .map(|(part, worker)| {
                    scope.spawn(move || {
                        self.part(w, prefixes, examples, part, scale, want_grads, worker)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a training thread panicked")))
                })
                .collect()
        });
        let mut loss = 0.0;
        let mut grads = grads;
        for r in results {
            let (l, g) = r?;
            loss += l;
            if let (Some(total), Some(g)) = (grads.as_deref_mut(), g) {
                total.add(&g);
            }
        }
        let lambda = self.head_l2;
        if lambda != 0.0 {
            let base = self.base_heads;
            let now = [
                (&w.boundary.weight, &base.boundary_weight),
                (&w.boundary.bias, &base.boundary_bias),
                (&w.types.weight, &base.types_weight),
                (&w.types.bias, &base.types_bias),
            ];
            for (a, b) in now {
                loss += 0.5
                    * f64::from(lambda)
                    * a.iter()
                        .zip(b)
                        .map(|(&x, &y)| f64::from(x - y).powi(2))
                        .sum::<f64>();
            }
            if let Some(g) = grads {
                let targets = [
                    (
                        &mut g.heads.boundary_weight,
                        &w.boundary.weight,
                        &base.boundary_weight,
                    ),
                    (
                        &mut g.heads.boundary_bias,
                        &w.boundary.bias,
                        &base.boundary_bias,
                    ),
                    (
                        &mut g.heads.types_weight,
                        &w.types.weight,
                        &base.types_weight,
                    ),
                    (&mut g.heads.types_bias, &w.types.bias, &base.types_bias),
                ];
                for (gt, a, b) in targets {
                    for ((o, &x), &y) in gt.iter_mut().zip(a).zip(b) {
                        *o += lambda * (x - y);
                    }
                }
            }
        }
        Ok(loss)
    }

    /// One thread's share of [`Problem::loss`], on `worker`'s buffers.
    #[allow(clippy::too_many_arguments)]
    fn part(
        &self,
        w: &ModelWeights,
        prefixes: &Prefixes,
        examples: &[Example],
        which: &[usize],
        scale: f64,
        want_grads: bool,
        worker: &mut Worker,
    ) -> Result<(f64, Option<Grads>)> {
        let c = &w.config;
        let d = c.type_dim;
        let batch = batch_of(w, examples, which)?;
        let tape = &mut worker.tape;
        forward_with_prefixes(w, &batch, prefixes, tape);
        let n = batch.tokens();
        let mut d_boundary = vec![0.0f32; if want_grads { n * 3 } else { 0 }];
        let mut d_types = vec![0.0f32; if want_grads { n * d } else { 0 }];
        let (mut wb, mut wt, mut gb, mut gt) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut loss = 0.0;
        for (&i, &start) in which.iter().zip(batch.offsets()) {
            let e = &examples[i];
            wb.clear();
            wt.clear();
            for &p in &e.first {
                let row = start + p;
                wb.extend_from_slice(&tape.boundary()[row * 3..row * 3 + 3]);
                wt.extend_from_slice(&tape.types()[row * d..(row + 1) * d]);
            }
            let grads = want_grads.then_some((&mut gb, &mut gt));
            loss += sentence_nll(
                &wb,
                &wt,
                d,
                self.prototypes,
                self.n_types,
                self.transitions,
                &e.labels,
                scale,
                grads,
            );
            if want_grads {
                for (j, &p) in e.first.iter().enumerate() {
                    let row = start + p;
                    d_boundary[row * 3..row * 3 + 3].copy_from_slice(&gb[j * 3..j * 3 + 3]);
                    d_types[row * d..(row + 1) * d].copy_from_slice(&gt[j * d..(j + 1) * d]);
                }
            }
        }
        if !want_grads {
            return Ok((loss, None));
        }
        let held = &mut worker.grads;
        for t in [
            &mut held.boundary.weight,
            &mut held.boundary.bias,
            &mut held.types.weight,
            &mut held.types.bias,
        ] {
            t.fill(0.0);
        }
        let mut g = Grads::zeros(w, prefixes);
        backward_into_prefixes(
            w,
            &batch,
            tape,
            prefixes,
            &d_boundary,
            &d_types,
            held,
            &mut g.prefixes,
            &mut worker.scratch,
        );
        g.heads
            .boundary_weight
            .copy_from_slice(&held.boundary.weight);
        g.heads.boundary_bias.copy_from_slice(&held.boundary.bias);
        g.heads.types_weight.copy_from_slice(&held.types.weight);
        g.heads.types_bias.copy_from_slice(&held.types.bias);
        Ok((loss, Some(g)))
    }
}

/// One training thread's reusable buffers: the activations, the backward's work space and a
/// gradient holder of the model's shape (of which the frozen-encoder backward writes only the
/// heads and layer norms), allocated once per run.
struct Worker {
    tape: Tape,
    scratch: BackwardScratch,
    grads: ModelWeights,
}

impl Worker {
    fn new(w: &ModelWeights) -> Worker {
        Worker {
            tape: Tape::new(),
            scratch: BackwardScratch::new(),
            grads: ModelWeights::zeros(&w.config),
        }
    }
}
