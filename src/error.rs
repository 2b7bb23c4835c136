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
    /// The request body did not arrive within its deadline (408).
    #[error("{0}")]
    RequestTimeout(String),
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
    /// The model is still loading (503 with Retry-After, as `/health` says).
    #[error("{message}")]
    Loading {
        message: String,
        retry_after_secs: u32,
    },
    /// The server is shutting down and takes no new work (503 with Retry-After).
    #[error("{0}")]
    ShuttingDown(String),
    /// This client holds too many connections of a kind (429 with Retry-After).
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after_secs: u32,
    },
    /// The work took longer than its deadline and was stopped (504).
    #[error("{0}")]
    Timeout(String),
    /// The store could not save: the disk is full or read-only (507). Nothing was changed.
    #[error("{0}")]
    InsufficientStorage(String),
    /// A remote inference server answered badly or not at all (502).
    #[error("{0}")]
    BadGateway(String),
    /// A remote inference server took too long (504).
    #[error("{0}")]
    GatewayTimeout(String),
    /// Something failed on our side. The message is what the person sees: short, with the
    /// request id under which [`AppError::internal`] logged the detail.
    #[error("{0}")]
    Internal(String),
}

/// Seconds a client is told to wait while the server shuts down (another replica, or this one
/// restarted, will answer).
pub const SHUTDOWN_RETRY_AFTER_SECS: u32 = 5;

impl AppError {
    pub fn status(&self) -> u16 {
        match self {
            AppError::BadRequest(_) => 400,
            AppError::Unauthorized(_) => 401,
            AppError::Forbidden(_) => 403,
            AppError::NotFound(_) => 404,
            AppError::RequestTimeout(_) => 408,
            AppError::Conflict(_) => 409,
            AppError::PayloadTooLarge(_) => 413,
            AppError::UnsupportedMediaType(_) => 415,
            AppError::Unprocessable(_) => 422,
            AppError::TooManyRequests { .. } => 429,
            AppError::ModelUnavailable(_)
            | AppError::Overloaded { .. }
            | AppError::Loading { .. }
            | AppError::ShuttingDown(_) => 503,
            AppError::Internal(_) => 500,
            AppError::BadGateway(_) => 502,
            AppError::GatewayTimeout(_) | AppError::Timeout(_) => 504,
            AppError::InsufficientStorage(_) => 507,
        }
    }

    /// How long a client should wait before trying again, for the errors that pass with time.
    pub fn retry_after_secs(&self) -> Option<u32> {
        match self {
            AppError::Overloaded {
                retry_after_secs, ..
            }
            | AppError::Loading {
                retry_after_secs, ..
            }
            | AppError::TooManyRequests {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            AppError::ShuttingDown(_) => Some(SHUTDOWN_RETRY_AFTER_SECS),
            _ => None,
        }
    }

    /// The machine-readable kind used in JSON error bodies (`error.type`).
    pub fn kind(&self) -> &'static str {
        match self {
            AppError::BadRequest(_) => "invalid_request_error",
            AppError::Unauthorized(_) => "invalid_api_key",
            AppError::Forbidden(_) => "forbidden",
            AppError::NotFound(_) => "not_found",
            AppError::RequestTimeout(_) => "request_timeout",
            AppError::Conflict(_) => "conflict",
            AppError::PayloadTooLarge(_) => "payload_too_large",
            AppError::UnsupportedMediaType(_) => "unsupported_media_type",
            AppError::Unprocessable(_) => "unprocessable_image",
            AppError::ModelUnavailable(_) => "model_unavailable",
            AppError::Overloaded { .. } => "overloaded",
            AppError::Loading { .. } => "model_loading",
            AppError::ShuttingDown(_) => "shutting_down",
            AppError::TooManyRequests { .. } => "too_many_requests",
            AppError::Timeout(_) => "timeout",
            AppError::InsufficientStorage(_) => "insufficient_storage",
            AppError::Internal(_) => "internal_error",
            AppError::BadGateway(_) => "upstream_error",
            AppError::GatewayTimeout(_) => "upstream_timeout",
        }
    }

    /// Builds the error from the status and message a stream event carried.
    pub fn from_status(status: u16, message: String) -> Self {
        match status {
            400 => AppError::BadRequest(message),
            404 => AppError::NotFound(message),
            413 => AppError::PayloadTooLarge(message),
            429 => AppError::TooManyRequests {
                message,
                retry_after_secs: 5,
            },
            502 => AppError::BadGateway(message),
            503 => AppError::ModelUnavailable(message),
            504 => AppError::GatewayTimeout(message),
            507 => AppError::InsufficientStorage(message),
            _ => AppError::Internal(message),
        }
    }

    /// A failure on our side: `detail` goes to the log under the request's id (see
    /// [`request_id`]), and the person gets a short message with that id, no paths, no internals.
    #[cfg(feature = "ssr")]
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        let id = request_id::current();
        tracing::error!(request_id = %id, "internal error: {detail}");
        AppError::Internal(format!(
            "something went wrong on the server (request {id}); the server log has the details"
        ))
    }
}

/// Every request gets an id: taken from a sane `X-Request-Id` header or made up, echoed in the
/// response's `X-Request-Id`, and quoted in internal errors so a log line can be found.
#[cfg(feature = "ssr")]
pub mod request_id {
    use axum::{
        extract::Request,
        http::{HeaderName, HeaderValue},
        middleware::Next,
        response::Response,
    };

    pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

    tokio::task_local! {
        static CURRENT: String;
    }

    /// The id of the request being handled, or a fresh one outside any request.
    pub fn current() -> String {
        CURRENT.try_with(Clone::clone).unwrap_or_else(|_| fresh())
    }

    fn fresh() -> String {
        uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
    }

    /// Ids from clients are kept only when short and plain, so they cannot forge log lines.
    fn sane(value: &HeaderValue) -> Option<String> {
        let text = value.to_str().ok()?;
        (!text.is_empty()
            && text.len() <= 64
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .then(|| text.to_string())
    }

    pub async fn assign(request: Request, next: Next) -> Response {
        let id = request
            .headers()
            .get(&HEADER)
            .and_then(sane)
            .unwrap_or_else(fresh);
        let mut response = CURRENT.scope(id.clone(), next.run(request)).await;
        if let Ok(value) = HeaderValue::from_str(&id) {
            response.headers_mut().insert(HEADER, value);
        }
        response
    }
}

impl FromServerFnError for AppError {
    type Encoder = JsonEncoding;

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        match value {
            ServerFnErrorErr::Args(msg)
            | ServerFnErrorErr::Deserialization(msg)
            | ServerFnErrorErr::MissingArg(msg) => AppError::BadRequest(msg),
            ServerFnErrorErr::UnsupportedRequestMethod(msg) => AppError::BadRequest(msg),
            // In the browser: the request failed on its way (network, server gone).
            #[cfg(not(feature = "ssr"))]
            other => AppError::Internal(other.to_string()),
            #[cfg(feature = "ssr")]
            other => AppError::internal(other),
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
            let status =
                StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            // OpenAI's error shape, so its clients show our message.
            let body = serde_json::json!({
                "error": { "message": self.to_string(), "type": self.kind(), "code": status.as_u16() }
            });
            let mut response = (status, Json(body)).into_response();
            if let Some(secs) = self.retry_after_secs() {
                if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                    response.headers_mut().insert(header::RETRY_AFTER, value);
                }
            }
            response
        }
    }
}
