//! The browser's side of the reply websockets (`/ws/chat`, `/ws/compare`), shared by the Chat
//! and Compare pages: open, send `{"start": request}`, hand every event to the page, send
//! `"stop"` when asked, and explain a connection that closed before the reply was complete.

use leptos::prelude::*;

/// Asks the running reply (or comparison) to stop.
pub type StopSender = futures::channel::mpsc::Sender<()>;

/// Asks the reply held in `stop` (if any) to stop; its final events still arrive.
pub fn request_stop(stop: StoredValue<Option<StopSender>>) {
    stop.update_value(|sender| {
        if let Some(sender) = sender {
            let _ = sender.try_send(());
        }
    });
}

/// What a close code means for the person waiting for the reply.
#[cfg(feature = "hydrate")]
pub fn close_message(code: u16, reason: &str) -> String {
    match code {
        1001 => "The server is shutting down; what was written so far is kept.".into(),
        1008 => format!("The connection was closed: {reason}."),
        1009 => format!("The message is too large ({reason})."),
        1000 | 1005 | 1006 => {
            "The connection closed before the reply finished. Is the server still running?".into()
        }
        _ => format!("The connection closed ({code}: {reason})."),
    }
}

/// Streams one request over the websocket at `path`: `on_event` sees every event until it
/// returns `false` (the reply is complete). `Err` carries a message for a connection that
/// failed or closed early.
#[cfg(feature = "hydrate")]
pub async fn stream_socket<R, E>(
    path: &str,
    request: R,
    stop: StoredValue<Option<StopSender>>,
    mut on_event: impl FnMut(E) -> bool,
) -> Result<(), String>
where
    R: serde::Serialize,
    E: serde::de::DeserializeOwned,
{
    use futures::{FutureExt, StreamExt};
    use wasm_bindgen::{closure::Closure, JsCast};
    use web_sys::{CloseEvent, MessageEvent, WebSocket};

    use crate::types::ClientMsg;

    enum Frame {
        Open,
        Text(String),
        Closed { code: u16, reason: String },
    }

    let location = window().location();
    let scheme = if location.protocol().as_deref() == Ok("https:") {
        "wss"
    } else {
        "ws"
    };
    let host = location
        .host()
        .map_err(|_| "Cannot tell which server this page came from.".to_string())?;
    let start = serde_json::to_string(&ClientMsg::Start(request)).map_err(|e| e.to_string())?;
    let socket = WebSocket::new(&format!("{scheme}://{host}{path}"))
        .map_err(|_| "Cannot open a connection to the server.".to_string())?;
    let (frames, mut incoming) = futures::channel::mpsc::unbounded::<Frame>();
    let on_open = Closure::<dyn FnMut()>::new({
        let frames = frames.clone();
        move || {
            let _ = frames.unbounded_send(Frame::Open);
        }
    });
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new({
        let frames = frames.clone();
        move |event: MessageEvent| {
            if let Some(text) = event.data().as_string() {
                let _ = frames.unbounded_send(Frame::Text(text));
            }
        }
    });
    let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |event: CloseEvent| {
        let _ = frames.unbounded_send(Frame::Closed {
            code: event.code(),
            reason: event.reason(),
        });
    });
    socket.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    socket.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    socket.set_onclose(Some(on_close.as_ref().unchecked_ref()));

    let (stop_sender, mut stops) = futures::channel::mpsc::channel::<()>(1);
    // Kept until the reply ends, so Stop can reach it.
    stop.set_value(Some(stop_sender));
    let result = loop {
        futures::select! {
            frame = incoming.next() => match frame {
                Some(Frame::Open) => {
                    if socket.send_with_str(&start).is_err() {
                        break Err("Cannot send the request to the server.".to_string());
                    }
                }
                Some(Frame::Text(text)) => match serde_json::from_str::<E>(&text) {
                    Ok(event) => {
                        if !on_event(event) {
                            break Ok(());
                        }
                    }
                    Err(e) => leptos::logging::warn!("unexpected message from the server: {e}"),
                },
                Some(Frame::Closed { code, reason }) => break Err(close_message(code, &reason)),
                None => break Err(close_message(1006, "")),
            },
            _ = stops.next().fuse() => {
                let _ = socket.send_with_str("\"stop\"");
            }
        }
    };
    stop.set_value(None);
    socket.set_onopen(None);
    socket.set_onmessage(None);
    socket.set_onclose(None);
    let _ = socket.close();
    result
}

/// On the server nothing streams: replies start from clicks, which only the browser sees.
#[cfg(not(feature = "hydrate"))]
pub async fn stream_socket<R, E>(
    _path: &str,
    _request: R,
    _stop: StoredValue<Option<StopSender>>,
    _on_event: impl FnMut(E) -> bool,
) -> Result<(), String> {
    Ok(())
}
