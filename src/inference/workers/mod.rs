//! One worker thread per loaded model, fed by a bounded queue. Each job carries its own reply
//! channel; a closed channel (tab closed, HTTP client gone) or the job's cancel flag (Stop)
//! ends the work within one token and frees the worker for the next job.

use std::{
    collections::HashMap,
    ops::ControlFlow,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Instant,
};

use tokio::sync::{mpsc, oneshot};

use super::{
    bitnet::BitnetEngine,
    candle::CandleEngine,
    llama_cpp::LlamaCppEngine,
    memory,
    remote::RemoteEngine,
    score::{ScoreWindow, TextScore},
    template::PromptFormat,
    ChatEngine, EngineError, GenerationStats, ResolvedSampling, TokenSink,
};
use crate::{
    config::Settings,
    error::AppError,
    registry::{ModelEntry, Registry, RemoteSource},
    types::{ChatEvent, ChatMessage, EngineKind, GenerationMetrics},
};

/// Seconds a client is told to wait when a queue is full. A short reply on the default model
/// takes a few seconds on two cores.
const RETRY_AFTER_SECS: u32 = 5;

/// Work for a model's thread.
enum Job {
    Reply(ReplyJob),
    Score(ScoreJob),
}

/// A request for one reply.
pub struct ReplyJob {
    pub messages: Vec<ChatMessage>,
    pub sampling: ResolvedSampling,
    /// When the server accepted the request; time to first token counts from here.
    pub accepted_at: Instant,
    pub cancel: Arc<AtomicBool>,
    pub reply: mpsc::UnboundedSender<ChatEvent>,
}

/// A request to score a text (perplexity), used by the bench.
struct ScoreJob {
    text: Arc<str>,
    window: ScoreWindow,
    cancel: Arc<AtomicBool>,
    reply: oneshot::Sender<Result<TextScore, String>>,
}

/// The caller's side of a scoring job.
pub struct Scoring {
    pub result: oneshot::Receiver<Result<TextScore, String>>,
    pub cancel: Arc<AtomicBool>,
}

/// How loading a model went, measured by its worker.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoadReport {
    /// From the start of the worker thread to a warmed-up engine.
    pub load_ms: f64,
    /// Resident memory the load added to the process.
    pub resident_bytes: u64,
}

/// The caller's side of a submitted job.
pub struct Generation {
    pub events: mpsc::UnboundedReceiver<ChatEvent>,
    pub cancel: Arc<AtomicBool>,
}

impl Generation {
    /// Asks the worker to stop; the final `Done` event (finish reason `cancelled`) still arrives.
    pub fn stop(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct WorkerState {
    loaded: AtomicBool,
    failed: Mutex<Option<String>>,
    resident_bytes: AtomicU64,
    load_micros: AtomicU64,
}

struct Worker {
    queue: mpsc::Sender<Job>,
    state: Arc<WorkerState>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The loaded models and their queues.
pub struct WorkerPool {
    registry: Arc<Registry>,
    settings: Settings,
    workers: Mutex<HashMap<String, Worker>>,
}

impl WorkerPool {
    pub fn new(registry: Arc<Registry>, settings: Settings) -> Self {
        Self {
            registry,
            settings,
            workers: Mutex::new(HashMap::new()),
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The model entry for `id` if it exists and can run here.
    pub fn runnable(&self, id: &str) -> Result<&ModelEntry, AppError> {
        let entry = self.registry.get(id).ok_or_else(|| {
            AppError::NotFound(format!(
                "unknown model `{id}`; GET /api/models lists the ids"
            ))
        })?;
        if let Some((reason, fix)) = self.registry.unavailability(entry) {
            let fix = fix.map(|f| format!(" Run `{f}`.")).unwrap_or_default();
            return Err(AppError::ModelUnavailable(format!(
                "model `{id}` is not available: {reason}{fix}"
            )));
        }
        Ok(entry)
    }

    /// Starts loading a model in the background (used for the default model at start-up).
    pub fn preload(&self, id: &str) -> Result<(), AppError> {
        let entry = self.runnable(id)?.clone();
        let mut workers = self.lock();
        self.worker_for(&mut workers, &entry);
        Ok(())
    }

    pub fn is_loaded(&self, id: &str) -> bool {
        self.lock()
            .get(id)
            .is_some_and(|w| w.state.loaded.load(Ordering::Acquire))
    }

    /// Why the model's last load failed, if it did.
    pub fn load_error(&self, id: &str) -> Option<String> {
        self.lock()
            .get(id)
            .and_then(|w| w.state.failed.lock().ok().and_then(|f| f.clone()))
    }

    /// Frees a model: its queue closes, queued jobs still finish, then the engine is dropped.
    /// Blocks until the worker thread has ended, so its memory is back when this returns.
    pub fn unload(&self, id: &str) {
        let worker = self.lock().remove(id);
        if let Some(Worker { queue, thread, .. }) = worker {
            drop(queue);
            if let Some(thread) = thread {
                let _ = thread.join();
            }
        }
    }

    /// How the model's load went, once it is loaded.
    pub fn load_report(&self, id: &str) -> Option<LoadReport> {
        let workers = self.lock();
        let state = &workers.get(id)?.state;
        state.loaded.load(Ordering::Acquire).then(|| LoadReport {
            load_ms: state.load_micros.load(Ordering::Relaxed) as f64 / 1e3,
            resident_bytes: state.resident_bytes.load(Ordering::Relaxed),
        })
    }

    /// Queues a reply. Fails at once (never waits) when the model's queue is full.
    pub fn submit(
        &self,
        model_id: &str,
        messages: Vec<ChatMessage>,
        sampling: ResolvedSampling,
        accepted_at: Instant,
    ) -> Result<Generation, AppError> {
        let (reply, events) = mpsc::unbounded_channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let job = ReplyJob {
            messages,
            sampling,
            accepted_at,
            cancel: cancel.clone(),
            reply,
        };
        self.enqueue(model_id, Job::Reply(job))?;
        Ok(Generation { events, cancel })
    }

    /// Queues the scoring of a plain text (no chat template), for perplexity.
    pub fn score(
        &self,
        model_id: &str,
        text: Arc<str>,
        window: ScoreWindow,
    ) -> Result<Scoring, AppError> {
        let (reply, result) = oneshot::channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let job = ScoreJob {
            text,
            window,
            cancel: cancel.clone(),
            reply,
        };
        self.enqueue(model_id, Job::Score(job))?;
        Ok(Scoring { result, cancel })
    }

    fn enqueue(&self, model_id: &str, job: Job) -> Result<(), AppError> {
        let entry = self.runnable(model_id)?.clone();
        let mut workers = self.lock();
        let queue = self.worker_for(&mut workers, &entry);
        match queue.try_send(job) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(AppError::Overloaded {
                message: format!(
                    "model `{model_id}` is busy: {} requests are already waiting; retry shortly",
                    self.settings.limits.queue_capacity
                ),
                retry_after_secs: RETRY_AFTER_SECS,
            }),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                workers.remove(model_id);
                Err(AppError::ModelUnavailable(format!(
                    "the worker for `{model_id}` stopped; retry to load it again"
                )))
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Worker>> {
        // A panic while holding this lock cannot leave the map inconsistent; keep serving.
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The queue of a live worker for `entry`, spawning one if needed (or if the last load failed).
    fn worker_for(
        &self,
        workers: &mut HashMap<String, Worker>,
        entry: &ModelEntry,
    ) -> mpsc::Sender<Job> {
        let stale = workers.get(&entry.id).is_some_and(|w| {
            w.queue.is_closed() || w.state.failed.lock().map(|f| f.is_some()).unwrap_or(true)
        });
        if stale {
            workers.remove(&entry.id);
        }
        workers
            .entry(entry.id.clone())
            .or_insert_with(|| self.spawn(entry))
            .queue
            .clone()
    }

    fn spawn(&self, entry: &ModelEntry) -> Worker {
        let (queue, jobs) = mpsc::channel(self.settings.limits.queue_capacity.max(1));
        let state = Arc::new(WorkerState::default());
        let path = self.registry.file_path(entry);
        let spec = WorkerSpec {
            model_id: entry.id.clone(),
            engine: entry.engine,
            instruct: entry.instruct,
            path,
            context_size: self.settings.context_size.min(entry.context_length),
            threads: self.settings.threads,
            remote: entry.remote.clone(),
        };
        let thread_state = state.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("model-{}", entry.id))
            .spawn(move || run_worker(spec, thread_state, jobs));
        let thread = match spawned {
            Ok(handle) => Some(handle),
            Err(e) => {
                if let Ok(mut failed) = state.failed.lock() {
                    *failed = Some(format!("cannot start a worker thread: {e}"));
                }
                None
            }
        };
        Worker {
            queue,
            state,
            thread,
        }
    }
}

struct WorkerSpec {
    model_id: String,
    engine: EngineKind,
    instruct: bool,
    path: PathBuf,
    context_size: u32,
    threads: u32,
    remote: Option<RemoteSource>,
}

fn load_engine(spec: &WorkerSpec) -> Result<Box<dyn ChatEngine>, EngineError> {
    match spec.engine {
        EngineKind::LlamaCpp => Ok(Box::new(LlamaCppEngine::load(
            &spec.path,
            spec.context_size,
            spec.threads,
        )?)),
        EngineKind::Candle => Ok(Box::new(CandleEngine::load(
            &spec.path,
            spec.context_size,
            spec.threads,
        )?)),
        EngineKind::Bitnet => Ok(Box::new(BitnetEngine::load(
            &spec.path,
            spec.context_size,
            spec.threads,
        )?)),
        EngineKind::Remote => match &spec.remote {
            Some(source) => Ok(Box::new(RemoteEngine::load(source, spec.context_size)?)),
            None => Err(EngineError::Load {
                path: spec.model_id.clone(),
                detail: "a remote model needs a `remote` table in models.toml".into(),
            }),
        },
    }
}

fn prompt_format(spec: &WorkerSpec, engine: &dyn ChatEngine) -> Result<PromptFormat, String> {
    // A remote server applies its own template (see `ChatEngine::generate_messages`).
    if !spec.instruct || spec.engine == EngineKind::Remote {
        return Ok(PromptFormat::Completion);
    }
    let facts = engine.facts();
    match &facts.chat_template {
        Some(template) => Ok(PromptFormat::Chat {
            template: template.clone(),
            bos_token: facts.bos_token.clone(),
            eos_token: facts.eos_token.clone(),
        }),
        None => Err(format!(
            "model `{}` is declared as an instruct model but its file has no chat template",
            spec.model_id
        )),
    }
}

fn run_worker(spec: WorkerSpec, state: Arc<WorkerState>, mut jobs: mpsc::Receiver<Job>) {
    let load_started = Instant::now();
    let rss_before = memory::resident_bytes().unwrap_or(0);
    let loaded = load_engine(&spec).and_then(|engine| {
        let format = prompt_format(&spec, engine.as_ref()).map_err(EngineError::Template)?;
        Ok((engine, format))
    });
    let (mut engine, format) = match loaded {
        Ok(ok) => ok,
        Err(e) => {
            let message = format!("cannot load model `{}`: {e}", spec.model_id);
            tracing::error!("{message}");
            if let Ok(mut failed) = state.failed.lock() {
                *failed = Some(message.clone());
            }
            jobs.close();
            while let Some(job) = jobs.blocking_recv() {
                match job {
                    Job::Reply(job) => {
                        let _ = job.reply.send(ChatEvent::Error {
                            status: 503,
                            message: message.clone(),
                        });
                    }
                    Job::Score(job) => {
                        let _ = job.reply.send(Err(message.clone()));
                    }
                }
            }
            return;
        }
    };
    let resident = memory::resident_bytes()
        .unwrap_or(0)
        .saturating_sub(rss_before);
    state.resident_bytes.store(resident, Ordering::Relaxed);
    state
        .load_micros
        .store(load_started.elapsed().as_micros() as u64, Ordering::Relaxed);
    state.loaded.store(true, Ordering::Release);
    tracing::info!(model = %spec.model_id, resident_mib = resident >> 20, "model loaded");

    while let Some(job) = jobs.blocking_recv() {
        match job {
            Job::Reply(job) => {
                if job.reply.is_closed() {
                    continue;
                }
                let event = run_job(&spec, engine.as_mut(), &format, &job, resident);
                let _ = job.reply.send(event);
            }
            Job::Score(job) => {
                if job.reply.is_closed() {
                    continue;
                }
                let cancel = job.cancel.clone();
                let result = engine
                    .score(&job.text, job.window, &mut || {
                        cancel.load(Ordering::Relaxed)
                    })
                    .map_err(|e| e.to_string());
                let _ = job.reply.send(result);
            }
        }
    }
}

struct JobSink<'a> {
    job: &'a ReplyJob,
    first_piece_at: Option<Instant>,
}

impl TokenSink for JobSink<'_> {
    fn cancelled(&mut self) -> bool {
        self.job.cancel.load(Ordering::Relaxed) || self.job.reply.is_closed()
    }

    fn piece(&mut self, text: &str) -> ControlFlow<()> {
        self.first_piece_at.get_or_insert_with(Instant::now);
        let sent = self.job.reply.send(ChatEvent::Token {
            text: text.to_string(),
        });
        if sent.is_err() || self.job.cancel.load(Ordering::Relaxed) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

/// Runs one job and returns its last event (`Done` or `Error`).
fn run_job(
    spec: &WorkerSpec,
    engine: &mut dyn ChatEngine,
    format: &PromptFormat,
    job: &ReplyJob,
    resident_bytes: u64,
) -> ChatEvent {
    let started = Instant::now();
    let mut sink = JobSink {
        job,
        first_piece_at: None,
    };
    let outcome = match engine.generate_messages(&job.messages, &job.sampling, &mut sink) {
        Some(outcome) => outcome,
        None => match format.render(&job.messages) {
            Ok(prompt) => engine.generate(&prompt, &job.sampling, &mut sink),
            Err(e) => {
                return ChatEvent::Error {
                    status: 400,
                    message: e.to_string(),
                }
            }
        },
    };
    match outcome {
        Ok(stats) => ChatEvent::Done {
            metrics: metrics(
                spec,
                engine,
                job,
                started,
                sink.first_piece_at,
                &stats,
                resident_bytes,
            ),
        },
        Err(e @ (EngineError::PromptTooLong { .. } | EngineError::EmptyPrompt)) => {
            ChatEvent::Error {
                status: 400,
                message: e.to_string(),
            }
        }
        Err(EngineError::Upstream { status, message }) => {
            tracing::warn!(model = %spec.model_id, "remote server failed: {message}");
            ChatEvent::Error {
                status,
                message: format!(
                    "the remote server for `{}` failed: {message}",
                    spec.model_id
                ),
            }
        }
        Err(e) => {
            tracing::error!(model = %spec.model_id, "generation failed: {e}");
            ChatEvent::Error {
                status: 500,
                message: e.to_string(),
            }
        }
    }
}

fn per_second(count: usize, secs: f64) -> f64 {
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

fn metrics(
    spec: &WorkerSpec,
    engine: &dyn ChatEngine,
    job: &ReplyJob,
    started: Instant,
    first_piece_at: Option<Instant>,
    stats: &GenerationStats,
    resident_bytes: u64,
) -> GenerationMetrics {
    let now = Instant::now();
    let ms = |from: Instant, to: Instant| to.saturating_duration_since(from).as_secs_f64() * 1e3;
    GenerationMetrics {
        model: spec.model_id.clone(),
        engine: spec.engine.as_str().to_string(),
        prompt_tokens: stats.prompt_tokens as u32,
        prompt_ms: stats.prompt_secs * 1e3,
        prompt_tokens_per_s: per_second(stats.prompt_tokens, stats.prompt_secs),
        time_to_first_token_ms: ms(job.accepted_at, first_piece_at.unwrap_or(now)),
        queue_ms: ms(job.accepted_at, started),
        generated_tokens: stats.generated_tokens as u32,
        decode_ms: stats.decode_secs * 1e3,
        decode_tokens_per_s: per_second(stats.decode_calls, stats.decode_secs),
        total_ms: ms(job.accepted_at, now),
        model_resident_bytes: resident_bytes,
        finish_reason: stats.finish_reason,
        threads: engine.facts().threads,
        seed: job.sampling.seed as u64,
    }
}
