//! `quantlab bench --reference`: prefill and decode speed of one model measured three ways in
//! one run — through our engine directly, through the HTTP API, and through upstream llama.cpp
//! (llama-cpp-python on the same GGUF, same threads, same prompt tokens) — with the ratios.

use std::{ops::ControlFlow, path::Path, time::Instant};

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::{
    cli::CommonArgs,
    config::Settings,
    inference::{
        llama_cpp::LlamaCppEngine, sampling::ResolvedSampling, template::PromptFormat, ChatEngine,
        TokenSink,
    },
    types::{ChatMessage, EngineKind, Role},
};

/// A prompt long enough to measure prefill, asking for an answer long enough to measure decode.
const PROMPT: &str = super::runner::PROMPTS[1].text;

pub struct ReferenceArgs {
    pub model: String,
    pub tokens: u32,
    pub repeats: usize,
    pub no_upstream: bool,
    pub python: String,
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
struct Speed {
    prompt_tokens: usize,
    prefill_tok_s: f64,
    decode_tokens: usize,
    decode_tok_s: f64,
}

fn median(values: Vec<f64>) -> f64 {
    super::stats::Stat::of(&values).map_or(0.0, |s| s.median)
}

fn median_speed(runs: &[Speed]) -> Speed {
    Speed {
        prompt_tokens: runs.first().map(|r| r.prompt_tokens).unwrap_or(0),
        prefill_tok_s: median(runs.iter().map(|r| r.prefill_tok_s).collect()),
        decode_tokens: runs.first().map(|r| r.decode_tokens).unwrap_or(0),
        decode_tok_s: median(runs.iter().map(|r| r.decode_tok_s).collect()),
    }
}

struct CountingSink;

impl TokenSink for CountingSink {
    fn cancelled(&mut self) -> bool {
        false
    }
    fn piece(&mut self, _text: &str) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
}

pub fn run(common: &CommonArgs, args: ReferenceArgs) -> anyhow::Result<()> {
    let registry = crate::cli::load_registry(common)?;
    let entry = llama_cpp_entry(&registry, &args.model)?;
    let path = registry.file_path(entry);
    let threads = common.threads.unwrap_or_else(Settings::default_threads);
    let context = 2048;
    println!(
        "model {} ({}), {threads} threads, {} tokens per run, median of {} runs after a warm-up",
        entry.id,
        path.display(),
        args.tokens,
        args.repeats
    );

    let mut engine = LlamaCppEngine::load(&path, context, threads)?;
    let messages = vec![ChatMessage {
        role: Role::User,
        content: PROMPT.to_string(),
    }];
    let facts = engine.facts().clone();
    let format = match (&facts.chat_template, entry.instruct) {
        (Some(t), true) => PromptFormat::Chat {
            template: t.clone(),
            bos_token: facts.bos_token,
            eos_token: facts.eos_token,
        },
        _ => PromptFormat::Completion,
    };
    let prompt = format.render(&messages)?;
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
        max_tokens: args.tokens,
        seed: 0,
    };

    let mut direct = Vec::new();
    for run in 0..=args.repeats {
        let stats = engine.generate(&prompt, &sampling, &mut CountingSink)?;
        let speed = Speed {
            prompt_tokens: stats.prompt_tokens,
            prefill_tok_s: stats.prompt_tokens as f64 / stats.prompt_secs,
            decode_tokens: stats.decode_calls,
            decode_tok_s: stats.decode_calls as f64 / stats.decode_secs.max(1e-9),
        };
        if run > 0 {
            direct.push(speed);
        }
    }
    let direct = median_speed(&direct);
    drop(engine);

    let http = bench_http(common, &registry, entry.id.clone(), &args, threads)?;
    let upstream = if args.no_upstream {
        None
    } else {
        match bench_upstream(
            &args,
            &path,
            &prompt,
            threads,
            context,
            direct.decode_tokens,
        ) {
            Ok(speed) => Some(speed),
            Err(e) => {
                println!("upstream llama.cpp: not measured ({e:#})");
                None
            }
        }
    };

    println!();
    println!(
        "{:<34} {:>8} {:>14} {:>8} {:>14}",
        "method", "prompt", "prefill tok/s", "decoded", "decode tok/s"
    );
    let row = |name: &str, s: &Speed| {
        println!(
            "{:<34} {:>8} {:>14.1} {:>8} {:>14.1}",
            name, s.prompt_tokens, s.prefill_tok_s, s.decode_tokens, s.decode_tok_s
        );
    };
    row("quantlab engine (direct)", &direct);
    row("quantlab HTTP /api/chat/stream", &http);
    if let Some(up) = &upstream {
        row("upstream llama.cpp (llama-cpp-python)", up);
        if up.prompt_tokens != direct.prompt_tokens {
            println!(
                "warning: upstream tokenized the prompt to {} tokens, we to {}",
                up.prompt_tokens, direct.prompt_tokens
            );
        }
        println!();
        println!(
            "ratio engine/upstream: prefill {:.3}x, decode {:.3}x",
            direct.prefill_tok_s / up.prefill_tok_s,
            direct.decode_tok_s / up.decode_tok_s
        );
        println!(
            "ratio HTTP/upstream:   prefill {:.3}x, decode {:.3}x",
            http.prefill_tok_s / up.prefill_tok_s,
            http.decode_tok_s / up.decode_tok_s
        );
    }
    Ok(())
}

/// The registry entry of `model`, which must be a downloaded llama.cpp model: the benches that
/// compare with upstream llama.cpp run nothing else.
pub(super) fn llama_cpp_entry<'r>(
    registry: &'r crate::registry::Registry,
    model: &str,
) -> anyhow::Result<&'r crate::registry::ModelEntry> {
    available_entry(
        registry,
        model,
        &[EngineKind::LlamaCpp],
        "this bench compares llama.cpp models with upstream llama.cpp",
    )
}

/// The downloaded model `model`, if its engine is one of `engines` (`purpose` says why not).
pub(super) fn available_entry<'r>(
    registry: &'r crate::registry::Registry,
    model: &str,
    engines: &[EngineKind],
    purpose: &str,
) -> anyhow::Result<&'r crate::registry::ModelEntry> {
    let entry = registry
        .get(model)
        .with_context(|| format!("unknown model `{model}`"))?;
    if !engines.contains(&entry.engine) {
        bail!("{purpose}; `{}` uses {}", entry.id, entry.engine.label());
    }
    if let Some((reason, fix)) = registry.unavailability(entry) {
        bail!(
            "{reason} {}",
            fix.map(|f| format!("Run `{f}`.")).unwrap_or_default()
        );
    }
    Ok(entry)
}

/// Runs the real server in-process on a loopback port and reads the metrics it reports.
fn bench_http(
    common: &CommonArgs,
    registry: &crate::registry::Registry,
    model: String,
    args: &ReferenceArgs,
    threads: u32,
) -> anyhow::Result<Speed> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let settings = Settings {
            models_file: common.models_file.clone(),
            models_dir: common.models_dir.clone(),
            threads,
            context_size: 2048,
            ..Settings::default()
        };
        // The bench saves nothing; a throwaway folder keeps it away from real conversations.
        let scratch = tempfile::tempdir()?;
        let store = std::sync::Arc::new(crate::storage::json::JsonStore::open(scratch.path())?);
        let app = crate::state::App::new(settings, registry.clone(), store);
        let router = crate::server::router(
            app.clone(),
            leptos::config::LeptosOptions::builder()
                .output_name("quantlab")
                .build(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(crate::server::connections::accept(
            listener,
            router,
            app.settings.limits.clone(),
            app.shutdown.clone(),
        ));
        let client = reqwest::Client::new();
        let mut runs = Vec::new();
        for run in 0..=args.repeats {
            let wall = Instant::now();
            let body = serde_json::json!({
                "model": model, "messages": [{"role": "user", "content": PROMPT}],
                "temperature": 0.0, "repeat_penalty": 1.0, "max_tokens": args.tokens,
            });
            let text = client
                .post(format!("http://{addr}/api/chat/stream"))
                .json(&body)
                .send()
                .await?
                .error_for_status()?
                .text()
                .await?;
            let wall = wall.elapsed().as_secs_f64();
            let metrics = text
                .split("event: metrics\ndata: ")
                .nth(1)
                .and_then(|rest| rest.lines().next())
                .context("no metrics event in the HTTP stream")?;
            let m: crate::types::GenerationMetrics = serde_json::from_str(metrics)?;
            // The server's own clock must agree with ours: its total cannot exceed our wall time.
            anyhow::ensure!(
                m.total_ms / 1e3 <= wall + 0.005,
                "server reported {} ms but the request took {wall} s",
                m.total_ms
            );
            if run > 0 {
                runs.push(Speed {
                    prompt_tokens: m.prompt_tokens as usize,
                    prefill_tok_s: m.prompt_tokens_per_s,
                    decode_tokens: m.generated_tokens.saturating_sub(1) as usize,
                    decode_tok_s: m.decode_tokens_per_s,
                });
            }
        }
        Ok(median_speed(&runs))
    })
}

/// Upstream llama.cpp through llama-cpp-python: same file, threads, batch size and prompt.
fn bench_upstream(
    args: &ReferenceArgs,
    path: &Path,
    prompt: &str,
    threads: u32,
    context: u32,
    decode_tokens: usize,
) -> anyhow::Result<Speed> {
    let input = serde_json::json!({
        "model": path, "prompt": prompt, "threads": threads, "n_ctx": context,
        "n_batch": 512, "decode_tokens": decode_tokens, "repeats": args.repeats,
    });
    super::python::run_script(&args.python, &super::python::UPSTREAM_LLAMA_CPP, &input)
        .context("upstream llama.cpp")
}
