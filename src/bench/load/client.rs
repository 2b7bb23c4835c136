//! One streamed `/v1/chat/completions` request, timed on the client: when it was sent, when the
//! first and last pieces of text came, and the token counts the server reports in `usage`.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use serde_json::Value;

pub struct Completion {
    pub text: String,
    pub ttft_s: f64,
    /// From the first piece of text to the last.
    pub decode_s: f64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// `usage.prompt_tokens_details.cached_tokens`, or llama-server's `timings.cache_n`.
    pub cached_tokens: Option<u64>,
}

impl Completion {
    /// Tokens after the first ÷ the time they took; `None` for replies of one token.
    pub fn decode_tok_s(&self) -> Option<f64> {
        (self.completion_tokens > 1 && self.decode_s > 0.0)
            .then(|| (self.completion_tokens - 1) as f64 / self.decode_s)
    }
}

/// Sends `body` with streaming on and usage included, and reads the stream to its end.
pub async fn stream_completion(
    client: &reqwest::Client,
    base: &str,
    mut body: Value,
) -> anyhow::Result<Completion> {
    body["stream"] = Value::Bool(true);
    body["stream_options"] = serde_json::json!({ "include_usage": true });
    let sent = Instant::now();
    let response = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&body)
        .send()
        .await?;
    let status = response.status();
    if !status.is_success() {
        bail!(
            "{base} answered {status}: {}",
            response.text().await.unwrap_or_default()
        );
    }
    let mut stream = response.bytes_stream();
    let mut pending = String::new();
    let mut text = String::new();
    let (mut first, mut last) = (None, None);
    let mut usage = None;
    let mut cache_n = None;
    while let Some(bytes) = stream.next().await {
        pending.push_str(&String::from_utf8_lossy(&bytes?));
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            let Some(data) = line.trim().strip_prefix("data:") else {
                continue;
            };
            let data = data.trim();
            if data == "[DONE]" {
                continue;
            }
            let chunk: Value = serde_json::from_str(data)
                .with_context(|| format!("a stream chunk that is not JSON: {data}"))?;
            if let Some(error) = chunk.get("error") {
                bail!("{base} failed mid-stream: {error}");
            }
            if let Some(piece) = chunk["choices"][0]["delta"]["content"].as_str() {
                if !piece.is_empty() {
                    let now = Instant::now();
                    first.get_or_insert(now);
                    last = Some(now);
                    text.push_str(piece);
                }
            }
            if chunk["usage"].is_object() {
                usage = Some(chunk["usage"].clone());
            }
            if let Some(n) = chunk["timings"]["cache_n"].as_u64() {
                cache_n = Some(n);
            }
        }
    }
    let usage = usage.context("the stream ended without usage")?;
    let first = first.context("the reply had no text")?;
    let last = last.unwrap_or(first);
    Ok(Completion {
        text,
        ttft_s: first.duration_since(sent).as_secs_f64(),
        decode_s: last.duration_since(first).as_secs_f64(),
        prompt_tokens: usage["prompt_tokens"].as_u64().unwrap_or(0),
        completion_tokens: usage["completion_tokens"].as_u64().unwrap_or(0),
        cached_tokens: usage["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .or(cache_n),
    })
}

/// Repeats `body` while the server says its model is still loading (503), up to two minutes.
pub async fn until_loaded(
    client: &reqwest::Client,
    base: &str,
    body: &Value,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match stream_completion(client, base, body.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) if e.to_string().contains("503") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    }
}
