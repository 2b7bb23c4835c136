//! What a worker answers for one reply — a typed stream the HTTP layer maps to statuses once —
//! and the sink that carries tokens to it through a bounded channel, so a client that stops
//! reading stops the model after a timeout instead of filling an unbounded buffer.

use std::{
    ops::ControlFlow,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot};

use super::{queue::Waiting, PoolSignals};
use crate::{
    inference::{
        score::{ScoreWindow, TextScore},
        ChatEngine, EngineError, GenerationStats, ResolvedSampling, TokenSink, UpstreamFailure,
    },
    types::{ChatMessage, GenerationMetrics},
};

/// Events a reply's channel holds before the worker waits for its reader.
pub const REPLY_BUFFER: usize = 256;

/// One reply, in order: any number of `Queued`, then `Token`s, then one `Done` or `Failed`.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// Waiting: `ahead` requests come first; `loading` while the model itself is loading.
    Queued {
        ahead: usize,
        loading: bool,
    },
    /// Reply text, whole UTF-8 characters, with the log-probabilities of the tokens it
    /// completes (when asked for).
    Token {
        text: String,
        logprobs: Vec<crate::types::TokenLogprob>,
    },
    /// The reply ended (its finish reason says how).
    Done(GenerationMetrics),
    Failed(ReplyError),
}

/// Why a reply failed, in the worker's terms; `api/` decides what a client hears.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ReplyError {
    /// The request cannot be answered as sent (prompt too long, empty after the template).
    #[error("{0}")]
    Invalid(String),
    /// The model could not be loaded.
    #[error("{0}")]
    Unavailable(String),
    /// The server is shutting down and did not start this reply.
    #[error("the server is shutting down and did not start this reply; retry in a moment")]
    ShuttingDown,
    /// The engine failed while generating.
    #[error("{0}")]
    Engine(String),
    /// A remote inference server failed.
    #[error("{message}")]
    Upstream {
        failure: UpstreamFailure,
        message: String,
    },
}

/// Work for a model's thread.
pub(super) enum Job {
    Reply(Box<ReplyJob>),
    Score(ScoreJob),
}

/// What a reply answers.
#[derive(Clone, Debug)]
pub enum PromptInput {
    /// A conversation, rendered with the model's chat template.
    Chat(Vec<ChatMessage>),
    /// Plain text the model continues as it is (`/v1/completions`).
    Text(String),
}

/// A request for one reply.
pub(super) struct ReplyJob {
    pub prompt: PromptInput,
    pub sampling: ResolvedSampling,
    /// When the server accepted the request; time to first token counts from here.
    pub accepted_at: Instant,
    pub cancel: Arc<AtomicBool>,
    pub reply: mpsc::Sender<Reply>,
}

/// A request to score a text (perplexity), used by the bench.
pub(super) struct ScoreJob {
    pub text: Arc<str>,
    pub window: ScoreWindow,
    pub rows: Option<super::RowObserver>,
    pub cancel: Arc<AtomicBool>,
    pub reply: oneshot::Sender<Result<TextScore, String>>,
}

impl Waiting for Job {
    fn abandoned(&self) -> bool {
        match self {
            Job::Reply(job) => job.reply.is_closed() || job.cancel.load(Ordering::Relaxed),
            Job::Score(job) => job.reply.is_closed() || job.cancel.load(Ordering::Relaxed),
        }
    }

    fn tell_position(&self, ahead: usize, loading: bool) {
        // Informational: a full channel just misses one update.
        if let Job::Reply(job) = self {
            let _ = job.reply.try_send(Reply::Queued { ahead, loading });
        }
    }
}

impl Job {
    /// Answers a job that will not run.
    pub fn refuse(self, error: ReplyError) {
        match self {
            Job::Reply(job) => {
                let _ = job.reply.try_send(Reply::Failed(error));
            }
            Job::Score(job) => {
                let _ = job.reply.send(Err(error.to_string()));
            }
        }
    }
}

/// Carries a running reply's tokens to its channel.
pub(super) struct JobSink {
    pub job: ReplyJob,
    /// `stopping` is set when the whole server stops: every running reply ends.
    signals: Arc<PoolSignals>,
    /// How long a full channel may stay full before the reply is given up.
    send_timeout: Duration,
    /// When the worker took the job.
    started: Instant,
    first_piece_at: Option<Instant>,
    /// The reader stopped reading for `send_timeout`.
    pub stalled: bool,
    /// Log-probabilities of tokens whose text has not reached a piece yet.
    logprobs: Vec<crate::types::TokenLogprob>,
}

impl JobSink {
    pub fn new(job: ReplyJob, signals: Arc<PoolSignals>, send_timeout: Duration) -> Self {
        Self {
            job,
            signals,
            send_timeout,
            started: Instant::now(),
            first_piece_at: None,
            stalled: false,
            logprobs: Vec::new(),
        }
    }

    fn stop_requested(&self) -> bool {
        self.job.cancel.load(Ordering::Relaxed) || self.signals.stopping.load(Ordering::Relaxed)
    }

    /// Sends `reply`, waiting at most `send_timeout` for room; `false` when it could not.
    pub fn deliver(&mut self, reply: Reply) -> bool {
        let deadline = Instant::now() + self.send_timeout;
        let mut reply = reply;
        loop {
            match self.job.reply.try_send(reply) {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
                Err(mpsc::error::TrySendError::Full(back)) => {
                    if Instant::now() >= deadline {
                        self.stalled = true;
                        return false;
                    }
                    if self.stop_requested() {
                        return false;
                    }
                    reply = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }
}

impl TokenSink for JobSink {
    fn cancelled(&mut self) -> bool {
        self.stalled || self.stop_requested() || self.job.reply.is_closed()
    }

    fn piece(&mut self, text: &str) -> ControlFlow<()> {
        self.first_piece_at.get_or_insert_with(Instant::now);
        let token = Reply::Token {
            text: text.to_string(),
            logprobs: std::mem::take(&mut self.logprobs),
        };
        if self.deliver(token) && !self.stop_requested() {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    }

    fn logprob(&mut self, entry: crate::types::TokenLogprob) {
        self.logprobs.push(entry);
    }
}

/// Who ran a reply, for its metrics.
pub(super) struct Runner<'a> {
    pub model_id: &'a str,
    pub engine_kind: &'a str,
    pub engine_detail: &'a str,
    pub resident_bytes: u64,
    pub threads: u32,
}

/// Turns an engine's failure into the worker's reply error.
pub(super) fn reply_error(model_id: &str, error: EngineError) -> ReplyError {
    match error {
        e @ (EngineError::PromptTooLong { .. }
        | EngineError::EmptyPrompt
        | EngineError::Template(_)) => ReplyError::Invalid(e.to_string()),
        EngineError::Upstream { failure, message } => ReplyError::Upstream {
            failure,
            message: format!("the remote server for `{model_id}` failed: {message}"),
        },
        e => ReplyError::Engine(format!("model `{model_id}`: {e}")),
    }
}

/// Runs one reply with `engine` and returns how it went.
pub(super) fn run_reply(
    engine: &mut dyn ChatEngine,
    render: impl FnOnce(&ReplyJob) -> Result<String, EngineError>,
    sink: &mut JobSink,
) -> Result<GenerationStats, EngineError> {
    let (prompt, sampling) = (sink.job.prompt.clone(), sink.job.sampling.clone());
    if let PromptInput::Chat(messages) = &prompt {
        if let Some(outcome) = engine.generate_messages(messages, &sampling, sink) {
            return outcome;
        }
    }
    render(&sink.job).and_then(|prompt| engine.generate(&prompt, &sampling, sink))
}

/// Sends a reply's last event (`Done` or `Failed`), unless its reader stopped reading.
pub(super) fn finish_reply(
    runner: &Runner<'_>,
    mut sink: JobSink,
    outcome: Result<GenerationStats, EngineError>,
) {
    let last = match outcome {
        Ok(stats) => Reply::Done(metrics(runner, &sink, &stats)),
        Err(e) => {
            let error = reply_error(runner.model_id, e);
            match &error {
                ReplyError::Upstream { message, .. } => tracing::warn!("{message}"),
                ReplyError::Engine(message) => tracing::error!("generation failed: {message}"),
                _ => {}
            }
            Reply::Failed(error)
        }
    };
    if sink.stalled {
        tracing::info!(
            model = %runner.model_id,
            "a client stopped reading its reply for {:?}: the reply was stopped",
            sink.send_timeout
        );
    } else {
        sink.deliver(last);
    }
}

fn per_second(count: usize, secs: f64) -> f64 {
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

fn metrics(runner: &Runner<'_>, sink: &JobSink, stats: &GenerationStats) -> GenerationMetrics {
    let now = Instant::now();
    let job = &sink.job;
    let ms = |from: Instant, to: Instant| to.saturating_duration_since(from).as_secs_f64() * 1e3;
    let evaluated = stats.prompt_tokens - stats.cached_prompt_tokens.min(stats.prompt_tokens);
    GenerationMetrics {
        model: runner.model_id.to_string(),
        engine: runner.engine_kind.to_string(),
        engine_detail: runner.engine_detail.to_string(),
        prompt_tokens: stats.prompt_tokens as u32,
        cached_prompt_tokens: stats.cached_prompt_tokens as u32,
        prompt_ms: stats.prompt_secs * 1e3,
        prompt_tokens_per_s: per_second(evaluated, stats.prompt_secs),
        time_to_first_token_ms: ms(job.accepted_at, sink.first_piece_at.unwrap_or(now)),
        queue_ms: ms(job.accepted_at, sink.started),
        generated_tokens: stats.generated_tokens as u32,
        decode_ms: stats.decode_secs * 1e3,
        decode_tokens_per_s: per_second(stats.decode_calls, stats.decode_secs),
        total_ms: ms(job.accepted_at, now),
        model_resident_bytes: runner.resident_bytes,
        finish_reason: stats.finish_reason,
        threads: runner.threads,
        seed: job.sampling.seed as u64,
        batch_peers: stats.batch_peers as u32,
    }
}
