//! The Compare tab's summary: a table of the finished replies with the best value of each
//! column highlighted, and the same table as Markdown to share.

use leptos::prelude::*;

use crate::{
    app::widgets::format_bytes,
    types::{GenerationMetrics, ModelInfo},
};

/// Which value wins a column.
#[derive(Clone, Copy)]
enum Better {
    Lower,
    Higher,
}

/// The summary table's columns: heading, which way is better, and how to read a slot.
type Column = (
    &'static str,
    Better,
    fn(&ModelInfo, &GenerationMetrics) -> f64,
    fn(f64) -> String,
);

const COLUMNS: [Column; 7] = [
    (
        "TTFT (ms)",
        Better::Lower,
        |_, m| m.time_to_first_token_ms,
        |v| format!("{v:.0}"),
    ),
    (
        "Prompt tok/s",
        Better::Higher,
        |_, m| m.prompt_tokens_per_s,
        |v| format!("{v:.1}"),
    ),
    (
        "Decode tok/s",
        Better::Higher,
        |_, m| m.decode_tokens_per_s,
        |v| format!("{v:.1}"),
    ),
    (
        "Tokens",
        Better::Higher,
        |_, m| f64::from(m.generated_tokens),
        |v| format!("{v:.0}"),
    ),
    (
        "Resident memory",
        Better::Lower,
        |_, m| m.model_resident_bytes as f64,
        |v| format_bytes(v as u64),
    ),
    (
        "Bits/weight",
        Better::Lower,
        |info, _| f64::from(info.bits_per_weight),
        |v| format!("{v:.2}"),
    ),
    (
        "File size",
        Better::Lower,
        |info, _| info.size_bytes.unwrap_or(0) as f64,
        |v| format_bytes(v as u64),
    ),
];

fn best(values: &[f64], better: Better) -> Option<f64> {
    let finite = values.iter().copied().filter(|v| v.is_finite() && *v > 0.0);
    match better {
        Better::Lower => finite.reduce(f64::min),
        Better::Higher => finite.reduce(f64::max),
    }
}

/// The finished slots as a Markdown table, best values in bold.
pub(super) fn markdown_table(rows: &[(ModelInfo, GenerationMetrics)], together: bool) -> String {
    let mut out = format!(
        "| Model | Engine | {} |\n|---|---|{}\n",
        COLUMNS.map(|c| c.0).join(" | "),
        "---|".repeat(COLUMNS.len())
    );
    for (info, m) in rows {
        let cells: Vec<String> = COLUMNS
            .iter()
            .map(|(_, better, read, show)| {
                let values: Vec<f64> = rows.iter().map(|(i, m)| read(i, m)).collect();
                let v = read(info, m);
                if best(&values, *better) == Some(v) {
                    format!("**{}**", show(v))
                } else {
                    show(v)
                }
            })
            .collect();
        out.push_str(&format!(
            "| {} ({}) | {} | {} |\n",
            info.name,
            info.quantization,
            info.engine.label(),
            cells.join(" | ")
        ));
    }
    out.push_str(if together {
        "\n_Run together: each model decoded in its own batch on its own worker, sharing the CPU, so speeds are lower than alone._\n"
    } else {
        "\n_Run one after another, each with the machine to itself._\n"
    });
    out
}

#[component]
pub(super) fn Summary(
    rows: Vec<(ModelInfo, GenerationMetrics)>,
    together: bool,
    markdown: String,
) -> impl IntoView {
    let columns: Vec<Vec<f64>> = COLUMNS
        .iter()
        .map(|(_, _, read, _)| rows.iter().map(|(i, m)| read(i, m)).collect())
        .collect();
    view! {
        <section class="compare-summary" data-testid="compare-summary">
            <h2>"Summary"</h2>
            <p class="hint">{if together { "Run together: each model decoded in its own batch on its own worker, sharing the CPU, so speeds are lower than alone." } else { "Run one after another, each model alone on the machine." }}</p>
            <div class="table-wrap">
                <table>
                    <thead><tr><th>"Model"</th>{COLUMNS.map(|c| view! { <th>{c.0}</th> }).collect_view()}</tr></thead>
                    <tbody>
                        {rows.iter().map(|(info, m)| view! {
                            <tr>
                                <th scope="row">{info.name.clone()}</th>
                                {COLUMNS.iter().zip(&columns).map(|((_, better, read, show), values)| {
                                    let v = read(info, m);
                                    let is_best = best(values, *better) == Some(v);
                                    view! { <td class:best=is_best>{show(v)}</td> }
                                }).collect_view()}
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            </div>
            <details class="share">
                <summary>"Share as Markdown"</summary>
                <textarea readonly rows="8" data-testid="compare-markdown">{markdown}</textarea>
            </details>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EngineKind;

    fn info(name: &str, bpw: f32) -> ModelInfo {
        ModelInfo {
            id: name.into(),
            name: name.into(),
            family: String::new(),
            parameters: String::new(),
            quantization: "Q4".into(),
            bits_per_weight: bpw,
            context_length: 1,
            engine: EngineKind::LlamaCpp,
            instruct: true,
            license: String::new(),
            description: String::new(),
            source: String::new(),
            provenance_note: None,
            default: false,
            available: true,
            reason: None,
            fix: None,
            size_bytes: Some(1 << 20),
            loaded: true,
            on_disk_bytes: Some(1 << 20),
            made_here: false,
            can_fetch: false,
            can_quantize: false,
            quantized_source: true,
            job: None,
        }
    }

    #[test]
    fn the_markdown_table_bolds_the_best_value_of_each_column() {
        let fast = GenerationMetrics {
            time_to_first_token_ms: 100.0,
            decode_tokens_per_s: 80.0,
            prompt_tokens_per_s: 300.0,
            generated_tokens: 10,
            model_resident_bytes: 200 << 20,
            ..Default::default()
        };
        let slow = GenerationMetrics {
            time_to_first_token_ms: 400.0,
            decode_tokens_per_s: 20.0,
            prompt_tokens_per_s: 90.0,
            generated_tokens: 12,
            model_resident_bytes: 600 << 20,
            ..Default::default()
        };
        let table = markdown_table(
            &[(info("small", 5.0), fast), (info("big", 4.85), slow)],
            false,
        );
        let small = table.lines().find(|l| l.starts_with("| small")).unwrap();
        let big = table.lines().find(|l| l.starts_with("| big")).unwrap();
        assert!(
            small.contains("**100**") && small.contains("**80.0**") && small.contains("**300.0**"),
            "{small}"
        );
        assert!(big.contains("**12**") && big.contains("**4.85**"), "{big}");
        assert!(!big.contains("**400**"));
        assert!(table.contains("one after another"));
    }
}
