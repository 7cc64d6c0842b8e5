//! Word-shape classes: the casing of the original text, which an uncased vocabulary throws away.
//!
//! Every word piece gets the class of the BERT basic token it belongs to (a whitespace- and
//! punctuation-delimited word), computed from that token's original characters:
//!
//! | id | class | rule (over the token's cased letters, digits otherwise) | examples |
//! |---:|---|---|---|
//! | 0 | other | no cased letter and no digit | `,` `-` `中` `[CLS]` |
//! | 1 | lower | cased letters, none upper-case | `the` `3rd` |
//! | 2 | title | first cased letter upper-case, the others lower-case | `Paris` `I` `U` |
//! | 3 | upper | at least two cased letters, all upper-case | `NATO` `IBM` |
//! | 4 | mixed | any other mix | `iPhone` `McDonald` |
//! | 5 | digit | digits but no cased letter | `1996` `3.5` |
//!
//! Class 0 is also what the encoder gives the `[CLS]`/`[SEP]` it adds around every window and the
//! padding, so a model whose shape row 0 is zero sees exactly the uncased encoder's input wherever
//! there is no case to see.

/// Number of shape classes (ids `0..SHAPE_CLASSES`).
pub const SHAPE_CLASSES: usize = 6;

/// Name of the shape scheme in bundle metadata (`encoder.shape_scheme`).
pub const SHAPE_SCHEME: &str = "case6-v1";

/// One word-shape class; `as u8` gives its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Shape {
    /// No cased letter and no digit: `,` `中` `[CLS]`.
    Other = 0,
    /// Cased letters, none upper case: `the` `3rd`.
    Lower = 1,
    /// First cased letter upper case, the others lower case: `Paris` `I`.
    Title = 2,
    /// At least two cased letters, all upper case: `NATO`.
    Upper = 3,
    /// Any other mix of cases: `iPhone` `McDonald`.
    Mixed = 4,
    /// Digits but no cased letter: `1996` `3.5`.
    Digit = 5,
}

impl Shape {
    /// The class of `word` (see the module docs).
    pub fn of(word: &str) -> Shape {
        let (mut upper, mut lower, mut digit) = (0usize, 0usize, false);
        let mut first_upper = None;
        for c in word.chars() {
            if c.is_uppercase() {
                upper += 1;
                first_upper.get_or_insert(true);
            } else if c.is_lowercase() {
                lower += 1;
                first_upper.get_or_insert(false);
            } else if c.is_numeric() {
                digit = true;
            }
        }
        match (upper, lower) {
            (0, 0) if digit => Shape::Digit,
            (0, 0) => Shape::Other,
            (0, _) => Shape::Lower,
            (1, _) if first_upper == Some(true) => Shape::Title,
            (_, 0) => Shape::Upper,
            _ => Shape::Mixed,
        }
    }

    /// The class the same token would have in all-lower-case text.
    pub fn lowercased(self) -> Shape {
        match self {
            Shape::Title | Shape::Upper | Shape::Mixed => Shape::Lower,
            other => other,
        }
    }

    /// The class with id `id`, `None` outside `0..SHAPE_CLASSES`.
    pub fn from_id(id: u8) -> Option<Shape> {
        Some(match id {
            0 => Shape::Other,
            1 => Shape::Lower,
            2 => Shape::Title,
            3 => Shape::Upper,
            4 => Shape::Mixed,
            5 => Shape::Digit,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn classes_follow_the_table() {
        for (w, s) in [
            (",", Shape::Other),
            ("中", Shape::Other),
            ("", Shape::Other),
            ("the", Shape::Lower),
            ("3rd", Shape::Lower),
            ("Paris", Shape::Title),
            ("I", Shape::Title),
            ("Élodie", Shape::Title),
            ("NATO", Shape::Upper),
            ("iPhone", Shape::Mixed),
            ("McDonald", Shape::Mixed),
            ("1996", Shape::Digit),
            ("3.5", Shape::Digit),
            ("ΑΘΗΝΑ", Shape::Upper),
        ] {
            assert_eq!(Shape::of(w), s, "{w:?}");
        }
    }

    proptest! {
        #[test]
        fn lowercasing_the_text_gives_the_lowercased_class(
            w in "[a-zA-Z0-9ÀÉÈéèçÇΑαΩωЖж.,'\\- 中]{0,12}"
        ) {
            prop_assert_eq!(Shape::of(&w.to_lowercase()), Shape::of(&w).lowercased());
        }

        #[test]
        fn ids_round_trip(id in 0u8..=255) {
            match Shape::from_id(id) {
                Some(s) => prop_assert_eq!(s as u8, id),
                None => prop_assert!(usize::from(id) >= SHAPE_CLASSES),
            }
        }
    }
}
