//! The llama.cpp engine (llama-cpp-2): GGUF loaded with mmap, one context reused across requests
//! with several sequence slots, each with its own stream of the KV cache. Every forward pass decodes the next token
//! of each running reply plus a chunk of the prompts being read (continuous batching, see
//! `batch`), and a new prompt reuses the KV of the slot that already holds its longest prefix
//! (prompt cache). Nothing of llama-cpp-2's API leaks out of this module: the rest of the app
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

use super::{
    batch::{generate_one, Admission, BatchEngine, Sampled},
    decode::check_prompt,
    logprobs::token_logprob,
    sampler::{argmax, penalise},
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

fn build_sampler(model: &LlamaModel, s: &ResolvedSampling) -> LlamaSampler {
    let mut chain = Vec::with_capacity(5);
    if s.repeat_penalty != 1.0 {
        chain.push(LlamaSampler::penalties(
            model.n_vocab(),
            PENALTY_LAST_N,
            s.repeat_penalty,
            0.0,
            0.0,
        ));
    }
    if s.is_greedy() {
        chain.push(LlamaSampler::greedy());
    } else {
        if s.top_k > 0 {
            chain.push(LlamaSampler::top_k(s.top_k as i32));
        }
        chain.push(LlamaSampler::top_p(s.top_p, 1));
        chain.push(LlamaSampler::temp(s.temperature));
        chain.push(LlamaSampler::dist(s.seed));
    }
    LlamaSampler::chain_simple(chain)
}

/// Samples the row's next token among those `grammar` allows, then lets both samplers see it.
fn sample_within(
    ctx: &Context<'_>,
    row: i32,
    grammar: &mut LlamaSampler,
    sampler: &mut LlamaSampler,
    vocab: &llama_cpp_2::vocab::LlamaVocab<'_>,
) -> Result<LlamaToken, EngineError> {
    let mut candidates = ctx.token_data_array_ith(row);
    candidates.apply_sampler(grammar);
    candidates.apply_sampler(sampler);
    let token = candidates
        .selected_token()
        .ok_or_else(|| EngineError::Inference("the output grammar allowed no token".into()))?;
    // An end token is allowed only once the grammar is complete, and ends the reply: llama.cpp
    // aborts on accepting one into an unfinished grammar, so it is never fed.
    if !vocab.is_eog(token) {
        grammar.accept(token);
    }
    sampler.accept(token);
    Ok(token)
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
                        score.nll_sum += token_nll(ctx.get_logits_ith(i as i32), next);
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

/// How many leading tokens two sequences share.
fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl BatchEngine for LlamaCppEngine {
    fn slots(&self) -> usize {
        self.slots.len()
    }

    fn slot_context(&self) -> usize {
        self.facts.context_size
    }

    fn admit(
        &mut self,
        prompt: &str,
        sampling: &ResolvedSampling,
    ) -> Result<Admission, EngineError> {
        let tokens = Self::tokenize(self.inner.borrow_owner(), prompt);
        check_prompt(tokens.len(), self.facts.context_size)?;
        let slot = (0..self.slots.len())
            .filter(|&i| matches!(self.slots[i].work, SlotWork::Idle))
            // Without a prefix to reuse, the lowest free slot: running slots stay contiguous.
            .max_by_key(|&i| {
                (
                    common_prefix(&self.slots[i].history, &tokens),
                    std::cmp::Reverse(i),
                )
            })
            .ok_or_else(|| EngineError::Inference("every sequence slot is busy".into()))?;
        // At least the last prompt token is evaluated: its logits give the first reply token.
        let mut keep = if sampling.cache_prompt {
            common_prefix(&self.slots[slot].history, &tokens).min(tokens.len() - 1)
        } else {
            0
        };
        if keep < self.slots[slot].history.len() {
            let removed = self.inner.with_dependent_mut(|_, ctx| {
                ctx.clear_kv_cache_seq(Some(slot as u32), Some(keep as u32), None)
            });
            // A model whose cache cannot be cut at a position (recurrent, sliding window)
            // starts the sequence over.
            if !matches!(removed, Ok(true)) {
                let _ = self.inner.with_dependent_mut(|_, ctx| {
                    ctx.clear_kv_cache_seq(Some(slot as u32), None, None)
                });
                keep = 0;
            }
        }
        let grammar = match &sampling.constraint {
            None => None,
            Some(constraint) => Some(
                LlamaSampler::grammar(self.inner.borrow_owner(), &constraint.grammar, "root")
                    .map_err(|e| {
                        EngineError::Inference(format!("llama.cpp refused the output grammar: {e}"))
                    })?,
            ),
        };
        let mut sampler = build_sampler(self.inner.borrow_owner(), sampling);
        sampler.accept_many(&tokens);
        let s = &mut self.slots[slot];
        s.history.truncate(keep);
        s.work = SlotWork::Prefill(tokens[keep..].to_vec());
        s.sampler = Some(sampler);
        s.grammar = grammar;
        s.logprobs = sampling
            .logprobs
            .map(|top| (top, sampling.temperature, sampling.repeat_penalty));
        self.admitted.push(slot);
        Ok(Admission {
            slot,
            prompt_tokens: tokens.len(),
            cached_tokens: keep,
        })
    }

    fn step(&mut self) -> Result<Vec<Sampled>, EngineError> {
        let Self {
            inner,
            slots,
            admitted,
            batch,
            ..
        } = self;
        batch.clear();
        // (slot, index in the batch of the row whose logits pick its next token)
        let mut picks: Vec<(usize, i32)> = Vec::with_capacity(admitted.len());
        let mut fed: Vec<(usize, usize)> = Vec::with_capacity(admitted.len());
        // In slot order: llama.cpp evaluates sequences of separate KV streams in one pass only
        // when their ids ascend one by one; any other order splits the pass.
        for (slot, state) in slots.iter().enumerate() {
            if let SlotWork::Decode(token) = state.work {
                let position = state.history.len() as i32;
                batch
                    .add(token, position, &[slot as i32], true)
                    .map_err(inference_error)?;
                picks.push((slot, batch.n_tokens() - 1));
                fed.push((slot, 1));
            }
        }
        let mut budget = if picks.is_empty() {
            PREFILL_BATCH
        } else {
            PREFILL_CHUNK_IN_COMPANY.min(PREFILL_BATCH - picks.len())
        };
        for &slot in admitted.iter() {
            if budget == 0 {
                break;
            }
            let SlotWork::Prefill(pending) = &slots[slot].work else {
                continue;
            };
            let take = pending.len().min(budget);
            let start = slots[slot].history.len();
            for (i, token) in pending[..take].iter().enumerate() {
                let last = i + 1 == pending.len();
                batch
                    .add(*token, (start + i) as i32, &[slot as i32], last)
                    .map_err(inference_error)?;
                if last {
                    picks.push((slot, batch.n_tokens() - 1));
                }
            }
            fed.push((slot, take));
            budget -= take;
        }
        if batch.n_tokens() == 0 {
            return Ok(Vec::new());
        }
        let sampled = inner.with_dependent_mut(|model, ctx| {
            ctx.decode(batch).map_err(inference_error)?;
            let vocab = model.vocab();
            let mut sampled = Vec::with_capacity(picks.len());
            for &(slot, row) in &picks {
                let Slot {
                    sampler: Some(sampler),
                    grammar,
                    logprobs,
                    ..
                } = &mut slots[slot]
                else {
                    continue;
                };
                let token = match grammar {
                    None => sampler.sample(ctx, row),
                    Some(grammar) => sample_within(ctx, row, grammar, sampler, &vocab)?,
                };
                let logprob = (*logprobs).map(|(top, temperature, penalty)| {
                    let fed_here = fed.iter().find(|(s, _)| *s == slot).map_or(0, |f| f.1);
                    let mut logits = ctx.get_logits_ith(row).to_vec();
                    let window = slots[slot].penalty_window(fed_here);
                    penalise(&mut logits, window.into_iter(), penalty);
                    token_logprob(&logits, token.0 as u32, temperature, top, &|t| {
                        vocab.token_to_piece(LlamaToken(t as i32), false, None)
                    })
                });
                sampled.push((
                    slot,
                    token,
                    vocab.token_to_piece(token, false, None),
                    vocab.is_eog(token),
                    logprob,
                ));
            }
            Ok::<_, EngineError>(sampled)
        });
        let sampled = match sampled {
            Ok(sampled) => sampled,
            Err(e) => {
                // The cache may hold part of this pass: no slot's history can be trusted.
                inner.with_dependent_mut(|_, ctx| ctx.clear_kv_cache());
                for slot in slots.iter_mut() {
                    slot.history.clear();
                }
                return Err(e);
            }
        };
        for (slot, count) in fed {
            let s = &mut slots[slot];
            match &mut s.work {
                SlotWork::Decode(token) => s.history.push(*token),
                SlotWork::Prefill(pending) => {
                    s.history.extend(pending.drain(..count));
                }
                SlotWork::Idle => {}
            }
        }
        Ok(sampled
            .into_iter()
            .map(|(slot, token, bytes, ends_reply, logprob)| {
                slots[slot].work = SlotWork::Decode(token);
                Sampled {
                    slot,
                    bytes,
                    ends_reply,
                    logprob,
                }
            })
            .collect())
    }

    fn release(&mut self, slot: usize) {
        if let Some(s) = self.slots.get_mut(slot) {
            // A prompt cut short keeps the part it read; the unfed sampled token is dropped.
            s.work = SlotWork::Idle;
            s.sampler = None;
            s.grammar = None;
            s.logprobs = None;
        }
        self.admitted.retain(|&s| s != slot);
    }
}
