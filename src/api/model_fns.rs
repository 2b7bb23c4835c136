//! Server functions for the Models page. Jobs started here run on in the server (a reload of
//! the page finds them); the page polls `models_page` while one runs and cancels with
//! `cancel_model_job`. API clients use the SSE routes of `api::models` instead.

use leptos::prelude::*;

use crate::{error::AppError, types::ModelsOverview};

#[server(prefix = "/ui", endpoint = "models_page")]
pub async fn models_page() -> Result<ModelsOverview, AppError> {
    use crate::{inference::llama_cpp::quantize::QuantType, types::QuantOption};
    let state = expect_context::<crate::state::AppState>();
    Ok(ModelsOverview {
        models: crate::api::model_list(&state.app),
        folders: folder_list(&state.app),
        adding: state.app.model_jobs.pending(&state.app.registry.current()),
        quant_types: QuantType::ALL
            .iter()
            .map(|kind| QuantOption {
                label: kind.label().to_string(),
                nominal_bits: kind.nominal_bits(),
            })
            .collect(),
    })
}

/// NER and OCR models with their jobs.
#[cfg(feature = "ssr")]
fn folder_list(app: &crate::state::App) -> Vec<crate::types::FolderModelInfo> {
    let mut list = app.registry.current().folder_infos();
    for info in &mut list {
        info.job = app.model_jobs.status(&info.id);
    }
    list
}

#[server(prefix = "/ui", endpoint = "model_add")]
pub async fn start_model_add(
    repo: String,
    file: String,
    revision: String,
    id: String,
) -> Result<String, AppError> {
    use crate::{api::models::AddBody, registry::jobs::JobRequest};
    let state = expect_context::<crate::state::AppState>();
    let (id, hub) = AddBody {
        repo,
        file,
        revision: Some(revision),
        id: Some(id),
    }
    .into_request();
    state.app.model_jobs.start(&id, JobRequest::Add(hub))?;
    Ok(id)
}

#[server(prefix = "/ui", endpoint = "model_verify")]
pub async fn start_model_verify(id: String) -> Result<(), AppError> {
    use crate::registry::jobs::JobRequest;
    let state = expect_context::<crate::state::AppState>();
    state.app.model_jobs.start(&id, JobRequest::Verify)?;
    Ok(())
}

#[server(prefix = "/ui", endpoint = "model_fetch")]
pub async fn start_model_fetch(id: String) -> Result<(), AppError> {
    use crate::registry::jobs::JobRequest;
    let state = expect_context::<crate::state::AppState>();
    state.app.model_jobs.start(&id, JobRequest::Fetch)?;
    Ok(())
}

#[server(prefix = "/ui", endpoint = "model_quantize")]
pub async fn start_model_quantize(
    id: String,
    kind: String,
    allow_requantize: bool,
) -> Result<(), AppError> {
    use crate::{api::models, registry::jobs::JobRequest};
    let state = expect_context::<crate::state::AppState>();
    let kind = models::quant_type(&kind)?;
    models::check_requantize(&state.app, &id, allow_requantize)?;
    state.app.model_jobs.start(
        &id,
        JobRequest::Quantize {
            kind,
            allow_requantize,
        },
    )?;
    Ok(())
}

#[server(prefix = "/ui", endpoint = "model_cancel")]
pub async fn cancel_model_job(id: String) -> Result<bool, AppError> {
    let state = expect_context::<crate::state::AppState>();
    Ok(state.app.model_jobs.cancel(&id))
}

/// Deletes a model's weights; the answer says what was freed, for the page to show.
#[server(prefix = "/ui", endpoint = "model_delete")]
pub async fn delete_model_files(id: String) -> Result<String, AppError> {
    let state = expect_context::<crate::state::AppState>();
    let app = state.app.clone();
    let deleted = tokio::task::spawn_blocking(move || crate::api::models::delete_model(&app, &id))
        .await
        .map_err(|e| AppError::internal(format!("delete task failed: {e}")))??;
    let mut message = format!(
        "Deleted {} ({:.1} MB freed){}.",
        deleted.id,
        deleted.freed_bytes as f64 / 1e6,
        if deleted.unlisted {
            " and removed it from the list"
        } else {
            ""
        }
    );
    if !deleted.also_affected.is_empty() {
        message.push_str(&format!(
            " {} used the same file and is not downloaded now either.",
            deleted.also_affected.join(", ")
        ));
    }
    Ok(message)
}

/// Forgets how a job for `id` ended (a failed addition's message, once read).
#[server(prefix = "/ui", endpoint = "model_dismiss")]
pub async fn dismiss_model_job(id: String) -> Result<(), AppError> {
    let state = expect_context::<crate::state::AppState>();
    state.app.model_jobs.forget(&id);
    Ok(())
}
