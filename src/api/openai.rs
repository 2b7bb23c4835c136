//! An OpenAI-compatible API (`/v1/models`, `/v1/chat/completions`, streaming or not) so
//! existing clients, such as the official `openai` Python package, work unchanged.

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
    chat::{first_reply, refuse_while_loading},
    json::ApiJson,
    start_chat,
};
use crate::{
    error::AppError,
    inference::workers::Reply,
    state::AppState,
    types::{ChatMessage, ChatRequest, GenerationMetrics, Role, SamplingParams},
};

pub async fn models(State(state): State<AppState>) -> Json<Value> {
    let data: Vec<Value> = state
        .app
        .registry
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

/// Fields OpenAI defines that we honour; other fields are ignored as OpenAI-compatible servers do.
#[derive(Debug, Deserialize)]
pub struct CompletionBody {
    model: String,
    messages: Vec<OpenAiMessage>,
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
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    n: Option<u32>,
    stop: Option<Value>,
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
    if body.n.is_some_and(|n| n != 1) {
        return Err(AppError::BadRequest(
            "`n` must be 1: one choice per request".into(),
        ));
    }
    let has_stop = match &body.stop {
        None | Some(Value::Null) => false,
        Some(Value::Array(items)) => !items.is_empty(),
        Some(_) => true,
    };
    if has_stop {
        return Err(AppError::BadRequest(
            "`stop` sequences are not supported yet; the model stops at its own end token or `max_tokens`".into(),
        ));
    }
    let request = ChatRequest {
        model: body.model.clone(),
        messages: convert_messages(body.messages)?,
        sampling: SamplingParams {
            temperature: body.temperature,
            top_p: body.top_p,
            top_k: body.top_k,
            repeat_penalty: body.repeat_penalty,
            max_tokens: body.max_completion_tokens.or(body.max_tokens),
            seed: body.seed,
            cache_prompt: body.cache_prompt,
        },
        conversation_id: None,
    };
    super::chat::check_chat(&state.app, &request)?;
    refuse_while_loading(&state.app, &request.model)?;
    let mut generation = start_chat(&state.app, request, accepted_at)?;
    let first = first_reply(&mut generation).await?;
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let model = body.model;

    if !body.stream {
        let mut content = String::new();
        let mut event = Some(first);
        while let Some(current) = event.take() {
            match current {
                Reply::Queued { .. } => {}
                Reply::Token(text) => content.push_str(&text),
                Reply::Done(metrics) => {
                    let finish = metrics.finish_reason.map(|f| f.openai()).unwrap_or("stop");
                    return Ok(Json(json!({
                        "id": id, "object": "chat.completion", "created": created, "model": model,
                        "choices": [{
                            "index": 0,
                            "message": { "role": "assistant", "content": content },
                            "finish_reason": finish,
                        }],
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

    let include_usage = body.stream_options.is_some_and(|o| o.include_usage);
    let chunk = move |delta: Value, finish: Option<&str>| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
        })
    };
    let opening = chunk(json!({ "role": "assistant", "content": "" }), None);
    let events = futures::stream::once(async move { first })
        .chain(ReceiverStream::new(generation.replies))
        .flat_map(move |event| {
            let mut out: Vec<Value> = Vec::new();
            match event {
                Reply::Queued { .. } => {}
                Reply::Token(text) => out.push(chunk(json!({ "content": text }), None)),
                Reply::Done(metrics) => {
                    let finish = metrics.finish_reason.map(|f| f.openai()).unwrap_or("stop");
                    let mut last = chunk(json!({}), Some(finish));
                    last["quantlab_metrics"] = json!(metrics);
                    out.push(last);
                    if include_usage {
                        let mut usage_chunk = chunk(json!({}), None);
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
    let stream = futures::stream::once(async move { opening })
        .chain(events)
        .map(|value| Ok::<_, Infallible>(Event::default().data(value.to_string())))
        .chain(futures::stream::once(async {
            Ok(Event::default().data("[DONE]"))
        }));
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
