//! Errors a person can act on, and nothing leaked, from the built server: bad input to the
//! UI's server functions is a 4xx; an internal failure is a short message with the request id
//! (the detail and its paths stay in the log); a full disk is 507 with the old file intact;
//! every response carries the security headers; and a server with an API key lets in only the
//! key's holders and the browser that used the start-up link or typed the key.

#![cfg(feature = "ssr")]

mod common;

use std::{os::unix::process::CommandExt, time::Duration};

use common::binary::{command, Binary};
use common::client::{create_conversation, get_json};
use serde_json::{json, Value};

async fn server_in(folder: &std::path::Path, extra: &[&str]) -> Binary {
    let mut cmd = command();
    cmd.arg("--conversations-dir").arg(folder);
    let mut args = vec!["--lazy"];
    args.extend_from_slice(extra);
    let mut server = Binary::serve(cmd, &args);
    server.wait_listening().await;
    server
}

#[tokio::test(flavor = "multi_thread")]
async fn server_functions_answer_bad_input_with_4xx() {
    let folder = tempfile::tempdir().unwrap();
    let server = server_in(folder.path(), &[]).await;
    let client = reqwest::Client::new();
    let cases: [(&str, &str, u16); 4] = [
        ("/ui/conversation", "id=not-a-uuid", 400),
        ("/ui/conversation", "", 400),
        (
            "/ui/conversation",
            "id=67e55044-10b1-426f-9247-bb680e5fe0c8",
            404,
        ),
        ("/ui/conversation_import", "json=%7Bnot+json", 400),
    ];
    for (path, body, status) in cases {
        let response = client
            .post(format!("{}{path}", server.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{path} {body}");
        let text = response.text().await.unwrap();
        assert!(!text.is_empty(), "{path}: no message");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_internal_failure_names_a_request_id_and_hides_the_detail() {
    let folder = tempfile::tempdir().unwrap();
    let server = server_in(folder.path(), &[]).await;
    let client = reqwest::Client::new();
    let id = create_conversation(&server.url, json!({ "title": "doomed" })).await;
    // The file turns into a folder behind the server's back: deleting it fails (EISDIR).
    let file = folder.path().join(format!("{id}.json"));
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir(&file).unwrap();
    let response = client
        .delete(format!("{}/api/conversations/{id}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(&request_id), "{message}");
    let folder_text = folder.path().display().to_string();
    assert!(
        !message.contains(&folder_text) && !message.contains('/'),
        "{message}"
    );
    // The log has the detail under the same id.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log = server.log();
    let line = log
        .lines()
        .find(|l| l.contains(&request_id) && l.contains("internal error"))
        .unwrap_or_else(|| panic!("no log line for {request_id}:\n{log}"));
    assert!(line.contains(&folder_text), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_is_507_and_the_saved_conversation_is_intact() {
    let folder = tempfile::tempdir().unwrap();
    let mut cmd = command();
    cmd.arg("--conversations-dir").arg(folder.path());
    // Files of this process may not grow past 256 KiB: a disk that fills up, for one process.
    // SAFETY: setrlimit between fork and exec touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 256 * 1024,
                rlim_max: 256 * 1024,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut server = Binary::serve(cmd, &["--lazy"]);
    server.wait_listening().await;
    let client = reqwest::Client::new();
    let id = create_conversation(
        &server.url,
        json!({ "title": "kept", "messages": [{ "role": "user", "content": "small" }] }),
    )
    .await;
    let before = std::fs::read(folder.path().join(format!("{id}.json"))).unwrap();
    let response = client
        .post(format!("{}/api/conversations/{id}/messages", server.url))
        .json(&json!({ "role": "user", "content": "x".repeat(400 * 1024) }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 507);
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("could not save") && message.contains("full"),
        "{message}"
    );
    assert_eq!(
        std::fs::read(folder.path().join(format!("{id}.json"))).unwrap(),
        before,
        "the old file is intact"
    );
    let leftovers: Vec<_> = std::fs::read_dir(folder.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind");
    let still = get_json(&format!("{}/api/conversations/{id}", server.url)).await;
    assert_eq!(still["messages"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_carry_a_nonce_policy_and_everything_is_unframeable() {
    let folder = tempfile::tempdir().unwrap();
    let server = server_in(folder.path(), &[]).await;
    let page = reqwest::get(&server.url).await.unwrap();
    let headers = page.headers().clone();
    let html = page.text().await.unwrap();
    let policy = headers["content-security-policy"].to_str().unwrap();
    let nonce = policy
        .split("'nonce-")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("a nonce in the policy");
    assert!(policy.contains("'wasm-unsafe-eval'") && policy.contains("frame-ancestors 'none'"));
    assert!(
        !policy.contains("'unsafe-inline'")
            || !policy
                .split("script-src")
                .nth(1)
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .contains("unsafe-inline")
    );
    assert!(
        html.contains(&format!("nonce=\"{nonce}\"")),
        "the page's scripts carry the nonce"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    let api = reqwest::get(format!("{}/api/models", server.url))
        .await
        .unwrap();
    assert_eq!(
        api.headers()["content-security-policy"],
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
    );
    assert_eq!(api.headers()["x-content-type-options"], "nosniff");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_an_api_key_only_the_key_or_a_login_opens_anything() {
    let folder = tempfile::tempdir().unwrap();
    let server = server_in(folder.path(), &["--api-key", "s3cret-key"]).await;
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // Health is public; data, inference, pages and websockets are not.
    assert_ne!(
        plain
            .get(format!("{}/health", server.url))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    for path in [
        "/api/models",
        "/api/conversations",
        "/v1/models",
        "/api/persistence",
    ] {
        let status = plain
            .get(format!("{}{path}", server.url))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 401, "{path}");
    }
    let chat = plain
        .post(format!("{}/api/chat/stream", server.url))
        .json(&json!({ "messages": [{ "role": "user", "content": "hi" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 401);
    match tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws/chat", server.port)).await
    {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("a websocket without the key: {:?}", other.map(|_| ())),
    }
    let page = plain
        .get(&server.url)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 303);
    assert_eq!(page.headers()["location"], "/login");

    // The key as a bearer token opens the APIs.
    let with_key = plain
        .get(format!("{}/api/models", server.url))
        .bearer_auth("s3cret-key")
        .send()
        .await
        .unwrap();
    assert_eq!(with_key.status(), 200);
    let wrong = plain
        .get(format!("{}/api/models", server.url))
        .bearer_auth("guess")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    // The one-time link from the log gives a browser its session, once.
    let log = server.log();
    let link = log
        .split_whitespace()
        .find(|w| w.contains("/login?token="))
        .unwrap_or_else(|| panic!("no login link in the log:\n{log}"))
        .to_string();
    assert!(
        !log.contains("s3cret-key"),
        "the key itself is never logged"
    );
    let login = plain.get(&link).send().await.unwrap();
    assert_eq!(login.status(), 303);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let again = plain.get(&link).send().await.unwrap();
    assert_eq!(again.status(), 401, "the link works once");
    for path in ["/", "/api/conversations"] {
        let response = plain
            .get(format!("{}{path}", server.url))
            .header("cookie", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path} with the session");
    }
    // Typing the key into the form works too; a wrong key does not.
    let form = plain
        .post(format!("{}/login", server.url))
        .form(&[("key", "s3cret-key")])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 303);
    assert!(form.headers().contains_key("set-cookie"));
    let bad = plain
        .post(format!("{}/login", server.url))
        .form(&[("key", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn waiting_requests_hear_the_model_loading_and_their_place_in_line() {
    let folder = tempfile::tempdir().unwrap();
    // One slot, so a second reply waits in line rather than joining the first's batch.
    let server = server_in(folder.path(), &["--parallel", "1"]).await;
    let client = reqwest::Client::new();
    // The OpenAI API says what /health says while the model loads, and starts the load.
    let early = client
        .post(format!("{}/v1/chat/completions", server.url))
        .json(&json!({ "model": common::MODEL, "messages": [{ "role": "user", "content": "hi" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(early.status(), 503);
    assert!(early.headers().contains_key("retry-after"));
    let body: Value = early.json().await.unwrap();
    assert_eq!(body["error"]["type"], "model_loading");

    // Our own stream says so in an event instead, then answers.
    let stream = |prompt: &str, max_tokens: u32| {
        client
            .post(format!("{}/api/chat/stream", server.url))
            .json(&json!({
                "messages": [{ "role": "user", "content": prompt }],
                "max_tokens": max_tokens, "temperature": 0.0,
            }))
            .send()
    };
    let first = stream("Count from 1 to 200.", 200).await.unwrap();
    assert_eq!(first.status(), 200);
    let mut first = first.bytes_stream();
    use futures::StreamExt;
    let mut seen = String::new();
    while !seen.contains("event: token") {
        let chunk = first.next().await.expect("more events").unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let events = common::parse_sse(&seen);
    let first_event = &events[0];
    if first_event.event.as_deref() == Some("queued") {
        let data: Value = serde_json::from_str(&first_event.data).unwrap();
        assert_eq!(data["ahead"], 0);
    }
    // While the first streams, a second request hears it is next in line.
    let second = stream("Say hi.", 4).await.unwrap().text().await.unwrap();
    let events = common::parse_sse(&second);
    assert_eq!(events[0].event.as_deref(), Some("queued"), "{second}");
    let data: Value = serde_json::from_str(&events[0].data).unwrap();
    assert_eq!(data["ahead"], 1, "{second}");
    assert_eq!(data["loading"], false);
    assert_eq!(events.last().unwrap().event.as_deref(), Some("metrics"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_over_capacity_requests_is_refused_without_error_logs() {
    let folder = tempfile::tempdir().unwrap();
    let mut cmd = command();
    cmd.arg("--conversations-dir").arg(folder.path());
    // One slot and one place in line: of twelve at once, ten or so must be turned away.
    let mut server = Binary::serve(cmd, &["--queue", "1", "--parallel", "1"]);
    server.wait_ready().await;
    let client = reqwest::Client::new();
    let requests = (0..12).map(|_| {
        client
            .post(format!("{}/api/chat/stream", server.url))
            .json(&json!({
                "messages": [{ "role": "user", "content": "Write a long story." }],
                "max_tokens": 40, "temperature": 0.0,
            }))
            .send()
    });
    let statuses: Vec<u16> = futures::future::join_all(requests)
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    let refused = statuses.iter().filter(|s| **s == 503).count();
    assert!(refused >= 8, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = server.log();
    assert!(
        !log.contains("ERROR"),
        "over-capacity refusals were logged as errors:\n{log}"
    );
}
