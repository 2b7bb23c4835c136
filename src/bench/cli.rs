//! `quantlab bench`: the bench from the command line, with a progress bar and a table; the run
//! is saved where the Bench page finds it.

use std::{path::PathBuf, sync::atomic::AtomicBool};

use anyhow::{bail, Context};
use clap::Args;

use super::{
    results::BenchResults,
    runner::run_bench,
    types::{BenchConfig, BenchRun},
};
use crate::{cli::CommonArgs, config::Settings};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Model ids to measure, comma-separated (default: the registry's default model).
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<String>,
    /// Measured runs per prompt, after one warm-up per model; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub repeats: u32,
    /// Tokens generated per run (greedy).
    #[arg(long, default_value_t = 128)]
    pub tokens: u32,
    /// Text tokens scored for perplexity (0 skips it).
    #[arg(long, default_value_t = 1024)]
    pub perplexity_tokens: u32,
    /// Compare the other variants of its base model with this one (KL divergence and top-1
    /// agreement on the perplexity text); default: the variant with the most bits per weight.
    #[arg(long)]
    pub kl_reference: Option<String>,
    /// Also write the run as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Do not store the run in the bench folder (the Bench page would not show it).
    #[arg(long)]
    pub no_save: bool,
    /// Instead, compare our engine and HTTP API with upstream llama.cpp (llama-cpp-python) on
    /// the first model.
    #[arg(long)]
    pub reference: bool,
    /// Instead, measure the BitNet engine on BitNet b1.58 2B4T's shapes with random ternary
    /// weights (no download): decode tok/s against the memory-bandwidth roofline measured in
    /// the same run, prefill, and resident weight memory. `--tokens` sets the decode length.
    #[arg(long, conflicts_with = "reference")]
    pub bitnet: bool,
    /// Instead, time the default NER model against onnxruntime on the same ONNX file and inputs
    /// (`--python` with onnxruntime: scripts/bench-ner-deps.sh). `--repeats` runs per text.
    #[arg(long, conflicts_with_all = ["reference", "bitnet"])]
    pub ner: bool,
    /// Instead, time our OCR (every downloaded `[[ocr_models]]` entry) against RapidOCR on
    /// onnxruntime with the same PP-OCRv5 networks and against Tesseract, on a clean page and a
    /// phone photo of it, with character error rates (`--python` with RapidOCR:
    /// scripts/bench-ocr-deps.sh). `--repeats` runs per image.
    #[arg(long, conflicts_with_all = ["reference", "bitnet", "ner"])]
    pub ocr: bool,
    /// Instead, serve the first model to this many clients at once (e.g. 1,2,4,8) through the
    /// OpenAI-compatible API, our binary and upstream `llama-server` with the same GGUF, threads
    /// and slots: aggregate and per-reply decode tok/s, TTFT p50/p95, ratios; then the TTFT of
    /// a growing conversation with the prompt cache (`--turns`). A BitNet model is served too;
    /// its upstream is bitnet.cpp's llama-server, given with `--llama-server`.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["reference", "bitnet", "ner", "ocr"])]
    pub concurrency: Vec<usize>,
    /// With --concurrency: the conversation turns whose TTFT is reported.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,5,10",
        requires = "concurrency"
    )]
    pub turns: Vec<usize>,
    /// With --concurrency: upstream llama-server (default: the newest build of
    /// scripts/build-llama-server.sh under ~/.cache/quantlab/upstream).
    #[arg(long, env = "QUANTLAB_LLAMA_SERVER", requires = "concurrency")]
    pub llama_server: Option<PathBuf>,
    /// With --bitnet: instead, bitnet.cpp side by side with our engine on one I2_S file, in one
    /// run: this is a bitnet.cpp checkout built by scripts/bitnet-cpp.sh (which also writes the
    /// 2B4T-sized dummy model used by default). `--repeats` sets the repetitions.
    #[arg(long, requires = "bitnet")]
    pub bitnet_cpp: Option<PathBuf>,
    /// With --bitnet-cpp: the I2_S GGUF both engines run (default: the script's dummy model).
    #[arg(long, requires = "bitnet_cpp")]
    pub bitnet_gguf: Option<PathBuf>,
    /// With --bitnet: prompt tokens for the prefill measurement.
    #[arg(long, default_value_t = 128, requires = "bitnet")]
    pub prompt_tokens: usize,
    /// With --bitnet: sequence counts decoded together in the batched-decode measurement
    /// (1 to 16 each; one read of the weights per pass serves them all); with --bitnet-cpp,
    /// against bitnet.cpp's llama-batched-bench on the same file.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,2,4",
        requires = "bitnet"
    )]
    pub sequences: Vec<usize>,
    /// With --bitnet: positions over which the int8 and Q6_K heads' next-token distributions
    /// are compared with the bf16 head's (KL divergence, top-1 agreement); 0 skips it.
    #[arg(long, default_value_t = 1024, requires = "bitnet")]
    pub kl_positions: usize,
    /// With --reference or --concurrency: skip the upstream side.
    #[arg(long)]
    pub no_upstream: bool,
    /// With --reference, --ner or --ocr: a Python with llama-cpp-python, onnxruntime or
    /// RapidOCR (scripts/bench-upstream-deps.sh, bench-ner-deps.sh, bench-ocr-deps.sh).
    #[arg(long, env = "QUANTLAB_BENCH_PYTHON", default_value = "python3")]
    pub python: String,
}

pub fn run(common: &CommonArgs, args: BenchArgs) -> anyhow::Result<()> {
    if common.database_url.is_some() {
        // The flag is global; say what it does here rather than silently ignore it.
        eprintln!(
            "note: bench runs are stored as files in {} (or --json); DATABASE_URL is used for conversations only",
            common.bench_dir.display()
        );
    }
    if args.bitnet {
        if !(1..=4096).contains(&args.tokens)
            || !(1..=4096).contains(&args.prompt_tokens)
            || args.kl_positions > 4096
        {
            bail!("--tokens and --prompt-tokens must be 1 to 4096, --kl-positions 0 to 4096");
        }
        if args.sequences.iter().any(|&n| !(1..=16).contains(&n)) {
            bail!("--sequences takes counts from 1 to 16, e.g. 1,2,4");
        }
        let threads = common
            .threads
            .map_or_else(Settings::default_threads, |t| t.max(1)) as usize;
        if let Some(checkout) = args.bitnet_cpp {
            return super::bitnet_cpp::run(&super::bitnet_cpp::BitnetCppArgs {
                checkout,
                model: args.bitnet_gguf,
                threads,
                prompt_tokens: args.prompt_tokens,
                decode_tokens: args.tokens as usize,
                repetitions: args.repeats.clamp(1, 20) as usize,
                sequences: args.sequences,
            });
        }
        return super::bitnet::run(&super::bitnet::BitnetBenchArgs {
            threads,
            decode_tokens: args.tokens as usize,
            prompt_tokens: args.prompt_tokens,
            kl_positions: args.kl_positions,
            sequences: args.sequences,
        });
    }
    let registry = crate::cli::load_registry(common)?;
    let threads = common
        .threads
        .map_or_else(Settings::default_threads, |t| t.max(1)) as usize;
    let repeats = args.repeats.clamp(1, 1000) as usize;
    if args.ner {
        return super::ner::run(&registry, &args.python, threads, repeats);
    }
    if args.ocr {
        return super::ocr::run(&registry, &args.python, threads, repeats);
    }
    let models = if args.models.is_empty() {
        vec![registry.default_id.clone()]
    } else {
        args.models.clone()
    };
    if !args.concurrency.is_empty() {
        return super::load::run(
            common,
            super::load::LoadArgs {
                model: models[0].clone(),
                concurrency: args.concurrency.clone(),
                tokens: args.tokens,
                repeats: repeats.min(100),
                turns: args.turns.clone(),
                llama_server: args.llama_server.clone(),
                no_upstream: args.no_upstream,
                json: args.json.clone(),
            },
        );
    }
    if args.reference {
        return super::reference::run(
            common,
            super::reference::ReferenceArgs {
                model: models[0].clone(),
                tokens: args.tokens,
                repeats: args.repeats as usize,
                no_upstream: args.no_upstream,
                python: args.python,
            },
        );
    }
    let config = BenchConfig {
        models,
        repeats: args.repeats,
        max_tokens: args.tokens,
        perplexity_tokens: args.perplexity_tokens,
        kl_reference: args.kl_reference,
    };
    if let Err(e) = config.validate() {
        bail!("{e}");
    }
    for id in &config.models {
        let entry = registry.get(id).with_context(|| {
            format!("unknown model `{id}`; `quantlab models list` shows the ids")
        })?;
        if let Some((reason, fix)) = registry.unavailability(entry) {
            bail!(
                "{id}: {reason}{}",
                fix.map(|f| format!(" Run `{f}`.")).unwrap_or_default()
            );
        }
    }
    let settings = Settings {
        models_file: common.models_file.clone(),
        models_dir: common.models_dir.clone(),
        threads: common
            .threads
            .unwrap_or_else(Settings::default_threads)
            .max(1),
        ..Settings::default()
    };

    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let cancel = AtomicBool::new(false);
    let run = run_bench(
        crate::registry::live::LiveRegistry::new(registry),
        &settings,
        &config,
        &cancel,
        &mut |p| {
            bar.set_length(u64::from(p.total_steps));
            bar.set_position(u64::from(p.step));
            bar.set_message(format!("{}: {}", p.model, p.phase));
        },
    );
    bar.finish_and_clear();

    print_run(&run);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&run)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("\nJSON: {}", path.display());
    }
    if !args.no_save {
        let saved = BenchResults::new(&common.bench_dir).save(&run)?;
        println!("saved: {} (the Bench page lists it)", saved.display());
    }
    if run.models.iter().any(|m| m.error.is_some()) {
        bail!("some models could not be measured (see above)");
    }
    Ok(())
}

/// Other engines against llama.cpp on the same file, when the run measured both.
fn print_engine_ratios(models: &[super::types::ModelBench]) {
    let ratios = super::ratios::engine_ratios(models);
    if ratios.is_empty() {
        return;
    }
    let x = |r: Option<f64>| r.map_or("-".into(), |r| format!("{r:.2}x"));
    println!("\nsame file, other engine ÷ llama.cpp (tok/s above 1 = faster; TTFT, memory above 1 = more):");
    for r in &ratios {
        println!(
            "  {} on {}: decode {}  prefill {}  TTFT {}  resident memory {}  perplexity {}",
            r.engine,
            r.file,
            x(r.decode),
            x(r.prefill),
            x(r.ttft),
            x(r.resident),
            x(r.perplexity)
        );
    }
}

fn print_run(run: &BenchRun) {
    let m = &run.machine;
    println!(
        "machine: {}, {} logical cores, {} threads, CPU SIMD [{}], built for [{}]",
        m.cpu,
        m.logical_cores,
        m.threads,
        m.cpu_simd.join(" "),
        m.build_simd.join(" ")
    );
    println!(
        "{} measured runs per prompt after a warm-up, {} tokens each, greedy; medians (min–max)\n",
        run.config.repeats, run.config.max_tokens
    );
    let fmt =
        |s: Option<super::stats::Stat>, digits: usize| s.map_or("-".into(), |s| s.display(digits));
    let mib = |b: Option<u64>| b.map_or("-".into(), |b| format!("{:.0}", b as f64 / 1048576.0));
    println!(
        "{:<28} {:<7} {:>5} {:>8} {:>8} {:>8} {:>12} {:>22} {:>22} {:>22}",
        "model",
        "quant",
        "bpw",
        "load ms",
        "RSS MiB",
        "peak MiB",
        "perplexity",
        "TTFT ms (short)",
        "prefill tok/s (long)",
        "decode tok/s"
    );
    for model in &run.models {
        println!(
            "{:<28} {:<7} {:>5.2} {:>8} {:>8} {:>8} {:>12} {:>22} {:>22} {:>22}",
            model.model,
            model.quantization,
            model.bits_per_weight,
            model.load_ms.map_or("-".into(), |v| format!("{v:.0}")),
            mib(model.resident_bytes),
            mib(model.peak_resident_bytes),
            model
                .perplexity
                .as_ref()
                .map_or("-".into(), |p| format!("{:.2}", p.perplexity)),
            fmt(model.ttft_ms(), 1),
            fmt(model.prefill_tok_s(), 1),
            fmt(model.decode_tok_s, 1),
        );
        for prompt in &model.prompts {
            println!(
                "  {:<10} {:>5} prompt tokens   TTFT {:>20} ms   prefill {:>20} tok/s   decode {:>20} tok/s",
                prompt.prompt,
                prompt.prompt_tokens,
                fmt(prompt.ttft_ms, 1),
                fmt(prompt.prefill_tok_s, 1),
                fmt(prompt.decode_tok_s, 1)
            );
        }
        if let Some(p) = &model.perplexity {
            println!(
                "  perplexity {:.3} over {} scored tokens of {} (windows of {}, {:.1} s)",
                p.perplexity, p.scored_tokens, p.text, p.window, p.secs
            );
        }
        if model.is_reference {
            println!("  reference for KL divergence");
        }
        if let Some(d) = &model.divergence {
            println!(
                "  against {}: mean KL {:.4e} nats (p99 {:.3e}, max {:.3e}), same top token {:.1}% over {} positions",
                d.reference,
                d.mean_kl,
                d.p99_kl,
                d.max_kl,
                d.top1_agreement * 100.0,
                d.positions
            );
        }
        if let Some(e) = &model.error {
            println!("  error: {e}");
        }
    }
    print_engine_ratios(&run.models);
    println!(
        "\nwall time {:.1} s{}",
        run.wall_ms / 1e3,
        if run.cancelled { " (cancelled)" } else { "" }
    );
}
