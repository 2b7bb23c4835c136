//! `logprobs` through the built binary, on llama.cpp and on candle (the same weights): each
//! token comes with its log-probability and its likeliest alternatives; under greedy decoding the
//! first alternative is the token itself; the tokens spell the reply; the stream carries the
//! same entries as the whole reply; bad requests are refused.

#![cfg(feature = "ssr")]

mod common;

use common::{
    binary::{command, Binary},
    client::{openai_chunks, post_with_status},
    MODEL,
};
use serde_json::{json, Value};

const CANDLE: &str = "smollm2-135m-instruct-candle";

fn request(model: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": model,
        "messages": [{ "role": "user", "content": "What is the capital of France?" }],
        "temperature": 0, "max_tokens": 12,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// POSTs, retrying while the model loads (503 `model_loading`), as OpenAI clients do.
async fn post_loaded(url: &str, body: &Value) -> (u16, Value) {
    for _ in 0..240 {
        let (status, answer) = post_with_status(url, body).await;
        if status != 503 || answer["error"]["type"] != "model_loading" {
            return (status, answer);
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    panic!("the model did not load: {body}");
}

/// Checks the entries against the reply and returns them.
fn check_entries(entries: &[Value], content: &str, top: usize, greedy: bool) {
    assert!(!entries.is_empty());
    let mut spelled = Vec::new();
    for entry in entries {
        let logprob = entry["logprob"].as_f64().unwrap();
        assert!(logprob <= 0.0, "{entry}");
        let alternatives = entry["top_logprobs"].as_array().unwrap();
        assert_eq!(alternatives.len(), top, "{entry}");
        let values: Vec<f64> = alternatives
            .iter()
            .map(|a| a["logprob"].as_f64().unwrap())
            .collect();
        assert!(values.windows(2).all(|w| w[0] >= w[1]), "sorted: {entry}");
        // The likeliest alternative is at least as likely as the token drawn.
        assert!(values[0] >= logprob - 1e-6, "{entry}");
        if greedy {
            assert_eq!(alternatives[0]["token"], entry["token"], "{entry}");
        }
        let bytes: Vec<u8> = entry["bytes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u8)
            .collect();
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            entry["token"].as_str().unwrap()
        );
        spelled.extend(bytes);
    }
    assert_eq!(String::from_utf8(spelled).unwrap(), content);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_local_engine_reports_the_probabilities_it_sampled_from() {
    let mut server = Binary::serve(command(), &["--lazy"]);
    server.wait_listening().await;
    let url = format!("{}/v1/chat/completions", server.url);

    for model in [MODEL, CANDLE] {
        let body = request(model, json!({ "logprobs": true, "top_logprobs": 3 }));
        let (status, reply) = post_loaded(&url, &body).await;
        assert_eq!(status, 200, "{model}: {reply}");
        let content = reply["choices"][0]["message"]["content"].as_str().unwrap();
        let entries = reply["choices"][0]["logprobs"]["content"]
            .as_array()
            .unwrap();
        assert_eq!(
            entries.len() as u64,
            reply["usage"]["completion_tokens"].as_u64().unwrap(),
            "{model}: one entry per generated token"
        );
        check_entries(entries, content, 3, true);

        // Streamed: the chunks carry the same entries, in order.
        let chunks = openai_chunks(&url, &body).await;
        let streamed: Vec<Value> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["logprobs"]["content"].as_array())
            .flatten()
            .cloned()
            .collect();
        // Same tokens; the figures agree to rounding (the second request reuses the cached
        // prompt, so its last prompt token is evaluated in a smaller batch).
        assert_eq!(streamed.len(), entries.len(), "{model}");
        for (s, e) in streamed.iter().zip(entries) {
            assert_eq!(s["token"], e["token"], "{model}");
            let (a, b) = (
                s["logprob"].as_f64().unwrap(),
                e["logprob"].as_f64().unwrap(),
            );
            assert!((a - b).abs() < 1e-2, "{model}: {s} vs {e}");
        }

        // Sampled: the token drawn need not be the likeliest, but the list still holds.
        let sampled = request(
            model,
            json!({ "logprobs": true, "top_logprobs": 5, "temperature": 1.2, "seed": 3 }),
        );
        let (status, reply) = post_with_status(&url, &sampled).await;
        assert_eq!(status, 200, "{reply}");
        let content = reply["choices"][0]["message"]["content"].as_str().unwrap();
        check_entries(
            reply["choices"][0]["logprobs"]["content"]
                .as_array()
                .unwrap(),
            content,
            5,
            false,
        );
    }

    // Not asked for: `logprobs` is null, as OpenAI answers.
    let (status, plain) = post_with_status(&url, &request(MODEL, json!({}))).await;
    assert_eq!(status, 200);
    assert!(plain["choices"][0]["logprobs"].is_null(), "{plain}");
    let (_, zero) = post_with_status(&url, &request(MODEL, json!({ "logprobs": true }))).await;
    let first = &zero["choices"][0]["logprobs"]["content"][0];
    assert_eq!(first["top_logprobs"], json!([]), "{zero}");

    for (extra, says) in [
        (
            json!({ "logprobs": true, "top_logprobs": 21 }),
            "from 0 to 20",
        ),
        (json!({ "top_logprobs": 2 }), "needs `logprobs: true`"),
        (
            json!({ "logprobs": false, "top_logprobs": 2 }),
            "needs `logprobs: true`",
        ),
    ] {
        let (status, answer) = post_with_status(&url, &request(MODEL, extra.clone())).await;
        assert_eq!(status, 400, "{extra}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{extra}: {message}");
    }
}
