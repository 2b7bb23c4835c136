//! Test servers running the real app on loopback with the real default model.

#![allow(dead_code)]

pub mod binary;
pub mod client;
pub mod mock_hub;
pub mod models_api;
pub mod tiny_bitnet;

use std::{
    path::PathBuf,
    sync::{Arc, OnceLock},
};

use quantlab::{config::Settings, registry::Registry, state::App};

pub const MODEL: &str = "smollm2-135m-instruct";

pub fn models_dir() -> PathBuf {
    std::env::var_os("QUANTLAB_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"))
}

pub fn registry() -> Registry {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models.toml");
    let registry = Registry::load(&file, &models_dir()).expect("models.toml loads");
    let entry = registry.get(MODEL).expect("default model declared");
    assert!(
        registry.unavailability(entry).is_none(),
        "the default model is missing: run `quantlab models fetch {MODEL}` (scripts/test.sh does)"
    );
    registry
}

pub fn settings() -> Settings {
    Settings {
        models_dir: models_dir(),
        threads: 2,
        context_size: 2048,
        ..Settings::default()
    }
}

/// Starts a server with these settings on its own thread and runtime; returns its base URL and
/// the app behind it. The server lives until the test process exits.
pub fn spawn_server(settings: Settings) -> (String, Arc<App>) {
    spawn_server_with(settings, registry())
}

/// Like `spawn_server`, with a registry of the test's own.
pub fn spawn_server_with(settings: Settings, registry: Registry) -> (String, Arc<App>) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async move {
            // Each server keeps its conversations in its own folder (left in the temp folder).
            let dir = tempfile::tempdir().expect("tempdir").keep();
            let store = Arc::new(quantlab::storage::json::JsonStore::open(dir).expect("store"));
            let app = App::new(settings, registry, store);
            let options = leptos::config::LeptosOptions::builder()
                .output_name("quantlab")
                .build();
            let router = quantlab::server::router(app.clone(), options);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let url = format!("http://{}", listener.local_addr().expect("addr"));
            // As `serve` does: the default model loads at start-up, and the server is handed
            // over once it has (the OpenAI API answers 503 `model_loading` before).
            if app.settings.preload_default {
                let id = app.registry.current().default_id.clone();
                if app.pool.runnable(&id).is_ok() {
                    app.pool.preload(&id).expect("preload");
                    while !app.pool.is_loaded(&id) && app.pool.load_error(&id).is_none() {
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                }
            }
            tx.send((url, app.clone())).expect("send");
            // The product's own accept loop: header deadline, write cut-off, connection info.
            quantlab::server::connections::accept(
                listener,
                router,
                app.settings.limits.clone(),
                app.shutdown.clone(),
            )
            .await;
        });
    });
    rx.recv().expect("server started")
}

/// One server with default settings, shared by the tests of a binary.
pub fn shared_server() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| spawn_server(settings()).0)
}

/// A parsed server-sent event.
#[derive(Debug)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

pub fn parse_sse(body: &str) -> Vec<SseEvent> {
    body.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .filter_map(|block| {
            let mut event = None;
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
                }
            }
            (!data.is_empty()).then(|| SseEvent {
                event,
                data: data.join("\n"),
            })
        })
        .collect()
}

/// The sampling settings the engine tests share: the UI's defaults with a given temperature,
/// seed and length, prompt cache on.
pub fn sampling(
    temperature: f32,
    seed: u32,
    max_tokens: u32,
) -> quantlab::inference::sampling::ResolvedSampling {
    quantlab::inference::sampling::ResolvedSampling {
        cache_prompt: true,
        ignore_eos: false,
        constraint: None,
        stop: Vec::new(),
        logprobs: None,
        temperature,
        top_p: 0.95,
        top_k: 40,
        repeat_penalty: 1.1,
        max_tokens,
        seed,
    }
}

/// A token sink that keeps the reply's text.
#[derive(Default)]
pub struct CollectText(pub String);

impl quantlab::inference::TokenSink for CollectText {
    fn cancelled(&mut self) -> bool {
        false
    }
    fn piece(&mut self, text: &str) -> std::ops::ControlFlow<()> {
        self.0.push_str(text);
        std::ops::ControlFlow::Continue(())
    }
}

/// Streams a greedy chat reply from `POST /api/chat/stream` (status 200, ending in `metrics`):
/// the events before the metrics, and the metrics.
pub async fn chat_reply(
    url: &str,
    model: Option<&str>,
    content: &str,
    max_tokens: u32,
) -> (Vec<SseEvent>, serde_json::Value) {
    let mut body = serde_json::json!({
        "messages": [{ "role": "user", "content": content }],
        "temperature": 0.0,
        "max_tokens": max_tokens
    });
    if let Some(model) = model {
        body["model"] = serde_json::json!(model);
    }
    let response = reqwest::Client::new()
        .post(format!("{url}/api/chat/stream"))
        .json(&body)
        .send()
        .await
        .expect("the server answers");
    assert_eq!(response.status(), 200);
    let mut events = parse_sse(&response.text().await.expect("a body"));
    let last = events.pop().expect("events");
    assert_eq!(
        last.event.as_deref(),
        Some("metrics"),
        "{events:?} {last:?}"
    );
    let metrics = serde_json::from_str(&last.data).expect("metrics are JSON");
    (events, metrics)
}

/// A conversation rendered with an engine's own chat template, as the worker renders it.
pub fn render_chat(
    facts: &quantlab::inference::EngineFacts,
    conversation: &[(quantlab::types::Role, &str)],
) -> String {
    let format = quantlab::inference::template::PromptFormat::Chat {
        template: facts.chat_template.clone().expect("a chat template"),
        bos_token: facts.bos_token.clone(),
        eos_token: facts.eos_token.clone(),
    };
    let messages: Vec<quantlab::types::ChatMessage> = conversation
        .iter()
        .map(|(role, content)| quantlab::types::ChatMessage {
            role: *role,
            content: content.to_string(),
        })
        .collect();
    format.render(&messages).expect("renders")
}
