//! Label packs: entity types adapted on top of one base bundle (`runtime/PACK-FORMAT.md`).
//!
//! A pack reuses the bundle container of `runtime/FORMAT.md` (header, checksums, metadata JSON,
//! tensor table, 64-byte-aligned data) under its own magic `NERP`. It holds one prototype per
//! new type, how each was built, the CDT parameters inherited from the bundle, and the
//! [`Bundle::content_id`] of the bundle it was made for; [`LabelPack::check_base`] refuses any
//! other bundle.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::Path;

use half::f16;
use serde::{Deserialize, Serialize};

use crate::associated_memory::MemoryBank;
use crate::bundle::Bundle;
use crate::container::{
    bad_as, parse_container, write_atomically, ContainerKind, DType, FormatProblem, TensorInfo,
    TensorList,
};
use crate::decode::CdtParams;
use crate::encoder::{Heads, Prompts};
use crate::{Error, Result};

/// First four bytes of every label pack.
pub const PACK_MAGIC: [u8; 4] = *b"NERP";
/// Structural version of the pack layout this crate reads and writes.
pub const PACK_VERSION: u32 = 1;
/// Largest pack file [`LabelPack::open`] reads (packs hold a few prototypes: kilobytes).
pub const MAX_PACK_BYTES: u64 = 64 << 20;
/// Name of the prototype tensor: `[types.len(), base_bundle.type_dim]`, f32 (f16 accepted).
pub const PROTOTYPES_TENSOR: &str = "pack.prototypes";
/// Tuned boundary head weight `[tuned_heads.hidden, 3]`, f32 (packs with tuned heads only).
pub const HEAD_BOUNDARY_WEIGHT: &str = "pack.head.boundary.weight";
/// Tuned boundary head bias `[3]`, f32.
pub const HEAD_BOUNDARY_BIAS: &str = "pack.head.boundary.bias";
/// Tuned type projection weight `[tuned_heads.hidden, base_bundle.type_dim]`, f32.
pub const HEAD_TYPES_WEIGHT: &str = "pack.head.types.weight";
/// Tuned type projection bias `[base_bundle.type_dim]`, f32.
pub const HEAD_TYPES_BIAS: &str = "pack.head.types.bias";

/// Prompt keys `[prompts.layers, prompts.len, prompts.hidden]`, f16 or f32 (packs with
/// prompts only; [`crate::encoder::prompts`]).
pub const PROMPT_KEY_TENSOR: &str = "pack.prompt.key";
/// Prompt values `[prompts.layers, prompts.len, prompts.hidden]`, f16 or f32.
pub const PROMPT_VALUE_TENSOR: &str = "pack.prompt.value";
/// Prompt gates `[prompts.layers, prompts.heads]`, f32.
pub const PROMPT_GATE_TENSOR: &str = "pack.prompt.gate";
/// Associated memory of a pack adapted on a bundle with one (optional; all three or none):
/// f16 `[words, width]` keys of the support sentences' words under the bundle's `Wk`.
pub const MEMORY_KEYS_TENSOR: &str = "pack.memory.keys";
/// bytes: u16 little-endian label of every memory word, over the pack's types.
pub const MEMORY_LABELS_TENSOR: &str = "pack.memory.labels";
/// bytes: u32 little-endian word offsets of the memory sentences.
pub const MEMORY_SENTENCES_TENSOR: &str = "pack.memory.sentences";

const PACK_KIND: ContainerKind = ContainerKind {
    magic: PACK_MAGIC,
    version: PACK_VERSION,
    what: "ner-edge label pack",
    sibling: (
        crate::bundle::MAGIC,
        "it is a bundle: pass it with --bundle, and label packs with --pack",
    ),
};

/// All metadata of a label pack (stored as JSON; unknown keys are ignored).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PackMetadata {
    /// The bundle the pack was adapted on.
    pub base_bundle: BaseBundle,
    /// The new types, in label order.
    pub types: Vec<PackType>,
    /// CDT parameters, copied from the base bundle; unfolded for this pack's types at load.
    pub transitions: CdtParams,
    /// Where the pack came from.
    pub provenance: PackProvenance,
    /// Present when the pack carries its own boundary head and type projection
    /// (`adapt --tune-heads`); its types are then scored with them instead of the bundle's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuned_heads: Option<TunedHeads>,
    /// Present when the pack carries prompt adapters (`ner-train prompt`): its types are then
    /// scored by the encoder run with these prompts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompts: Option<PackPrompts>,
}

/// The shape and training record of a pack's prompts ([`crate::encoder::prompts`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PackPrompts {
    /// Prompt vectors per layer, `P`.
    pub len: usize,
    /// Encoder layers; must equal the bundle's `encoder.layers`.
    pub layers: usize,
    /// Attention heads per layer; must equal the bundle's `encoder.heads`.
    pub heads: usize,
    /// Width of the hidden state; must equal the bundle's `encoder.hidden`.
    pub hidden: usize,
    /// Optimiser steps taken.
    pub steps: usize,
    /// Adam learning rate.
    pub learning_rate: f32,
    /// Training loss (mean CRF NLL per support sentence plus regularisers) before training.
    pub loss_before: f64,
    /// Training loss after the last step.
    pub loss_after: f64,
}

/// How a pack's heads were tuned (`runtime/src/adapt/tune.rs`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TunedHeads {
    /// Width of the encoder's hidden state the heads read; must equal the bundle's
    /// `encoder.hidden`.
    pub hidden: usize,
    /// Adam steps taken.
    pub steps: usize,
    /// Adam learning rate.
    pub learning_rate: f32,
    /// Weight of the L2 pull towards the bundle's heads.
    pub l2: f32,
    /// Tuning loss (mean CRF NLL per support sentence plus the L2 term) before and after.
    pub loss_before: f64,
    /// Tuning loss after the last step.
    pub loss_after: f64,
}

/// Identity of the base bundle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BaseBundle {
    /// [`Bundle::content_id`] of the base bundle: 32 lowercase hex digits.
    pub content_id: String,
    /// The bundle's name when the pack was made (a path, or `<embedded default bundle>`); for
    /// messages only.
    pub name: String,
    /// `encoder.type_dim` of the base bundle: the width of every prototype.
    pub type_dim: usize,
}

/// How a prototype was built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// From support examples (MANNER prior: support mean, OT-retrieved memory, prior MLP).
    Examples,
    /// From the encoded type description only (no examples).
    ZeroShot,
    /// From examples and the description's token vectors together.
    Combined,
}

impl Method {
    /// The name used in the metadata JSON and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Examples => "examples",
            Method::ZeroShot => "zero-shot",
            Method::Combined => "combined",
        }
    }
}

/// One type of a pack.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PackType {
    /// Output tag, e.g. `"DRUG"`: non-empty, no whitespace or control characters.
    pub name: String,
    /// The description given with `--type-name`, empty if none.
    #[serde(default)]
    pub description: String,
    /// Row of this type in [`PROTOTYPES_TENSOR`].
    pub prototype_row: usize,
    /// Which vectors made the prototype: examples, description, or both.
    pub method: Method,
    /// Support sentences that mention the type.
    pub support_sentences: usize,
    /// Entity mentions of the type in the support set.
    pub support_entities: usize,
    /// Type vectors averaged into the support mean (first word pieces of the mentions, plus the
    /// description's word pieces for [`Method::ZeroShot`] and [`Method::Combined`]).
    pub support_tokens: usize,
    /// `type_name` of the label-memory slot retrieved by optimal transport, if any.
    #[serde(default)]
    pub memory_slot: Option<String>,
    /// `⟨C, T⟩` between that slot and the support vectors.
    #[serde(default)]
    pub memory_distance: Option<f64>,
}

/// Where the pack came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PackProvenance {
    /// Program and version, e.g. `"ner-edge 0.1.0"`.
    pub created_by: String,
    /// The support file as given on the command line.
    #[serde(default)]
    pub support_file: String,
    /// XXH64 (seed 0, 16 hex digits) of the support file's bytes.
    #[serde(default)]
    pub support_xxh64: String,
    /// `"bundle"` when the bundle's prior MLP was used, `"fallback"` for `MLP([s; m]) = m`.
    #[serde(default)]
    pub prior: String,
    /// Free text given with `adapt --notes`.
    #[serde(default)]
    pub notes: String,
}

/// A validated label pack, read into memory.
#[derive(Clone, Debug)]
pub struct LabelPack {
    name: String,
    version: u32,
    content_id: String,
    metadata: PackMetadata,
    prototypes: Vec<f32>,
    heads: Option<Heads>,
    prompts: Option<Prompts>,
    memory: Option<MemoryBank>,
    tensors: Vec<TensorInfo>,
}

/// A [`FormatProblem::Metadata`] error of the pack `name`.
fn bad(name: &str, msg: impl std::fmt::Display) -> Error {
    bad_as(name, FormatProblem::Metadata, msg)
}

/// A [`FormatProblem::TensorShape`] error of tensor `tensor` of the pack `name`.
fn bad_shape(name: &str, tensor: &str, msg: impl std::fmt::Display) -> Error {
    bad_as(
        name,
        FormatProblem::TensorShape {
            tensor: tensor.to_string(),
        },
        msg,
    )
}

/// A [`FormatProblem::MissingTensor`] error of tensor `tensor` of the pack `name`.
fn bad_missing(name: &str, tensor: &str, msg: impl std::fmt::Display) -> Error {
    bad_as(
        name,
        FormatProblem::MissingTensor {
            tensor: tensor.to_string(),
        },
        msg,
    )
}

/// Reads the f32 tensor `tensor` of exactly `shape` from a validated container's `bytes`;
/// `why` says which metadata field requires it.
fn read_f32_tensor(
    bytes: &[u8],
    tensors: &[TensorInfo],
    name: &str,
    tensor: &str,
    shape: &[usize],
) -> Result<Vec<f32>> {
    read_tensor(bytes, tensors, name, tensor, shape, false, "tuned_heads")
}

/// Reads tensor `tensor` of exactly `shape`, f32 (or f16 when `f16_ok`), from a validated
/// container's `bytes`; `why` names the metadata field that requires it.
fn read_tensor(
    bytes: &[u8],
    tensors: &[TensorInfo],
    name: &str,
    tensor: &str,
    shape: &[usize],
    f16_ok: bool,
    why: &str,
) -> Result<Vec<f32>> {
    let info = tensors.iter().find(|t| t.name == tensor).ok_or_else(|| {
        bad_missing(
            name,
            tensor,
            format!("tensor {tensor:?} is missing ({why} is set)"),
        )
    })?;
    let dtype_ok = info.dtype == DType::F32 || (f16_ok && info.dtype == DType::F16);
    if info.shape != shape || !dtype_ok {
        return Err(bad_shape(
            name,
            tensor,
            format!(
                "tensor {tensor:?} is {} {:?}, expected {} {shape:?}",
                info.dtype,
                info.shape,
                if f16_ok { "f32 or f16" } else { "f32" }
            ),
        ));
    }
    tensor_values(bytes, info, name)
}

/// The values of the f32 or f16 tensor `info` from a validated container's `bytes`.
fn tensor_values(bytes: &[u8], info: &TensorInfo, name: &str) -> Result<Vec<f32>> {
    let raw = info
        .offset
        .checked_add(info.len)
        .and_then(|end| bytes.get(info.offset..end))
        .ok_or_else(|| {
            bad(
                name,
                format!("tensor {:?} lies outside the file", info.name),
            )
        })?;
    Ok(match info.dtype {
        DType::F16 => raw
            .as_chunks::<2>()
            .0
            .iter()
            .map(|c| f16::from_le_bytes(*c).to_f32())
            .collect(),
        _ => raw
            .as_chunks::<4>()
            .0
            .iter()
            .map(|c| f32::from_le_bytes(*c))
            .collect(),
    })
}

impl LabelPack {
    /// Reads and validates the pack at `path` (at most [`MAX_PACK_BYTES`]).
    pub fn open(path: &Path) -> Result<LabelPack> {
        let name = path.display().to_string();
        let len = std::fs::metadata(path)
            .map_err(|e| Error::io("open label pack", path, e))?
            .len();
        if len > MAX_PACK_BYTES {
            return Err(crate::container::bad(
                &name,
                format!("{len} bytes is more than a label pack can be ({MAX_PACK_BYTES})"),
            ));
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io("read label pack", path, e))?;
        LabelPack::from_bytes(&bytes, &name)
    }

    /// Validates pack bytes; `name` prefixes every error message. Never panics.
    pub fn from_bytes(bytes: &[u8], name: &str) -> Result<LabelPack> {
        let c = parse_container::<PackMetadata>(bytes, name, &PACK_KIND)?;
        let meta = c.metadata;
        let d = meta.base_bundle.type_dim;
        let id = &meta.base_bundle.content_id;
        if id.len() != 32 || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad(
                name,
                format!(
                    "metadata field base_bundle.content_id = {id:?} is not 32 lowercase hex digits"
                ),
            ));
        }
        if d == 0 {
            return Err(bad(
                name,
                "metadata field base_bundle.type_dim must be at least 1",
            ));
        }
        let n = meta.types.len();
        if n == 0 {
            return Err(bad(
                name,
                "metadata field types is empty: a pack adds at least one type",
            ));
        }
        let mut names = HashSet::new();
        let mut rows = HashSet::new();
        for (i, t) in meta.types.iter().enumerate() {
            if !valid_type_name(&t.name) || !names.insert(t.name.as_str()) {
                return Err(bad(
                    name,
                    format!(
                        "metadata field types[{i}].name = {:?} is empty, repeated, or has \
                         whitespace or control characters",
                        t.name
                    ),
                ));
            }
            if t.prototype_row >= n || !rows.insert(t.prototype_row) {
                return Err(bad(
                    name,
                    format!(
                        "metadata field types[{i}].prototype_row = {} is out of range (0..{n}) or \
                         used twice",
                        t.prototype_row
                    ),
                ));
            }
        }
        let cdt = &meta.transitions;
        if !cdt
            .matrix
            .iter()
            .flatten()
            .chain(&cdt.start)
            .chain(&cdt.end)
            .all(|v| v.is_finite())
        {
            return Err(bad(
                name,
                "metadata field transitions holds a non-finite number",
            ));
        }
        let info = c
            .tensors
            .iter()
            .find(|t| t.name == PROTOTYPES_TENSOR)
            .ok_or_else(|| {
                bad_missing(
                    name,
                    PROTOTYPES_TENSOR,
                    format!("required tensor {PROTOTYPES_TENSOR:?} is missing"),
                )
            })?;
        if info.shape != [n, d] || !matches!(info.dtype, DType::F32 | DType::F16) {
            return Err(bad_shape(
                name,
                PROTOTYPES_TENSOR,
                format!(
                    "tensor {PROTOTYPES_TENSOR:?} is {} {:?}, expected f32 or f16 [types.len(), \
                     base_bundle.type_dim] = [{n}, {d}]",
                    info.dtype, info.shape
                ),
            ));
        }
        let prototypes = tensor_values(bytes, info, name)?;
        if let Some(at) = prototypes.iter().position(|v| !v.is_finite()) {
            return Err(bad(
                name,
                format!(
                    "tensor {PROTOTYPES_TENSOR:?} holds a non-finite value (type row {}, \
                     component {})",
                    at / d,
                    at % d
                ),
            ));
        }
        let heads = match &meta.tuned_heads {
            None => None,
            Some(t) => {
                if t.hidden == 0 {
                    return Err(bad(
                        name,
                        "metadata field tuned_heads.hidden must be at least 1",
                    ));
                }
                let read = |tensor: &str, shape: &[usize]| -> Result<Vec<f32>> {
                    read_f32_tensor(bytes, &c.tensors, name, tensor, shape)
                };
                let heads = Heads {
                    hidden: t.hidden,
                    type_dim: d,
                    boundary_weight: read(HEAD_BOUNDARY_WEIGHT, &[t.hidden, 3])?,
                    boundary_bias: read(HEAD_BOUNDARY_BIAS, &[3])?,
                    types_weight: read(HEAD_TYPES_WEIGHT, &[t.hidden, d])?,
                    types_bias: read(HEAD_TYPES_BIAS, &[d])?,
                };
                heads.check(name)?;
                Some(heads)
            }
        };
        let prompts = match &meta.prompts {
            None => None,
            Some(p) => {
                let dims = [p.layers, p.len, p.hidden];
                if dims.contains(&0) || p.heads == 0 || !p.hidden.is_multiple_of(p.heads) {
                    return Err(bad(
                        name,
                        format!(
                            "metadata field prompts has len {}, layers {}, heads {}, hidden {}: \
                             each must be at least 1 and hidden a multiple of heads",
                            p.len, p.layers, p.heads, p.hidden
                        ),
                    ));
                }
                let dims = dims
                    .iter()
                    .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                    .filter(|&n| n <= (MAX_PACK_BYTES / 2) as usize)
                    .map(|_| dims)
                    .ok_or_else(|| bad(name, "metadata field prompts is larger than a pack"))?;
                let read = |tensor: &str, shape: &[usize], f16_ok: bool| -> Result<Vec<f32>> {
                    read_tensor(bytes, &c.tensors, name, tensor, shape, f16_ok, "prompts")
                };
                let prompts = Prompts {
                    len: p.len,
                    layers: p.layers,
                    heads: p.heads,
                    hidden: p.hidden,
                    key: read(PROMPT_KEY_TENSOR, &dims, true)?,
                    value: read(PROMPT_VALUE_TENSOR, &dims, true)?,
                    gate: read(PROMPT_GATE_TENSOR, &[p.layers, p.heads], false)?,
                };
                prompts.check(name)?;
                Some(prompts)
            }
        };
        let memory = read_memory(bytes, &c.tensors, name, meta.types.len())?;
        Ok(LabelPack {
            memory,
            name: name.to_string(),
            version: c.version,
            content_id: c.content_id,
            metadata: meta,
            prototypes,
            heads,
            prompts,
            tensors: c.tensors,
        })
    }

    /// The pack's tuned boundary head and type projection, when it has them
    /// ([`PackMetadata::tuned_heads`]).
    pub fn heads(&self) -> Option<&Heads> {
        self.heads.as_ref()
    }

    /// The pack's associated memory (its support sentences), when it was adapted on a bundle
    /// with one.
    pub fn memory(&self) -> Option<&MemoryBank> {
        self.memory.as_ref()
    }

    /// The pack's prompt adapters, when it has them ([`PackMetadata::prompts`]).
    pub fn prompts(&self) -> Option<&Prompts> {
        self.prompts.as_ref()
    }

    /// The name given at construction (the path for [`LabelPack::open`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pack's metadata.
    pub fn metadata(&self) -> &PackMetadata {
        &self.metadata
    }

    /// Names of the pack's types, in label order.
    pub fn type_names(&self) -> Vec<String> {
        self.metadata.types.iter().map(|t| t.name.clone()).collect()
    }

    /// The prototype of type `k` (label order), `type_dim` values; `None` out of range.
    pub fn prototype(&self, k: usize) -> Option<&[f32]> {
        let d = self.metadata.base_bundle.type_dim;
        let row = self.metadata.types.get(k)?.prototype_row;
        self.prototypes.get(row * d..(row + 1) * d)
    }

    /// Refuses `bundle` unless it is the pack's base bundle (same content id and type width).
    pub fn check_base(&self, bundle: &Bundle) -> Result<()> {
        let base = &self.metadata.base_bundle;
        if base.content_id != bundle.content_id() {
            return Err(Error::Usage(format!(
                "label pack {} was adapted on bundle {} (content id {}), not on bundle {} \
                 (content id {}); re-run `ner-edge adapt --bundle {}` to make a pack for it",
                self.name,
                base.name,
                base.content_id,
                bundle.name(),
                bundle.content_id(),
                bundle.name()
            )));
        }
        if base.type_dim != bundle.metadata().encoder.type_dim {
            return Err(bad(
                &self.name,
                format!(
                    "prototypes are {} wide but bundle {} has type_dim {}",
                    base.type_dim,
                    bundle.name(),
                    bundle.metadata().encoder.type_dim
                ),
            ));
        }
        if let Some(t) = &self.metadata.tuned_heads {
            let hidden = bundle.metadata().encoder.hidden;
            if t.hidden != hidden {
                return Err(bad(
                    &self.name,
                    format!(
                        "tuned heads read a hidden state of {} but bundle {} has hidden {hidden}",
                        t.hidden,
                        bundle.name()
                    ),
                ));
            }
        }
        if let Some(p) = &self.metadata.prompts {
            let e = &bundle.metadata().encoder;
            if (p.layers, p.heads, p.hidden) != (e.layers, e.heads, e.hidden) {
                return Err(bad(
                    &self.name,
                    format!(
                        "prompts are for {} layers, {} heads, hidden {} but bundle {} has {} \
                         layers, {} heads, hidden {}",
                        p.layers,
                        p.heads,
                        p.hidden,
                        bundle.name(),
                        e.layers,
                        e.heads,
                        e.hidden
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Multi-line human-readable summary for `ner-edge inspect`.
    pub fn describe(&self) -> String {
        let m = &self.metadata;
        let mut s = String::new();
        let _ = writeln!(s, "label pack:      {}", self.name);
        let _ = writeln!(s, "format version:  {}", self.version);
        let _ = writeln!(s, "content id:      {}", self.content_id);
        let _ = writeln!(
            s,
            "base bundle:     {} (content id {}, type_dim {})",
            m.base_bundle.name, m.base_bundle.content_id, m.base_bundle.type_dim
        );
        let _ = writeln!(s, "created by:      {}", m.provenance.created_by);
        let _ = writeln!(s, "support file:    {}", m.provenance.support_file);
        let _ = writeln!(s, "prior MLP:       {}", m.provenance.prior);
        match &m.tuned_heads {
            Some(t) => {
                let _ = writeln!(
                    s,
                    "heads:           tuned, {} steps (lr {}, l2 {}), loss {:.4} -> {:.4}",
                    t.steps, t.learning_rate, t.l2, t.loss_before, t.loss_after
                );
            }
            None => {
                let _ = writeln!(s, "heads:           the bundle's");
            }
        }
        match &m.prompts {
            Some(p) => {
                let _ = writeln!(
                    s,
                    "prompts:         {} per layer x {} layers, {} steps (lr {}), loss {:.4} -> \
                     {:.4}",
                    p.len, p.layers, p.steps, p.learning_rate, p.loss_before, p.loss_after
                );
            }
            None => {
                let _ = writeln!(s, "prompts:         none");
            }
        }
        let _ = writeln!(s, "\ntypes ({}):", m.types.len());
        for t in &m.types {
            let slot = match (&t.memory_slot, t.memory_distance) {
                (Some(slot), Some(dist)) => format!("memory slot {slot} (OT distance {dist:.4})"),
                _ => "no memory slot".to_string(),
            };
            let _ = writeln!(
                s,
                "  {:<16} {:<9} sentences={} entities={} tokens={} {slot}{}",
                t.name,
                t.method.as_str(),
                t.support_sentences,
                t.support_entities,
                t.support_tokens,
                if t.description.is_empty() {
                    String::new()
                } else {
                    format!(" description={:?}", t.description)
                }
            );
        }
        let _ = writeln!(s, "\ntensors ({}):", self.tensors.len());
        for t in &self.tensors {
            let _ = writeln!(
                s,
                "  {}  {}  {:?}  {} bytes",
                t.name, t.dtype, t.shape, t.len
            );
        }
        s
    }
}

/// Whether `name` can be a type tag: non-empty, no whitespace or control characters.
pub fn valid_type_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Serialises a pack: `metadata` and `prototypes` (`[metadata.types.len(), type_dim]`,
/// row-major, row `i` at `types[i].prototype_row`), and `heads` exactly when
/// `metadata.tuned_heads` is set. The result is validated exactly as [`LabelPack::from_bytes`]
/// would.
pub fn pack_to_bytes(
    metadata: &PackMetadata,
    prototypes: &[f32],
    heads: Option<&Heads>,
) -> Result<Vec<u8>> {
    prompted_pack_to_bytes(metadata, prototypes, heads, None)
}

/// [`pack_to_bytes`] with `prompts` exactly when `metadata.prompts` is set (and equal in
/// shape); prompt keys and values are stored as f16, the gates as f32.
pub fn prompted_pack_to_bytes(
    metadata: &PackMetadata,
    prototypes: &[f32],
    heads: Option<&Heads>,
    prompts: Option<&Prompts>,
) -> Result<Vec<u8>> {
    full_pack_to_bytes(metadata, prototypes, heads, prompts, None)
}

/// [`prompted_pack_to_bytes`] with the support sentences as associated memory (keys stored
/// as f16), labels over the pack's types.
pub fn full_pack_to_bytes(
    metadata: &PackMetadata,
    prototypes: &[f32],
    heads: Option<&Heads>,
    prompts: Option<&Prompts>,
    memory: Option<&MemoryBank>,
) -> Result<Vec<u8>> {
    let meta = serde_json::to_vec(metadata)
        .map_err(|e| Error::Bundle(format!("pack writer: cannot serialise metadata: {e}")))?;
    let mut tensors = TensorList::default();
    tensors.add_f32(
        PROTOTYPES_TENSOR,
        &[metadata.types.len(), metadata.base_bundle.type_dim],
        prototypes,
    )?;
    match (&metadata.tuned_heads, heads) {
        (Some(_), Some(h)) => {
            tensors.add_f32(HEAD_BOUNDARY_WEIGHT, &[h.hidden, 3], &h.boundary_weight)?;
            tensors.add_f32(HEAD_BOUNDARY_BIAS, &[3], &h.boundary_bias)?;
            tensors.add_f32(HEAD_TYPES_WEIGHT, &[h.hidden, h.type_dim], &h.types_weight)?;
            tensors.add_f32(HEAD_TYPES_BIAS, &[h.type_dim], &h.types_bias)?;
        }
        (None, None) => {}
        _ => {
            return Err(Error::Bundle(
                "pack writer: tuned heads and metadata.tuned_heads must come together".into(),
            ))
        }
    }
    match (&metadata.prompts, prompts) {
        (Some(m), Some(p))
            if (m.len, m.layers, m.heads, m.hidden) == (p.len, p.layers, p.heads, p.hidden) =>
        {
            p.check("pack writer")?;
            let dims = [p.layers, p.len, p.hidden];
            let half = |v: &[f32]| -> Vec<u8> {
                v.iter()
                    .flat_map(|&x| f16::from_f32(x).to_le_bytes())
                    .collect()
            };
            tensors.add_raw(PROMPT_KEY_TENSOR, DType::F16, &dims, half(&p.key))?;
            tensors.add_raw(PROMPT_VALUE_TENSOR, DType::F16, &dims, half(&p.value))?;
            tensors.add_f32(PROMPT_GATE_TENSOR, &[p.layers, p.heads], &p.gate)?;
        }
        (None, None) => {}
        _ => {
            return Err(Error::Bundle(
                "pack writer: prompts and metadata.prompts must come together, of one shape".into(),
            ))
        }
    }
    if let Some(bank) = memory {
        let (keys, labels, offsets) = bank
            .to_stored()
            .map_err(|e| Error::Bundle(format!("pack writer: {e}")))?;
        let shape = [bank.words(), bank.width()];
        tensors.add_raw(MEMORY_KEYS_TENSOR, DType::F16, &shape, keys)?;
        tensors.add_raw(MEMORY_LABELS_TENSOR, DType::Bytes, &[labels.len()], labels)?;
        tensors.add_raw(
            MEMORY_SENTENCES_TENSOR,
            DType::Bytes,
            &[offsets.len()],
            offsets,
        )?;
    }
    let bytes = tensors.assemble(PACK_MAGIC, PACK_VERSION, &meta)?;
    LabelPack::from_bytes(&bytes, "pack writer output")?;
    Ok(bytes)
}

/// The pack's associated memory: `None` without any of its tensors; an error when only some
/// are there or they do not make a valid memory of `n_types` types.
fn read_memory(
    bytes: &[u8],
    tensors: &[TensorInfo],
    name: &str,
    n_types: usize,
) -> Result<Option<MemoryBank>> {
    let find = |t: &str| tensors.iter().find(|i| i.name == t);
    let parts = [
        find(MEMORY_KEYS_TENSOR),
        find(MEMORY_LABELS_TENSOR),
        find(MEMORY_SENTENCES_TENSOR),
    ];
    let [keys, labels, sentences] = match parts {
        [None, None, None] => return Ok(None),
        [Some(k), Some(l), Some(s)] => [k, l, s],
        _ => {
            return Err(bad(
                name,
                format!(
                    "the associated memory needs all of {MEMORY_KEYS_TENSOR:?}, \
                     {MEMORY_LABELS_TENSOR:?} and {MEMORY_SENTENCES_TENSOR:?}"
                ),
            ))
        }
    };
    if keys.dtype != DType::F16 || keys.shape.len() != 2 {
        return Err(bad_shape(
            name,
            MEMORY_KEYS_TENSOR,
            format!("tensor {MEMORY_KEYS_TENSOR:?} must be f16 [words, width]"),
        ));
    }
    let raw = |info: &TensorInfo| -> Result<&[u8]> {
        info.offset
            .checked_add(info.len)
            .and_then(|end| bytes.get(info.offset..end))
            .ok_or_else(|| {
                bad(
                    name,
                    format!("tensor {:?} lies outside the file", info.name),
                )
            })
    };
    let values = tensor_values(bytes, keys, name)?;
    MemoryBank::from_stored(
        keys.shape[1],
        &values,
        raw(labels)?,
        raw(sentences)?,
        n_types,
    )
    .map(Some)
    .map_err(|e| bad(name, format!("associated memory: {e}")))
}

/// [`pack_to_bytes`], written to `path` atomically (temporary file, fsync, rename).
pub fn write_pack(
    path: &Path,
    metadata: &PackMetadata,
    prototypes: &[f32],
    heads: Option<&Heads>,
) -> Result<()> {
    write_atomically(path, &pack_to_bytes(metadata, prototypes, heads)?)
}

/// The pack of `adapted` ([`crate::adapt::Adapted::to_pack_bytes`]: prototypes, tuned heads,
/// memory), written to `path` atomically.
pub fn write_adapted(path: &Path, adapted: &crate::adapt::Adapted) -> Result<()> {
    write_atomically(path, &adapted.to_pack_bytes()?)
}

/// [`prompted_pack_to_bytes`], written to `path` atomically.
pub fn write_prompted_pack(
    path: &Path,
    metadata: &PackMetadata,
    prototypes: &[f32],
    heads: Option<&Heads>,
    prompts: Option<&Prompts>,
) -> Result<()> {
    write_atomically(
        path,
        &prompted_pack_to_bytes(metadata, prototypes, heads, prompts)?,
    )
}

#[cfg(test)]
mod tests;
