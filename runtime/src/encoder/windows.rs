//! Splitting sequences longer than the encoder's positions into overlapping windows.

/// One window over a sequence of `len` pieces: the encoder sees `start..end`; the scores of
/// `keep_start..keep_end` are taken from this window. Keep ranges of consecutive windows tile
/// `0..len` exactly, and each piece is kept from the window where it is furthest from an edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// First piece the encoder sees.
    pub start: usize,
    /// End (exclusive) of the pieces the encoder sees.
    pub end: usize,
    /// First piece whose scores are taken from this window.
    pub keep_start: usize,
    /// End (exclusive) of the pieces whose scores are taken from this window.
    pub keep_end: usize,
}

/// Windows of at most `max` pieces over `len` pieces, consecutive windows overlapping by
/// about half a window. `len == 0` gives no window; `max == 0` is treated as 1.
pub fn plan_windows(len: usize, max: usize) -> Vec<Window> {
    let max = max.max(1);
    if len == 0 {
        return Vec::new();
    }
    if len <= max {
        return vec![Window {
            start: 0,
            end: len,
            keep_start: 0,
            keep_end: len,
        }];
    }
    let step = (max / 2).max(1);
    let mut starts = Vec::new();
    let mut s = 0;
    while s + max < len {
        starts.push(s);
        s += step;
    }
    starts.push(len - max);
    let mut windows: Vec<Window> = Vec::with_capacity(starts.len());
    for (i, &start) in starts.iter().enumerate() {
        let end = start + max;
        let keep_start = if i == 0 { 0 } else { windows[i - 1].keep_end };
        let keep_end = match starts.get(i + 1) {
            Some(&next) => (next + end).div_ceil(2).max(keep_start),
            None => len,
        };
        windows.push(Window {
            start,
            end,
            keep_start,
            keep_end,
        });
    }
    windows
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn windows_tile_the_sequence(len in 0usize..3000, max in 1usize..600) {
            let ws = plan_windows(len, max);
            let mut at = 0;
            for w in &ws {
                prop_assert!(w.end - w.start <= max);
                prop_assert!(w.start <= w.keep_start && w.keep_end <= w.end);
                prop_assert_eq!(w.keep_start, at);
                at = w.keep_end;
            }
            prop_assert_eq!(at, len);
            if max >= 8 {
                for w in &ws {
                    let left = w.keep_start - w.start;
                    let right = w.end - w.keep_end;
                    prop_assert!(w.start == 0 || left >= max / 4 - 1, "{:?}", w);
                    prop_assert!(w.end == len || right >= max / 4 - 1, "{:?}", w);
                }
            }
        }
    }

    #[test]
    fn short_sequence_is_one_window() {
        assert_eq!(
            plan_windows(5, 10),
            vec![Window {
                start: 0,
                end: 5,
                keep_start: 0,
                keep_end: 5
            }]
        );
        assert!(plan_windows(0, 10).is_empty());
    }
}
