//! ONNX export of the encoder and its two heads, built as a `ModelProto` by hand.
//!
//! # Graph contract
//!
//! * inputs: `input_ids` i64 `[batch, seq]`, `attention_mask` i64 `[batch, seq]` (1 = token,
//!   0 = padding), and, when the model has a word-shape table, `shape_ids` i64 `[batch, seq]`
//!   (the [`ner_edge::tokenizer::Shape`] id of each piece, 0 for `[CLS]`, `[SEP]` and padding);
//!   `batch` and `seq` are symbolic (`dim_param`);
//! * outputs: `boundary` f32 `[batch, seq, 3]` (logits `O`, `B`, `I`) and `types` f32
//!   `[batch, seq, type_dim]`;
//! * opset 17, IR version 8; the model is computed in f32 whatever the storage dtype;
//! * `seq` must not exceed `max_positions` (the position table is sliced to `seq` rows).
//!
//! The graph matches [`crate::model::reference_forward`]: post-LN BERT layers, exact-erf GELU,
//! `(1 - mask) * -10000` added to the attention scores of every query against padded keys. The
//! token-type row 0 is folded into the position table at export time (`position + token_type`
//! is stored as `embeddings.position`), so the graph has no token-type input.
//!
//! With [`WeightDtype::F16`], every matrix (embedding tables, linear weights, heads) is a FLOAT16
//! initializer followed by `Cast` to f32; the embedding tables are `Gather`ed / `Slice`d first
//! and cast after, so only the looked-up rows are converted. Biases and layer-norm parameters
//! stay f32. [`crate::model::ModelWeights::f16_effective`] gives the weights such a graph
//! computes with.
//!
//! With [`WeightDtype::Int8`], the two big parts are stored as symmetric int8 and dequantised in
//! the graph (computation stays f32):
//!
//! * every encoder linear weight `[d_in, d_out]` is an INT8 initializer `W.weight` with one f32
//!   scale per output column `W.weight.scale` `[d_out]`: `Cast(W.weight) -> f32`, then
//!   `Mul(·, W.weight.scale)` (broadcast over rows). All inputs are constants, so tract folds the
//!   dequantisation at load and runs the same f32 `MatMul` as for the other dtypes;
//! * the word-embedding table `[vocab, d]` is INT8 with one f32 scale per row
//!   (`embeddings.word.scale` `[vocab]`): both are `Gather`ed with `input_ids`, the rows are cast
//!   to f32 and multiplied by the gathered scales unsqueezed to `[batch, seq, 1]`, so only the
//!   looked-up rows are converted (the indices are graph inputs, so tract cannot fold this);
//! * the position table and the two heads are small and stored as with [`WeightDtype::F16`];
//!   biases and layer-norm parameters stay f32.
//!
//! [`WeightDtype::Mixed`] stores the word-embedding table and every layer's `ffn_in` and
//! `attn_output` weights as int8 (as above) and all other matrices as f16.
//!
//! Quantisation is `scale = max|w| / 127` over the column (row), `q = round(w / scale)` clamped
//! to `[-127, 127]`, `w' = f32(q) * scale` (an all-zero column gets scale 0). [`int8_effective`]
//! gives the weights such a graph computes with, bit for bit.
//!
//! # Loading with tract 0.23.9
//!
//! The symbolic dims come from the `dim_param`s, so no input fact needs to be set:
//!
//! ```no_run
//! use tract_onnx::prelude::*;
//! # fn main() -> TractResult<()> {
//! # let bytes: Vec<u8> = vec![];
//! let model = tract_onnx::onnx()
//!     .model_for_read(&mut &bytes[..])?  // facts: i64 [batch, seq] from the dim_params
//!     .into_optimized()?                  // typed + decluttered + optimised, dims stay symbolic
//!     .into_runnable()?;                  // Arc<TypedRunnableModel>, reusable for any batch/seq
//! let ids = tract_ndarray::Array2::<i64>::zeros((2, 7));
//! let mask = tract_ndarray::Array2::<i64>::ones((2, 7));
//! let out = model.run(tvec!(Tensor::from(ids).into(), Tensor::from(mask).into()))?;
//! let boundary = out[0].to_plain_array_view::<f32>()?; // [2, 7, 3]
//! let types = out[1].to_plain_array_view::<f32>()?;    // [2, 7, type_dim]
//! # let _ = (boundary, types); Ok(()) }
//! ```
//!
//! To set (or re-declare) the facts explicitly, use the model's own symbol scope so the names
//! unify with those of the graph:
//!
//! ```no_run
//! use tract_onnx::prelude::*;
//! use tract_onnx::tract_core::dims;
//! # fn main() -> TractResult<()> {
//! # let bytes: Vec<u8> = vec![];
//! let mut model = tract_onnx::onnx().model_for_read(&mut &bytes[..])?;
//! let batch = model.symbols.sym("batch");
//! let seq = model.symbols.sym("seq");
//! model.set_input_fact(0, i64::fact(dims!(batch, seq)).into())?;
//! model.set_input_fact(1, i64::fact(dims!(batch, seq)).into())?;
//! let runnable = model.into_optimized()?.into_runnable()?;
//! # let _ = runnable; Ok(()) }
//! ```

use anyhow::{ensure, Context, Result};
use half::f16;
use prost::Message;
use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

use crate::model::{LayerWeights, Linear, ModelWeights, ATTENTION_MASK_VALUE, BOUNDARY_LABELS};

/// ONNX opset the export targets.
pub const OPSET: i64 = 17;
/// ONNX IR version the export declares.
pub const IR_VERSION: i64 = 8;

/// Storage type of the matrices in the exported graph (computation is always f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightDtype {
    /// Every matrix (embedding tables, linear weights, heads) FLOAT16, cast to f32 in the
    /// graph; biases and layer-norm parameters f32.
    F16,
    /// Every initializer f32, the trained values unchanged.
    F32,
    /// Symmetric int8 for the linear weights (per output column) and the word embeddings (per
    /// row); position table and heads f16. See the [module docs](self).
    Int8,
    /// Int8 where it is cheapest in accuracy and largest in bytes: the word embeddings (per row),
    /// each layer's FFN input and attention output projections (per column); every other matrix
    /// f16. A MiniLM-L6 bundle is about 30 MB instead of 45 MB (f16). See the
    /// [module docs](self).
    Mixed,
}

impl WeightDtype {
    /// The bundle metadata value `encoder.weight_dtype`: `"f16"`, `"f32"` or `"int8"`.
    pub fn as_str(self) -> &'static str {
        match self {
            WeightDtype::F16 => "f16",
            WeightDtype::F32 => "f32",
            WeightDtype::Int8 => "int8",
            WeightDtype::Mixed => "mixed",
        }
    }

    /// Parses [`WeightDtype::as_str`]'s names.
    pub fn parse(name: &str) -> Option<WeightDtype> {
        [
            WeightDtype::F16,
            WeightDtype::F32,
            WeightDtype::Int8,
            WeightDtype::Mixed,
        ]
        .into_iter()
        .find(|d| d.as_str() == name)
    }

    /// Storage of the word-embedding table.
    fn word_table(self) -> WeightDtype {
        match self {
            WeightDtype::Mixed => WeightDtype::Int8,
            other => other,
        }
    }

    /// Storage of an encoder linear weight; `int8_when_mixed` marks the layers
    /// [`WeightDtype::Mixed`] stores as int8 (each layer's FFN input and attention output).
    fn encoder_linear(self, int8_when_mixed: bool) -> WeightDtype {
        match self {
            WeightDtype::Mixed if int8_when_mixed => WeightDtype::Int8,
            WeightDtype::Mixed => WeightDtype::F16,
            other => other,
        }
    }

    /// Storage of the position table and the heads.
    fn small(self) -> WeightDtype {
        match self {
            WeightDtype::Int8 | WeightDtype::Mixed => WeightDtype::F16,
            other => other,
        }
    }
}

/// Largest int8 magnitude used by the symmetric quantisation (`-128` is never produced).
pub const INT8_MAX: f32 = 127.0;

/// Scale of a symmetric int8 group (a column or a row) whose largest magnitude is `amax`.
fn int8_scale(amax: f32) -> f32 {
    amax / INT8_MAX
}

/// `x` quantised with `scale` (0 for an all-zero group, whose scale is 0).
fn int8_quantize(x: f32, scale: f32) -> i8 {
    if scale == 0.0 {
        0
    } else {
        (x / scale).round().clamp(-INT8_MAX, INT8_MAX) as i8
    }
}

/// Quantises a row-major `[rows, cols]` matrix with one scale per column (`[cols]`).
pub fn quantize_int8_columns(w: &[f32], rows: usize, cols: usize) -> (Vec<i8>, Vec<f32>) {
    assert_eq!(w.len(), rows * cols, "matrix length");
    let mut amax = vec![0.0f32; cols];
    for row in w.chunks_exact(cols.max(1)) {
        for (m, &x) in amax.iter_mut().zip(row) {
            *m = m.max(x.abs());
        }
    }
    let scales: Vec<f32> = amax.into_iter().map(int8_scale).collect();
    let q = w
        .chunks_exact(cols.max(1))
        .flat_map(|row| row.iter().zip(&scales).map(|(&x, &s)| int8_quantize(x, s)))
        .collect();
    (q, scales)
}

/// Quantises a row-major `[rows, cols]` matrix with one scale per row (`[rows]`).
pub fn quantize_int8_rows(w: &[f32], rows: usize, cols: usize) -> (Vec<i8>, Vec<f32>) {
    assert_eq!(w.len(), rows * cols, "matrix length");
    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(rows);
    for row in w.chunks_exact(cols.max(1)) {
        let s = int8_scale(row.iter().fold(0.0f32, |m, x| m.max(x.abs())));
        q.extend(row.iter().map(|&x| int8_quantize(x, s)));
        scales.push(s);
    }
    (q, scales)
}

/// `f32(q) * scale` for a per-column quantised `[rows, cols]` matrix, as the graph computes it.
pub fn dequantize_int8_columns(q: &[i8], scales: &[f32]) -> Vec<f32> {
    q.chunks_exact(scales.len().max(1))
        .flat_map(|row| row.iter().zip(scales).map(|(&v, &s)| v as f32 * s))
        .collect()
}

/// `f32(q) * scale` for a per-row quantised matrix, as the graph computes it.
pub fn dequantize_int8_rows(q: &[i8], scales: &[f32]) -> Vec<f32> {
    let cols = q.len() / scales.len().max(1);
    q.chunks_exact(cols.max(1))
        .zip(scales)
        .flat_map(|(row, &s)| row.iter().map(move |&v| v as f32 * s))
        .collect()
}

fn round_f16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| f16::from_f32(x).to_f32()).collect()
}

/// The weights a [`WeightDtype::Int8`] export computes with: linear weights and word embeddings
/// quantised and dequantised exactly as in the graph, position table (with the token-type row
/// folded in, token-type set to zero) and heads rounded to f16, biases and layer norms unchanged.
/// [`crate::model::reference_forward`] on these equals the exported graph up to f32 summation
/// order.
pub fn int8_effective(w: &ModelWeights) -> ModelWeights {
    quantised_effective(w, WeightDtype::Int8)
}

/// The weights an export with `dtype` computes with, like [`int8_effective`] for every dtype:
/// [`WeightDtype::F32`] gives `w` with the token-type row folded into the position table.
pub fn quantised_effective(w: &ModelWeights, dtype: WeightDtype) -> ModelWeights {
    let stored = |l: &Linear, storage: WeightDtype| Linear {
        weight: match storage {
            WeightDtype::Int8 => {
                let (q, s) = quantize_int8_columns(&l.weight, l.d_in, l.d_out);
                dequantize_int8_columns(&q, &s)
            }
            WeightDtype::F16 | WeightDtype::Mixed => round_f16(&l.weight),
            WeightDtype::F32 => l.weight.clone(),
        },
        ..l.clone()
    };
    let c = &w.config;
    let word_embeddings = match dtype.word_table() {
        WeightDtype::Int8 => {
            let (wq, ws) = quantize_int8_rows(&w.word_embeddings, c.vocab_size, c.hidden);
            dequantize_int8_rows(&wq, &ws)
        }
        WeightDtype::F32 => w.word_embeddings.clone(),
        WeightDtype::F16 | WeightDtype::Mixed => round_f16(&w.word_embeddings),
    };
    let position = w.position_plus_token_type();
    let position_embeddings = match dtype.small() {
        WeightDtype::F32 => position,
        _ => round_f16(&position),
    };
    let lin = |l: &Linear| stored(l, dtype.encoder_linear(false));
    ModelWeights {
        config: c.clone(),
        word_embeddings,
        position_embeddings,
        token_type_embedding: vec![0.0; c.hidden],
        embeddings_ln: w.embeddings_ln.clone(),
        layers: w
            .layers
            .iter()
            .map(|l| LayerWeights {
                query: lin(&l.query),
                key: lin(&l.key),
                value: lin(&l.value),
                attn_output: stored(&l.attn_output, dtype.encoder_linear(true)),
                attn_ln: l.attn_ln.clone(),
                ffn_in: stored(&l.ffn_in, dtype.encoder_linear(true)),
                ffn_out: lin(&l.ffn_out),
                ffn_ln: l.ffn_ln.clone(),
            })
            .collect(),
        boundary: stored(&w.boundary, dtype.small()),
        types: stored(&w.types, dtype.small()),
        shape_embeddings: w.shape_embeddings.clone(),
    }
}

/// Name of the graph's word-shape input (present when the model has a shape table).
pub const SHAPE_INPUT: &str = "shape_ids";

/// Serialises `w` as an ONNX model following the contract in the [module docs](self).
///
/// Fails if the weights are inconsistent with their config.
pub fn export_onnx(w: &ModelWeights, dtype: WeightDtype) -> Result<Vec<u8>> {
    Ok(build_model(w, dtype)?.encode_to_vec())
}

/// The `ModelProto` that [`export_onnx`] serialises.
pub fn build_model(w: &ModelWeights, dtype: WeightDtype) -> Result<ModelProto> {
    w.check().context("exporting ONNX")?;
    if matches!(dtype, WeightDtype::Int8 | WeightDtype::Mixed) {
        for (name, t) in w.tensors() {
            ensure!(
                t.iter().all(|x| x.is_finite()),
                "exporting ONNX as int8: tensor {name} has non-finite values"
            );
        }
    }
    let c = &w.config;
    let d = c.hidden as i64;
    let heads = c.heads as i64;
    let dh = c.head_dim() as i64;
    let mut g = Builder {
        dtype,
        nodes: vec![],
        initializers: vec![],
    };

    let word = if dtype.word_table() == WeightDtype::Int8 {
        g.int8_word_lookup(
            "embeddings.word",
            c.vocab_size,
            c.hidden,
            &w.word_embeddings,
        )
    } else {
        g.table_lookup(
            "embeddings.word",
            &[c.vocab_size as i64, d],
            &w.word_embeddings,
            |g, table| g.node("Gather", &[table, "input_ids"], vec![attr_int("axis", 0)]),
        )
    };
    let seq_len = g.node(
        "Shape",
        &["input_ids"],
        vec![attr_int("start", 1), attr_int("end", 2)],
    );
    let zero = g.const_i64("const.zero1", &[1], &[0]);
    let position = g.table_lookup(
        "embeddings.position",
        &[c.max_positions as i64, d],
        &w.position_plus_token_type(),
        |g, table| g.node("Slice", &[table, &zero, &seq_len, &zero], vec![]),
    );
    let mut sum = g.node("Add", &[&word, &position], vec![]);
    if c.shape_classes > 0 {
        let table = g.const_f32(
            "embeddings.shape",
            &[c.shape_classes as i64, d],
            &w.shape_embeddings,
        );
        let rows = g.node("Gather", &[&table, SHAPE_INPUT], vec![attr_int("axis", 0)]);
        sum = g.node("Add", &[&sum, &rows], vec![]);
    }
    let mut x = g.layer_norm("embeddings.ln", &sum, &w.embeddings_ln, c.layer_norm_eps);

    let mask = g.node(
        "Cast",
        &["attention_mask"],
        vec![attr_int("to", DataType::Float as i64)],
    );
    let one = g.const_f32("const.one", &[], &[1.0]);
    let inverted = g.node("Sub", &[&one, &mask], vec![]);
    let mask_value = g.const_f32("const.mask_value", &[], &[ATTENTION_MASK_VALUE]);
    let bias = g.node("Mul", &[&inverted, &mask_value], vec![]);
    let axes = g.const_i64("const.axes12", &[2], &[1, 2]);
    let attn_bias = g.node("Unsqueeze", &[&bias, &axes], vec![]);

    let split_heads = g.const_i64("const.split_heads", &[4], &[0, 0, heads, dh]);
    let merge_heads = g.const_i64("const.merge_heads", &[3], &[0, 0, d]);
    let scale = g.const_f32("const.scale", &[], &[1.0 / (dh as f32).sqrt()]);
    let half = g.const_f32("const.half", &[], &[0.5]);
    let inv_sqrt2 = g.const_f32("const.inv_sqrt2", &[], &[(2.0f32).sqrt().recip()]);

    for (l, layer) in w.layers.iter().enumerate() {
        let p = format!("layer{l}");
        let q = g.linear(&format!("{p}.query"), &x, &layer.query);
        let k = g.linear(&format!("{p}.key"), &x, &layer.key);
        let v = g.linear(&format!("{p}.value"), &x, &layer.value);
        let q = g.node("Reshape", &[&q, &split_heads], vec![]);
        let q = g.node("Transpose", &[&q], vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let k = g.node("Reshape", &[&k, &split_heads], vec![]);
        let k = g.node("Transpose", &[&k], vec![attr_ints("perm", &[0, 2, 3, 1])]);
        let v = g.node("Reshape", &[&v, &split_heads], vec![]);
        let v = g.node("Transpose", &[&v], vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let scores = g.node("MatMul", &[&q, &k], vec![]);
        let scores = g.node("Mul", &[&scores, &scale], vec![]);
        let scores = g.node("Add", &[&scores, &attn_bias], vec![]);
        let probs = g.node("Softmax", &[&scores], vec![attr_int("axis", -1)]);
        let context = g.node("MatMul", &[&probs, &v], vec![]);
        let context = g.node(
            "Transpose",
            &[&context],
            vec![attr_ints("perm", &[0, 2, 1, 3])],
        );
        let context = g.node("Reshape", &[&context, &merge_heads], vec![]);
        let attn = g.linear_as(
            &format!("{p}.attn_output"),
            &context,
            &layer.attn_output,
            g.dtype.encoder_linear(true),
        );
        let residual = g.node("Add", &[&x, &attn], vec![]);
        let h1 = g.layer_norm(
            &format!("{p}.attn_ln"),
            &residual,
            &layer.attn_ln,
            c.layer_norm_eps,
        );

        let inner = g.linear_as(
            &format!("{p}.ffn_in"),
            &h1,
            &layer.ffn_in,
            g.dtype.encoder_linear(true),
        );
        let scaled = g.node("Mul", &[&inner, &inv_sqrt2], vec![]);
        let erf = g.node("Erf", &[&scaled], vec![]);
        let one_plus_erf = g.node("Add", &[&erf, &one], vec![]);
        let half_x = g.node("Mul", &[&inner, &half], vec![]);
        let gelu = g.node("Mul", &[&half_x, &one_plus_erf], vec![]);
        let ffn = g.linear(&format!("{p}.ffn_out"), &gelu, &layer.ffn_out);
        let residual = g.node("Add", &[&h1, &ffn], vec![]);
        x = g.layer_norm(
            &format!("{p}.ffn_ln"),
            &residual,
            &layer.ffn_ln,
            c.layer_norm_eps,
        );
    }
    let boundary = g.head("head.boundary", &x, &w.boundary);
    let types = g.head("head.types", &x, &w.types);
    g.rename_output(&boundary, "boundary");
    g.rename_output(&types, "types");

    let graph = GraphProto {
        name: "ner-edge-encoder".into(),
        node: g.nodes,
        initializer: g.initializers,
        input: [
            value_info("input_ids", DataType::Int64, &[Dim::Batch, Dim::Seq]),
            value_info("attention_mask", DataType::Int64, &[Dim::Batch, Dim::Seq]),
        ]
        .into_iter()
        .chain(
            (c.shape_classes > 0)
                .then(|| value_info(SHAPE_INPUT, DataType::Int64, &[Dim::Batch, Dim::Seq])),
        )
        .collect(),
        output: vec![
            value_info(
                "boundary",
                DataType::Float,
                &[Dim::Batch, Dim::Seq, Dim::Fixed(BOUNDARY_LABELS as i64)],
            ),
            value_info(
                "types",
                DataType::Float,
                &[Dim::Batch, Dim::Seq, Dim::Fixed(c.type_dim as i64)],
            ),
        ],
        ..GraphProto::default()
    };
    Ok(ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "ner-edge-trainer".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        ..ModelProto::default()
    })
}

struct Builder {
    dtype: WeightDtype,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

impl Builder {
    fn node(&mut self, op: &str, inputs: &[&str], attribute: Vec<AttributeProto>) -> String {
        let name = format!("n{}.{}", self.nodes.len(), op);
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![name.clone()],
            name: name.clone(),
            op_type: op.into(),
            attribute,
            ..NodeProto::default()
        });
        name
    }

    fn rename_output(&mut self, from: &str, to: &str) {
        for n in &mut self.nodes {
            for o in &mut n.output {
                if o == from {
                    *o = to.into();
                }
            }
        }
    }

    fn initializer(
        &mut self,
        name: &str,
        dims: &[i64],
        data_type: DataType,
        raw: Vec<u8>,
    ) -> String {
        self.initializers.push(TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: data_type as i32,
            raw_data: raw,
            ..TensorProto::default()
        });
        name.into()
    }

    fn const_f32(&mut self, name: &str, dims: &[i64], data: &[f32]) -> String {
        self.initializer(
            name,
            dims,
            DataType::Float,
            data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }

    fn const_i64(&mut self, name: &str, dims: &[i64], data: &[i64]) -> String {
        self.initializer(
            name,
            dims,
            DataType::Int64,
            data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }

    fn const_f16(&mut self, name: &str, dims: &[i64], data: &[f32]) -> String {
        let raw = data
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect();
        self.initializer(name, dims, DataType::Float16, raw)
    }

    fn const_i8(&mut self, name: &str, dims: &[i64], data: &[i8]) -> String {
        let raw = data.iter().map(|&v| v as u8).collect();
        self.initializer(name, dims, DataType::Int8, raw)
    }

    fn cast_f32(&mut self, x: &str) -> String {
        self.node("Cast", &[x], vec![attr_int("to", DataType::Float as i64)])
    }

    /// Whether the small tables (position table, heads) are stored f16.
    fn is_f16(&self) -> bool {
        self.dtype.small() == WeightDtype::F16
    }

    /// A `[d_in, d_out]` matrix stored as `storage`, as an f32 value.
    fn matrix(&mut self, name: &str, l: &Linear, storage: WeightDtype) -> String {
        let dims = [l.d_in as i64, l.d_out as i64];
        match storage {
            WeightDtype::F32 => self.const_f32(name, &dims, &l.weight),
            WeightDtype::F16 | WeightDtype::Mixed => {
                let stored = self.const_f16(name, &dims, &l.weight);
                self.cast_f32(&stored)
            }
            WeightDtype::Int8 => {
                let (q, scales) = quantize_int8_columns(&l.weight, l.d_in, l.d_out);
                let stored = self.const_i8(name, &dims, &q);
                let scale = self.const_f32(&format!("{name}.scale"), &[l.d_out as i64], &scales);
                let as_f32 = self.cast_f32(&stored);
                self.node("Mul", &[&as_f32, &scale], vec![])
            }
        }
    }

    /// The int8 word-embedding table with per-row scales, looked up with `input_ids`:
    /// `Cast(Gather(table, ids)) * Unsqueeze(Gather(scales, ids), [2])`.
    fn int8_word_lookup(&mut self, name: &str, rows: usize, cols: usize, data: &[f32]) -> String {
        let (q, scales) = quantize_int8_rows(data, rows, cols);
        let table = self.const_i8(name, &[rows as i64, cols as i64], &q);
        let scale = self.const_f32(&format!("{name}.scale"), &[rows as i64], &scales);
        let looked_up = self.node("Gather", &[&table, "input_ids"], vec![attr_int("axis", 0)]);
        let looked_up = self.cast_f32(&looked_up);
        let row_scale = self.node("Gather", &[&scale, "input_ids"], vec![attr_int("axis", 0)]);
        let axis = self.const_i64("const.axis2", &[1], &[2]);
        let row_scale = self.node("Unsqueeze", &[&row_scale, &axis], vec![]);
        self.node("Mul", &[&looked_up, &row_scale], vec![])
    }

    /// An embedding table in the storage dtype, read by `lookup` and cast to f32 after.
    fn table_lookup(
        &mut self,
        name: &str,
        dims: &[i64],
        data: &[f32],
        lookup: impl FnOnce(&mut Builder, &str) -> String,
    ) -> String {
        if self.is_f16() {
            let table = self.const_f16(name, dims, data);
            let rows = lookup(self, &table);
            self.cast_f32(&rows)
        } else {
            let table = self.const_f32(name, dims, data);
            lookup(self, &table)
        }
    }

    /// An encoder linear layer, its weight in the export dtype.
    fn linear(&mut self, name: &str, x: &str, l: &Linear) -> String {
        self.linear_as(name, x, l, self.dtype.encoder_linear(false))
    }

    /// A head: small, so f16 when the export is int8.
    fn head(&mut self, name: &str, x: &str, l: &Linear) -> String {
        self.linear_as(name, x, l, self.dtype.small())
    }

    fn linear_as(&mut self, name: &str, x: &str, l: &Linear, storage: WeightDtype) -> String {
        let weight = self.matrix(&format!("{name}.weight"), l, storage);
        let bias = self.const_f32(&format!("{name}.bias"), &[l.d_out as i64], &l.bias);
        let y = self.node("MatMul", &[x, &weight], vec![]);
        self.node("Add", &[&y, &bias], vec![])
    }

    fn layer_norm(
        &mut self,
        name: &str,
        x: &str,
        ln: &crate::model::LayerNorm,
        eps: f32,
    ) -> String {
        let d = ln.gamma.len() as i64;
        let gamma = self.const_f32(&format!("{name}.gamma"), &[d], &ln.gamma);
        let beta = self.const_f32(&format!("{name}.beta"), &[d], &ln.beta);
        self.node(
            "LayerNormalization",
            &[x, &gamma, &beta],
            vec![attr_int("axis", -1), attr_float("epsilon", eps)],
        )
    }
}

fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i,
        ..AttributeProto::default()
    }
}

fn attr_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: ints.to_vec(),
        ..AttributeProto::default()
    }
}

fn attr_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f,
        ..AttributeProto::default()
    }
}

/// One dimension of a graph input or output.
pub enum Dim {
    /// The symbolic batch size `batch`.
    Batch,
    /// The symbolic sequence length `seq`.
    Seq,
    /// A fixed size.
    Fixed(i64),
}

/// The ONNX declaration of a graph input or output: a tensor of `elem_type` with `dims`.
pub fn value_info(name: &str, elem_type: DataType, dims: &[Dim]) -> ValueInfoProto {
    use tensor_shape_proto::dimension::Value;
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Dim::Batch => Value::DimParam("batch".into()),
                Dim::Seq => Value::DimParam("seq".into()),
                Dim::Fixed(n) => Value::DimValue(*n),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem_type as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..TypeProto::default()
        }),
        ..ValueInfoProto::default()
    }
}
