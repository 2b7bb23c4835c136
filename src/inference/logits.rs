//! Generation and scoring for engines whose forward pass hands us logits (candle, BitNet):
//! prefill in batches, the shared sampler and decode loop, perplexity windows and teacher
//! forcing, and the one [`ChatEngine`] they all are ([`LogitsEngine`]). The engines supply only
//! their forward pass and their vocabulary.

use std::time::Instant;

use super::{
    batch::{generate_one, BatchEngine},
    decode::{check_prompt, decode, DecodeStep},
    logits_batch::SlotTable,
    sampler::{argmax, Sampler},
    score::{token_nll, ScoreWindow, TextScore},
    ChatEngine, EngineError, EngineFacts, GenerationStats, ResolvedSampling, TokenSink,
};
use crate::types::FinishReason;

/// One token of a forward pass over several sequences: its id, the slot whose cache it extends,
/// and its position there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotToken {
    pub token: u32,
    pub slot: usize,
    pub position: usize,
}

/// A forward pass over token ids at a position (0 starts a new sequence).
///
/// A model may also keep several sequences in slots of one cache ([`LogitsModel::slots`]); the
/// single-sequence calls then use slot 0.
pub trait LogitsModel {
    /// Logits of the last of `tokens`.
    fn forward_last(&mut self, tokens: &[u32], position: usize) -> Result<&mut [f32], EngineError>;
    /// Logits of every one of `tokens`, one row each.
    fn forward_all(
        &mut self,
        tokens: &[u32],
        position: usize,
    ) -> Result<Vec<Vec<f32>>, EngineError>;
    /// Tokens per forward pass when only the last logits are kept (prefill).
    fn prefill_batch(&self) -> usize;
    /// Tokens per forward pass when every row of logits is kept (bounds that memory).
    fn score_batch(&self) -> usize;
    /// Sequence slots in the cache; 0 for a model that keeps one sequence and has no
    /// [`LogitsModel::forward_slots`].
    fn slots(&self) -> usize {
        0
    }
    /// One forward pass over tokens of several slots (at most [`LogitsModel::prefill_batch`]);
    /// returns the logits of the rows `picks` names, one `vocab`-long row each, in that order.
    ///
    /// # Errors
    /// The model has no slots, or a token leaves its slot's context.
    fn forward_slots(
        &mut self,
        _tokens: &[SlotToken],
        _picks: &[usize],
    ) -> Result<&mut [f32], EngineError> {
        Err(EngineError::Unsupported(
            "this engine keeps one sequence at a time".into(),
        ))
    }
}

/// What an engine's vocabulary does for generation and scoring.
pub trait TokenText {
    fn ends_reply(&self, token: u32) -> bool;
    /// The bytes a token stands for (empty for control tokens).
    fn piece(&self, token: u32) -> &[u8];
    /// Ids for a rendered chat prompt, exactly as generation feeds them.
    fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>, EngineError>;
    /// Ids for plain text (perplexity), without BOS.
    fn encode_text(&self, text: &str) -> Result<Vec<u32>, EngineError>;
    /// What every perplexity window starts with (BOS when the model uses one).
    fn text_prefix(&self) -> Vec<u32>;
}

struct Step<'a> {
    model: &'a mut dyn LogitsModel,
    vocab: &'a dyn TokenText,
    sampler: Sampler,
    /// The log-probability of the token picked last, until `decode` takes it.
    logprob: Option<crate::types::TokenLogprob>,
}

impl DecodeStep<u32> for Step<'_> {
    fn ends_reply(&self, token: u32) -> bool {
        self.vocab.ends_reply(token)
    }

    fn bytes(&self, token: u32) -> Vec<u8> {
        self.vocab.piece(token).to_vec()
    }

    fn next(&mut self, token: u32, position: usize) -> Result<u32, EngineError> {
        self.sampler.accept(token);
        let logits = self.model.forward_last(&[token], position)?;
        let vocab = self.vocab;
        let next = self
            .sampler
            .sample_reply_token(logits, |t| vocab.ends_reply(t));
        self.logprob = self
            .sampler
            .logprob(logits, next, &|t| vocab.piece(t).to_vec());
        Ok(next)
    }

    fn take_logprob(&mut self) -> Option<crate::types::TokenLogprob> {
        self.logprob.take()
    }
}

/// Generates a reply to a rendered prompt; the prompt time includes tokenizing it.
pub fn generate(
    model: &mut dyn LogitsModel,
    vocab: &dyn TokenText,
    prompt: &str,
    context: usize,
    sampling: &ResolvedSampling,
    sink: &mut dyn TokenSink,
) -> Result<GenerationStats, EngineError> {
    // The HTTP boundary refuses this first; an engine without a grammar never pretends.
    if sampling.constraint.is_some() {
        return Err(EngineError::Unsupported(
            "structured output (`response_format`) needs the llama.cpp engine".into(),
        ));
    }
    let started = Instant::now();
    let tokens = vocab.encode_prompt(prompt)?;
    let tokens = tokens.as_slice();
    let mut stats = GenerationStats {
        prompt_tokens: tokens.len(),
        ..Default::default()
    };
    check_prompt(tokens.len(), context)?;
    let mut sampler = Sampler::new(sampling);
    let batch = model.prefill_batch();
    let chunks = tokens.len().div_ceil(batch);
    let mut first = 0;
    let mut first_logprob = None;
    for (index, chunk) in tokens.chunks(batch).enumerate() {
        if sink.cancelled() {
            stats.finish_reason = Some(FinishReason::Cancelled);
            return Ok(stats);
        }
        let logits = model.forward_last(chunk, index * batch)?;
        if index + 1 == chunks {
            for &token in tokens {
                sampler.accept(token);
            }
            first = sampler.sample_reply_token(logits, |t| vocab.ends_reply(t));
            first_logprob = sampler.logprob(logits, first, &|t| vocab.piece(t).to_vec());
        }
    }
    stats.prompt_secs = started.elapsed().as_secs_f64();
    let mut step = Step {
        model,
        vocab,
        sampler,
        logprob: first_logprob,
    };
    decode(
        &mut step,
        first,
        context,
        sampling.max_tokens,
        &sampling.stop,
        sink,
        &mut stats,
    )?;
    Ok(stats)
}

/// Perplexity of plain `text` in windows (fitted to `context`), each starting with the
/// vocabulary's prefix; only the second half of each window is scored (see [`ScoreWindow`]).
pub fn score(
    model: &mut dyn LogitsModel,
    vocab: &dyn TokenText,
    text: &str,
    window: ScoreWindow,
    context: usize,
    rows_seen: &mut dyn FnMut(&[f32]),
    cancelled: &mut dyn FnMut() -> bool,
) -> Result<TextScore, EngineError> {
    let window = window.within(context);
    let started = Instant::now();
    let mut tokens = vocab.encode_text(text)?;
    if window.max_text_tokens > 0 {
        tokens.truncate(window.max_text_tokens);
    }
    let prefix = vocab.text_prefix();
    let mut score = TextScore::default();
    let batch = model.score_batch();
    for (index, chunk) in tokens.chunks(window.tokens).enumerate() {
        if !window.keeps(index, chunk.len()) {
            continue;
        }
        if cancelled() {
            return Err(EngineError::Cancelled);
        }
        let sequence: Vec<u32> = prefix.iter().chain(chunk).copied().collect();
        // Logits at position p predict the token at p + 1. The unscored first half goes in
        // as one batch; the rest in batches that keep every row.
        let first_wanted = prefix.len() + ScoreWindow::first_scored(chunk.len()) - 1;
        if first_wanted > 0 {
            model.forward_last(&sequence[..first_wanted], 0)?;
        }
        let scored = &sequence[first_wanted..sequence.len() - 1];
        for (index, part) in scored.chunks(batch).enumerate() {
            if cancelled() {
                return Err(EngineError::Cancelled);
            }
            let offset = first_wanted + index * batch;
            let rows = model.forward_all(part, offset)?;
            for (i, row) in rows.iter().enumerate() {
                score.nll_sum += token_nll(row, sequence[offset + i + 1] as usize);
                rows_seen(row);
                score.scored_tokens += 1;
            }
        }
        score.evaluated_tokens += sequence.len() - 1;
    }
    score.secs = started.elapsed().as_secs_f64();
    Ok(score)
}

/// Teacher forcing: element i is the model's most likely next token after `tokens[..=i]`.
pub fn top1_predictions(
    model: &mut dyn LogitsModel,
    tokens: &[u32],
    context: usize,
) -> Result<Vec<u32>, EngineError> {
    if tokens.len() >= context {
        return Err(EngineError::PromptTooLong {
            prompt_tokens: tokens.len(),
            context,
        });
    }
    let batch = model.score_batch();
    let mut predictions = Vec::with_capacity(tokens.len());
    for (index, part) in tokens.chunks(batch).enumerate() {
        let rows = model.forward_all(part, index * batch)?;
        predictions.extend(rows.iter().map(|row| argmax(row)));
    }
    Ok(predictions)
}

/// A chat engine made of a forward pass and a vocabulary. The candle and BitNet engines are
/// this type with their own model and vocabulary; each adds only its loader.
pub struct LogitsEngine<M, V> {
    pub(crate) model: M,
    pub(crate) vocab: V,
    pub(crate) facts: EngineFacts,
    /// The model's sequence slots, when it has them ([`LogitsModel::slots`]).
    pub(crate) slots: SlotTable,
}

impl<M: LogitsModel, V: TokenText> LogitsEngine<M, V> {
    pub fn new(model: M, vocab: V, facts: EngineFacts) -> Self {
        let slots = SlotTable::new(model.slots());
        Self {
            model,
            vocab,
            facts,
            slots,
        }
    }

    /// Token ids for a rendered prompt, exactly as generation feeds them.
    pub fn tokenize_prompt(&self, prompt: &str) -> Result<Vec<u32>, EngineError> {
        self.vocab.encode_prompt(prompt)
    }

    /// Teacher forcing: element i is the model's most likely next token after `tokens[..=i]`.
    pub fn top1_predictions(&mut self, tokens: &[u32]) -> Result<Vec<u32>, EngineError> {
        self.slots.forget_slot_zero();
        top1_predictions(&mut self.model, tokens, self.facts.context_size)
    }

    /// The logits after every one of `tokens` (a new sequence), one row each.
    pub fn logits_for(&mut self, tokens: &[u32]) -> Result<Vec<Vec<f32>>, EngineError> {
        self.slots.forget_slot_zero();
        self.model.forward_all(tokens, 0)
    }
}

impl<M: LogitsModel, V: TokenText> ChatEngine for LogitsEngine<M, V> {
    fn facts(&self) -> &EngineFacts {
        &self.facts
    }

    fn batch(&mut self) -> Option<&mut dyn BatchEngine> {
        if self.model.slots() > 0 {
            Some(self)
        } else {
            None
        }
    }

    fn count_tokens(&self, prompt: &str) -> Result<usize, EngineError> {
        Ok(self.tokenize_prompt(prompt)?.len())
    }

    fn generate(
        &mut self,
        prompt: &str,
        sampling: &ResolvedSampling,
        sink: &mut dyn TokenSink,
    ) -> Result<GenerationStats, EngineError> {
        // A model with slots runs a reply alone as it runs it in company.
        if self.model.slots() > 0 {
            return generate_one(self, prompt, sampling, sink);
        }
        let context = self.facts.context_size;
        generate(
            &mut self.model,
            &self.vocab,
            prompt,
            context,
            sampling,
            sink,
        )
    }

    fn score(
        &mut self,
        text: &str,
        window: ScoreWindow,
        rows: &mut dyn FnMut(&[f32]),
        cancelled: &mut dyn FnMut() -> bool,
    ) -> Result<TextScore, EngineError> {
        self.slots.forget_slot_zero();
        let context = self.facts.context_size;
        score(
            &mut self.model,
            &self.vocab,
            text,
            window,
            context,
            rows,
            cancelled,
        )
    }
}
