//! Quantlab's own JSON API: health, the model list, and chat as server-sent events.

use std::{convert::Infallible, time::Instant};

use axum::{
    extract::State,
    http::StatusCode,
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
    Json,
};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_stream::wrappers::ReceiverStream;

use super::{chat::chat_event, json::ApiJson, start_chat};
use crate::{
    error::AppError,
    inference::workers::Reply,
    state::{App, AppState},
    types::{ChatEvent, ChatMessage, ChatRequest, ModelInfo, ResponseFormat, SamplingParams},
};

pub fn model_list(app: &App) -> Vec<ModelInfo> {
    let registry = app.registry.current();
    registry
        .models
        .iter()
        .map(|entry| {
            let mut info = registry.info(entry, app.pool.is_loaded(&entry.id));
            info.job = app.model_jobs.status(&entry.id);
            info
        })
        .collect()
}

pub async fn models(State(state): State<AppState>) -> Json<Vec<ModelInfo>> {
    Json(model_list(&state.app))
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    default_model: String,
    detail: Option<String>,
}

/// 200 `ready` once the default model is loaded; 503 `loading` (or `error`) before.
pub async fn health(State(state): State<AppState>) -> Response {
    let app = &state.app;
    let registry = app.registry.current();
    let id = registry.default_id.clone();
    let (status, detail) = if app.pool.is_loaded(&id) {
        ("ready", None)
    } else if let Some(error) = app.pool.load_error(&id) {
        ("error", Some(error))
    } else if let Some((reason, _)) = registry.get(&id).and_then(|e| registry.unavailability(e)) {
        ("error", Some(reason))
    } else {
        ("loading", None)
    };
    let code = if status == "ready" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(Health {
            status,
            default_model: id,
            detail,
        }),
    )
        .into_response()
}

/// The body of `POST /api/chat/stream`: OpenAI's chat fields plus `top_k` and `repeat_penalty`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatStreamBody {
    /// Defaults to the registry's default model.
    model: Option<String>,
    messages: Vec<ChatMessage>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<u32>,
    repeat_penalty: Option<f32>,
    max_tokens: Option<u32>,
    seed: Option<u64>,
    /// `false` evaluates the whole prompt again instead of reusing a cached prefix
    /// (llama-server's extension; default true).
    cache_prompt: Option<bool>,
    /// Never end at an end-of-turn token (llama-server's `ignore_eos`).
    #[serde(default)]
    ignore_eos: Option<bool>,
    /// `{"type": "json_object"}` or `{"type": "json_schema", "json_schema": {"schema": …}}`.
    response_format: Option<ResponseFormat>,
    /// Up to four texts the reply ends before.
    stop: Option<Vec<String>>,
}

pub async fn chat_stream(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ChatStreamBody>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    let accepted_at = Instant::now();
    let request = ChatRequest {
        model: body
            .model
            .unwrap_or_else(|| state.app.registry.current().default_id.clone()),
        messages: body.messages,
        sampling: SamplingParams {
            temperature: body.temperature,
            top_p: body.top_p,
            top_k: body.top_k,
            repeat_penalty: body.repeat_penalty,
            max_tokens: body.max_tokens,
            seed: body.seed,
            cache_prompt: body.cache_prompt,
            ignore_eos: body.ignore_eos,
            response_format: body.response_format,
            stop: body.stop,
            logprobs: None,
        },
        conversation_id: None,
        parent_id: None,
        reply_to: None,
    };
    let mut generation = start_chat(&state.app, request, accepted_at)?;
    // Failures before anything else are plain HTTP errors. A request that has to wait commits
    // to a stream instead, so the client hears its place in the queue; later failures are
    // `event: error` then.
    let first = match generation.replies.recv().await {
        Some(Reply::Failed(error)) => return Err(error.into()),
        Some(reply) => reply,
        None => return Err(AppError::internal("the model worker ended without a reply")),
    };
    // Dropping this stream (client gone) drops the receiver, which stops the worker.
    let rest = ReceiverStream::new(generation.replies);
    let events = futures::stream::once(async move { first })
        .chain(rest)
        .map(|reply| Ok(sse_event(&chat_event(reply))));
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

fn sse_event(event: &ChatEvent) -> Event {
    let (name, data) = match event {
        ChatEvent::Queued { ahead, loading } => (
            "queued",
            serde_json::json!({ "ahead": ahead, "loading": loading }),
        ),
        ChatEvent::Token { text, .. } => ("token", serde_json::json!({ "text": text })),
        ChatEvent::Done { metrics } => ("metrics", serde_json::json!(metrics)),
        ChatEvent::Error { status, message } => (
            "error",
            serde_json::json!({ "status": status, "message": message }),
        ),
        ChatEvent::Saved {
            conversation_id, ..
        } => (
            "saved",
            serde_json::json!({ "conversation_id": conversation_id }),
        ),
    };
    Event::default().event(name).data(data.to_string())
}
