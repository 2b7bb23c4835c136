//! `/api/conversations` over real HTTP: create/import, read, append, rename, search, export,
//! delete, and the refusals (hostile ids, unknown ids, bad formats).

#![cfg(feature = "ssr")]

mod common;

use common::shared_server;
use serde_json::{json, Value};

async fn send(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value, String) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    )
}

#[tokio::test]
async fn a_conversation_lives_through_the_whole_api() {
    use reqwest::Method;
    let url = shared_server();
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let (status, created, _) = send(Method::POST, format!("{url}/api/conversations"), Some(json!({
        "title": format!("Trip {tag}"),
        "messages": [
            { "role": "user", "content": "Capital of France?" },
            { "role": "assistant", "content": "Paris — \"la Ville Lumière\" 🗼", "model": "smollm2-135m-instruct", "interrupted": true },
        ],
    }))).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["messages"].as_array().unwrap().len(), 2);

    let (status, _, _) = send(
        Method::POST,
        format!("{url}/api/conversations/{id}/messages"),
        Some(json!({ "role": "user", "content": "And Spain?" })),
    )
    .await;
    assert_eq!(status, 200);
    let (status, renamed, _) = send(
        Method::PATCH,
        format!("{url}/api/conversations/{id}"),
        Some(json!({ "title": format!("Europe {tag}") })),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(renamed["message_count"], 3);

    let (_, found, _) = send(
        Method::GET,
        format!("{url}/api/conversations?q=ville%20lumi%C3%A8re"),
        None,
    )
    .await;
    assert!(
        found
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == id.as_str()),
        "search finds message text: {found}"
    );
    let (_, listed, _) = send(
        Method::GET,
        format!("{url}/api/conversations?q=europe%20{tag}"),
        None,
    )
    .await;
    assert_eq!(listed[0]["title"], format!("Europe {tag}"));
    assert_eq!(listed[0]["model"], "smollm2-135m-instruct");

    let (status, _, markdown) = send(
        Method::GET,
        format!("{url}/api/conversations/{id}/export?format=md"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(markdown.starts_with(&format!("# Europe {tag}")));
    assert!(
        markdown.contains("## Assistant (smollm2-135m-instruct)")
            && markdown.contains("interrupted")
    );
    let (_, exported, _) = send(
        Method::GET,
        format!("{url}/api/conversations/{id}/export?format=json"),
        None,
    )
    .await;
    assert_eq!(
        exported["messages"][1]["content"],
        "Paris — \"la Ville Lumière\" 🗼"
    );

    // An export imports back unchanged (as a new conversation).
    let (status, reimported, _) = send(
        Method::POST,
        format!("{url}/api/conversations"),
        Some(exported.clone()),
    )
    .await;
    assert_eq!(status, 201, "{reimported}");
    assert_ne!(reimported["id"], exported["id"]);
    assert_eq!(reimported["messages"], exported["messages"]);

    for victim in [&id, reimported["id"].as_str().unwrap()] {
        let (status, _, _) = send(
            Method::DELETE,
            format!("{url}/api/conversations/{victim}"),
            None,
        )
        .await;
        assert_eq!(status, 204);
    }
    let (status, gone, _) = send(Method::GET, format!("{url}/api/conversations/{id}"), None).await;
    assert_eq!(status, 404, "{gone}");
}

#[tokio::test]
async fn bad_ids_get_400_and_unknown_ones_404() {
    use reqwest::Method;
    let url = shared_server();
    for raw in [
        "not-a-uuid",
        "..%2F..%2Fetc%2Fpasswd",
        "%00",
        &"9".repeat(5000),
    ] {
        let (status, body, _) =
            send(Method::GET, format!("{url}/api/conversations/{raw}"), None).await;
        assert_eq!(status, 400, "{raw}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("UUID"));
    }
    let unknown = uuid::Uuid::new_v4();
    for method in [Method::GET, Method::DELETE] {
        let (status, _, _) = send(method, format!("{url}/api/conversations/{unknown}"), None).await;
        assert_eq!(status, 404);
    }
    let (status, _, _) = send(
        Method::PATCH,
        format!("{url}/api/conversations/{unknown}"),
        Some(json!({ "title": "x" })),
    )
    .await;
    assert_eq!(status, 404);
    let (status, body, _) = send(
        Method::GET,
        format!("{url}/api/conversations/{unknown}/export?format=pdf"),
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body, _) = send(
        Method::POST,
        format!("{url}/api/conversations"),
        Some(json!({ "messages": [{ "role": "user", "content": "a\u{0}b" }] })),
    )
    .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn two_tabs_appending_at_once_keep_both_messages() {
    use reqwest::Method;
    let url = shared_server();
    let (_, created, _) = send(
        Method::POST,
        format!("{url}/api/conversations"),
        Some(json!({ "title": "tabs" })),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_string();
    let tab = |n: usize| {
        let url = format!("{url}/api/conversations/{id}/messages");
        async move {
            for i in 0..10 {
                let (status, _, _) = send(
                    Method::POST,
                    url.clone(),
                    Some(json!({ "role": "user", "content": format!("tab {n} #{i}") })),
                )
                .await;
                assert_eq!(status, 200);
            }
        }
    };
    tokio::join!(tab(1), tab(2));
    let (_, conversation, _) =
        send(Method::GET, format!("{url}/api/conversations/{id}"), None).await;
    assert_eq!(conversation["messages"].as_array().unwrap().len(), 20);
}
