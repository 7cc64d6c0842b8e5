//! Training and evaluation data for ner-edge: readers for the labelled NER corpora in
//! `shared/data` (see its `SOURCES.md`) and entity-level [`metrics`].
//!
//! This crate is the data side of the workspace, used by the trainer (`ner-edge-trainer`), the
//! tools (`ner-tools eval`, `bench-quality`, episode sampling) and tests; the shipped `ner-edge`
//! binary does not contain it. What `ner-edge adapt` needs to read a support set stays in the
//! runtime, under `ner_edge::adapt`, and this crate builds on it rather than copying it: tag
//! schemes, BIO conversion and repair ([`normalize_tags`], [`TagScheme`], re-exported from
//! `ner_edge::adapt::bio`), the labelled [`Sentence`] (re-exported from
//! `ner_edge::adapt::columns`, so a corpus sentence can be passed to
//! `ner_edge::adapt::Adapter::adapt_tokens` as it is), the token-per-line parsers behind
//! [`read_conll2003`], [`read_token_tag`] and [`read_mit`], and the chunking of tags into
//! entities that [`metrics`] scores with.
//!
//! Every reader turns one file (or one `seq.in`/`seq.out` directory) into a [`Corpus`] of
//! [`Sentence`]s whose tags are valid BIO (IOB2): `O`, `B-TYPE` or `I-TYPE`, where an `I-TYPE`
//! always follows `B-TYPE` or `I-TYPE` of the same type. Source tags in other schemes are
//! converted (see [`TagScheme`]) and stray `I-` tags are repaired to `B-`; [`Corpus::repairs`]
//! counts every such correction.
//!
//! | format | reader | used by |
//! |---|---|---|
//! | `token POS chunk NER` | [`read_conll2003`] | CoNLL-2003 |
//! | `token<TAB>tag` | [`read_token_tag`] | CrossNER, Twitter-2015/2017, CONTaiNER support sets, Few-NERD (IO) |
//! | `word tag`, split on the last space or tab | [`read_mit`] | MIT Movie, MIT Restaurant |
//! | line-aligned `seq.in` / `seq.out` | [`read_seq_dir`] | ATIS, SNIPS |
//! | JSON lines with char spans | [`read_cluener`] | CLUENER2020 |
//! | episode JSON | [`read_hou_episodes`] | Hou et al. 2020 few-shot episodes |
//! | corpus pack (`*.nerc`, binary) | [`CorpusPack::read`] | `ner-train pack-corpora` output |
//!
//! [`read_corpus`] picks the reader from the path and contents. Every `read_*` function has a
//! `parse_*` twin that takes the text and a source name instead of a path.
//!
//! Errors are [`Error::Input`] messages of the form `SOURCE: line N: what is wrong`, with `N`
//! counted from 1, or [`Error::Io`] when a file cannot be read. No reader panics on bad input.

mod cluener;
mod columns;
mod conll;
pub mod context;
mod hou_episodes;
pub mod metrics;
pub mod pack;
mod seq_files;

use std::collections::BTreeSet;
use std::path::Path;

use ner_edge::adapt::columns::{
    decode_utf8, input_error, is_docstart, is_imgid_line, numbered_lines, tab_tags, Labelled,
};
use ner_edge::{Error, Result};

pub use cluener::{parse_cluener, read_cluener, Overlaps};
pub use columns::{parse_mit, parse_token_tag, read_mit, read_token_tag};
pub use conll::{parse_conll2003, read_conll2003};
pub use hou_episodes::{parse_hou_episodes, read_hou_episodes};
pub use ner_edge::adapt::bio::{
    bioes_to_bio, io_to_bio, normalize_tags, Normalized, TagError, TagScheme,
};
pub use ner_edge::adapt::columns::Sentence;
pub use pack::CorpusPack;
pub use seq_files::{parse_seq_files, read_seq_dir};

/// A labelled corpus read from one source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corpus {
    /// The source it was read from: the path as given, or the `source` of a `parse_*` call.
    pub name: String,
    /// The sentences in source order.
    pub sentences: Vec<Sentence>,
    /// Sorted distinct entity types that occur in `sentences` (empty for unlabelled data).
    pub types: Vec<String>,
    /// Number of corrections made to the source labels: stray `I-X` tags turned into `B-X`
    /// (after O, after another type, or at sentence start) and, for CLUENER read with
    /// [`Overlaps::KeepLongest`], nested spans dropped. 0 means the labels were used as-is.
    pub repairs: usize,
    /// Index in `sentences` of the first sentence of each document marked by a `-DOCSTART-`
    /// line (CoNLL-2003), in order; empty when the source marks no documents.
    pub documents: Vec<usize>,
}

impl Corpus {
    /// Builds a corpus, computing [`Corpus::types`] from the tags of `sentences`.
    pub fn new(name: impl Into<String>, sentences: Vec<Sentence>, repairs: usize) -> Self {
        let types = distinct_types(&sentences);
        Corpus {
            name: name.into(),
            sentences,
            types,
            repairs,
            documents: Vec::new(),
        }
    }

    /// A corpus of the sentences the runtime's column parsers read from `name`.
    pub(crate) fn from_labelled(name: &str, labelled: Labelled) -> Self {
        let mut corpus = Corpus::new(name, labelled.sentences, labelled.repairs);
        corpus.documents = labelled.documents;
        corpus
    }

    /// The sentence range of the document that holds sentence `i`: between the document
    /// starts around it ([`Corpus::documents`]), the whole corpus when it marks none.
    pub fn document_of(&self, i: usize) -> std::ops::Range<usize> {
        let after = self.documents.partition_point(|&d| d <= i);
        let start = if after == 0 {
            0
        } else {
            self.documents[after - 1]
        };
        let end = self
            .documents
            .get(after)
            .copied()
            .unwrap_or(self.sentences.len());
        start..end
    }

    /// Number of tokens over all sentences.
    pub fn token_count(&self) -> usize {
        self.sentences.iter().map(|s| s.tokens.len()).sum()
    }

    /// Number of entities (`B-` tags) over all sentences.
    pub fn entity_count(&self) -> usize {
        self.sentences.iter().map(Sentence::entity_count).sum()
    }
}

/// One few-shot episode: labelled support sentences and the query sentences to tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Episode {
    /// The domain the episode belongs to (the top-level key of the episode file).
    pub domain: String,
    /// Support (training) sentences.
    pub support: Vec<Sentence>,
    /// Query (test) sentences; called `batch` in the Hou et al. files.
    pub query: Vec<Sentence>,
    /// Sorted distinct entity types occurring in the support or query sentences.
    pub types: Vec<String>,
    /// Stray `I-` tags repaired to `B-` in this episode (see [`Corpus::repairs`]).
    pub repairs: usize,
}

/// Reads a corpus, choosing the reader from the path and the contents:
///
/// * a directory holding `seq.in` → [`read_seq_dir`];
/// * a file whose first non-blank line starts with `{`: CLUENER records (objects with a
///   `"text"` member) → [`read_cluener`] with [`Overlaps::Error`]; anything else (such as an
///   episode file, which has no single corpus; use [`read_hou_episodes`]) is an error;
/// * a file whose first token line has a TAB → [`read_token_tag`], with the scheme found by
///   [`TagScheme::detect`] over the whole file (Few-NERD gives [`TagScheme::Io`]);
/// * a file whose first token line has 4 space-separated columns → [`read_conll2003`];
/// * a file whose first token line has 2 space-separated fields → [`read_mit`].
///
/// The first token line is the first line that is not blank, `-DOCSTART-` or `IMGID:`. A file
/// without one is an empty corpus; anything else is an [`Error::Input`] naming that line.
pub fn read_corpus(path: &Path) -> Result<Corpus> {
    if path.is_dir() {
        if path.join("seq.in").is_file() {
            return read_seq_dir(path);
        }
        return Err(Error::Input(format!(
            "{}: directory without seq.in; cannot detect the corpus format",
            path.display()
        )));
    }
    let text = read_text(path)?;
    let source = path.display().to_string();
    let Some((line_no, first)) = numbered_lines(&text)
        .find(|(_, l)| !l.trim_ascii().is_empty() && !is_imgid_line(l) && !is_docstart(l))
    else {
        return Ok(Corpus::new(source, Vec::new(), 0));
    };
    if first.trim_ascii_start().starts_with('{') {
        return if cluener::looks_like_record(first) {
            parse_cluener(&text, &source, Overlaps::Error)
        } else {
            Err(input_error(
                &source,
                line_no,
                "JSON that is not a CLUENER record; episode files are read with read_hou_episodes",
            ))
        };
    }
    if first.contains('\t') {
        let scheme = TagScheme::detect(tab_tags(&text));
        return parse_token_tag(&text, &source, scheme);
    }
    let fields = first.split_ascii_whitespace().count();
    if fields == 4 {
        return parse_conll2003(&text, &source);
    }
    if fields == 2 {
        return parse_mit(&text, &source);
    }
    Err(input_error(
        &source,
        line_no,
        format!("cannot detect the corpus format from {fields} space-separated fields"),
    ))
}

/// Reads `path` as UTF-8, without a leading byte-order mark.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
    let mut text = decode_utf8(bytes, &path.display().to_string())?;
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok(text)
}

/// Sorted distinct types of the BIO tags in `sentences`.
pub(crate) fn distinct_types<'a>(sentences: impl IntoIterator<Item = &'a Sentence>) -> Vec<String> {
    let mut types: BTreeSet<&str> = BTreeSet::new();
    for sentence in sentences {
        for tag in &sentence.tags {
            if let Some(ty) = tag.strip_prefix("B-") {
                types.insert(ty);
            }
        }
    }
    types.into_iter().map(str::to_string).collect()
}

/// An [`Error::Input`] for a serde_json error at 1-based `line` and `column` of `source`.
pub(crate) fn json_error(source: &str, line: usize, column: usize, e: &serde_json::Error) -> Error {
    let message = e.to_string();
    let message = message
        .rfind(" at line ")
        .map_or(message.as_str(), |at| &message[..at]);
    let what = if e.is_data() {
        "unexpected JSON content"
    } else {
        "invalid JSON"
    };
    Error::Input(format!(
        "{source}: line {line}, column {column}: {what}: {message}"
    ))
}

/// The message of an [`Error::Input`]; panics on anything else (tests only).
#[cfg(test)]
pub(crate) fn input_error_message(result: Result<Corpus>) -> String {
    match result {
        Err(crate::Error::Input(m)) => m,
        other => panic!("expected an input error, got {other:?}"),
    }
}

#[cfg(test)]
pub(crate) fn fixture(relative: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/corpus")
        .join(relative)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input_message(result: Result<Corpus>) -> String {
        match result {
            Err(Error::Input(m)) => m,
            other => panic!("expected an input error, got {other:?}"),
        }
    }

    #[test]
    fn read_corpus_dispatches_every_fixture_format() {
        let cases = [
            ("conll2003/sample.txt", 3, 4),
            ("token_tag/crossner_politics.txt", 2, 4),
            ("token_tag/twitter2015.txt", 3, 2),
            ("token_tag/fewnerd_inter.txt", 2, 3),
            ("mit/engtrain.bio.txt", 3, 2),
            ("mit/trivia10k13train.bio.txt", 2, 5),
            ("seq/snips", 3, 9),
            ("cluener/dev.json", 3, 4),
        ];
        for (path, sentences, types) in cases {
            let corpus = read_corpus(&fixture(path)).unwrap();
            assert_eq!(corpus.sentences.len(), sentences, "{path}");
            assert_eq!(corpus.types.len(), types, "{path}: {:?}", corpus.types);
        }
    }

    #[test]
    fn read_corpus_detects_io_tags() {
        let corpus = read_corpus(&fixture("token_tag/fewnerd_inter.txt")).unwrap();
        assert!(corpus.types.contains(&"person-scholar".to_string()));
        assert!(corpus
            .sentences
            .iter()
            .flat_map(|s| &s.tags)
            .all(|t| t == "O" || t.starts_with("B-") || t.starts_with("I-")));
    }

    #[test]
    fn read_corpus_skips_docstart_before_detecting() {
        let corpus = read_corpus(&fixture("token_tag/docstart.tsv")).unwrap();
        assert_eq!(corpus.sentences.len(), 2);
        assert_eq!(corpus.sentences[1].tokens, ["Peter", "Blackburn"]);
        assert_eq!(corpus.types, ["ORG", "PER"]);
    }

    #[test]
    fn read_corpus_refuses_episode_files_and_unknown_layouts() {
        let m = input_message(read_corpus(&fixture("hou/news_1shot.json")));
        assert!(
            m.contains("news_1shot.json: line 1:") && m.contains("read_hou_episodes"),
            "{m}"
        );
        let m = input_message(read_corpus(&fixture("bad/three_fields.txt")));
        assert!(m.contains("three_fields.txt: line 2:"), "{m}");
        let m = input_message(read_corpus(&fixture("seq")));
        assert!(m.contains("without seq.in"), "{m}");
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let m = input_message(read_corpus(&fixture("bad/latin1.txt")));
        assert!(m.contains("latin1.txt: line 3: invalid UTF-8"), "{m}");
    }

    #[test]
    fn missing_file_is_an_io_error() {
        let err = read_corpus(&fixture("no/such/file.txt")).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert!(err.to_string().contains("file.txt"));
    }
}
