//! Server functions the UI calls. Thin: take the state, call a service, map the error.

use leptos::prelude::*;
use server_fn::{codec::JsonEncoding, BoxedStream, Websocket};

use crate::{
    error::AppError,
    types::{
        ChatClientMsg, ChatEvent, Conversation, ConversationSummary, ModelInfo, PersistenceStatus,
    },
};

#[server(prefix = "/ui", endpoint = "models")]
pub async fn list_models() -> Result<Vec<ModelInfo>, AppError> {
    let state = expect_context::<crate::state::AppState>();
    Ok(crate::api::model_list(&state.app))
}

/// A chat reply over a websocket: the browser sends `Start`, then maybe `Stop`; the server
/// sends tokens, then `Done` with the metrics (or `Error`), then `Saved` once the turn is
/// durable when the request names a conversation. Closing the socket stops the model, and the
/// reply is still saved as far as it got.
#[server(prefix = "/ui", endpoint = "chat", protocol = Websocket<JsonEncoding, JsonEncoding>)]
pub async fn chat_socket(
    input: BoxedStream<ChatClientMsg, AppError>,
) -> Result<BoxedStream<ChatEvent, AppError>, AppError> {
    let state = expect_context::<crate::state::AppState>();
    let (tx, rx) = futures::channel::mpsc::unbounded();
    tokio::spawn(ssr::relay(state, input, tx));
    Ok(rx.into())
}

#[server(prefix = "/ui", endpoint = "conversations")]
pub async fn list_conversations(
    query: Option<String>,
) -> Result<Vec<ConversationSummary>, AppError> {
    let state = expect_context::<crate::state::AppState>();
    let query = query.filter(|q| !q.trim().is_empty());
    state.app.store(move |s| s.list(query.as_deref())).await
}

#[server(prefix = "/ui", endpoint = "conversation")]
pub async fn get_conversation(id: String) -> Result<Conversation, AppError> {
    let state = expect_context::<crate::state::AppState>();
    let id = crate::api::conversations::parse_id(&id)?;
    state.app.store(move |s| s.get(id)).await
}

#[server(prefix = "/ui", endpoint = "conversation_new")]
pub async fn create_conversation(title: String) -> Result<Conversation, AppError> {
    let state = expect_context::<crate::state::AppState>();
    let new = crate::storage::NewConversation {
        title,
        ..Default::default()
    };
    state.app.store(move |s| s.create(new)).await
}

#[server(prefix = "/ui", endpoint = "conversation_rename")]
pub async fn rename_conversation(
    id: String,
    title: String,
) -> Result<ConversationSummary, AppError> {
    let state = expect_context::<crate::state::AppState>();
    let id = crate::api::conversations::parse_id(&id)?;
    state.app.store(move |s| s.rename(id, &title)).await
}

#[server(prefix = "/ui", endpoint = "conversation_delete")]
pub async fn delete_conversation(id: String) -> Result<(), AppError> {
    let state = expect_context::<crate::state::AppState>();
    let id = crate::api::conversations::parse_id(&id)?;
    state.app.store(move |s| s.delete(id)).await
}

/// Imports an exported conversation (the JSON text of a file the person picked).
#[server(prefix = "/ui", endpoint = "conversation_import")]
pub async fn import_conversation(json: String) -> Result<Conversation, AppError> {
    let state = expect_context::<crate::state::AppState>();
    let new = crate::api::conversations::parse_import(&json)?;
    state.app.store(move |s| s.create(new)).await
}

#[server(prefix = "/ui", endpoint = "persistence")]
pub async fn get_persistence() -> Result<PersistenceStatus, AppError> {
    let state = expect_context::<crate::state::AppState>();
    Ok(state.app.conversations.status())
}

/// Server-side half of `chat_socket`, public for tests.
#[cfg(feature = "ssr")]
pub mod ssr {
    use std::time::Instant;

    use futures::{channel::mpsc::UnboundedSender, StreamExt};
    use server_fn::BoxedStream;
    use uuid::Uuid;

    use crate::{
        error::AppError,
        state::{App, AppState},
        storage::new_message,
        types::{ChatClientMsg, ChatEvent, ChatRequest, GenerationMetrics, Role},
    };

    type Outgoing = UnboundedSender<Result<ChatEvent, AppError>>;

    fn send_error(tx: &Outgoing, error: AppError) {
        let _ = tx.unbounded_send(Ok(ChatEvent::Error {
            status: error.status(),
            message: error.to_string(),
        }));
    }

    /// Saves the reply (complete or interrupted) with its provenance.
    async fn save_reply(
        app: &App,
        conversation: Uuid,
        request: &ChatRequest,
        text: String,
        metrics: Option<GenerationMetrics>,
    ) -> Result<(), AppError> {
        let mut reply = new_message(Role::Assistant, text);
        reply.interrupted = metrics
            .as_ref()
            .is_none_or(|m| m.finish_reason == Some(crate::types::FinishReason::Cancelled));
        reply.model = Some(request.model.clone());
        reply.engine = metrics.as_ref().map(|m| m.engine.clone());
        let mut sampling = request.sampling.clone();
        sampling.seed = metrics.as_ref().map(|m| m.seed).or(sampling.seed);
        reply.sampling = Some(sampling);
        reply.metrics = metrics;
        app.store(move |s| s.append(conversation, reply))
            .await
            .map(|_| ())
    }

    /// Runs one reply: waits for `Start`, streams events back, turns `Stop` or a closed socket
    /// into a cancellation, and saves the turn when the request names a conversation.
    pub async fn relay(
        state: AppState,
        mut input: BoxedStream<ChatClientMsg, AppError>,
        tx: Outgoing,
    ) {
        let app = state.app.clone();
        let limit = app.settings.limits.max_ws_message_bytes;
        let request = match input.next().await {
            Some(Ok(ChatClientMsg::Start(request))) => request,
            Some(Ok(ChatClientMsg::Stop)) | None => return,
            Some(Err(e)) => return send_error(&tx, AppError::BadRequest(e.to_string())),
        };
        let accepted_at = Instant::now();
        let size = serde_json::to_vec(&request)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > limit {
            return send_error(
                &tx,
                AppError::PayloadTooLarge(format!(
                    "the message is {size} bytes; websocket messages are limited to {limit} bytes"
                )),
            );
        }
        let conversation = match request
            .conversation_id
            .as_deref()
            .map(crate::api::conversations::parse_id)
        {
            None => None,
            Some(Ok(id)) => Some(id),
            Some(Err(e)) => return send_error(&tx, e),
        };
        let mut generation = match crate::api::start_chat(&app, request.clone(), accepted_at) {
            Ok(generation) => generation,
            Err(e) => return send_error(&tx, e),
        };
        // The question is saved before the answer streams, so a crash mid-reply keeps it.
        if let (Some(id), Some(question)) = (conversation, request.messages.last()) {
            let message = new_message(question.role, question.content.clone());
            if let Err(e) = app.store(move |s| s.append(id, message)).await {
                generation.stop();
                return send_error(
                    &tx,
                    AppError::Internal(format!("your message could not be saved: {e}")),
                );
            }
        }
        let mut text = String::new();
        let mut metrics = None;
        let mut failed = false;
        let mut input_open = true;
        loop {
            tokio::select! {
                event = generation.events.recv() => {
                    let Some(event) = event else { break };
                    match &event {
                        ChatEvent::Token { text: piece } => text.push_str(piece),
                        ChatEvent::Done { metrics: m } => metrics = Some(m.clone()),
                        ChatEvent::Error { .. } => failed = true,
                        ChatEvent::Saved { .. } => {}
                    }
                    let last = !matches!(event, ChatEvent::Token { .. });
                    if tx.unbounded_send(Ok(event)).is_err() {
                        break; // socket gone: dropping `generation` stops the worker
                    }
                    if last {
                        break;
                    }
                }
                message = input.next(), if input_open => match message {
                    Some(Ok(ChatClientMsg::Start(_))) => {}
                    Some(Ok(ChatClientMsg::Stop)) | Some(Err(_)) | None => {
                        input_open = false;
                        generation.stop();
                    }
                },
            }
        }
        drop(generation);
        let Some(id) = conversation else { return };
        if failed || (text.is_empty() && metrics.is_none()) {
            return;
        }
        match save_reply(&app, id, &request, text, metrics).await {
            Ok(()) => {
                let _ = tx.unbounded_send(Ok(ChatEvent::Saved {
                    conversation_id: id.to_string(),
                    persistence: app.conversations.status(),
                }));
            }
            Err(e) => send_error(
                &tx,
                AppError::Internal(format!("the reply could not be saved: {e}")),
            ),
        }
    }
}
