//! `/api/arena/*` and `/ws/arena`: start a blind battle (SSE, or the Arena page's websocket
//! whose Stop reaches both sides), vote once, read a battle (blind until voted), the leaderboard
//! and the voted battles as JSON or CSV.

use std::{convert::Infallible, sync::Arc};

use axum::{
    extract::{ws::WebSocketUpgrade, ConnectInfo, Path, Query, State},
    http::header,
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
    Extension, Json,
};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use uuid::Uuid;

use super::{
    json::ApiJson,
    socket::{read_start, relay, upgrade, Socket},
};
use crate::{
    arena::{battle, ArenaEvent, BattleRequest, VoteRequest},
    error::AppError,
    state::{App, AppState},
};

fn parse_battle_id(raw: &str) -> Result<Uuid, AppError> {
    super::conversations::parse_uuid(raw, "battle id")
}

fn sse(event: &ArenaEvent) -> Event {
    let name = match event {
        ArenaEvent::Started { .. } => "started",
        ArenaEvent::Waiting { .. } => "waiting",
        ArenaEvent::Token { .. } => "token",
        ArenaEvent::SideDone { .. } => "side_done",
        ArenaEvent::Ready { .. } => "ready",
        ArenaEvent::Abandoned { .. } => "abandoned",
    };
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".into());
    Event::default().event(name).data(data)
}

/// `POST /api/arena/battles`: checks the request (a bad one is a plain 4xx), then streams the
/// battle: `started` (its id), `token`s of sides `a` and `b`, `side_done`, and `ready` once it
/// is stored and can be voted on (or `abandoned`).
pub async fn start(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<BattleRequest>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    let plan = battle::plan(&state.app, request)?;
    let (out, events) = mpsc::channel::<ArenaEvent>(64);
    // Nothing stops an SSE battle but the client leaving, which closes `events`.
    let (keep, stop) = watch::channel(false);
    tokio::spawn(async move {
        battle::run(state.app.clone(), plan, stop, out).await;
        drop(keep);
    });
    let stream = ReceiverStream::new(events).map(|event| Ok(sse(&event)));
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// `POST /api/arena/battles/{id}/vote`: records the verdict once (409 after) and answers with
/// the battle revealed: models, engines, metrics.
pub async fn vote(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<VoteRequest>,
) -> Result<Response, AppError> {
    let id = parse_battle_id(&id)?;
    let battle = state.app.store(move |s| s.vote(id, body.winner)).await?;
    Ok(Json(battle).into_response())
}

/// `GET /api/arena/battles/{id}`: the prompt and the two replies, without names or metrics
/// until the battle is voted on; the whole battle after.
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let id = parse_battle_id(&id)?;
    let battle = state.app.store(move |s| s.battle(id)).await?;
    Ok(if battle.verdict.is_some() {
        Json(battle).into_response()
    } else {
        Json(battle.blind()).into_response()
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormatQuery {
    format: Option<String>,
}

enum Format {
    Json,
    Csv,
}

fn format_of(query: &FormatQuery) -> Result<Format, AppError> {
    match query.format.as_deref() {
        None | Some("json") => Ok(Format::Json),
        Some("csv") => Ok(Format::Csv),
        Some(other) => Err(AppError::BadRequest(format!(
            "`format` must be `json` or `csv`, not `{}`",
            other.chars().take(20).collect::<String>()
        ))),
    }
}

fn csv_download(body: String, file: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// The leaderboard from every stored vote.
pub async fn leaderboard_of(app: Arc<App>) -> Result<crate::arena::Leaderboard, AppError> {
    let battles = app.store(|s| s.battles()).await?;
    let app_for_board = app.clone();
    tokio::task::spawn_blocking(move || battle::leaderboard(&app_for_board, &battles))
        .await
        .map_err(|e| AppError::internal(format!("rating the votes failed: {e}")))
}

/// `GET /api/arena/leaderboard[?format=csv]`.
pub async fn leaderboard(
    State(state): State<AppState>,
    Query(query): Query<FormatQuery>,
) -> Result<Response, AppError> {
    let format = format_of(&query)?;
    let board = leaderboard_of(state.app.clone()).await?;
    Ok(match format {
        Format::Json => Json(board).into_response(),
        Format::Csv => csv_download(battle::leaderboard_csv(&board), "arena-leaderboard.csv"),
    })
}

/// `GET /api/arena/battles[?format=csv]`: every voted battle (unvoted ones are left out: they
/// would give away which models are answering a battle still waiting for its vote).
pub async fn export(
    State(state): State<AppState>,
    Query(query): Query<FormatQuery>,
) -> Result<Response, AppError> {
    let format = format_of(&query)?;
    let mut battles = state.app.store(|s| s.battles()).await?;
    battles.retain(|b| b.verdict.is_some());
    Ok(match format {
        Format::Json => Json(battles).into_response(),
        Format::Csv => csv_download(battle::battles_csv(&battles), "arena-battles.csv"),
    })
}

/// `GET /ws/arena`: `{"start": BattleRequest}`, then maybe `"stop"` (stops both sides).
pub async fn socket(
    State(state): State<AppState>,
    client: Option<Extension<ConnectInfo<std::net::SocketAddr>>>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    let app = state.app.clone();
    upgrade(&state.app, client, ws, move |socket| session(app, socket))
}

async fn session(app: Arc<App>, socket: Socket) {
    let abandoned = |e: &AppError| ArenaEvent::Abandoned {
        status: e.status(),
        message: e.to_string(),
    };
    let started = read_start(socket, |request| battle::plan(&app, request), abandoned).await;
    let Some((socket, plan)) = started else {
        return;
    };
    let (out, events) = mpsc::channel::<ArenaEvent>(64);
    let (stop_tx, stop) = watch::channel(false);
    let running = tokio::spawn(battle::run(app.clone(), plan, stop, out));
    relay::<BattleRequest, _>(
        socket,
        events,
        stop_tx,
        |event| {
            matches!(
                event,
                ArenaEvent::Ready { .. } | ArenaEvent::Abandoned { .. }
            )
        },
        running,
    )
    .await;
}
