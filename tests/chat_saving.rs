//! The chat websocket saves each turn server-side: the question before the answer streams, the
//! reply with its provenance after — and a reply cut short by a closed tab is saved as
//! interrupted. The browser hears `Saved` only after the save returned.

#![cfg(feature = "ssr")]

mod common;

use std::sync::Arc;

use common::{settings, spawn_server, MODEL};
use futures::StreamExt;
use quantlab::{
    state::{App, AppState},
    storage::NewConversation,
    types::{ChatClientMsg, ChatEvent, ChatMessage, ChatRequest, Role, SamplingParams},
};
use uuid::Uuid;

fn state(app: Arc<App>) -> AppState {
    AppState {
        leptos_options: leptos::config::LeptosOptions::builder()
            .output_name("quantlab")
            .build(),
        app,
    }
}

fn request(conversation: &str, question: &str, max_tokens: u32) -> ChatRequest {
    ChatRequest {
        model: MODEL.into(),
        messages: vec![ChatMessage {
            role: Role::User,
            content: question.into(),
        }],
        sampling: SamplingParams {
            temperature: Some(0.0),
            max_tokens: Some(max_tokens),
            seed: Some(11),
            ..Default::default()
        },
        conversation_id: Some(conversation.into()),
    }
}

#[tokio::test]
async fn a_finished_reply_is_saved_with_its_provenance_before_saved_is_sent() {
    let (_, app) = spawn_server(settings());
    let conversation = app
        .conversations
        .create(NewConversation {
            title: "saving".into(),
            ..Default::default()
        })
        .unwrap();
    let start = ChatClientMsg::Start(request(
        &conversation.id,
        "What is the capital of France?",
        24,
    ));
    // The input stays open, as a live tab's does.
    let input = server_fn::BoxedStream::from(
        futures::stream::iter(vec![Ok(start)]).chain(futures::stream::pending()),
    );
    let (tx, rx) = futures::channel::mpsc::unbounded();
    quantlab::api::server_fns::ssr::relay(state(app.clone()), input, tx).await;
    let events: Vec<ChatEvent> = rx.map(|e| e.unwrap()).collect().await;
    let (saved, rest) = events.split_last().unwrap();
    assert!(
        matches!(saved, ChatEvent::Saved { conversation_id, .. } if *conversation_id == conversation.id),
        "{saved:?}"
    );
    assert!(matches!(rest.last(), Some(ChatEvent::Done { .. })));

    let stored = app
        .conversations
        .get(Uuid::parse_str(&conversation.id).unwrap())
        .unwrap();
    assert_eq!(stored.messages.len(), 2);
    assert_eq!(stored.messages[0].content, "What is the capital of France?");
    let reply = &stored.messages[1];
    let streamed: String = rest
        .iter()
        .filter_map(|e| match e {
            ChatEvent::Token { text } => Some(text.as_str()),
            _ => None,
        })
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
    let (_, app) = spawn_server(settings());
    let conversation = app
        .conversations
        .create(NewConversation {
            title: "closed tab".into(),
            ..Default::default()
        })
        .unwrap();
    let start = ChatClientMsg::Start(request(
        &conversation.id,
        "Write a very long story about the sea.",
        2000,
    ));
    // The browser's half closes right after the request, as when the tab goes away.
    let (input_tx, input_rx) = futures::channel::mpsc::unbounded();
    input_tx.unbounded_send(Ok(start)).unwrap();
    let (tx, mut rx) = futures::channel::mpsc::unbounded();
    let relay = tokio::spawn(quantlab::api::server_fns::ssr::relay(
        state(app.clone()),
        server_fn::BoxedStream::from(input_rx),
        tx,
    ));
    // Wait for the reply to start, then close the socket both ways.
    assert!(matches!(rx.next().await, Some(Ok(ChatEvent::Token { .. }))));
    drop(input_tx);
    drop(rx);
    relay.await.unwrap();

    let stored = app
        .conversations
        .get(Uuid::parse_str(&conversation.id).unwrap())
        .unwrap();
    assert_eq!(stored.messages.len(), 2, "{stored:?}");
    let reply = &stored.messages[1];
    assert!(reply.interrupted);
    assert!(!reply.content.is_empty());
    assert!(reply
        .metrics
        .as_ref()
        .is_none_or(|m| m.generated_tokens < 2000));
}
