//! Import of `sentence-transformers/all-MiniLM-L6-v2` (any HF `BertModel` checkpoint with
//! absolute positions and GELU, stored as `config.json` + `model.safetensors`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use serde::Deserialize;

use super::safetensors::SafeTensors;
use crate::model::rng::SplitMix64;
use crate::model::{random_heads, EncoderConfig, LayerNorm, LayerWeights, Linear, ModelWeights};

/// Directory name of the MiniLM encoder inside the ner-edge cache.
pub const MINILM_CACHE_NAME: &str = "minilm-l6-v2";

/// Where the MiniLM encoder is expected: `$NER_EDGE_MINILM_DIR`, else
/// `$NER_EDGE_CACHE/minilm-l6-v2`, else `$HOME/.cache/ner-edge/minilm-l6-v2`. The directory is
/// not checked for existence; `None` only when none of the variables is set.
pub fn default_minilm_dir() -> Option<PathBuf> {
    resolve_minilm_dir(|name| std::env::var_os(name))
}

/// [`default_minilm_dir`] with the environment read through `var`; empty values count as unset.
pub fn resolve_minilm_dir(var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let var = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var("NER_EDGE_MINILM_DIR") {
        return Some(dir);
    }
    if let Some(cache) = var("NER_EDGE_CACHE") {
        return Some(cache.join(MINILM_CACHE_NAME));
    }
    var("HOME").map(|home| home.join(".cache").join("ner-edge").join(MINILM_CACHE_NAME))
}

#[derive(Deserialize)]
struct HfBertConfig {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default = "default_position_type")]
    position_embedding_type: String,
    #[serde(default = "default_type_vocab")]
    type_vocab_size: usize,
}

fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}
fn default_position_type() -> String {
    "absolute".into()
}
fn default_type_vocab() -> usize {
    2
}

/// Reads `config.json` and `model.safetensors` from `model_dir` and converts them to
/// [`ModelWeights`] (linear weights transposed to `[in, out]`, token-type row 0 kept).
///
/// The boundary and type heads (`type_dim` wide) are random, drawn from `seed`. Tensors may carry
/// a `bert.` prefix. Every tensor must be F32 with the shape the config implies; the int64
/// `embeddings.position_ids` buffer is ignored.
pub fn import_minilm(model_dir: &Path, type_dim: usize, seed: u64) -> Result<ModelWeights> {
    let config_path = model_dir.join("config.json");
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let hf: HfBertConfig = serde_json::from_str(&text)
        .with_context(|| format!("parsing {}", config_path.display()))?;
    ensure!(
        hf.hidden_act == "gelu",
        "{}: hidden_act `{}` is not supported (only exact `gelu`)",
        config_path.display(),
        hf.hidden_act
    );
    ensure!(
        hf.position_embedding_type == "absolute",
        "{}: position_embedding_type `{}` is not supported (only `absolute`)",
        config_path.display(),
        hf.position_embedding_type
    );
    ensure!(
        hf.type_vocab_size >= 1,
        "{}: type_vocab_size is 0",
        config_path.display()
    );
    let config = EncoderConfig {
        vocab_size: hf.vocab_size,
        hidden: hf.hidden_size,
        layers: hf.num_hidden_layers,
        heads: hf.num_attention_heads,
        intermediate: hf.intermediate_size,
        max_positions: hf.max_position_embeddings,
        type_dim,
        layer_norm_eps: hf.layer_norm_eps as f32,
        shape_classes: 0,
    };
    config
        .validate()
        .with_context(|| format!("{}", config_path.display()))?;

    let weights_path = model_dir.join("model.safetensors");
    let st = SafeTensors::read(&weights_path)?;
    let prefix = if st.info("bert.embeddings.word_embeddings.weight").is_some() {
        "bert."
    } else {
        ""
    };
    let d = config.hidden;
    let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
        st.f32_tensor(&format!("{prefix}{name}"), shape)
            .with_context(|| format!("importing {}", weights_path.display()))
    };
    let linear = |name: &str, d_in: usize, d_out: usize| -> Result<Linear> {
        let torch = get(&format!("{name}.weight"), &[d_out, d_in])?;
        let mut weight = vec![0.0; d_in * d_out];
        for o in 0..d_out {
            for i in 0..d_in {
                weight[i * d_out + o] = torch[o * d_in + i];
            }
        }
        Ok(Linear {
            d_in,
            d_out,
            weight,
            bias: get(&format!("{name}.bias"), &[d_out])?,
        })
    };
    let layer_norm = |name: &str| -> Result<LayerNorm> {
        Ok(LayerNorm {
            gamma: get(&format!("{name}.weight"), &[d])?,
            beta: get(&format!("{name}.bias"), &[d])?,
        })
    };

    let word_embeddings = get("embeddings.word_embeddings.weight", &[config.vocab_size, d])?;
    let position_embeddings = get(
        "embeddings.position_embeddings.weight",
        &[config.max_positions, d],
    )?;
    let mut token_type_embedding = get(
        "embeddings.token_type_embeddings.weight",
        &[hf.type_vocab_size, d],
    )?;
    token_type_embedding.truncate(d);
    let embeddings_ln = layer_norm("embeddings.LayerNorm")?;
    let mut layers = Vec::with_capacity(config.layers);
    for l in 0..config.layers {
        let p = format!("encoder.layer.{l}");
        layers.push(LayerWeights {
            query: linear(&format!("{p}.attention.self.query"), d, d)?,
            key: linear(&format!("{p}.attention.self.key"), d, d)?,
            value: linear(&format!("{p}.attention.self.value"), d, d)?,
            attn_output: linear(&format!("{p}.attention.output.dense"), d, d)?,
            attn_ln: layer_norm(&format!("{p}.attention.output.LayerNorm"))?,
            ffn_in: linear(&format!("{p}.intermediate.dense"), d, config.intermediate)?,
            ffn_out: linear(&format!("{p}.output.dense"), config.intermediate, d)?,
            ffn_ln: layer_norm(&format!("{p}.output.LayerNorm"))?,
        });
    }
    let (boundary, types) = random_heads(&config, &mut SplitMix64::new(seed));
    let weights = ModelWeights {
        config,
        word_embeddings,
        position_embeddings,
        token_type_embedding,
        embeddings_ln,
        layers,
        boundary,
        types,
        shape_embeddings: Vec::new(),
    };
    weights.check()?;
    Ok(weights)
}

/// Writes into `out` (created if missing) a copy of the encoder directory `model_dir` that
/// [`import_minilm`] reads as it reads the original, with the weights stored as f16:
/// `config.json` and `vocab.txt` copied, `model.safetensors` rewritten by
/// [`SafeTensors::to_f16_bytes`]. Half the bytes (about 45 MB for all-MiniLM-L6-v2), for
/// machines the f32 file cannot travel to; the weights read back differ from the original by
/// f16 rounding (relative error at most 2⁻¹¹). Returns the size of the new weights file.
pub fn write_f16_copy(model_dir: &Path, out: &Path) -> Result<u64> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for name in ["config.json", "vocab.txt"] {
        let (from, to) = (model_dir.join(name), out.join(name));
        std::fs::copy(&from, &to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    let weights = model_dir.join("model.safetensors");
    let half = SafeTensors::read(&weights)?
        .to_f16_bytes()
        .with_context(|| format!("converting {} to f16", weights.display()))?;
    let target = out.join("model.safetensors");
    std::fs::write(&target, &half).with_context(|| format!("writing {}", target.display()))?;
    Ok(half.len() as u64)
}
