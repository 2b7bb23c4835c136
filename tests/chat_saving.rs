//! The chat websocket saves each turn server-side: the question before the answer streams, the
//! reply with its provenance after — and a reply cut short by a closed tab is saved as
//! interrupted. The browser hears `saved` only after the save returned. Driven as a browser
//! drives it: a websocket client on `/ws/chat`.

#![cfg(feature = "ssr")]

mod common;

use common::client::{next_event, start_socket, Socket};
use common::{settings, spawn_server, MODEL};
use futures::SinkExt;
use quantlab::storage::NewConversation;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

async fn start(url: &str, conversation: &str, question: &str, max_tokens: u32) -> Socket {
    let request = json!({
        "model": MODEL,
        "messages": [{ "role": "user", "content": question }],
        "sampling": { "temperature": 0.0, "max_tokens": max_tokens, "seed": 11 },
        "conversation_id": conversation,
    });
    start_socket(url, "/ws/chat", request).await
}

#[tokio::test]
async fn a_finished_reply_is_saved_with_its_provenance_before_saved_is_sent() {
    let (url, app) = spawn_server(settings());
    let conversation = app
        .conversations
        .create(NewConversation {
            title: "saving".into(),
            ..Default::default()
        })
        .unwrap();
    let socket = start(&url, &conversation.id, "What is the capital of France?", 24).await;
    let events = all_events(socket).await;
    let (saved, rest) = events.split_last().unwrap();
    assert_eq!(saved["type"], "saved", "{saved}");
    assert_eq!(saved["conversation_id"], conversation.id.as_str());
    assert_eq!(rest.last().unwrap()["type"], "done");

    let stored = app
        .conversations
        .get(Uuid::parse_str(&conversation.id).unwrap())
        .unwrap();
    assert_eq!(stored.messages.len(), 2);
    assert_eq!(stored.messages[0].content, "What is the capital of France?");
    let reply = &stored.messages[1];
    let streamed: String = rest
        .iter()
        .filter(|e| e["type"] == "token")
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert_eq!(reply.content, streamed);
    assert_eq!(
        (reply.model.as_deref(), reply.engine.as_deref()),
        (Some(MODEL), Some("llama_cpp"))
    );
    assert_eq!(reply.sampling.as_ref().and_then(|s| s.seed), Some(11));
    assert!(reply
        .metrics
        .as_ref()
        .is_some_and(|m| m.generated_tokens > 0));
    assert!(!reply.interrupted);
}

#[tokio::test]
async fn a_tab_closed_mid_reply_still_saves_what_was_said_as_interrupted() {
    let (url, app) = spawn_server(settings());
    let conversation = app
        .conversations
        .create(NewConversation {
            title: "closed tab".into(),
            ..Default::default()
        })
        .unwrap();
    let mut socket = start(
        &url,
        &conversation.id,
        "Write a very long story about the sea.",
        2000,
    )
    .await;
    // Wait for the reply to start, then go away as a closed tab does.
    while next_event(&mut socket).await.expect("events")["type"] != "token" {}
    drop(socket);

    let id = Uuid::parse_str(&conversation.id).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let stored = loop {
        let stored = app.conversations.get(id).unwrap();
        if stored.messages.len() == 2 || std::time::Instant::now() > deadline {
            break stored;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(stored.messages.len(), 2, "{stored:?}");
    let reply = &stored.messages[1];
    assert!(reply.interrupted);
    assert!(!reply.content.is_empty());
    assert!(reply
        .metrics
        .as_ref()
        .is_none_or(|m| m.generated_tokens < 2000));
}

#[tokio::test]
async fn stop_over_the_socket_ends_the_reply_and_it_is_saved_interrupted() {
    let (url, app) = spawn_server(settings());
    let conversation = app
        .conversations
        .create(NewConversation {
            title: "stopped".into(),
            ..Default::default()
        })
        .unwrap();
    let mut socket = start(
        &url,
        &conversation.id,
        "Write a very long story about the sea.",
        2000,
    )
    .await;
    while next_event(&mut socket).await.expect("events")["type"] != "token" {}
    socket.send(Message::text("\"stop\"")).await.unwrap();
    let mut done = None;
    while let Some(event) = next_event(&mut socket).await {
        if event["type"] == "done" {
            done = Some(event);
        }
    }
    let done = done.expect("a done event after Stop");
    assert_eq!(done["metrics"]["finish_reason"], "cancelled");
    let stored = app
        .conversations
        .get(Uuid::parse_str(&conversation.id).unwrap())
        .unwrap();
    assert!(stored.messages[1].interrupted);
}

/// Every event until the server closes the socket.
async fn all_events(mut socket: Socket) -> Vec<serde_json::Value> {
    let mut events = Vec::new();
    while let Some(event) = next_event(&mut socket).await {
        events.push(event);
    }
    events
}

async fn turn(url: &str, request: serde_json::Value) -> Vec<serde_json::Value> {
    all_events(start_socket(url, "/ws/chat", request).await).await
}

fn request(conversation: &str, question: &str, place: serde_json::Value) -> serde_json::Value {
    let mut request = json!({
        "model": MODEL,
        "messages": [{ "role": "user", "content": question }],
        "sampling": { "temperature": 0.8, "max_tokens": 8 },
        "conversation_id": conversation,
    });
    if let (Some(request), Some(place)) = (request.as_object_mut(), place.as_object()) {
        request.extend(place.clone());
    }
    request
}

#[tokio::test]
async fn edits_and_regenerations_are_saved_as_branches_and_wrong_places_are_refused() {
    use quantlab::tree::{self, ROOT_PARENT};
    let (url, app) = spawn_server(settings());
    let conversation = app
        .conversations
        .create(NewConversation {
            title: "branches".into(),
            ..Default::default()
        })
        .unwrap();
    let id = Uuid::parse_str(&conversation.id).unwrap();
    let c = conversation.id.as_str();

    let first = turn(
        &url,
        request(c, "Name a fruit.", json!({ "parent_id": ROOT_PARENT })),
    )
    .await;
    let saved = first.last().unwrap();
    assert_eq!(saved["type"], "saved", "{first:?}");
    let question = saved["question_id"].as_str().unwrap().to_string();
    let answer = saved["reply_id"].as_str().unwrap().to_string();

    // Regenerate: no new question; the new answer is a sibling of the first.
    let again = turn(
        &url,
        request(c, "Name a fruit.", json!({ "reply_to": question })),
    )
    .await;
    let saved = again.last().unwrap();
    assert_eq!(saved["type"], "saved", "{again:?}");
    assert!(saved.get("question_id").is_none(), "{saved}");
    // Edit the opening question: a second first message.
    let edit = turn(
        &url,
        request(c, "Name a colour.", json!({ "parent_id": ROOT_PARENT })),
    )
    .await;
    assert_eq!(edit.last().unwrap()["type"], "saved", "{edit:?}");

    let stored = app.conversations.get(id).unwrap();
    let texts: Vec<&str> = stored.messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(stored.messages.len(), 5, "{texts:?}");
    let parents = tree::parent_indices(&stored.messages);
    assert_eq!(parents, [None, Some(0), Some(0), None, Some(3)]);
    assert_eq!(stored.messages[1].id, answer);
    assert_eq!(tree::latest_path(&stored.messages), [3, 4]);

    // Wrong places are refused before the model runs, and nothing is saved.
    let unknown = Uuid::new_v4().to_string();
    for (place, status, says) in [
        (json!({ "reply_to": answer }), 400, "not a question"),
        (
            json!({ "reply_to": unknown }),
            404,
            "is not in conversation",
        ),
        (
            json!({ "parent_id": unknown }),
            404,
            "is not in conversation",
        ),
        (json!({ "parent_id": "3" }), 400, "parent_id"),
        (
            json!({ "parent_id": ROOT_PARENT, "reply_to": question }),
            400,
            "not both",
        ),
    ] {
        let events = turn(&url, request(c, "Name a tree.", place.clone())).await;
        assert_eq!(events.len(), 1, "{place}: {events:?}");
        assert_eq!(events[0]["type"], "error", "{place}: {events:?}");
        assert_eq!(events[0]["status"], status, "{place}: {events:?}");
        let message = events[0]["message"].as_str().unwrap();
        assert!(message.contains(says), "{place}: {message}");
    }
    assert_eq!(app.conversations.get(id).unwrap().messages.len(), 5);
}
