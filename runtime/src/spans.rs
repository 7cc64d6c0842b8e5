//! Entities from a decoded label path.

use crate::decode::{Marginals, Tag};

/// One entity over words `start_word .. end_word` (end exclusive) of a sentence.
#[derive(Clone, Debug, PartialEq)]
pub struct Entity {
    /// First word.
    pub start_word: usize,
    /// Exclusive end.
    pub end_word: usize,
    /// Index of the type in the active label set.
    pub type_index: usize,
    /// Confidence in `[0, 1]`: the CRF probability of exactly this entity
    /// ([`Marginals::span_probability`]), or 1 when no marginals were given.
    pub score: f32,
}

/// Turns a label path (layout of [`crate::decode::labels`]) into entities, in order of position.
///
/// An entity starts at B-k and extends over the I-k that directly follow. Paths from the decoder
/// are valid BIO sequences; for other paths an I-k that does not continue an entity of type k
/// starts a new one (as conlleval does). With `marginals` the score of each entity is its exact
/// CRF probability; `marginals` must come from the same sentence (a position or type it does not
/// cover scores 0).
pub fn extract_entities(path: &[usize], marginals: Option<&Marginals>) -> Vec<Entity> {
    let mut entities = Vec::new();
    let mut open: Option<(usize, usize)> = None;
    let close = |open: Option<(usize, usize)>, end: usize, entities: &mut Vec<Entity>| {
        if let Some((start, k)) = open {
            let score = marginals.map_or(1.0, |m| m.span_probability(start, end - 1, k));
            entities.push(Entity {
                start_word: start,
                end_word: end,
                type_index: k,
                score,
            });
        }
    };
    for (pos, &label) in path.iter().enumerate() {
        match Tag::from_index(label) {
            Tag::O => {
                close(open.take(), pos, &mut entities);
            }
            Tag::B(k) => {
                close(open.take(), pos, &mut entities);
                open = Some((pos, k));
            }
            Tag::I(k) => {
                if !matches!(open, Some((_, o)) if o == k) {
                    close(open.take(), pos, &mut entities);
                    open = Some((pos, k));
                }
            }
        }
    }
    close(open, path.len(), &mut entities);
    entities
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::CdtParams;
    use crate::decode::{marginals, unfold};

    fn ent(start_word: usize, end_word: usize, type_index: usize) -> Entity {
        Entity {
            start_word,
            end_word,
            type_index,
            score: 1.0,
        }
    }

    #[test]
    fn extracts_bio_chunks() {
        // O B0 I0 B1 B1 I1 I1 O B0
        let path = [0, 1, 2, 3, 3, 4, 4, 0, 1];
        let got = extract_entities(&path, None);
        assert_eq!(
            got,
            vec![ent(1, 3, 0), ent(3, 4, 1), ent(4, 7, 1), ent(8, 9, 0)]
        );
        assert!(extract_entities(&[], None).is_empty());
        assert!(extract_entities(&[0, 0], None).is_empty());
    }

    #[test]
    fn lenient_on_invalid_paths() {
        // I0 I1 I1 B0 I1
        let got = extract_entities(&[2, 4, 4, 1, 4], None);
        assert_eq!(
            got,
            vec![ent(0, 1, 0), ent(1, 3, 1), ent(3, 4, 0), ent(4, 5, 1)]
        );
    }

    #[test]
    fn scores_come_from_marginals() {
        let params = CdtParams {
            matrix: [[0.5; 5]; 3],
            start: [0.0; 3],
            end: [0.0; 3],
        };
        let t = unfold(&params, 2);
        let em: Vec<f32> = (0..4 * 5)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.4)
            .collect();
        let m = marginals(&em, 5, &t);
        let path = [1, 2, 0, 3];
        let got = extract_entities(&path, Some(&m));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].score, m.span_probability(0, 1, 0));
        assert_eq!(got[1].score, m.span_probability(3, 3, 1));
        assert!(got.iter().all(|e| e.score > 0.0 && e.score <= 1.0));
    }
}
