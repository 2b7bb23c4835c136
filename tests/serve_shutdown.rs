//! SIGTERM and SIGINT on the built server: new connections are refused at once; a reply that
//! ends within the grace period ends normally; one that does not is stopped and saved as
//! interrupted, exactly as the Stop button saves it; websockets close with 1001; the process
//! exits 0.

#![cfg(feature = "ssr")]

mod common;

use std::time::{Duration, Instant};

use common::binary::{command, Binary};
use common::client::{create_conversation, start_socket, Socket};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

struct Chat {
    server: Binary,
    folder: tempfile::TempDir,
    conversation: String,
}

async fn start(grace: &str) -> Chat {
    let folder = tempfile::tempdir().unwrap();
    let mut cmd = command();
    cmd.arg("--conversations-dir").arg(folder.path());
    let mut server = Binary::serve(cmd, &["--shutdown-grace", grace]);
    server.wait_ready().await;
    let id = create_conversation(&server.url, json!({ "title": "shutdown" })).await;
    Chat {
        conversation: id,
        server,
        folder,
    }
}

/// Opens a chat socket and waits for its first token.
async fn open_chat(chat: &Chat, prompt: &str, max_tokens: u32) -> Socket {
    let request = json!({
        "model": common::MODEL,
        "messages": [{ "role": "user", "content": prompt }],
        "sampling": { "temperature": 0.0, "repeat_penalty": 1.0, "max_tokens": max_tokens, "seed": 3 },
        "conversation_id": chat.conversation,
    });
    let mut socket = start_socket(&chat.server.url, "/ws/chat", request).await;
    loop {
        let text = match socket.next().await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue,
            other => panic!("the socket closed before the first token: {other:?}"),
        };
        let event: Value = serde_json::from_str(&text).unwrap();
        assert_ne!(event["type"], "error", "{event}");
        if event["type"] == "token" {
            return socket;
        }
    }
}

/// Every event until the server closes, and the close code.
async fn rest(socket: &mut Socket) -> (Vec<Value>, Option<u16>) {
    let mut events = Vec::new();
    while let Ok(Some(frame)) = tokio::time::timeout(Duration::from_secs(30), socket.next()).await {
        match frame {
            Ok(Message::Text(text)) => events.push(serde_json::from_str(&text).unwrap()),
            Ok(Message::Close(frame)) => return (events, frame.map(|f| u16::from(f.code))),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    (events, None)
}

fn stored(chat: &Chat) -> Value {
    let path = chat
        .folder
        .path()
        .join(format!("{}.json", chat.conversation));
    serde_json::from_slice(&std::fs::read(path).expect("the conversation file")).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_a_long_reply_after_the_grace_saves_it_and_exits_0() {
    let mut chat = start("1s").await;
    let mut socket = open_chat(
        &chat,
        "Write a very long story about a lighthouse keeper, in many chapters.",
        4096,
    )
    .await;
    let signalled = Instant::now();
    chat.server.signal(libc::SIGTERM);

    // No new connections once shutdown begins.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", chat.server.port))
            .await
            .is_err(),
        "the listener is still open"
    );

    let (events, close) = rest(&mut socket).await;
    let done = events
        .iter()
        .find(|e| e["type"] == "done")
        .expect("a done event");
    assert_eq!(done["metrics"]["finish_reason"], "cancelled", "{done}");
    assert!(events.iter().any(|e| e["type"] == "saved"), "{events:?}");
    assert_eq!(close, Some(1001));
    let status = chat
        .server
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("the server exited");
    assert!(status.success(), "exit status {status}");
    let took = signalled.elapsed();
    assert!(took < Duration::from_secs(8), "shutdown took {took:?}");

    let conversation = stored(&chat);
    let messages = conversation["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{conversation}");
    assert_eq!(messages[1]["interrupted"], true);
    assert!(!messages[1]["content"].as_str().unwrap().is_empty());
    assert!(
        chat.server.log().contains("shut down"),
        "{}",
        chat.server.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_lets_a_short_reply_finish_within_the_grace() {
    let mut chat = start("20s").await;
    let mut socket = open_chat(&chat, "Say hello.", 12).await;
    chat.server.signal(libc::SIGINT);
    let (events, close) = rest(&mut socket).await;
    let done = events
        .iter()
        .find(|e| e["type"] == "done")
        .expect("a done event");
    assert_ne!(done["metrics"]["finish_reason"], "cancelled", "{done}");
    assert!(events.iter().any(|e| e["type"] == "saved"));
    assert_eq!(close, Some(1001));
    let status = chat
        .server
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("the server exited once the reply was saved");
    assert!(status.success());
    let conversation = stored(&chat);
    assert_eq!(conversation["messages"][1]["interrupted"], false);
}
