//! Conversations in PostgreSQL through diesel (r2d2 pool, embedded migrations). Connects and
//! statements time out after a few seconds so a database that goes away turns into a quick
//! `StoreError::Unavailable`, which the fallback store answers by saving to JSON instead.

use std::time::Duration;

use diesel::{
    pg::PgConnection,
    prelude::*,
    r2d2::{ConnectionManager, CustomizeConnection, Pool},
    result::{DatabaseErrorKind, Error as DieselError},
    sql_types::{BigInt, Nullable, Text},
};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use uuid::Uuid;

use super::{check_message, clean_title, now_ms, ConversationStore, NewConversation, StoreError};
use crate::arena::{Battle, Verdict};
use crate::types::{
    Conversation, ConversationSummary, PersistenceBackend, PersistenceStatus, Role, StoredMessage,
};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

const CONNECT_TIMEOUT_SECS: u64 = 3;
const STATEMENT_TIMEOUT_MS: u64 = 5000;

mod schema {
    diesel::table! {
        conversations (id) {
            id -> Uuid,
            title -> Text,
            created_at_ms -> BigInt,
            updated_at_ms -> BigInt,
        }
    }
    diesel::table! {
        messages (conversation_id, id) {
            conversation_id -> Uuid,
            id -> Uuid,
            seq -> BigInt,
            role -> Text,
            content -> Text,
            created_at_ms -> BigInt,
            model -> Nullable<Text>,
            engine -> Nullable<Text>,
            sampling -> Nullable<Jsonb>,
            metrics -> Nullable<Jsonb>,
            interrupted -> Bool,
            parent_id -> Nullable<Uuid>,
        }
    }
    diesel::joinable!(messages -> conversations (conversation_id));
    diesel::allow_tables_to_appear_in_same_query!(conversations, messages);
}
use schema::{conversations, messages};

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = conversations)]
struct ConversationRow {
    id: Uuid,
    title: String,
    created_at_ms: i64,
    updated_at_ms: i64,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = messages)]
struct MessageRow {
    conversation_id: Uuid,
    id: Uuid,
    role: String,
    content: String,
    created_at_ms: i64,
    model: Option<String>,
    engine: Option<String>,
    sampling: Option<serde_json::Value>,
    metrics: Option<serde_json::Value>,
    interrupted: bool,
    parent_id: Option<Uuid>,
}

#[derive(QueryableByName)]
struct SummaryRow {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    title: String,
    #[diesel(sql_type = BigInt)]
    created_at_ms: i64,
    #[diesel(sql_type = BigInt)]
    updated_at_ms: i64,
    #[diesel(sql_type = BigInt)]
    message_count: i64,
    #[diesel(sql_type = Nullable<Text>)]
    model: Option<String>,
}

impl From<SummaryRow> for ConversationSummary {
    fn from(r: SummaryRow) -> Self {
        ConversationSummary {
            id: r.id.to_string(),
            title: r.title,
            message_count: r.message_count.max(0) as usize,
            model: r.model,
            created_at_ms: r.created_at_ms,
            updated_at_ms: r.updated_at_ms,
        }
    }
}

const SUMMARY_SELECT: &str = "SELECT c.id, c.title, c.created_at_ms, c.updated_at_ms, \
    (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id) AS message_count, \
    (SELECT m.model FROM messages m WHERE m.conversation_id = c.id AND m.model IS NOT NULL \
     ORDER BY m.seq DESC LIMIT 1) AS model \
    FROM conversations c";

fn to_row(conversation_id: Uuid, m: &StoredMessage) -> Result<MessageRow, StoreError> {
    let id = Uuid::parse_str(&m.id)
        .map_err(|_| StoreError::Invalid(format!("message id `{}` is not a UUID", m.id)))?;
    let json = |v: Option<serde_json::Value>| v.filter(|v| !v.is_null());
    Ok(MessageRow {
        conversation_id,
        id,
        role: m.role.as_str().to_string(),
        content: m.content.clone(),
        created_at_ms: m.created_at_ms,
        model: m.model.clone(),
        engine: m.engine.clone(),
        sampling: json(
            m.sampling
                .as_ref()
                .and_then(|s| serde_json::to_value(s).ok()),
        ),
        metrics: json(
            m.metrics
                .as_ref()
                .and_then(|s| serde_json::to_value(s).ok()),
        ),
        interrupted: m.interrupted,
        // `check_message` has vetted it; an unparsable one would read back as legacy.
        parent_id: m.parent_id.as_deref().and_then(|p| Uuid::parse_str(p).ok()),
    })
}

fn from_row(r: MessageRow) -> StoredMessage {
    let role = match r.role.as_str() {
        "system" => Role::System,
        "assistant" => Role::Assistant,
        _ => Role::User,
    };
    StoredMessage {
        id: r.id.to_string(),
        parent_id: r.parent_id.map(|p| p.to_string()),
        role,
        content: r.content,
        created_at_ms: r.created_at_ms,
        model: r.model,
        engine: r.engine,
        sampling: r.sampling.and_then(|v| serde_json::from_value(v).ok()),
        metrics: r.metrics.and_then(|v| serde_json::from_value(v).ok()),
        interrupted: r.interrupted,
    }
}

/// Database errors that mean "the database is not there" become `Unavailable`.
pub(super) fn db_err(e: DieselError) -> StoreError {
    match &e {
        DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        ) => StoreError::Unavailable(e.to_string()),
        DieselError::DatabaseError(_, info) if info.message().contains("statement timeout") => {
            StoreError::Unavailable(e.to_string())
        }
        // A database that cannot write (disk full, read-only standby) is as good as away for
        // saving: the fallback keeps the save in a file until it can.
        DieselError::DatabaseError(_, info)
            if [
                "No space left on device",
                "could not extend file",
                "read-only transaction",
            ]
            .iter()
            .any(|m| info.message().contains(m)) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Io(format!("database error: {e}")),
    }
}

#[derive(Debug)]
struct SessionSettings;

impl CustomizeConnection<PgConnection, diesel::r2d2::Error> for SessionSettings {
    fn on_acquire(&self, conn: &mut PgConnection) -> Result<(), diesel::r2d2::Error> {
        diesel::sql_query(format!("SET statement_timeout = {STATEMENT_TIMEOUT_MS}"))
            .execute(conn)
            .map(|_| ())
            .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// Adds libpq's `connect_timeout` unless the URL sets one, so an unreachable host fails fast.
fn with_connect_timeout(url: &str) -> String {
    if url.contains("connect_timeout") {
        return url.to_string();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}connect_timeout={CONNECT_TIMEOUT_SECS}")
}

/// `postgres://user:secret@host/db` shown without its password.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or("");
            format!("{}{}@{}", &url[..scheme + 3], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

pub struct PgStore {
    pool: Pool<ConnectionManager<PgConnection>>,
    shown_url: String,
}

impl PgStore {
    /// Builds the pool without connecting; `migrate` (or any call) connects.
    pub fn new(url: &str) -> Result<Self, StoreError> {
        let manager = ConnectionManager::<PgConnection>::new(with_connect_timeout(url));
        let pool = Pool::builder()
            .max_size(8)
            .min_idle(Some(0))
            .connection_timeout(Duration::from_secs(CONNECT_TIMEOUT_SECS + 1))
            .connection_customizer(Box::new(SessionSettings))
            .build_unchecked(manager);
        Ok(Self {
            pool,
            shown_url: redact(url),
        })
    }

    pub fn url(&self) -> &str {
        &self.shown_url
    }

    pub(super) fn conn(
        &self,
    ) -> Result<diesel::r2d2::PooledConnection<ConnectionManager<PgConnection>>, StoreError> {
        self.pool.get().map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot reach PostgreSQL at {}: {e}",
                self.shown_url
            ))
        })
    }

    /// Connects and applies pending migrations: the check made at start-up and on recovery.
    pub fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        conn.run_pending_migrations(MIGRATIONS)
            .map(|_| ())
            .map_err(|e| StoreError::Unavailable(format!("migrations failed: {e}")))
    }

    fn summaries(
        &self,
        conn: &mut PgConnection,
        filter: Option<&str>,
        one: Option<Uuid>,
    ) -> Result<Vec<ConversationSummary>, StoreError> {
        let rows: Vec<SummaryRow> = match (filter, one) {
            (_, Some(id)) => diesel::sql_query(format!("{SUMMARY_SELECT} WHERE c.id = $1"))
                .bind::<diesel::sql_types::Uuid, _>(id)
                .load(conn),
            (Some(query), None) => {
                let escaped = query
                    .replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_");
                diesel::sql_query(format!(
                    "{SUMMARY_SELECT} WHERE c.title ILIKE $1 OR EXISTS (SELECT 1 FROM messages m \
                     WHERE m.conversation_id = c.id AND m.content ILIKE $1) \
                     ORDER BY c.updated_at_ms DESC, c.id"
                ))
                .bind::<Text, _>(format!("%{escaped}%"))
                .load(conn)
            }
            (None, None) => diesel::sql_query(format!(
                "{SUMMARY_SELECT} ORDER BY c.updated_at_ms DESC, c.id"
            ))
            .load(conn),
        }
        .map_err(db_err)?;
        Ok(rows.into_iter().map(ConversationSummary::from).collect())
    }

    fn summary(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
    ) -> Result<ConversationSummary, StoreError> {
        self.summaries(conn, None, Some(id))?
            .pop()
            .ok_or(StoreError::NotFound(id))
    }

    /// Inserts a conversation if it is not there and adds the messages it lacks (by id), in order.
    /// Used by imports from the JSON fallback: running it twice changes nothing.
    pub fn merge(&self, conversation: &Conversation) -> Result<(), StoreError> {
        let id =
            Uuid::parse_str(&conversation.id).map_err(|_| StoreError::Invalid("bad id".into()))?;
        let rows = conversation
            .messages
            .iter()
            .map(|m| to_row(id, m))
            .collect::<Result<Vec<_>, _>>()?;
        let mut conn = self.conn()?;
        conn.transaction::<_, DieselError, _>(|conn| {
            diesel::insert_into(conversations::table)
                .values(ConversationRow {
                    id,
                    title: conversation.title.clone(),
                    created_at_ms: conversation.created_at_ms,
                    updated_at_ms: conversation.updated_at_ms,
                })
                .on_conflict_do_nothing()
                .execute(conn)?;
            for row in &rows {
                diesel::insert_into(messages::table)
                    .values(row)
                    .on_conflict_do_nothing()
                    .execute(conn)?;
            }
            diesel::update(conversations::table.find(id))
                .set(
                    conversations::updated_at_ms.eq(diesel::dsl::sql::<BigInt>(&format!(
                        "GREATEST(updated_at_ms, {})",
                        conversation.updated_at_ms
                    ))),
                )
                .execute(conn)?;
            Ok(())
        })
        .map_err(db_err)
    }
}

impl ConversationStore for PgStore {
    fn save_battle(&self, battle: &Battle) -> Result<(), StoreError> {
        self.merge_battle(battle)
    }

    fn battle(&self, id: Uuid) -> Result<Battle, StoreError> {
        self.battle_row(id)
    }

    fn vote(&self, id: Uuid, verdict: Verdict) -> Result<Battle, StoreError> {
        self.vote_row(id, verdict)
    }

    fn battles(&self) -> Result<Vec<Battle>, StoreError> {
        self.battle_rows()
    }

    fn list(&self, query: Option<&str>) -> Result<Vec<ConversationSummary>, StoreError> {
        let mut conn = self.conn()?;
        self.summaries(&mut conn, query, None)
    }

    fn get(&self, id: Uuid) -> Result<Conversation, StoreError> {
        let mut conn = self.conn()?;
        let row: ConversationRow = conversations::table
            .find(id)
            .select(ConversationRow::as_select())
            .first(&mut conn)
            .optional()
            .map_err(db_err)?
            .ok_or(StoreError::NotFound(id))?;
        let rows: Vec<MessageRow> = messages::table
            .filter(messages::conversation_id.eq(id))
            .order(messages::seq.asc())
            .select(MessageRow::as_select())
            .load(&mut conn)
            .map_err(db_err)?;
        Ok(Conversation {
            id: row.id.to_string(),
            title: row.title,
            created_at_ms: row.created_at_ms,
            updated_at_ms: row.updated_at_ms,
            messages: rows.into_iter().map(from_row).collect(),
        })
    }

    fn create(&self, new: NewConversation) -> Result<Conversation, StoreError> {
        for m in &new.messages {
            check_message(m)?;
        }
        let now = now_ms();
        let id = new.id.unwrap_or_else(Uuid::new_v4);
        let mut seen = std::collections::HashSet::new();
        let messages: Vec<StoredMessage> = new
            .messages
            .into_iter()
            .filter(|m| seen.insert(m.id.clone()))
            .collect();
        let conversation = Conversation {
            id: id.to_string(),
            title: clean_title(&new.title),
            created_at_ms: now,
            updated_at_ms: now,
            messages,
        };
        let exists = {
            let mut conn = self.conn()?;
            conversations::table
                .find(id)
                .count()
                .get_result::<i64>(&mut conn)
                .map_err(db_err)?
                > 0
        };
        if exists {
            return Err(StoreError::Invalid(format!(
                "conversation {id} already exists"
            )));
        }
        self.merge(&conversation)?;
        Ok(conversation)
    }

    fn append(&self, id: Uuid, message: StoredMessage) -> Result<ConversationSummary, StoreError> {
        check_message(&message)?;
        let row = to_row(id, &message)?;
        let mut conn = self.conn()?;
        conn.transaction::<_, DieselError, _>(|conn| {
            // Locks the conversation row: concurrent appends queue here instead of racing.
            let found = conversations::table
                .find(id)
                .select(conversations::id)
                .for_update()
                .first::<Uuid>(conn)
                .optional()?;
            if found.is_none() {
                return Err(DieselError::NotFound);
            }
            let inserted = diesel::insert_into(messages::table)
                .values(&row)
                .on_conflict_do_nothing()
                .execute(conn)?;
            if inserted > 0 {
                diesel::update(conversations::table.find(id))
                    .set(conversations::updated_at_ms.eq(now_ms().max(message.created_at_ms)))
                    .execute(conn)?;
            }
            Ok(())
        })
        .map_err(|e| match e {
            DieselError::NotFound => StoreError::NotFound(id),
            other => db_err(other),
        })?;
        self.summary(&mut conn, id)
    }

    fn rename(&self, id: Uuid, title: &str) -> Result<ConversationSummary, StoreError> {
        let mut conn = self.conn()?;
        let updated = diesel::update(conversations::table.find(id))
            .set((
                conversations::title.eq(clean_title(title)),
                conversations::updated_at_ms.eq(now_ms()),
            ))
            .execute(&mut conn)
            .map_err(db_err)?;
        if updated == 0 {
            return Err(StoreError::NotFound(id));
        }
        self.summary(&mut conn, id)
    }

    fn delete(&self, id: Uuid) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let deleted = diesel::delete(conversations::table.find(id))
            .execute(&mut conn)
            .map_err(db_err)?;
        if deleted == 0 {
            return Err(StoreError::NotFound(id));
        }
        Ok(())
    }

    fn status(&self) -> PersistenceStatus {
        PersistenceStatus {
            backend: PersistenceBackend::Postgres,
            detail: format!("PostgreSQL at {}", self.shown_url),
            pending_import: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{redact, with_connect_timeout};

    #[test]
    fn urls_get_a_connect_timeout_and_lose_their_password_when_shown() {
        assert_eq!(
            with_connect_timeout("postgres://u@h/db"),
            "postgres://u@h/db?connect_timeout=3"
        );
        assert_eq!(
            with_connect_timeout("postgres://u@h/db?sslmode=disable"),
            "postgres://u@h/db?sslmode=disable&connect_timeout=3"
        );
        assert_eq!(
            with_connect_timeout("postgres://h/db?connect_timeout=9"),
            "postgres://h/db?connect_timeout=9"
        );
        assert_eq!(
            redact("postgres://user:s3cret@host:5432/db"),
            "postgres://user@host:5432/db"
        );
        assert_eq!(redact("postgres://host/db"), "postgres://host/db");
    }
}
