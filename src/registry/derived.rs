//! Models made here, such as another quantization of a declared one. They are listed in
//! `quantized.toml` inside the models folder, beside their files, in models.toml's
//! `[[models]]` format. The registry merges them at start-up, so they appear wherever a
//! declared model does (Chat, Compare, Arena, Bench, the APIs) and survive restarts.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{validate_entry, ModelEntry, RegistryError};
use crate::types::EngineKind;

/// The file, inside the models folder, that lists the models made here.
pub const DERIVED_FILE: &str = "quantized.toml";

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

/// What a new entry says; the rest is copied from the model it was made from.
pub struct NewModel<'a> {
    pub source: &'a ModelEntry,
    pub id: String,
    pub name: String,
    pub quantization: String,
    pub bits_per_weight: f32,
    pub description: String,
    pub provenance_note: Option<String>,
    pub file: String,
    pub sha256: String,
    pub size: u64,
}

/// The fields written for a derived model: a subset of [`ModelEntry`]'s, same names.
#[derive(Serialize)]
struct Written<'a> {
    id: &'a str,
    name: &'a str,
    family: &'a str,
    parameters: &'a str,
    quantization: &'a str,
    bits_per_weight: f32,
    context_length: u32,
    engine: EngineKind,
    instruct: bool,
    license: &'a str,
    description: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    provenance_note: Option<&'a str>,
    file: &'a str,
    sha256: &'a str,
    size: u64,
}

/// Appends `model` to the derived file (written whole under a temporary name, then renamed).
///
/// # Errors
/// The file cannot be read or written, or the entry would be invalid.
pub fn add(models_dir: &Path, model: &NewModel<'_>) -> Result<PathBuf, RegistryError> {
    let path = models_dir.join(DERIVED_FILE);
    let written = Written {
        id: &model.id,
        name: &model.name,
        family: &model.source.family,
        parameters: &model.source.parameters,
        quantization: &model.quantization,
        bits_per_weight: model.bits_per_weight,
        context_length: model.source.context_length,
        engine: EngineKind::LlamaCpp,
        instruct: model.source.instruct,
        license: &model.source.license,
        description: &model.description,
        provenance_note: model.provenance_note.as_deref(),
        file: &model.file,
        sha256: &model.sha256,
        size: model.size,
    };
    let table = toml::to_string(&written)
        .map_err(|e| RegistryError::Invalid(format!("cannot write the entry: {e}")))?;
    // The new entry must read back as a valid model before it is written.
    let entry: ModelEntry = toml::from_str(&table).map_err(|source| RegistryError::Parse {
        path: path.clone(),
        source: Box::new(source),
    })?;
    validate_entry(&entry)?;
    let existing = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            "# Models made by `quantlab models quantize`; same format as models.toml.\n".into()
        }
        Err(source) => return Err(RegistryError::Read { path, source }),
    };
    let text = format!("{}\n[[models]]\n{table}", existing.trim_end());
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
    let text =
        format!("# Models made by `quantlab models quantize`; same format as models.toml.\n{body}");
    let temporary = models_dir.join(format!("{DERIVED_FILE}.partial"));
    let write = |source| RegistryError::Read {
        path: path.clone(),
        source,
    };
    std::fs::write(&temporary, text).map_err(write)?;
    std::fs::rename(&temporary, &path).map_err(write)?;
    Ok(true)
}
