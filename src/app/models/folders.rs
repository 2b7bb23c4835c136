//! NER and OCR models on the Models page: folders of files, with state, size, source and
//! licence; download and sha256 check. They load when the NER or OCR page first uses them.

use leptos::prelude::*;

use super::{files_state, job_view, row_head, Shared};
use crate::{
    api::model_fns::{cancel_model_job, start_model_fetch, start_model_verify},
    app::widgets::format_bytes,
};

#[component]
pub fn FolderModels(shared: Shared) -> impl IntoView {
    view! {
        {move || shared.folders.with(|f| !f.is_empty()).then(|| view! {
            <h3 class="models-subtitle">"NER and OCR models"</h3>
        })}
        <div class="model-rows">
            <For each=move || shared.folders.get() key=|m| m.id.clone() let:model>
                <FolderRow id=model.id shared=shared />
            </For>
        </div>
    }
}

#[component]
fn FolderRow(id: String, shared: Shared) -> impl IntoView {
    let row_id = id.clone();
    let model = Memo::new(move |_| {
        shared
            .folders
            .with(|list| list.iter().find(|m| m.id == row_id).cloned())
    });
    let act = move |id: String, what: &'static str| {
        shared.act(async move {
            match what {
                "fetch" => start_model_fetch(id).await.map(|()| None),
                "verify" => start_model_verify(id).await.map(|()| None),
                _ => cancel_model_job(id).await.map(|_| None),
            }
        });
    };
    let testid = format!("folder-row-{id}");
    view! {
        {move || model.get().map(|m| {
            let (state, badge) = files_state(m.available, m.on_disk_bytes, m.can_fetch);
            let running = m.job.as_ref().is_some_and(|j| j.running());
            let size = m.on_disk_bytes.map(|b| format!(" · {} on disk", format_bytes(b))).unwrap_or_default();
            let (fetch_id, verify_id, cancel_id) = (m.id.clone(), m.id.clone(), m.id.clone());
            view! {
                <article class="model-row" data-testid=testid.clone() data-state=state>
                    {row_head(m.name.clone(), state, badge)}
                    <p class="model-facts">
                        <code>{m.id.clone()}</code>
                        {format!(" · {}{}{}", m.task, if m.default { " (default)" } else { "" }, size)}
                    </p>
                    <p class="hint wrap">{m.detail.clone()}</p>
                    <p class="hint wrap">{format!("Source: {} · Licence: {}", m.source, m.license)}</p>
                    {(!m.available).then(|| m.reason.clone()).flatten().map(|r| view! { <p class="hint wrap">{r}</p> })}
                    {m.job.clone().map(|job| job_view(&job))}
                    <div class="tool-actions">
                        {running.then(|| view! {
                            <button class="msg-action" data-testid="model-cancel" on:click=move |_| act(cancel_id.clone(), "cancel")>"Cancel"</button>
                        })}
                        {(!running && m.can_fetch && !m.available).then(|| view! {
                            <button class="send" data-testid="model-fetch" on:click=move |_| act(fetch_id.clone(), "fetch")>"Download"</button>
                        })}
                        {(!running && m.available).then(|| view! {
                            <button class="msg-action" data-testid="model-verify" on:click=move |_| act(verify_id.clone(), "verify")>"Verify sha256"</button>
                        })}
                    </div>
                </article>
            }
        })}
    }
}
