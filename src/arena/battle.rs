//! A battle on the server: picks and shuffles two models, runs them together through the
//! Compare orchestration (so Stop, queues and limits behave the same), forwards only their text,
//! stores the battle when both replies are complete, and turns stored votes into the
//! leaderboard.

use std::{collections::HashMap, sync::Arc};

use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use super::{
    rating::{self, Outcome},
    ArenaEvent, Battle, BattleRequest, BattleSide, Leaderboard, LeaderboardRow, MeasuredSpeed,
    Side, Verdict, MAX_PROMPT_CHARS,
};
use crate::{
    api::compare,
    bench::results::push_row,
    error::AppError,
    state::App,
    types::{
        ChatEvent, ChatMessage, CompareEvent, CompareRequest, FinishReason, GenerationMetrics,
        ModelInfo, Role,
    },
};

/// A checked battle, ready to run.
pub struct BattlePlan {
    id: Uuid,
    prompt: String,
    sampling: crate::types::SamplingParams,
    /// Side A's model, then side B's.
    sides: [ModelInfo; 2],
    run: compare::Plan,
}

impl BattlePlan {
    pub fn id(&self) -> Uuid {
        self.id
    }
}

/// The models a battle may pick from: available chat (instruct) models.
fn contenders(app: &App) -> Vec<ModelInfo> {
    crate::api::model_list(app)
        .into_iter()
        .filter(|m| m.available && m.instruct)
        .collect()
}

/// Checks a request and settles everything random about it: the models (when not named), which
/// side each takes, and the seed both share.
pub fn plan(app: &App, request: BattleRequest) -> Result<BattlePlan, AppError> {
    let prompt = request.prompt.trim().to_string();
    if prompt.is_empty() {
        return Err(AppError::BadRequest("`prompt` is empty".into()));
    }
    let chars = prompt.chars().count();
    if chars > MAX_PROMPT_CHARS {
        return Err(AppError::BadRequest(format!(
            "`prompt` has {chars} characters; the arena takes at most {MAX_PROMPT_CHARS}"
        )));
    }
    if request.models.len() > 2 {
        return Err(AppError::BadRequest(format!(
            "`models` names {} models; a battle takes two (or one, or none: the rest are picked \
             at random)",
            request.models.len()
        )));
    }
    if request.models.len() == 2 && request.models[0] == request.models[1] {
        return Err(AppError::BadRequest(
            "`models` names the same model twice; a battle needs two different models".into(),
        ));
    }
    let known = crate::api::model_list(app);
    let mut pair: Vec<ModelInfo> = request
        .models
        .iter()
        .map(|id| {
            known.iter().find(|m| &m.id == id).cloned().ok_or_else(|| {
                AppError::NotFound(format!(
                    "unknown model `{id}`; see GET /api/models for the list"
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    let mut pool: Vec<ModelInfo> = contenders(app)
        .into_iter()
        .filter(|m| !pair.iter().any(|named| named.id == m.id))
        .collect();
    while pair.len() < 2 {
        if pool.is_empty() {
            return Err(AppError::Conflict(format!(
                "the arena needs two available chat models and this server has {}: fetch \
                 another (`quantlab models fetch ID`) or name two models",
                contenders(app).len()
            )));
        }
        pair.push(pool.swap_remove(rand::random_range(0..pool.len())));
    }
    if rand::random::<bool>() {
        pair.swap(0, 1);
    }
    let mut sampling = request.sampling;
    if sampling.seed.is_none() {
        sampling.seed = Some(u64::from(rand::random::<u32>()));
    }
    let run = compare::plan(
        app,
        CompareRequest {
            models: pair.iter().map(|m| m.id.clone()).collect(),
            messages: vec![ChatMessage {
                role: Role::User,
                content: prompt.clone(),
            }],
            sampling: sampling.clone(),
            together: true,
        },
    )?;
    let [a, b]: [ModelInfo; 2] = pair
        .try_into()
        .map_err(|_| AppError::internal("a battle has two sides"))?;
    Ok(BattlePlan {
        id: Uuid::new_v4(),
        prompt,
        sampling,
        sides: [a, b],
        run,
    })
}

/// One side as it streams.
#[derive(Default)]
struct Progress {
    text: String,
    metrics: Option<GenerationMetrics>,
    failure: Option<(u16, String)>,
}

/// Runs the battle, sending its events, and stores it when both replies are complete; `stop`
/// set to true stops both sides (and the battle is then not stored).
pub async fn run(
    app: Arc<App>,
    plan: BattlePlan,
    stop: watch::Receiver<bool>,
    out: mpsc::Sender<ArenaEvent>,
) {
    let id = plan.id.to_string();
    if out
        .send(ArenaEvent::Started { id: id.clone() })
        .await
        .is_err()
    {
        return;
    }
    let (tx, mut events) = mpsc::channel::<CompareEvent>(64);
    let running = tokio::spawn(compare::run(app.clone(), plan.run, stop, tx));
    let mut progress = [Progress::default(), Progress::default()];
    let mut client_here = true;
    while let Some(event) = events.recv().await {
        let forward = match event {
            CompareEvent::Slot { slot, event, .. } => {
                let side = if slot == 0 { Side::A } else { Side::B };
                let Some(seen) = progress.get_mut(slot) else {
                    continue;
                };
                match event {
                    ChatEvent::Queued { ahead, loading } => Some(ArenaEvent::Waiting {
                        side,
                        ahead,
                        loading,
                    }),
                    ChatEvent::Token { text, .. } => {
                        seen.text.push_str(&text);
                        Some(ArenaEvent::Token { side, text })
                    }
                    ChatEvent::Done { metrics } => {
                        seen.metrics = Some(metrics);
                        Some(ArenaEvent::SideDone { side })
                    }
                    ChatEvent::Error { status, message } => {
                        seen.failure = Some((status, message));
                        None
                    }
                    ChatEvent::Saved { .. } => None,
                }
            }
            CompareEvent::Skipped { slot, .. } => {
                if let Some(seen) = progress.get_mut(slot) {
                    seen.failure = Some((499, "stopped before it started".into()));
                }
                None
            }
            CompareEvent::Failed { event } => {
                if let ChatEvent::Error { status, message } = event {
                    progress[0].failure = Some((status, message));
                }
                None
            }
            CompareEvent::End { .. } => break,
        };
        if let Some(event) = forward {
            if out.send(event).await.is_err() {
                // Nobody to vote: stop both models (they stop once their events go nowhere).
                client_here = false;
                break;
            }
        }
    }
    drop(events);
    let _ = running.await;
    let [a, b] = progress;
    let [info_a, info_b] = plan.sides;
    let ending = match finished_sides(a, info_a, b, info_b) {
        Err((status, message)) => ArenaEvent::Abandoned { status, message },
        Ok((a, b)) => {
            let battle = Battle {
                id: id.clone(),
                created_at_ms: crate::storage::now_ms(),
                prompt: plan.prompt,
                sampling: plan.sampling,
                a,
                b,
                verdict: None,
                voted_at_ms: None,
            };
            match app.store(move |s| s.save_battle(&battle)).await {
                Ok(()) => ArenaEvent::Ready { id },
                Err(e) => ArenaEvent::Abandoned {
                    status: e.status(),
                    message: format!("the battle could not be stored: {e}"),
                },
            }
        }
    };
    if client_here {
        let _ = out.send(ending).await;
    }
}

/// Both sides, when both replies are complete; otherwise why the battle cannot be judged.
fn finished_sides(
    a: Progress,
    info_a: ModelInfo,
    b: Progress,
    info_b: ModelInfo,
) -> Result<(BattleSide, BattleSide), (u16, String)> {
    let side = |seen: Progress, info: ModelInfo, label: &str| {
        if let Some((status, message)) = seen.failure {
            return Err((
                status,
                format!("model {label} failed, so the battle was not stored: {message}"),
            ));
        }
        match seen.metrics {
            Some(m) if m.finish_reason == Some(FinishReason::Cancelled) => Err((
                499,
                "the battle was stopped before both replies were complete; it was not stored"
                    .to_string(),
            )),
            Some(metrics) => Ok(BattleSide {
                model: info.id,
                name: info.name,
                reply: seen.text,
                metrics,
            }),
            None => Err((
                499,
                "the battle ended before both replies were complete; it was not stored".to_string(),
            )),
        }
    };
    Ok((side(a, info_a, "A")?, side(b, info_b, "B")?))
}

/// The leaderboard from every stored vote, with each model's speed on this machine.
pub fn leaderboard(app: &App, battles: &[Battle]) -> Leaderboard {
    let voted: Vec<&Battle> = battles.iter().filter(|b| b.verdict.is_some()).collect();
    let outcomes: Vec<Outcome> = voted
        .iter()
        .filter_map(|battle| {
            let score_a = match battle.verdict? {
                Verdict::A => 1.0,
                Verdict::B => 0.0,
                Verdict::Tie | Verdict::Bad => 0.5,
            };
            Some(Outcome {
                a: battle.a.model.clone(),
                b: battle.b.model.clone(),
                score_a,
            })
        })
        .collect();
    let names: HashMap<String, String> = battles
        .iter()
        .flat_map(|b| [&b.a, &b.b])
        .map(|side| (side.model.clone(), side.name.clone()))
        .chain(
            crate::api::model_list(app)
                .into_iter()
                .map(|m| (m.id, m.name)),
        )
        .collect();
    let benched = benchmarked_speeds(app);
    let rows = rating::rate(&outcomes)
        .into_iter()
        .map(|r| LeaderboardRow {
            rank: r.rank,
            name: names
                .get(&r.model)
                .cloned()
                .unwrap_or_else(|| r.model.clone()),
            speed: benched
                .get(&r.model)
                .cloned()
                .or_else(|| battle_speed(battles, &r.model)),
            model: r.model,
            rating: r.rating,
            ci_low: r.ci_low,
            ci_high: r.ci_high,
            battles: r.battles,
            wins: r.wins,
            losses: r.losses,
            ties: r.ties,
        })
        .collect();
    Leaderboard {
        rows,
        votes: voted.len() as u32,
        unvoted: (battles.len() - voted.len()) as u32,
        bootstrap_rounds: rating::BOOTSTRAP_ROUNDS,
        persistence: app.conversations.status(),
    }
}

/// Each model's decode speed and memory from the newest benchmark run that measured it.
fn benchmarked_speeds(app: &App) -> HashMap<String, MeasuredSpeed> {
    let mut runs = app.bench.results.list();
    runs.sort_by_key(|run| std::cmp::Reverse(run.started_at_ms));
    let mut speeds = HashMap::new();
    for run in runs {
        for model in run.models {
            let Some(decode) = model.decode_tok_s.as_ref() else {
                continue;
            };
            speeds
                .entry(model.model.clone())
                .or_insert_with(|| MeasuredSpeed {
                    decode_tok_s: decode.median,
                    resident_bytes: model.resident_bytes,
                    source: "bench".into(),
                });
        }
    }
    speeds
}

/// The median decode speed over a model's battles (where it shared the CPU with its opponent).
fn battle_speed(battles: &[Battle], model: &str) -> Option<MeasuredSpeed> {
    let runs: Vec<&GenerationMetrics> = battles
        .iter()
        .flat_map(|b| [&b.a, &b.b])
        .filter(|side| side.model == model)
        .map(|side| &side.metrics)
        .collect();
    let mut speeds: Vec<f64> = runs
        .iter()
        .map(|m| m.decode_tokens_per_s)
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    if speeds.is_empty() {
        return None;
    }
    speeds.sort_by(f64::total_cmp);
    Some(MeasuredSpeed {
        decode_tok_s: speeds[speeds.len() / 2],
        resident_bytes: runs.iter().map(|m| m.model_resident_bytes).find(|b| *b > 0),
        source: "battles".into(),
    })
}

/// The leaderboard as CSV, one row per model.
pub fn leaderboard_csv(board: &Leaderboard) -> String {
    let mut out = String::new();
    let header = [
        "rank",
        "model",
        "name",
        "rating",
        "ci_low",
        "ci_high",
        "battles",
        "wins",
        "losses",
        "ties",
        "decode_tok_s",
        "resident_bytes",
        "speed_source",
    ];
    push_row(&mut out, &header.map(String::from));
    for r in &board.rows {
        let (speed, memory, source) = match &r.speed {
            Some(s) => (
                format!("{:.2}", s.decode_tok_s),
                s.resident_bytes.map(|b| b.to_string()).unwrap_or_default(),
                s.source.clone(),
            ),
            None => Default::default(),
        };
        let cells = [
            r.rank.to_string(),
            r.model.clone(),
            r.name.clone(),
            format!("{:.1}", r.rating),
            format!("{:.1}", r.ci_low),
            format!("{:.1}", r.ci_high),
            r.battles.to_string(),
            r.wins.to_string(),
            r.losses.to_string(),
            r.ties.to_string(),
            speed,
            memory,
            source,
        ];
        push_row(&mut out, &cells);
    }
    out
}

/// Every voted battle as CSV, one row per battle.
pub fn battles_csv(battles: &[Battle]) -> String {
    let mut out = String::new();
    let header = [
        "id",
        "created_at_ms",
        "voted_at_ms",
        "model_a",
        "model_b",
        "verdict",
        "seed",
        "temperature",
        "prompt",
        "reply_a",
        "reply_b",
    ];
    push_row(&mut out, &header.map(String::from));
    for b in battles.iter().filter(|b| b.verdict.is_some()) {
        let cells = [
            b.id.clone(),
            b.created_at_ms.to_string(),
            b.voted_at_ms.unwrap_or_default().to_string(),
            b.a.model.clone(),
            b.b.model.clone(),
            b.verdict
                .map(Verdict::as_str)
                .unwrap_or_default()
                .to_string(),
            b.sampling.seed.unwrap_or_default().to_string(),
            b.sampling
                .temperature
                .map(|t| t.to_string())
                .unwrap_or_default(),
            b.prompt.clone(),
            b.a.reply.clone(),
            b.b.reply.clone(),
        ];
        push_row(&mut out, &cells);
    }
    out
}
