//! The Chat tab: the conversation, the composer, and the streaming of replies over a websocket.

use leptos::prelude::*;

use super::{
    history::History,
    markdown::render_markdown,
    sidebar::{selected_model, ChatSettings, Sidebar},
    stream::{request_stop, StopSender},
    widgets::{MetricsLine, TopBar},
};
use crate::{
    api::server_fns::list_models,
    types::{
        ChatMessage, ChatRequest, Conversation, GenerationMetrics, JsonSchemaFormat, ModelInfo,
        ResponseFormat, Role, SamplingParams, TokenLogprob,
    },
};

/// A message as shown on screen; an assistant reply fills in while it streams.
/// Reference-counted signals: a message is created in a click handler, whose reactive owner
/// (e.g. the Send button inside `<Show>`) may be disposed while the reply is still streaming.
#[derive(Clone)]
struct UiMessage {
    id: usize,
    role: Role,
    text: ArcRwSignal<String>,
    metrics: ArcRwSignal<Option<GenerationMetrics>>,
    error: ArcRwSignal<Option<String>>,
    streaming: ArcRwSignal<bool>,
    /// The server confirmed the reply is durably saved.
    saved: ArcRwSignal<bool>,
    /// Why the reply has not started: waiting behind others, or for the model to load.
    waiting: ArcRwSignal<Option<String>>,
    /// Each generated token's probability, when they were asked for.
    logprobs: ArcRwSignal<Vec<TokenLogprob>>,
}

impl UiMessage {
    fn new(id: usize, role: Role, text: String) -> Self {
        Self {
            id,
            role,
            text: ArcRwSignal::new(text),
            metrics: ArcRwSignal::new(None),
            error: ArcRwSignal::new(None),
            streaming: ArcRwSignal::new(false),
            saved: ArcRwSignal::new(false),
            waiting: ArcRwSignal::new(None),
            logprobs: ArcRwSignal::new(Vec::new()),
        }
    }
}

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

#[component]
fn ChatWorkspace(
    models: Vec<ModelInfo>,
    settings: ChatSettings,
    sidebar_open: RwSignal<bool>,
    draft: RwSignal<String>,
) -> impl IntoView {
    let messages = RwSignal::new(Vec::<UiMessage>::new());
    let busy = RwSignal::new(false);
    let next_id = StoredValue::new(0usize);
    let form_error = RwSignal::new(None::<String>);
    let stop_sender = StoredValue::new(None::<StopSender>);
    let save = SaveTarget {
        conversation: RwSignal::new(None),
        history_version: RwSignal::new(0),
    };
    let models_for_current = models.clone();
    let current =
        Memo::new(move |_| selected_model(&models_for_current, settings.model.get().as_deref()));

    let on_load = Callback::new(move |conversation: Conversation| {
        if busy.get_untracked() {
            return;
        }
        let first = next_id.get_value();
        let loaded: Vec<UiMessage> = conversation
            .messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                let message = UiMessage::new(first + i, m.role, m.content);
                message.metrics.set(m.metrics);
                message.saved.set(true);
                if m.interrupted && m.role == Role::Assistant {
                    message
                        .error
                        .set(Some("This reply was interrupted.".into()));
                }
                message
            })
            .collect();
        next_id.set_value(first + loaded.len() + 1);
        messages.set(loaded);
        save.conversation.set(Some(conversation.id));
        form_error.set(None);
        sidebar_open.set(false);
    });
    let on_new = Callback::new(move |()| {
        if busy.get_untracked() {
            return;
        }
        messages.set(Vec::new());
        save.conversation.set(None);
        form_error.set(None);
        sidebar_open.set(false);
    });

    let send = move |text: String| {
        if busy.get_untracked() || text.trim().is_empty() {
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
        let sampling = match sampling(&settings) {
            Ok(s) => s,
            Err(e) => return form_error.set(Some(e)),
        };
        form_error.set(None);
        let mut history = Vec::new();
        let system = settings.system_prompt.get_untracked();
        if !system.trim().is_empty() {
            history.push(ChatMessage {
                role: Role::System,
                content: system,
            });
        }
        for m in messages.get_untracked() {
            if !m.text.get_untracked().is_empty() {
                history.push(ChatMessage {
                    role: m.role,
                    content: m.text.get_untracked(),
                });
            }
        }
        history.push(ChatMessage {
            role: Role::User,
            content: text.clone(),
        });
        let request = ChatRequest {
            model: model.id.clone(),
            messages: history,
            sampling,
            conversation_id: None,
        };
        let id = next_id.get_value();
        next_id.set_value(id + 2);
        let reply = UiMessage::new(id + 1, Role::Assistant, String::new());
        reply.streaming.set(true);
        messages.update(|list| {
            list.push(UiMessage::new(id, Role::User, text));
            list.push(reply.clone());
        });
        draft.set(String::new());
        busy.set(true);
        stream_reply(request, reply, stop_sender, busy, save);
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
                <section class="messages" id="messages" aria-live="polite" data-testid="messages">
                    <Show when=move || messages.with(|m| m.is_empty())>
                        <div class="empty">
                            <p>"Ask something, or pick an example from the menu."</p>
                            <p class="hint">{move || current.get().map(|m| format!("Model: {} — runs on this machine's CPU.", m.name))}</p>
                        </div>
                    </Show>
                    <For each=move || messages.get() key=|m| m.id let:message>
                        <MessageView message />
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

#[component]
fn MessageView(message: UiMessage) -> impl IntoView {
    let UiMessage {
        role,
        text,
        metrics,
        error,
        streaming,
        saved,
        waiting,
        logprobs,
        ..
    } = message;
    let body = if role == Role::Assistant {
        view! { <div class="md" inner_html=move || render_markdown(&text.get())></div> }.into_any()
    } else {
        view! { <div class="plain">{move || text.get()}</div> }.into_any()
    };
    let cursor = streaming.clone();
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
            {move || (saved.get() && role == Role::Assistant).then(|| view! { <span class="saved" data-testid="saved">"✓ saved"</span> })}
        </article>
    }
}

/// Tokens as shown: a character split across tokens (common for accented letters and emoji)
/// is shown once, on one span, with the probability of all its tokens and the first one's
/// alternatives; alone, each piece would be a replacement character.
fn whole_characters(tokens: Vec<TokenLogprob>) -> Vec<TokenLogprob> {
    let mut shown: Vec<TokenLogprob> = Vec::with_capacity(tokens.len());
    let mut open: Option<TokenLogprob> = None;
    for token in tokens {
        let group = match open.take() {
            None => token,
            Some(mut group) => {
                group.bytes.extend_from_slice(&token.bytes);
                group.logprob += token.logprob;
                group
            }
        };
        match std::str::from_utf8(&group.bytes) {
            Ok(text) => shown.push(TokenLogprob {
                token: text.to_string(),
                ..group
            }),
            // An incomplete character at the end waits for the next token's bytes.
            Err(e) if e.error_len().is_none() => open = Some(group),
            Err(_) => shown.push(lossy(group)),
        }
    }
    shown.extend(open.map(lossy));
    shown
}

fn lossy(group: TokenLogprob) -> TokenLogprob {
    TokenLogprob {
        token: String::from_utf8_lossy(&group.bytes).into_owned(),
        ..group
    }
}

/// The reply token by token, each coloured by its probability (green likely, red unlikely), its
/// alternatives shown on hover or focus (tap on a phone).
#[component]
fn TokenProbabilities(tokens: Signal<Vec<TokenLogprob>>) -> impl IntoView {
    view! {
        <details class="token-probs" open data-testid="token-probs">
            <summary>"Token probabilities"</summary>
            <p class="tokens">
                {move || whole_characters(tokens.get()).into_iter().map(|t| {
                    let p = f64::from(t.logprob).exp();
                    // Hue from red (0) to green (120) with the probability.
                    let style = format!("background: hsla({:.0}, 70%, 45%, 0.28)", 120.0 * p);
                    let shown = t.token.replace('\n', "↵");
                    view! {
                        <span class="tok" tabindex="0" style=style data-testid="tok" data-p=format!("{p:.4}")>
                            {shown}
                            <span class="alts" role="tooltip">
                                {t.top_logprobs.into_iter().map(|alt| {
                                    let chosen = alt.token == t.token;
                                    view! {
                                        <span class="alt" class:chosen=chosen data-testid="alt">
                                            <code>{format!("{:?}", alt.token)}</code>
                                            {format!(" {:.1}%", 100.0 * f64::from(alt.logprob).exp())}
                                        </span>
                                    }
                                }).collect_view()}
                            </span>
                        </span>
                    }
                }).collect_view()}
            </p>
        </details>
    }
}

/// Opens the websocket, sends the request, and fills `reply` as events arrive (browser only).
#[cfg(feature = "hydrate")]
fn stream_reply(
    mut request: ChatRequest,
    reply: UiMessage,
    stop_sender: StoredValue<Option<StopSender>>,
    busy: RwSignal<bool>,
    save: SaveTarget,
) {
    use super::stream::stream_socket;
    use crate::{api::server_fns::create_conversation, types::ChatEvent};

    leptos::task::spawn_local(async move {
        // The first message of a new chat creates its conversation, titled after the question.
        if save.conversation.get_untracked().is_none() {
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
        request.conversation_id = save.conversation.get_untracked();
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
            ChatEvent::Saved { .. } => {
                reply.saved.set(true);
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
    reply: UiMessage,
    _stop_sender: StoredValue<Option<StopSender>>,
    busy: RwSignal<bool>,
    _save: SaveTarget,
) {
    reply.streaming.set(false);
    busy.set(false);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(bytes: &[u8], logprob: f32) -> TokenLogprob {
        TokenLogprob {
            token: String::from_utf8_lossy(bytes).into_owned(),
            logprob,
            bytes: bytes.to_vec(),
            top_logprobs: Vec::new(),
        }
    }

    #[test]
    fn a_character_split_across_tokens_is_shown_once_with_their_joint_probability() {
        let i_circumflex = "Î".as_bytes();
        let shown = whole_characters(vec![
            token(b"l'", -0.1),
            token(&i_circumflex[..1], -0.5),
            token(&i_circumflex[1..], -0.25),
            token(b"le", -0.2),
        ]);
        let texts: Vec<&str> = shown.iter().map(|t| t.token.as_str()).collect();
        assert_eq!(texts, ["l'", "Î", "le"]);
        assert_eq!(shown[1].logprob, -0.75);
        // A reply cut inside a character keeps its bytes, shown as the replacement.
        let cut = whole_characters(vec![token(&i_circumflex[..1], -1.0)]);
        assert_eq!(cut.len(), 1);
    }
}
