//! A JSON body extractor whose rejections are `AppError`s: 413 over the size limit, 408 when
//! the body did not arrive in time, 400 with serde's message (which names the offending field)
//! otherwise.

use axum::{
    extract::{rejection::JsonRejection, FromRequest, Request},
    http::StatusCode,
};
use serde::de::DeserializeOwned;

use crate::error::AppError;

pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(match super::limits::body_timeout(&rejection) {
                Some(timeout) => timeout,
                None if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    AppError::PayloadTooLarge(
                        "the request body is over the server's size limit (see README: limits)"
                            .into(),
                    )
                }
                None => AppError::BadRequest(json_message(&rejection)),
            }),
        }
    }
}

fn json_message(rejection: &JsonRejection) -> String {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            "send the body as JSON with `Content-Type: application/json`".to_string()
        }
        other => other.body_text(),
    }
}
