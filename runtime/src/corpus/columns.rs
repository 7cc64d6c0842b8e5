//! Blank-line-separated token-per-line formats: `token<TAB>tag` and MIT `word tag`.

use std::path::Path;

use super::conll::is_docstart;
use super::{input_error, normalize_tags, numbered_lines, read_text, Corpus, Sentence, TagScheme};
use crate::Result;

/// What one line of a token-per-line file is.
pub(crate) enum LineKind<'a> {
    /// Ends the current sentence (Twitter `IMGID:` lines).
    Boundary,
    /// A token and its raw tag.
    Token(&'a str, &'a str),
}

/// True for a Twitter image-id line: `IMGID:` followed by no TAB.
pub(crate) fn is_imgid_line(line: &str) -> bool {
    line.starts_with("IMGID:") && !line.contains('\t')
}

/// The raw tag (text after the last TAB, trimmed) of every line of `text` that has a TAB.
pub(crate) fn tab_tags(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .filter_map(|l| l.rsplit_once('\t'))
        .map(|(_, tag)| tag.trim_ascii())
}

/// Reads blank-line-separated sentences of one token per line. Blank (whitespace-only) lines
/// end a sentence, as do lines whose first field is `-DOCSTART-` and lines that `classify`
/// calls [`LineKind::Boundary`]; sentences without tokens are skipped.
pub(crate) fn parse_blocks<'a>(
    text: &'a str,
    source: &str,
    scheme: TagScheme,
    classify: impl Fn(&'a str) -> Result<LineKind<'a>, String>,
) -> Result<Corpus> {
    let mut sentences = Vec::new();
    let mut repairs = 0;
    let mut tokens: Vec<&str> = Vec::new();
    let mut tags: Vec<&str> = Vec::new();
    let mut lines: Vec<usize> = Vec::new();
    let mut flush =
        |tokens: &mut Vec<&str>, tags: &mut Vec<&str>, lines: &mut Vec<usize>| -> Result<()> {
            if tokens.is_empty() {
                return Ok(());
            }
            let normalized = normalize_tags(tags, scheme)
                .map_err(|e| input_error(source, lines[e.index], e.message))?;
            repairs += normalized.repairs;
            sentences.push(Sentence {
                tokens: tokens.iter().map(|t| t.to_string()).collect(),
                tags: normalized.tags,
                text: None,
            });
            tokens.clear();
            tags.clear();
            lines.clear();
            Ok(())
        };
    for (line_no, line) in numbered_lines(text) {
        if line.trim_ascii().is_empty() || is_docstart(line) {
            flush(&mut tokens, &mut tags, &mut lines)?;
            continue;
        }
        match classify(line).map_err(|m| input_error(source, line_no, m))? {
            LineKind::Boundary => flush(&mut tokens, &mut tags, &mut lines)?,
            LineKind::Token(token, tag) => {
                tokens.push(token);
                tags.push(tag);
                lines.push(line_no);
            }
        }
    }
    flush(&mut tokens, &mut tags, &mut lines)?;
    Ok(Corpus::new(source, sentences, repairs))
}

/// Reads a `token<TAB>tag` file (CrossNER, Twitter-2015/2017, CONTaiNER support sets,
/// Few-NERD) whose tags are in `scheme` (Few-NERD: [`TagScheme::Io`]; the others:
/// [`TagScheme::Bio`]).
///
/// Lines are split on TAB only, so tokens may be any other character (U+00A0, U+200B); the
/// tag is trimmed of ASCII whitespace, the token is kept as-is. Every non-blank line must have
/// exactly one TAB and a non-empty token, except `IMGID:` lines without a TAB (Twitter), which
/// end the current sentence like blank lines and `-DOCSTART-` lines.
pub fn read_token_tag(path: &Path, scheme: TagScheme) -> Result<Corpus> {
    parse_token_tag(&read_text(path)?, &path.display().to_string(), scheme)
}

/// [`read_token_tag`] on the text of a file; `source` names it in errors and in [`Corpus::name`].
pub fn parse_token_tag(text: &str, source: &str, scheme: TagScheme) -> Result<Corpus> {
    parse_blocks(text, source, scheme, |line| {
        if is_imgid_line(line) {
            return Ok(LineKind::Boundary);
        }
        let mut fields = line.split('\t');
        match (fields.next(), fields.next(), fields.next()) {
            (Some(""), Some(_), None) => Err("empty token before the TAB".to_string()),
            (Some(token), Some(tag), None) => Ok(LineKind::Token(token, tag.trim_ascii())),
            _ => Err(format!(
                "expected token<TAB>tag, found {} tab-separated fields",
                line.split('\t').count()
            )),
        }
    })
}

/// Reads an MIT Movie or MIT Restaurant file as distributed in `shared/data`: word first, BIO
/// tag second, separated by the last space or TAB of the line (`eng*` files use TAB,
/// `trivia10k13*` and restaurant files a single space). Both fields are trimmed of ASCII
/// whitespace and must be non-empty.
pub fn read_mit(path: &Path) -> Result<Corpus> {
    parse_mit(&read_text(path)?, &path.display().to_string())
}

/// [`read_mit`] on the text of a file; `source` names it in errors and in [`Corpus::name`].
pub fn parse_mit(text: &str, source: &str) -> Result<Corpus> {
    parse_blocks(text, source, TagScheme::Bio, |line| {
        let line = line.trim_ascii();
        let Some(cut) = line.rfind([' ', '\t']) else {
            return Err("expected a word and a tag separated by a space or TAB".to_string());
        };
        Ok(LineKind::Token(line[..cut].trim_ascii(), &line[cut + 1..]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::{fixture, input_error_message as message};

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
        let m = message(parse_token_tag("a\tO\n\tO\n", "mem.tsv", TagScheme::Bio));
        assert!(m.contains("mem.tsv: line 2: empty token"), "{m}");
        let m = message(parse_token_tag("a\tO\nb\tI-\n", "mem.tsv", TagScheme::Bio));
        assert!(m.contains("mem.tsv: line 2: malformed tag \"I-\""), "{m}");
        let m = message(parse_token_tag(
            "a\tO\nno tab here\n",
            "mem.tsv",
            TagScheme::Bio,
        ));
        assert!(
            m.contains("mem.tsv: line 2: expected token<TAB>tag, found 1"),
            "{m}"
        );
    }

    #[test]
    fn crlf_blank_runs_and_missing_final_newline() {
        let corpus =
            parse_token_tag("a\tB-X\r\nb\tI-X\r\n\r\n\r\n \nc\tO", "mem", TagScheme::Bio).unwrap();
        assert_eq!(corpus.sentences.len(), 2);
        assert_eq!(corpus.sentences[0].tags, ["B-X", "I-X"]);
        assert_eq!(corpus.sentences[1].tokens, ["c"]);
    }

    #[test]
    fn bioes_input_is_converted() {
        let corpus = parse_token_tag("a\tS-X\nb\tB-Y\nc\tE-Y\n", "mem", TagScheme::Bioes).unwrap();
        assert_eq!(corpus.sentences[0].tags, ["B-X", "B-Y", "I-Y"]);
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
    fn mit_splits_on_the_last_separator() {
        let corpus = parse_mit("new york\tB-LOC\nsushi  bar O \n", "mem").unwrap();
        assert_eq!(corpus.sentences[0].tokens, ["new york", "sushi  bar"]);
        assert_eq!(corpus.sentences[0].tags, ["B-LOC", "O"]);
    }

    #[test]
    fn mit_errors_name_file_and_line() {
        let m = message(read_mit(&fixture("bad/mit_no_tag.txt")));
        assert!(
            m.contains("mit_no_tag.txt: line 3: expected a word and a tag"),
            "{m}"
        );
        let m = message(parse_mit("a O\nb Z-Actor\n", "mem.txt"));
        assert!(
            m.contains("mem.txt: line 2: malformed tag \"Z-Actor\""),
            "{m}"
        );
    }
}
