//! Context fusion: MFNER's denoising gate between a text encoded alone and the same text
//! encoded after its context.
//!
//! A text with context (the previous sentences of its document, a title, a caption) is encoded
//! twice: alone, giving last hidden states `E_t`, and as `context text` in one window, giving
//! `C_t` for the same pieces. A per-piece gate `g_t = softmax(W [E_t ; C_t] + b)` (two
//! numbers) mixes them, `F_t = g_t0 E_t + g_t1 C_t`, and the bundle's heads read `F_t`. The gate
//! is trained with true and with deliberately wrong context, so it can shut (`g_t1 → 0`) when
//! the context does not help. Without context `C_t = E_t`, so `F_t = E_t` whatever the gate
//! says: a text without context is scored exactly as by the plain graph.
//!
//! The gate may also read the element-wise squared difference `(C_t − E_t)²`, how far the
//! context moved each coordinate: `g_t = softmax(W [E_t ; C_t ; (C_t − E_t)²] + b)`. The gate
//! lives in the bundle as two f32 tensors ([`GATE_WEIGHT`], [`GATE_BIAS`]); a bundle without
//! them was not trained for context.

use crate::bundle::{tensor_names, Bundle};
use crate::tokenizer::Encoding;
use crate::{Error, Result};

/// Gate weight: f32 `[2 hidden, 2]` or `[3 hidden, 2]` row-major; rows `0..hidden` read `E_t`
/// (the text alone), rows `hidden..2 hidden` read `C_t` (the text after its context), rows
/// `2 hidden..3 hidden` (when present) read `(C_t − E_t)²`; column 1 is the opening.
pub const GATE_WEIGHT: &str = tensor_names::CONTEXT_GATE_WEIGHT;
/// Gate bias: f32 `[2]`.
pub const GATE_BIAS: &str = tensor_names::CONTEXT_GATE_BIAS;

/// The learned denoising gate.
#[derive(Clone, Debug, PartialEq)]
pub struct ContextGate {
    /// Width of the hidden states it mixes.
    pub hidden: usize,
    /// `[2 hidden, 2]` or `[3 hidden, 2]` row-major.
    pub weight: Vec<f32>,
    /// `[2]`.
    pub bias: [f32; 2],
}

impl ContextGate {
    /// The bundle's gate, `None` when it has neither tensor. Errors ([`Error::Bundle`]) when only
    /// one is there, when the sizes do not match `hidden`, or on non-finite values.
    pub fn from_bundle(bundle: &Bundle, hidden: usize) -> Result<Option<ContextGate>> {
        let has_weight = bundle.tensor_info(GATE_WEIGHT).is_ok();
        let has_bias = bundle.tensor_info(GATE_BIAS).is_ok();
        if !has_weight && !has_bias {
            return Ok(None);
        }
        if !(has_weight && has_bias) {
            return Err(Error::Bundle(format!(
                "{}: the context gate needs both {GATE_WEIGHT:?} and {GATE_BIAS:?}",
                bundle.name()
            )));
        }
        let weight = bundle.to_f32_vec(GATE_WEIGHT)?;
        let bias = bundle.to_f32_vec(GATE_BIAS)?;
        if (weight.len() != 4 * hidden && weight.len() != 6 * hidden) || bias.len() != 2 {
            return Err(Error::Bundle(format!(
                "{}: context gate has {} weights and {} biases, expected {} or {} and 2 \
                 (hidden {hidden})",
                bundle.name(),
                weight.len(),
                bias.len(),
                4 * hidden,
                6 * hidden
            )));
        }
        if weight.iter().chain(&bias).any(|v| !v.is_finite()) {
            return Err(Error::Bundle(format!(
                "{}: the context gate holds non-finite values",
                bundle.name()
            )));
        }
        Ok(Some(ContextGate {
            hidden,
            weight,
            bias: [bias[0], bias[1]],
        }))
    }

    /// The opening `g_t1` for one piece.
    pub fn opening(&self, alone: &[f32], with_context: &[f32]) -> f32 {
        let h = self.hidden;
        let (mut z0, mut z1) = (self.bias[0], self.bias[1]);
        let rows = self.weight.chunks_exact(2);
        for (x, w) in alone.iter().chain(with_context).zip(rows).take(2 * h) {
            z0 += x * w[0];
            z1 += x * w[1];
        }
        if self.weight.len() == 6 * h {
            let rows = self.weight.chunks_exact(2).skip(2 * h);
            for ((&a, &b), w) in alone.iter().zip(with_context).zip(rows) {
                let d = (b - a) * (b - a);
                z0 += d * w[0];
                z1 += d * w[1];
            }
        }
        sigmoid(z1 - z0)
    }
}

/// How a text's two encodings become the heads' input.
#[derive(Clone, Debug, PartialEq)]
pub enum ContextFusion {
    /// The bundle's learned gate.
    Gate(ContextGate),
    /// Always the encoding with context (`g_t1 = 1`); the no-gate ablation.
    Replace,
}

impl ContextFusion {
    /// Writes `F_t` for every piece into `out` (`alone`, `with_context`: `[pieces, hidden]`;
    /// `out` is cleared first) and returns the sum of the openings `g_t1`.
    pub fn fuse(
        &self,
        hidden: usize,
        alone: &[f32],
        with_context: &[f32],
        out: &mut Vec<f32>,
    ) -> f32 {
        out.clear();
        if hidden == 0 {
            return 0.0;
        }
        let mut opened = 0.0;
        for (e, c) in alone
            .chunks_exact(hidden)
            .zip(with_context.chunks_exact(hidden))
        {
            let g = match self {
                ContextFusion::Gate(gate) => gate.opening(e, c),
                ContextFusion::Replace => 1.0,
            };
            opened += g;
            out.extend(e.iter().zip(c).map(|(&a, &b)| a + g * (b - a)));
        }
        opened
    }
}

/// A text's pieces after the end of its context, as one encoder window: the context's last
/// whole words that fit beside the text, then the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContextWindow {
    /// Word-piece ids (no `[CLS]`/`[SEP]`).
    pub ids: Vec<u32>,
    /// Shape id per piece, or empty when either encoding has none.
    pub shapes: Vec<u8>,
    /// Index in `ids` of the text's first piece.
    pub offset: usize,
}

impl ContextWindow {
    /// The window for `text` after `context` in at most `max` pieces; `None` when the text is
    /// empty or fills the window alone, or when not one context word fits.
    pub fn new(context: &Encoding, text: &Encoding, max: usize) -> Option<ContextWindow> {
        let n = text.ids.len();
        let total = context.ids.len();
        if n == 0 || n >= max || total == 0 {
            return None;
        }
        let budget = max - n;
        let from = context
            .word_first_piece
            .iter()
            .map(|&p| p as usize)
            .find(|&p| p < total && total - p <= budget)?;
        let mut ids = Vec::with_capacity(total - from + n);
        ids.extend_from_slice(&context.ids[from..]);
        ids.extend_from_slice(&text.ids);
        let shapes = if context.shapes.len() == total && text.shapes.len() == n {
            let mut s = Vec::with_capacity(ids.len());
            s.extend_from_slice(&context.shapes[from..]);
            s.extend_from_slice(&text.shapes);
            s
        } else {
            Vec::new()
        };
        Some(ContextWindow {
            ids,
            shapes,
            offset: total - from,
        })
    }
}

fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(hidden: usize, seed: u32) -> ContextGate {
        let mut s = seed;
        let mut next = || {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        ContextGate {
            hidden,
            weight: (0..4 * hidden).map(|_| next()).collect(),
            bias: [next(), next()],
        }
    }

    #[test]
    fn the_opening_is_the_second_entry_of_a_two_way_softmax() {
        let g = gate(3, 7);
        let e = [0.3, -1.2, 0.8];
        let c = [1.5, 0.1, -0.4];
        let x: Vec<f32> = e.iter().chain(&c).copied().collect();
        let z: Vec<f64> = (0..2)
            .map(|j| {
                f64::from(g.bias[j])
                    + x.iter()
                        .enumerate()
                        .map(|(i, &v)| f64::from(v) * f64::from(g.weight[i * 2 + j]))
                        .sum::<f64>()
            })
            .collect();
        let want = z[1].exp() / (z[0].exp() + z[1].exp());
        assert!((f64::from(g.opening(&e, &c)) - want).abs() < 1e-6);
    }

    #[test]
    fn without_context_the_fused_state_is_the_state_alone() {
        let g = ContextFusion::Gate(gate(4, 3));
        let e: Vec<f32> = (0..12).map(|i| i as f32 * 0.37 - 2.0).collect();
        let mut out = Vec::new();
        g.fuse(4, &e, &e, &mut out);
        for (a, b) in out.iter().zip(&e) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} vs {b}");
        }
    }

    #[test]
    fn a_context_window_keeps_the_nearest_whole_words_that_fit() {
        let enc = |pieces: &[u32], firsts: &[u32]| Encoding {
            ids: pieces.to_vec(),
            shapes: vec![0; pieces.len()],
            word_first_piece: firsts.to_vec(),
            ..Encoding::default()
        };
        let context = enc(&[1, 2, 3, 4, 5, 6], &[0, 2, 3]);
        let text = enc(&[10, 11], &[0]);
        let w = ContextWindow::new(&context, &text, 5).unwrap();
        assert_eq!(
            w.ids,
            [4, 5, 6, 10, 11],
            "the word 3 4 5 6 starts at piece 3"
        );
        assert_eq!(w.offset, 3);
        assert_eq!(w.shapes.len(), 5);
        let w = ContextWindow::new(&context, &text, 100).unwrap();
        assert_eq!(w.ids, [1, 2, 3, 4, 5, 6, 10, 11]);
        assert_eq!(
            ContextWindow::new(&context, &text, 2),
            None,
            "the text fills it"
        );
        assert_eq!(
            ContextWindow::new(&context, &text, 4),
            None,
            "no whole word fits"
        );
        assert_eq!(ContextWindow::new(&enc(&[], &[]), &text, 9), None);
    }

    #[test]
    fn fused_states_lie_between_the_two_encodings() {
        let g = ContextFusion::Gate(gate(2, 11));
        let e = [1.0, -1.0, 0.5, 2.0];
        let c = [3.0, 1.0, -0.5, 2.0];
        let mut out = Vec::new();
        let opened = g.fuse(2, &e, &c, &mut out);
        assert!(opened > 0.0 && opened < 2.0);
        for ((f, a), b) in out.iter().zip(&e).zip(&c) {
            assert!(*f >= a.min(*b) - 1e-6 && *f <= a.max(*b) + 1e-6);
        }
        let opened = ContextFusion::Replace.fuse(2, &e, &c, &mut out);
        assert_eq!(opened, 2.0);
        assert_eq!(out, c);
    }
}
