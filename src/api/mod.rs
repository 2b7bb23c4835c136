//! Everything the server answers besides pages: server functions (used by the UI), the REST
//! API, and the OpenAI-compatible API.

pub mod analysis_fns;
pub mod bench_fns;
pub mod server_fns;

#[cfg(feature = "ssr")]
mod bench;
#[cfg(feature = "ssr")]
mod chat;
#[cfg(feature = "ssr")]
mod compare;
#[cfg(feature = "ssr")]
pub(crate) mod conversations;
#[cfg(feature = "ssr")]
mod json;
#[cfg(feature = "ssr")]
mod ner;
#[cfg(feature = "ssr")]
mod ocr;
#[cfg(feature = "ssr")]
mod openai;
#[cfg(feature = "ssr")]
mod rest;
#[cfg(feature = "ssr")]
mod security;

#[cfg(feature = "ssr")]
pub use chat::{first_event, start_chat};
#[cfg(feature = "ssr")]
pub use rest::model_list;

/// The JSON routes, with their body-size limit; pages and server functions are added by main.
#[cfg(feature = "ssr")]
pub fn routes(state: crate::state::AppState) -> axum::Router<crate::state::AppState> {
    use axum::{
        extract::DefaultBodyLimit,
        routing::{get, post},
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
    Router::new()
        .merge(conversations)
        .merge(uploads)
        .route("/health", get(rest::health))
        .route("/api/models", get(rest::models))
        .route("/api/chat/stream", post(rest::chat_stream))
        .route("/api/compare", post(compare::compare))
        .route("/api/ner", post(ner::recognize))
        .route("/api/ner/models", get(ner::models))
        .route("/api/ocr/models", get(ocr::models))
        .route("/api/bench", post(bench::start).delete(bench::cancel))
        .route("/api/bench/status", get(bench::status))
        .route("/api/bench/results", get(bench::results))
        .route("/v1/models", get(openai::models))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            security::require_api_key,
        ))
}

#[cfg(feature = "ssr")]
pub use security::refuse_foreign_websockets;
