//! The Compare tab: one prompt to 2–4 models with shared settings and seed, replies side by
//! side with live counters, then a summary table with the best value per column highlighted,
//! shareable as Markdown. Runs one model at a time by default so each has the machine to itself.
//! The server orchestrates the comparison (`/ws/compare`, the same code as `POST /api/compare`);
//! this page sends the request, shows the events, and its Stop stops every running model.

use leptos::prelude::*;

mod summary;

use summary::{markdown_table, Summary};

use super::{
    markdown::render_markdown,
    stream::{request_stop, stream_socket, StopSender},
    widgets::{MetricsLine, TopBar},
};
use crate::{
    api::server_fns::{import_conversation, list_models},
    types::{
        ChatEvent, ChatMessage, CompareEvent, CompareRequest, GenerationMetrics, ModelInfo, Role,
        SamplingParams,
    },
};

const MIN_MODELS: usize = 2;
const MAX_MODELS: usize = 4;

/// One column: a model's reply as it streams.
#[derive(Clone)]
struct Slot {
    model: ModelInfo,
    text: ArcRwSignal<String>,
    pieces: ArcRwSignal<u32>,
    running: ArcRwSignal<bool>,
    metrics: ArcRwSignal<Option<GenerationMetrics>>,
    error: ArcRwSignal<Option<String>>,
    /// Why the slot has not started: waiting behind other requests, or for its model to load.
    waiting: ArcRwSignal<Option<String>>,
}

impl Slot {
    fn new(model: ModelInfo) -> Self {
        Self {
            model,
            text: ArcRwSignal::new(String::new()),
            pieces: ArcRwSignal::new(0),
            running: ArcRwSignal::new(false),
            metrics: ArcRwSignal::new(None),
            error: ArcRwSignal::new(None),
            waiting: ArcRwSignal::new(None),
        }
    }

    /// Shows one of the slot's events.
    fn show(&self, event: ChatEvent) {
        match event {
            ChatEvent::Queued { ahead, loading } => {
                self.running.set(true);
                self.waiting
                    .set(Some(super::chat::waiting_message(ahead, loading)));
            }
            ChatEvent::Token { text, .. } => {
                self.running.set(true);
                self.waiting.set(None);
                self.text.update(|t| t.push_str(&text));
                self.pieces.update(|n| *n += 1);
            }
            ChatEvent::Done { metrics } => {
                self.metrics.set(Some(metrics));
                self.finish();
            }
            ChatEvent::Error { message, .. } => {
                self.error.set(Some(message));
                self.finish();
            }
            ChatEvent::Saved { .. } => {}
        }
    }

    fn finish(&self) {
        self.waiting.set(None);
        self.running.set(false);
    }
}

#[component]
pub fn ComparePage() -> impl IntoView {
    let models = Resource::new(|| (), |_| list_models());
    view! {
        <div class="layout">
            <TopBar active="/compare" />
            <Transition fallback=|| view! { <p class="loading">"Loading models…"</p> }>
                {move || Suspend::new(async move {
                    match models.await {
                        Ok(list) => view! { <CompareWorkspace models=list /> }.into_any(),
                        Err(e) => view! { <p class="error" role="alert">{format!("Cannot list models: {e}")}</p> }.into_any(),
                    }
                })}
            </Transition>
        </div>
    }
}

#[component]
fn CompareWorkspace(models: Vec<ModelInfo>) -> impl IntoView {
    // `/compare?models=a,b&prompt=…` fills the form (a link someone shared).
    let (named, asked) = super::arena::prefill();
    let chosen = RwSignal::new(
        named
            .into_iter()
            .filter(|id| models.iter().any(|m| &m.id == id && m.available))
            .take(MAX_MODELS)
            .collect::<Vec<_>>(),
    );
    let prompt = RwSignal::new(
        asked.unwrap_or_else(|| "Explain in two sentences why the sky is blue.".to_string()),
    );
    let temperature = RwSignal::new(0.7f32);
    let max_tokens = RwSignal::new(128u32);
    let seed = RwSignal::new(42u64);
    let together = RwSignal::new(false);
    let slots = RwSignal::new(Vec::<Slot>::new());
    let running = RwSignal::new(false);
    let ran_together = RwSignal::new(false);
    let stop_sender = StoredValue::new(None::<StopSender>);
    let saved = RwSignal::new(None::<Result<String, String>>);
    let models = StoredValue::new(models);

    let toggle = move |id: String, on: bool| {
        chosen.update(|list| {
            list.retain(|m| *m != id);
            if on {
                list.push(id);
            }
        })
    };
    let can_run = move || {
        let n = chosen.with(Vec::len);
        !running.get()
            && (MIN_MODELS..=MAX_MODELS).contains(&n)
            && !prompt.with(|p| p.trim().is_empty())
    };
    let run = move |_| {
        if !can_run() {
            return;
        }
        let picked: Vec<Slot> = chosen
            .get_untracked()
            .iter()
            .filter_map(|id| models.with_value(|all| all.iter().find(|m| &m.id == id).cloned()))
            .map(Slot::new)
            .collect();
        slots.set(picked.clone());
        saved.set(None);
        running.set(true);
        ran_together.set(together.get_untracked());
        let request = CompareRequest {
            models: picked.iter().map(|slot| slot.model.id.clone()).collect(),
            messages: vec![ChatMessage {
                role: Role::User,
                content: prompt.get_untracked(),
            }],
            sampling: SamplingParams {
                temperature: Some(temperature.get_untracked()),
                max_tokens: Some(max_tokens.get_untracked()),
                seed: Some(seed.get_untracked()),
                ..Default::default()
            },
            together: together.get_untracked(),
        };
        leptos::task::spawn_local(async move {
            let outcome = stream_socket("/ws/compare", request, stop_sender, |event| {
                match event {
                    CompareEvent::Slot { slot, event, .. } => {
                        if let Some(column) = picked.get(slot) {
                            column.show(event);
                        }
                    }
                    CompareEvent::Skipped { slot, .. } => {
                        if let Some(column) = picked.get(slot) {
                            column
                                .error
                                .set(Some("Not run: the comparison was stopped first.".into()));
                            column.finish();
                        }
                    }
                    CompareEvent::Failed { event } => {
                        if let ChatEvent::Error { message, .. } = event {
                            for column in &picked {
                                column.error.set(Some(message.clone()));
                            }
                        }
                        return false;
                    }
                    CompareEvent::End { .. } => return false,
                }
                true
            })
            .await;
            if let Err(e) = outcome {
                for column in picked
                    .iter()
                    .filter(|c| c.metrics.get_untracked().is_none())
                {
                    column.error.set(Some(e.clone()));
                }
            }
            for column in &picked {
                column.finish();
            }
            running.set(false);
        });
    };
    let stop = move |_| request_stop(stop_sender);

    let set_max_tokens = move |ev: leptos::ev::Event| {
        if let Ok(v) = event_target_value(&ev).parse::<u32>() {
            max_tokens.set(v.clamp(1, 4096));
        }
    };
    let set_seed = move |ev: leptos::ev::Event| {
        if let Ok(v) = event_target_value(&ev).parse::<u64>() {
            seed.set(v.min(u64::from(u32::MAX)));
        }
    };

    // Saves the prompt and every finished reply (with its provenance) as one conversation.
    let save = move |_| {
        let question = prompt.get_untracked();
        let replies: Vec<serde_json::Value> = slots.with_untracked(|list| {
            list.iter()
                .filter_map(|s| {
                    let metrics = s.metrics.get_untracked()?;
                    Some(serde_json::json!({
                        "role": "assistant",
                        "content": s.text.get_untracked(),
                        "model": s.model.id,
                        "engine": metrics.engine,
                        "sampling": { "temperature": temperature.get_untracked(), "max_tokens": max_tokens.get_untracked(), "seed": metrics.seed },
                        "interrupted": metrics.finish_reason == Some(crate::types::FinishReason::Cancelled),
                        "metrics": metrics,
                    }))
                })
                .collect()
        });
        let title: String = format!("Compare: {}", question.trim())
            .chars()
            .take(80)
            .collect();
        let mut messages = vec![serde_json::json!({ "role": "user", "content": question })];
        messages.extend(replies);
        let body = serde_json::json!({ "title": title, "messages": messages }).to_string();
        leptos::task::spawn_local(async move {
            saved.set(Some(
                import_conversation(body)
                    .await
                    .map(|c| c.title)
                    .map_err(|e| e.to_string()),
            ));
        });
    };

    let finished = move || {
        slots.with(|list| {
            list.iter()
                .filter_map(|s| s.metrics.get().map(|m| (s.model.clone(), m)))
                .collect::<Vec<_>>()
        })
    };

    view! {
        <main class="compare">
            <section class="compare-form" aria-label="Comparison settings">
                <fieldset class="compare-models">
                    <legend>{format!("Models ({MIN_MODELS}–{MAX_MODELS})")}</legend>
                    {models.get_value().into_iter().map(|m| {
                        let id = m.id.clone();
                        let checked_id = m.id.clone();
                        let label = format!("{} · {} · {}", m.name, m.quantization, m.engine.label());
                        view! {
                            <label class="model-choice" class:unavailable=!m.available title=m.reason.clone().unwrap_or_default()>
                                <input type="checkbox" data-testid=format!("choose-{}", m.id) disabled=!m.available
                                    prop:checked=move || chosen.with(|c| c.contains(&checked_id))
                                    on:change=move |ev| toggle(id.clone(), event_target_checked(&ev)) />
                                {label}
                                {(!m.available).then(|| view! { <span class="hint">" (unavailable)"</span> })}
                            </label>
                        }
                    }).collect_view()}
                </fieldset>
                <label class="compare-prompt">"Prompt"
                    <textarea rows="3" data-testid="compare-prompt" prop:value=move || prompt.get()
                        on:input=move |ev| prompt.set(event_target_value(&ev))></textarea>
                </label>
                <div class="compare-settings">
                    <label>"Temperature " <output>{move || format!("{:.2}", temperature.get())}</output>
                        <input type="range" min="0" max="2" step="0.05" prop:value=move || temperature.get().to_string()
                            on:input=move |ev| if let Ok(v) = event_target_value(&ev).parse() { temperature.set(v) } />
                    </label>
                    <label>"Max new tokens"
                        <input type="number" min="1" max="4096" data-testid="compare-max-tokens" prop:value=move || max_tokens.get().to_string()
                            on:change=set_max_tokens />
                    </label>
                    <label>"Seed (shared)"
                        <input type="number" min="0" max="4294967295" prop:value=move || seed.get().to_string()
                            on:change=set_seed />
                    </label>
                </div>
                <div class="compare-mode" role="radiogroup" aria-label="How to run">
                    <label><input type="radio" name="mode" checked=true on:change=move |_| together.set(false) />
                        " One after another (fair: each model has the machine to itself)"</label>
                    <label><input type="radio" name="mode" data-testid="mode-together" on:change=move |_| together.set(true) />
                        " Together (faster overall; the models share the CPU, so their speeds are lower)"</label>
                </div>
                <div class="compare-actions">
                    <Show when=move || running.get()
                        fallback=move || view! {
                            <button class="send" data-testid="compare-run" disabled=move || !can_run() on:click=run>
                                {move || if slots.with(Vec::is_empty) { "Compare" } else { "Run again (same seed)" }}
                            </button>
                        }>
                        <button class="stop" data-testid="compare-stop" on:click=stop>"Stop"</button>
                    </Show>
                </div>
            </section>

            <section class="compare-grid" data-testid="compare-grid" aria-live="polite">
                <For
                    each=move || slots.get().into_iter().enumerate()
                    key=|(i, s)| (*i, s.model.id.clone())
                    children=|(_, column)| view! { <SlotCard column /> }
                />
            </section>

            {move || {
                let rows = finished();
                (!rows.is_empty()).then(|| {
                    let table = markdown_table(&rows, ran_together.get());
                    view! {
                        <Summary rows together=ran_together.get() markdown=table />
                        <div class="compare-save">
                            <button class="new-conversation" data-testid="compare-save" disabled=move || running.get() on:click=save>
                                "Save to conversations"
                            </button>
                            {move || saved.get().map(|r| match r {
                                Ok(title) => view! { <span class="saved" data-testid="compare-saved">{format!("✓ saved as “{title}”")}</span> }.into_any(),
                                Err(e) => view! { <span class="error" role="alert">{e}</span> }.into_any(),
                            })}
                        </div>
                    }
                })
            }}
        </main>
    }
}

#[component]
fn SlotCard(column: Slot) -> impl IntoView {
    let Slot {
        model,
        text,
        pieces,
        running,
        metrics,
        error,
        waiting,
    } = column;
    let live = {
        let (pieces, running) = (pieces.clone(), running.clone());
        move || {
            let n = pieces.get();
            if running.get() && n > 0 {
                format!("streaming… {n} pieces")
            } else if running.get() {
                String::new()
            } else if n == 0 {
                "waiting".to_string()
            } else {
                String::new()
            }
        }
    };
    view! {
        <article class="compare-card" data-testid="compare-card" class:running=move || running.get()>
            <header>
                <strong>{model.name.clone()}</strong>
                <span class="hint">{format!("{} · {} · {} bits/weight", model.quantization, model.engine.label(), model.bits_per_weight)}</span>
            </header>
            <p class="hint live" data-testid="live">{live}</p>
            {move || waiting.get().map(|w| view! { <p class="hint waiting" data-testid="waiting">{w}</p> })}
            <div class="md" inner_html=move || render_markdown(&text.get())></div>
            {move || error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
            {move || metrics.get().map(|m| view! { <MetricsLine metrics=m /> })}
        </article>
    }
}
