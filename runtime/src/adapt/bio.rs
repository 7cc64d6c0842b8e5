//! BIO tags of labelled sentences, the support-set side of the runtime: tag schemes,
//! conversion to valid BIO with repair of stray `I-` tags ([`normalize_tags`]), and chunking of
//! a tag sequence into entity spans ([`spans`]).
//!
//! `ner-edge adapt` reads token-per-line support files through [`super::columns`], which
//! normalises their tags here, and [`super::Adapter::adapt_tokens`] takes the mentions of
//! pre-tokenised BIO sentences with [`spans`]. The training and evaluation crate
//! `ner-edge-corpus` builds its dataset readers and its metrics on these same functions.
//!
//! Two scheme enums, for two jobs: [`TagScheme`] says how the raw labels of a source are
//! converted to BIO (and repaired); [`Scheme`] says how a tag sequence is cut into entities, with
//! conlleval's / seqeval's rules, which is what evaluation scores. On BIO input both read the
//! same entities; on BIOES they differ (`B-X E-X I-X` is one entity after conversion, two by
//! seqeval's chunking).

use std::fmt;

mod chunk;

pub use chunk::{spans, Scheme, Span};

/// The tagging scheme of the raw labels in a source.
///
/// Every scheme is converted to BIO (IOB2) by [`normalize_tags`]. A tag type is any non-empty
/// string without whitespace; prefixes are case-sensitive (`b-PER` is malformed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagScheme {
    /// `O`, `B-TYPE`, `I-TYPE`. A stray `I-TYPE` (at sentence start, after `O` or after another
    /// type) becomes `B-TYPE` and counts as a repair, so IOB1 input also comes out as IOB2.
    Bio,
    /// `O` or a bare `TYPE` (Few-NERD): a maximal run of identical non-`O` labels is one
    /// entity, so adjacent same-type entities merge. Conversion never counts repairs. A label
    /// starting with `B-` or `I-` is refused, since it means the input is really BIO.
    Io,
    /// `O`, `B-`, `I-`, `E-`, `S-`: `S-` becomes `B-`, `E-` becomes `I-`, then as [`TagScheme::Bio`].
    Bioes,
}

impl TagScheme {
    /// Guesses the scheme of `tags`: [`TagScheme::Bioes`] once an `S-` or `E-` tag is seen;
    /// [`TagScheme::Io`] when some tag is not `O` and no tag has a `B-`, `I-`, `S-` or `E-`
    /// prefix; [`TagScheme::Bio`] otherwise (all-`O` input included).
    pub fn detect<'a>(tags: impl IntoIterator<Item = &'a str>) -> TagScheme {
        let mut prefixed = false;
        let mut bare = false;
        for tag in tags {
            if tag.starts_with("S-") || tag.starts_with("E-") {
                return TagScheme::Bioes;
            }
            if tag.starts_with("B-") || tag.starts_with("I-") {
                prefixed = true;
            } else if tag != "O" {
                bare = true;
            }
        }
        if bare && !prefixed {
            TagScheme::Io
        } else {
            TagScheme::Bio
        }
    }
}

/// A malformed tag: its index in the sequence and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagError {
    /// Zero-based index of the offending tag.
    pub index: usize,
    /// One-line description naming the tag.
    pub message: String,
}

impl fmt::Display for TagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tag {}: {}", self.index + 1, self.message)
    }
}

/// Tags converted to valid BIO.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Normalized {
    /// One BIO tag per input tag.
    pub tags: Vec<String>,
    /// Stray `I-X` tags that were turned into `B-X`.
    pub repairs: usize,
}

/// What a raw tag asks for.
enum Piece<'a> {
    /// `O`.
    Outside,
    /// Start an entity of this type (`B-`, `S-`).
    Begin(&'a str),
    /// Continue an entity of this type; stray when none is open (`I-`, `E-`).
    Inside(&'a str),
    /// An IO label: continue a run of this label, or start one.
    Run(&'a str),
}

/// A type is non-empty and has no whitespace.
fn valid_type(ty: &str) -> bool {
    !ty.is_empty() && !ty.chars().any(char::is_whitespace)
}

/// Classifies one raw tag of `scheme`, or says why it is malformed.
fn parse(tag: &str, scheme: TagScheme) -> Result<Piece<'_>, String> {
    if tag == "O" {
        return Ok(Piece::Outside);
    }
    if scheme == TagScheme::Io {
        return if tag.starts_with("B-") || tag.starts_with("I-") {
            Err(format!(
                "IO tag {tag:?} has a BIO prefix (read the file as BIO)"
            ))
        } else if valid_type(tag) {
            Ok(Piece::Run(tag))
        } else {
            Err(format!(
                "malformed IO tag {tag:?} (expected O or a type without spaces)"
            ))
        };
    }
    let piece = match (tag.get(..2), tag.get(2..)) {
        (Some("B-"), Some(ty)) => Piece::Begin(ty),
        (Some("I-"), Some(ty)) => Piece::Inside(ty),
        (Some("S-"), Some(ty)) if scheme == TagScheme::Bioes => Piece::Begin(ty),
        (Some("E-"), Some(ty)) if scheme == TagScheme::Bioes => Piece::Inside(ty),
        _ => {
            let expected = match scheme {
                TagScheme::Bioes => "O, B-TYPE, I-TYPE, E-TYPE or S-TYPE",
                _ => "O, B-TYPE or I-TYPE",
            };
            return Err(format!("malformed tag {tag:?} (expected {expected})"));
        }
    };
    match piece {
        Piece::Begin(ty) | Piece::Inside(ty) if !valid_type(ty) => Err(format!(
            "malformed tag {tag:?} (empty type or a type with spaces)"
        )),
        piece => Ok(piece),
    }
}

/// Converts `tags` in `scheme` to valid BIO, repairing stray `I-` tags (see [`TagScheme`]).
///
/// Fails on the first tag that is not valid in `scheme`.
pub fn normalize_tags<S: AsRef<str>>(
    tags: &[S],
    scheme: TagScheme,
) -> Result<Normalized, TagError> {
    let mut out = Vec::with_capacity(tags.len());
    let mut repairs = 0;
    let mut current: Option<&str> = None;
    for (index, tag) in tags.iter().enumerate() {
        let piece = parse(tag.as_ref(), scheme).map_err(|message| TagError { index, message })?;
        let (inside, ty) = match piece {
            Piece::Outside => {
                out.push("O".to_string());
                current = None;
                continue;
            }
            Piece::Begin(ty) => (false, ty),
            Piece::Inside(ty) => {
                let continues = current == Some(ty);
                if !continues {
                    repairs += 1;
                }
                (continues, ty)
            }
            Piece::Run(ty) => (current == Some(ty), ty),
        };
        out.push(format!("{}-{ty}", if inside { 'I' } else { 'B' }));
        current = Some(ty);
    }
    Ok(Normalized { tags: out, repairs })
}

/// [`normalize_tags`] for BIOES input: `S-X` → `B-X`, `E-X` → `I-X`, stray `I-` repaired.
pub fn bioes_to_bio<S: AsRef<str>>(tags: &[S]) -> Result<Normalized, TagError> {
    normalize_tags(tags, TagScheme::Bioes)
}

/// [`normalize_tags`] for IO input: each maximal run of one non-`O` label becomes `B-X I-X…`.
pub fn io_to_bio<S: AsRef<str>>(tags: &[S]) -> Result<Normalized, TagError> {
    normalize_tags(tags, TagScheme::Io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bio(tags: &[&str], scheme: TagScheme) -> (Vec<String>, usize) {
        let n = normalize_tags(tags, scheme).unwrap();
        (n.tags, n.repairs)
    }

    #[test]
    fn valid_bio_is_unchanged() {
        let tags = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC"];
        assert_eq!(
            bio(&tags, TagScheme::Bio),
            (tags.map(String::from).to_vec(), 0)
        );
    }

    #[test]
    fn stray_inside_tags_are_repaired_and_counted() {
        let (tags, repairs) = bio(
            &["I-LOC", "O", "I-LOC", "I-LOC", "B-PER", "I-ORG"],
            TagScheme::Bio,
        );
        assert_eq!(tags, ["B-LOC", "O", "B-LOC", "I-LOC", "B-PER", "B-ORG"]);
        assert_eq!(repairs, 3);
    }

    #[test]
    fn io_runs_become_entities() {
        let n = io_to_bio(&[
            "person-other",
            "person-other",
            "O",
            "art-painting",
            "person-other",
        ])
        .unwrap();
        assert_eq!(
            n.tags,
            [
                "B-person-other",
                "I-person-other",
                "O",
                "B-art-painting",
                "B-person-other"
            ]
        );
        assert_eq!(n.repairs, 0);
    }

    #[test]
    fn bioes_maps_single_and_end() {
        let n = bioes_to_bio(&["S-PER", "B-ORG", "I-ORG", "E-ORG", "O", "E-LOC"]).unwrap();
        assert_eq!(n.tags, ["B-PER", "B-ORG", "I-ORG", "I-ORG", "O", "B-LOC"]);
        assert_eq!(n.repairs, 1);
    }

    #[test]
    fn malformed_tags_are_rejected_with_their_index() {
        for (tags, scheme, index) in [
            (&["O", "B-"][..], TagScheme::Bio, 1),
            (&["PER"][..], TagScheme::Bio, 0),
            (&["O", "O", "b-PER"][..], TagScheme::Bio, 2),
            (&["S-PER"][..], TagScheme::Bio, 0),
            (&["B-A B"][..], TagScheme::Bioes, 0),
            (&["X-PER"][..], TagScheme::Bioes, 0),
            (&["O", ""][..], TagScheme::Io, 1),
            (&[""][..], TagScheme::Bio, 0),
            (&["O", "B-PER"][..], TagScheme::Io, 1),
        ] {
            let err = normalize_tags(tags, scheme).unwrap_err();
            assert_eq!(err.index, index, "{tags:?}: {err}");
            assert!(
                err.message.contains("malformed") || err.message.contains("BIO prefix"),
                "{err}"
            );
        }
    }

    #[test]
    fn detects_schemes() {
        assert_eq!(TagScheme::detect(["O", "B-PER", "I-PER"]), TagScheme::Bio);
        assert_eq!(TagScheme::detect(["O", "person-other"]), TagScheme::Io);
        assert_eq!(TagScheme::detect(["O", "S-PER", "B-LOC"]), TagScheme::Bioes);
        assert_eq!(TagScheme::detect(["O", "O"]), TagScheme::Bio);
        assert_eq!(TagScheme::detect(["B-PER", "PER"]), TagScheme::Bio);
    }
}
