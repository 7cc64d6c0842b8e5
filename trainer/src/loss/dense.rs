//! The dense (fully annotated) loss of one sequence: every entity of its corpus is labelled,
//! scored against learned per-type class vectors instead of support means.
//!
//! ```text
//! P        = [class vectors of the active types; the "other" vector]       ([n, d], given)
//! crf      = CRF NLL of the gold path under emissions(boundary, types, P), divided by T
//! span     = mean over the T words of −log_softmax(boundary)[gold O/B/I]
//! type     = mean over entity words of −log_softmax_k(types · P)[gold type]
//! total    = w.crf·crf + w.span·span + w.type·type
//! ```
//!
//! Dividing the CRF term by the length keeps a long packed sequence from outweighing a short
//! one. Gradients flow to the boundary logits, the type vectors, every row of `P` and the CDT
//! numbers. Arithmetic is `f64` as in [`super::episode_loss`].

use anyhow::{bail, ensure, Result};
use ner_edge::bundle::metadata::CdtParams;
use ner_edge::decode::{is_valid_bio, label_count, Tag};

use super::crf::{crf_nll, CdtGrad, CrfTransitions};
use super::emissions::Emissions;
use super::episode::{LossTerms, LossWeights, SentenceGrad, SentenceRef};
use super::prototypes::label_type;

/// Loss terms and gradients of one dense sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct DenseLoss {
    /// `kl` is always 0.
    pub terms: LossTerms,
    /// Wrt the sequence's boundary logits and type vectors.
    pub grad: SentenceGrad,
    /// `[n, d]` wrt the class vectors `P`, row for row.
    pub d_prototypes: Vec<f32>,
    /// Wrt the 21 CDT numbers.
    pub cdt: CdtGrad,
    /// `[T, n]` wrt the type scores (before their log-softmax), where offsets were added
    /// ([`dense_loss_with_offsets`]); empty otherwise.
    pub d_type_scores: Vec<f32>,
}

/// Loss and gradients of one sequence whose labels (layout of [`ner_edge::decode::labels`])
/// range over the `n = prototypes.len() / type_dim` rows of `prototypes`.
///
/// Errors: empty `prototypes` or a length that is not a multiple of `type_dim`, boundary/types
/// not `[T, 3]`/`[T, type_dim]`, labels that are not valid BIO over `n` types, non-finite inputs.
pub fn dense_loss(
    sentence: &SentenceRef<'_>,
    prototypes: &[f32],
    type_dim: usize,
    cdt: &CdtParams,
    weights: &LossWeights,
) -> Result<DenseLoss> {
    dense_loss_with_offsets(sentence, prototypes, type_dim, cdt, weights, &[])
}

/// [`dense_loss`] with `type_offsets` (`[T, n]`, or empty) added to the type scores, as the
/// associated memory does; the loss also carries the gradient wrt the type scores.
pub fn dense_loss_with_offsets(
    sentence: &SentenceRef<'_>,
    prototypes: &[f32],
    type_dim: usize,
    cdt: &CdtParams,
    weights: &LossWeights,
    type_offsets: &[f32],
) -> Result<DenseLoss> {
    let d = type_dim;
    ensure!(d > 0, "type dimension must be positive");
    ensure!(
        !prototypes.is_empty() && prototypes.len().is_multiple_of(d),
        "dense loss: {} prototype values do not make [n, {d}] with n ≥ 1",
        prototypes.len()
    );
    let n = prototypes.len() / d;
    let len = sentence.labels.len();
    ensure!(
        sentence.boundary.len() == 3 * len && sentence.types.len() == d * len,
        "dense loss: {len} labels need boundary [{len}, 3] and types [{len}, {d}], got {} and {}",
        sentence.boundary.len(),
        sentence.types.len()
    );
    if !is_valid_bio(sentence.labels, label_count(n)) {
        bail!(
            "dense loss: labels {:?} are not a valid BIO sequence for {n} types",
            sentence.labels
        );
    }
    let wide = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
    let boundary = wide(sentence.boundary);
    let types = wide(sentence.types);
    let protos = wide(prototypes);
    let em =
        Emissions::compute_with_offsets(&boundary, &types, d, &protos, n, &wide(type_offsets))?;

    let mut terms = LossTerms::default();
    let mut d_lb = vec![0.0; 3 * len];
    let mut d_lt = vec![0.0; n * len];
    let mut cdt_grad = CdtGrad::default();
    if len > 0 {
        let scale = 1.0 / len as f64;
        let scores = em.scores();
        let mut d_scores = vec![0.0; len * label_count(n)];
        let mut g = CdtGrad::default();
        let transitions = CrfTransitions::new(cdt, n);
        let nll = crf_nll(
            &scores,
            sentence.labels,
            &transitions,
            &mut d_scores,
            &mut g,
        )?;
        terms.crf = scale * nll;
        let w = weights.crf * scale;
        cdt_grad.add_scaled(&g, w);
        for x in &mut d_scores {
            *x *= w;
        }
        em.split_grad(&d_scores, &mut d_lb, &mut d_lt);
        let entities = sentence.labels.iter().filter(|&&y| y != 0).count();
        let type_scale = if entities > 0 {
            1.0 / entities as f64
        } else {
            0.0
        };
        for (t, &y) in sentence.labels.iter().enumerate() {
            let c = Tag::from_index(y).kind() as usize;
            terms.span -= scale * em.log_boundary[3 * t + c];
            d_lb[3 * t + c] -= weights.span * scale;
            if let Some(k) = label_type(y) {
                terms.type_ce -= type_scale * em.log_types[t * n + k];
                d_lt[t * n + k] -= weights.type_ce * type_scale;
            }
        }
    }
    terms.total =
        weights.crf * terms.crf + weights.span * terms.span + weights.type_ce * terms.type_ce;
    let mut db = vec![0.0; 3 * len];
    let mut dv = vec![0.0; d * len];
    let mut dp = vec![0.0; n * d];
    em.backward(&types, d, &protos, &d_lb, &d_lt, &mut db, &mut dv, &mut dp);
    let narrow = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
    let d_type_scores = if type_offsets.is_empty() {
        Vec::new()
    } else {
        narrow(em.type_score_grads(&d_lt))
    };
    Ok(DenseLoss {
        d_type_scores,
        terms,
        grad: SentenceGrad {
            boundary: narrow(db),
            types: narrow(dv),
        },
        d_prototypes: narrow(dp),
        cdt: cdt_grad,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::crf::cdt_from_flat;
    use crate::model::rng::SplitMix64;

    fn total(
        boundary: &[f32],
        types: &[f32],
        labels: &[usize],
        protos: &[f32],
        d: usize,
        cdt: &CdtParams,
    ) -> f64 {
        let s = SentenceRef {
            boundary,
            types,
            labels,
        };
        dense_loss(&s, protos, d, cdt, &LossWeights::default())
            .unwrap()
            .terms
            .total
    }

    /// Central differences (f32 inputs, step 1e-2 relative to the values' scale) of the total
    /// loss agree with every analytic gradient.
    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = SplitMix64::new(5);
        let (len, n, d) = (7, 3, 4);
        let labels = [0, 1, 2, 0, 5, 3, 0];
        let boundary = rng.normal_vec(3 * len, 1.0);
        let types = rng.normal_vec(len * d, 0.7);
        let protos = rng.normal_vec(n * d, 0.7);
        let flat: Vec<f32> = rng.normal_vec(21, 0.5);
        let cdt = cdt_from_flat(&flat.clone().try_into().unwrap());
        let s = SentenceRef {
            boundary: &boundary,
            types: &types,
            labels: &labels,
        };
        let loss = dense_loss(&s, &protos, d, &cdt, &LossWeights::default()).unwrap();
        assert!(loss.terms.total.is_finite() && loss.terms.total > 0.0);
        let h = 1e-2f32;
        let fd = |f: &dyn Fn(f32) -> f64| (f(h) - f(-h)) / (2.0 * f64::from(h));
        let close = |a: f64, b: f32, what: &str| {
            assert!(
                (a - f64::from(b)).abs() <= 2e-3 * (1.0 + a.abs()),
                "{what}: finite difference {a} vs analytic {b}"
            );
        };
        for i in 0..boundary.len() {
            let g = fd(&|e| {
                let mut b = boundary.clone();
                b[i] += e;
                total(&b, &types, &labels, &protos, d, &cdt)
            });
            close(g, loss.grad.boundary[i], &format!("boundary {i}"));
        }
        for i in 0..types.len() {
            let g = fd(&|e| {
                let mut t = types.clone();
                t[i] += e;
                total(&boundary, &t, &labels, &protos, d, &cdt)
            });
            close(g, loss.grad.types[i], &format!("types {i}"));
        }
        for i in 0..protos.len() {
            let g = fd(&|e| {
                let mut p = protos.clone();
                p[i] += e;
                total(&boundary, &types, &labels, &p, d, &cdt)
            });
            close(g, loss.d_prototypes[i], &format!("prototype {i}"));
        }
        let grad = loss.cdt.to_flat();
        for i in 0..21 {
            let g = fd(&|e| {
                let mut f = flat.clone();
                f[i] += e;
                let c = cdt_from_flat(&f.try_into().unwrap());
                total(&boundary, &types, &labels, &protos, d, &c)
            });
            close(g, grad[i], &format!("cdt {i}"));
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let cdt = cdt_from_flat(&[0.0; 21]);
        let w = LossWeights::default();
        let s = SentenceRef {
            boundary: &[0.0; 6],
            types: &[0.0; 4],
            labels: &[0, 2],
        };
        let err = dense_loss(&s, &[0.0; 2], 2, &cdt, &w).unwrap_err();
        assert!(err.to_string().contains("BIO"), "{err}");
        assert!(dense_loss(&s, &[], 2, &cdt, &w).is_err());
        assert!(dense_loss(&s, &[0.0; 3], 2, &cdt, &w).is_err());
    }
}
