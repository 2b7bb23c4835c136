//! Everything the server answers besides pages: server functions (used by the UI), websockets
//! (chat and compare replies), the REST API, and the OpenAI-compatible API.

pub mod analysis_fns;
pub mod arena_fns;
pub mod bench_fns;
pub mod model_fns;
pub mod server_fns;

#[cfg(feature = "ssr")]
pub mod arena;
#[cfg(feature = "ssr")]
mod bench;
#[cfg(feature = "ssr")]
mod chat;
#[cfg(feature = "ssr")]
pub mod chat_socket;
#[cfg(feature = "ssr")]
pub mod compare;
#[cfg(feature = "ssr")]
pub(crate) mod conversations;
#[cfg(feature = "ssr")]
mod json;
#[cfg(feature = "ssr")]
pub mod limits;
#[cfg(feature = "ssr")]
pub mod models;
#[cfg(feature = "ssr")]
mod ner;
#[cfg(feature = "ssr")]
mod ocr;
#[cfg(feature = "ssr")]
mod openai;
#[cfg(feature = "ssr")]
mod rest;
#[cfg(feature = "ssr")]
pub mod security;
#[cfg(feature = "ssr")]
pub mod socket;

#[cfg(feature = "ssr")]
pub use chat::{chat_event, first_reply, start_chat};
#[cfg(feature = "ssr")]
pub use rest::model_list;

/// The JSON routes and websockets, with their body-size limits; pages and server functions are
/// added by `server::router`.
#[cfg(feature = "ssr")]
pub fn routes(state: crate::state::AppState) -> axum::Router<crate::state::AppState> {
    use axum::{
        extract::DefaultBodyLimit,
        routing::{delete, get, post},
        Router,
    };
    let max_body = state.app.settings.limits.max_body_bytes;
    let max_import = state.app.settings.limits.max_import_bytes;
    let conversations = Router::new()
        .route(
            "/api/conversations",
            get(conversations::list).post(conversations::create),
        )
        .route(
            "/api/conversations/{id}",
            get(conversations::get)
                .patch(conversations::rename)
                .delete(conversations::delete),
        )
        .route(
            "/api/conversations/{id}/messages",
            post(conversations::append),
        )
        .route("/api/conversations/{id}/export", get(conversations::export))
        .route("/api/persistence", get(conversations::status))
        .layer(DefaultBodyLimit::max(max_import));
    let uploads = Router::new()
        .route("/api/ocr", post(ocr::read))
        .layer(DefaultBodyLimit::max(ocr::MAX_BODY_BYTES));
    // Replies stream here: a small send buffer lets a client that stops reading be noticed.
    let streams = Router::new()
        .route("/ws/chat", get(chat_socket::chat))
        .route("/ws/compare", get(compare::compare_socket))
        .route("/ws/arena", get(arena::socket))
        .route("/api/arena/battles", post(arena::start).get(arena::export))
        .route("/api/chat/stream", post(rest::chat_stream))
        .route("/api/models/{id}/fetch", post(models::fetch))
        .route("/api/models/{id}/quantize", post(models::quantize))
        .route("/api/models/{id}/verify", post(models::verify))
        .route("/api/models", get(rest::models).post(models::add))
        .route("/api/compare", post(compare::compare))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route_layer(axum::middleware::from_fn(
            crate::server::connections::streaming,
        ));
    Router::new()
        .merge(conversations)
        .merge(uploads)
        .merge(streams)
        .route("/health", get(rest::health))
        .route(
            "/login",
            get(security::login_get).post(security::login_post),
        )
        .route("/api/models/{id}/files", delete(models::delete_files))
        .route("/api/models/{id}/job", delete(models::cancel))
        .route("/api/arena/battles/{id}", get(arena::get))
        .route("/api/arena/battles/{id}/vote", post(arena::vote))
        .route("/api/arena/leaderboard", get(arena::leaderboard))
        .route("/api/ner", post(ner::recognize))
        .route("/api/ner/models", get(ner::models))
        .route("/api/ocr/models", get(ocr::models))
        .route("/api/bench", post(bench::start).delete(bench::cancel))
        .route("/api/bench/status", get(bench::status))
        .route("/api/bench/results", get(bench::results))
        .route("/v1/models", get(openai::models))
        .layer(DefaultBodyLimit::max(max_body))
}

/// Server functions answer errors with 500 whatever they are; this gives them the status of
/// the `AppError` they carry, so bad input under `/ui/*` is a 4xx like everywhere else.
#[cfg(feature = "ssr")]
pub async fn server_fn_status(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::{body::Body, http::StatusCode};
    use http_body_util::BodyExt;

    let response = next.run(request).await;
    if response.status() != StatusCode::INTERNAL_SERVER_ERROR
        || !response.headers().contains_key("serverfnerror")
    {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(collected) = http_body_util::Limited::new(body, 1024 * 1024)
        .collect()
        .await
    else {
        return axum::response::Response::from_parts(parts, Body::empty());
    };
    let bytes = collected.to_bytes();
    if let Ok(error) = serde_json::from_slice::<crate::error::AppError>(&bytes) {
        parts.status = StatusCode::from_u16(error.status()).unwrap_or(parts.status);
    }
    axum::response::Response::from_parts(parts, Body::from(bytes))
}
