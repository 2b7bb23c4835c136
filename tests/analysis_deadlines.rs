//! NER and OCR requests have a deadline: past it the request gets 504 and the job is stopped at
//! its next step, so the engine is free for the next request at once; a client that leaves
//! stops its job the same way. One test, run alone: both engines share rten's thread pool, and
//! other tests' work on it would blur the timings.

#![cfg(feature = "ssr")]

mod common;

use std::time::{Duration, Instant};

use quantlab::ocr::synthetic::{png, render};
use serde_json::{json, Value};

async fn ner(url: &str, text: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{url}/api/ner"))
        .json(&json!({ "text": text }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn ocr(url: &str, bytes: Vec<u8>, timeout: Option<Duration>) -> Option<(u16, Value)> {
    let mut client = reqwest::Client::builder();
    if let Some(timeout) = timeout {
        client = client.timeout(timeout);
    }
    let part = reqwest::multipart::Part::bytes(bytes).file_name("upload");
    let response = client
        .build()
        .unwrap()
        .post(format!("{url}/api/ocr"))
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.unwrap_or(Value::Null)))
}

fn queued_millis(answer: &Value) -> f64 {
    answer["metrics"]["queued_millis"]
        .as_f64()
        .expect("metrics")
}

fn many_lines() -> Vec<u8> {
    let lines: Vec<String> = (0..48)
        .map(|i| format!("Line {i}: a page with many words to read, slowly"))
        .collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    png(&render(&refs, 28.0, 20))
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_deadline_is_504_and_a_stopped_job_frees_its_engine() {
    let (url, _) = common::spawn_server(quantlab::config::Settings {
        limits: quantlab::config::Limits {
            analysis_timeout: Duration::from_millis(1000),
            ..Default::default()
        },
        ..common::settings()
    });

    // NER: ~5 s of text against a 1 s deadline.
    let (status, _) = ner(&url, "Mail jane@example.com").await; // loads the model
    assert_eq!(status, 200);
    let long =
        "Jane Doe lives at 12 Baker Street in London and her phone is 555-0100. ".repeat(1300);
    let started = Instant::now();
    let (status, answer) = ner(&url, &long).await;
    assert_eq!(status, 504, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limit"),
        "{answer}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let (status, answer) = ner(&url, "Call Bob at 555-0199.").await;
    assert_eq!(status, 200, "{answer}");
    assert!(queued_millis(&answer) < 1500.0, "{answer}");

    // OCR: a page of 48 lines against the same deadline.
    let small = png(&render(&["Hi"], 32.0, 10));
    let (status, _) = ocr(&url, small.clone(), None).await.unwrap(); // loads the engine
    assert_eq!(status, 200);
    let started = Instant::now();
    let (status, answer) = ocr(&url, many_lines(), None).await.unwrap();
    assert_eq!(status, 504, "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3));
    let (status, answer) = ocr(&url, small.clone(), None).await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert!(queued_millis(&answer) < 1500.0, "{answer}");

    // A client that gives up: its job stops too, and the next one hardly waits.
    let gone = ocr(&url, many_lines(), Some(Duration::from_millis(150))).await;
    assert!(gone.is_none(), "the impatient client got an answer");
    let (status, answer) = ocr(&url, small, None).await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert!(queued_millis(&answer) < 1500.0, "{answer}");
}
