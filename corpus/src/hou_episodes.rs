//! Hou et al. (2020) few-shot episodes: `{"<domain>": [{"support": …, "batch": …}, …]}`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{distinct_types, json_error, normalize_tags, read_text, Episode, Sentence, TagScheme};
use crate::{Error, Result};

#[derive(Deserialize)]
struct RawPart {
    seq_ins: Vec<Vec<String>>,
    seq_outs: Vec<Vec<String>>,
}

#[derive(Deserialize)]
struct RawEpisode {
    support: RawPart,
    batch: RawPart,
}

/// Reads a Hou et al. 2020 episode file (`xval_ner` JSON): one object mapping each domain
/// name to a list of episodes, each with `support` and `batch` (the query set) holding the
/// parallel lists `seq_ins` (tokens) and `seq_outs` (BIO tags). Other members (`labels` and
/// the word-piece fields) are ignored.
///
/// Episodes come domain by domain in domain-name order, then in file order. Tags are read as
/// [`TagScheme::Bio`] with stray `I-` repaired ([`Episode::repairs`]). Errors give the JSON
/// line and column for invalid JSON, and the domain, episode, part and sentence (numbered from
/// 1) for unequal list lengths, empty tokens or bad tags.
pub fn read_hou_episodes(path: &Path) -> Result<Vec<Episode>> {
    parse_hou_episodes(&read_text(path)?, &path.display().to_string())
}

/// [`read_hou_episodes`] on the text of a file; `source` names it in errors.
pub fn parse_hou_episodes(text: &str, source: &str) -> Result<Vec<Episode>> {
    let domains: BTreeMap<String, Vec<RawEpisode>> =
        serde_json::from_str(text).map_err(|e| json_error(source, e.line(), e.column(), &e))?;
    let mut episodes = Vec::new();
    for (domain, raw_episodes) in domains {
        for (index, raw) in raw_episodes.into_iter().enumerate() {
            let at = |part: &str| format!("{source}: {domain} episode {}, {part}", index + 1);
            let (support, support_repairs) = sentences(raw.support, || at("support"))?;
            let (query, query_repairs) = sentences(raw.batch, || at("batch"))?;
            let types = distinct_types(support.iter().chain(&query));
            episodes.push(Episode {
                domain: domain.clone(),
                support,
                query,
                types,
                repairs: support_repairs + query_repairs,
            });
        }
    }
    Ok(episodes)
}

/// The sentences of one part and their repair count; `at` names the part in errors.
fn sentences(part: RawPart, at: impl Fn() -> String) -> Result<(Vec<Sentence>, usize)> {
    if part.seq_ins.len() != part.seq_outs.len() {
        return Err(Error::Input(format!(
            "{}: {} seq_ins but {} seq_outs",
            at(),
            part.seq_ins.len(),
            part.seq_outs.len()
        )));
    }
    let mut repairs = 0;
    let mut sentences = Vec::with_capacity(part.seq_ins.len());
    for (index, (tokens, tags)) in part.seq_ins.into_iter().zip(part.seq_outs).enumerate() {
        let fail = |what: String| Error::Input(format!("{}, sentence {}: {what}", at(), index + 1));
        if tokens.len() != tags.len() {
            return Err(fail(format!(
                "{} tokens but {} tags",
                tokens.len(),
                tags.len()
            )));
        }
        if let Some(empty) = tokens.iter().position(String::is_empty) {
            return Err(fail(format!("token {} is empty", empty + 1)));
        }
        let normalized = normalize_tags(&tags, TagScheme::Bio).map_err(|e| fail(e.to_string()))?;
        repairs += normalized.repairs;
        sentences.push(Sentence {
            tokens,
            tags: normalized.tags,
            text: None,
        });
    }
    Ok((sentences, repairs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;

    fn message(result: Result<Vec<Episode>>) -> String {
        match result {
            Err(Error::Input(m)) => m,
            other => panic!("expected an input error, got {other:?}"),
        }
    }

    #[test]
    fn reads_episodes_and_ignores_word_pieces() {
        let episodes = read_hou_episodes(&fixture("hou/news_1shot.json")).unwrap();
        assert_eq!(episodes.len(), 2);
        let first = &episodes[0];
        assert_eq!(first.domain, "News");
        assert_eq!(first.support.len(), 2);
        assert_eq!(first.query.len(), 2);
        assert_eq!(
            first.support[0].tokens,
            ["million", "a", "unless", "stated"]
        );
        assert_eq!(first.support[0].tags, ["O", "B-MISC", "O", "O"]);
        assert_eq!(first.types, ["LOC", "MISC", "ORG", "PER"]);
        assert_eq!(first.repairs, 0);
        assert!(episodes.iter().all(|e| e
            .support
            .iter()
            .chain(&e.query)
            .all(|s| s.text.is_none())));
    }

    #[test]
    fn domains_come_in_name_order_and_stray_inside_is_repaired() {
        let text = r#"{"b": [{"support": {"seq_ins": [["x"]], "seq_outs": [["I-P"]]}, "batch": {"seq_ins": [], "seq_outs": []}}],
                       "a": [{"support": {"seq_ins": [], "seq_outs": []}, "batch": {"seq_ins": [["y"]], "seq_outs": [["O"]]}}]}"#;
        let episodes = parse_hou_episodes(text, "mem").unwrap();
        assert_eq!(
            episodes
                .iter()
                .map(|e| e.domain.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(episodes[1].support[0].tags, ["B-P"]);
        assert_eq!(episodes[1].repairs, 1);
        assert_eq!(episodes[1].types, ["P"]);
    }

    #[test]
    fn invalid_json_names_file_line_and_column() {
        let m = message(read_hou_episodes(&fixture("bad/hou_invalid.json")));
        assert!(m.contains("hou_invalid.json: line 3, column "), "{m}");
        assert!(m.contains("invalid JSON"), "{m}");
        let m = message(parse_hou_episodes(
            r#"{"News": [{"support": {}}]}"#,
            "mem.json",
        ));
        assert!(
            m.contains("mem.json: line 1, column ") && m.contains("missing field"),
            "{m}"
        );
    }

    #[test]
    fn inconsistent_episodes_name_their_place() {
        let part = |ins: &str, outs: &str| {
            format!(
                r#"{{"News": [{{"support": {{"seq_ins": [], "seq_outs": []}}, "batch": {{"seq_ins": [], "seq_outs": []}}}},
                   {{"support": {{"seq_ins": {ins}, "seq_outs": {outs}}}, "batch": {{"seq_ins": [], "seq_outs": []}}}}]}}"#
            )
        };
        for (ins, outs, expected) in [
            (
                r#"[["a"]]"#,
                "[]",
                "mem.json: News episode 2, support: 1 seq_ins but 0 seq_outs",
            ),
            (
                r#"[["a"], ["b", "c"]]"#,
                r#"[["O"], ["O"]]"#,
                "episode 2, support, sentence 2: 2 tokens but 1 tags",
            ),
            (
                r#"[["a", ""]]"#,
                r#"[["O", "O"]]"#,
                "sentence 1: token 2 is empty",
            ),
            (
                r#"[["a", "b"]]"#,
                r#"[["O", "B-"]]"#,
                "sentence 1: tag 2: malformed tag \"B-\"",
            ),
        ] {
            let m = message(parse_hou_episodes(&part(ins, outs), "mem.json"));
            assert!(m.contains(expected), "{m}");
        }
    }
}
