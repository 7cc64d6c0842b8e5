//! Teacher–student distillation on piece-level head outputs: the student's O/B/I boundary
//! distributions against the teacher's (`T² · KL(teacher ‖ student)` at temperature `T`) and
//! its type vectors against the teacher's (mean squared difference), both averaged over the
//! pieces of a batch.

/// Weights and temperature of the distillation terms.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DistillWeights {
    /// Weight of the boundary term.
    pub boundary: f32,
    /// Weight of the type-vector term.
    pub types: f32,
    /// Softmax temperature of the boundary term (> 0).
    pub temperature: f32,
}

/// The distillation terms of one batch, unweighted.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DistillTerms {
    /// `T² · KL(teacher ‖ student)` of the boundary distributions, mean over pieces.
    pub boundary: f64,
    /// `‖student − teacher‖² / type_dim` of the type vectors, mean over pieces.
    pub types: f64,
    /// `w.boundary · boundary + w.types · types`.
    pub total: f64,
}

/// Distillation loss of a batch of `N` pieces: `student_boundary`/`teacher_boundary` `[N, 3]`
/// logits and `student_types`/`teacher_types` `[N, type_dim]`. Adds `scale ·` the gradient of
/// the weighted total wrt the student's outputs into `d_boundary` and `d_types` (same shapes).
///
/// Panics if the slices' lengths do not match `N` pieces.
#[allow(clippy::too_many_arguments)]
pub fn distill_loss(
    student_boundary: &[f32],
    student_types: &[f32],
    teacher_boundary: &[f32],
    teacher_types: &[f32],
    type_dim: usize,
    weights: DistillWeights,
    scale: f32,
    d_boundary: &mut [f32],
    d_types: &mut [f32],
) -> DistillTerms {
    let n = student_boundary.len() / 3;
    assert!(
        student_boundary.len() == n * 3
            && teacher_boundary.len() == n * 3
            && d_boundary.len() == n * 3
            && student_types.len() == n * type_dim
            && teacher_types.len() == n * type_dim
            && d_types.len() == n * type_dim,
        "distill_loss: shapes of {n} pieces do not match"
    );
    if n == 0 {
        return DistillTerms::default();
    }
    let t = f64::from(weights.temperature);
    let inv_n = 1.0 / n as f64;
    let mut kl_sum = 0.0f64;
    for i in 0..n {
        let s = &student_boundary[i * 3..i * 3 + 3];
        let q = &teacher_boundary[i * 3..i * 3 + 3];
        let log_ps = log_softmax(s, t);
        let log_pt = log_softmax(q, t);
        for k in 0..3 {
            let pt = log_pt[k].exp();
            kl_sum += pt * (log_pt[k] - log_ps[k]);
            let g = t * (log_ps[k].exp() - pt) * inv_n;
            d_boundary[i * 3 + k] += (f64::from(scale) * f64::from(weights.boundary) * g) as f32;
        }
    }
    let boundary = t * t * kl_sum * inv_n;
    let inv_nd = inv_n / type_dim.max(1) as f64;
    let mut sq = 0.0f64;
    let g_scale = 2.0 * inv_nd * f64::from(weights.types) * f64::from(scale);
    for ((d, &s), &q) in d_types.iter_mut().zip(student_types).zip(teacher_types) {
        let diff = f64::from(s) - f64::from(q);
        sq += diff * diff;
        *d += (g_scale * diff) as f32;
    }
    let types = sq * inv_nd;
    DistillTerms {
        boundary,
        types,
        total: f64::from(weights.boundary) * boundary + f64::from(weights.types) * types,
    }
}

fn log_softmax(logits: &[f32], temperature: f64) -> [f64; 3] {
    let z = [
        f64::from(logits[0]) / temperature,
        f64::from(logits[1]) / temperature,
        f64::from(logits[2]) / temperature,
    ];
    let m = z[0].max(z[1]).max(z[2]);
    let lse = m + ((z[0] - m).exp() + (z[1] - m).exp() + (z[2] - m).exp()).ln();
    [z[0] - lse, z[1] - lse, z[2] - lse]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::rng::SplitMix64;

    const W: DistillWeights = DistillWeights {
        boundary: 0.7,
        types: 1.3,
        temperature: 2.0,
    };

    fn total(sb: &[f32], st: &[f32], tb: &[f32], tt: &[f32], dt: usize) -> f64 {
        let mut db = vec![0.0; sb.len()];
        let mut dty = vec![0.0; st.len()];
        distill_loss(sb, st, tb, tt, dt, W, 1.0, &mut db, &mut dty).total
    }

    #[test]
    fn gradients_match_central_differences() {
        let (n, dt) = (5, 4);
        let mut rng = SplitMix64::new(11);
        let sb = rng.normal_vec(n * 3, 1.5);
        let st = rng.normal_vec(n * dt, 0.8);
        let tb = rng.normal_vec(n * 3, 1.5);
        let tt = rng.normal_vec(n * dt, 0.8);
        let mut db = vec![0.0; n * 3];
        let mut dty = vec![0.0; n * dt];
        distill_loss(&sb, &st, &tb, &tt, dt, W, 0.5, &mut db, &mut dty);
        let h = 1e-3f32;
        for i in 0..sb.len() {
            let (mut p, mut m) = (sb.clone(), sb.clone());
            p[i] += h;
            m[i] -= h;
            let fd =
                (total(&p, &st, &tb, &tt, dt) - total(&m, &st, &tb, &tt, dt)) / (2.0 * h as f64);
            assert!(
                (0.5 * fd - f64::from(db[i])).abs() < 1e-4,
                "boundary {i}: {fd} vs {}",
                db[i]
            );
        }
        for i in 0..st.len() {
            let (mut p, mut m) = (st.clone(), st.clone());
            p[i] += h;
            m[i] -= h;
            let fd =
                (total(&sb, &p, &tb, &tt, dt) - total(&sb, &m, &tb, &tt, dt)) / (2.0 * h as f64);
            assert!(
                (0.5 * fd - f64::from(dty[i])).abs() < 1e-4,
                "types {i}: {fd} vs {}",
                dty[i]
            );
        }
    }

    #[test]
    fn a_student_equal_to_its_teacher_has_zero_loss_and_gradient() {
        let (n, dt) = (3, 6);
        let mut rng = SplitMix64::new(3);
        let b = rng.normal_vec(n * 3, 2.0);
        let t = rng.normal_vec(n * dt, 1.0);
        let mut db = vec![0.0; n * 3];
        let mut dty = vec![0.0; n * dt];
        let terms = distill_loss(&b, &t, &b, &t, dt, W, 1.0, &mut db, &mut dty);
        assert!(terms.total.abs() < 1e-12, "{terms:?}");
        assert!(db.iter().chain(&dty).all(|g| g.abs() < 1e-7));
        let shifted: Vec<f32> = b.iter().map(|x| x + 5.0).collect();
        let mut db = vec![0.0; n * 3];
        let terms = distill_loss(&shifted, &t, &b, &t, dt, W, 1.0, &mut db, &mut dty);
        assert!(
            terms.boundary.abs() < 1e-9,
            "softmax ignores a shift of the logits"
        );
    }
}
