//! Server functions the UI calls. Thin: take the state, call a service, map the error.

use leptos::prelude::*;
use server_fn::{codec::JsonEncoding, BoxedStream, Websocket};

use crate::{
    error::AppError,
    types::{ChatClientMsg, ChatEvent, ModelInfo},
};

#[server(prefix = "/ui", endpoint = "models")]
pub async fn list_models() -> Result<Vec<ModelInfo>, AppError> {
    let state = expect_context::<crate::state::AppState>();
    Ok(crate::api::model_list(&state.app))
}

/// A chat reply over a websocket: the browser sends `Start`, then maybe `Stop`; the server
/// sends tokens, then `Done` with the metrics (or `Error`). Closing the socket stops the model.
#[server(prefix = "/ui", endpoint = "chat", protocol = Websocket<JsonEncoding, JsonEncoding>)]
pub async fn chat_socket(
    input: BoxedStream<ChatClientMsg, AppError>,
) -> Result<BoxedStream<ChatEvent, AppError>, AppError> {
    let state = expect_context::<crate::state::AppState>();
    let (tx, rx) = futures::channel::mpsc::unbounded();
    tokio::spawn(ssr::relay(state, input, tx));
    Ok(rx.into())
}

/// Server-side half of `chat_socket`, public for tests.
#[cfg(feature = "ssr")]
pub mod ssr {
    use std::time::Instant;

    use futures::{channel::mpsc::UnboundedSender, StreamExt};
    use server_fn::BoxedStream;

    use crate::{
        error::AppError,
        state::AppState,
        types::{ChatClientMsg, ChatEvent},
    };

    type Outgoing = UnboundedSender<Result<ChatEvent, AppError>>;

    fn send_error(tx: &Outgoing, error: AppError) {
        let _ = tx.unbounded_send(Ok(ChatEvent::Error {
            status: error.status(),
            message: error.to_string(),
        }));
    }

    /// Runs one reply: waits for `Start`, streams events back, and turns `Stop` or a closed
    /// socket into a cancellation.
    pub async fn relay(
        state: AppState,
        mut input: BoxedStream<ChatClientMsg, AppError>,
        tx: Outgoing,
    ) {
        let limit = state.app.settings.limits.max_ws_message_bytes;
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
        let mut generation = match crate::api::start_chat(&state.app, request, accepted_at) {
            Ok(generation) => generation,
            Err(e) => return send_error(&tx, e),
        };
        let mut input_open = true;
        loop {
            tokio::select! {
                event = generation.events.recv() => {
                    let Some(event) = event else { break };
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
    }
}
