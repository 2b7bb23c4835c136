//! The state every handler and server function shares.

use std::sync::Arc;

use axum::extract::FromRef;
use leptos::config::LeptosOptions;

use crate::{
    api::{security::Sessions, socket::WebsocketClients},
    bench::{jobs::BenchJobs, results::BenchResults},
    config::Settings,
    error::AppError,
    inference::workers::WorkerPool,
    registry::{jobs::ModelJobs, live::LiveRegistry, Registry},
    server::shutdown::Shutdown,
    storage::{ConversationStore, StoreError},
};

pub struct App {
    pub settings: Settings,
    pub bench: BenchJobs,
    /// The chat models; replaced when the Models page makes or deletes one.
    pub registry: LiveRegistry,
    pub pool: WorkerPool,
    /// Downloads and quantizations started from the Models page or the API.
    pub model_jobs: Arc<ModelJobs>,
    pub conversations: Arc<dyn ConversationStore>,
    pub ner: crate::ner::service::NerService,
    pub ocr: crate::ocr::service::OcrService,
    /// Where the server is in a graceful shutdown, and what is still open.
    pub shutdown: Shutdown,
    /// Browser sessions when the server has an API key.
    pub sessions: Sessions,
    /// Open websockets per client address.
    pub websockets: WebsocketClients,
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
        let ner_ocr = Arc::new(registry.clone());
        let registry = LiveRegistry::new(registry);
        let limits = &settings.limits;
        Arc::new(Self {
            bench: BenchJobs::new(BenchResults::new(settings.bench_dir.clone())),
            pool: WorkerPool::new(registry.clone(), settings.clone()),
            model_jobs: Arc::new(ModelJobs::new(registry.clone(), settings.threads)),
            // NER and OCR models are never made or deleted here: the start-up list serves.
            ner: crate::ner::service::NerService::new(ner_ocr.clone(), limits),
            ocr: crate::ocr::service::OcrService::new(ner_ocr, limits),
            sessions: Sessions::new(settings.api_key.clone()),
            shutdown: Shutdown::default(),
            websockets: WebsocketClients::default(),
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
            .map_err(|e| AppError::internal(format!("storage task failed: {e}")))?
            .map_err(AppError::from)
    }
}
