//! Bad input and load: every limit answers with a clear status and message, never a hang.

#![cfg(feature = "ssr")]

mod common;

use std::time::Instant;

use common::{settings, shared_server, spawn_server, MODEL};
use quantlab::{
    inference::sampling::resolve,
    inference::workers::{PromptInput, Reply},
    types::{ChatMessage, FinishReason, GenerationMetrics, Role, SamplingParams},
};
use serde_json::{json, Value};

async fn post(url: &str, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn message(body: &Value) -> String {
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn user(text: &str) -> PromptInput {
    PromptInput::Chat(vec![ChatMessage {
        role: Role::User,
        content: text.into(),
    }])
}

#[tokio::test]
async fn invalid_requests_get_400_naming_the_problem() {
    let url = shared_server();
    let msgs = json!([{ "role": "user", "content": "hi" }]);
    for (path, body, expect) in [
        (
            "/api/chat/stream",
            json!({ "messages": msgs, "temperature": "hot" }),
            "temperature",
        ),
        (
            "/api/chat/stream",
            json!({ "messages": msgs, "temperature": 2.5 }),
            "temperature",
        ),
        (
            "/api/chat/stream",
            json!({ "messages": msgs, "top_p": -1 }),
            "top_p",
        ),
        (
            "/api/chat/stream",
            json!({ "messages": msgs, "top_k": 500 }),
            "top_k",
        ),
        (
            "/api/chat/stream",
            json!({ "messages": msgs, "max_tokens": 0 }),
            "max_tokens",
        ),
        (
            "/api/chat/stream",
            json!({ "messages": msgs, "seed": -3 }),
            "seed",
        ),
        (
            "/api/chat/stream",
            json!({ "messages": msgs, "temprature": 1 }),
            "temprature",
        ),
        ("/api/chat/stream", json!({ "messages": [] }), "messages"),
        (
            "/api/chat/stream",
            json!({ "messages": [{ "role": "robot", "content": "x" }] }),
            "role",
        ),
        (
            "/v1/chat/completions",
            json!({ "model": MODEL, "messages": msgs, "n": 2 }),
            "`n`",
        ),
        (
            "/v1/chat/completions",
            json!({ "model": MODEL, "messages": msgs, "stop": ["a", "b", "c", "d", "e"] }),
            "at most 4",
        ),
        (
            "/v1/chat/completions",
            json!({ "model": MODEL, "messages": msgs, "stop": "x".repeat(65) }),
            "1 to 64 characters",
        ),
        (
            "/v1/chat/completions",
            json!({ "model": MODEL, "messages": msgs, "stop": [3] }),
            "`stop` must be a string",
        ),
        (
            "/v1/chat/completions",
            json!({ "model": MODEL, "messages": [{ "role": "tool", "content": "x" }] }),
            "tool",
        ),
        (
            "/v1/chat/completions",
            json!({ "model": MODEL, "messages": msgs, "max_tokens": 100000 }),
            "max_tokens",
        ),
    ] {
        let (status, reply) = post(url, path, body.clone()).await;
        assert_eq!(status, 400, "{body} -> {reply}");
        assert!(message(&reply).contains(expect), "{body} -> {reply}");
    }
}

#[tokio::test]
async fn unknown_models_get_404_and_unavailable_ones_503_with_the_fix() {
    let url = shared_server();
    let msgs = json!([{ "role": "user", "content": "hi" }]);
    let (status, reply) = post(
        url,
        "/v1/chat/completions",
        json!({ "model": "nope", "messages": msgs }),
    )
    .await;
    assert_eq!(status, 404);
    assert!(message(&reply).contains("nope"));
    let (status, reply) = post(
        url,
        "/api/chat/stream",
        json!({ "model": "smollm2-1.7b-instruct", "messages": msgs }),
    )
    .await;
    assert_eq!(status, 503);
    assert!(
        message(&reply).contains("quantlab models fetch smollm2-1.7b-instruct"),
        "{reply}"
    );
}

#[tokio::test]
async fn oversized_bodies_get_413_and_non_json_bodies_400() {
    let url = shared_server();
    let huge = "a".repeat(2 * 1024 * 1024);
    let (status, reply) = post(
        url,
        "/api/chat/stream",
        json!({ "messages": [{ "role": "user", "content": huge }] }),
    )
    .await;
    assert_eq!(status, 413, "{reply}");
    let response = reqwest::Client::new()
        .post(format!("{url}/api/chat/stream"))
        .body("{\"messages\": []}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("Content-Type"));
}

#[tokio::test]
async fn too_many_characters_are_refused_before_tokenizing() {
    let url = shared_server();
    // Under the body limit, over the character limit.
    let text = "word ".repeat(45_000);
    let (status, reply) = post(
        url,
        "/api/chat/stream",
        json!({ "messages": [{ "role": "user", "content": text }] }),
    )
    .await;
    assert_eq!(status, 400);
    assert!(message(&reply).contains("200000"), "{reply}");
}

#[tokio::test]
async fn a_prompt_longer_than_the_context_gets_400_with_token_counts() {
    let (url, _) = spawn_server(quantlab::config::Settings {
        context_size: 128,
        ..settings()
    });
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(40);
    let (status, reply) = post(
        &url,
        "/api/chat/stream",
        json!({ "messages": [{ "role": "user", "content": text }] }),
    )
    .await;
    assert_eq!(status, 400, "{reply}");
    let msg = message(&reply);
    assert!(msg.contains("tokens") && msg.contains("128"), "{msg}");
}

#[tokio::test]
async fn a_full_queue_gets_503_with_retry_after_and_never_hangs() {
    // One slot: a second reply waits instead of joining the first's batch.
    let (url, app) = spawn_server(quantlab::config::Settings {
        parallel: 1,
        limits: quantlab::config::Limits {
            queue_capacity: 1,
            ..Default::default()
        },
        ..settings()
    });
    let long = resolve(
        &SamplingParams {
            max_tokens: Some(1000),
            temperature: Some(0.0),
            ..Default::default()
        },
        4096,
    )
    .unwrap();
    let mut running = app
        .pool
        .submit(
            MODEL,
            user("Write a long essay about rivers."),
            long.clone(),
            Instant::now(),
        )
        .unwrap();
    // Once a token arrives the worker has taken the job; the next one fills the queue.
    while !matches!(running.replies.recv().await, Some(Reply::Token { .. })) {}
    let _queued = app
        .pool
        .submit(MODEL, user("Then one about lakes."), long, Instant::now())
        .unwrap();
    let started = Instant::now();
    let response = reqwest::Client::new()
        .post(format!("{url}/api/chat/stream"))
        .json(&json!({ "messages": [{ "role": "user", "content": "hi" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    assert!(
        started.elapsed().as_secs() < 5,
        "the refusal must be immediate"
    );
    running.stop();
}

async fn finish(
    generation: &mut quantlab::inference::workers::Generation,
) -> (usize, GenerationMetrics) {
    let mut tokens = 0;
    loop {
        match generation.replies.recv().await.expect("a final event") {
            Reply::Queued { .. } => {}
            Reply::Token { .. } => tokens += 1,
            Reply::Done(metrics) => return (tokens, metrics),
            Reply::Failed(error) => panic!("{error}"),
        }
    }
}

#[tokio::test]
async fn stop_ends_within_a_token_and_frees_the_worker() {
    let (_, app) = spawn_server(settings());
    let long = resolve(
        &SamplingParams {
            max_tokens: Some(1000),
            ..Default::default()
        },
        4096,
    )
    .unwrap();
    let mut generation = app
        .pool
        .submit(
            MODEL,
            user("Tell me a very long story."),
            long.clone(),
            Instant::now(),
        )
        .unwrap();
    let mut seen = 0;
    while seen < 3 {
        if let Some(Reply::Token { .. }) = generation.replies.recv().await {
            seen += 1;
        }
    }
    generation.stop();
    let (after, metrics) = finish(&mut generation).await;
    assert_eq!(metrics.finish_reason, Some(FinishReason::Cancelled));
    // Tokens already in flight when Stop arrived, plus at most the one being decoded.
    assert!(
        metrics.generated_tokens as usize <= seen + after + 1,
        "{metrics:?}"
    );
    assert!(metrics.generated_tokens < 20, "{metrics:?}");

    // Dropping the receiver (a closed tab) also frees the worker at once.
    let mut dropped = app
        .pool
        .submit(
            MODEL,
            user("Another long story, please."),
            long,
            Instant::now(),
        )
        .unwrap();
    while !matches!(dropped.replies.recv().await, Some(Reply::Token { .. })) {}
    drop(dropped);
    let quick = resolve(
        &SamplingParams {
            max_tokens: Some(4),
            ..Default::default()
        },
        4096,
    )
    .unwrap();
    let mut next = app
        .pool
        .submit(MODEL, user("Hi"), quick, Instant::now())
        .unwrap();
    let (_, metrics) = finish(&mut next).await;
    assert!(
        metrics.queue_ms < 1000.0,
        "the next request waited {} ms",
        metrics.queue_ms
    );
}

#[tokio::test]
async fn websocket_upgrades_from_foreign_origins_are_refused() {
    let url = shared_server();
    let upgrade = |origin: &'static str| {
        reqwest::Client::new()
            .get(format!("{url}/ws/chat"))
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("Origin", origin)
            .send()
    };
    let foreign = upgrade("http://evil.example").await.unwrap();
    assert_eq!(foreign.status(), 403);
    let host = url.trim_start_matches("http://").to_string();
    let own = reqwest::Client::new()
        .get(format!("{url}/ws/chat"))
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("Origin", format!("http://{host}"))
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 101);
}
