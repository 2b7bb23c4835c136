//! One contract for every conversation store: tests/storage_contract.rs runs it on the JSON
//! store, tests/postgres.rs on PostgreSQL and on the fallback store.

#![allow(dead_code)]

use std::sync::Arc;

use quantlab::{
    arena::{Battle, BattleSide, Verdict},
    storage::{new_message, ConversationStore, NewConversation, StoreError},
    tree,
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
    let mut bad_parent = message(Role::User, "x");
    bad_parent.parent_id = Some("not-a-uuid".into());
    assert!(matches!(
        store.append(id(&c.id), bad_parent),
        Err(StoreError::Invalid(_))
    ));
    store.delete(id(&c.id)).unwrap();
}

/// Edits and regenerations are stored as siblings, and a legacy line (no parents) still reads
/// as a line: the tree survives the store and an export/import round trip.
fn branches_are_stored_as_a_tree(store: &dyn ConversationStore) {
    let c = store.create(NewConversation::default()).unwrap();
    let conversation = id(&c.id);
    let child = |parent: &StoredMessage, role: Role, text: &str| {
        let mut m = message(role, text);
        m.parent_id = Some(parent.id.clone());
        m
    };
    let mut question = message(Role::User, "first question");
    question.parent_id = Some(tree::ROOT_PARENT.into());
    let answer = child(&question, Role::Assistant, "first answer");
    let regenerated = child(&question, Role::Assistant, "another answer");
    let mut edited = message(Role::User, "edited question");
    edited.parent_id = Some(tree::ROOT_PARENT.into());
    let edited_answer = child(&edited, Role::Assistant, "answer to the edit");
    for m in [&question, &answer, &regenerated, &edited, &edited_answer] {
        store.append(conversation, m.clone()).unwrap();
    }
    let stored = store.get(conversation).unwrap();
    assert_eq!(
        stored.messages[2].parent_id.as_deref(),
        Some(question.id.as_str())
    );
    assert_eq!(
        stored.messages[3].parent_id.as_deref(),
        Some(tree::ROOT_PARENT)
    );
    let parents = tree::parent_indices(&stored.messages);
    assert_eq!(tree::siblings(&parents, 0), [0, 3]);
    assert_eq!(tree::siblings(&parents, 1), [1, 2]);
    assert_eq!(tree::latest_path(&stored.messages), [3, 4]);

    let copy = store
        .create(NewConversation {
            title: "copy".into(),
            messages: stored.messages.clone(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(store.get(id(&copy.id)).unwrap().messages, stored.messages);
    store.delete(id(&copy.id)).unwrap();
    store.delete(conversation).unwrap();
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

pub fn battle(prompt: &str) -> Battle {
    let side = |model: &str, reply: &str| BattleSide {
        model: model.into(),
        name: format!("{model} (name)"),
        reply: reply.into(),
        metrics: GenerationMetrics {
            model: model.into(),
            engine: "llama.cpp".into(),
            generated_tokens: 7,
            decode_tokens_per_s: 42.5,
            ..Default::default()
        },
    };
    Battle {
        id: Uuid::new_v4().to_string(),
        created_at_ms: quantlab::storage::now_ms(),
        prompt: prompt.into(),
        sampling: SamplingParams {
            temperature: Some(0.7),
            seed: Some(1234),
            ..Default::default()
        },
        a: side(
            "model-x",
            "reply of x: émoji 🦀, \"quotes\", '; DROP TABLE arena_battles; --",
        ),
        b: side("model-y", "reply of y"),
        verdict: None,
        voted_at_ms: None,
    }
}

/// A battle round-trips whole; it takes one vote, and a second (of any verdict) is a conflict
/// that changes nothing; unknown ids are `BattleNotFound`; saving it again keeps the vote.
fn battles_round_trip_and_take_one_vote(store: &dyn ConversationStore) {
    let first = battle("which is better?");
    store.save_battle(&first).unwrap();
    let id = id(&first.id);
    assert_eq!(store.battle(id).unwrap(), first);
    assert!(store.battles().unwrap().iter().any(|b| b.id == first.id));

    let voted = store.vote(id, Verdict::B).unwrap();
    assert_eq!(voted.verdict, Some(Verdict::B));
    assert!(voted.voted_at_ms.is_some());
    assert_eq!(voted.a, first.a);
    for again in [Verdict::A, Verdict::B, Verdict::Tie] {
        match store.vote(id, again) {
            Err(StoreError::Conflict(msg)) => assert!(msg.contains("already voted"), "{msg}"),
            other => panic!("a second vote must be refused, got {other:?}"),
        }
    }
    assert_eq!(store.battle(id).unwrap().verdict, Some(Verdict::B));
    // Saving the unvoted battle again (an import replaying) does not undo the vote.
    store.save_battle(&first).unwrap();
    assert_eq!(store.battle(id).unwrap().verdict, Some(Verdict::B));

    let unknown = Uuid::new_v4();
    assert!(matches!(store.battle(unknown), Err(StoreError::BattleNotFound(u)) if u == unknown));
    assert!(matches!(
        store.vote(unknown, Verdict::A),
        Err(StoreError::BattleNotFound(_))
    ));
    let mut bad = battle("nul \0 inside");
    assert!(matches!(
        store.save_battle(&bad),
        Err(StoreError::Invalid(_))
    ));
    bad.prompt = "fine".into();
    bad.id = "not-a-uuid".into();
    assert!(matches!(
        store.save_battle(&bad),
        Err(StoreError::Invalid(_))
    ));
}

/// Votes racing on one battle: exactly one lands.
fn racing_votes_on_one_battle_record_exactly_one(store: Arc<dyn ConversationStore>) {
    let contested = battle("race");
    store.save_battle(&contested).unwrap();
    let battle_id = id(&contested.id);
    let handles: Vec<_> = [
        Verdict::A,
        Verdict::B,
        Verdict::Tie,
        Verdict::Bad,
        Verdict::A,
        Verdict::B,
    ]
    .into_iter()
    .map(|verdict| {
        let store = store.clone();
        std::thread::spawn(move || store.vote(battle_id, verdict).map(|b| b.verdict))
    })
    .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let landed: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(landed.len(), 1, "{results:?}");
    assert!(results
        .iter()
        .filter(|r| r.is_err())
        .all(|r| matches!(r, Err(StoreError::Conflict(_)))));
    assert_eq!(&store.battle(battle_id).unwrap().verdict, landed[0]);
}

pub fn run_all(store: Arc<dyn ConversationStore>) {
    battles_round_trip_and_take_one_vote(store.as_ref());
    racing_votes_on_one_battle_record_exactly_one(store.clone());
    any_text_round_trips(store.as_ref());
    provenance_and_import_round_trip(store.as_ref());
    appends_are_idempotent_by_message_id(store.as_ref());
    ordering_rename_search_delete(store.as_ref());
    unknown_ids_and_bad_messages_are_refused(store.as_ref());
    branches_are_stored_as_a_tree(store.as_ref());
    two_writers_at_once_lose_nothing(store);
}
