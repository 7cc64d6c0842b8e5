//! Turning a trained state into a runtime bundle: a prototype bank with one prototype per entity
//! type name of the training corpora (the learned class vector when the run had dense
//! supervision, else the mean type vector over sample sentences), the label memory, the CDT
//! numbers, the prior MLP, the "other" vectors, the trained window and the provenance
//! (training-data hash included).

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use ner_edge::associated_memory::{AssocParams, AssociatedMemory, MemoryBank};
use ner_edge::bundle::{Bundle, BundleWriter, DType, Provenance};
use ner_edge::decode::Tag;
use ner_edge::tokenizer::Tokenizer;

use super::config::TrainConfig;
use super::data::TrainingData;
use super::meta::{EncoderOrigin, TrainState};
use crate::backprop::{forward, PieceBatch, Tape};
use crate::export::bundle::{export_bundle, BundleContents, PriorWeights, TypeState};
use crate::model::rng::SplitMix64;
use crate::model::ModelWeights;
use crate::WeightDtype;
use ner_edge_corpus::Sentence;

/// One prototype-bank entry: type name, the corpora it occurs in, prototype `[type_dim]`.
pub struct BankEntry {
    /// Entity type name.
    pub name: String,
    /// Names of the corpora it occurs in, in corpus order.
    pub corpora: Vec<String>,
    /// `[type_dim]`.
    pub prototype: Vec<f32>,
}

/// Corpora a type name occurs in and its sentences as `(corpus, sentence)` indices.
type Mentions = (Vec<String>, Vec<(usize, usize)>);

/// Sentences encoded per forward pass while building the prototype bank.
const BANK_BATCH: usize = 16;

/// Prototype of every entity type name in `data`: the mean type vector of that type's entity
/// words (first piece of each word) over up to `per_type` sentences mentioning it, drawn
/// without replacement by a generator seeded with `seed` and the type name. Types with the same
/// name in several corpora share one prototype. Entries are sorted by name.
pub fn prototype_bank(
    state: &TrainState,
    data: &TrainingData,
    tokenizer: &Tokenizer,
    per_type: usize,
    seed: u64,
) -> Result<Vec<BankEntry>> {
    let w = &state.weights;
    let dt = w.config.type_dim;
    let mut mentions: BTreeMap<&str, Mentions> = BTreeMap::new();
    for (c, corpus) in data.corpora.iter().enumerate() {
        for (s, sentence) in corpus.sentences.iter().enumerate() {
            let mut seen: Vec<&str> = sentence
                .tags
                .iter()
                .filter_map(|t| t.strip_prefix("B-"))
                .collect();
            seen.sort_unstable();
            seen.dedup();
            for name in seen {
                let entry = mentions.entry(name).or_default();
                if entry.0.last() != Some(&corpus.name) {
                    entry.0.push(corpus.name.clone());
                }
                entry.1.push((c, s));
            }
        }
    }
    let mut batch = PieceBatch::default();
    let mut tape = Tape::new();
    let mut bank = Vec::with_capacity(mentions.len());
    for (name, (corpora, mut picks)) in mentions {
        let mut rng = SplitMix64::new(seed ^ fnv(name));
        let take = per_type.max(1).min(picks.len());
        for i in 0..take {
            let j = i + (rng.next_u64() % (picks.len() - i) as u64) as usize;
            picks.swap(i, j);
        }
        picks.truncate(take);
        picks.sort_unstable();
        let mut sum = vec![0.0f64; dt];
        let mut count = 0usize;
        for chunk in picks.chunks(BANK_BATCH) {
            batch.clear();
            let mut firsts = Vec::with_capacity(chunk.len());
            for &(c, s) in chunk {
                let sentence = &data.corpora[c].sentences[s];
                firsts.push(push_wrapped(&mut batch, w, tokenizer, sentence)?);
            }
            forward(w, &batch, &mut tape);
            for (k, (word_first, tags)) in firsts.iter().enumerate() {
                let base = batch.offsets()[k] + 1;
                for (word, tag) in tags.iter().enumerate() {
                    let is_type = tag
                        .strip_prefix("B-")
                        .or_else(|| tag.strip_prefix("I-"))
                        .is_some_and(|t| t == name);
                    if is_type {
                        let row = base + word_first[word] as usize;
                        for (a, &v) in sum.iter_mut().zip(&tape.types()[row * dt..(row + 1) * dt]) {
                            *a += f64::from(v);
                        }
                        count += 1;
                    }
                }
            }
        }
        let prototype = sum
            .iter()
            .map(|&v| (v / count.max(1) as f64) as f32)
            .collect();
        bank.push(BankEntry {
            name: name.to_string(),
            corpora,
            prototype,
        });
    }
    Ok(bank)
}

/// The bank of a run with dense supervision: every type name of `data` with its learned class
/// vector, sorted by name.
pub fn class_bank(state: &TrainState, data: &TrainingData) -> Result<Vec<BankEntry>> {
    let classes = &state.classes;
    let mut corpora: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for c in &data.corpora {
        for t in &c.types {
            corpora.entry(t.as_str()).or_default().push(c.name.clone());
        }
    }
    corpora
        .into_iter()
        .map(|(name, corpora)| {
            let row = classes
                .index(name)
                .with_context(|| format!("type {name:?} has no class vector"))?;
            Ok(BankEntry {
                name: name.to_string(),
                corpora,
                prototype: classes.class(row).to_vec(),
            })
        })
        .collect()
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The bundle bytes of a trained state (see the module docs).
pub fn export_trained(
    config: &TrainConfig,
    state: &TrainState,
    data: &TrainingData,
    tokenizer: &Tokenizer,
    origin: &EncoderOrigin,
) -> Result<Vec<u8>> {
    let dt = state.weights.config.type_dim;
    let capacity = config.export.memory_capacity;
    let bank = if state.classes.names.is_empty() {
        prototype_bank(
            state,
            data,
            tokenizer,
            config.export.prototype_sentences,
            config.seed,
        )
        .context("building the prototype bank")?
    } else {
        class_bank(state, data)?
    };
    let mut memory_by_name: BTreeMap<&str, Vec<f32>> = BTreeMap::new();
    for (_, type_name, _, rows) in state.memory.slots() {
        memory_by_name
            .entry(type_name)
            .or_default()
            .extend_from_slice(rows);
    }
    let types: Vec<TypeState> = bank
        .into_iter()
        .map(
            |BankEntry {
                 name,
                 corpora,
                 prototype,
             }| {
                let mut memory = memory_by_name.remove(name.as_str()).unwrap_or_default();
                let keep = memory.len().min(capacity * dt);
                memory.drain(..memory.len() - keep);
                TypeState {
                    name,
                    source: corpora.join(","),
                    description: String::new(),
                    prototype,
                    memory,
                }
            },
        )
        .collect();
    let type_names: Vec<String> = types.iter().map(|t| t.name.clone()).collect();
    let names: Vec<&str> = type_names.iter().map(String::as_str).collect();
    for want in &config.export.default_active {
        if !names.contains(&want.as_str()) {
            bail!(
                "export.default_active names {want:?}, which no training corpus has; types are: {}",
                names.join(", ")
            );
        }
    }
    let default_active = if config.export.default_active.is_empty() {
        names.iter().map(|s| s.to_string()).collect()
    } else {
        config.export.default_active.clone()
    };
    let p = &state.heads.prior;
    let contents = BundleContents {
        vocab_text: origin.vocab_text.clone(),
        tokenizer: origin.tokenizer.clone(),
        charsmap: origin.charsmap.clone(),
        types,
        default_active,
        transitions: state.heads.cdt.clone(),
        memory_capacity: capacity,
        provenance: Provenance {
            encoder_source: origin.source.clone(),
            encoder_sha256: origin.sha256.clone(),
            training_data_sha256: data.sha256.clone(),
            training_corpora: data.corpora.iter().map(|c| c.name.clone()).collect(),
            created_by: format!("ner-train {}", env!("CARGO_PKG_VERSION")),
            notes: format!(
                "meta-trained {} steps x {} episodes{}, seed {}; weights of step {}",
                config.steps,
                config.episodes_per_step,
                if config.dense_on() {
                    format!(
                        " + {} dense sequences (window {})",
                        config.dense.sequences_per_step, config.dense.window
                    )
                } else {
                    String::new()
                },
                config.seed,
                state.step
            ),
        },
        prior: Some(PriorWeights {
            fc1_weight: p.fc1_weight.clone(),
            fc1_bias: p.fc1_bias.clone(),
            fc2_weight: p.fc2_weight.clone(),
            fc2_bias: p.fc2_bias.clone(),
        }),
        trained_window: Some(config.trained_window()),
        other_prototypes: state
            .classes
            .has_other()
            .then(|| state.classes.other.clone()),
    };
    let dtype = WeightDtype::parse(&config.export.dtype)
        .with_context(|| format!("export.dtype {:?}", config.export.dtype))?;
    let bytes = export_bundle(&state.weights, &contents, dtype)?;
    let bytes = match (&config.assoc, &state.heads.assoc) {
        (Some(a), Some(p)) => {
            let memory = associated_memory(
                state,
                p,
                data,
                tokenizer,
                &names,
                a.memory_sentences,
                config.seed,
            )
            .context("building the associated memory")?;
            with_tensors(bytes, memory_tensors(p, &memory)?)?
        }
        _ => bytes,
    };
    add_sentence_hashes(bytes, &training_sentence_hashes(data))
}

/// One extra bundle tensor: name, dtype, shape, little-endian bytes.
type RawTensor = (String, DType, Vec<usize>, Vec<u8>);

/// The memory of `count` training sentences (fewer when the corpora have fewer), drawn
/// uniformly without replacement over every corpus's sentences with a generator seeded by
/// `seed`, kept in corpus order: each sentence's word keys under the trained read `p` and its
/// gold labels over `type_names` (the bundle's types, in order; other tags become O).
pub fn associated_memory(
    state: &TrainState,
    p: &AssocParams,
    data: &TrainingData,
    tokenizer: &Tokenizer,
    type_names: &[&str],
    count: usize,
    seed: u64,
) -> Result<MemoryBank> {
    let w = &state.weights;
    let dt = w.config.type_dim;
    let mut all: Vec<(usize, usize)> = data
        .corpora
        .iter()
        .enumerate()
        .flat_map(|(c, corpus)| (0..corpus.sentences.len()).map(move |s| (c, s)))
        .collect();
    let take = count.min(all.len());
    let mut rng = SplitMix64::new(seed ^ 0x4d45_4d4f);
    for i in 0..take {
        let j = i + (rng.next_u64() % (all.len() - i) as u64) as usize;
        all.swap(i, j);
    }
    all.truncate(take);
    all.sort_unstable();
    let label_of = |tag: &str| -> u16 {
        let typed = |name: &str| type_names.iter().position(|t| *t == name);
        let label = match (tag.strip_prefix("B-"), tag.strip_prefix("I-")) {
            (Some(name), _) => typed(name).map(|k| Tag::B(k).to_index()),
            (_, Some(name)) => typed(name).map(|k| Tag::I(k).to_index()),
            _ => None,
        };
        label.unwrap_or(0).min(usize::from(u16::MAX)) as u16
    };
    let mut bank = MemoryBank::empty(p.width());
    let mut batch = PieceBatch::default();
    let mut tape = Tape::new();
    let mut keys = Vec::new();
    for chunk in all.chunks(BANK_BATCH) {
        batch.clear();
        let mut words = Vec::with_capacity(chunk.len());
        for &(c, s) in chunk {
            let sentence = &data.corpora[c].sentences[s];
            let (first, tags) = push_wrapped(&mut batch, w, tokenizer, sentence)?;
            let labels: Vec<u16> = tags.iter().map(|t| label_of(t)).collect();
            words.push((first, labels));
        }
        forward(w, &batch, &mut tape);
        for (k, (first, labels)) in words.iter().enumerate() {
            let base = batch.offsets()[k] + 1;
            let types: Vec<f32> = first
                .iter()
                .flat_map(|&f| {
                    let row = base + f as usize;
                    tape.types()[row * dt..(row + 1) * dt].iter().copied()
                })
                .collect();
            p.project(&p.key, &types, &mut keys);
            AssociatedMemory::round_keys_to_f16(&mut keys);
            bank.push_sentence(&keys, labels)?;
        }
    }
    Ok(bank)
}

/// Pushes `sentence` into `batch` as `[CLS] pieces [SEP]` with its word shapes (0 for the
/// specials); returns the first piece of each of its words (without the `[CLS]` offset) and
/// their tags at the tokenizer's units.
fn push_wrapped(
    batch: &mut PieceBatch,
    w: &ModelWeights,
    tokenizer: &Tokenizer,
    sentence: &Sentence,
) -> Result<(Vec<u32>, Vec<String>)> {
    let (enc, tags) = super::data::sentence_encoding(sentence, tokenizer);
    let mut ids = Vec::with_capacity(enc.ids.len() + 2);
    ids.push(tokenizer.cls_id());
    ids.extend_from_slice(&enc.ids);
    ids.push(tokenizer.sep_id());
    let shapes: Vec<u8> = std::iter::once(0)
        .chain(enc.shapes.iter().copied())
        .chain([0])
        .collect();
    batch.push_shaped(&w.config, &ids, Some(&shapes))?;
    Ok((enc.word_first_piece, tags.into_owned()))
}

/// The bundle tensors of a read and its memory (names in
/// [`ner_edge::associated_memory::tensor_names`]).
pub fn memory_tensors(p: &AssocParams, bank: &MemoryBank) -> Result<Vec<RawTensor>> {
    use ner_edge::associated_memory::tensor_names as n;
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (keys, labels, offsets) = bank.to_stored().map_err(anyhow::Error::msg)?;
    Ok(vec![
        (
            n::QUERY.into(),
            DType::F32,
            vec![p.type_dim, p.width()],
            f32s(&p.query),
        ),
        (
            n::KEY.into(),
            DType::F32,
            vec![p.type_dim, p.width()],
            f32s(&p.key),
        ),
        (
            n::TAG_VALUES.into(),
            DType::F32,
            vec![p.heads, 3, 3],
            f32s(&p.tag_values),
        ),
        (
            n::TYPE_GAIN.into(),
            DType::F32,
            vec![p.heads],
            f32s(&p.type_gain),
        ),
        (
            n::MEMORY_KEYS.into(),
            DType::F16,
            vec![bank.words(), bank.width()],
            keys,
        ),
        (
            n::MEMORY_LABELS.into(),
            DType::Bytes,
            vec![labels.len()],
            labels,
        ),
        (
            n::MEMORY_SENTENCES.into(),
            DType::Bytes,
            vec![offsets.len()],
            offsets,
        ),
    ])
}

/// `bundle` with `extra` tensors added after its own; metadata and every other tensor are
/// copied unchanged. Fails when `bundle` is not a valid bundle or a name is taken.
pub fn with_tensors(bundle: Vec<u8>, extra: Vec<RawTensor>) -> Result<Vec<u8>> {
    let source = Bundle::from_vec(bundle, "exported bundle")?;
    let mut writer = BundleWriter::new(source.metadata().clone());
    for t in source.tensors() {
        writer.add_raw(&t.name, t.dtype, &t.shape, source.bytes(&t.name)?.to_vec())?;
    }
    for (name, dtype, shape, bytes) in extra {
        writer.add_raw(&name, dtype, &shape, bytes)?;
    }
    Ok(writer.to_bytes()?)
}

/// Name of the optional bundle tensor holding the training sentences' hashes: `u8`, shape
/// `[n, 8]`, row `i` the little-endian `u64` [`sentence_hash`] of a training sentence, rows
/// sorted ascending and distinct. The runtime ignores it; `ner-tools eval` uses it to refuse
/// test data the bundle was trained on.
pub const SENTENCE_HASHES: &str = "training.sentence_hashes";

/// XXH64 (seed 0) of a sentence's tokens, each lower-cased, joined by U+001F.
pub fn sentence_hash<S: AsRef<str>>(tokens: &[S]) -> u64 {
    let mut text = String::new();
    for (i, t) in tokens.iter().enumerate() {
        if i > 0 {
            text.push('\u{1f}');
        }
        text.push_str(&t.as_ref().to_lowercase());
    }
    ner_edge::bundle::xxh64(text.as_bytes(), 0)
}

/// The sorted, distinct [`sentence_hash`] of every sentence of `data`.
pub fn training_sentence_hashes(data: &TrainingData) -> Vec<u64> {
    let mut hashes: Vec<u64> = data
        .corpora
        .iter()
        .flat_map(|c| c.sentences.iter().map(|s| sentence_hash(&s.tokens)))
        .collect();
    hashes.sort_unstable();
    hashes.dedup();
    hashes
}

/// `bundle` with the [`SENTENCE_HASHES`] tensor (from `hashes`, sorted and deduplicated here)
/// added after its other tensors; metadata and every other tensor are copied unchanged.
/// Fails when `bundle` is not a valid bundle or already has the tensor.
pub fn add_sentence_hashes(bundle: Vec<u8>, hashes: &[u64]) -> Result<Vec<u8>> {
    let mut sorted = hashes.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let bytes: Vec<u8> = sorted.iter().flat_map(|h| h.to_le_bytes()).collect();
    with_tensors(
        bundle,
        vec![(
            SENTENCE_HASHES.into(),
            DType::U8,
            vec![sorted.len(), 8],
            bytes,
        )],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentence_hashes_ignore_case_but_not_token_boundaries() {
        assert_eq!(
            sentence_hash(&["New", "York"]),
            sentence_hash(&["new", "YORK"])
        );
        assert_ne!(
            sentence_hash(&["new", "york"]),
            sentence_hash(&["new york"])
        );
        assert_ne!(sentence_hash(&["newyork"]), sentence_hash(&["new", "york"]));
        assert_eq!(sentence_hash::<&str>(&[]), ner_edge::bundle::xxh64(b"", 0));
        assert_eq!(
            sentence_hash(&["a", "b"]),
            ner_edge::bundle::xxh64("a\u{1f}b".as_bytes(), 0)
        );
    }
}
