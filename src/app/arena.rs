//! The Arena tab: one prompt, two anonymous models side by side (picked at random unless the
//! person names them), a vote, and only then the names, engines and figures. Below, the
//! leaderboard every stored vote makes, with export links. The server runs the battle
//! (`/ws/arena`) and never sends a name or a speed before the vote.

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

use super::{
    markdown::render_markdown,
    stream::{request_stop, stream_socket, StopSender},
    widgets::{format_bytes, MetricsLine, TopBar},
};
use crate::{
    api::{
        arena_fns::{arena_leaderboard, arena_vote},
        server_fns::list_models,
    },
    arena::{ArenaEvent, Battle, BattleRequest, BattleSide, Leaderboard, Side, Verdict},
    types::{ModelInfo, SamplingParams},
};

const RANDOM: &str = "";

/// One anonymous column as it streams.
#[derive(Clone)]
struct Column {
    text: RwSignal<String>,
    running: RwSignal<bool>,
    waiting: RwSignal<Option<String>>,
    /// Filled in by the vote.
    revealed: RwSignal<Option<BattleSide>>,
}

impl Column {
    fn new() -> Self {
        Self {
            text: RwSignal::new(String::new()),
            running: RwSignal::new(false),
            waiting: RwSignal::new(None),
            revealed: RwSignal::new(None),
        }
    }

    fn reset(&self) {
        self.text.set(String::new());
        self.running.set(true);
        self.waiting.set(None);
        self.revealed.set(None);
    }

    fn finish(&self) {
        self.running.set(false);
        self.waiting.set(None);
    }
}

/// Where a battle is.
#[derive(Clone, Debug, PartialEq)]
enum Stage {
    Idle,
    Running,
    /// Stored, waiting for the vote.
    Ready(String),
    Voting(String),
    Revealed(Verdict),
    Failed(String),
}

#[component]
pub fn ArenaPage() -> impl IntoView {
    let models = Resource::new(|| (), |_| list_models());
    view! {
        <div class="layout">
            <TopBar active="/arena" />
            <Transition fallback=|| view! { <p class="loading">"Loading models…"</p> }>
                {move || Suspend::new(async move {
                    match models.await {
                        Ok(list) => view! { <ArenaWorkspace models=list /> }.into_any(),
                        Err(e) => view! { <p class="error" role="alert">{format!("Cannot list models: {e}")}</p> }.into_any(),
                    }
                })}
            </Transition>
        </div>
    }
}

/// `?models=a,b&prompt=…` as the form's first values.
pub(super) fn prefill() -> (Vec<String>, Option<String>) {
    let query = use_query_map().get_untracked();
    let models = query
        .get("models")
        .map(|list| {
            list.split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    (models, query.get("prompt"))
}

#[component]
fn ArenaWorkspace(models: Vec<ModelInfo>) -> impl IntoView {
    let contenders: Vec<ModelInfo> = models
        .into_iter()
        .filter(|m| m.available && m.instruct)
        .collect();
    let (named, asked) = prefill();
    let pick = |i: usize| {
        named
            .get(i)
            .filter(|id| contenders.iter().any(|m| &m.id == *id))
            .cloned()
            .unwrap_or_default()
    };
    let first = RwSignal::new(pick(0));
    let second = RwSignal::new(pick(1));
    let prompt = RwSignal::new(
        asked.unwrap_or_else(|| "Write a haiku about a small computer that thinks.".to_string()),
    );
    let temperature = RwSignal::new(0.7f32);
    let max_tokens = RwSignal::new(128u32);
    let stage = RwSignal::new(Stage::Idle);
    let battle_id = RwSignal::new(None::<String>);
    let vote_error = RwSignal::new(None::<String>);
    let columns = [Column::new(), Column::new()];
    let stop_sender = StoredValue::new(None::<StopSender>);
    let board_version = RwSignal::new(0u32);
    let board = Resource::new(move || board_version.get(), |_| arena_leaderboard());
    let enough = contenders.len() >= 2;
    let contenders = StoredValue::new(contenders);

    let chosen = move || {
        [first.get(), second.get()]
            .into_iter()
            .filter(|m| m != RANDOM)
            .collect::<Vec<_>>()
    };
    let same_twice = move || {
        let c = chosen();
        c.len() == 2 && c[0] == c[1]
    };
    let can_start = move || {
        enough
            && !matches!(stage.get(), Stage::Running | Stage::Voting(_))
            && !same_twice()
            && !prompt.with(|p| p.trim().is_empty())
    };

    let start = {
        let columns = columns.clone();
        move |_| {
            if !can_start() {
                return;
            }
            for column in &columns {
                column.reset();
            }
            battle_id.set(None);
            vote_error.set(None);
            stage.set(Stage::Running);
            let request = BattleRequest {
                prompt: prompt.get_untracked(),
                models: chosen(),
                sampling: SamplingParams {
                    temperature: Some(temperature.get_untracked()),
                    max_tokens: Some(max_tokens.get_untracked()),
                    ..Default::default()
                },
            };
            let columns = columns.clone();
            leptos::task::spawn_local(async move {
                let column = |side: Side| match side {
                    Side::A => &columns[0],
                    Side::B => &columns[1],
                };
                let outcome = stream_socket("/ws/arena", request, stop_sender, |event| {
                    match event {
                        ArenaEvent::Started { id } => battle_id.set(Some(id)),
                        ArenaEvent::Waiting {
                            side,
                            ahead,
                            loading,
                        } => column(side)
                            .waiting
                            .set(Some(super::chat::waiting_message(ahead, loading))),
                        ArenaEvent::Token { side, text } => {
                            let c = column(side);
                            c.waiting.set(None);
                            c.text.update(|t| t.push_str(&text));
                        }
                        ArenaEvent::SideDone { side } => column(side).finish(),
                        ArenaEvent::Ready { id } => {
                            stage.set(Stage::Ready(id));
                            return false;
                        }
                        ArenaEvent::Abandoned { message, .. } => {
                            stage.set(Stage::Failed(message));
                            return false;
                        }
                    }
                    true
                })
                .await;
                if let Err(e) = outcome {
                    stage.set(Stage::Failed(e));
                } else if stage.get_untracked() == Stage::Running {
                    stage.set(Stage::Failed(
                        "The battle ended before both replies were complete.".into(),
                    ));
                }
                for c in &columns {
                    c.finish();
                }
            });
        }
    };
    let stop = move |_| request_stop(stop_sender);

    let vote = {
        let columns = columns.clone();
        move |verdict: Verdict| {
            let Stage::Ready(id) = stage.get_untracked() else {
                return;
            };
            stage.set(Stage::Voting(id.clone()));
            vote_error.set(None);
            let columns = columns.clone();
            leptos::task::spawn_local(async move {
                match arena_vote(id.clone(), verdict).await {
                    Ok(Battle { a, b, .. }) => {
                        columns[0].revealed.set(Some(a));
                        columns[1].revealed.set(Some(b));
                        stage.set(Stage::Revealed(verdict));
                        board_version.update(|v| *v += 1);
                    }
                    Err(e) => {
                        // Nothing was recorded: the vote can be given again.
                        vote_error.set(Some(format!("The vote was not recorded: {e}")));
                        stage.set(Stage::Ready(id));
                    }
                }
            });
        }
    };

    let model_select = move |label: &'static str, testid: &'static str, value: RwSignal<String>| {
        view! {
            <label>{label}
                <select data-testid=testid prop:value=move || value.get()
                    on:change=move |ev| value.set(event_target_value(&ev))>
                    <option value=RANDOM>"Random"</option>
                    {contenders.get_value().into_iter().map(|m| {
                        let text = format!("{} · {}", m.name, m.quantization);
                        let selected = m.id == value.get_untracked();
                        view! { <option value=m.id.clone() selected=selected>{text}</option> }
                    }).collect_view()}
                </select>
            </label>
        }
    };

    let set_max_tokens = move |ev: leptos::ev::Event| {
        if let Ok(v) = event_target_value(&ev).parse::<u32>() {
            max_tokens.set(v.clamp(1, 4096));
        }
    };

    let [column_a, column_b] = columns;
    view! {
        <main class="compare arena">
            <section class="compare-form" aria-label="Battle settings">
                <p class="hint">"Two models answer without their names. Vote for the better answer; the names, engines and speeds appear after the vote, and the vote counts toward the leaderboard below."</p>
                {(!enough).then(|| view! {
                    <p class="error" role="alert">"The arena needs two available chat models; fetch another one (quantlab models fetch ID)."</p>
                })}
                <label class="compare-prompt">"Prompt"
                    <textarea rows="3" data-testid="arena-prompt" prop:value=move || prompt.get()
                        on:input=move |ev| prompt.set(event_target_value(&ev))></textarea>
                </label>
                <div class="compare-settings">
                    {model_select("First model", "arena-model-1", first)}
                    {model_select("Second model", "arena-model-2", second)}
                    <label>"Temperature " <output>{move || format!("{:.2}", temperature.get())}</output>
                        <input type="range" min="0" max="2" step="0.05" prop:value=move || temperature.get().to_string()
                            on:input=move |ev| if let Ok(v) = event_target_value(&ev).parse() { temperature.set(v) } />
                    </label>
                    <label>"Max new tokens"
                        <input type="number" min="1" max="4096" data-testid="arena-max-tokens" prop:value=move || max_tokens.get().to_string()
                            on:change=set_max_tokens />
                    </label>
                </div>
                {move || same_twice().then(|| view! { <p class="hint">"Pick two different models (or leave one on Random)."</p> })}
                <div class="compare-actions">
                    <Show when=move || stage.get() == Stage::Running
                        fallback=move || view! {
                            <button class="send" data-testid="arena-start" disabled=move || !can_start() on:click=start.clone()>
                                {move || if stage.get() == Stage::Idle { "Start battle" } else { "New battle" }}
                            </button>
                        }>
                        <button class="stop" data-testid="arena-stop" on:click=stop>"Stop"</button>
                    </Show>
                </div>
            </section>

            <section class="compare-grid" aria-live="polite">
                <SideCard label="A" testid="arena-side-a" column=column_a />
                <SideCard label="B" testid="arena-side-b" column=column_b />
            </section>

            {move || match stage.get() {
                Stage::Ready(_) | Stage::Voting(_) => {
                    let voting = matches!(stage.get(), Stage::Voting(_));
                    let vote = vote.clone();
                    let button = move |verdict: Verdict, text: &'static str| {
                        let vote = vote.clone();
                        view! {
                            <button class="vote" data-testid=format!("vote-{}", verdict.as_str()) disabled=voting
                                on:click=move |_| vote(verdict)>{text}</button>
                        }
                    };
                    view! {
                        <section class="arena-vote" aria-label="Vote">
                            <strong>"Which answer is better?"</strong>
                            {button(Verdict::A, "A is better")}
                            {button(Verdict::B, "B is better")}
                            {button(Verdict::Tie, "Tie")}
                            {button(Verdict::Bad, "Both are bad")}
                            {move || vote_error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
                        </section>
                    }.into_any()
                }
                Stage::Revealed(verdict) => view! {
                    <p class="saved arena-voted" data-testid="arena-voted">
                        {format!("✓ Vote recorded: {}. ", verdict_text(verdict))}
                        {move || battle_id.get().map(|id| view! {
                            <a href=format!("/api/arena/battles/{id}") target="_blank">"This battle as JSON"</a>
                        })}
                    </p>
                }.into_any(),
                Stage::Failed(message) => view! { <p class="error" role="alert" data-testid="arena-error">{message}</p> }.into_any(),
                Stage::Idle | Stage::Running => ().into_any(),
            }}

            <Transition fallback=|| view! { <p class="loading">"Loading the leaderboard…"</p> }>
                {move || Suspend::new(async move {
                    match board.await {
                        Ok(board) => view! { <LeaderboardTable board /> }.into_any(),
                        Err(e) => view! { <p class="error" role="alert">{format!("Cannot read the leaderboard: {e}")}</p> }.into_any(),
                    }
                })}
            </Transition>
        </main>
    }
}

fn verdict_text(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::A => "A is better",
        Verdict::B => "B is better",
        Verdict::Tie => "tie",
        Verdict::Bad => "both are bad",
    }
}

#[component]
fn SideCard(label: &'static str, testid: &'static str, column: Column) -> impl IntoView {
    let Column {
        text,
        running,
        waiting,
        revealed,
    } = column;
    view! {
        <article class="compare-card" data-testid=testid class:running=move || running.get()>
            <header>
                <strong>{format!("Model {label}")}</strong>
                {move || match revealed.get() {
                    Some(side) => view! {
                        <span class="revealed" data-testid="revealed-name">{format!("{} · {}", side.name, side.metrics.engine)}</span>
                    }.into_any(),
                    None => view! { <span class="hint">"hidden until you vote"</span> }.into_any(),
                }}
            </header>
            {move || waiting.get().map(|w| view! { <p class="hint waiting">{w}</p> })}
            <div class="md" data-testid="arena-reply" inner_html=move || render_markdown(&text.get())></div>
            {move || revealed.get().map(|side| view! { <MetricsLine metrics=side.metrics /> })}
        </article>
    }
}

#[component]
fn LeaderboardTable(board: Leaderboard) -> impl IntoView {
    let Leaderboard {
        rows,
        votes,
        unvoted,
        bootstrap_rounds,
        persistence,
    } = board;
    view! {
        <section class="compare-summary arena-board" data-testid="arena-leaderboard">
            <h2>"Leaderboard"</h2>
            <p class="hint">{format!(
                "{votes} vote(s){}. Bradley-Terry ratings on the Elo scale with 95% intervals from {bootstrap_rounds} bootstrap resamples; a rank counts the models whose whole interval lies above. Votes are kept in {}.",
                if unvoted > 0 { format!(", {unvoted} battle(s) awaiting a vote") } else { String::new() },
                persistence.detail,
            )}</p>
            {if rows.is_empty() {
                view! { <p class="hint" data-testid="arena-empty">"No votes yet: start a battle above."</p> }.into_any()
            } else {
                view! {
                    <div class="table-wrap">
                        <table>
                            <thead><tr>
                                <th>"Rank"</th><th>"Model"</th><th>"Rating"</th><th>"95% interval"</th>
                                <th>"Battles"</th><th>"W / L / T"</th><th>"Decode tok/s"</th><th>"Memory"</th>
                            </tr></thead>
                            <tbody>
                                {rows.into_iter().map(|r| {
                                    let (speed, memory) = match &r.speed {
                                        Some(s) => (
                                            format!("{:.1} ({})", s.decode_tok_s, s.source),
                                            s.resident_bytes.map(format_bytes).unwrap_or_else(|| "—".into()),
                                        ),
                                        None => ("—".into(), "—".into()),
                                    };
                                    view! {
                                        <tr data-testid="arena-row" data-model=r.model.clone()>
                                            <td>{r.rank}</td>
                                            <th scope="row">{r.name}</th>
                                            <td>{format!("{:.0}", r.rating)}</td>
                                            <td>{format!("{:.0} – {:.0}", r.ci_low, r.ci_high)}</td>
                                            <td data-testid="arena-battles">{r.battles}</td>
                                            <td>{format!("{} / {} / {}", r.wins, r.losses, r.ties)}</td>
                                            <td>{speed}</td>
                                            <td>{memory}</td>
                                        </tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table>
                    </div>
                }.into_any()
            }}
            <p class="hint">"Speeds: (bench) from the newest benchmark run, the model alone on the machine; (battles) the median over its battles, sharing the CPU with its opponent."</p>
            <p class="exports">"Export: "
                <a href="/api/arena/leaderboard?format=csv" download>"leaderboard CSV"</a>" · "
                <a href="/api/arena/leaderboard" target="_blank">"leaderboard JSON"</a>" · "
                <a href="/api/arena/battles?format=csv" download>"votes CSV"</a>" · "
                <a href="/api/arena/battles" target="_blank">"votes JSON"</a>
            </p>
        </section>
    }
}
