//! Compare: one prompt to 2–4 models, orchestrated here once for both ways of asking — the
//! `POST /api/compare` SSE stream and the Compare page's websocket (`GET /ws/compare`), whose
//! Stop reaches every running slot. By default the models run one after another, each with the
//! machine to itself (on two cores concurrent runs slow each other down and the figures would
//! lie); `together` runs them at once and every event says so.

use std::{convert::Infallible, sync::Arc, time::Instant};

use axum::{
    extract::{ws::WebSocketUpgrade, ConnectInfo, State},
    response::{
        sse::{Event, KeepAlive, Sse},
        Response,
    },
    Extension,
};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::{
    chat::{chat_event, check_chat, error_event},
    json::ApiJson,
    socket::{read_start, relay, upgrade, Socket},
};
use crate::{
    error::AppError,
    inference::{
        workers::{PromptInput, Reply},
        ResolvedSampling,
    },
    state::{App, AppState},
    types::{ChatEvent, ChatMessage, ChatRequest, CompareEvent, CompareRequest, SamplingParams},
};

pub const MIN_MODELS: usize = 2;
pub const MAX_MODELS: usize = 4;

/// The body of `POST /api/compare`: the chat fields, flat as in the OpenAI API.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareBody {
    models: Vec<String>,
    messages: Vec<ChatMessage>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<u32>,
    repeat_penalty: Option<f32>,
    max_tokens: Option<u32>,
    seed: Option<u64>,
    /// Run all models at the same time instead of one after another.
    #[serde(default)]
    together: bool,
}

impl From<CompareBody> for CompareRequest {
    fn from(body: CompareBody) -> Self {
        CompareRequest {
            models: body.models,
            messages: body.messages,
            sampling: SamplingParams {
                temperature: body.temperature,
                top_p: body.top_p,
                top_k: body.top_k,
                repeat_penalty: body.repeat_penalty,
                max_tokens: body.max_tokens,
                seed: body.seed,
                cache_prompt: None,
                ignore_eos: None,
                response_format: None,
                stop: None,
                logprobs: None,
            },
            together: body.together,
        }
    }
}

struct Slot {
    index: usize,
    model: String,
    messages: Vec<ChatMessage>,
    sampling: ResolvedSampling,
}

/// A checked comparison, ready to run.
pub struct Plan {
    slots: Vec<Slot>,
    together: bool,
}

/// Checks every slot before anything streams, so a bad model id is a plain 404, not an event.
pub fn plan(app: &App, request: CompareRequest) -> Result<Plan, AppError> {
    if !(MIN_MODELS..=MAX_MODELS).contains(&request.models.len()) {
        return Err(AppError::BadRequest(format!(
            "`models` must name {MIN_MODELS} to {MAX_MODELS} models, got {}",
            request.models.len()
        )));
    }
    let mut sampling = request.sampling;
    // One seed for every slot: the comparison is about the models, not the dice.
    if sampling.seed.is_none() {
        sampling.seed = Some(u64::from(rand::random::<u32>()));
    }
    let slots = request
        .models
        .into_iter()
        .enumerate()
        .map(|(index, model)| {
            let request = ChatRequest {
                model,
                messages: request.messages.clone(),
                sampling: sampling.clone(),
                conversation_id: None,
                parent_id: None,
                reply_to: None,
            };
            let resolved = check_chat(app, &request)?;
            Ok(Slot {
                index,
                model: request.model,
                messages: request.messages,
                sampling: resolved,
            })
        })
        .collect::<Result<_, AppError>>()?;
    Ok(Plan {
        slots,
        together: request.together,
    })
}

/// Resolves once the comparison is asked to stop (or nobody can ask any more).
async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    // The borrow the wait returns is dropped here, not held across another await.
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

/// Runs one slot to its end, forwarding its events; `false` when the client has gone.
async fn run_slot(
    app: &App,
    slot: &Slot,
    mut stop: watch::Receiver<bool>,
    out: &mpsc::Sender<CompareEvent>,
) -> bool {
    let tagged = |event: ChatEvent| CompareEvent::Slot {
        slot: slot.index,
        model: slot.model.clone(),
        event,
    };
    let stopped_first = *stop.borrow();
    if stopped_first {
        let skipped = CompareEvent::Skipped {
            slot: slot.index,
            model: slot.model.clone(),
        };
        return out.send(skipped).await.is_ok();
    }
    let submitted = app.pool.submit(
        &slot.model,
        PromptInput::Chat(slot.messages.clone()),
        slot.sampling.clone(),
        Instant::now(),
    );
    let mut generation = match submitted {
        Ok(generation) => generation,
        Err(e) => return out.send(tagged(error_event(&e))).await.is_ok(),
    };
    let mut stopped = false;
    loop {
        tokio::select! {
            reply = generation.replies.recv() => {
                // Ended without a last event: stopped while it still waited in the queue.
                let Some(reply) = reply else {
                    let skipped = CompareEvent::Skipped {
                        slot: slot.index,
                        model: slot.model.clone(),
                    };
                    return out.send(skipped).await.is_ok();
                };
                let last = matches!(reply, Reply::Done(_) | Reply::Failed(_));
                if out.send(tagged(chat_event(reply))).await.is_err() {
                    return false; // dropping `generation` stops the model
                }
                if last {
                    return true;
                }
            }
            _ = stop_requested(&mut stop), if !stopped => {
                stopped = true;
                generation.stop();
            }
        }
    }
}

/// Runs the plan, sending every slot's events and then `End`; `stop` set to true stops the
/// running slots and skips those not started.
pub async fn run(
    app: Arc<App>,
    plan: Plan,
    stop: watch::Receiver<bool>,
    out: mpsc::Sender<CompareEvent>,
) {
    if plan.together {
        let runs = plan
            .slots
            .iter()
            .map(|slot| run_slot(&app, slot, stop.clone(), &out));
        futures::future::join_all(runs).await;
    } else {
        for slot in &plan.slots {
            if !run_slot(&app, slot, stop.clone(), &out).await {
                return;
            }
        }
    }
    let _ = out
        .send(CompareEvent::End {
            together: plan.together,
        })
        .await;
}

fn sse(event: CompareEvent, together: bool) -> Event {
    let (name, mut data) = match event {
        CompareEvent::Slot { slot, model, event } => {
            let (name, data) = match event {
                ChatEvent::Queued { ahead, loading } => {
                    ("queued", json!({ "ahead": ahead, "loading": loading }))
                }
                ChatEvent::Token { text, .. } => ("token", json!({ "text": text })),
                ChatEvent::Done { metrics } => ("metrics", json!({ "metrics": metrics })),
                ChatEvent::Error { status, message } => {
                    ("error", json!({ "status": status, "message": message }))
                }
                ChatEvent::Saved { .. } => ("saved", json!({})),
            };
            let mut data = data;
            data["slot"] = json!(slot);
            data["model"] = json!(model);
            (name, data)
        }
        CompareEvent::Skipped { slot, model } => {
            ("skipped", json!({ "slot": slot, "model": model }))
        }
        CompareEvent::Failed { event } => ("error", json!(event)),
        CompareEvent::End { .. } => return Event::default().event("end").data("{}"),
    };
    data["together"] = json!(together);
    Event::default().event(name).data(data.to_string())
}

/// `POST /api/compare`: one SSE stream of every slot's events, then `end`.
pub async fn compare(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CompareBody>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    let plan = plan(&state.app, body.into())?;
    let together = plan.together;
    let (out, events) = mpsc::channel::<CompareEvent>(64);
    // Nothing stops an SSE comparison but the client leaving, which closes `events`.
    let (keep, stop) = watch::channel(false);
    tokio::spawn(async move {
        run(state.app.clone(), plan, stop, out).await;
        drop(keep);
    });
    let stream = ReceiverStream::new(events).map(move |event| Ok(sse(event, together)));
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// `GET /ws/compare`: `{"start": CompareRequest}`, then maybe `"stop"` (stops every slot).
pub async fn compare_socket(
    State(state): State<AppState>,
    client: Option<Extension<ConnectInfo<std::net::SocketAddr>>>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    let app = state.app.clone();
    upgrade(&state.app, client, ws, move |socket| session(app, socket))
}

async fn session(app: Arc<App>, socket: Socket) {
    let refusal = |e: &AppError| CompareEvent::Failed {
        event: error_event(e),
    };
    let started = read_start(socket, |request| plan(&app, request), refusal).await;
    let Some((socket, plan)) = started else {
        return;
    };
    let (out, events) = mpsc::channel::<CompareEvent>(64);
    let (stop_tx, stop) = watch::channel(false);
    let running = tokio::spawn(run(app.clone(), plan, stop, out));
    relay::<CompareRequest, _>(
        socket,
        events,
        stop_tx,
        |event| matches!(event, CompareEvent::End { .. }),
        running,
    )
    .await;
}
