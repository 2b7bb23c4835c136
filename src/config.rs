//! Run-time settings, read in one place: command-line flags with environment fallbacks.

use std::{path::PathBuf, time::Duration};

/// Limits and timeouts that protect the server from bad, excessive or hostile input, in one
/// place (the README's table lists them). Each is explicit and tested.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest HTTP request body (413 beyond).
    pub max_body_bytes: usize,
    /// Largest conversation import (`POST /api/conversations`), which may carry long histories.
    pub max_import_bytes: usize,
    /// Largest websocket message from the browser (the socket gets an error and closes beyond).
    pub max_ws_message_bytes: usize,
    /// Most messages in one chat request.
    pub max_messages: usize,
    /// Most characters across all messages of one request, checked before tokenizing.
    pub max_prompt_chars: usize,
    /// Highest `max_tokens` a request may ask for.
    pub max_new_tokens: u32,
    /// Requests that may wait per model worker (503 + Retry-After beyond).
    pub queue_capacity: usize,
    /// Parts in a multipart upload (OCR: `file` and `model`); more is 400.
    pub max_multipart_fields: usize,
    /// Websockets one client address may hold open at once (429 beyond).
    pub max_websockets_per_client: usize,
    /// Connections the server holds at once; further ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// A client must send a request's headers within this time (slowloris), or is cut off.
    pub header_read_timeout: Duration,
    /// A request body must arrive within this time in all (408 beyond).
    pub body_read_timeout: Duration,
    /// A client that takes nothing we send for this long is cut off, and its reply stopped.
    pub send_timeout: Duration,
    /// Websockets are pinged this often.
    pub websocket_ping_interval: Duration,
    /// A websocket from which nothing (not even a pong) arrives for this long is closed.
    pub websocket_idle_timeout: Duration,
    /// The longest one NER or OCR job may run (504 beyond; the job is stopped).
    pub analysis_timeout: Duration,
    /// On SIGTERM/SIGINT, running replies get this long to finish before they are stopped.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_import_bytes: 16 * 1024 * 1024,
            max_ws_message_bytes: 256 * 1024,
            max_messages: 200,
            max_prompt_chars: 200_000,
            max_new_tokens: 4096,
            queue_capacity: 4,
            max_multipart_fields: 4,
            max_websockets_per_client: 8,
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(30),
            websocket_ping_interval: Duration::from_secs(15),
            websocket_idle_timeout: Duration::from_secs(45),
            analysis_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Replies run together per model by default: see the README's batching measurements.
pub const DEFAULT_PARALLEL: usize = 4;

#[derive(Clone, Debug)]
pub struct Settings {
    /// The model registry file.
    pub models_file: PathBuf,
    /// Where `quantlab models fetch` puts weights and where local files are looked up.
    pub models_dir: PathBuf,
    /// CPU threads per model worker.
    pub threads: u32,
    /// Context window per reply (capped by the model's own).
    pub context_size: u32,
    /// Replies one loaded model runs together (continuous batching, llama.cpp engine); each
    /// slot holds a KV cache of `context_size` tokens.
    pub parallel: usize,
    /// Load the default model at start-up rather than on first use.
    pub preload_default: bool,
    /// The JSON conversation folder (always present: the store of last resort).
    pub conversations_dir: PathBuf,
    /// PostgreSQL, when configured.
    pub database_url: Option<String>,
    /// Where bench runs are stored.
    pub bench_dir: PathBuf,
    /// When set, the OpenAI-compatible API (`/v1/*`) requires it as a bearer token.
    pub api_key: Option<String>,
    pub limits: Limits,
}

impl Settings {
    /// Physical cores are what matters for matmul throughput; hyper-threads only add contention.
    pub fn default_threads() -> u32 {
        std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(2)
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            models_file: PathBuf::from("models.toml"),
            models_dir: PathBuf::from("models"),
            threads: Self::default_threads(),
            context_size: 4096,
            parallel: DEFAULT_PARALLEL,
            preload_default: true,
            conversations_dir: PathBuf::from("conversations"),
            database_url: None,
            bench_dir: PathBuf::from("bench-results"),
            api_key: None,
            limits: Limits::default(),
        }
    }
}
