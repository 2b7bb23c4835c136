//! The hub tokenizer of a checkpoint folder: `tokenizer.json` (run by the tokenizers crate),
//! `tokenizer_config.json` (chat template, BOS/EOS strings) and the end-of-turn ids from
//! `config.json` and `generation_config.json`, as transformers' `generate` would stop on them.

use std::{collections::HashSet, path::Path};

use serde_json::Value;
use tokenizers::Tokenizer;

use super::config::{BitnetConfig, TokenIds};
use crate::inference::{byte_level, logits::TokenText, EngineError};

#[derive(Debug, thiserror::Error)]
pub enum VocabError {
    #[error("cannot read {path}: {detail}")]
    Read { path: String, detail: String },
    #[error("cannot tokenize: {0}")]
    Encode(String),
    #[error("the tokenizer produced id {id}, beyond the model's {vocab} embeddings")]
    OutOfRange { id: u32, vocab: usize },
}

/// Token texts that end a turn when the vocabulary has them as special tokens.
const END_OF_TURN_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|eom_id|>",
    "<|im_end|>",
    "<|endoftext|>",
    "</s>",
];

pub struct HubVocab {
    tokenizer: Tokenizer,
    pieces: Vec<Vec<u8>>,
    end_of_turn: HashSet<u32>,
    bos_id: Option<u32>,
    vocab_size: usize,
    pub bos_text: String,
    pub eos_text: String,
    pub chat_template: Option<String>,
}

fn read_json(path: &Path) -> Result<Option<Value>, VocabError> {
    if !path.is_file() {
        return Ok(None);
    }
    let read_error = |detail: String| VocabError::Read {
        path: path.display().to_string(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| read_error(e.to_string()))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| read_error(e.to_string()))
}

/// A token field of tokenizer_config.json: a string or `{"content": ...}`.
fn token_text(value: Option<&Value>) -> Option<String> {
    let value = value?;
    value
        .as_str()
        .or_else(|| value.get("content")?.as_str())
        .map(str::to_string)
}

fn ids_of(value: Option<&Value>) -> Vec<u32> {
    value
        .and_then(|v| serde_json::from_value::<TokenIds>(v.clone()).ok())
        .map(|ids| ids.ids())
        .unwrap_or_default()
}

impl HubVocab {
    pub fn load(dir: &Path, config: &BitnetConfig) -> Result<Self, VocabError> {
        let tokenizer_file = dir.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&tokenizer_file).map_err(|e| VocabError::Read {
            path: tokenizer_file.display().to_string(),
            detail: e.to_string(),
        })?;
        let settings = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Value::Null);
        let generation = read_json(&dir.join("generation_config.json"))?.unwrap_or(Value::Null);
        Ok(Self::from_parts(tokenizer, &settings, &generation, config))
    }

    /// A vocabulary from a tokenizer and the two settings files' contents (`tokenizer_config`:
    /// BOS/EOS strings and the chat template; `generation_config`: the ids that end a reply).
    pub fn from_parts(
        tokenizer: Tokenizer,
        settings: &Value,
        generation: &Value,
        config: &BitnetConfig,
    ) -> Self {
        let byte_level = tokenizer
            .get_decoder()
            .and_then(|d| serde_json::to_string(d).ok())
            .is_some_and(|json| json.contains("ByteLevel"));
        let decoder = byte_level::decoder();
        let added = tokenizer.get_added_tokens_decoder();
        let size = tokenizer.get_vocab_size(true);
        let mut pieces = Vec::with_capacity(size);
        let mut end_of_turn: HashSet<u32> = HashSet::new();
        for id in 0..size as u32 {
            let text = tokenizer.id_to_token(id).unwrap_or_default();
            pieces.push(match added.get(&id) {
                Some(token) if token.special => {
                    if END_OF_TURN_TEXTS.contains(&text.as_str()) {
                        end_of_turn.insert(id);
                    }
                    Vec::new()
                }
                Some(_) => text.as_bytes().to_vec(),
                None if byte_level => byte_level::token_bytes(&text, &decoder),
                None => sentencepiece_bytes(&text),
            });
        }
        end_of_turn.extend(config.eos_token_id.iter().flat_map(TokenIds::ids));
        end_of_turn.extend(ids_of(generation.get("eos_token_id")));
        let eos_text = token_text(settings.get("eos_token")).unwrap_or_default();
        if let Some(id) = tokenizer.token_to_id(&eos_text) {
            end_of_turn.insert(id);
        }
        let bos_text = token_text(settings.get("bos_token"))
            .or_else(|| config.bos_token_id.and_then(|id| tokenizer.id_to_token(id)))
            .unwrap_or_default();
        let bos_id = tokenizer.token_to_id(&bos_text).or(config.bos_token_id);
        let chat_template = match settings.get("chat_template") {
            Some(Value::String(template)) => Some(template.clone()),
            // Several named templates: the default one.
            Some(Value::Array(named)) => named
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
            _ => None,
        };
        Self {
            tokenizer,
            pieces,
            end_of_turn,
            bos_id,
            vocab_size: config.vocab_size,
            bos_text,
            eos_text,
            chat_template,
        }
    }

    /// Ids for a rendered prompt: special tokens written in the text become their ids (the
    /// chat template writes BOS itself); a prompt that does not start with BOS gets one, as
    /// transformers' tokenizer adds it to plain text.
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>, VocabError> {
        let mut ids = self.encode(prompt)?;
        if let Some(bos) = self.bos_id {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }

    /// Ids for plain text, without BOS (perplexity windows add it as their prefix).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, VocabError> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| VocabError::Encode(e.to_string()))?;
        let ids = encoding.get_ids().to_vec();
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(VocabError::OutOfRange {
                id,
                vocab: self.vocab_size,
            });
        }
        Ok(ids)
    }
}

/// SentencePiece pieces: `▁` is a space and `<0xNN>` a raw byte.
fn sentencepiece_bytes(text: &str) -> Vec<u8> {
    if let Some(hex) = text.strip_prefix("<0x").and_then(|t| t.strip_suffix('>')) {
        if let Ok(byte) = u8::from_str_radix(hex, 16) {
            return vec![byte];
        }
    }
    text.replace('\u{2581}', " ").into_bytes()
}

impl TokenText for HubVocab {
    fn ends_reply(&self, token: u32) -> bool {
        self.end_of_turn.contains(&token)
    }

    fn piece(&self, token: u32) -> &[u8] {
        self.pieces.get(token as usize).map_or(&[], Vec::as_slice)
    }

    fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>, EngineError> {
        HubVocab::encode_prompt(self, prompt).map_err(|e| EngineError::Inference(e.to_string()))
    }

    fn encode_text(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        self.encode(text)
            .map_err(|e| EngineError::Inference(e.to_string()))
    }

    fn text_prefix(&self) -> Vec<u32> {
        self.bos_id.into_iter().collect()
    }
}
