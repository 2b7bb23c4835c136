//! An OpenAI-compatible API (`/v1/models`, `/v1/chat/completions`, `/v1/completions`,
//! streaming or not) so existing clients, such as the official `openai` Python package, work
//! unchanged.

use std::{
    convert::Infallible,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    extract::State,
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
    Json,
};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_stream::wrappers::ReceiverStream;

use super::{
    chat::{first_reply, refuse_while_loading, resolve_sampling},
    json::ApiJson,
    start_chat,
};
use crate::{
    error::AppError,
    inference::workers::{Generation, PromptInput, Reply},
    state::AppState,
    types::{
        ChatMessage, ChatRequest, EngineKind, GenerationMetrics, ResponseFormat, Role,
        SamplingParams, TokenLogprob,
    },
};

pub async fn models(State(state): State<AppState>) -> Json<Value> {
    let data: Vec<Value> = state
        .app
        .registry
        .current()
        .models
        .iter()
        .map(|m| json!({ "id": m.id, "object": "model", "created": 0, "owned_by": "quantlab" }))
        .collect();
    Json(json!({ "object": "list", "data": data }))
}

#[derive(Debug, Deserialize)]
struct OpenAiMessage {
    role: String,
    content: Option<MessageContent>,
}

/// OpenAI accepts a string or a list of typed parts.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
struct ContentPart {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// The sampling and streaming fields both `/v1` endpoints take. Fields OpenAI defines that we
/// do not honour are ignored, as OpenAI-compatible servers do.
#[derive(Debug, Deserialize)]
struct OpenAiOptions {
    temperature: Option<f32>,
    top_p: Option<f32>,
    /// Not in OpenAI's API; llama.cpp's server and vLLM accept it too.
    top_k: Option<u32>,
    repeat_penalty: Option<f32>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    seed: Option<u64>,
    /// `false` evaluates the whole prompt again instead of reusing a cached prefix
    /// (llama-server's extension; default true).
    cache_prompt: Option<bool>,
    /// `true` never ends the reply at an end-of-turn token, so it runs to the token limit
    /// (llama-server's extension, for measurements).
    ignore_eos: Option<bool>,
    /// `{"type": "json_object"}` or `{"type": "json_schema", "json_schema": {"schema": …}}`.
    response_format: Option<ResponseFormat>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    n: Option<u32>,
    /// A string or a list of strings.
    stop: Option<Value>,
}

impl OpenAiOptions {
    fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }

    /// Our sampling parameters; refuses more than one choice and a malformed `stop`.
    fn sampling(&mut self) -> Result<SamplingParams, AppError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(AppError::BadRequest(
                "`n` must be 1: one choice per request".into(),
            ));
        }
        let malformed =
            || AppError::BadRequest("`stop` must be a string or a list of strings".into());
        let stop = match self.stop.take() {
            None | Some(Value::Null) => None,
            Some(Value::String(one)) => Some(vec![one]),
            Some(Value::Array(items)) => Some(
                items
                    .into_iter()
                    .map(|item| match item {
                        Value::String(text) => Ok(text),
                        _ => Err(malformed()),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(_) => return Err(malformed()),
        };
        Ok(SamplingParams {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            repeat_penalty: self.repeat_penalty,
            max_tokens: self.max_completion_tokens.or(self.max_tokens),
            seed: self.seed,
            cache_prompt: self.cache_prompt,
            ignore_eos: self.ignore_eos,
            response_format: self.response_format.take(),
            stop,
            logprobs: None,
        })
    }
}

#[derive(Debug, Deserialize)]
pub struct CompletionBody {
    model: String,
    messages: Vec<OpenAiMessage>,
    /// Report each token's log-probability (with `top_logprobs` alternatives, 0–20).
    logprobs: Option<bool>,
    top_logprobs: Option<u8>,
    #[serde(flatten)]
    options: OpenAiOptions,
}

/// OpenAI's pair of fields as our one setting: `top_logprobs` only goes with `logprobs: true`.
fn logprobs_setting(logprobs: Option<bool>, top: Option<u8>) -> Result<Option<u8>, AppError> {
    match (logprobs, top) {
        (Some(true), top) => Ok(Some(top.unwrap_or(0))),
        (_, Some(_)) => Err(AppError::BadRequest(
            "`top_logprobs` needs `logprobs: true`".into(),
        )),
        _ => Ok(None),
    }
}

fn convert_messages(messages: Vec<OpenAiMessage>) -> Result<Vec<ChatMessage>, AppError> {
    messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let role = match m.role.as_str() {
                "system" | "developer" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                other => {
                    return Err(AppError::BadRequest(format!(
                    "messages[{i}].role `{other}` is not supported (use system, user or assistant)"
                )))
                }
            };
            let content = match m.content {
                None => String::new(),
                Some(MessageContent::Text(text)) => text,
                Some(MessageContent::Parts(parts)) => {
                    let mut text = String::new();
                    for part in parts {
                        match (part.kind.as_str(), part.text) {
                            ("text", Some(t)) => text.push_str(&t),
                            (kind, _) => {
                                return Err(AppError::BadRequest(format!(
                                "messages[{i}] has a `{kind}` part; only text parts are supported"
                            )))
                            }
                        }
                    }
                    text
                }
            };
            Ok(ChatMessage { role, content })
        })
        .collect()
}

fn usage(metrics: &GenerationMetrics) -> Value {
    json!({
        "prompt_tokens": metrics.prompt_tokens,
        "completion_tokens": metrics.generated_tokens,
        "total_tokens": metrics.prompt_tokens + metrics.generated_tokens,
        // OpenAI's field for prompt tokens served from the cache.
        "prompt_tokens_details": { "cached_tokens": metrics.cached_prompt_tokens },
    })
}

pub async fn chat_completions(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CompletionBody>,
) -> Result<Response, AppError> {
    let accepted_at = Instant::now();
    let mut options = body.options;
    let mut sampling = options.sampling()?;
    sampling.logprobs = logprobs_setting(body.logprobs, body.top_logprobs)?;
    let with_logprobs = sampling.logprobs.is_some();
    let request = ChatRequest {
        model: body.model.clone(),
        sampling,
        messages: convert_messages(body.messages)?,
        conversation_id: None,
        parent_id: None,
        reply_to: None,
    };
    super::chat::check_chat(&state.app, &request)?;
    refuse_while_loading(&state.app, &request.model)?;
    let mut generation = start_chat(&state.app, request, accepted_at)?;
    let first = first_reply(&mut generation).await?;
    let shape = Shape::Chat { with_logprobs };
    respond(generation, first, shape, body.model, &options).await
}

/// The body of `/v1/completions`: a plain prompt the model continues (no chat template), for
/// base models such as Gemma-3-270M.
#[derive(Debug, Deserialize)]
pub struct TextCompletionBody {
    model: String,
    prompt: PromptField,
    #[serde(flatten)]
    options: OpenAiOptions,
    #[serde(default)]
    echo: bool,
    suffix: Option<String>,
    logprobs: Option<Value>,
}

/// OpenAI takes one prompt or a list of them; one per request here.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PromptField {
    One(String),
    Many(Vec<String>),
}

pub async fn completions(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<TextCompletionBody>,
) -> Result<Response, AppError> {
    let accepted_at = Instant::now();
    let mut options = body.options;
    let params = options.sampling()?;
    let refuse = |field: &str, why: &str| Err(AppError::BadRequest(format!("`{field}` {why}")));
    if body.echo {
        return refuse(
            "echo",
            "is not supported: the reply holds the continuation only",
        );
    }
    if body.suffix.is_some() {
        return refuse("suffix", "(fill in the middle) is not supported");
    }
    if body.logprobs.as_ref().is_some_and(|v| !v.is_null()) {
        return refuse("logprobs", "is not supported yet");
    }
    let prompt = match body.prompt {
        PromptField::One(text) => text,
        PromptField::Many(mut texts) if texts.len() == 1 => texts.remove(0),
        PromptField::Many(_) => {
            return refuse("prompt", "must be one string: one prompt per request")
        }
    };
    if prompt.is_empty() {
        return refuse(
            "prompt",
            "is empty: give the text the model should continue",
        );
    }
    let limits = &state.app.settings.limits;
    let chars = prompt.chars().count();
    if chars > limits.max_prompt_chars {
        return Err(AppError::BadRequest(format!(
            "`prompt` holds {chars} characters; at most {} are accepted",
            limits.max_prompt_chars
        )));
    }
    let entry = state.app.pool.runnable(&body.model)?;
    if entry.engine == EngineKind::Remote {
        return Err(AppError::BadRequest(format!(
            "model `{}` is served by a remote chat API; use /v1/chat/completions for it",
            body.model
        )));
    }
    let sampling = resolve_sampling(&state.app, &body.model, entry.engine, &params)?;
    refuse_while_loading(&state.app, &body.model)?;
    let mut generation = state.app.pool.submit(
        &body.model,
        PromptInput::Text(prompt),
        sampling,
        accepted_at,
    )?;
    let first = first_reply(&mut generation).await?;
    respond(generation, first, Shape::Text, body.model, &options).await
}

/// How a reply is dressed: a chat message or plain text.
#[derive(Clone, Copy)]
enum Shape {
    Chat { with_logprobs: bool },
    Text,
}

impl Shape {
    fn id(self) -> String {
        let prefix = match self {
            Shape::Chat { .. } => "chatcmpl",
            Shape::Text => "cmpl",
        };
        format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
    }

    fn object(self, stream: bool) -> &'static str {
        match (self, stream) {
            (Shape::Chat { .. }, false) => "chat.completion",
            (Shape::Chat { .. }, true) => "chat.completion.chunk",
            (Shape::Text, _) => "text_completion",
        }
    }

    /// One choice holding `text` and the log-probabilities of its tokens (`null` unless asked
    /// for); `whole` for the non-streamed reply.
    fn choice(
        self,
        text: &str,
        logprobs: &[TokenLogprob],
        finish: Option<&str>,
        whole: bool,
    ) -> Value {
        let logprobs = match self {
            Shape::Chat {
                with_logprobs: true,
            } => json!({ "content": logprobs }),
            _ => Value::Null,
        };
        match self {
            Shape::Chat { .. } if whole => json!({
                "index": 0,
                "message": { "role": "assistant", "content": text },
                "logprobs": logprobs,
                "finish_reason": finish,
            }),
            Shape::Chat { .. } if finish.is_some() => {
                json!({ "index": 0, "delta": {}, "logprobs": null, "finish_reason": finish })
            }
            Shape::Chat { .. } => json!({
                "index": 0, "delta": { "content": text }, "logprobs": logprobs,
                "finish_reason": finish,
            }),
            Shape::Text => json!({
                "index": 0, "text": text, "logprobs": null, "finish_reason": finish,
            }),
        }
    }
}

/// Sends a generation as OpenAI does: one JSON body, or server-sent events ending in `[DONE]`.
async fn respond(
    mut generation: Generation,
    first: Reply,
    shape: Shape,
    model: String,
    options: &OpenAiOptions,
) -> Result<Response, AppError> {
    let include_usage = options.include_usage();
    let id = shape.id();
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);

    if !options.stream {
        let mut content = String::new();
        let mut entries: Vec<TokenLogprob> = Vec::new();
        let mut event = Some(first);
        while let Some(current) = event.take() {
            match current {
                Reply::Queued { .. } => {}
                Reply::Token { text, logprobs } => {
                    content.push_str(&text);
                    entries.extend(logprobs);
                }
                Reply::Done(metrics) => {
                    let finish = metrics.finish_reason.map(|f| f.openai()).unwrap_or("stop");
                    return Ok(Json(json!({
                        "id": id, "object": shape.object(false), "created": created, "model": model,
                        "choices": [shape.choice(&content, &entries, Some(finish), true)],
                        "usage": usage(&metrics),
                        "quantlab_metrics": metrics,
                    }))
                    .into_response());
                }
                Reply::Failed(error) => return Err(error.into()),
            }
            event = generation.replies.recv().await;
        }
        return Err(AppError::internal("the model worker ended without a reply"));
    }

    let chunk = move |choice: Value| {
        json!({
            "id": id, "object": shape.object(true), "created": created, "model": model,
            "choices": [choice],
        })
    };
    // Chat streams open with the role, as OpenAI's do.
    let opening = match shape {
        Shape::Chat { .. } => Some(chunk(json!({
            "index": 0, "delta": { "role": "assistant", "content": "" }, "logprobs": null,
            "finish_reason": null,
        }))),
        Shape::Text => None,
    };
    let events = futures::stream::once(async move { first })
        .chain(ReceiverStream::new(generation.replies))
        .flat_map(move |event| {
            let mut out: Vec<Value> = Vec::new();
            match event {
                Reply::Queued { .. } => {}
                Reply::Token { text, logprobs } => {
                    out.push(chunk(shape.choice(&text, &logprobs, None, false)))
                }
                Reply::Done(metrics) => {
                    let finish = metrics.finish_reason.map(|f| f.openai()).unwrap_or("stop");
                    let mut last = chunk(shape.choice("", &[], Some(finish), false));
                    last["quantlab_metrics"] = json!(metrics);
                    out.push(last);
                    if include_usage {
                        let mut usage_chunk = chunk(Value::Null);
                        usage_chunk["choices"] = json!([]);
                        usage_chunk["usage"] = usage(&metrics);
                        out.push(usage_chunk);
                    }
                }
                Reply::Failed(error) => {
                    let error = AppError::from(error);
                    out.push(json!({
                        "error": { "message": error.to_string(), "type": error.kind(), "code": error.status() }
                    }))
                }
            }
            futures::stream::iter(out)
        });
    let stream = futures::stream::iter(opening)
        .chain(events)
        .map(|value| Ok::<_, Infallible>(Event::default().data(value.to_string())))
        .chain(futures::stream::once(async {
            Ok(Event::default().data("[DONE]"))
        }));
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
