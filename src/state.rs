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
    registry::Registry,
    server::shutdown::Shutdown,
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
        let registry = Arc::new(registry);
        let limits = &settings.limits;
        Arc::new(Self {
            bench: BenchJobs::new(BenchResults::new(settings.bench_dir.clone())),
            pool: WorkerPool::new(registry.clone(), settings.clone()),
            ner: crate::ner::service::NerService::new(registry.clone(), limits),
            ocr: crate::ocr::service::OcrService::new(registry.clone(), limits),
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
