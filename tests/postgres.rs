//! PostgreSQL: the store contract on a real server, and the fallback under a database that dies
//! and comes back — nothing acknowledged is lost, and the import happens exactly once.

#![cfg(feature = "ssr")]

#[path = "common/contract.rs"]
mod contract;
#[path = "common/pg.rs"]
mod pg;

use std::sync::Arc;

use pg::PgCluster;
use quantlab::{
    arena::Verdict,
    storage::{
        fallback::FallbackStore, json::JsonStore, postgres::PgStore, ConversationStore,
        NewConversation, StoreError,
    },
    types::{PersistenceBackend, Role},
};
use uuid::Uuid;

#[test]
fn postgres_store_meets_the_contract() {
    let cluster = PgCluster::start();
    let store = PgStore::new(&cluster.url()).unwrap();
    store.migrate().unwrap();
    contract::run_all(Arc::new(store));
}

#[test]
fn fallback_store_meets_the_contract_while_the_database_is_up() {
    let cluster = PgCluster::start();
    let json = tempfile::tempdir().unwrap();
    let store = FallbackStore::open(
        PgStore::new(&cluster.url()).unwrap(),
        JsonStore::open(json.path()).unwrap(),
    );
    assert_eq!(store.status().backend, PersistenceBackend::Postgres);
    contract::run_all(store);
}

#[test]
fn saves_survive_the_database_going_away_and_are_imported_once() {
    let cluster = PgCluster::start();
    let json_dir = tempfile::tempdir().unwrap();
    let store = FallbackStore::open(
        PgStore::new(&cluster.url()).unwrap(),
        JsonStore::open(json_dir.path()).unwrap(),
    );
    assert_eq!(store.status().backend, PersistenceBackend::Postgres);

    let c = store
        .create(NewConversation {
            title: "Outage".into(),
            ..Default::default()
        })
        .unwrap();
    let id = Uuid::parse_str(&c.id).unwrap();
    store
        .append(id, contract::message(Role::User, "before 1"))
        .unwrap();
    store
        .append(id, contract::message(Role::Assistant, "before 2"))
        .unwrap();

    cluster.kill();
    // Acknowledged saves while the database is gone land in JSON files.
    let during_1 = contract::message(Role::User, "during 1");
    let during_2 = contract::message(Role::Assistant, "during 2");
    store.append(id, during_1.clone()).unwrap();
    store.append(id, during_2.clone()).unwrap();
    let fresh = store
        .create(NewConversation {
            title: "Born offline".into(),
            ..Default::default()
        })
        .unwrap();
    store
        .append(
            Uuid::parse_str(&fresh.id).unwrap(),
            contract::message(Role::User, "hello offline"),
        )
        .unwrap();
    let status = store.status();
    assert_eq!(
        status.backend,
        PersistenceBackend::JsonFallback,
        "{status:?}"
    );
    assert_eq!(status.pending_import, 2);
    assert!(status.detail.contains("unreachable"));
    // A conversation only the database holds is reported as such, not as missing.
    match store.rename(Uuid::new_v4(), "x") {
        Err(StoreError::Unavailable(msg)) => assert!(msg.contains("not lost")),
        other => panic!("expected Unavailable, got {other:?}"),
    }

    cluster.start_server();
    assert!(store.reconcile(), "the database is back");
    assert_eq!(store.status().backend, PersistenceBackend::Postgres);
    let merged = store.get(id).unwrap();
    let texts: Vec<&str> = merged.messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(texts, ["before 1", "before 2", "during 1", "during 2"]);
    assert_eq!(
        merged.title, "Outage",
        "the database's title wins over the placeholder"
    );
    assert_eq!(
        store
            .get(Uuid::parse_str(&fresh.id).unwrap())
            .unwrap()
            .messages
            .len(),
        1
    );

    // Importing again (e.g. a restored JSON folder) adds nothing: idempotent by message id.
    let pg = PgStore::new(&cluster.url()).unwrap();
    let mut replay = merged.clone();
    replay
        .messages
        .retain(|m| m.id == during_1.id || m.id == during_2.id);
    pg.merge(&replay).unwrap();
    assert_eq!(pg.get(id).unwrap().messages.len(), 4);
    assert!(store.reconcile());
    assert_eq!(store.get(id).unwrap().messages.len(), 4);
    assert_eq!(store.status().pending_import, 0);
    assert!(
        json_dir
            .path()
            .join("imported")
            .join(format!("{id}.json"))
            .is_file(),
        "imported files are kept aside, not deleted"
    );
}

#[test]
fn battles_and_votes_survive_the_database_going_away_and_are_imported_once() {
    let cluster = PgCluster::start();
    let json_dir = tempfile::tempdir().unwrap();
    let store = FallbackStore::open(
        PgStore::new(&cluster.url()).unwrap(),
        JsonStore::open(json_dir.path()).unwrap(),
    );
    let kept = contract::battle("stored while the database is up");
    store.save_battle(&kept).unwrap();
    let kept_id = Uuid::parse_str(&kept.id).unwrap();

    cluster.kill();
    let offline = contract::battle("stored while the database is away");
    let offline_id = Uuid::parse_str(&offline.id).unwrap();
    store.save_battle(&offline).unwrap();
    assert_eq!(store.status().backend, PersistenceBackend::JsonFallback);
    assert!(json_dir
        .path()
        .join("arena")
        .join(format!("{offline_id}.json"))
        .is_file());
    // Its vote is taken (and taken once) while the database is away...
    assert_eq!(
        store.vote(offline_id, Verdict::A).unwrap().verdict,
        Some(Verdict::A)
    );
    assert!(matches!(
        store.vote(offline_id, Verdict::B),
        Err(StoreError::Conflict(_))
    ));
    // ...but a battle only the database holds says so and records nothing.
    match store.vote(kept_id, Verdict::B) {
        Err(StoreError::Unavailable(msg)) => assert!(msg.contains("nothing was recorded"), "{msg}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }

    cluster.start_server();
    assert!(store.reconcile());
    let imported = store.battle(offline_id).unwrap();
    assert_eq!(imported.verdict, Some(Verdict::A));
    assert_eq!(imported.a, offline.a);
    assert_eq!(store.battle(kept_id).unwrap().verdict, None);
    assert_eq!(
        store.vote(kept_id, Verdict::Tie).unwrap().verdict,
        Some(Verdict::Tie)
    );
    assert!(json_dir
        .path()
        .join("arena/imported")
        .join(format!("{offline_id}.json"))
        .is_file());
    // Replaying the import (a restored folder) changes nothing.
    let pg = PgStore::new(&cluster.url()).unwrap();
    pg.merge_battle(&offline).unwrap();
    assert_eq!(pg.battle_row(offline_id).unwrap().verdict, Some(Verdict::A));
    assert_eq!(store.battles().unwrap().len(), 2);
}

#[test]
fn an_unreachable_database_at_start_up_means_json_until_it_appears() {
    let cluster = PgCluster::start();
    let url = cluster.url();
    cluster.kill();
    let json_dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let store = FallbackStore::open(
        PgStore::new(&url).unwrap(),
        JsonStore::open(json_dir.path()).unwrap(),
    );
    assert!(
        started.elapsed().as_secs() < 10,
        "start-up must not hang on a dead database"
    );
    assert_eq!(store.status().backend, PersistenceBackend::JsonFallback);
    let c = store
        .create(NewConversation {
            title: "early".into(),
            ..Default::default()
        })
        .unwrap();
    cluster.start_server();
    assert!(store.reconcile());
    assert_eq!(
        store.get(Uuid::parse_str(&c.id).unwrap()).unwrap().title,
        "early"
    );
    let _ = cluster.path();
}
