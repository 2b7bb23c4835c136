//! `POST /api/ocr`: the text in an uploaded image (multipart field `file`, optional field
//! `model`), lines with confidence and box, and metrics. `GET /api/ocr/models` lists engines.

use axum::{
    extract::{
        multipart::{MultipartError, MultipartRejection},
        Multipart, State,
    },
    http::StatusCode,
    Json,
};

use crate::{
    error::AppError,
    ocr::{image_input::MAX_UPLOAD_BYTES, OcrEngineInfo, OcrOutput},
    state::AppState,
};

/// The body limit of this route: the largest image plus room for the multipart framing.
pub const MAX_BODY_BYTES: usize = MAX_UPLOAD_BYTES + 64 * 1024;

pub async fn read(
    State(state): State<AppState>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<OcrOutput>, AppError> {
    let mut multipart = multipart.map_err(|_| {
        AppError::UnsupportedMediaType(
            "send the image as multipart/form-data with a `file` field \
             (curl -F file=@page.png …/api/ocr)"
                .into(),
        )
    })?;
    let limits = &state.app.settings.limits;
    let (mut file, mut model) = (None, None);
    let mut fields = 0;
    while let Some(field) = multipart.next_field().await.map_err(upload_error)? {
        fields += 1;
        if fields > limits.max_multipart_fields {
            return Err(AppError::BadRequest(format!(
                "the form has more than {} fields: send `file` and optionally `model`",
                limits.max_multipart_fields
            )));
        }
        match field.name() {
            Some("file") if file.is_some() => {
                return Err(AppError::BadRequest(
                    "the form has more than one `file`: send one image per request".into(),
                ))
            }
            Some("file") => file = Some(field.bytes().await.map_err(upload_error)?.to_vec()),
            Some("model") if model.is_some() => {
                return Err(AppError::BadRequest(
                    "the form names `model` twice: send it once".into(),
                ))
            }
            Some("model") => model = Some(field.text().await.map_err(upload_error)?),
            other => {
                return Err(AppError::BadRequest(format!(
                    "unexpected form field `{}`: send `file` and optionally `model`",
                    other.unwrap_or_default()
                )))
            }
        }
    }
    let file = file.ok_or_else(|| {
        AppError::BadRequest("no `file` field: send the image as the form field `file`".into())
    })?;
    state.app.ocr.read(file, model).await.map(Json)
}

pub async fn models(State(state): State<AppState>) -> Json<Vec<OcrEngineInfo>> {
    Json(state.app.registry.current().ocr_infos())
}

fn upload_error(error: MultipartError) -> AppError {
    if let Some(timeout) = super::limits::body_timeout(&error) {
        timeout
    } else if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        AppError::PayloadTooLarge(format!(
            "the upload is over {} MiB: send a smaller image",
            MAX_UPLOAD_BYTES / (1024 * 1024)
        ))
    } else {
        AppError::BadRequest(format!("the upload is malformed: {}", error.body_text()))
    }
}
