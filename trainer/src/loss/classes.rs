//! Learned vectors in the prototype space: one class vector per entity-type name of the
//! training corpora (the dense loss scores against them, and they become the exported
//! prototype bank), and the two "none of these types" vectors.

use anyhow::{ensure, Result};

use crate::model::rng::SplitMix64;

/// Tensor name of the class vectors (`[names, type_dim]`).
pub const CLASSES: &str = "classes.weight";
/// Tensor name of the two "other" vectors (`[2, type_dim]`).
pub const OTHER: &str = "other.weight";

/// Row of [`ClassParams::other`] scored beside class vectors (bank prototypes).
pub const OTHER_BESIDE_CLASSES: usize = 0;
/// Row of [`ClassParams::other`] scored beside prototypes averaged from examples.
pub const OTHER_BESIDE_SUPPORT: usize = 1;

/// Class vectors and "other" vectors, each `type_dim` wide.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassParams {
    /// Width of every vector (the model's `type_dim`).
    pub type_dim: usize,
    /// Sorted distinct type names; row `i` of `classes` belongs to `names[i]`.
    pub names: Vec<String>,
    /// `[names.len(), type_dim]`.
    pub classes: Vec<f32>,
    /// `[2, type_dim]`, or empty when the run has no "other" type.
    pub other: Vec<f32>,
}

impl ClassParams {
    /// Initial vectors N(0, 0.02²) for `names` (sorted and deduplicated here) and, when
    /// `other`, the two other-type rows.
    pub fn init(type_dim: usize, mut names: Vec<String>, other: bool, seed: u64) -> ClassParams {
        names.sort();
        names.dedup();
        let mut rng = SplitMix64::new(seed);
        ClassParams {
            type_dim,
            classes: rng.normal_vec(names.len() * type_dim, 0.02),
            other: if other {
                rng.normal_vec(2 * type_dim, 0.02)
            } else {
                Vec::new()
            },
            names,
        }
    }

    /// The same shapes, all zero: a gradient accumulator.
    pub fn zeros_like(&self) -> ClassParams {
        ClassParams {
            type_dim: self.type_dim,
            names: self.names.clone(),
            classes: vec![0.0; self.classes.len()],
            other: vec![0.0; self.other.len()],
        }
    }

    /// Whether the run has "other" vectors.
    pub fn has_other(&self) -> bool {
        !self.other.is_empty()
    }

    /// Row `row` ([`OTHER_BESIDE_CLASSES`] or [`OTHER_BESIDE_SUPPORT`]) of the other vectors;
    /// `None` without them.
    pub fn other_row(&self, row: usize) -> Option<&[f32]> {
        let d = self.type_dim;
        self.other.get(row * d..(row + 1) * d)
    }

    /// Index of `name` in [`ClassParams::names`].
    pub fn index(&self, name: &str) -> Option<usize> {
        self.names.binary_search_by(|n| n.as_str().cmp(name)).ok()
    }

    /// Class vector of row `i`.
    pub fn class(&self, i: usize) -> &[f32] {
        &self.classes[i * self.type_dim..(i + 1) * self.type_dim]
    }

    /// Checks the lengths against `names` and `type_dim`.
    pub fn check(&self) -> Result<()> {
        ensure!(
            self.classes.len() == self.names.len() * self.type_dim,
            "class vectors: {} values for {} names of width {}",
            self.classes.len(),
            self.names.len(),
            self.type_dim
        );
        ensure!(
            self.other.is_empty() || self.other.len() == 2 * self.type_dim,
            "other vectors: {} values, expected [2, {}]",
            self.other.len(),
            self.type_dim
        );
        Ok(())
    }

    /// The non-empty tensors, [`CLASSES`] then [`OTHER`].
    pub fn tensors(&self) -> Vec<(String, &[f32])> {
        let mut out: Vec<(String, &[f32])> = Vec::new();
        if !self.classes.is_empty() {
            out.push((CLASSES.into(), &self.classes));
        }
        if !self.other.is_empty() {
            out.push((OTHER.into(), &self.other));
        }
        out
    }

    /// [`ClassParams::tensors`], mutable, same order.
    pub fn tensors_mut(&mut self) -> Vec<(String, &mut [f32])> {
        let mut out: Vec<(String, &mut [f32])> = Vec::new();
        if !self.classes.is_empty() {
            out.push((CLASSES.into(), &mut self.classes));
        }
        if !self.other.is_empty() {
            out.push((OTHER.into(), &mut self.other));
        }
        out
    }

    /// Adds `scale · grad` to class row `i`.
    pub fn add_to_class(&mut self, i: usize, grad: &[f32], scale: f32) {
        let d = self.type_dim;
        for (a, &g) in self.classes[i * d..(i + 1) * d].iter_mut().zip(grad) {
            *a += scale * g;
        }
    }

    /// Adds `scale · grad` to other row `row` (nothing without other vectors).
    pub fn add_to_other(&mut self, row: usize, grad: &[f32], scale: f32) {
        let d = self.type_dim;
        if let Some(dst) = self.other.get_mut(row * d..(row + 1) * d) {
            for (a, &g) in dst.iter_mut().zip(grad) {
                *a += scale * g;
            }
        }
    }

    /// Adds another accumulator of the same shapes.
    pub fn add(&mut self, other: &ClassParams) {
        for (a, b) in self.classes.iter_mut().zip(&other.classes) {
            *a += b;
        }
        for (a, b) in self.other.iter_mut().zip(&other.other) {
            *a += b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sorted_and_tensors_skip_what_is_absent() {
        let p = ClassParams::init(3, vec!["b".into(), "a".into(), "b".into()], false, 1);
        p.check().unwrap();
        assert_eq!(p.names, ["a", "b"]);
        assert_eq!(p.index("b"), Some(1));
        assert_eq!(p.index("c"), None);
        let names: Vec<String> = p.tensors().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, [CLASSES]);
        assert!(p.other_row(OTHER_BESIDE_SUPPORT).is_none());
        let q = ClassParams::init(3, Vec::new(), true, 1);
        let names: Vec<String> = q.tensors().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, [OTHER]);
        assert_eq!(q.other_row(OTHER_BESIDE_SUPPORT).unwrap().len(), 3);
        let mut z = q.zeros_like();
        z.add_to_other(1, &[1.0, 2.0, 3.0], 2.0);
        assert_eq!(z.other, [0.0, 0.0, 0.0, 2.0, 4.0, 6.0]);
    }
}
