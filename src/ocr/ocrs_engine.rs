//! The ocrs engine: the ocrs crate's own pipeline (word detection, line grouping, recognition)
//! and its own networks, on the same rten. Its networks are downloaded from the ocrs project
//! (`quantlab models fetch ocrs`). ocrs reports no per-character probabilities, so its lines
//! carry no confidence rather than an invented one.

use std::{path::Path, time::Instant};

use image::RgbImage;
use ocrs::{ImageSource, OcrEngineParams, TextItem};
use rten::Model;

use super::{OcrEngine, OcrError, OcrLine, Quad, Recognition};

pub struct Ocrs {
    engine: ocrs::OcrEngine,
}

impl Ocrs {
    pub fn load(dir: &Path) -> Result<Self, OcrError> {
        crate::denormals::flush_on_rten_threads();
        let model = |name: &str| {
            let path = dir.join(name);
            Model::load_file(&path).map_err(|e| OcrError::Load {
                path: path.display().to_string(),
                detail: e.to_string(),
            })
        };
        let engine = ocrs::OcrEngine::new(OcrEngineParams {
            detection_model: Some(model("text-detection.onnx")?),
            recognition_model: Some(model("text-recognition.onnx")?),
            ..Default::default()
        })
        .map_err(|e| OcrError::Load {
            path: dir.display().to_string(),
            detail: e.to_string(),
        })?;
        Ok(Self { engine })
    }
}

impl OcrEngine for Ocrs {
    fn read_until(
        &self,
        image: &RgbImage,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<Recognition, OcrError> {
        let run = |e: &dyn std::fmt::Display| OcrError::Run(format!("ocrs: {e}"));
        let started = Instant::now();
        let source =
            ImageSource::from_bytes(image.as_raw(), image.dimensions()).map_err(|e| run(&e))?;
        let input = self.engine.prepare_input(source).map_err(|e| run(&e))?;
        let words = self.engine.detect_words(&input).map_err(|e| run(&e))?;
        let line_rects = self.engine.find_text_lines(&input, &words);
        let detect_millis = started.elapsed().as_secs_f64() * 1e3;
        if stop() {
            return Err(OcrError::Stopped);
        }
        let started = Instant::now();
        let texts = self
            .engine
            .recognize_text(&input, &line_rects)
            .map_err(|e| run(&e))?;
        let lines = texts
            .into_iter()
            .flatten()
            .filter_map(|line| {
                let text = line.to_string().trim().to_string();
                (!text.is_empty()).then(|| OcrLine {
                    text,
                    confidence: None,
                    quad: Quad::from_corners(line.rotated_rect().corners().map(|p| [p.x, p.y])),
                })
            })
            .collect();
        Ok(Recognition {
            lines,
            detections: words.len(),
            detect_millis,
            recognize_millis: started.elapsed().as_secs_f64() * 1e3,
        })
    }
}
