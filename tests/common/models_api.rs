//! Driving the model-manager routes of a running `quantlab serve` (shared by the tests of
//! quantizing, fetching and adding models).

use std::path::Path;

use serde_json::{json, Value};

use super::binary::{command, Binary};

pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

pub async fn serve(models: &Path) -> Binary {
    serve_with(models, &[]).await
}

/// Serves `models` with extra environment variables (e.g. `HF_ENDPOINT`).
pub async fn serve_with(models: &Path, env: &[(&str, &str)]) -> Binary {
    let mut command = command();
    command.env("QUANTLAB_MODELS_DIR", models);
    for (name, value) in env {
        command.env(name, value);
    }
    let mut server = Binary::serve(command, &["--threads", "2"]);
    server.wait_listening().await;
    server
}

pub async fn model(server: &Binary, id: &str) -> Option<Value> {
    let list: Value = reqwest::get(format!("{}/api/models", server.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .cloned()
}

pub async fn post(server: &Binary, path: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}{path}", server.url))
        .json(&body)
        .send()
        .await
        .unwrap()
}

pub async fn delete(server: &Binary, path: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .delete(format!("{}{path}", server.url))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The events of a finished job stream, each as (name, job).
pub async fn job_events(response: reqwest::Response) -> Vec<(String, Value)> {
    assert_eq!(response.status(), 200);
    super::parse_sse(&response.text().await.unwrap())
        .into_iter()
        .filter(|e| e.event.is_some())
        .map(|e| (e.event.unwrap(), serde_json::from_str(&e.data).unwrap()))
        .collect()
}

pub async fn chat(server: &Binary, id: &str) -> (u16, String) {
    let response = post(
        server,
        "/api/chat/stream",
        json!({
            "model": id,
            "messages": [{ "role": "user", "content": "Name a colour." }],
            "temperature": 0.0,
            "max_tokens": 6
        }),
    )
    .await;
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}
