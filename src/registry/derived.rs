//! The user registry: models added here rather than declared in models.toml, namely other
//! quantizations of a declared one and GGUF files added from the hub. They are listed in
//! `quantized.toml` inside the models folder, beside their files, in models.toml's
//! `[[models]]` format. The registry merges them at start-up, so they appear wherever a
//! declared model does (Chat, Compare, Arena, Bench, the APIs) and survive restarts.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{validate_entry, ModelEntry, RegistryError};
use crate::types::EngineKind;

/// The file, inside the models folder, that lists the models made here.
pub const DERIVED_FILE: &str = "quantized.toml";

const HEADER: &str = "# Models added here: quantizations made by `quantlab models quantize` and GGUF files\n# added from the hub by `quantlab models add`. Same format as models.toml.\n";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DerivedFile {
    #[serde(default)]
    models: Vec<ModelEntry>,
}

/// The entries of `models_dir`'s derived file (none when there is no file), validated like
/// models.toml's.
///
/// # Errors
/// An unreadable or invalid file, naming it: a model someone made is never dropped silently.
pub fn read(models_dir: &Path) -> Result<Vec<ModelEntry>, RegistryError> {
    let path = models_dir.join(DERIVED_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(RegistryError::Read { path, source }),
    };
    let file: DerivedFile = toml::from_str(&text).map_err(|source| RegistryError::Parse {
        path: path.clone(),
        source: Box::new(source),
    })?;
    for entry in &file.models {
        validate_entry(entry)
            .map_err(|e| RegistryError::Invalid(format!("{}: {e}", path.display())))?;
    }
    Ok(file.models)
}

/// The id and file name a quantization of `entry` to the llama.cpp type `label` gets, e.g.
/// `smollm2-135m-instruct-q8-0` and `SmolLM2-135M-Instruct.Q4_1.Q8_0.gguf`.
pub fn quantized_names(entry: &ModelEntry, label: &str) -> (String, String) {
    let id = format!(
        "{}-{}",
        entry.id,
        label.to_ascii_lowercase().replace('_', "-")
    );
    let stem = entry.file.strip_suffix(".gguf").unwrap_or(&entry.file);
    (id, format!("{stem}.{label}.gguf"))
}

/// A new entry of the user registry: a subset of [`ModelEntry`]'s fields, same names.
#[derive(Serialize)]
pub struct NewModel {
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provenance_note: Option<String>,
    pub file: String,
    pub sha256: String,
    pub size: u64,
    /// Where it came from, for a model added from the hub (it can be fetched again).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hub: Option<WrittenHub>,
}

/// A hub source as models.toml writes it.
#[derive(Serialize)]
pub struct WrittenHub {
    pub repo: String,
    pub file: String,
    pub revision: String,
}

/// Appends `model` to the derived file (written whole under a temporary name, then renamed).
///
/// # Errors
/// The file cannot be read or written, or the entry would be invalid.
pub fn add(models_dir: &Path, model: &NewModel) -> Result<PathBuf, RegistryError> {
    #[derive(Serialize)]
    struct OneModel<'a> {
        models: [&'a NewModel; 1],
    }
    let path = models_dir.join(DERIVED_FILE);
    // Written as `[[models]]` with its own sub-tables (`[models.hub]`), appended as text so the
    // existing entries and comments stay as they were.
    let table = toml::to_string(&OneModel { models: [model] })
        .map_err(|e| RegistryError::Invalid(format!("cannot write the entry: {e}")))?;
    let existing = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => HEADER.into(),
        Err(source) => return Err(RegistryError::Read { path, source }),
    };
    let text = format!("{}\n\n{table}", existing.trim_end());
    // The whole new file must read back, every entry valid, before it replaces the old one.
    let parsed: DerivedFile = toml::from_str(&text).map_err(|source| RegistryError::Parse {
        path: path.clone(),
        source: Box::new(source),
    })?;
    for entry in &parsed.models {
        validate_entry(entry)?;
    }
    if !parsed.models.iter().any(|m| m.id == model.id) {
        return Err(RegistryError::Invalid(format!(
            "the entry for `{}` did not read back",
            model.id
        )));
    }
    let temporary = models_dir.join(format!("{DERIVED_FILE}.partial"));
    let write = |source| RegistryError::Read {
        path: path.clone(),
        source,
    };
    std::fs::write(&temporary, text).map_err(write)?;
    std::fs::rename(&temporary, &path).map_err(write)?;
    Ok(path)
}

/// Removes `id`'s entry from the derived file (rewritten whole, then renamed); the other
/// entries are kept as they were. Returns whether the id was listed.
///
/// # Errors
/// The file cannot be read, parsed or written.
pub fn remove(models_dir: &Path, id: &str) -> Result<bool, RegistryError> {
    let path = models_dir.join(DERIVED_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => return Err(RegistryError::Read { path, source }),
    };
    let parse_error = |source| RegistryError::Parse {
        path: path.clone(),
        source: Box::new(source),
    };
    let mut document: toml::Table = toml::from_str(&text).map_err(parse_error)?;
    let Some(toml::Value::Array(models)) = document.get_mut("models") else {
        return Ok(false);
    };
    let before = models.len();
    models.retain(|model| model.get("id").and_then(toml::Value::as_str) != Some(id));
    if models.len() == before {
        return Ok(false);
    }
    if models.is_empty() {
        // `models = []` would clash with the `[[models]]` tables `add` appends later.
        document.remove("models");
    }
    let body = toml::to_string(&document)
        .map_err(|e| RegistryError::Invalid(format!("cannot write {}: {e}", path.display())))?;
    let text = format!("{HEADER}{body}");
    let temporary = models_dir.join(format!("{DERIVED_FILE}.partial"));
    let write = |source| RegistryError::Read {
        path: path.clone(),
        source,
    };
    std::fs::write(&temporary, text).map_err(write)?;
    std::fs::rename(&temporary, &path).map_err(write)?;
    Ok(true)
}
