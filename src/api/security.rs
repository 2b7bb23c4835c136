//! Refuses websocket upgrades whose `Origin` is not this server: another site open in the same
//! browser must not be able to drive the model through the user's connection. And, when the
//! server has an API key, refuses OpenAI-API calls that do not bring it.

use axum::{
    extract::Request,
    http::{header, HeaderMap},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::error::AppError;

pub async fn refuse_foreign_websockets(request: Request, next: Next) -> Response {
    if is_websocket_upgrade(request.headers()) && !same_origin(request.headers()) {
        return AppError::Forbidden(
            "websocket connections are only accepted from this server's own pages".into(),
        )
        .into_response();
    }
    next.run(request).await
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Browsers always send `Origin` on websocket requests; non-browser clients may omit it, and
/// they are not the threat this guards against.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    origin_host.eq_ignore_ascii_case(host)
}

/// With `--api-key`, `/v1/*` needs `Authorization: Bearer <key>`: a Quantlab that other
/// Quantlabs send inference to should not serve the whole network.
pub async fn require_api_key(
    axum::extract::State(state): axum::extract::State<crate::state::AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = state.app.settings.api_key.as_deref() else {
        return next.run(request).await;
    };
    if !request.uri().path().starts_with("/v1/") {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(key) if same_secret(key.as_bytes(), expected.as_bytes()) => next.run(request).await,
        Some(_) => AppError::Unauthorized("the API key is not valid for this server".into())
            .into_response(),
        None => AppError::Unauthorized(
            "this server needs an API key: send `Authorization: Bearer <key>`".into(),
        )
        .into_response(),
    }
}

/// Compares without stopping at the first difference, so timing does not leak the key.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_the_servers_own_origin_passes() {
        assert!(same_origin(&headers(
            Some("http://127.0.0.1:3000"),
            "127.0.0.1:3000"
        )));
        assert!(same_origin(&headers(None, "127.0.0.1:3000")));
        assert!(!same_origin(&headers(
            Some("http://evil.example"),
            "127.0.0.1:3000"
        )));
        assert!(!same_origin(&headers(
            Some("http://127.0.0.1:3000.evil.example"),
            "127.0.0.1:3000"
        )));
        assert!(!same_origin(&headers(Some("null"), "127.0.0.1:3000")));
    }
}
