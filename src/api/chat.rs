//! Validates a chat request and hands it to the model's worker, and maps what the worker
//! answers to what clients hear — the one place where a reply's failure gets its HTTP status.

use std::time::Instant;

use crate::{
    error::AppError,
    inference::{
        sampling,
        workers::{Generation, PromptInput, Reply, ReplyError, RETRY_AFTER_SECS},
        ResolvedSampling, UpstreamFailure,
    },
    state::App,
    types::{ChatEvent, ChatRequest, EngineKind, SamplingParams},
};

/// Checks the request against the limits and queues it; returns the stream of its replies.
pub fn start_chat(
    app: &App,
    request: ChatRequest,
    accepted_at: Instant,
) -> Result<Generation, AppError> {
    let sampling = check_chat(app, &request)?;
    app.pool.submit(
        &request.model,
        PromptInput::Chat(request.messages),
        sampling,
        accepted_at,
    )
}

/// For clients that cannot be told to wait (the OpenAI API): a model that is not loaded yet
/// starts loading and the request gets 503 `model_loading` with Retry-After, as `/health` says.
pub fn refuse_while_loading(app: &App, model: &str) -> Result<(), AppError> {
    if app.pool.is_loaded(model) {
        return Ok(());
    }
    // A file that cannot be read fails the same way on every attempt: say why, rather than
    // "loading" to a client that retries forever. The chat page's next request tries again.
    if let Some(reason) = app.pool.load_error(model) {
        return Err(AppError::ModelUnavailable(reason));
    }
    app.pool.preload(model)?;
    Err(AppError::Loading {
        message: format!("model `{model}` is loading; retry in a few seconds"),
        retry_after_secs: RETRY_AFTER_SECS,
    })
}

/// Every check a chat request must pass before it is queued; returns its resolved sampling.
pub fn check_chat(app: &App, request: &ChatRequest) -> Result<ResolvedSampling, AppError> {
    let limits = &app.settings.limits;
    // The model is checked first so a typo in its id gets a 404, not a complaint about messages.
    let engine = app.pool.runnable(&request.model)?.engine;
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
    resolve_sampling(app, &request.model, engine, &request.sampling)
}

/// Checks and fills a request's sampling for the engine that will run it: a `response_format`
/// goes only to engines that can hold a reply to it.
pub fn resolve_sampling(
    app: &App,
    model: &str,
    engine: EngineKind,
    params: &SamplingParams,
) -> Result<ResolvedSampling, AppError> {
    let sampling = sampling::resolve(params, app.settings.limits.max_new_tokens)?;
    if sampling.constraint.is_some() && !engine.constrains_output() {
        return Err(AppError::BadRequest(format!(
            "`response_format` needs an engine that can constrain its output (llama_cpp, or a remote server); model `{model}` runs on {}, so its reply could not be held to the format",
            engine.as_str()
        )));
    }
    // Only a local engine sees the distribution it samples from.
    if sampling.logprobs.is_some() && engine == EngineKind::Remote {
        return Err(AppError::BadRequest(format!(
            "`logprobs` come from the local engines; model `{model}` is served by a remote server"
        )));
    }
    Ok(sampling)
}

impl From<ReplyError> for AppError {
    fn from(error: ReplyError) -> Self {
        match error {
            ReplyError::Invalid(message) => AppError::BadRequest(message),
            ReplyError::Unavailable(message) => AppError::ModelUnavailable(message),
            ReplyError::ShuttingDown => AppError::ShuttingDown(error.to_string()),
            // Logged with its detail; the client gets a request id.
            ReplyError::Engine(detail) => AppError::internal(detail),
            ReplyError::Upstream { failure, message } => match failure {
                UpstreamFailure::Busy => AppError::Overloaded {
                    message,
                    retry_after_secs: RETRY_AFTER_SECS,
                },
                UpstreamFailure::Refused => AppError::BadRequest(message),
                UpstreamFailure::BadAnswer => AppError::BadGateway(message),
                UpstreamFailure::Timeout => AppError::GatewayTimeout(message),
            },
        }
    }
}

/// What a streaming client hears for one reply event.
pub fn chat_event(reply: Reply) -> ChatEvent {
    match reply {
        Reply::Queued { ahead, loading } => ChatEvent::Queued { ahead, loading },
        Reply::Token { text, logprobs } => ChatEvent::Token { text, logprobs },
        Reply::Done(metrics) => ChatEvent::Done { metrics },
        Reply::Failed(error) => error_event(&AppError::from(error)),
    }
}

pub fn error_event(error: &AppError) -> ChatEvent {
    ChatEvent::Error {
        status: error.status(),
        message: error.to_string(),
    }
}

/// The first reply that is not a queue update, so an HTTP handler can still choose its status:
/// failures found before any text (prompt too long, model failed to load) become 4xx/5xx
/// responses instead of an error inside a 200 stream.
pub async fn first_reply(generation: &mut Generation) -> Result<Reply, AppError> {
    loop {
        match generation.replies.recv().await {
            Some(Reply::Queued { .. }) => continue,
            Some(Reply::Failed(error)) => return Err(error.into()),
            Some(reply) => return Ok(reply),
            None => return Err(AppError::internal("the model worker ended without a reply")),
        }
    }
}
