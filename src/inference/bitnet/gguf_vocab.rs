//! The vocabulary of bitnet.cpp's GGUF files, from the `tokenizer.*` metadata: the tokenizer
//! (a byte-level BPE as 2B4T's, or a SentencePiece BPE as the Llama vocabularies of 1bitLLM's
//! reproductions and bitnet.cpp's dummy models), BOS/EOS and the chat template, rebuilt as the
//! tokenizers crate would read them from a tokenizer.json.

use serde_json::{json, Value as Json};
use tokenizers::Tokenizer;

use super::{
    config::BitnetConfig,
    gguf_file::{GgufFile, Value},
    gguf_model::GgufModelError,
    vocab::HubVocab,
};

/// Llama 3's pre-tokenizer split (its tokenizer.json), for `tokenizer.ggml.pre = llama-bpe`.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The tokenizer the metadata describes: a byte-level BPE (`tokenizer.ggml.model = gpt2`) or a
/// SentencePiece BPE (`llama`).
fn tokenizer(file: &GgufFile) -> Result<Tokenizer, GgufModelError> {
    let model = file
        .get("tokenizer.ggml.model")
        .and_then(Value::as_str)
        .unwrap_or("");
    match model {
        "gpt2" => byte_level_tokenizer(file),
        "llama" => sentencepiece_tokenizer(file),
        _ => Err(GgufModelError::Tokenizer(format!(
            "tokenizer.ggml.model is `{model}`; byte-level BPE (`gpt2`) and SentencePiece BPE (`llama`) are read"
        ))),
    }
}

/// llama.cpp's token types (`tokenizer.ggml.token_type`): 1 normal, 2 unknown, 3 control,
/// 4 user-defined, 5 unused, 6 byte.
fn token_types(file: &GgufFile) -> Vec<i64> {
    match file.get("tokenizer.ggml.token_type") {
        Some(Value::List(items)) => items
            .iter()
            .map(|v| match v {
                Value::Int(t) => *t,
                _ => 1,
            })
            .collect(),
        _ => Vec::new(),
    }
}

const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;
const UNKNOWN: i64 = 2;
const NORMAL: i64 = 1;

/// Control and user-defined tokens, matched whole in the text before the model splits it.
fn added_tokens(tokens: &[&str], types: &[i64]) -> Vec<Json> {
    tokens
        .iter()
        .enumerate()
        .filter_map(|(id, token)| {
            let kind = types.get(id).copied().unwrap_or(NORMAL);
            (kind == CONTROL || kind == USER_DEFINED).then(|| {
                json!({"id": id, "content": token, "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": false, "special": kind == CONTROL})
            })
        })
        .collect()
}

fn byte_level_tokenizer(file: &GgufFile) -> Result<Tokenizer, GgufModelError> {
    let tokens = file.strings("tokenizer.ggml.tokens")?;
    let merges = match file.get("tokenizer.ggml.merges") {
        Some(_) => file.strings("tokenizer.ggml.merges")?,
        None => Vec::new(),
    };
    let types = token_types(file);
    let pre = file
        .get("tokenizer.ggml.pre")
        .and_then(Value::as_str)
        .unwrap_or("default");
    build_byte_level(&tokens, &merges, &types, pre)
}

/// A byte-level BPE from its tokens (in id order), merges, llama.cpp token types (3 control,
/// 4 user-defined) and pre-tokenizer name.
fn build_byte_level(
    tokens: &[&str],
    merges: &[&str],
    types: &[i64],
    pre: &str,
) -> Result<Tokenizer, GgufModelError> {
    let vocab: serde_json::Map<String, Json> = tokens
        .iter()
        .enumerate()
        .map(|(id, token)| ((*token).to_string(), json!(id)))
        .collect();
    let added = added_tokens(tokens, types);
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let pre_tokenizer = match pre {
        "llama-bpe" | "llama3" | "llama-v3" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": false},
            byte_level(false),
        ]}),
        "default" | "gpt2" => byte_level(true),
        other => {
            return Err(GgufModelError::Tokenizer(format!(
                "pre-tokenizer `{other}` is not one this engine reproduces (llama-bpe, gpt2)"
            )))
        }
    };
    let document = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": pre != "default" && pre != "gpt2", "vocab": vocab, "merges": merges}
    });
    document
        .to_string()
        .parse::<Tokenizer>()
        .map_err(|e| GgufModelError::Tokenizer(e.to_string()))
}

fn sentencepiece_tokenizer(file: &GgufFile) -> Result<Tokenizer, GgufModelError> {
    let tokens = file.strings("tokenizer.ggml.tokens")?;
    let scores: Vec<f32> = match file.get("tokenizer.ggml.scores") {
        Some(Value::List(items)) => items
            .iter()
            .map(|v| v.as_f64().unwrap_or(0.0) as f32)
            .collect(),
        _ => Vec::new(),
    };
    if scores.len() != tokens.len() {
        return Err(GgufModelError::Tokenizer(format!(
            "tokenizer.ggml.scores has {} entries for {} tokens",
            scores.len(),
            tokens.len()
        )));
    }
    let add_space_prefix = !matches!(
        file.get("tokenizer.ggml.add_space_prefix"),
        Some(Value::Bool(false))
    );
    build_sentencepiece(&tokens, &scores, &token_types(file), add_space_prefix)
}

/// A SentencePiece BPE as transformers converts one (`LlamaConverter`): spaces become `▁`
/// (and one is put before the text, and after each special token, as llama.cpp does), pieces
/// merge in the order of the merged piece's score — which is what SentencePiece's own
/// highest-score-first merging does — and characters outside the vocabulary fall back to their
/// `<0xNN>` byte tokens.
fn build_sentencepiece(
    tokens: &[&str],
    scores: &[f32],
    types: &[i64],
    add_space_prefix: bool,
) -> Result<Tokenizer, GgufModelError> {
    let kind = |id: usize| types.get(id).copied().unwrap_or(NORMAL);
    let ids: std::collections::HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .filter(|&(id, _)| kind(id) == NORMAL)
        .map(|(id, &token)| (token, id))
        .collect();
    // Every way a normal piece splits into two normal pieces, best merged score first.
    let mut merges: Vec<(f32, usize, usize, usize)> = Vec::new();
    for (&piece, &id) in &ids {
        for (split, _) in piece.char_indices().skip(1) {
            if let (Some(&left), Some(&right)) =
                (ids.get(&piece[..split]), ids.get(&piece[split..]))
            {
                merges.push((scores[id], id, left, right));
            }
        }
    }
    merges.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then((a.1, a.2, a.3).cmp(&(b.1, b.2, b.3)))
    });
    let merges: Vec<[&str; 2]> = merges
        .iter()
        .map(|&(_, _, left, right)| [tokens[left], tokens[right]])
        .collect();
    let vocab: serde_json::Map<String, Json> = tokens
        .iter()
        .enumerate()
        .map(|(id, token)| ((*token).to_string(), json!(id)))
        .collect();
    let unknown = (0..tokens.len())
        .find(|&id| kind(id) == UNKNOWN)
        .map(|id| tokens[id]);
    let mut normalizers = Vec::new();
    if add_space_prefix {
        normalizers.push(json!({"type": "Prepend", "prepend": "\u{2581}"}));
    }
    normalizers.push(json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}));
    let mut decoders = vec![
        json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if add_space_prefix {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    let document = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens(tokens, types),
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {"type": "BPE", "dropout": null, "unk_token": unknown, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true,
                  "ignore_merges": false, "vocab": vocab, "merges": merges}
    });
    document
        .to_string()
        .parse::<Tokenizer>()
        .map_err(|e| GgufModelError::Tokenizer(e.to_string()))
}

/// The vocabulary: tokenizer, BOS/EOS and chat template from the metadata.
///
/// # Errors
/// A tokenizer this engine cannot reproduce.
pub fn vocab(file: &GgufFile, config: &BitnetConfig) -> Result<HubVocab, GgufModelError> {
    let tokenizer = tokenizer(file)?;
    let text_of = |key: &str| {
        file.usize(key)
            .ok()
            .and_then(|id| tokenizer.id_to_token(id as u32))
    };
    let mut settings = serde_json::Map::new();
    if let Some(bos) = text_of("tokenizer.ggml.bos_token_id") {
        settings.insert("bos_token".into(), Json::String(bos));
    }
    if let Some(eos) = text_of("tokenizer.ggml.eos_token_id") {
        settings.insert("eos_token".into(), Json::String(eos));
    }
    if let Some(template) = file.get("tokenizer.chat_template").and_then(Value::as_str) {
        settings.insert("chat_template".into(), Json::String(template.to_string()));
    }
    let mut generation = serde_json::Map::new();
    if let Ok(eot) = file.usize("tokenizer.ggml.eot_token_id") {
        generation.insert("eos_token_id".into(), json!(eot));
    }
    Ok(HubVocab::from_parts(
        tokenizer,
        &Json::Object(settings),
        &Json::Object(generation),
        config,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 256 byte-level characters GPT-2's byte encoder maps bytes to, in byte order.
    fn byte_tokens() -> Vec<String> {
        let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let mut shifted = 0u32;
        (0u8..=255)
            .map(|b| {
                if printable(b) {
                    char::from(b).to_string()
                } else {
                    shifted += 1;
                    char::from_u32(255 + shifted).unwrap_or('?').to_string()
                }
            })
            .collect()
    }

    #[test]
    fn llama3_pre_tokenizer_splits_digits_in_threes_and_takes_whole_words() {
        let mut owned = byte_tokens();
        owned.extend(["Hello", "\u{120}world", "123", "45", "<|eot_id|>"].map(String::from));
        let tokens: Vec<&str> = owned.iter().map(String::as_str).collect();
        let mut types = vec![1i64; tokens.len()];
        types[tokens.len() - 1] = 3;
        let tokenizer = build_byte_level(&tokens, &[], &types, "llama-bpe").unwrap();
        let ids = tokenizer
            .encode("Hello world 12345<|eot_id|>", false)
            .unwrap()
            .get_ids()
            .to_vec();
        let space = owned.iter().position(|t| t == "\u{120}").unwrap() as u32;
        // Whole words from the vocabulary (merges ignored), a lone space, 123 then 45, and the
        // special token as one id.
        assert_eq!(ids, vec![256, 257, space, 258, 259, 260]);
        assert!(matches!(
            build_byte_level(&tokens, &[], &types, "qwen2"),
            Err(GgufModelError::Tokenizer(_))
        ));
    }
}
