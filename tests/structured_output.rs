//! Structured output and plain completions through the built binary: `response_format` holds the
//! default model's replies to a JSON schema whatever the seed (streamed or not), engines that
//! cannot enforce it refuse with 400, and `/v1/completions` continues a plain prompt without
//! the chat template.

#![cfg(feature = "ssr")]

mod common;

use common::{
    binary::{command, Binary},
    client::{openai_chunks, post_with_status as post, streamed_text},
    MODEL,
};
use serde_json::{json, Value};

const SCHEMA_NAME: &str = "city";

fn city_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "city": { "type": "string", "minLength": 1, "maxLength": 20 },
            "founded": { "type": "integer" },
            "rivers": { "type": "array", "items": { "type": "string", "maxLength": 20 }, "minItems": 1, "maxItems": 3 },
            "capital": { "type": "boolean" },
            "continent": { "enum": ["Africa", "America", "Asia", "Europe", "Oceania"] }
        },
        "required": ["city", "founded", "rivers", "capital", "continent"],
        "additionalProperties": false
    })
}

fn structured_request(seed: u64, format: Value) -> Value {
    json!({
        "model": MODEL,
        "messages": [{ "role": "user", "content": "Tell me about Paris." }],
        "temperature": 0.9, "seed": seed, "max_tokens": 160,
        "response_format": format,
    })
}

fn schema_format() -> Value {
    json!({ "type": "json_schema", "json_schema": { "name": SCHEMA_NAME, "schema": city_schema(), "strict": true } })
}

/// Checks a document against `city_schema` field by field (what a validator would say).
fn assert_is_city(document: &Value) {
    let object = document.as_object().expect("an object");
    let keys: Vec<&str> = object.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["city", "founded", "rivers", "capital", "continent"],
        "{document}"
    );
    let city = document["city"].as_str().expect("city is a string");
    assert!((1..=20).contains(&city.chars().count()), "{document}");
    assert!(document["founded"].is_i64(), "{document}");
    let rivers = document["rivers"].as_array().expect("rivers is a list");
    assert!((1..=3).contains(&rivers.len()), "{document}");
    assert!(rivers
        .iter()
        .all(|r| r.as_str().is_some_and(|r| r.chars().count() <= 20)));
    assert!(document["capital"].is_boolean(), "{document}");
    assert!(
        ["Africa", "America", "Asia", "Europe", "Oceania"]
            .contains(&document["continent"].as_str().unwrap_or("")),
        "{document}"
    );
}

/// A streamed reply's text and its finish reason.
async fn streamed(url: &str, body: Value) -> (String, String) {
    streamed_text(&openai_chunks(url, &body).await)
}

#[tokio::test]
async fn replies_follow_the_json_schema_whatever_the_seed_and_engines_that_cannot_refuse() {
    let mut server = Binary::serve(command(), &["--threads", "2"]);
    server.wait_ready().await;
    let chat = format!("{}/v1/chat/completions", server.url);

    for seed in 1..=4 {
        let (status, reply) = post(&chat, &structured_request(seed, schema_format())).await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["choices"][0]["finish_reason"], "stop", "{reply}");
        let content = reply["choices"][0]["message"]["content"].as_str().unwrap();
        let document: Value = serde_json::from_str(content)
            .unwrap_or_else(|e| panic!("seed {seed}: not JSON ({e}): {content}"));
        assert_is_city(&document);
    }
    // Streamed, the pieces join into the same kind of document.
    let (content, finish) = streamed(&chat, structured_request(9, schema_format())).await;
    assert_eq!(finish, "stop");
    assert_is_city(&serde_json::from_str(&content).expect("streamed JSON"));

    // Without a schema, `json_object` still gives an object.
    let (status, reply) = post(
        &chat,
        &structured_request(5, json!({ "type": "json_object" })),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let content = reply["choices"][0]["message"]["content"].as_str().unwrap();
    if reply["choices"][0]["finish_reason"] == "stop" {
        let document: Value = serde_json::from_str(content).expect("a JSON object");
        assert!(document.is_object(), "{content}");
    } else {
        // Free-form objects may run to the token limit; what came is still an object's start.
        assert!(content.starts_with('{'), "{content}");
    }

    // The same file on candle has no grammar: refused, naming the engine, before any work.
    let mut on_candle = structured_request(1, schema_format());
    on_candle["model"] = json!("smollm2-135m-instruct-candle");
    let (status, error) = post(&chat, &on_candle).await;
    assert_eq!(status, 400, "{error}");
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("candle"), "{message}");

    // What a grammar cannot enforce is refused with its place in the schema.
    let mut schema = city_schema();
    schema["properties"]["city"]["pattern"] = json!("^[A-Z]");
    let format = json!({ "type": "json_schema", "json_schema": { "name": "x", "schema": schema } });
    let (status, error) = post(&chat, &structured_request(1, format)).await;
    assert_eq!(status, 400, "{error}");
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("pattern") && message.contains("#/properties/city"),
        "{message}"
    );
    let missing = json!({ "type": "json_schema", "json_schema": { "name": "x" } });
    let (status, error) = post(&chat, &structured_request(1, missing)).await;
    assert_eq!(status, 400, "{error}");
}

#[tokio::test]
async fn plain_completions_continue_the_prompt_without_the_chat_template() {
    let mut server = Binary::serve(command(), &["--threads", "2"]);
    server.wait_ready().await;
    let completions = format!("{}/v1/completions", server.url);
    let body = json!({
        "model": MODEL, "prompt": "The capital of France is", "temperature": 0, "max_tokens": 16,
    });
    let (status, reply) = post(&completions, &body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["object"], "text_completion");
    let text = reply["choices"][0]["text"].as_str().unwrap().to_string();
    assert!(!text.is_empty(), "{reply}");
    // The chat template would add a system prompt and markers: dozens of tokens, not five.
    let prompt_tokens = reply["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!((3..10).contains(&prompt_tokens), "{reply}");
    let (chat_status, chat) = post(
        &format!("{}/v1/chat/completions", server.url),
        &json!({ "model": MODEL, "messages": [{ "role": "user", "content": "The capital of France is" }], "max_tokens": 1 }),
    )
    .await;
    assert_eq!(chat_status, 200);
    assert!(chat["usage"]["prompt_tokens"].as_u64().unwrap() > prompt_tokens + 5);

    // Streamed greedy text is the same text.
    let (streamed_text, finish) = streamed(&completions, body.clone()).await;
    assert_eq!(streamed_text, text);
    assert!(finish == "stop" || finish == "length", "{finish}");

    for (field, value, says) in [
        ("echo", json!(true), "echo"),
        ("suffix", json!("end"), "suffix"),
        ("prompt", json!(["one", "two"]), "one prompt"),
        ("prompt", json!(""), "empty"),
    ] {
        let mut bad = body.clone();
        bad[field] = value;
        let (status, error) = post(&completions, &bad).await;
        assert_eq!(status, 400, "{field}: {error}");
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{field}: {message}");
    }
}
