//! Server functions the UI calls. Thin: take the state, call a service, map the error. Replies
//! stream over the websockets of `api::chat_socket` and `api::compare` instead.

use leptos::prelude::*;

use crate::{
    error::AppError,
    types::{Conversation, ConversationSummary, ModelInfo, PersistenceStatus},
};

#[server(prefix = "/ui", endpoint = "models")]
pub async fn list_models() -> Result<Vec<ModelInfo>, AppError> {
    let state = expect_context::<crate::state::AppState>();
    Ok(crate::api::model_list(&state.app))
}

#[server(prefix = "/ui", endpoint = "conversations")]
pub async fn list_conversations(
    query: Option<String>,
) -> Result<Vec<ConversationSummary>, AppError> {
    let state = expect_context::<crate::state::AppState>();
    let query = query.filter(|q| !q.trim().is_empty());
    state.app.store(move |s| s.list(query.as_deref())).await
}

#[server(prefix = "/ui", endpoint = "conversation")]
pub async fn get_conversation(id: String) -> Result<Conversation, AppError> {
    let state = expect_context::<crate::state::AppState>();
    let id = crate::api::conversations::parse_id(&id)?;
    state.app.store(move |s| s.get(id)).await
}

#[server(prefix = "/ui", endpoint = "conversation_new")]
pub async fn create_conversation(title: String) -> Result<Conversation, AppError> {
    let state = expect_context::<crate::state::AppState>();
    let new = crate::storage::NewConversation {
        title,
        ..Default::default()
    };
    state.app.store(move |s| s.create(new)).await
}

#[server(prefix = "/ui", endpoint = "conversation_rename")]
pub async fn rename_conversation(
    id: String,
    title: String,
) -> Result<ConversationSummary, AppError> {
    let state = expect_context::<crate::state::AppState>();
    let id = crate::api::conversations::parse_id(&id)?;
    state.app.store(move |s| s.rename(id, &title)).await
}

#[server(prefix = "/ui", endpoint = "conversation_delete")]
pub async fn delete_conversation(id: String) -> Result<(), AppError> {
    let state = expect_context::<crate::state::AppState>();
    let id = crate::api::conversations::parse_id(&id)?;
    state.app.store(move |s| s.delete(id)).await
}

/// Imports an exported conversation (the JSON text of a file the person picked).
#[server(prefix = "/ui", endpoint = "conversation_import")]
pub async fn import_conversation(json: String) -> Result<Conversation, AppError> {
    let state = expect_context::<crate::state::AppState>();
    let new = crate::api::conversations::parse_import(&json)?;
    state.app.store(move |s| s.create(new)).await
}

#[server(prefix = "/ui", endpoint = "persistence")]
pub async fn get_persistence() -> Result<PersistenceStatus, AppError> {
    let state = expect_context::<crate::state::AppState>();
    Ok(state.app.conversations.status())
}
