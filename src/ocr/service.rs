//! The OCR engines a server runs: loaded on first use and kept; decoding and reading run one
//! at a time off the async runtime behind a bounded queue (see [`crate::cpu_jobs`]).

use std::{sync::Arc, time::Instant};

use super::{
    image_input::{self, ImageInputError},
    ocrs_engine::Ocrs,
    ppocr::PpOcr,
    OcrEngine, OcrError, OcrMetrics, OcrOutput,
};
use crate::{
    config::Limits,
    cpu_jobs::{timed, CpuQueue, Loaded},
    error::AppError,
    registry::{
        ocr::{OcrEngineKind, OcrEntry},
        Registry,
    },
};

/// Requests that may wait for the running one (503 beyond).
pub const QUEUE: usize = 4;

pub struct OcrService {
    registry: Arc<Registry>,
    loaded: Loaded<dyn OcrEngine>,
    queue: CpuQueue,
}

impl From<ImageInputError> for AppError {
    fn from(error: ImageInputError) -> Self {
        let message = error.to_string();
        match error {
            ImageInputError::Empty => AppError::BadRequest(message),
            ImageInputError::TooManyBytes(_) => AppError::PayloadTooLarge(message),
            ImageInputError::Unsupported(_) => AppError::UnsupportedMediaType(message),
            ImageInputError::TooManyPixels { .. } | ImageInputError::Corrupt { .. } => {
                AppError::Unprocessable(message)
            }
        }
    }
}

impl OcrService {
    pub fn new(registry: Arc<Registry>, limits: &Limits) -> Self {
        Self {
            registry,
            loaded: Loaded::default(),
            queue: CpuQueue::new("OCR", QUEUE, limits.analysis_timeout),
        }
    }

    /// Reads the text in an uploaded image with `model` (the default OCR model when `None`).
    pub async fn read(&self, bytes: Vec<u8>, model: Option<String>) -> Result<OcrOutput, AppError> {
        let entry = self.entry(model)?;
        let (turn, queued_millis) = timed(self.queue.turn()).await;
        let turn = turn?;
        let (engine, load_millis) = self.engine(entry).await?;
        let engine_id = entry.id.clone();
        self.queue
            .run(turn, move |stop| {
                let started = Instant::now();
                let image = image_input::decode(&bytes)?;
                let decode_millis = started.elapsed().as_secs_f64() * 1e3;
                let recognition = engine.read_until(&image, stop).map_err(|e| match e {
                    // Only a client that left stops a job before its deadline; no one hears this.
                    OcrError::Stopped => AppError::Timeout("the reading was stopped".into()),
                    other => AppError::internal(other),
                })?;
                let (width, height) = image.dimensions();
                let metrics = OcrMetrics {
                    engine: engine_id,
                    millis: started.elapsed().as_secs_f64() * 1e3,
                    queued_millis,
                    load_millis,
                    decode_millis,
                    detect_millis: recognition.detect_millis,
                    recognize_millis: recognition.recognize_millis,
                    width,
                    height,
                    detections: recognition.detections,
                    lines: recognition.lines.len(),
                    characters: recognition
                        .lines
                        .iter()
                        .map(|line| line.text.chars().count())
                        .sum(),
                };
                Ok(OcrOutput {
                    lines: recognition.lines,
                    metrics,
                })
            })
            .await?
    }

    fn entry(&self, model: Option<String>) -> Result<&OcrEntry, AppError> {
        let id = model
            .filter(|id| !id.is_empty())
            .or_else(|| self.registry.default_ocr.clone())
            .ok_or_else(|| {
                AppError::ModelUnavailable("no OCR model is declared in models.toml".into())
            })?;
        self.registry.ocr(&id).ok_or_else(|| {
            let known: Vec<&str> = self
                .registry
                .ocr_models
                .iter()
                .map(|m| m.id.as_str())
                .collect();
            AppError::NotFound(format!(
                "unknown OCR model `{id}`; known: {}",
                known.join(", ")
            ))
        })
    }

    /// The loaded engine, loading it (after checking its files are there) on first use; with
    /// the milliseconds spent loading it here.
    async fn engine(&self, entry: &OcrEntry) -> Result<(Arc<dyn OcrEngine>, f64), AppError> {
        let (dir, kind) = (self.registry.ocr_dir(entry), entry.engine);
        self.loaded
            .get_or_load(
                &entry.id,
                &self.queue,
                || self.registry.ocr_unavailability(entry),
                move || match kind {
                    OcrEngineKind::Ppocr => {
                        PpOcr::load(&dir).map(|e| Arc::new(e) as Arc<dyn OcrEngine>)
                    }
                    OcrEngineKind::Ocrs => {
                        Ocrs::load(&dir).map(|e| Arc::new(e) as Arc<dyn OcrEngine>)
                    }
                },
            )
            .await
    }
}
