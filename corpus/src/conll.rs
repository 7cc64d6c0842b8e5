//! CoNLL-2003: `token POS chunk NER`, blank-line-separated sentences, read with the runtime's
//! column parser ([`ner_edge::adapt::columns::parse_conll2003`]).

use std::path::Path;

use ner_edge::adapt::columns;
use ner_edge::Result;

use super::{read_text, Corpus};

/// Reads a CoNLL-2003 file: one token per line as 4 fields separated by ASCII whitespace
/// (`token POS chunk NER`), sentences separated by blank lines, `-DOCSTART-` lines skipped.
///
/// The NER column is read as [`TagScheme::Bio`](crate::TagScheme::Bio); original IOB1 files
/// therefore come out as IOB2, with every `I-` that starts an entity counted in
/// [`Corpus::repairs`]. A line with another number of fields is an error.
pub fn read_conll2003(path: &Path) -> Result<Corpus> {
    parse_conll2003(&read_text(path)?, &path.display().to_string())
}

/// [`read_conll2003`] on the text of a file; `source` names it in errors and in [`Corpus::name`].
pub fn parse_conll2003(text: &str, source: &str) -> Result<Corpus> {
    columns::parse_conll2003(text, source).map(|l| Corpus::from_labelled(source, l))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{fixture, input_error_message as message};

    #[test]
    fn reads_sentences_and_skips_docstart() {
        let corpus = read_conll2003(&fixture("conll2003/sample.txt")).unwrap();
        assert_eq!(corpus.sentences.len(), 3);
        let first = &corpus.sentences[0];
        assert_eq!(first.tokens[..3], ["EU", "rejects", "German"]);
        assert_eq!(first.tags[..3], ["B-ORG", "O", "B-MISC"]);
        assert_eq!(corpus.sentences[1].tokens, ["Peter", "Blackburn"]);
        assert_eq!(corpus.sentences[1].tags, ["B-PER", "I-PER"]);
        assert_eq!(corpus.types, ["LOC", "MISC", "ORG", "PER"]);
        assert_eq!(corpus.repairs, 0);
        assert!(corpus
            .sentences
            .iter()
            .flat_map(|s| &s.tokens)
            .all(|t| t != "-DOCSTART-"));
    }

    #[test]
    fn wrong_column_count_names_file_and_line() {
        let m = message(read_conll2003(&fixture("bad/conll_columns.txt")));
        assert!(
            m.contains("conll_columns.txt: line 7: expected 4 space-separated columns"),
            "{m}"
        );
        assert!(m.ends_with("found 3"), "{m}");
    }
}
