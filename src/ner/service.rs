//! The NER models a server runs: loaded on first use and kept, recognitions one at a time off
//! the async runtime behind a bounded queue (see [`crate::cpu_jobs`]).

use std::sync::Arc;

use super::{model::NerError, NerModel, NerOutput, DEFAULT_THRESHOLD};
use crate::{
    config::Limits,
    cpu_jobs::{timed, CpuQueue, Loaded},
    error::AppError,
    registry::{ner::NerEntry, Registry},
};

/// Longest text accepted, in characters (413 beyond, naming it).
pub const MAX_TEXT_CHARS: usize = 100_000;
/// Requests that may wait for the running one (503 beyond).
pub const QUEUE: usize = 8;

pub struct NerService {
    registry: Arc<Registry>,
    loaded: Loaded<NerModel>,
    queue: CpuQueue,
}

impl NerService {
    pub fn new(registry: Arc<Registry>, limits: &Limits) -> Self {
        Self {
            registry,
            loaded: Loaded::default(),
            queue: CpuQueue::new("NER", QUEUE, limits.analysis_timeout),
        }
    }

    /// Finds entities in `text` with `model` (the registry's default NER model when `None`).
    pub async fn recognize(
        &self,
        text: String,
        model: Option<String>,
    ) -> Result<NerOutput, AppError> {
        let characters = text.chars().count();
        if text.trim().is_empty() {
            return Err(AppError::BadRequest(
                "`text` is empty: send the text to analyse".into(),
            ));
        }
        if characters > MAX_TEXT_CHARS {
            return Err(AppError::PayloadTooLarge(format!(
                "`text` has {characters} characters; the limit is {MAX_TEXT_CHARS}: split it"
            )));
        }
        let id = model
            .or_else(|| self.registry.default_ner.clone())
            .ok_or_else(|| {
                AppError::ModelUnavailable("no NER model is declared in models.toml".into())
            })?;
        let entry = self.registry.ner(&id).ok_or_else(|| {
            let known: Vec<&str> = self
                .registry
                .ner_models
                .iter()
                .map(|m| m.id.as_str())
                .collect();
            AppError::NotFound(format!(
                "unknown NER model `{id}`; known: {}",
                known.join(", ")
            ))
        })?;
        let (turn, queued_millis) = timed(self.queue.turn()).await;
        let turn = turn?;
        let (model, load_millis) = self.model(entry).await?;
        let mut output = self
            .queue
            .run(turn, move |stop| {
                model.recognize_until(&text, DEFAULT_THRESHOLD, stop)
            })
            .await?
            .map_err(|e| match e {
                // Only a client that left stops a job before its deadline; no one hears this.
                NerError::Stopped => AppError::Timeout("the analysis was stopped".into()),
                other => AppError::internal(other),
            })?;
        output.metrics.queued_millis = queued_millis;
        output.metrics.load_millis = load_millis;
        Ok(output)
    }

    /// The loaded model, loading it (after checking its files are there) on first use; with
    /// the milliseconds spent loading it here.
    async fn model(&self, entry: &NerEntry) -> Result<(Arc<NerModel>, f64), AppError> {
        let (id, dir, runtime) = (
            entry.id.clone(),
            self.registry.ner_dir(entry),
            entry.runtime,
        );
        self.loaded
            .get_or_load(
                &entry.id,
                &self.queue,
                || self.registry.ner_unavailability(entry),
                move || NerModel::load(&id, &dir, runtime).map(Arc::new),
            )
            .await
    }
}
