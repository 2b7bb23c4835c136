//! The JSON store under SIGKILL: a writer process is killed in the middle of a burst of saves;
//! afterwards every file parses and every save it acknowledged is there.

#![cfg(feature = "ssr")]

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use quantlab::{
    storage::{json::JsonStore, new_message, ConversationStore, NewConversation},
    types::Role,
};
use uuid::Uuid;

/// The child's side: appends until killed, printing each id once its save returned.
/// Ignored in normal runs; the parent test starts it explicitly.
#[test]
#[ignore = "started as a child process by sigkill_during_a_burst_of_writes_loses_nothing_acknowledged"]
fn writer_child() {
    let (Ok(dir), Ok(id)) = (
        std::env::var("QUANTLAB_WRITER_DIR"),
        std::env::var("QUANTLAB_WRITER_CONVERSATION"),
    ) else {
        return;
    };
    let store = JsonStore::open(dir).unwrap();
    let id = Uuid::parse_str(&id).unwrap();
    let mut out = std::io::stdout().lock();
    for i in 0..1_000_000 {
        let message = new_message(Role::User, format!("message {i} {}", "x".repeat(4096)));
        store.append(id, message.clone()).unwrap();
        writeln!(out, "ACK {}", message.id).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn sigkill_during_a_burst_of_writes_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let store = JsonStore::open(dir.path()).unwrap();
    let conversation = store
        .create(NewConversation {
            title: "burst".into(),
            ..Default::default()
        })
        .unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "writer_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("QUANTLAB_WRITER_DIR", dir.path())
        .env("QUANTLAB_WRITER_CONVERSATION", &conversation.id)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acknowledged = Vec::new();
    let started = Instant::now();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Kill it mid-burst: after a good number of saves, at an arbitrary point of the next one.
    while acknowledged.len() < 60 && started.elapsed() < Duration::from_secs(60) {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(id) = line.strip_prefix("ACK ") {
                    acknowledged.push(id.to_string());
                }
            }
            _ => break,
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Lines already written before the kill are acknowledgements too.
    for line in lines.map_while(Result::ok) {
        if let Some(id) = line.strip_prefix("ACK ") {
            acknowledged.push(id.to_string());
        }
    }
    assert!(
        acknowledged.len() >= 60,
        "the writer made {} saves",
        acknowledged.len()
    );

    let reopened = JsonStore::open(dir.path()).unwrap();
    let all = reopened.all().unwrap();
    assert!(
        reopened.quarantined().is_empty(),
        "a file did not parse: {:?}",
        reopened.quarantined()
    );
    assert_eq!(all.len(), 1);
    let saved: std::collections::HashSet<&str> =
        all[0].messages.iter().map(|m| m.id.as_str()).collect();
    for id in &acknowledged {
        assert!(
            saved.contains(id.as_str()),
            "acknowledged message {id} was lost"
        );
    }
}
