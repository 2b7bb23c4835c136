//! Conversation storage: one `ConversationStore` trait, a durable JSON-file implementation, a
//! PostgreSQL one, and the store that picks between them and falls back without losing saves.

pub mod battles;
pub mod export;
pub mod fallback;
pub mod json;
pub mod postgres;

use uuid::Uuid;

use crate::{
    arena::{Battle, Verdict},
    error::AppError,
    types::{Conversation, ConversationSummary, PersistenceStatus, StoredMessage},
};

/// Longest title kept (characters); longer ones are cut.
pub const MAX_TITLE_CHARS: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("conversation {0} not found")]
    NotFound(Uuid),
    #[error("arena battle {0} not found")]
    BattleNotFound(Uuid),
    /// The change contradicts what is stored (a second vote on a battle).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    /// The backend cannot be reached (database down); the fallback store takes over.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The disk is full (or the file would pass a size limit): nothing was written.
    #[error("the disk is full: {0}")]
    NoSpace(String),
    /// The store's folder or file cannot be written: nothing was written.
    #[error("the store is read-only: {0}")]
    ReadOnly(String),
    #[error("storage I/O error: {0}")]
    Io(String),
}

impl StoreError {
    /// An I/O failure on `path`, told apart by what a person can do about it.
    pub fn from_io(context: &str, path: &std::path::Path, e: std::io::Error) -> Self {
        let detail = format!("{context} {}: {e}", path.display());
        match e.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => StoreError::NoSpace(detail),
            Some(libc::EROFS | libc::EACCES | libc::EPERM) => StoreError::ReadOnly(detail),
            _ => StoreError::Io(detail),
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) => AppError::NotFound(format!("conversation {id} not found")),
            StoreError::BattleNotFound(id) => AppError::NotFound(format!(
                "arena battle {id} not found: a battle is stored once both replies are complete"
            )),
            StoreError::Conflict(msg) => AppError::Conflict(msg),
            StoreError::Invalid(msg) => AppError::BadRequest(msg),
            StoreError::Unavailable(msg) => {
                AppError::ModelUnavailable(format!("storage unavailable: {msg}"))
            }
            // The path stays in the log; the person learns what to do, and that nothing changed.
            StoreError::NoSpace(detail) => {
                tracing::error!("could not save: {detail}");
                AppError::InsufficientStorage(
                    "could not save: the disk that holds the conversations is full; free some \
                     space and retry (what was saved before is intact)"
                        .into(),
                )
            }
            StoreError::ReadOnly(detail) => {
                tracing::error!("could not save: {detail}");
                AppError::InsufficientStorage(
                    "could not save: the conversations folder is read-only; make it writable \
                     and retry (what was saved before is intact)"
                        .into(),
                )
            }
            StoreError::Io(detail) => AppError::internal(detail),
        }
    }
}

/// A conversation to create, possibly with messages (an import).
#[derive(Clone, Debug, Default)]
pub struct NewConversation {
    pub id: Option<Uuid>,
    pub title: String,
    pub messages: Vec<StoredMessage>,
}

/// Every store offers the same operations with the same guarantees: a call that returns `Ok`
/// has made its change durable.
pub trait ConversationStore: Send + Sync {
    /// Summaries, most recently updated first; `query` filters by title or message text
    /// (case-insensitive substring).
    fn list(&self, query: Option<&str>) -> Result<Vec<ConversationSummary>, StoreError>;
    fn get(&self, id: Uuid) -> Result<Conversation, StoreError>;
    fn create(&self, new: NewConversation) -> Result<Conversation, StoreError>;
    /// Appends a message; a message whose id is already stored is not added again.
    fn append(&self, id: Uuid, message: StoredMessage) -> Result<ConversationSummary, StoreError>;
    fn rename(&self, id: Uuid, title: &str) -> Result<ConversationSummary, StoreError>;
    fn delete(&self, id: Uuid) -> Result<(), StoreError>;
    /// Stores a finished arena battle; saving one already stored keeps its first vote.
    fn save_battle(&self, battle: &Battle) -> Result<(), StoreError>;
    fn battle(&self, id: Uuid) -> Result<Battle, StoreError>;
    /// Records the verdict, once: a battle already voted on gives `Conflict`.
    fn vote(&self, id: Uuid, verdict: Verdict) -> Result<Battle, StoreError>;
    /// Every stored battle, newest first.
    fn battles(&self) -> Result<Vec<Battle>, StoreError>;
    /// Where saves go right now, for the UI's indicator.
    fn status(&self) -> PersistenceStatus;
}

/// The store the configuration asks for: JSON files, or, with a database URL, PostgreSQL with
/// the JSON folder as its fallback and a watcher that retries a database that is down and
/// imports what was saved meanwhile. Blocks while it tries the database once (a few seconds at
/// most when it is unreachable): call it off the async runtime.
pub fn open_store(
    settings: &crate::config::Settings,
) -> Result<std::sync::Arc<dyn ConversationStore>, StoreError> {
    let files = json::JsonStore::open(&settings.conversations_dir)?;
    match settings
        .database_url
        .as_deref()
        .filter(|url| !url.trim().is_empty())
    {
        None => Ok(std::sync::Arc::new(files)),
        Some(url) => {
            let store = fallback::FallbackStore::open(postgres::PgStore::new(url)?, files);
            store.watch();
            Ok(store)
        }
    }
}

/// A new message with a fresh id, stamped now, without provenance.
pub fn new_message(role: crate::types::Role, content: impl Into<String>) -> StoredMessage {
    StoredMessage {
        id: Uuid::new_v4().to_string(),
        parent_id: None,
        role,
        content: content.into(),
        created_at_ms: now_ms(),
        model: None,
        engine: None,
        sampling: None,
        metrics: None,
        interrupted: false,
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Trims a title, cuts it to `MAX_TITLE_CHARS`, and names empty ones.
pub fn clean_title(title: &str) -> String {
    let trimmed: String = title.trim().chars().take(MAX_TITLE_CHARS).collect();
    if trimmed.is_empty() {
        "New conversation".to_string()
    } else {
        trimmed
    }
}

/// Message ids (and parent ids) must be UUIDs: they make appends idempotent across stores.
/// Message text may hold anything but NUL, which PostgreSQL's text type cannot store; refusing it
/// in every store keeps them interchangeable.
pub fn check_message(message: &StoredMessage) -> Result<(), StoreError> {
    Uuid::parse_str(&message.id)
        .map_err(|_| StoreError::Invalid(format!("message id `{}` is not a UUID", message.id)))?;
    if let Some(parent) = &message.parent_id {
        Uuid::parse_str(parent).map_err(|_| {
            StoreError::Invalid(format!(
                "parent id `{parent}` is not a UUID (a first message's parent is {})",
                crate::tree::ROOT_PARENT
            ))
        })?;
        if *parent == message.id {
            return Err(StoreError::Invalid(format!(
                "message {} cannot be its own parent",
                message.id
            )));
        }
    }
    if message.content.contains('\0') {
        return Err(StoreError::Invalid(
            "message text may not contain NUL characters".into(),
        ));
    }
    Ok(())
}

pub fn matches_query(conversation: &Conversation, query: &str) -> bool {
    let needle = query.to_lowercase();
    conversation.title.to_lowercase().contains(&needle)
        || conversation
            .messages
            .iter()
            .any(|m| m.content.to_lowercase().contains(&needle))
}
