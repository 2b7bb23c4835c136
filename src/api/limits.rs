//! Request bodies under their limits: refused with 413 from `Content-Length` before a byte is
//! read, capped while read when no length was declared, and given a deadline in all so a client
//! that trickles a body cannot hold a connection and a handler (408 beyond).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::{Request, State},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};
use http_body_util::{BodyExt, Limited};

use crate::{config::Limits, error::AppError, state::AppState};

/// Largest refused body still read (and dropped) so that its client hears the 413.
const MAX_DISCARDED_BYTES: u64 = 64 * 1024 * 1024;

/// The body limit of a route: OCR uploads and conversation imports are larger than the rest.
pub fn body_limit(limits: &Limits, path: &str) -> usize {
    if path == "/api/ocr" {
        super::ocr::MAX_BODY_BYTES
    } else if path.starts_with("/api/conversations") || path == "/ui/conversation_import" {
        limits.max_import_bytes
    } else {
        limits.max_body_bytes
    }
}

pub async fn guard_body(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limits = &state.app.settings.limits;
    let limit = body_limit(limits, request.uri().path());
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let deadline = limits.body_read_timeout;
    if let Some(length) = declared.filter(|&length| length > limit as u64) {
        let mut response = AppError::PayloadTooLarge(format!(
            "the body declares {length} bytes; this endpoint accepts at most {limit} bytes"
        ))
        .into_response();
        // The answer goes out now, before the body is read. What the client is still sending
        // is read and dropped in the background (within the body deadline, when it is not
        // absurdly large): a connection closed on unread data is reset, and the client would
        // lose this answer. The connection then closes.
        if length <= MAX_DISCARDED_BYTES {
            let body = request.into_body();
            tokio::spawn(async move {
                let drain = async {
                    let mut body = body.into_data_stream();
                    while let Some(Ok(_)) = futures::StreamExt::next(&mut body).await {}
                };
                let _ = tokio::time::timeout(deadline, drain).await;
            });
        }
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        return response;
    }
    let request = request.map(|body| {
        Body::new(DeadlineBody {
            inner: Limited::new(body, limit).boxed_unsync(),
            timer: Box::pin(tokio::time::sleep(deadline)),
            deadline,
        })
    });
    next.run(request).await
}

/// The body did not arrive within the deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}; send it faster or in smaller pieces")]
pub struct BodyTimeout(pub Duration);

struct DeadlineBody {
    inner: http_body_util::combinators::UnsyncBoxBody<Bytes, axum::BoxError>,
    timer: Pin<Box<tokio::time::Sleep>>,
    deadline: Duration,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimeout(self.deadline)))));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// 408 when reading a body failed because of its deadline (anywhere in the error's sources).
pub fn body_timeout(error: &(dyn std::error::Error + 'static)) -> Option<AppError> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(timeout) = e.downcast_ref::<BodyTimeout>() {
            return Some(AppError::RequestTimeout(timeout.to_string()));
        }
        current = e.source();
    }
    None
}
