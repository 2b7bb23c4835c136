//! `/api/conversations`: list and search, create or import, read, rename, delete, export.

use axum::{
    extract::{Path, Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::Deserialize;
use uuid::Uuid;

use super::json::ApiJson;
use crate::{
    error::AppError,
    state::AppState,
    storage::{export, now_ms, NewConversation},
    types::{
        Conversation, ConversationSummary, GenerationMetrics, PersistenceStatus, Role,
        SamplingParams, StoredMessage,
    },
};

/// Conversation ids are UUIDs; anything else (path tricks, encoded slashes, NUL) is refused here.
pub(crate) fn parse_id(raw: &str) -> Result<Uuid, AppError> {
    parse_uuid(raw, "conversation id")
}

/// A path id in its canonical UUID form (lowercase, hyphenated); anything else is a 400 naming
/// `what` was expected.
pub(crate) fn parse_uuid(raw: &str, what: &str) -> Result<Uuid, AppError> {
    Uuid::parse_str(raw)
        .ok()
        .filter(|id| id.to_string() == raw.to_ascii_lowercase() && raw.len() == 36)
        .ok_or_else(|| {
            let shown: String = raw.chars().take(60).collect();
            AppError::BadRequest(format!(
                "`{}` is not a {what} (a UUID)",
                shown.escape_debug()
            ))
        })
}

#[derive(Deserialize)]
pub struct ListQuery {
    q: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<ConversationSummary>>, AppError> {
    let q = query.q.filter(|q| !q.trim().is_empty());
    Ok(Json(state.app.store(move |s| s.list(q.as_deref())).await?))
}

pub async fn status(State(state): State<AppState>) -> Json<PersistenceStatus> {
    Json(state.app.conversations.status())
}

/// A message in an import: role and content, plus any provenance an export carried.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportMessage {
    id: Option<String>,
    /// Keeps an exported tree's branches; absent, the message follows the one before it.
    parent_id: Option<String>,
    role: Role,
    content: String,
    created_at_ms: Option<i64>,
    model: Option<String>,
    engine: Option<String>,
    sampling: Option<SamplingParams>,
    metrics: Option<GenerationMetrics>,
    #[serde(default)]
    interrupted: bool,
}

/// The body of `POST /api/conversations`; an exported conversation (JSON) is accepted as is.
#[derive(Deserialize)]
pub struct CreateBody {
    #[serde(default)]
    title: String,
    #[serde(default)]
    messages: Vec<ImportMessage>,
}

impl ImportMessage {
    fn into_stored(self, now: i64) -> StoredMessage {
        StoredMessage {
            id: self.id.unwrap_or_else(|| Uuid::new_v4().to_string()),
            parent_id: self.parent_id,
            role: self.role,
            content: self.content,
            created_at_ms: self.created_at_ms.unwrap_or(now),
            model: self.model,
            engine: self.engine,
            sampling: self.sampling,
            metrics: self.metrics,
            interrupted: self.interrupted,
        }
    }
}

impl CreateBody {
    fn into_new(self) -> NewConversation {
        let now = now_ms();
        NewConversation {
            id: None,
            title: self.title,
            messages: self
                .messages
                .into_iter()
                .map(|m| m.into_stored(now))
                .collect(),
        }
    }
}

/// Reads an import (an exported conversation, or `{"title", "messages"}`) from JSON text.
pub(crate) fn parse_import(text: &str) -> Result<NewConversation, AppError> {
    serde_json::from_str::<CreateBody>(text)
        .map(CreateBody::into_new)
        .map_err(|e| AppError::BadRequest(format!("not a conversation export: {e}")))
}

pub async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<Conversation>), AppError> {
    let new = body.into_new();
    let created = state.app.store(move |s| s.create(new)).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `POST /api/conversations/{id}/messages`: appends one message (idempotent by its `id`).
pub async fn append(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ImportMessage>,
) -> Result<Json<ConversationSummary>, AppError> {
    let id = parse_id(&id)?;
    let message = body.into_stored(now_ms());
    Ok(Json(state.app.store(move |s| s.append(id, message)).await?))
}

pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Conversation>, AppError> {
    let id = parse_id(&id)?;
    Ok(Json(state.app.store(move |s| s.get(id)).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenameBody {
    title: String,
}

pub async fn rename(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RenameBody>,
) -> Result<Json<ConversationSummary>, AppError> {
    let id = parse_id(&id)?;
    Ok(Json(
        state.app.store(move |s| s.rename(id, &body.title)).await?,
    ))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    let id = parse_id(&id)?;
    state.app.store(move |s| s.delete(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct ExportQuery {
    format: Option<String>,
}

pub async fn export(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<ExportQuery>,
) -> Result<Response, AppError> {
    let id = parse_id(&id)?;
    let format = query.format.unwrap_or_else(|| "json".into());
    let (body, content_type, extension) = match format.as_str() {
        "json" | "md" => {
            let conversation = state.app.store(move |s| s.get(id)).await?;
            if format == "json" {
                (export::to_json(&conversation), "application/json", "json")
            } else {
                (
                    export::to_markdown(&conversation),
                    "text/markdown; charset=utf-8",
                    "md",
                )
            }
        }
        other => {
            return Err(AppError::BadRequest(format!(
                "`format` must be `json` or `md`, not `{}`",
                other.escape_debug()
            )))
        }
    };
    let disposition = format!("attachment; filename=\"conversation-{id}.{extension}\"");
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::parse_id;

    #[test]
    fn hostile_ids_are_refused() {
        let ok = "67e55044-10b1-426f-9247-bb680e5fe0c8";
        assert!(parse_id(ok).is_ok());
        for bad in [
            "../../etc/passwd",
            "..%2F..%2Fetc",
            "67e55044-10b1-426f-9247-bb680e5fe0c8/../x",
            "67e55044-10b1-426f-9247-bb680e5fe0c8\0",
            "67e5504410b1426f9247bb680e5fe0c8",
            "{67e55044-10b1-426f-9247-bb680e5fe0c8}",
            &"a".repeat(10_000),
            "",
        ] {
            assert!(parse_id(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
