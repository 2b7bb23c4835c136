//! The server's bench: one run at a time in a thread of its own, progress published on a watch
//! channel (the SSE stream and the Bench page both read it), results saved when it ends. The
//! run does not depend on whoever started it staying connected.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, Mutex,
};

use tokio::sync::watch;

use super::{
    results::BenchResults,
    runner::run_bench,
    types::{BenchConfig, BenchEvent, BenchRun, BenchStatus},
};
use crate::{error::AppError, state::App};

struct Running {
    events: watch::Receiver<BenchEvent>,
    cancel: Arc<AtomicBool>,
}

#[derive(Default)]
struct JobState {
    running: Option<Running>,
    last_error: Option<String>,
}

pub struct BenchJobs {
    state: Mutex<JobState>,
    pub results: BenchResults,
}

impl BenchJobs {
    pub fn new(results: BenchResults) -> Self {
        Self {
            state: Mutex::new(JobState::default()),
            results,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JobState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn status(&self) -> BenchStatus {
        let latest_run = self.results.latest_id();
        let state = self.lock();
        let progress = state
            .running
            .as_ref()
            .and_then(|r| match &*r.events.borrow() {
                BenchEvent::Progress(p) => Some(p.clone()),
                _ => None,
            });
        BenchStatus {
            progress,
            latest_run,
            last_error: state.last_error.clone(),
        }
    }

    pub fn is_running(&self) -> bool {
        self.lock().running.is_some()
    }

    /// Asks the running bench to stop after its current run. `false` when none is running.
    pub fn cancel(&self) -> bool {
        match &self.lock().running {
            Some(running) => {
                running.cancel.store(true, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Checks the request and starts the run. 409 while another runs; 400/404/503 for a bad
    /// config, before anything starts.
    pub fn start(
        app: &Arc<App>,
        config: BenchConfig,
    ) -> Result<watch::Receiver<BenchEvent>, AppError> {
        config.validate().map_err(AppError::BadRequest)?;
        for id in &config.models {
            app.pool.runnable(id)?;
        }
        let jobs = &app.bench;
        let mut state = jobs.lock();
        if state.running.is_some() {
            return Err(AppError::Conflict(
                "a bench is already running; wait for it to finish (GET /api/bench/status) or cancel it (DELETE /api/bench)".into(),
            ));
        }
        let first = BenchEvent::Progress(super::types::BenchProgress {
            step: 0,
            total_steps: 0,
            model: config.models[0].clone(),
            phase: "starting".into(),
        });
        let (sender, events) = watch::channel(first);
        let cancel = Arc::new(AtomicBool::new(false));
        state.running = Some(Running {
            events: events.clone(),
            cancel: cancel.clone(),
        });
        state.last_error = None;
        drop(state);

        let thread_app = app.clone();
        let spawned = std::thread::Builder::new()
            .name("bench".into())
            .spawn(move || {
                let app = thread_app;
                let run = run_bench(
                    app.registry.clone(),
                    &app.settings,
                    &config,
                    &cancel,
                    &mut |progress| {
                        let _ = sender.send(BenchEvent::Progress(progress));
                    },
                );
                let last = app.bench.finish(run);
                let _ = sender.send(last);
            });
        if let Err(e) = spawned {
            app.bench.lock().running = None;
            return Err(AppError::internal(format!(
                "cannot start the bench thread: {e}"
            )));
        }
        Ok(events)
    }

    fn finish(&self, run: BenchRun) -> BenchEvent {
        let saved = self.results.save(&run);
        let mut state = self.lock();
        state.running = None;
        match saved {
            Ok(_) => BenchEvent::Done { run: Box::new(run) },
            Err(e) => {
                let message = format!("the bench finished but its result was not saved: {e}");
                tracing::error!("{message}");
                state.last_error = Some(message.clone());
                BenchEvent::Error {
                    status: 500,
                    message,
                }
            }
        }
    }
}
