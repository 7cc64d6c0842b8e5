//! Training data: corpora read and filtered by length, their content hash, and episodes turned
//! into the model's inputs (piece ids with `[CLS]`/`[SEP]`, first piece of each word, label
//! indices).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use ner_edge::tokenizer::Tokenizer;
use ner_edge_corpus::{read_corpus, Corpus, CorpusPack, Episode, Sentence};
use sha2::{Digest, Sha256};

use super::config::{DataConfig, TrainConfig};

/// Where a run reads the corpus files its config names: from the disk, or from a corpus pack
/// written by `ner-train pack-corpora` ([`pack_config`]) for a machine without the files.
#[derive(Clone, Debug, Default)]
pub enum CorpusFiles {
    /// Each file from its path.
    #[default]
    Disk,
    /// Each file from the pack, by its [`corpus_key`] (or [`VALIDATION_SUPERVISED_KEY`],
    /// [`VALIDATION_SAMPLED_KEY`]).
    Pack(CorpusPack),
}

/// Pack key of the supervised validation corpus (`data.validation_supervised`).
pub const VALIDATION_SUPERVISED_KEY: &str = "validation:supervised";
/// Pack key of the corpus validation episodes are sampled from (`data.validation_sampled`).
pub const VALIDATION_SAMPLED_KEY: &str = "validation:sampled";

/// Pack key of file `rel` (as written in the config, relative to `data_root`) of the training
/// corpus named `name`.
pub fn corpus_key(name: &str, rel: &Path) -> String {
    format!("corpus:{name}:{}", rel.display())
}

impl CorpusFiles {
    /// The corpus of `path` (from the disk) or of `key` (taken out of the pack: a run reads
    /// each entry once, so nothing is copied).
    pub fn read(&mut self, key: &str, path: &Path) -> Result<Corpus> {
        match self {
            CorpusFiles::Disk => {
                if !path.exists() {
                    bail!("{} does not exist", path.display());
                }
                let corpus = if path.extension().is_some_and(|e| e == "json") {
                    ner_edge_corpus::read_cluener(path, ner_edge_corpus::Overlaps::KeepLongest)
                } else {
                    read_corpus(path)
                };
                corpus.with_context(|| format!("reading {}", path.display()))
            }
            CorpusFiles::Pack(pack) => pack.entries.remove(key).with_context(|| {
                format!(
                    "the corpus pack has no entry {key:?} (for {}, or it was read already); \
                     pack the corpora again with `ner-train pack-corpora` from this config",
                    path.display()
                )
            }),
        }
    }
}

/// Every corpus file `config` reads (training corpora, supervised and sampled validation
/// corpora), parsed, in one pack. JSONL validation episodes (`data.validation`) are not
/// packed: a config with them is refused.
pub fn pack_config(config: &TrainConfig) -> Result<CorpusPack> {
    let data = &config.data;
    if let Some(v) = &data.validation {
        bail!(
            "data.validation ({}) is a JSONL episode file, which corpus packs do not carry; \
             use data.validation_sampled or data.validation_supervised",
            v.display()
        );
    }
    let mut pack = CorpusPack::default();
    for entry in &data.corpora {
        for rel in &entry.paths {
            let corpus = CorpusFiles::Disk
                .read("", &data.data_root.join(rel))
                .with_context(|| format!("corpus {:?}", entry.name))?;
            pack.entries.insert(corpus_key(&entry.name, rel), corpus);
        }
    }
    if let Some(path) = &data.validation_supervised {
        let corpus = CorpusFiles::Disk
            .read("", path)
            .context("validation_supervised")?;
        pack.entries
            .insert(VALIDATION_SUPERVISED_KEY.into(), corpus);
    }
    if let Some(v) = &data.validation_sampled {
        let corpus = CorpusFiles::Disk
            .read("", &v.path)
            .context("validation_sampled")?;
        pack.entries.insert(VALIDATION_SAMPLED_KEY.into(), corpus);
    }
    Ok(pack)
}

/// The training corpora after filtering, with what was left out.
#[derive(Clone, Debug)]
pub struct TrainingData {
    /// One corpus per config entry, named by the entry's `name`.
    pub corpora: Vec<Corpus>,
    /// Sentences left out per corpus (too many pieces, or no entity-bearing tokens at all is
    /// *not* a reason: entity-free sentences stay, they are useful `O` context).
    pub dropped: Vec<usize>,
    /// sha256 (hex) over every kept sentence: corpus name, tokens and tags.
    pub sha256: String,
}

/// Reads every corpus of `config` from the disk, drops sentences whose piece count (without
/// `[CLS]`/`[SEP]`) exceeds `config.max_pieces`, and hashes what is kept.
pub fn load(config: &DataConfig, tokenizer: &Tokenizer) -> Result<TrainingData> {
    load_from(config, tokenizer, &mut CorpusFiles::Disk)
}

/// [`load`] with the corpus files read from `files`: the same files give the same
/// [`TrainingData`] (sentences and `sha256`) from the disk and from their pack.
pub fn load_from(
    config: &DataConfig,
    tokenizer: &Tokenizer,
    files: &mut CorpusFiles,
) -> Result<TrainingData> {
    let mut corpora = Vec::with_capacity(config.corpora.len());
    let mut dropped = Vec::with_capacity(config.corpora.len());
    let mut hasher = Sha256::new();
    for entry in &config.corpora {
        let mut sentences = Vec::new();
        let mut repairs = 0;
        for rel in &entry.paths {
            let path = config.data_root.join(rel);
            let corpus = files
                .read(&corpus_key(&entry.name, rel), &path)
                .with_context(|| {
                    format!(
                        "corpus {:?} (data_root is {})",
                        entry.name,
                        config.data_root.display()
                    )
                })?;
            repairs += corpus.repairs;
            sentences.extend(corpus.sentences);
        }
        if tokenizer.as_unigram().is_some() {
            let lost = align_to_units(&mut sentences, tokenizer);
            if lost > 0 {
                eprintln!(
                    "corpus {:?}: {lost} entities cannot be told apart at the tokenizer's \
                     units (several starting in one unit) and were dropped",
                    entry.name
                );
            }
        }
        let before = sentences.len();
        let kept: Vec<Sentence> = sentences
            .into_iter()
            .filter(|s| !s.tokens.is_empty() && piece_count(tokenizer, s) <= config.max_pieces)
            .collect();
        dropped.push(before - kept.len());
        hasher.update(entry.name.as_bytes());
        hasher.update([0u8]);
        for s in &kept {
            for (tok, tag) in s.tokens.iter().zip(&s.tags) {
                hasher.update(tok.as_bytes());
                hasher.update([0x1f]);
                hasher.update(tag.as_bytes());
                hasher.update([0x1e]);
            }
            hasher.update([0x1d]);
        }
        corpora.push(Corpus::new(entry.name.clone(), kept, repairs));
    }
    let sha256 = hex(&hasher.finalize());
    Ok(TrainingData {
        corpora,
        dropped,
        sha256,
    })
}

/// Rewrites the char tags of every char-level sentence to what its unit tags
/// ([`sentence_encoding`]) say, so that episode sampling counts exactly the entities training
/// sees; returns how many entities that dropped.
fn align_to_units(sentences: &mut [Sentence], tokenizer: &Tokenizer) -> usize {
    let mut lost = 0;
    for s in sentences.iter_mut() {
        let Some(text) = s.char_level_text() else {
            continue;
        };
        let (enc, unit_tags) = sentence_encoding(s, tokenizer);
        let tags = Sentence::char_tags(text, &enc.words, &unit_tags);
        let before = s.entity_count();
        s.tags = tags;
        lost += before.saturating_sub(s.entity_count());
    }
    lost
}

fn piece_count(tokenizer: &Tokenizer, s: &Sentence) -> usize {
    sentence_encoding(s, tokenizer).0.ids.len()
}

/// The encoding of a sentence and the tag of each of its words. Word-level sentences, and
/// every sentence for WordPiece, are encoded word by word ([`Tokenizer::encode_words`]) with
/// their own tags. A char-level sentence under a unigram tokenizer is encoded from its text,
/// as `predict` sees it ([`Tokenizer::encode`]: ideographs alone, other chars in `▁`-units),
/// and each unit takes the first `B-` tag among its chars, else its first char's tag; an `I-`
/// unit after a unit of another type or `O` becomes `B-`.
pub(crate) fn sentence_encoding<'s>(
    s: &'s Sentence,
    tokenizer: &Tokenizer,
) -> (
    ner_edge::tokenizer::Encoding,
    std::borrow::Cow<'s, [String]>,
) {
    if let (Some(_), Some(text)) = (tokenizer.as_unigram(), s.char_level_text()) {
        let enc = tokenizer.encode(text);
        let starts: Vec<usize> = text.char_indices().map(|(b, _)| b).collect();
        let char_of = |byte: usize| starts.partition_point(|&b| b < byte).min(s.tags.len());
        let mut tags: Vec<String> = Vec::with_capacity(enc.words.len());
        for word in &enc.words {
            let inside = &s.tags[char_of(word.start)..char_of(word.end).max(char_of(word.start))];
            let mut tag = inside.first().cloned().unwrap_or_else(|| "O".into());
            if let Some(b) = inside.iter().find(|t| t.starts_with("B-")) {
                tag = b.clone();
            }
            if let Some(ty) = tag.strip_prefix("I-") {
                let continues = tags
                    .last()
                    .and_then(|p| p.get(2..))
                    .is_some_and(|prev| prev == ty);
                if !continues {
                    tag = format!("B-{ty}");
                }
            }
            tags.push(tag);
        }
        return (enc, std::borrow::Cow::Owned(tags));
    }
    let words: Vec<&str> = s.tokens.iter().map(String::as_str).collect();
    (
        tokenizer.encode_words(&words),
        std::borrow::Cow::Borrowed(&s.tags),
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One sentence as the encoder and the losses see it.
#[derive(Clone, Debug, PartialEq)]
pub struct EncodedSentence {
    /// `[CLS] pieces [SEP]`.
    pub ids: Vec<u32>,
    /// Word-shape id of each entry of `ids` (0 for `[CLS]` and `[SEP]`).
    pub shapes: Vec<u8>,
    /// Index into `ids` of the first piece of each word (so never 0, the `[CLS]`).
    pub first_piece: Vec<usize>,
    /// Label of each word in the layout of `ner_edge::decode::labels` for the episode's types.
    pub labels: Vec<usize>,
}

/// An episode ready for the model: its types (label `1 + 2k` is `B-types[k]`; entities tagged
/// with [`crate::episodes::OTHER_TAG`] get type `types.len()`), the corpus it came from, and
/// encoded support and query sentences.
#[derive(Clone, Debug, PartialEq)]
pub struct EncodedEpisode {
    /// Name of the corpus it was drawn from (its label-memory slots' source).
    pub source: String,
    /// The episode's N types; type `k` is labelled `1 + 2k` (B), `2 + 2k` (I).
    pub types: Vec<String>,
    /// Support sentences.
    pub support: Vec<EncodedSentence>,
    /// Query sentences.
    pub query: Vec<EncodedSentence>,
}

/// Encodes an episode. Fails when a tag is not `O`, `B-T` or `I-T` for a type `T` of the
/// episode or the reserved [`crate::episodes::OTHER_TAG`], naming the sentence and word.
pub fn encode_episode(ep: &Episode, tokenizer: &Tokenizer) -> Result<EncodedEpisode> {
    let mut index: BTreeMap<&str, usize> = ep
        .types
        .iter()
        .enumerate()
        .map(|(k, t)| (t.as_str(), k))
        .collect();
    index
        .entry(crate::episodes::OTHER_TAG)
        .or_insert(ep.types.len());
    let encode_set = |set: &[Sentence], what: &str| -> Result<Vec<EncodedSentence>> {
        set.iter()
            .enumerate()
            .map(|(i, s)| {
                encode_sentence(s, tokenizer, &index)
                    .with_context(|| format!("{what} sentence {}", i + 1))
            })
            .collect()
    };
    Ok(EncodedEpisode {
        source: ep.domain.clone(),
        types: ep.types.clone(),
        support: encode_set(&ep.support, "support")?,
        query: encode_set(&ep.query, "query")?,
    })
}

/// Encodes one sentence with the label of each tag from `index` (type name → type index;
/// `O` is label 0); a tag naming a type outside `index` is an error.
pub(crate) fn encode_sentence(
    s: &Sentence,
    tokenizer: &Tokenizer,
    index: &BTreeMap<&str, usize>,
) -> Result<EncodedSentence> {
    let (enc, tags) = sentence_encoding(s, tokenizer);
    let mut ids = Vec::with_capacity(enc.ids.len() + 2);
    ids.push(tokenizer.cls_id());
    ids.extend_from_slice(&enc.ids);
    ids.push(tokenizer.sep_id());
    let mut shapes = Vec::with_capacity(ids.len());
    shapes.push(0);
    shapes.extend_from_slice(&enc.shapes);
    shapes.push(0);
    let first_piece = enc
        .word_first_piece
        .iter()
        .map(|&p| p as usize + 1)
        .collect();
    let labels = tags
        .iter()
        .enumerate()
        .map(|(w, tag)| label_index(tag, index).with_context(|| format!("word {}", w + 1)))
        .collect::<Result<Vec<usize>>>()?;
    Ok(EncodedSentence {
        ids,
        shapes,
        first_piece,
        labels,
    })
}

fn label_index(tag: &str, index: &BTreeMap<&str, usize>) -> Result<usize> {
    if tag == "O" {
        return Ok(0);
    }
    let (offset, name) = if let Some(t) = tag.strip_prefix("B-") {
        (1, t)
    } else if let Some(t) = tag.strip_prefix("I-") {
        (2, t)
    } else {
        bail!("tag {tag:?} is not O, B-TYPE or I-TYPE");
    };
    match index.get(name) {
        Some(&k) => Ok(1 + 2 * k + offset - 1),
        None => bail!("tag {tag:?} names a type outside the episode"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ner_edge::tokenizer::bert_uncased_meta;

    fn tokenizer() -> Tokenizer {
        Tokenizer::new(&bert_uncased_meta(), crate::export::fixture::MINILM_VOCAB).unwrap()
    }

    fn xlmr_fixture_tokenizer() -> Tokenizer {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tokenizer/xlmr");
        let (lines, meta, charsmap) = crate::train::meta::encoder_vocabulary(&dir).unwrap();
        Tokenizer::from_parts(&meta, &lines, charsmap.as_deref()).unwrap()
    }

    #[test]
    fn char_level_sentences_are_labelled_by_unigram_units_and_map_back() {
        let text = "苹果公司CEO蒂姆 访问北京";
        let tags = [
            "B-company",
            "I-company",
            "I-company",
            "I-company",
            "B-position",
            "I-position",
            "I-position",
            "B-name",
            "I-name",
            "O",
            "O",
            "O",
            "B-address",
            "I-address",
        ];
        let s = Sentence {
            tokens: text.chars().map(String::from).collect(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            text: Some(text.to_string()),
        };
        assert_eq!(s.char_level_text(), Some(text));
        let tok = xlmr_fixture_tokenizer();
        let (enc, unit_tags) = sentence_encoding(&s, &tok);
        let words: Vec<&str> = enc.words.iter().map(|r| &text[r.clone()]).collect();
        assert_eq!(
            words,
            ["苹", "果", "公", "司", "CEO", "蒂", "姆", "访", "问", "北", "京"]
        );
        assert_eq!(
            unit_tags.as_ref(),
            [
                "B-company",
                "I-company",
                "I-company",
                "I-company",
                "B-position",
                "B-name",
                "I-name",
                "O",
                "O",
                "B-address",
                "I-address"
            ]
        );
        assert_eq!(Sentence::char_tags(text, &enc.words, &unit_tags), tags);
        let index: BTreeMap<&str, usize> =
            [("company", 0), ("position", 1), ("name", 2), ("address", 3)]
                .into_iter()
                .collect();
        let encoded = encode_sentence(&s, &tok, &index).unwrap();
        assert_eq!(encoded.labels.len(), 11);
        assert_eq!(encoded.first_piece.len(), 11);
        assert_eq!(encoded.ids[0], tok.cls_id());
        let bert = tokenizer();
        assert_eq!(
            sentence_encoding(&s, &bert).0.words.len(),
            14,
            "WordPiece keeps the chars"
        );
    }

    proptest::proptest! {
        /// After `align_to_units`, char tags → unit tags → char tags is the identity, so the
        /// entities sampling counts are exactly the ones training sees; and the unit tags are
        /// a valid BIO sequence with one label per word.
        #[test]
        fn unit_alignment_is_a_fixed_point(
            picks in proptest::collection::vec((0usize..12, 0usize..4), 1..30)
        ) {
            const CHARS: [&str; 12] = ["北", "京", "大", "学", "C", "E", "O", " ", "《", "》", "1", "。"];
            const TAGS: [&str; 4] = ["O", "B-name", "I-name", "B-book"];
            let text: String = picks.iter().map(|&(c, _)| CHARS[c]).collect();
            let mut tags: Vec<String> = Vec::new();
            for &(_, t) in &picks {
                let tag = TAGS[t];
                let valid = if let Some(ty) = tag.strip_prefix("I-") {
                    tags.last().is_some_and(|p| p.get(2..) == Some(ty))
                } else {
                    true
                };
                tags.push(if valid { tag.to_string() } else { format!("B-{}", &tag[2..]) });
            }
            let tok = xlmr_fixture_tokenizer();
            let mut sentences = vec![Sentence {
                tokens: text.chars().map(String::from).collect(),
                tags,
                text: Some(text.clone()),
            }];
            align_to_units(&mut sentences, &tok);
            let s = &sentences[0];
            let (enc, unit_tags) = sentence_encoding(s, &tok);
            proptest::prop_assert_eq!(unit_tags.len(), enc.words.len());
            for (k, t) in unit_tags.iter().enumerate() {
                if let Some(ty) = t.strip_prefix("I-") {
                    proptest::prop_assert!(k > 0 && unit_tags[k - 1].get(2..) == Some(ty));
                }
            }
            proptest::prop_assert_eq!(&Sentence::char_tags(&text, &enc.words, &unit_tags), &s.tags);
            let mut again = sentences.clone();
            proptest::prop_assert_eq!(align_to_units(&mut again, &tok), 0);
            proptest::prop_assert_eq!(&again, &sentences);
        }
    }

    fn sentence(tokens: &[&str], tags: &[&str]) -> Sentence {
        Sentence {
            tokens: tokens.iter().map(|s| s.to_string()).collect(),
            tags: tags.iter().map(|s| s.to_string()).collect(),
            text: None,
        }
    }

    #[test]
    fn episodes_encode_to_pieces_first_pieces_and_labels() {
        let ep = Episode {
            domain: "toy".into(),
            support: vec![sentence(
                &["Aspirin", "helps", "Jean-Luc", "Picard"],
                &["B-drug", "O", "B-person", "I-person"],
            )],
            query: vec![sentence(&["ok"], &["O"])],
            types: vec!["drug".into(), "person".into()],
            repairs: 0,
        };
        let tok = tokenizer();
        let e = encode_episode(&ep, &tok).unwrap();
        let s = &e.support[0];
        assert_eq!(s.labels, vec![1, 0, 3, 4]);
        assert_eq!(s.ids[0], tok.cls_id());
        assert_eq!(*s.ids.last().unwrap(), tok.sep_id());
        assert_eq!(s.first_piece.len(), 4);
        assert_eq!(s.first_piece[0], 1);
        assert!(s.first_piece.windows(2).all(|w| w[0] < w[1]));
        assert!(
            s.first_piece[3] > s.first_piece[2] + 1,
            "Jean-Luc has several pieces"
        );
        assert_eq!(e.query[0].labels, vec![0]);
    }

    #[test]
    fn foreign_types_are_refused_with_position() {
        let ep = Episode {
            domain: String::new(),
            support: vec![],
            query: vec![sentence(&["a", "b"], &["O", "B-x"])],
            types: vec!["y".into()],
            repairs: 0,
        };
        let err = format!("{:#}", encode_episode(&ep, &tokenizer()).unwrap_err());
        assert!(
            err.contains("query sentence 1") && err.contains("word 2"),
            "{err}"
        );
    }
}
