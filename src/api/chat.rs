//! Validates a chat request and hands it to the model's worker. Every API goes through here.

use std::time::Instant;

use crate::{
    error::AppError,
    inference::{sampling, workers::Generation, ResolvedSampling},
    state::App,
    types::{ChatEvent, ChatRequest},
};

/// Checks the request against the limits and queues it; returns the stream of its events.
pub fn start_chat(
    app: &App,
    request: ChatRequest,
    accepted_at: Instant,
) -> Result<Generation, AppError> {
    let sampling = check_chat(app, &request)?;
    app.pool
        .submit(&request.model, request.messages, sampling, accepted_at)
}

/// Every check a chat request must pass before it is queued; returns its resolved sampling.
pub fn check_chat(app: &App, request: &ChatRequest) -> Result<ResolvedSampling, AppError> {
    let limits = &app.settings.limits;
    // The model is checked first so a typo in its id gets a 404, not a complaint about messages.
    app.pool.runnable(&request.model)?;
    if request.messages.is_empty() {
        return Err(AppError::BadRequest(
            "`messages` must contain at least one message".into(),
        ));
    }
    if request.messages.len() > limits.max_messages {
        return Err(AppError::BadRequest(format!(
            "`messages` has {} entries; at most {} are accepted",
            request.messages.len(),
            limits.max_messages
        )));
    }
    let chars: usize = request
        .messages
        .iter()
        .map(|m| m.content.chars().count())
        .sum();
    if chars > limits.max_prompt_chars {
        return Err(AppError::BadRequest(format!(
            "the messages hold {chars} characters; at most {} are accepted",
            limits.max_prompt_chars
        )));
    }
    sampling::resolve(&request.sampling, limits.max_new_tokens)
}

/// Waits for a generation's first event so an HTTP handler can still choose its status code:
/// errors found before any text (prompt too long, model failed to load) become proper 4xx/5xx
/// responses instead of an error inside a 200 stream.
pub async fn first_event(generation: &mut Generation) -> Result<ChatEvent, AppError> {
    match generation.events.recv().await {
        Some(ChatEvent::Error { status, message }) => Err(error_from_status(status, message)),
        Some(event) => Ok(event),
        None => Err(AppError::Internal(
            "the model worker ended without a reply".into(),
        )),
    }
}

pub fn error_from_status(status: u16, message: String) -> AppError {
    match status {
        400 => AppError::BadRequest(message),
        429 => AppError::Overloaded {
            message,
            retry_after_secs: 5,
        },
        502 => AppError::BadGateway(message),
        503 => AppError::ModelUnavailable(message),
        504 => AppError::GatewayTimeout(message),
        _ => AppError::Internal(message),
    }
}
