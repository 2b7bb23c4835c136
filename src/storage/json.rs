//! Conversations as JSON files, one per conversation, named only by its UUID.
//!
//! Every write is atomic and durable: a temporary file in the same folder is written, synced,
//! renamed over the old file, and the folder is synced, so a crash leaves either the old or the
//! new version, never a torn one. Files are opened without following symlinks, and a file that
//! does not parse is moved aside and reported instead of failing the others.

use std::{
    fs::{self, File, OpenOptions},
    io::{Read, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard},
};

use uuid::Uuid;

use super::{
    check_message, clean_title, matches_query, now_ms, ConversationStore, NewConversation,
    StoreError,
};
use crate::arena::{Battle, Verdict};
use crate::types::{
    Conversation, ConversationSummary, PersistenceBackend, PersistenceStatus, StoredMessage,
};

/// Largest conversation file read (a bigger one is treated as corrupt rather than loaded).
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

pub struct JsonStore {
    dir: PathBuf,
    /// Serialises read-modify-write cycles so two tabs appending at once both land.
    write_lock: Mutex<()>,
    quarantined: Mutex<Vec<String>>,
}

/// A failed write, told apart by what a person can do (disk full, read-only).
fn io(context: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::from_io(context, path, e)
}

/// A failed read: nothing to do for the person but report it.
fn read_io(context: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io(format!("{context} {}: {e}", path.display()))
}

impl JsonStore {
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| io("cannot create", &dir, e))?;
        Ok(Self {
            dir,
            write_lock: Mutex::new(()),
            quarantined: Mutex::new(Vec::new()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Files moved aside because they did not parse, since start-up.
    pub fn quarantined(&self) -> Vec<String> {
        self.quarantined
            .lock()
            .map(|q| q.clone())
            .unwrap_or_default()
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, ()> {
        self.write_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, id: Uuid) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Reads a conversation file; `Ok(None)` when it does not exist (or is a symlink, which is
    /// never followed).
    fn read(&self, id: Uuid) -> Result<Option<Conversation>, StoreError> {
        self.read_at(&self.path(id), |c: &Conversation| c.id == id.to_string())
    }

    /// Reads the JSON file at `path` as a `T`; `Ok(None)` when it does not exist, is a symlink
    /// (never followed), or had to be moved aside (it did not parse, or `belongs` refused it).
    pub(super) fn read_at<T: serde::de::DeserializeOwned>(
        &self,
        path: &Path,
        belongs: impl Fn(&T) -> bool,
    ) -> Result<Option<T>, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path);
        let mut file = match file {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            // ELOOP: a symlink planted in the folder.
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                tracing::warn!("ignoring symlink {}", path.display());
                return Ok(None);
            }
            Err(e) => return Err(read_io("cannot open", path, e)),
        };
        let meta = file
            .metadata()
            .map_err(|e| read_io("cannot stat", path, e))?;
        if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
            self.quarantine(path, "not a regular file or too large");
            return Ok(None);
        }
        let mut text = String::new();
        if let Err(e) = file.read_to_string(&mut text) {
            self.quarantine(path, &e.to_string());
            return Ok(None);
        }
        match serde_json::from_str::<T>(&text) {
            Ok(value) if belongs(&value) => Ok(Some(value)),
            Ok(_) => {
                self.quarantine(path, "its id does not match its file name");
                Ok(None)
            }
            Err(e) => {
                self.quarantine(path, &e.to_string());
                Ok(None)
            }
        }
    }

    fn quarantine(&self, path: &Path, why: &str) {
        let aside = path.with_extension(format!("json.corrupt-{}", now_ms()));
        let moved = fs::rename(path, &aside);
        let notice = match moved {
            Ok(()) => format!(
                "{} did not load ({why}); moved to {}",
                path.display(),
                aside.display()
            ),
            Err(e) => format!(
                "{} did not load ({why}) and could not be moved: {e}",
                path.display()
            ),
        };
        tracing::warn!("{notice}");
        if let Ok(mut q) = self.quarantined.lock() {
            q.push(notice);
        }
    }

    fn write(&self, conversation: &Conversation) -> Result<(), StoreError> {
        let id = Uuid::parse_str(&conversation.id)
            .map_err(|_| StoreError::Invalid(format!("`{}` is not a UUID", conversation.id)))?;
        self.write_at(&self.dir, id, conversation)
    }

    /// Writes `value` to `dir/{id}.json` atomically and durably.
    pub(super) fn write_at(
        &self,
        dir: &Path,
        id: Uuid,
        value: &impl serde::Serialize,
    ) -> Result<(), StoreError> {
        let path = dir.join(format!("{id}.json"));
        let temp = dir.join(format!(".{id}.{}.tmp", Uuid::new_v4().simple()));
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Io(e.to_string()))?;
        let result = (|| {
            fs::create_dir_all(dir)?;
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&temp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            fs::rename(&temp, &path)?;
            File::open(dir)?.sync_all()
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&temp);
            return Err(io("cannot save", &path, e));
        }
        Ok(())
    }

    fn ids(&self) -> Result<Vec<Uuid>, StoreError> {
        Self::ids_in(&self.dir)
    }

    /// The ids of the `{uuid}.json` files in `dir` (none when it does not exist).
    pub(super) fn ids_in(dir: &Path) -> Result<Vec<Uuid>, StoreError> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(read_io("cannot list", dir, e)),
        };
        Ok(entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| {
                let name = e.file_name();
                let stem = name.to_str()?.strip_suffix(".json")?;
                Uuid::parse_str(stem)
                    .ok()
                    .filter(|id| id.to_string() == stem)
            })
            .collect())
    }

    /// How many conversation files the folder holds, without reading them.
    pub fn count(&self) -> Result<usize, StoreError> {
        self.ids().map(|ids| ids.len())
    }

    /// Every readable conversation (used by listing and by the import into PostgreSQL).
    pub fn all(&self) -> Result<Vec<Conversation>, StoreError> {
        let mut out = Vec::new();
        for id in self.ids()? {
            if let Some(c) = self.read(id)? {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// Moves a conversation file out of the way after it was imported elsewhere.
    pub fn archive(&self, id: Uuid) -> Result<(), StoreError> {
        self.archive_in(&self.dir, id)
    }

    /// Moves `dir/{id}.json` into `dir/imported/`.
    pub(super) fn archive_in(&self, dir: &Path, id: Uuid) -> Result<(), StoreError> {
        let _guard = self.lock();
        let imported = dir.join("imported");
        fs::create_dir_all(&imported).map_err(|e| io("cannot create", &imported, e))?;
        let from = dir.join(format!("{id}.json"));
        fs::rename(&from, imported.join(format!("{id}.json")))
            .map_err(|e| io("cannot archive", &from, e))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("cannot sync", dir, e))
    }

    /// Appends to a conversation, creating a placeholder when it is not stored here (a
    /// conversation kept in PostgreSQL that receives messages while the database is away).
    pub fn append_or_create(
        &self,
        id: Uuid,
        message: StoredMessage,
        placeholder_title: &str,
    ) -> Result<ConversationSummary, StoreError> {
        check_message(&message)?;
        let _guard = self.lock();
        let mut conversation = match self.read(id)? {
            Some(c) => c,
            None => {
                let now = now_ms();
                Conversation {
                    id: id.to_string(),
                    title: clean_title(placeholder_title),
                    created_at_ms: now,
                    updated_at_ms: now,
                    messages: Vec::new(),
                }
            }
        };
        push_unique(&mut conversation, message);
        self.write(&conversation)?;
        Ok(conversation.summary())
    }
}

fn push_unique(conversation: &mut Conversation, message: StoredMessage) {
    if !conversation.messages.iter().any(|m| m.id == message.id) {
        conversation.updated_at_ms = now_ms().max(message.created_at_ms);
        conversation.messages.push(message);
    }
}

impl ConversationStore for JsonStore {
    fn save_battle(&self, battle: &Battle) -> Result<(), StoreError> {
        self.save_battle_file(battle)
    }

    fn battle(&self, id: Uuid) -> Result<Battle, StoreError> {
        self.battle_file(id)
    }

    fn vote(&self, id: Uuid, verdict: Verdict) -> Result<Battle, StoreError> {
        self.vote_file(id, verdict)
    }

    fn battles(&self) -> Result<Vec<Battle>, StoreError> {
        self.battle_files()
    }

    fn list(&self, query: Option<&str>) -> Result<Vec<ConversationSummary>, StoreError> {
        let mut list: Vec<ConversationSummary> = self
            .all()?
            .iter()
            .filter(|c| query.is_none_or(|q| matches_query(c, q)))
            .map(Conversation::summary)
            .collect();
        list.sort_by(|a, b| {
            b.updated_at_ms
                .cmp(&a.updated_at_ms)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(list)
    }

    fn get(&self, id: Uuid) -> Result<Conversation, StoreError> {
        self.read(id)?.ok_or(StoreError::NotFound(id))
    }

    fn create(&self, new: NewConversation) -> Result<Conversation, StoreError> {
        for m in &new.messages {
            check_message(m)?;
        }
        let _guard = self.lock();
        let id = new.id.unwrap_or_else(Uuid::new_v4);
        if self.read(id)?.is_some() {
            return Err(StoreError::Invalid(format!(
                "conversation {id} already exists"
            )));
        }
        let now = now_ms();
        let mut conversation = Conversation {
            id: id.to_string(),
            title: clean_title(&new.title),
            created_at_ms: now,
            updated_at_ms: now,
            messages: Vec::with_capacity(new.messages.len()),
        };
        for m in new.messages {
            push_unique(&mut conversation, m);
        }
        conversation.updated_at_ms = now;
        self.write(&conversation)?;
        Ok(conversation)
    }

    fn append(&self, id: Uuid, message: StoredMessage) -> Result<ConversationSummary, StoreError> {
        check_message(&message)?;
        let _guard = self.lock();
        let mut conversation = self.read(id)?.ok_or(StoreError::NotFound(id))?;
        push_unique(&mut conversation, message);
        self.write(&conversation)?;
        Ok(conversation.summary())
    }

    fn rename(&self, id: Uuid, title: &str) -> Result<ConversationSummary, StoreError> {
        let _guard = self.lock();
        let mut conversation = self.read(id)?.ok_or(StoreError::NotFound(id))?;
        conversation.title = clean_title(title);
        conversation.updated_at_ms = now_ms();
        self.write(&conversation)?;
        Ok(conversation.summary())
    }

    fn status(&self) -> PersistenceStatus {
        let quarantined = self.quarantined().len();
        let mut detail = format!("JSON files in {}", self.dir.display());
        if quarantined > 0 {
            detail.push_str(&format!(
                "; {quarantined} unreadable file(s) moved aside (see the server log)"
            ));
        }
        PersistenceStatus {
            backend: PersistenceBackend::Json,
            detail,
            pending_import: 0,
        }
    }

    fn delete(&self, id: Uuid) -> Result<(), StoreError> {
        let _guard = self.lock();
        let path = self.path(id);
        match fs::remove_file(&path) {
            Ok(()) => File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io("cannot sync", &self.dir, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::NotFound(id)),
            Err(e) => Err(io("cannot delete", &path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Role;

    fn message(text: &str) -> StoredMessage {
        crate::storage::new_message(Role::User, text)
    }

    #[test]
    fn a_corrupt_file_is_moved_aside_and_the_others_still_list() {
        let dir = tempfile::tempdir().unwrap();
        let store = JsonStore::open(dir.path()).unwrap();
        let good = store
            .create(NewConversation {
                title: "good".into(),
                ..Default::default()
            })
            .unwrap();
        let bad = Uuid::new_v4();
        fs::write(dir.path().join(format!("{bad}.json")), b"{ not json").unwrap();
        let list = store.list(None).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].id, good.id);
        assert!(matches!(store.get(bad), Err(StoreError::NotFound(_))));
        assert_eq!(store.quarantined().len(), 1);
        let aside: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
            .collect();
        assert_eq!(
            aside.len(),
            1,
            "the corrupt file is kept for inspection, not deleted"
        );
    }

    #[test]
    fn a_planted_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let store = JsonStore::open(dir.path()).unwrap();
        let victim = store
            .create(NewConversation {
                title: "secret".into(),
                ..Default::default()
            })
            .unwrap();
        let target = outside.path().join("victim.json");
        fs::copy(dir.path().join(format!("{}.json", victim.id)), &target).unwrap();
        let id = Uuid::new_v4();
        std::os::unix::fs::symlink(&target, dir.path().join(format!("{id}.json"))).unwrap();
        assert!(matches!(store.get(id), Err(StoreError::NotFound(_))));
        assert_eq!(store.list(None).unwrap().len(), 1);
        // Writing through the link is refused too: the target stays untouched.
        let before = fs::read(&target).unwrap();
        let _ = store.append_or_create(id, message("x"), "t");
        assert_eq!(fs::read(&target).unwrap(), before);
    }
}
