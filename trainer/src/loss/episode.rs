//! The loss of one N-way K-shot episode on word-level head outputs, with its gradients.
//!
//! ```text
//! s_k      = mean of support type vectors of words tagged B-k / I-k       (support prototype)
//! m_k      = mapped-memory mean (constant), or s_k itself when none is given
//! μ_k      = γ·MLP([s_k; m_k]) + (1 − γ)·s_k                              (prior prototype)
//! post_k   = mean over support ∪ query of type vectors of words of type k (posterior mean)
//! crf      = mean over non-empty query sentences of the CRF NLL, emissions with prototypes μ
//! span     = mean over all support + query words of −log_softmax(boundary)[gold O/B/I]
//! type     = mean over query entity words of −log_softmax_k(types · μ)[gold type]
//! kl       = mean over types of ½‖post_k − μ_k‖²
//! total    = w.crf·crf + w.span·span + w.type·type + w.kl·kl
//! ```
//!
//! With an "other" prototype `o` ([`EpisodeInput::other`]), labels may also name type `N`
//! (entities of the corpus's undrawn types): the CRF and type terms then score `N + 1` types
//! with prototypes `[μ; o]`, the span term counts those entities as B/I, and the gradient wrt
//! `o` is returned; prototypes, posterior and KL stay over the `N` drawn types.
//!
//! All arithmetic is `f64`; inputs and gradients are `f32` at the interface. The functions are
//! pure (no global state), so any number of threads may call them at once.

use anyhow::{bail, ensure, Context, Result};
use ner_edge::bundle::metadata::CdtParams;
use ner_edge::decode::{is_valid_bio, label_count, Tag};
use serde::{Deserialize, Serialize};

use super::crf::{crf_nll, CdtGrad, CrfTransitions};
use super::emissions::Emissions;
use super::prior::{combine, gamma, PriorCache, PriorParams};
use super::prototypes::{label_type, TypeMeans};

/// Weights of the four loss terms.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossWeights {
    /// CRF negative log-likelihood on the query (default 1).
    pub crf: f64,
    /// Boundary (O/B/I) cross-entropy on support and query words (default 1).
    pub span: f64,
    /// Type cross-entropy on query entity words (default 1).
    #[serde(rename = "type")]
    pub type_ce: f64,
    /// λ of the variational term (default 1e-3).
    pub kl: f64,
}

impl Default for LossWeights {
    fn default() -> Self {
        LossWeights {
            crf: 1.0,
            span: 1.0,
            type_ce: 1.0,
            kl: 1e-3,
        }
    }
}

/// Word-level head outputs and gold labels of one sentence (first piece of each word).
#[derive(Clone, Copy, Debug)]
pub struct SentenceRef<'a> {
    /// `[T, 3]` boundary logits over (O, B, I).
    pub boundary: &'a [f32],
    /// `[T, type_dim]` type vectors.
    pub types: &'a [f32],
    /// `[T]` labels, layout of [`ner_edge::decode::labels`] (`0` O, `1 + 2k` B-k, `2 + 2k` I-k).
    pub labels: &'a [usize],
}

/// One episode as the loss sees it.
#[derive(Clone, Copy, Debug)]
pub struct EpisodeInput<'a> {
    /// Number of types N of the episode (at least 1).
    pub n_types: usize,
    /// Type-vector dimension (equal to the prior MLP's `dim`).
    pub type_dim: usize,
    /// `[N]` type names, used in error messages.
    pub type_names: &'a [String],
    /// Support sentences: every type must have at least one entity word here.
    pub support: &'a [SentenceRef<'a>],
    /// Query sentences (may be empty; then the CRF and type terms are 0).
    pub query: &'a [SentenceRef<'a>],
    /// `[N]` mapped-memory mean of each type (`[type_dim]`, a constant: no gradient), or `None`
    /// to use the support mean `s_k` itself, in which case the gradient flows through both
    /// halves of the MLP input.
    pub mapped_means: &'a [Option<Vec<f32>>],
    /// The "other" prototype (`[type_dim]`) when labels may name the extra type `N`.
    pub other: Option<&'a [f32]>,
}

/// The separate loss terms (unweighted) and the weighted total.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LossTerms {
    /// CRF negative log-likelihood with prototype emissions (mean over non-empty query
    /// sentences; the dense loss divides it by the sequence length instead).
    pub crf: f64,
    /// Mean boundary (O/B/I) cross-entropy over the words scored.
    pub span: f64,
    /// Mean type cross-entropy over the entity words scored.
    pub type_ce: f64,
    /// Mean over types of `½‖post_k − μ_k‖²` (0 for the dense loss).
    pub kl: f64,
    /// Weighted distillation terms against a teacher (0 without distillation; see
    /// [`super::distill`]).
    #[serde(default)]
    pub distill: f64,
    /// `Σ weight · term`, distillation included.
    pub total: f64,
}

impl std::ops::AddAssign<&LossTerms> for LossTerms {
    /// Adds every term (for sums over episodes or dense sequences).
    fn add_assign(&mut self, other: &LossTerms) {
        self.crf += other.crf;
        self.span += other.span;
        self.type_ce += other.type_ce;
        self.kl += other.kl;
        self.distill += other.distill;
        self.total += other.total;
    }
}

/// Gradient of the total loss wrt one sentence's word-level head outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct SentenceGrad {
    /// `[T, 3]`.
    pub boundary: Vec<f32>,
    /// `[T, type_dim]`.
    pub types: Vec<f32>,
}

/// Result of [`episode_loss`]: the loss terms and the gradient of `terms.total` wrt every input.
#[derive(Clone, Debug, PartialEq)]
pub struct EpisodeLoss {
    /// The loss terms; the gradients below are those of `terms.total`.
    pub terms: LossTerms,
    /// One per support sentence, same order.
    pub support: Vec<SentenceGrad>,
    /// One per query sentence, same order.
    pub query: Vec<SentenceGrad>,
    /// Wrt the 21 CDT numbers.
    pub cdt: CdtGrad,
    /// Wrt the prior MLP parameters (same shapes as the parameters).
    pub prior: PriorParams,
    /// `[N, type_dim]` the prior prototypes μ used for the query emissions.
    pub prototypes: Vec<f32>,
    /// `[type_dim]` wrt the "other" prototype (empty without one).
    pub other: Vec<f32>,
}

/// One sentence widened to `f64`.
struct Sentence {
    boundary: Vec<f64>,
    types: Vec<f64>,
    labels: Vec<usize>,
}

fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

fn narrow(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// Checks and widens a set of sentences.
fn sentences(set: &[SentenceRef<'_>], what: &str, d: usize, n: usize) -> Result<Vec<Sentence>> {
    let l = label_count(n);
    set.iter()
        .enumerate()
        .map(|(i, s)| {
            let len = s.labels.len();
            let ctx = || format!("{what} sentence {i}");
            ensure!(
                s.boundary.len() == 3 * len && s.types.len() == d * len,
                "{}: {len} labels need boundary [{len}, 3] and types [{len}, {d}], got {} and {} values",
                ctx(),
                s.boundary.len(),
                s.types.len()
            );
            if !is_valid_bio(s.labels, l) {
                bail!(
                    "{}: labels {:?} are not a valid BIO sequence for {n} types",
                    ctx(),
                    s.labels
                );
            }
            ensure!(
                s.boundary.iter().chain(s.types).all(|x| x.is_finite()),
                "{}: head outputs must be finite",
                ctx()
            );
            Ok(Sentence {
                boundary: widen(s.boundary),
                types: widen(s.types),
                labels: s.labels.to_vec(),
            })
        })
        .collect()
}

/// The prior path shared by training and inference.
struct PriorPath {
    support_means: TypeMeans,
    /// Per type: the MLP forward values.
    caches: Vec<PriorCache>,
    /// Per type: whether `m_k` was taken from the support mean.
    mapped_is_support: Vec<bool>,
    /// `[N, d]` prior prototypes.
    mu: Vec<f64>,
}

fn prior_path(
    n: usize,
    d: usize,
    names: &[String],
    support: &[Sentence],
    prior: &PriorParams,
    mapped_means: &[Option<Vec<f32>>],
    with_other: bool,
) -> Result<PriorPath> {
    ensure!(n > 0, "an episode needs at least one type");
    ensure!(d > 0, "type dimension must be positive");
    ensure!(
        names.len() == n && mapped_means.len() == n,
        "{n} types need {n} names and {n} mapped means, got {} and {}",
        names.len(),
        mapped_means.len()
    );
    prior.check().context("prior MLP")?;
    ensure!(
        prior.dim == d,
        "prior MLP dimension {} differs from type dimension {d}",
        prior.dim
    );
    let labelled = n + usize::from(with_other);
    let support_means = TypeMeans::compute(
        support.iter().map(|s| (&s.types[..], &s.labels[..])),
        d,
        labelled,
    );
    let mut caches = Vec::with_capacity(n);
    let mut mapped_is_support = Vec::with_capacity(n);
    let mut mu = Vec::with_capacity(n * d);
    for k in 0..n {
        ensure!(
            support_means.counts[k] > 0,
            "type {:?} has no entity word in the support set",
            names[k]
        );
        let s = &support_means.means[k * d..(k + 1) * d];
        let mut input = s.to_vec();
        match &mapped_means[k] {
            Some(m) => {
                ensure!(
                    m.len() == d && m.iter().all(|x| x.is_finite()),
                    "mapped mean of type {:?} must be {d} finite values",
                    names[k]
                );
                input.extend(m.iter().map(|&x| f64::from(x)));
                mapped_is_support.push(false);
            }
            None => {
                input.extend_from_slice(s);
                mapped_is_support.push(true);
            }
        }
        let cache = prior.forward(&input);
        mu.extend(combine(&cache.output, s));
        caches.push(cache);
    }
    Ok(PriorPath {
        support_means,
        caches,
        mapped_is_support,
        mu,
    })
}

/// The prior prototypes μ (`[N, type_dim]`) of an episode's types from its support set, by the
/// same computation as [`episode_loss`] (support means → MLP → γ), without gradients: the
/// prototypes to hand to [`ner_edge::emissions::emissions`] at evaluation. `input.query` is
/// ignored. Errors as for [`episode_loss`].
pub fn prior_prototypes(input: &EpisodeInput<'_>, prior: &PriorParams) -> Result<Vec<f32>> {
    let (n, d) = (input.n_types, input.type_dim);
    let with_other = input.other.is_some();
    let support = sentences(input.support, "support", d, n + usize::from(with_other))?;
    let path = prior_path(
        n,
        d,
        input.type_names,
        &support,
        prior,
        input.mapped_means,
        with_other,
    )?;
    Ok(narrow(&path.mu))
}

/// Per type, the type vectors of that type's entity words (`[rows, type_dim]` row-major, in
/// sentence and word order): the support vectors for [`super::LabelMemory::retrieve`] and the
/// rows to [`super::LabelMemory::push`] after a step.
///
/// Errors: shapes as in [`episode_loss`], or a label outside the `n_types` label set.
pub fn entity_vectors(
    set: &[SentenceRef<'_>],
    type_dim: usize,
    n_types: usize,
) -> Result<Vec<Vec<f32>>> {
    let mut out = vec![Vec::new(); n_types];
    for (i, s) in set.iter().enumerate() {
        ensure!(
            s.types.len() == s.labels.len() * type_dim,
            "sentence {i}: types must be [{}, {type_dim}], got {} values",
            s.labels.len(),
            s.types.len()
        );
        for (t, &label) in s.labels.iter().enumerate() {
            ensure!(
                label < label_count(n_types),
                "sentence {i}: label {label} is outside the label set of {n_types} types"
            );
            if let Some(k) = label_type(label) {
                out[k].extend_from_slice(&s.types[t * type_dim..(t + 1) * type_dim]);
            }
        }
    }
    Ok(out)
}

/// Index of the boundary class (O = 0, B = 1, I = 2) of a label.
fn boundary_class(label: usize) -> usize {
    Tag::from_index(label).kind() as usize
}

/// Loss and gradients of one episode (see the module docs for the exact definition).
///
/// Errors: `n_types == 0`, `type_dim == 0`, a sentence whose boundary/types/labels lengths
/// disagree, labels outside the label set or not valid BIO, non-finite head outputs, a type
/// without support entity words, `type_names`/`mapped_means` not of length `n_types`, a mapped
/// mean not of length `type_dim`, or prior parameters of another dimension.
pub fn episode_loss(
    input: &EpisodeInput<'_>,
    prior: &PriorParams,
    cdt: &CdtParams,
    weights: &LossWeights,
) -> Result<EpisodeLoss> {
    let (n, d) = (input.n_types, input.type_dim);
    let with_other = input.other.is_some();
    if let Some(o) = input.other {
        ensure!(
            o.len() == d && o.iter().all(|x| x.is_finite()),
            "the other prototype must be {d} finite values"
        );
    }
    // Types the labels range over: the drawn ones, then "other".
    let m = n + usize::from(with_other);
    let l = label_count(m);
    let support = sentences(input.support, "support", d, m)?;
    let query = sentences(input.query, "query", d, m)?;
    let path = prior_path(
        n,
        d,
        input.type_names,
        &support,
        prior,
        input.mapped_means,
        with_other,
    )?;
    let mut mu = path.mu.clone();
    if let Some(o) = input.other {
        mu.extend(o.iter().map(|&x| f64::from(x)));
    }
    let mu = &mu;
    let posterior = TypeMeans::compute(
        support
            .iter()
            .chain(&query)
            .map(|s| (&s.types[..], &s.labels[..])),
        d,
        m,
    );

    let mut terms = LossTerms::default();
    let mut d_mu = vec![0.0; m * d];
    let mut d_post = vec![0.0; m * d];
    let mut cdt_grad = CdtGrad::default();

    let n_words: usize = support.iter().chain(&query).map(|s| s.labels.len()).sum();
    let n_crf = query.iter().filter(|s| !s.labels.is_empty()).count();
    let n_entity: usize = query
        .iter()
        .flat_map(|s| &s.labels)
        .filter(|&&y| y != 0)
        .count();
    let span_scale = if n_words > 0 {
        1.0 / n_words as f64
    } else {
        0.0
    };
    let crf_scale = if n_crf > 0 { 1.0 / n_crf as f64 } else { 0.0 };
    let type_scale = if n_entity > 0 {
        1.0 / n_entity as f64
    } else {
        0.0
    };

    let transitions = CrfTransitions::new(cdt, m);
    let mut support_grads = Vec::with_capacity(support.len());
    for s in &support {
        let em = Emissions::compute(&s.boundary, &s.types, d, &[], 0)?;
        let mut d_lb = vec![0.0; s.boundary.len()];
        for (t, &y) in s.labels.iter().enumerate() {
            let c = boundary_class(y);
            terms.span -= span_scale * em.log_boundary[3 * t + c];
            d_lb[3 * t + c] -= weights.span * span_scale;
        }
        let mut db = vec![0.0; s.boundary.len()];
        em.backward(&s.types, d, &[], &d_lb, &[], &mut db, &mut [], &mut []);
        support_grads.push((db, vec![0.0; s.types.len()]));
    }

    let mut query_grads = Vec::with_capacity(query.len());
    for s in &query {
        let len = s.labels.len();
        let em = Emissions::compute(&s.boundary, &s.types, d, mu, m)?;
        let mut d_lb = vec![0.0; 3 * len];
        let mut d_lt = vec![0.0; m * len];
        if len > 0 {
            let scores = em.scores();
            let mut d_scores = vec![0.0; len * l];
            let mut g = CdtGrad::default();
            let nll = crf_nll(&scores, &s.labels, &transitions, &mut d_scores, &mut g)?;
            terms.crf += crf_scale * nll;
            let w = weights.crf * crf_scale;
            cdt_grad.add_scaled(&g, w);
            for x in &mut d_scores {
                *x *= w;
            }
            em.split_grad(&d_scores, &mut d_lb, &mut d_lt);
        }
        for (t, &y) in s.labels.iter().enumerate() {
            let c = boundary_class(y);
            terms.span -= span_scale * em.log_boundary[3 * t + c];
            d_lb[3 * t + c] -= weights.span * span_scale;
            if let Some(k) = label_type(y) {
                terms.type_ce -= type_scale * em.log_types[t * m + k];
                d_lt[t * m + k] -= weights.type_ce * type_scale;
            }
        }
        let mut db = vec![0.0; 3 * len];
        let mut dv = vec![0.0; d * len];
        em.backward(&s.types, d, mu, &d_lb, &d_lt, &mut db, &mut dv, &mut d_mu);
        query_grads.push((db, dv));
    }

    let kl_scale = 1.0 / n as f64;
    for ((dm, dp), (&mk, &p)) in d_mu[..n * d]
        .iter_mut()
        .zip(d_post[..n * d].iter_mut())
        .zip(mu.iter().zip(&posterior.means))
    {
        let diff = p - mk;
        terms.kl += kl_scale * 0.5 * diff * diff;
        *dm -= weights.kl * kl_scale * diff;
        *dp += weights.kl * kl_scale * diff;
    }
    terms.total = weights.crf * terms.crf
        + weights.span * terms.span
        + weights.type_ce * terms.type_ce
        + weights.kl * terms.kl;

    let g = gamma();
    let mut prior_grad = PriorParams::zeros(d);
    let mut d_support_means = vec![0.0; m * d];
    let mut d_input = vec![0.0; 2 * d];
    for k in 0..n {
        let dmu = &d_mu[k * d..(k + 1) * d];
        let dy: Vec<f64> = dmu.iter().map(|x| g * x).collect();
        d_input.fill(0.0);
        prior.backward(&path.caches[k], &dy, &mut prior_grad, &mut d_input);
        let ds = &mut d_support_means[k * d..(k + 1) * d];
        for i in 0..d {
            ds[i] += (1.0 - g) * dmu[i] + d_input[i];
            if path.mapped_is_support[k] {
                ds[i] += d_input[d + i];
            }
        }
    }
    for (s, (_, dv)) in support.iter().zip(&mut support_grads) {
        path.support_means.backward(&d_support_means, &s.labels, dv);
        posterior.backward(&d_post, &s.labels, dv);
    }
    for (s, (_, dv)) in query.iter().zip(&mut query_grads) {
        posterior.backward(&d_post, &s.labels, dv);
    }
    let pack = |v: Vec<(Vec<f64>, Vec<f64>)>| -> Vec<SentenceGrad> {
        v.into_iter()
            .map(|(b, t)| SentenceGrad {
                boundary: narrow(&b),
                types: narrow(&t),
            })
            .collect()
    };
    Ok(EpisodeLoss {
        terms,
        support: pack(support_grads),
        query: pack(query_grads),
        cdt: cdt_grad,
        prior: prior_grad,
        prototypes: narrow(&mu[..n * d]),
        other: narrow(&d_mu[n * d..]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::crf::cdt_from_flat;
    use crate::model::rng::SplitMix64;

    struct Owned {
        boundary: Vec<f32>,
        types: Vec<f32>,
        labels: Vec<usize>,
    }

    struct Fixture {
        n: usize,
        d: usize,
        names: Vec<String>,
        support: Vec<Owned>,
        query: Vec<Owned>,
        prior: PriorParams,
        cdt: CdtParams,
        mapped: Vec<Option<Vec<f32>>>,
        other: Option<Vec<f32>>,
    }

    #[derive(Clone, Copy, Debug)]
    enum Coord {
        Other(usize),
        SupportBoundary(usize, usize),
        SupportTypes(usize, usize),
        QueryBoundary(usize, usize),
        QueryTypes(usize, usize),
        Cdt(usize),
        Prior(usize, usize),
    }

    fn sentence(rng: &mut SplitMix64, labels: &[usize], d: usize) -> Owned {
        Owned {
            boundary: rng.normal_vec(3 * labels.len(), 1.0),
            types: rng.normal_vec(d * labels.len(), 0.8),
            labels: labels.to_vec(),
        }
    }

    /// d = 5, 3 types; support sentences of length 1, 4, 7; query sentences of length 4, 7, 1
    /// and 0; type 1 has no mapped mean (falls back to the support mean).
    fn fixture(seed: u64) -> Fixture {
        let (n, d) = (3, 5);
        let mut rng = SplitMix64::new(seed);
        let support = [vec![1], vec![3, 4, 0, 5], vec![0, 1, 2, 2, 0, 5, 6]]
            .iter()
            .map(|l| sentence(&mut rng, l, d))
            .collect();
        let query = [vec![0, 5, 6, 0], vec![1, 2, 0, 3, 4, 4, 0], vec![0], vec![]]
            .iter()
            .map(|l| sentence(&mut rng, l, d))
            .collect();
        let prior = PriorParams {
            dim: d,
            fc1_weight: rng.normal_vec(2 * d * d, 0.5),
            fc1_bias: rng.normal_vec(d, 0.3),
            fc2_weight: rng.normal_vec(d * d, 0.5),
            fc2_bias: rng.normal_vec(d, 0.3),
        };
        let cdt = cdt_from_flat(&rng.normal_vec(21, 1.0).try_into().unwrap());
        let mapped = vec![
            Some(rng.normal_vec(d, 0.5)),
            None,
            Some(rng.normal_vec(d, 0.5)),
        ];
        Fixture {
            n,
            d,
            names: vec!["person".into(), "place".into(), "thing".into()],
            support,
            query,
            prior,
            cdt,
            mapped,
            other: None,
        }
    }

    /// [`fixture`] with an "other" prototype and some words relabelled as "other" entities
    /// (type 3: B = 7, I = 8) in support and query.
    fn fixture_with_other(seed: u64) -> Fixture {
        let mut fx = fixture(seed);
        let mut rng = SplitMix64::new(seed ^ 99);
        fx.other = Some(rng.normal_vec(fx.d, 0.5));
        fx.support[1].labels = vec![3, 4, 7, 5];
        fx.query[0].labels = vec![7, 5, 6, 0];
        fx.query[1].labels = vec![1, 2, 7, 8, 3, 4, 0];
        fx
    }

    fn refs(set: &[Owned]) -> Vec<SentenceRef<'_>> {
        set.iter()
            .map(|s| SentenceRef {
                boundary: &s.boundary,
                types: &s.types,
                labels: &s.labels,
            })
            .collect()
    }

    impl Fixture {
        fn eval(&self, w: &LossWeights) -> Result<EpisodeLoss> {
            let (support, query) = (refs(&self.support), refs(&self.query));
            let input = EpisodeInput {
                n_types: self.n,
                type_dim: self.d,
                type_names: &self.names,
                support: &support,
                query: &query,
                mapped_means: &self.mapped,
                other: self.other.as_deref(),
            };
            episode_loss(&input, &self.prior, &self.cdt, w)
        }

        fn coords(&self) -> Vec<Coord> {
            let mut out = Vec::new();
            for (i, s) in self.support.iter().enumerate() {
                out.extend((0..s.boundary.len()).map(|j| Coord::SupportBoundary(i, j)));
                out.extend((0..s.types.len()).map(|j| Coord::SupportTypes(i, j)));
            }
            for (i, s) in self.query.iter().enumerate() {
                out.extend((0..s.boundary.len()).map(|j| Coord::QueryBoundary(i, j)));
                out.extend((0..s.types.len()).map(|j| Coord::QueryTypes(i, j)));
            }
            out.extend((0..21).map(Coord::Cdt));
            if let Some(o) = &self.other {
                out.extend((0..o.len()).map(Coord::Other));
            }
            let p = &self.prior;
            for (t, len) in [
                p.fc1_weight.len(),
                p.fc1_bias.len(),
                p.fc2_weight.len(),
                p.fc2_bias.len(),
            ]
            .into_iter()
            .enumerate()
            {
                out.extend((0..len).map(|i| Coord::Prior(t, i)));
            }
            out
        }

        fn value(&mut self, c: Coord) -> &mut f32 {
            match c {
                Coord::SupportBoundary(i, j) => &mut self.support[i].boundary[j],
                Coord::SupportTypes(i, j) => &mut self.support[i].types[j],
                Coord::QueryBoundary(i, j) => &mut self.query[i].boundary[j],
                Coord::QueryTypes(i, j) => &mut self.query[i].types[j],
                Coord::Cdt(i) if i < 15 => &mut self.cdt.matrix[i / 5][i % 5],
                Coord::Cdt(i) if i < 18 => &mut self.cdt.start[i - 15],
                Coord::Cdt(i) => &mut self.cdt.end[i - 18],
                Coord::Other(i) => &mut self.other.as_mut().unwrap()[i],
                Coord::Prior(0, i) => &mut self.prior.fc1_weight[i],
                Coord::Prior(1, i) => &mut self.prior.fc1_bias[i],
                Coord::Prior(2, i) => &mut self.prior.fc2_weight[i],
                Coord::Prior(_, i) => &mut self.prior.fc2_bias[i],
            }
        }
    }

    fn analytic(out: &EpisodeLoss, c: Coord) -> f64 {
        let v = match c {
            Coord::SupportBoundary(i, j) => out.support[i].boundary[j],
            Coord::SupportTypes(i, j) => out.support[i].types[j],
            Coord::QueryBoundary(i, j) => out.query[i].boundary[j],
            Coord::QueryTypes(i, j) => out.query[i].types[j],
            Coord::Cdt(i) => out.cdt.to_flat()[i],
            Coord::Other(i) => out.other[i],
            Coord::Prior(0, i) => out.prior.fc1_weight[i],
            Coord::Prior(1, i) => out.prior.fc1_bias[i],
            Coord::Prior(2, i) => out.prior.fc2_weight[i],
            Coord::Prior(_, i) => out.prior.fc2_bias[i],
        };
        f64::from(v)
    }

    /// Central differences of the f64 total, one f32 input at a time: a step of about 1e-3
    /// (`x ± 1e-3` rounded to f32), divided by the step actually taken. Tolerance
    /// `1e-6 + 1e-5·|g|`: the truncation error of the central difference is about
    /// `h²/6·|f'''| ≲ 2e-7` here (largest observed error 1.6e-7, in the CRF term), the f32
    /// rounding of the returned gradient `6e-8·|g|`.
    fn check_fd(fx: &mut Fixture, w: &LossWeights, what: &str) {
        let out = fx.eval(w).unwrap();
        let mut nonzero = 0;
        for c in fx.coords() {
            let v0 = *fx.value(c);
            *fx.value(c) = v0 + 1e-3;
            let plus_at = f64::from(*fx.value(c));
            let plus = fx.eval(w).unwrap().terms.total;
            *fx.value(c) = v0 - 1e-3;
            let minus_at = f64::from(*fx.value(c));
            let minus = fx.eval(w).unwrap().terms.total;
            *fx.value(c) = v0;
            let fd = (plus - minus) / (plus_at - minus_at);
            let an = analytic(&out, c);
            let err = (fd - an).abs();
            assert!(
                err < 1e-6 + 1e-5 * an.abs(),
                "{what}: {c:?}: finite difference {fd} vs analytic {an}"
            );
            if an.abs() > 1e-6 {
                nonzero += 1;
            }
        }
        assert!(nonzero > 0, "{what}: every gradient is zero");
    }

    fn only(crf: f64, span: f64, type_ce: f64, kl: f64) -> LossWeights {
        LossWeights {
            crf,
            span,
            type_ce,
            kl,
        }
    }

    /// [`check_fd`] of each of the four terms alone.
    fn check_each_term(fx: &mut Fixture, tag: &str) {
        for (w, what) in [
            (only(1.0, 0.0, 0.0, 0.0), "crf"),
            (only(0.0, 1.0, 0.0, 0.0), "span"),
            (only(0.0, 0.0, 1.0, 0.0), "type"),
            (only(0.0, 0.0, 0.0, 1.0), "kl"),
        ] {
            check_fd(fx, &w, &format!("{what}{tag}"));
        }
    }

    #[test]
    fn every_term_matches_finite_differences() {
        check_each_term(&mut fixture(1), "");
    }

    #[test]
    fn every_term_matches_finite_differences_with_an_other_type() {
        let mut fx = fixture_with_other(7);
        check_each_term(&mut fx, " with other");
        let out = fx.eval(&LossWeights::default()).unwrap();
        assert_eq!(out.prototypes.len(), fx.n * fx.d);
        assert!(out.other.iter().any(|&g| g != 0.0));
        let mut without = fixture_with_other(7);
        without.other = None;
        let e = without
            .eval(&LossWeights::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("BIO"),
            "labels of the other type need the other prototype: {e}"
        );
    }

    #[test]
    fn weighted_total_matches_finite_differences() {
        let mut fx = fixture(2);
        check_fd(&mut fx, &only(0.7, 1.3, 0.9, 0.5), "mixed total");
        check_fd(&mut fx, &LossWeights::default(), "default total");
    }

    #[test]
    fn terms_are_reported_separately_and_weighted() {
        let fx = fixture(3);
        let w = only(0.7, 1.3, 0.9, 0.5);
        let t = fx.eval(&w).unwrap().terms;
        for (weights, term) in [
            (only(1.0, 0.0, 0.0, 0.0), t.crf),
            (only(0.0, 1.0, 0.0, 0.0), t.span),
            (only(0.0, 0.0, 1.0, 0.0), t.type_ce),
            (only(0.0, 0.0, 0.0, 1.0), t.kl),
        ] {
            let other = fx.eval(&weights).unwrap().terms;
            assert_eq!(other.total, term);
            assert_eq!(other.crf, t.crf);
        }
        let want = 0.7 * t.crf + 1.3 * t.span + 0.9 * t.type_ce + 0.5 * t.kl;
        assert!((t.total - want).abs() < 1e-12);
        assert!(t.crf > 0.0 && t.span > 0.0 && t.type_ce > 0.0 && t.kl > 0.0);
    }

    /// The CRF term equals the runtime's own emissions + forward–backward on the returned
    /// prototypes (f32 there, so within 1e-4), and the span term equals its definition.
    #[test]
    fn terms_agree_with_the_runtime_and_definitions() {
        let fx = fixture(4);
        let out = fx.eval(&LossWeights::default()).unwrap();
        let trans = ner_edge::decode::unfold(&fx.cdt, fx.n);
        let l = label_count(fx.n);
        let mut crf = 0.0;
        let mut counted = 0;
        for s in fx.query.iter().filter(|s| !s.labels.is_empty()) {
            let mut em = Vec::new();
            ner_edge::emissions::emissions(
                &s.boundary,
                &s.types,
                fx.d,
                &out.prototypes,
                fx.n,
                &mut em,
            );
            let m = ner_edge::decode::marginals(&em, l, &trans);
            let mut gold =
                f64::from(trans.start[s.labels[0]] + trans.end[*s.labels.last().unwrap()]);
            for (t, &y) in s.labels.iter().enumerate() {
                gold += f64::from(em[t * l + y]);
                if t > 0 {
                    gold += f64::from(trans.get(s.labels[t - 1], y));
                }
            }
            crf += m.log_z() - gold;
            counted += 1;
        }
        crf /= counted as f64;
        assert!(
            (out.terms.crf - crf).abs() < 1e-4,
            "{} vs {crf}",
            out.terms.crf
        );
        let mut span = 0.0;
        let mut words = 0;
        for s in fx.support.iter().chain(&fx.query) {
            for (t, &y) in s.labels.iter().enumerate() {
                let b: Vec<f64> = s.boundary[3 * t..3 * t + 3]
                    .iter()
                    .map(|&x| f64::from(x))
                    .collect();
                let z = b.iter().map(|x| x.exp()).sum::<f64>().ln();
                span += z - b[boundary_class(y)];
                words += 1;
            }
        }
        span /= words as f64;
        assert!((out.terms.span - span).abs() < 1e-12);
    }

    #[test]
    fn inference_prototypes_match_training_and_the_runtime_prior() {
        let fx = fixture(5);
        let out = fx.eval(&LossWeights::default()).unwrap();
        let support = refs(&fx.support);
        let input = EpisodeInput {
            n_types: fx.n,
            type_dim: fx.d,
            type_names: &fx.names,
            support: &support,
            query: &[],
            mapped_means: &fx.mapped,
            other: None,
        };
        let mu = prior_prototypes(&input, &fx.prior).unwrap();
        assert_eq!(mu, out.prototypes);
        let vectors = entity_vectors(&support, fx.d, fx.n).unwrap();
        let mlp = |x: &[f32]| fx.prior.forward_f32(x);
        for k in 0..fx.n {
            let rows = vectors[k].len() / fx.d;
            let s = ner_edge::adapt::memory::mean_rows(&vectors[k], rows, fx.d).unwrap();
            let m = fx.mapped[k].clone().unwrap_or_else(|| s.clone());
            let want = ner_edge::adapt::memory::prior_prototype(
                &s,
                &m,
                Some(&mlp),
                ner_edge::adapt::memory::PRIOR_GAMMA,
            )
            .unwrap();
            for (g, w) in mu[k * fx.d..(k + 1) * fx.d].iter().zip(&want) {
                assert!((g - w).abs() < 1e-5, "type {k}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn entity_vectors_group_words_by_type() {
        let types: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let s = [SentenceRef {
            boundary: &[0.0; 12],
            types: &types,
            labels: &[3, 4, 0, 1],
        }];
        let v = entity_vectors(&s, 2, 2).unwrap();
        assert_eq!(v, vec![vec![6.0, 7.0], vec![0.0, 1.0, 2.0, 3.0]]);
        assert!(entity_vectors(&s, 2, 1).is_err());
        assert!(entity_vectors(&s, 3, 2).is_err());
    }

    #[test]
    fn bad_input_is_rejected_with_errors() {
        let w = LossWeights::default();
        let mut fx = fixture(6);
        fx.query[0].labels[1] = 6;
        let e = fx.eval(&w).unwrap_err().to_string();
        assert!(e.contains("query sentence 0") && e.contains("BIO"), "{e}");
        let mut fx = fixture(6);
        fx.support[1].types.pop();
        let e = fx.eval(&w).unwrap_err().to_string();
        assert!(e.contains("support sentence 1"), "{e}");
        let mut fx = fixture(6);
        for s in &mut fx.support {
            for y in &mut s.labels {
                if *y <= 2 {
                    *y = 0;
                }
            }
        }
        let e = fx.eval(&w).unwrap_err().to_string();
        assert!(e.contains("\"person\"") && e.contains("support"), "{e}");
        let mut fx = fixture(6);
        fx.mapped.pop();
        assert!(fx.eval(&w).is_err());
        let mut fx = fixture(6);
        fx.mapped[0] = Some(vec![0.0; 4]);
        assert!(fx.eval(&w).is_err());
        let mut fx = fixture(6);
        fx.prior = PriorParams::zeros(4);
        assert!(fx.eval(&w).is_err());
        let mut fx = fixture(6);
        fx.query[1].boundary[2] = f32::INFINITY;
        assert!(fx.eval(&w).is_err());
        let mut fx = fixture(6);
        fx.query[1].labels.push(7);
        assert!(fx.eval(&w).is_err());
    }

    #[test]
    fn weights_have_the_documented_defaults_and_serde_names() {
        let w = LossWeights::default();
        assert_eq!(w, only(1.0, 1.0, 1.0, 1e-3));
        let json = serde_json::to_string(&w).unwrap();
        assert!(json.contains("\"type\":1.0"), "{json}");
        let back: LossWeights = serde_json::from_str(r#"{"kl": 0.5}"#).unwrap();
        assert_eq!(back, only(1.0, 1.0, 1.0, 0.5));
        assert!(serde_json::from_str::<LossWeights>(r#"{"klx": 0.5}"#).is_err());
    }

    #[test]
    fn two_threads_get_identical_results() {
        let fx = fixture(7);
        let w = LossWeights::default();
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| fx.eval(&w).unwrap());
            let b = s.spawn(|| fx.eval(&w).unwrap());
            (a.join().unwrap(), b.join().unwrap())
        });
        assert_eq!(a, b);
    }
}
