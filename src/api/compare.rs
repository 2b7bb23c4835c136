//! `POST /api/compare`: one prompt to 2–4 models, their replies multiplexed into one SSE stream.
//! By default the models run one after another, each with the machine to itself (on two cores
//! concurrent runs slow each other down and the figures would lie); `"together": true` runs
//! them at once and says so in every event.

use std::{convert::Infallible, time::Instant};

use axum::{
    extract::State,
    response::sse::{Event, KeepAlive, Sse},
};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{chat::check_chat, json::ApiJson};
use crate::{
    error::AppError,
    inference::ResolvedSampling,
    state::{App, AppState},
    types::{ChatEvent, ChatMessage, ChatRequest, SamplingParams},
};

pub const MIN_MODELS: usize = 2;
pub const MAX_MODELS: usize = 4;

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

struct Slot {
    index: usize,
    model: String,
    messages: Vec<ChatMessage>,
    sampling: ResolvedSampling,
}

/// Checks every slot before anything streams, so a bad model id is a plain 404, not an event.
fn plan(app: &App, body: CompareBody) -> Result<Vec<Slot>, AppError> {
    if !(MIN_MODELS..=MAX_MODELS).contains(&body.models.len()) {
        return Err(AppError::BadRequest(format!(
            "`models` must name {MIN_MODELS} to {MAX_MODELS} models, got {}",
            body.models.len()
        )));
    }
    let mut sampling = SamplingParams {
        temperature: body.temperature,
        top_p: body.top_p,
        top_k: body.top_k,
        repeat_penalty: body.repeat_penalty,
        max_tokens: body.max_tokens,
        seed: body.seed,
    };
    // One seed for every slot: the comparison is about the models, not the dice.
    if sampling.seed.is_none() {
        sampling.seed = Some(u64::from(rand::random::<u32>()));
    }
    body.models
        .into_iter()
        .enumerate()
        .map(|(index, model)| {
            let request = ChatRequest {
                model,
                messages: body.messages.clone(),
                sampling: sampling.clone(),
                conversation_id: None,
            };
            let resolved = check_chat(app, &request)?;
            Ok(Slot {
                index,
                model: request.model,
                messages: request.messages,
                sampling: resolved,
            })
        })
        .collect()
}

fn tagged(slot: &Slot, together: bool, event: &ChatEvent) -> Event {
    let mut data = match event {
        ChatEvent::Token { text } => json!({ "text": text }),
        ChatEvent::Done { metrics } => json!({ "metrics": metrics }),
        ChatEvent::Error { status, message } => json!({ "status": status, "message": message }),
        ChatEvent::Saved { .. } => json!({}),
    };
    data["slot"] = json!(slot.index);
    data["model"] = json!(slot.model);
    data["together"] = json!(together);
    let name = match event {
        ChatEvent::Token { .. } => "token",
        ChatEvent::Done { .. } => "metrics",
        ChatEvent::Error { .. } | ChatEvent::Saved { .. } => "error",
    };
    Event::default().event(name).data(data.to_string())
}

/// Runs one slot to its end, forwarding its events; `false` when the client has gone.
async fn run_slot(app: &App, slot: &Slot, together: bool, out: &mpsc::Sender<Event>) -> bool {
    let submitted = app.pool.submit(
        &slot.model,
        slot.messages.clone(),
        slot.sampling.clone(),
        Instant::now(),
    );
    let mut generation = match submitted {
        Ok(generation) => generation,
        Err(e) => {
            let event = ChatEvent::Error {
                status: e.status(),
                message: e.to_string(),
            };
            return out.send(tagged(slot, together, &event)).await.is_ok();
        }
    };
    while let Some(event) = generation.events.recv().await {
        if out.send(tagged(slot, together, &event)).await.is_err() {
            return false; // dropping `generation` stops the model
        }
    }
    true
}

pub async fn compare(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CompareBody>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    let together = body.together;
    let slots = plan(&state.app, body)?;
    let (out, events) = mpsc::channel::<Event>(64);
    let app = state.app.clone();
    tokio::spawn(async move {
        if together {
            let runs = slots.iter().map(|slot| run_slot(&app, slot, true, &out));
            futures::future::join_all(runs).await;
        } else {
            for slot in &slots {
                if !run_slot(&app, slot, false, &out).await {
                    return;
                }
            }
        }
        let _ = out.send(Event::default().event("end").data("{}")).await;
    });
    let stream = ReceiverStream::new(events).map(Ok);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
