//! Corpus packs (`*.nerc`): parsed corpora in one compact, checksummed binary file, so that a
//! training run can travel to a machine that does not have the corpus files (a GPU machine
//! lent for a few minutes) and read exactly the sentences it would have read from them.
//!
//! A pack maps keys (chosen by the writer, e.g. `corpus:conll2003:conll2003/train.txt`) to
//! [`Corpus`] values. Words and tags are stored once each in two tables, most frequent first,
//! and sentences as variable-length indices into them, which makes a pack a fraction of the
//! size of its text sources (the 20 files of `configs/default.toml`: 15.9 MB of text, 4.6 MB
//! packed).
//!
//! ```text
//! offset  size  field
//! 0       8     magic "NERCORPS"
//! 8       4     u32 format version (1)
//! 12      4     u32 reserved, 0
//! 16      ...   word table: u32 count, then per word u32 byte length + UTF-8 bytes
//!         ...   tag table: the same layout
//!         ...   u32 entry count, then per entry:
//!                 key and source name (u32 byte length + UTF-8 each),
//!                 u64 repairs,
//!                 u32 document count + u32 first sentence of each document,
//!                 u32 sentence count, then per sentence:
//!                   u32 token count n, n word indices, n tag indices (each a LEB128
//!                   varint: 7 bits per byte, low bits first, high bit set on all but the last),
//!                   u8 has-text flag (0/1) [+ u32 byte length + UTF-8 text]
//! end-32  32    sha256 of every byte before it
//! ```
//!
//! All integers are little-endian. The reader checks the checksum before parsing, then every
//! length against the bytes left and every index against its table, and rebuilds each
//! corpus's type list from its tags: a damaged or hostile file is an [`Error::Input`] naming
//! the file and byte, never a panic or an out-of-bounds read.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use ner_edge::{Error, Result};
use sha2::{Digest, Sha256};

use crate::{Corpus, Sentence};

/// First eight bytes of every corpus pack.
pub const PACK_MAGIC: &[u8; 8] = b"NERCORPS";
/// Format version this crate writes and reads.
pub const PACK_VERSION: u32 = 1;

/// Named corpora, in key order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CorpusPack {
    /// Corpora by key.
    pub entries: BTreeMap<String, Corpus>,
}

impl CorpusPack {
    /// The corpus stored under `key`.
    pub fn get(&self, key: &str) -> Option<&Corpus> {
        self.entries.get(key)
    }

    /// The pack as bytes ([module docs](self) for the layout).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut words = Interner::default();
        let mut tags = Interner::default();
        for corpus in self.entries.values() {
            for s in &corpus.sentences {
                s.tokens.iter().for_each(|w| words.add(w));
                s.tags.iter().for_each(|t| tags.add(t));
            }
        }
        words.order_by_frequency();
        tags.order_by_frequency();
        let mut out = Vec::new();
        out.extend_from_slice(PACK_MAGIC);
        put_u32(&mut out, PACK_VERSION);
        put_u32(&mut out, 0);
        words.write(&mut out);
        tags.write(&mut out);
        put_len(&mut out, self.entries.len());
        for (key, corpus) in &self.entries {
            put_str(&mut out, key);
            put_str(&mut out, &corpus.name);
            out.extend_from_slice(&(corpus.repairs as u64).to_le_bytes());
            put_len(&mut out, corpus.documents.len());
            for &d in &corpus.documents {
                put_len(&mut out, d);
            }
            put_len(&mut out, corpus.sentences.len());
            for s in &corpus.sentences {
                put_len(&mut out, s.tokens.len());
                for w in &s.tokens {
                    put_varint(&mut out, words.index[w.as_str()]);
                }
                for t in &s.tags {
                    put_varint(&mut out, tags.index[t.as_str()]);
                }
                match &s.text {
                    Some(text) => {
                        out.push(1);
                        put_str(&mut out, text);
                    }
                    None => out.push(0),
                }
            }
        }
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        out
    }

    /// Parses a pack; `source` names it in errors.
    pub fn from_bytes(bytes: &[u8], source: &str) -> Result<CorpusPack> {
        let bad = |at: usize, what: &str| Error::Input(format!("{source}: byte {at}: {what}"));
        if bytes.len() < PACK_MAGIC.len() || &bytes[..PACK_MAGIC.len()] != PACK_MAGIC {
            return Err(bad(0, "not a corpus pack (magic NERCORPS missing)"));
        }
        if bytes.len() < 16 + 32 {
            return Err(bad(bytes.len(), "file ends inside the header"));
        }
        let (body, digest) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(body).as_slice() != digest {
            return Err(bad(
                body.len(),
                "sha256 does not match the contents (damaged or truncated file)",
            ));
        }
        let mut r = Reader {
            bytes: body,
            at: PACK_MAGIC.len(),
            source,
        };
        let version = r.u32()?;
        if version != PACK_VERSION {
            return Err(bad(
                8,
                &format!("format version {version}, this build reads {PACK_VERSION}"),
            ));
        }
        r.u32()?;
        let words = r.table("word")?;
        let tags = r.table("tag")?;
        let entries = r.count(8)?;
        let mut pack = CorpusPack::default();
        for _ in 0..entries {
            let key_at = r.at;
            let key = r.string()?;
            let name = r.string()?;
            let repairs = r.u64()?;
            let repairs =
                usize::try_from(repairs).map_err(|_| r.error("repair count too large"))?;
            let n_docs = r.count(4)?;
            let mut documents = Vec::with_capacity(n_docs);
            for _ in 0..n_docs {
                documents.push(r.u32()? as usize);
            }
            let n_sentences = r.count(5)?;
            if documents.windows(2).any(|w| w[0] >= w[1])
                || documents.last().is_some_and(|&d| d >= n_sentences.max(1))
            {
                return Err(bad(
                    key_at,
                    &format!(
                        "entry {key:?}: document starts out of order or past the last sentence"
                    ),
                ));
            }
            let mut sentences = Vec::with_capacity(n_sentences);
            for _ in 0..n_sentences {
                let n = r.count(2)?;
                let mut tokens = Vec::with_capacity(n);
                for _ in 0..n {
                    tokens.push(r.index(&words, "word")?);
                }
                let mut sentence_tags = Vec::with_capacity(n);
                for _ in 0..n {
                    sentence_tags.push(r.index(&tags, "tag")?);
                }
                if let Some(problem) = bio_problem(&sentence_tags) {
                    return Err(r.error(&format!("sentence ending here: {problem}")));
                }
                let text = match r.u8()? {
                    0 => None,
                    1 => Some(r.string()?),
                    f => return Err(r.error(&format!("has-text flag {f}, expected 0 or 1"))),
                };
                sentences.push(Sentence {
                    tokens,
                    tags: sentence_tags,
                    text,
                });
            }
            let mut corpus = Corpus::new(name, sentences, repairs);
            corpus.documents = documents;
            if pack.entries.insert(key.clone(), corpus).is_some() {
                return Err(bad(key_at, &format!("entry {key:?} appears twice")));
            }
        }
        if r.at != body.len() {
            return Err(r.error("bytes after the last entry"));
        }
        Ok(pack)
    }

    /// Reads a pack file.
    pub fn read(path: &Path) -> Result<CorpusPack> {
        let bytes = std::fs::read(path).map_err(|e| Error::io("read corpus pack", path, e))?;
        CorpusPack::from_bytes(&bytes, &path.display().to_string())
    }

    /// Writes the pack to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_bytes()).map_err(|e| Error::io("write corpus pack", path, e))
    }
}

#[derive(Default)]
struct Interner<'a> {
    index: HashMap<&'a str, u32>,
    order: Vec<&'a str>,
    uses: Vec<u64>,
}

impl<'a> Interner<'a> {
    fn add(&mut self, s: &'a str) {
        match self.index.get(s) {
            Some(&i) => self.uses[i as usize] += 1,
            None => {
                self.index.insert(s, self.order.len() as u32);
                self.order.push(s);
                self.uses.push(1);
            }
        }
    }

    /// Renumbers the strings most used first (ties in first-use order), so that the common
    /// ones get one-byte varints.
    fn order_by_frequency(&mut self) {
        let mut rank: Vec<usize> = (0..self.order.len()).collect();
        rank.sort_by_key(|&i| std::cmp::Reverse(self.uses[i]));
        self.order = rank.iter().map(|&i| self.order[i]).collect();
        self.uses = rank.iter().map(|&i| self.uses[i]).collect();
        for (i, s) in self.order.iter().enumerate() {
            self.index.insert(s, i as u32);
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        put_len(out, self.order.len());
        for s in &self.order {
            put_str(out, s);
        }
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    put_u32(
        out,
        u32::try_from(n).expect("corpus pack counts fit in u32"),
    );
}

fn put_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    source: &'a str,
}

impl Reader<'_> {
    fn error(&self, what: &str) -> Error {
        Error::Input(format!("{}: byte {}: {what}", self.source, self.at))
    }

    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.bytes.len() - self.at < n {
            return Err(self.error(&format!(
                "needs {n} bytes, {} are left",
                self.bytes.len() - self.at
            )));
        }
        let s = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A count of items that take at least `min_bytes` each: larger than the bytes left allow
    /// is an error, so no allocation is sized by a hostile count.
    fn count(&mut self, min_bytes: usize) -> Result<usize> {
        let at = self.at;
        let n = self.u32()? as usize;
        if n.saturating_mul(min_bytes) > self.bytes.len() - self.at {
            self.at = at;
            return Err(self.error(&format!("count {n} is larger than the file can hold")));
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String> {
        let n = self.count(1)?;
        let at = self.at;
        let b = self.take(n)?;
        std::str::from_utf8(b).map(str::to_owned).map_err(|e| {
            Error::Input(format!(
                "{}: byte {}: invalid UTF-8 in a string",
                self.source,
                at + e.valid_up_to()
            ))
        })
    }

    fn table(&mut self, what: &str) -> Result<Vec<String>> {
        let n = self.count(4)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.string()?);
        }
        if what == "tag" {
            if let Some(t) = v.iter().find(|t| !is_bio_tag(t)) {
                return Err(self.error(&format!("tag table holds {t:?}, not a BIO tag")));
            }
        }
        Ok(v)
    }

    /// A LEB128 varint of at most 5 bytes that fits in a u32.
    fn varint(&mut self) -> Result<u32> {
        let start = self.at;
        let mut v: u64 = 0;
        for shift in (0..35).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return u32::try_from(v).map_err(|_| {
                    self.at = start;
                    self.error("varint larger than u32")
                });
            }
        }
        self.at = start;
        Err(self.error("varint longer than 5 bytes"))
    }

    fn index(&mut self, table: &[String], what: &str) -> Result<String> {
        let start = self.at;
        let i = self.varint()? as usize;
        match table.get(i) {
            Some(s) => Ok(s.clone()),
            None => {
                self.at = start;
                Err(self.error(&format!(
                    "{what} index {i} past the {what} table ({} entries)",
                    table.len()
                )))
            }
        }
    }
}

/// Why `tags` is not a valid BIO (IOB2) sequence, if it is not.
fn bio_problem(tags: &[String]) -> Option<String> {
    let mut previous: Option<&str> = None;
    for (i, t) in tags.iter().enumerate() {
        if let Some(ty) = t.strip_prefix("I-") {
            if previous != Some(ty) {
                return Some(format!(
                    "tag {} ({t}) does not continue an entity of its type",
                    i + 1
                ));
            }
        }
        previous = t.strip_prefix("B-").or_else(|| t.strip_prefix("I-"));
    }
    None
}

fn is_bio_tag(t: &str) -> bool {
    t == "O"
        || t.strip_prefix("B-")
            .or_else(|| t.strip_prefix("I-"))
            .is_some_and(|ty| !ty.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sentence(words: &[&str], tags: &[&str]) -> Sentence {
        Sentence {
            tokens: words.iter().map(|s| s.to_string()).collect(),
            tags: tags.iter().map(|s| s.to_string()).collect(),
            text: None,
        }
    }

    fn sample() -> CorpusPack {
        let mut a = Corpus::new(
            "a.txt",
            vec![
                sentence(&["EU", "rejects", "German"], &["B-ORG", "O", "B-MISC"]),
                sentence(&["Peter", "Blackburn"], &["B-PER", "I-PER"]),
                sentence(&["Bonn"], &["B-LOC"]),
            ],
            2,
        );
        a.documents = vec![0, 2];
        let mut zh = sentence(&["北", "京"], &["B-address", "I-address"]);
        zh.text = Some("北京".into());
        let b = Corpus::new("b.json", vec![zh], 0);
        let mut pack = CorpusPack::default();
        pack.entries.insert("corpus:a".into(), a);
        pack.entries.insert("validation".into(), b);
        pack
    }

    #[test]
    fn round_trips_corpora_with_documents_text_and_repairs() {
        let pack = sample();
        let bytes = pack.to_bytes();
        let back = CorpusPack::from_bytes(&bytes, "t.nerc").unwrap();
        assert_eq!(back, pack);
        assert_eq!(
            back.get("corpus:a").unwrap().types,
            vec!["LOC", "MISC", "ORG", "PER"]
        );
        assert_eq!(back.get("corpus:a").unwrap().document_of(1), 0..2);
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_an_error_naming_the_file() {
        let bytes = sample().to_bytes();
        for cut in 0..bytes.len() {
            let e = CorpusPack::from_bytes(&bytes[..cut], "t.nerc").unwrap_err();
            assert!(e.to_string().contains("t.nerc: byte "), "{e}");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(CorpusPack::from_bytes(&b, "t.nerc").is_err(), "flip at {i}");
        }
    }

    fn arb_sentence() -> impl Strategy<Value = Sentence> {
        let words = prop::collection::vec("[a-zA-Z0-9é北京\\-]{1,6}", 1..6);
        (
            words,
            prop::collection::vec(0u8..5, 6),
            any::<Option<String>>(),
        )
            .prop_map(|(tokens, kinds, text)| {
                let types = ["PER", "ORG", "x-y"];
                let mut tags = Vec::new();
                let mut open: Option<&str> = None;
                for k in kinds.iter().take(tokens.len()) {
                    let tag = match (k, open) {
                        (0, _) => None,
                        (1, Some(t)) => Some(format!("I-{t}")),
                        (k, _) => Some(format!("B-{}", types[usize::from(*k) % 3])),
                    };
                    open = tag
                        .as_deref()
                        .map(|t| types.iter().copied().find(|ty| t.ends_with(ty)).unwrap());
                    tags.push(tag.unwrap_or_else(|| "O".into()));
                }
                Sentence { tokens, tags, text }
            })
    }

    proptest! {
        #[test]
        fn any_pack_round_trips(
            corpora in prop::collection::btree_map(
                "[a-z:/._]{0,12}",
                (prop::collection::vec(arb_sentence(), 0..6), 0usize..4, any::<bool>()),
                0..4,
            )
        ) {
            let mut pack = CorpusPack::default();
            for (key, (sentences, repairs, docs)) in corpora {
                let n = sentences.len();
                let mut c = Corpus::new(format!("src {key}"), sentences, repairs);
                if docs && n > 0 {
                    c.documents = (0..n).step_by(2).collect();
                }
                pack.entries.insert(key, c);
            }
            let back = CorpusPack::from_bytes(&pack.to_bytes(), "p.nerc").unwrap();
            prop_assert_eq!(back, pack);
        }

        #[test]
        fn arbitrary_bytes_after_the_magic_never_panic(tail in prop::collection::vec(any::<u8>(), 0..200)) {
            let mut body = PACK_MAGIC.to_vec();
            body.extend_from_slice(&tail);
            let d = Sha256::digest(&body);
            body.extend_from_slice(&d);
            let _ = CorpusPack::from_bytes(&body, "r.nerc");
        }
    }

    #[test]
    fn tables_of_any_size_round_trip_through_multi_byte_indices() {
        let tokens: Vec<String> = (0..40_000).map(|i| format!("w{i}")).collect();
        let tags = vec!["O".to_string(); tokens.len()];
        let corpus = Corpus::new(
            "big",
            vec![Sentence {
                tokens,
                tags,
                text: None,
            }],
            0,
        );
        let mut pack = CorpusPack::default();
        pack.entries.insert("big".into(), corpus);
        let bytes = pack.to_bytes();
        assert_eq!(CorpusPack::from_bytes(&bytes, "b.nerc").unwrap(), pack);
        for v in [0u32, 127, 128, 16_383, 16_384, u32::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            let mut r = Reader {
                bytes: &b,
                at: 0,
                source: "v",
            };
            assert_eq!(r.varint().unwrap(), v);
            assert_eq!(r.at, b.len());
        }
        let mut r = Reader {
            bytes: &[0xff, 0xff, 0xff, 0xff, 0x7f],
            at: 0,
            source: "v",
        };
        assert!(r
            .varint()
            .unwrap_err()
            .to_string()
            .contains("larger than u32"));
    }

    /// A file whose checksum is valid but whose counts and indices lie is refused by the
    /// structural checks (the checksum is not a defence against a hostile writer).
    #[test]
    fn lying_counts_and_indices_with_a_valid_checksum_are_refused() {
        let pack = sample();
        let body_len = pack.to_bytes().len() - 32;
        let reseal = |mut body: Vec<u8>| {
            let d = Sha256::digest(&body);
            body.extend_from_slice(&d);
            body
        };
        let body = pack.to_bytes()[..body_len].to_vec();
        let mut huge_words = body.clone();
        huge_words[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        let e = CorpusPack::from_bytes(&reseal(huge_words), "h.nerc").unwrap_err();
        assert!(e.to_string().contains("byte 16: count"), "{e}");

        let mut v2 = body.clone();
        v2[8] = 2;
        let e = CorpusPack::from_bytes(&reseal(v2), "v.nerc").unwrap_err();
        assert!(e.to_string().contains("format version 2"), "{e}");

        let mut extra = body;
        extra.push(0);
        let e = CorpusPack::from_bytes(&reseal(extra), "x.nerc").unwrap_err();
        assert!(e.to_string().contains("bytes after the last entry"), "{e}");
    }
}
