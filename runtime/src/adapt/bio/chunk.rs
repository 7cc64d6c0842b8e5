//! Chunking a tag sequence into entities, with conlleval's rules for BIO and seqeval's default
//! mode for IO and BIOES (re-exported by [`super`]).

use std::str::FromStr;

use crate::{Error, Result};

/// How a sequence of per-token labels encodes entities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// IOB2: `O`, `B-TYPE`, `I-TYPE`. Chunks follow conlleval: an entity starts at `B-X`, or at
    /// an `I-X` that does not continue an entity of type X (a stray `I-` starts an entity), and
    /// ends before the next token that is not `I-X`. `B-X B-X` is two entities.
    Bio,
    /// IO, as in Few-NERD: `O` or a bare type label such as `person-artist` (the whole label is
    /// the type). An entity is a maximal run of identical labels, so adjacent entities of the
    /// same type merge into one.
    Io,
    /// BIOES (IOBES): `O`, `B-X`, `I-X`, `E-X`, `S-X`. `S-X` is a one-token entity and `B-X I-X…
    /// E-X` a longer one. Ill-formed sequences are chunked by seqeval's default-mode rules (a
    /// superset of conlleval's BIO rules): an entity ends after `E-` or `S-`, before `B-`, `S-`
    /// or `O`, and at every change of type; `I-` or `E-` after `O`, `E-` or `S-` starts one.
    Bioes,
}

impl FromStr for Scheme {
    type Err = Error;

    /// Parses `bio` (or `iob2`), `io` and `bioes` (or `iobes`), in any case.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "bio" | "iob2" => Ok(Scheme::Bio),
            "io" => Ok(Scheme::Io),
            "bioes" | "iobes" => Ok(Scheme::Bioes),
            _ => Err(Error::Input(format!(
                "unknown tag scheme {s:?} (expected bio, io or bioes)"
            ))),
        }
    }
}

/// One entity over tokens `start .. end` (end exclusive) of a sentence.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    /// First token.
    pub start: usize,
    /// Exclusive end.
    pub end: usize,
    /// The entity type: the label without its `B-`/`I-`/`E-`/`S-` prefix (IO: the whole label).
    pub kind: String,
}

/// Splits a prefixed tag into its position letter (`b'O'` for `O`) and type.
fn parse_prefixed(tag: &str, pos: usize, scheme: Scheme) -> Result<(u8, &str)> {
    if tag == "O" {
        return Ok((b'O', ""));
    }
    let (name, allowed, expected): (&str, &[u8], &str) = match scheme {
        Scheme::Bioes => ("BIOES", b"BIES", "B-, I-, E-, S-"),
        _ => ("BIO", b"BI", "B-, I-"),
    };
    if let Some((prefix, kind)) = tag.split_once('-') {
        if let [p] = prefix.as_bytes() {
            if allowed.contains(p) && !kind.is_empty() {
                return Ok((*p, kind));
            }
        }
    }
    Err(Error::Input(format!(
        "tag {pos} {tag:?} is not a {name} tag (expected O or one of {expected} followed by a type)"
    )))
}

/// seqeval's `end_of_chunk`: whether an entity ends between the previous and current token.
fn ends_chunk(prev: (u8, &str), cur: (u8, &str)) -> bool {
    match (prev.0, cur.0) {
        (b'O', _) => false,
        (b'E' | b'S', _) | (b'B' | b'I', b'B' | b'S' | b'O') => true,
        _ => prev.1 != cur.1,
    }
}

/// seqeval's `start_of_chunk`: whether an entity starts at the current token.
fn starts_chunk(prev: (u8, &str), cur: (u8, &str)) -> bool {
    match (prev.0, cur.0) {
        (_, b'O') => false,
        (_, b'B' | b'S') | (b'E' | b'S' | b'O', b'I' | b'E') => true,
        _ => prev.1 != cur.1,
    }
}

/// The entities of one sentence's tags, in order of position.
///
/// Every tag must be valid for `scheme` (see [`Scheme`]): `O`, or for BIO / BIOES a prefix
/// letter, `-` and a non-empty type; for IO any non-empty label. Anything else is an
/// [`Error::Input`] naming the first bad position. An empty sequence has no entities.
pub fn spans<S: AsRef<str>>(tags: &[S], scheme: Scheme) -> Result<Vec<Span>> {
    let mut out = Vec::new();
    match scheme {
        Scheme::Io => {
            let mut open: Option<(usize, &str)> = None;
            for (pos, tag) in tags.iter().enumerate() {
                let tag = tag.as_ref();
                if tag.is_empty() {
                    return Err(Error::Input(format!("tag {pos} is empty")));
                }
                if matches!(open, Some((_, kind)) if kind == tag) {
                    continue;
                }
                if let Some((start, kind)) = open.take() {
                    out.push(Span {
                        start,
                        end: pos,
                        kind: kind.to_owned(),
                    });
                }
                if tag != "O" {
                    open = Some((pos, tag));
                }
            }
            if let Some((start, kind)) = open {
                out.push(Span {
                    start,
                    end: tags.len(),
                    kind: kind.to_owned(),
                });
            }
        }
        Scheme::Bio | Scheme::Bioes => {
            let mut prev = (b'O', "");
            let mut begin = 0;
            for pos in 0..=tags.len() {
                let cur = match tags.get(pos) {
                    Some(tag) => parse_prefixed(tag.as_ref(), pos, scheme)?,
                    None => (b'O', ""),
                };
                if ends_chunk(prev, cur) {
                    out.push(Span {
                        start: begin,
                        end: pos,
                        kind: prev.1.to_owned(),
                    });
                }
                if starts_chunk(prev, cur) {
                    begin = pos;
                }
                prev = cur;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(s: &str) -> Vec<&str> {
        s.split_whitespace().collect()
    }

    fn sp(start: usize, end: usize, kind: &str) -> Span {
        Span {
            start,
            end,
            kind: kind.to_owned(),
        }
    }

    fn bio(s: &str) -> Vec<Span> {
        spans(&tags(s), Scheme::Bio).expect("valid BIO")
    }

    #[test]
    fn stray_inside_starts_an_entity() {
        assert_eq!(bio("O I-PER I-PER"), [sp(1, 3, "PER")]);
        assert_eq!(bio("I-PER O I-LOC"), [sp(0, 1, "PER"), sp(2, 3, "LOC")]);
        assert_eq!(bio("B-PER O I-PER"), [sp(0, 1, "PER"), sp(2, 3, "PER")]);
    }

    #[test]
    fn type_switch_splits() {
        assert_eq!(bio("B-PER I-ORG"), [sp(0, 1, "PER"), sp(1, 2, "ORG")]);
        assert_eq!(
            bio("B-PER I-PER I-ORG I-ORG O"),
            [sp(0, 2, "PER"), sp(2, 4, "ORG")]
        );
    }

    #[test]
    fn adjacent_begins_are_separate() {
        assert_eq!(bio("B-LOC B-LOC"), [sp(0, 1, "LOC"), sp(1, 2, "LOC")]);
        assert_eq!(
            bio("B-LOC I-LOC B-LOC I-LOC"),
            [sp(0, 2, "LOC"), sp(2, 4, "LOC")]
        );
    }

    #[test]
    fn types_may_contain_hyphens() {
        assert_eq!(
            bio("B-person-artist I-person-artist O"),
            [sp(0, 2, "person-artist")]
        );
    }

    #[test]
    fn io_merges_runs_of_identical_labels() {
        let got = spans(
            &tags("O person-artist person-artist location-GPE O person-artist"),
            Scheme::Io,
        )
        .expect("valid IO");
        assert_eq!(
            got,
            [
                sp(1, 3, "person-artist"),
                sp(3, 4, "location-GPE"),
                sp(5, 6, "person-artist")
            ]
        );
        let two_people_one_entity = spans(&tags("PER PER PER"), Scheme::Io).expect("valid IO");
        assert_eq!(two_people_one_entity, [sp(0, 3, "PER")]);
    }

    #[test]
    fn bioes_chunks() {
        let got = spans(
            &tags("S-PER B-LOC I-LOC E-LOC O B-ORG E-ORG S-ORG"),
            Scheme::Bioes,
        )
        .expect("valid BIOES");
        assert_eq!(
            got,
            [
                sp(0, 1, "PER"),
                sp(1, 4, "LOC"),
                sp(5, 7, "ORG"),
                sp(7, 8, "ORG")
            ]
        );
        let ill = spans(&tags("E-PER I-PER S-PER I-PER B-LOC O"), Scheme::Bioes)
            .expect("valid BIOES tags");
        assert_eq!(
            ill,
            [
                sp(0, 1, "PER"),
                sp(1, 2, "PER"),
                sp(2, 3, "PER"),
                sp(3, 4, "PER"),
                sp(4, 5, "LOC")
            ]
        );
    }

    #[test]
    fn empty_all_outside_and_bad_tags() {
        let none: [&str; 0] = [];
        for scheme in [Scheme::Bio, Scheme::Io, Scheme::Bioes] {
            assert!(spans(&none, scheme).expect("empty").is_empty());
            assert!(spans(&tags("O O O"), scheme).expect("all O").is_empty());
        }
        for (bad, scheme) in [
            ("O E-PER", Scheme::Bio),
            ("B- O", Scheme::Bio),
            ("PER", Scheme::Bio),
            ("b-PER", Scheme::Bio),
            ("X-PER", Scheme::Bioes),
            ("BI-PER", Scheme::Bioes),
        ] {
            assert!(
                matches!(spans(&tags(bad), scheme), Err(Error::Input(_))),
                "{bad:?} accepted"
            );
        }
        assert!(spans(&[""], Scheme::Io).is_err());
        assert!(spans(&["é"], Scheme::Bio).is_err());
        assert!("iob2".parse::<Scheme>().is_ok_and(|s| s == Scheme::Bio));
        assert!("IOBES".parse::<Scheme>().is_ok_and(|s| s == Scheme::Bioes));
        assert!("io".parse::<Scheme>().is_ok_and(|s| s == Scheme::Io));
        assert!("bilou".parse::<Scheme>().is_err());
    }
}
