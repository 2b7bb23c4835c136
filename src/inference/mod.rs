//! Inference: engines behind one trait, the per-model workers that own them, and the pieces
//! every engine shares (sampling settings, chat templates, UTF-8 streaming, memory readings).

pub mod batch;
pub mod bitnet;
pub mod byte_level;
pub mod candle;
pub mod decode;
pub mod gguf;
pub mod json_grammar;
pub mod llama_cpp;
pub mod logits;
pub mod logits_batch;
pub mod logprobs;
pub mod memory;
pub mod remote;
pub mod reply_text;
pub mod sampler;
pub mod sampling;
pub mod score;
pub mod template;
pub mod utf8;
pub mod workers;

use std::ops::ControlFlow;

pub use sampling::ResolvedSampling;
pub use score::{ScoreWindow, TextScore};

use crate::types::{ChatMessage, FinishReason};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot load {path}: {detail}")]
    Load { path: String, detail: String },
    #[error("the prompt has {prompt_tokens} tokens but the context holds {context} (with room for at least one reply token); shorten the conversation or the system prompt")]
    PromptTooLong {
        prompt_tokens: usize,
        context: usize,
    },
    #[error("the prompt is empty after applying the chat template")]
    EmptyPrompt,
    #[error("chat template error: {0}")]
    Template(String),
    #[error("inference failed: {0}")]
    Inference(String),
    #[error("cancelled")]
    Cancelled,
    /// A remote server failed.
    #[error("remote server: {message}")]
    Upstream {
        failure: UpstreamFailure,
        message: String,
    },
    #[error("not supported by this engine: {0}")]
    Unsupported(String),
}

/// How a remote server failed: what our own client is told depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// It is busy or still loading (429, 503): worth a retry.
    Busy,
    /// It refused the request as sent (another 4xx): the request must change.
    Refused,
    /// It answered something that is not a chat reply, or cannot be reached.
    BadAnswer,
    /// It said nothing for the configured time.
    Timeout,
}

/// What an engine knows about the model it loaded.
#[derive(Clone, Debug)]
pub struct EngineFacts {
    /// The context window of this instance (tokens).
    pub context_size: usize,
    /// The chat template from the model's metadata, if any.
    pub chat_template: Option<String>,
    pub bos_token: String,
    pub eos_token: String,
    pub threads: u32,
    /// How this engine runs the model, when it has a choice worth naming (kernels, head
    /// precision); shown beside the engine under every reply. Empty otherwise.
    pub detail: String,
}

/// Counts and timings that only the engine can measure.
#[derive(Clone, Debug, Default)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    /// Leading prompt tokens whose KV was reused instead of evaluated.
    pub cached_prompt_tokens: usize,
    /// The most other replies that shared this one's forward passes.
    pub batch_peers: usize,
    /// Prefill: evaluating the prompt and sampling the first token.
    pub prompt_secs: f64,
    pub generated_tokens: usize,
    /// Decode calls after the first token, and the time they took.
    pub decode_calls: usize,
    pub decode_secs: f64,
    pub finish_reason: Option<FinishReason>,
}

/// Receives reply text as it is produced. `Break` stops the generation within one token.
pub trait TokenSink {
    /// Called before every forward pass; `true` stops the work (client gone, Stop pressed).
    fn cancelled(&mut self) -> bool;
    /// A piece of reply text made of whole UTF-8 characters.
    fn piece(&mut self, text: &str) -> ControlFlow<()>;
    /// A generated token's log-probability, before the text it completes reaches `piece`
    /// (only when the sampling settings ask for them).
    fn logprob(&mut self, _entry: crate::types::TokenLogprob) {}
}

/// A loaded model, owned by the thread of its worker. Every engine implements this.
pub trait ChatEngine {
    fn facts(&self) -> &EngineFacts;
    /// Number of tokens the engine would feed for this prompt.
    fn count_tokens(&self, prompt: &str) -> Result<usize, EngineError>;
    /// Generates a reply to an already templated prompt.
    fn generate(
        &mut self,
        prompt: &str,
        sampling: &ResolvedSampling,
        sink: &mut dyn TokenSink,
    ) -> Result<GenerationStats, EngineError>;
    /// Engines that run several replies together in one forward pass expose their slots here;
    /// the worker then schedules replies through [`batch::Batch`].
    fn batch(&mut self) -> Option<&mut dyn batch::BatchEngine> {
        None
    }
    /// Engines that apply the chat template on their side (a remote server) take the messages
    /// as they are; `None` means "render the template and call `generate`".
    fn generate_messages(
        &mut self,
        _messages: &[ChatMessage],
        _sampling: &ResolvedSampling,
        _sink: &mut dyn TokenSink,
    ) -> Option<Result<GenerationStats, EngineError>> {
        None
    }
    /// Scores a plain text (no chat template) in windows, for perplexity. `rows` sees the
    /// logits of every scored prediction in order (the bench's KL divergence against a
    /// reference); `cancelled` is polled between forward passes.
    fn score(
        &mut self,
        text: &str,
        window: ScoreWindow,
        rows: &mut dyn FnMut(&[f32]),
        cancelled: &mut dyn FnMut() -> bool,
    ) -> Result<TextScore, EngineError>;
}
