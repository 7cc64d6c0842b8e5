//! Merging the entities of several label groups into one non-overlapping set.

use crate::spans::Entity;

/// Whether two entities share a word.
fn overlaps(a: &Entity, b: &Entity) -> bool {
    a.start_word < b.end_word && b.start_word < a.end_word
}

/// Merges `found`, the entities of several groups as `(group, entity)` (entities of one group
/// do not overlap each other), into entities that do not overlap at all, in text order.
///
/// An entity that overlaps no entity of another group is kept as it is. Contested entities
/// are ranked by `conflict_score` (called only for them), higher first; ties go to the earlier
/// group, then the earlier start; each is kept unless it overlaps one already kept. So the
/// result does not depend on the order of `found`, and the order of the groups matters only
/// where two overlapping entities have exactly the same score.
pub(crate) fn merge_groups(
    found: Vec<(usize, Entity)>,
    conflict_score: impl Fn(&Entity) -> f64,
) -> Vec<(usize, Entity)> {
    let mut ranked: Vec<(f64, usize)> = found
        .iter()
        .enumerate()
        .map(|(i, (g, e))| {
            let contested = found.iter().any(|(h, f)| h != g && overlaps(e, f));
            let score = if contested {
                conflict_score(e)
            } else {
                f64::INFINITY
            };
            (score, i)
        })
        .collect();
    ranked.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then(found[a.1].0.cmp(&found[b.1].0))
            .then(found[a.1].1.start_word.cmp(&found[b.1].1.start_word))
    });
    let mut kept: Vec<(usize, Entity)> = Vec::with_capacity(found.len());
    for (_, i) in ranked {
        let (g, e) = &found[i];
        if !kept.iter().any(|(_, k)| overlaps(k, e)) {
            kept.push((*g, e.clone()));
        }
    }
    kept.sort_by_key(|(_, e)| e.start_word);
    kept
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Entities of `groups` groups over 30 words: each group's entities do not overlap.
    fn found(groups: usize) -> impl Strategy<Value = Vec<(usize, Entity)>> {
        proptest::collection::vec(
            proptest::collection::vec((0usize..30, 1usize..4, 0usize..3, 1u32..1000), 0..6),
            groups,
        )
        .prop_map(|per_group| {
            let mut out = Vec::new();
            for (g, raw) in per_group.into_iter().enumerate() {
                let mut taken: Vec<Entity> = Vec::new();
                for (start, len, type_index, score) in raw {
                    let e = Entity {
                        start_word: start,
                        end_word: start + len,
                        type_index: g * 3 + type_index,
                        score: score as f32 / 1000.0,
                    };
                    if !taken.iter().any(|t| overlaps(t, &e)) {
                        taken.push(e.clone());
                        out.push((g, e));
                    }
                }
            }
            out
        })
    }

    /// A conflict score that depends on the entity only, with no ties between distinct
    /// entities of the generated sets (distinct start, length or type give distinct values).
    fn score(e: &Entity) -> f64 {
        ((e.start_word * 7 + e.end_word * 131 + e.type_index * 1009) % 997) as f64
            + e.type_index as f64 * 1e-3
            + e.start_word as f64 * 1e-6
    }

    proptest! {
        #[test]
        fn merged_entities_never_overlap_and_uncontested_ones_stay(found in found(3)) {
            let merged = merge_groups(found.clone(), score);
            for (i, (_, a)) in merged.iter().enumerate() {
                for (_, b) in &merged[i + 1..] {
                    prop_assert!(!overlaps(a, b), "{:?} and {:?}", a, b);
                }
            }
            prop_assert!(merged.windows(2).all(|w| w[0].1.start_word <= w[1].1.start_word));
            for (g, e) in &found {
                let contested = found.iter().any(|(h, f)| h != g && overlaps(e, f));
                if !contested {
                    prop_assert!(merged.contains(&(*g, e.clone())), "{:?} was dropped", e);
                }
            }
            prop_assert!(merged.iter().all(|x| found.contains(x)));
        }

        #[test]
        fn merging_is_deterministic_and_ignores_input_order(found in found(3), seed in any::<u64>()) {
            let once = merge_groups(found.clone(), score);
            prop_assert_eq!(&once, &merge_groups(found.clone(), score));
            let mut shuffled = found.clone();
            let mut state = seed | 1;
            for i in (1..shuffled.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                shuffled.swap(i, (state % (i as u64 + 1)) as usize);
            }
            prop_assert_eq!(once, merge_groups(shuffled, score));
        }

        /// Pack order is a tie-breaker only: with scores that never tie, renumbering the groups
        /// keeps the same entities.
        #[test]
        fn group_order_matters_only_for_ties(found in found(3)) {
            let entities = |v: Vec<(usize, Entity)>| {
                let mut e: Vec<Entity> = v.into_iter().map(|(_, e)| e).collect();
                e.sort_by_key(|e| (e.start_word, e.type_index));
                e
            };
            let reversed: Vec<(usize, Entity)> =
                found.iter().map(|(g, e)| (2 - g, e.clone())).collect();
            prop_assert_eq!(
                entities(merge_groups(found, score)),
                entities(merge_groups(reversed, score))
            );
        }
    }

    #[test]
    fn ties_go_to_the_earlier_group() {
        let e = |start: usize, end: usize, type_index: usize| Entity {
            start_word: start,
            end_word: end,
            type_index,
            score: 1.0,
        };
        let found = vec![(1, e(0, 2, 5)), (0, e(1, 3, 0))];
        let merged = merge_groups(found, |_| 0.5);
        assert_eq!(merged, [(0, e(1, 3, 0))]);
        let found = vec![(1, e(0, 2, 5)), (0, e(1, 3, 0))];
        let merged = merge_groups(found, |e| e.type_index as f64);
        assert_eq!(merged, [(1, e(0, 2, 5))]);
    }
}
