//! Runs a bench. Each model gets a fresh worker pool, so its load is measured; then a warm-up
//! reply, then every prompt of a fixed set `repeats` times through the same worker and metrics
//! code as a chat reply (so the bench and the UI report the same numbers), then perplexity.
//! Models run one after another: on a small machine, concurrent runs would distort each other.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Instant,
};

use super::{
    machine::machine_info,
    quality,
    stats::Stat,
    types::{
        BenchConfig, BenchProgress, BenchRun, ModelBench, PerplexityResult, PromptBench, Sample,
    },
};
use crate::{
    config::Settings,
    inference::{
        memory,
        workers::{PromptInput, Reply, RowObserver, WorkerPool},
        ResolvedSampling, ScoreWindow,
    },
    registry::{live::LiveRegistry, Registry},
    types::{ChatMessage, Role},
};

/// The perplexity text and its name (source and licence: bench/texts/README.md).
pub const PERPLEXITY_TEXT_NAME: &str = "alice-chapter-1.txt";
pub const PERPLEXITY_TEXT: &str = include_str!("../../bench/texts/alice-chapter-1.txt");
/// Tokens per perplexity window (the second half of each is scored).
pub const PERPLEXITY_WINDOW: usize = 512;

pub struct BenchPrompt {
    pub id: &'static str,
    pub text: &'static str,
}

/// The fixed prompt set: prefill cost grows with length, decode should not.
pub const PROMPTS: [BenchPrompt; 3] = [
    BenchPrompt {
        id: "short",
        text: "Name three uses of a paperclip.",
    },
    BenchPrompt {
        id: "medium",
        text: "You are reviewing a design for a small web application that runs quantized language models on an ordinary CPU. The application streams tokens to the browser, measures time to first token, prompt processing speed and decode speed, and lets people compare models side by side. It stores conversations in PostgreSQL with a fallback to JSON files. Write a detailed, well organised review: describe the strengths of the design, the risks you see for performance and reliability, and concrete improvements, with a short explanation for each.",
    },
    BenchPrompt {
        id: "long",
        text: "Summarise the following notes from a team meeting as a list of decisions and a list of open questions.\n\nNotes: The team met to plan the next release of the inventory service. Maria opened by reviewing last quarter: order volume grew by a third, the nightly batch that reconciles stock with the warehouses now takes almost four hours, and twice it overlapped with the morning peak, which slowed the checkout pages. Tom proposed splitting the batch by warehouse so the pieces can run in parallel; Aisha worried that the warehouses share suppliers and that parallel runs could double-count transfers between them. After discussion the team agreed to split the batch by warehouse but to process transfers in a final serial step. Priya raised the question of the reporting database, which is a copy refreshed every night; analysts have asked for fresher data, ideally hourly. Nobody was sure whether the current replication setup can support that without extra load on the primary; Tom will measure the replication lag under load before anything is promised. The team also discussed the mobile app: support tickets show that customers on slow connections see the product page time out, because it loads reviews, recommendations and stock levels in one request. Aisha suggested loading reviews and recommendations after the page renders; the team agreed and Maria will ask the design group whether placeholders are acceptable. Finally, the on-call rotation: two people left the team, so each engineer is on call every fourth week instead of every sixth. Priya asked whether alerts could be tuned, since a third of last month's pages were for disk space warnings that resolved themselves. The team agreed to review alert thresholds at the next meeting, but did not decide who would lead that review. The meeting ended with a reminder that the release freeze begins in three weeks.",
    },
];

/// Runs the whole bench. Never fails as a whole: a model that cannot run gets its error in its
/// entry and the others still run. `cancel` is checked between runs.
pub fn run_bench(
    registry: LiveRegistry,
    settings: &Settings,
    config: &BenchConfig,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(BenchProgress),
) -> BenchRun {
    let started = Instant::now();
    let started_at_ms = crate::storage::now_ms();
    let per_model =
        1 + PROMPTS.len() as u32 * config.repeats + u32::from(config.perplexity_tokens > 0);
    let mut steps = Steps {
        step: 0,
        total: per_model * config.models.len() as u32,
        progress,
    };
    let current = registry.current();
    let compared_with = quality::references(&current, config);
    let mut reference_rows = HashMap::new();
    let mut models = Vec::new();
    for id in quality::run_order(config, &compared_with) {
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        let quality = match compared_with.get(&id) {
            Some(reference) => match reference_rows.get(reference) {
                Some(rows) => Quality::Compare(reference.clone(), Arc::clone(rows)),
                None => Quality::Missing(reference.clone()),
            },
            None if compared_with.values().any(|r| *r == id) => {
                let (observer, rows) = quality::recorder();
                reference_rows.insert(id.clone(), rows);
                Quality::Record(observer)
            }
            None => Quality::None,
        };
        // A pool of its own: nothing the server already loaded is reused, so the load is real.
        let pool = WorkerPool::new(registry.clone(), settings.clone());
        models.push(bench_model(
            &pool, &current, &id, config, quality, cancel, &mut steps,
        ));
        pool.unload(&id);
    }
    // Results in the order asked for.
    models.sort_by_key(|m| config.models.iter().position(|id| *id == m.model));
    BenchRun {
        id: uuid::Uuid::new_v4().to_string(),
        started_at_ms,
        wall_ms: started.elapsed().as_secs_f64() * 1e3,
        machine: machine_info(settings.threads),
        config: config.clone(),
        models,
        cancelled: cancel.load(Ordering::Relaxed),
    }
}

struct Steps<'a> {
    step: u32,
    total: u32,
    progress: &'a mut dyn FnMut(BenchProgress),
}

impl Steps<'_> {
    fn next(&mut self, model: &str, phase: String) {
        self.step += 1;
        (self.progress)(BenchProgress {
            step: self.step,
            total_steps: self.total,
            model: model.to_string(),
            phase,
        });
    }
}

/// What the perplexity pass also does for a model.
enum Quality {
    None,
    /// Keep the logits: other models are compared with this one.
    Record(RowObserver),
    /// Compare with the reference's kept logits.
    Compare(String, Arc<Mutex<quality::ReferenceRows>>),
    /// The reference has no logits (it failed or was cancelled).
    Missing(String),
}

fn bench_model(
    pool: &WorkerPool,
    registry: &Registry,
    id: &str,
    config: &BenchConfig,
    quality: Quality,
    cancel: &AtomicBool,
    steps: &mut Steps<'_>,
) -> ModelBench {
    let mut result = ModelBench {
        model: id.to_string(),
        ..Default::default()
    };
    let Some(info) = registry.get(id).map(|e| registry.info(e, false)) else {
        result.error = Some(format!("unknown model `{id}`"));
        return result;
    };
    result.name = info.name;
    result.engine = info.engine.as_str().to_string();
    result.quantization = info.quantization;
    result.bits_per_weight = info.bits_per_weight;
    result.file_bytes = info.size_bytes;
    result.file = registry.get(id).map(|e| e.file.clone());
    let sampling = ResolvedSampling {
        // Every run evaluates its whole prompt: prefill is what is measured.
        cache_prompt: false,
        ignore_eos: false,
        constraint: None,
        stop: Vec::new(),
        logprobs: None,
        temperature: 0.0,
        top_p: 1.0,
        top_k: 0,
        repeat_penalty: 1.0,
        max_tokens: config.max_tokens,
        seed: 0,
    };

    let peak_tracked = memory::reset_peak();
    let baseline = memory::resident_bytes().unwrap_or(0);
    steps.next(id, "loading and warming up".into());
    if let Err(e) = generate(pool, id, PROMPTS[1].text, &sampling) {
        result.error = Some(e);
        return result;
    }
    if let Some(report) = pool.load_report(id) {
        result.load_ms = Some(report.load_ms);
        result.resident_bytes = Some(report.resident_bytes);
    }

    'prompts: for prompt in &PROMPTS {
        let mut samples = Vec::new();
        for run in 1..=config.repeats {
            if cancel.load(Ordering::Relaxed) {
                break 'prompts;
            }
            steps.next(
                id,
                format!("{} prompt, run {run} of {}", prompt.id, config.repeats),
            );
            match generate(pool, id, prompt.text, &sampling) {
                Ok(sample) => samples.push(sample),
                Err(e) => {
                    result.error = Some(e);
                    break 'prompts;
                }
            }
        }
        result.prompts.push(summarise(prompt.id, samples));
    }
    if peak_tracked {
        result.peak_resident_bytes =
            memory::peak_resident_bytes().map(|p| p.saturating_sub(baseline));
    }
    let all_decode: Vec<f64> = result
        .prompts
        .iter()
        .flat_map(|p| &p.samples)
        .filter(|s| s.metrics.generated_tokens > 1)
        .map(|s| s.metrics.decode_tokens_per_s)
        .collect();
    result.decode_tok_s = Stat::of(&all_decode);

    // Chat servers do not return every token's probability, so remote models have none.
    let can_score = info.engine != crate::types::EngineKind::Remote;
    if config.perplexity_tokens > 0
        && can_score
        && result.error.is_none()
        && !cancel.load(Ordering::Relaxed)
    {
        let (observer, comparison) = match quality {
            Quality::Record(observer) => {
                result.is_reference = true;
                (Some(observer), None)
            }
            Quality::Compare(reference, rows) => {
                let (observer, comparison) = quality::comparer(rows);
                (Some(observer), Some((reference, comparison)))
            }
            Quality::Missing(reference) => {
                result.error = Some(format!(
                    "not compared with `{reference}`: it has no results to compare with"
                ));
                (None, None)
            }
            Quality::None => (None, None),
        };
        let phase = match &comparison {
            Some((reference, _)) => {
                format!("perplexity on {PERPLEXITY_TEXT_NAME}, KL divergence against {reference}")
            }
            None => format!("perplexity on {PERPLEXITY_TEXT_NAME}"),
        };
        steps.next(id, phase);
        match perplexity(pool, id, config.perplexity_tokens as usize, observer) {
            Ok(p) => result.perplexity = Some(p),
            Err(e) => result.error = Some(e),
        }
        if let (Some((reference, comparison)), None) = (comparison, &result.error) {
            match quality::finish(&comparison, &reference) {
                Ok(divergence) => result.divergence = Some(divergence),
                Err(e) => result.error = Some(e),
            }
        }
    }
    result
}

/// One greedy reply through the worker, timed from outside as well.
fn generate(
    pool: &WorkerPool,
    id: &str,
    prompt: &str,
    sampling: &ResolvedSampling,
) -> Result<Sample, String> {
    let messages = vec![ChatMessage {
        role: Role::User,
        content: prompt.to_string(),
    }];
    let submitted = Instant::now();
    let mut generation = pool
        .submit(id, PromptInput::Chat(messages), sampling.clone(), submitted)
        .map_err(|e| e.to_string())?;
    let (mut first, mut last) = (None, None);
    while let Some(reply) = generation.replies.blocking_recv() {
        match reply {
            Reply::Queued { .. } => {}
            Reply::Token { .. } => {
                let now = Instant::now();
                first.get_or_insert(now);
                last = Some(now);
            }
            Reply::Done(metrics) => {
                let ms = |t: Instant| t.duration_since(submitted).as_secs_f64() * 1e3;
                let observed_decode_tok_s = match (first, last) {
                    (Some(f), Some(l)) if metrics.generated_tokens > 1 && l > f => Some(
                        f64::from(metrics.generated_tokens - 1) / l.duration_since(f).as_secs_f64(),
                    ),
                    _ => None,
                };
                return Ok(Sample {
                    observed_ttft_ms: first.map(ms).unwrap_or_else(|| ms(Instant::now())),
                    observed_decode_tok_s,
                    observed_total_ms: ms(Instant::now()),
                    metrics,
                });
            }
            Reply::Failed(error) => return Err(error.to_string()),
        }
    }
    Err(format!(
        "the worker for `{id}` stopped before finishing the reply"
    ))
}

fn summarise(prompt: &str, samples: Vec<Sample>) -> PromptBench {
    let of = |f: &dyn Fn(&Sample) -> f64| Stat::of(&samples.iter().map(f).collect::<Vec<_>>());
    PromptBench {
        prompt: prompt.to_string(),
        prompt_tokens: samples
            .first()
            .map(|s| s.metrics.prompt_tokens)
            .unwrap_or(0),
        ttft_ms: of(&|s| s.metrics.time_to_first_token_ms),
        prefill_tok_s: of(&|s| s.metrics.prompt_tokens_per_s),
        decode_tok_s: Stat::of(
            &samples
                .iter()
                .filter(|s| s.metrics.generated_tokens > 1)
                .map(|s| s.metrics.decode_tokens_per_s)
                .collect::<Vec<_>>(),
        ),
        generated_tokens: of(&|s| f64::from(s.metrics.generated_tokens)),
        samples,
    }
}

fn perplexity(
    pool: &WorkerPool,
    id: &str,
    max_tokens: usize,
    rows: Option<RowObserver>,
) -> Result<PerplexityResult, String> {
    let window = ScoreWindow {
        tokens: PERPLEXITY_WINDOW,
        max_text_tokens: max_tokens,
    };
    let scoring = pool
        .score(id, Arc::from(PERPLEXITY_TEXT), window, rows)
        .map_err(|e| e.to_string())?;
    let score = scoring
        .result
        .blocking_recv()
        .map_err(|_| format!("the worker for `{id}` stopped while scoring"))??;
    let perplexity = score
        .perplexity()
        .ok_or_else(|| "the text was too short to score".to_string())?;
    Ok(PerplexityResult {
        text: PERPLEXITY_TEXT_NAME.to_string(),
        perplexity,
        scored_tokens: score.scored_tokens as u32,
        evaluated_tokens: score.evaluated_tokens as u32,
        window: PERPLEXITY_WINDOW as u32,
        secs: score.secs,
    })
}
