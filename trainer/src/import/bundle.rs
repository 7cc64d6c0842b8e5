//! The encoder weights of a trained bundle, read back out of its ONNX graph: for training on top
//! of a frozen bundle (`ner-train prompt`).
//!
//! The graph must be one `ner-train`'s exporter wrote ([`crate::export::onnx`]): its
//! initializers are found by name and dequantised to the f32 values the graph computes with
//! (f16 tables and matrices exactly; int8 matrices times their per-column scales, the int8 word
//! table times its per-row scales). The exporter folds the token-type row into the position
//! table, so the result has that sum as its position table and a zero token-type row: the same
//! forward pass. The layer-norm epsilon is read from the graph's `LayerNormalization` nodes.

use anyhow::{bail, ensure, Context, Result};
use ner_edge::bundle::{tensor_names, Bundle};
use tract_onnx::pb::{GraphProto, TensorProto};
use tract_onnx::prelude::*;

use crate::model::weights::{LayerNorm, LayerWeights, Linear};
use crate::model::{EncoderConfig, ModelWeights};

/// The weights the encoder graph of `bundle` computes with, as a [`ModelWeights`] whose config
/// is the bundle's `encoder` metadata. Errors name the missing or misshaped tensor.
pub fn weights_from_bundle(bundle: &Bundle) -> Result<ModelWeights> {
    let onnx = bundle
        .bytes(tensor_names::ENCODER_ONNX)
        .with_context(|| format!("{}: reading the encoder graph", bundle.name()))?;
    let meta = &bundle.metadata().encoder;
    weights_from_onnx(onnx, meta).with_context(|| {
        format!(
            "{}: reading the encoder weights out of its graph",
            bundle.name()
        )
    })
}

/// [`weights_from_bundle`] on the graph bytes and the bundle's encoder metadata.
pub fn weights_from_onnx(
    onnx: &[u8],
    meta: &ner_edge::bundle::EncoderMeta,
) -> Result<ModelWeights> {
    let framework = tract_onnx::onnx();
    let proto = framework
        .proto_model_for_read(&mut &onnx[..])
        .map_err(|e| anyhow::anyhow!("cannot parse the graph: {e:#}"))?;
    let graph = proto.graph.as_ref().context("the model has no graph")?;
    let reader = Reader {
        graph,
        framework: &framework,
    };
    let eps = graph
        .node
        .iter()
        .find(|n| n.op_type == "LayerNormalization")
        .and_then(|n| n.attribute.iter().find(|a| a.name == "epsilon"))
        .map(|a| a.f)
        .context("the graph has no LayerNormalization with an epsilon")?;
    let (h, layers) = (meta.hidden, meta.layers);
    let shape_classes = match reader.find("embeddings.shape") {
        Some(_) => reader.read("embeddings.shape", None, &[None, Some(h)])?.1[0],
        None => 0,
    };
    let config = EncoderConfig {
        vocab_size: meta.vocab_size,
        hidden: h,
        layers,
        heads: meta.heads,
        intermediate: meta.intermediate,
        max_positions: meta.max_positions,
        type_dim: meta.type_dim,
        layer_norm_eps: eps,
        shape_classes,
    };
    config.validate().context("the bundle's encoder metadata")?;
    let table = |name: &str, rows: usize| -> Result<Vec<f32>> {
        Ok(reader
            .read(name, Some(Scale::PerRow), &[Some(rows), Some(h)])?
            .0)
    };
    let vector = |name: &str, len: usize| -> Result<Vec<f32>> {
        Ok(reader.read(name, None, &[Some(len)])?.0)
    };
    let linear = |name: &str, d_in: usize, d_out: usize| -> Result<Linear> {
        Ok(Linear {
            d_in,
            d_out,
            weight: reader
                .read(
                    &format!("{name}.weight"),
                    Some(Scale::PerColumn),
                    &[Some(d_in), Some(d_out)],
                )?
                .0,
            bias: vector(&format!("{name}.bias"), d_out)?,
        })
    };
    let norm = |name: &str| -> Result<LayerNorm> {
        Ok(LayerNorm {
            gamma: vector(&format!("{name}.gamma"), h)?,
            beta: vector(&format!("{name}.beta"), h)?,
        })
    };
    let mut stack = Vec::with_capacity(layers);
    for l in 0..layers {
        let p = format!("layer{l}");
        stack.push(LayerWeights {
            query: linear(&format!("{p}.query"), h, h)?,
            key: linear(&format!("{p}.key"), h, h)?,
            value: linear(&format!("{p}.value"), h, h)?,
            attn_output: linear(&format!("{p}.attn_output"), h, h)?,
            attn_ln: norm(&format!("{p}.attn_ln"))?,
            ffn_in: linear(&format!("{p}.ffn_in"), h, meta.intermediate)?,
            ffn_out: linear(&format!("{p}.ffn_out"), meta.intermediate, h)?,
            ffn_ln: norm(&format!("{p}.ffn_ln"))?,
        });
    }
    let w = ModelWeights {
        word_embeddings: table("embeddings.word", meta.vocab_size)?,
        position_embeddings: table("embeddings.position", meta.max_positions)?,
        token_type_embedding: vec![0.0; h],
        embeddings_ln: norm("embeddings.ln")?,
        layers: stack,
        boundary: linear("head.boundary", h, crate::model::BOUNDARY_LABELS)?,
        types: linear("head.types", h, meta.type_dim)?,
        shape_embeddings: match shape_classes {
            0 => Vec::new(),
            n => {
                reader
                    .read("embeddings.shape", None, &[Some(n), Some(h)])?
                    .0
            }
        },
        config,
    };
    w.check().context("the weights read from the graph")?;
    Ok(w)
}

/// How an int8 initializer's scales apply.
#[derive(Clone, Copy)]
enum Scale {
    /// `[rows]` scales (the word table).
    PerRow,
    /// `[cols]` scales (linear weights).
    PerColumn,
}

struct Reader<'a> {
    graph: &'a GraphProto,
    framework: &'a tract_onnx::Onnx,
}

impl Reader<'_> {
    fn find(&self, name: &str) -> Option<&TensorProto> {
        self.graph.initializer.iter().find(|t| t.name == name)
    }

    /// Initializer `name` as f32 (int8 times `{name}.scale` when `scale` allows int8), checked
    /// against `want` (`None`: any size on that axis). Returns the values and the shape.
    fn read(
        &self,
        name: &str,
        scale: Option<Scale>,
        want: &[Option<usize>],
    ) -> Result<(Vec<f32>, Vec<usize>)> {
        let t = self
            .find(name)
            .with_context(|| format!("initializer {name:?} is missing"))?;
        let tensor = tract_onnx::tensor::load_tensor(&*self.framework.provider, t, None)
            .map_err(|e| anyhow::anyhow!("initializer {name:?}: {e:#}"))?;
        let shape = tensor.shape().to_vec();
        ensure!(
            shape.len() == want.len()
                && shape
                    .iter()
                    .zip(want)
                    .all(|(&s, w)| w.is_none_or(|w| w == s)),
            "initializer {name:?} has shape {shape:?}, expected {want:?}"
        );
        let is_int8 = tensor.datum_type() == i8::datum_type();
        let mut values = tensor
            .cast_to::<f32>()
            .and_then(|t| {
                t.try_as_plain_ram()
                    .and_then(|v| v.as_slice::<f32>().map(<[f32]>::to_vec))
            })
            .map_err(|e| anyhow::anyhow!("initializer {name:?}: {e:#}"))?;
        if is_int8 {
            let Some(scale) = scale else {
                bail!("initializer {name:?} is int8 where the exporter writes floats");
            };
            ensure!(
                shape.len() == 2,
                "int8 initializer {name:?} is not a matrix"
            );
            let (rows, cols) = (shape[0], shape[1]);
            let scale_name = format!("{name}.scale");
            let len = match scale {
                Scale::PerRow => rows,
                Scale::PerColumn => cols,
            };
            let (scales, _) = self.read(&scale_name, None, &[Some(len)])?;
            for (r, row) in values.chunks_exact_mut(cols).enumerate() {
                for (c, v) in row.iter_mut().enumerate() {
                    *v *= match scale {
                        Scale::PerRow => scales[r],
                        Scale::PerColumn => scales[c],
                    };
                }
            }
        }
        if let Some(at) = values.iter().position(|v| !v.is_finite()) {
            bail!("initializer {name:?} holds a non-finite value at index {at}");
        }
        Ok((values, shape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::onnx::{build_model, quantised_effective, WeightDtype};
    use crate::model::random_init;
    use prost::Message;

    fn meta(c: &EncoderConfig) -> ner_edge::bundle::EncoderMeta {
        ner_edge::bundle::EncoderMeta {
            architecture: "bert".into(),
            hidden: c.hidden,
            layers: c.layers,
            heads: c.heads,
            intermediate: c.intermediate,
            vocab_size: c.vocab_size,
            max_positions: c.max_positions,
            type_dim: c.type_dim,
            weight_dtype: "f32".into(),
            shape_scheme: None,
            trained_window: None,
        }
    }

    /// Export then import gives the weights the graph computes with, for every dtype.
    #[test]
    fn exported_weights_read_back() {
        let c = EncoderConfig {
            vocab_size: 40,
            hidden: 8,
            layers: 2,
            heads: 2,
            intermediate: 12,
            max_positions: 10,
            type_dim: 4,
            layer_norm_eps: 1e-12,
            shape_classes: 6,
        };
        let w = random_init(&c, 5);
        for dtype in [
            WeightDtype::F32,
            WeightDtype::F16,
            WeightDtype::Int8,
            WeightDtype::Mixed,
        ] {
            let onnx = build_model(&w, dtype).unwrap().encode_to_vec();
            let got = weights_from_onnx(&onnx, &meta(&c)).unwrap();
            let mut want = quantised_effective(&w, dtype);
            want.position_embeddings = want.position_plus_token_type();
            want.token_type_embedding = vec![0.0; c.hidden];
            for ((name, a), (_, b)) in got.tensors().into_iter().zip(want.tensors()) {
                let worst = a
                    .iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0f32, f32::max);
                assert!(worst <= 1e-6, "{dtype:?} {name}: differs by {worst}");
            }
            assert_eq!(got.config, w.config);
        }
    }

    #[test]
    fn a_missing_tensor_is_named() {
        let c = EncoderConfig {
            shape_classes: 0,
            ..EncoderConfig {
                vocab_size: 20,
                hidden: 4,
                layers: 1,
                heads: 1,
                intermediate: 6,
                max_positions: 6,
                type_dim: 3,
                layer_norm_eps: 1e-12,
                shape_classes: 0,
            }
        };
        let w = random_init(&c, 6);
        let mut model = build_model(&w, WeightDtype::F32).unwrap();
        let graph = model.graph.as_mut().unwrap();
        graph
            .initializer
            .retain(|t| t.name != "layer0.ffn_in.weight");
        let err = weights_from_onnx(&model.encode_to_vec(), &meta(&c)).unwrap_err();
        assert!(
            format!("{err:#}").contains("\"layer0.ffn_in.weight\" is missing"),
            "{err:#}"
        );
    }
}
