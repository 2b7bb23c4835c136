//! PaddleOCR's PP-OCR pipeline on rten: detection ([`detect`]), one box per line in reading
//! order, then CTC recognition of each line ([`recognize`]). A model folder holds
//! `detection.rten`, `recognition.rten` (or `.onnx`) and `dictionary.txt`.

pub mod detect;
pub mod recognize;

use std::{path::Path, time::Instant};

use image::RgbImage;
use rten::Model;

use super::{layout::reading_order, OcrEngine, OcrError, OcrLine, Recognition};
use recognize::{Alphabet, MIN_CONFIDENCE};

pub struct PpOcr {
    detection: Model,
    recognition: Model,
    alphabet: Alphabet,
}

/// The file of network `stem` ("detection", "recognition") in a model folder: `.rten`, else
/// `.onnx` when only that is there; the `.rten` name when neither is (to report it missing).
pub fn network_file(dir: &Path, stem: &str) -> String {
    let onnx = format!("{stem}.onnx");
    let rten = format!("{stem}.rten");
    if !dir.join(&rten).is_file() && dir.join(&onnx).is_file() {
        onnx
    } else {
        rten
    }
}

impl PpOcr {
    pub fn load(dir: &Path) -> Result<Self, OcrError> {
        crate::denormals::flush_on_rten_threads();
        let model = |stem: &str| {
            let path = dir.join(network_file(dir, stem));
            Model::load_file(&path).map_err(|e| OcrError::Load {
                path: path.display().to_string(),
                detail: e.to_string(),
            })
        };
        let dictionary_path = dir.join("dictionary.txt");
        let dictionary = std::fs::read_to_string(&dictionary_path).map_err(|e| OcrError::Load {
            path: dictionary_path.display().to_string(),
            detail: e.to_string(),
        })?;
        let recognition = model("recognition")?;
        let classes = recognize::output_classes(&recognition).ok_or_else(|| OcrError::Load {
            path: dir.join("recognition").display().to_string(),
            detail: "the recognition model does not declare its number of classes".into(),
        })?;
        let alphabet =
            Alphabet::from_dictionary(&dictionary, classes).map_err(|detail| OcrError::Load {
                path: dictionary_path.display().to_string(),
                detail,
            })?;
        Ok(Self {
            detection: model("detection")?,
            recognition,
            alphabet,
        })
    }
}

impl OcrEngine for PpOcr {
    fn read_until(
        &self,
        image: &RgbImage,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<Recognition, OcrError> {
        let started = Instant::now();
        let mut quads = detect::detect(&self.detection, image)?;
        reading_order(&mut quads);
        let detect_millis = started.elapsed().as_secs_f64() * 1e3;
        if stop() {
            return Err(OcrError::Stopped);
        }
        let started = Instant::now();
        let readings =
            recognize::recognize(&self.recognition, &self.alphabet, image, &quads, stop)?;
        let lines = readings
            .into_iter()
            .zip(&quads)
            .filter(|(reading, _)| reading.confidence >= MIN_CONFIDENCE && !reading.text.is_empty())
            .map(|(reading, quad)| OcrLine {
                text: reading.text,
                confidence: Some(reading.confidence),
                quad: *quad,
            })
            .collect();
        Ok(Recognition {
            lines,
            detections: quads.len(),
            detect_millis,
            recognize_millis: started.elapsed().as_secs_f64() * 1e3,
        })
    }
}
