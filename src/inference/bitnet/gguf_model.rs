//! A BitNet model from bitnet.cpp's GGUF (`ggml-model-i2_s.gguf`, as
//! `microsoft/BitNet-b1.58-2B-4T-gguf` publishes it): the configuration from the
//! `bitnet-b1.58.*` metadata, the ternary projections from `I2_S` tensors (or full-precision ones,
//! quantized here as the reference does), and the tokenizer and chat template from the
//! `tokenizer.*` metadata. bitnet.cpp's converter writes q and k in the checkpoint's own row order
//! (it does not permute them as llama's converter does), so they load as they are.

use serde_json::json;

use super::{
    config::BitnetConfig,
    gguf_file::{
        GgufFile, GgufFileError, Value, TYPE_BF16, TYPE_F16, TYPE_F32, TYPE_I2_S, TYPE_Q6_K,
    },
    head::Table,
    q6k,
    ternary::{TernaryError, TernaryMatrix},
    weights::{Layer, Weights},
};

/// The architectures bitnet.cpp writes for BitNet b1.58 models, with their feed-forward
/// activation: `bitnet` is its 2024 graph for 1bitLLM's reproductions (and what its
/// `generate-dummy-bitnet-model.py` writes), gated SiLU as in Llama; the 2B4T graphs square a
/// ReLU. All three rotate halves of each head (NEOX order) on unpermuted q and k.
const ARCHITECTURES: [(&str, &str); 3] = [
    ("bitnet-b1.58", "relu2"),
    ("bitnet-25", "relu2"),
    ("bitnet", "silu"),
];

#[derive(Debug, thiserror::Error)]
pub enum GgufModelError {
    #[error(transparent)]
    File(#[from] GgufFileError),
    #[error("not a BitNet b1.58 GGUF (architecture `{0}`); run it on llama.cpp")]
    NotBitnet(String),
    #[error("the configuration in the metadata is not one this engine runs: {0}")]
    Config(String),
    #[error("tensor `{name}` has shape {dims:?} and type {kind}, expected {expected}")]
    Shape {
        name: String,
        dims: Vec<u64>,
        kind: u32,
        expected: String,
    },
    #[error(transparent)]
    Ternary(#[from] TernaryError),
    #[error("the tokenizer in the metadata cannot be used: {0}")]
    Tokenizer(String),
}

fn metadata_f64(file: &GgufFile, key: &str) -> Option<f64> {
    file.get(key).and_then(Value::as_f64)
}

/// The configuration the metadata describes, in transformers' terms.
///
/// # Errors
/// Not a BitNet file, a size missing, or a configuration the engine does not run.
pub fn config(file: &GgufFile) -> Result<BitnetConfig, GgufModelError> {
    let arch = file
        .get("general.architecture")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let Some(&(_, activation)) = ARCHITECTURES.iter().find(|(name, _)| *name == arch) else {
        return Err(GgufModelError::NotBitnet(arch));
    };
    let key = |name: &str| format!("{arch}.{name}");
    let heads = file.usize(&key("attention.head_count"))?;
    let vocab = match file.usize(&key("vocab_size")) {
        Ok(size) => size,
        Err(_) => file.strings("tokenizer.ggml.tokens")?.len(),
    };
    let value = json!({
        "architectures": ["BitNetForCausalLM"],
        "model_type": "bitnet",
        "hidden_size": file.usize(&key("embedding_length"))?,
        "intermediate_size": file.usize(&key("feed_forward_length"))?,
        "num_hidden_layers": file.usize(&key("block_count"))?,
        "num_attention_heads": heads,
        "num_key_value_heads": file.usize(&key("attention.head_count_kv")).unwrap_or(heads),
        "head_dim": file.usize(&key("attention.key_length")).ok(),
        "vocab_size": vocab,
        "max_position_embeddings": file.usize(&key("context_length")).unwrap_or(4096),
        "rms_norm_eps": metadata_f64(file, &key("attention.layer_norm_rms_epsilon")).unwrap_or(1e-5),
        "rope_theta": metadata_f64(file, &key("rope.freq_base")).unwrap_or(500_000.0),
        "hidden_act": activation,
        "tie_word_embeddings": !file.tensors.contains_key("output.weight"),
        "bos_token_id": file.usize("tokenizer.ggml.bos_token_id").ok(),
        "eos_token_id": file.usize("tokenizer.ggml.eos_token_id").ok(),
    });
    let config: BitnetConfig =
        serde_json::from_value(value).map_err(|e| GgufModelError::Config(e.to_string()))?;
    config
        .check()
        .map_err(|e| GgufModelError::Config(e.to_string()))?;
    Ok(config)
}

fn shape_error(name: &str, dims: &[u64], kind: u32, expected: String) -> GgufModelError {
    GgufModelError::Shape {
        name: name.to_string(),
        dims: dims.to_vec(),
        kind,
        expected,
    }
}

/// Tensor `name`, which must have `dims` (GGUF order).
fn tensor_of<'a>(
    file: &'a GgufFile,
    name: &str,
    dims: &[u64],
) -> Result<(&'a super::gguf_file::TensorInfo, &'a [u8]), GgufModelError> {
    let (info, data) = file.tensor(name)?;
    if info.dims != dims {
        return Err(shape_error(
            name,
            &info.dims,
            info.kind,
            format!("{dims:?}"),
        ));
    }
    Ok((info, data))
}

/// A float tensor of `dims` (GGUF order) as f32.
fn floats(file: &GgufFile, name: &str, dims: &[u64]) -> Result<Vec<f32>, GgufModelError> {
    let (info, data) = tensor_of(file, name, dims)?;
    Ok(match info.kind {
        TYPE_F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        TYPE_F16 => data
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        TYPE_BF16 => data
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        kind => {
            return Err(shape_error(
                name,
                &info.dims,
                kind,
                "F32, F16 or BF16".into(),
            ))
        }
    })
}

/// A `[rows, cols]` table (embedding or head): Q6_K blocks and BF16 as stored, F16 and F32
/// rounded to bf16 (the head runs in bf16, int8 or Q6_K either way).
fn table(file: &GgufFile, name: &str, rows: usize, cols: usize) -> Result<Table, GgufModelError> {
    let dims = [cols as u64, rows as u64];
    let (info, data) = file.tensor(name)?;
    if info.kind == TYPE_Q6_K && info.dims == dims {
        // Whole blocks per row: the file's size was checked for whole blocks in all, and a
        // row of a partial block would shift every row after it.
        if !cols.is_multiple_of(q6k::BLOCK) {
            return Err(shape_error(
                name,
                &info.dims,
                info.kind,
                format!("Q6_K rows of whole {}-value blocks", q6k::BLOCK),
            ));
        }
        return Ok(Table::Q6K(data.to_vec()));
    }
    if info.kind == TYPE_BF16 && info.dims == dims {
        return Ok(Table::Bf16(
            data.chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect(),
        ));
    }
    Ok(Table::Bf16(
        floats(file, name, &dims)?
            .iter()
            .map(|v| half::bf16::from_f32(*v).to_bits())
            .collect(),
    ))
}

/// A projection with `rows` outputs and `cols` inputs: I2_S as stored, or full precision
/// quantized as the reference quantizes a bf16 checkpoint.
fn projection(
    file: &GgufFile,
    name: &str,
    rows: usize,
    cols: usize,
) -> Result<TernaryMatrix, GgufModelError> {
    let dims = [cols as u64, rows as u64];
    let (info, data) = tensor_of(file, name, &dims)?;
    if info.kind == TYPE_I2_S {
        return Ok(TernaryMatrix::from_i2s(name, data, rows, cols)?);
    }
    let values = floats(file, name, &dims)?;
    Ok(TernaryMatrix::quantize(name, rows, cols, &values)?)
}

/// Whether the projections are stored as I2_S.
pub fn is_i2s(file: &GgufFile) -> bool {
    file.tensors
        .get("blk.0.attn_q.weight")
        .is_some_and(|t| t.kind == TYPE_I2_S)
}

/// Every weight the forward pass needs, checked against `config`.
///
/// # Errors
/// A tensor missing, of the wrong shape or type, or damaged.
pub fn weights(file: &GgufFile, config: &BitnetConfig) -> Result<Weights, GgufModelError> {
    let (hidden, inter, kv, vocab) = (
        config.hidden_size,
        config.intermediate_size,
        config.kv_size(),
        config.vocab_size,
    );
    let norm = |name: String, size: usize| floats(file, &name, &[size as u64]);
    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for i in 0..config.num_hidden_layers {
        let p = format!("blk.{i}");
        let qkv = TernaryMatrix::stack(vec![
            projection(file, &format!("{p}.attn_q.weight"), hidden, hidden)?,
            projection(file, &format!("{p}.attn_k.weight"), kv, hidden)?,
            projection(file, &format!("{p}.attn_v.weight"), kv, hidden)?,
        ])?;
        let gate_up = TernaryMatrix::stack(vec![
            projection(file, &format!("{p}.ffn_gate.weight"), inter, hidden)?,
            projection(file, &format!("{p}.ffn_up.weight"), inter, hidden)?,
        ])?;
        layers.push(Layer {
            input_norm: norm(format!("{p}.attn_norm.weight"), hidden)?,
            post_attention_norm: norm(format!("{p}.ffn_norm.weight"), hidden)?,
            attn_sub_norm: norm(format!("{p}.attn_sub_norm.weight"), hidden)?,
            ffn_sub_norm: norm(format!("{p}.ffn_sub_norm.weight"), inter)?,
            qkv,
            o: projection(file, &format!("{p}.attn_output.weight"), hidden, hidden)?,
            gate_up,
            down: projection(file, &format!("{p}.ffn_down.weight"), hidden, inter)?,
        });
    }
    let output = if config.tie_word_embeddings {
        None
    } else {
        Some(table(file, "output.weight", vocab, hidden)?)
    };
    Ok(Weights {
        config: config.clone(),
        embedding: table(file, "token_embd.weight", vocab, hidden)?,
        output,
        final_norm: norm("output_norm.weight".into(), hidden)?,
        layers,
    })
}
