//! The arena through the built binary: `quantlab serve` runs a blind battle between the two real
//! models, keeps names and figures out of everything sent before the vote, takes one vote,
//! reveals, rates, exports, and keeps it all across a restart — in the JSON folder, and with
//! `DATABASE_URL` in PostgreSQL.

#![cfg(feature = "ssr")]

mod common;
#[path = "common/pg.rs"]
mod pg;

use std::collections::BTreeSet;

use common::{
    binary::{command, Binary},
    client::{get_json, next_event, start_socket},
    parse_sse, MODEL,
};
use diesel::{pg::PgConnection, sql_types, Connection, QueryableByName, RunQueryDsl};
use futures::SinkExt;
use serde_json::{json, Value};

const OPPONENT: &str = "qwen2.5-coder-0.5b-instruct";
const PROMPT: &str = "Name one colour of the rainbow.";

fn serve(folder: &std::path::Path, database_url: Option<&str>) -> Binary {
    let mut cmd = command();
    cmd.arg("--conversations-dir").arg(folder);
    if let Some(url) = database_url {
        cmd.env("DATABASE_URL", url);
    }
    Binary::serve(cmd, &["--lazy"])
}

/// A finished battle as the client saw it.
struct Streamed {
    id: String,
    a: String,
    b: String,
    events: Vec<Value>,
}

/// Runs a battle over `POST /api/arena/battles` and checks the stream is blind: only text, sides
/// and ids, never a model, an engine or a figure.
async fn battle(url: &str, body: Value) -> Streamed {
    let response = reqwest::Client::new()
        .post(format!("{url}/api/arena/battles"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let events: Vec<Value> = parse_sse(&text)
        .into_iter()
        .map(|e| {
            let data: Value = serde_json::from_str(&e.data).unwrap();
            assert_eq!(e.event.as_deref(), data["type"].as_str(), "{text}");
            data
        })
        .collect();
    let allowed: BTreeSet<&str> = ["type", "id", "side", "text", "ahead", "loading"].into();
    for event in &events {
        let keys: BTreeSet<&str> = event
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert!(
            keys.is_subset(&allowed),
            "a battle event says more than text: {event}"
        );
    }
    let started = &events[0];
    assert_eq!(started["type"], "started", "{text}");
    let id = started["id"].as_str().unwrap().to_string();
    let last = events.last().unwrap();
    assert_eq!(last["type"], "ready", "{text}");
    assert_eq!(last["id"], id.as_str());
    let side_text = |side: &str| -> String {
        events
            .iter()
            .filter(|e| e["type"] == "token" && e["side"] == side)
            .map(|e| e["text"].as_str().unwrap())
            .collect()
    };
    for side in ["a", "b"] {
        assert!(
            events
                .iter()
                .any(|e| e["type"] == "side_done" && e["side"] == side),
            "{text}"
        );
    }
    Streamed {
        a: side_text("a"),
        b: side_text("b"),
        id,
        events,
    }
}

async fn vote(url: &str, id: &str, winner: &str) -> (u16, Value) {
    common::client::post_with_status(
        &format!("{url}/api/arena/battles/{id}/vote"),
        &json!({ "winner": winner }),
    )
    .await
}

/// The greedy reply of `model` to the arena prompt, asked alone through the OpenAI API.
async fn alone(url: &str, model: &str, seed: u64) -> String {
    let body = json!({
        "model": model,
        "messages": [{ "role": "user", "content": PROMPT }],
        "temperature": 0, "max_tokens": 12, "seed": seed,
    });
    let (status, answer) =
        common::client::post_with_status(&format!("{url}/v1/chat/completions"), &body).await;
    assert_eq!(status, 200, "{answer}");
    answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blind_battle_is_voted_once_revealed_rated_exported_and_kept_across_a_restart() {
    let folder = tempfile::tempdir().unwrap();
    let mut server = serve(folder.path(), None);
    server.wait_listening().await;
    let url = server.url.clone();

    let empty = get_json(&format!("{url}/api/arena/leaderboard")).await;
    assert_eq!(empty["votes"], 0, "{empty}");
    assert_eq!(empty["rows"], json!([]));

    let named = battle(
        &url,
        json!({
            "prompt": PROMPT,
            "models": [MODEL, OPPONENT],
            "sampling": { "temperature": 0, "max_tokens": 12, "seed": 7 },
        }),
    )
    .await;
    assert!(!named.a.is_empty() && !named.b.is_empty());

    // Before the vote the battle can be read, but blind.
    let blind = get_json(&format!("{url}/api/arena/battles/{}", named.id)).await;
    assert_eq!(blind["a"], named.a.as_str(), "{blind}");
    assert_eq!(blind["voted"], false);
    assert!(blind.get("verdict").is_none() && !blind.to_string().contains(MODEL));
    let waiting = get_json(&format!("{url}/api/arena/leaderboard")).await;
    assert_eq!(
        (waiting["votes"].as_u64(), waiting["unvoted"].as_u64()),
        (Some(0), Some(1))
    );
    // Nor does the export give an unvoted battle away.
    let exported = get_json(&format!("{url}/api/arena/battles")).await;
    assert_eq!(exported, json!([]));

    // Refused votes change nothing.
    assert_eq!(vote(&url, &named.id, "c").await.0, 400);
    assert_eq!(vote(&url, "not-a-uuid", "a").await.0, 400);
    let (status, missing) = vote(&url, &uuid::Uuid::new_v4().to_string(), "a").await;
    assert_eq!(status, 404, "{missing}");

    // The vote reveals models, engines and figures; the replies are the streamed ones.
    let (status, revealed) = vote(&url, &named.id, "a").await;
    assert_eq!(status, 200, "{revealed}");
    assert_eq!(revealed["verdict"], "a");
    assert_eq!(revealed["a"]["reply"], named.a.as_str());
    assert_eq!(revealed["b"]["reply"], named.b.as_str());
    let sides: BTreeSet<&str> = [
        revealed["a"]["model"].as_str().unwrap(),
        revealed["b"]["model"].as_str().unwrap(),
    ]
    .into();
    assert_eq!(sides, [MODEL, OPPONENT].into());
    assert_eq!(revealed["a"]["metrics"]["engine"], "llama_cpp");
    assert!(
        revealed["a"]["metrics"]["generated_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(revealed["sampling"]["seed"], 7);
    let winner = revealed["a"]["model"].as_str().unwrap().to_string();
    let loser = revealed["b"]["model"].as_str().unwrap().to_string();
    // Real inference: each side is what its model answers alone with the same greedy settings.
    assert_eq!(named.a, alone(&url, &winner, 7).await);
    assert_eq!(named.b, alone(&url, &loser, 7).await);

    let (status, again) = vote(&url, &named.id, "b").await;
    assert_eq!(status, 409, "{again}");
    assert!(
        again["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already voted"),
        "{again}"
    );

    // A second battle between the same two, voted a tie.
    let second = battle(
        &url,
        json!({ "prompt": PROMPT, "models": [OPPONENT, MODEL],
                "sampling": { "temperature": 0, "max_tokens": 8 } }),
    )
    .await;
    let (status, tied) = vote(&url, &second.id, "tie").await;
    assert_eq!(status, 200, "{tied}");

    let check_board = |board: &Value| {
        assert_eq!(board["votes"], 2, "{board}");
        assert_eq!(board["unvoted"], 0, "{board}");
        let rows = board["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 2, "{board}");
        assert_eq!(rows[0]["model"], winner.as_str(), "{board}");
        assert_eq!(
            (rows[0]["wins"].as_u64(), rows[0]["ties"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(
            (rows[1]["losses"].as_u64(), rows[1]["battles"].as_u64()),
            (Some(1), Some(2))
        );
        let (top, bottom) = (
            rows[0]["rating"].as_f64().unwrap(),
            rows[1]["rating"].as_f64().unwrap(),
        );
        assert!(top > 1000.0 && bottom < 1000.0, "{board}");
        assert!(rows[0]["ci_low"].as_f64().unwrap() <= rows[0]["ci_high"].as_f64().unwrap());
        assert!(
            rows[0]["speed"]["decode_tok_s"].as_f64().unwrap() > 0.0,
            "{board}"
        );
        assert_eq!(rows[0]["speed"]["source"], "battles");
    };
    let board = get_json(&format!("{url}/api/arena/leaderboard")).await;
    check_board(&board);

    let csv = reqwest::get(format!("{url}/api/arena/leaderboard?format=csv"))
        .await
        .unwrap();
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = csv.text().await.unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(
        csv.lines()
            .nth(1)
            .unwrap()
            .starts_with(&format!("1,{winner},")),
        "{csv}"
    );
    let votes_csv = reqwest::get(format!("{url}/api/arena/battles?format=csv"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        votes_csv.contains(&named.id) && votes_csv.contains(&second.id),
        "{votes_csv}"
    );
    let (status, _) = common::client::post_with_status(
        &format!("{url}/api/arena/leaderboard?format=xml"),
        &json!({}),
    )
    .await;
    assert_eq!(status, 405);
    assert_eq!(
        reqwest::get(format!("{url}/api/arena/leaderboard?format=xml"))
            .await
            .unwrap()
            .status(),
        400
    );

    // The votes are files in the folder, and the leaderboard is the same after a restart.
    assert_eq!(
        common::binary::files_in(&folder.path().join("arena"), ".json").len(),
        2
    );
    drop(server);
    let mut restarted = serve(folder.path(), None);
    restarted.wait_listening().await;
    check_board(&get_json(&format!("{}/api/arena/leaderboard", restarted.url)).await);
    let (status, _) = vote(&restarted.url, &named.id, "b").await;
    assert_eq!(status, 409, "still voted after the restart");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_battles_are_refused_before_anything_runs_and_a_stopped_one_is_not_stored() {
    let folder = tempfile::tempdir().unwrap();
    let mut server = serve(folder.path(), None);
    server.wait_listening().await;
    let url = server.url.clone();
    let start = |body: Value| {
        let url = url.clone();
        async move { common::client::post_with_status(&format!("{url}/api/arena/battles"), &body).await }
    };
    let cases = [
        (json!({ "prompt": "  " }), 400, "empty"),
        (json!({ "prompt": "x".repeat(8_001) }), 400, "at most 8000"),
        (
            json!({ "prompt": "hi", "models": [MODEL, MODEL] }),
            400,
            "same model twice",
        ),
        (
            json!({ "prompt": "hi", "models": [MODEL, OPPONENT, MODEL] }),
            400,
            "takes two",
        ),
        (
            json!({ "prompt": "hi", "models": [MODEL, "nope"] }),
            404,
            "unknown model `nope`",
        ),
        (
            json!({ "prompt": "hi", "sampling": { "temperature": -1 } }),
            400,
            "temperature",
        ),
        (json!({ "prompt": "hi", "judge": "me" }), 400, "judge"),
    ];
    for (body, status, says) in cases {
        let (got, answer) = start(body.clone()).await;
        assert_eq!(got, status, "{body} → {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{body} → {message}");
    }

    // A battle with no models named picks two different available chat models.
    let random = battle(
        &url,
        json!({ "prompt": PROMPT, "sampling": { "temperature": 0, "max_tokens": 8 } }),
    )
    .await;
    let (status, tied) = vote(&url, &random.id, "tie").await;
    assert_eq!(status, 200, "{tied}");
    let picked: BTreeSet<&str> = [
        tied["a"]["model"].as_str().unwrap(),
        tied["b"]["model"].as_str().unwrap(),
    ]
    .into();
    let models = get_json(&format!("{url}/api/models")).await;
    let contenders: BTreeSet<&str> = models
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["available"] == true && m["instruct"] == true)
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(picked.len(), 2, "{tied}");
    assert!(
        picked.is_subset(&contenders),
        "{picked:?} not among {contenders:?}"
    );
    assert!(
        tied["sampling"]["seed"].is_u64(),
        "a seed is always recorded: {tied}"
    );

    // Stop over the websocket: both sides stop, the battle is abandoned and not stored.
    let mut socket = start_socket(
        &url,
        "/ws/arena",
        json!({ "prompt": "Count from one to one hundred in words.", "models": [MODEL, OPPONENT],
                "sampling": { "max_tokens": 400 } }),
    )
    .await;
    let started = next_event(&mut socket).await.unwrap();
    assert_eq!(started["type"], "started", "{started}");
    loop {
        let event = next_event(&mut socket)
            .await
            .expect("a token before the end");
        if event["type"] == "token" {
            break;
        }
    }
    socket
        .send(tokio_tungstenite::tungstenite::Message::text("\"stop\""))
        .await
        .unwrap();
    let mut last = Value::Null;
    while let Some(event) = next_event(&mut socket).await {
        last = event;
    }
    assert_eq!(last["type"], "abandoned", "{last}");
    assert_eq!(last["status"], 499, "{last}");
    assert!(
        last["message"].as_str().unwrap().contains("not stored"),
        "{last}"
    );
    let (status, _) = vote(&url, started["id"].as_str().unwrap(), "a").await;
    assert_eq!(status, 404);
    let board = get_json(&format!("{url}/api/arena/leaderboard")).await;
    assert_eq!(
        (board["votes"].as_u64(), board["unvoted"].as_u64()),
        (Some(1), Some(0))
    );
}

#[derive(QueryableByName)]
struct VerdictRow {
    #[diesel(sql_type = sql_types::Nullable<sql_types::Text>)]
    verdict: Option<String>,
}

#[tokio::test(flavor = "multi_thread")]
async fn with_database_url_votes_land_in_postgres_and_survive_a_restart() {
    let cluster = pg::PgCluster::start();
    let folder = tempfile::tempdir().unwrap();
    let mut server = serve(folder.path(), Some(&cluster.url()));
    server.wait_listening().await;
    let url = server.url.clone();
    let fought = battle(
        &url,
        json!({ "prompt": PROMPT, "models": [OPPONENT, MODEL],
                "sampling": { "temperature": 0, "max_tokens": 6 } }),
    )
    .await;
    assert!(fought.events.len() > 4);
    let (status, revealed) = vote(&url, &fought.id, "bad").await;
    assert_eq!(status, 200, "{revealed}");

    // Read with our own SQL: the row is in PostgreSQL, nothing in the folder.
    let mut conn = PgConnection::establish(&cluster.url()).unwrap();
    let row: VerdictRow = diesel::sql_query("SELECT verdict FROM arena_battles WHERE id = $1")
        .bind::<sql_types::Uuid, _>(uuid::Uuid::parse_str(&fought.id).unwrap())
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(row.verdict.as_deref(), Some("bad"));
    assert!(!folder.path().join("arena").exists());

    drop(server);
    let mut restarted = serve(folder.path(), Some(&cluster.url()));
    restarted.wait_listening().await;
    let board = get_json(&format!("{}/api/arena/leaderboard", restarted.url)).await;
    assert_eq!(board["votes"], 1, "{board}");
    assert_eq!(board["persistence"]["backend"], "postgres", "{board}");
    let rows = board["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter().all(|r| r["ties"] == 1),
        "both bad counts as a tie: {board}"
    );
    let (status, _) = vote(&restarted.url, &fought.id, "a").await;
    assert_eq!(status, 409);
}
