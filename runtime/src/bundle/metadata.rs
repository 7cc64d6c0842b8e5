//! Typed bundle metadata (stored as one JSON document inside the bundle).
//!
//! The JSON layout is part of the format: fields may be added in a minor revision (readers
//! ignore unknown fields), never renamed or removed without bumping the structural version.

use serde::{Deserialize, Serialize};

pub use crate::decode::CdtParams;

/// Tensor names the runtime looks up in a bundle.
pub mod tensor_names {
    /// The encoder graph: ONNX protobuf bytes (dtype `bytes`).
    pub const ENCODER_ONNX: &str = "encoder.onnx";
    /// Vocabulary, UTF-8, one token per line, id = line number: `vocab.txt` for WordPiece,
    /// `piece⇥score` lines for unigram.
    pub const VOCAB: &str = "tokenizer.vocab";
    /// `"unigram"` tokenizers only: the serialised precompiled normalisation map (bytes).
    pub const CHARSMAP: &str = "tokenizer.charsmap";
    /// Prototype bank: `[n_types, type_dim]`, f16 or f32; row `i` belongs to `labels.types[i]`.
    pub const PROTOTYPES: &str = "labels.prototypes";
    /// Label memory: `[total_rows, type_dim]`, f16 or f32; slots index into it by row range.
    pub const LABEL_MEMORY: &str = "labels.memory";
    /// Optional "none of these types" prototypes: `[2, type_dim]` f32, row 0 decoded beside
    /// prototypes of the bank, row 1 beside prototypes adapted from examples (label packs).
    /// Spans the decoder gives this extra type are not reported.
    pub const OTHER_PROTOTYPES: &str = "labels.other";
    /// Optional prior MLP, first layer weight: `[2 type_dim, type_dim]`, `y = x W + b`.
    pub const PRIOR_FC1_WEIGHT: &str = "prior.fc1.weight";
    /// Optional prior MLP, first layer bias: `[type_dim]`.
    pub const PRIOR_FC1_BIAS: &str = "prior.fc1.bias";
    /// Optional prior MLP, second layer weight: `[type_dim, type_dim]`.
    pub const PRIOR_FC2_WEIGHT: &str = "prior.fc2.weight";
    /// Optional prior MLP, second layer bias: `[type_dim]`.
    pub const PRIOR_FC2_BIAS: &str = "prior.fc2.bias";
    /// Optional context gate weight: f32 `[2 hidden, 2]` or `[3 hidden, 2]`
    /// ([`crate::encoder::fusion`]).
    pub const CONTEXT_GATE_WEIGHT: &str = "fusion.gate.weight";
    /// Optional context gate bias: f32 `[2]`; present exactly when the weight is.
    pub const CONTEXT_GATE_BIAS: &str = "fusion.gate.bias";
}

/// All metadata of a bundle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// The encoder graph: sizes, dtype, inputs.
    pub encoder: EncoderMeta,
    /// How text becomes word pieces.
    pub tokenizer: TokenizerMeta,
    /// The entity types of the prototype bank and the default active set.
    pub labels: LabelInventory,
    /// The 21 learned CDT transition numbers.
    pub transitions: CdtParams,
    /// Which rows of the label memory belong to which source type.
    pub label_memory: LabelMemoryLayout,
    /// Where the bundle came from.
    pub provenance: Provenance,
}

/// Shape of the encoder graph and the names of its inputs and outputs.
///
/// Graph contract: inputs `input_ids` and `attention_mask`, both i64 `[batch, seq]` with symbolic
/// `batch` and `seq` (seq includes `[CLS]` and `[SEP]`), plus `shape_ids` i64 `[batch, seq]`
/// exactly when `shape_scheme` is set; outputs `boundary` f32 `[batch, seq, 3]` (unnormalised
/// logits over O, B, I) and `types` f32 `[batch, seq, type_dim]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EncoderMeta {
    /// Architecture family, e.g. `"bert"`.
    pub architecture: String,
    /// Width of the hidden state (384 for MiniLM-L6).
    pub hidden: usize,
    /// Number of transformer layers.
    pub layers: usize,
    /// Attention heads per layer.
    pub heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate: usize,
    /// Number of word-piece ids; must equal the lines of the vocabulary tensor.
    pub vocab_size: usize,
    /// Largest sequence length (in WordPiece ids, including `[CLS]`/`[SEP]`) the graph accepts.
    pub max_positions: usize,
    /// Width of the type projection (the prototype space), 128 by default.
    pub type_dim: usize,
    /// Storage dtype of the weights inside the ONNX graph (`"f16"`, `"f32"`, `"int8"`, or
    /// `"mixed"`: int8 word table, FFN input and attention output, f16 elsewhere); the graph computes in f32
    /// whatever it is.
    pub weight_dtype: String,
    /// Word-shape input scheme (only [`crate::tokenizer::SHAPE_SCHEME`], `"case6-v1"`, is
    /// defined): the graph then takes `shape_ids`, the [`crate::tokenizer::Shape`] id of each
    /// piece. Absent: the graph has no shape input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape_scheme: Option<String>,
    /// Longest input, in word pieces without `[CLS]`/`[SEP]`, the model was trained on; the
    /// runtime never encodes a longer window (longer texts go through overlapping windows).
    /// Absent: `max_positions - 2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trained_window: Option<usize>,
}

/// BERT basic tokenisation + WordPiece settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenizerMeta {
    /// `"wordpiece"` or `"unigram"` (SentencePiece unigram, with the normalisation map in
    /// tensor `tokenizer.charsmap` and [`TokenizerMeta::unk_score`]).
    pub kind: String,
    /// Lower-case the text before WordPiece (uncased models).
    pub lowercase: bool,
    /// Drop nonspacing marks after canonical decomposition.
    pub strip_accents: bool,
    /// Make every CJK ideograph a word of its own.
    pub tokenize_chinese_chars: bool,
    /// Token for a word WordPiece cannot split, e.g. `"[UNK]"`.
    pub unk_token: String,
    /// Token the encoder puts before every window, e.g. `"[CLS]"`.
    pub cls_token: String,
    /// Token the encoder puts after every window, e.g. `"[SEP]"`.
    pub sep_token: String,
    /// Token that pads shorter sequences of a batch, e.g. `"[PAD]"`.
    pub pad_token: String,
    /// Prefix of word pieces that continue a word, e.g. `"##"`.
    pub continuing_subword_prefix: String,
    /// Words longer than this many chars become `unk_token`.
    pub max_input_chars_per_word: usize,
    /// `"unigram"` only: the score of an unknown char (the full vocabulary's lowest piece score
    /// minus 10, kept when the vocabulary was pruned). Absent for WordPiece.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unk_score: Option<f32>,
}

/// Entity types the bundle knows and which of them are active by default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelInventory {
    /// Every type of the prototype bank.
    pub types: Vec<EntityType>,
    /// Names of the types active when the user does not pass `--types`.
    pub default_active: Vec<String>,
}

/// One entity type of the prototype bank.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntityType {
    /// Short tag used in output, e.g. `"PER"`.
    pub name: String,
    /// Row of this type in the prototype bank.
    pub prototype_row: usize,
    /// Corpus the type comes from, e.g. `"conll2003"`; empty for user-added types.
    #[serde(default)]
    pub source: String,
    /// Human description, e.g. `"person name"`.
    #[serde(default)]
    pub description: String,
}

/// Layout of the label memory tensor: one slot per source entity type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelMemoryLayout {
    /// Capacity M of each slot (MANNER uses 15).
    pub capacity: usize,
    /// The slots, one per source entity type.
    pub slots: Vec<MemorySlot>,
}

/// One memory slot: rows `first_row .. first_row + rows` of [`tensor_names::LABEL_MEMORY`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemorySlot {
    /// The source entity type whose token vectors the slot holds.
    pub type_name: String,
    /// Corpus the type comes from; empty if unknown.
    #[serde(default)]
    pub source: String,
    /// First row of the slot in the label memory tensor.
    pub first_row: usize,
    /// Rows the slot holds (at most `capacity`).
    pub rows: usize,
}

/// Where the bundle came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// E.g. `"sentence-transformers/all-MiniLM-L6-v2"` or `"random-init seed=7"`.
    pub encoder_source: String,
    /// sha256 of the source weights file, empty when initialised at random.
    #[serde(default)]
    pub encoder_sha256: String,
    /// Hash over the training sentences; empty when untrained.
    #[serde(default)]
    pub training_data_sha256: String,
    /// Corpora the model was trained on.
    #[serde(default)]
    pub training_corpora: Vec<String>,
    /// Program and version that wrote the bundle, e.g. `"ner-tools 0.1.0"`.
    pub created_by: String,
    /// Free text: how the model was trained, caveats.
    #[serde(default)]
    pub notes: String,
}
