//! One contract for every conversation store: tests/storage_contract.rs runs it on the JSON
//! store, tests/postgres.rs on PostgreSQL and on the fallback store.

#![allow(dead_code)]

use std::sync::Arc;

use quantlab::{
    storage::{new_message, ConversationStore, NewConversation, StoreError},
    types::{GenerationMetrics, Role, SamplingParams, StoredMessage},
};
use uuid::Uuid;

pub fn message(role: Role, text: &str) -> StoredMessage {
    new_message(role, text)
}

fn id(s: &str) -> Uuid {
    Uuid::parse_str(s).unwrap()
}

fn any_text_round_trips(store: &dyn ConversationStore) {
    let texts = [
        "plain",
        "quotes \" ' ` and backslashes \\ \\\\n",
        "new\nlines\r\nand\ttabs",
        "emoji 🦀👩‍👩‍👧 and CJK 東京",
        "RTL: مرحبا بالعالم שלום",
        "{\"json\": [1, 2]} <b>html</b> '; DROP TABLE messages; --",
    ];
    let big = "x".repeat(100 * 1024);
    let c = store
        .create(NewConversation {
            title: "Round trip ✓".into(),
            ..Default::default()
        })
        .unwrap();
    for t in texts.iter().copied().chain([big.as_str()]) {
        store.append(id(&c.id), message(Role::User, t)).unwrap();
    }
    let back = store.get(id(&c.id)).unwrap();
    assert_eq!(back.title, "Round trip ✓");
    let contents: Vec<&str> = back.messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents[..texts.len()], texts[..]);
    assert_eq!(contents[texts.len()].len(), big.len());
    store.delete(id(&c.id)).unwrap();
}

fn provenance_and_import_round_trip(store: &dyn ConversationStore) {
    let mut reply = message(Role::Assistant, "Paris.");
    reply.model = Some("smollm2-135m-instruct".into());
    reply.engine = Some("llama_cpp".into());
    reply.sampling = Some(SamplingParams {
        temperature: Some(0.0),
        seed: Some(7),
        ..Default::default()
    });
    reply.metrics = Some(GenerationMetrics {
        generated_tokens: 3,
        decode_tokens_per_s: 80.5,
        seed: 7,
        ..Default::default()
    });
    reply.interrupted = true;
    let imported = store
        .create(NewConversation {
            id: None,
            title: "Imported".into(),
            messages: vec![message(Role::User, "Capital?"), reply.clone()],
        })
        .unwrap();
    let back = store.get(id(&imported.id)).unwrap();
    assert_eq!(back.messages.len(), 2);
    assert_eq!(back.messages[1], reply);
    assert_eq!(
        back.summary().model.as_deref(),
        Some("smollm2-135m-instruct")
    );
    store.delete(id(&imported.id)).unwrap();
}

fn appends_are_idempotent_by_message_id(store: &dyn ConversationStore) {
    let c = store
        .create(NewConversation {
            title: "idem".into(),
            ..Default::default()
        })
        .unwrap();
    let m = message(Role::User, "once");
    store.append(id(&c.id), m.clone()).unwrap();
    let summary = store.append(id(&c.id), m).unwrap();
    assert_eq!(summary.message_count, 1);
    store.delete(id(&c.id)).unwrap();
}

fn ordering_rename_search_delete(store: &dyn ConversationStore) {
    let tag = Uuid::new_v4().simple().to_string();
    let older = store
        .create(NewConversation {
            title: format!("Older {tag}"),
            ..Default::default()
        })
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let newer = store
        .create(NewConversation {
            title: format!("Newer {tag}"),
            ..Default::default()
        })
        .unwrap();
    let listed: Vec<String> = store
        .list(Some(&tag))
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(
        listed,
        vec![newer.id.clone(), older.id.clone()],
        "most recently updated first"
    );

    std::thread::sleep(std::time::Duration::from_millis(5));
    store
        .append(
            id(&older.id),
            message(Role::User, &format!("a Needle {tag} in text")),
        )
        .unwrap();
    let listed: Vec<String> = store
        .list(Some(&tag))
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(
        listed[0], older.id,
        "an append moves a conversation to the top"
    );

    let found = store.list(Some(&format!("needle {tag}"))).unwrap();
    assert_eq!(
        found.len(),
        1,
        "search matches message text, case-insensitively"
    );
    assert_eq!(found[0].message_count, 1);

    let renamed = store
        .rename(id(&newer.id), &format!("  Renamed {tag}  "))
        .unwrap();
    assert_eq!(renamed.title, format!("Renamed {tag}"));
    assert_eq!(
        store.list(Some(&format!("renamed {tag}"))).unwrap().len(),
        1
    );

    store.delete(id(&older.id)).unwrap();
    store.delete(id(&newer.id)).unwrap();
    assert!(matches!(
        store.get(id(&older.id)),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.delete(id(&older.id)),
        Err(StoreError::NotFound(_))
    ));
    assert!(store.list(Some(&tag)).unwrap().is_empty());
}

fn unknown_ids_and_bad_messages_are_refused(store: &dyn ConversationStore) {
    let missing = Uuid::new_v4();
    assert!(matches!(store.get(missing), Err(StoreError::NotFound(_))));
    assert!(matches!(
        store.append(missing, message(Role::User, "x")),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.rename(missing, "x"),
        Err(StoreError::NotFound(_))
    ));
    let c = store.create(NewConversation::default()).unwrap();
    assert_eq!(c.title, "New conversation");
    let mut bad = message(Role::User, "x");
    bad.id = "../../etc/passwd".into();
    assert!(matches!(
        store.append(id(&c.id), bad),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.append(id(&c.id), message(Role::User, "nul\0")),
        Err(StoreError::Invalid(_))
    ));
    store.delete(id(&c.id)).unwrap();
}

fn two_writers_at_once_lose_nothing(store: Arc<dyn ConversationStore>) {
    let c = store
        .create(NewConversation {
            title: "tabs".into(),
            ..Default::default()
        })
        .unwrap();
    let handles: Vec<_> = (0..2)
        .map(|tab| {
            let store = store.clone();
            let cid = id(&c.id);
            std::thread::spawn(move || {
                for i in 0..20 {
                    store
                        .append(cid, message(Role::User, &format!("tab {tab} message {i}")))
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(store.get(id(&c.id)).unwrap().messages.len(), 40);
    store.delete(id(&c.id)).unwrap();
}

pub fn run_all(store: Arc<dyn ConversationStore>) {
    any_text_round_trips(store.as_ref());
    provenance_and_import_round_trip(store.as_ref());
    appends_are_idempotent_by_message_id(store.as_ref());
    ordering_rename_search_delete(store.as_ref());
    unknown_ids_and_bad_messages_are_refused(store.as_ref());
    two_writers_at_once_lose_nothing(store);
}
