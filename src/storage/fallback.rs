//! PostgreSQL first, JSON files when it is unreachable, and back again without losing or
//! duplicating anything.
//!
//! While the database is up every call goes to it. A call that finds it unreachable marks it
//! down and is answered from the JSON folder instead (writes land there durably before they are
//! acknowledged). While it is down, calls go straight to JSON and a background check retries the
//! database every few seconds; when it answers, every JSON conversation is merged into it (by
//! message id, so a repeated import adds nothing) and moved to `imported/`, and PostgreSQL is
//! used again.

use std::{
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use uuid::Uuid;

use super::{json::JsonStore, postgres::PgStore, ConversationStore, NewConversation, StoreError};
use crate::arena::{Battle, Verdict};
use crate::types::{
    Conversation, ConversationSummary, PersistenceBackend, PersistenceStatus, StoredMessage,
};

/// How often a down database is retried.
pub const RECHECK_EVERY: Duration = Duration::from_secs(5);

pub struct FallbackStore {
    postgres: PgStore,
    json: JsonStore,
    /// Why the database is considered down; `None` while it is up.
    down: Mutex<Option<String>>,
}

impl FallbackStore {
    /// Tries the database once (migrating it) and starts in whichever mode that allows.
    pub fn open(postgres: PgStore, json: JsonStore) -> Arc<Self> {
        let store = Arc::new(Self {
            postgres,
            json,
            down: Mutex::new(Some("not checked yet".into())),
        });
        store.reconcile();
        store
    }

    /// Retries a down database in the background for as long as the store lives.
    pub fn watch(self: &Arc<Self>) {
        let weak: Weak<Self> = Arc::downgrade(self);
        let _ = std::thread::Builder::new()
            .name("postgres-watch".into())
            .spawn(move || loop {
                std::thread::sleep(RECHECK_EVERY);
                match weak.upgrade() {
                    Some(store) => {
                        if store.is_down() {
                            store.reconcile();
                        }
                    }
                    None => return,
                }
            });
    }

    pub fn is_down(&self) -> bool {
        self.down.lock().map(|d| d.is_some()).unwrap_or(true)
    }

    fn mark_down(&self, why: &str) {
        tracing::warn!("PostgreSQL unreachable, saving to JSON files until it is back: {why}");
        if let Ok(mut down) = self.down.lock() {
            *down = Some(why.to_string());
        }
    }

    /// Checks the database; if it answers, imports what was saved to JSON meanwhile and marks it
    /// up. Returns whether PostgreSQL is in use afterwards.
    pub fn reconcile(&self) -> bool {
        let result = self.postgres.migrate().and_then(|()| self.import_json());
        match result {
            Ok(imported) => {
                if imported > 0 {
                    tracing::info!(
                        "imported {imported} conversation(s) and battle(s) saved while PostgreSQL was away"
                    );
                }
                if let Ok(mut down) = self.down.lock() {
                    *down = None;
                }
                true
            }
            Err(e) => {
                self.mark_down(&e.to_string());
                false
            }
        }
    }

    /// Moves what was saved to JSON meanwhile (conversations and arena battles) into the
    /// database; returns how many conversations and battles it moved.
    fn import_json(&self) -> Result<usize, StoreError> {
        let pending = self.json.all()?;
        for conversation in &pending {
            self.postgres.merge(conversation)?;
            if let Ok(id) = Uuid::parse_str(&conversation.id) {
                self.json.archive(id)?;
            }
        }
        let battles = self.json.battle_files()?;
        for battle in &battles {
            self.postgres.merge_battle(battle)?;
            if let Ok(id) = Uuid::parse_str(&battle.id) {
                self.json.archive_battle(id)?;
            }
        }
        Ok(pending.len() + battles.len())
    }

    /// Runs `db` while the database is up; if it is (or turns out to be) unreachable, runs `files`.
    fn either<T>(
        &self,
        db: impl FnOnce(&PgStore) -> Result<T, StoreError>,
        files: impl FnOnce(&JsonStore) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if !self.is_down() {
            match db(&self.postgres) {
                Err(StoreError::Unavailable(why)) => self.mark_down(&why),
                other => return other,
            }
        }
        files(&self.json)
    }

    fn battle_in_database(id: Uuid, e: StoreError) -> StoreError {
        match e {
            StoreError::BattleNotFound(_) => StoreError::Unavailable(format!(
                "arena battle {id} is kept in PostgreSQL, which is unreachable right now; nothing \
                 was recorded, retry when it is back"
            )),
            other => other,
        }
    }

    fn stored_in_database(id: Uuid) -> StoreError {
        StoreError::Unavailable(format!(
            "conversation {id} is kept in PostgreSQL, which is unreachable right now; it is not lost and will be back with the database"
        ))
    }
}

impl ConversationStore for FallbackStore {
    fn list(&self, query: Option<&str>) -> Result<Vec<ConversationSummary>, StoreError> {
        self.either(|pg| pg.list(query), |json| json.list(query))
    }

    fn get(&self, id: Uuid) -> Result<Conversation, StoreError> {
        self.either(
            |pg| pg.get(id),
            |json| {
                json.get(id).map_err(|e| match e {
                    StoreError::NotFound(id) => Self::stored_in_database(id),
                    other => other,
                })
            },
        )
    }

    fn create(&self, new: NewConversation) -> Result<Conversation, StoreError> {
        let copy = new.clone();
        self.either(|pg| pg.create(new), |json| json.create(copy))
    }

    fn append(&self, id: Uuid, message: StoredMessage) -> Result<ConversationSummary, StoreError> {
        let copy = message.clone();
        self.either(
            |pg| pg.append(id, message),
            // The conversation may live in the database: keep the message beside it in a JSON
            // placeholder; the import merges it into the real conversation.
            |json| json.append_or_create(id, copy, "Saved while the database was unreachable"),
        )
    }

    fn rename(&self, id: Uuid, title: &str) -> Result<ConversationSummary, StoreError> {
        self.either(
            |pg| pg.rename(id, title),
            |json| {
                json.rename(id, title).map_err(|e| match e {
                    StoreError::NotFound(id) => Self::stored_in_database(id),
                    other => other,
                })
            },
        )
    }

    fn delete(&self, id: Uuid) -> Result<(), StoreError> {
        self.either(
            |pg| pg.delete(id),
            |json| {
                json.delete(id).map_err(|e| match e {
                    StoreError::NotFound(id) => Self::stored_in_database(id),
                    other => other,
                })
            },
        )
    }

    fn save_battle(&self, battle: &Battle) -> Result<(), StoreError> {
        self.either(|pg| pg.save_battle(battle), |json| json.save_battle(battle))
    }

    fn battle(&self, id: Uuid) -> Result<Battle, StoreError> {
        self.either(
            |pg| pg.battle(id),
            |json| json.battle(id).map_err(|e| Self::battle_in_database(id, e)),
        )
    }

    /// A vote on a battle kept in the database waits for it (503, nothing recorded) rather than
    /// being taken somewhere it could contradict a vote the database already holds.
    fn vote(&self, id: Uuid, verdict: Verdict) -> Result<Battle, StoreError> {
        self.either(
            |pg| pg.vote(id, verdict),
            |json| {
                json.vote(id, verdict)
                    .map_err(|e| Self::battle_in_database(id, e))
            },
        )
    }

    fn battles(&self) -> Result<Vec<Battle>, StoreError> {
        self.either(|pg| pg.battles(), |json| json.battles())
    }

    fn status(&self) -> PersistenceStatus {
        let down = self.down.lock().ok().and_then(|d| d.clone());
        match down {
            None => self.postgres.status(),
            Some(why) => PersistenceStatus {
                backend: PersistenceBackend::JsonFallback,
                detail: format!(
                    "PostgreSQL at {} is unreachable ({why}); saving to {} and importing when it is back",
                    self.postgres.url(),
                    self.json.dir().display()
                ),
                pending_import: self.json.count().unwrap_or(0),
            },
        }
    }
}
