//! Parameter storage for the encoder and its heads.
//!
//! Every tensor is a flat row-major `Vec<f32>`. Linear layers are stored as `[in, out]` so that
//! `y = x W + b` for a row vector `x` (PyTorch stores `[out, in]`; importers transpose).

use anyhow::{ensure, Result};
use half::f16;

use super::config::{EncoderConfig, BOUNDARY_LABELS};
use super::rng::SplitMix64;

/// Standard deviation of the normal initialisation of weight matrices and embedding tables.
pub const INIT_STD: f32 = 0.02;

/// A dense layer `y = x W + b` with `weight` row-major `[d_in, d_out]` and `bias` `[d_out]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Linear {
    /// Input width (rows of `weight`).
    pub d_in: usize,
    /// Output width (columns of `weight`).
    pub d_out: usize,
    /// `[d_in, d_out]` row-major.
    pub weight: Vec<f32>,
    /// `[d_out]`.
    pub bias: Vec<f32>,
}

impl Linear {
    /// Weights drawn from N(0, [`INIT_STD`]²), zero bias.
    pub fn random(d_in: usize, d_out: usize, rng: &mut SplitMix64) -> Linear {
        Linear {
            d_in,
            d_out,
            weight: rng.normal_vec(d_in * d_out, INIT_STD),
            bias: vec![0.0; d_out],
        }
    }

    fn check(&self, name: &str, d_in: usize, d_out: usize) -> Result<()> {
        ensure!(
            self.d_in == d_in && self.d_out == d_out,
            "{name}: expected {d_in}x{d_out} linear, found {}x{}",
            self.d_in,
            self.d_out
        );
        ensure!(
            self.weight.len() == d_in * d_out,
            "{name}.weight: expected {} values, found {}",
            d_in * d_out,
            self.weight.len()
        );
        ensure!(
            self.bias.len() == d_out,
            "{name}.bias: expected {d_out} values, found {}",
            self.bias.len()
        );
        Ok(())
    }
}

/// Layer normalisation parameters: `gamma` (scale) and `beta` (shift), both `[D]`.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerNorm {
    /// `[D]`, multiplies the normalised values.
    pub gamma: Vec<f32>,
    /// `[D]`, added after the scale.
    pub beta: Vec<f32>,
}

impl LayerNorm {
    /// `gamma = 1`, `beta = 0`.
    pub fn identity(d: usize) -> LayerNorm {
        LayerNorm {
            gamma: vec![1.0; d],
            beta: vec![0.0; d],
        }
    }

    fn check(&self, name: &str, d: usize) -> Result<()> {
        ensure!(
            self.gamma.len() == d && self.beta.len() == d,
            "{name}: expected gamma and beta of {d} values, found {} and {}",
            self.gamma.len(),
            self.beta.len()
        );
        Ok(())
    }
}

/// One post-LN transformer layer.
///
/// `h1 = LN_attn(x + attn(x) W_o + b_o)`, `out = LN_ffn(h1 + GELU(h1 W_in + b_in) W_out + b_out)`.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerWeights {
    /// `[D, D]`; output columns grouped by head (head `h` owns columns `h*dh .. (h+1)*dh`).
    pub query: Linear,
    /// `[D, D]`, same column grouping as `query`.
    pub key: Linear,
    /// `[D, D]`, same column grouping as `query`.
    pub value: Linear,
    /// `[D, D]`; input rows grouped by head, as the concatenated head outputs are.
    pub attn_output: Linear,
    /// `LN_attn`, after the attention residual.
    pub attn_ln: LayerNorm,
    /// `[D, intermediate]`.
    pub ffn_in: Linear,
    /// `[intermediate, D]`.
    pub ffn_out: Linear,
    /// `LN_ffn`, after the FFN residual; its output is the layer's.
    pub ffn_ln: LayerNorm,
}

impl LayerWeights {
    /// Random layer: linear weights N(0, 0.02²), zero biases, identity layer norms.
    pub fn random(config: &EncoderConfig, rng: &mut SplitMix64) -> LayerWeights {
        let d = config.hidden;
        let i = config.intermediate;
        LayerWeights {
            query: Linear::random(d, d, rng),
            key: Linear::random(d, d, rng),
            value: Linear::random(d, d, rng),
            attn_output: Linear::random(d, d, rng),
            attn_ln: LayerNorm::identity(d),
            ffn_in: Linear::random(d, i, rng),
            ffn_out: Linear::random(i, d, rng),
            ffn_ln: LayerNorm::identity(d),
        }
    }
}

/// All parameters of the encoder and the two token heads.
///
/// Embedding of token `t` with word shape `s` at position `p`: `word_embeddings[t] +
/// position_embeddings[p] + token_type_embedding + shape_embeddings[s]` (the last only when
/// `config.shape_classes > 0`), then `embeddings_ln`.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelWeights {
    /// The shape every tensor below follows ([`ModelWeights::check`]).
    pub config: EncoderConfig,
    /// `[vocab_size, D]`.
    pub word_embeddings: Vec<f32>,
    /// `[max_positions, D]`.
    pub position_embeddings: Vec<f32>,
    /// `[D]`: row 0 of the token-type table, the only token type the model uses.
    pub token_type_embedding: Vec<f32>,
    /// Layer norm of the summed embeddings, the first layer's input.
    pub embeddings_ln: LayerNorm,
    /// `config.layers` layers, input side first.
    pub layers: Vec<LayerWeights>,
    /// `[D, 3]`: logits for `O`, `B`, `I`.
    pub boundary: Linear,
    /// `[D, type_dim]`: type projection.
    pub types: Linear,
    /// `[shape_classes, D]`: word-shape rows (empty when the config has no shape classes).
    pub shape_embeddings: Vec<f32>,
}

/// Randomly initialised weights, fully determined by `config` and `seed`: embedding tables and
/// linear weights N(0, 0.02²), biases 0, layer-norm gamma 1 and beta 0.
///
/// `config` is not validated here; call [`EncoderConfig::validate`] first on untrusted configs.
pub fn random_init(config: &EncoderConfig, seed: u64) -> ModelWeights {
    let mut rng = SplitMix64::new(seed);
    let d = config.hidden;
    let word_embeddings = rng.normal_vec(config.vocab_size * d, INIT_STD);
    let position_embeddings = rng.normal_vec(config.max_positions * d, INIT_STD);
    let token_type_embedding = rng.normal_vec(d, INIT_STD);
    let layers = (0..config.layers)
        .map(|_| LayerWeights::random(config, &mut rng))
        .collect();
    let (boundary, types) = random_heads(config, &mut rng);
    ModelWeights {
        config: config.clone(),
        word_embeddings,
        position_embeddings,
        token_type_embedding,
        embeddings_ln: LayerNorm::identity(d),
        layers,
        boundary,
        types,
        shape_embeddings: vec![0.0; config.shape_classes * d],
    }
}

/// Random boundary (`[D, 3]`) and type (`[D, type_dim]`) heads.
pub fn random_heads(config: &EncoderConfig, rng: &mut SplitMix64) -> (Linear, Linear) {
    let boundary = Linear::random(config.hidden, BOUNDARY_LABELS, rng);
    let types = Linear::random(config.hidden, config.type_dim, rng);
    (boundary, types)
}

fn round_f16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| f16::from_f32(x).to_f32()).collect()
}

impl ModelWeights {
    /// Checks the config and that every tensor has the length the config implies.
    pub fn check(&self) -> Result<()> {
        let c = &self.config;
        c.validate()?;
        let d = c.hidden;
        ensure!(
            self.word_embeddings.len() == c.vocab_size * d,
            "word_embeddings: expected {}x{d} values, found {}",
            c.vocab_size,
            self.word_embeddings.len()
        );
        ensure!(
            self.position_embeddings.len() == c.max_positions * d,
            "position_embeddings: expected {}x{d} values, found {}",
            c.max_positions,
            self.position_embeddings.len()
        );
        ensure!(
            self.token_type_embedding.len() == d,
            "token_type_embedding: expected {d} values, found {}",
            self.token_type_embedding.len()
        );
        self.embeddings_ln.check("embeddings_ln", d)?;
        ensure!(
            self.layers.len() == c.layers,
            "expected {} layers, found {}",
            c.layers,
            self.layers.len()
        );
        for (l, layer) in self.layers.iter().enumerate() {
            layer.query.check(&format!("layer {l} query"), d, d)?;
            layer.key.check(&format!("layer {l} key"), d, d)?;
            layer.value.check(&format!("layer {l} value"), d, d)?;
            layer
                .attn_output
                .check(&format!("layer {l} attn_output"), d, d)?;
            layer.attn_ln.check(&format!("layer {l} attn_ln"), d)?;
            layer
                .ffn_in
                .check(&format!("layer {l} ffn_in"), d, c.intermediate)?;
            layer
                .ffn_out
                .check(&format!("layer {l} ffn_out"), c.intermediate, d)?;
            layer.ffn_ln.check(&format!("layer {l} ffn_ln"), d)?;
        }
        self.boundary.check("boundary", d, BOUNDARY_LABELS)?;
        self.types.check("types", d, c.type_dim)?;
        ensure!(
            self.shape_embeddings.len() == c.shape_classes * d,
            "shape_embeddings: expected {}x{d} values, found {}",
            c.shape_classes,
            self.shape_embeddings.len()
        );
        Ok(())
    }

    /// All-zero tensors of the shapes `config` implies (linear `d_in`/`d_out` set), e.g. a
    /// gradient accumulator for [`crate::backprop::backward`].
    pub fn zeros(config: &EncoderConfig) -> ModelWeights {
        let d = config.hidden;
        let linear = |d_in: usize, d_out: usize| Linear {
            d_in,
            d_out,
            weight: vec![0.0; d_in * d_out],
            bias: vec![0.0; d_out],
        };
        let norm = || LayerNorm {
            gamma: vec![0.0; d],
            beta: vec![0.0; d],
        };
        ModelWeights {
            config: config.clone(),
            word_embeddings: vec![0.0; config.vocab_size * d],
            position_embeddings: vec![0.0; config.max_positions * d],
            token_type_embedding: vec![0.0; d],
            embeddings_ln: norm(),
            layers: (0..config.layers)
                .map(|_| LayerWeights {
                    query: linear(d, d),
                    key: linear(d, d),
                    value: linear(d, d),
                    attn_output: linear(d, d),
                    attn_ln: norm(),
                    ffn_in: linear(d, config.intermediate),
                    ffn_out: linear(config.intermediate, d),
                    ffn_ln: norm(),
                })
                .collect(),
            boundary: linear(d, BOUNDARY_LABELS),
            types: linear(d, config.type_dim),
            shape_embeddings: vec![0.0; config.shape_classes * d],
        }
    }

    /// Every parameter tensor with its stable name, in this fixed order:
    ///
    /// 1. `word_embeddings`, `position_embeddings`, `token_type_embedding`,
    ///    `embeddings_ln.gamma`, `embeddings_ln.beta`;
    /// 2. for each layer `l` from the input side, with prefix `layers.{l}.`:
    ///    `query.weight`, `query.bias`, `key.weight`, `key.bias`, `value.weight`, `value.bias`,
    ///    `attn_output.weight`, `attn_output.bias`, `attn_ln.gamma`, `attn_ln.beta`,
    ///    `ffn_in.weight`, `ffn_in.bias`, `ffn_out.weight`, `ffn_out.bias`, `ffn_ln.gamma`,
    ///    `ffn_ln.beta`;
    /// 3. `boundary.weight`, `boundary.bias`, `types.weight`, `types.bias`;
    /// 4. `shape_embeddings`, only when `config.shape_classes > 0`.
    ///
    /// That is `5 + 16 * layers + 4` (+ 1) tensors whose lengths add up to
    /// [`EncoderConfig::parameter_count`]. [`ModelWeights::tensors_mut`] yields the same names in
    /// the same order; [`is_no_decay`] tells which of them are biases or layer-norm parameters.
    pub fn tensors(&self) -> Vec<(String, &[f32])> {
        let mut out: Vec<(String, &[f32])> = vec![
            ("word_embeddings".into(), &self.word_embeddings),
            ("position_embeddings".into(), &self.position_embeddings),
            ("token_type_embedding".into(), &self.token_type_embedding),
            ("embeddings_ln.gamma".into(), &self.embeddings_ln.gamma),
            ("embeddings_ln.beta".into(), &self.embeddings_ln.beta),
        ];
        for (l, layer) in self.layers.iter().enumerate() {
            let linears = [
                ("query", &layer.query),
                ("key", &layer.key),
                ("value", &layer.value),
                ("attn_output", &layer.attn_output),
            ];
            for (name, lin) in linears {
                out.push((format!("layers.{l}.{name}.weight"), &lin.weight));
                out.push((format!("layers.{l}.{name}.bias"), &lin.bias));
            }
            out.push((format!("layers.{l}.attn_ln.gamma"), &layer.attn_ln.gamma));
            out.push((format!("layers.{l}.attn_ln.beta"), &layer.attn_ln.beta));
            for (name, lin) in [("ffn_in", &layer.ffn_in), ("ffn_out", &layer.ffn_out)] {
                out.push((format!("layers.{l}.{name}.weight"), &lin.weight));
                out.push((format!("layers.{l}.{name}.bias"), &lin.bias));
            }
            out.push((format!("layers.{l}.ffn_ln.gamma"), &layer.ffn_ln.gamma));
            out.push((format!("layers.{l}.ffn_ln.beta"), &layer.ffn_ln.beta));
        }
        out.push(("boundary.weight".into(), &self.boundary.weight));
        out.push(("boundary.bias".into(), &self.boundary.bias));
        out.push(("types.weight".into(), &self.types.weight));
        out.push(("types.bias".into(), &self.types.bias));
        if !self.shape_embeddings.is_empty() {
            out.push(("shape_embeddings".into(), &self.shape_embeddings));
        }
        out
    }

    /// Mutable access to every parameter tensor, with the names and in the order of
    /// [`ModelWeights::tensors`].
    pub fn tensors_mut(&mut self) -> Vec<(String, &mut [f32])> {
        let mut out: Vec<(String, &mut [f32])> = vec![
            ("word_embeddings".into(), &mut self.word_embeddings),
            ("position_embeddings".into(), &mut self.position_embeddings),
            (
                "token_type_embedding".into(),
                &mut self.token_type_embedding,
            ),
            ("embeddings_ln.gamma".into(), &mut self.embeddings_ln.gamma),
            ("embeddings_ln.beta".into(), &mut self.embeddings_ln.beta),
        ];
        for (l, layer) in self.layers.iter_mut().enumerate() {
            let linears = [
                ("query", &mut layer.query),
                ("key", &mut layer.key),
                ("value", &mut layer.value),
                ("attn_output", &mut layer.attn_output),
            ];
            for (name, lin) in linears {
                out.push((format!("layers.{l}.{name}.weight"), &mut lin.weight));
                out.push((format!("layers.{l}.{name}.bias"), &mut lin.bias));
            }
            out.push((
                format!("layers.{l}.attn_ln.gamma"),
                &mut layer.attn_ln.gamma,
            ));
            out.push((format!("layers.{l}.attn_ln.beta"), &mut layer.attn_ln.beta));
            let ffn = [
                ("ffn_in", &mut layer.ffn_in),
                ("ffn_out", &mut layer.ffn_out),
            ];
            for (name, lin) in ffn {
                out.push((format!("layers.{l}.{name}.weight"), &mut lin.weight));
                out.push((format!("layers.{l}.{name}.bias"), &mut lin.bias));
            }
            out.push((format!("layers.{l}.ffn_ln.gamma"), &mut layer.ffn_ln.gamma));
            out.push((format!("layers.{l}.ffn_ln.beta"), &mut layer.ffn_ln.beta));
        }
        out.push(("boundary.weight".into(), &mut self.boundary.weight));
        out.push(("boundary.bias".into(), &mut self.boundary.bias));
        out.push(("types.weight".into(), &mut self.types.weight));
        out.push(("types.bias".into(), &mut self.types.bias));
        if !self.shape_embeddings.is_empty() {
            out.push(("shape_embeddings".into(), &mut self.shape_embeddings));
        }
        out
    }

    /// These weights with a word-shape table of `classes` rows, all zero (so the model computes
    /// exactly what it did without one until the rows are trained); an existing table is
    /// replaced.
    pub fn with_shape_classes(mut self, classes: usize) -> ModelWeights {
        self.config.shape_classes = classes;
        self.shape_embeddings = vec![0.0; classes * self.config.hidden];
        self
    }

    /// The position table with the token-type row added to every position:
    /// `[max_positions, D]`, what the ONNX export stores as its position table.
    pub fn position_plus_token_type(&self) -> Vec<f32> {
        let d = self.config.hidden;
        self.position_embeddings
            .chunks(d)
            .flat_map(|row| {
                row.iter()
                    .zip(&self.token_type_embedding)
                    .map(|(p, t)| p + t)
            })
            .collect()
    }

    /// The weights an F16 ONNX export computes with: every matrix (embedding tables, linear
    /// weights) rounded to f16, with the token-type row folded into the position table before
    /// rounding (so `token_type_embedding` is zero); biases and layer norms stay f32.
    pub fn f16_effective(&self) -> ModelWeights {
        let lin = |l: &Linear| Linear {
            weight: round_f16(&l.weight),
            ..l.clone()
        };
        ModelWeights {
            config: self.config.clone(),
            word_embeddings: round_f16(&self.word_embeddings),
            position_embeddings: round_f16(&self.position_plus_token_type()),
            token_type_embedding: vec![0.0; self.config.hidden],
            embeddings_ln: self.embeddings_ln.clone(),
            layers: self
                .layers
                .iter()
                .map(|l| LayerWeights {
                    query: lin(&l.query),
                    key: lin(&l.key),
                    value: lin(&l.value),
                    attn_output: lin(&l.attn_output),
                    attn_ln: l.attn_ln.clone(),
                    ffn_in: lin(&l.ffn_in),
                    ffn_out: lin(&l.ffn_out),
                    ffn_ln: l.ffn_ln.clone(),
                })
                .collect(),
            boundary: lin(&self.boundary),
            types: lin(&self.types),
            shape_embeddings: self.shape_embeddings.clone(),
        }
    }
}

/// Whether the tensor named `name` (a name from [`ModelWeights::tensors`]) is a bias or a
/// layer-norm `gamma`/`beta`: the tensors AdamW conventionally leaves out of weight decay.
/// Embedding tables and linear weights are decayed.
pub fn is_no_decay(name: &str) -> bool {
    name.ends_with(".bias") || name.ends_with(".gamma") || name.ends_with(".beta")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> EncoderConfig {
        EncoderConfig {
            vocab_size: 11,
            hidden: 6,
            layers: 2,
            heads: 2,
            intermediate: 10,
            max_positions: 7,
            type_dim: 5,
            layer_norm_eps: 1e-12,
            shape_classes: 0,
        }
    }

    #[test]
    fn random_init_is_deterministic_and_consistent() {
        let a = random_init(&tiny(), 3);
        a.check().unwrap();
        assert_eq!(a, random_init(&tiny(), 3));
        assert_ne!(a.word_embeddings, random_init(&tiny(), 4).word_embeddings);
        let count = a.word_embeddings.len()
            + a.position_embeddings.len()
            + a.token_type_embedding.len()
            + 2 * a.embeddings_ln.gamma.len()
            + a.layers
                .iter()
                .map(|l| {
                    [
                        &l.query,
                        &l.key,
                        &l.value,
                        &l.attn_output,
                        &l.ffn_in,
                        &l.ffn_out,
                    ]
                    .iter()
                    .map(|x| x.weight.len() + x.bias.len())
                    .sum::<usize>()
                        + 2 * l.attn_ln.gamma.len()
                        + 2 * l.ffn_ln.gamma.len()
                })
                .sum::<usize>()
            + a.boundary.weight.len()
            + a.boundary.bias.len()
            + a.types.weight.len()
            + a.types.bias.len();
        assert_eq!(count, tiny().parameter_count());
    }

    #[test]
    fn check_names_the_bad_tensor() {
        let mut w = random_init(&tiny(), 1);
        w.layers[1].ffn_out.bias.pop();
        let err = w.check().unwrap_err().to_string();
        assert!(err.contains("layer 1 ffn_out.bias"), "{err}");
    }

    #[test]
    fn tensors_cover_every_parameter_in_stable_order() {
        let mut w = random_init(&tiny(), 2);
        let listed = w.tensors();
        assert_eq!(listed.len(), 5 + 16 * 2 + 4);
        let total: usize = listed.iter().map(|(_, t)| t.len()).sum();
        assert_eq!(total, tiny().parameter_count());
        assert_eq!(listed[0].0, "word_embeddings");
        assert_eq!(listed[5].0, "layers.0.query.weight");
        assert_eq!(listed[5 + 16 + 12].0, "layers.1.ffn_out.weight");
        assert_eq!(listed[5 + 16 + 12].1, w.layers[1].ffn_out.weight.as_slice());
        assert_eq!(listed.last().unwrap().0, "types.bias");
        let names: Vec<String> = listed.iter().map(|(n, _)| n.clone()).collect();
        let unique: std::collections::HashSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
        let lens: Vec<usize> = listed.iter().map(|(_, t)| t.len()).collect();
        let mut_listed = w.tensors_mut();
        let mut_names: Vec<String> = mut_listed.iter().map(|(n, _)| n.clone()).collect();
        let mut_lens: Vec<usize> = mut_listed.iter().map(|(_, t)| t.len()).collect();
        assert_eq!(names, mut_names);
        assert_eq!(lens, mut_lens);
        for (_, t) in w.tensors_mut() {
            t.fill(0.0);
        }
        assert_eq!(w, ModelWeights::zeros(&tiny()));
        ModelWeights::zeros(&tiny()).check().unwrap();
    }

    #[test]
    fn no_decay_names() {
        assert!(is_no_decay("layers.0.query.bias"));
        assert!(is_no_decay("embeddings_ln.gamma"));
        assert!(is_no_decay("layers.3.ffn_ln.beta"));
        assert!(!is_no_decay("layers.0.query.weight"));
        assert!(!is_no_decay("word_embeddings"));
        assert!(!is_no_decay("token_type_embedding"));
    }
}
