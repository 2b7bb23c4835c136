//! The Chat tab: the conversation (a tree: edits and regenerations are branches), the
//! composer, and the streaming of replies over a websocket.

mod message;
mod probabilities;

use leptos::prelude::*;

use self::message::{parents, BranchActions, MessageView, UiMessage};
#[cfg(feature = "hydrate")]
use super::widgets::{copy_to_clipboard, COPIED_FOR};
use super::{
    history::History,
    sidebar::{selected_model, ChatSettings, Sidebar},
    stream::{request_stop, StopSender},
    widgets::TopBar,
};
use crate::{
    api::server_fns::list_models,
    tree,
    types::{
        ChatMessage, ChatRequest, Conversation, JsonSchemaFormat, ModelInfo, ResponseFormat, Role,
        SamplingParams,
    },
};

/// Links the page to the conversation being saved, and to the history list it refreshes.
#[derive(Clone, Copy)]
struct SaveTarget {
    conversation: RwSignal<Option<String>>,
    history_version: RwSignal<u32>,
}

#[component]
pub fn ChatPage() -> impl IntoView {
    let models = Resource::new(|| (), |_| list_models());
    let sidebar_open = RwSignal::new(false);
    let settings = ChatSettings::new();
    let draft = RwSignal::new(String::new());

    view! {
        <div class="layout">
            <TopBar active="/" on_menu=Callback::new(move |()| sidebar_open.set(true)) />
            <Transition fallback=|| view! { <p class="loading">"Loading models…"</p> }>
                {move || Suspend::new(async move {
                    match models.await {
                        Ok(list) => view! { <ChatWorkspace models=list settings sidebar_open draft /> }.into_any(),
                        Err(e) => view! { <p class="error" role="alert">{format!("Cannot list models: {e}")}</p> }.into_any(),
                    }
                })}
            </Transition>
        </div>
    }
}

fn sampling(settings: &ChatSettings) -> Result<SamplingParams, String> {
    let seed = settings.seed.get_untracked();
    let seed = if seed.trim().is_empty() {
        None
    } else {
        Some(seed.trim().parse::<u64>().map_err(|_| {
            format!("The seed must be a whole number from 0 to 4294967295, not “{seed}”.")
        })?)
    };
    Ok(SamplingParams {
        temperature: Some(settings.temperature.get_untracked()),
        top_p: Some(settings.top_p.get_untracked()),
        top_k: Some(settings.top_k.get_untracked()),
        repeat_penalty: None,
        max_tokens: Some(settings.max_tokens.get_untracked()),
        seed,
        cache_prompt: None,
        ignore_eos: None,
        response_format: response_format(settings)?,
        stop: None,
        logprobs: settings
            .show_probabilities
            .get_untracked()
            .then_some(TOP_ALTERNATIVES),
    })
}

/// Alternatives shown per token in the probability view.
const TOP_ALTERNATIVES: u8 = 5;

fn response_format(settings: &ChatSettings) -> Result<Option<ResponseFormat>, String> {
    Ok(match settings.output_format.get_untracked().as_str() {
        "json_object" => Some(ResponseFormat::JsonObject),
        "json_schema" => {
            let schema = settings.json_schema.get_untracked();
            let schema: serde_json::Value = serde_json::from_str(&schema)
                .map_err(|e| format!("The JSON schema does not parse: {e}."))?;
            Some(ResponseFormat::JsonSchema {
                json_schema: JsonSchemaFormat {
                    name: Some("reply".into()),
                    schema: Some(schema),
                    strict: None,
                },
            })
        }
        _ => None,
    })
}

/// What a new reply answers.
enum Turn {
    /// A new question after the message at `parent` (`None`: a first message). Sending from the
    /// composer continues the shown branch; sending an edit makes a sibling of the edited one.
    Ask { parent: Option<usize>, text: String },
    /// Answer the question at this index again, as a sibling of its earlier answers.
    Regenerate { question: usize },
}

/// The stored id a new question should name as its parent: the nearest saved message on the
/// way up from `parent` (a failed reply is shown but not saved), or the root.
fn stored_parent(nodes: &[UiMessage], parent: Option<usize>) -> String {
    parent
        .and_then(|parent| {
            tree::path_to(&parents(nodes), parent)
                .iter()
                .rev()
                .find_map(|&i| nodes[i].stored_id.get_untracked())
        })
        .unwrap_or_else(|| tree::ROOT_PARENT.to_string())
}

#[component]
fn ChatWorkspace(
    models: Vec<ModelInfo>,
    settings: ChatSettings,
    sidebar_open: RwSignal<bool>,
    draft: RwSignal<String>,
) -> impl IntoView {
    // Every message of every branch, in the order they were added; `leaf` ends the shown path.
    let nodes = RwSignal::new(Vec::<UiMessage>::new());
    let leaf = RwSignal::new(None::<usize>);
    let busy = RwSignal::new(false);
    let next_key = StoredValue::new(0usize);
    let form_error = RwSignal::new(None::<String>);
    let stop_sender = StoredValue::new(None::<StopSender>);
    let save = SaveTarget {
        conversation: RwSignal::new(None),
        history_version: RwSignal::new(0),
    };
    let models_for_current = models.clone();
    let current =
        Memo::new(move |_| selected_model(&models_for_current, settings.model.get().as_deref()));
    let shown = Memo::new(move |_| match leaf.get() {
        Some(leaf) => nodes.with(|n| tree::path_to(&parents(n), leaf)),
        None => Vec::new(),
    });

    let on_load = Callback::new(move |conversation: Conversation| {
        if busy.get_untracked() {
            return;
        }
        let first = next_key.get_value();
        let tree_parents = tree::parent_indices(&conversation.messages);
        let loaded: Vec<UiMessage> = conversation
            .messages
            .into_iter()
            .zip(tree_parents)
            .enumerate()
            .map(|(i, (m, parent))| {
                let message = UiMessage::new(first + i, i, parent, m.role, m.content);
                message.metrics.set(m.metrics);
                message.stored_id.set(Some(m.id));
                if m.interrupted && m.role == Role::Assistant {
                    message
                        .error
                        .set(Some("This reply was interrupted.".into()));
                }
                message
            })
            .collect();
        next_key.set_value(first + loaded.len());
        leaf.set(loaded.len().checked_sub(1));
        nodes.set(loaded);
        save.conversation.set(Some(conversation.id));
        form_error.set(None);
        sidebar_open.set(false);
    });
    let on_new = Callback::new(move |()| {
        if busy.get_untracked() {
            return;
        }
        nodes.set(Vec::new());
        leaf.set(None);
        save.conversation.set(None);
        form_error.set(None);
        sidebar_open.set(false);
    });

    let start = move |turn: Turn| {
        if busy.get_untracked() {
            return;
        }
        let Some(model) = current.get_untracked() else {
            form_error.set(Some("No model is selected.".into()));
            return;
        };
        if !model.available {
            form_error.set(Some(format!(
                "{} is not available: {}",
                model.name,
                model.reason.unwrap_or_default()
            )));
            return;
        }
        let mut sampling = match sampling(&settings) {
            Ok(s) => s,
            Err(e) => return form_error.set(Some(e)),
        };
        form_error.set(None);
        let all = nodes.get_untracked();
        let mut history = Vec::new();
        let system = settings.system_prompt.get_untracked();
        if !system.trim().is_empty() {
            history.push(ChatMessage {
                role: Role::System,
                content: system,
            });
        }
        let context = match &turn {
            Turn::Ask { parent, .. } => *parent,
            Turn::Regenerate { question } => Some(*question),
        };
        if let Some(end) = context.filter(|&i| i < all.len()) {
            for i in tree::path_to(&parents(&all), end) {
                let text = all[i].text.get_untracked();
                if !text.is_empty() {
                    history.push(ChatMessage {
                        role: all[i].role,
                        content: text,
                    });
                }
            }
        }
        let key = next_key.get_value();
        let mut request = ChatRequest {
            model: model.id.clone(),
            messages: history,
            sampling: SamplingParams::default(),
            conversation_id: None,
            parent_id: None,
            reply_to: None,
        };
        let (question, reply, save_turn) = match turn {
            Turn::Ask { parent, text } => {
                request.messages.push(ChatMessage {
                    role: Role::User,
                    content: text.clone(),
                });
                request.parent_id = Some(stored_parent(&all, parent));
                let question = UiMessage::new(key, all.len(), parent, Role::User, text);
                let reply = UiMessage::new(
                    key + 1,
                    all.len() + 1,
                    Some(all.len()),
                    Role::Assistant,
                    String::new(),
                );
                (Some(question), reply, true)
            }
            Turn::Regenerate { question } => {
                // The same seed would give the same answer again.
                sampling.seed = None;
                request.reply_to = all.get(question).and_then(|q| q.stored_id.get_untracked());
                let reply = UiMessage::new(
                    key,
                    all.len(),
                    Some(question),
                    Role::Assistant,
                    String::new(),
                );
                // A question that was never saved cannot take a saved answer.
                let save_turn = request.reply_to.is_some();
                (None, reply, save_turn)
            }
        };
        request.sampling = sampling;
        next_key.set_value(key + 2);
        reply.streaming.set(true);
        nodes.update(|list| {
            list.extend(question.clone());
            list.push(reply.clone());
        });
        leaf.set(Some(reply.index));
        busy.set(true);
        stream_reply(
            request,
            TurnMessages {
                question,
                reply,
                save_turn,
            },
            stop_sender,
            busy,
            save,
        );
    };

    let send = move |text: String| {
        if busy.get_untracked() || text.trim().is_empty() {
            return;
        }
        start(Turn::Ask {
            parent: leaf.get_untracked(),
            text,
        });
        if busy.get_untracked() {
            draft.set(String::new());
        }
    };
    let actions = BranchActions {
        nodes,
        busy,
        switch: Callback::new(move |(index, by): (usize, isize)| {
            if busy.get_untracked() {
                return;
            }
            let target = nodes.with_untracked(|n| {
                let parents = parents(n);
                let siblings = tree::siblings(&parents, index);
                let position = siblings.iter().position(|&s| s == index)?;
                let next = siblings.get(position.checked_add_signed(by)?)?;
                Some(tree::newest_under(&parents, *next))
            });
            if let Some(target) = target {
                leaf.set(Some(target));
            }
        }),
        edit: Callback::new(move |(index, text): (usize, String)| {
            let parent = nodes.with_untracked(|n| n.get(index).and_then(|m| m.parent));
            start(Turn::Ask { parent, text });
        }),
        regenerate: Callback::new(move |question: usize| start(Turn::Regenerate { question })),
        model_name: Signal::derive(move || current.get().map(|m| m.name)),
    };

    let stop = move |_| request_stop(stop_sender);
    let on_example = Callback::new(move |text: String| send(text));
    let send_disabled = move || {
        busy.get() || draft.get().trim().is_empty() || !current.get().is_some_and(|m| m.available)
    };

    view! {
        <div class="workspace">
            <Sidebar models settings open=sidebar_open on_example>
                <History current=save.conversation version=save.history_version on_load on_new />
            </Sidebar>
            <main class="chat">
                <section class="messages" id="messages" aria-live="polite" data-testid="messages"
                    on:click=copy_code_block>
                    <Show when=move || shown.with(|m| m.is_empty())>
                        <div class="empty">
                            <p>"Ask something, or pick an example from the menu."</p>
                            <p class="hint">{move || current.get().map(|m| format!("Model: {} — runs on this machine's CPU.", m.name))}</p>
                        </div>
                    </Show>
                    <For each=move || nodes.with(|n| shown.get().into_iter().filter_map(|i| n.get(i).cloned()).collect::<Vec<_>>())
                        key=|m| m.key let:message>
                        <MessageView message actions />
                    </For>
                </section>
                {move || form_error.get().map(|e| view! { <p class="error" role="alert" data-testid="form-error">{e}</p> })}
                <div class="composer">
                    <textarea rows="2" placeholder="Message the model (Enter sends, Shift+Enter for a new line)"
                        data-testid="prompt" aria-label="Message"
                        prop:value=move || draft.get()
                        on:input=move |ev| draft.set(event_target_value(&ev))
                        on:keydown=move |ev: leptos::ev::KeyboardEvent| {
                            if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() {
                                ev.prevent_default();
                                send(draft.get_untracked());
                            }
                        }></textarea>
                    <Show when=move || busy.get()
                        fallback=move || view! {
                            <button class="send" data-testid="send" disabled=send_disabled
                                on:click=move |_| send(draft.get_untracked())>"Send"</button>
                        }>
                        <button class="stop" data-testid="stop" on:click=stop>"Stop"</button>
                    </Show>
                </div>
            </main>
        </div>
    }
}

/// The messages a reply fills in: the question it saves (none when regenerating) and the reply,
/// and whether the turn is saved to the conversation.
struct TurnMessages {
    question: Option<UiMessage>,
    reply: UiMessage,
    save_turn: bool,
}

/// A click on a code block's Copy button (the Markdown HTML is not a Leptos view, so one
/// listener on the list serves every block).
fn copy_code_block(ev: leptos::ev::MouseEvent) {
    #[cfg(feature = "hydrate")]
    {
        use wasm_bindgen::JsCast;
        let Some(button) = ev
            .target()
            .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
            .and_then(|e| e.closest("button.copy-code").ok().flatten())
        else {
            return;
        };
        let Some(code) = button
            .closest(".code-block")
            .ok()
            .flatten()
            .and_then(|block| block.query_selector("code").ok().flatten())
        else {
            return;
        };
        let text = code.text_content().unwrap_or_default();
        copy_to_clipboard(&text, move || {
            button.set_text_content(Some("Copied"));
            set_timeout(move || button.set_text_content(Some("Copy")), COPIED_FOR);
        });
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = ev;
}

/// Opens the websocket, sends the request, and fills the reply as events arrive (browser only).
#[cfg(feature = "hydrate")]
fn stream_reply(
    mut request: ChatRequest,
    turn: TurnMessages,
    stop_sender: StoredValue<Option<StopSender>>,
    busy: RwSignal<bool>,
    save: SaveTarget,
) {
    use super::stream::stream_socket;
    use crate::{api::server_fns::create_conversation, types::ChatEvent};

    let TurnMessages {
        question,
        reply,
        save_turn,
    } = turn;
    leptos::task::spawn_local(async move {
        // The first message of a new chat creates its conversation, titled after the question.
        if save_turn && save.conversation.get_untracked().is_none() {
            let question = request
                .messages
                .last()
                .map(|m| m.content.clone())
                .unwrap_or_default();
            let title: String = question
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .chars()
                .take(60)
                .collect();
            match create_conversation(title).await {
                Ok(c) => {
                    save.conversation.set(Some(c.id));
                    save.history_version.update(|v| *v += 1);
                }
                Err(e) => reply.error.set(Some(format!("Not saved: {e}"))),
            }
        }
        if save_turn {
            request.conversation_id = save.conversation.get_untracked();
        }
        let expect_saved = request.conversation_id.is_some();
        let outcome = stream_socket("/ws/chat", request, stop_sender, |event| match event {
            ChatEvent::Queued { ahead, loading } => {
                reply.waiting.set(Some(waiting_message(ahead, loading)));
                true
            }
            ChatEvent::Token { text, logprobs } => {
                reply.waiting.set(None);
                reply.text.update(|t| t.push_str(&text));
                if !logprobs.is_empty() {
                    reply.logprobs.update(|all| all.extend(logprobs));
                }
                scroll_to_bottom();
                true
            }
            ChatEvent::Done { metrics } => {
                reply.metrics.set(Some(metrics));
                // Only a request that names a conversation gets a `Saved` event.
                expect_saved
            }
            ChatEvent::Saved {
                question_id,
                reply_id,
                ..
            } => {
                if let (Some(question), Some(id)) = (&question, question_id) {
                    question.stored_id.set(Some(id));
                }
                reply.stored_id.set(reply_id);
                save.history_version.update(|v| *v += 1);
                false
            }
            ChatEvent::Error { message, .. } => {
                reply.error.set(Some(message));
                false
            }
        })
        .await;
        if let Err(e) = outcome {
            reply.error.set(Some(e));
        }
        reply.waiting.set(None);
        reply.streaming.set(false);
        busy.set(false);
        scroll_to_bottom();
    });
}

/// What a waiting reply says while it waits.
pub fn waiting_message(ahead: usize, loading: bool) -> String {
    match (ahead, loading) {
        (0, true) => "Loading the model…".to_string(),
        (n, true) => format!("Loading the model; {n} ahead of you…"),
        (1, false) => "Waiting: 1 request ahead of you…".to_string(),
        (n, false) => format!("Waiting: {n} requests ahead of you…"),
    }
}

#[cfg(feature = "hydrate")]
fn scroll_to_bottom() {
    if let Some(el) = leptos::prelude::document().get_element_by_id("messages") {
        el.set_scroll_top(el.scroll_height());
    }
}

/// On the server nothing streams: a reply starts from a click, which only the browser sees.
#[cfg(not(feature = "hydrate"))]
fn stream_reply(
    _request: ChatRequest,
    turn: TurnMessages,
    _stop_sender: StoredValue<Option<StopSender>>,
    busy: RwSignal<bool>,
    _save: SaveTarget,
) {
    let _ = (turn.question, turn.save_turn);
    turn.reply.streaming.set(false);
    busy.set(false);
}
