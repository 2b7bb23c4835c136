//! A model's worker thread: loads the engine, then answers jobs from its queue one at a time
//! until the queue closes.

use std::{
    path::PathBuf,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use super::{
    queue::JobQueue,
    reply::{
        finish_reply, run_reply, Job, JobSink, PromptInput, ReplyError, ReplyJob, Runner, ScoreJob,
    },
    PoolSignals, WorkerState,
};
use crate::{
    inference::{
        batch::Batch,
        bitnet::{head::HeadPrecision, BitnetEngine},
        candle::CandleEngine,
        llama_cpp::LlamaCppEngine,
        memory,
        remote::RemoteEngine,
        template::PromptFormat,
        ChatEngine, EngineError,
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
    /// Replies that run together on engines that batch.
    pub parallel: usize,
    /// BitNet's output head precision.
    pub output_head: HeadPrecision,
}

fn load_engine(spec: &WorkerSpec) -> Result<Box<dyn ChatEngine>, EngineError> {
    match spec.engine {
        EngineKind::LlamaCpp => Ok(Box::new(LlamaCppEngine::load_with_slots(
            &spec.path,
            spec.context_size,
            spec.threads,
            spec.parallel,
        )?)),
        EngineKind::Candle => Ok(Box::new(CandleEngine::load(
            &spec.path,
            spec.context_size,
            spec.threads,
        )?)),
        EngineKind::Bitnet => Ok(Box::new(BitnetEngine::load_with_slots(
            &spec.path,
            spec.context_size,
            spec.threads,
            spec.output_head,
            spec.parallel,
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

    let engine_detail = engine.facts().detail.clone();
    let runner = Runner {
        model_id: &spec.model_id,
        engine_kind: spec.engine.as_str(),
        engine_detail: &engine_detail,
        resident_bytes: resident,
        threads: engine.facts().threads,
    };
    let render = |job: &ReplyJob| match &job.prompt {
        PromptInput::Chat(messages) => format
            .render(messages)
            .map_err(|e| EngineError::Template(e.to_string())),
        PromptInput::Text(text) => Ok(text.clone()),
    };
    let start_reply = |job: ReplyJob| JobSink::new(job, signals.clone(), spec.send_timeout);
    let slots = engine.batch().map_or(1, |b| b.slots());
    queue.set_loaded(slots);
    state.loaded.store(true, Ordering::Release);
    tracing::info!(model = %spec.model_id, resident_mib = resident >> 20, slots, "model loaded");

    if engine.batch().is_some() {
        run_batched(
            engine.as_mut(),
            &queue,
            &signals,
            &runner,
            render,
            start_reply,
        );
        return;
    }
    while let Some(job) = queue.next() {
        match job {
            _ if signals.stopping.load(Ordering::Relaxed) => job.refuse(ReplyError::ShuttingDown),
            Job::Reply(job) => {
                let mut sink = start_reply(*job);
                let outcome = run_reply(engine.as_mut(), render, &mut sink);
                finish_reply(&runner, sink, outcome);
            }
            Job::Score(job) => score(engine.as_mut(), job, &signals),
        }
        queue.done();
    }
}

fn score(engine: &mut dyn ChatEngine, mut job: ScoreJob, signals: &PoolSignals) {
    let cancel = job.cancel.clone();
    let mut ignore = |_: &[f32]| {};
    let rows: &mut dyn FnMut(&[f32]) = match job.rows.as_mut() {
        Some(observer) => observer,
        None => &mut ignore,
    };
    let result = engine
        .score(&job.text, job.window, rows, &mut || {
            cancel.load(Ordering::Relaxed) || signals.stopping.load(Ordering::Relaxed)
        })
        .map_err(|e| e.to_string());
    let _ = job.reply.send(result);
}

/// Continuous batching: replies join the running batch as slots free up, and every forward
/// pass serves them all. Scoring needs the whole cache, so it waits for the batch to empty and
/// nothing new starts meanwhile.
fn run_batched(
    engine: &mut dyn ChatEngine,
    queue: &JobQueue<Job>,
    signals: &Arc<PoolSignals>,
    runner: &Runner<'_>,
    render: impl Fn(&ReplyJob) -> Result<String, EngineError>,
    start_reply: impl Fn(ReplyJob) -> JobSink,
) {
    let mut batch: Batch<JobSink> = Batch::default();
    let mut scoring: Option<ScoreJob> = None;
    loop {
        let Some(slots) = engine.batch().map(|b| b.slots()) else {
            return;
        };
        while scoring.is_none() && batch.len() < slots {
            let job = if batch.is_empty() {
                match queue.next() {
                    Some(job) => job,
                    None => return,
                }
            } else {
                match queue.try_next() {
                    Some(job) => job,
                    None => break,
                }
            };
            match job {
                _ if signals.stopping.load(Ordering::Relaxed) => {
                    job.refuse(ReplyError::ShuttingDown);
                    queue.done();
                }
                Job::Score(job) => scoring = Some(job),
                Job::Reply(job) => {
                    let sink = start_reply(*job);
                    let admitted = match render(&sink.job) {
                        Ok(prompt) => match engine.batch() {
                            Some(engine) => {
                                let sampling = sink.job.sampling.clone();
                                batch.admit(engine, &prompt, &sampling, sink)
                            }
                            None => return,
                        },
                        Err(e) => Err((sink, e)),
                    };
                    if let Err((sink, e)) = admitted {
                        finish_reply(runner, sink, Err(e));
                        queue.done();
                    }
                }
            }
        }
        if batch.is_empty() {
            if let Some(job) = scoring.take() {
                score(engine, job, signals);
                queue.done();
            }
            continue;
        }
        let Some(batch_engine) = engine.batch() else {
            return;
        };
        for finished in batch.step(batch_engine) {
            finish_reply(runner, finished.sink, finished.outcome);
            queue.done();
        }
    }
}
