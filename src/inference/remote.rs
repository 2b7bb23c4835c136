//! The remote engine: a model served by any OpenAI-compatible server (llama-server, vLLM,
//! Ollama, another Quantlab). We send the messages as they are (the server applies its own
//! chat template), stream its server-sent events back through the same sink as local engines,
//! and time everything on our side, so TTFT and tokens/s include the network, as a user feels
//! them. Stop drops the connection, which a well-behaved server takes as the end of the work.

use std::{
    ops::ControlFlow,
    time::{Duration, Instant},
};

use futures::StreamExt;
use serde_json::{json, Value};

use super::{
    ChatEngine, EngineError, EngineFacts, GenerationStats, ResolvedSampling, ScoreWindow,
    TextScore, TokenSink, UpstreamFailure,
};
use crate::{
    registry::RemoteSource,
    types::{ChatMessage, FinishReason},
};

/// How long to wait for a connection to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a wait for the next event looks at the Stop flag.
const CANCEL_POLL: Duration = Duration::from_millis(100);
/// An event (one line of the stream) longer than this is not a chat stream.
const MAX_EVENT_BYTES: usize = 1 << 20;

pub struct RemoteEngine {
    source: RemoteSource,
    api_key: Option<String>,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    facts: EngineFacts,
}

fn upstream(failure: UpstreamFailure, message: impl Into<String>) -> EngineError {
    EngineError::Upstream {
        failure,
        message: message.into(),
    }
}

/// The `error.message` of an OpenAI-style error body, or the start of the body.
fn error_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            v["error"]["message"]
                .as_str()
                .or_else(|| v["error"].as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| body.chars().take(300).collect())
}

impl RemoteEngine {
    /// Connects to the server and checks that it serves the model.
    ///
    /// # Errors
    /// `EngineError::Load` when the API key variable is unset, the server cannot be reached
    /// or answers badly, or it does not list the model.
    pub fn load(source: &RemoteSource, context_size: u32) -> Result<Self, EngineError> {
        let load_error = |detail: String| EngineError::Load {
            path: source.base_url.clone(),
            detail,
        };
        let api_key = match &source.api_key_env {
            Some(var) => Some(
                std::env::var(var)
                    .map_err(|_| load_error(format!("the API key variable `{var}` is not set")))?,
            ),
            None => None,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| load_error(format!("cannot start an HTTP runtime: {e}")))?;
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| load_error(e.to_string()))?;
        let engine = Self {
            source: source.clone(),
            api_key,
            client,
            runtime,
            facts: EngineFacts {
                context_size: context_size as usize,
                chat_template: None,
                bos_token: String::new(),
                eos_token: String::new(),
                threads: 0,
                detail: String::new(),
            },
        };
        engine
            .check_model()
            .map_err(|e| load_error(e.to_string()))?;
        Ok(engine)
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.source.base_url.trim_end_matches('/'))
    }

    fn request(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.source.timeout_secs))
    }

    fn check_model(&self) -> Result<(), EngineError> {
        let request = self.request(self.client.get(self.url("models")));
        let timeout = self.timeout();
        let wanted = &self.source.model;
        self.runtime.block_on(async {
            let response = tokio::time::timeout(timeout, request.send())
                .await
                .map_err(|_| {
                    upstream(
                        UpstreamFailure::Timeout,
                        format!("no answer within {timeout:?}"),
                    )
                })?
                .map_err(|e| {
                    upstream(
                        UpstreamFailure::BadAnswer,
                        format!("cannot reach the server: {e}"),
                    )
                })?;
            let status = response.status();
            let body = tokio::time::timeout(timeout, response.text())
                .await
                .map_err(|_| {
                    upstream(
                        UpstreamFailure::Timeout,
                        format!("no answer within {timeout:?}"),
                    )
                })?
                .map_err(|e| upstream(UpstreamFailure::BadAnswer, e.to_string()))?;
            if !status.is_success() {
                return Err(upstream(
                    UpstreamFailure::BadAnswer,
                    format!("GET /models answered {status}: {}", error_message(&body)),
                ));
            }
            let listed: Value = serde_json::from_str(&body).map_err(|_| {
                upstream(
                    UpstreamFailure::BadAnswer,
                    "GET /models did not return JSON: not an OpenAI-compatible server?",
                )
            })?;
            let ids: Vec<&str> = listed["data"]
                .as_array()
                .map(|models| models.iter().filter_map(|m| m["id"].as_str()).collect())
                .unwrap_or_default();
            if ids.contains(&wanted.as_str()) {
                Ok(())
            } else {
                Err(upstream(
                    UpstreamFailure::BadAnswer,
                    format!(
                        "the server does not list model `{wanted}` (it has: {})",
                        ids.join(", ")
                    ),
                ))
            }
        })
    }

    /// Streams one reply for `messages`.
    fn stream_reply(
        &self,
        messages: &[ChatMessage],
        sampling: &ResolvedSampling,
        sink: &mut dyn TokenSink,
    ) -> Result<GenerationStats, EngineError> {
        let mut body = json!({
            "model": self.source.model,
            "messages": messages.iter().map(|m| json!({"role": m.role.as_str(), "content": m.content})).collect::<Vec<_>>(),
            "stream": true,
            "stream_options": { "include_usage": true },
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "top_k": sampling.top_k,
            "repeat_penalty": sampling.repeat_penalty,
            "max_tokens": sampling.max_tokens,
            "seed": sampling.seed,
        });
        if !sampling.stop.is_empty() {
            body["stop"] = json!(sampling.stop);
        }
        // llama-server's and vLLM's extension, sent only when asked (OpenAI has no such field).
        if sampling.ignore_eos {
            body["ignore_eos"] = json!(true);
        }
        // The remote server enforces the format itself.
        if let Some(constraint) = &sampling.constraint {
            body["response_format"] = json!(constraint.format);
        }
        let request = self.request(self.client.post(self.url("chat/completions")).json(&body));
        let timeout = self.timeout();
        self.runtime.block_on(async {
            let started = Instant::now();
            let mut stats = GenerationStats::default();
            let mut reader = EventReader::new(timeout);
            let response = match reader.wait(sink, request.send()).await? {
                Waited::Ready(response) => response.map_err(|e| {
                    upstream(
                        UpstreamFailure::BadAnswer,
                        format!("cannot reach the server: {e}"),
                    )
                })?,
                Waited::Cancelled => {
                    stats.finish_reason = Some(FinishReason::Cancelled);
                    return Ok(stats);
                }
            };
            let status = response.status();
            if !status.is_success() {
                let text = response.text().await.unwrap_or_default();
                return Err(upstream(
                    match status.as_u16() {
                        // Busy or loading over there: worth a retry, unlike a bad answer.
                        429 | 503 => UpstreamFailure::Busy,
                        // It refused the request itself (a prompt too long for it, say).
                        400..=499 => UpstreamFailure::Refused,
                        _ => UpstreamFailure::BadAnswer,
                    },
                    format!("the server answered {status}: {}", error_message(&text)),
                ));
            }
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            if !content_type.starts_with("text/event-stream") {
                return Err(upstream(
                    UpstreamFailure::BadAnswer,
                    format!(
                        "expected a stream of events (text/event-stream), got `{content_type}`"
                    ),
                ));
            }
            let mut stream = response.bytes_stream();
            let mut first_at = None;
            let mut last_at = None;
            let mut usage = None;
            let finish = loop {
                // Events already buffered would otherwise slip past a Stop.
                if sink.cancelled() {
                    break FinishReason::Cancelled;
                }
                let event =
                    match reader.next_event(sink, &mut stream).await? {
                        Some(Some(event)) => event,
                        Some(None) => break FinishReason::Cancelled,
                        None if stats.finish_reason.is_some() => break FinishReason::Stop,
                        None => return Err(upstream(
                            UpstreamFailure::BadAnswer,
                            "the stream ended before the reply did (no finish reason, no [DONE])",
                        )),
                    };
                if event == "[DONE]" {
                    break stats.finish_reason.unwrap_or(FinishReason::Stop);
                }
                let chunk: Value = serde_json::from_str(&event).map_err(|_| {
                    upstream(
                        UpstreamFailure::BadAnswer,
                        format!(
                            "the server sent an event that is not JSON: {:?}",
                            event.chars().take(120).collect::<String>()
                        ),
                    )
                })?;
                if chunk.get("error").is_some() {
                    return Err(upstream(UpstreamFailure::BadAnswer, error_message(&event)));
                }
                if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
                    usage = Some(u.clone());
                }
                let Some(choice) = chunk["choices"].get(0) else {
                    continue;
                };
                if let Some(text) = choice["delta"]["content"]
                    .as_str()
                    .filter(|t| !t.is_empty())
                {
                    let now = Instant::now();
                    first_at.get_or_insert(now);
                    last_at = Some(now);
                    stats.generated_tokens += 1;
                    if sink.piece(text) == ControlFlow::Break(()) {
                        break FinishReason::Cancelled;
                    }
                }
                if let Some(reason) = choice["finish_reason"].as_str() {
                    stats.finish_reason = Some(match reason {
                        "length" => FinishReason::Length,
                        "cancelled" => FinishReason::Cancelled,
                        _ => FinishReason::Stop,
                    });
                }
            };
            // Our own clock: prefill is request to first token, decode is first to last.
            let first_at = first_at.unwrap_or_else(Instant::now);
            stats.prompt_secs = first_at.duration_since(started).as_secs_f64();
            stats.decode_secs =
                last_at.map_or(0.0, |last| last.duration_since(first_at).as_secs_f64());
            stats.decode_calls = stats.generated_tokens.saturating_sub(1);
            if let Some(usage) = usage {
                stats.prompt_tokens = usage["prompt_tokens"].as_u64().unwrap_or(0) as usize;
                if let Some(n) = usage["completion_tokens"].as_u64() {
                    // Servers may send several tokens per event; theirs is the true count.
                    stats.generated_tokens = n as usize;
                    stats.decode_calls = stats.generated_tokens.saturating_sub(1);
                }
            }
            stats.finish_reason = Some(finish);
            Ok(stats)
        })
    }
}

enum Waited<T> {
    Ready(T),
    Cancelled,
}

/// Reads server-sent events with a deadline per event and the Stop flag polled meanwhile.
struct EventReader {
    timeout: Duration,
    buffer: Vec<u8>,
}

impl EventReader {
    fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            buffer: Vec::new(),
        }
    }

    /// Awaits `future`, giving up on Stop or after the timeout.
    async fn wait<T>(
        &self,
        sink: &mut dyn TokenSink,
        future: impl std::future::Future<Output = T>,
    ) -> Result<Waited<T>, EngineError> {
        let deadline = Instant::now() + self.timeout;
        tokio::pin!(future);
        loop {
            if sink.cancelled() {
                return Ok(Waited::Cancelled);
            }
            match tokio::time::timeout(CANCEL_POLL, &mut future).await {
                Ok(value) => return Ok(Waited::Ready(value)),
                Err(_) if Instant::now() >= deadline => {
                    return Err(upstream(
                        UpstreamFailure::Timeout,
                        format!("the server sent nothing for {} s", self.timeout.as_secs()),
                    ))
                }
                Err(_) => {}
            }
        }
    }

    /// The data of the next event: `Some(Some(data))`, `Some(None)` on Stop, `None` at the end.
    async fn next_event<S, B>(
        &mut self,
        sink: &mut dyn TokenSink,
        stream: &mut S,
    ) -> Result<Option<Option<String>>, EngineError>
    where
        S: futures::Stream<Item = reqwest::Result<B>> + Unpin,
        B: AsRef<[u8]>,
    {
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end_matches(['\r', '\n']);
                if let Some(data) = line.strip_prefix("data:") {
                    return Ok(Some(Some(data.trim_start().to_string())));
                }
                continue; // blank separators, comments, `event:` lines
            }
            if self.buffer.len() > MAX_EVENT_BYTES {
                return Err(upstream(
                    UpstreamFailure::BadAnswer,
                    "the server sent a line of over 1 MiB: not a chat stream",
                ));
            }
            match self.wait(sink, stream.next()).await? {
                Waited::Cancelled => return Ok(Some(None)),
                Waited::Ready(None) => return Ok(None),
                Waited::Ready(Some(chunk)) => {
                    let chunk = chunk.map_err(|e| {
                        upstream(
                            UpstreamFailure::BadAnswer,
                            format!("the stream broke off: {e}"),
                        )
                    })?;
                    self.buffer.extend_from_slice(chunk.as_ref());
                }
            }
        }
    }
}

impl ChatEngine for RemoteEngine {
    fn facts(&self) -> &EngineFacts {
        &self.facts
    }

    fn count_tokens(&self, _prompt: &str) -> Result<usize, EngineError> {
        Err(EngineError::Unsupported(
            "a remote server counts its own tokens".into(),
        ))
    }

    fn generate(
        &mut self,
        prompt: &str,
        sampling: &ResolvedSampling,
        sink: &mut dyn TokenSink,
    ) -> Result<GenerationStats, EngineError> {
        // Only reached for text that is not a chat (the worker sends chats as messages).
        let messages = [ChatMessage {
            role: crate::types::Role::User,
            content: prompt.to_string(),
        }];
        self.stream_reply(&messages, sampling, sink)
    }

    fn generate_messages(
        &mut self,
        messages: &[ChatMessage],
        sampling: &ResolvedSampling,
        sink: &mut dyn TokenSink,
    ) -> Option<Result<GenerationStats, EngineError>> {
        Some(self.stream_reply(messages, sampling, sink))
    }

    fn score(
        &mut self,
        _text: &str,
        _window: ScoreWindow,
        _rows: &mut dyn FnMut(&[f32]),
        _cancelled: &mut dyn FnMut() -> bool,
    ) -> Result<TextScore, EngineError> {
        Err(EngineError::Unsupported(
            "perplexity needs every token's probabilities, which chat servers do not return".into(),
        ))
    }
}
