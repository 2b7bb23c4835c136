//! One message of the chat as shown: its text, metrics and probability view, and the controls
//! that make branches (edit a question, answer again) and move between them (`< 2/3 >`).

use leptos::prelude::*;

use super::probabilities::TokenProbabilities;
use crate::{
    app::{
        markdown::render_markdown,
        widgets::{copy_to_clipboard, MetricsLine, COPIED_FOR},
    },
    tree,
    types::{GenerationMetrics, Role, TokenLogprob},
};

/// A message as shown on screen; an assistant reply fills in while it streams.
/// Reference-counted signals: a message is created in a click handler, whose reactive owner
/// (e.g. the Send button inside `<Show>`) may be disposed while the reply is still streaming.
#[derive(Clone)]
pub struct UiMessage {
    /// Unique on this page (a loaded conversation gets fresh keys): keys the list's views.
    pub key: usize,
    /// The position in the conversation's node list; `parent` points into the same list.
    pub index: usize,
    pub parent: Option<usize>,
    pub role: Role,
    pub text: ArcRwSignal<String>,
    pub metrics: ArcRwSignal<Option<GenerationMetrics>>,
    pub error: ArcRwSignal<Option<String>>,
    pub streaming: ArcRwSignal<bool>,
    /// The stored message's id, once the server has saved it.
    pub stored_id: ArcRwSignal<Option<String>>,
    /// Why the reply has not started: waiting behind others, or for the model to load.
    pub waiting: ArcRwSignal<Option<String>>,
    /// Each generated token's probability, when they were asked for.
    pub logprobs: ArcRwSignal<Vec<TokenLogprob>>,
}

impl UiMessage {
    pub fn new(key: usize, index: usize, parent: Option<usize>, role: Role, text: String) -> Self {
        Self {
            key,
            index,
            parent,
            role,
            text: ArcRwSignal::new(text),
            metrics: ArcRwSignal::new(None),
            error: ArcRwSignal::new(None),
            streaming: ArcRwSignal::new(false),
            stored_id: ArcRwSignal::new(None),
            waiting: ArcRwSignal::new(None),
            logprobs: ArcRwSignal::new(Vec::new()),
        }
    }
}

/// Each node's parent, for the `tree` functions.
pub fn parents(nodes: &[UiMessage]) -> Vec<Option<usize>> {
    nodes.iter().map(|n| n.parent).collect()
}

/// What a message's controls do; all of them wait while a reply streams.
#[derive(Clone, Copy)]
pub struct BranchActions {
    pub nodes: RwSignal<Vec<UiMessage>>,
    pub busy: RwSignal<bool>,
    /// Show the sibling `by` places away (−1 previous, +1 next).
    pub switch: Callback<(usize, isize)>,
    /// Send an edited question as a new sibling of the question at this index.
    pub edit: Callback<(usize, String)>,
    /// Answer the question at this index again.
    pub regenerate: Callback<usize>,
    /// Which model a new answer would come from, for the button's label.
    pub model_name: Signal<Option<String>>,
}

#[component]
pub fn MessageView(message: UiMessage, actions: BranchActions) -> impl IntoView {
    let UiMessage {
        index,
        parent,
        role,
        text,
        metrics,
        error,
        streaming,
        stored_id,
        waiting,
        logprobs,
        ..
    } = message;
    // The draft of an edit; the body switches on whether there is one, not on its text, so
    // typing does not rebuild the box (and lose the caret).
    let editing = RwSignal::new(None::<String>);
    let is_editing = Memo::new(move |_| editing.with(Option::is_some));
    let text_for_body = text.clone();
    let body = move || match is_editing.get() {
        true => view! { <EditBox index editing actions /> }.into_any(),
        false if role == Role::Assistant => {
            let text = text_for_body.clone();
            view! { <div class="md" inner_html=move || render_markdown(&text.get())></div> }
                .into_any()
        }
        false => {
            let text = text_for_body.clone();
            view! { <div class="plain">{move || text.get()}</div> }.into_any()
        }
    };
    // `< 2/3 >` when the message has siblings.
    let place = move || {
        actions.nodes.with(|nodes| {
            let siblings = tree::siblings(&parents(nodes), index);
            let position = siblings.iter().position(|&s| s == index).unwrap_or(0);
            (position + 1, siblings.len())
        })
    };
    let idle = {
        let streaming = streaming.clone();
        move || !actions.busy.get() && !streaming.get()
    };
    let cursor = streaming.clone();
    let copy_text = text.clone();
    let copied = RwSignal::new(false);
    let saved = {
        let stored_id = stored_id.clone();
        move || stored_id.with(Option::is_some)
    };
    let regenerate_title = move || match actions.model_name.get() {
        Some(name) => {
            format!("Answer again with {name} and a new seed; the answers stay as siblings")
        }
        None => "Answer again with a new seed".to_string(),
    };
    let edit_text = text.clone();
    view! {
        <article class=format!("message {}", role.as_str()) data-testid=format!("message-{}", role.as_str())
            class:streaming=move || streaming.get()>
            {move || waiting.get().map(|w| view! { <p class="hint waiting" data-testid="waiting">{w}</p> })}
            {body}
            {move || cursor.get().then(|| view! { <span class="cursor" aria-hidden="true">"▍"</span> })}
            {move || error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
            {move || logprobs.with(|l| !l.is_empty()).then(|| {
                let logprobs = logprobs.clone();
                view! { <TokenProbabilities tokens=Signal::derive(move || logprobs.get()) /> }
            })}
            {move || metrics.get().map(|m| view! { <MetricsLine metrics=m /> })}
            <div class="message-tools">
                {move || {
                    let (position, count) = place();
                    (count > 1).then(|| view! {
                        <span class="branches" data-testid="branches">
                            <button type="button" class="icon" data-testid="branch-previous" aria-label="Previous version"
                                disabled=move || position == 1 || actions.busy.get()
                                on:click=move |_| actions.switch.run((index, -1))>"‹"</button>
                            <span data-testid="branch-place">{format!("{position}/{count}")}</span>
                            <button type="button" class="icon" data-testid="branch-next" aria-label="Next version"
                                disabled=move || position == count || actions.busy.get()
                                on:click=move |_| actions.switch.run((index, 1))>"›"</button>
                        </span>
                    })
                }}
                <button type="button" class="msg-action" data-testid="copy-message" title="Copy the message's text"
                    on:click=move |_| copy_to_clipboard(&copy_text.get_untracked(), move || {
                        copied.set(true);
                        set_timeout(move || copied.set(false), COPIED_FOR);
                    })>
                    {move || if copied.get() { "Copied" } else { "Copy" }}
                </button>
                {(role == Role::User).then(|| {
                    let idle = idle.clone();
                    let edit_text = edit_text.clone();
                    view! {
                        <button type="button" class="msg-action" data-testid="edit" title="Edit and send again; the earlier version stays as a sibling"
                            disabled=move || !idle() || is_editing.get()
                            on:click=move |_| editing.set(Some(edit_text.get_untracked()))>"Edit"</button>
                    }
                })}
                {(role == Role::Assistant && parent.is_some()).then(|| {
                    let idle = idle.clone();
                    view! {
                        <button type="button" class="msg-action" data-testid="regenerate" title=regenerate_title
                            disabled=move || !idle()
                            on:click=move |_| {
                                if let Some(question) = parent {
                                    actions.regenerate.run(question);
                                }
                            }>"Regenerate"</button>
                    }
                })}
                {move || (saved() && role == Role::Assistant).then(|| view! { <span class="saved" data-testid="saved">"✓ saved"</span> })}
            </div>
        </article>
    }
}

/// The question being edited: Send makes it a new sibling, Cancel leaves everything as it was.
#[component]
fn EditBox(
    index: usize,
    editing: RwSignal<Option<String>>,
    actions: BranchActions,
) -> impl IntoView {
    let send = move || {
        let Some(text) = editing.get_untracked() else {
            return;
        };
        if text.trim().is_empty() || actions.busy.get_untracked() {
            return;
        }
        editing.set(None);
        actions.edit.run((index, text));
    };
    // The caret goes to the box as it opens.
    let area = NodeRef::<leptos::html::Textarea>::new();
    Effect::new(move |_| {
        if let Some(area) = area.get() {
            let _ = area.focus();
        }
    });
    view! {
        <div class="edit-box">
            <textarea node_ref=area rows="3" data-testid="edit-text" aria-label="Edited message"
                prop:value=move || editing.get().unwrap_or_default()
                on:input=move |ev| editing.set(Some(event_target_value(&ev)))
                on:keydown=move |ev: leptos::ev::KeyboardEvent| {
                    if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() {
                        ev.prevent_default();
                        send();
                    } else if ev.key() == "Escape" {
                        editing.set(None);
                    }
                }></textarea>
            <div class="edit-actions">
                <button type="button" class="send" data-testid="edit-send"
                    disabled=move || actions.busy.get() || editing.with(|t| t.as_deref().is_none_or(|t| t.trim().is_empty()))
                    on:click=move |_| send()>"Send"</button>
                <button type="button" class="msg-action" data-testid="edit-cancel" on:click=move |_| editing.set(None)>"Cancel"</button>
            </div>
        </div>
    }
}
