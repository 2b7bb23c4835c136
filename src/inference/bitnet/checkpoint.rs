//! Reads a BitNet checkpoint in the hub's layout: `model.safetensors` (or shards listed in
//! `model.safetensors.index.json`) with transformers' tensor names. Two forms are accepted and
//! told apart by the projections' dtype: packed (`microsoft/bitnet-b1.58-2B-4T`: u8 weights
//! four to a byte plus a `weight_scale`) and full precision (`…-bf16`: quantized here exactly
//! as the reference quantizes them, see [`TernaryMatrix::quantize`]).

use std::{collections::HashMap, fs::File, path::Path};

use memmap2::Mmap;
use safetensors::{tensor::Metadata, Dtype, SafeTensors};

use super::{
    config::BitnetConfig,
    head::Table,
    ternary::{TernaryError, TernaryMatrix},
    weights::{Layer, Weights},
};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read {path}: {detail}")]
    Io { path: String, detail: String },
    #[error("{path} is not a valid safetensors file: {detail}")]
    Format { path: String, detail: String },
    #[error("tensor `{0}` is missing from the checkpoint")]
    Missing(String),
    #[error("tensor `{name}` has shape {found:?} and dtype {dtype}, expected {expected}")]
    Shape {
        name: String,
        found: Vec<usize>,
        dtype: String,
        expected: String,
    },
    #[error(transparent)]
    Ternary(#[from] TernaryError),
}

/// How the projections are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointKind {
    /// Ternary values packed four to a byte, with one scale per projection.
    Packed,
    /// bf16/f16/f32 weights, quantized at load.
    FullPrecision,
    /// bitnet.cpp's GGUF with I2_S projections.
    I2sGguf,
    /// A GGUF with full-precision projections, quantized at load.
    FullPrecisionGguf,
}

impl CheckpointKind {
    pub fn label(self) -> &'static str {
        match self {
            CheckpointKind::Packed => "packed ternary",
            CheckpointKind::FullPrecision => "full precision, quantized at load",
            CheckpointKind::I2sGguf => "bitnet.cpp GGUF, I2_S",
            CheckpointKind::FullPrecisionGguf => "GGUF, full precision, quantized at load",
        }
    }
}

struct Shard {
    path: String,
    map: Mmap,
    header: usize,
    metadata: Metadata,
}

/// The checkpoint's files, memory-mapped; tensors are copied out as they are converted.
pub struct Checkpoint {
    shards: Vec<Shard>,
    /// Tensor name → shard index.
    index: HashMap<String, usize>,
}

struct View<'a> {
    dtype: Dtype,
    shape: &'a [usize],
    data: &'a [u8],
}

impl Checkpoint {
    pub fn open(dir: &Path) -> Result<Self, CheckpointError> {
        let index_file = dir.join("model.safetensors.index.json");
        let files: Vec<String> = if index_file.is_file() {
            let text = std::fs::read_to_string(&index_file).map_err(|e| io(&index_file, e))?;
            let index: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| CheckpointError::Format {
                    path: index_file.display().to_string(),
                    detail: e.to_string(),
                })?;
            let mut files: Vec<String> = index["weight_map"]
                .as_object()
                .map(|map| {
                    map.values()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            files.sort();
            files.dedup();
            files
        } else {
            vec!["model.safetensors".to_string()]
        };
        let mut shards = Vec::new();
        let mut index = HashMap::new();
        for name in files {
            // Shard names come from a file we read: keep them inside the model folder.
            if name.contains('/') || name.contains("..") {
                return Err(CheckpointError::Format {
                    path: index_file.display().to_string(),
                    detail: format!("shard name `{name}` leaves the model folder"),
                });
            }
            let path = dir.join(&name);
            let file = File::open(&path).map_err(|e| io(&path, e))?;
            // SAFETY: the map is read-only and dropped with the checkpoint; a file changed
            // underneath us while loading is outside what any loader can defend against.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| io(&path, e))?;
            let (header, metadata) =
                SafeTensors::read_metadata(&map).map_err(|e| CheckpointError::Format {
                    path: path.display().to_string(),
                    detail: e.to_string(),
                })?;
            for tensor in metadata.tensors().keys() {
                index.insert(tensor.clone(), shards.len());
            }
            shards.push(Shard {
                path: path.display().to_string(),
                map,
                header,
                metadata,
            });
        }
        Ok(Self { shards, index })
    }

    fn view(&self, name: &str) -> Result<View<'_>, CheckpointError> {
        let shard = &self.shards[*self
            .index
            .get(name)
            .ok_or_else(|| CheckpointError::Missing(name.to_string()))?];
        let info = shard
            .metadata
            .info(name)
            .ok_or_else(|| CheckpointError::Missing(name.to_string()))?;
        let start = 8 + shard.header + info.data_offsets.0;
        let end = 8 + shard.header + info.data_offsets.1;
        let data = shard
            .map
            .get(start..end)
            .ok_or_else(|| CheckpointError::Format {
                path: shard.path.clone(),
                detail: format!("tensor `{name}` lies outside the file"),
            })?;
        Ok(View {
            dtype: info.dtype,
            shape: &info.shape,
            data,
        })
    }

    fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// A float tensor of exactly `shape`, as f32.
    fn floats(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, CheckpointError> {
        let view = self.view(name)?;
        if view.shape != shape {
            return Err(shape_error(name, &view, &format!("{shape:?}")));
        }
        to_f32(name, &view)
    }

    /// A bf16 matrix `[rows, cols]` kept as bf16 bits (the embedding and output head).
    fn bf16_matrix(
        &self,
        name: &str,
        rows: usize,
        cols: usize,
    ) -> Result<Vec<u16>, CheckpointError> {
        let view = self.view(name)?;
        if view.shape != [rows, cols] || view.dtype != Dtype::BF16 {
            return Err(shape_error(name, &view, &format!("[{rows}, {cols}] BF16")));
        }
        Ok(view
            .data
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect())
    }

    fn kind(&self) -> Result<CheckpointKind, CheckpointError> {
        let name = "model.layers.0.self_attn.q_proj.weight";
        Ok(match self.view(name)?.dtype {
            Dtype::U8 | Dtype::I8 => CheckpointKind::Packed,
            _ => CheckpointKind::FullPrecision,
        })
    }

    /// A projection `[rows, cols]` in either form.
    fn projection(
        &self,
        kind: CheckpointKind,
        name: &str,
        rows: usize,
        cols: usize,
    ) -> Result<TernaryMatrix, CheckpointError> {
        let weight = format!("{name}.weight");
        match kind {
            CheckpointKind::Packed => {
                let view = self.view(&weight)?;
                if view.shape != [rows / 4, cols]
                    || !rows.is_multiple_of(4)
                    || view.dtype != Dtype::U8
                {
                    return Err(shape_error(
                        &weight,
                        &view,
                        &format!("[{}, {cols}] U8", rows / 4),
                    ));
                }
                let scale_name = format!("{name}.weight_scale");
                let scale_view = self.view(&scale_name)?;
                let scale = match to_f32(&scale_name, &scale_view)?.as_slice() {
                    [scale] => *scale,
                    _ => return Err(shape_error(&scale_name, &scale_view, "one value")),
                };
                Ok(TernaryMatrix::from_hf_packed(
                    &weight, view.data, rows, cols, scale,
                )?)
            }
            CheckpointKind::FullPrecision
            | CheckpointKind::I2sGguf
            | CheckpointKind::FullPrecisionGguf => {
                let values = self.floats(&weight, &[rows, cols])?;
                Ok(TernaryMatrix::quantize(&weight, rows, cols, &values)?)
            }
        }
    }

    /// Every weight the forward pass needs, checked against `config`.
    pub fn weights(
        &self,
        config: &BitnetConfig,
    ) -> Result<(Weights, CheckpointKind), CheckpointError> {
        let kind = self.kind()?;
        let (hidden, inter, kv) = (
            config.hidden_size,
            config.intermediate_size,
            config.kv_size(),
        );
        let embedding = Table::Bf16(self.bf16_matrix(
            "model.embed_tokens.weight",
            config.vocab_size,
            hidden,
        )?);
        let output = if !config.tie_word_embeddings && self.has("lm_head.weight") {
            Some(Table::Bf16(self.bf16_matrix(
                "lm_head.weight",
                config.vocab_size,
                hidden,
            )?))
        } else {
            None
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let attn = format!("{p}.self_attn");
            let mlp = format!("{p}.mlp");
            let qkv = TernaryMatrix::stack(vec![
                self.projection(kind, &format!("{attn}.q_proj"), hidden, hidden)?,
                self.projection(kind, &format!("{attn}.k_proj"), kv, hidden)?,
                self.projection(kind, &format!("{attn}.v_proj"), kv, hidden)?,
            ])?;
            let gate_up = TernaryMatrix::stack(vec![
                self.projection(kind, &format!("{mlp}.gate_proj"), inter, hidden)?,
                self.projection(kind, &format!("{mlp}.up_proj"), inter, hidden)?,
            ])?;
            layers.push(Layer {
                input_norm: self.floats(&format!("{p}.input_layernorm.weight"), &[hidden])?,
                post_attention_norm: self
                    .floats(&format!("{p}.post_attention_layernorm.weight"), &[hidden])?,
                attn_sub_norm: self.floats(&format!("{attn}.attn_sub_norm.weight"), &[hidden])?,
                ffn_sub_norm: self.floats(&format!("{mlp}.ffn_sub_norm.weight"), &[inter])?,
                qkv,
                o: self.projection(kind, &format!("{attn}.o_proj"), hidden, hidden)?,
                gate_up,
                down: self.projection(kind, &format!("{mlp}.down_proj"), hidden, inter)?,
            });
        }
        let weights = Weights {
            config: config.clone(),
            embedding,
            output,
            final_norm: self.floats("model.norm.weight", &[hidden])?,
            layers,
        };
        Ok((weights, kind))
    }
}

fn io(path: &Path, e: std::io::Error) -> CheckpointError {
    CheckpointError::Io {
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

fn shape_error(name: &str, view: &View<'_>, expected: &str) -> CheckpointError {
    CheckpointError::Shape {
        name: name.to_string(),
        found: view.shape.to_vec(),
        dtype: format!("{:?}", view.dtype),
        expected: expected.to_string(),
    }
}

fn to_f32(name: &str, view: &View<'_>) -> Result<Vec<f32>, CheckpointError> {
    let data = view.data;
    Ok(match view.dtype {
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        _ => return Err(shape_error(name, view, "a float tensor (BF16, F16 or F32)")),
    })
}
