//! What every HTTP and websocket test does the same way: read JSON, create a conversation, open a
//! streaming socket and read its events.

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// GET `url` and parse the body as JSON, whatever the status.
pub async fn get_json(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// POST `body` as JSON to `url` and parse the answer as JSON, whatever the status.
pub async fn post_json(url: &str, body: &Value) -> Value {
    reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Creates a conversation through the REST API (`fields` as the API takes them) and returns its id.
pub async fn create_conversation(base: &str, fields: Value) -> String {
    let created = post_json(&format!("{base}/api/conversations"), &fields).await;
    created["id"]
        .as_str()
        .unwrap_or_else(|| panic!("not created: {created}"))
        .to_string()
}

/// A conversation with only a title.
pub async fn titled_conversation(base: &str, title: &str) -> String {
    create_conversation(base, json!({ "title": title })).await
}

/// Opens the websocket at `path` of the server at `base` (http://…) and sends `{"start": request}`.
pub async fn start_socket(base: &str, path: &str, request: Value) -> Socket {
    let mut socket = open_socket(base, path).await;
    send_start(&mut socket, request).await;
    socket
}

/// A websocket connected to `path`, no request sent yet (so that several requests can be sent
/// at one moment, not one handshake apart).
pub async fn open_socket(base: &str, path: &str) -> Socket {
    let ws = base.replacen("http://", "ws://", 1);
    let (socket, _) = tokio_tungstenite::connect_async(format!("{ws}{path}"))
        .await
        .unwrap();
    socket
}

pub async fn send_start(socket: &mut Socket, request: Value) {
    socket
        .send(Message::text(json!({ "start": request }).to_string()))
        .await
        .unwrap();
}

/// The next JSON event; `None` once the server closes.
pub async fn next_event(socket: &mut Socket) -> Option<Value> {
    loop {
        match socket.next().await? {
            Ok(Message::Text(text)) => return Some(serde_json::from_str(&text).unwrap()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// POSTs an OpenAI request with `"stream": true` added; returns its JSON chunks after checking
/// that the stream ends with `[DONE]` and carries no error.
pub async fn openai_chunks(url: &str, body: &Value) -> Vec<Value> {
    let mut body = body.clone();
    body["stream"] = json!(true);
    let text = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events = super::parse_sse(&text);
    assert_eq!(
        events.last().map(|e| e.data.as_str()),
        Some("[DONE]"),
        "{text}"
    );
    events[..events.len() - 1]
        .iter()
        .map(|e| {
            let chunk: Value = serde_json::from_str(&e.data).unwrap();
            assert!(chunk.get("error").is_none(), "{chunk}");
            chunk
        })
        .collect()
}

/// The text streamed chunks carry (chat deltas or completion texts) and the finish reason.
pub fn streamed_text(chunks: &[Value]) -> (String, String) {
    let mut content = String::new();
    let mut finish = String::new();
    for chunk in chunks {
        let choice = &chunk["choices"][0];
        content.push_str(
            choice["delta"]["content"]
                .as_str()
                .or(choice["text"].as_str())
                .unwrap_or(""),
        );
        if let Some(f) = choice["finish_reason"].as_str() {
            finish = f.into();
        }
    }
    (content, finish)
}

/// POST `body` as JSON to `url`: the status and the body as JSON (`null` when it is not).
pub async fn post_with_status(url: &str, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A chat reply read from `/ws/chat` to its end: its text, its metrics, and when its first and
/// last tokens came.
pub struct Streamed {
    pub text: String,
    pub metrics: Value,
    pub first_token: std::time::Instant,
    pub done: std::time::Instant,
}

pub async fn read_reply(mut socket: Socket) -> Streamed {
    let mut text = String::new();
    let mut first_token = None;
    loop {
        let event = next_event(&mut socket)
            .await
            .expect("the socket closed before the reply ended");
        match event["type"].as_str() {
            Some("token") => {
                first_token.get_or_insert_with(std::time::Instant::now);
                text.push_str(event["text"].as_str().unwrap());
            }
            Some("done") => {
                return Streamed {
                    text,
                    metrics: event["metrics"].clone(),
                    first_token: first_token.expect("metrics before any token"),
                    done: std::time::Instant::now(),
                }
            }
            Some("error") => panic!("the reply failed: {event}"),
            _ => {}
        }
    }
}
