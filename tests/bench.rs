//! The bench: over HTTP (progress, one run at a time, stored results, CSV), from the command
//! line against an outside clock, and perplexity that means something.

#![cfg(feature = "ssr")]

mod common;

use std::{process::Command, sync::Arc, time::Instant};

use common::{parse_sse, settings, spawn_server, MODEL};
use quantlab::{
    bench::types::{BenchRun, BenchStatus},
    inference::{workers::WorkerPool, ScoreWindow},
};
use serde_json::{json, Value};

fn bench_server() -> (String, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap().keep();
    let mut s = settings();
    s.bench_dir = dir.clone();
    (spawn_server(s).0, dir)
}

async fn get_json<T: serde::de::DeserializeOwned>(url: &str, path: &str) -> T {
    let response = reqwest::get(format!("{url}{path}")).await.unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
    response.json().await.unwrap()
}

fn within(reported: f64, observed: f64, tolerance: f64) -> bool {
    (reported - observed).abs() <= tolerance * reported.abs().max(observed.abs())
}

#[tokio::test]
async fn a_bench_streams_progress_refuses_a_second_run_and_stores_figures_that_match_the_replies() {
    let (url, dir) = bench_server();
    let client = reqwest::Client::new();
    let body =
        json!({ "models": [MODEL], "repeats": 2, "max_tokens": 16, "perplexity_tokens": 256 });
    let response = client
        .post(format!("{url}/api/bench"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // While it runs: a second start is refused, and the status shows where it is.
    let second = client
        .post(format!("{url}/api/bench"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 409);
    let message: Value = second.json().await.unwrap();
    assert!(
        message["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already running"),
        "{message}"
    );
    let status: BenchStatus = get_json(&url, "/api/bench/status").await;
    assert!(status.progress.is_some(), "{status:?}");

    let text = response.text().await.unwrap();
    let events = parse_sse(&text);
    let last = events.last().unwrap();
    assert_eq!(last.event.as_deref(), Some("done"), "{text}");
    let steps: Vec<u64> = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("progress"))
        .map(|e| {
            serde_json::from_str::<Value>(&e.data).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(steps.windows(2).all(|w| w[0] <= w[1]), "{steps:?}");
    let run: BenchRun = serde_json::from_str(&last.data).unwrap();

    let model = &run.models[0];
    assert_eq!(model.error, None);
    assert_eq!(model.prompts.len(), 3);
    let tokens: Vec<u32> = model.prompts.iter().map(|p| p.prompt_tokens).collect();
    assert!(tokens[0] < tokens[1] && tokens[1] < tokens[2], "{tokens:?}");
    assert!(model.load_ms.unwrap() > 0.0);
    let resident = model.resident_bytes.unwrap();
    assert!(
        resident > 50 << 20,
        "a 135M model adds more than 50 MiB: {resident}"
    );
    if let Some(peak) = model.peak_resident_bytes {
        assert!(
            peak as f64 >= resident as f64 * 0.9,
            "peak {peak} < resident {resident}"
        );
    }
    // What the UI shows for each reply agrees with the bench's own clock.
    for prompt in &model.prompts {
        assert_eq!(prompt.samples.len(), 2);
        for s in &prompt.samples {
            let m = &s.metrics;
            assert!(
                within(m.time_to_first_token_ms, s.observed_ttft_ms, 0.05),
                "TTFT {} vs {}",
                m.time_to_first_token_ms,
                s.observed_ttft_ms
            );
            let observed = s.observed_decode_tok_s.expect("several tokens");
            assert!(
                within(m.decode_tokens_per_s, observed, 0.05),
                "decode {} vs {observed}",
                m.decode_tokens_per_s
            );
            assert!(m.total_ms <= s.observed_total_ms + 1.0);
        }
        let decode = prompt.decode_tok_s.unwrap();
        assert!(decode.min <= decode.median && decode.median <= decode.max && decode.n == 2);
    }
    let ppl = model.perplexity.as_ref().expect("perplexity measured");
    assert_eq!(
        ppl.scored_tokens, 128,
        "the second half of one 256-token window"
    );
    assert!(
        ppl.perplexity > 1.0 && ppl.perplexity < 1000.0,
        "{}",
        ppl.perplexity
    );
    assert!(run.machine.logical_cores >= 1 && run.machine.threads == 2);

    // Stored, listed, exported; the status says it is over.
    let stored: Value = get_json(&url, "/api/bench/results").await;
    assert_eq!(stored["runs"][0]["id"], json!(run.id));
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    let csv = client
        .get(format!("{url}/api/bench/results?format=csv"))
        .send()
        .await
        .unwrap();
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = csv.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "header + one row per prompt:\n{csv}");
    assert!(
        lines[0].starts_with("run_id,") && lines[1].contains(MODEL) && lines[3].contains(",long,")
    );
    let status: BenchStatus = get_json(&url, "/api/bench/status").await;
    assert_eq!((status.progress, status.latest_run), (None, Some(run.id)));
}

#[tokio::test]
async fn bad_bench_requests_are_refused_before_anything_starts() {
    let (url, _) = bench_server();
    let client = reqwest::Client::new();
    let cases = [
        (json!({ "models": ["no-such-model"] }), 404, "unknown model"),
        (json!({ "models": [] }), 400, "models"),
        (
            json!({ "models": [MODEL, "a", "b", "c", "d"] }),
            400,
            "at most 4",
        ),
        (json!({ "models": [MODEL, MODEL] }), 400, "twice"),
        (json!({ "models": [MODEL], "repeats": 0 }), 400, "repeats"),
        (
            json!({ "models": [MODEL], "max_tokens": 100000 }),
            400,
            "max_tokens",
        ),
        (
            json!({ "models": [MODEL], "perplexity_tokens": -1 }),
            400,
            "perplexity_tokens",
        ),
        (json!({ "models": [MODEL], "warmup": 3 }), 400, "warmup"),
    ];
    for (body, status, needle) in cases {
        let response = client
            .post(format!("{url}/api/bench"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{body}");
        let text = response.text().await.unwrap();
        assert!(text.contains(needle), "{body} -> {text}");
    }
    let response = client
        .get(format!("{url}/api/bench/results?format=xml"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = client
        .delete(format!("{url}/api/bench"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404, "nothing to cancel");
    let runs: Value = get_json(&url, "/api/bench/results").await;
    assert_eq!(runs["runs"], json!([]), "nothing ran");
}

#[test]
fn perplexity_is_lower_on_real_prose_than_on_the_same_words_shuffled() {
    let pool = WorkerPool::new(
        quantlab::registry::live::LiveRegistry::new(common::registry()),
        settings(),
    );
    let text = quantlab::bench::runner::PERPLEXITY_TEXT;
    let mut words: Vec<&str> = text.split_whitespace().take(300).collect();
    let real = words.join(" ");
    // A fixed permutation: same words, same tokens (nearly), no sense.
    let n = words.len();
    for i in 0..n {
        words.swap(i, (i * 7919 + 13) % n);
    }
    let shuffled = words.join(" ");
    let window = ScoreWindow {
        tokens: 512,
        max_text_tokens: 256,
    };
    let score = |text: String| {
        let scoring = pool.score(MODEL, Arc::from(text), window, None).unwrap();
        scoring.result.blocking_recv().unwrap().unwrap()
    };
    let (real, shuffled) = (score(real), score(shuffled));
    assert_eq!(real.scored_tokens, 128);
    let (a, b) = (real.perplexity().unwrap(), shuffled.perplexity().unwrap());
    assert!(a * 2.0 < b, "real {a} vs shuffled {b}");
}

#[test]
fn the_command_line_bench_accounts_for_its_time_against_an_outside_clock() {
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("run.json");
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_quantlab"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("QUANTLAB_MODELS_DIR", common::models_dir())
        .args(["--threads", "2", "--bench-dir"])
        .arg(dir.path().join("results"))
        .args([
            "bench",
            "--models",
            MODEL,
            "--repeats",
            "1",
            "--tokens",
            "8",
            "--perplexity-tokens",
            "128",
            "--json",
        ])
        .arg(&json_path)
        .output()
        .unwrap();
    let outside_ms = started.elapsed().as_secs_f64() * 1e3;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("decode tok/s") && stdout.contains(MODEL),
        "{stdout}"
    );
    let run: BenchRun = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    assert_eq!(
        std::fs::read_dir(dir.path().join("results"))
            .unwrap()
            .count(),
        1,
        "saved for the Bench page"
    );

    // Everything the bench says took time fits inside its own wall time, which fits inside ours.
    let model = &run.models[0];
    let parts_ms = model.load_ms.unwrap()
        + model
            .prompts
            .iter()
            .flat_map(|p| &p.samples)
            .map(|s| s.observed_total_ms)
            .sum::<f64>()
        + model.perplexity.as_ref().unwrap().secs * 1e3;
    assert!(
        parts_ms <= run.wall_ms,
        "parts {parts_ms} ms > bench wall {} ms",
        run.wall_ms
    );
    assert!(
        run.wall_ms <= outside_ms,
        "bench wall {} ms > outside {outside_ms} ms",
        run.wall_ms
    );
    // And it is most of the command's time (start-up is small), so nothing is left out.
    assert!(
        run.wall_ms >= 0.5 * outside_ms,
        "bench wall {} ms of {outside_ms} ms",
        run.wall_ms
    );
}

#[tokio::test]
async fn a_cancelled_bench_stops_early_and_says_so() {
    let (url, _) = bench_server();
    let client = reqwest::Client::new();
    let body =
        json!({ "models": [MODEL], "repeats": 10, "max_tokens": 16, "perplexity_tokens": 0 });
    let response = client
        .post(format!("{url}/api/bench"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cancelled = client
        .delete(format!("{url}/api/bench"))
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 202);
    let text = response.text().await.unwrap();
    let last = parse_sse(&text).pop().unwrap();
    assert_eq!(last.event.as_deref(), Some("done"), "{text}");
    let run: BenchRun = serde_json::from_str(&last.data).unwrap();
    assert!(run.cancelled);
    let measured: usize = run
        .models
        .iter()
        .flat_map(|m| &m.prompts)
        .map(|p| p.samples.len())
        .sum();
    assert!(measured < 30, "stopped well before all 30 runs: {measured}");
}

#[test]
fn the_load_bench_serves_clients_at_once_through_the_binary_and_reports_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("load.json");
    let output = Command::new(env!("CARGO_BIN_EXE_quantlab"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("QUANTLAB_MODELS_DIR", common::models_dir())
        .args(["--threads", "2", "bench", "--models", MODEL])
        .args(["--concurrency", "1,2", "--tokens", "16", "--repeats", "1"])
        .args(["--turns", "1,3", "--no-upstream", "--json"])
        .arg(&json_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("aggregate at 2 at once ÷ quantlab alone"),
        "{stdout}"
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    let levels = report["levels"].as_array().unwrap();
    assert_eq!(levels.len(), 2, "{report}");
    for level in levels {
        assert_eq!(level["server"], "quantlab");
        assert!(level["aggregate_tok_s"].as_f64().unwrap() > 0.0, "{level}");
        assert!(level["ttft_p95_ms"].as_f64().unwrap() >= level["ttft_p50_ms"].as_f64().unwrap());
        assert!(level["generated_tokens_per_reply"].as_f64().unwrap() > 1.0);
    }
    // Turn 3 of the conversation reuses turns 1 and 2 from the cache; turn 1 reuses at most the
    // chat template's opening, which the earlier requests shared.
    let turns = report["conversation"].as_array().unwrap();
    assert_eq!(turns.len(), 2, "{report}");
    assert_eq!(turns[0]["turn"], 1);
    assert!(
        turns[0]["cached_tokens"].as_u64().unwrap() * 4
            < turns[0]["prompt_tokens"].as_u64().unwrap(),
        "{}",
        turns[0]
    );
    let (cached, prompt) = (
        turns[1]["cached_tokens"].as_u64().unwrap(),
        turns[1]["prompt_tokens"].as_u64().unwrap(),
    );
    assert!(cached > prompt / 2 && cached < prompt, "{}", turns[1]);
}
