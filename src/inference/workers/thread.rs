//! A model's worker thread: loads the engine, then answers jobs from its queue one at a time
//! until the queue closes.

use std::{
    path::PathBuf,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use super::{
    queue::JobQueue,
    reply::{run_reply, Job, JobSink, ReplyError, Runner},
    PoolSignals, WorkerState,
};
use crate::{
    inference::{
        bitnet::BitnetEngine, candle::CandleEngine, llama_cpp::LlamaCppEngine, memory,
        remote::RemoteEngine, template::PromptFormat, ChatEngine, EngineError,
    },
    registry::RemoteSource,
    types::EngineKind,
};

pub(super) struct WorkerSpec {
    pub model_id: String,
    pub engine: EngineKind,
    pub instruct: bool,
    pub path: PathBuf,
    pub context_size: u32,
    pub threads: u32,
    pub remote: Option<RemoteSource>,
    pub send_timeout: Duration,
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

pub(super) fn run_worker(
    spec: WorkerSpec,
    state: Arc<WorkerState>,
    queue: Arc<JobQueue<Job>>,
    signals: Arc<PoolSignals>,
) {
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
            for job in queue.close(true) {
                job.refuse(ReplyError::Unavailable(message.clone()));
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
    queue.set_loaded();
    tracing::info!(model = %spec.model_id, resident_mib = resident >> 20, "model loaded");

    let runner = Runner {
        model_id: &spec.model_id,
        engine_kind: spec.engine.as_str(),
        resident_bytes: resident,
    };
    while let Some(job) = queue.next() {
        if signals.stopping.load(Ordering::Relaxed) {
            job.refuse(ReplyError::ShuttingDown);
            continue;
        }
        match job {
            Job::Reply(job) => {
                let mut sink = JobSink {
                    job: &job,
                    stopping: &signals.stopping,
                    send_timeout: spec.send_timeout,
                    first_piece_at: None,
                    stalled: false,
                };
                let prompt = || {
                    format
                        .render(&job.messages)
                        .map_err(|e| EngineError::Template(e.to_string()))
                };
                let last = run_reply(&runner, engine.as_mut(), prompt, &mut sink);
                if sink.stalled {
                    tracing::info!(
                        model = %spec.model_id,
                        "a client stopped reading its reply for {:?}: the reply was stopped",
                        spec.send_timeout
                    );
                }
                if !sink.stalled {
                    sink.deliver(last);
                }
            }
            Job::Score(job) => {
                let cancel = job.cancel.clone();
                let stopping = &signals.stopping;
                let result = engine
                    .score(&job.text, job.window, &mut || {
                        cancel.load(Ordering::Relaxed) || stopping.load(Ordering::Relaxed)
                    })
                    .map_err(|e| e.to_string());
                let _ = job.reply.send(result);
            }
        }
    }
}
