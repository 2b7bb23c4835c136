//! Server functions of the Arena page: vote, and read the leaderboard.

use leptos::prelude::*;

use crate::{
    arena::{Battle, Leaderboard, Verdict},
    error::AppError,
};

/// Records the verdict (once; 409 after) and returns the battle revealed.
#[server(prefix = "/ui", endpoint = "arena_vote")]
pub async fn arena_vote(id: String, winner: Verdict) -> Result<Battle, AppError> {
    let state = expect_context::<crate::state::AppState>();
    let id = uuid::Uuid::parse_str(&id)
        .map_err(|_| AppError::BadRequest(format!("`{id}` is not a battle id")))?;
    state.app.store(move |s| s.vote(id, winner)).await
}

#[server(prefix = "/ui", endpoint = "arena_leaderboard")]
pub async fn arena_leaderboard() -> Result<Leaderboard, AppError> {
    let state = expect_context::<crate::state::AppState>();
    crate::api::arena::leaderboard_of(state.app.clone()).await
}
