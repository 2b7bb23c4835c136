//! A NER model's tokenizer: its `tokenizer.json`, or, for BERT checkpoints that ship only the
//! original files (dslim/bert-base-NER), a WordPiece tokenizer built from `vocab.txt` and
//! `tokenizer_config.json` the way transformers' `BertTokenizerFast` converts them.

use std::path::Path;

use tokenizers::{
    models::wordpiece::WordPiece, normalizers::BertNormalizer,
    pre_tokenizers::bert::BertPreTokenizer, Tokenizer,
};

use super::NerError;

pub fn load(dir: &Path) -> Result<Tokenizer, NerError> {
    let load_error = |file: &str, detail: String| NerError::Load {
        path: dir.join(file).display().to_string(),
        detail,
    };
    if dir.join("tokenizer.json").is_file() {
        return Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| load_error("tokenizer.json", e.to_string()));
    }
    from_vocab(dir)
}

/// The BERT tokenizer described by `vocab.txt` and (if present) `tokenizer_config.json`.
pub fn from_vocab(dir: &Path) -> Result<Tokenizer, NerError> {
    let load_error = |file: &str, detail: String| NerError::Load {
        path: dir.join(file).display().to_string(),
        detail,
    };
    let config: serde_json::Value = match std::fs::read_to_string(dir.join("tokenizer_config.json"))
    {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| load_error("tokenizer_config.json", e.to_string()))?,
        Err(_) => serde_json::Value::Null,
    };
    let vocab = dir.join("vocab.txt");
    let vocab = vocab
        .to_str()
        .ok_or_else(|| load_error("vocab.txt", "the path is not UTF-8".into()))?;
    let unknown = config["unk_token"].as_str().unwrap_or("[UNK]").to_string();
    let wordpiece = WordPiece::from_file(vocab)
        .unk_token(unknown)
        .continuing_subword_prefix("##".into())
        .max_input_chars_per_word(100)
        .build()
        .map_err(|e| load_error("vocab.txt", e.to_string()))?;
    let lowercase = config["do_lower_case"].as_bool().unwrap_or(true);
    let mut tokenizer = Tokenizer::new(wordpiece);
    tokenizer
        .with_normalizer(Some(BertNormalizer::new(
            true,
            config["tokenize_chinese_chars"].as_bool().unwrap_or(true),
            config["strip_accents"].as_bool(),
            lowercase,
        )))
        .map_err(|e| load_error("tokenizer_config.json", e.to_string()))?;
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    Ok(tokenizer)
}
