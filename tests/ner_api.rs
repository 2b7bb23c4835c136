//! `POST /api/ner` on the real Rampart model (fetched from its PyPI wheel by scripts/test.sh):
//! known entities at known character offsets, Unicode, texts longer than the model's 512
//! positions, and every limit.

mod common;

use serde_json::{json, Value};

async fn ner(url: &str, body: Value) -> (u16, Value, Option<String>) {
    let response = reqwest::Client::new()
        .post(format!("{url}/api/ner"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (status, response.json().await.unwrap_or(Value::Null), retry)
}

/// (label, text, start, end) of every entity, after checking that `text` is exactly the
/// characters `start..end` of the input.
fn entities(input: &str, answer: &Value) -> Vec<(String, String, usize, usize)> {
    let chars: Vec<char> = input.chars().collect();
    answer["entities"]
        .as_array()
        .expect("entities")
        .iter()
        .map(|e| {
            let (start, end) = (
                e["start"].as_u64().unwrap() as usize,
                e["end"].as_u64().unwrap() as usize,
            );
            let text = e["text"].as_str().unwrap().to_string();
            assert_eq!(chars[start..end].iter().collect::<String>(), text, "{e}");
            let score = e["score"].as_f64().unwrap();
            assert!((0.5..=1.0).contains(&score), "{e}");
            (e["label"].as_str().unwrap().to_string(), text, start, end)
        })
        .collect()
}

fn has(found: &[(String, String, usize, usize)], label: &str, text: &str, start: usize) -> bool {
    found
        .iter()
        .any(|(l, t, s, _)| l == label && t == text && *s == start)
}

#[tokio::test(flavor = "multi_thread")]
async fn known_entities_come_back_at_their_character_offsets() {
    let url = common::shared_server();
    let text = "My name is John Smith and my email is john.smith@example.com.";
    let (status, answer, _) = ner(url, json!({ "text": text })).await;
    assert_eq!(status, 200, "{answer}");
    let found = entities(text, &answer);
    assert!(has(&found, "GIVEN_NAME", "John", 11), "{found:?}");
    assert!(has(&found, "SURNAME", "Smith", 16), "{found:?}");
    assert!(
        has(&found, "EMAIL", "john.smith@example.com", 38),
        "{found:?}"
    );
    let groups: Vec<&str> = answer["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["group"].as_str().unwrap())
        .collect();
    assert!(
        groups.contains(&"person") && groups.contains(&"contact"),
        "{groups:?}"
    );
    let metrics = &answer["metrics"];
    assert_eq!(metrics["model"], "rampart");
    assert_eq!(metrics["characters"], text.chars().count());
    assert_eq!(metrics["entities"], found.len());
    assert!(metrics["tokens"].as_u64().unwrap() > 10 && metrics["millis"].as_f64().unwrap() > 0.0);
    // The model is loaded now: a second request reports no loading.
    let (_, again, _) = ner(url, json!({ "text": text })).await;
    assert_eq!(
        again["metrics"]["load_millis"].as_f64(),
        Some(0.0),
        "{again}"
    );

    // Offsets count characters: ë and ü are two bytes each.
    let text = "Zoë Müller lives at 42 Baker Street, Zürich 8001.";
    let (status, answer, _) = ner(url, json!({ "text": text, "model": "rampart" })).await;
    assert_eq!(status, 200);
    let found = entities(text, &answer);
    assert!(has(&found, "GIVEN_NAME", "Zoë", 0), "{found:?}");
    assert!(has(&found, "SURNAME", "Müller", 4), "{found:?}");
    assert!(has(&found, "STREET_NAME", "Baker Street", 23), "{found:?}");
    assert!(has(&found, "CITY", "Zürich", 37), "{found:?}");
    assert!(has(&found, "ZIP_CODE", "8001", 44), "{found:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn texts_longer_than_the_model_window_keep_entities_and_offsets() {
    let url = common::shared_server();
    let filler = "The committee met on a quiet afternoon and discussed the budget at length. ";
    let tail = "Please write to Zoë Müller at zoe.muller@example.org about it.";
    // ~2,000 word pieces before the entity, so it sits in the fourth window or later.
    let text = format!("{}{tail}", filler.repeat(130));
    let (status, answer, _) = ner(url, json!({ "text": text })).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["metrics"]["windows"].as_u64().unwrap() >= 4,
        "{}",
        answer["metrics"]
    );
    let offset = filler.chars().count() * 130;
    let found = entities(&text, &answer);
    assert!(has(&found, "GIVEN_NAME", "Zoë", offset + 16), "{found:?}");
    assert!(has(&found, "SURNAME", "Müller", offset + 20), "{found:?}");
    assert!(
        found.iter().all(|(_, _, s, _)| *s >= offset),
        "the filler has no personal data, found {found:?}"
    );
    // The names found in the tail alone are found at the same places, shifted by the filler.
    // (Other labels may differ: the model reads the tail with filler as context.)
    let (_, alone, _) = ner(url, json!({ "text": tail })).await;
    for (label, name, start, _) in entities(tail, &alone) {
        if label == "GIVEN_NAME" || label == "SURNAME" {
            assert!(
                has(&found, &label, &name, start + offset),
                "{name} in {found:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_a_status_and_a_reason() {
    let url = common::shared_server();
    let (status, answer, _) = ner(url, json!({ "text": "  \n " })).await;
    assert_eq!(status, 400, "{answer}");
    let long = "a".repeat(100_001);
    let (status, answer, _) = ner(url, json!({ "text": long })).await;
    assert_eq!(status, 413);
    assert!(
        answer.to_string().contains("100001") && answer.to_string().contains("100000"),
        "{answer}"
    );
    let (status, answer, _) = ner(url, json!({ "text": "hi", "model": "nope" })).await;
    assert_eq!(status, 404);
    assert!(answer.to_string().contains("rampart"), "{answer}");
    let (status, _, _) = ner(url, json!({ "txt": "hi" })).await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_answers_503_with_retry_after_and_serves_the_rest() {
    // Its own server, so the other tests' requests are not refused.
    let (url, _app) = common::spawn_server(common::settings());
    let url = url.as_str();
    let text = "Maria Garcia lives at 1600 Pennsylvania Avenue, Washington. ".repeat(600);
    let requests = (0..24).map(|_| ner(url, json!({ "text": text.clone() })));
    let answers = futures::future::join_all(requests).await;
    let busy: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 503).collect();
    let served = answers.iter().filter(|(s, _, _)| *s == 200).count();
    assert_eq!(busy.len() + served, 24, "only 200 or 503");
    assert!(
        !busy.is_empty() && served >= 9,
        "{} busy, {served} served",
        busy.len()
    );
    assert!(busy
        .iter()
        .all(|(_, _, retry)| retry.as_deref() == Some("2")));
}
