//! Command-line interface: `serve`, `models …` (see [`models`]), `bench`.

pub mod models;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::{config::Settings, registry::Registry};

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
    Models(models::ModelsCommand),
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
        Command::Models(command) => models::run(&cli.common, command),
        Command::Bench(args) => crate::bench::cli::run(&cli.common, args),
    }
}
