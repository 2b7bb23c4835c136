//! Downloads and quantizations started from the Models page or the REST API. Each runs as a
//! child process of this binary (`quantlab models fetch|quantize --progress json`) in its own
//! process group: llama.cpp's quantizer and pip cannot be stopped from inside, a process group
//! can, at once. What a killed child left half-written is removed here, and a finished one's
//! model is served after the registry is read again.

use std::{
    collections::HashMap,
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    sync::{watch, Notify},
};

mod plan;

use plan::{plan, Plan};

use super::{
    hub_add::{AddError, HubFile},
    live::LiveRegistry,
    progress,
    verify::VerifyError,
    Registry,
};
use crate::{
    inference::llama_cpp::quantize::QuantType,
    types::{JobState, ModelJob},
};

/// What to run for a model.
#[derive(Clone, Debug)]
pub enum JobRequest {
    /// Download a declared model (chat, NER or OCR).
    Fetch,
    Quantize {
        kind: QuantType,
        allow_requantize: bool,
    },
    /// Hash its files and compare them with the published sha256.
    Verify,
    /// Add a GGUF from the hub under the job's id.
    Add(HubFile),
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("unknown model `{0}`; GET /api/models lists the ids")]
    Unknown(String),
    #[error("`{0}` is busy: a {1} is running for it; wait for it or cancel it")]
    Busy(String, String),
    #[error("a quantization of `{0}` is running; one runs at a time (it uses every core)")]
    QuantizeBusy(String),
    #[error(
        "`{0}` has no source to download from (it was made here, or it runs on a remote server)"
    )]
    NotFetchable(String),
    #[error("`{0}` is already downloaded")]
    AlreadyPresent(String),
    #[error("`{0}` cannot be quantized: {1}")]
    NotQuantizable(String, String),
    #[error("a model `{0}` already exists; delete it first")]
    Exists(String),
    #[error("cannot start the job: {0}")]
    Spawn(String),
    #[error(transparent)]
    Verify(#[from] super::verify::VerifyError),
    #[error(transparent)]
    Add(#[from] super::hub_add::AddError),
}

impl From<JobError> for crate::error::AppError {
    fn from(error: JobError) -> Self {
        use crate::error::AppError;
        let message = error.to_string();
        match error {
            JobError::Unknown(_) => AppError::NotFound(message),
            JobError::Busy(..) | JobError::QuantizeBusy(_) | JobError::Exists(_) => {
                AppError::Conflict(message)
            }
            JobError::AlreadyPresent(_) => AppError::Conflict(message),
            JobError::NotFetchable(_) | JobError::NotQuantizable(..) => {
                AppError::BadRequest(message)
            }
            JobError::Spawn(_) => AppError::internal(message),
            JobError::Verify(e) => match e {
                VerifyError::Unknown(_) => AppError::NotFound(message),
                VerifyError::Remote(_) | VerifyError::NotDownloaded(_) => {
                    AppError::BadRequest(message)
                }
                VerifyError::Mismatch { .. } | VerifyError::Io { .. } => {
                    AppError::internal(message)
                }
            },
            JobError::Add(e) => match e {
                AddError::Taken(_) | AddError::FileExists(_) => AppError::Conflict(message),
                AddError::BadRepo(_)
                | AddError::BadFile(_)
                | AddError::BadRevision(_)
                | AddError::BadId(_)
                | AddError::Refused { .. } => AppError::BadRequest(message),
                AddError::Hub { .. } => AppError::BadGateway(message),
                AddError::Fetch(_) | AddError::Registry(_) => AppError::internal(message),
            },
        }
    }
}

struct Slot {
    status: watch::Sender<ModelJob>,
    cancel: Arc<Notify>,
}

/// The model jobs of one server: at most one per model, and one quantization at a time.
pub struct ModelJobs {
    registry: LiveRegistry,
    threads: u32,
    /// The binary the children run: this one.
    program: PathBuf,
    slots: Mutex<HashMap<String, Slot>>,
}

impl ModelJobs {
    pub fn new(registry: LiveRegistry, threads: u32) -> Self {
        Self {
            registry,
            threads,
            program: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("quantlab")),
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The job running for `id`, or the last one that did not finish well (so a person sees
    /// why); a finished one is shown until the next job starts.
    pub fn status(&self, id: &str) -> Option<ModelJob> {
        self.lock().get(id).map(|slot| slot.status.borrow().clone())
    }

    /// Additions from the hub whose model is not listed (yet, or because they failed).
    pub fn pending(&self, registry: &Registry) -> Vec<crate::types::PendingModel> {
        let mut pending: Vec<_> = self
            .lock()
            .iter()
            .filter(|(id, slot)| slot.status.borrow().kind == "add" && registry.get(id).is_none())
            .map(|(id, slot)| crate::types::PendingModel {
                id: id.clone(),
                job: slot.status.borrow().clone(),
            })
            .collect();
        pending.sort_by(|a, b| a.id.cmp(&b.id));
        pending
    }

    /// Whether a job is running for `id`.
    pub fn is_running(&self, id: &str) -> bool {
        self.status(id).is_some_and(|job| job.running())
    }

    /// The model whose quantization is running, if any.
    pub fn quantizing(&self) -> Option<String> {
        self.lock().iter().find_map(|(id, slot)| {
            let job = slot.status.borrow();
            (job.running() && job.kind == "quantize").then(|| id.clone())
        })
    }

    /// Forgets how the jobs for `id`, or that made `id`, ended (its files were deleted since);
    /// running jobs are kept.
    pub fn forget(&self, id: &str) {
        self.lock().retain(|key, slot| {
            let job = slot.status.borrow();
            job.running() || (key != id && job.made.as_deref() != Some(id))
        });
    }

    /// Asks the job for `id` to stop; `false` when none is running.
    pub fn cancel(&self, id: &str) -> bool {
        let slots = self.lock();
        match slots.get(id) {
            Some(slot) if slot.status.borrow().running() => {
                slot.cancel.notify_one();
                true
            }
            _ => false,
        }
    }

    /// Shutdown: cancels every running job and waits (at most `within`) until each has been
    /// killed and its temporary files removed.
    pub async fn stop_all(&self, within: std::time::Duration) {
        let running: Vec<watch::Receiver<ModelJob>> = {
            let slots = self.lock();
            slots
                .values()
                .filter(|slot| slot.status.borrow().running())
                .map(|slot| {
                    slot.cancel.notify_one();
                    slot.status.subscribe()
                })
                .collect()
        };
        let ended = futures::future::join_all(running.into_iter().map(|mut status| async move {
            let _ = status.wait_for(|job| !job.running()).await;
        }));
        let _ = tokio::time::timeout(within, ended).await;
    }

    /// Starts a job and returns its progress. Refused when the model is busy, when another
    /// quantization runs, or when the request makes no sense for the model.
    ///
    /// # Errors
    /// See [`JobError`].
    pub fn start(
        self: &Arc<Self>,
        id: &str,
        request: JobRequest,
    ) -> Result<watch::Receiver<ModelJob>, JobError> {
        let registry = self.registry.current();
        let Plan {
            mut args,
            kind,
            target,
            leftovers,
        } = plan(&registry, id, request)?;
        args.extend(["--progress".into(), "json".into()]);

        let first = ModelJob {
            kind: kind.into(),
            target: target.clone(),
            phase: "starting".into(),
            done: 0,
            total: 0,
            state: JobState::Running,
            error: None,
            made: None,
            message: None,
        };
        let (status, receiver) = watch::channel(first);
        let cancel = Arc::new(Notify::new());
        {
            // Checked and taken under one lock, so two requests cannot both start.
            let mut slots = self.lock();
            for (other, slot) in slots.iter() {
                let job = slot.status.borrow();
                if !job.running() {
                    continue;
                }
                if other == id {
                    return Err(JobError::Busy(id.to_string(), job.kind.clone()));
                }
                if kind == "quantize" && job.kind == "quantize" {
                    return Err(JobError::QuantizeBusy(other.clone()));
                }
                if kind == "add" && job.kind == "add" && job.target == target {
                    return Err(JobError::Busy(
                        other.clone(),
                        "hub download of that file".into(),
                    ));
                }
            }
            slots.insert(
                id.to_string(),
                Slot {
                    status: status.clone(),
                    cancel: cancel.clone(),
                },
            );
        }
        let models_dir = registry.models_dir.clone();
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(&args)
            .env("QUANTLAB_MODELS_DIR", &models_dir)
            .env("QUANTLAB_THREADS", self.threads.to_string())
            .env("RUST_LOG", "warn")
            // Its error is shown to people: the cause, without a backtrace.
            .env("RUST_LIB_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(file) = &registry.models_file {
            command.env("QUANTLAB_MODELS_FILE", file);
        }
        let child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                let error = JobError::Spawn(format!("{}: {e}", self.program.display()));
                status.send_modify(|job| {
                    job.state = JobState::Failed;
                    job.error = Some(error.to_string());
                });
                return Err(error);
            }
        };
        let jobs = self.clone();
        tokio::spawn(async move {
            let outcome = supervise(child, &status, &cancel).await;
            let finished = match outcome {
                Outcome::Succeeded => match jobs.registry.reload() {
                    Ok(_) => Ok(leftovers.made()),
                    Err(e) => Err(format!(
                        "the job finished but the registry could not be read again: {e}"
                    )),
                },
                Outcome::Cancelled => {
                    leftovers.remove(&models_dir);
                    status.send_modify(|job| job.state = JobState::Cancelled);
                    return;
                }
                Outcome::Failed(message) => {
                    leftovers.remove(&models_dir);
                    Err(message)
                }
            };
            status.send_modify(|job| match finished {
                Ok(made) => {
                    job.state = JobState::Finished;
                    job.phase = "done".into();
                    if made.is_some() {
                        job.made = made;
                    }
                }
                Err(message) => {
                    job.state = JobState::Failed;
                    job.error = Some(message);
                }
            });
        });
        Ok(receiver)
    }
}

enum Outcome {
    Succeeded,
    Cancelled,
    Failed(String),
}

/// The longest stderr kept from a child, for its error message.
const STDERR_LIMIT: u64 = 64 * 1024;

/// Follows a child to its end: its progress lines update `status`; a cancel kills its whole
/// process group (pip and llama.cpp's threads with it).
async fn supervise(
    mut child: tokio::process::Child,
    status: &watch::Sender<ModelJob>,
    cancel: &Notify,
) -> Outcome {
    let stderr = child.stderr.take().map(|stderr| {
        tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.take(STDERR_LIMIT).read_to_string(&mut text).await;
            text
        })
    });
    let mut lines = child.stdout.take().map(|out| BufReader::new(out).lines());
    let cancelled = loop {
        let next_line = async {
            match lines.as_mut() {
                Some(lines) => lines.next_line().await.ok().flatten(),
                None => None,
            }
        };
        tokio::select! {
            line = next_line => match line {
                Some(line) => {
                    if let Some(line) = progress::parse(&line) {
                        status.send_modify(|job| match line.outcome {
                            Some(outcome) => job.message = Some(outcome),
                            None => {
                                job.phase = line.phase;
                                job.done = line.done;
                                job.total = line.total;
                            }
                        });
                    }
                }
                None => break false,
            },
            () = cancel.notified() => break true,
        }
    };
    if cancelled {
        if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
            // SAFETY: plain syscall; the child leads its own group (`process_group(0)`).
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        // A child that had already finished is not undone by a late cancel.
        if child.wait().await.is_ok_and(|code| code.success()) {
            return Outcome::Succeeded;
        }
        return Outcome::Cancelled;
    }
    let exit = child.wait().await;
    let stderr = match stderr {
        Some(task) => task.await.unwrap_or_default(),
        None => String::new(),
    };
    match exit {
        Ok(code) if code.success() => Outcome::Succeeded,
        Ok(code) => Outcome::Failed(
            child_error(&stderr)
                .unwrap_or_else(|| format!("the job stopped ({code}) without saying why")),
        ),
        Err(e) => Outcome::Failed(format!("lost track of the job: {e}")),
    }
}

/// The message of an `Error: …` report (anyhow's, with its causes) on a child's stderr.
fn child_error(stderr: &str) -> Option<String> {
    let start = stderr.find("Error: ")?;
    let mut message = String::new();
    for line in stderr[start + "Error: ".len()..].lines() {
        let line = line.trim();
        if line.starts_with("Stack backtrace:") {
            break;
        }
        if line.is_empty() || line == "Caused by:" {
            continue;
        }
        // Cause lines look like `0: reason`.
        let line = line
            .split_once(": ")
            .filter(|(n, _)| n.chars().all(|c| c.is_ascii_digit()))
            .map_or(line, |(_, rest)| rest);
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(line);
    }
    (!message.is_empty()).then_some(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_childs_error_and_its_causes_read_as_one_sentence() {
        let stderr = "warning: x\nError: fetching gemma\n\nCaused by:\n    0: pip could not download\n    1: no network\n";
        assert_eq!(
            child_error(stderr).as_deref(),
            Some("fetching gemma: pip could not download: no network")
        );
        assert_eq!(child_error("thread panicked"), None);
        let with_backtrace =
            "Error: the hub did not give a/b\n\nStack backtrace:\n   0: anyhow::error\n";
        assert_eq!(
            child_error(with_backtrace).as_deref(),
            Some("the hub did not give a/b")
        );
    }
}
