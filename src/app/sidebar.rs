//! The sidebar: model selector and info card, example prompts, advanced settings. On narrow
//! screens it is an off-canvas panel opened by the header's hamburger.

use leptos::prelude::*;

use super::widgets::format_bytes;
use crate::types::ModelInfo;

pub const EXAMPLE_PROMPTS: [&str; 4] = [
    "What is the capital of France?",
    "Explain in two sentences what quantizing a model means.",
    "Write a haiku about a CPU that runs language models.",
    "Give me three tips for writing clear commit messages.",
];

/// Per-request settings, edited in the sidebar and read when a message is sent.
#[derive(Clone, Copy)]
pub struct ChatSettings {
    /// `None` until the person picks one: the registry's default is used.
    pub model: RwSignal<Option<String>>,
    pub temperature: RwSignal<f32>,
    pub top_p: RwSignal<f32>,
    pub top_k: RwSignal<u32>,
    pub max_tokens: RwSignal<u32>,
    /// Empty means a random seed (reported back with the reply).
    pub seed: RwSignal<String>,
    pub system_prompt: RwSignal<String>,
    /// Ask for each token's probability and its likeliest alternatives.
    pub show_probabilities: RwSignal<bool>,
    /// `text`, `json_object` or `json_schema` (with `json_schema` holding the schema).
    pub output_format: RwSignal<String>,
    pub json_schema: RwSignal<String>,
}

impl ChatSettings {
    pub fn new() -> Self {
        Self {
            model: RwSignal::new(None),
            temperature: RwSignal::new(0.7),
            top_p: RwSignal::new(0.9),
            top_k: RwSignal::new(40),
            max_tokens: RwSignal::new(512),
            seed: RwSignal::new(String::new()),
            system_prompt: RwSignal::new(String::new()),
            show_probabilities: RwSignal::new(false),
            output_format: RwSignal::new("text".into()),
            json_schema: RwSignal::new(
                r#"{"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}"#.into(),
            ),
        }
    }
}

/// The selected model, or the registry's default.
pub fn selected_model(models: &[ModelInfo], chosen: Option<&str>) -> Option<ModelInfo> {
    chosen
        .and_then(|id| models.iter().find(|m| m.id == id))
        .or_else(|| models.iter().find(|m| m.default))
        .cloned()
}

#[component]
fn ModelCard(model: ModelInfo) -> impl IntoView {
    let status = if model.available {
        if model.loaded {
            "loaded"
        } else {
            "available"
        }
    } else {
        "unavailable"
    };
    let kind = if model.instruct {
        "chat (instruct)"
    } else {
        "base model: plain completion"
    };
    let size = model
        .size_bytes
        .map(format_bytes)
        .unwrap_or_else(|| "unknown".into());
    view! {
        <div class="model-card" data-testid="model-card">
            <div class="model-card-head">
                <strong>{model.name.clone()}</strong>
                <span class=format!("badge badge-{status}")>{status}</span>
            </div>
            <p class="model-desc">{model.description.clone()}</p>
            <dl>
                <dt>"Family"</dt><dd>{model.family.clone()}</dd>
                <dt>"Parameters"</dt><dd>{model.parameters.clone()}</dd>
                <dt>"Quantization"</dt>
                <dd>{format!("{} (~{} bits/weight)", model.quantization, model.bits_per_weight)}</dd>
                <dt>"Context"</dt><dd>{format!("{} tokens", model.context_length)}</dd>
                <dt>"Engine"</dt><dd>{model.engine.label()}</dd>
                <dt>"Kind"</dt><dd>{kind}</dd>
                <dt>"File size"</dt><dd>{size}</dd>
                <dt>"Licence"</dt><dd>{model.license.clone()}</dd>
                <dt>"Source"</dt><dd class="wrap">{model.source.clone()}</dd>
            </dl>
            {model.provenance_note.clone().map(|note| view! { <p class="note">{note}</p> })}
            {model.reason.clone().map(|reason| view! {
                <div class="unavailable" role="status">
                    <p>{reason}</p>
                    {model.fix.clone().map(|fix| view! { <p>"Fix: " <code>{fix}</code></p> })}
                </div>
            })}
        </div>
    }
}

#[component]
pub fn Sidebar(
    models: Vec<ModelInfo>,
    settings: ChatSettings,
    open: RwSignal<bool>,
    on_example: Callback<String>,
    /// The history panel, shown first.
    children: Children,
) -> impl IntoView {
    let close = move || open.set(false);
    let models_for_card = models.clone();
    let current = move || selected_model(&models_for_card, settings.model.get().as_deref());
    let current_id = {
        let current = current.clone();
        move || current().map(|m| m.id).unwrap_or_default()
    };
    let options = models
        .iter()
        .map(|m| {
            let mut label = format!("{} · {} · {}", m.name, m.quantization, m.engine.label());
            if !m.instruct {
                label.push_str(" · base");
            }
            if !m.available {
                label.push_str(" (unavailable)");
            }
            view! { <option value=m.id.clone()>{label}</option> }
        })
        .collect_view();
    let number = |ev: &leptos::ev::Event| event_target_value(ev).parse::<f64>().ok();
    view! {
        <div class="backdrop" class:visible=move || open.get() on:click=move |_| close() data-testid="backdrop"></div>
        <aside class="sidebar" class:open=move || open.get() data-testid="sidebar" aria-label="Models and settings">
            <div class="sidebar-head">
                <button class="close-sidebar" aria-label="Close menu" data-testid="close-sidebar" on:click=move |_| close()>"×"</button>
            </div>
            {children()}
            <h2>"Model"</h2>
            <label class="visually-hidden" for="model-select">"Model"</label>
            <select id="model-select" data-testid="model-select"
                prop:value=current_id
                on:change=move |ev| { settings.model.set(Some(event_target_value(&ev))); close(); }>
                {options}
            </select>
            {move || current().map(|model| view! { <ModelCard model /> })}

            <h2>"Try"</h2>
            <ul class="examples">
                {EXAMPLE_PROMPTS.iter().map(|prompt| {
                    let text = prompt.to_string();
                    view! {
                        <li><button class="example" on:click=move |_| { on_example.run(text.clone()); close(); }>{*prompt}</button></li>
                    }
                }).collect_view()}
            </ul>

            <details class="advanced">
                <summary>"Advanced settings"</summary>
                <label>"Temperature " <output>{move || format!("{:.2}", settings.temperature.get())}</output>
                    <input type="range" min="0" max="2" step="0.05" data-testid="temperature"
                        prop:value=move || settings.temperature.get().to_string()
                        on:input=move |ev| if let Some(v) = number(&ev) { settings.temperature.set(v as f32) } />
                </label>
                <label>"Top-p " <output>{move || format!("{:.2}", settings.top_p.get())}</output>
                    <input type="range" min="0.05" max="1" step="0.05"
                        prop:value=move || settings.top_p.get().to_string()
                        on:input=move |ev| if let Some(v) = number(&ev) { settings.top_p.set(v as f32) } />
                </label>
                <label>"Top-k " <output>{move || settings.top_k.get()}</output>
                    <input type="range" min="1" max="100" step="1"
                        prop:value=move || settings.top_k.get().to_string()
                        on:input=move |ev| if let Some(v) = number(&ev) { settings.top_k.set(v as u32) } />
                </label>
                <label>"Max new tokens"
                    <input type="number" min="1" max="4096" data-testid="max-tokens"
                        prop:value=move || settings.max_tokens.get().to_string()
                        on:change=move |ev| if let Some(v) = number(&ev) { settings.max_tokens.set(v.clamp(1.0, 4096.0) as u32) } />
                </label>
                <label>"Seed (empty = random)"
                    <input type="number" min="0" max="4294967295" data-testid="seed"
                        prop:value=move || settings.seed.get()
                        on:change=move |ev| settings.seed.set(event_target_value(&ev)) />
                </label>
                <label>"System prompt"
                    <textarea rows="3" data-testid="system-prompt" placeholder="The model's default"
                        prop:value=move || settings.system_prompt.get()
                        on:input=move |ev| settings.system_prompt.set(event_target_value(&ev))></textarea>
                </label>
                <label class="check">
                    <input type="checkbox" data-testid="show-probabilities"
                        prop:checked=move || settings.show_probabilities.get()
                        on:change=move |ev| settings.show_probabilities.set(event_target_checked(&ev)) />
                    " Token probabilities (colour each token, alternatives on hover)"
                </label>
                <label>"Output format"
                    <select data-testid="output-format" prop:value=move || settings.output_format.get()
                        on:change=move |ev| settings.output_format.set(event_target_value(&ev))>
                        <option value="text">"Free text"</option>
                        <option value="json_object">"JSON object"</option>
                        <option value="json_schema">"JSON matching a schema"</option>
                    </select>
                </label>
                <Show when=move || settings.output_format.get() == "json_schema">
                    <label>"JSON schema"
                        <textarea rows="5" data-testid="json-schema" spellcheck="false"
                            prop:value=move || settings.json_schema.get()
                            on:input=move |ev| settings.json_schema.set(event_target_value(&ev))></textarea>
                    </label>
                </Show>
                <p class="hint">"JSON output is held to the format by a grammar on llama.cpp models; other engines refuse it rather than pretend."</p>
            </details>
        </aside>
    }
}
