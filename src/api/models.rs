//! Managing models over HTTP: `POST /api/models/{id}/fetch` and `POST /api/models/{id}/quantize`
//! run a job and stream its progress as SSE (the job is cancelled when the client goes away),
//! `POST /api/models` adds a GGUF from the hub (SSE too), `POST /api/models/{id}/verify` checks
//! the files' sha256 (SSE), `DELETE /api/models/{id}/job` cancels one started elsewhere (the Models page), and
//! `DELETE /api/models/{id}/files` deletes a model's weights. `GET /api/models` (see `rest`)
//! shows each model's state and job.

use std::{convert::Infallible, sync::Arc};

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::sse::{Event, KeepAlive, Sse},
    Json,
};
use futures::{Stream, StreamExt};
use serde::Deserialize;

use super::json::ApiJson;
use crate::{
    error::AppError,
    inference::llama_cpp::quantize::QuantType,
    registry::{
        delete::{DeleteError, Deleted},
        hub_add::HubFile,
        jobs::JobRequest,
    },
    state::{App, AppState},
    types::ModelJob,
};

impl From<DeleteError> for AppError {
    fn from(error: DeleteError) -> Self {
        let message = error.to_string();
        match error {
            DeleteError::Remote(_) | DeleteError::OutsideModelsFolder { .. } => {
                AppError::BadRequest(message)
            }
            DeleteError::NothingThere(_) => AppError::NotFound(message),
            DeleteError::Io { .. } | DeleteError::Registry(_) => AppError::internal(message),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantizeBody {
    /// A llama.cpp type name, e.g. `Q8_0` or `Q4_K_M`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Required to quantize a file that is already quantized (quality is lost twice).
    #[serde(default)]
    pub allow_requantize: bool,
}

/// The request's type, or a 400 that lists the types offered.
pub fn quant_type(text: &str) -> Result<QuantType, AppError> {
    QuantType::parse(text).ok_or_else(|| {
        let names: Vec<&str> = QuantType::ALL.iter().map(|k| k.label()).collect();
        AppError::BadRequest(format!(
            "unknown quantization type `{text}`; one of {}",
            names.join(", ")
        ))
    })
}

/// A quantization of an already quantized file must be asked for knowingly.
pub fn check_requantize(app: &App, id: &str, allow: bool) -> Result<(), AppError> {
    let registry = app.registry.current();
    let Some(entry) = registry.get(id) else {
        return Ok(()); // the job's own check answers 404
    };
    if entry.is_quantized() && !allow {
        return Err(AppError::BadRequest(format!(
            "`{id}` is already quantized ({}): quantizing it again loses quality twice. Send \"allow_requantize\": true to accept that",
            entry.quantization
        )));
    }
    Ok(())
}

/// Cancels the job when the stream is dropped before the job ended (the client went away).
struct CancelOnDrop {
    app: Arc<App>,
    id: String,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.app.model_jobs.cancel(&self.id);
    }
}

fn job_stream(
    app: Arc<App>,
    id: String,
    request: JobRequest,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    let receiver = app.model_jobs.start(&id, request)?;
    let guard = CancelOnDrop { app, id };
    // The latest state each time it changes: a slow client may miss steps, never the end, and
    // the stream closes right after the end (the job's sender lives on for `GET /api/models`).
    let states = futures::stream::unfold(Some((receiver, true)), |state| async move {
        let (mut receiver, first) = state?;
        if !first && receiver.changed().await.is_err() {
            return None;
        }
        let job = receiver.borrow_and_update().clone();
        let next = job.running().then_some((receiver, false));
        Some((job, next))
    });
    let stream = states.map(move |job: ModelJob| {
        let _keep_alive = &guard;
        let name = if job.running() { "progress" } else { "end" };
        let data = serde_json::to_string(&job).unwrap_or_default();
        Ok(Event::default().event(name).data(data))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

pub async fn fetch(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    job_stream(state.app.clone(), id, JobRequest::Fetch)
}

pub async fn quantize(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<QuantizeBody>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    let kind = quant_type(&body.kind)?;
    check_requantize(&state.app, &id, body.allow_requantize)?;
    job_stream(
        state.app.clone(),
        id,
        JobRequest::Quantize {
            kind,
            allow_requantize: body.allow_requantize,
        },
    )
}

/// The body of `POST /api/models`: a GGUF file of a hub repository to add.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddBody {
    pub repo: String,
    pub file: String,
    #[serde(default)]
    pub revision: Option<String>,
    /// The id to list it under (default: from the file name).
    #[serde(default)]
    pub id: Option<String>,
}

impl AddBody {
    /// The hub file and the id it will be listed under.
    pub fn into_request(self) -> (String, HubFile) {
        let hub = HubFile {
            repo: self.repo.trim().to_string(),
            file: self.file.trim().trim_start_matches('/').to_string(),
            revision: self
                .revision
                .map(|r| r.trim().to_string())
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "main".into()),
        };
        let id = self
            .id
            .map(|id| id.trim().to_string())
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| hub.default_id());
        (id, hub)
    }
}

/// Adds a GGUF from the hub: SSE progress, then one `end` event whose `made` is the new id.
pub async fn add(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<AddBody>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    let (id, hub) = body.into_request();
    job_stream(state.app.clone(), id, JobRequest::Add(hub))
}

/// Hashes a model's files against their published sha256: SSE progress, then `end` (its
/// `message` says what matched; a mismatch ends `failed`).
pub async fn verify(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    job_stream(state.app.clone(), id, JobRequest::Verify)
}

pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    if state.app.model_jobs.cancel(&id) {
        Ok(StatusCode::ACCEPTED)
    } else {
        Err(AppError::NotFound(format!(
            "no download or quantization is running for `{id}`"
        )))
    }
}

pub async fn delete_files(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Deleted>, AppError> {
    let app = state.app.clone();
    tokio::task::spawn_blocking(move || delete_model(&app, &id))
        .await
        .map_err(|e| AppError::internal(format!("delete task failed: {e}")))?
        .map(Json)
}

/// How long a delete waits for a model's replies to end before it is refused. A reply's
/// client has its last event a moment before the worker counts the reply as done, so a delete
/// sent right after a reply must not be refused for it.
const REPLY_END_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether `id` has no reply running, or none left within [`REPLY_END_GRACE`].
fn replies_end_soon(app: &App, id: &str) -> bool {
    let deadline = std::time::Instant::now() + REPLY_END_GRACE;
    while app.pool.active_for(id) > 0 {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    true
}

/// Deletes a model's weights once nothing uses them: not while a job runs for it, nor while it
/// is answering; a loaded copy is unloaded first.
pub fn delete_model(app: &App, id: &str) -> Result<Deleted, AppError> {
    let registry = app.registry.current();
    let entry = registry.get(id).cloned().ok_or_else(|| {
        AppError::NotFound(format!(
            "unknown model `{id}`; GET /api/models lists the ids"
        ))
    })?;
    if app.model_jobs.is_running(id) {
        return Err(AppError::Conflict(format!(
            "`{id}` has a download or quantization running; cancel it first"
        )));
    }
    if entry.made_here {
        // quantized.toml is rewritten: not while a quantization may append to it.
        if let Some(other) = app.model_jobs.quantizing() {
            return Err(AppError::Conflict(format!(
                "a quantization of `{other}` is running; delete `{id}` when it ends"
            )));
        }
    }
    let sharing: Vec<String> = registry
        .models
        .iter()
        .filter(|m| m.remote.is_none() && registry.file_path(m) == registry.file_path(&entry))
        .map(|m| m.id.clone())
        .collect();
    for user in &sharing {
        if !replies_end_soon(app, user) {
            return Err(AppError::Conflict(format!(
                "`{user}` is answering right now; delete it when its replies end"
            )));
        }
    }
    for user in &sharing {
        app.pool.unload(user);
        app.model_jobs.forget(user);
    }
    let deleted = crate::registry::delete::delete_files(&registry, &entry)?;
    if deleted.unlisted {
        app.registry.reload().map_err(|e| {
            AppError::internal(format!(
                "the files were deleted but the registry could not be read again: {e}"
            ))
        })?;
    }
    tracing::info!(model = id, path = %deleted.path.display(), bytes = deleted.freed_bytes, "deleted");
    Ok(deleted)
}
