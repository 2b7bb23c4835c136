//! `POST /api/compare`: slots run one after another by default, share one seed, and each ends
//! with its metrics; bad model lists are refused before anything streams.

#![cfg(feature = "ssr")]

mod common;

use common::client::{next_event, start_socket};
use common::{parse_sse, shared_server, MODEL};
use serde_json::{json, Value};

async fn compare(url: &str, body: Value) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("{url}/api/compare"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn sequential_slots_stream_in_turn_with_one_seed_and_their_own_metrics() {
    let url = shared_server();
    let body = json!({
        "models": [MODEL, MODEL],
        "messages": [{ "role": "user", "content": "Name a colour." }],
        "temperature": 0.8, "max_tokens": 12,
    });
    let (status, text) = compare(url, body).await;
    assert_eq!(status, 200, "{text}");
    let events = parse_sse(&text);
    assert_eq!(events.last().unwrap().event.as_deref(), Some("end"));
    let data: Vec<(String, Value)> = events[..events.len() - 1]
        .iter()
        .map(|e| {
            (
                e.event.clone().unwrap(),
                serde_json::from_str(&e.data).unwrap(),
            )
        })
        .collect();
    let slots: Vec<u64> = data
        .iter()
        .map(|(_, d)| d["slot"].as_u64().unwrap())
        .collect();
    let first_of_1 = slots.iter().position(|s| *s == 1).expect("slot 1 ran");
    assert!(
        slots[..first_of_1].iter().all(|s| *s == 0) && slots[first_of_1..].iter().all(|s| *s == 1),
        "{slots:?}"
    );
    let metrics: Vec<&Value> = data
        .iter()
        .filter(|(name, _)| name == "metrics")
        .map(|(_, d)| &d["metrics"])
        .collect();
    assert_eq!(metrics.len(), 2);
    assert_eq!(
        metrics[0]["seed"], metrics[1]["seed"],
        "one seed for every slot"
    );
    assert!(data
        .iter()
        .all(|(_, d)| d["together"] == false && d["model"] == MODEL));
    // Same model, same seed, same settings, run alone each time: the same text.
    let text_of = |slot: u64| -> String {
        data.iter()
            .filter(|(n, d)| n == "token" && d["slot"] == slot)
            .map(|(_, d)| d["text"].as_str().unwrap())
            .collect()
    };
    assert_eq!(text_of(0), text_of(1));
}

#[tokio::test]
async fn together_runs_are_labelled_as_such() {
    let url = shared_server();
    let body = json!({ "models": [MODEL, MODEL], "messages": [{ "role": "user", "content": "Hi" }], "max_tokens": 4, "together": true });
    let (status, text) = compare(url, body).await;
    assert_eq!(status, 200);
    let events = parse_sse(&text);
    let tagged: Vec<Value> = events
        .iter()
        .filter(|e| e.event.as_deref() != Some("end"))
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    assert!(tagged.iter().all(|d| d["together"] == true));
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event.as_deref() == Some("metrics"))
            .count(),
        2
    );
}

#[tokio::test]
async fn model_lists_outside_two_to_four_or_with_unknown_ids_are_refused() {
    let url = shared_server();
    let msgs = json!([{ "role": "user", "content": "Hi" }]);
    let (status, text) = compare(url, json!({ "models": [MODEL], "messages": msgs })).await;
    assert_eq!(status, 400);
    assert!(text.contains("2 to 4"), "{text}");
    let (status, _) = compare(
        url,
        json!({ "models": [MODEL, MODEL, MODEL, MODEL, MODEL], "messages": msgs }),
    )
    .await;
    assert_eq!(status, 400);
    let (status, text) = compare(url, json!({ "models": [MODEL, "nope"], "messages": msgs })).await;
    assert_eq!(status, 404, "{text}");
}

#[tokio::test]
async fn stop_on_the_compare_socket_stops_every_slot_running_together() {
    use futures::SinkExt;
    let url = shared_server();
    let candle = "smollm2-135m-instruct-candle";
    let mut socket = start_socket(
        url,
        "/ws/compare",
        json!({
            "models": [MODEL, candle],
            "messages": [{ "role": "user", "content": "Write a very long story about a lighthouse keeper." }],
            "sampling": { "temperature": 0.0, "max_tokens": 1500 },
            "together": true,
        }),
    )
    .await;
    // Both models stream at once (two engines, two workers).
    let mut streaming = [false, false];
    while !(streaming[0] && streaming[1]) {
        let event = next_event(&mut socket).await.expect("events");
        if event["type"] == "slot" && event["event"]["type"] == "token" {
            streaming[event["slot"].as_u64().unwrap() as usize] = true;
        }
    }
    let stopped_at = std::time::Instant::now();
    socket
        .send(tokio_tungstenite::tungstenite::Message::text("\"stop\""))
        .await
        .unwrap();
    let mut finish = [None, None];
    let mut ended = false;
    while let Some(event) = next_event(&mut socket).await {
        if event["type"] == "slot" && event["event"]["type"] == "done" {
            finish[event["slot"].as_u64().unwrap() as usize] =
                Some(event["event"]["metrics"]["finish_reason"].clone());
        }
        if event["type"] == "end" {
            assert_eq!(event["together"], true);
            ended = true;
        }
    }
    assert!(ended, "the comparison did not end");
    assert_eq!(finish, [Some(json!("cancelled")), Some(json!("cancelled"))]);
    assert!(
        stopped_at.elapsed().as_secs() < 10,
        "{:?}",
        stopped_at.elapsed()
    );
}

#[tokio::test]
async fn stop_in_turn_skips_the_models_not_yet_run() {
    use futures::SinkExt;
    let url = shared_server();
    let mut socket = start_socket(
        url,
        "/ws/compare",
        json!({
            "models": [MODEL, MODEL, MODEL],
            "messages": [{ "role": "user", "content": "Write a very long story about a lighthouse keeper." }],
            "sampling": { "temperature": 0.0, "max_tokens": 1500 },
        }),
    )
    .await;
    while next_event(&mut socket).await.expect("events")["event"]["type"] != "token" {}
    socket
        .send(tokio_tungstenite::tungstenite::Message::text("\"stop\""))
        .await
        .unwrap();
    let mut events = Vec::new();
    while let Some(event) = next_event(&mut socket).await {
        events.push(event);
    }
    let skipped: Vec<u64> = events
        .iter()
        .filter(|e| e["type"] == "skipped")
        .map(|e| e["slot"].as_u64().unwrap())
        .collect();
    assert_eq!(skipped, [1, 2], "{events:?}");
    let done = events
        .iter()
        .find(|e| e["type"] == "slot" && e["event"]["type"] == "done")
        .expect("slot 0 ends");
    assert_eq!(done["event"]["metrics"]["finish_reason"], "cancelled");
}
