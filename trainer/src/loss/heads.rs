//! The trainable parameters of the loss side: the 21 CDT numbers, the prior MLP and, when the
//! run has one, the associated memory's read, as named tensors for the optimiser and
//! checkpoints (also used as their gradient accumulator).

use anyhow::Result;
use ner_edge::associated_memory::{tensor_names as assoc_names, AssocParams};
use ner_edge::bundle::metadata::CdtParams;

use super::crf::CdtGrad;
use super::episode::EpisodeLoss;
use super::prior::PriorParams;

/// Tensor name of the CDT matrix (`[3, 5]`, row-major).
pub const CDT_MATRIX: &str = "cdt.matrix";
/// Tensor name of the CDT start scores (`[3]`).
pub const CDT_START: &str = "cdt.start";
/// Tensor name of the CDT end scores (`[3]`).
pub const CDT_END: &str = "cdt.end";

/// CDT numbers and prior MLP.
#[derive(Clone, Debug, PartialEq)]
pub struct HeadParams {
    /// The 21 CDT transition numbers of the CRF (tensors [`CDT_MATRIX`], [`CDT_START`],
    /// [`CDT_END`]).
    pub cdt: CdtParams,
    /// The prior MLP mapping `[s_k; m_k]` towards the prior prototype `μ_k`.
    pub prior: PriorParams,
    /// The associated memory's read (tensors `assoc.*`), when the run has one.
    pub assoc: Option<AssocParams>,
}

impl HeadParams {
    /// Initial parameters: all 21 CDT numbers zero (every allowed transition equally likely;
    /// the hard BIO constraints do not depend on them) and [`PriorParams::init`]`(type_dim, seed)`.
    pub fn init(type_dim: usize, seed: u64) -> HeadParams {
        HeadParams {
            cdt: zero_cdt(),
            prior: PriorParams::init(type_dim, seed),
            assoc: None,
        }
    }

    /// All zeros: the empty gradient accumulator.
    pub fn zeros(type_dim: usize) -> HeadParams {
        HeadParams {
            cdt: zero_cdt(),
            prior: PriorParams::zeros(type_dim),
            assoc: None,
        }
    }

    /// All zeros, with the same tensors as `self` (an associated memory read when `self` has
    /// one).
    pub fn zeros_like(&self) -> HeadParams {
        HeadParams {
            assoc: self.assoc.as_ref().map(super::assoc::zeros_like),
            ..HeadParams::zeros(self.prior.dim)
        }
    }

    /// Checks the prior MLP shapes ([`PriorParams::check`]) and the read's.
    pub fn check(&self) -> Result<()> {
        self.prior.check()?;
        if let Some(a) = &self.assoc {
            a.check("associated memory")?;
        }
        Ok(())
    }

    /// Named tensors in a fixed order: [`CDT_MATRIX`], [`CDT_START`], [`CDT_END`], the
    /// four prior tensors under their bundle names (`prior.fc1.weight`, …), then the read's
    /// four (`assoc.query`, `assoc.key`, `assoc.tag_values`, `assoc.type_gain`) when present.
    pub fn tensors(&self) -> Vec<(String, &[f32])> {
        let mut out: Vec<(String, &[f32])> = vec![
            (CDT_MATRIX.into(), self.cdt.matrix.as_flattened()),
            (CDT_START.into(), &self.cdt.start[..]),
            (CDT_END.into(), &self.cdt.end[..]),
        ];
        out.extend(
            self.prior
                .tensors()
                .into_iter()
                .map(|(name, _, data)| (name.to_string(), data)),
        );
        if let Some(a) = &self.assoc {
            out.extend([
                (assoc_names::QUERY.into(), &a.query[..]),
                (assoc_names::KEY.into(), &a.key[..]),
                (assoc_names::TAG_VALUES.into(), &a.tag_values[..]),
                (assoc_names::TYPE_GAIN.into(), &a.type_gain[..]),
            ]);
        }
        out
    }

    /// [`HeadParams::tensors`], mutable, same order.
    pub fn tensors_mut(&mut self) -> Vec<(String, &mut [f32])> {
        use ner_edge::bundle::metadata::tensor_names as n;
        let p = &mut self.prior;
        let mut out: Vec<(String, &mut [f32])> = vec![
            (CDT_MATRIX.into(), self.cdt.matrix.as_flattened_mut()),
            (CDT_START.into(), &mut self.cdt.start[..]),
            (CDT_END.into(), &mut self.cdt.end[..]),
            (n::PRIOR_FC1_WEIGHT.into(), &mut p.fc1_weight[..]),
            (n::PRIOR_FC1_BIAS.into(), &mut p.fc1_bias[..]),
            (n::PRIOR_FC2_WEIGHT.into(), &mut p.fc2_weight[..]),
            (n::PRIOR_FC2_BIAS.into(), &mut p.fc2_bias[..]),
        ];
        if let Some(a) = &mut self.assoc {
            out.extend([
                (assoc_names::QUERY.into(), &mut a.query[..]),
                (assoc_names::KEY.into(), &mut a.key[..]),
                (assoc_names::TAG_VALUES.into(), &mut a.tag_values[..]),
                (assoc_names::TYPE_GAIN.into(), &mut a.type_gain[..]),
            ]);
        }
        out
    }

    /// Adds `scale ·` a CDT gradient.
    pub fn add_cdt_grad(&mut self, grad: &CdtGrad, scale: f32) {
        let flat = grad.to_flat();
        let dst = self
            .cdt
            .matrix
            .as_flattened_mut()
            .iter_mut()
            .chain(self.cdt.start.iter_mut())
            .chain(self.cdt.end.iter_mut());
        for (d, g) in dst.zip(flat) {
            *d += scale * g;
        }
    }

    /// Adds the CDT and prior gradients of one episode (used on an accumulator made by
    /// [`HeadParams::zeros`]). Precondition (debug-asserted): equal type dimension.
    pub fn add_episode_grads(&mut self, loss: &EpisodeLoss) {
        self.add_cdt_grad(&loss.cdt, 1.0);
        self.prior.add_scaled(&loss.prior, 1.0);
    }
}

fn zero_cdt() -> CdtParams {
    CdtParams {
        matrix: [[0.0; 5]; 3],
        start: [0.0; 3],
        end: [0.0; 3],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_are_named_in_order_and_alias_the_fields() {
        let mut h = HeadParams::init(4, 1);
        h.check().unwrap();
        let names: Vec<String> = h.tensors().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "cdt.matrix",
                "cdt.start",
                "cdt.end",
                "prior.fc1.weight",
                "prior.fc1.bias",
                "prior.fc2.weight",
                "prior.fc2.bias"
            ]
        );
        let sizes: Vec<usize> = h.tensors().iter().map(|(_, v)| v.len()).collect();
        assert_eq!(sizes, [15, 3, 3, 32, 4, 16, 4]);
        let mut_names: Vec<String> = h.tensors_mut().into_iter().map(|(n, _)| n).collect();
        assert_eq!(mut_names, names);
        h.tensors_mut()[0].1[7] = 3.5;
        assert_eq!(h.cdt.matrix[1][2], 3.5);
        let mut g = CdtGrad::default();
        g.end[2] = 2.0;
        h.add_cdt_grad(&g, 0.5);
        assert_eq!(h.cdt.end[2], 1.0);
    }
}
