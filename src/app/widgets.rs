//! Small display helpers shared by the chat views.

use leptos::prelude::*;

use crate::types::{FinishReason, GenerationMetrics};

/// Puts `text` on the clipboard and runs `copied` once the browser confirms it (browser only;
/// the server never handles a click).
pub fn copy_to_clipboard(text: &str, copied: impl FnOnce() + 'static) {
    #[cfg(feature = "hydrate")]
    {
        let promise = window().navigator().clipboard().write_text(text);
        leptos::task::spawn_local(async move {
            if wasm_bindgen_futures::JsFuture::from(promise).await.is_ok() {
                copied();
            }
        });
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = (text, copied);
}

/// How long a Copy button says "Copied".
pub const COPIED_FOR: std::time::Duration = std::time::Duration::from_millis(1500);

pub fn format_bytes(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let b = bytes as f64;
    if b >= 1024.0 * MIB {
        format!("{:.2} GiB", b / (1024.0 * MIB))
    } else {
        format!("{:.0} MiB", b / MIB)
    }
}

/// What a NER or OCR request spent before its own work: waiting for the requests ahead, loading
/// the model on first use; empty when both were negligible, so the time shown stays honest.
pub fn waits(queued_millis: f64, load_millis: f64) -> String {
    let mut parts = String::new();
    if queued_millis >= 5.0 {
        parts.push_str(&format!(
            " · waited {queued_millis:.0} ms for other requests"
        ));
    }
    if load_millis >= 5.0 {
        parts.push_str(&format!(
            " · first use: model loaded in {load_millis:.0} ms"
        ));
    }
    parts
}

fn finish_label(reason: Option<FinishReason>) -> &'static str {
    match reason {
        Some(FinishReason::Stop) | None => "",
        Some(FinishReason::Length) => " · stopped at max tokens",
        Some(FinishReason::ContextFull) => " · context full",
        Some(FinishReason::Cancelled) => " · stopped",
    }
}

/// The measured figures under a reply.
#[component]
pub fn MetricsLine(metrics: GenerationMetrics) -> impl IntoView {
    let m = metrics;
    // The prefill rate counts evaluated tokens only, so a reused prefix is named beside it.
    let cached = if m.cached_prompt_tokens > 0 {
        format!(" ({} cached)", m.cached_prompt_tokens)
    } else {
        String::new()
    };
    let summary = format!(
        "TTFT {:.0} ms · {} tokens · {:.1} tok/s · prompt {} tok{cached} at {:.0} tok/s{}",
        m.time_to_first_token_ms,
        m.generated_tokens,
        m.decode_tokens_per_s,
        m.prompt_tokens,
        m.prompt_tokens_per_s,
        finish_label(m.finish_reason),
    );
    let batched = match m.batch_peers {
        0 => String::new(),
        1 => " · decoded together with 1 other reply".to_string(),
        n => format!(" · decoded together with up to {n} other replies"),
    };
    let engine = if m.engine_detail.is_empty() {
        m.engine.clone()
    } else {
        format!("{} ({})", m.engine, m.engine_detail)
    };
    let detail = format!(
        "{} on {engine} · {} threads · seed {} · total {:.2} s (queue {:.0} ms, prefill {:.0} ms, decode {:.0} ms){batched} · model resident {}",
        m.model,
        m.threads,
        m.seed,
        m.total_ms / 1000.0,
        m.queue_ms,
        m.prompt_ms,
        m.decode_ms,
        format_bytes(m.model_resident_bytes),
    );
    view! {
        <div class="metrics" data-testid="metrics" data-cached-tokens=m.cached_prompt_tokens data-batch-peers=m.batch_peers>
            <span class="metrics-main">{summary}</span>
            <span class="metrics-detail">{detail}</span>
        </div>
    }
}

/// The header: the hamburger (pages with a sidebar), the name, and the tabs.
#[component]
pub fn TopBar(
    /// Which tab is shown, by its path.
    active: &'static str,
    #[prop(optional)] on_menu: Option<Callback<()>>,
) -> impl IntoView {
    let tab = move |href: &'static str, label: &'static str| {
        let current = href == active;
        view! {
            <a href=href class="tab" class:active=current aria-current=current.then_some("page")>{label}</a>
        }
    };
    view! {
        <header class="topbar">
            {on_menu.map(|open| view! {
                <button class="hamburger" aria-label="Open menu" data-testid="hamburger" on:click=move |_| open.run(())>
                    <span></span><span></span><span></span>
                </button>
            })}
            <h1 class="brand">"Quantlab"</h1>
            <nav class="tabs" aria-label="Tools">
                {tab("/", "Chat")}
                {tab("/compare", "Compare")}
                {tab("/arena", "Arena")}
                {tab("/ner", "NER")}
                {tab("/ocr", "OCR")}
                {tab("/bench", "Bench")}
                {tab("/models", "Models")}
            </nav>
        </header>
    }
}
