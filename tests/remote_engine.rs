//! The remote engine against a second Quantlab over real HTTP on loopback (with an API key),
//! and against servers that are down, slow, or answer garbage.

mod common;

use std::{
    ops::ControlFlow,
    sync::OnceLock,
    time::{Duration, Instant},
};

use axum::{response::IntoResponse, routing::get, routing::post, Json, Router};
use quantlab::{
    config::Settings,
    inference::{remote::RemoteEngine, ChatEngine, ResolvedSampling, TokenSink},
    registry::{Registry, RemoteSource},
    types::{ChatMessage, FinishReason, Role},
};
use serde_json::{json, Value};

const KEY_VAR: &str = "QUANTLAB_TEST_REMOTE_KEY";
const KEY: &str = "loopback-secret";

/// Serves `router` on a loopback port from its own thread; returns the base URL.
fn serve(router: Router) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(format!("http://{}", listener.local_addr().unwrap()))
                    .unwrap();
                axum::serve(listener, router).await.unwrap();
            });
    });
    rx.recv().unwrap()
}

/// A server that lists a model and then misbehaves on chat completions.
fn fake_server(chat: Router) -> String {
    serve(
        Router::new()
            .route(
                "/v1/models",
                get(|| async { Json(json!({"object": "list", "data": [{"id": "m"}]})) }),
            )
            .merge(chat),
    )
}

/// The backend Quantlab (API key required) and the front Quantlab whose registry points at it
/// and at the misbehaving servers.
fn servers() -> &'static (String, String) {
    static SERVERS: OnceLock<(String, String)> = OnceLock::new();
    SERVERS.get_or_init(|| {
        // Set once, before any server thread reads the environment.
        std::env::set_var(KEY_VAR, KEY);
        std::env::set_var("QUANTLAB_TEST_WRONG_KEY", "not-the-key");
        let backend = common::spawn_server(Settings {
            api_key: Some(KEY.into()),
            ..common::settings()
        })
        .0;
        let garbage = fake_server(Router::new().route(
            "/v1/chat/completions",
            post(|| async { "<html>this is not an event stream</html>" }),
        ));
        let broken_stream = fake_server(Router::new().route(
            "/v1/chat/completions",
            post(|| async {
                (
                    [("content-type", "text/event-stream")],
                    "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\ndata: {not json\n\n",
                )
                    .into_response()
            }),
        ));
        let slow = fake_server(Router::new().route(
            "/v1/chat/completions",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "too late"
            }),
        ));
        let entry = |id: &str, base: &str, model: &str, extra: &str| {
            format!(
                r#"
[[models]]
id = "{id}"
name = "{id}"
family = "remote"
parameters = "?"
quantization = "?"
bits_per_weight = 4.0
context_length = 2048
engine = "remote"
instruct = true
license = "-"
description = "test"
remote = {{ base_url = "{base}/v1", model = "{model}"{extra} }}
"#
            )
        };
        let toml_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models.toml");
        let mut toml = std::fs::read_to_string(&toml_path).unwrap();
        toml.push_str(&entry(
            "remote-smollm",
            &backend,
            common::MODEL,
            &format!(", api_key_env = \"{KEY_VAR}\""),
        ));
        toml.push_str(&entry(
            "remote-wrong-key",
            &backend,
            common::MODEL,
            ", api_key_env = \"QUANTLAB_TEST_WRONG_KEY\"",
        ));
        toml.push_str(&entry("remote-down", "http://127.0.0.1:9", "m", ", timeout_secs = 2"));
        toml.push_str(&entry("remote-garbage", &garbage, "m", ""));
        toml.push_str(&entry("remote-broken", &broken_stream, "m", ""));
        toml.push_str(&entry("remote-slow", &slow, "m", ", timeout_secs = 1"));
        toml.push_str(&entry("remote-unknown-model", &garbage, "nope", ""));
        let registry = Registry::parse(&toml, &toml_path, &common::models_dir()).unwrap();
        let front = common::spawn_server_with(common::settings(), registry).0;
        (backend, front)
    })
}

async fn chat(url: &str, model: &str, max_tokens: u32) -> (u16, String, Option<Value>) {
    // The backend wants its key everywhere; the front has none and ignores the header.
    let response = reqwest::Client::new()
        .post(format!("{url}/api/chat/stream"))
        .bearer_auth(KEY)
        .json(&json!({
            "model": model,
            "messages": [{ "role": "user", "content": "What is the capital of France?" }],
            "temperature": 0.0,
            "max_tokens": max_tokens
        }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    if status != 200 {
        return (status, body, None);
    }
    let events = common::parse_sse(&body);
    let mut text = String::new();
    let mut metrics = None;
    for event in events {
        let data: Value = serde_json::from_str(&event.data).unwrap();
        match event.event.as_deref() {
            Some("token") => text.push_str(data["text"].as_str().unwrap()),
            Some("metrics") => metrics = Some(data),
            Some("error") => {
                return (
                    data["status"].as_u64().unwrap_or(0) as u16,
                    event.data,
                    None,
                )
            }
            _ => {}
        }
    }
    (status, text, metrics)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_quantlab_gives_the_same_greedy_reply_with_our_own_timings() {
    let (backend, front) = servers();
    let (status, direct, _) = chat(backend, common::MODEL, 24).await;
    assert_eq!(status, 200, "{direct}");
    let (status, relayed, metrics) = chat(front, "remote-smollm", 24).await;
    assert_eq!(status, 200, "{relayed}");
    assert_eq!(
        relayed, direct,
        "the relayed reply differs from the backend's own"
    );
    let metrics = metrics.expect("metrics");
    assert_eq!(metrics["engine"], "remote");
    assert_eq!(metrics["model"], "remote-smollm");
    assert_eq!(metrics["generated_tokens"], 24, "{metrics}");
    assert!(
        metrics["prompt_tokens"].as_u64().unwrap() > 10,
        "usage reached us: {metrics}"
    );
    let ttft = metrics["time_to_first_token_ms"].as_f64().unwrap();
    let total = metrics["total_ms"].as_f64().unwrap();
    assert!(ttft > 0.0 && ttft < total, "{metrics}");
    assert!(metrics["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_backend_refuses_calls_without_its_api_key() {
    let (backend, _) = servers();
    let client = reqwest::Client::new();
    let none = client
        .get(format!("{backend}/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 401);
    let body: Value = none.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("API key"));
    let wrong = client
        .get(format!("{backend}/v1/models"))
        .bearer_auth("guess")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = client
        .get(format!("{backend}/v1/models"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    // The key guards every API, not only the OpenAI-compatible one.
    let ui = client
        .get(format!("{backend}/api/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(ui.status(), 401);
    let ui = client
        .get(format!("{backend}/api/models"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(ui.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_remotes_get_clear_errors_in_bounded_time() {
    let (_, front) = servers();
    let cases = [
        ("remote-down", 503, "cannot reach"),
        ("remote-wrong-key", 503, "not valid"),
        ("remote-unknown-model", 503, "does not list model `nope`"),
        ("remote-garbage", 502, "text/event-stream"),
        ("remote-broken", 502, "not JSON"),
        ("remote-slow", 504, "sent nothing for 1 s"),
    ];
    for (model, expected_status, expected_message) in cases {
        let started = Instant::now();
        let (status, body, _) = chat(front, model, 8).await;
        assert_eq!(status, expected_status, "{model}: {body}");
        assert!(body.contains(expected_message), "{model}: {body}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{model} took {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_that_fails_at_once_reports_its_load_error_on_every_retry() {
    // A refused connection fails the load within microseconds, racing the requests queued
    // while it loads (four: the queue holds four); each round spawns a new worker and runs
    // that race again.
    let (_, front) = servers();
    for round in 0..40 {
        let replies =
            futures::future::join_all((0..4).map(|_| chat(front, "remote-down", 8))).await;
        for (status, body, _) in replies {
            assert_eq!(status, 503, "round {round}: {body}");
            assert!(body.contains("cannot reach"), "round {round}: {body}");
        }
    }
}

struct StopAfter {
    pieces: usize,
    limit: usize,
}

impl TokenSink for StopAfter {
    fn cancelled(&mut self) -> bool {
        self.pieces >= self.limit
    }
    fn piece(&mut self, _: &str) -> ControlFlow<()> {
        self.pieces += 1;
        ControlFlow::Continue(())
    }
}

#[test]
fn stop_ends_a_remote_reply_within_one_token() {
    let (backend, _) = servers();
    let source = RemoteSource {
        base_url: format!("{backend}/v1"),
        model: common::MODEL.into(),
        api_key_env: Some(KEY_VAR.into()),
        timeout_secs: 30,
    };
    let mut engine = RemoteEngine::load(&source, 2048).unwrap();
    let messages = [ChatMessage {
        role: Role::User,
        content: "Write a long story about a lighthouse keeper.".into(),
    }];
    let sampling = ResolvedSampling {
        cache_prompt: true,
        ignore_eos: false,
        constraint: None,
        stop: Vec::new(),
        logprobs: None,
        temperature: 0.0,
        top_p: 1.0,
        top_k: 0,
        repeat_penalty: 1.0,
        max_tokens: 200,
        seed: 1,
    };
    let mut sink = StopAfter {
        pieces: 0,
        limit: 3,
    };
    let stats = engine
        .generate_messages(&messages, &sampling, &mut sink)
        .unwrap()
        .unwrap();
    assert_eq!(stats.finish_reason, Some(FinishReason::Cancelled));
    assert_eq!(sink.pieces, 3, "pieces arrived after Stop");
}
