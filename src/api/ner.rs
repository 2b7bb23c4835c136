//! `POST /api/ner`: entities in a text, with character offsets and metrics.

use axum::{extract::State, Json};
use serde::Deserialize;

use super::json::ApiJson;
use crate::{
    error::AppError,
    ner::{NerModelInfo, NerOutput},
    state::AppState,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NerBody {
    pub text: String,
    /// A NER model id from models.toml; the default NER model when absent.
    pub model: Option<String>,
}

pub async fn recognize(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NerBody>,
) -> Result<Json<NerOutput>, AppError> {
    state
        .app
        .ner
        .recognize(body.text, body.model)
        .await
        .map(Json)
}

pub async fn models(State(state): State<AppState>) -> Json<Vec<NerModelInfo>> {
    Json(state.app.registry.current().ner_infos())
}
