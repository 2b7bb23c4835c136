//! The Models page: every model with its state, size on disk, source and licence; download,
//! verify (sha256), quantize (llama.cpp's types), add a GGUF from the hub (`add`) and delete
//! from the browser; NER and OCR models below (`folders`). Jobs run in the server, so the page
//! polls while one runs and a reload finds it still going.

mod add;
mod folders;

use std::time::Duration;

use leptos::prelude::*;

use super::widgets::{format_bytes, TopBar};
use crate::{
    api::model_fns::{
        cancel_model_job, delete_model_files, models_page, start_model_fetch, start_model_quantize,
        start_model_verify,
    },
    types::{FolderModelInfo, JobState, ModelInfo, ModelJob, PendingModel, QuantOption},
};

const POLL_EVERY: Duration = Duration::from_millis(600);

/// The page's shared state: the list (refreshed while jobs run) and what the last action said.
#[derive(Clone, Copy)]
struct Shared {
    models: RwSignal<Vec<ModelInfo>>,
    quant_types: RwSignal<Vec<QuantOption>>,
    folders: RwSignal<Vec<FolderModelInfo>>,
    adding: RwSignal<Vec<PendingModel>>,
    notice: RwSignal<Option<String>>,
    error: RwSignal<Option<String>>,
    /// Whether a poll is already scheduled, so actions never start a second loop.
    polling: StoredValue<bool>,
}

impl Shared {
    /// Reads the list again; keeps polling while any job runs.
    fn refresh(self) {
        leptos::task::spawn_local(async move {
            match models_page().await {
                Ok(page) => {
                    let running = page
                        .models
                        .iter()
                        .filter_map(|m| m.job.as_ref())
                        .chain(page.folders.iter().filter_map(|m| m.job.as_ref()))
                        .chain(page.adding.iter().map(|p| &p.job))
                        .any(ModelJob::running);
                    self.models.set(page.models);
                    self.quant_types.set(page.quant_types);
                    self.folders.set(page.folders);
                    self.adding.set(page.adding);
                    if running && !self.polling.get_value() {
                        self.polling.set_value(true);
                        set_timeout(
                            move || {
                                self.polling.set_value(false);
                                self.refresh();
                            },
                            POLL_EVERY,
                        );
                    }
                }
                Err(e) => self.error.set(Some(format!("Cannot read the models: {e}"))),
            }
        });
    }

    /// Runs an action, shows its error or notice, then refreshes the list.
    fn act<F>(self, action: F)
    where
        F: std::future::Future<Output = Result<Option<String>, crate::error::AppError>> + 'static,
    {
        self.error.set(None);
        self.notice.set(None);
        leptos::task::spawn_local(async move {
            match action.await {
                Ok(notice) => self.notice.set(notice),
                Err(e) => self.error.set(Some(e.to_string())),
            }
            self.refresh();
        });
    }
}

#[component]
pub fn ModelsPage() -> impl IntoView {
    let shared = Shared {
        models: RwSignal::new(Vec::new()),
        quant_types: RwSignal::new(Vec::new()),
        folders: RwSignal::new(Vec::new()),
        adding: RwSignal::new(Vec::new()),
        notice: RwSignal::new(None),
        error: RwSignal::new(None),
        polling: StoredValue::new(false),
    };
    // Read in the browser: the list changes while jobs run, and the page polls it.
    Effect::new(move |_| shared.refresh());
    view! {
        <div class="layout">
            <TopBar active="/models" />
            <main class="tool models-page">
                <section class="tool-form" aria-label="About models">
                    <h2 class="models-title">"Models"</h2>
                    <p class="hint">"Download a model, check its sha256, make other quantizations of a GGUF with llama.cpp's quantizer, add a GGUF from the Hugging Face hub, and delete what you no longer need. New models appear in Chat, Compare, Arena and Bench at once; the Bench measures what each bit buys."</p>
                    {move || shared.notice.get().map(|n| view! { <p class="saved" role="status" data-testid="models-notice">{n}</p> })}
                    {move || shared.error.get().map(|e| view! { <p class="error" role="alert" data-testid="models-error">{e}</p> })}
                </section>
                {move || (shared.models.with(Vec::is_empty) && shared.error.with(Option::is_none)).then(|| view! { <p class="loading">"Loading models…"</p> })}
                <add::AddFromHub shared=shared />
                <div class="model-rows">
                    <For each=move || shared.models.get() key=|m| m.id.clone() let:model>
                        <ModelRow id=model.id shared=shared />
                    </For>
                </div>
                <folders::FolderModels shared=shared />
            </main>
        </div>
    }
}

/// A row's name and its state badge.
fn row_head(name: String, state: &'static str, badge: &'static str) -> impl IntoView {
    view! {
        <div class="model-card-head">
            <strong class="wrap">{name}</strong>
            <span class=badge data-testid="model-state">{state}</span>
        </div>
    }
}

fn state_label(model: &ModelInfo) -> (&'static str, &'static str) {
    if model.available && model.loaded {
        return ("Ready · loaded", "badge badge-loaded");
    }
    files_state(model.available, model.on_disk_bytes, model.can_fetch)
}

/// The state of a model's files, and its badge's class.
fn files_state(
    available: bool,
    on_disk_bytes: Option<u64>,
    can_fetch: bool,
) -> (&'static str, &'static str) {
    if available {
        ("Ready", "badge badge-available")
    } else if on_disk_bytes.is_some() {
        ("Incomplete", "badge badge-unavailable")
    } else if can_fetch {
        ("Not downloaded", "badge")
    } else {
        ("Unavailable", "badge badge-unavailable")
    }
}

fn job_line(job: &ModelJob) -> String {
    let what = match (job.kind.as_str(), &job.target) {
        ("quantize", Some(target)) => format!("Quantizing to {target}"),
        ("quantize", None) => "Quantizing".to_string(),
        ("verify", _) => "Checking".to_string(),
        ("add", Some(target)) => format!("Adding {target}"),
        _ => "Downloading".to_string(),
    };
    let amount = match job.fraction() {
        Some(f) if job.total > 100_000 => format!(
            " · {} of {} ({:.0}%)",
            format_bytes(job.done),
            format_bytes(job.total),
            f * 100.0
        ),
        Some(f) => format!(" · {} of {} ({:.0}%)", job.done, job.total, f * 100.0),
        None => String::new(),
    };
    format!("{what}: {}{amount}", job.phase)
}

#[component]
fn ModelRow(id: String, shared: Shared) -> impl IntoView {
    let row_id = id.clone();
    let model = Memo::new(move |_| {
        shared
            .models
            .with(|list| list.iter().find(|m| m.id == row_id).cloned())
    });
    let confirm_delete = RwSignal::new(false);
    let chosen_type = RwSignal::new(String::from("Q8_0"));
    let accept_requantize = RwSignal::new(false);

    let id_fetch = id.clone();
    let fetch = move |_| {
        let id = id_fetch.clone();
        shared.act(async move { start_model_fetch(id).await.map(|()| None) });
    };
    let id_quantize = id.clone();
    let quantize = move |_| {
        let (id, kind) = (id_quantize.clone(), chosen_type.get_untracked());
        let allow = accept_requantize.get_untracked();
        shared.act(async move { start_model_quantize(id, kind, allow).await.map(|()| None) });
    };
    let id_cancel = id.clone();
    let cancel = move |_| {
        let id = id_cancel.clone();
        shared.act(async move {
            cancel_model_job(id).await.map(|stopped| {
                (!stopped).then(|| "Nothing was running: it had already ended.".to_string())
            })
        });
    };
    let id_verify = id.clone();
    let verify = move |_| {
        let id = id_verify.clone();
        shared.act(async move { start_model_verify(id).await.map(|()| None) });
    };
    let id_delete = id.clone();
    let delete = move |_| {
        confirm_delete.set(false);
        let id = id_delete.clone();
        shared.act(async move { delete_model_files(id).await.map(Some) });
    };

    let testid = format!("model-row-{id}");
    view! {
        {move || model.get().map(|m| {
            let (state, badge) = state_label(&m);
            let running = m.job.as_ref().is_some_and(ModelJob::running);
            let size = m.on_disk_bytes.map(|b| format!("{} on disk", format_bytes(b)))
                .or_else(|| m.size_bytes.map(|b| format!("{} to download", format_bytes(b))))
                .unwrap_or_default();
            let deletable = !running && (m.on_disk_bytes.is_some() || m.made_here)
                && !m.source.starts_with("remote");
            let quantized_source = m.quantized_source;
            let source_quant = m.quantization.clone();
            let delete = delete.clone();
            let confirm_text = format!(
                "Delete the weights of {}?{}",
                m.id,
                if m.made_here { " It will leave the list too." } else { "" }
            );
            view! {
                <article class="model-row" data-testid=testid.clone() data-state=state>
                    {row_head(m.name.clone(), state, badge)}
                    <p class="model-facts">
                        <code>{m.id.clone()}</code>
                        {format!(" · {} · {} · {:.2} bits/weight · {} · {}", m.parameters, m.quantization, m.bits_per_weight, m.engine.as_str(), size)}
                        {m.made_here.then(|| view! { " · " <span class="badge">"made here"</span> })}
                    </p>
                    <p class="hint wrap">{format!("Source: {} · Licence: {}", m.source, m.license)}</p>
                    {m.provenance_note.clone().map(|n| view! { <p class="note">{n}</p> })}
                    {(!m.available).then(|| m.reason.clone()).flatten().map(|r| view! { <p class="hint wrap">{r}</p> })}
                    {m.job.clone().map(|job| job_view(&job))}
                    <div class="tool-actions">
                        {running.then(|| view! {
                            <button class="msg-action" data-testid="model-cancel" on:click=cancel.clone()>"Cancel"</button>
                        })}
                        {(!running && m.can_fetch && !m.available).then(|| view! {
                            <button class="send" data-testid="model-fetch" on:click=fetch.clone()>"Download"</button>
                        })}
                        {(!running && m.on_disk_bytes.is_some() && !m.source.starts_with("remote")).then(|| view! {
                            <button class="msg-action" data-testid="model-verify" title="Hash the file and compare it with its published sha256" on:click=verify.clone()>"Verify sha256"</button>
                        })}
                        {(!running && m.can_quantize).then(|| view! {
                            <label class="tool-field">"Quantize to"
                                <select data-testid="model-quantize-type" prop:value=move || chosen_type.get()
                                    on:change=move |ev| chosen_type.set(event_target_value(&ev))>
                                    {move || shared.quant_types.get().into_iter().map(|q| {
                                        let label = q.label.clone();
                                        view! { <option value=label.clone()>{format!("{} (~{:.1} bits)", q.label, q.nominal_bits)}</option> }
                                    }).collect_view()}
                                </select>
                            </label>
                            {quantized_source.then(|| view! {
                                <label class="requantize note">
                                    <input type="checkbox" data-testid="model-requantize" prop:checked=move || accept_requantize.get()
                                        on:change=move |ev| accept_requantize.set(event_target_checked(&ev)) />
                                    {format!(" This file is already {source_quant}: quantizing it again loses quality twice. I accept that.")}
                                </label>
                            })}
                            <button class="send" data-testid="model-quantize"
                                disabled=move || quantized_source && !accept_requantize.get()
                                on:click=quantize.clone()>"Quantize"</button>
                        })}
                        {deletable.then(|| view! {
                            <button class="msg-action" data-testid="model-delete" on:click=move |_| confirm_delete.set(true)>"Delete…"</button>
                        })}
                    </div>
                    {move || confirm_delete.get().then(|| view! {
                        <div class="confirm" role="alertdialog" aria-label="Confirm delete">
                            <span>{confirm_text.clone()}</span>
                            <button class="stop" data-testid="model-delete-confirm" on:click=delete.clone()>"Delete"</button>
                            <button class="msg-action" on:click=move |_| confirm_delete.set(false)>"Keep"</button>
                        </div>
                    })}
                </article>
            }
        })}
    }
}

/// What the job is called in a sentence.
fn job_noun(kind: &str) -> &'static str {
    match kind {
        "quantize" => "quantization",
        "verify" => "sha256 check",
        "add" => "addition",
        _ => "download",
    }
}

fn finished_text(job: &ModelJob) -> String {
    if let Some(message) = &job.message {
        return message.clone();
    }
    match (job.kind.as_str(), &job.made) {
        ("quantize", Some(made)) => {
            format!(
                "Made {made}: it is listed below and offered in Chat, Compare, Arena and Bench."
            )
        }
        ("add", Some(made)) => format!("Added {made}."),
        _ => "Downloaded and verified.".to_string(),
    }
}

fn job_view(job: &ModelJob) -> impl IntoView {
    match job.state {
        JobState::Running => {
            let (value, max) = match job.fraction() {
                Some(f) => (Some(f), Some(1.0)),
                None => (None, None),
            };
            view! {
                <div class="job" data-testid="model-job" data-job-state="running">
                    <span>{job_line(job)}</span>
                    <progress value=value max=max></progress>
                </div>
            }
            .into_any()
        }
        JobState::Failed => view! {
            <p class="error wrap" role="alert" data-testid="model-job" data-job-state="failed" data-job-kind=job.kind.clone()>
                {format!("The {} failed: {}", job_noun(&job.kind), job.error.clone().unwrap_or_default())}
            </p>
        }
        .into_any(),
        JobState::Cancelled => view! {
            <p class="hint" data-testid="model-job" data-job-state="cancelled" data-job-kind=job.kind.clone()>"Cancelled; nothing half-written was kept."</p>
        }
        .into_any(),
        JobState::Finished => view! {
            <p class="saved wrap" data-testid="model-job" data-job-state="finished" data-job-kind=job.kind.clone()>
                {finished_text(job)}
            </p>
        }
        .into_any(),
    }
}
