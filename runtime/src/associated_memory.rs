//! Associated memory: a sentence reads the labels of similar labelled sentences.
//!
//! The memory holds labelled words (the encoder's type vectors of memory sentences, stored as
//! their key projections, and one BIO label per word). A text retrieves the `m` memory
//! sentences most like it, and every word attends over their words, head by head; what it
//! reads are the memory words' **label embeddings** — a learned vector per (head, O/B/I tag)
//! added to the boundary logits and a learned gain per head on the memory word's type added to
//! that type's logit — before the emissions ([`crate::emissions::emissions`]) and the CRF:
//!
//! ```text
//! q_t = τ_t Wq,  k_j = μ_j Wk                          ([d, H·dk] each; head h = columns h·dk..)
//! a_h(t, j) = softmax_j( q_t,h · k_j,h / √dk )          (over the retrieved memory words j)
//! Δboundary_t = Σ_h Σ_j a_h(t, j) · E[h, tag(y_j)]      (E: [H, 3, 3], tag ∈ {O, B, I})
//! Δtype_t[k]  = Σ_h γ_h · Σ_{j: type(y_j) = k} a_h(t, j)  (γ: [H])
//! ```
//!
//! `τ_t` is a word's type vector (the first piece's), `μ_j` a memory word's. The label
//! embeddings are tied to the label *structure* (tag and "same type as that word"), not to
//! type names, so one learned memory reads a support set of new types as well as the training
//! memory: `adapt` grows the memory with its support sentences. Retrieval ranks memory
//! sentences by the cosine of mean keys (`mean_t τ_t Wk`, length-normalised).
//!
//! The bundle stores the four parameter tensors and the memory (keys in f16, labels and
//! sentence offsets as little-endian integers); every size and label is checked at load.

use half::f16;

use crate::bundle::Bundle;
use crate::decode::Tag;
use crate::emissions::dot;
use crate::{Error, Result};

/// Tensor names in a bundle.
pub mod tensor_names {
    /// f32 `[type_dim, heads · key_dim]`: the query projection `Wq`.
    pub const QUERY: &str = "assoc.query";
    /// f32 `[type_dim, heads · key_dim]`: the key projection `Wk`.
    pub const KEY: &str = "assoc.key";
    /// f32 `[heads, 3, 3]`: `E[h, tag]`, added to the (O, B, I) logits.
    pub const TAG_VALUES: &str = "assoc.tag_values";
    /// f32 `[heads]`: `γ_h`, the gain of a memory word's type on that type's logit.
    pub const TYPE_GAIN: &str = "assoc.type_gain";
    /// f16 `[words, heads · key_dim]`: the memory words' keys `μ_j Wk`.
    pub const MEMORY_KEYS: &str = "assoc.memory.keys";
    /// bytes `[2 · words]`: each memory word's label (u16 little-endian, layout of
    /// [`crate::decode::labels`] over the bundle's types).
    pub const MEMORY_LABELS: &str = "assoc.memory.labels";
    /// bytes `[4 · (sentences + 1)]`: u32 little-endian word offsets of the memory sentences,
    /// from 0, non-decreasing, ending at the word count.
    pub const MEMORY_SENTENCES: &str = "assoc.memory.sentences";
}

/// Default number of memory sentences a text reads: 32 sentences of a Chinese corpus are
/// about as many memory words as the 15 other packed sequences a dense sequence reads in
/// training.
pub const DEFAULT_RETRIEVE: usize = 32;

/// The learned parameters of the memory read.
#[derive(Clone, Debug, PartialEq)]
pub struct AssocParams {
    /// Width `d` of the type vectors.
    pub type_dim: usize,
    /// Attention heads `H`.
    pub heads: usize,
    /// Width `dk` of one head's query and key.
    pub key_dim: usize,
    /// `Wq`, `[d, H·dk]` row-major.
    pub query: Vec<f32>,
    /// `Wk`, `[d, H·dk]` row-major.
    pub key: Vec<f32>,
    /// `E`, `[H, 3, 3]`: head, memory word's tag (O, B, I), logit (O, B, I).
    pub tag_values: Vec<f32>,
    /// `γ`, `[H]`.
    pub type_gain: Vec<f32>,
}

/// The O/B/I tag of label `y` (0, 1, 2).
pub fn label_tag(y: u16) -> usize {
    Tag::from_index(usize::from(y)).kind() as usize
}

/// The type of label `y`, `None` for O.
pub fn label_type(y: u16) -> Option<usize> {
    Tag::from_index(usize::from(y)).type_index()
}

impl AssocParams {
    /// Width `H·dk` of a query or key row.
    pub fn width(&self) -> usize {
        self.heads * self.key_dim
    }

    /// Checks every length against `type_dim`, `heads` and `key_dim` (all positive) and that
    /// every value is finite; `what` names the source in the error.
    pub fn check(&self, what: &str) -> Result<()> {
        let (d, h, w) = (self.type_dim, self.heads, self.width());
        if d == 0 || h == 0 || self.key_dim == 0 {
            return Err(Error::Bundle(format!(
                "{what}: associated memory needs a positive type width, head count and key \
                 width (got {d}, {h}, {})",
                self.key_dim
            )));
        }
        let parts: [(&str, &[f32], usize); 4] = [
            (tensor_names::QUERY, &self.query, d * w),
            (tensor_names::KEY, &self.key, d * w),
            (tensor_names::TAG_VALUES, &self.tag_values, h * 9),
            (tensor_names::TYPE_GAIN, &self.type_gain, h),
        ];
        for (name, data, want) in parts {
            if data.len() != want {
                return Err(Error::Bundle(format!(
                    "{what}: {name} has {} values, expected {want} (type width {d}, {h} heads \
                     of {})",
                    data.len(),
                    self.key_dim
                )));
            }
            if data.iter().any(|v| !v.is_finite()) {
                return Err(Error::Bundle(format!(
                    "{what}: {name} holds non-finite values"
                )));
            }
        }
        Ok(())
    }

    /// `out = vectors · weight` for `vectors` `[T, d]` and `weight` `[d, H·dk]` (`out` is
    /// cleared and resized to `[T, H·dk]`).
    pub fn project(&self, weight: &[f32], vectors: &[f32], out: &mut Vec<f32>) {
        let (d, w) = (self.type_dim, self.width());
        let rows = vectors.len().checked_div(d).unwrap_or(0);
        out.clear();
        out.resize(rows * w, 0.0);
        for (x, o) in vectors.chunks_exact(d).zip(out.chunks_exact_mut(w)) {
            for (&xi, wrow) in x.iter().zip(weight.chunks_exact(w)) {
                for (oj, &wj) in o.iter_mut().zip(wrow) {
                    *oj += xi * wj;
                }
            }
        }
    }

    /// The memory read of `T` words with queries `queries` `[T, H·dk]` over `M` memory words
    /// with `keys` `[M, H·dk]` and `labels` `[M]`: adds `Δboundary` into `boundary` `[T, 3]`
    /// and `Δtype` into `type_logits` `[T, n_types]` (memory words whose type is `n_types` or
    /// more add only their tag's value). With `probs`, it is resized to `[H, T, M]` and holds
    /// the attention weights. With no memory word nothing is added.
    ///
    /// Preconditions (debug-asserted): consistent lengths.
    #[allow(clippy::too_many_arguments)]
    pub fn attend(
        &self,
        queries: &[f32],
        keys: &[f32],
        labels: &[u16],
        n_types: usize,
        boundary: &mut [f32],
        type_logits: &mut [f32],
        mut probs: Option<&mut Vec<f32>>,
    ) {
        let (h_count, dk, w) = (self.heads, self.key_dim, self.width());
        let t_len = queries.len() / w.max(1);
        let m = labels.len();
        debug_assert_eq!(keys.len(), m * w, "keys must be [M, H·dk]");
        debug_assert_eq!(boundary.len(), t_len * 3, "boundary must be [T, 3]");
        debug_assert_eq!(
            type_logits.len(),
            t_len * n_types,
            "type logits must be [T, n]"
        );
        if let Some(p) = probs.as_deref_mut() {
            p.clear();
            p.resize(h_count * t_len * m, 0.0);
        }
        if m == 0 || t_len == 0 {
            return;
        }
        let scale = 1.0 / (dk as f32).sqrt();
        let mut scores = vec![0.0f32; h_count * m];
        for t in 0..t_len {
            let q = &queries[t * w..(t + 1) * w];
            for (j, k) in keys.chunks_exact(w).enumerate() {
                for (h, (qh, kh)) in q.chunks_exact(dk).zip(k.chunks_exact(dk)).enumerate() {
                    scores[h * m + j] = scale * dot(qh, kh);
                }
            }
            let b = &mut boundary[t * 3..t * 3 + 3];
            for (h, row) in scores.chunks_exact_mut(m).enumerate() {
                let values = &self.tag_values[h * 9..(h + 1) * 9];
                let gain = self.type_gain[h];
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0f32;
                for s in row.iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                let inv = 1.0 / sum;
                for (s, &y) in row.iter_mut().zip(labels) {
                    *s *= inv;
                    let tag = label_tag(y);
                    let v = &values[tag * 3..tag * 3 + 3];
                    for (bc, vc) in b.iter_mut().zip(v) {
                        *bc += *s * vc;
                    }
                    if let Some(k) = label_type(y).filter(|&k| k < n_types) {
                        type_logits[t * n_types + k] += gain * *s;
                    }
                }
                if let Some(p) = probs.as_deref_mut() {
                    p[(h * t_len + t) * m..(h * t_len + t + 1) * m].copy_from_slice(row);
                }
            }
        }
    }
}

/// A memory's bytes as stored: f16 keys, u16 labels, u32 sentence offsets (all little-endian).
pub type StoredMemory = (Vec<u8>, Vec<u8>, Vec<u8>);

/// Labelled memory words grouped in sentences, with one retrieval centroid per sentence.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemoryBank {
    width: usize,
    keys: Vec<f32>,
    labels: Vec<u16>,
    offsets: Vec<usize>,
    centroids: Vec<f32>,
}

/// The length-normalised mean of the rows of `keys` (`[n, width]`) into `out`; zeros for no
/// row or a zero mean.
fn centroid(keys: &[f32], width: usize, out: &mut [f32]) {
    out.fill(0.0);
    for row in keys.chunks_exact(width) {
        for (o, &x) in out.iter_mut().zip(row) {
            *o += x;
        }
    }
    let norm = out.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        out.iter_mut().for_each(|x| *x /= norm);
    }
}

impl MemoryBank {
    /// An empty memory of `width`-wide keys.
    pub fn empty(width: usize) -> MemoryBank {
        MemoryBank {
            width,
            keys: Vec::new(),
            labels: Vec::new(),
            offsets: vec![0],
            centroids: Vec::new(),
        }
    }

    /// Number of memory sentences.
    pub fn sentences(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Number of memory words.
    pub fn words(&self) -> usize {
        self.labels.len()
    }

    /// Width of a key.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Appends one sentence of `keys` `[n, width]` and `labels` `[n]`. Errors
    /// ([`Error::Usage`]) on mismatched lengths or non-finite keys.
    pub fn push_sentence(&mut self, keys: &[f32], labels: &[u16]) -> Result<()> {
        if keys.len() != labels.len() * self.width {
            return Err(Error::Usage(format!(
                "memory sentence: {} key values for {} words of width {}",
                keys.len(),
                labels.len(),
                self.width
            )));
        }
        if keys.iter().any(|v| !v.is_finite()) {
            return Err(Error::Usage("memory sentence: non-finite key".into()));
        }
        self.keys.extend_from_slice(keys);
        self.labels.extend_from_slice(labels);
        self.offsets.push(self.labels.len());
        let start = self.centroids.len();
        self.centroids.resize(start + self.width, 0.0);
        centroid(keys, self.width, &mut self.centroids[start..]);
        Ok(())
    }

    /// Up to `top` sentences most like a text whose words have keys `query_keys` (`[T, width]`),
    /// by cosine of centroids, best first (ties: lower index first).
    pub fn retrieve(&self, query_keys: &[f32], top: usize) -> Vec<usize> {
        let s = self.sentences();
        if s == 0 || top == 0 {
            return Vec::new();
        }
        if top >= s {
            return (0..s).collect();
        }
        let mut q = vec![0.0f32; self.width];
        centroid(query_keys, self.width, &mut q);
        let mut scored: Vec<(f32, usize)> = self
            .centroids
            .chunks_exact(self.width)
            .map(|c| c.iter().zip(&q).map(|(a, b)| a * b).sum::<f32>())
            .zip(0..)
            .collect();
        scored.select_nth_unstable_by(top - 1, |a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        scored.truncate(top);
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        scored.into_iter().map(|(_, i)| i).collect()
    }

    /// The keys and labels of `sentences`, concatenated in order, into `keys` and `labels`
    /// (both cleared first). Indices past the end are skipped.
    pub fn gather(&self, sentences: &[usize], keys: &mut Vec<f32>, labels: &mut Vec<u16>) {
        keys.clear();
        labels.clear();
        for &s in sentences.iter().filter(|&&s| s < self.sentences()) {
            let (a, b) = (self.offsets[s], self.offsets[s + 1]);
            keys.extend_from_slice(&self.keys[a * self.width..b * self.width]);
            labels.extend_from_slice(&self.labels[a..b]);
        }
    }

    /// A memory as stored: `keys` `[words, width]`, `label_bytes` (u16 little-endian, one per
    /// word, labels of `n_types` types) and `offset_bytes` (u32 little-endian sentence
    /// offsets, non-decreasing from 0 to the word count). The error says what is wrong.
    pub fn from_stored(
        width: usize,
        keys: &[f32],
        label_bytes: &[u8],
        offset_bytes: &[u8],
        n_types: usize,
    ) -> std::result::Result<MemoryBank, String> {
        use tensor_names as t;
        if !label_bytes.len().is_multiple_of(2) || !offset_bytes.len().is_multiple_of(4) {
            return Err(format!(
                "memory labels ({} bytes) must be u16 and sentence offsets ({} bytes) u32",
                label_bytes.len(),
                offset_bytes.len()
            ));
        }
        let labels = le_u16s(label_bytes);
        let offsets = le_u32s(offset_bytes);
        let words = labels.len();
        if width == 0 || keys.len() != words * width {
            return Err(format!(
                "{} has {} values for {words} memory words of width {width}",
                t::MEMORY_KEYS,
                keys.len()
            ));
        }
        let offsets_ok = offsets.first() == Some(&0)
            && offsets.last().map(|&o| o as usize) == Some(words)
            && offsets.windows(2).all(|p| p[0] <= p[1]);
        if !offsets_ok {
            return Err(format!(
                "{} must run non-decreasing from 0 to the {words} memory words",
                t::MEMORY_SENTENCES
            ));
        }
        let max_label = 2 * n_types;
        if let Some(at) = labels.iter().position(|&y| usize::from(y) > max_label) {
            return Err(format!(
                "memory word {at} has label {}, but {n_types} types have labels 0..={max_label}",
                labels[at]
            ));
        }
        if keys.iter().any(|v| !v.is_finite()) {
            return Err(format!("{} holds non-finite values", t::MEMORY_KEYS));
        }
        let mut bank = MemoryBank::empty(width);
        for p in offsets.windows(2) {
            let (a, b) = (p[0] as usize, p[1] as usize);
            bank.push_sentence(&keys[a * width..b * width], &labels[a..b])
                .map_err(|e| e.to_string())?;
        }
        Ok(bank)
    }

    /// The memory as stored, the inverse of [`MemoryBank::from_stored`]: keys as f16
    /// little-endian bytes (`[words, width]`), labels as u16 and sentence offsets as u32
    /// little-endian bytes. Errors when an offset does not fit in a u32.
    pub fn to_stored(&self) -> std::result::Result<StoredMemory, String> {
        let keys = self
            .keys
            .iter()
            .flat_map(|&x| f16::from_f32(x).to_le_bytes())
            .collect();
        let labels = self.labels.iter().flat_map(|y| y.to_le_bytes()).collect();
        let offsets = self
            .offsets
            .iter()
            .map(|&o| u32::try_from(o).map(u32::to_le_bytes))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| "more than 2^32 memory words".to_string())?
            .concat();
        Ok((keys, labels, offsets))
    }

    /// Every word's keys `[words, width]`, labels `[words]` and the sentence offsets
    /// `[sentences + 1]`.
    pub fn parts(&self) -> (&[f32], &[u16], &[usize]) {
        (&self.keys, &self.labels, &self.offsets)
    }
}

/// Parameters and memory, read from a bundle or grown by `adapt`.
#[derive(Clone, Debug, PartialEq)]
pub struct AssociatedMemory {
    /// The learned read.
    pub params: AssocParams,
    /// The memory words.
    pub bank: MemoryBank,
}

/// The label map of [`AssociatedMemory::read`] for a group decoding `decoded` types that
/// holds the memory's types listed in `group_index` (memory type `k` → its index in the group,
/// `None` when the group does not decode it): such a type becomes the group's "other" type
/// `other` when given, else it keeps only its O/B/I tag (index `decoded`, which adds no type
/// score).
pub fn group_label_map(
    group_index: &[Option<usize>],
    other: Option<usize>,
    decoded: usize,
) -> Vec<u16> {
    let mut map = vec![0u16];
    for k in group_index {
        let target = k.or(other).unwrap_or(decoded);
        let b = (1 + 2 * target).min(usize::from(u16::MAX) - 1) as u16;
        map.extend([b, b + 1]);
    }
    map
}

/// Reusable buffers of [`AssociatedMemory::read`].
#[derive(Clone, Debug, Default)]
pub struct ReadScratch {
    queries: Vec<f32>,
    own_keys: Vec<f32>,
    keys: Vec<f32>,
    labels: Vec<u16>,
}

fn le_u16s(bytes: &[u8]) -> Vec<u16> {
    bytes
        .as_chunks::<2>()
        .0
        .iter()
        .map(|c| u16::from_le_bytes(*c))
        .collect()
}

fn le_u32s(bytes: &[u8]) -> Vec<u32> {
    bytes
        .as_chunks::<4>()
        .0
        .iter()
        .map(|c| u32::from_le_bytes(*c))
        .collect()
}

impl AssociatedMemory {
    /// The bundle's memory, `None` when it has none of the `assoc.*` tensors. Errors
    /// ([`Error::Bundle`]) when only some are there, on any size that does not fit `type_dim`,
    /// on offsets that are not a non-decreasing run from 0 to the word count, on labels that
    /// are not labels of the bundle's `n_types` types, and on non-finite values.
    pub fn from_bundle(
        bundle: &Bundle,
        type_dim: usize,
        n_types: usize,
    ) -> Result<Option<AssociatedMemory>> {
        use tensor_names as t;
        let all = [
            t::QUERY,
            t::KEY,
            t::TAG_VALUES,
            t::TYPE_GAIN,
            t::MEMORY_KEYS,
            t::MEMORY_LABELS,
            t::MEMORY_SENTENCES,
        ];
        let present = all.iter().filter(|n| bundle.tensor_info(n).is_ok()).count();
        if present == 0 {
            return Ok(None);
        }
        let name = bundle.name();
        if present != all.len() {
            return Err(Error::Bundle(format!(
                "{name}: the associated memory needs all of {all:?}, found {present} of them"
            )));
        }
        let type_gain = bundle.to_f32_vec(t::TYPE_GAIN)?;
        let heads = type_gain.len();
        let query = bundle.to_f32_vec(t::QUERY)?;
        let width = query.len().checked_div(type_dim).unwrap_or(0);
        let key_dim = width.checked_div(heads).unwrap_or(0);
        let params = AssocParams {
            type_dim,
            heads,
            key_dim,
            query,
            key: bundle.to_f32_vec(t::KEY)?,
            tag_values: bundle.to_f32_vec(t::TAG_VALUES)?,
            type_gain,
        };
        params.check(name)?;
        if params.width() * type_dim != params.query.len() {
            return Err(Error::Bundle(format!(
                "{name}: {} has {} values, not [{type_dim}, {heads} heads × key width]",
                t::QUERY,
                params.query.len()
            )));
        }
        let keys = bundle.to_f32_vec(t::MEMORY_KEYS)?;
        let bank = MemoryBank::from_stored(
            params.width(),
            &keys,
            bundle.bytes(t::MEMORY_LABELS)?,
            bundle.bytes(t::MEMORY_SENTENCES)?,
            n_types,
        )
        .map_err(|e| Error::Bundle(format!("{name}: associated memory: {e}")))?;
        Ok(Some(AssociatedMemory { params, bank }))
    }

    /// The memory's keys as f16 (the bundle's storage) and back, so a memory built from f32
    /// type vectors reads exactly as it will from its bundle.
    pub fn round_keys_to_f16(keys: &mut [f32]) {
        for k in keys {
            *k = f16::from_f32(*k).to_f32();
        }
    }

    /// Reads the memory for one text of type vectors `types` (`[T, d]`): retrieves `retrieve`
    /// sentences and adds `Δboundary` into `boundary` (`[T, 3]`) and `Δtype` into
    /// `type_offsets`, which is resized to `[T, n_types]` (zeros where nothing is read).
    /// `label_map`, when not empty, translates every memory label (index) into the label space
    /// of the `n_types` decoded types (labels past its end become O).
    #[allow(clippy::too_many_arguments)]
    pub fn read(
        &self,
        types: &[f32],
        n_types: usize,
        retrieve: usize,
        label_map: &[u16],
        boundary: &mut [f32],
        type_offsets: &mut Vec<f32>,
        s: &mut ReadScratch,
    ) {
        let d = self.params.type_dim;
        let t_len = types.len() / d.max(1);
        type_offsets.clear();
        type_offsets.resize(t_len * n_types, 0.0);
        if t_len == 0 || self.bank.sentences() == 0 {
            return;
        }
        self.params
            .project(&self.params.key, types, &mut s.own_keys);
        let chosen = self.bank.retrieve(&s.own_keys, retrieve);
        self.bank.gather(&chosen, &mut s.keys, &mut s.labels);
        if !label_map.is_empty() {
            for y in &mut s.labels {
                *y = label_map.get(usize::from(*y)).copied().unwrap_or(0);
            }
        }
        self.params
            .project(&self.params.query, types, &mut s.queries);
        self.params.attend(
            &s.queries,
            &s.keys,
            &s.labels,
            n_types,
            boundary,
            type_offsets,
            None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(d: usize, heads: usize, dk: usize, seed: u32) -> AssocParams {
        let w = heads * dk;
        let v = |n: usize, k: u32| -> Vec<f32> {
            (0..n)
                .map(|i| {
                    ((((i as u32).wrapping_mul(2_654_435_761)) ^ (seed + k)) % 1000) as f32 / 500.0
                        - 1.0
                })
                .collect()
        };
        AssocParams {
            type_dim: d,
            heads,
            key_dim: dk,
            query: v(d * w, 1),
            key: v(d * w, 2),
            tag_values: v(heads * 9, 3),
            type_gain: v(heads, 4),
        }
    }

    /// One head whose keys single out one memory word: the read is that word's label
    /// embedding.
    #[test]
    fn sharp_attention_reads_the_matching_words_label() {
        let p = AssocParams {
            type_dim: 2,
            heads: 1,
            key_dim: 2,
            query: vec![50.0, 0.0, 0.0, 50.0],
            key: vec![1.0, 0.0, 0.0, 1.0],
            tag_values: (0..9).map(|i| i as f32).collect(),
            type_gain: vec![2.0],
        };
        let queries = {
            let mut q = Vec::new();
            p.project(&p.query, &[1.0, 0.0], &mut q);
            q
        };
        let keys = [1.0, 0.0, 0.0, 1.0];
        let labels = [3u16, 0];
        let mut boundary = [0.0f32; 3];
        let mut types = [0.0f32; 2];
        p.attend(&queries, &keys, &labels, 2, &mut boundary, &mut types, None);
        for (got, want) in boundary.iter().zip([3.0, 4.0, 5.0]) {
            assert!((got - want).abs() < 1e-4, "{boundary:?}");
        }
        assert!(
            (types[1] - 2.0).abs() < 1e-4 && types[0].abs() < 1e-6,
            "{types:?}"
        );
    }

    #[test]
    fn attention_rows_are_distributions_and_unknown_types_add_only_tags() {
        let p = params(4, 2, 3, 7);
        let tv: Vec<f32> = (0..8).map(|i| (i as f32 * 0.37).sin()).collect();
        let mv: Vec<f32> = (0..12).map(|i| (i as f32 * 0.91).cos()).collect();
        let (mut q, mut k) = (Vec::new(), Vec::new());
        p.project(&p.query, &tv, &mut q);
        p.project(&p.key, &mv, &mut k);
        let labels = [0u16, 3, 8];
        let mut b = vec![0.0; 6];
        let mut l = vec![0.0; 4];
        let mut probs = Vec::new();
        p.attend(&q, &k, &labels, 2, &mut b, &mut l, Some(&mut probs));
        assert_eq!(probs.len(), 2 * 2 * 3);
        for row in probs.chunks_exact(3) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
        assert_eq!([l[0], l[2]], [0.0, 0.0], "type 0 is in no memory word");
        assert!(l[1] != 0.0 && l[3] != 0.0, "{l:?}");
        let mut only_known = vec![0.0; 4];
        p.attend(&q, &k, &[0, 3, 0], 2, &mut [0.0; 6], &mut only_known, None);
        assert_eq!(
            only_known, l,
            "a word of type 3 (past n_types) adds no type score"
        );
    }

    #[test]
    fn retrieval_ranks_by_centroid_cosine() {
        let mut bank = MemoryBank::empty(2);
        bank.push_sentence(&[1.0, 0.0, 1.0, 0.1], &[0, 1]).unwrap();
        bank.push_sentence(&[0.0, 1.0], &[0]).unwrap();
        bank.push_sentence(&[-1.0, 0.0], &[2]).unwrap();
        assert_eq!(bank.retrieve(&[0.1, 1.0], 2), [1, 0]);
        assert_eq!(bank.retrieve(&[-1.0, 0.2], 1), [2]);
        assert_eq!(bank.retrieve(&[1.0, 0.0], 9), [0, 1, 2]);
        let (mut keys, mut labels) = (Vec::new(), Vec::new());
        bank.gather(&[2, 0, 7], &mut keys, &mut labels);
        assert_eq!(labels, [2, 0, 1]);
        assert_eq!(keys, [-1.0, 0.0, 1.0, 0.0, 1.0, 0.1]);
        assert!(bank.push_sentence(&[1.0], &[0]).is_err());
    }

    #[test]
    fn empty_memory_reads_nothing() {
        let p = params(3, 1, 2, 1);
        let mem = AssociatedMemory {
            bank: MemoryBank::empty(p.width()),
            params: p,
        };
        let mut b = vec![1.0; 6];
        let mut off = Vec::new();
        mem.read(
            &[0.5; 6],
            3,
            4,
            &[],
            &mut b,
            &mut off,
            &mut ReadScratch::default(),
        );
        assert_eq!(b, vec![1.0; 6]);
        assert_eq!(off, vec![0.0; 6]);
    }
}
