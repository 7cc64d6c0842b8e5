//! Linear-chain CRF negative log-likelihood over CDT transitions, with its gradient wrt the
//! emissions and wrt the 21 abstract CDT numbers.
//!
//! The transitions are exactly those of [`ner_edge::decode::unfold`] (hard BIO constraints as
//! `-inf`), held in `f64`; the path score is the one of [`ner_edge::decode::Transitions`]:
//! `start[y_0] + Σ_t e[t][y_t] + Σ_{t>0} trans[y_{t-1}][y_t] + end[y_{T-1}]`, and the
//! distribution is over valid BIO paths only, as in [`ner_edge::decode::marginals()`].

use anyhow::{bail, ensure, Result};
use ner_edge::bundle::metadata::CdtParams;
use ner_edge::decode::{is_valid_bio, unfold, Tag};

/// Abstract CDT columns: O, B (same type), I (same type), B′, I′ (other type).
const COL_O: usize = 0;
const COL_B: usize = 1;
const COL_I: usize = 2;
const COL_B_OTHER: usize = 3;
const COL_I_OTHER: usize = 4;

/// Gradient of a scalar wrt the 21 CDT numbers, in the shape of [`CdtParams`]: `matrix[from][to]`
/// with rows {O, B, I} and columns {O, B, I, B′, I′}, `start` and `end` indexed {O, B, I}.
///
/// Cells that [`unfold`] never lets reach the decoder (`start[I]`, `matrix[O][I]`,
/// `matrix[B][I′]`, `matrix[I][I′]`, and the unused `matrix[O][B′]`, `matrix[O][I′]`) always
/// receive exactly zero.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CdtGrad {
    /// d/d`matrix[from][to]`, rows {O, B, I}, columns {O, B, I, B′, I′}.
    pub matrix: [[f64; 5]; 3],
    /// d/d`start[tag]`, tags {O, B, I}.
    pub start: [f64; 3],
    /// d/d`end[tag]`, tags {O, B, I}.
    pub end: [f64; 3],
}

impl CdtGrad {
    /// Adds `scale · other` to `self`.
    pub fn add_scaled(&mut self, other: &CdtGrad, scale: f64) {
        for (a, b) in self.matrix.iter_mut().zip(&other.matrix) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += scale * y;
            }
        }
        for (x, y) in self.start.iter_mut().zip(&other.start) {
            *x += scale * y;
        }
        for (x, y) in self.end.iter_mut().zip(&other.end) {
            *x += scale * y;
        }
    }

    /// The 21 numbers in the order of [`cdt_to_flat`]: matrix row-major, then start, then end.
    pub fn to_flat(&self) -> [f32; 21] {
        let mut out = [0.0f32; 21];
        let values = self
            .matrix
            .iter()
            .flatten()
            .chain(&self.start)
            .chain(&self.end);
        for (o, v) in out.iter_mut().zip(values) {
            *o = *v as f32;
        }
        out
    }
}

/// The 21 CDT numbers as one flat vector: `matrix` row-major (15), then `start` (3), then `end`
/// (3). Inverse of [`cdt_from_flat`].
pub fn cdt_to_flat(params: &CdtParams) -> [f32; 21] {
    let mut out = [0.0f32; 21];
    let values = params
        .matrix
        .iter()
        .flatten()
        .chain(&params.start)
        .chain(&params.end);
    for (o, v) in out.iter_mut().zip(values) {
        *o = *v;
    }
    out
}

/// Inverse of [`cdt_to_flat`].
pub fn cdt_from_flat(flat: &[f32; 21]) -> CdtParams {
    let mut matrix = [[0.0f32; 5]; 3];
    for (r, row) in matrix.iter_mut().enumerate() {
        row.copy_from_slice(&flat[5 * r..5 * r + 5]);
    }
    CdtParams {
        matrix,
        start: [flat[15], flat[16], flat[17]],
        end: [flat[18], flat[19], flat[20]],
    }
}

/// The abstract cell `(row, column)` of [`CdtParams::matrix`] that [`unfold`] copies into the
/// dense transition `from → to` (label indices of [`ner_edge::decode::labels`]), or `None` when
/// the hard BIO constraints make that transition `-inf`.
pub fn transition_cell(from: usize, to: usize) -> Option<(usize, usize)> {
    let (f, t) = (Tag::from_index(from), Tag::from_index(to));
    if !t.may_follow(Some(f)) {
        return None;
    }
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
    Some((f.kind() as usize, col))
}

/// Abstract kind {O = 0, B = 1, I = 2} of a label index; indexes `start`/`end`.
fn kind(label: usize) -> usize {
    Tag::from_index(label).kind() as usize
}

/// Dense `f64` transitions for one label set: [`unfold`] of the CDT numbers, forbidden entries
/// `-inf`.
#[derive(Clone, Debug, PartialEq)]
pub struct CrfTransitions {
    /// Number of labels `L = 1 + 2 n_types`.
    pub n_labels: usize,
    /// `[L]`.
    pub start: Vec<f64>,
    /// `[L]`.
    pub end: Vec<f64>,
    /// `[L, L]` row-major, `trans[from * L + to]`.
    pub trans: Vec<f64>,
}

impl CrfTransitions {
    /// Unfolds `params` for `n_types` types with [`unfold`] and widens to `f64`.
    pub fn new(params: &CdtParams, n_types: usize) -> CrfTransitions {
        let t = unfold(params, n_types);
        let wide = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
        CrfTransitions {
            n_labels: t.n_labels,
            start: wide(&t.start),
            end: wide(&t.end),
            trans: wide(&t.trans),
        }
    }
}

/// `log Σ exp(x)`, `-inf` for an empty or all-`-inf` input.
fn logsumexp(xs: impl Iterator<Item = f64> + Clone) -> f64 {
    let m = xs.clone().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + xs.map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// Score of `path` under `emissions` (`[T, L]`) and `t`; `-inf` when it uses a forbidden step.
pub fn path_score(emissions: &[f64], t: &CrfTransitions, path: &[usize]) -> f64 {
    let l = t.n_labels;
    let Some((&first, _)) = path.split_first() else {
        return 0.0;
    };
    let mut score = t.start[first] + t.end[path[path.len() - 1]];
    for (step, &y) in path.iter().enumerate() {
        score += emissions[step * l + y];
        if step > 0 {
            score += t.trans[path[step - 1] * l + y];
        }
    }
    score
}

/// CRF negative log-likelihood `log Z − score(gold)` of one sentence, adding its gradient into
/// `d_emissions` (`[T, L]`: label marginals minus the gold indicator) and `d_cdt` (expected minus
/// gold counts of each start/transition/end, folded onto the abstract cells exactly as [`unfold`]
/// maps them; forbidden cells get nothing). Both accumulators are added to, not overwritten.
///
/// `emissions` is `[T, L]` row-major with `L = t.n_labels`; `gold` has `T` label indices.
/// The empty sentence has NLL 0 and no gradient.
///
/// Errors: shape mismatch, a gold path that is not a valid BIO sequence over `L` labels, or
/// non-finite emissions.
pub fn crf_nll(
    emissions: &[f64],
    gold: &[usize],
    t: &CrfTransitions,
    d_emissions: &mut [f64],
    d_cdt: &mut CdtGrad,
) -> Result<f64> {
    let l = t.n_labels;
    let len = gold.len();
    ensure!(
        l % 2 == 1 && t.start.len() == l && t.end.len() == l && t.trans.len() == l * l,
        "CRF transitions have inconsistent shapes for {l} labels"
    );
    ensure!(
        emissions.len() == len * l && d_emissions.len() == len * l,
        "CRF emissions must be [{len}, {l}] = {} values (gradient too), got {} and {}",
        len * l,
        emissions.len(),
        d_emissions.len()
    );
    if !is_valid_bio(gold, l) {
        bail!("gold labels {gold:?} are not a valid BIO sequence over {l} labels");
    }
    ensure!(
        emissions.iter().all(|e| e.is_finite()),
        "CRF emissions must be finite"
    );
    if len == 0 {
        return Ok(0.0);
    }
    let mut alpha = vec![f64::NEG_INFINITY; len * l];
    let mut beta = vec![f64::NEG_INFINITY; len * l];
    for j in 0..l {
        alpha[j] = t.start[j] + emissions[j];
    }
    for step in 1..len {
        for j in 0..l {
            let prev = &alpha[(step - 1) * l..step * l];
            let s = logsumexp((0..l).map(|i| prev[i] + t.trans[i * l + j]));
            alpha[step * l + j] = s + emissions[step * l + j];
        }
    }
    let last = (len - 1) * l;
    let log_z = logsumexp((0..l).map(|j| alpha[last + j] + t.end[j]));
    ensure!(log_z.is_finite(), "CRF partition function is not finite");
    beta[last..].copy_from_slice(&t.end);
    for step in (0..len - 1).rev() {
        for i in 0..l {
            let next = (step + 1) * l;
            let s = logsumexp(
                (0..l).map(|j| t.trans[i * l + j] + emissions[next + j] + beta[next + j]),
            );
            beta[step * l + i] = s;
        }
    }

    let gold_score = path_score(emissions, t, gold);
    let prob = |step: usize, j: usize| (alpha[step * l + j] + beta[step * l + j] - log_z).exp();
    for step in 0..len {
        for j in 0..l {
            d_emissions[step * l + j] += prob(step, j);
        }
        d_emissions[step * l + gold[step]] -= 1.0;
    }
    for j in 0..l {
        if t.start[j] > f64::NEG_INFINITY {
            d_cdt.start[kind(j)] += prob(0, j);
        }
        d_cdt.end[kind(j)] += prob(len - 1, j);
    }
    d_cdt.start[kind(gold[0])] -= 1.0;
    d_cdt.end[kind(gold[len - 1])] -= 1.0;
    for step in 1..len {
        let (prev, cur) = ((step - 1) * l, step * l);
        for i in 0..l {
            for j in 0..l {
                let Some((r, c)) = transition_cell(i, j) else {
                    continue;
                };
                let w = t.trans[i * l + j];
                let xi = (alpha[prev + i] + w + emissions[cur + j] + beta[cur + j] - log_z).exp();
                d_cdt.matrix[r][c] += xi;
            }
        }
        if let Some((r, c)) = transition_cell(gold[step - 1], gold[step]) {
            d_cdt.matrix[r][c] -= 1.0;
        }
    }
    Ok(log_z - gold_score)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::rng::SplitMix64;
    use ner_edge::decode::label_count;

    fn random_cdt(seed: u64) -> CdtParams {
        let mut rng = SplitMix64::new(seed);
        let v = rng.normal_vec(21, 1.0);
        cdt_from_flat(&v.try_into().unwrap())
    }

    fn random_emissions(len: usize, l: usize, seed: u64) -> Vec<f64> {
        let mut rng = SplitMix64::new(seed);
        (0..len * l).map(|_| 1.5 * rng.next_normal()).collect()
    }

    /// All label paths of length `len` over `l` labels, valid BIO or not.
    fn all_paths(len: usize, l: usize) -> Vec<Vec<usize>> {
        let mut out = vec![vec![]];
        for _ in 0..len {
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

    fn nll(e: &[f64], gold: &[usize], t: &CrfTransitions) -> f64 {
        let mut de = vec![0.0; e.len()];
        crf_nll(e, gold, t, &mut de, &mut CdtGrad::default()).unwrap()
    }

    #[test]
    fn transition_cell_matches_unfold() {
        let flat: [f32; 21] = std::array::from_fn(|i| i as f32);
        let params = cdt_from_flat(&flat);
        for n in 0..4 {
            let t = unfold(&params, n);
            let l = t.n_labels;
            for from in 0..l {
                for to in 0..l {
                    let got = t.trans[from * l + to];
                    match transition_cell(from, to) {
                        Some((r, c)) => assert_eq!(got, params.matrix[r][c], "{from}->{to}"),
                        None => assert_eq!(got, f32::NEG_INFINITY, "{from}->{to}"),
                    }
                }
                let k = kind(from);
                if t.start[from] > f32::NEG_INFINITY {
                    assert_eq!(t.start[from], params.start[k]);
                } else {
                    assert_eq!(k, 2);
                }
                assert_eq!(t.end[from], params.end[k]);
            }
        }
        assert_eq!(cdt_to_flat(&params), flat);
    }

    #[test]
    fn nll_equals_brute_force_enumeration() {
        for (n_types, len) in [(0, 3), (1, 1), (1, 4), (2, 3), (2, 4), (3, 3)] {
            let l = label_count(n_types);
            let t = CrfTransitions::new(&random_cdt(n_types as u64 + 10), n_types);
            let e = random_emissions(len, l, 7 * len as u64 + n_types as u64);
            let valid: Vec<Vec<usize>> = all_paths(len, l)
                .into_iter()
                .filter(|p| is_valid_bio(p, l))
                .collect();
            let log_z = logsumexp(valid.iter().map(|p| path_score(&e, &t, p)));
            for gold in valid.iter().step_by(7) {
                let want = log_z - path_score(&e, &t, gold);
                let got = nll(&e, gold, &t);
                assert!(
                    (got - want).abs() < 1e-10,
                    "{n_types} {len}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn invalid_gold_and_shapes_are_rejected() {
        let t = CrfTransitions::new(&random_cdt(1), 2);
        let e = random_emissions(2, 5, 1);
        let mut de = vec![0.0; 10];
        let mut g = CdtGrad::default();
        assert!(crf_nll(&e, &[0, 2], &t, &mut de, &mut g).is_err());
        assert!(crf_nll(&e, &[1, 4], &t, &mut de, &mut g).is_err());
        assert!(crf_nll(&e, &[0, 5], &t, &mut de, &mut g).is_err());
        assert!(crf_nll(&e[..9], &[0, 1], &t, &mut de, &mut g).is_err());
        assert!(crf_nll(&e, &[0], &t, &mut de, &mut g).is_err());
        let mut bad = e.clone();
        bad[3] = f64::NAN;
        assert!(crf_nll(&bad, &[0, 1], &t, &mut de, &mut g).is_err());
        assert_eq!(crf_nll(&[], &[], &t, &mut [], &mut g).unwrap(), 0.0);
    }

    #[test]
    fn emission_gradient_rows_sum_to_zero_and_forbidden_cells_get_none() {
        for n_types in [1, 2, 3] {
            let l = label_count(n_types);
            let t = CrfTransitions::new(&random_cdt(3), n_types);
            let e = random_emissions(7, l, 5);
            let gold = [1, 2, 0, 2 * n_types - 1, 2 * n_types, 2 * n_types, 1];
            let mut de = vec![0.0; e.len()];
            let mut g = CdtGrad::default();
            crf_nll(&e, &gold, &t, &mut de, &mut g).unwrap();
            for row in de.chunks_exact(l) {
                assert!(row.iter().sum::<f64>().abs() < 1e-12, "{row:?}");
            }
            assert_eq!(g.start[2], 0.0);
            for (r, c) in [(0, 2), (0, 3), (0, 4), (1, 4), (2, 4)] {
                assert_eq!(g.matrix[r][c], 0.0, "cell {r},{c}");
            }
            if n_types == 1 {
                assert_eq!(g.matrix[1][3], 0.0);
                assert_eq!(g.matrix[2][3], 0.0);
            }
            assert!(g.start.iter().sum::<f64>().abs() < 1e-12);
            assert!(g.end.iter().sum::<f64>().abs() < 1e-12);
        }
    }

    /// Central differences in f64 wrt every emission (step 1e-5) and every CDT number (an f32
    /// step of about 1e-3, divided by the step actually taken): agreement within
    /// `1e-7 + 1e-5·|g|` for emissions and `1e-6 + 1e-5·|g|` for the CDT numbers.
    #[test]
    fn gradients_match_finite_differences() {
        for (n_types, len) in [(1, 1), (3, 4), (2, 7)] {
            let l = label_count(n_types);
            let params = random_cdt(40 + len as u64);
            let t = CrfTransitions::new(&params, n_types);
            let e = random_emissions(len, l, len as u64);
            let gold: Vec<usize> = [2 * n_types - 1, 2 * n_types, 0, 1, 2, 2, 0][..len].to_vec();
            let mut de = vec![0.0; e.len()];
            let mut g = CdtGrad::default();
            crf_nll(&e, &gold, &t, &mut de, &mut g).unwrap();
            let h = 1e-5;
            for i in 0..e.len() {
                let (mut p, mut m) = (e.clone(), e.clone());
                p[i] += h;
                m[i] -= h;
                let fd = (nll(&p, &gold, &t) - nll(&m, &gold, &t)) / (2.0 * h);
                assert!((fd - de[i]).abs() < 1e-7 + 1e-5 * de[i].abs(), "e[{i}]");
            }
            let flat = cdt_to_flat(&params);
            let grad = g.to_flat();
            for i in 0..21 {
                let (mut p, mut m) = (flat, flat);
                p[i] += 1e-3;
                m[i] -= 1e-3;
                let step = f64::from(p[i]) - f64::from(m[i]);
                let tp = CrfTransitions::new(&cdt_from_flat(&p), n_types);
                let tm = CrfTransitions::new(&cdt_from_flat(&m), n_types);
                let fd = (nll(&e, &gold, &tp) - nll(&e, &gold, &tm)) / step;
                let an = f64::from(grad[i]);
                assert!(
                    (fd - an).abs() < 1e-6 + 1e-5 * an.abs(),
                    "cdt[{i}]: {fd} vs {an}"
                );
            }
        }
    }
}
