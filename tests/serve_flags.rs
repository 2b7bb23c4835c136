//! The `serve` command honours its storage flags: conversations go to `--conversations-dir`
//! (and PostgreSQL only when `DATABASE_URL` is given).

#![cfg(feature = "ssr")]

mod common;

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn serve_saves_conversations_in_the_folder_it_was_given() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = Server(
        Command::new(env!("CARGO_BIN_EXE_quantlab"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("QUANTLAB_MODELS_DIR", common::models_dir())
            .env_remove("DATABASE_URL")
            .arg("--conversations-dir")
            .arg(dir.path())
            .args(["serve", "--lazy", "--addr", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{url}/health")).send().await.is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let created: serde_json::Value = client
        .post(format!("{url}/api/conversations"))
        .json(&serde_json::json!({ "title": "where am I saved" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().expect("created");
    assert!(
        dir.path().join(format!("{id}.json")).is_file(),
        "not saved in {}",
        dir.path().display()
    );
    let status: serde_json::Value = client
        .get(format!("{url}/api/persistence"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["backend"], "json", "{status}");
}
