//! XLM-R's normalisation and pre-tokenisation with alignments: the precompiled map applied per
//! grapheme (falling back to per char), runs of two or more spaces collapsed to one, spaces
//! turned into the metaspace `▁`, one `▁` prepended, words split before every `▁`.
//!
//! Each normalised char keeps the byte range of the original char it is aligned to, with the
//! reference pipeline's rules (Hugging Face `tokenizers`: `Precompiled`, `Replace(" {2,}", " ")`,
//! `Metaspace(add_prefix_space)`): a replacement's first chars take the original chars in turn,
//! extra chars repeat the previous alignment, and a replacement that removes chars gives the
//! removed ones to nobody. The reference's quirks are kept, since the ids and offsets must match
//! it: a map entry that deletes a char (e.g. a control char) shortens the *previous* output
//! char's claim, so the next kept char is aligned one original char early.

use std::ops::Range;

use unicode_segmentation::UnicodeSegmentation;

use super::charsmap::CharsMap;

/// The SentencePiece metaspace, U+2581.
pub const METASPACE: char = '\u{2581}';

/// Graphemes of this many bytes or more are never looked up whole.
const MAX_GRAPHEME_BYTES: usize = 6;

/// One normalised char and the byte range of the original char it is aligned to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aligned {
    /// The normalised char.
    pub c: char,
    /// Byte range in the original text.
    pub orig: Range<usize>,
}

/// `text` after the precompiled map, with alignments ([`Aligned`]).
pub fn precompiled(map: &CharsMap, text: &str) -> Vec<Aligned> {
    let mut edits: Vec<(char, isize)> = Vec::with_capacity(text.len());
    let mut modified = false;
    for grapheme in text.graphemes(true) {
        if grapheme.len() < MAX_GRAPHEME_BYTES {
            if let Some(norm) = map.transform(grapheme) {
                modified = true;
                replace(&mut edits, grapheme, norm);
                continue;
            }
        }
        for (i, c) in grapheme.char_indices() {
            let part = &grapheme[i..i + c.len_utf8()];
            match map.transform(part) {
                Some(norm) => {
                    modified = true;
                    replace(&mut edits, part, norm);
                }
                None => edits.push((c, 0)),
            }
        }
    }
    let originals: Vec<Range<usize>> = text
        .char_indices()
        .map(|(i, c)| i..i + c.len_utf8())
        .collect();
    if !modified {
        return text
            .chars()
            .zip(originals)
            .map(|(c, orig)| Aligned { c, orig })
            .collect();
    }
    apply(&edits, &originals)
}

/// Records the replacement of `old` by `new`: new chars take old chars in order; with more new
/// chars, the extra ones are insertions; with fewer, the last edit so far removes the rest.
fn replace(edits: &mut Vec<(char, isize)>, old: &str, new: &str) {
    let old_count = old.chars().count() as isize;
    let new_count = new.chars().count() as isize;
    let diff = new_count - old_count;
    edits.extend(new.chars().map(|c| (c, 0)));
    if diff > 0 {
        for edit in edits.iter_mut().rev().take(diff as usize) {
            edit.1 = 1;
        }
    } else if diff < 0 {
        if let Some(last) = edits.last_mut() {
            last.1 += diff;
        }
    }
}

/// Walks the original chars with the edits: change 0 takes the next original char's alignment,
/// a positive change repeats the previous one (empty at the start), a negative change also
/// skips that many original chars.
fn apply(edits: &[(char, isize)], originals: &[Range<usize>]) -> Vec<Aligned> {
    let mut out = Vec::with_capacity(edits.len());
    let mut cursor = 0usize;
    for &(c, change) in edits {
        let orig = if change > 0 {
            match cursor.checked_sub(1).and_then(|i| originals.get(i)) {
                Some(r) => r.clone(),
                None => 0..0,
            }
        } else {
            let r = originals.get(cursor).cloned().unwrap_or_else(|| {
                let end = originals.last().map_or(0, |r| r.end);
                end..end
            });
            cursor += 1 + change.unsigned_abs();
            r
        };
        out.push(Aligned { c, orig });
    }
    out
}

/// Collapses every run of two or more U+0020 into one, aligned to the run's last space.
pub fn collapse_spaces(chars: &mut Vec<Aligned>) {
    let mut write = 0;
    let mut read = 0;
    while read < chars.len() {
        if chars[read].c == ' ' {
            let mut end = read + 1;
            while end < chars.len() && chars[end].c == ' ' {
                end += 1;
            }
            chars.swap(write, end - 1);
            write += 1;
            read = end;
        } else {
            chars.swap(write, read);
            write += 1;
            read += 1;
        }
    }
    chars.truncate(write);
}

/// Spaces become [`METASPACE`]; a `▁` aligned with the first char is prepended unless the text
/// already starts with one.
pub fn metaspace(chars: &mut Vec<Aligned>) {
    for a in chars.iter_mut() {
        if a.c == ' ' {
            a.c = METASPACE;
        }
    }
    if let Some(first) = chars.first() {
        if first.c != METASPACE {
            let orig = first.orig.clone();
            chars.insert(0, Aligned { c: METASPACE, orig });
        }
    }
}

/// Word ranges (indices into `chars`): a new word starts at every [`METASPACE`].
pub fn split_words(chars: &[Aligned]) -> Vec<Range<usize>> {
    let mut words = Vec::new();
    let mut start = 0;
    for (i, a) in chars.iter().enumerate() {
        if a.c == METASPACE && i > start {
            words.push(start..i);
            start = i;
        }
    }
    if start < chars.len() {
        words.push(start..chars.len());
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aligned(s: &str) -> Vec<Aligned> {
        s.char_indices()
            .map(|(i, c)| Aligned {
                c,
                orig: i..i + c.len_utf8(),
            })
            .collect()
    }

    #[test]
    fn space_runs_keep_the_last_space() {
        let mut chars = aligned("  a   b ");
        collapse_spaces(&mut chars);
        let text: String = chars.iter().map(|a| a.c).collect();
        assert_eq!(text, " a b ");
        assert_eq!(chars[0].orig, 1..2);
        assert_eq!(chars[2].orig, 5..6);
        assert_eq!(chars[4].orig, 7..8);
    }

    #[test]
    fn metaspace_prepends_once_and_splits_before_each_marker() {
        let mut chars = aligned("ab c");
        metaspace(&mut chars);
        let text: String = chars.iter().map(|a| a.c).collect();
        assert_eq!(text, "▁ab▁c");
        assert_eq!(chars[0].orig, 0..1);
        assert_eq!(split_words(&chars), vec![0..3, 3..5]);
        let mut leading = aligned(" x");
        metaspace(&mut leading);
        assert_eq!(leading.len(), 2);
        assert!(split_words(&[]).is_empty());
    }

    #[test]
    fn deletions_and_insertions_follow_the_reference_alignment_rules() {
        let originals: Vec<Range<usize>> = vec![0..1, 1..2, 2..3];
        let mut edits = Vec::new();
        replace(&mut edits, "a", "xy");
        replace(&mut edits, "b", "");
        edits.push(('c', 0));
        let out = apply(&edits, &originals);
        let got: Vec<(char, Range<usize>)> = out.into_iter().map(|a| (a.c, a.orig)).collect();
        assert_eq!(got, vec![('x', 0..1), ('y', 1..2), ('c', 2..3)]);
    }
}
