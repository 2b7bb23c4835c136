//! `GET /ws/chat`: one chat reply over a websocket. The browser sends `{"start": request}`, then
//! maybe `"stop"`; the server sends `queued` updates, tokens, then `done` with the metrics (or
//! `error`), then `saved` once the turn is durable when the request names a conversation, and
//! closes. Stop, a closed tab, a client that stops reading or the server stopping end the
//! model's work within one token, and the reply is still saved as far as it got.

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{ws::WebSocketUpgrade, ConnectInfo, State},
    response::Response,
    Extension,
};
use uuid::Uuid;

use super::{
    chat::{chat_event, error_event},
    socket::{read_start, upgrade, Incoming, Socket},
};
use crate::{
    error::AppError,
    inference::workers::Reply,
    server::shutdown::Phase,
    state::{App, AppState},
    storage::new_message,
    types::{ChatClientMsg, ChatEvent, ChatRequest, GenerationMetrics, Role},
};

pub async fn chat(
    State(state): State<AppState>,
    client: Option<Extension<ConnectInfo<std::net::SocketAddr>>>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    let app = state.app.clone();
    upgrade(&state.app, client, ws, move |socket| session(app, socket))
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

/// A store failure as the person hears it: what could not be saved, and why.
fn not_saved(what: &str, error: AppError) -> ChatEvent {
    let error = match error {
        AppError::InsufficientStorage(why) => {
            AppError::InsufficientStorage(format!("{what} could not be saved: {why}"))
        }
        AppError::ModelUnavailable(why) => {
            AppError::ModelUnavailable(format!("{what} could not be saved: {why}"))
        }
        other => other,
    };
    error_event(&error)
}

/// Runs one reply on an open socket.
pub async fn session(app: Arc<App>, socket: Socket) {
    let started = read_start(socket, Ok::<ChatRequest, AppError>, error_event).await;
    let Some((mut socket, request)) = started else {
        return;
    };
    let accepted_at = Instant::now();
    let mut ending: Option<Incoming<()>> = None;
    if let Some(events) = run(&app, &mut socket, request, accepted_at, &mut ending).await {
        for event in events {
            if socket.send(&event).await.is_err() {
                break;
            }
        }
    }
    match ending {
        Some(cause) => socket.close_for(&cause).await,
        None => socket.finish().await,
    }
}

/// Streams the reply; returns the events still to send after it (the save's outcome).
async fn run(
    app: &Arc<App>,
    socket: &mut Socket,
    request: ChatRequest,
    accepted_at: Instant,
    ending: &mut Option<Incoming<()>>,
) -> Option<Vec<ChatEvent>> {
    let conversation = match request
        .conversation_id
        .as_deref()
        .map(super::conversations::parse_id)
    {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(e)) => return Some(vec![error_event(&e)]),
    };
    let mut generation = match super::start_chat(app, request.clone(), accepted_at) {
        Ok(generation) => generation,
        Err(e) => return Some(vec![error_event(&e)]),
    };
    // The question is saved before the answer streams, so a crash mid-reply keeps it.
    if let (Some(id), Some(question)) = (conversation, request.messages.last()) {
        let message = new_message(question.role, question.content.clone());
        if let Err(e) = app.store(move |s| s.append(id, message)).await {
            generation.stop();
            return Some(vec![not_saved("your message", e)]);
        }
    }
    let mut text = String::new();
    let mut metrics = None;
    let mut failed = false;
    let mut client_here = true;
    loop {
        tokio::select! {
            reply = generation.replies.recv() => {
                let Some(reply) = reply else { break };
                let last = matches!(reply, Reply::Done(_) | Reply::Failed(_));
                match &reply {
                    Reply::Token { text: piece, .. } => text.push_str(piece),
                    Reply::Done(m) => metrics = Some(m.clone()),
                    Reply::Failed(_) => failed = true,
                    Reply::Queued { .. } => {}
                }
                if client_here && socket.send(&chat_event(reply)).await.is_err() {
                    // Gone, or not reading: stop the model, keep what it wrote.
                    client_here = false;
                    generation.stop();
                }
                if last {
                    break;
                }
            }
            incoming = socket.next::<ChatClientMsg>(), if client_here => match incoming {
                Incoming::Message(ChatClientMsg::Stop) => generation.stop(),
                Incoming::Message(ChatClientMsg::Start(_)) | Incoming::Invalid(_) => {}
                // Draining lets the reply finish; stopping reaches the worker through the pool.
                Incoming::Shutdown(_) => {}
                Incoming::TooBig => {
                    *ending = Some(Incoming::TooBig);
                    client_here = false;
                    generation.stop();
                }
                Incoming::Idle | Incoming::Gone => {
                    client_here = false;
                    generation.stop();
                }
            },
        }
    }
    drop(generation);
    if !client_here && socket.phase() == Phase::Running {
        tracing::debug!("chat client left; saving the reply as far as it got");
    }
    let id = conversation?;
    if failed || (text.is_empty() && metrics.is_none()) {
        return Some(Vec::new());
    }
    Some(match save_reply(app, id, &request, text, metrics).await {
        Ok(()) => vec![ChatEvent::Saved {
            conversation_id: id.to_string(),
            persistence: app.conversations.status(),
        }],
        Err(e) => vec![not_saved("the reply", e)],
    })
}
