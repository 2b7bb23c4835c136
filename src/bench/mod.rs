//! Benchmarks: speed (prefill, decode, time to first token), memory (resident, peak, load time)
//! and quality (perplexity on a shipped public-domain text) of each model, on a fixed prompt set
//! with warm-up and repeats. The same runner serves `quantlab bench`, `POST /api/bench` and the
//! Bench page; the types and statistics are shared with the browser.

pub mod ratios;
pub mod stats;
pub mod types;

#[cfg(feature = "ssr")]
pub mod bitnet;
#[cfg(feature = "ssr")]
pub mod bitnet_batch;
#[cfg(feature = "ssr")]
pub mod bitnet_cpp;
#[cfg(feature = "ssr")]
pub mod bitnet_cpp_batch;
#[cfg(feature = "ssr")]
pub mod cli;
#[cfg(feature = "ssr")]
pub mod divergence;
#[cfg(feature = "ssr")]
pub mod jobs;
#[cfg(feature = "ssr")]
mod load;
#[cfg(feature = "ssr")]
pub mod machine;
#[cfg(feature = "ssr")]
pub mod ner;
#[cfg(feature = "ssr")]
pub mod ocr;
#[cfg(feature = "ssr")]
mod python;
#[cfg(feature = "ssr")]
pub mod quality;
#[cfg(feature = "ssr")]
pub mod reference;
#[cfg(feature = "ssr")]
pub mod results;
#[cfg(feature = "ssr")]
pub mod runner;
