//! The NER tab: a text, a model, and the entities found — colour-coded inline tags in the
//! text, a legend that filters by group, a table with offsets and confidence, and metrics.

use std::collections::BTreeMap;

use leptos::{ev::KeyboardEvent, prelude::*};

use super::widgets::{waits, TopBar};
use crate::{
    api::analysis_fns::{ner_models, recognize_entities},
    ner::{Entity, NerModelInfo, NerOutput},
};

const EXAMPLES: [(&str, &str); 3] = [
    (
        "Contact details",
        "Hi, I'm Maria Gonzalez. You can reach me at maria.gonzalez@example.com or on \
         (415) 555-0132. I live at 742 Evergreen Terrace, Springfield, IL 62704.",
    ),
    (
        "Account form",
        "Account holder: John Smith. Routing number 021000021, account 000123456789. \
         His SSN is 078-05-1120 and his passport number is X12345678.",
    ),
    (
        "Plain prose",
        "The weather was mild for November, so the committee held its meeting outdoors and \
         agreed to publish the minutes next week.",
    ),
];

/// The groups in display order, with their labels for the legend.
const GROUPS: [(&str, &str); 6] = [
    ("person", "Person"),
    ("location", "Location"),
    ("organisation", "Organisation"),
    ("contact", "Contact"),
    ("identifier", "Identifier"),
    ("miscellaneous", "Miscellaneous"),
];

#[component]
pub fn NerPage() -> impl IntoView {
    let models = Resource::new(|| (), |_| ner_models());
    view! {
        <div class="layout">
            <TopBar active="/ner" />
            <Transition fallback=|| view! { <p class="loading">"Loading models…"</p> }>
                {move || Suspend::new(async move {
                    match models.await {
                        Ok(list) => view! { <NerWorkspace models=list /> }.into_any(),
                        Err(e) => view! { <p class="error" role="alert">{format!("Cannot list NER models: {e}")}</p> }.into_any(),
                    }
                })}
            </Transition>
        </div>
    }
}

#[component]
fn NerWorkspace(models: Vec<NerModelInfo>) -> impl IntoView {
    let default_id = models
        .iter()
        .find(|m| m.default)
        .or(models.first())
        .map(|m| m.id.clone())
        .unwrap_or_default();
    let model = RwSignal::new(default_id);
    let text = RwSignal::new(EXAMPLES[0].1.to_string());
    let hidden_groups = RwSignal::new(Vec::<String>::new());
    let analyse = Action::new(move |(text, model): &(String, String)| {
        let (text, model) = (text.clone(), model.clone());
        async move { recognize_entities(text, Some(model)).await }
    });
    let result = analyse.value();
    let pending = analyse.pending();
    // The text the shown result belongs to: offsets index into it, not into the editor.
    let analysed = RwSignal::new(String::new());
    let run = move || {
        if pending.get_untracked() || text.with_untracked(|t| t.trim().is_empty()) {
            return;
        }
        analysed.set(text.get_untracked());
        analyse.dispatch((text.get_untracked(), model.get_untracked()));
    };
    let models_for_card = models.clone();
    let current = move || {
        models_for_card
            .iter()
            .find(|m| m.id == model.get())
            .cloned()
    };
    let options = models
        .iter()
        .map(|m| view! { <option value=m.id.clone()>{m.name.clone()}</option> })
        .collect_view();
    let characters = move || text.with(|t| t.chars().count());

    view! {
        <main class="tool" data-testid="ner-page">
            <section class="tool-form" aria-label="Text to analyse">
                <div class="tool-row">
                    <label class="tool-field">
                        "Model"
                        <select data-testid="ner-model" prop:value=move || model.get()
                            on:change=move |ev| model.set(event_target_value(&ev))>
                            {options}
                        </select>
                    </label>
                    <div class="tool-examples" role="group" aria-label="Examples">
                        {EXAMPLES.iter().map(|(label, example)| view! {
                            <button class="chip" on:click=move |_| text.set(example.to_string())>{*label}</button>
                        }).collect_view()}
                    </div>
                </div>
                {move || current().map(|m| view! {
                    <p class="hint">{format!("{} — labels {}. {} Licence: {}.", m.name, m.labels, m.description, m.license)}</p>
                    {m.unavailable.map(|why| view! { <p class="unavailable" role="status">{why}</p> })}
                })}
                <textarea data-testid="ner-input" rows="7" aria-label="Text"
                    prop:value=move || text.get()
                    on:input=move |ev| text.set(event_target_value(&ev))
                    on:keydown=move |ev: KeyboardEvent| {
                        if ev.key() == "Enter" && (ev.ctrl_key() || ev.meta_key()) {
                            ev.prevent_default();
                            run();
                        }
                    }
                ></textarea>
                <div class="tool-actions">
                    <button class="send" data-testid="ner-run" on:click=move |_| run()
                        disabled=move || pending.get() || text.with(|t| t.trim().is_empty())>
                        {move || if pending.get() { "Finding entities…" } else { "Find entities" }}
                    </button>
                    <span class="hint">{move || format!("{} characters · Ctrl+Enter", characters())}</span>
                </div>
            </section>
            {move || result.get().map(|outcome| match outcome {
                Ok(output) => view! { <NerResult output analysed=analysed.get_untracked() hidden_groups /> }.into_any(),
                Err(e) => view! { <p class="error" role="alert" data-testid="ner-error">{e.to_string()}</p> }.into_any(),
            })}
        </main>
    }
}

/// A piece of the analysed text: plain, or one entity.
enum Piece {
    Plain(String),
    Entity(Entity),
}

/// Cuts `text` at the entities' character offsets (entities sorted, overlaps skipped).
fn pieces(text: &str, entities: &[Entity]) -> Vec<Piece> {
    let chars: Vec<char> = text.chars().collect();
    let mut sorted: Vec<&Entity> = entities.iter().collect();
    sorted.sort_by_key(|e| (e.start, e.end));
    let mut out = Vec::new();
    let mut at = 0;
    for entity in sorted {
        if entity.start < at || entity.end > chars.len() || entity.start >= entity.end {
            continue;
        }
        if entity.start > at {
            out.push(Piece::Plain(chars[at..entity.start].iter().collect()));
        }
        out.push(Piece::Entity(entity.clone()));
        at = entity.end;
    }
    if at < chars.len() {
        out.push(Piece::Plain(chars[at..].iter().collect()));
    }
    out
}

#[component]
fn NerResult(
    output: NerOutput,
    analysed: String,
    hidden_groups: RwSignal<Vec<String>>,
) -> impl IntoView {
    let m = output.metrics.clone();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for entity in &output.entities {
        *counts.entry(entity.group.as_str()).or_default() += 1;
    }
    let legend = GROUPS
        .iter()
        .filter_map(|(group, label)| {
            let count = counts.get(group).copied()?;
            let group = group.to_string();
            let shown = {
                let group = group.clone();
                move || !hidden_groups.with(|h| h.contains(&group))
            };
            let toggle = {
                let group = group.clone();
                move |_| {
                    hidden_groups.update(|h| {
                        if let Some(i) = h.iter().position(|g| g == &group) {
                            h.remove(i);
                        } else {
                            h.push(group.clone());
                        }
                    })
                }
            };
            Some(view! {
                <button class=format!("legend-item ent-{group}") aria-pressed=move || shown().to_string() on:click=toggle>
                    {format!("{label} · {count}")}
                </button>
            })
        })
        .collect_view();
    let marked = pieces(&analysed, &output.entities)
        .into_iter()
        .map(|piece| match piece {
            Piece::Plain(text) => view! { <span>{text}</span> }.into_any(),
            Piece::Entity(entity) => {
                let group = entity.group.clone();
                let dimmed = move || hidden_groups.with(|h| h.contains(&group));
                let title = format!(
                    "{} · {} · {:.0}% · characters {}–{}",
                    entity.label,
                    entity.group,
                    entity.score * 100.0,
                    entity.start,
                    entity.end
                );
                view! {
                    <mark class=format!("ent ent-{}", entity.group) class:dimmed=dimmed title=title data-testid="entity">
                        {entity.text.clone()}
                        <span class="ent-label">{entity.label.clone()}</span>
                    </mark>
                }
                .into_any()
            }
        })
        .collect_view();
    let rows = output
        .entities
        .iter()
        .map(|e| {
            view! {
                <tr>
                    <td class="ent-text">{e.text.clone()}</td>
                    <td><span class=format!("tag ent-{}", e.group)>{e.label.clone()}</span></td>
                    <td>{e.group.clone()}</td>
                    <td class="num">{format!("{}–{}", e.start, e.end)}</td>
                    <td class="num">{format!("{:.1}%", e.score * 100.0)}</td>
                </tr>
            }
        })
        .collect_view();
    let found = output.entities.len();
    view! {
        <section class="tool-result" data-testid="ner-result" aria-label="Entities">
            <div class="metrics" data-testid="ner-metrics">
                <span class="metrics-main">{format!(
                    "{} entities · {:.0} ms · {} characters · {} tokens in {} window{}",
                    m.entities, m.millis, m.characters, m.tokens, m.windows, if m.windows == 1 { "" } else { "s" }
                )}</span>
                <span class="metrics-detail">{format!("model {}{}", m.model, waits(m.queued_millis, m.load_millis))}</span>
            </div>
            {(found > 0).then(|| view! { <div class="legend" role="group" aria-label="Show or hide groups">{legend}</div> })}
            <div class="marked" data-testid="ner-marked">{marked}</div>
            {if found == 0 {
                view! { <p class="hint">"No entities found in this text."</p> }.into_any()
            } else {
                view! {
                    <div class="table-wrap">
                        <table class="data-table" data-testid="ner-table">
                            <thead><tr><th>"Text"</th><th>"Label"</th><th>"Group"</th><th>"Characters"</th><th>"Confidence"</th></tr></thead>
                            <tbody>{rows}</tbody>
                        </table>
                    </div>
                }.into_any()
            }}
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(text: &str, start: usize, end: usize) -> Entity {
        Entity {
            label: "CITY".into(),
            group: "location".into(),
            text: text.into(),
            start,
            end,
            score: 0.9,
        }
    }

    #[test]
    fn pieces_cut_at_character_offsets_not_bytes() {
        let text = "Zoë lives in Köln, near Bonn.";
        let cut = pieces(text, &[entity("Bonn", 24, 28), entity("Köln", 13, 17)]);
        let shown: Vec<String> = cut
            .iter()
            .map(|p| match p {
                Piece::Plain(t) => t.clone(),
                Piece::Entity(e) => format!("[{}]", e.text),
            })
            .collect();
        assert_eq!(
            shown,
            vec!["Zoë lives in ", "[Köln]", ", near ", "[Bonn]", "."]
        );
    }

    #[test]
    fn overlapping_or_out_of_range_entities_are_skipped() {
        let cut = pieces(
            "abcdef",
            &[entity("abc", 0, 3), entity("bc", 1, 3), entity("x", 5, 9)],
        );
        assert_eq!(cut.len(), 2);
    }
}
