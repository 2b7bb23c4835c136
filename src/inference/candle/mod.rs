//! The candle engine: the same GGUF files as llama.cpp, run in pure Rust by our own llama-family
//! forward pass ([`model`]) on candle's tensors and quantized matmuls. The tokenizer comes from
//! the file's own metadata ([`vocab`]), the chat template is applied by the shared minijinja
//! code, and sampling is the shared [`Sampler`], so the two engines differ only in their kernels.

mod model;
mod vocab;
mod widen;

use std::path::Path;

use model::Transformer;

use super::{
    gguf,
    logits::{LogitsEngine, LogitsModel, TokenText},
    EngineError, EngineFacts,
};
pub use vocab::{GgufVocab, VocabError};

/// Tokens per forward pass during prefill; the quantized matmuls tile over these rows.
const PREFILL_BATCH: usize = 512;
/// Positions per forward pass when every position's logits are kept (scoring): bounds the
/// logits buffer (rows × vocabulary × 4 bytes; 39 MB for a 152k vocabulary).
const SCORE_BATCH: usize = 64;

/// Our forward pass, answering in plain vectors and engine errors.
pub struct CandleModel {
    transformer: Transformer,
    last_logits: Vec<f32>,
}

impl LogitsModel for CandleModel {
    fn forward_last(&mut self, tokens: &[u32], position: usize) -> Result<&mut [f32], EngineError> {
        self.last_logits = self
            .transformer
            .forward(tokens, position, false)
            .and_then(|logits| logits.squeeze(0)?.to_vec1::<f32>())
            .map_err(|e| EngineError::Inference(gguf::candle_cause(&e)))?;
        Ok(&mut self.last_logits)
    }

    fn forward_all(
        &mut self,
        tokens: &[u32],
        position: usize,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        self.transformer
            .forward(tokens, position, true)
            .and_then(|logits| logits.to_vec2::<f32>())
            .map_err(|e| EngineError::Inference(gguf::candle_cause(&e)))
    }

    fn prefill_batch(&self) -> usize {
        PREFILL_BATCH
    }

    fn score_batch(&self) -> usize {
        SCORE_BATCH
    }
}

impl TokenText for GgufVocab {
    fn ends_reply(&self, token: u32) -> bool {
        self.is_end_of_generation(token)
    }

    fn piece(&self, token: u32) -> &[u8] {
        GgufVocab::piece(self, token)
    }

    fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>, EngineError> {
        GgufVocab::encode_prompt(self, prompt).map_err(|e| EngineError::Inference(e.to_string()))
    }

    fn encode_text(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        GgufVocab::encode_text(self, text).map_err(|e| EngineError::Inference(e.to_string()))
    }

    fn text_prefix(&self) -> Vec<u32> {
        GgufVocab::text_prefix(self)
    }
}

/// The candle engine: our forward pass and the file's own vocabulary.
pub type CandleEngine = LogitsEngine<CandleModel, GgufVocab>;

/// Threads candle's matmul pool uses: `CANDLE_NUM_THREADS`, which `quantlab` sets from
/// `--threads` at start-up, else candle's own default (physical cores).
fn candle_threads(fallback: u32) -> u32 {
    std::env::var("CANDLE_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(fallback)
}

/// On CPUs with AVX-512 VNNI (or AVX-VNNI) candle 0.11 sends Q8_0 matrix products through
/// repacked kernels that quantize the activations in blocks of 256 (Q8K) where ggml uses 32:
/// there the candle engine's tokens drifted from llama.cpp's (teacher-forced top-1 agreement
/// 89%, perplexity +1.6%). Its AVX2 level keeps ggml's arithmetic, which this engine mirrors.
/// candle reads the switch once, so it is set before the first quantized product (the binary
/// sets it at start-up, see `cli::configure_engine_threads`; this covers library use).
pub fn keep_ggml_activation_blocks() {
    const SWITCH: &str = "MISTRALRS_FORCE_AVX2";
    if std::env::var_os(SWITCH).is_none() {
        std::env::set_var(SWITCH, "1");
    }
}

impl LogitsEngine<CandleModel, GgufVocab> {
    /// Loads a GGUF chat model (llama or qwen2 architecture) and runs one warm-up token.
    ///
    /// # Errors
    /// `EngineError::Load` for a missing, truncated or corrupt file, an architecture or
    /// tokenizer candle cannot run, or a tensor type candle cannot read.
    pub fn load(path: &Path, context_size: u32, threads: u32) -> Result<Self, EngineError> {
        keep_ggml_activation_blocks();
        let load_error = |detail: String| EngineError::Load {
            path: path.display().to_string(),
            detail,
        };
        if !path.is_file() {
            return Err(load_error("file not found".into()));
        }
        let gguf::CheckedGguf {
            content,
            mut reader,
        } = gguf::open(path).map_err(|e| load_error(e.to_string()))?;
        let architecture = gguf::architecture(&content)
            .ok_or_else(|| load_error("the file does not name its architecture".into()))?
            .to_string();
        let trained_context = content
            .metadata
            .get(&format!("{architecture}.context_length"))
            .and_then(|v| v.to_u32().ok())
            .unwrap_or(context_size);
        if !matches!(architecture.as_str(), "llama" | "qwen2") {
            return Err(load_error(format!(
                "architecture `{architecture}` is not supported by the candle engine (it runs llama and qwen2); run this model on llama.cpp"
            )));
        }
        let vocab = GgufVocab::from_gguf(&content).map_err(|e| load_error(e.to_string()))?;
        let chat_template = content
            .metadata
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok())
            .cloned();
        let context_size = context_size.min(trained_context).max(16);
        let transformer =
            Transformer::from_gguf(&content, &mut reader, &architecture, context_size as usize)
                .map_err(|e| {
                    load_error(format!(
                "candle cannot build the model ({}); an unsupported tensor type or a damaged file",
                gguf::candle_cause(&e)
            ))
                })?;
        let model = CandleModel {
            transformer,
            last_logits: Vec::new(),
        };
        let facts = EngineFacts {
            context_size: context_size as usize,
            chat_template,
            bos_token: vocab.bos_text.clone(),
            eos_token: vocab.eos_text.clone(),
            threads: candle_threads(threads),
            detail: String::new(),
        };
        let mut engine = Self::new(model, vocab, facts);
        let warm_up = engine.vocab.bos_id.unwrap_or(0);
        engine.model.forward_last(&[warm_up], 0)?;
        Ok(engine)
    }
}
