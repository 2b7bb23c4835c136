//! Server functions of the Bench page: start, poll, cancel, read results.

use leptos::prelude::*;

use crate::{
    bench::types::{BenchConfig, BenchRun, BenchStatus, MachineInfo},
    error::AppError,
};

/// Starts a bench run in the background (409 while another runs); the page then polls.
#[server(prefix = "/ui", endpoint = "bench_start")]
pub async fn start_bench(config: BenchConfig) -> Result<(), AppError> {
    let state = expect_context::<crate::state::AppState>();
    crate::bench::jobs::BenchJobs::start(&state.app, config).map(|_| ())
}

#[server(prefix = "/ui", endpoint = "bench_status")]
pub async fn get_bench_status() -> Result<BenchStatus, AppError> {
    let state = expect_context::<crate::state::AppState>();
    Ok(state.app.bench.status())
}

#[server(prefix = "/ui", endpoint = "bench_cancel")]
pub async fn cancel_bench() -> Result<bool, AppError> {
    let state = expect_context::<crate::state::AppState>();
    Ok(state.app.bench.cancel())
}

/// Stored runs, newest first.
#[server(prefix = "/ui", endpoint = "bench_runs")]
pub async fn bench_runs() -> Result<Vec<BenchRun>, AppError> {
    let state = expect_context::<crate::state::AppState>();
    let app = state.app.clone();
    tokio::task::spawn_blocking(move || app.bench.results.list())
        .await
        .map_err(|e| AppError::internal(format!("reading bench results: {e}")))
}

/// This machine, as a new run would record it.
#[server(prefix = "/ui", endpoint = "bench_machine")]
pub async fn bench_machine() -> Result<MachineInfo, AppError> {
    let state = expect_context::<crate::state::AppState>();
    Ok(crate::bench::machine::machine_info(
        state.app.settings.threads,
    ))
}
