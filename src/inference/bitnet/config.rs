//! The checkpoint's `config.json`, as transformers' `BitNetConfig` reads it, checked against
//! what the engine implements (and what the reference model is).

use std::path::Path;

use serde::Deserialize;

use super::lanes;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {detail}")]
    Read { path: String, detail: String },
    #[error("config.json is not a BitNet configuration: {0}")]
    NotBitnet(String),
    #[error("config.json: {0}")]
    Unsupported(String),
}

/// One id or several (transformers accepts both for `eos_token_id`).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    pub fn ids(&self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

/// Newer transformers write rope settings in one table.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RopeParameters {
    pub rope_theta: Option<f32>,
    pub rope_type: Option<String>,
}

/// The activation of the gated feed-forward block: BitNet b1.58 2B4T squares a ReLU; the
/// 2024 reproductions (bitnet.cpp's `bitnet` architecture) use SiLU as Llama does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Relu2,
    Silu,
}

impl Activation {
    /// `out = activation(gate) · up`, element by element, in loops the compiler vectorizes
    /// (SiLU through [`lanes::exp`], not the C library's scalar `expf`).
    pub fn apply_gated(self, gate: &[f32], up: &[f32], out: &mut [f32]) {
        let pairs = out.iter_mut().zip(gate).zip(up);
        match self {
            Activation::Relu2 => {
                for ((o, &g), &u) in pairs {
                    let relu = g.max(0.0);
                    *o = relu * relu * u;
                }
            }
            Activation::Silu => {
                for ((o, &g), &u) in pairs {
                    *o = g / (1.0 + lanes::exp(-g)) * u;
                }
            }
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct BitnetConfig {
    #[serde(default)]
    pub architectures: Vec<String>,
    #[serde(default)]
    pub model_type: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default = "default_kv_heads")]
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub vocab_size: usize,
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f32,
    pub rope_theta: Option<f32>,
    pub rope_parameters: Option<RopeParameters>,
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default = "default_bos")]
    pub bos_token_id: Option<u32>,
    #[serde(default = "default_eos")]
    pub eos_token_id: Option<TokenIds>,
}

// transformers' BitNetConfig defaults.
fn default_positions() -> usize {
    2048
}
fn default_eps() -> f32 {
    1e-5
}
fn default_kv_heads() -> Option<usize> {
    Some(5)
}
fn default_bos() -> Option<u32> {
    Some(128_000)
}
fn default_eos() -> Option<TokenIds> {
    Some(TokenIds::One(128_001))
}
fn default_act() -> String {
    "relu2".into()
}
const DEFAULT_ROPE_THETA: f32 = 500_000.0;

/// Sizes beyond these are not a BitNet we can run on a CPU; refusing early keeps a hostile
/// config from asking for absurd buffers.
const MAX_HIDDEN: usize = 1 << 16;
const MAX_LAYERS: usize = 1024;
const MAX_VOCAB: usize = 1 << 21;

impl BitnetConfig {
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let read_error = |detail: String| ConfigError::Read {
            path: path.display().to_string(),
            detail,
        };
        let text = std::fs::read_to_string(path).map_err(|e| read_error(e.to_string()))?;
        let config: Self = serde_json::from_str(&text).map_err(|e| read_error(e.to_string()))?;
        config.check()?;
        Ok(config)
    }

    pub fn check(&self) -> Result<(), ConfigError> {
        let named_bitnet = self.model_type == "bitnet"
            || self.architectures.iter().any(|a| a == "BitNetForCausalLM");
        if !named_bitnet {
            return Err(ConfigError::NotBitnet(format!(
                "model_type `{}`, architectures {:?}",
                self.model_type, self.architectures
            )));
        }
        let unsupported = |what: String| Err(ConfigError::Unsupported(what));
        if self.activation().is_none() {
            return unsupported(format!(
                "hidden_act `{}` (BitNet b1.58 uses relu2; 1bitLLM's reproductions silu)",
                self.hidden_act
            ));
        }
        if self.attention_bias {
            return unsupported("attention_bias = true".into());
        }
        if let Some(kind) = self.rope_type() {
            if kind != "default" {
                return unsupported(format!("rope scaling `{kind}`"));
            }
        }
        let sizes = [
            self.hidden_size,
            self.intermediate_size,
            self.num_hidden_layers,
            self.num_attention_heads,
            self.kv_heads(),
            self.vocab_size,
        ];
        if sizes.contains(&0) {
            return unsupported("a size is zero".into());
        }
        if self.hidden_size > MAX_HIDDEN
            || self.intermediate_size > MAX_HIDDEN * 4
            || self.num_hidden_layers > MAX_LAYERS
            || self.vocab_size > MAX_VOCAB
        {
            return unsupported("sizes beyond any BitNet this engine runs".into());
        }
        if !self.num_attention_heads.is_multiple_of(self.kv_heads()) {
            return unsupported(format!(
                "{} attention heads do not share {} key/value heads evenly",
                self.num_attention_heads,
                self.kv_heads()
            ));
        }
        if self.head_size() * self.num_attention_heads != self.hidden_size
            || !self.head_size().is_multiple_of(2)
        {
            return unsupported(format!(
                "head_dim {} × {} heads must equal hidden_size {} (the sub-norm spans both) and be even",
                self.head_size(),
                self.num_attention_heads,
                self.hidden_size
            ));
        }
        Ok(())
    }

    fn rope_type(&self) -> Option<String> {
        let scaling = self
            .rope_scaling
            .as_ref()
            .filter(|v| !v.is_null())
            .map(|v| {
                v.get("rope_type")
                    .or_else(|| v.get("type"))
                    .and_then(|t| t.as_str())
                    .unwrap_or("unnamed")
                    .to_string()
            });
        scaling.or_else(|| self.rope_parameters.as_ref()?.rope_type.clone())
    }

    /// The gate's activation; `None` for one the engine does not run.
    pub fn activation(&self) -> Option<Activation> {
        match self.hidden_act.as_str() {
            "relu2" => Some(Activation::Relu2),
            "silu" => Some(Activation::Silu),
            _ => None,
        }
    }

    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_size(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    pub fn kv_size(&self) -> usize {
        self.kv_heads() * self.head_size()
    }

    pub fn theta(&self) -> f32 {
        self.rope_parameters
            .as_ref()
            .and_then(|p| p.rope_theta)
            .or(self.rope_theta)
            .unwrap_or(DEFAULT_ROPE_THETA)
    }

    /// The published BitNet b1.58 2B4T shapes (used by the benchmark).
    pub fn b1_58_2b_4t() -> Self {
        Self {
            architectures: vec!["BitNetForCausalLM".into()],
            model_type: "bitnet".into(),
            hidden_size: 2560,
            intermediate_size: 6912,
            num_hidden_layers: 30,
            num_attention_heads: 20,
            num_key_value_heads: Some(5),
            head_dim: None,
            vocab_size: 128_256,
            max_position_embeddings: 4096,
            rms_norm_eps: 1e-5,
            rope_theta: Some(500_000.0),
            rope_parameters: None,
            rope_scaling: None,
            hidden_act: "relu2".into(),
            tie_word_embeddings: true,
            attention_bias: false,
            bos_token_id: Some(128_000),
            eos_token_id: Some(TokenIds::One(128_001)),
        }
    }
}
