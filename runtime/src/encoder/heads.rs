//! The two linear heads on top of the encoder's last hidden state, read out of the ONNX graph.
//!
//! The encoder graph computes `boundary = h · Wb + bb` (`[hidden, 3]`, `[3]`) and
//! `types = h · Wt + bt` (`[hidden, type_dim]`, `[type_dim]`) from the last layer's output `h`.
//! Head tuning (`ner-edge adapt --tune-heads`) changes only these four tensors, so it needs
//! them as numbers and `h` as an extra graph output ([`super::Encoder::load_exposing_hidden`]).
//!
//! [`Heads::from_onnx`] finds them by walking back from the graph outputs: each output must be
//! produced by `Add(MatMul(h, W), b)` (either operand order of the `Add`), both heads must read
//! the same `h`, `b` must be an initializer, and `W` an initializer, `Cast(initializer)` or
//! `Mul(Cast(initializer), initializer)` (a column-scaled int8 matrix) — the forms
//! `ner-train`'s exporter writes for every weight dtype. Anything else is an
//! [`Error::Encoder`] naming what was found.

use tract_onnx::pb::{GraphProto, NodeProto, TensorProto};

use crate::{Error, Result};

/// Output name of the boundary head in the encoder graph.
pub const BOUNDARY_OUTPUT: &str = "boundary";
/// Output name of the type projection in the encoder graph.
pub const TYPES_OUTPUT: &str = "types";

/// The boundary head and the type projection as f32 numbers (the values the graph computes
/// with, after any dequantisation).
#[derive(Clone, Debug, PartialEq)]
pub struct Heads {
    /// Width of the hidden state `h`.
    pub hidden: usize,
    /// Width of the type vectors.
    pub type_dim: usize,
    /// `[hidden, 3]` row-major.
    pub boundary_weight: Vec<f32>,
    /// `[3]`.
    pub boundary_bias: Vec<f32>,
    /// `[hidden, type_dim]` row-major.
    pub types_weight: Vec<f32>,
    /// `[type_dim]`.
    pub types_bias: Vec<f32>,
}

impl Heads {
    /// Checks that every tensor has the length `hidden` and `type_dim` ask for and holds only
    /// finite numbers; `what` names the source in the error.
    pub fn check(&self, what: &str) -> Result<()> {
        let (h, d) = (self.hidden, self.type_dim);
        let parts: [(&str, &[f32], usize); 4] = [
            ("boundary weight", &self.boundary_weight, h * 3),
            ("boundary bias", &self.boundary_bias, 3),
            ("type projection weight", &self.types_weight, h * d),
            ("type projection bias", &self.types_bias, d),
        ];
        for (name, data, want) in parts {
            if data.len() != want {
                return Err(Error::Bundle(format!(
                    "{what}: {name} has {} values, expected {want} (hidden {h}, type_dim {d})",
                    data.len()
                )));
            }
            if let Some(at) = data.iter().position(|v| !v.is_finite()) {
                return Err(Error::Bundle(format!(
                    "{what}: {name} holds a non-finite value at index {at}"
                )));
            }
        }
        Ok(())
    }

    /// Applies both heads to `rows` hidden vectors (`hidden`: `[rows, self.hidden]`), writing
    /// `[rows, 3]` boundary logits and `[rows, type_dim]` type vectors (both cleared first).
    pub fn apply(&self, hidden: &[f32], boundary: &mut Vec<f32>, types: &mut Vec<f32>) {
        let h = self.hidden;
        let d = self.type_dim;
        let rows = hidden.len().checked_div(h).unwrap_or(0);
        boundary.clear();
        types.clear();
        boundary.reserve(rows * 3);
        types.reserve(rows * d);
        for x in hidden.chunks_exact(h).take(rows) {
            let at = boundary.len();
            boundary.extend_from_slice(&self.boundary_bias);
            affine_accumulate(x, &self.boundary_weight, &mut boundary[at..at + 3]);
            let at = types.len();
            types.extend_from_slice(&self.types_bias);
            affine_accumulate(x, &self.types_weight, &mut types[at..at + d]);
        }
    }

    /// Reads the heads and the name of their shared input out of an ONNX model (see the
    /// module docs for the forms accepted). `onnx` loads the initializers.
    pub fn from_onnx(graph: &GraphProto, onnx: &tract_onnx::Onnx) -> Result<(Heads, String)> {
        let (boundary_input, boundary_weight, boundary_bias, bw_cols) =
            read_head(graph, onnx, BOUNDARY_OUTPUT)?;
        let (types_input, types_weight, types_bias, tw_cols) =
            read_head(graph, onnx, TYPES_OUTPUT)?;
        if boundary_input != types_input {
            return Err(Error::Encoder(format!(
                "the boundary head reads {boundary_input:?} but the type projection reads \
                 {types_input:?}; head tuning needs both on the same hidden state"
            )));
        }
        if bw_cols != 3 {
            return Err(Error::Encoder(format!(
                "the boundary head has {bw_cols} outputs, expected 3 (O, B, I)"
            )));
        }
        let hidden = boundary_weight.len() / 3;
        if types_weight.len() != hidden * tw_cols {
            return Err(Error::Encoder(format!(
                "the type projection weight has {} values, expected hidden {hidden} × {tw_cols}",
                types_weight.len()
            )));
        }
        let heads = Heads {
            hidden,
            type_dim: tw_cols,
            boundary_weight,
            boundary_bias,
            types_weight,
            types_bias,
        };
        heads.check("encoder graph heads")?;
        Ok((heads, boundary_input))
    }
}

/// `out[j] += Σ_i x[i] · w[i, j]` for `w` `[x.len(), out.len()]` row-major.
#[inline]
fn affine_accumulate(x: &[f32], w: &[f32], out: &mut [f32]) {
    let cols = out.len();
    for (&xi, row) in x.iter().zip(w.chunks_exact(cols)) {
        for (o, &wij) in out.iter_mut().zip(row) {
            *o += xi * wij;
        }
    }
}

fn producer<'g>(graph: &'g GraphProto, value: &str) -> Option<&'g NodeProto> {
    graph
        .node
        .iter()
        .find(|n| n.output.iter().any(|o| o == value))
}

fn initializer<'g>(graph: &'g GraphProto, name: &str) -> Option<&'g TensorProto> {
    graph.initializer.iter().find(|t| t.name == name)
}

/// Reads one head: `(input name, weight [rows × cols] row-major, bias [cols], cols)`.
fn read_head(
    graph: &GraphProto,
    onnx: &tract_onnx::Onnx,
    output: &str,
) -> Result<(String, Vec<f32>, Vec<f32>, usize)> {
    let shape_err = |msg: String| Error::Encoder(format!("head {output:?}: {msg}"));
    let add = producer(graph, output)
        .ok_or_else(|| shape_err("no node produces this graph output".into()))?;
    if add.op_type != "Add" || add.input.len() != 2 {
        return Err(shape_err(format!(
            "produced by {} with {} inputs, expected Add(MatMul(h, W), b)",
            add.op_type,
            add.input.len()
        )));
    }
    let (matmul_out, bias_name) = match (
        initializer(graph, &add.input[0]),
        initializer(graph, &add.input[1]),
    ) {
        (None, Some(_)) => (&add.input[0], &add.input[1]),
        (Some(_), None) => (&add.input[1], &add.input[0]),
        _ => {
            return Err(shape_err(
                "the Add does not have exactly one initializer operand (the bias)".into(),
            ))
        }
    };
    let matmul = producer(graph, matmul_out)
        .filter(|n| n.op_type == "MatMul" && n.input.len() == 2)
        .ok_or_else(|| shape_err(format!("{matmul_out:?} is not the output of a MatMul")))?;
    let (weight, shape) = constant(graph, onnx, &matmul.input[1], 0)?;
    if shape.len() != 2 {
        return Err(shape_err(format!(
            "the weight has shape {shape:?}, expected [hidden, outputs]"
        )));
    }
    let (bias, bias_shape) = constant(graph, onnx, bias_name, 0)?;
    if bias_shape != [shape[1]] {
        return Err(shape_err(format!(
            "the bias has shape {bias_shape:?}, expected [{}]",
            shape[1]
        )));
    }
    Ok((matmul.input[0].clone(), weight, bias, shape[1]))
}

/// Evaluates a constant weight expression: an initializer, `Cast` of one, or `Mul` of two
/// (the second broadcast along the last axis). Returns the f32 values and the shape.
fn constant(
    graph: &GraphProto,
    onnx: &tract_onnx::Onnx,
    name: &str,
    depth: usize,
) -> Result<(Vec<f32>, Vec<usize>)> {
    let err = |msg: String| Error::Encoder(format!("head weight {name:?}: {msg}"));
    if depth > 4 {
        return Err(err("constant expression nested too deeply".into()));
    }
    if let Some(t) = initializer(graph, name) {
        let tensor = tract_onnx::tensor::load_tensor(&*onnx.provider, t, None)
            .map_err(|e| err(format!("cannot load initializer: {e:#}")))?;
        let shape = tensor.shape().to_vec();
        let values = tensor
            .cast_to::<f32>()
            .and_then(|t| {
                t.try_as_plain_ram()
                    .and_then(|v| v.as_slice::<f32>().map(<[f32]>::to_vec))
            })
            .map_err(|e| err(format!("cannot read as f32: {e:#}")))?;
        return Ok((values, shape));
    }
    let node = producer(graph, name).ok_or_else(|| err("neither initializer nor node".into()))?;
    match (node.op_type.as_str(), node.input.as_slice()) {
        ("Cast", [x]) => constant(graph, onnx, x, depth + 1),
        ("Mul", [a, b]) => {
            let (mut values, shape) = constant(graph, onnx, a, depth + 1)?;
            let (scale, scale_shape) = constant(graph, onnx, b, depth + 1)?;
            let cols = shape.last().copied().unwrap_or(0);
            if scale_shape != [cols] || cols == 0 {
                return Err(err(format!(
                    "Mul of {shape:?} by {scale_shape:?}: expected a per-column scale"
                )));
            }
            for row in values.chunks_exact_mut(cols) {
                for (v, s) in row.iter_mut().zip(&scale) {
                    *v *= s;
                }
            }
            Ok((values, shape))
        }
        (op, inputs) => Err(err(format!(
            "produced by {op} with {} inputs; expected an initializer, Cast or Mul",
            inputs.len()
        ))),
    }
}
