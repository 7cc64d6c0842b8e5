//! Character classes and per-char normalisation of BERT's basic tokenizer.
//!
//! The classes follow the reference implementation (HF `tokenizers`), whose Unicode tables are
//! older than the current standard; see `tools/scripts/gen_unicode_tables.py`.

use std::str::Chars;

use super::tables::{CCC, CJK, MN, NFD, PUNCT, REMOVED};

/// [`ASCII_CLASS`] of a char that text cleaning deletes.
pub(crate) const A_REMOVED: u8 = 0;
/// [`ASCII_CLASS`] of whitespace.
pub(crate) const A_SPACE: u8 = 1;
/// [`ASCII_CLASS`] of punctuation.
pub(crate) const A_PUNCT: u8 = 2;
/// [`ASCII_CLASS`] of any other char (letters, digits): part of a word.
pub(crate) const A_WORD: u8 = 3;

/// Class of each ASCII char: control chars other than `\t \n \r` are removed by cleaning.
pub(crate) static ASCII_CLASS: [u8; 128] = ascii_classes();

const fn ascii_classes() -> [u8; 128] {
    let mut t = [A_WORD; 128];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        t[b] = if c == b'\t' || c == b'\n' || c == b'\r' || c == b' ' {
            A_SPACE
        } else if c < 0x20 || c == 0x7f {
            A_REMOVED
        } else if c.is_ascii_punctuation() {
            A_PUNCT
        } else {
            A_WORD
        };
        b += 1;
    }
    t
}

#[inline]
fn in_ranges(table: &[(u32, u32)], c: char) -> bool {
    let cp = c as u32;
    let i = table.partition_point(|&(_, hi)| hi < cp);
    table.get(i).is_some_and(|&(lo, _)| lo <= cp)
}

/// Deleted by text cleaning: control and format chars (but `\t \n \r`), private use, U+0000,
/// U+FFFD.
#[inline]
pub(crate) fn is_removed(c: char) -> bool {
    in_ranges(&REMOVED, c)
}

/// Splits words and is dropped: Unicode `White_Space` (includes `\t \n \r`).
#[inline]
pub(crate) fn is_whitespace(c: char) -> bool {
    c.is_whitespace()
}

/// Becomes a word of its own when `tokenize_chinese_chars` is on (CJK ideograph blocks).
#[inline]
pub(crate) fn is_cjk(c: char) -> bool {
    in_ranges(&CJK, c)
}

/// Split off as a word of its own by the pre-tokenizer: ASCII punctuation or Unicode `P*`.
#[inline]
pub(crate) fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || (!c.is_ascii() && in_ranges(&PUNCT, c))
}

const HANGUL_FIRST: u32 = 0xAC00;
const HANGUL_LAST: u32 = 0xD7A3;
/// First code point with a decomposition, a combining class or category Mn.
const FIRST_MARK_OR_DECOMPOSABLE: u32 = 0xC0;

/// Dropped by accent stripping after NFD: nonspacing marks (general category Mn).
#[inline]
pub(crate) fn is_nonspacing_mark(c: char) -> bool {
    (c as u32) >= FIRST_MARK_OR_DECOMPOSABLE && in_ranges(&MN, c)
}

/// Canonical combining class (0 for starters).
#[inline]
pub(crate) fn combining_class(c: char) -> u8 {
    let cp = c as u32;
    if cp < FIRST_MARK_OR_DECOMPOSABLE {
        return 0;
    }
    let i = CCC.partition_point(|&(_, hi, _)| hi < cp);
    match CCC.get(i) {
        Some(&(lo, _, class)) if lo <= cp => class,
        _ => 0,
    }
}

/// The canonical decomposition (NFD, before reordering across chars) of one char.
pub(crate) enum Decomposed {
    One(Option<char>),
    Many(Chars<'static>),
    Hangul([char; 3], u8, u8),
}

impl Iterator for Decomposed {
    type Item = char;

    #[inline]
    fn next(&mut self) -> Option<char> {
        match self {
            Decomposed::One(c) => c.take(),
            Decomposed::Many(chars) => chars.next(),
            Decomposed::Hangul(jamo, next, len) => {
                if *next >= *len {
                    return None;
                }
                let c = jamo.get(*next as usize).copied();
                *next += 1;
                c
            }
        }
    }
}

/// Full canonical decomposition of `c`; Hangul syllables are decomposed algorithmically.
#[inline]
pub(crate) fn decompose(c: char) -> Decomposed {
    let cp = c as u32;
    if cp < FIRST_MARK_OR_DECOMPOSABLE {
        return Decomposed::One(Some(c));
    }
    if (HANGUL_FIRST..=HANGUL_LAST).contains(&cp) {
        let s = cp - HANGUL_FIRST;
        let l = char::from_u32(0x1100 + s / 588);
        let v = char::from_u32(0x1161 + (s % 588) / 28);
        let t = char::from_u32(0x11A7 + s % 28);
        return match (l, v, t) {
            (Some(l), Some(v), Some(t)) => {
                Decomposed::Hangul([l, v, t], 0, if s.is_multiple_of(28) { 2 } else { 3 })
            }
            _ => Decomposed::One(Some(c)),
        };
    }
    match NFD.binary_search_by_key(&cp, |&(k, _)| k) {
        Ok(i) => match NFD.get(i) {
            Some(&(_, s)) => Decomposed::Many(s.chars()),
            None => Decomposed::One(Some(c)),
        },
        Err(_) => Decomposed::One(Some(c)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NFD of a single-char-per-run text without its nonspacing marks.
    fn strip(s: &str) -> String {
        s.chars()
            .flat_map(decompose)
            .filter(|&c| !is_nonspacing_mark(c))
            .collect()
    }

    #[test]
    fn tables_are_sorted_and_disjoint() {
        for table in [&REMOVED[..], &CJK[..], &PUNCT[..], &MN[..]] {
            for w in table.windows(2) {
                assert!(w[0].0 <= w[0].1 && w[0].1 < w[1].0, "{w:x?}");
            }
        }
        for w in CCC.windows(2) {
            assert!(w[0].0 <= w[0].1 && w[0].1 < w[1].0 && w[0].2 > 0, "{w:x?}");
        }
        for w in NFD.windows(2) {
            assert!(w[0].0 < w[1].0);
        }
    }

    #[test]
    fn classes() {
        for c in [
            '\0', '\u{7}', '\u{200b}', '\u{feff}', '\u{fffd}', '\u{ad}', '\u{e000}', '\u{b}',
            '\u{85}',
        ] {
            assert!(is_removed(c), "{c:?}");
        }
        for c in [
            'a',
            'é',
            ' ',
            '\t',
            '\u{3000}',
            '中',
            '\u{1f600}',
            '\u{10ffff}',
        ] {
            assert!(!is_removed(c), "{c:?}");
        }
        for c in [
            ' ', '\t', '\n', '\r', '\u{a0}', '\u{3000}', '\u{2028}', '\u{202f}',
        ] {
            assert!(is_whitespace(c), "{c:?}");
        }
        for c in [
            '.', '!', '~', '$', '+', '`', '¡', '¿', '«', '»', '“', '”', '—', '、', '。', '\u{166d}',
        ] {
            assert!(is_punctuation(c), "{c:?}");
        }
        for c in ['a', '€', '£', '©', '×', '∑', '😀', '中', '\u{2e43}'] {
            assert!(!is_punctuation(c), "{c:?}");
        }
        for c in [
            '中',
            '\u{3400}',
            '\u{f900}',
            '\u{20000}',
            '\u{2b920}',
            '\u{2f800}',
        ] {
            assert!(is_cjk(c), "{c:?}");
        }
        for c in ['a', 'あ', 'ア', '한', '\u{2b820}', '\u{3000}'] {
            assert!(!is_cjk(c), "{c:?}");
        }
        for b in 0u8..128 {
            let c = char::from(b);
            let class = ASCII_CLASS[b as usize];
            assert_eq!(class == A_REMOVED, is_removed(c), "{c:?}");
            assert_eq!(
                class == A_SPACE,
                is_whitespace(c) && !is_removed(c),
                "{c:?}"
            );
            assert_eq!(class == A_PUNCT, is_punctuation(c), "{c:?}");
        }
    }

    #[test]
    fn accent_stripping() {
        assert_eq!(strip("Café Ångström naïve São"), "Cafe Angstrom naive Sao");
        assert_eq!(strip("e\u{301}\u{302}"), "e");
        assert_eq!(strip("\u{301}"), "");
        assert_eq!(
            strip("한국"),
            "\u{1112}\u{1161}\u{11ab}\u{1100}\u{116e}\u{11a8}"
        );
        assert_eq!(strip("가"), "\u{1100}\u{1161}");
        assert_eq!(strip("\u{f900}"), "\u{8c48}");
        assert_eq!(strip("plain ascii 123"), "plain ascii 123");
        assert_eq!(combining_class('\u{301}'), 230);
        assert_eq!(combining_class('\u{327}'), 202);
        assert_eq!(combining_class('\u{1b44}'), 9);
        assert_eq!(combining_class('a'), 0);
        assert!(!is_nonspacing_mark('\u{1b44}'));
        assert!(is_nonspacing_mark('\u{1734}'));
    }
}
