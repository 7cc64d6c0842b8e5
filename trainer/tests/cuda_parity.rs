//! Every CUDA kernel against its CPU reference (`ner_edge_trainer::backprop`, `loss::crf`,
//! `train::optimizer`, `ner_edge::adapt::memory`, `ner_edge::decode`), at several sizes including odd
//! ones. Overwritten outputs are poisoned with NaN (or -7 for integers) before each launch so
//! unwritten elements fail the comparison; accumulated outputs start from random values.
//!
//! Tolerance: `max_i |gpu_i - cpu_i| / max(1, |cpu_i|) <= 1e-5` (NaN must match NaN), unless a
//! check says otherwise: f16 casts are bit-exact, Viterbi paths equal, f64 sums of squares within
//! 1e-12 relative, OT plans compared as `T·m·n` and their iteration counts within one check
//! interval (the stopping test may fall either side of `tol`). Without a usable CUDA device each test prints
//! `skipped: no CUDA device (<reason>)` and passes, unless `NER_EDGE_REQUIRE_CUDA=1`.

#![cfg(feature = "cuda")]

use std::sync::{Arc, OnceLock};

use cudarc::driver::{CudaSlice, CudaStream, DeviceRepr};
use half::f16;
use ner_edge::adapt::memory::{barycentric_map, sinkhorn, squared_euclidean_cost, SinkhornConfig};
use ner_edge::decode::{repair_bio, unfold, viterbi};
use ner_edge_trainer::backprop::attention::{softmax_backward_in_place, softmax_in_place};
use ner_edge_trainer::backprop::embeddings::{embeddings_backward, embeddings_forward};
use ner_edge_trainer::backprop::gelu::{gelu_backward, gelu_forward, gelu_recompute};
use ner_edge_trainer::backprop::layernorm::{layernorm_backward, layernorm_forward};
use ner_edge_trainer::backprop::linear::linear_forward;
use ner_edge_trainer::backprop::residual::residual_forward;
use ner_edge_trainer::cuda::ops::crf::{self as crf_ops, CrfBatch, CrfTransitionSets, CDT_LEN};
use ner_edge_trainer::cuda::ops::encoder as enc;
use ner_edge_trainer::cuda::ops::optimiser::{self as opt_ops, AdamWScalars};
use ner_edge_trainer::cuda::ops::ot::{self as ot_ops, OtBatch, OtProblem, OtResults, OT_OK};
use ner_edge_trainer::cuda::ops::PackedOffsets;
use ner_edge_trainer::cuda::{cuda_unavailable_reason, CudaKernels};
use ner_edge_trainer::loss::crf::{cdt_from_flat, crf_nll, path_score, CdtGrad, CrfTransitions};
use ner_edge_trainer::train::optimizer::{
    clip_factor, global_norm, AdamW, AdamWConfig, ParamUpdate,
};

const TOL: f64 = 1e-5;

struct Gpu {
    k: CudaKernels,
    s: Arc<CudaStream>,
}

/// The loaded kernels and a stream, or `None` (after printing why) without a usable device.
/// A usable device whose kernels fail to compile or load is a failure, not a skip.
fn gpu() -> Option<&'static Gpu> {
    static GPU: OnceLock<Result<Gpu, String>> = OnceLock::new();
    let g = GPU.get_or_init(|| {
        if let Some(why) = cuda_unavailable_reason() {
            return Err(why);
        }
        let k = CudaKernels::load(0).unwrap_or_else(|e| {
            panic!("a CUDA device is usable but loading the kernels failed: {e:#}")
        });
        let s = k.ctx.default_stream();
        Ok(Gpu { k, s })
    });
    match g {
        Ok(g) => Some(g),
        Err(why) => {
            let required = std::env::var("NER_EDGE_REQUIRE_CUDA").is_ok_and(|v| v == "1");
            assert!(!required, "NER_EDGE_REQUIRE_CUDA=1 but: {why}");
            println!("skipped: no CUDA device ({why})");
            None
        }
    }
}

struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform().max(1e-300), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
    fn vec_f32(&mut self, n: usize, scale: f64) -> Vec<f32> {
        (0..n).map(|_| (scale * self.normal()) as f32).collect()
    }
    fn vec_f64(&mut self, n: usize, scale: f64) -> Vec<f64> {
        (0..n).map(|_| scale * self.normal()).collect()
    }
}

fn up<T: DeviceRepr>(g: &Gpu, v: &[T]) -> CudaSlice<T> {
    g.s.clone_htod(v).expect("upload")
}

fn down<T: DeviceRepr + Default + Clone>(g: &Gpu, d: &CudaSlice<T>) -> Vec<T> {
    g.s.synchronize().expect("kernel run");
    g.s.clone_dtoh(d).expect("download")
}

fn poison_f32(g: &Gpu, n: usize) -> CudaSlice<f32> {
    up(g, &vec![f32::NAN; n])
}

fn poison_f64(g: &Gpu, n: usize) -> CudaSlice<f64> {
    up(g, &vec![f64::NAN; n])
}

/// `max |a - b| / max(1, |b|)`, infinite when NaN-ness differs.
fn rel_err<A: Copy + Into<f64>, B: Copy + Into<f64>>(got: &[A], want: &[B]) -> f64 {
    assert_eq!(got.len(), want.len(), "length");
    let mut worst = 0.0f64;
    for (&a, &b) in got.iter().zip(want) {
        let (a, b): (f64, f64) = (a.into(), b.into());
        let e = if a.is_nan() || b.is_nan() {
            if a.is_nan() && b.is_nan() {
                0.0
            } else {
                f64::INFINITY
            }
        } else if a == b {
            0.0
        } else {
            (a - b).abs() / b.abs().max(1.0)
        };
        worst = worst.max(e);
    }
    worst
}

fn assert_close<A: Copy + Into<f64>, B: Copy + Into<f64>>(what: &str, got: &[A], want: &[B]) {
    let e = rel_err(got, want);
    let first_bad = got
        .iter()
        .zip(want)
        .position(|(&a, &b)| rel_err(&[a], &[b]) > TOL);
    assert!(
        e <= TOL,
        "{what}: relative error {e:e} > {TOL:e}; first bad index {first_bad:?} \
         (gpu {:?} vs cpu {:?})",
        first_bad.map(|i| got[i].into()),
        first_bad.map(|i| want[i].into()),
    );
}

fn offsets_from_lens(lens: &[usize]) -> Vec<usize> {
    let mut o = vec![0];
    for &l in lens {
        o.push(o.last().unwrap() + l);
    }
    o
}

const HIDDEN: [usize; 3] = [7, 32, 384];
const ROWS: [usize; 3] = [1, 13, 200];
const SENTENCES: [&[usize]; 4] = [&[1], &[5], &[37, 1, 0, 5], &[13, 37, 2, 9, 1]];

#[test]
fn embeddings_match_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng(1);
    for &d in &HIDDEN {
        for lens in SENTENCES {
            let offsets = offsets_from_lens(lens);
            let n = *offsets.last().unwrap();
            let (vocab, max_pos) = (11, 40);
            let word = rng.vec_f32(vocab * d, 1.0);
            let position = rng.vec_f32(max_pos * d, 1.0);
            let tt = rng.vec_f32(d, 1.0);
            let ids: Vec<u32> = (0..n).map(|_| rng.below(vocab) as u32).collect();
            let pos = enc::piece_positions(&offsets);
            let mut want = vec![0.0f32; n * d];
            embeddings_forward(&word, &position, &tt, None, &ids, &offsets, &mut want);
            let (dw, dp, dt) = (up(g, &word), up(g, &position), up(g, &tt));
            let (di, dpos) = (up(g, &ids), up(g, &pos));
            let mut out = poison_f32(g, n * d);
            enc::embedding_forward(&g.k, &g.s, &dw, &dp, &dt, &di, &dpos, &mut out).unwrap();
            assert_close(
                &format!("embedding_forward d={d} {lens:?}"),
                &down(g, &out),
                &want,
            );

            let d_out = rng.vec_f32(n * d, 1.0);
            let (mut gw, mut gp, mut gt) = (
                rng.vec_f32(vocab * d, 1.0),
                rng.vec_f32(max_pos * d, 1.0),
                rng.vec_f32(d, 1.0),
            );
            let (mut dgw, mut dgp, mut dgt) = (up(g, &gw), up(g, &gp), up(g, &gt));
            let dd_out = up(g, &d_out);
            embeddings_backward(&ids, &offsets, &d_out, &mut gw, &mut gp, &mut gt, None);
            enc::embedding_backward(&g.k, &g.s, &di, &dpos, &dd_out, d, &mut dgw, &mut dgp)
                .unwrap();
            enc::column_sum_accumulate(&g.k, &g.s, &dd_out, n, &mut dgt).unwrap();
            let what = format!("embedding_backward d={d} {lens:?}");
            assert_close(&format!("{what} d_word"), &down(g, &dgw), &gw);
            assert_close(&format!("{what} d_position"), &down(g, &dgp), &gp);
            assert_close(&format!("{what} d_token_type"), &down(g, &dgt), &gt);
        }
    }
    let d = 7;
    let (word, position, tt) = (
        up(g, &[1.0f32; 14]),
        up(g, &[1.0f32; 21]),
        up(g, &[0.5f32; 7]),
    );
    let (ids, pos) = (up(g, &[0u32, 2, 1]), up(g, &[0i32, 1, 3]));
    let mut out = poison_f32(g, 3 * d);
    enc::embedding_forward(&g.k, &g.s, &word, &position, &tt, &ids, &pos, &mut out).unwrap();
    let got = down(g, &out);
    assert!(got[..d].iter().all(|&v| v == 2.5), "{got:?}");
    assert!(
        got[d..].iter().all(|v| v.is_nan()),
        "out-of-range rows: {got:?}"
    );
}

#[test]
fn layernorm_matches_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng(2);
    for &d in &HIDDEN {
        for &n in &ROWS {
            let x = rng.vec_f32(n * d, 2.0);
            let gamma = rng.vec_f32(d, 1.0);
            let beta = rng.vec_f32(d, 1.0);
            let eps = 1e-12f32;
            let (mut y, mut mean, mut rstd) = (vec![0.0; n * d], vec![0.0; n], vec![0.0; n]);
            layernorm_forward(&x, &gamma, &beta, eps, &mut y, &mut mean, &mut rstd);
            let (dx_, dg, db) = (up(g, &x), up(g, &gamma), up(g, &beta));
            let (mut gy, mut gm, mut gr) =
                (poison_f32(g, n * d), poison_f32(g, n), poison_f32(g, n));
            enc::layernorm_forward(&g.k, &g.s, &dx_, &dg, &db, eps, &mut gy, &mut gm, &mut gr)
                .unwrap();
            let what = format!("layernorm n={n} d={d}");
            assert_close(&format!("{what} y"), &down(g, &gy), &y);
            assert_close(&format!("{what} mean"), &down(g, &gm), &mean);
            assert_close(&format!("{what} rstd"), &down(g, &gr), &rstd);

            let dy = rng.vec_f32(n * d, 1.0);
            let mut dx = vec![0.0; n * d];
            let (mut dgamma, mut dbeta) = (rng.vec_f32(d, 1.0), rng.vec_f32(d, 1.0));
            let (mut gdg, mut gdb) = (up(g, &dgamma), up(g, &dbeta));
            layernorm_backward(
                &x,
                &mean,
                &rstd,
                &gamma,
                &dy,
                &mut dx,
                &mut dgamma,
                &mut dbeta,
            );
            let (cm, cr, ddy) = (up(g, &mean), up(g, &rstd), up(g, &dy));
            let mut gdx = poison_f32(g, n * d);
            enc::layernorm_backward(&g.k, &g.s, &dx_, &cm, &cr, &dg, &ddy, &mut gdx).unwrap();
            enc::layernorm_param_backward(&g.k, &g.s, &dx_, &cm, &cr, &ddy, &mut gdg, &mut gdb)
                .unwrap();
            assert_close(&format!("{what} dx"), &down(g, &gdx), &dx);
            assert_close(&format!("{what} dgamma"), &down(g, &gdg), &dgamma);
            assert_close(&format!("{what} dbeta"), &down(g, &gdb), &dbeta);
        }
    }
}

#[test]
fn gelu_matches_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng(3);
    for len in [1usize, 13 * 7, 200 * 384, 2001] {
        let mut x = rng.vec_f32(len, 3.0);
        if len == 2001 {
            x = (0..len).map(|i| -8.0 + i as f32 * 0.008).collect();
        }
        let (mut y, mut cdf) = (vec![0.0; len], vec![0.0; len]);
        gelu_forward(&x, &mut y, &mut cdf);
        let dx = up(g, &x);
        let (mut gy, mut gc) = (poison_f32(g, len), poison_f32(g, len));
        enc::gelu_forward(&g.k, &g.s, &dx, &mut gy, &mut gc).unwrap();
        assert_close(&format!("gelu_forward y len={len}"), &down(g, &gy), &y);
        assert_close(&format!("gelu_forward cdf len={len}"), &down(g, &gc), &cdf);

        let dcdf = up(g, &cdf);
        let mut again = vec![0.0; len];
        gelu_recompute(&x, &cdf, &mut again);
        let mut ga = poison_f32(g, len);
        enc::gelu_recompute(&g.k, &g.s, &dx, &dcdf, &mut ga).unwrap();
        assert_close(&format!("gelu_recompute len={len}"), &down(g, &ga), &again);

        let mut d = rng.vec_f32(len, 1.0);
        let mut gd = up(g, &d);
        gelu_backward(&x, &cdf, &mut d);
        enc::gelu_backward(&g.k, &g.s, &dx, &dcdf, &mut gd).unwrap();
        assert_close(&format!("gelu_backward len={len}"), &down(g, &gd), &d);
    }
}

#[test]
fn bias_residual_and_scale_match_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng(4);
    for &d in &HIDDEN {
        for &n in &ROWS {
            let x = rng.vec_f32(n * d, 1.0);
            let bias = rng.vec_f32(d, 1.0);
            let skip = rng.vec_f32(n * d, 1.0);
            let mut identity = vec![0.0f32; d * d];
            for i in 0..d {
                identity[i * d + i] = 1.0;
            }
            let mut want = vec![0.0f32; n * d];
            linear_forward(&x, &identity, &bias, &mut want);
            let dbias = up(g, &bias);
            let mut out = up(g, &x);
            enc::bias_residual_forward(&g.k, &g.s, &mut out, &dbias, None).unwrap();
            let what = format!("bias_residual_forward n={n} d={d}");
            assert_close(&format!("{what} (bias)"), &down(g, &out), &want);
            residual_forward(&mut want, &skip);
            let mut out = up(g, &x);
            let dskip = up(g, &skip);
            enc::bias_residual_forward(&g.k, &g.s, &mut out, &dbias, Some(dskip.as_view()))
                .unwrap();
            assert_close(&format!("{what} (bias+skip)"), &down(g, &out), &want);

            let mut gx = up(g, &x);
            enc::scale_inplace(&g.k, &g.s, &mut gx, 0.37).unwrap();
            let want: Vec<f32> = x.iter().map(|&v| v * 0.37).collect();
            assert_close(
                &format!("scale_inplace len={}", n * d),
                &down(g, &gx),
                &want,
            );
        }
    }
}

#[test]
fn attention_softmax_matches_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng(5);
    for heads in [1usize, 3] {
        for lens in SENTENCES {
            let offsets = offsets_from_lens(lens);
            let total: usize = heads * lens.iter().map(|t| t * t).sum::<usize>();
            let scores = rng.vec_f32(total, 3.0);
            let mut probs = scores.clone();
            let mut at = 0;
            for &t in lens {
                for _ in 0..heads * t {
                    softmax_in_place(&mut probs[at..at + t]);
                    at += t;
                }
            }
            let po = PackedOffsets::new(&g.s, &offsets).unwrap();
            let prob_offsets = up(g, &enc::packed_prob_offsets(&offsets, heads));
            let mut gp = up(g, &scores);
            enc::attention_softmax_forward_packed(&g.k, &g.s, &mut gp, &po, &prob_offsets, heads)
                .unwrap();
            let what = format!("attention packed heads={heads} {lens:?}");
            assert_close(&format!("{what} forward"), &down(g, &gp), &probs);

            let mut dp = rng.vec_f32(total, 1.0);
            let mut gdp = up(g, &dp);
            let mut at = 0;
            for &t in lens {
                for _ in 0..heads * t {
                    softmax_backward_in_place(&probs[at..at + t], &mut dp[at..at + t]);
                    at += t;
                }
            }
            enc::attention_softmax_backward_packed(
                &g.k,
                &g.s,
                &gp,
                &mut gdp,
                &po,
                &prob_offsets,
                heads,
            )
            .unwrap();
            assert_close(&format!("{what} backward"), &down(g, &gdp), &dp);

            let tmax = lens.iter().copied().max().unwrap_or(0) + 2;
            let n_sent = lens.len();
            let cells = n_sent * heads * tmax * tmax;
            let mut padded = vec![f32::NAN; cells];
            let mut want = vec![0.0f32; cells];
            let mut dpad = vec![f32::NAN; cells];
            let mut dwant = vec![0.0f32; cells];
            for (s, &t) in lens.iter().enumerate() {
                for h in 0..heads {
                    for q in 0..t {
                        let at = ((s * heads + h) * tmax + q) * tmax;
                        let row = rng.vec_f32(t, 3.0);
                        padded[at..at + t].copy_from_slice(&row);
                        want[at..at + t].copy_from_slice(&row);
                        softmax_in_place(&mut want[at..at + t]);
                        let drow = rng.vec_f32(t, 1.0);
                        dpad[at..at + t].copy_from_slice(&drow);
                        dwant[at..at + t].copy_from_slice(&drow);
                        softmax_backward_in_place(&want[at..at + t], &mut dwant[at..at + t]);
                    }
                }
            }
            let lens_i: Vec<i32> = lens.iter().map(|&t| t as i32).collect();
            let dlens = up(g, &lens_i);
            let mut gpad = up(g, &padded);
            enc::attention_softmax_forward_padded(&g.k, &g.s, &mut gpad, &dlens, heads, tmax)
                .unwrap();
            let what = format!("attention padded heads={heads} {lens:?} tmax={tmax}");
            assert_close(&format!("{what} forward"), &down(g, &gpad), &want);
            let gprobs = up(g, &want);
            let mut gdpad = up(g, &dpad);
            enc::attention_softmax_backward_padded(
                &g.k, &g.s, &gprobs, &mut gdpad, &dlens, heads, tmax,
            )
            .unwrap();
            assert_close(&format!("{what} backward"), &down(g, &gdpad), &dwant);
        }
    }
}

#[test]
fn pack_and_padded_layouts_round_trip() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng(6);
    for (heads, dh) in [(1usize, 7usize), (3, 5), (12, 32)] {
        for lens in SENTENCES {
            let offsets = offsets_from_lens(lens);
            let n = *offsets.last().unwrap();
            let n_sent = lens.len();
            let tmax = lens.iter().copied().max().unwrap_or(0) + 1;
            let width = heads * dh;
            let packed = rng.vec_f32(n * width, 1.0);
            let mut want = vec![0.0f32; n_sent * heads * tmax * dh];
            for (s, w) in offsets.windows(2).enumerate() {
                for (q, i) in (w[0]..w[1]).enumerate() {
                    for h in 0..heads {
                        for c in 0..dh {
                            want[((s * heads + h) * tmax + q) * dh + c] =
                                packed[i * width + h * dh + c];
                        }
                    }
                }
            }
            let po = PackedOffsets::new(&g.s, &offsets).unwrap();
            let dpacked = up(g, &packed);
            let mut gpad = poison_f32(g, want.len());
            enc::pack_to_padded(&g.k, &g.s, &dpacked, &po, heads, tmax, dh, &mut gpad).unwrap();
            let what = format!("heads={heads} dh={dh} {lens:?}");
            assert_close(&format!("pack_to_padded {what}"), &down(g, &gpad), &want);
            let mut gback = poison_f32(g, n * width);
            enc::padded_to_pack(&g.k, &g.s, &gpad, &po, heads, tmax, dh, &mut gback).unwrap();
            assert_close(&format!("padded_to_pack {what}"), &down(g, &gback), &packed);
        }
    }
}

#[test]
fn f16_cast_rounds_to_nearest_even() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng(7);
    let mut x = rng.vec_f32(5000, 10.0);
    x.extend([
        0.0,
        -0.0,
        65504.0,
        65520.0,
        1e-8,
        -1e-5,
        f32::INFINITY,
        1.0 + 1.0 / 2048.0,
    ]);
    let src = up(g, &x);
    let mut dst = up(g, &vec![f16::NAN; x.len()]);
    enc::cast_f32_to_f16(&g.k, &g.s, &src, &mut dst).unwrap();
    let got = down(g, &dst);
    for (i, (&v, &h)) in x.iter().zip(&got).enumerate() {
        assert_eq!(
            h.to_bits(),
            f16::from_f32(v).to_bits(),
            "cast_f32_to_f16[{i}] of {v}"
        );
    }
}

#[test]
fn adamw_matches_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng(8);
    let config = AdamWConfig::default();
    let sizes = [1usize, 13, 7 * 384, 100_003];
    let mut opt = AdamW::new(config.clone(), &sizes);
    let mut w: Vec<Vec<f32>> = sizes.iter().map(|&n| rng.vec_f32(n, 1.0)).collect();
    let mut dw: Vec<CudaSlice<f32>> = w.iter().map(|v| up(g, v)).collect();
    let mut dm: Vec<CudaSlice<f32>> = sizes.iter().map(|&n| up(g, &vec![0.0f32; n])).collect();
    let mut dv: Vec<CudaSlice<f32>> = sizes.iter().map(|&n| up(g, &vec![0.0f32; n])).collect();
    for step in 1..=4u64 {
        let grads: Vec<Vec<f32>> = sizes.iter().map(|&n| rng.vec_f32(n, 0.5)).collect();
        let lr = 1e-3 * step as f32;
        let mut params: Vec<ParamUpdate<'_>> = w
            .iter_mut()
            .zip(&grads)
            .enumerate()
            .map(|(i, (value, grad))| ParamUpdate {
                value,
                grad,
                lr,
                decay: i % 2 == 0,
            })
            .collect();
        opt.step(&mut params).unwrap();
        for i in 0..sizes.len() {
            let s = AdamWScalars::new(&config, step, lr, i % 2 == 0);
            let dg = up(g, &grads[i]);
            opt_ops::adamw_update(&g.k, &g.s, &mut dw[i], &dg, &mut dm[i], &mut dv[i], &s).unwrap();
        }
        for i in 0..sizes.len() {
            let what = format!("adamw step {step} tensor {i} (len {})", sizes[i]);
            assert_close(&format!("{what} w"), &down(g, &dw[i]), &w[i]);
            assert_close(&format!("{what} m"), &down(g, &dm[i]), &opt.m[i]);
            assert_close(&format!("{what} v"), &down(g, &dv[i]), &opt.v[i]);
        }
    }
}

#[test]
fn global_norm_and_clipping_match_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng(9);
    let sizes = [1usize, 13, 384, 300_001];
    let grads: Vec<Vec<f32>> = sizes.iter().map(|&n| rng.vec_f32(n, 0.1)).collect();
    let norm = global_norm(grads.iter().map(|v| v.as_slice()));
    let dgrads: Vec<CudaSlice<f32>> = grads.iter().map(|v| up(g, v)).collect();
    let mut partial = poison_f64(g, opt_ops::SUM_SQUARES_MAX_BLOCKS);
    let mut total = up(g, &[0.0f64]);
    for dg in &dgrads {
        opt_ops::sum_squares(&g.k, &g.s, dg, &mut partial, &mut total).unwrap();
    }
    let sumsq = down(g, &total)[0];
    let e = (sumsq - norm * norm).abs() / (norm * norm);
    assert!(
        e <= 1e-12,
        "sum of squares {sumsq} vs {} (rel {e:e})",
        norm * norm
    );

    let mut partial = poison_f64(g, 1000);
    let mut acc = up(g, &[1.5f64]);
    let values = rng.vec_f64(1000, 1.0);
    let dvalues = up(g, &values);
    opt_ops::sum_partials_accumulate(&g.k, &g.s, &dvalues, &mut acc).unwrap();
    let want = 1.5 + values.iter().sum::<f64>();
    let got = down(g, &acc)[0];
    assert!(
        (got - want).abs() <= 1e-12 * want.abs().max(1.0),
        "{got} vs {want}"
    );
    let mut none = up(g, &[0.0f64]);
    opt_ops::sum_squares(&g.k, &g.s, &dgrads[0].slice(0..0), &mut partial, &mut none).unwrap();
    assert_eq!(down(g, &none)[0], 0.0);

    for max_norm in [0.0f32, (norm * 0.5) as f32, (norm * 2.0) as f32, 1e-3] {
        let f = clip_factor(norm, max_norm);
        for (i, v) in grads.iter().enumerate() {
            let want: Vec<f32> = v.iter().map(|&x| x * f).collect();
            let mut dg = up(g, v);
            opt_ops::clip_scale(&g.k, &g.s, &mut dg, &total, max_norm).unwrap();
            let got = down(g, &dg);
            assert_close(
                &format!("clip_scale max_norm={max_norm} tensor {i}"),
                &got,
                &want,
            );
            if f == 1.0 {
                assert!(
                    got.iter().zip(v).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "clip_scale must leave unclipped gradients bit-identical"
                );
            }
        }
    }
}

#[test]
fn sinkhorn_cost_and_barycentric_map_match_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng(10);
    let d = 5;
    let shapes = [(1usize, 1usize), (15, 10), (7, 33), (4, 4)];
    let configs = [
        SinkhornConfig::default(),
        SinkhornConfig {
            epsilon: 1e-3,
            max_iters: 300,
            tol: 1e-9,
            check_every: 7,
        },
        SinkhornConfig {
            epsilon: 0.5,
            max_iters: 3,
            tol: 1e-12,
            check_every: 2,
        },
    ];
    let mut problems = Vec::new();
    let (mut xr, mut yr) = (0, 0);
    for &(m, n) in &shapes {
        problems.push(OtProblem {
            m,
            n,
            x_row: xr,
            y_row: yr,
            out_row: xr,
        });
        xr += m;
        yr += n;
    }
    let mut x = rng.vec_f32(xr * d, 1.0);
    let y = rng.vec_f32(yr * d, 1.0);
    let last = problems.len() - 1;
    let at = problems[last].x_row * d;
    for i in 1..problems[last].m {
        let (head, tail) = x.split_at_mut(at + i * d);
        tail[..d].copy_from_slice(&head[at..at + d]);
    }
    let batch = OtBatch::new(&g.s, &problems).unwrap();
    let (dx, dy) = (up(g, &x), up(g, &y));
    let mut cost = poison_f64(g, batch.cost_len());
    ot_ops::ot_cost(&g.k, &g.s, &batch, &dx, &dy, d, &mut cost).unwrap();
    let gcost = down(g, &cost);
    let mut cpu_costs = Vec::new();
    for (b, p) in problems.iter().enumerate() {
        let c = squared_euclidean_cost(
            &x[p.x_row * d..(p.x_row + p.m) * d],
            p.m,
            &y[p.y_row * d..(p.y_row + p.n) * d],
            p.n,
            d,
        );
        let off = batch.cost_offset(b);
        assert_close(
            &format!("ot_cost {}x{}", p.m, p.n),
            &gcost[off..off + p.m * p.n],
            &c,
        );
        cpu_costs.push(c);
    }
    for cfg in &configs {
        let mut transport = poison_f64(g, batch.cost_len());
        let mut kbuf = poison_f64(g, batch.cost_len());
        let mut res = OtResults::zeros(&g.s, batch.len()).unwrap();
        let nan = vec![f64::NAN; batch.len()];
        g.s.memcpy_htod(&nan, &mut res.distance).unwrap();
        g.s.memcpy_htod(&nan, &mut res.error).unwrap();
        g.s.memcpy_htod(&vec![-7i32; batch.len()], &mut res.status)
            .unwrap();
        ot_ops::ot_sinkhorn(
            &g.k,
            &g.s,
            &batch,
            &cost,
            cfg,
            &mut transport,
            &mut kbuf,
            &mut res,
        )
        .unwrap();
        let mut out = poison_f32(g, xr * d);
        ot_ops::ot_barycentric_map(
            &g.k,
            &g.s,
            &batch,
            &transport,
            &res.status,
            &dy,
            d,
            &mut out,
        )
        .unwrap();
        let t = down(g, &transport);
        let (dist, iters, err, conv, status) = (
            down(g, &res.distance),
            down(g, &res.iterations),
            down(g, &res.error),
            down(g, &res.converged),
            down(g, &res.status),
        );
        let mapped = down(g, &out);
        for (b, p) in problems.iter().enumerate() {
            let plan = sinkhorn(&cpu_costs[b], p.m, p.n, cfg);
            let what = format!("ot_sinkhorn {}x{} eps={}", p.m, p.n, cfg.epsilon);
            assert!(plan.is_valid(), "{what}: CPU plan invalid");
            assert_eq!(status[b], OT_OK, "{what}: status");
            let slack = cfg.check_every.max(1) as i64;
            assert!(
                (i64::from(iters[b]) - plan.iterations as i64).abs() <= slack,
                "{what}: {} iterations vs {} on the CPU",
                iters[b],
                plan.iterations
            );
            let off = batch.cost_offset(b);
            let scale = (p.m * p.n) as f64;
            let gt: Vec<f64> = t[off..off + p.m * p.n].iter().map(|v| v * scale).collect();
            let ct: Vec<f64> = plan.transport.iter().map(|v| v * scale).collect();
            assert_close(&format!("{what} transport·m·n"), &gt, &ct);
            assert_close(&format!("{what} distance"), &dist[b..=b], &[plan.distance]);
            if iters[b] as usize == plan.iterations {
                assert!(
                    (err[b] - plan.marginal_error).abs() <= 1e-12 + 1e-6 * plan.marginal_error,
                    "{what}: marginal error {} vs {}",
                    err[b],
                    plan.marginal_error
                );
                assert_eq!(conv[b] == 1, plan.converged, "{what}: converged");
            }
            let bary = barycentric_map(&plan, &y[p.y_row * d..(p.y_row + p.n) * d], d).unwrap();
            assert_close(
                &format!("{what} barycentric map"),
                &mapped[p.out_row * d..(p.out_row + p.m) * d],
                &bary,
            );
        }
    }
    let bad = OtBatch::new(
        &g.s,
        &[OtProblem {
            m: 2,
            n: 2,
            x_row: xr,
            y_row: 0,
            out_row: 0,
        }],
    )
    .unwrap();
    let mut cost = poison_f64(g, bad.cost_len());
    ot_ops::ot_cost(&g.k, &g.s, &bad, &dx, &dy, d, &mut cost).unwrap();
    assert!(down(g, &cost).iter().all(|c| c.is_nan()));
    let (mut t, mut kb) = (poison_f64(g, 4), poison_f64(g, 4));
    let mut res = OtResults::zeros(&g.s, 1).unwrap();
    let cfg = SinkhornConfig::default();
    ot_ops::ot_sinkhorn(&g.k, &g.s, &bad, &cost, &cfg, &mut t, &mut kb, &mut res).unwrap();
    assert_eq!(down(g, &res.status)[0], ot_ops::OT_INVALID_INPUT);
    assert!(down(g, &res.distance)[0].is_nan());
}

fn random_bio(rng: &mut Rng, len: usize, l: usize) -> Vec<usize> {
    let mut p: Vec<usize> = (0..len).map(|_| rng.below(l)).collect();
    repair_bio(&mut p);
    p
}

fn cdt_grad_flat(g: &CdtGrad) -> Vec<f64> {
    g.matrix
        .iter()
        .flatten()
        .chain(&g.start)
        .chain(&g.end)
        .copied()
        .collect()
}

#[test]
fn crf_matches_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng(11);
    let types = [1usize, 3, 8];
    let ld = 1 + 2 * types.iter().max().unwrap();
    let n_sets = types.len();
    let params: Vec<_> = (0..n_sets)
        .map(|_| {
            let v: Vec<f32> = rng.vec_f32(21, 1.0);
            cdt_from_flat(&v.try_into().unwrap())
        })
        .collect();
    let wide: Vec<CrfTransitions> = params
        .iter()
        .zip(&types)
        .map(|(p, &t)| CrfTransitions::new(p, t))
        .collect();
    let narrow: Vec<_> = params
        .iter()
        .zip(&types)
        .map(|(p, &t)| unfold(p, t))
        .collect();
    let (mut start, mut end, mut trans) = (
        vec![f64::NAN; n_sets * ld],
        vec![f64::NAN; n_sets * ld],
        vec![f64::NAN; n_sets * ld * ld],
    );
    let (mut start32, mut end32, mut trans32) = (
        vec![f32::NAN; n_sets * ld],
        vec![f32::NAN; n_sets * ld],
        vec![f32::NAN; n_sets * ld * ld],
    );
    for (s, (w, n)) in wide.iter().zip(&narrow).enumerate() {
        let l = w.n_labels;
        start[s * ld..s * ld + l].copy_from_slice(&w.start);
        end[s * ld..s * ld + l].copy_from_slice(&w.end);
        start32[s * ld..s * ld + l].copy_from_slice(&n.start);
        end32[s * ld..s * ld + l].copy_from_slice(&n.end);
        for i in 0..l {
            let at = (s * ld + i) * ld;
            trans[at..at + l].copy_from_slice(&w.trans[i * l..(i + 1) * l]);
            trans32[at..at + l].copy_from_slice(&n.trans[i * l..(i + 1) * l]);
        }
    }
    let (dstart, dend, dtrans) = (up(g, &start), up(g, &end), up(g, &trans));
    let (dstart32, dend32, dtrans32) = (up(g, &start32), up(g, &end32), up(g, &trans32));
    let t64 = CrfTransitionSets {
        start: &dstart,
        end: &dend,
        trans: &dtrans,
    };
    let t32 = CrfTransitionSets {
        start: &dstart32,
        end: &dend32,
        trans: &dtrans32,
    };

    let mut lens = Vec::new();
    let mut tset = Vec::new();
    for set in 0..n_sets {
        for len in [1usize, 5, 37, 0] {
            lens.push(len);
            tset.push(set);
        }
    }
    let offsets = offsets_from_lens(&lens);
    let n_rows = *offsets.last().unwrap();
    let n_sent = lens.len();
    let n_labels: Vec<usize> = tset.iter().map(|&s| wide[s].n_labels).collect();
    let mut emissions = vec![f64::NAN; n_rows * ld];
    let mut gold = vec![0i32; n_rows];
    let mut gold_paths = Vec::new();
    for s in 0..n_sent {
        let l = n_labels[s];
        let path = random_bio(&mut rng, lens[s], l);
        for (t, r) in (offsets[s]..offsets[s + 1]).enumerate() {
            for j in 0..l {
                emissions[r * ld + j] = 1.5 * rng.normal();
            }
            gold[r] = path[t] as i32;
        }
        gold_paths.push(path);
    }
    let batch = CrfBatch::new(&g.s, &offsets, &n_labels, &tset, ld, n_sets).unwrap();
    let (dem, dgold) = (up(g, &emissions), up(g, &gold));
    let mut alpha = poison_f64(g, n_rows * ld);
    let (mut log_z, mut nll) = (poison_f64(g, n_sent), poison_f64(g, n_sent));
    crf_ops::crf_forward(
        &g.k, &g.s, &batch, &dem, &dgold, &t64, &mut alpha, &mut log_z, &mut nll,
    )
    .unwrap();
    let base = rng.vec_f64(n_rows * ld, 1.0);
    let mut beta = poison_f64(g, n_rows * ld);
    let mut d_em = up(g, &base);
    let mut d_cdt = poison_f64(g, n_sent * CDT_LEN);
    crf_ops::crf_backward(
        &g.k, &g.s, &batch, &dem, &dgold, &t64, &alpha, &log_z, &nll, &mut beta, &mut d_em,
        &mut d_cdt,
    )
    .unwrap();
    let (glz, gnll, gdem, gcdt) = (
        down(g, &log_z),
        down(g, &nll),
        down(g, &d_em),
        down(g, &d_cdt),
    );

    let em32: Vec<f32> = emissions.iter().map(|&v| v as f32).collect();
    let dem32 = up(g, &em32);
    let mut back = up(g, &vec![-7i32; n_rows * ld]);
    let mut path = up(g, &vec![-7i32; n_rows]);
    let mut best = poison_f32(g, n_sent);
    crf_ops::crf_viterbi(
        &g.k, &g.s, &batch, &dem32, &t32, &mut back, &mut path, &mut best,
    )
    .unwrap();
    let (gpath, gbest) = (down(g, &path), down(g, &best));

    for s in 0..n_sent {
        let (l, len, r0) = (n_labels[s], lens[s], offsets[s]);
        let what = format!("crf sentence {s} ({} types, length {len})", types[tset[s]]);
        let t = &wide[tset[s]];
        let e: Vec<f64> = (0..len)
            .flat_map(|i| emissions[(r0 + i) * ld..(r0 + i) * ld + l].to_vec())
            .collect();
        let mut de = vec![0.0f64; len * l];
        let mut dc = CdtGrad::default();
        let want_nll = crf_nll(&e, &gold_paths[s], t, &mut de, &mut dc).unwrap();
        let want_lz = if len == 0 {
            0.0
        } else {
            want_nll + path_score(&e, t, &gold_paths[s])
        };
        assert_close(&format!("{what} nll"), &gnll[s..=s], &[want_nll]);
        assert_close(&format!("{what} log Z"), &glz[s..=s], &[want_lz]);
        let mut want_de = base[r0 * ld..(r0 + len) * ld].to_vec();
        for i in 0..len {
            for j in 0..l {
                want_de[i * ld + j] += de[i * l + j];
            }
        }
        assert_close(
            &format!("{what} d_emissions"),
            &gdem[r0 * ld..(r0 + len) * ld],
            &want_de,
        );
        assert_close(
            &format!("{what} d_cdt"),
            &gcdt[s * CDT_LEN..(s + 1) * CDT_LEN],
            &cdt_grad_flat(&dc),
        );

        let e32: Vec<f32> = e.iter().map(|&v| v as f32).collect();
        let mut want_path = Vec::new();
        let want_best = if len == 0 {
            0.0
        } else {
            viterbi(&e32, l, &narrow[tset[s]], &mut want_path)
        };
        let got_path: Vec<usize> = gpath[r0..r0 + len].iter().map(|&p| p as usize).collect();
        assert_eq!(got_path, want_path, "{what}: Viterbi path");
        assert_close(
            &format!("{what} Viterbi score"),
            &gbest[s..=s],
            &[want_best],
        );
    }
}

#[test]
fn wrappers_reject_mismatched_sizes_before_launching() {
    let Some(g) = gpu() else { return };
    let x = up(g, &[0.0f32; 10]);
    let mut y = poison_f32(g, 9);
    let mut c = poison_f32(g, 10);
    let err = enc::gelu_forward(&g.k, &g.s, &x, &mut y, &mut c).unwrap_err();
    assert!(err.to_string().contains("gelu_forward: y holds 9"), "{err}");
    let mut gamma = poison_f32(g, 3);
    let err = enc::layernorm_forward(
        &g.k,
        &g.s,
        &x,
        &gamma.clone(),
        &gamma.clone(),
        1e-5,
        &mut c,
        &mut y,
        &mut gamma,
    )
    .unwrap_err();
    assert!(err.to_string().starts_with("layernorm_forward: "), "{err}");
    assert!(y.len() == 9 && down(g, &y).iter().all(|v| v.is_nan()));
}

#[test]
fn context_gate_matches_cpu() {
    use ner_edge_trainer::backprop::gate::{gate_backward, gate_forward, GateParams};
    use ner_edge_trainer::cuda::ops::fusion::{self as fusion_ops, GateGrads, GateShape};
    let Some(g) = gpu() else { return };
    let mut rng = Rng(17);
    for (rows, hidden) in [(1usize, 1usize), (7, 33), (130, 384), (3, 700)] {
        for distance in [false, true] {
            let shape = GateShape {
                rows,
                hidden,
                distance,
            };
            let what = format!("rows={rows} hidden={hidden} distance={distance}");
            let width = if distance { 6 } else { 4 } * hidden;
            let p = GateParams {
                hidden,
                weight: rng.vec_f32(width, 0.05),
                bias: [0.1f32, -0.2],
            };
            let e = rng.vec_f32(rows * hidden, 1.0);
            let c = rng.vec_f32(rows * hidden, 1.0);
            let (mut out, mut open) = (vec![0.0f32; rows * hidden], vec![0.0f32; rows]);
            gate_forward(&p, &e, &c, &mut out, &mut open);
            let (de_, dc_, dw_, db_) = (up(g, &e), up(g, &c), up(g, &p.weight), up(g, &p.bias));
            let (mut go, mut gg) = (poison_f32(g, rows * hidden), poison_f32(g, rows));
            fusion_ops::gate_forward(&g.k, &g.s, shape, &de_, &dc_, &dw_, &db_, &mut go, &mut gg)
                .unwrap();
            assert_close(&format!("gate forward {what}"), &down(g, &go), &out);
            assert_close(&format!("gate openings {what}"), &down(g, &gg), &open);

            let d_out = rng.vec_f32(rows * hidden, 1.0);
            let mut grad = GateParams {
                hidden,
                weight: rng.vec_f32(width, 0.1),
                bias: [0.3f32, 0.4],
            };
            let (g_w0, g_b0) = (grad.weight.clone(), grad.bias);
            let (mut de, mut dc) = (vec![0.0f32; rows * hidden], vec![0.0f32; rows * hidden]);
            gate_backward(
                &p,
                &e,
                &c,
                &open,
                &d_out,
                &mut grad,
                Some((&mut de, &mut dc)),
            );
            let (mut gde, mut gdc) = (poison_f32(g, rows * hidden), poison_f32(g, rows * hidden));
            let mut gdz = poison_f32(g, rows);
            let (mut gdw, mut gdb) = (up(g, &g_w0), up(g, &g_b0));
            let (d_open, d_d) = (up(g, &open), up(g, &d_out));
            fusion_ops::gate_backward(
                &g.k,
                &g.s,
                shape,
                &de_,
                &dc_,
                &dw_,
                &d_open,
                &d_d,
                GateGrads {
                    d_alone: &mut gde,
                    d_with_context: &mut gdc,
                    dz: &mut gdz,
                    d_weight: &mut gdw,
                    d_bias: &mut gdb,
                },
            )
            .unwrap();
            assert_close(&format!("gate d_alone {what}"), &down(g, &gde), &de);
            assert_close(&format!("gate d_with_context {what}"), &down(g, &gdc), &dc);
            assert_close(
                &format!("gate d_weight {what}"),
                &down(g, &gdw),
                &grad.weight,
            );
            assert_close(&format!("gate d_bias {what}"), &down(g, &gdb), &grad.bias);
        }
    }
}
