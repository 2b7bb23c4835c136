//! Continuous batching and the prompt cache through the built binary: `serve --parallel 2`
//! streams two replies at the same time from one loaded model, each with the text it gets alone;
//! a later turn of a conversation reuses the earlier turns' cache, reported as OpenAI's
//! `cached_tokens`, without changing the answer.

#![cfg(feature = "ssr")]

mod common;

use common::binary::{command, Binary};
use common::client::{post_json, read_reply, start_socket};
use serde_json::{json, Value};

fn chat_request(prompt: &str) -> Value {
    json!({
        "model": common::MODEL,
        "messages": [{ "role": "user", "content": prompt }],
        "sampling": { "temperature": 0.0, "repeat_penalty": 1.0, "max_tokens": 40, "seed": 1 },
    })
}

async fn serve(parallel: &str) -> Binary {
    let folder = tempfile::tempdir().unwrap();
    let mut cmd = command();
    cmd.arg("--conversations-dir").arg(folder.path());
    let mut server = Binary::serve(
        cmd,
        &[
            "--parallel",
            parallel,
            "--threads",
            "2",
            "--context",
            "2048",
        ],
    );
    server.wait_ready().await;
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replies_stream_together_each_with_the_text_it_gets_alone() {
    let server = serve("2").await;
    let prompts = [
        "Name three colours of the rainbow.",
        "Write one sentence about the sea.",
    ];

    // Together: both sockets start before either reply has a token.
    let first = start_socket(&server.url, "/ws/chat", chat_request(prompts[0])).await;
    let second = start_socket(&server.url, "/ws/chat", chat_request(prompts[1])).await;
    let (a, b) = tokio::join!(read_reply(first), read_reply(second));
    assert!(!a.text.is_empty() && !b.text.is_empty());
    // Neither waited for the other: each started before the other finished.
    assert!(
        a.first_token < b.done && b.first_token < a.done,
        "the replies ran one after the other"
    );
    for m in [&a.metrics, &b.metrics] {
        assert_eq!(m["batch_peers"], 1, "{m}");
    }

    // Alone, and with the prompt already cached in a slot: the same greedy text.
    for (prompt, together) in prompts.iter().zip([&a, &b]) {
        let socket = start_socket(&server.url, "/ws/chat", chat_request(prompt)).await;
        let alone = read_reply(socket).await;
        assert_eq!(alone.text, together.text, "{prompt}");
        assert_eq!(alone.metrics["batch_peers"], 0);
        let prompt_tokens = alone.metrics["prompt_tokens"].as_u64().unwrap();
        // Everything but the last prompt token, whose logits pick the first reply token.
        assert_eq!(
            alone.metrics["cached_prompt_tokens"].as_u64().unwrap(),
            prompt_tokens - 1,
            "{}",
            alone.metrics
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_turn_reuses_the_cache_and_answers_as_without_it() {
    let server = serve("2").await;
    let url = format!("{}/v1/chat/completions", server.url);
    let complete = |messages: Value, cache_prompt: bool| {
        let url = url.clone();
        async move {
            let body = json!({
                "model": common::MODEL, "messages": messages, "temperature": 0.0,
                "max_tokens": 24, "repeat_penalty": 1.0, "cache_prompt": cache_prompt,
            });
            let answer = post_json(&url, &body).await;
            let text = answer["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or_else(|| panic!("no reply: {answer}"))
                .to_string();
            (text, answer["usage"].clone())
        }
    };

    let mut messages =
        vec![json!({ "role": "system", "content": "You are a terse geography tutor." })];
    messages.push(json!({ "role": "user", "content": "What is the capital of France?" }));
    let (first, usage) = complete(json!(messages), true).await;
    assert_eq!(
        usage["prompt_tokens_details"]["cached_tokens"], 0,
        "{usage}"
    );

    messages.push(json!({ "role": "assistant", "content": first }));
    messages.push(json!({ "role": "user", "content": "And of Italy?" }));
    let (cached, usage) = complete(json!(messages), true).await;
    let cached_tokens = usage["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    let prompt_tokens = usage["prompt_tokens"].as_u64().unwrap();
    // The system prompt and the first turn came from the cache; only the new turn was evaluated.
    assert!(
        cached_tokens >= 20 && cached_tokens < prompt_tokens,
        "{usage}"
    );

    // The same turn evaluated from scratch gives the same greedy answer.
    let (fresh, usage) = complete(json!(messages), false).await;
    assert_eq!(
        usage["prompt_tokens_details"]["cached_tokens"], 0,
        "{usage}"
    );
    assert_eq!(fresh, cached);
}
