//! `quantlab serve` with `DATABASE_URL`, run as a user runs it: conversations land in
//! PostgreSQL (not in the folder); when the database dies the next save is still acknowledged
//! and lands in the JSON folder while the UI says so; when it comes back the JSON is imported,
//! exactly once, even when the same file turns up again.

#![cfg(feature = "ssr")]

mod common;
#[path = "common/pg.rs"]
mod pg;

use std::time::{Duration, Instant};

use common::binary::{command, files_in, Binary};
use common::client::{create_conversation, get_json};
use diesel::{pg::PgConnection, sql_types, Connection, QueryableByName, RunQueryDsl};
use pg::PgCluster;
use serde_json::{json, Value};
use uuid::Uuid;

const SECRET: &str = "s3cret-not-for-logs";

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = sql_types::BigInt)]
    n: i64,
}

/// Messages PostgreSQL holds for a conversation, read with our own SQL, not the app's store.
fn messages_in_database(url: &str, id: &str) -> i64 {
    let mut conn = PgConnection::establish(url).expect("connect to the test cluster");
    diesel::sql_query("SELECT count(*) AS n FROM messages WHERE conversation_id = $1")
        .bind::<sql_types::Uuid, _>(Uuid::parse_str(id).unwrap())
        .get_result::<Count>(&mut conn)
        .expect("count")
        .n
}

fn serve(database_url: &str, folder: &std::path::Path) -> Binary {
    let mut cmd = command();
    cmd.env("DATABASE_URL", database_url)
        .arg("--conversations-dir")
        .arg(folder);
    Binary::serve(cmd, &["--lazy"])
}

async fn persistence(client: &reqwest::Client, url: &str) -> Value {
    client
        .get(format!("{url}/api/persistence"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn append(client: &reqwest::Client, url: &str, id: &str, text: &str) -> reqwest::Response {
    client
        .post(format!("{url}/api/conversations/{id}/messages"))
        .json(&json!({ "role": "user", "content": text }))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_stores_in_postgres_falls_back_to_files_and_imports_back_once() {
    let cluster = PgCluster::start();
    let folder = tempfile::tempdir().unwrap();
    let with_password = cluster
        .url()
        .replace("quantlab@", &format!("quantlab:{SECRET}@"));
    let mut server = serve(&with_password, folder.path());
    server.wait_listening().await;
    let client = reqwest::Client::new();
    let url = server.url.clone();

    let status = persistence(&client, &url).await;
    assert_eq!(status["backend"], "postgres", "{status}");
    assert!(
        server.log().contains("backend=\"postgres\"") || server.log().contains("backend=postgres"),
        "the start-up log names the backend:\n{}",
        server.log()
    );
    // The cluster trusts loopback, so the URL's password is accepted and must never be shown.
    assert!(!server.log().contains(SECRET) && !status.to_string().contains(SECRET));

    let id = create_conversation(
        &url,
        json!({ "title": "Kept in PostgreSQL", "messages": [
            { "role": "user", "content": "first question" },
            { "role": "assistant", "content": "first answer" },
        ]}),
    )
    .await;
    assert_eq!(messages_in_database(&cluster.url(), &id), 2);
    assert!(
        files_in(folder.path(), ".json").is_empty(),
        "nothing goes to the folder while the database is up"
    );

    // The database dies mid-conversation: the next save is acknowledged and kept in a file.
    cluster.kill();
    let during = append(&client, &url, &id, "asked while the database was down").await;
    assert!(
        during.status().is_success(),
        "{}",
        during.text().await.unwrap()
    );
    assert_eq!(
        files_in(folder.path(), ".json"),
        [folder.path().join(format!("{id}.json"))]
    );
    let status = persistence(&client, &url).await;
    assert_eq!(status["backend"], "json_fallback", "{status}");
    assert_eq!(status["pending_import"], 1, "{status}");
    // The page says so, rendered by the server itself.
    let page = client.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(
        page.contains("Database unreachable: saving to local files"),
        "the sidebar's badge turns"
    );

    // It comes back: the watcher imports the file and PostgreSQL is used again.
    cluster.start_server();
    let deadline = Instant::now() + Duration::from_secs(30);
    while persistence(&client, &url).await["backend"] != "postgres" {
        assert!(
            Instant::now() < deadline,
            "not back on PostgreSQL:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(messages_in_database(&cluster.url(), &id), 3);
    assert!(files_in(folder.path(), ".json").is_empty());
    let imported = folder.path().join("imported").join(format!("{id}.json"));
    assert!(imported.is_file(), "imported files are kept aside");
    let conversation = get_json(&format!("{url}/api/conversations/{id}")).await;
    assert_eq!(conversation["title"], "Kept in PostgreSQL");
    let texts: Vec<&str> = conversation["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        [
            "first question",
            "first answer",
            "asked while the database was down"
        ]
    );

    // The same file again (a restored backup) and a restart: the import adds nothing.
    drop(server);
    std::fs::copy(&imported, folder.path().join(format!("{id}.json"))).unwrap();
    let mut server = serve(&cluster.url(), folder.path());
    server.wait_listening().await;
    assert_eq!(
        persistence(&client, &server.url).await["backend"],
        "postgres"
    );
    assert_eq!(messages_in_database(&cluster.url(), &id), 3);
    assert!(files_in(folder.path(), ".json").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_with_an_unreachable_database_starts_on_files_and_says_so() {
    let cluster = PgCluster::start();
    let url = cluster.url();
    cluster.kill();
    let folder = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut server = serve(&url, folder.path());
    server.wait_listening().await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "start-up must not hang on a dead database"
    );
    let client = reqwest::Client::new();
    let status = persistence(&client, &server.url).await;
    assert_eq!(status["backend"], "json_fallback", "{status}");
    assert!(
        status["detail"].as_str().unwrap().contains("unreachable"),
        "{status}"
    );
    let created = client
        .post(format!("{}/api/conversations", server.url))
        .json(&json!({ "title": "Born offline" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(folder.path().join(format!("{id}.json")).is_file());
    cluster.start_server();
    let deadline = Instant::now() + Duration::from_secs(30);
    while persistence(&client, &server.url).await["backend"] != "postgres" {
        assert!(Instant::now() < deadline, "not back on PostgreSQL");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let conversation = get_json(&format!("{}/api/conversations/{id}", server.url)).await;
    assert_eq!(conversation["title"], "Born offline");
}
