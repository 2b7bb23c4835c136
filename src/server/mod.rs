//! Builds the axum router (pages, server functions, JSON APIs) and serves it.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use axum::{middleware, Router};
use leptos::prelude::*;
use leptos_axum::{generate_route_list, LeptosRoutes};
use tower_http::trace::TraceLayer;

use crate::{
    app::{shell, App as UiApp},
    config::Settings,
    registry::Registry,
    state::{App, AppState},
};

/// The whole application as a router, ready to serve or to drive in tests.
pub fn router(app: Arc<App>, leptos_options: LeptosOptions) -> Router {
    let state = AppState {
        leptos_options: leptos_options.clone(),
        app,
    };
    let routes = generate_route_list(UiApp);
    Router::new()
        .leptos_routes_with_context(&state, routes, || {}, {
            let options = leptos_options.clone();
            move || shell(options.clone())
        })
        .merge(crate::api::routes(state.clone()))
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(shell))
        .layer(middleware::from_fn(crate::api::refuse_foreign_websockets))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

pub async fn serve(
    settings: Settings,
    registry: Registry,
    addr: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let conf = get_configuration(None).context("reading the Leptos configuration")?;
    let mut leptos_options = conf.leptos_options;
    // Leptos defaults to DEV, whose page tries to reach cargo-leptos' reload server; a binary run
    // on its own is a production server unless cargo-leptos (watch mode) says otherwise.
    if std::env::var_os("LEPTOS_ENV").is_none() {
        leptos_options.env = leptos::config::Env::PROD;
    }
    // cargo-leptos bakes the bundle's name in at compile time; a binary rebuilt by plain cargo
    // (e.g. `cargo test`) lacks it and would point the page at `/pkg/.js`.
    if leptos_options.output_name.is_empty() {
        leptos_options.output_name = env!("CARGO_PKG_NAME").into();
    }
    if let Some(addr) = addr {
        leptos_options.site_addr = addr;
    }
    let addr = leptos_options.site_addr;
    let store = crate::storage::open_store(&settings).context("opening the conversation store")?;
    tracing::info!("conversations: {}", store.status().detail);
    let app = App::new(settings, registry, store);
    if app.settings.preload_default {
        let id = app.registry.default_id.clone();
        if let Err(e) = app.pool.preload(&id) {
            tracing::warn!("the default model will not load: {e}");
        }
    }
    let router = router(app, leptos_options);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tracing::info!("Quantlab listening on http://{addr}");
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving")
}
