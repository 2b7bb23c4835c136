//! The llama.cpp engine (llama-cpp-2): GGUF loaded with mmap, one context reused across requests
//! with several sequence slots, each with its own stream of the KV cache. Every forward pass
//! decodes the next token of each running reply plus a chunk of the prompts being read
//! (continuous batching: `batch.rs` here, scheduled by `inference::batch`), and a new prompt
//! reuses the KV of the slot that already holds its longest prefix (prompt cache); `sampling.rs`
//! builds the sampler chain. Nothing of llama-cpp-2's API leaks out of this module: the rest of the app
//! sees a `ChatEngine` and a `BatchEngine`.

use std::{num::NonZeroU32, path::Path, sync::OnceLock, time::Instant};

use llama_cpp_2::{
    context::{params::LlamaContextParams, LlamaContext},
    llama_backend::LlamaBackend,
    llama_batch::LlamaBatch,
    model::{params::LlamaModelParams, LlamaModel},
    sampling::LlamaSampler,
    token::LlamaToken,
};

mod batch;
pub mod inspect;
pub mod quantize;
mod sampling;

use super::{
    batch::{generate_one, BatchEngine},
    sampler::argmax,
    score::{token_nll, ScoreWindow, TextScore},
    ChatEngine, EngineError, EngineFacts, GenerationStats, ResolvedSampling, TokenSink,
};

/// Tokens evaluated per forward pass during prefill (llama.cpp's default).
const PREFILL_BATCH: usize = 512;
/// Prompt tokens read per forward pass while other replies are decoding: a long prompt is taken
/// in chunks this size so the others keep getting tokens between them.
const PREFILL_CHUNK_IN_COMPANY: usize = 128;
/// Tokens per forward pass when scoring. Every scored position needs its logits kept, and
/// llama.cpp keeps the output buffer at its high-water mark (rows × vocabulary × 4 bytes), so a
/// small batch bounds that memory (39 MB for a 152k vocabulary).
const SCORE_BATCH: usize = 64;
/// How many recent tokens the repeat penalty looks at (llama.cpp's default).
const PENALTY_LAST_N: i32 = 64;

/// llama.cpp's global state may be initialised once per process; this proves it was.
fn backend() -> Result<&'static LlamaBackend, EngineError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            // llama.cpp logs every tensor at load; route it to `tracing` (shown at debug level).
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| EngineError::Load {
            path: String::new(),
            detail: format!("llama.cpp backend: {e}"),
        })
}

type Context<'model> = LlamaContext<'model>;

self_cell::self_cell!(
    /// The model and the context that borrows it, kept together for the worker's lifetime so
    /// each request reuses the allocated KV cache instead of rebuilding it.
    struct ModelWithContext {
        owner: LlamaModel,
        #[not_covariant]
        dependent: Context,
    }
);

/// What a sequence slot is doing.
enum SlotWork {
    Idle,
    /// Reading the prompt: these tokens are still to be evaluated.
    Prefill(Vec<LlamaToken>),
    /// Generating: this sampled token is fed in the next pass.
    Decode(LlamaToken),
}

/// One sequence of the shared KV cache.
struct Slot {
    /// The tokens whose KV this sequence holds, in position order.
    history: Vec<LlamaToken>,
    work: SlotWork,
    sampler: Option<LlamaSampler>,
    /// Structured output: the grammar every sampled token must follow. Kept apart from the
    /// sampler chain, which also sees the prompt's tokens (for the repeat penalty).
    grammar: Option<LlamaSampler>,
    /// The running reply's settings, when it asks for log-probabilities: how many alternatives,
    /// and what the sampler does to the logits before drawing (temperature, repeat penalty).
    logprobs: Option<(usize, f32, f32)>,
}

impl Slot {
    /// The tokens the repeat penalty looks at once this pass has fed `fed` tokens of the slot's
    /// work: the last 64 of its history and them.
    fn penalty_window(&self, fed: usize) -> Vec<u32> {
        let fed_tokens: &[LlamaToken] = match &self.work {
            SlotWork::Decode(token) => std::slice::from_ref(token),
            SlotWork::Prefill(pending) => &pending[..fed.min(pending.len())],
            SlotWork::Idle => &[],
        };
        let mut window: Vec<u32> = self
            .history
            .iter()
            .chain(fed_tokens)
            .rev()
            .take(PENALTY_LAST_N as usize)
            .map(|t| t.0 as u32)
            .collect();
        window.reverse();
        window
    }
}

pub struct LlamaCppEngine {
    inner: ModelWithContext,
    facts: EngineFacts,
    slots: Vec<Slot>,
    /// Slots in the order they were admitted: prompts are read first come, first served.
    admitted: Vec<usize>,
    batch: LlamaBatch<'static>,
}

impl LlamaCppEngine {
    /// Loads a GGUF file and runs one warm-up token so the first request pays no page faults.
    ///
    /// # Errors
    /// `EngineError::Load` when the file is missing or not a model llama.cpp can read, or the
    /// context cannot be allocated.
    pub fn load(path: &Path, context_size: u32, threads: u32) -> Result<Self, EngineError> {
        Self::load_with_slots(path, context_size, threads, 1)
    }

    /// Loads a GGUF file with `slots` sequences that can run together, each with a context of
    /// `context_size` tokens (the KV cache holds `slots × context_size` tokens).
    ///
    /// # Errors
    /// As [`LlamaCppEngine::load`].
    pub fn load_with_slots(
        path: &Path,
        context_size: u32,
        threads: u32,
        slots: usize,
    ) -> Result<Self, EngineError> {
        let slots = slots.clamp(1, 64);
        let backend = backend()?;
        let load_error = |detail: String| EngineError::Load {
            path: path.display().to_string(),
            detail,
        };
        if !path.is_file() {
            return Err(load_error("file not found".into()));
        }
        // llama.cpp's own errors for a damaged file are terse; ours say what is wrong. Tensor
        // types our reader does not know (the IQ quants) are llama.cpp's to judge.
        match super::gguf::open(path) {
            Ok(_) | Err(super::gguf::GgufError::UnsupportedType { .. }) => {}
            Err(e) => return Err(load_error(e.to_string())),
        }
        let model = LlamaModel::load_from_file(backend, path, &LlamaModelParams::default())
            .map_err(|e| load_error(format!("llama.cpp rejected the file ({e})")))?;
        let context_size = context_size.min(model.n_ctx_train()).max(16);
        let vocab = model.vocab();
        let piece = |t: LlamaToken| {
            String::from_utf8_lossy(&vocab.token_to_piece(t, true, None)).into_owned()
        };
        let facts = EngineFacts {
            context_size: context_size as usize,
            chat_template: model
                .chat_template(None)
                .ok()
                .and_then(|t| t.to_string().ok()),
            bos_token: piece(vocab.bos()),
            eos_token: piece(vocab.eos()),
            threads,
            detail: String::new(),
        };
        // One KV stream per slot, each as long as the context, so a reply never fails for room
        // another slot took. A unified cell pool was ~10% faster in company but interleaves the
        // sequences' cells, which changes float summation order in attention: the same seed
        // then gave another text in company than alone.
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(context_size * slots as u32))
            .with_n_seq_max(slots as u32)
            .with_kv_unified(false)
            .with_n_batch(PREFILL_BATCH as u32)
            .with_n_ubatch(PREFILL_BATCH as u32)
            .with_n_threads(threads as i32)
            .with_n_threads_batch(threads as i32);
        let inner = ModelWithContext::try_new(model, |model| model.new_context(backend, params))
            .map_err(|e| {
                load_error(format!(
                    "cannot create a context of {context_size} tokens: {e}"
                ))
            })?;
        let mut engine = Self {
            inner,
            facts,
            slots: (0..slots)
                .map(|_| Slot {
                    history: Vec::new(),
                    work: SlotWork::Idle,
                    sampler: None,
                    grammar: None,
                    logprobs: None,
                })
                .collect(),
            admitted: Vec::new(),
            batch: LlamaBatch::new(PREFILL_BATCH, 1),
        };
        engine.warm_up()?;
        Ok(engine)
    }

    fn warm_up(&mut self) -> Result<(), EngineError> {
        self.inner.with_dependent_mut(|model, ctx| {
            let bos = model.vocab().bos();
            let mut batch = LlamaBatch::new(1, 1);
            batch.add(bos, 0, &[0], true).map_err(inference_error)?;
            ctx.decode(&mut batch).map_err(inference_error)?;
            ctx.clear_kv_cache();
            Ok(())
        })
    }

    /// The whole KV cache was cleared (scoring uses it too): no slot holds a prefix any more.
    fn forget_cached_prompts(&mut self) {
        for slot in &mut self.slots {
            slot.history.clear();
        }
    }

    /// Token ids for a rendered prompt, exactly as generation would feed them.
    pub fn tokenize_prompt(&self, prompt: &str) -> Vec<u32> {
        Self::tokenize(self.inner.borrow_owner(), prompt)
            .into_iter()
            .map(|t| t.0 as u32)
            .collect()
    }

    /// Teacher forcing: element i is the model's most likely next token after `tokens[..=i]`.
    /// Used to hold other engines on the same file to llama.cpp.
    pub fn top1_predictions(&mut self, tokens: &[u32]) -> Result<Vec<u32>, EngineError> {
        if tokens.len() >= self.facts.context_size {
            return Err(EngineError::PromptTooLong {
                prompt_tokens: tokens.len(),
                context: self.facts.context_size,
            });
        }
        let predictions = self.inner.with_dependent_mut(|_, ctx| {
            ctx.clear_kv_cache_seq(None, None, None)
                .map_err(inference_error)?;
            let mut predictions = Vec::with_capacity(tokens.len());
            let mut batch = LlamaBatch::new(SCORE_BATCH, 1);
            for (part_index, part) in tokens.chunks(SCORE_BATCH).enumerate() {
                batch.clear();
                for (i, token) in part.iter().enumerate() {
                    let position = (part_index * SCORE_BATCH + i) as i32;
                    batch
                        .add(LlamaToken(*token as i32), position, &[0], true)
                        .map_err(inference_error)?;
                }
                ctx.decode(&mut batch).map_err(inference_error)?;
                for i in 0..part.len() {
                    predictions.push(argmax(ctx.get_logits_ith(i as i32)));
                }
            }
            ctx.clear_kv_cache();
            Ok(predictions)
        });
        self.forget_cached_prompts();
        predictions
    }

    fn tokenize(model: &LlamaModel, prompt: &str) -> Vec<LlamaToken> {
        let vocab = model.vocab();
        // Special tokens in the rendered template (<|im_start|>, <bos>) must become tokens.
        let mut tokens = vocab.tokenize(prompt.as_bytes(), vocab.should_add_bos(), true);
        // A template that writes its own BOS plus llama.cpp's automatic one would double it.
        if tokens.len() >= 2 && tokens[0] == vocab.bos() && tokens[1] == vocab.bos() {
            tokens.remove(0);
        }
        tokens
    }
}

fn inference_error(e: impl std::fmt::Display) -> EngineError {
    EngineError::Inference(e.to_string())
}

impl ChatEngine for LlamaCppEngine {
    fn facts(&self) -> &EngineFacts {
        &self.facts
    }

    fn count_tokens(&self, prompt: &str) -> Result<usize, EngineError> {
        Ok(Self::tokenize(self.inner.borrow_owner(), prompt).len())
    }

    fn generate(
        &mut self,
        prompt: &str,
        sampling: &ResolvedSampling,
        sink: &mut dyn TokenSink,
    ) -> Result<GenerationStats, EngineError> {
        generate_one(self, prompt, sampling, sink)
    }

    fn batch(&mut self) -> Option<&mut dyn BatchEngine> {
        Some(self)
    }

    fn score(
        &mut self,
        text: &str,
        window: ScoreWindow,
        rows: &mut dyn FnMut(&[f32]),
        cancelled: &mut dyn FnMut() -> bool,
    ) -> Result<TextScore, EngineError> {
        let window = window.within(self.facts.context_size);
        let score = self.inner.with_dependent_mut(|model, ctx| {
            let started = Instant::now();
            let vocab = model.vocab();
            // Plain text: no special-token parsing, so markup in the text stays text.
            let mut tokens = vocab.tokenize(text.as_bytes(), false, false);
            if window.max_text_tokens > 0 {
                tokens.truncate(window.max_text_tokens);
            }
            let prefix: Vec<LlamaToken> = if vocab.should_add_bos() {
                vec![vocab.bos()]
            } else {
                Vec::new()
            };
            let mut score = TextScore::default();
            let mut batch = LlamaBatch::new(SCORE_BATCH, 1);
            for (index, chunk) in tokens.chunks(window.tokens).enumerate() {
                if !window.keeps(index, chunk.len()) {
                    continue;
                }
                let sequence: Vec<LlamaToken> = prefix.iter().chain(chunk).copied().collect();
                // Logits at position p predict the token at p + 1.
                let first_wanted = prefix.len() + ScoreWindow::first_scored(chunk.len()) - 1;
                let wanted = |p: usize| p >= first_wanted && p + 1 < sequence.len();
                ctx.clear_kv_cache_seq(None, None, None)
                    .map_err(inference_error)?;
                for (part_index, part) in sequence.chunks(SCORE_BATCH).enumerate() {
                    if cancelled() {
                        ctx.clear_kv_cache();
                        return Err(EngineError::Cancelled);
                    }
                    let offset = part_index * SCORE_BATCH;
                    batch.clear();
                    for (i, token) in part.iter().enumerate() {
                        batch
                            .add(*token, (offset + i) as i32, &[0], wanted(offset + i))
                            .map_err(inference_error)?;
                    }
                    ctx.decode(&mut batch).map_err(inference_error)?;
                    score.evaluated_tokens += part.len();
                    for i in (0..part.len()).filter(|&i| wanted(offset + i)) {
                        let next = sequence[offset + i + 1].0 as usize;
                        let logits = ctx.get_logits_ith(i as i32);
                        score.nll_sum += token_nll(logits, next);
                        rows(logits);
                        score.scored_tokens += 1;
                    }
                }
            }
            ctx.clear_kv_cache();
            score.secs = started.elapsed().as_secs_f64();
            Ok(score)
        });
        self.forget_cached_prompts();
        score
    }
}
