//! `quantlab bench --concurrency 1,2,4,8`: many clients at once through the OpenAI-compatible
//! API, against our binary and upstream `llama-server` started on the same GGUF, threads, slots
//! and context in the same run; then a growing conversation, to show what the prompt cache does
//! to time to first token. Both servers get the same requests from the same client code, and
//! every figure is measured on the client side.

mod client;
mod servers;

use std::path::PathBuf;

use anyhow::{bail, Context};
use serde::Serialize;

use self::{
    client::{stream_completion, Completion},
    servers::{Server, Shape},
};
use super::stats::Stat;
use crate::{cli::CommonArgs, config::Settings, types::EngineKind};

pub struct LoadArgs {
    pub model: String,
    pub concurrency: Vec<usize>,
    pub tokens: u32,
    pub repeats: usize,
    /// Turns of the conversation bench whose TTFT is reported (the conversation runs to the last).
    pub turns: Vec<usize>,
    pub llama_server: Option<PathBuf>,
    pub no_upstream: bool,
    pub json: Option<PathBuf>,
}

/// Questions that ask for long answers, one per client; different prompts, so no client's cache
/// serves another's.
const PROMPTS: [&str; 8] = [
    "Explain how a bicycle stays upright while moving. Be thorough.",
    "Describe the water cycle step by step, with examples.",
    "Write a short story about a lighthouse keeper and a storm.",
    "List the planets of the solar system and describe each one.",
    "Explain how bread is made, from flour to loaf, in detail.",
    "Describe the history of the printing press and its effects.",
    "Explain what a computer does when you press a key on the keyboard.",
    "Write a letter to a friend describing a trip to the mountains.",
];

/// The conversation bench's user turns.
const TURNS: [&str; 10] = [
    "I am planning a vegetable garden. What should I think about first?",
    "Which vegetables are easiest for a beginner?",
    "How often should I water tomatoes?",
    "What about carrots?",
    "How do I keep slugs away without chemicals?",
    "When should I plant lettuce?",
    "Can I grow herbs next to the vegetables?",
    "What is companion planting?",
    "How do I make compost?",
    "Summarise the three most important tips from our conversation.",
];

const SYSTEM: &str = "You are a helpful gardening assistant. Answer clearly and practically.";

#[derive(Debug, Serialize)]
struct Level {
    server: &'static str,
    concurrency: usize,
    /// Generated tokens of all clients ÷ the round's wall time, median over rounds.
    aggregate_tok_s: f64,
    /// Each reply's decode rate (tokens after the first ÷ time from first to last token).
    per_request_tok_s: Stat,
    ttft_p50_ms: f64,
    ttft_p95_ms: f64,
    generated_tokens_per_reply: f64,
}

#[derive(Debug, Serialize)]
struct Turn {
    server: &'static str,
    turn: usize,
    prompt_tokens: u64,
    cached_tokens: Option<u64>,
    ttft_ms: f64,
}

#[derive(Debug, Serialize)]
struct LoadReport {
    model: String,
    cpu: String,
    threads: u32,
    slots: usize,
    tokens: u32,
    levels: Vec<Level>,
    conversation: Vec<Turn>,
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(f64::total_cmp);
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub fn run(common: &CommonArgs, args: LoadArgs) -> anyhow::Result<()> {
    let registry = crate::cli::load_registry(common)?;
    let entry = super::reference::available_entry(
        &registry,
        &args.model,
        &[EngineKind::LlamaCpp, EngineKind::Bitnet],
        "this bench serves models of the engines that batch (llama.cpp, BitNet)",
    )?;
    let bitnet = entry.engine == EngineKind::Bitnet;
    if args.concurrency.is_empty() || args.concurrency.iter().any(|&n| !(1..=64).contains(&n)) {
        bail!("--concurrency takes levels from 1 to 64, e.g. 1,2,4,8");
    }
    let gguf = registry.file_path(entry);
    let shape = Shape {
        threads: common
            .threads
            .unwrap_or_else(Settings::default_threads)
            .max(1),
        // As many slots as the heaviest level would need, capped where the defaults are: a
        // level above the slots measures queueing, as a real server would do.
        slots: args
            .concurrency
            .iter()
            .copied()
            .max()
            .unwrap_or(1)
            .min(crate::config::DEFAULT_PARALLEL),
        context_per_slot: 2048,
    };
    let upstream = if args.no_upstream {
        None
    } else if bitnet {
        // Upstream llama.cpp cannot read I2_S; bitnet.cpp's own llama-server can.
        args.llama_server.clone()
    } else {
        args.llama_server
            .clone()
            .or_else(servers::default_llama_server)
    };
    let cpu = super::machine::machine_info(shape.threads).cpu;
    println!(
        "model {} ({}), CPU {cpu}, {} threads, {} slots × {} tokens of context, {} tokens per reply, greedy, median of {} rounds after a warm-up",
        entry.id,
        gguf.display(),
        shape.threads,
        shape.slots,
        shape.context_per_slot,
        args.tokens,
        args.repeats
    );

    let runtime = tokio::runtime::Runtime::new()?;
    let mut report = LoadReport {
        model: entry.id.clone(),
        cpu,
        threads: shape.threads,
        slots: shape.slots,
        tokens: args.tokens,
        levels: Vec::new(),
        conversation: Vec::new(),
    };
    let mut servers: Vec<Box<dyn FnOnce() -> anyhow::Result<Server>>> = Vec::new();
    let model = entry.id.clone();
    servers.push(Box::new(|| Server::quantlab(common, &shape)));
    match &upstream {
        Some(binary) => servers.push(Box::new(|| Server::llama_server(binary, &gguf, &shape))),
        None if !args.no_upstream && bitnet => println!(
            "llama-server: not measured (for a BitNet I2_S file, pass bitnet.cpp's: --llama-server DIR/build/bin/llama-server, built by scripts/bitnet-cpp.sh)"
        ),
        None if !args.no_upstream => println!(
            "llama-server: not measured (build it with scripts/build-llama-server.sh, or pass --llama-server PATH)"
        ),
        None => {}
    }
    for start in servers {
        let mut server = start()?;
        let (levels, turns) = runtime.block_on(measure(&mut server, &model, &args))?;
        report.levels.extend(levels);
        report.conversation.extend(turns);
    }
    print_report(&report, &args);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("\nJSON: {}", path.display());
    }
    Ok(())
}

/// Every level, then the conversation, against one running server.
async fn measure(
    server: &mut Server,
    model: &str,
    args: &LoadArgs,
) -> anyhow::Result<(Vec<Level>, Vec<Turn>)> {
    // A new connection per request: llama-server closes idle keep-alive connections on its own
    // schedule, and a request sent on one it just closed would fail as if the server had.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    server.wait_listening(&client).await?;
    let one = |prompt: &str, cache_prompt: bool| {
        serde_json::json!({
            "model": model,
            "messages": [{ "role": "user", "content": prompt }],
            // The repeat penalty spelled out: the two servers' defaults differ (1.1 and 1.0),
            // and with different penalties they would write different texts. No reply ends
            // before `--tokens` (both servers take `ignore_eos`), so every level decodes the
            // same number of tokens, random-weight models included.
            "temperature": 0.0, "repeat_penalty": 1.0, "ignore_eos": true,
            "max_tokens": args.tokens, "cache_prompt": cache_prompt,
        })
    };
    // The warm-up loads the model (the server answers 503 until then) and touches every page.
    client::until_loaded(&client, &server.url, &one(PROMPTS[0], false)).await?;

    let mut levels = Vec::new();
    for &n in &args.concurrency {
        let mut aggregate = Vec::new();
        let mut replies: Vec<Completion> = Vec::new();
        for round in 0..=args.repeats {
            let started = std::time::Instant::now();
            // Every client evaluates its whole prompt: the cache is measured separately below.
            let requests = (0..n).map(|i| {
                stream_completion(&client, &server.url, one(PROMPTS[i % PROMPTS.len()], false))
            });
            let done = match futures::future::try_join_all(requests).await {
                Ok(done) => done,
                Err(e) => {
                    // A crash explains itself better than the broken connection it caused.
                    server.check_running()?;
                    return Err(e.context(format!("{} at {n} at once", server.name)));
                }
            };
            let wall = started.elapsed().as_secs_f64();
            server.check_running()?;
            if round == 0 {
                continue;
            }
            let generated: u64 = done.iter().map(|c| c.completion_tokens).sum();
            aggregate.push(generated as f64 / wall);
            replies.extend(done);
        }
        let ttfts: Vec<f64> = replies.iter().map(|c| c.ttft_s * 1e3).collect();
        let rates: Vec<f64> = replies
            .iter()
            .filter_map(Completion::decode_tok_s)
            .collect();
        levels.push(Level {
            server: server.name,
            concurrency: n,
            aggregate_tok_s: Stat::of(&aggregate).map_or(f64::NAN, |s| s.median),
            per_request_tok_s: Stat::of(&rates).context("no reply generated two tokens")?,
            ttft_p50_ms: percentile(&ttfts, 0.5),
            ttft_p95_ms: percentile(&ttfts, 0.95),
            generated_tokens_per_reply: replies
                .iter()
                .map(|c| c.completion_tokens as f64)
                .sum::<f64>()
                / replies.len().max(1) as f64,
        });
        println!("  {} at {n} at once: done", server.name);
    }

    // A growing conversation: every turn sends the whole history, cache on, one client.
    let mut turns = Vec::new();
    let mut messages = vec![serde_json::json!({ "role": "system", "content": SYSTEM })];
    let last = args
        .turns
        .iter()
        .copied()
        .max()
        .unwrap_or(0)
        .min(TURNS.len());
    for (index, question) in TURNS.iter().take(last).enumerate() {
        messages.push(serde_json::json!({ "role": "user", "content": question }));
        let body = serde_json::json!({
            "model": model, "messages": messages, "temperature": 0.0, "repeat_penalty": 1.0,
            "max_tokens": 48, "cache_prompt": true,
        });
        let reply = stream_completion(&client, &server.url, body).await?;
        if args.turns.contains(&(index + 1)) {
            turns.push(Turn {
                server: server.name,
                turn: index + 1,
                prompt_tokens: reply.prompt_tokens,
                cached_tokens: reply.cached_tokens,
                ttft_ms: reply.ttft_s * 1e3,
            });
        }
        messages.push(serde_json::json!({ "role": "assistant", "content": reply.text }));
    }
    println!("  {}: conversation done", server.name);
    Ok((levels, turns))
}

fn print_report(report: &LoadReport, args: &LoadArgs) {
    println!();
    println!(
        "{:<13} {:>5} {:>13} {:>26} {:>12} {:>12} {:>12}",
        "server",
        "at once",
        "aggregate tok/s",
        "per-reply decode tok/s",
        "TTFT p50 ms",
        "TTFT p95 ms",
        "tokens/reply"
    );
    for l in &report.levels {
        println!(
            "{:<13} {:>7} {:>15.1} {:>26} {:>12.0} {:>12.0} {:>12.1}",
            l.server,
            l.concurrency,
            l.aggregate_tok_s,
            l.per_request_tok_s.display(1),
            l.ttft_p50_ms,
            l.ttft_p95_ms,
            l.generated_tokens_per_reply
        );
    }
    let find = |server: &str, n: usize| {
        report
            .levels
            .iter()
            .find(|l| l.server == server && l.concurrency == n)
            .map(|l| l.aggregate_tok_s)
    };
    println!();
    for &n in &args.concurrency {
        let ours = find("quantlab", n);
        if let (Some(ours), Some(theirs)) = (ours, find("llama-server", n)) {
            println!(
                "aggregate at {n} at once, quantlab ÷ llama-server: {:.2}x",
                ours / theirs
            );
        }
        if let (Some(ours), Some(alone)) = (ours, find("quantlab", 1)) {
            if n > 1 {
                println!(
                    "aggregate at {n} at once ÷ quantlab alone: {:.2}x",
                    ours / alone
                );
            }
        }
    }

    println!();
    println!(
        "{:<13} {:>5} {:>14} {:>14} {:>10}",
        "server", "turn", "prompt tokens", "cached tokens", "TTFT ms"
    );
    for t in &report.conversation {
        println!(
            "{:<13} {:>5} {:>14} {:>14} {:>10.0}",
            t.server,
            t.turn,
            t.prompt_tokens,
            t.cached_tokens.map_or("-".into(), |c| c.to_string()),
            t.ttft_ms
        );
    }
    for server in ["quantlab", "llama-server"] {
        let ttft = |turn: usize| {
            report
                .conversation
                .iter()
                .find(|t| t.server == server && t.turn == turn)
                .map(|t| t.ttft_ms)
        };
        let first = args.turns.iter().copied().min().unwrap_or(1);
        let last = args.turns.iter().copied().max().unwrap_or(1);
        if let (Some(a), Some(b)) = (ttft(first), ttft(last)) {
            if last > first {
                println!(
                    "{server}: TTFT at turn {last} ÷ turn {first}: {:.2}x",
                    b / a
                );
            }
        }
    }
}
