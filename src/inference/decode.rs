//! What every local engine does around its forward passes: refuse prompts that cannot run, and
//! the token-by-token loop after prefill (end of turn, streaming whole UTF-8 characters, the
//! token limit, a full context, Stop). Engines supply only how to read a token and how to
//! compute the next one, so the rules cannot drift apart between engines.

use super::{reply_text::ReplyText, EngineError, GenerationStats, TokenSink};
use crate::types::FinishReason;

/// An empty prompt or one that leaves no room for a reply token is refused.
pub fn check_prompt(prompt_tokens: usize, context: usize) -> Result<(), EngineError> {
    if prompt_tokens == 0 {
        return Err(EngineError::EmptyPrompt);
    }
    if prompt_tokens >= context {
        return Err(EngineError::PromptTooLong {
            prompt_tokens,
            context,
        });
    }
    Ok(())
}

/// How an engine takes part in [`decode`].
pub trait DecodeStep<T> {
    /// The token ends the reply (end of turn or of text).
    fn ends_reply(&self, token: T) -> bool;
    /// The bytes the token stands for (empty for control tokens).
    fn bytes(&self, token: T) -> Vec<u8>;
    /// Feeds `token` at `position` and picks the next one.
    fn next(&mut self, token: T, position: usize) -> Result<T, EngineError>;
    /// The log-probability of the token picked last, when the settings ask for them.
    fn take_logprob(&mut self) -> Option<crate::types::TokenLogprob> {
        None
    }
}

/// Streams the reply from `first` (sampled at the end of prefill) until it ends; fills the
/// decode fields of `stats`.
pub fn decode<T: Copy>(
    engine: &mut dyn DecodeStep<T>,
    first: T,
    context: usize,
    max_tokens: u32,
    stop: &[String],
    sink: &mut dyn TokenSink,
    stats: &mut GenerationStats,
) -> Result<(), EngineError> {
    let mut text = ReplyText::new(stop);
    let mut token = first;
    let mut position = stats.prompt_tokens;
    let started = std::time::Instant::now();
    let finish = loop {
        let logprob = engine.take_logprob();
        if engine.ends_reply(token) {
            break FinishReason::Stop;
        }
        if let Some(entry) = logprob {
            sink.logprob(entry);
        }
        let pushed = text.push(&engine.bytes(token));
        stats.generated_tokens += 1;
        if !pushed.text.is_empty() && sink.piece(&pushed.text).is_break() {
            break FinishReason::Cancelled;
        }
        if pushed.stopped {
            break FinishReason::Stop;
        }
        if stats.generated_tokens >= max_tokens as usize {
            break FinishReason::Length;
        }
        if position + 1 >= context {
            break FinishReason::ContextFull;
        }
        if sink.cancelled() {
            break FinishReason::Cancelled;
        }
        token = engine.next(token, position)?;
        stats.decode_calls += 1;
        position += 1;
    };
    stats.decode_secs = started.elapsed().as_secs_f64();
    let rest = text.finish();
    if !rest.is_empty() && finish != FinishReason::Cancelled {
        let _ = sink.piece(&rest);
    }
    stats.finish_reason = Some(finish);
    Ok(())
}
