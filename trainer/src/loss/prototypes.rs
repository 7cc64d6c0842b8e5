//! Class means of entity-word type vectors: the support prototypes (support set) and the
//! posterior means of the variational term (support ∪ query).
//!
//! The mean of type `k` is taken over every word labelled B-k or I-k (label layout of
//! [`ner_edge::decode::labels`]).

use ner_edge::decode::Tag;

/// Per-type means of the type vectors of entity words.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeMeans {
    /// Type dimension `d`.
    pub dim: usize,
    /// `[n_types, d]` row-major; the row of a type with no word is all zeros.
    pub means: Vec<f64>,
    /// Number of words averaged for each type.
    pub counts: Vec<usize>,
}

/// The entity type of a label index, `None` for O.
pub(crate) fn label_type(label: usize) -> Option<usize> {
    Tag::from_index(label).type_index()
}

impl TypeMeans {
    /// Means over the words of `sentences`, each given as (`types` `[T, d]`, `labels` `[T]`).
    ///
    /// Precondition (debug-asserted): `types.len() == labels.len() · d` and every label is below
    /// `1 + 2 n_types`.
    pub fn compute<'a>(
        sentences: impl IntoIterator<Item = (&'a [f64], &'a [usize])>,
        dim: usize,
        n_types: usize,
    ) -> TypeMeans {
        let mut means = vec![0.0; n_types * dim];
        let mut counts = vec![0usize; n_types];
        for (types, labels) in sentences {
            debug_assert_eq!(types.len(), labels.len() * dim);
            for (t, &label) in labels.iter().enumerate() {
                let Some(k) = label_type(label) else {
                    continue;
                };
                debug_assert!(k < n_types);
                counts[k] += 1;
                for (m, v) in means[k * dim..(k + 1) * dim]
                    .iter_mut()
                    .zip(&types[t * dim..(t + 1) * dim])
                {
                    *m += v;
                }
            }
        }
        for (row, &c) in means.chunks_exact_mut(dim.max(1)).zip(&counts) {
            if c > 0 {
                for m in row {
                    *m /= c as f64;
                }
            }
        }
        TypeMeans { dim, means, counts }
    }

    /// Backward for one of the sentences given to [`TypeMeans::compute`]: adds
    /// `d_means[k] / counts[k]` to the gradient of every word of type `k` in `d_types`
    /// (`[T, d]`).
    ///
    /// Precondition (debug-asserted): `d_means.len() == n_types · d` and
    /// `d_types.len() == labels.len() · d`.
    pub fn backward(&self, d_means: &[f64], labels: &[usize], d_types: &mut [f64]) {
        let d = self.dim;
        debug_assert_eq!(d_means.len(), self.counts.len() * d);
        debug_assert_eq!(d_types.len(), labels.len() * d);
        for (t, &label) in labels.iter().enumerate() {
            let Some(k) = label_type(label) else {
                continue;
            };
            let c = self.counts[k] as f64;
            for (g, dm) in d_types[t * d..(t + 1) * d]
                .iter_mut()
                .zip(&d_means[k * d..(k + 1) * d])
            {
                *g += dm / c;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_by_hand_and_backward() {
        let a_types = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let a_labels = [1, 2, 3];
        let b_types = [7.0, 8.0, -1.0, 0.0];
        let b_labels = [0, 1];
        let m = TypeMeans::compute(
            [(&a_types[..], &a_labels[..]), (&b_types[..], &b_labels[..])],
            2,
            3,
        );
        assert_eq!(m.counts, vec![3, 1, 0]);
        assert_eq!(m.means, vec![1.0, 2.0, 5.0, 6.0, 0.0, 0.0]);
        let d_means = [3.0, 6.0, 1.0, 1.0, 9.0, 9.0];
        let mut da = vec![0.0; 6];
        m.backward(&d_means, &a_labels, &mut da);
        assert_eq!(da, vec![1.0, 2.0, 1.0, 2.0, 1.0, 1.0]);
        let mut db = vec![0.0; 4];
        m.backward(&d_means, &b_labels, &mut db);
        assert_eq!(db, vec![0.0, 0.0, 1.0, 2.0]);
    }
}
