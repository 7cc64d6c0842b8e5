//! ATIS / SNIPS slot filling: line-aligned `seq.in` (tokens) and `seq.out` (BIO tags).

use std::path::Path;

use super::{input_error, normalize_tags, numbered_lines, read_text, Corpus, Sentence, TagScheme};
use crate::Result;

/// Lines of `text`; a final line terminator does not start another line.
fn lines(text: &str) -> Vec<(usize, &str)> {
    let mut lines: Vec<_> = numbered_lines(text).collect();
    if text.is_empty() || text.ends_with('\n') {
        lines.pop();
    }
    lines
}

/// Reads `dir/seq.in` and `dir/seq.out` (ATIS, SNIPS): line `n` of `seq.in` holds the tokens
/// and line `n` of `seq.out` their BIO tags, both separated by ASCII whitespace (trailing
/// spaces are common). The `label` (intent) file is not read.
///
/// Sentence `n` of the corpus is line `n + 1` of the files, so an empty line pair gives a
/// sentence without tokens. Different line counts, or a line whose token and tag counts
/// differ, are errors naming the file and line; [`Corpus::name`] is `dir` as given.
pub fn read_seq_dir(dir: &Path) -> Result<Corpus> {
    let seq_in = read_text(&dir.join("seq.in"))?;
    let seq_out = read_text(&dir.join("seq.out"))?;
    parse_seq_files(&seq_in, &seq_out, &dir.display().to_string())
}

/// [`read_seq_dir`] on the texts of `seq.in` and `seq.out`; errors name `{source}/seq.in` and
/// `{source}/seq.out`.
pub fn parse_seq_files(seq_in: &str, seq_out: &str, source: &str) -> Result<Corpus> {
    let in_name = format!("{source}/seq.in");
    let out_name = format!("{source}/seq.out");
    let inputs = lines(seq_in);
    let outputs = lines(seq_out);
    if inputs.len() != outputs.len() {
        let (short, long, n) = if inputs.len() < outputs.len() {
            (&in_name, &out_name, inputs.len())
        } else {
            (&out_name, &in_name, outputs.len())
        };
        return Err(input_error(
            short,
            n + 1,
            format!(
                "missing; {long} has more lines (seq.in: {} lines, seq.out: {} lines)",
                inputs.len(),
                outputs.len()
            ),
        ));
    }
    let mut sentences = Vec::with_capacity(inputs.len());
    let mut repairs = 0;
    for (&(line_no, tokens), &(_, tags)) in inputs.iter().zip(&outputs) {
        let tokens: Vec<&str> = tokens.split_ascii_whitespace().collect();
        let tags: Vec<&str> = tags.split_ascii_whitespace().collect();
        if tokens.len() != tags.len() {
            return Err(input_error(
                &out_name,
                line_no,
                format!(
                    "{} tags for {} tokens on line {line_no} of {in_name}",
                    tags.len(),
                    tokens.len()
                ),
            ));
        }
        let normalized = normalize_tags(&tags, TagScheme::Bio)
            .map_err(|e| input_error(&out_name, line_no, e))?;
        repairs += normalized.repairs;
        sentences.push(Sentence {
            tokens: tokens.into_iter().map(str::to_string).collect(),
            tags: normalized.tags,
            text: None,
        });
    }
    Ok(Corpus::new(source, sentences, repairs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{fixture, input_error_message as message};

    #[test]
    fn atis_lines_align() {
        let corpus = read_seq_dir(&fixture("seq/atis")).unwrap();
        assert_eq!(corpus.sentences.len(), 3);
        let first = &corpus.sentences[0];
        assert_eq!(first.tokens.len(), 10);
        assert_eq!(first.tags[5], "B-fromloc.city_name");
        assert_eq!(first.tags[8..], ["B-round_trip", "I-round_trip"]);
        assert!(corpus.types.contains(&"toloc.city_name".to_string()));
    }

    #[test]
    fn snips_trailing_spaces_are_ignored() {
        let corpus = read_seq_dir(&fixture("seq/snips")).unwrap();
        assert_eq!(corpus.sentences.len(), 3);
        assert!(corpus
            .sentences
            .iter()
            .all(|s| s.tokens.len() == s.tags.len() && !s.tokens.is_empty()));
        assert_eq!(corpus.types.len(), 9);
    }

    #[test]
    fn token_count_mismatch_names_file_and_line() {
        let m = message(read_seq_dir(&fixture("bad/seq_mismatch")));
        assert!(
            m.contains("seq_mismatch/seq.out: line 2: 3 tags for 4 tokens on line 2"),
            "{m}"
        );
        assert!(m.contains("seq_mismatch/seq.in"), "{m}");
    }

    #[test]
    fn line_count_mismatch_names_the_short_file() {
        let m = message(parse_seq_files("a b\nc\n", "O O\n", "mem"));
        assert!(m.contains("mem/seq.out: line 2: missing"), "{m}");
        let m = message(parse_seq_files("a b\n", "O O\nO\n", "mem"));
        assert!(m.contains("mem/seq.in: line 2: missing"), "{m}");
    }

    #[test]
    fn bad_tag_names_seq_out_and_line() {
        let m = message(parse_seq_files("a b\nc d\n", "O O\nO B_x\n", "mem"));
        assert!(
            m.contains("mem/seq.out: line 2: tag 2: malformed tag \"B_x\""),
            "{m}"
        );
    }

    #[test]
    fn empty_line_pairs_keep_alignment() {
        let corpus = parse_seq_files("a\n\nb\n", "O\n\nB-x\n", "mem").unwrap();
        assert_eq!(corpus.sentences.len(), 3);
        assert!(corpus.sentences[1].tokens.is_empty());
        assert_eq!(corpus.sentences[2].tags, ["B-x"]);
    }
}
