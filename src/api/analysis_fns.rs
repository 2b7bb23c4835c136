//! Server functions for the NER and OCR tabs: the model pickers and the NER run. (OCR uploads
//! go to `POST /api/ocr` directly: a file is multipart, not a server-function argument.)

use leptos::prelude::*;

use crate::{
    error::AppError,
    ner::{NerModelInfo, NerOutput},
    ocr::OcrEngineInfo,
};

#[server(prefix = "/ui", endpoint = "ner_models")]
pub async fn ner_models() -> Result<Vec<NerModelInfo>, AppError> {
    let state = expect_context::<crate::state::AppState>();
    Ok(state.app.registry.current().ner_infos())
}

#[server(prefix = "/ui", endpoint = "ner")]
pub async fn recognize_entities(
    text: String,
    model: Option<String>,
) -> Result<NerOutput, AppError> {
    let state = expect_context::<crate::state::AppState>();
    state.app.ner.recognize(text, model).await
}

#[server(prefix = "/ui", endpoint = "ocr_models")]
pub async fn ocr_models() -> Result<Vec<OcrEngineInfo>, AppError> {
    let state = expect_context::<crate::state::AppState>();
    Ok(state.app.registry.current().ocr_infos())
}
