//! Opening and validating a bundle; zero-copy tensor views.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::path::Path;

use half::f16;

use super::metadata::{tensor_names, Metadata};
use super::{FORMAT_VERSION, MAGIC};
use crate::container::format::{DType, TensorInfo, ALIGNMENT, HEADER_LEN};
use crate::container::{bad, bad_as, parse_container, Container, ContainerKind, FormatProblem};
use crate::error::{Error, Result};

enum Storage {
    Mmap(memmap2::Mmap),
    Static(&'static [u8]),
    Owned {
        buf: Vec<u8>,
        start: usize,
        len: usize,
    },
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mmap(m) => m,
            Storage::Static(s) => s,
            Storage::Owned { buf, start, len } => start
                .checked_add(*len)
                .and_then(|end| buf.get(*start..end))
                .unwrap_or(&[]),
        }
    }
}

/// A validated, read-only bundle (format v1).
///
/// Every structural property listed in `runtime/FORMAT.md` has been checked when a constructor
/// returns `Ok`: header fields, section bounds, both checksums, the tensor table (bounds,
/// alignment, shapes, no duplicates or overlaps), the metadata JSON and its cross-references to
/// the tensors. Accessors therefore never read out of bounds; they return [`Error::Format`] for
/// unknown names or a dtype mismatch.
pub struct Bundle {
    name: String,
    storage: Storage,
    version: u32,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    index: HashMap<String, usize>,
    content_id: String,
}

impl fmt::Debug for Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bundle")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("file_len", &self.file_len())
            .field("content_id", &self.content_id)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl Bundle {
    /// Memory-maps the file at `path` read-only and validates it.
    ///
    /// The file must not be modified or truncated while the bundle is alive (see FORMAT.md,
    /// "Memory mapping"); writers in this crate replace files by rename, never in place.
    pub fn open(path: &Path) -> Result<Bundle> {
        let file = File::open(path).map_err(|e| Error::io("open bundle", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat bundle", path, e))?
            .len();
        let name = path.display().to_string();
        if len < HEADER_LEN as u64 {
            return Err(bad_as(
                &name,
                FormatProblem::Truncated,
                format!("truncated: file is {len} bytes, the header alone needs {HEADER_LEN}"),
            ));
        }
        // SAFETY: the map is read-only and private to this process. Undefined behaviour is
        // possible only if another process modifies or truncates the file while it is mapped;
        // FORMAT.md states that bundles are immutable once written and BundleWriter::write
        // replaces files by rename, which leaves existing maps on the old inode.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| Error::io("memory-map bundle", path, e))?;
        Bundle::new(Storage::Mmap(map), name)
    }

    /// Validates bundle bytes that live for the whole program, reading them in place.
    ///
    /// `bytes` must start at a 64-byte-aligned address: wrap `include_bytes!` in a
    /// `#[repr(align(64))]` struct. A misaligned slice is an [`Error::Format`] ([`FormatProblem::Layout`]).
    pub fn from_static(bytes: &'static [u8], name: &str) -> Result<Bundle> {
        Bundle::new(Storage::Static(bytes), name.to_string())
    }

    /// Validates owned bundle bytes. The vector is kept as is when it starts 64-byte aligned,
    /// otherwise copied once into an aligned buffer.
    pub fn from_vec(bytes: Vec<u8>, name: &str) -> Result<Bundle> {
        let len = bytes.len();
        let storage = if bytes.as_ptr().addr().is_multiple_of(ALIGNMENT) {
            Storage::Owned {
                buf: bytes,
                start: 0,
                len,
            }
        } else {
            let mut buf = vec![0u8; len + (ALIGNMENT - 1)];
            let start = (ALIGNMENT - buf.as_ptr().addr() % ALIGNMENT) % ALIGNMENT;
            if let Some(dst) = buf.get_mut(start..start + len) {
                dst.copy_from_slice(&bytes);
            }
            Storage::Owned { buf, start, len }
        };
        Bundle::new(storage, name.to_string())
    }

    fn new(storage: Storage, name: String) -> Result<Bundle> {
        let bytes = storage.bytes();
        let parsed = parse(bytes, &name)?;
        let misalignment = bytes.as_ptr().addr() % ALIGNMENT;
        if misalignment != 0 {
            return Err(bad(
                &name,
                format!(
                    "bundle bytes start at an address {misalignment} bytes past a \
                     {ALIGNMENT}-byte boundary; wrap them in a #[repr(align(64))] struct"
                ),
            ));
        }
        let index = parsed
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Bundle {
            name,
            storage,
            version: parsed.version,
            metadata: parsed.metadata,
            tensors: parsed.tensors,
            index,
            content_id: parsed.content_id,
        })
    }

    /// The name given at construction (the path for [`Bundle::open`]); used in error messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Structural format version (always [`FORMAT_VERSION`] for a bundle that opened).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Length of the whole bundle in bytes.
    pub fn file_len(&self) -> usize {
        self.storage.bytes().len()
    }

    /// The whole bundle, byte for byte.
    pub fn as_bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    /// The parsed, cross-checked metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// All tensors, in table order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The table entry of tensor `name`; [`Error::Format`] ([`FormatProblem::MissingTensor`]) if there is none.
    pub fn tensor_info(&self, name: &str) -> Result<&TensorInfo> {
        self.index
            .get(name)
            .and_then(|&i| self.tensors.get(i))
            .ok_or_else(|| {
                bad_as(
                    &self.name,
                    FormatProblem::MissingTensor {
                        tensor: name.to_string(),
                    },
                    format!("no tensor named {name:?}"),
                )
            })
    }

    /// Raw little-endian bytes of tensor `name`, whatever its dtype.
    pub fn bytes(&self, name: &str) -> Result<&[u8]> {
        let info = self.tensor_info(name)?;
        info.offset
            .checked_add(info.len)
            .and_then(|end| self.storage.bytes().get(info.offset..end))
            .ok_or_else(|| bad(&self.name, format!("tensor {name:?} lies outside the file")))
    }

    /// Lets the operating system drop from memory the pages that hold tensor `name` (whole
    /// pages inside its bytes), e.g. the encoder graph once its plan is built. The bytes stay
    /// readable: a later read loads them again from the file. Only for a memory-mapped or
    /// static (embedded) bundle on Unix; elsewhere, and for owned bytes, nothing happens.
    /// Returns the number of bytes released.
    pub fn release_pages(&self, name: &str) -> Result<usize> {
        let bytes = self.bytes(name)?;
        if matches!(self.storage, Storage::Owned { .. }) {
            return Ok(0);
        }
        Ok(release_file_pages(bytes))
    }

    fn typed<T: Pod>(&self, name: &str, want: DType) -> Result<&[T]> {
        let info = self.tensor_info(name)?;
        if info.dtype != want {
            return Err(bad_as(
                &self.name,
                FormatProblem::TensorShape {
                    tensor: name.to_string(),
                },
                format!("tensor {name:?} is {}, not {want}", info.dtype),
            ));
        }
        if cfg!(target_endian = "big") {
            return Err(bad(
                &self.name,
                format!("zero-copy view of {name:?} needs a little-endian target; use to_f32_vec"),
            ));
        }
        cast_slice(self.bytes(name)?).ok_or_else(|| {
            bad(
                &self.name,
                format!("tensor {name:?} is not aligned for {want} in memory"),
            )
        })
    }

    /// Zero-copy view of an f16 tensor; [`Error::Format`] ([`FormatProblem::TensorShape`]) if its dtype is not f16.
    pub fn f16_view(&self, name: &str) -> Result<&[f16]> {
        self.typed(name, DType::F16)
    }

    /// Zero-copy view of an f32 tensor; [`Error::Format`] ([`FormatProblem::TensorShape`]) if its dtype is not f32.
    pub fn f32_view(&self, name: &str) -> Result<&[f32]> {
        self.typed(name, DType::F32)
    }

    /// Zero-copy view of an i8 tensor; [`Error::Format`] ([`FormatProblem::TensorShape`]) if its dtype is not i8.
    pub fn i8_view(&self, name: &str) -> Result<&[i8]> {
        self.typed(name, DType::I8)
    }

    /// Copy of an f16 or f32 tensor as f32 (works on any target endianness).
    pub fn to_f32_vec(&self, name: &str) -> Result<Vec<f32>> {
        let info = self.tensor_info(name)?;
        let bytes = self.bytes(name)?;
        match info.dtype {
            DType::F32 => Ok(bytes
                .as_chunks::<4>()
                .0
                .iter()
                .map(|c| f32::from_le_bytes(*c))
                .collect()),
            DType::F16 => Ok(bytes
                .as_chunks::<2>()
                .0
                .iter()
                .map(|c| f16::from_le_bytes(*c).to_f32())
                .collect()),
            other => Err(bad_as(
                &self.name,
                FormatProblem::TensorShape {
                    tensor: name.to_string(),
                },
                format!("tensor {name:?} is {other}; to_f32_vec reads f16 or f32 tensors"),
            )),
        }
    }

    /// 32 hex digits identifying this bundle's exact content (header, metadata, table and, through
    /// the stored data checksum, every tensor byte). Label packs record it to name their base
    /// bundle. Not cryptographic: it tells bundles apart, it does not authenticate them.
    pub fn content_id(&self) -> String {
        self.content_id.clone()
    }
}

/// `madvise(MADV_DONTNEED)` on the whole pages inside `bytes`, which must lie in a read-only,
/// file-backed mapping that is never written (a bundle's mmap, or the executable's read-only
/// data for an embedded bundle). Returns the bytes released (0 on failure or off Unix).
#[cfg(unix)]
fn release_file_pages(bytes: &[u8]) -> usize {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let Ok(page) = usize::try_from(page) else {
        return 0;
    };
    if page == 0 {
        return 0;
    }
    let start = bytes.as_ptr().addr();
    let first = start.div_ceil(page) * page;
    let last = (start + bytes.len()) / page * page;
    if last <= first {
        return 0;
    }
    let len = last - first;
    // SAFETY: `first..last` lies inside `bytes` (rounded inwards to whole pages), so inside one
    // live mapping. The caller guarantees the mapping is read-only and file-backed with no page
    // ever written: MADV_DONTNEED only drops the resident copies, and any later read faults the
    // same bytes back in from the file, so no reference into the range observes a change. The
    // pointer is derived from `bytes`, keeping its provenance.
    let rc = unsafe {
        libc::madvise(
            bytes.as_ptr().add(first - start).cast_mut().cast(),
            len,
            libc::MADV_DONTNEED,
        )
    };
    if rc == 0 {
        len
    } else {
        0
    }
}

#[cfg(not(unix))]
fn release_file_pages(_bytes: &[u8]) -> usize {
    0
}

/// Element types that may be viewed in place: every bit pattern is a valid value.
trait Pod: Copy {}
impl Pod for f32 {}
impl Pod for f16 {}
impl Pod for i8 {}

fn cast_slice<T: Pod>(bytes: &[u8]) -> Option<&[T]> {
    let size = std::mem::size_of::<T>();
    if cfg!(target_endian = "big")
        || !bytes.len().is_multiple_of(size)
        || !bytes
            .as_ptr()
            .addr()
            .is_multiple_of(std::mem::align_of::<T>())
    {
        return None;
    }
    // SAFETY: the pointer is non-null and aligned for T (checked above), the new slice covers
    // exactly the `bytes.len()` initialised bytes borrowed from `bytes` (length is a multiple of
    // size_of::<T>()), its lifetime is tied to that borrow, T is one of f32, f16, i8 for which
    // every bit pattern is valid, and the target is little-endian as the file is.
    Some(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), bytes.len() / size) })
}

pub(crate) struct Parsed {
    pub version: u32,
    pub metadata: Metadata,
    pub tensors: Vec<TensorInfo>,
    pub content_id: String,
}

/// The bundle kind (`NERB`).
pub(crate) const BUNDLE_KIND: ContainerKind = ContainerKind {
    magic: MAGIC,
    version: FORMAT_VERSION,
    what: "ner-edge bundle",
    sibling: (
        *b"NERP",
        "it is a label pack: pass it with --pack, and the bundle with --bundle",
    ),
};

/// Validates `bytes` as a complete bundle. `name` prefixes every error message.
pub(crate) fn parse(bytes: &[u8], name: &str) -> Result<Parsed> {
    let c: Container<Metadata> = parse_container(bytes, name, &BUNDLE_KIND)?;
    validate(&c.metadata, &c.tensors, bytes, name)?;
    Ok(Parsed {
        version: c.version,
        metadata: c.metadata,
        tensors: c.tensors,
        content_id: c.content_id,
    })
}

fn validate(meta: &Metadata, tensors: &[TensorInfo], bytes: &[u8], name: &str) -> Result<()> {
    let fail = |m: String| bad_as(name, FormatProblem::Metadata, m);
    let shape = |t: &TensorInfo, m: String| {
        bad_as(
            name,
            FormatProblem::TensorShape {
                tensor: t.name.clone(),
            },
            m,
        )
    };
    let find = |t: &str| {
        tensors.iter().find(|x| x.name == t).ok_or_else(|| {
            bad_as(
                name,
                FormatProblem::MissingTensor {
                    tensor: t.to_string(),
                },
                format!("required tensor {t:?} is missing (format v1, FORMAT.md §Tensors)"),
            )
        })
    };
    let onnx = find(tensor_names::ENCODER_ONNX)?;
    let vocab = find(tensor_names::VOCAB)?;
    let protos = find(tensor_names::PROTOTYPES)?;
    let memory = find(tensor_names::LABEL_MEMORY)?;
    for t in [onnx, vocab] {
        if t.dtype != DType::Bytes {
            return Err(shape(
                t,
                format!(
                    "tensor {:?} must have dtype bytes, found {}",
                    t.name, t.dtype
                ),
            ));
        }
    }
    for t in [protos, memory] {
        if !matches!(t.dtype, DType::F16 | DType::F32) {
            return Err(shape(
                t,
                format!("tensor {:?} must be f16 or f32, found {}", t.name, t.dtype),
            ));
        }
    }

    let enc = &meta.encoder;
    if enc.type_dim == 0 {
        return Err(fail(
            "metadata field encoder.type_dim must be at least 1".to_string(),
        ));
    }
    if !matches!(enc.weight_dtype.as_str(), "f16" | "f32" | "int8" | "mixed") {
        return Err(fail(format!(
            "metadata field encoder.weight_dtype = {:?}, expected \"f16\", \"f32\", \"int8\" or \"mixed\"",
            enc.weight_dtype
        )));
    }
    let unigram = match meta.tokenizer.kind.as_str() {
        "wordpiece" => false,
        "unigram" => true,
        other => {
            return Err(fail(format!(
                "metadata field tokenizer.kind = {other:?}; format v1 defines \"wordpiece\" and \"unigram\""
            )))
        }
    };
    if unigram {
        let charsmap = find(tensor_names::CHARSMAP)?;
        if charsmap.dtype != DType::Bytes {
            return Err(shape(
                charsmap,
                format!(
                    "tensor {:?} must have dtype bytes, found {}",
                    charsmap.name, charsmap.dtype
                ),
            ));
        }
        if !meta.tokenizer.unk_score.is_some_and(f32::is_finite) {
            return Err(fail(
                "metadata field tokenizer.unk_score must be a finite number for a unigram tokenizer"
                    .to_string(),
            ));
        }
    }

    let vocab_text = bytes
        .get(vocab.offset..vocab.offset + vocab.len)
        .and_then(|b| std::str::from_utf8(b).ok())
        .ok_or_else(|| {
            fail(format!(
                "tensor {:?} (bytes {}..{}) is not valid UTF-8",
                vocab.name,
                vocab.offset,
                vocab.offset + vocab.len
            ))
        })?;
    let tokens: Vec<&str> = vocab_text
        .lines()
        .map(|l| {
            if unigram {
                l.rsplit_once('\t').map_or(l, |(piece, _)| piece)
            } else {
                l
            }
        })
        .collect();
    if tokens.len() != enc.vocab_size {
        return Err(fail(format!(
            "tensor {:?} has {} lines but metadata field encoder.vocab_size = {}",
            vocab.name,
            tokens.len(),
            enc.vocab_size
        )));
    }
    let tk = &meta.tokenizer;
    for (field, tok) in [
        ("unk_token", &tk.unk_token),
        ("cls_token", &tk.cls_token),
        ("sep_token", &tk.sep_token),
        ("pad_token", &tk.pad_token),
    ] {
        if !tokens.contains(&tok.as_str()) {
            return Err(fail(format!(
                "metadata field tokenizer.{field} = {tok:?} is not in tensor {:?}",
                vocab.name
            )));
        }
    }

    let types = &meta.labels.types;
    let want = [types.len(), enc.type_dim];
    if protos.shape != want {
        return Err(shape(protos, format!(
            "tensor {:?} has shape {:?}, expected [labels.types.len(), encoder.type_dim] = {want:?}",
            protos.name, protos.shape
        )));
    }
    let mut rows_used = HashSet::new();
    let mut names = HashSet::new();
    for (i, t) in types.iter().enumerate() {
        if t.name.is_empty() || !names.insert(t.name.as_str()) {
            return Err(fail(format!(
                "metadata field labels.types[{i}].name = {:?} is empty or repeated",
                t.name
            )));
        }
        if t.prototype_row >= types.len() {
            return Err(fail(format!(
                "metadata field labels.types[{i}].prototype_row = {} is out of range: tensor {:?} \
                 has {} rows",
                t.prototype_row,
                protos.name,
                types.len()
            )));
        }
        if !rows_used.insert(t.prototype_row) {
            return Err(fail(format!(
                "metadata field labels.types[{i}].prototype_row = {} is used by another type",
                t.prototype_row
            )));
        }
    }
    for (i, a) in meta.labels.default_active.iter().enumerate() {
        if !names.contains(a.as_str()) {
            return Err(fail(format!(
                "metadata field labels.default_active[{i}] = {a:?} is not in labels.types"
            )));
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
        return Err(fail(
            "metadata field transitions holds a non-finite number".to_string(),
        ));
    }

    if memory.shape.len() != 2 || memory.shape.get(1) != Some(&enc.type_dim) {
        return Err(shape(
            memory,
            format!(
                "tensor {:?} has shape {:?}, expected [rows, encoder.type_dim = {}]",
                memory.name, memory.shape, enc.type_dim
            ),
        ));
    }
    let mem_rows = memory.shape.first().copied().unwrap_or(0);
    let layout = &meta.label_memory;
    let mut spans: Vec<(usize, usize, usize)> = Vec::with_capacity(layout.slots.len());
    for (i, s) in layout.slots.iter().enumerate() {
        let end = s
            .first_row
            .checked_add(s.rows)
            .filter(|&e| e <= mem_rows)
            .ok_or_else(|| {
                fail(format!(
                "metadata field label_memory.slots[{i}] rows {}..+{} run past the {mem_rows} rows \
                 of tensor {:?}",
                s.first_row, s.rows, memory.name
            ))
            })?;
        if s.rows > layout.capacity {
            return Err(fail(format!(
                "metadata field label_memory.slots[{i}].rows = {} exceeds label_memory.capacity = \
                 {}",
                s.rows, layout.capacity
            )));
        }
        if s.type_name.is_empty() {
            return Err(fail(format!(
                "metadata field label_memory.slots[{i}].type_name is empty"
            )));
        }
        if s.rows > 0 {
            spans.push((s.first_row, end, i));
        }
    }
    spans.sort_unstable();
    for pair in spans.windows(2) {
        if let [(_, a_end, a), (b_start, _, b)] = pair {
            if a_end > b_start {
                return Err(fail(format!(
                    "metadata fields label_memory.slots[{a}] and label_memory.slots[{b}] overlap \
                     in tensor {:?}",
                    memory.name
                )));
            }
        }
    }
    validate_prior(tensors, enc.type_dim, name)?;
    validate_other(tensors, enc.type_dim, name)?;
    validate_gate(tensors, enc.hidden, name)
}

/// The optional context gate: none, or f32 weight `[2h, 2]` or `[3h, 2]` and f32 bias `[2]`
/// (`h` = `encoder.hidden`).
fn validate_gate(tensors: &[TensorInfo], h: usize, name: &str) -> Result<()> {
    let find = |n: &str| tensors.iter().find(|t| t.name == n);
    let weight = find(tensor_names::CONTEXT_GATE_WEIGHT);
    let bias = find(tensor_names::CONTEXT_GATE_BIAS);
    let (weight, bias) = match (weight, bias) {
        (None, None) => return Ok(()),
        (Some(w), Some(b)) => (w, b),
        (w, _) => {
            let missing = if w.is_none() {
                tensor_names::CONTEXT_GATE_WEIGHT
            } else {
                tensor_names::CONTEXT_GATE_BIAS
            };
            return Err(bad_as(
                name,
                FormatProblem::MissingTensor {
                    tensor: missing.to_string(),
                },
                format!(
                    "context gate tensor {missing:?} is missing: the two fusion.gate.* tensors \
                     are optional but come together"
                ),
            ));
        }
    };
    let weight_ok =
        weight.dtype == DType::F32 && (weight.shape == [2 * h, 2] || weight.shape == [3 * h, 2]);
    if !weight_ok || bias.dtype != DType::F32 || bias.shape != [2] {
        let (bad, want) = if weight_ok {
            (bias, "f32 [2]".to_string())
        } else {
            (weight, format!("f32 [{}, 2] or [{}, 2]", 2 * h, 3 * h))
        };
        return Err(bad_as(
            name,
            FormatProblem::TensorShape {
                tensor: bad.name.clone(),
            },
            format!(
                "tensor {:?} is {} {:?}, expected {want} (encoder.hidden = {h})",
                bad.name, bad.dtype, bad.shape
            ),
        ));
    }
    Ok(())
}

/// The optional "other" prototypes: f16/f32 `[2, d]` (`d` = `encoder.type_dim`).
fn validate_other(tensors: &[TensorInfo], d: usize, name: &str) -> Result<()> {
    let Some(info) = tensors
        .iter()
        .find(|t| t.name == tensor_names::OTHER_PROTOTYPES)
    else {
        return Ok(());
    };
    if !matches!(info.dtype, DType::F16 | DType::F32) || info.shape != [2, d] {
        return Err(bad_as(
            name,
            FormatProblem::TensorShape {
                tensor: info.name.clone(),
            },
            format!(
                "tensor {:?} is {} {:?}, expected f16 or f32 [2, {d}] (encoder.type_dim = {d})",
                tensor_names::OTHER_PROTOTYPES,
                info.dtype,
                info.shape
            ),
        ));
    }
    Ok(())
}

/// The optional prior MLP tensors: none, or all four with f16/f32 dtype and the shapes of
/// FORMAT.md (`d` = `encoder.type_dim`).
fn validate_prior(tensors: &[TensorInfo], d: usize, name: &str) -> Result<()> {
    let want = [
        (tensor_names::PRIOR_FC1_WEIGHT, [2 * d, d].to_vec()),
        (tensor_names::PRIOR_FC1_BIAS, [d].to_vec()),
        (tensor_names::PRIOR_FC2_WEIGHT, [d, d].to_vec()),
        (tensor_names::PRIOR_FC2_BIAS, [d].to_vec()),
    ];
    let found: Vec<Option<&TensorInfo>> = want
        .iter()
        .map(|(n, _)| tensors.iter().find(|t| t.name == *n))
        .collect();
    let present = found.iter().filter(|f| f.is_some()).count();
    if present == 0 {
        return Ok(());
    }
    for ((tensor, shape), info) in want.iter().zip(&found) {
        let Some(info) = info else {
            return Err(bad_as(
                name,
                FormatProblem::MissingTensor {
                    tensor: tensor.to_string(),
                },
                format!(
                    "prior MLP tensor {tensor:?} is missing: the four prior.* tensors are \
                     optional but come together ({present} of 4 present)"
                ),
            ));
        };
        if !matches!(info.dtype, DType::F16 | DType::F32) || &info.shape != shape {
            return Err(bad_as(
                name,
                FormatProblem::TensorShape {
                    tensor: tensor.to_string(),
                },
                format!(
                    "tensor {tensor:?} is {} {:?}, expected f16 or f32 {shape:?} \
                     (encoder.type_dim = {d})",
                    info.dtype, info.shape
                ),
            ));
        }
    }
    Ok(())
}
