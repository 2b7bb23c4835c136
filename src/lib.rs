//! Quantlab: small quantized LLMs on a plain CPU, in a Leptos app (SSR + hydration on axum).
#![recursion_limit = "512"]

pub mod api;
pub mod app;
pub mod arena;
pub mod bench;
pub mod error;
pub mod tree;
pub mod types;

#[cfg(feature = "ssr")]
pub mod config;
#[cfg(feature = "ssr")]
pub mod cpu_jobs;
#[cfg(feature = "ssr")]
pub mod denormals;
#[cfg(feature = "ssr")]
pub mod inference;
pub mod ner;
pub mod ocr;
#[cfg(feature = "ssr")]
pub mod registry;
#[cfg(feature = "ssr")]
pub mod state;
#[cfg(feature = "ssr")]
pub mod storage;

#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
    // Lets tests (and curious people) see that the page is interactive.
    if let Some(body) = leptos::prelude::document().body() {
        let _ = body.set_attribute("data-hydrated", "true");
    }
}

#[cfg(feature = "ssr")]
pub mod cli;
#[cfg(feature = "ssr")]
pub mod server;
