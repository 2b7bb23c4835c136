//! Shared by the NER and OCR services: CPU-heavy work runs off the async runtime on the blocking
//! pool, one job at a time (the model's own threads use the cores) behind a bounded queue —
//! beyond it, 503 with Retry-After; each job has a deadline (504 beyond) and is told to stop
//! when it passes or when its client goes away, so the CPU is free for the next request; and
//! models load on first use and stay loaded.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::AppError;

const RETRY_AFTER_SECS: u32 = 2;

/// Awaits `future` and says how long it took, in milliseconds.
pub async fn timed<T>(future: impl std::future::Future<Output = T>) -> (T, f64) {
    let started = std::time::Instant::now();
    let value = future.await;
    (value, started.elapsed().as_secs_f64() * 1e3)
}

pub struct CpuQueue {
    /// What runs here, for messages ("NER", "OCR").
    what: &'static str,
    queue: usize,
    admitted: Arc<Semaphore>,
    running: Arc<Semaphore>,
    deadline: Duration,
}

/// Tells a job to stop when dropped: the request it serves is over (answered, timed out, or
/// abandoned by its client).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Held while a job waits and runs: its place in the queue and, once granted, the CPU.
pub struct Turn {
    _admitted: OwnedSemaphorePermit,
    _running: OwnedSemaphorePermit,
}

impl CpuQueue {
    /// One job runs, for at most `deadline`, while up to `queue` wait.
    pub fn new(what: &'static str, queue: usize, deadline: Duration) -> Self {
        Self {
            what,
            queue,
            admitted: Arc::new(Semaphore::new(queue + 1)),
            running: Arc::new(Semaphore::new(1)),
            deadline,
        }
    }

    /// Waits for this request's turn; 503 straight away when the queue is full.
    pub async fn turn(&self) -> Result<Turn, AppError> {
        let admitted =
            self.admitted
                .clone()
                .try_acquire_owned()
                .map_err(|_| AppError::Overloaded {
                    message: format!(
                        "{} {} requests are already waiting; try again shortly",
                        self.queue, self.what
                    ),
                    retry_after_secs: RETRY_AFTER_SECS,
                })?;
        let running = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(AppError::internal)?;
        Ok(Turn {
            _admitted: admitted,
            _running: running,
        })
    }

    /// Runs `job` on the blocking pool.
    pub async fn blocking<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AppError> {
        tokio::task::spawn_blocking(job)
            .await
            .map_err(|e| AppError::internal(format!("{} task failed: {e}", self.what)))
    }

    /// Runs `job` on the blocking pool in its `turn`, which it holds until it really ends. The
    /// job gets a stop check that turns true when the deadline passes (the request gets 504)
    /// or when the caller stops waiting (its client went away); it ends at its next check.
    pub async fn run<T: Send + 'static>(
        &self,
        turn: Turn,
        job: impl FnOnce(&(dyn Fn() -> bool + Sync)) -> T + Send + 'static,
    ) -> Result<T, AppError> {
        let stop = Arc::new(AtomicBool::new(false));
        let _stop_on_drop = StopOnDrop(stop.clone());
        let flag = stop.clone();
        let task = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            job(&|| flag.load(Ordering::Relaxed))
        });
        match tokio::time::timeout(self.deadline, task).await {
            Ok(joined) => {
                joined.map_err(|e| AppError::internal(format!("{} task failed: {e}", self.what)))
            }
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                Err(AppError::Timeout(format!(
                    "the {} took longer than its {} s limit and was stopped; send a smaller input",
                    self.what,
                    self.deadline.as_secs_f64()
                )))
            }
        }
    }
}

/// Models by id, loaded once.
pub struct Loaded<M: ?Sized> {
    models: Mutex<HashMap<String, Arc<M>>>,
}

impl<M: ?Sized> Default for Loaded<M> {
    fn default() -> Self {
        Self {
            models: Mutex::new(HashMap::new()),
        }
    }
}

impl<M: ?Sized + Send + Sync + 'static> Loaded<M> {
    /// The loaded model `id`, or, on first use, `load` run on `queue`'s blocking pool once
    /// `unavailable` (asked only then, so its file checks are not paid per request) finds
    /// nothing missing. A failed load is 503 with the command that fetches the files again.
    /// With the milliseconds this call spent loading (0 when the model was loaded already).
    pub async fn get_or_load<E: std::fmt::Display + Send + 'static>(
        &self,
        id: &str,
        queue: &CpuQueue,
        unavailable: impl FnOnce() -> Option<String>,
        load: impl FnOnce() -> Result<Arc<M>, E> + Send + 'static,
    ) -> Result<(Arc<M>, f64), AppError> {
        if let Some(model) = self.lock()?.get(id) {
            return Ok((model.clone(), 0.0));
        }
        if let Some(reason) = unavailable() {
            return Err(AppError::ModelUnavailable(reason));
        }
        let started = std::time::Instant::now();
        let model = queue.blocking(load).await?.map_err(|e| {
            AppError::ModelUnavailable(format!(
                "{e}; fetch it again with `quantlab models fetch {id}`"
            ))
        })?;
        self.lock()?.insert(id.to_string(), model.clone());
        Ok((model, started.elapsed().as_secs_f64() * 1e3))
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, Arc<M>>>, AppError> {
        self.models
            .lock()
            .map_err(|_| AppError::internal("a model table was poisoned"))
    }
}
