//! Blank-line-separated token-per-line formats: `token<TAB>tag` and MIT `word tag`, read with
//! the runtime's column parsers ([`ner_edge::adapt::columns`]).

use std::path::Path;

use ner_edge::adapt::columns;
use ner_edge::Result;

use super::{read_text, Corpus, TagScheme};

/// Reads a `token<TAB>tag` file (CrossNER, Twitter-2015/2017, CONTaiNER support sets,
/// Few-NERD) whose tags are in `scheme` (Few-NERD: [`TagScheme::Io`]; the others:
/// [`TagScheme::Bio`]).
///
/// Lines are split on TAB only, so tokens may be any other character (U+00A0, U+200B); the
/// tag is trimmed of ASCII whitespace, the token is kept as-is. Every non-blank line must have
/// exactly one TAB and a non-empty token, except `IMGID:` lines without a TAB (Twitter), which
/// end the current sentence like blank lines and `-DOCSTART-` lines
/// ([`columns::parse_token_tag`]).
pub fn read_token_tag(path: &Path, scheme: TagScheme) -> Result<Corpus> {
    parse_token_tag(&read_text(path)?, &path.display().to_string(), scheme)
}

/// [`read_token_tag`] on the text of a file; `source` names it in errors and in [`Corpus::name`].
pub fn parse_token_tag(text: &str, source: &str, scheme: TagScheme) -> Result<Corpus> {
    columns::parse_token_tag(text, source, scheme).map(|l| Corpus::from_labelled(source, l))
}

/// Reads an MIT Movie or MIT Restaurant file as distributed in `shared/data`: word first, BIO
/// tag second, separated by the last space or TAB of the line (`eng*` files use TAB,
/// `trivia10k13*` and restaurant files a single space). Both fields are trimmed of ASCII
/// whitespace and must be non-empty ([`columns::parse_mit`]).
pub fn read_mit(path: &Path) -> Result<Corpus> {
    parse_mit(&read_text(path)?, &path.display().to_string())
}

/// [`read_mit`] on the text of a file; `source` names it in errors and in [`Corpus::name`].
pub fn parse_mit(text: &str, source: &str) -> Result<Corpus> {
    columns::parse_mit(text, source).map(|l| Corpus::from_labelled(source, l))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{fixture, input_error_message as message};

    #[test]
    fn crossner_sentences_and_types() {
        let corpus =
            read_token_tag(&fixture("token_tag/crossner_politics.txt"), TagScheme::Bio).unwrap();
        assert_eq!(corpus.sentences.len(), 2);
        assert_eq!(corpus.sentences[0].tokens[..3], ["On", "12", "April"]);
        assert_eq!(
            corpus.types,
            ["country", "organisation", "politicalparty", "politician"]
        );
        assert_eq!(corpus.repairs, 0);
        assert!(corpus.name.ends_with("crossner_politics.txt"));
        assert!(corpus
            .sentences
            .iter()
            .all(|s| s.tokens.len() == s.tags.len() && s.text.is_none()));
    }

    #[test]
    fn twitter_skips_imgid_keeps_odd_tokens_and_repairs() {
        let corpus = read_token_tag(&fixture("token_tag/twitter2015.txt"), TagScheme::Bio).unwrap();
        assert_eq!(corpus.sentences.len(), 3);
        assert!(corpus
            .sentences
            .iter()
            .flat_map(|s| &s.tokens)
            .all(|t| !t.starts_with("IMGID")));
        let st_louis = &corpus.sentences[0];
        let louis = st_louis.tokens.iter().position(|t| t == "Louis").unwrap();
        assert_eq!(st_louis.tags[louis], "B-LOC");
        assert_eq!(corpus.repairs, 1);
        assert!(corpus.sentences[1].tokens.contains(&"\u{a0}".to_string()));

        let corpus = read_token_tag(&fixture("token_tag/twitter2017.txt"), TagScheme::Bio).unwrap();
        assert_eq!(corpus.sentences.len(), 2);
        assert_eq!(corpus.sentences[1].tokens[2], "\u{200b}");
        assert_eq!(corpus.types, ["LOC", "MISC", "PER"]);
    }

    #[test]
    fn fewnerd_io_runs_become_bio() {
        let corpus =
            read_token_tag(&fixture("token_tag/fewnerd_inter.txt"), TagScheme::Io).unwrap();
        assert_eq!(
            corpus.types,
            ["art-painting", "building-other", "person-scholar"]
        );
        let s = &corpus.sentences[0];
        let tagged: Vec<_> = s
            .tokens
            .iter()
            .zip(&s.tags)
            .filter(|(_, t)| *t != "O")
            .collect();
        assert_eq!(
            tagged,
            [
                (&"Hoch".to_string(), &"B-building-other".to_string()),
                (&"Auditorium".to_string(), &"I-building-other".to_string()),
            ]
        );
        assert_eq!(corpus.entity_count(), 3);
    }

    #[test]
    fn container_support_set_reads() {
        let corpus =
            read_token_tag(&fixture("token_tag/container_1shot.txt"), TagScheme::Bio).unwrap();
        assert_eq!(corpus.sentences.len(), 2);
        assert_eq!(
            corpus.sentences[0].tags[2..5],
            ["B-MISC", "I-MISC", "I-MISC"]
        );
    }

    #[test]
    fn token_tag_errors_name_file_and_line() {
        let m = message(read_token_tag(&fixture("bad/columns.tsv"), TagScheme::Bio));
        assert!(
            m.contains("columns.tsv: line 4: expected token<TAB>tag, found 3"),
            "{m}"
        );
        let m = message(read_token_tag(&fixture("bad/tag.tsv"), TagScheme::Bio));
        assert!(
            m.contains("tag.tsv: line 5: malformed tag \"B_PER\""),
            "{m}"
        );
    }

    #[test]
    fn mit_tab_and_space_files() {
        let eng = read_mit(&fixture("mit/engtrain.bio.txt")).unwrap();
        assert_eq!(eng.sentences.len(), 3);
        assert_eq!(eng.sentences[0].tokens[..3], ["what", "movies", "star"]);
        assert_eq!(eng.types, ["ACTOR", "YEAR"]);

        let trivia = read_mit(&fixture("mit/trivia10k13train.bio.txt")).unwrap();
        assert_eq!(trivia.sentences.len(), 2);
        assert_eq!(trivia.sentences[0].tokens[..2], ["steve", "mcqueen"]);
        assert_eq!(trivia.sentences[0].tags[..2], ["B-Actor", "I-Actor"]);

        let restaurant = read_mit(&fixture("mit/restaurant_train.txt")).unwrap();
        assert_eq!(restaurant.sentences.len(), 3);
        assert_eq!(restaurant.types, ["Amenity", "Location", "Rating"]);
    }

    #[test]
    fn mit_errors_name_file_and_line() {
        let m = message(read_mit(&fixture("bad/mit_no_tag.txt")));
        assert!(
            m.contains("mit_no_tag.txt: line 3: expected a word and a tag"),
            "{m}"
        );
    }
}
