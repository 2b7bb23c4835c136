//! The state every handler and server function shares.

use std::sync::Arc;

use axum::extract::FromRef;
use leptos::config::LeptosOptions;

use crate::{config::Settings, inference::workers::WorkerPool, registry::Registry};

pub struct App {
    pub settings: Settings,
    pub registry: Arc<Registry>,
    pub pool: WorkerPool,
}

#[derive(Clone, FromRef)]
pub struct AppState {
    pub leptos_options: LeptosOptions,
    pub app: Arc<App>,
}

impl App {
    pub fn new(settings: Settings, registry: Registry) -> Arc<Self> {
        let registry = Arc::new(registry);
        Arc::new(Self {
            pool: WorkerPool::new(registry.clone(), settings.clone()),
            registry,
            settings,
        })
    }
}
