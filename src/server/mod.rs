//! Builds the axum router (pages, server functions, JSON APIs, websockets) and serves it with
//! the connection limits and graceful shutdown of [`connections`] and [`shutdown`].

pub mod connections;
pub mod headers;
pub mod shutdown;
pub mod write_timeout;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{middleware, Router};
use leptos::prelude::*;
use leptos_axum::{generate_route_list, LeptosRoutes};

use self::shutdown::Phase;
use crate::{
    app::{shell, App as UiApp},
    config::Settings,
    registry::Registry,
    state::{App, AppState},
};

/// After the grace period, how long stopped replies get to be saved and their sockets closed.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// The whole application as a router, ready to serve or to drive in tests.
pub fn router(app: Arc<App>, leptos_options: LeptosOptions) -> Router {
    let state = AppState {
        leptos_options: leptos_options.clone(),
        app,
    };
    let routes = generate_route_list(UiApp);
    Router::new()
        .leptos_routes_with_context(&state, routes, headers::provide_nonce, {
            let options = leptos_options.clone();
            move || shell(options.clone())
        })
        .merge(crate::api::routes(state.clone()))
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(shell))
        .layer(middleware::from_fn(crate::api::server_fn_status))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::api::security::require_key,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::api::limits::guard_body,
        ))
        .layer(middleware::from_fn(
            crate::api::security::refuse_foreign_websockets,
        ))
        .layer(middleware::from_fn(headers::secure))
        // Failures are logged where they happen (`AppError::internal` at ERROR); a 503 for a full
        // queue is routine under load and must not flood the log.
        .layer(tower_http::trace::TraceLayer::new_for_http().on_failure(()))
        .layer(middleware::from_fn(crate::error::request_id::assign))
        .with_state(state)
}

/// Leptos options for a binary run on its own (not under cargo-leptos' watch mode).
pub fn leptos_options(addr: Option<SocketAddr>) -> anyhow::Result<LeptosOptions> {
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
    Ok(leptos_options)
}

pub async fn serve(
    settings: Settings,
    registry: Registry,
    addr: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let leptos_options = leptos_options(addr)?;
    let addr = leptos_options.site_addr;
    for path in crate::registry::leftovers::sweep(&settings.models_dir) {
        tracing::info!(path = %path.display(), "removed what an interrupted download or quantization left");
    }
    let store = {
        let settings = settings.clone();
        tokio::task::spawn_blocking(move || crate::storage::open_store(&settings))
            .await
            .context("opening the conversation store")?
            .context("opening the conversation store")?
    };
    let persistence = store.status();
    tracing::info!(
        backend = persistence.backend.as_str(),
        pending_import = persistence.pending_import,
        "conversations: {}",
        persistence.detail
    );
    let app = App::new(settings, registry, store);
    if app.settings.preload_default {
        let id = app.registry.current().default_id.clone();
        if let Err(e) = app.pool.preload(&id) {
            tracing::warn!("the default model will not load: {e}");
        }
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tracing::info!("Quantlab listening on http://{addr}");
    if let Some(link) = app.sessions.login_link(&addr) {
        tracing::info!("this server needs its API key; open {link} to use the web app here");
    }
    serve_until_signal(app, leptos_options, listener).await;
    Ok(())
}

/// Serves until SIGTERM/SIGINT, then shuts down gracefully (see [`shutdown`]).
pub async fn serve_until_signal(
    app: Arc<App>,
    leptos_options: LeptosOptions,
    listener: tokio::net::TcpListener,
) {
    let router = router(app.clone(), leptos_options);
    let accepting = tokio::spawn(connections::accept(
        listener,
        router,
        app.settings.limits.clone(),
        app.shutdown.clone(),
    ));
    shutdown::signal().await;
    drain_and_stop(&app).await;
    accepting.abort();
}

/// Stops taking work, lets running replies finish within the grace period (a second signal cuts
/// it short), then stops what still runs and waits for it to be saved and closed.
pub async fn drain_and_stop(app: &App) {
    let grace = app.settings.limits.shutdown_grace;
    tracing::info!(
        replies = app.pool.active_jobs(),
        open = app.shutdown.open(),
        "shutting down: no new requests; running replies have {grace:?} to finish"
    );
    app.shutdown.advance(Phase::Draining);
    app.pool.drain();
    let idle = || app.pool.active_jobs() == 0;
    let finished = tokio::select! {
        finished = app.shutdown.settled(grace, idle) => finished,
        _ = shutdown::signal() => false,
    };
    if !finished {
        tracing::info!(
            replies = app.pool.active_jobs(),
            "stopping the replies still running; they are saved as interrupted"
        );
    }
    app.shutdown.advance(Phase::Stopping);
    app.pool.stop_all();
    app.bench.cancel();
    app.model_jobs.stop_all(STOP_WAIT).await;
    if !app.shutdown.settled(STOP_WAIT, idle).await {
        tracing::warn!(
            open = app.shutdown.open(),
            "some connections did not close in time; exiting anyway"
        );
    }
    tracing::info!("shut down");
}
