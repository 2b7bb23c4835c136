//! Adding a GGUF from the Hugging Face hub: repository, file, optional revision and id. The
//! server downloads and checks it before listing it; until then it shows here with its
//! progress, or with why it was refused.

use leptos::prelude::*;

use super::{job_view, Shared};
use crate::api::model_fns::{cancel_model_job, dismiss_model_job, start_model_add};

#[component]
pub fn AddFromHub(shared: Shared) -> impl IntoView {
    let repo = RwSignal::new(String::new());
    let file = RwSignal::new(String::new());
    let revision = RwSignal::new(String::new());
    let id = RwSignal::new(String::new());
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let (r, f, v, i) = (
            repo.get_untracked(),
            file.get_untracked(),
            revision.get_untracked(),
            id.get_untracked(),
        );
        shared.act(async move {
            start_model_add(r, f, v, i).await.map(|id| {
                Some(format!(
                    "Adding `{id}`: it is listed once downloaded and checked."
                ))
            })
        });
    };
    let field = |label: &'static str,
                 testid: &'static str,
                 hint: &'static str,
                 value: RwSignal<String>,
                 required: bool| {
        view! {
            <label class="tool-field">{label}
                <input type="text" data-testid=testid placeholder=hint required=required
                    autocomplete="off" spellcheck="false"
                    prop:value=move || value.get()
                    on:input=move |ev| value.set(event_target_value(&ev)) />
            </label>
        }
    };
    view! {
        <section class="tool-form add-hub" aria-label="Add a GGUF from the hub">
            <h3>"Add a GGUF from the Hugging Face hub"</h3>
            <p class="hint">"Any single-file GGUF that llama.cpp runs. It is downloaded into the hub cache, checked (GGUF structure, llama.cpp's loader) and only then listed, described from its own metadata."</p>
            <form class="add-hub-form" on:submit=submit>
                {field("Repository", "add-repo", "owner/name, e.g. bartowski/SmolLM2-135M-Instruct-GGUF", repo, true)}
                {field("File", "add-file", "e.g. SmolLM2-135M-Instruct-Q8_0.gguf", file, true)}
                {field("Revision", "add-revision", "main", revision, false)}
                {field("Id", "add-id", "from the file name", id, false)}
                <button type="submit" class="send" data-testid="add-submit">"Add"</button>
            </form>
            <For each=move || shared.adding.get() key=|p| (p.id.clone(), p.job.state, p.job.phase.clone(), p.job.done) let:pending>
                {
                    let running = pending.job.running();
                    let (cancel_id, dismiss_id) = (pending.id.clone(), pending.id.clone());
                    view! {
                        <div class="pending-model" data-testid=format!("pending-{}", pending.id)>
                            <code>{pending.id.clone()}</code>
                            {job_view(&pending.job)}
                            {if running {
                                view! {
                                    <button class="msg-action" data-testid="pending-cancel" on:click=move |_| {
                                        let id = cancel_id.clone();
                                        shared.act(async move { cancel_model_job(id).await.map(|_| None) });
                                    }>"Cancel"</button>
                                }.into_any()
                            } else {
                                view! {
                                    <button class="msg-action" data-testid="pending-dismiss" on:click=move |_| {
                                        let id = dismiss_id.clone();
                                        shared.act(async move { dismiss_model_job(id).await.map(|()| None) });
                                    }>"Dismiss"</button>
                                }.into_any()
                            }}
                        </div>
                    }
                }
            </For>
        </section>
    }
}
