//! Named Entity Recognition: what a recognition returns (shared with the browser), the word-piece
//! to entity-span rules ([`spans`]), and on the server the engine ([`model`]: BERT token
//! classification on rten) and the request queue ([`service`]).

#[cfg(feature = "ssr")]
mod model;
#[cfg(feature = "ssr")]
pub mod runtime;
#[cfg(feature = "ssr")]
pub mod service;
pub mod spans;
#[cfg(feature = "ssr")]
pub mod tokenizer;

use serde::{Deserialize, Serialize};

#[cfg(feature = "ssr")]
pub use model::{NerError, NerModel, DEFAULT_THRESHOLD};
#[cfg(feature = "ssr")]
pub use runtime::NerRuntime;
pub use spans::Entity;

/// Counts and timings of one recognition.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NerMetrics {
    pub model: String,
    /// Tokenizing, the model and the spans; not the waiting or loading below.
    pub millis: f64,
    /// Waiting for the requests ahead of this one.
    #[serde(default)]
    pub queued_millis: f64,
    /// Loading the model, when this request was its first use (0 otherwise).
    #[serde(default)]
    pub load_millis: f64,
    pub characters: usize,
    pub tokens: usize,
    pub windows: usize,
    pub entities: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NerOutput {
    pub entities: Vec<Entity>,
    pub metrics: NerMetrics,
}

/// A NER model and whether it can run here, for the NER tab's picker and `GET /api/ner/models`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NerModelInfo {
    pub id: String,
    pub name: String,
    pub labels: String,
    pub description: String,
    pub license: String,
    /// `rten` or `candle`.
    pub runtime: String,
    pub default: bool,
    /// Why it cannot run (with the command that fixes it); `None` when it can.
    pub unavailable: Option<String>,
}
