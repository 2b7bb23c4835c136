//! The history panel: new conversation, search, the list (title, messages, model, last update),
//! load, rename, delete with confirmation, export as JSON or Markdown, import, and the
//! indicator that says where saves go.

use leptos::prelude::*;

#[cfg(feature = "hydrate")]
use crate::api::server_fns::import_conversation;
use crate::{
    api::server_fns::{
        delete_conversation, get_conversation, get_persistence, list_conversations,
        rename_conversation,
    },
    types::{Conversation, ConversationSummary, PersistenceBackend, PersistenceStatus},
};

/// `2026-11-23 16:20 UTC` from Unix milliseconds, the same on the server and in the browser.
pub fn format_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}

#[component]
fn PersistenceBadge(status: PersistenceStatus) -> impl IntoView {
    let (class, label) = match status.backend {
        PersistenceBackend::Postgres => ("persist ok", "Saved to PostgreSQL".to_string()),
        PersistenceBackend::JsonFallback => (
            "persist warn",
            format!(
                "Database unreachable: saving to local files ({} waiting to import)",
                status.pending_import
            ),
        ),
        PersistenceBackend::Json => ("persist ok", "Saved as JSON files".to_string()),
    };
    view! {
        <p class=class data-testid="persistence" data-backend=status.backend.as_str() title=status.detail>
            {label}
        </p>
    }
}

#[component]
fn HistoryItem(
    item: ConversationSummary,
    current: RwSignal<Option<String>>,
    version: RwSignal<u32>,
    on_load: Callback<Conversation>,
    error: RwSignal<Option<String>>,
) -> impl IntoView {
    let id = item.id.clone();
    let is_current = {
        let id = id.clone();
        move || current.get().as_deref() == Some(id.as_str())
    };
    let load = {
        let id = id.clone();
        move |_| {
            let id = id.clone();
            leptos::task::spawn_local(async move {
                match get_conversation(id).await {
                    Ok(c) => on_load.run(c),
                    Err(e) => error.set(Some(e.to_string())),
                }
            });
        }
    };
    let rename = {
        let (id, title) = (id.clone(), item.title.clone());
        move |_| {
            let Ok(Some(new_title)) =
                window().prompt_with_message_and_default("Rename the conversation", &title)
            else {
                return;
            };
            let id = id.clone();
            leptos::task::spawn_local(async move {
                match rename_conversation(id, new_title).await {
                    Ok(_) => version.update(|v| *v += 1),
                    Err(e) => error.set(Some(e.to_string())),
                }
            });
        }
    };
    let delete = {
        let (id, title) = (id.clone(), item.title.clone());
        move |_| {
            let question = format!("Delete “{title}”? This cannot be undone.");
            if !window().confirm_with_message(&question).unwrap_or(false) {
                return;
            }
            let id = id.clone();
            leptos::task::spawn_local(async move {
                match delete_conversation(id.clone()).await {
                    Ok(()) => {
                        if current.get_untracked().as_deref() == Some(id.as_str()) {
                            current.set(None);
                        }
                        version.update(|v| *v += 1);
                    }
                    Err(e) => error.set(Some(e.to_string())),
                }
            });
        }
    };
    let meta = format!(
        "{} message{} · {}{}",
        item.message_count,
        if item.message_count == 1 { "" } else { "s" },
        item.model
            .clone()
            .map(|m| format!("{m} · "))
            .unwrap_or_default(),
        format_time(item.updated_at_ms),
    );
    view! {
        <li class="history-item" class:current=is_current data-testid="history-item">
            <button class="history-title" on:click=load>{item.title.clone()}</button>
            <span class="history-meta">{meta}</span>
            <span class="history-actions">
                <button on:click=rename data-testid="rename">"Rename"</button>
                <a href=format!("/api/conversations/{id}/export?format=json") download data-testid="export-json">"JSON"</a>
                <a href=format!("/api/conversations/{id}/export?format=md") download data-testid="export-md">"Markdown"</a>
                <button class="danger" on:click=delete data-testid="delete">"Delete"</button>
            </span>
        </li>
    }
}

#[component]
pub fn History(
    current: RwSignal<Option<String>>,
    version: RwSignal<u32>,
    on_load: Callback<Conversation>,
    on_new: Callback<()>,
) -> impl IntoView {
    let search = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let list = Resource::new(
        move || (search.get(), version.get()),
        |(q, _)| list_conversations(Some(q)),
    );
    // Where saves go can change without a save (the database goes away or comes back): the
    // badge asks again every few seconds.
    let status_tick = RwSignal::new(0u32);
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| {
        let tick = move || {
            let _ = status_tick.try_update(|t| *t = t.wrapping_add(1));
        };
        if let Ok(handle) = set_interval_with_handle(tick, std::time::Duration::from_secs(5)) {
            on_cleanup(move || handle.clear());
        }
    });
    let status = Resource::new(
        move || (version.get(), status_tick.get()),
        |_| get_persistence(),
    );
    let import = move |ev: leptos::ev::Event| {
        #[cfg(feature = "hydrate")]
        {
            use wasm_bindgen::JsCast;
            let Some(input) = ev
                .target()
                .and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok())
            else {
                return;
            };
            let Some(file) = input.files().and_then(|f| f.get(0)) else {
                return;
            };
            input.set_value("");
            leptos::task::spawn_local(async move {
                let text = wasm_bindgen_futures::JsFuture::from(file.text())
                    .await
                    .ok()
                    .and_then(|t| t.as_string());
                let Some(text) = text else {
                    return error.set(Some("Could not read that file.".into()));
                };
                match import_conversation(text).await {
                    Ok(c) => {
                        version.update(|v| *v += 1);
                        on_load.run(c);
                    }
                    Err(e) => error.set(Some(e.to_string())),
                }
            });
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = ev;
    };
    view! {
        <section class="history" aria-label="Conversations">
            <div class="history-head">
                <h2>"Conversations"</h2>
                <button class="new-conversation" data-testid="new-conversation" on:click=move |_| on_new.run(())>"+ New"</button>
            </div>
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    status.await.ok().map(|status| view! { <PersistenceBadge status /> })
                })}
            </Transition>
            <input type="search" class="history-search" placeholder="Search titles and messages" aria-label="Search conversations"
                data-testid="history-search" prop:value=move || search.get()
                on:input=move |ev| search.set(event_target_value(&ev)) />
            {move || error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
            <Transition fallback=|| view! { <p class="hint">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match list.await {
                        Ok(items) if items.is_empty() => view! { <p class="hint" data-testid="history-empty">"No saved conversations yet."</p> }.into_any(),
                        Ok(items) => view! {
                            <ul class="history-list" data-testid="history-list">
                                {items.into_iter().map(|item| view! { <HistoryItem item current version on_load error /> }).collect_view()}
                            </ul>
                        }.into_any(),
                        Err(e) => view! { <p class="error" role="alert">{format!("Cannot list conversations: {e}")}</p> }.into_any(),
                    }
                })}
            </Transition>
            <label class="import">"Import a JSON export "
                <input type="file" accept=".json,application/json" data-testid="import-file" on:change=import />
            </label>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::format_time;

    #[test]
    fn formats_unix_milliseconds_as_utc() {
        assert_eq!(format_time(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_time(1_795_450_800_000), "2026-11-23 16:20 UTC");
        assert_eq!(format_time(951_782_400_000), "2000-02-29 00:00 UTC");
    }
}
