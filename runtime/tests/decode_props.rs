//! Property tests for CDT unfolding, Viterbi, forward–backward and span probabilities, checked
//! against brute-force enumeration of every label sequence on small instances.

use ner_edge::bundle::metadata::CdtParams;
use ner_edge::decode::{
    is_valid_bio, label_count, marginals, unfold, viterbi, Decoder, Tag, Transitions,
};
use ner_edge::spans::extract_entities;
use proptest::prelude::*;

const NEG_INF: f32 = f32::NEG_INFINITY;

fn params_from(v: &[f32]) -> CdtParams {
    let mut matrix = [[0.0; 5]; 3];
    for (r, row) in matrix.iter_mut().enumerate() {
        row.copy_from_slice(&v[5 * r..5 * r + 5]);
    }
    CdtParams {
        matrix,
        start: [v[15], v[16], v[17]],
        end: [v[18], v[19], v[20]],
    }
}

fn params_strategy() -> impl Strategy<Value = CdtParams> {
    proptest::collection::vec(-3.0f32..3.0, 21).prop_map(|v| params_from(&v))
}

/// A small instance: `(T, n_types, params, emissions [T, L])`.
fn instance(
    max_t: usize,
    max_types: usize,
) -> impl Strategy<Value = (usize, usize, CdtParams, Vec<f32>)> {
    (0..=max_t, 0..=max_types, params_strategy()).prop_flat_map(|(t_len, n, p)| {
        let l = label_count(n);
        (
            Just(t_len),
            Just(n),
            Just(p),
            proptest::collection::vec(-5.0f32..5.0, t_len * l),
        )
    })
}

/// A small instance with an arbitrary transition matrix (not CDT-shaped, BIO constraints not
/// applied, some `-inf` entries): `(T, n_types, transitions, emissions [T, L])`.
fn dense_instance() -> impl Strategy<Value = (usize, usize, Transitions, Vec<f32>)> {
    (0usize..=4, 0usize..=2).prop_flat_map(|(t_len, n)| {
        let l = label_count(n);
        let score = prop_oneof![9 => -3.0f32..3.0, 1 => Just(NEG_INF)];
        (
            Just(t_len),
            Just(n),
            proptest::collection::vec(score, l * l + 2 * l),
            proptest::collection::vec(-5.0f32..5.0, t_len * l),
        )
            .prop_map(move |(t_len, n, v, em)| {
                let t = Transitions {
                    n_labels: l,
                    start: v[..l].to_vec(),
                    end: v[l..2 * l].to_vec(),
                    trans: v[2 * l..].to_vec(),
                };
                (t_len, n, t, em)
            })
    })
}

/// Tags in label order, built without the index arithmetic under test.
fn tag_list(n_types: usize) -> Vec<Tag> {
    let mut tags = vec![Tag::O];
    for k in 0..n_types {
        tags.push(Tag::B(k));
        tags.push(Tag::I(k));
    }
    tags
}

/// The CDT table with BIO constraints, written out case by case.
fn expected_transition(p: &CdtParams, from: Tag, to: Tag) -> f32 {
    let m = &p.matrix;
    match (from, to) {
        (Tag::O, Tag::O) => m[0][0],
        (Tag::O, Tag::B(_)) => m[0][1],
        (Tag::O, Tag::I(_)) => NEG_INF,
        (Tag::B(_), Tag::O) => m[1][0],
        (Tag::B(y), Tag::B(x)) => {
            if x == y {
                m[1][1]
            } else {
                m[1][3]
            }
        }
        (Tag::B(y), Tag::I(x)) => {
            if x == y {
                m[1][2]
            } else {
                NEG_INF
            }
        }
        (Tag::I(_), Tag::O) => m[2][0],
        (Tag::I(y), Tag::B(x)) => {
            if x == y {
                m[2][1]
            } else {
                m[2][3]
            }
        }
        (Tag::I(y), Tag::I(x)) => {
            if x == y {
                m[2][2]
            } else {
                NEG_INF
            }
        }
    }
}

fn expected_start(p: &CdtParams, tag: Tag) -> f32 {
    match tag {
        Tag::O => p.start[0],
        Tag::B(_) => p.start[1],
        Tag::I(_) => NEG_INF,
    }
}

fn expected_end(p: &CdtParams, tag: Tag) -> f32 {
    match tag {
        Tag::O => p.end[0],
        Tag::B(_) => p.end[1],
        Tag::I(_) => p.end[2],
    }
}

fn path_score(em: &[f32], l: usize, t: &Transitions, path: &[usize]) -> f64 {
    if path.is_empty() {
        return 0.0;
    }
    let mut s = t.start[path[0]] as f64 + t.end[*path.last().unwrap()] as f64;
    for (i, &y) in path.iter().enumerate() {
        s += em[i * l + y] as f64;
        if i > 0 {
            s += t.trans[path[i - 1] * l + y] as f64;
        }
    }
    s
}

/// Every label sequence of length `t_len` over `l` labels.
fn every_sequence(t_len: usize, l: usize) -> Vec<Vec<usize>> {
    let mut out = vec![vec![]];
    for _ in 0..t_len {
        out = out
            .into_iter()
            .flat_map(|p| {
                (0..l).map(move |y| {
                    let mut q = p.clone();
                    q.push(y);
                    q
                })
            })
            .collect();
    }
    out
}

/// Every valid BIO sequence of length `t_len` over `l` labels (checked here, not by the crate).
fn all_paths(t_len: usize, l: usize) -> Vec<Vec<usize>> {
    every_sequence(t_len, l)
        .into_iter()
        .filter(|p| {
            p.iter()
                .enumerate()
                .all(|(pos, &y)| match Tag::from_index(y) {
                    Tag::I(k) => pos > 0 && (p[pos - 1] == 2 * k + 1 || p[pos - 1] == 2 * k + 2),
                    _ => true,
                })
        })
        .collect()
}

/// `(log Z, scores of all valid paths)` by enumeration.
fn brute_log_z(em: &[f32], l: usize, t: &Transitions, paths: &[Vec<usize>]) -> (f64, Vec<f64>) {
    let scores: Vec<f64> = paths.iter().map(|p| path_score(em, l, t, p)).collect();
    let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return (m, scores);
    }
    let z = m + scores.iter().map(|s| (s - m).exp()).sum::<f64>().ln();
    (z, scores)
}

fn check_viterbi(t_len: usize, l: usize, t: &Transitions, em: &[f32]) -> Result<(), TestCaseError> {
    let mut path = Vec::new();
    let best = viterbi(em, l, t, &mut path);
    prop_assert_eq!(path.len(), t_len);
    prop_assert!(is_valid_bio(&path, l));
    if t_len == 0 {
        prop_assert_eq!(best, 0.0);
        return Ok(());
    }
    let brute = all_paths(t_len, l)
        .iter()
        .map(|q| path_score(em, l, t, q))
        .fold(f64::NEG_INFINITY, f64::max);
    if brute == f64::NEG_INFINITY {
        prop_assert_eq!(best, NEG_INF);
        return Ok(());
    }
    prop_assert!(
        ((best as f64) - brute).abs() < 1e-3,
        "viterbi {} brute {}",
        best,
        brute
    );
    let achieved = path_score(em, l, t, &path);
    prop_assert!(
        (achieved - brute).abs() < 1e-3,
        "path scores {} brute {}",
        achieved,
        brute
    );
    Ok(())
}

fn check_marginals(
    t_len: usize,
    l: usize,
    t: &Transitions,
    em: &[f32],
) -> Result<(), TestCaseError> {
    let m = marginals(em, l, t);
    prop_assert_eq!(m.len(), t_len);
    prop_assert_eq!(m.probs().len(), t_len * l);
    if t_len == 0 {
        prop_assert_eq!(m.log_z(), 0.0);
        return Ok(());
    }
    let paths = all_paths(t_len, l);
    let (log_z, scores) = brute_log_z(em, l, t, &paths);
    if log_z == f64::NEG_INFINITY {
        prop_assert_eq!(m.log_z(), f64::NEG_INFINITY);
        prop_assert!(m.probs().iter().all(|&p| p == 0.0));
        return Ok(());
    }
    prop_assert!(
        (m.log_z() - log_z).abs() < 1e-4 * (1.0 + log_z.abs()),
        "{} vs {}",
        m.log_z(),
        log_z
    );
    let mut want = vec![0.0f64; t_len * l];
    for (q, s) in paths.iter().zip(&scores) {
        let w = (s - log_z).exp();
        for (pos, &y) in q.iter().enumerate() {
            want[pos * l + y] += w;
        }
    }
    for pos in 0..t_len {
        let row = &m.probs()[pos * l..(pos + 1) * l];
        let total: f64 = row.iter().map(|&x| x as f64).sum();
        prop_assert!((total - 1.0).abs() < 1e-4, "row {} sums to {}", pos, total);
        for (y, &got) in row.iter().enumerate() {
            prop_assert!(got.is_finite());
            let w = want[pos * l + y];
            prop_assert!(
                (got as f64 - w).abs() < 1e-4,
                "P(y_{}={}) {} vs {}",
                pos,
                y,
                got,
                w
            );
            prop_assert_eq!(m.prob(pos, y), got);
        }
    }
    Ok(())
}

fn check_spans(t_len: usize, n: usize, t: &Transitions, em: &[f32]) -> Result<(), TestCaseError> {
    let l = label_count(n);
    let m = marginals(em, l, t);
    let paths = all_paths(t_len, l);
    let (log_z, scores) = brute_log_z(em, l, t, &paths);
    for k in 0..n {
        let (b, i) = (Tag::B(k).to_index(), Tag::I(k).to_index());
        for start in 0..t_len {
            for end in start..t_len {
                let mut want = 0.0f64;
                if log_z > f64::NEG_INFINITY {
                    for (q, s) in paths.iter().zip(&scores) {
                        let inside = q[start] == b && q[start + 1..=end].iter().all(|&y| y == i);
                        let closed = end + 1 == t_len || q[end + 1] != i;
                        if inside && closed {
                            want += (s - log_z).exp();
                        }
                    }
                }
                let got = m.span_probability(start, end, k) as f64;
                prop_assert!(
                    (got - want).abs() < 1e-4,
                    "span {}..={} type {}: {} vs {}",
                    start,
                    end,
                    k,
                    got,
                    want
                );
            }
        }
    }
    prop_assert_eq!(m.span_probability(0, t_len, 0), 0.0);
    prop_assert_eq!(m.span_probability(0, 0, n), 0.0);
    prop_assert_eq!(m.span_probability(0, 0, usize::MAX), 0.0);
    prop_assert_eq!(m.prob(0, usize::MAX), 0.0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn unfold_matches_tag_table(n in 1usize..=12, p in params_strategy()) {
        let t = unfold(&p, n);
        let tags = tag_list(n);
        prop_assert_eq!(t.n_labels, tags.len());
        prop_assert!(t.check().is_ok());
        for (i, &from) in tags.iter().enumerate() {
            prop_assert_eq!(Tag::from_index(i), from);
            prop_assert_eq!(from.to_index(), i);
            prop_assert_eq!(t.start[i].to_bits(), expected_start(&p, from).to_bits());
            prop_assert_eq!(t.end[i].to_bits(), expected_end(&p, from).to_bits());
            for (j, &to) in tags.iter().enumerate() {
                let want = expected_transition(&p, from, to);
                prop_assert_eq!(
                    t.trans[i * t.n_labels + j].to_bits(), want.to_bits(),
                    "{:?} -> {:?}", from, to
                );
            }
        }
    }

    #[test]
    fn viterbi_equals_brute_force((t_len, n, p, em) in instance(5, 2)) {
        check_viterbi(t_len, label_count(n), &unfold(&p, n), &em)?;
    }

    #[test]
    fn viterbi_equals_brute_force_dense((t_len, n, t, em) in dense_instance()) {
        check_viterbi(t_len, label_count(n), &t, &em)?;
    }

    #[test]
    fn viterbi_paths_are_valid_bio(
        n in 0usize..=12,
        t_len in 0usize..=40,
        p in params_strategy(),
        raw in proptest::collection::vec(-8.0f32..8.0, 40 * 25),
    ) {
        let l = label_count(n);
        let em = &raw[..t_len * l];
        let t = unfold(&p, n);
        let mut decoder = Decoder::new();
        let mut path = Vec::new();
        let best = decoder.viterbi(em, l, &t, &mut path);
        prop_assert_eq!(path.len(), t_len);
        prop_assert!(is_valid_bio(&path, l), "{:?}", path);
        prop_assert!(best.is_finite());
        let achieved = path_score(em, l, &t, &path);
        prop_assert!((achieved - best as f64).abs() < 1e-3 * (1.0 + achieved.abs()));
        // An all-O path is always allowed, so the optimum is at least its score.
        let all_o = vec![0usize; t_len];
        prop_assert!(best as f64 >= path_score(em, l, &t, &all_o) - 1e-3);
        // The decoder reused on a shorter prefix agrees with a fresh one.
        let half = t_len / 2;
        let mut fresh = Vec::new();
        let s1 = decoder.viterbi(&em[..half * l], l, &t, &mut path);
        let s2 = viterbi(&em[..half * l], l, &t, &mut fresh);
        prop_assert_eq!(s1, s2);
        prop_assert_eq!(&path, &fresh);
    }

    #[test]
    fn marginals_match_brute_force((t_len, n, p, em) in instance(5, 2)) {
        check_marginals(t_len, label_count(n), &unfold(&p, n), &em)?;
    }

    #[test]
    fn marginals_exact_with_huge_dynamic_range(
        (t_len, n, p, em) in instance(4, 2),
        scale in 100.0f32..400.0,
    ) {
        let em: Vec<f32> = em.iter().map(|e| e * scale).collect();
        check_marginals(t_len, label_count(n), &unfold(&p, n), &em)?;
        check_spans(t_len, n, &unfold(&p, n), &em)?;
    }

    #[test]
    fn marginals_match_brute_force_dense((t_len, n, t, em) in dense_instance()) {
        check_marginals(t_len, label_count(n), &t, &em)?;
    }

    #[test]
    fn span_probability_matches_brute_force((t_len, n, p, em) in instance(5, 2)) {
        check_spans(t_len, n, &unfold(&p, n), &em)?;
    }

    #[test]
    fn span_probability_matches_brute_force_dense((t_len, n, t, em) in dense_instance()) {
        check_spans(t_len, n, &t, &em)?;
    }

    #[test]
    fn marginals_rows_normalised_on_long_sentences(
        n in 0usize..=10,
        t_len in 1usize..=200,
        p in params_strategy(),
        scale in 1.0f32..30.0,
        raw in proptest::collection::vec(-1.0f32..1.0, 64),
    ) {
        let l = label_count(n);
        let em: Vec<f32> = (0..t_len * l).map(|i| raw[(i * 31 + i / 7) % raw.len()] * scale - scale).collect();
        let t = unfold(&p, n);
        let m = marginals(&em, l, &t);
        prop_assert!(m.log_z().is_finite());
        for row in m.probs().chunks_exact(l) {
            let total: f64 = row.iter().map(|&x| x as f64).sum();
            prop_assert!((total - 1.0).abs() < 1e-4, "row sums to {}", total);
        }
        let mut path = Vec::new();
        viterbi(&em, l, &t, &mut path);
        for e in extract_entities(&path, Some(&m)) {
            prop_assert!((0.0..=1.0).contains(&e.score));
            prop_assert!(e.end_word > e.start_word && e.end_word <= t_len && e.type_index < n.max(1));
        }
    }
}

#[test]
fn forbidden_emissions_do_not_produce_nan() {
    let p = params_from(&[0.3; 21]);
    let t = unfold(&p, 2);
    let l = 5;
    // Position 1 can only be I-1, which requires B-1 or I-1 before it.
    let mut em = vec![0.0f32; 3 * l];
    for (j, e) in em[l..2 * l].iter_mut().enumerate() {
        if j != 4 {
            *e = NEG_INF;
        }
    }
    let m = marginals(&em, l, &t);
    assert!(m.log_z().is_finite());
    assert!(m.probs().iter().all(|x| x.is_finite()));
    assert!((m.prob(0, 3) - 1.0).abs() < 1e-6);
    assert!((m.prob(1, 4) - 1.0).abs() < 1e-6);
    let mut path = Vec::new();
    let best = viterbi(&em, l, &t, &mut path);
    assert!(best.is_finite());
    assert_eq!(&path[..2], &[3, 4]);

    // Nothing possible at all: score -inf, probabilities zero, path still valid BIO.
    let em = vec![NEG_INF; 2 * l];
    let m = marginals(&em, l, &t);
    assert_eq!(m.log_z(), f64::NEG_INFINITY);
    assert!(m.probs().iter().all(|&x| x == 0.0));
    assert_eq!(m.span_probability(0, 0, 0), 0.0);
    let best = viterbi(&em, l, &t, &mut path);
    assert_eq!(best, NEG_INF);
    assert!(is_valid_bio(&path, l));
}

#[test]
fn marginals_survive_scores_far_below_the_step_maximum() {
    let p = params_from(&[0.0; 21]);
    let t = unfold(&p, 1);
    // The only likely path is B-0 I-0, whose prefix score sits 1500 nats below that of O at
    // position 0: a shifted linear-space sum underflows there and must be recovered exactly.
    let em = [0.0, -1500.0, -1e4, -3000.0, -3000.0, 0.0];
    let m = marginals(&em, 3, &t);
    assert!((m.log_z() - -1500.0).abs() < 1e-6, "{}", m.log_z());
    assert!((m.prob(0, 1) - 1.0).abs() < 1e-6);
    assert!((m.prob(1, 2) - 1.0).abs() < 1e-6);
    assert!((m.span_probability(0, 1, 0) - 1.0).abs() < 1e-6);
    let mut path = Vec::new();
    viterbi(&em, 3, &t, &mut path);
    assert_eq!(path, vec![1, 2]);
}
