//! Collapsed dependency transfer (CDT): unfolding the 21 abstract transition numbers of
//! [`CdtParams`] into a dense transition matrix for the active label set.

use serde::{Deserialize, Serialize};

use super::labels::{label_count, Tag};
use crate::{Error, Result};

/// The 21 learned collapsed-dependency-transfer numbers (DESIGN §3).
///
/// `matrix[from][to]`: rows are abstract previous tags {O, B, I}; columns are abstract next tags
/// {O, B, I, B′, I′}, where B/I mean "same type as the previous tag" and B′/I′ "another type".
/// For the O row "same type" has no meaning: O→B-x uses column B, O→I-x column I, and columns
/// B′, I′ of row O are unused. `start` and `end` are indexed {O, B, I}.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CdtParams {
    /// Transition scores (log space) `[from {O, B, I}][to {O, B, I, B′, I′}]`.
    pub matrix: [[f32; 5]; 3],
    /// Score of a path that starts with an O, B or I tag.
    pub start: [f32; 3],
    /// Score of a path that ends with an O, B or I tag.
    pub end: [f32; 3],
}

/// Abstract CDT column indices of [`CdtParams::matrix`]: O, B, I (same type), B′, I′ (other type).
const COL_O: usize = 0;
const COL_B: usize = 1;
const COL_I: usize = 2;
const COL_B_OTHER: usize = 3;
const COL_I_OTHER: usize = 4;

/// Dense transition scores for one label set (layout of [`super::labels`]).
///
/// A path `y_0 .. y_{T-1}` scores
/// `start[y_0] + Σ_t emission[t][y_t] + Σ_{t>0} trans[y_{t-1} * n_labels + y_t] + end[y_{T-1}]`.
/// Entries may be `f32::NEG_INFINITY` (forbidden); they must not be NaN or `+inf`.
#[derive(Clone, Debug, PartialEq)]
pub struct Transitions {
    /// Number of labels `L`.
    pub n_labels: usize,
    /// `[L]` score of starting a sentence with each label.
    pub start: Vec<f32>,
    /// `[L]` score of ending a sentence with each label.
    pub end: Vec<f32>,
    /// `[L, L]` row-major, `trans[from * L + to]`.
    pub trans: Vec<f32>,
}

impl Transitions {
    /// Checks that the vectors have the lengths `n_labels` asks for and that no entry is NaN or
    /// `+inf`. Decoding functions assume this holds (they check it only with `debug_assert`).
    pub fn check(&self) -> Result<()> {
        let l = self.n_labels;
        if self.start.len() != l || self.end.len() != l || self.trans.len() != l * l {
            return Err(Error::Bundle(format!(
                "transitions for {l} labels need start/end of {l} and trans of {}, got {}/{}/{}",
                l * l,
                self.start.len(),
                self.end.len(),
                self.trans.len()
            )));
        }
        let bad = |x: &f32| x.is_nan() || *x == f32::INFINITY;
        if self
            .start
            .iter()
            .chain(&self.end)
            .chain(&self.trans)
            .any(bad)
        {
            return Err(Error::Bundle(
                "transition scores contain NaN or +inf".into(),
            ));
        }
        Ok(())
    }

    /// Score of the transition `from → to`.
    #[inline]
    pub fn get(&self, from: usize, to: usize) -> f32 {
        self.trans[from * self.n_labels + to]
    }

    /// A copy with the hard BIO constraints applied: `start → I-x` and every `from → I-x` where
    /// `from` is not B-x or I-x become `-inf`; all other entries are kept. The decoders apply the
    /// constraints themselves, so transitions built by hand need not contain them.
    ///
    /// Precondition: the lengths match `n_labels` ([`Transitions::check`]).
    pub fn with_bio_constraints(&self) -> Transitions {
        let mut out = self.clone();
        apply_bio_constraints(&mut out.start, &mut out.trans, self.n_labels);
        out
    }
}

/// Sets forbidden BIO entries of `start` (`[L]`) and `trans` (`[L, L]`) to `-inf`.
pub(crate) fn apply_bio_constraints(start: &mut [f32], trans: &mut [f32], n_labels: usize) {
    for (label, s) in start.iter_mut().enumerate().take(n_labels) {
        if !Tag::from_index(label).may_follow(None) {
            *s = f32::NEG_INFINITY;
        }
    }
    if n_labels == 0 {
        return;
    }
    for (from, row) in trans.chunks_exact_mut(n_labels).enumerate().take(n_labels) {
        let f = Tag::from_index(from);
        for (to, w) in row.iter_mut().enumerate() {
            if !Tag::from_index(to).may_follow(Some(f)) {
                *w = f32::NEG_INFINITY;
            }
        }
    }
}

/// Unfolds the abstract CDT parameters for `n_types` active types, with hard BIO constraints.
///
/// Learned part (see the [`CdtParams`] doc; `m = params.matrix`, rows and columns by abstract
/// tag; `x`, `y` are type indices):
///
/// | from \ to | O           | B-x                                   | I-x                                   |
/// |-----------|-------------|---------------------------------------|---------------------------------------|
/// | start     | `start[O]`  | `start[B]`                            | `start[I]`                            |
/// | O         | `m[O][O]`   | `m[O][B]`                             | `m[O][I]`                             |
/// | B-y       | `m[B][O]`   | `m[B][B]` if x = y, else `m[B][B′]`   | `m[B][I]` if x = y, else `m[B][I′]`   |
/// | I-y       | `m[I][O]`   | `m[I][B]` if x = y, else `m[I][B′]`   | `m[I][I]` if x = y, else `m[I][I′]`   |
/// | end       | `end[O]`    | `end[B]`                              | `end[I]`                              |
///
/// Hard BIO constraints are then applied on top as `f32::NEG_INFINITY`, overriding the learned
/// value: I-x may only follow B-x or I-x, so `start → I-x`, `O → I-x`, and `B-y → I-x`,
/// `I-y → I-x` for `y ≠ x` are forbidden. The learned `start[I]`, `m[O][I]`, `m[B][I′]` and
/// `m[I][I′]` therefore never reach the decoder. Ending on any label is allowed.
///
/// With `n_types == 0` the only label is O: `trans = [m[O][O]]`, `start = [start[O]]`,
/// `end = [end[O]]`.
pub fn unfold(params: &CdtParams, n_types: usize) -> Transitions {
    let l = label_count(n_types);
    let m = &params.matrix;
    let mut trans = vec![0.0f32; l * l];
    for (from, row) in trans.chunks_exact_mut(l).enumerate() {
        let f = Tag::from_index(from);
        for (to, score) in row.iter_mut().enumerate() {
            let t = Tag::from_index(to);
            let same = f.type_index() == t.type_index();
            let col = match (f, t) {
                (_, Tag::O) => COL_O,
                (Tag::O, Tag::B(_)) => COL_B,
                (Tag::O, Tag::I(_)) => COL_I,
                (_, Tag::B(_)) if same => COL_B,
                (_, Tag::I(_)) if same => COL_I,
                (_, Tag::B(_)) => COL_B_OTHER,
                (_, Tag::I(_)) => COL_I_OTHER,
            };
            *score = m[f.kind() as usize][col];
        }
    }
    let kind = |i: usize| Tag::from_index(i).kind() as usize;
    let mut start: Vec<f32> = (0..l).map(|i| params.start[kind(i)]).collect();
    let end = (0..l).map(|i| params.end[kind(i)]).collect();
    apply_bio_constraints(&mut start, &mut trans, l);
    Transitions {
        n_labels: l,
        start,
        end,
        trans,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> CdtParams {
        let mut matrix = [[0.0; 5]; 3];
        for (r, row) in matrix.iter_mut().enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                *v = (10 * r + c) as f32;
            }
        }
        CdtParams {
            matrix,
            start: [100.0, 101.0, 102.0],
            end: [200.0, 201.0, 202.0],
        }
    }

    #[test]
    fn two_types_by_hand() {
        let t = unfold(&params(), 2);
        t.check().unwrap();
        let ninf = f32::NEG_INFINITY;
        // Labels: O, B0, I0, B1, I1.
        #[rustfmt::skip]
        let want = [
            0.0, 1.0, ninf, 1.0, ninf,
            10.0, 11.0, 12.0, 13.0, ninf,
            20.0, 21.0, 22.0, 23.0, ninf,
            10.0, 13.0, ninf, 11.0, 12.0,
            20.0, 23.0, ninf, 21.0, 22.0,
        ];
        assert_eq!(t.trans, want);
        assert_eq!(t.start, vec![100.0, 101.0, ninf, 101.0, ninf]);
        assert_eq!(t.end, vec![200.0, 201.0, 202.0, 201.0, 202.0]);
    }

    #[test]
    fn no_types_is_o_only() {
        let t = unfold(&params(), 0);
        assert_eq!(t.n_labels, 1);
        assert_eq!(t.trans, vec![0.0]);
        assert_eq!(t.start, vec![100.0]);
        assert_eq!(t.end, vec![200.0]);
    }

    #[test]
    fn check_rejects_bad_shapes_and_nan() {
        let mut t = unfold(&params(), 1);
        t.trans.pop();
        assert!(t.check().is_err());
        let mut t = unfold(&params(), 1);
        t.end[0] = f32::NAN;
        assert!(t.check().is_err());
    }
}
