//! Continuous batching: several replies share one loaded model. Each forward pass decodes the
//! next token of every running reply and a chunk of the prompts still being read, because on a
//! CPU a decode step costs the reading of the weights, and a few more rows read them once.
//!
//! An engine that can do this implements [`BatchEngine`] (sequence slots, a KV cache shared by
//! them, one sampler per slot). [`Batch`] holds the rules every reply follows — end of turn,
//! whole UTF-8 characters, the token limit, a full context, Stop — so they are the same alone
//! and in company, and the same as [`super::decode::decode`] for unbatched engines.

use std::{ops::ControlFlow, time::Instant};

use super::{reply_text::ReplyText, EngineError, GenerationStats, ResolvedSampling, TokenSink};
use crate::types::FinishReason;

/// A prompt taken into a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    pub slot: usize,
    pub prompt_tokens: usize,
    /// Leading prompt tokens whose KV the slot already held (an earlier turn, a shared system
    /// prompt): they are not evaluated again.
    pub cached_tokens: usize,
}

/// A token sampled for a slot by one forward pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampled {
    pub slot: usize,
    /// The bytes the token stands for (empty for control tokens).
    pub bytes: Vec<u8>,
    /// The token ends the reply (end of turn or of text).
    pub ends_reply: bool,
    /// Its log-probability, when the reply's settings ask for them.
    pub logprob: Option<crate::types::TokenLogprob>,
}

/// An engine with sequence slots sharing one model and one KV cache.
pub trait BatchEngine {
    /// How many replies can run at once.
    fn slots(&self) -> usize;
    /// The context window of each slot (tokens).
    fn slot_context(&self) -> usize;
    /// Tokenizes `prompt` and takes it into a free slot, reusing the KV of the slot whose
    /// history shares the longest prefix with it.
    ///
    /// # Errors
    /// The prompt is empty or too long for a slot, or no slot is free.
    fn admit(
        &mut self,
        prompt: &str,
        sampling: &ResolvedSampling,
    ) -> Result<Admission, EngineError>;
    /// One forward pass over every admitted slot; returns a token for each slot whose prompt is
    /// fully read. A slot keeps its sampled token and feeds it in the next pass.
    ///
    /// # Errors
    /// The forward pass failed; every admitted slot is then released.
    fn step(&mut self) -> Result<Vec<Sampled>, EngineError>;
    /// The slot's reply ended. Its KV stays for a later prompt that starts the same way.
    fn release(&mut self, slot: usize);
}

/// How many leading tokens two sequences share: the part of a slot's cache a new prompt can
/// keep.
pub fn common_prefix<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The free slot a prompt goes to and how many of its leading tokens that slot's cache
/// already holds: the slot whose history (`free`: index and history of each free slot) shares
/// the longest prefix with `prompt`, the lowest of equals so running slots stay contiguous.
/// The last prompt token is always evaluated (its logits give the first reply token), and
/// nothing is kept when `cache_prompt` is off.
///
/// # Errors
/// No slot is free.
pub fn reuse_slot<'a, T: PartialEq + 'a>(
    free: impl Iterator<Item = (usize, &'a [T])>,
    prompt: &[T],
    cache_prompt: bool,
) -> Result<(usize, usize), EngineError> {
    let (slot, shared) = free
        .map(|(slot, history)| (slot, common_prefix(history, prompt)))
        .max_by_key(|&(slot, shared)| (shared, std::cmp::Reverse(slot)))
        .ok_or_else(|| EngineError::Inference("every sequence slot is busy".into()))?;
    let keep = if cache_prompt {
        shared.min(prompt.len().saturating_sub(1))
    } else {
        0
    };
    Ok((slot, keep))
}

/// The last thing a finished reply hears: its statistics, or why it failed.
pub struct Finished<S> {
    pub sink: S,
    pub outcome: Result<GenerationStats, EngineError>,
}

struct Running<S> {
    slot: usize,
    sink: S,
    admitted_at: Instant,
    first_token_at: Option<Instant>,
    text: ReplyText,
    stats: GenerationStats,
    max_tokens: u32,
}

/// The replies running together on one engine.
pub struct Batch<S> {
    running: Vec<Running<S>>,
}

impl<S> Default for Batch<S> {
    fn default() -> Self {
        Self {
            running: Vec::new(),
        }
    }
}

impl<S: TokenSink> Batch<S> {
    pub fn len(&self) -> usize {
        self.running.len()
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Starts a reply; the sink comes back with the reason when its prompt cannot run.
    pub fn admit(
        &mut self,
        engine: &mut dyn BatchEngine,
        prompt: &str,
        sampling: &ResolvedSampling,
        sink: S,
    ) -> Result<(), (S, EngineError)> {
        let admitted_at = Instant::now();
        match engine.admit(prompt, sampling) {
            Ok(admission) => {
                self.running.push(Running {
                    slot: admission.slot,
                    sink,
                    admitted_at,
                    first_token_at: None,
                    text: ReplyText::new(&sampling.stop),
                    stats: GenerationStats {
                        prompt_tokens: admission.prompt_tokens,
                        cached_prompt_tokens: admission.cached_tokens,
                        ..Default::default()
                    },
                    max_tokens: sampling.max_tokens,
                });
                Ok(())
            }
            Err(e) => Err((sink, e)),
        }
    }

    /// One forward pass for every running reply; returns the replies that ended.
    pub fn step(&mut self, engine: &mut dyn BatchEngine) -> Vec<Finished<S>> {
        let mut finished = Vec::new();
        // Stop pressed, client gone: checked before every pass, so within one token.
        let mut index = 0;
        while index < self.running.len() {
            if self.running[index].sink.cancelled() {
                let reply = self.running.swap_remove(index);
                finished.push(end(engine, reply, FinishReason::Cancelled));
            } else {
                index += 1;
            }
        }
        if self.running.is_empty() {
            return finished;
        }
        let peers = self.running.len() - 1;
        for reply in &mut self.running {
            reply.stats.batch_peers = reply.stats.batch_peers.max(peers);
        }
        let sampled = match engine.step() {
            Ok(sampled) => sampled,
            Err(e) => {
                let message = e.to_string();
                for reply in self.running.drain(..) {
                    engine.release(reply.slot);
                    finished.push(Finished {
                        sink: reply.sink,
                        outcome: Err(EngineError::Inference(message.clone())),
                    });
                }
                return finished;
            }
        };
        let context = engine.slot_context();
        for token in sampled {
            let Some(index) = self.running.iter().position(|r| r.slot == token.slot) else {
                continue;
            };
            if let Some(finish) = self.running[index].take(token, context) {
                let reply = self.running.swap_remove(index);
                finished.push(end(engine, reply, finish));
            }
        }
        finished
    }
}

impl<S: TokenSink> Running<S> {
    /// Handles a sampled token; `Some` when the reply ends with it.
    fn take(&mut self, token: Sampled, context: usize) -> Option<FinishReason> {
        let now = Instant::now();
        match self.first_token_at {
            None => {
                self.first_token_at = Some(now);
                self.stats.prompt_secs = (now - self.admitted_at).as_secs_f64();
            }
            Some(first) => {
                self.stats.decode_calls += 1;
                self.stats.decode_secs = (now - first).as_secs_f64();
            }
        }
        if token.ends_reply {
            return Some(FinishReason::Stop);
        }
        if let Some(entry) = token.logprob {
            self.sink.logprob(entry);
        }
        let pushed = self.text.push(&token.bytes);
        self.stats.generated_tokens += 1;
        if !pushed.text.is_empty() && self.sink.piece(&pushed.text).is_break() {
            return Some(FinishReason::Cancelled);
        }
        if pushed.stopped {
            return Some(FinishReason::Stop);
        }
        if self.stats.generated_tokens >= self.max_tokens as usize {
            return Some(FinishReason::Length);
        }
        // The token just sampled would be fed at this position.
        let position = self.stats.prompt_tokens + self.stats.generated_tokens - 1;
        if position + 1 >= context {
            return Some(FinishReason::ContextFull);
        }
        None
    }
}

fn end<S: TokenSink>(
    engine: &mut dyn BatchEngine,
    mut reply: Running<S>,
    finish: FinishReason,
) -> Finished<S> {
    engine.release(reply.slot);
    let rest = reply.text.finish();
    if !rest.is_empty() && finish != FinishReason::Cancelled {
        let _ = reply.sink.piece(&rest);
    }
    reply.stats.finish_reason = Some(finish);
    Finished {
        sink: reply.sink,
        outcome: Ok(reply.stats),
    }
}

/// A sink borrowed for one reply (the engine's own `generate`).
impl<T: TokenSink + ?Sized> TokenSink for &mut T {
    fn cancelled(&mut self) -> bool {
        (**self).cancelled()
    }

    fn piece(&mut self, text: &str) -> ControlFlow<()> {
        (**self).piece(text)
    }

    fn logprob(&mut self, entry: crate::types::TokenLogprob) {
        (**self).logprob(entry)
    }
}

/// One reply alone through the batch path: what `ChatEngine::generate` does for a batching
/// engine, so a reply follows the same code alone and in company.
///
/// # Errors
/// As [`BatchEngine::admit`] and [`BatchEngine::step`].
pub fn generate_one(
    engine: &mut dyn BatchEngine,
    prompt: &str,
    sampling: &ResolvedSampling,
    sink: &mut dyn TokenSink,
) -> Result<GenerationStats, EngineError> {
    let mut batch = Batch::default();
    batch
        .admit(engine, prompt, sampling, sink)
        .map_err(|(_, e)| e)?;
    loop {
        if let Some(done) = batch.step(engine).pop() {
            return done.outcome;
        }
    }
}
