//! The NER models a server runs: loaded on first use and kept, CPU work off the async runtime
//! on the blocking pool, one recognition at a time (the model's own threads use the cores) and
//! a bounded queue behind it — beyond it, 503 with Retry-After.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::Semaphore;

use super::{NerModel, NerOutput, DEFAULT_THRESHOLD};
use crate::{
    error::AppError,
    registry::{ner::NerEntry, Registry},
};

/// Longest text accepted, in characters (413 beyond, naming it).
pub const MAX_TEXT_CHARS: usize = 100_000;
/// Requests that may wait for the running one (503 beyond).
pub const QUEUE: usize = 8;
const RETRY_AFTER_SECS: u32 = 2;

pub struct NerService {
    registry: Arc<Registry>,
    loaded: Mutex<HashMap<String, Arc<NerModel>>>,
    admitted: Arc<Semaphore>,
    running: Arc<Semaphore>,
}

impl NerService {
    pub fn new(registry: Arc<Registry>) -> Self {
        Self {
            registry,
            loaded: Mutex::new(HashMap::new()),
            admitted: Arc::new(Semaphore::new(QUEUE + 1)),
            running: Arc::new(Semaphore::new(1)),
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
        let _admitted =
            self.admitted
                .clone()
                .try_acquire_owned()
                .map_err(|_| AppError::Overloaded {
                    message: format!("{QUEUE} NER requests are already waiting; try again shortly"),
                    retry_after_secs: RETRY_AFTER_SECS,
                })?;
        let _running = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| AppError::Internal(e.to_string()))?;
        let model = self.model(entry).await?;
        tokio::task::spawn_blocking(move || model.recognize(&text, DEFAULT_THRESHOLD))
            .await
            .map_err(|e| AppError::Internal(format!("NER task failed: {e}")))?
            .map_err(|e| AppError::Internal(e.to_string()))
    }

    /// The loaded model, loading it (after checking its files are there) on first use.
    async fn model(&self, entry: &NerEntry) -> Result<Arc<NerModel>, AppError> {
        let id = entry.id.as_str();
        if let Some(model) = self.lock()?.get(id) {
            return Ok(model.clone());
        }
        if let Some(reason) = self.registry.ner_unavailability(entry) {
            return Err(AppError::ModelUnavailable(reason));
        }
        let dir = self.registry.ner_dir(entry);
        let owned_id = id.to_string();
        let model = tokio::task::spawn_blocking(move || NerModel::load(&owned_id, &dir))
            .await
            .map_err(|e| AppError::Internal(format!("NER load task failed: {e}")))?
            .map_err(|e| {
                AppError::ModelUnavailable(format!(
                    "{e}; fetch it again with `quantlab models fetch {id}`"
                ))
            })?;
        let model = Arc::new(model);
        self.lock()?.insert(id.to_string(), model.clone());
        Ok(model)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, Arc<NerModel>>>, AppError> {
        self.loaded
            .lock()
            .map_err(|_| AppError::Internal("the NER model table was poisoned".into()))
    }
}
