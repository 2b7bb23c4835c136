//! Optical character recognition: what an OCR run returns (shared with the browser), and on the
//! server the engines behind one trait — the PP-OCR pipeline on rten ([`ppocr`]) and the ocrs
//! crate ([`ocrs_engine`]) — with the upload decoding ([`image_input`]) and the request queue
//! ([`service`]).

use serde::{Deserialize, Serialize};

#[cfg(feature = "ssr")]
pub mod image_input;
#[cfg(feature = "ssr")]
pub mod layout;
#[cfg(feature = "ssr")]
pub mod ocrs_engine;
#[cfg(feature = "ssr")]
pub mod ppocr;
#[cfg(feature = "ssr")]
pub mod service;
#[cfg(feature = "ssr")]
pub mod synthetic;

/// A quadrilateral in image pixels: top-left, top-right, bottom-right, bottom-left, each
/// `[x, y]`. Text in a photo is rarely axis-aligned, so a line's box may be turned.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Quad {
    pub points: [[f32; 2]; 4],
}

impl Quad {
    /// Orders four corners as top-left, top-right, bottom-right, bottom-left: the two leftmost
    /// are the left side, each side's upper one is its top.
    pub fn from_corners(mut corners: [[f32; 2]; 4]) -> Self {
        corners.sort_by(|a, b| a[0].total_cmp(&b[0]));
        let [a, b, c, d] = corners;
        let (top_left, bottom_left) = if a[1] <= b[1] { (a, b) } else { (b, a) };
        let (top_right, bottom_right) = if c[1] <= d[1] { (c, d) } else { (d, c) };
        Self {
            points: [top_left, top_right, bottom_right, bottom_left],
        }
    }

    /// The axis-aligned bounds: (left, top, right, bottom).
    pub fn bounds(&self) -> (f32, f32, f32, f32) {
        let xs = self.points.map(|p| p[0]);
        let ys = self.points.map(|p| p[1]);
        let min = |v: [f32; 4]| v.into_iter().fold(f32::INFINITY, f32::min);
        let max = |v: [f32; 4]| v.into_iter().fold(f32::NEG_INFINITY, f32::max);
        (min(xs), min(ys), max(xs), max(ys))
    }

    /// The length of its left side: the text's height, even when the box is turned.
    pub fn height(&self) -> f32 {
        let [top_left, _, _, bottom_left] = self.points;
        ((bottom_left[0] - top_left[0]).powi(2) + (bottom_left[1] - top_left[1]).powi(2)).sqrt()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OcrLine {
    pub text: String,
    /// Mean probability of the line's characters, 0 to 1; `None` from an engine that reports
    /// none (ocrs).
    pub confidence: Option<f32>,
    #[serde(rename = "box")]
    pub quad: Quad,
}

/// Counts and timings of one OCR run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OcrMetrics {
    pub engine: String,
    /// Decoding, detection and recognition; not the waiting or loading below.
    pub millis: f64,
    /// Waiting for the requests ahead of this one.
    #[serde(default)]
    pub queued_millis: f64,
    /// Loading the model, when this request was its first use (0 otherwise).
    #[serde(default)]
    pub load_millis: f64,
    pub decode_millis: f64,
    pub detect_millis: f64,
    pub recognize_millis: f64,
    /// The upright image's size.
    pub width: u32,
    pub height: u32,
    /// Text regions found (lines for PP-OCR, words for ocrs), and lines kept.
    pub detections: usize,
    pub lines: usize,
    pub characters: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OcrOutput {
    pub lines: Vec<OcrLine>,
    pub metrics: OcrMetrics,
}

/// An OCR engine and whether it can run here, for the OCR tab's picker and `GET /api/ocr/engines`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OcrEngineInfo {
    pub id: String,
    pub name: String,
    pub description: String,
    pub license: String,
    pub default: bool,
    /// Why it cannot run (with the command that fixes it); `None` when it can.
    pub unavailable: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum OcrError {
    #[error("cannot read {path}: {detail}")]
    Load { path: String, detail: String },
    #[error("the OCR model failed: {0}")]
    Run(String),
    /// Stopped between stages: the client left or the deadline passed.
    #[error("stopped")]
    Stopped,
}

/// Text found in an image, with timings of the two stages.
#[cfg(feature = "ssr")]
pub struct Recognition {
    pub lines: Vec<OcrLine>,
    pub detections: usize,
    pub detect_millis: f64,
    pub recognize_millis: f64,
}

/// An OCR engine: from an upright RGB image to its lines of text in reading order.
#[cfg(feature = "ssr")]
pub trait OcrEngine: Send + Sync {
    /// Reads `image`, stopping between stages (and recognition batches) once `stop` says so.
    fn read_until(
        &self,
        image: &image::RgbImage,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<Recognition, OcrError>;

    fn read(&self, image: &image::RgbImage) -> Result<Recognition, OcrError> {
        self.read_until(image, &|| false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quad(left: f32, top: f32, right: f32, bottom: f32) -> Quad {
        Quad::from_corners([[right, bottom], [left, top], [left, bottom], [right, top]])
    }

    #[test]
    fn corners_come_out_clockwise_from_top_left() {
        let q = quad(10.0, 20.0, 110.0, 40.0);
        assert_eq!(
            q.points,
            [[10.0, 20.0], [110.0, 20.0], [110.0, 40.0], [10.0, 40.0]]
        );
        assert_eq!(q.bounds(), (10.0, 20.0, 110.0, 40.0));
    }
}
