//! The browser's side of the chat websocket, shared by the Chat and Compare pages.

use leptos::prelude::*;

use crate::{
    error::AppError,
    types::{ChatClientMsg, ChatEvent, ChatRequest},
};

/// Sends `Stop` into a running reply's websocket.
pub type StopSender = futures::channel::mpsc::Sender<Result<ChatClientMsg, AppError>>;

/// Asks the reply held in `stop` (if any) to stop; its `Done` event still arrives.
pub fn request_stop(stop: StoredValue<Option<StopSender>>) {
    stop.update_value(|sender| {
        if let Some(sender) = sender {
            let _ = sender.try_send(Ok(ChatClientMsg::Stop));
        }
    });
}

/// Streams one request: `on_event` sees every event until it returns `false` or the stream
/// ends. `Err` carries a message for a connection that failed or closed early.
#[cfg(feature = "hydrate")]
pub async fn stream_chat(
    request: ChatRequest,
    stop: StoredValue<Option<StopSender>>,
    mut on_event: impl FnMut(ChatEvent) -> bool,
) -> Result<(), String> {
    use futures::StreamExt;

    let (mut tx, rx) = futures::channel::mpsc::channel(4);
    let _ = tx.try_send(Ok(ChatClientMsg::Start(request)));
    // Kept until the reply ends: dropping it would close our half and stop the model.
    stop.set_value(Some(tx));
    let result = match crate::api::server_fns::chat_socket(rx.into()).await {
        Ok(mut events) => loop {
            match events.next().await {
                Some(Ok(event)) => {
                    if !on_event(event) {
                        break Ok(());
                    }
                }
                Some(Err(e)) => break Err(e.to_string()),
                None => break Err(
                    "The connection closed before the reply finished. Is the server still running?"
                        .into(),
                ),
            }
        },
        Err(e) => Err(format!("Cannot reach the server: {e}")),
    };
    stop.set_value(None);
    result
}

/// On the server nothing streams: replies start from clicks, which only the browser sees.
#[cfg(not(feature = "hydrate"))]
pub async fn stream_chat(
    _request: ChatRequest,
    _stop: StoredValue<Option<StopSender>>,
    _on_event: impl FnMut(ChatEvent) -> bool,
) -> Result<(), String> {
    Ok(())
}
