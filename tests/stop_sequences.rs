//! OpenAI's `stop` through the built binary: the greedy reply ends right before the first stop
//! sequence (never showing any of it, streamed or not), with `finish_reason: "stop"`, on the
//! llama.cpp engine and on candle alike.

#![cfg(feature = "ssr")]

mod common;

use common::{
    binary::{command, Binary},
    client::{openai_chunks, post_with_status, streamed_text},
    MODEL,
};
use serde_json::{json, Value};

fn question(model: &str, stop: Value) -> Value {
    json!({
        "model": model,
        "messages": [{ "role": "user", "content": "Describe Paris in three sentences." }],
        "temperature": 0, "max_tokens": 60, "stop": stop,
    })
}

async fn complete(url: &str, body: &Value) -> (String, String) {
    // A model not loaded yet answers 503 and starts loading, as OpenAI clients expect.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let reply = loop {
        let (status, reply) = post_with_status(url, body).await;
        if status != 503 || std::time::Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    let choice = &reply["choices"][0];
    (
        choice["message"]["content"]
            .as_str()
            .unwrap_or_else(|| panic!("{reply}"))
            .to_string(),
        choice["finish_reason"].as_str().unwrap_or("").to_string(),
    )
}

async fn stream(url: &str, body: &Value) -> String {
    streamed_text(&openai_chunks(url, body).await).0
}

/// A word of at least five letters from the middle of `text`, as a stop sequence.
fn word_inside(text: &str) -> String {
    text.split(|c: char| !c.is_alphabetic())
        .filter(|w| w.chars().count() >= 5)
        .find(|w| text.find(*w).is_some_and(|at| at > 10))
        .unwrap_or_else(|| panic!("no long word in {text:?}"))
        .to_string()
}

#[tokio::test]
async fn replies_end_before_the_first_stop_sequence_on_both_engines() {
    let mut server = Binary::serve(command(), &["--threads", "2"]);
    server.wait_ready().await;
    let chat = format!("{}/v1/chat/completions", server.url);
    for model in [MODEL, "smollm2-135m-instruct-candle"] {
        let (whole, _) = complete(&chat, &question(model, Value::Null)).await;
        let stop = word_inside(&whole);
        let expected = &whole[..whole.find(&stop).unwrap()];

        let body = question(model, json!([stop.clone(), "never-written-xyz"]));
        let (text, finish) = complete(&chat, &body).await;
        assert_eq!(text, expected, "{model}: stop {stop:?}");
        assert_eq!(finish, "stop", "{model}");
        // Streamed, no piece of the stop sequence reaches the client either.
        assert_eq!(stream(&chat, &body).await, expected, "{model}");

        // One string works as OpenAI's single-stop form.
        let (text, _) = complete(&chat, &question(model, json!(stop))).await;
        assert_eq!(text, expected, "{model}");
    }
}
