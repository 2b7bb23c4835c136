//! The error type at the server-function and HTTP boundary: serialisable, with a status code
//! and a message a person can act on. Module errors convert into it.

use serde::{Deserialize, Serialize};
use server_fn::{
    codec::JsonEncoding,
    error::{FromServerFnError, ServerFnErrorErr},
};

#[derive(Clone, Debug, PartialEq, thiserror::Error, Serialize, Deserialize)]
pub enum AppError {
    /// The request is malformed or a parameter is out of range (400).
    #[error("{0}")]
    BadRequest(String),
    /// A missing or wrong API key (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The request came from a page we do not serve (403).
    #[error("{0}")]
    Forbidden(String),
    /// An unknown model or path (404).
    #[error("{0}")]
    NotFound(String),
    /// Something is already running that allows only one at a time (409).
    #[error("{0}")]
    Conflict(String),
    /// The body or a message is over its size limit (413).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The upload is not a kind of file we read (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The upload is of a kind we read but cannot be used: damaged, or too many pixels (422).
    #[error("{0}")]
    Unprocessable(String),
    /// The model exists but cannot run here (503, no retry hint: it needs a fix, not a wait).
    #[error("{0}")]
    ModelUnavailable(String),
    /// Every queue slot is taken (503 with Retry-After).
    #[error("{message}")]
    Overloaded {
        message: String,
        retry_after_secs: u32,
    },
    /// A remote inference server answered badly or not at all (502).
    #[error("{0}")]
    BadGateway(String),
    /// A remote inference server took too long (504).
    #[error("{0}")]
    GatewayTimeout(String),
    /// Something failed on our side; details are in the server log.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    pub fn status(&self) -> u16 {
        match self {
            AppError::BadRequest(_) => 400,
            AppError::Unauthorized(_) => 401,
            AppError::Forbidden(_) => 403,
            AppError::NotFound(_) => 404,
            AppError::Conflict(_) => 409,
            AppError::PayloadTooLarge(_) => 413,
            AppError::UnsupportedMediaType(_) => 415,
            AppError::Unprocessable(_) => 422,
            AppError::ModelUnavailable(_) | AppError::Overloaded { .. } => 503,
            AppError::Internal(_) => 500,
            AppError::BadGateway(_) => 502,
            AppError::GatewayTimeout(_) => 504,
        }
    }

    /// The machine-readable kind used in JSON error bodies (`error.type`).
    pub fn kind(&self) -> &'static str {
        match self {
            AppError::BadRequest(_) => "invalid_request_error",
            AppError::Unauthorized(_) => "invalid_api_key",
            AppError::Forbidden(_) => "forbidden",
            AppError::NotFound(_) => "not_found",
            AppError::Conflict(_) => "conflict",
            AppError::PayloadTooLarge(_) => "payload_too_large",
            AppError::UnsupportedMediaType(_) => "unsupported_media_type",
            AppError::Unprocessable(_) => "unprocessable_image",
            AppError::ModelUnavailable(_) => "model_unavailable",
            AppError::Overloaded { .. } => "overloaded",
            AppError::Internal(_) => "internal_error",
            AppError::BadGateway(_) => "upstream_error",
            AppError::GatewayTimeout(_) => "upstream_timeout",
        }
    }
}

impl FromServerFnError for AppError {
    type Encoder = JsonEncoding;

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        match value {
            ServerFnErrorErr::Args(msg) | ServerFnErrorErr::Deserialization(msg) => {
                AppError::BadRequest(msg)
            }
            other => AppError::Internal(other.to_string()),
        }
    }
}

#[cfg(feature = "ssr")]
mod http_response {
    use super::AppError;
    use axum::{
        http::{header, HeaderValue, StatusCode},
        response::{IntoResponse, Response},
        Json,
    };

    impl IntoResponse for AppError {
        fn into_response(self) -> Response {
            if let AppError::Internal(detail) = &self {
                tracing::error!(%detail, "internal error");
            }
            let status =
                StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            // OpenAI's error shape, so its clients show our message.
            let body = serde_json::json!({
                "error": { "message": self.to_string(), "type": self.kind(), "code": status.as_u16() }
            });
            let mut response = (status, Json(body)).into_response();
            if let AppError::Overloaded {
                retry_after_secs, ..
            } = self
            {
                if let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                    response.headers_mut().insert(header::RETRY_AFTER, value);
                }
            }
            response
        }
    }
}
