//! The tokenizer of a GGUF file, built from its metadata alone (no tokenizer.json needed), and
//! the per-token facts generation needs: the bytes each token stands for, which tokens end a
//! turn, and the BOS/EOS strings for chat templates. Mirrors what llama.cpp does with the same
//! metadata, so both engines feed a model the same token ids (a test holds them to it).

use std::collections::HashSet;

use crate::inference::byte_level;
use candle_core::quantized::{gguf_file, tokenizer::TokenizerFromGguf};
use tokenizers::{
    pre_tokenizers::{byte_level::ByteLevel, digits::Digits, sequence::Sequence},
    Tokenizer,
};

#[derive(Debug, thiserror::Error)]
pub enum VocabError {
    #[error("the file has no `{0}` metadata, so its tokenizer cannot be built")]
    Missing(&'static str),
    #[error("tokenizer type `{0}` is not supported by the candle engine yet (only byte-level BPE, `gpt2`); run this model on llama.cpp")]
    UnsupportedModel(String),
    #[error("cannot build the tokenizer: {0}")]
    Build(String),
}

/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_CONTROL: u32 = 3;
const TOKEN_TYPE_USER_DEFINED: u32 = 4;

/// Token texts llama.cpp also treats as end of generation when the model marks them special.
const END_OF_TURN_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
];

pub struct GgufVocab {
    tokenizer: Tokenizer,
    /// The raw bytes of each token (empty for control tokens, which print nothing).
    pieces: Vec<Vec<u8>>,
    end_of_generation: HashSet<u32>,
    pub bos_id: Option<u32>,
    pub bos_text: String,
    pub eos_text: String,
    add_bos: bool,
}

fn metadata_u32(ct: &gguf_file::Content, key: &str) -> Option<u32> {
    ct.metadata.get(key).and_then(|v| match v {
        gguf_file::Value::U32(v) => Some(*v),
        gguf_file::Value::I32(v) => u32::try_from(*v).ok(),
        gguf_file::Value::U64(v) => u32::try_from(*v).ok(),
        gguf_file::Value::I64(v) => u32::try_from(*v).ok(),
        _ => None,
    })
}

fn metadata_str<'a>(ct: &'a gguf_file::Content, key: &str) -> Option<&'a str> {
    ct.metadata
        .get(key)
        .and_then(|v| v.to_string().ok())
        .map(String::as_str)
}

impl GgufVocab {
    pub fn from_gguf(ct: &gguf_file::Content) -> Result<Self, VocabError> {
        let model = metadata_str(ct, "tokenizer.ggml.model")
            .ok_or(VocabError::Missing("tokenizer.ggml.model"))?;
        if model != "gpt2" {
            return Err(VocabError::UnsupportedModel(model.to_string()));
        }
        let mut tokenizer =
            Tokenizer::from_gguf(ct).map_err(|e| VocabError::Build(e.to_string()))?;
        // candle's GPT-2 fallback adds a prefix space, which llama.cpp never does; SmolLM2's
        // `smollm` splitting also cuts numbers into single digits first.
        let pre = metadata_str(ct, "tokenizer.ggml.pre").unwrap_or("gpt2");
        if pre != "qwen2" {
            let byte_level = ByteLevel::new(false, true, true);
            if pre == "smollm" {
                tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
                    Digits::new(true).into(),
                    byte_level.into(),
                ])));
            } else {
                tokenizer.with_pre_tokenizer(Some(byte_level));
            }
        }
        // The NFC step candle adds for qwen2 is not in llama.cpp; drop it so ids match.
        tokenizer
            .with_normalizer(None::<tokenizers::NormalizerWrapper>)
            .map_err(|e| VocabError::Build(e.to_string()))?;

        let tokens = ct
            .metadata
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.to_vec().ok())
            .ok_or(VocabError::Missing("tokenizer.ggml.tokens"))?;
        let types: Vec<u32> = ct
            .metadata
            .get("tokenizer.ggml.token_type")
            .and_then(|v| v.to_vec().ok())
            .map(|types| {
                types
                    .iter()
                    .map(|t| match t {
                        gguf_file::Value::I32(t) => *t as u32,
                        gguf_file::Value::U32(t) => *t,
                        _ => 1,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let decoder = byte_level::decoder();
        let mut pieces = Vec::with_capacity(tokens.len());
        let mut end_of_generation = HashSet::new();
        for (id, token) in tokens.iter().enumerate() {
            let text = token.to_string().map(String::as_str).unwrap_or("");
            let kind = types.get(id).copied().unwrap_or(1);
            let special = kind == TOKEN_TYPE_CONTROL || kind == TOKEN_TYPE_USER_DEFINED;
            if special && END_OF_TURN_TEXTS.contains(&text) {
                end_of_generation.insert(id as u32);
            }
            pieces.push(match kind {
                TOKEN_TYPE_CONTROL => Vec::new(),
                TOKEN_TYPE_USER_DEFINED => text.as_bytes().to_vec(),
                _ => byte_level::token_bytes(text, &decoder),
            });
        }
        for key in [
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.eot_token_id",
            "tokenizer.ggml.eom_token_id",
        ] {
            if let Some(id) = metadata_u32(ct, key) {
                end_of_generation.insert(id);
            }
        }
        let text_of = |key: &str| {
            metadata_u32(ct, key)
                .and_then(|id| tokens.get(id as usize))
                .and_then(|t| t.to_string().ok())
                .cloned()
                .unwrap_or_default()
        };
        let add_bos = ct
            .metadata
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(false);
        Ok(Self {
            tokenizer,
            pieces,
            end_of_generation,
            bos_id: metadata_u32(ct, "tokenizer.ggml.bos_token_id"),
            bos_text: text_of("tokenizer.ggml.bos_token_id"),
            eos_text: text_of("tokenizer.ggml.eos_token_id"),
            add_bos,
        })
    }

    /// Tokens for a rendered chat prompt: special tokens written in the text become their ids,
    /// and BOS is added when the model asks for it (once, even if the template wrote one).
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>, VocabError> {
        let mut ids = self.encode(prompt)?;
        if let Some(bos) = self.bos_id {
            if self.add_bos && ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
            if ids.len() >= 2 && ids[0] == bos && ids[1] == bos {
                ids.remove(0);
            }
        }
        Ok(ids)
    }

    /// Tokens for plain text (perplexity): no BOS added here. Unlike llama.cpp's plain mode,
    /// a special token's exact text (such as `<|im_end|>`) still becomes that token; prose
    /// never contains one.
    pub fn encode_text(&self, text: &str) -> Result<Vec<u32>, VocabError> {
        self.encode(text)
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, VocabError> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| VocabError::Build(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The BOS a plain-text window starts with, when the model uses one.
    pub fn text_prefix(&self) -> Vec<u32> {
        match self.bos_id {
            Some(bos) if self.add_bos => vec![bos],
            _ => Vec::new(),
        }
    }

    pub fn piece(&self, id: u32) -> &[u8] {
        self.pieces.get(id as usize).map_or(&[], Vec::as_slice)
    }

    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.end_of_generation.contains(&id)
    }
}
