//! The bench over HTTP: `POST /api/bench` starts a run and streams its progress as SSE (409 while
//! another runs), `GET /api/bench/status`, `DELETE /api/bench` (cancel after the current run),
//! `GET /api/bench/results` (JSON, or CSV with `?format=csv`).

use std::convert::Infallible;

use axum::{
    extract::{Query, State},
    http::{header, StatusCode},
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
    Json,
};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use tokio_stream::wrappers::WatchStream;

use super::json::ApiJson;
use crate::{
    bench::{
        jobs::BenchJobs,
        results::to_csv,
        types::{BenchConfig, BenchEvent, BenchStatus},
    },
    error::AppError,
    state::AppState,
};

fn sse_event(event: &BenchEvent) -> Event {
    let (name, data) = match event {
        BenchEvent::Progress(p) => ("progress", serde_json::to_string(p)),
        BenchEvent::Done { run } => ("done", serde_json::to_string(run)),
        BenchEvent::Error { .. } => ("error", serde_json::to_string(event)),
    };
    Event::default()
        .event(name)
        .data(data.unwrap_or_else(|e| format!("{{\"message\":\"{e}\"}}")))
}

pub async fn start(
    State(state): State<AppState>,
    ApiJson(config): ApiJson<BenchConfig>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    let events = BenchJobs::start(&state.app, config)?;
    // A watch stream shows the latest state; intermediate steps may be skipped by a slow
    // client, never the final event (the sender is dropped only after sending it).
    let mut finished = false;
    let stream = WatchStream::new(events)
        .take_while(move |event| {
            let keep = !finished;
            finished |= !matches!(event, BenchEvent::Progress(_));
            std::future::ready(keep)
        })
        .map(|event| Ok(sse_event(&event)));
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

pub async fn status(State(state): State<AppState>) -> Json<BenchStatus> {
    Json(state.app.bench.status())
}

pub async fn cancel(State(state): State<AppState>) -> Result<StatusCode, AppError> {
    if state.app.bench.cancel() {
        Ok(StatusCode::ACCEPTED)
    } else {
        Err(AppError::NotFound("no bench is running".into()))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultsQuery {
    format: Option<String>,
}

pub async fn results(
    State(state): State<AppState>,
    Query(query): Query<ResultsQuery>,
) -> Result<Response, AppError> {
    let app = state.app.clone();
    let runs = tokio::task::spawn_blocking(move || app.bench.results.list())
        .await
        .map_err(|e| AppError::internal(format!("reading bench results: {e}")))?;
    match query.format.as_deref().unwrap_or("json") {
        "json" => Ok(Json(serde_json::json!({ "runs": runs })).into_response()),
        "csv" => Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"quantlab-bench.csv\"",
                ),
            ],
            to_csv(&runs),
        )
            .into_response()),
        other => Err(AppError::BadRequest(format!(
            "`format` must be `json` or `csv`, not `{}`",
            other.escape_debug()
        ))),
    }
}
