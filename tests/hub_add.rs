//! Adding a GGUF from the hub and verifying sha256, through the running binary: `serve` with
//! `HF_ENDPOINT` pointing at a stand-in hub on loopback that serves the offline pack's real
//! GGUF bytes. The download goes through hf-hub into its cache, the file is checked before it
//! is listed, a damaged or missing file is refused with a reason and leaves nothing listed,
//! the new model answers chat, and `verify` tells a good file from a damaged one.

mod common;

use std::collections::HashMap;

use common::models_api::{chat, delete, job_events, model, names, post, serve_with};
use serde_json::{json, Value};

const SOURCE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const SMOLLM: &str = "smollm2-135m-instruct";
const REPO: &str = "test-owner/SmolLM2-GGUF";
const HUB_FILE: &str = "quants/smollm2-hub.Q4_1.gguf";
const ADDED: &str = "smollm2-hub.q4-1";

/// Asserts the job ended `failed` with an error that says `reason`.
fn assert_failed_with(events: &[(String, Value)], reason: &str) {
    let end = end_of(events);
    assert_eq!(end["state"], "failed", "{end}");
    let error = end["error"].as_str().unwrap_or_default();
    assert!(error.contains(reason), "{error}");
}

fn end_of(events: &[(String, Value)]) -> &Value {
    let (name, end) = events.last().expect("events");
    assert_eq!(name, "end", "{events:?}");
    end
}

#[tokio::test]
async fn a_gguf_from_the_hub_is_checked_listed_served_verified_and_deleted() {
    let bytes = std::fs::read(common::models_dir().join(SOURCE)).unwrap();
    let mut files = HashMap::new();
    files.insert(format!("{REPO}/{HUB_FILE}"), bytes.clone());
    // The first 4 MiB of the same file: a download cut short.
    files.insert(
        "test-owner/broken/broken.Q4_1.gguf".to_string(),
        bytes[..4 << 20].to_vec(),
    );
    let hub = common::mock_hub::start(files);
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(common::models_dir().join(SOURCE), dir.path().join(SOURCE)).unwrap();
    let server = serve_with(
        dir.path(),
        &[
            ("HF_ENDPOINT", hub.url.as_str()),
            ("HF_HOME", cache.path().to_str().unwrap()),
        ],
    )
    .await;

    // Malformed requests are refused before anything is asked of the hub.
    for (body, expected) in [
        (json!({ "repo": "nope", "file": "m.gguf" }), "owner/name"),
        (json!({ "repo": "a/b", "file": "m.bin" }), "ending in .gguf"),
        (
            json!({ "repo": "a/b", "file": "../m.gguf" }),
            "ending in .gguf",
        ),
        (
            json!({ "repo": "a/b", "file": "m.gguf", "id": "Bad Id" }),
            "cannot be a model id",
        ),
        (
            json!({ "repo": "a/b", "file": "m.gguf", "id": SMOLLM }),
            "already listed",
        ),
    ] {
        let response = post(&server, "/api/models", body.clone()).await;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert!(status == 400 || status == 409, "{body}: {status} {text}");
        assert!(text.contains(expected), "{body}: {text}");
    }
    assert_eq!(hub.requests.load(std::sync::atomic::Ordering::SeqCst), 0);

    // A file the hub does not have: the job fails with a reason a person can act on.
    let events = job_events(
        post(
            &server,
            "/api/models",
            json!({ "repo": REPO, "file": "missing.gguf" }),
        )
        .await,
    )
    .await;
    assert_failed_with(&events, "no such repository, file or revision");

    // A truncated file is downloaded, refused by the checker, and neither listed nor kept.
    let events = job_events(
        post(
            &server,
            "/api/models",
            json!({ "repo": "test-owner/broken", "file": "broken.Q4_1.gguf" }),
        )
        .await,
    )
    .await;
    let end = end_of(&events);
    assert_eq!(end["state"], "failed", "{end}");
    let error = end["error"].as_str().unwrap();
    assert!(
        error.contains("refused and not listed") && error.contains("truncated"),
        "{error}"
    );
    assert!(model(&server, "broken.q4-1").await.is_none());
    assert_eq!(
        names(dir.path()),
        [SOURCE],
        "nothing half-written is listed or kept"
    );

    // The real file: progress from the hub, then listed from its own metadata.
    let events = job_events(
        post(
            &server,
            "/api/models",
            json!({ "repo": REPO, "file": HUB_FILE }),
        )
        .await,
    )
    .await;
    let end = end_of(&events);
    assert_eq!(end["state"], "finished", "{end}");
    assert_eq!(end["made"], ADDED);
    let downloading: Vec<u64> = events
        .iter()
        .filter(|(_, job)| job["phase"] == "downloading from the hub")
        .map(|(_, job)| job["total"].as_u64().unwrap())
        .collect();
    assert!(
        downloading.iter().all(|&total| total == bytes.len() as u64) && !downloading.is_empty(),
        "{events:?}"
    );
    let listed = model(&server, ADDED).await.expect("listed");
    assert_eq!(listed["available"], true, "{listed}");
    assert_eq!(listed["quantization"], "Q4_1");
    assert_eq!(listed["parameters"], "135M");
    assert_eq!(listed["instruct"], true);
    assert_eq!(listed["can_fetch"], true);
    assert_eq!(listed["made_here"], true);
    assert!(
        listed["source"].as_str().unwrap().contains(REPO),
        "{listed}"
    );
    let bits = listed["bits_per_weight"].as_f64().unwrap();
    assert!((4.5..6.5).contains(&bits), "{bits}");
    assert!(dir
        .path()
        .join("smollm2-hub.Q4_1.gguf")
        .symlink_metadata()
        .unwrap()
        .is_symlink());
    let (status, reply) = chat(&server, ADDED).await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains("event: metrics"), "{reply}");
    // The same file again is a conflict.
    let again = post(
        &server,
        "/api/models",
        json!({ "repo": REPO, "file": HUB_FILE }),
    )
    .await;
    assert_eq!(again.status(), 409);

    // sha256: the declared model and the added one match; a changed byte is found.
    for id in [SMOLLM, ADDED] {
        let events =
            job_events(post(&server, &format!("/api/models/{id}/verify"), json!({})).await).await;
        let end = end_of(&events);
        assert_eq!(end["state"], "finished", "{id}: {end}");
        assert!(
            end["message"].as_str().unwrap().contains("matches"),
            "{end}"
        );
    }
    let blob = std::fs::canonicalize(dir.path().join("smollm2-hub.Q4_1.gguf")).unwrap();
    let mut damaged = std::fs::read(&blob).unwrap();
    let last = damaged.len() - 1;
    damaged[last] ^= 0xff;
    std::fs::write(&blob, &damaged).unwrap();
    let events =
        job_events(post(&server, &format!("/api/models/{ADDED}/verify"), json!({})).await).await;
    assert_failed_with(&events, "damaged or was replaced");
    let missing = post(&server, "/api/models/nope/verify", json!({})).await;
    assert_eq!(missing.status(), 404);

    // Deleting it removes the link and the listing; the hub cache keeps its copy.
    let (status, deleted) = delete(&server, &format!("/api/models/{ADDED}/files")).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["unlisted"], true);
    assert!(model(&server, ADDED).await.is_none());
    assert_eq!(names(dir.path()), [SOURCE, "quantized.toml"]);
    assert!(blob.exists());
}
