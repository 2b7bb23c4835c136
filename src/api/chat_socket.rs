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
    parent: Option<String>,
    request: &ChatRequest,
    text: String,
    metrics: Option<GenerationMetrics>,
) -> Result<String, AppError> {
    let mut reply = new_message(Role::Assistant, text);
    reply.parent_id = parent;
    let id = reply.id.clone();
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
        .map(|_| id)
}

/// Where this turn goes in the conversation's tree: the ids it names must be UUIDs of messages
/// in it, and a regeneration answers a question. Checked before the model runs, so a wrong id
/// costs nothing. A store that cannot be read right now (the database away) is not a reason to
/// refuse: the turn is saved to the fallback, and the tree reader copes with a parent it lacks.
async fn check_place(app: &App, conversation: Uuid, request: &ChatRequest) -> Result<(), AppError> {
    use super::conversations::parse_uuid;
    let (id, what) =
        match (&request.parent_id, &request.reply_to) {
            (Some(_), Some(_)) => return Err(AppError::BadRequest(
                "give parent_id (a new question) or reply_to (answer a stored question again), \
                 not both"
                    .into(),
            )),
            (Some(id), None) => (id.as_str(), "parent_id"),
            (None, Some(id)) => (id.as_str(), "reply_to"),
            (None, None) => return Ok(()),
        };
    parse_uuid(id, what)?;
    if what == "parent_id" && id == crate::tree::ROOT_PARENT {
        return Ok(());
    }
    let stored = match app.store(move |s| s.get(conversation)).await {
        Ok(stored) => stored,
        Err(AppError::NotFound(why)) => return Err(AppError::NotFound(why)),
        Err(_) => return Ok(()),
    };
    let Some(message) = stored.messages.iter().find(|m| m.id == id) else {
        return Err(AppError::NotFound(format!(
            "{what}: message {id} is not in conversation {conversation}"
        )));
    };
    if what == "reply_to" && message.role != Role::User {
        return Err(AppError::BadRequest(format!(
            "reply_to: message {id} is not a question (it is a {} message)",
            message.role.as_str()
        )));
    }
    Ok(())
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
    if let Some(id) = conversation {
        if let Err(e) = check_place(app, id, &request).await {
            return Some(vec![error_event(&e)]);
        }
    }
    let mut generation = match super::start_chat(app, request.clone(), accepted_at) {
        Ok(generation) => generation,
        Err(e) => return Some(vec![error_event(&e)]),
    };
    // The question is saved before the answer streams, so a crash mid-reply keeps it. A
    // regeneration answers a question already stored.
    let mut question_id = None;
    if let (Some(id), Some(question), None) =
        (conversation, request.messages.last(), &request.reply_to)
    {
        let mut message = new_message(question.role, question.content.clone());
        message.parent_id = request.parent_id.clone();
        question_id = Some(message.id.clone());
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
    let parent = question_id.clone().or_else(|| request.reply_to.clone());
    Some(
        match save_reply(app, id, parent, &request, text, metrics).await {
            Ok(reply_id) => vec![ChatEvent::Saved {
                conversation_id: id.to_string(),
                persistence: app.conversations.status(),
                question_id,
                reply_id: Some(reply_id),
            }],
            Err(e) => vec![not_saved("the reply", e)],
        },
    )
}
