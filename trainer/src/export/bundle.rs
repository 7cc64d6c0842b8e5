//! Assembling a runtime bundle from encoder weights, a vocabulary and the label state.

use anyhow::{ensure, Context, Result};
use ner_edge::bundle::{
    tensor_names, BundleWriter, CdtParams, EncoderMeta, EntityType, LabelInventory,
    LabelMemoryLayout, MemorySlot, Metadata, Provenance, TokenizerMeta,
};
use ner_edge::tokenizer::{SHAPE_CLASSES, SHAPE_SCHEME};

use super::onnx::{export_onnx, WeightDtype};
use crate::model::ModelWeights;

/// One entity type with its prototype and label-memory vectors (all `type_dim` wide).
#[derive(Clone, Debug, PartialEq)]
pub struct TypeState {
    /// Short tag used in output, e.g. `"PER"`; also names its label-memory slot.
    pub name: String,
    /// Corpus the type comes from, e.g. `"conll2003"`; empty for user-added types.
    pub source: String,
    /// Human description, e.g. `"person name"`.
    pub description: String,
    /// `[type_dim]`.
    pub prototype: Vec<f32>,
    /// `[rows, type_dim]`, at most the memory capacity rows.
    pub memory: Vec<f32>,
}

/// MANNER's prior network, `MLP(x) = fc2(ReLU(fc1(x)))` with `fc(x) = x W + b`, written as the
/// optional `prior.*` tensors of `runtime/FORMAT.md` (f32, `W` row-major `[d_in, d_out]`).
#[derive(Clone, Debug, PartialEq)]
pub struct PriorWeights {
    /// `[2 type_dim, type_dim]`.
    pub fc1_weight: Vec<f32>,
    /// `[type_dim]`.
    pub fc1_bias: Vec<f32>,
    /// `[type_dim, type_dim]`.
    pub fc2_weight: Vec<f32>,
    /// `[type_dim]`.
    pub fc2_bias: Vec<f32>,
}

/// Everything besides the encoder that goes into a bundle.
#[derive(Clone, Debug, PartialEq)]
pub struct BundleContents {
    /// The vocabulary tensor's text: a BERT `vocab.txt`, or `piece⇥score` lines for a unigram
    /// tokenizer.
    pub vocab_text: String,
    /// Tokeniser settings, written as `tokenizer`.
    pub tokenizer: TokenizerMeta,
    /// A unigram tokenizer's serialised normalisation map (tensor `tokenizer.charsmap`);
    /// `None` for WordPiece.
    pub charsmap: Option<Vec<u8>>,
    /// The prototype bank in row order: type `i` gets prototype row `i` and its memory rows
    /// after those of types `0..i`.
    pub types: Vec<TypeState>,
    /// Names of the types active when the user passes no `--types`.
    pub default_active: Vec<String>,
    /// The learned CDT transition scores, written as `transitions`.
    pub transitions: CdtParams,
    /// Rows per label-memory slot; no type may hold more.
    pub memory_capacity: usize,
    /// Where the encoder weights came from, written as `provenance`.
    pub provenance: Provenance,
    /// The prior MLP; `None` writes no `prior.*` tensors (the runtime then uses
    /// `MLP([s; m]) = m`).
    pub prior: Option<PriorWeights>,
    /// Longest input (pieces, without `[CLS]`/`[SEP]`) the model was trained on, written as
    /// `encoder.trained_window`; `None` leaves it out.
    pub trained_window: Option<usize>,
    /// The "none of these types" prototypes, `[2, type_dim]` (row 0 beside bank prototypes,
    /// row 1 beside prototypes adapted from examples), written as `labels.other`; `None`
    /// leaves the tensor out.
    pub other_prototypes: Option<Vec<f32>>,
}

/// Serialises weights and label state into bundle bytes (format v1, see `runtime/FORMAT.md`).
/// Prototypes and memory are stored as f16 when `dtype` is F16, else f32.
pub fn export_bundle(
    w: &ModelWeights,
    contents: &BundleContents,
    dtype: WeightDtype,
) -> Result<Vec<u8>> {
    let c = &w.config;
    let d = c.type_dim;
    ensure!(
        c.shape_classes == 0 || c.shape_classes == SHAPE_CLASSES,
        "the model has {} word-shape classes; bundles define only the {SHAPE_SCHEME} scheme \
         ({SHAPE_CLASSES} classes)",
        c.shape_classes
    );
    let vocab_len = contents.vocab_text.lines().count();
    ensure!(
        vocab_len == c.vocab_size,
        "vocabulary has {vocab_len} tokens but the encoder has {} embeddings",
        c.vocab_size
    );
    let mut prototypes = Vec::with_capacity(contents.types.len() * d);
    let mut memory = Vec::new();
    let mut types = Vec::with_capacity(contents.types.len());
    let mut slots = Vec::with_capacity(contents.types.len());
    for (row, t) in contents.types.iter().enumerate() {
        ensure!(
            t.prototype.len() == d,
            "prototype of {:?} has {} values, expected {d}",
            t.name,
            t.prototype.len()
        );
        ensure!(
            t.memory.len() % d == 0 && t.memory.len() / d <= contents.memory_capacity,
            "memory of {:?} has {} values: not a multiple of {d} or over the capacity of {}",
            t.name,
            t.memory.len(),
            contents.memory_capacity
        );
        prototypes.extend_from_slice(&t.prototype);
        let first_row = memory.len() / d;
        memory.extend_from_slice(&t.memory);
        slots.push(MemorySlot {
            type_name: t.name.clone(),
            source: t.source.clone(),
            first_row,
            rows: t.memory.len() / d,
        });
        types.push(EntityType {
            name: t.name.clone(),
            prototype_row: row,
            source: t.source.clone(),
            description: t.description.clone(),
        });
    }
    let metadata = Metadata {
        encoder: EncoderMeta {
            architecture: "bert".into(),
            hidden: c.hidden,
            layers: c.layers,
            heads: c.heads,
            intermediate: c.intermediate,
            vocab_size: c.vocab_size,
            max_positions: c.max_positions,
            type_dim: d,
            weight_dtype: dtype.as_str().into(),
            shape_scheme: (c.shape_classes > 0).then(|| SHAPE_SCHEME.to_string()),
            trained_window: contents.trained_window,
        },
        tokenizer: contents.tokenizer.clone(),
        labels: LabelInventory {
            types,
            default_active: contents.default_active.clone(),
        },
        transitions: contents.transitions.clone(),
        label_memory: LabelMemoryLayout {
            capacity: contents.memory_capacity,
            slots,
        },
        provenance: contents.provenance.clone(),
    };
    let onnx = export_onnx(w, dtype)?;
    let mut writer = BundleWriter::new(metadata);
    writer.add_bytes(tensor_names::ENCODER_ONNX, &onnx)?;
    writer.add_bytes(tensor_names::VOCAB, contents.vocab_text.as_bytes())?;
    if let Some(charsmap) = &contents.charsmap {
        writer.add_bytes(tensor_names::CHARSMAP, charsmap)?;
    }
    let n = contents.types.len();
    let rows = memory.len() / d;
    match dtype {
        WeightDtype::F16 | WeightDtype::Int8 | WeightDtype::Mixed => {
            writer.add_f16(tensor_names::PROTOTYPES, &[n, d], &prototypes)?;
            writer.add_f16(tensor_names::LABEL_MEMORY, &[rows, d], &memory)?;
        }
        WeightDtype::F32 => {
            writer.add_f32(tensor_names::PROTOTYPES, &[n, d], &prototypes)?;
            writer.add_f32(tensor_names::LABEL_MEMORY, &[rows, d], &memory)?;
        }
    }
    if let Some(other) = &contents.other_prototypes {
        ensure!(
            other.len() == 2 * d,
            "the other-type prototypes have {} values, expected [2, {d}]",
            other.len()
        );
        writer.add_f32(tensor_names::OTHER_PROTOTYPES, &[2, d], other)?;
    }
    if let Some(p) = &contents.prior {
        for (name, shape, data) in [
            (
                tensor_names::PRIOR_FC1_WEIGHT,
                [2 * d, d].as_slice(),
                &p.fc1_weight,
            ),
            (tensor_names::PRIOR_FC1_BIAS, [d].as_slice(), &p.fc1_bias),
            (
                tensor_names::PRIOR_FC2_WEIGHT,
                [d, d].as_slice(),
                &p.fc2_weight,
            ),
            (tensor_names::PRIOR_FC2_BIAS, [d].as_slice(), &p.fc2_bias),
        ] {
            let want: usize = shape.iter().product();
            ensure!(
                data.len() == want,
                "prior MLP tensor {name} has {} values, expected {want} (shape {shape:?})",
                data.len()
            );
            writer.add_f32(name, shape, data)?;
        }
    }
    writer.to_bytes().context("serialising the bundle")
}
