//! The state every handler and server function shares.

use std::sync::Arc;

use axum::extract::FromRef;
use leptos::config::LeptosOptions;

use crate::{
    bench::{jobs::BenchJobs, results::BenchResults},
    config::Settings,
    error::AppError,
    inference::workers::WorkerPool,
    registry::Registry,
    storage::{ConversationStore, StoreError},
};

pub struct App {
    pub settings: Settings,
    pub bench: BenchJobs,
    pub registry: Arc<Registry>,
    pub pool: WorkerPool,
    pub conversations: Arc<dyn ConversationStore>,
    pub ner: crate::ner::service::NerService,
    pub ocr: crate::ocr::service::OcrService,
}

#[derive(Clone, FromRef)]
pub struct AppState {
    pub leptos_options: LeptosOptions,
    pub app: Arc<App>,
}

impl App {
    pub fn new(
        settings: Settings,
        registry: Registry,
        conversations: Arc<dyn ConversationStore>,
    ) -> Arc<Self> {
        let registry = Arc::new(registry);
        Arc::new(Self {
            bench: BenchJobs::new(BenchResults::new(settings.bench_dir.clone())),
            pool: WorkerPool::new(registry.clone(), settings.clone()),
            ner: crate::ner::service::NerService::new(registry.clone()),
            ocr: crate::ocr::service::OcrService::new(registry.clone()),
            registry,
            settings,
            conversations,
        })
    }

    /// Runs a storage call on the blocking pool (file and database I/O must not stall the
    /// async workers) and maps its error for the HTTP boundary.
    pub async fn store<T, F>(&self, call: F) -> Result<T, AppError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn ConversationStore) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.conversations.clone();
        tokio::task::spawn_blocking(move || call(store.as_ref()))
            .await
            .map_err(|e| AppError::Internal(format!("storage task failed: {e}")))?
            .map_err(AppError::from)
    }
}
