//! The Bench page: choose models and settings, run the bench (progress polled from the server,
//! so it survives a reload), then read the stored runs as a table and three charts, with CSV
//! and JSON export.

use std::time::Duration;

use leptos::prelude::*;

use super::{
    charts::{Bar, BarChart, Point, ScatterChart},
    widgets::{format_bytes, TopBar},
};
use crate::{
    api::{
        bench_fns::{bench_machine, bench_runs, cancel_bench, get_bench_status, start_bench},
        server_fns::list_models,
    },
    bench::{
        stats::Stat,
        types::{
            BenchConfig, BenchProgress, BenchRun, MachineInfo, ModelBench, MAX_BENCH_MODELS,
            MAX_BENCH_TOKENS, MAX_PERPLEXITY_TOKENS, MAX_REPEATS,
        },
    },
    types::ModelInfo,
};

const POLL_EVERY: Duration = Duration::from_millis(700);

#[component]
pub fn BenchPage() -> impl IntoView {
    let models = Resource::new(|| (), |_| list_models());
    let machine = Resource::new(|| (), |_| bench_machine());
    let runs_version = RwSignal::new(0u32);
    let runs = Resource::new(move || runs_version.get(), |_| bench_runs());
    view! {
        <div class="layout">
            <TopBar active="/bench" />
            <main class="compare bench">
                <Transition fallback=|| view! { <p class="loading">"Loading models…"</p> }>
                    {move || Suspend::new(async move {
                        match (models.await, machine.await) {
                            (Ok(list), Ok(machine)) => view! {
                                <BenchForm models=list machine=machine on_finished=Callback::new(move |_| runs_version.update(|v| *v += 1)) />
                            }.into_any(),
                            (Err(e), _) | (_, Err(e)) => view! { <p class="error" role="alert">{format!("Cannot load the bench: {e}")}</p> }.into_any(),
                        }
                    })}
                </Transition>
                <Transition fallback=|| view! { <p class="loading">"Loading results…"</p> }>
                    {move || Suspend::new(async move {
                        match runs.await {
                            Ok(list) if list.is_empty() => view! {
                                <p class="hint" data-testid="bench-empty">"No bench runs yet. Choose models above and press Run bench, or run "<code>"quantlab bench"</code>" in a terminal."</p>
                            }.into_any(),
                            Ok(list) => view! { <BenchResults runs=list /> }.into_any(),
                            Err(e) => view! { <p class="error" role="alert">{format!("Cannot read results: {e}")}</p> }.into_any(),
                        }
                    })}
                </Transition>
            </main>
        </div>
    }
}

fn machine_line(m: &MachineInfo) -> String {
    format!(
        "{} · {} logical cores · {} threads per model · CPU SIMD: {} · built for: {}{}",
        m.cpu,
        m.logical_cores,
        m.threads,
        if m.cpu_simd.is_empty() {
            "—".into()
        } else {
            m.cpu_simd.join(" ")
        },
        if m.build_simd.is_empty() {
            "baseline".into()
        } else {
            m.build_simd.join(" ")
        },
        m.memory_bytes
            .map(|b| format!(" · {} RAM", format_bytes(b)))
            .unwrap_or_default(),
    )
}

/// Asks the server where the bench is until it is done, then tells the page.
fn poll(
    progress: RwSignal<Option<BenchProgress>>,
    error: RwSignal<Option<String>>,
    started_from: Option<String>,
    on_finished: Callback<()>,
) {
    leptos::task::spawn_local(async move {
        match get_bench_status().await {
            Ok(status) if status.progress.is_some() => {
                progress.set(status.progress);
                set_timeout(
                    move || poll(progress, error, started_from, on_finished),
                    POLL_EVERY,
                );
            }
            Ok(status) => {
                progress.set(None);
                error.set(status.last_error);
                if status.latest_run != started_from {
                    on_finished.run(());
                }
            }
            Err(e) => {
                progress.set(None);
                error.set(Some(format!("Lost track of the bench: {e}")));
            }
        }
    });
}

#[component]
fn BenchForm(
    models: Vec<ModelInfo>,
    machine: MachineInfo,
    on_finished: Callback<()>,
) -> impl IntoView {
    let default_id = models
        .iter()
        .find(|m| m.default && m.available)
        .map(|m| m.id.clone());
    let chosen = RwSignal::new(default_id.into_iter().collect::<Vec<_>>());
    let repeats = RwSignal::new(3u32);
    let max_tokens = RwSignal::new(64u32);
    let perplexity_tokens = RwSignal::new(1024u32);
    let progress = RwSignal::new(None::<BenchProgress>);
    let error = RwSignal::new(None::<String>);
    let latest_before = StoredValue::new(None::<String>);

    // A bench started elsewhere (another tab, the API) shows its progress here too.
    Effect::new(move |_| {
        leptos::task::spawn_local(async move {
            if let Ok(status) = get_bench_status().await {
                latest_before.set_value(status.latest_run.clone());
                if status.progress.is_some() {
                    progress.set(status.progress);
                    poll(progress, error, status.latest_run, on_finished);
                }
            }
        });
    });

    let toggle = move |id: String, on: bool| {
        chosen.update(|list| {
            list.retain(|m| *m != id);
            if on {
                list.push(id);
            }
        })
    };
    let running = move || progress.with(Option::is_some);
    let can_run = move || !running() && (1..=MAX_BENCH_MODELS).contains(&chosen.with(Vec::len));
    let run = move |_| {
        if !can_run() {
            return;
        }
        let config = BenchConfig {
            models: chosen.get_untracked(),
            repeats: repeats.get_untracked(),
            max_tokens: max_tokens.get_untracked(),
            perplexity_tokens: perplexity_tokens.get_untracked(),
            kl_reference: None,
        };
        error.set(None);
        progress.set(Some(BenchProgress {
            step: 0,
            total_steps: 0,
            model: config.models[0].clone(),
            phase: "starting".into(),
        }));
        leptos::task::spawn_local(async move {
            let before = get_bench_status().await.ok().and_then(|s| s.latest_run);
            match start_bench(config).await {
                Ok(()) => poll(progress, error, before, on_finished),
                Err(e) => {
                    progress.set(None);
                    error.set(Some(e.to_string()));
                }
            }
        });
    };
    let cancel = move |_| {
        leptos::task::spawn_local(async move {
            let _ = cancel_bench().await;
        });
    };
    let number = move |signal: RwSignal<u32>, min: u32, max: u32| {
        move |ev: leptos::ev::Event| {
            if let Ok(v) = event_target_value(&ev).parse::<u32>() {
                signal.set(v.clamp(min, max));
            }
        }
    };

    view! {
        <section class="compare-form" aria-label="Bench settings">
            <p class="hint" data-testid="bench-machine">{machine_line(&machine)}</p>
            <fieldset class="compare-models">
                <legend>{format!("Models (1–{MAX_BENCH_MODELS}, run one after another)")}</legend>
                {models.into_iter().map(|m| {
                    let id = m.id.clone();
                    let checked = chosen.get_untracked().contains(&id);
                    let label = format!("{} · {} · {:.2} bpw", m.name, m.quantization, m.bits_per_weight);
                    view! {
                        <label class="model-choice" class:unavailable=!m.available title=m.reason.clone().unwrap_or_default()>
                            <input type="checkbox" value=id.clone() prop:checked=checked disabled=!m.available
                                on:change=move |ev| toggle(id.clone(), event_target_checked(&ev)) />
                            <span>{label}</span>
                        </label>
                    }
                }).collect_view()}
            </fieldset>
            <div class="compare-settings">
                <label>{format!("Runs per prompt (1–{MAX_REPEATS})")}
                    <input type="number" min="1" max=MAX_REPEATS prop:value=move || repeats.get().to_string()
                        on:change=number(repeats, 1, MAX_REPEATS) data-testid="bench-repeats" />
                </label>
                <label>{format!("Tokens per run (1–{MAX_BENCH_TOKENS})")}
                    <input type="number" min="1" max=MAX_BENCH_TOKENS prop:value=move || max_tokens.get().to_string()
                        on:change=number(max_tokens, 1, MAX_BENCH_TOKENS) data-testid="bench-tokens" />
                </label>
                <label>{format!("Perplexity tokens (0 skips, ≤{MAX_PERPLEXITY_TOKENS})")}
                    <input type="number" min="0" max=MAX_PERPLEXITY_TOKENS prop:value=move || perplexity_tokens.get().to_string()
                        on:change=number(perplexity_tokens, 0, MAX_PERPLEXITY_TOKENS) data-testid="bench-ppl-tokens" />
                </label>
            </div>
            <p class="hint">"Three fixed prompts (short, medium, long), greedy, after one warm-up per model; medians with min–max. Each model is loaded fresh so its load time and memory are measured. Chatting while a bench runs slows both. Variants of one model (same family and size, such as the quantizations made on the Models page) are also compared on the perplexity text: KL divergence and same top token against the variant with the most bits per weight."</p>
            <div class="compare-actions">
                <Show when=running fallback=move || view! {
                    <button class="send" on:click=run disabled=move || !can_run() data-testid="bench-run">"Run bench"</button>
                }>
                    <button class="stop" on:click=cancel data-testid="bench-cancel">"Cancel after this run"</button>
                </Show>
            </div>
            {move || progress.get().map(|p| view! {
                <div class="bench-progress" data-testid="bench-progress" role="status">
                    <progress max=p.total_steps.max(1) value=p.step></progress>
                    <span>{format!("{}/{} · {}: {}", p.step, p.total_steps, p.model, p.phase)}</span>
                </div>
            })}
            {move || error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
        </section>
    }
}

fn stat_cell(s: Option<Stat>, digits: usize) -> String {
    s.map_or_else(|| "—".into(), |s| s.display(digits))
}

fn bytes_cell(b: Option<u64>) -> String {
    b.map(format_bytes).unwrap_or_else(|| "—".into())
}

#[component]
fn BenchResults(runs: Vec<BenchRun>) -> impl IntoView {
    let runs = StoredValue::new(runs);
    let selected = RwSignal::new(0usize);
    let run = move || runs.with_value(|r| r.get(selected.get()).cloned());
    view! {
        <section class="compare-summary bench-results" aria-label="Bench results" data-testid="bench-results">
            <div class="bench-results-head">
                <h2>"Results"</h2>
                <select aria-label="Run" data-testid="bench-run-select" on:change=move |ev| {
                    if let Ok(i) = event_target_value(&ev).parse::<usize>() { selected.set(i) }
                }>
                    {runs.with_value(|list| list.iter().enumerate().map(|(i, r)| {
                        let names: Vec<&str> = r.models.iter().map(|m| m.model.as_str()).collect();
                        view! { <option value=i.to_string()>{format!("{} · {}", format_time(r.started_at_ms), names.join(", "))}</option> }
                    }).collect_view())}
                </select>
                <a href="/api/bench/results?format=csv" download="quantlab-bench.csv" data-testid="bench-csv">"CSV"</a>
                <a href="/api/bench/results" download="quantlab-bench.json">"JSON"</a>
            </div>
            {move || run().map(|run| view! { <RunView run /> })}
        </section>
    }
}

fn format_time(ms: i64) -> String {
    // UTC, so the server's rendering and the browser's hydration agree.
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let (h, m) = (secs.rem_euclid(86_400) / 3600, secs.rem_euclid(3600) / 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year}-{month:02}-{day:02} {h:02}:{m:02} UTC")
}

fn kl_cell(m: &ModelBench) -> String {
    match &m.divergence {
        Some(d) if d.mean_kl < 1e-3 => format!("{:.2e}", d.mean_kl),
        Some(d) => format!("{:.4}", d.mean_kl),
        None if m.is_reference => "reference".into(),
        None => "—".into(),
    }
}

/// One chart point per model that has both values, coloured by the model's position.
fn model_points(
    models: &[ModelBench],
    xy: impl Fn(&ModelBench) -> Option<(f64, f64)>,
) -> Vec<Point> {
    models
        .iter()
        .enumerate()
        .filter_map(|(series, m)| {
            let (x, y) = xy(m)?;
            Some(Point {
                label: m.model.clone(),
                x,
                y,
                series,
            })
        })
        .collect()
}

#[component]
fn RunView(run: BenchRun) -> impl IntoView {
    let best = |pick: fn(&ModelBench) -> Option<f64>, higher: bool| {
        let values = run.models.iter().filter_map(pick);
        if higher {
            values.fold(f64::NAN, f64::max)
        } else {
            values.fold(f64::NAN, f64::min)
        }
    };
    let best_decode = best(|m| m.decode_tok_s.map(|s| s.median), true);
    let best_ttft = best(|m| m.ttft_ms().map(|s| s.median), false);
    let best_ppl = best(|m| m.perplexity.as_ref().map(|p| p.perplexity), false);
    let is = |v: Option<f64>, best: f64| run.models.len() > 1 && v == Some(best);
    let rows = run.models.iter().map(|m| {
        view! {
            <tr>
                <th scope="row">{m.model.clone()}<br /><span class="hint">{format!("{} · {}", m.engine, m.quantization)}</span></th>
                <td>{format!("{:.2}", m.bits_per_weight)}</td>
                <td>{bytes_cell(m.file_bytes)}</td>
                <td>{m.load_ms.map(|v| format!("{v:.0}")).unwrap_or_else(|| "—".into())}</td>
                <td>{bytes_cell(m.resident_bytes)}</td>
                <td>{bytes_cell(m.peak_resident_bytes)}</td>
                <td class:best=is(m.ttft_ms().map(|s| s.median), best_ttft)>{stat_cell(m.ttft_ms(), 0)}</td>
                <td>{stat_cell(m.prefill_tok_s(), 1)}</td>
                <td class:best=is(m.decode_tok_s.map(|s| s.median), best_decode)>{stat_cell(m.decode_tok_s, 1)}</td>
                <td class:best=is(m.perplexity.as_ref().map(|p| p.perplexity), best_ppl)>
                    {m.perplexity.as_ref().map(|p| format!("{:.2}", p.perplexity)).unwrap_or_else(|| "—".into())}
                </td>
                <td data-testid="bench-kl">{kl_cell(m)}</td>
                <td>{m.divergence.as_ref().map(|d| format!("{:.1}%", d.top1_agreement * 100.0)).unwrap_or_else(|| if m.is_reference { "100%".into() } else { "—".into() })}</td>
            </tr>
            {m.error.clone().map(|e| view! { <tr><td colspan="12" class="error">{format!("{}: {e}", m.model)}</td></tr> })}
        }
    }).collect_view();
    let detail = run
        .models
        .iter()
        .flat_map(|m| {
            m.prompts.iter().map(move |p| {
                view! {
                    <tr>
                        <th scope="row">{format!("{} · {}", m.model, p.prompt)}</th>
                        <td>{p.prompt_tokens}</td>
                        <td>{p.samples.len()}</td>
                        <td>{stat_cell(p.ttft_ms, 0)}</td>
                        <td>{stat_cell(p.prefill_tok_s, 1)}</td>
                        <td>{stat_cell(p.decode_tok_s, 1)}</td>
                    </tr>
                }
            })
        })
        .collect_view();

    let decode_points = model_points(&run.models, |m| {
        Some((
            m.resident_bytes? as f64 / 1_048_576.0,
            m.decode_tok_s?.median,
        ))
    });
    let ppl_points = model_points(&run.models, |m| {
        Some((
            f64::from(m.bits_per_weight),
            m.perplexity.as_ref()?.perplexity,
        ))
    });
    // The reference is its own zero: one point per variant.
    let kl_points = model_points(&run.models, |m| {
        let kl = match &m.divergence {
            Some(d) => d.mean_kl,
            None if m.is_reference && m.perplexity.is_some() => 0.0,
            None => return None,
        };
        Some((f64::from(m.bits_per_weight), kl))
    });
    let speed_points = model_points(&run.models, |m| {
        Some((f64::from(m.bits_per_weight), m.decode_tok_s?.median))
    });
    let kl_note = run.models.iter().find(|m| m.is_reference).map(|r| format!(
        "KL divergence: KL(reference ‖ model) of the next-token distributions at every scored position of the perplexity text, in nats, against {} (the variant with the most bits, or the one chosen); 0 is identical. Same top token: how often both predict the same next token.",
        r.model
    ));
    let ttft_bars: Vec<Bar> = run
        .models
        .iter()
        .enumerate()
        .flat_map(|(i, m)| {
            m.prompts.iter().filter_map(move |p| {
                Some(Bar {
                    group: m.model.clone(),
                    label: format!("{} ({})", p.prompt, p.prompt_tokens),
                    value: p.ttft_ms?.median,
                    series: i,
                })
            })
        })
        .collect();
    let ppl_note = run.models.iter().find_map(|m| m.perplexity.as_ref()).map(|p| format!(
        "Perplexity: {} scored tokens of {} (public domain, see bench/texts/README.md), windows of {} with the second half scored. Lower is better; compare quantizations of the same model.",
        p.scored_tokens, p.text, p.window
    ));

    view! {
        <p class="hint" data-testid="bench-run-machine">{format!(
            "{} · runs per prompt: {} · tokens per run: {} · {:.1} s in all{}",
            machine_line(&run.machine), run.config.repeats, run.config.max_tokens, run.wall_ms / 1000.0,
            if run.cancelled { " · cancelled" } else { "" }
        )}</p>
        <div class="table-wrap">
            <table data-testid="bench-table">
                <thead><tr>
                    <th>"Model"</th><th>"Bits/weight"</th><th>"File"</th><th>"Load ms"</th><th>"Resident"</th><th>"Peak"</th>
                    <th>"TTFT ms (short)"</th><th>"Prefill tok/s (long)"</th><th>"Decode tok/s"</th><th>"Perplexity"</th>
                    <th>"KL vs reference"</th><th>"Same top token"</th>
                </tr></thead>
                <tbody>{rows}</tbody>
            </table>
        </div>
        <details>
            <summary>"Per prompt"</summary>
            <div class="table-wrap">
                <table>
                    <thead><tr><th>"Model · prompt"</th><th>"Prompt tokens"</th><th>"Runs"</th><th>"TTFT ms"</th><th>"Prefill tok/s"</th><th>"Decode tok/s"</th></tr></thead>
                    <tbody>{detail}</tbody>
                </table>
            </div>
        </details>
        <div class="charts">
            <ScatterChart title="Decode speed vs resident memory" x_label="resident memory (MiB)" y_label="decode tok/s" points=decode_points test_id="chart-decode-memory" />
            <ScatterChart title="Perplexity vs bits per weight" x_label="bits per weight" y_label="perplexity" points=ppl_points test_id="chart-ppl-bpw" />
            <BarChart title="Time to first token by prompt" unit="ms" bars=ttft_bars test_id="chart-ttft" />
            {(!kl_points.is_empty()).then(|| view! {
                <ScatterChart title="KL divergence vs bits per weight" x_label="bits per weight" y_label="mean KL (nats)" points=kl_points test_id="chart-kl-bpw" />
                <ScatterChart title="Decode speed vs bits per weight" x_label="bits per weight" y_label="decode tok/s" points=speed_points test_id="chart-decode-bpw" />
            })}
        </div>
        {ppl_note.map(|n| view! { <p class="hint">{n}</p> })}
        {kl_note.map(|n| view! { <p class="hint">{n}</p> })}
    }
}
