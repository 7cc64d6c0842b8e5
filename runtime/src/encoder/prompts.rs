//! Prompt adapters (LightNER's prompt-guided attention, with LLaMA-Adapter's zero-initialised
//! gate): per layer, `P` learned key and value vectors that every token's query also attends
//! to, in a softmax of their own whose result is scaled by a per-head gate and added to the
//! layer's self-attention context:
//!
//! ```text
//! ctx_h += g_h · softmax(q_h Kp_hᵀ / √dh) Vp_h        (head h, dh = hidden / heads)
//! ```
//!
//! The encoder graph of a bundle has no prompts; [`add_prompt_inputs`] rewrites it to take three
//! more inputs, [`PROMPT_KEY`] and [`PROMPT_VALUE`] f32 `[layers, P, hidden]` and
//! [`PROMPT_GATE`] f32 `[layers, heads]`, so one plan serves every label pack whose prompts have
//! the same `P`. The graph without prompts is never touched: the bundle's own types are scored
//! by the plan they always were, bit for bit. The trainer computes the same expression
//! (`ner-train prompt`, `trainer/src/backprop/prefix.rs`).

use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{
    AttributeProto, ModelProto, NodeProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

use crate::{Error, Result};

/// Graph input of the prompt keys, f32 `[layers, P, hidden]`.
pub const PROMPT_KEY: &str = "prompt_key";
/// Graph input of the prompt values, f32 `[layers, P, hidden]`.
pub const PROMPT_VALUE: &str = "prompt_value";
/// Graph input of the per-head gates, f32 `[layers, heads]`.
pub const PROMPT_GATE: &str = "prompt_gate";

/// The prompts of every layer of one encoder.
#[derive(Clone, Debug, PartialEq)]
pub struct Prompts {
    /// `P`, prompt vectors per layer (at least 1).
    pub len: usize,
    /// Layers of the encoder.
    pub layers: usize,
    /// Attention heads per layer.
    pub heads: usize,
    /// Width of the hidden state.
    pub hidden: usize,
    /// `[layers, P, hidden]`.
    pub key: Vec<f32>,
    /// `[layers, P, hidden]`.
    pub value: Vec<f32>,
    /// `[layers, heads]`.
    pub gate: Vec<f32>,
}

impl Prompts {
    /// Checks that the sizes agree and every value is finite; `what` names the source.
    pub fn check(&self, what: &str) -> Result<()> {
        if self.len == 0 || self.layers == 0 || self.heads == 0 || self.hidden == 0 {
            return Err(Error::Bundle(format!(
                "{what}: prompts of length {}, {} layers, {} heads, hidden {}: each must be at \
                 least 1",
                self.len, self.layers, self.heads, self.hidden
            )));
        }
        if !self.hidden.is_multiple_of(self.heads) {
            return Err(Error::Bundle(format!(
                "{what}: hidden {} is not a multiple of {} heads",
                self.hidden, self.heads
            )));
        }
        let pd = self.layers * self.len * self.hidden;
        let parts: [(&str, &[f32], usize); 3] = [
            ("prompt keys", &self.key, pd),
            ("prompt values", &self.value, pd),
            ("prompt gates", &self.gate, self.layers * self.heads),
        ];
        for (name, data, want) in parts {
            if data.len() != want {
                return Err(Error::Bundle(format!(
                    "{what}: {name} have {} values, expected {want}",
                    data.len()
                )));
            }
            if let Some(at) = data.iter().position(|v| !v.is_finite()) {
                return Err(Error::Bundle(format!(
                    "{what}: {name} hold a non-finite value at index {at}"
                )));
            }
        }
        Ok(())
    }
}

fn graph_error(msg: String) -> Error {
    Error::Encoder(format!(
        "cannot add prompt inputs to the encoder graph: {msg}"
    ))
}

fn node(name: String, op: &str, inputs: &[&str], attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![name.clone()],
        name,
        op_type: op.into(),
        attribute,
        ..NodeProto::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: v.to_vec(),
        r#type: tract_onnx::pb::attribute_proto::AttributeType::Ints as i32,
        ..AttributeProto::default()
    }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i: v,
        r#type: tract_onnx::pb::attribute_proto::AttributeType::Int as i32,
        ..AttributeProto::default()
    }
}

fn const_i64(name: &str, dims: &[i64], data: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Int64 as i32,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..TensorProto::default()
    }
}

fn f32_input(name: &str, dims: &[i64]) -> ValueInfoProto {
    use tract_onnx::pb::tensor_shape_proto::{dimension::Value, Dimension};
    use tract_onnx::pb::type_proto::{Tensor, Value as TypeValue};
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(TypeValue::TensorType(Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(Value::DimValue(d)),
                            ..Dimension::default()
                        })
                        .collect(),
                }),
            })),
            ..TypeProto::default()
        }),
        ..ValueInfoProto::default()
    }
}

/// Rewrites `model` (an encoder graph as `ner-train` exports it) to take prompts of length
/// `len` as the three inputs of the module docs, appended after its own inputs.
///
/// Each layer's attention is found from its `Softmax` (the `l`-th `Softmax` is layer `l`): its
/// input must be `Add(Mul(MatMul(q, kᵀ), scale), mask)` and exactly one `MatMul` must read its
/// output (the product with the values), whose result gets the prompt term added. Errors
/// ([`Error::Encoder`]) name what does not match.
pub fn add_prompt_inputs(
    model: &mut ModelProto,
    layers: usize,
    heads: usize,
    hidden: usize,
    len: usize,
) -> Result<()> {
    if len == 0 || heads == 0 || !hidden.is_multiple_of(heads) {
        return Err(graph_error(format!(
            "prompt length {len}, {heads} heads, hidden {hidden}"
        )));
    }
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| graph_error("the model has no graph".into()))?;
    let softmaxes: Vec<usize> = graph
        .node
        .iter()
        .enumerate()
        .filter(|(_, n)| n.op_type == "Softmax")
        .map(|(i, _)| i)
        .collect();
    if softmaxes.len() != layers {
        return Err(graph_error(format!(
            "{} Softmax nodes for {layers} layers",
            softmaxes.len()
        )));
    }
    let producer = |nodes: &[NodeProto], value: &str, op: &str| -> Result<NodeProto> {
        nodes
            .iter()
            .find(|n| n.output.iter().any(|o| o == value))
            .filter(|n| n.op_type == op && n.input.len() == 2)
            .cloned()
            .ok_or_else(|| graph_error(format!("{value:?} is not the output of a two-input {op}")))
    };
    let (dh, p) = ((hidden / heads) as i64, len as i64);
    graph
        .input
        .push(f32_input(PROMPT_KEY, &[layers as i64, p, hidden as i64]));
    graph
        .input
        .push(f32_input(PROMPT_VALUE, &[layers as i64, p, hidden as i64]));
    graph
        .input
        .push(f32_input(PROMPT_GATE, &[layers as i64, heads as i64]));
    graph.initializer.extend([
        const_i64("prompt.split_heads", &[3], &[p, heads as i64, dh]),
        const_i64("prompt.gate_shape", &[3], &[heads as i64, 1, 1]),
    ]);
    let mut inserted = 0;
    for (l, &at) in softmaxes.iter().enumerate() {
        let at = at + inserted;
        let softmax = graph.node[at].clone();
        let probs = softmax
            .output
            .first()
            .ok_or_else(|| graph_error(format!("layer {l}: Softmax without output")))?;
        let scores = softmax
            .input
            .first()
            .ok_or_else(|| graph_error(format!("layer {l}: Softmax without input")))?;
        let masked = producer(&graph.node, scores, "Add")?;
        let scaled = producer(&graph.node, &masked.input[0], "Mul")?;
        let qk = producer(&graph.node, &scaled.input[0], "MatMul")?;
        let (q, scale) = (qk.input[0].clone(), scaled.input[1].clone());
        let readers: Vec<usize> = graph
            .node
            .iter()
            .enumerate()
            .filter(|(_, n)| n.input.iter().any(|i| i == probs))
            .map(|(i, _)| i)
            .collect();
        let pv_at = match readers.as_slice() {
            [i] if graph.node[*i].op_type == "MatMul" && graph.node[*i].input[0] == *probs => *i,
            _ => {
                return Err(graph_error(format!(
                    "layer {l}: the attention probabilities are not read by exactly one MatMul"
                )))
            }
        };
        let context = graph.node[pv_at].output[0].clone();
        let own = format!("prompt{l}.self_context");
        graph.node[pv_at].output[0] = own.clone();
        let name = |what: &str| format!("prompt{l}.{what}");
        let index = name("layer");
        graph.initializer.push(const_i64(&index, &[], &[l as i64]));
        let new = vec![
            node(
                name("key"),
                "Gather",
                &[PROMPT_KEY, &index],
                vec![int("axis", 0)],
            ),
            node(
                name("key_heads"),
                "Reshape",
                &[&name("key"), "prompt.split_heads"],
                vec![],
            ),
            node(
                name("key_t"),
                "Transpose",
                &[&name("key_heads")],
                vec![ints("perm", &[1, 2, 0])],
            ),
            node(
                name("value"),
                "Gather",
                &[PROMPT_VALUE, &index],
                vec![int("axis", 0)],
            ),
            node(
                name("value_heads"),
                "Reshape",
                &[&name("value"), "prompt.split_heads"],
                vec![],
            ),
            node(
                name("value_t"),
                "Transpose",
                &[&name("value_heads")],
                vec![ints("perm", &[1, 0, 2])],
            ),
            node(
                name("gate"),
                "Gather",
                &[PROMPT_GATE, &index],
                vec![int("axis", 0)],
            ),
            node(
                name("gate_heads"),
                "Reshape",
                &[&name("gate"), "prompt.gate_shape"],
                vec![],
            ),
            node(name("scores"), "MatMul", &[&q, &name("key_t")], vec![]),
            node(name("scaled"), "Mul", &[&name("scores"), &scale], vec![]),
            node(
                name("probs"),
                "Softmax",
                &[&name("scaled")],
                vec![int("axis", -1)],
            ),
            node(
                name("context"),
                "MatMul",
                &[&name("probs"), &name("value_t")],
                vec![],
            ),
            node(
                name("gated"),
                "Mul",
                &[&name("context"), &name("gate_heads")],
                vec![],
            ),
            NodeProto {
                output: vec![context],
                ..node(name("sum"), "Add", &[&own, &name("gated")], vec![])
            },
        ];
        inserted += new.len();
        let tail = graph.node.split_off(pv_at + 1);
        graph.node.extend(new);
        graph.node.extend(tail);
    }
    Ok(())
}
