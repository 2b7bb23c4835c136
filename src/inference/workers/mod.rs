//! One worker thread per loaded model, fed by a bounded queue that tells waiting requests their
//! place. Each job carries its own bounded reply channel; a closed channel (tab closed, HTTP
//! client gone), the job's cancel flag (Stop) or the server stopping ends the work within one
//! token and frees the worker for the next job.

mod queue;
mod reply;
mod thread;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Instant,
};

use tokio::sync::{mpsc, oneshot};

pub use self::reply::{PromptInput, Reply, ReplyError, REPLY_BUFFER};
use self::{
    queue::{JobQueue, Refused},
    reply::{Job, ReplyJob, ScoreJob},
    thread::{run_worker, WorkerSpec},
};
use super::{
    score::{ScoreWindow, TextScore},
    ResolvedSampling,
};
use crate::{
    config::Settings,
    error::AppError,
    registry::{live::LiveRegistry, ModelEntry, Registry},
};

/// Seconds a client is told to wait when a queue is full. A short reply on the default model
/// takes a few seconds on two cores.
pub const RETRY_AFTER_SECS: u32 = 5;

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

/// The caller's side of a submitted reply. Dropping it stops the work.
pub struct Generation {
    pub replies: mpsc::Receiver<Reply>,
    cancel: Arc<AtomicBool>,
}

impl Generation {
    /// Asks the worker to stop; the final `Done` (finish reason `cancelled`) still arrives.
    pub fn stop(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// A handle that stops this reply from elsewhere (another task, a Stop button).
    pub fn stopper(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }
}

#[derive(Default)]
struct WorkerState {
    loaded: AtomicBool,
    failed: Mutex<Option<String>>,
    resident_bytes: AtomicU64,
    load_micros: AtomicU64,
}

/// What the whole pool is told at shutdown.
#[derive(Default)]
struct PoolSignals {
    /// New work is refused (the server is draining).
    draining: AtomicBool,
    /// Running replies end now and queued ones are refused.
    stopping: AtomicBool,
}

struct Worker {
    queue: Arc<JobQueue<Job>>,
    state: Arc<WorkerState>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Sees each scored prediction's logits, in order, on the worker's thread.
pub type RowObserver = Box<dyn FnMut(&[f32]) + Send>;

/// The loaded models and their queues.
pub struct WorkerPool {
    registry: LiveRegistry,
    settings: Settings,
    workers: Mutex<HashMap<String, Worker>>,
    signals: Arc<PoolSignals>,
}

impl WorkerPool {
    pub fn new(registry: LiveRegistry, settings: Settings) -> Self {
        Self {
            registry,
            settings,
            workers: Mutex::new(HashMap::new()),
            signals: Arc::default(),
        }
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.registry.current()
    }

    /// The model entry for `id` if it exists and can run here.
    pub fn runnable(&self, id: &str) -> Result<ModelEntry, AppError> {
        let registry = self.registry.current();
        let entry = registry.get(id).ok_or_else(|| {
            AppError::NotFound(format!(
                "unknown model `{id}`; GET /api/models lists the ids"
            ))
        })?;
        if let Some((reason, fix)) = registry.unavailability(entry) {
            let fix = fix.map(|f| format!(" Run `{f}`.")).unwrap_or_default();
            return Err(AppError::ModelUnavailable(format!(
                "model `{id}` is not available: {reason}{fix}"
            )));
        }
        Ok(entry.clone())
    }

    /// Starts loading a model in the background (used for the default model at start-up).
    pub fn preload(&self, id: &str) -> Result<(), AppError> {
        let entry = self.runnable(id)?;
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
            queue.close(false);
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

    /// Replies and scorings waiting or running for one model.
    pub fn active_for(&self, id: &str) -> usize {
        self.lock().get(id).map_or(0, |w| w.queue.active())
    }

    /// Replies and scorings waiting or running, over every model.
    pub fn active_jobs(&self) -> usize {
        self.lock().values().map(|w| w.queue.active()).sum()
    }

    /// Shutdown, first step: refuse new work; what is queued or running goes on.
    pub fn drain(&self) {
        self.signals.draining.store(true, Ordering::Relaxed);
    }

    /// Shutdown, second step: running replies end now (as a Stop would end them, so they are
    /// saved as interrupted) and queued ones are refused.
    pub fn stop_all(&self) {
        self.drain();
        self.signals.stopping.store(true, Ordering::Relaxed);
    }

    /// Queues a reply. Fails at once (never waits) when the model's queue is full.
    pub fn submit(
        &self,
        model_id: &str,
        prompt: PromptInput,
        sampling: ResolvedSampling,
        accepted_at: Instant,
    ) -> Result<Generation, AppError> {
        let (reply, replies) = mpsc::channel(REPLY_BUFFER);
        let cancel = Arc::new(AtomicBool::new(false));
        let job = ReplyJob {
            prompt,
            sampling,
            accepted_at,
            cancel: cancel.clone(),
            reply,
        };
        self.enqueue(model_id, Job::Reply(Box::new(job)))?;
        Ok(Generation { replies, cancel })
    }

    /// Queues the scoring of a plain text (no chat template), for perplexity; `rows`, when
    /// given, sees the logits of every scored prediction.
    pub fn score(
        &self,
        model_id: &str,
        text: Arc<str>,
        window: ScoreWindow,
        rows: Option<RowObserver>,
    ) -> Result<Scoring, AppError> {
        let (reply, result) = oneshot::channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let job = ScoreJob {
            text,
            window,
            rows,
            cancel: cancel.clone(),
            reply,
        };
        self.enqueue(model_id, Job::Score(job))?;
        Ok(Scoring { result, cancel })
    }

    fn enqueue(&self, model_id: &str, job: Job) -> Result<(), AppError> {
        if self.signals.draining.load(Ordering::Relaxed) {
            return Err(AppError::ShuttingDown(
                "the server is shutting down and takes no new requests; retry in a moment".into(),
            ));
        }
        let entry = self.runnable(model_id)?;
        let mut workers = self.lock();
        let queue = self.worker_for(&mut workers, &entry);
        match queue.push(job) {
            Ok(()) => Ok(()),
            Err(Refused::Full(_)) => Err(AppError::Overloaded {
                message: format!(
                    "model `{model_id}` is busy: {} requests are already waiting; retry shortly",
                    self.settings.limits.queue_capacity
                ),
                retry_after_secs: RETRY_AFTER_SECS,
            }),
            Err(Refused::Closed(_)) => {
                // A load that fails fast (a refused connection) can close the queue between
                // spawning the worker and this push: report the load error, not a vague stop.
                let load_error = workers
                    .remove(model_id)
                    .and_then(|w| w.state.failed.lock().ok().and_then(|f| f.clone()));
                Err(AppError::ModelUnavailable(load_error.unwrap_or_else(
                    || format!("the worker for `{model_id}` stopped; retry to load it again"),
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
    ) -> Arc<JobQueue<Job>> {
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
        let queue = Arc::new(JobQueue::new(self.settings.limits.queue_capacity));
        let state = Arc::new(WorkerState::default());
        let spec = WorkerSpec {
            model_id: entry.id.clone(),
            engine: entry.engine,
            instruct: entry.instruct,
            path: self.registry.current().file_path(entry),
            context_size: self.settings.context_size.min(entry.context_length),
            threads: self.settings.threads,
            remote: entry.remote.clone(),
            send_timeout: self.settings.limits.send_timeout,
            parallel: self.settings.parallel,
            output_head: entry.output_head.unwrap_or_default(),
        };
        let (thread_state, thread_queue, signals) =
            (state.clone(), queue.clone(), self.signals.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("model-{}", entry.id))
            .spawn(move || run_worker(spec, thread_state, thread_queue, signals));
        let thread = match spawned {
            Ok(handle) => Some(handle),
            Err(e) => {
                if let Ok(mut failed) = state.failed.lock() {
                    *failed = Some(format!("cannot start a worker thread: {e}"));
                }
                queue.close(false);
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
