//! Arena battles in each store, with the guarantees conversations have: a save that returns
//! `Ok` is durable, and a battle takes one vote, ever. JSON keeps one file per battle under
//! `arena/` in the conversations folder; PostgreSQL one row in `arena_battles`, the verdict in
//! its own columns so a vote is a single conditional update.

use diesel::{
    prelude::*,
    result::Error as DieselError,
    sql_types::{BigInt, Jsonb, Nullable, Text},
};
use uuid::Uuid;

use super::{json::JsonStore, now_ms, postgres::PgStore, StoreError};
use crate::arena::{Battle, Verdict};

/// Checks what every store requires of a battle: a UUID id, text PostgreSQL can hold.
pub fn check_battle(battle: &Battle) -> Result<Uuid, StoreError> {
    let id = Uuid::parse_str(&battle.id)
        .map_err(|_| StoreError::Invalid(format!("battle id `{}` is not a UUID", battle.id)))?;
    let texts = [
        &battle.prompt,
        &battle.a.reply,
        &battle.b.reply,
        &battle.a.model,
        &battle.b.model,
    ];
    if texts.iter().any(|t| t.contains('\0')) {
        return Err(StoreError::Invalid(
            "battle text may not contain NUL characters".into(),
        ));
    }
    if battle.verdict.is_some() != battle.voted_at_ms.is_some() {
        return Err(StoreError::Invalid(
            "a battle's verdict and its time go together".into(),
        ));
    }
    Ok(id)
}

fn already_voted(id: Uuid, verdict: Option<Verdict>) -> StoreError {
    let said = verdict.map(Verdict::as_str).unwrap_or("?");
    StoreError::Conflict(format!(
        "battle {id} was already voted on (`{said}`); a battle takes one vote"
    ))
}

/// Merges `incoming` into what a store already holds: the first vote stays.
fn merged(stored: Option<Battle>, incoming: &Battle) -> Battle {
    match stored {
        Some(stored) if stored.verdict.is_some() => stored,
        _ => incoming.clone(),
    }
}

impl JsonStore {
    fn arena_dir(&self) -> std::path::PathBuf {
        self.dir().join("arena")
    }

    fn read_battle(&self, id: Uuid) -> Result<Option<Battle>, StoreError> {
        let path = self.arena_dir().join(format!("{id}.json"));
        self.read_at(&path, |b: &Battle| b.id == id.to_string())
    }

    /// Stores a battle; one already here keeps its vote if it has one.
    pub fn save_battle_file(&self, battle: &Battle) -> Result<(), StoreError> {
        let id = check_battle(battle)?;
        let _guard = self.lock();
        let battle = merged(self.read_battle(id)?, battle);
        self.write_at(&self.arena_dir(), id, &battle)
    }

    pub fn battle_file(&self, id: Uuid) -> Result<Battle, StoreError> {
        self.read_battle(id)?.ok_or(StoreError::BattleNotFound(id))
    }

    pub fn vote_file(&self, id: Uuid, verdict: Verdict) -> Result<Battle, StoreError> {
        let _guard = self.lock();
        let mut battle = self
            .read_battle(id)?
            .ok_or(StoreError::BattleNotFound(id))?;
        if battle.verdict.is_some() {
            return Err(already_voted(id, battle.verdict));
        }
        battle.verdict = Some(verdict);
        battle.voted_at_ms = Some(now_ms());
        self.write_at(&self.arena_dir(), id, &battle)?;
        Ok(battle)
    }

    /// Every readable battle file, newest first.
    pub fn battle_files(&self) -> Result<Vec<Battle>, StoreError> {
        let mut out = Vec::new();
        for id in Self::ids_in(&self.arena_dir())? {
            if let Some(battle) = self.read_battle(id)? {
                out.push(battle);
            }
        }
        out.sort_by_key(|b| std::cmp::Reverse(b.created_at_ms));
        Ok(out)
    }

    /// Moves a battle file aside after it was imported into PostgreSQL.
    pub fn archive_battle(&self, id: Uuid) -> Result<(), StoreError> {
        self.archive_in(&self.arena_dir(), id)
    }
}

#[derive(QueryableByName)]
struct BattleRow {
    #[diesel(sql_type = Jsonb)]
    battle: serde_json::Value,
    #[diesel(sql_type = Nullable<Text>)]
    verdict: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    voted_at_ms: Option<i64>,
}

impl BattleRow {
    fn into_battle(self) -> Result<Battle, StoreError> {
        let mut battle: Battle = serde_json::from_value(self.battle)
            .map_err(|e| StoreError::Io(format!("a stored battle does not parse: {e}")))?;
        battle.verdict = self.verdict.as_deref().and_then(Verdict::parse);
        battle.voted_at_ms = self.voted_at_ms;
        Ok(battle)
    }
}

const SELECT_BATTLE: &str = "SELECT battle, verdict, voted_at_ms FROM arena_battles";

impl PgStore {
    /// Inserts a battle, or on an id already stored keeps the stored vote (or takes this one's
    /// if there is none): an import from the JSON fallback can run twice and change nothing.
    pub fn merge_battle(&self, battle: &Battle) -> Result<(), StoreError> {
        let id = check_battle(battle)?;
        let mut document = battle.clone();
        document.verdict = None;
        document.voted_at_ms = None;
        let document =
            serde_json::to_value(&document).map_err(|e| StoreError::Io(e.to_string()))?;
        let mut conn = self.conn()?;
        diesel::sql_query(
            "INSERT INTO arena_battles (id, created_at_ms, battle, verdict, voted_at_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET \
             verdict = COALESCE(arena_battles.verdict, EXCLUDED.verdict), \
             voted_at_ms = COALESCE(arena_battles.voted_at_ms, EXCLUDED.voted_at_ms)",
        )
        .bind::<diesel::sql_types::Uuid, _>(id)
        .bind::<BigInt, _>(battle.created_at_ms)
        .bind::<Jsonb, _>(document)
        .bind::<Nullable<Text>, _>(battle.verdict.map(Verdict::as_str))
        .bind::<Nullable<BigInt>, _>(battle.voted_at_ms)
        .execute(&mut conn)
        .map(|_| ())
        .map_err(super::postgres::db_err)
    }

    pub fn battle_row(&self, id: Uuid) -> Result<Battle, StoreError> {
        let mut conn = self.conn()?;
        diesel::sql_query(format!("{SELECT_BATTLE} WHERE id = $1"))
            .bind::<diesel::sql_types::Uuid, _>(id)
            .get_result::<BattleRow>(&mut conn)
            .optional()
            .map_err(super::postgres::db_err)?
            .ok_or(StoreError::BattleNotFound(id))?
            .into_battle()
    }

    pub fn vote_row(&self, id: Uuid, verdict: Verdict) -> Result<Battle, StoreError> {
        let mut conn = self.conn()?;
        // Only a battle without a verdict changes: two votes racing cannot both land.
        let updated = diesel::sql_query(
            "UPDATE arena_battles SET verdict = $2, voted_at_ms = $3 \
             WHERE id = $1 AND verdict IS NULL",
        )
        .bind::<diesel::sql_types::Uuid, _>(id)
        .bind::<Text, _>(verdict.as_str())
        .bind::<BigInt, _>(now_ms())
        .execute(&mut conn)
        .map_err(|e: DieselError| super::postgres::db_err(e))?;
        drop(conn);
        let battle = self.battle_row(id)?;
        if updated == 0 {
            return Err(already_voted(id, battle.verdict));
        }
        Ok(battle)
    }

    /// Every battle, newest first.
    pub fn battle_rows(&self) -> Result<Vec<Battle>, StoreError> {
        let mut conn = self.conn()?;
        diesel::sql_query(format!("{SELECT_BATTLE} ORDER BY created_at_ms DESC, id"))
            .load::<BattleRow>(&mut conn)
            .map_err(super::postgres::db_err)?
            .into_iter()
            .map(BattleRow::into_battle)
            .collect()
    }
}
