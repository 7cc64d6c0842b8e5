//! OT retrieval from the label memory and the MANNER prior prototype.
//!
//! For the support vectors `Y` (`[n, d]`) of one new entity type, every memory slot `X`
//! (`[rows, d]`) is compared with [`sinkhorn`](super::sinkhorn::sinkhorn) on the normalised
//! squared Euclidean cost; the slot with the smallest `⟨C, T⟩` wins and its points are moved next
//! to the support by the barycentric map `mapped_i = Σ_j T_ij y_j / Σ_j T_ij`.

use super::sinkhorn::{squared_euclidean_cost_into, Plan, SinkhornConfig, SinkhornWorkspace};
use crate::bundle::{tensor_names, Bundle, MemorySlot};
use crate::{Error, Result};

/// MANNER's weight `γ` of the MLP term in [`prior_prototype`].
pub const PRIOR_GAMMA: f32 = 0.5;

/// The slot retrieved for one support set.
#[derive(Clone, Debug, PartialEq)]
pub struct Retrieval {
    /// Index into the `slots` passed to [`retrieve`].
    pub slot: usize,
    /// `⟨C, T⟩` between that slot and the support (the smallest over all slots).
    pub distance: f64,
    /// The slot's points after the barycentric map, row-major `[slots[slot].rows, d]`.
    pub mapped: Vec<f32>,
    /// Whether the winning plan met the Sinkhorn tolerance.
    pub converged: bool,
}

/// Retrieves the memory slot nearest to `support` (`[n, d]`, row-major) in entropic OT distance,
/// with [`SinkhornConfig::default`].
///
/// `memory` is the row-major `[total_rows, d]` label-memory matrix; slot `k` is rows
/// `slots[k].first_row .. slots[k].first_row + slots[k].rows`. Each slot's cost is normalised by
/// its own maximum (see [`squared_euclidean_cost`](super::sinkhorn::squared_euclidean_cost)).
/// Slots that are empty or reach past the end of `memory` are skipped, as are slots whose
/// distance is not finite (e.g. NaN coordinates). Ties go to the lower slot index.
///
/// Returns `None` when `n == 0`, `d == 0`, `support.len() != n·d`, or no slot qualifies.
/// Allocates scratch buffers; use [`Retriever`] to reuse them.
pub fn retrieve(
    memory: &[f32],
    slots: &[MemorySlot],
    d: usize,
    support: &[f32],
    n: usize,
) -> Option<Retrieval> {
    Retriever::new().retrieve(memory, slots, d, support, n)
}

/// [`retrieve`] with a chosen [`SinkhornConfig`] and scratch buffers kept between calls: after
/// the first call of a given size, a call allocates only the returned `mapped` vector.
#[derive(Clone, Debug, Default)]
pub struct Retriever {
    /// Sinkhorn settings used for every slot.
    pub config: SinkhornConfig,
    solver: SinkhornWorkspace,
    cost: Vec<f64>,
    plan: Plan,
    best: Plan,
}

impl Retriever {
    /// A retriever with the MANNER setting ([`SinkhornConfig::default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// A retriever with `config`.
    pub fn with_config(config: SinkhornConfig) -> Self {
        Retriever {
            config,
            ..Self::default()
        }
    }

    /// See [`retrieve`].
    pub fn retrieve(
        &mut self,
        memory: &[f32],
        slots: &[MemorySlot],
        d: usize,
        support: &[f32],
        n: usize,
    ) -> Option<Retrieval> {
        if n == 0 || d == 0 || n.checked_mul(d) != Some(support.len()) {
            return None;
        }
        let mut winner: Option<usize> = None;
        for (k, slot) in slots.iter().enumerate() {
            let Some(points) = slot_rows(memory, slot, d) else {
                continue;
            };
            squared_euclidean_cost_into(points, slot.rows, support, n, d, &mut self.cost);
            self.solver
                .solve(&self.cost, slot.rows, n, &self.config, &mut self.plan);
            let better = match winner {
                None => true,
                Some(_) => self.plan.distance < self.best.distance,
            };
            if self.plan.distance.is_finite() && better {
                std::mem::swap(&mut self.plan, &mut self.best);
                winner = Some(k);
            }
        }
        let slot = winner?;
        let mut mapped = Vec::new();
        barycentric_map_into(&self.best, support, d, &mut mapped).then_some(Retrieval {
            slot,
            distance: self.best.distance,
            mapped,
            converged: self.best.converged,
        })
    }
}

/// Rows of `slot` in `memory`, or `None` when the slot is empty or out of range.
fn slot_rows<'a>(memory: &'a [f32], slot: &MemorySlot, d: usize) -> Option<&'a [f32]> {
    if slot.rows == 0 {
        return None;
    }
    let start = slot.first_row.checked_mul(d)?;
    let end = slot.first_row.checked_add(slot.rows)?.checked_mul(d)?;
    memory.get(start..end)
}

/// The barycentric map of `plan` onto `support` (`[plan.n, d]`): row `i` of the row-major
/// `[plan.m, d]` result is `Σ_j T_ij y_j / Σ_j T_ij`, a convex combination of support points, so
/// every coordinate lies within the support's range of that coordinate. A row whose mass is not
/// positive (possible only after log-domain underflow) maps to the support mean.
///
/// Returns `None` when the plan holds no solution ([`Plan::is_valid`]), `d == 0`, or
/// `support.len() != plan.n·d`.
pub fn barycentric_map(plan: &Plan, support: &[f32], d: usize) -> Option<Vec<f32>> {
    let mut out = Vec::new();
    barycentric_map_into(plan, support, d, &mut out).then_some(out)
}

/// [`barycentric_map`] writing into `out` (cleared first); returns whether it succeeded.
pub fn barycentric_map_into(plan: &Plan, support: &[f32], d: usize, out: &mut Vec<f32>) -> bool {
    out.clear();
    let (m, n) = (plan.m, plan.n);
    if !plan.is_valid() || d == 0 || n.checked_mul(d) != Some(support.len()) {
        return false;
    }
    let mut acc = vec![0.0f64; d];
    for i in 0..m {
        let row = &plan.transport[i * n..(i + 1) * n];
        let mut mass: f64 = row.iter().sum();
        acc.fill(0.0);
        if mass > 0.0 {
            for (j, &t) in row.iter().enumerate() {
                let y = &support[j * d..(j + 1) * d];
                for (a, &yk) in acc.iter_mut().zip(y) {
                    *a += t * f64::from(yk);
                }
            }
        } else {
            mass = n as f64;
            for y in support.chunks_exact(d) {
                for (a, &yk) in acc.iter_mut().zip(y) {
                    *a += f64::from(yk);
                }
            }
        }
        out.extend(acc.iter().map(|a| (a / mass) as f32));
    }
    true
}

/// Mean of the `rows` rows of `x` (`[rows, d]`, row-major), accumulated in `f64`; `None` when
/// `rows == 0`, `d == 0` or `x.len() != rows·d`.
pub fn mean_rows(x: &[f32], rows: usize, d: usize) -> Option<Vec<f32>> {
    if rows == 0 || d == 0 || rows.checked_mul(d) != Some(x.len()) {
        return None;
    }
    let mut acc = vec![0.0f64; d];
    for row in x.chunks_exact(d) {
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += f64::from(v);
        }
    }
    Some(acc.iter().map(|a| (a / rows as f64) as f32).collect())
}

/// The prior network of [`prior_prototype`]: maps `[support_mean; mapped_mean]` (length `2·d`)
/// to `d` values.
pub type PriorMlp<'a> = &'a dyn Fn(&[f32]) -> Vec<f32>;

/// The learned prior network of a bundle (tensors `prior.fc1.*`, `prior.fc2.*`, FORMAT.md):
/// `MLP(x) = fc2(ReLU(fc1(x)))` with `fc(x) = x W + b`, `W` stored `[d_in, d_out]` row-major,
/// input `x = [support_mean; mapped_mean]` of length `2·d`, output of length `d`.
#[derive(Clone, Debug, PartialEq)]
pub struct PriorNet {
    d: usize,
    fc1_weight: Vec<f32>,
    fc1_bias: Vec<f32>,
    fc2_weight: Vec<f32>,
    fc2_bias: Vec<f32>,
}

impl PriorNet {
    /// A network for type dimension `d` from its four tensors; [`Error::Bundle`] when a length
    /// does not match (`[2d, d]`, `[d]`, `[d, d]`, `[d]`), `d == 0`, or a value is not finite.
    pub fn new(
        d: usize,
        fc1_weight: Vec<f32>,
        fc1_bias: Vec<f32>,
        fc2_weight: Vec<f32>,
        fc2_bias: Vec<f32>,
    ) -> Result<PriorNet> {
        let lens = [
            (tensor_names::PRIOR_FC1_WEIGHT, fc1_weight.len(), 2 * d * d),
            (tensor_names::PRIOR_FC1_BIAS, fc1_bias.len(), d),
            (tensor_names::PRIOR_FC2_WEIGHT, fc2_weight.len(), d * d),
            (tensor_names::PRIOR_FC2_BIAS, fc2_bias.len(), d),
        ];
        if d == 0 {
            return Err(Error::Bundle("prior MLP with type_dim 0".into()));
        }
        for (name, got, want) in lens {
            if got != want {
                return Err(Error::Bundle(format!(
                    "prior MLP tensor {name:?} has {got} values, expected {want} (type_dim {d})"
                )));
            }
        }
        let all = [&fc1_weight, &fc1_bias, &fc2_weight, &fc2_bias];
        if all.iter().any(|t| t.iter().any(|v| !v.is_finite())) {
            return Err(Error::Bundle(
                "prior MLP tensors hold a non-finite value".into(),
            ));
        }
        Ok(PriorNet {
            d,
            fc1_weight,
            fc1_bias,
            fc2_weight,
            fc2_bias,
        })
    }

    /// The bundle's prior network, `None` when the bundle has no `prior.*` tensors (the reader
    /// has already checked that they come as a complete set with the right shapes).
    pub fn from_bundle(bundle: &Bundle) -> Result<Option<PriorNet>> {
        if bundle.tensor_info(tensor_names::PRIOR_FC1_WEIGHT).is_err() {
            return Ok(None);
        }
        let read = |name: &str| {
            bundle
                .to_f32_vec(name)
                .map_err(|e| Error::Bundle(format!("{}: {e}", bundle.name())))
        };
        PriorNet::new(
            bundle.metadata().encoder.type_dim,
            read(tensor_names::PRIOR_FC1_WEIGHT)?,
            read(tensor_names::PRIOR_FC1_BIAS)?,
            read(tensor_names::PRIOR_FC2_WEIGHT)?,
            read(tensor_names::PRIOR_FC2_BIAS)?,
        )
        .map(Some)
        .map_err(|e| Error::Bundle(format!("{}: {e}", bundle.name())))
    }

    /// The type dimension `d`.
    pub fn type_dim(&self) -> usize {
        self.d
    }

    /// `MLP(x)` for `x` of length `2·d`; an empty vector for any other length (which makes
    /// [`prior_prototype`] return `None`). Accumulates in `f64`.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let d = self.d;
        if x.len() != 2 * d {
            return Vec::new();
        }
        let hidden: Vec<f32> = affine(x, &self.fc1_weight, &self.fc1_bias)
            .into_iter()
            .map(|h| h.max(0.0))
            .collect();
        affine(&hidden, &self.fc2_weight, &self.fc2_bias)
    }
}

/// `x W + b` with `W` row-major `[x.len(), b.len()]`.
fn affine(x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
    let out = b.len();
    let mut acc: Vec<f64> = b.iter().map(|&v| f64::from(v)).collect();
    for (&xi, row) in x.iter().zip(w.chunks_exact(out)) {
        for (a, &wij) in acc.iter_mut().zip(row) {
            *a += f64::from(xi) * f64::from(wij);
        }
    }
    acc.into_iter().map(|a| a as f32).collect()
}

/// MANNER's prior prototype for a new type:
///
/// ```text
/// μ = γ · MLP([support_mean; mapped_mean]) + (1 − γ) · support_mean
/// ```
///
/// `mlp` receives the concatenation (length `2·d`) and must return `d` values; a bundle's
/// learned network is [`PriorNet`]. For bundles without one, `mlp = None` takes the MLP to be
/// the projection onto its second half, `MLP([s; m]) = m`, so `μ = γ·mapped_mean + (1 − γ)·support_mean` (the midpoint for
/// [`PRIOR_GAMMA`] = 0.5): the retrieved memory moves the prototype with weight `γ`.
///
/// Returns `None` when the two means differ in length, are empty, or the MLP output does not have
/// length `d`. `γ` is not restricted to `[0, 1]`.
pub fn prior_prototype(
    support_mean: &[f32],
    mapped_mean: &[f32],
    mlp: Option<PriorMlp<'_>>,
    gamma: f32,
) -> Option<Vec<f32>> {
    let d = support_mean.len();
    if d == 0 || mapped_mean.len() != d {
        return None;
    }
    let projected = match mlp {
        Some(mlp) => {
            let mut input = Vec::with_capacity(2 * d);
            input.extend_from_slice(support_mean);
            input.extend_from_slice(mapped_mean);
            let out = mlp(&input);
            if out.len() != d {
                return None;
            }
            out
        }
        None => mapped_mean.to_vec(),
    };
    Some(
        projected
            .iter()
            .zip(support_mean)
            .map(|(&p, &s)| gamma * p + (1.0 - gamma) * s)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(first_row: usize, rows: usize) -> MemorySlot {
        MemorySlot {
            type_name: format!("t{first_row}"),
            source: String::new(),
            first_row,
            rows,
        }
    }

    #[test]
    fn picks_the_slot_next_to_the_support() {
        let memory = [0.0, 0.0, 1.0, 0.0, 10.0, 10.0, 11.0, 10.0, 0.0, 1.0];
        let slots = [slot(0, 2), slot(2, 2), slot(4, 1)];
        let support = [10.2, 10.1, 11.2, 10.1];
        let r = retrieve(&memory, &slots, 2, &support, 2).unwrap();
        assert_eq!(r.slot, 1);
        assert!(r.distance < 0.1, "{}", r.distance);
        assert_eq!(r.mapped.len(), 4);
        assert!((r.mapped[0] - 10.2).abs() < 0.05 && (r.mapped[2] - 11.2).abs() < 0.05);
    }

    #[test]
    fn degenerate_queries_return_none() {
        let memory = [0.0, 1.0, 2.0, 3.0];
        let slots = [slot(0, 2)];
        assert!(retrieve(&memory, &slots, 2, &[], 0).is_none());
        assert!(retrieve(&memory, &slots, 0, &[], 1).is_none());
        assert!(retrieve(&memory, &slots, 2, &[1.0], 1).is_none());
        assert!(retrieve(&memory, &[], 2, &[1.0, 2.0], 1).is_none());
        assert!(retrieve(&memory, &[slot(1, 2), slot(0, 0)], 2, &[1.0, 2.0], 1).is_none());
        assert!(retrieve(&memory, &[slot(usize::MAX, 2)], 2, &[1.0, 2.0], 1).is_none());
        assert!(retrieve(&memory, &slots, 2, &[f32::NAN, 2.0], 1).is_none());
        let with_nan = [f32::NAN, 1.0, 2.0, 3.0];
        let r = retrieve(&with_nan, &[slot(0, 1), slot(1, 1)], 2, &[2.0, 3.0], 1).unwrap();
        assert_eq!(r.slot, 1);
    }

    #[test]
    fn prior_prototype_combines_with_gamma() {
        let s = [1.0, 2.0];
        let m = [3.0, 6.0];
        assert_eq!(
            prior_prototype(&s, &m, None, PRIOR_GAMMA).unwrap(),
            vec![2.0, 4.0]
        );
        let sum = |x: &[f32]| vec![x[0] + x[2], x[1] + x[3]];
        let mu = prior_prototype(&s, &m, Some(&sum), 0.25).unwrap();
        assert_eq!(mu, vec![0.25 * 4.0 + 0.75, 0.25 * 8.0 + 1.5]);
        let bad = |_: &[f32]| vec![0.0];
        assert!(prior_prototype(&s, &m, Some(&bad), 0.5).is_none());
        assert!(prior_prototype(&s, &m[..1], None, 0.5).is_none());
        assert!(prior_prototype(&[], &[], None, 0.5).is_none());
    }

    #[test]
    fn prior_net_matches_a_hand_computation() {
        // d = 1: fc1 [2, 1], fc2 [1, 1].
        let net = PriorNet::new(1, vec![1.0, -2.0], vec![0.5], vec![3.0], vec![-1.0]).unwrap();
        // h = relu(1·s − 2·m + 0.5); y = 3h − 1.
        assert_eq!(net.forward(&[2.0, 0.25]), vec![3.0 * 2.0 - 1.0]);
        assert_eq!(net.forward(&[0.0, 1.0]), vec![-1.0]);
        assert!(net.forward(&[1.0]).is_empty());
        let mu = prior_prototype(&[2.0], &[0.25], Some(&|x| net.forward(x)), 0.5).unwrap();
        assert_eq!(mu, vec![0.5 * 5.0 + 0.5 * 2.0]);
        assert!(PriorNet::new(1, vec![1.0], vec![0.5], vec![3.0], vec![-1.0]).is_err());
        assert!(PriorNet::new(1, vec![1.0, f32::NAN], vec![0.5], vec![3.0], vec![-1.0]).is_err());
        assert!(PriorNet::new(0, vec![], vec![], vec![], vec![]).is_err());
    }

    #[test]
    fn prior_net_is_read_from_a_bundle_and_validated() {
        use crate::bundle::{sample_writer, Bundle};
        let d = 4;
        let no_prior = Bundle::from_vec(sample_writer(2, d).unwrap().to_bytes().unwrap(), "b");
        assert_eq!(PriorNet::from_bundle(&no_prior.unwrap()).unwrap(), None);
        let mut w = sample_writer(2, d).unwrap();
        w.add_f32(tensor_names::PRIOR_FC1_WEIGHT, &[2 * d, d], &[0.5; 32])
            .unwrap();
        w.add_f32(tensor_names::PRIOR_FC1_BIAS, &[d], &[0.0; 4])
            .unwrap();
        w.add_f32(tensor_names::PRIOR_FC2_WEIGHT, &[d, d], &[0.25; 16])
            .unwrap();
        let partial = w.to_bytes().unwrap_err().to_string();
        assert!(
            partial.contains("prior.fc2.bias") && partial.contains("3 of 4"),
            "{partial}"
        );
        w.add_f16(tensor_names::PRIOR_FC2_BIAS, &[d], &[1.0; 4])
            .unwrap();
        let b = Bundle::from_vec(w.to_bytes().unwrap(), "b").unwrap();
        let net = PriorNet::from_bundle(&b).unwrap().unwrap();
        // h = relu(0.5 · Σx) per unit; y = 0.25 · Σh + 1.
        let y = net.forward(&[1.0; 8]);
        assert_eq!(y, vec![0.25 * 4.0 * 4.0 + 1.0; 4]);
        let mut w = sample_writer(2, d).unwrap();
        w.add_f32(tensor_names::PRIOR_FC1_WEIGHT, &[d, d], &[0.5; 16])
            .unwrap();
        w.add_f32(tensor_names::PRIOR_FC1_BIAS, &[d], &[0.0; 4])
            .unwrap();
        w.add_f32(tensor_names::PRIOR_FC2_WEIGHT, &[d, d], &[0.25; 16])
            .unwrap();
        w.add_f32(tensor_names::PRIOR_FC2_BIAS, &[d], &[0.0; 4])
            .unwrap();
        let shape = w.to_bytes().unwrap_err().to_string();
        assert!(
            shape.contains("prior.fc1.weight") && shape.contains("[8, 4]"),
            "{shape}"
        );
    }

    #[test]
    fn mean_rows_and_map_reject_bad_shapes() {
        assert_eq!(
            mean_rows(&[1.0, 2.0, 3.0, 6.0], 2, 2).unwrap(),
            vec![2.0, 4.0]
        );
        assert!(mean_rows(&[1.0, 2.0, 3.0], 2, 2).is_none());
        assert!(mean_rows(&[], 0, 2).is_none());
        assert!(barycentric_map(&Plan::default(), &[], 1).is_none());
    }
}
