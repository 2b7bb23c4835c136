//! PP-OCR text detection (DB, "differentiable binarization"): the network gives each pixel a
//! probability of being text; thresholding it and tracing the regions' contours gives one
//! rotated rectangle per text line, which is then grown back ("unclipped"), because the
//! network was trained to mark a shrunken core of each line.

use image::{imageops::FilterType, RgbImage};
use rten::Model;
use rten_imageproc::{
    find_contours, min_area_rect, simplify_polygon, BoundingRect, PointF, RetrievalMode,
    RotatedRect,
};
use rten_tensor::{prelude::*, NdTensor, NdTensorView};

use super::super::{OcrError, Quad};

/// PaddleOCR's detection settings (`det_db_thresh`, `det_db_box_thresh`, `det_db_unclip_ratio`).
const PIXEL_THRESHOLD: f32 = 0.3;
const BOX_THRESHOLD: f32 = 0.6;
const UNCLIP_RATIO: f32 = 1.5;
/// How far (in map pixels) a contour may be straightened before its rectangle is fitted.
const SIMPLIFY_EPSILON: f32 = 1.0;
/// Regions whose shorter side is below this many pixels (in the network's input) are noise.
const MIN_SIDE: f32 = 3.0;
/// The network input's longer side is brought down to this many pixels: enough for ~10 px text
/// on an A4 scan, and it bounds the time and memory one request can take.
const MAX_INPUT_SIDE: u32 = 2048;
/// Small images are brought up to this, so that a single line keeps enough pixels per glyph.
const MIN_INPUT_SIDE: u32 = 320;
/// The network's strides need sides that are multiples of 32.
const STRIDE: u32 = 32;
/// ImageNet statistics, applied in PaddleOCR's order to the BGR channels.
const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The size the network sees for an image of `width`x`height`.
pub fn input_size(width: u32, height: u32) -> (u32, u32) {
    let longer = width.max(height) as f32;
    let scale = if longer > MAX_INPUT_SIDE as f32 {
        MAX_INPUT_SIDE as f32 / longer
    } else if longer < MIN_INPUT_SIDE as f32 {
        MIN_INPUT_SIDE as f32 / longer
    } else {
        1.0
    };
    let round = |side: u32| {
        let scaled = (side as f32 * scale / STRIDE as f32).round() as u32 * STRIDE;
        scaled.max(STRIDE)
    };
    (round(width), round(height))
}

/// The text regions of `image`, as quadrilaterals in its own pixel coordinates.
pub fn detect(model: &Model, image: &RgbImage) -> Result<Vec<Quad>, OcrError> {
    let (width, height) = image.dimensions();
    let (input_width, input_height) = input_size(width, height);
    let resized = image::imageops::resize(image, input_width, input_height, FilterType::Triangle);
    let mut input = NdTensor::<f32, 4>::zeros([1, 3, input_height as usize, input_width as usize]);
    for (x, y, pixel) in resized.enumerate_pixels() {
        // BGR: PaddleOCR reads images with OpenCV.
        for (channel, value) in [pixel[2], pixel[1], pixel[0]].into_iter().enumerate() {
            input[[0, channel, y as usize, x as usize]] =
                (value as f32 / 255.0 - MEAN[channel]) / STD[channel];
        }
    }
    let output = model
        .run_one(input.view().into(), None)
        .map_err(|e| OcrError::Run(format!("detection: {e}")))?;
    let probabilities: NdTensor<f32, 4> = output
        .try_into()
        .map_err(|e| OcrError::Run(format!("detection output: {e:?}")))?;
    let map = probabilities.slice([0, 0]);
    let scale_x = width as f32 / input_width as f32;
    let scale_y = height as f32 / input_height as f32;
    Ok(regions(map)
        .into_iter()
        .map(|rect| {
            Quad::from_corners(rect.corners().map(|p| {
                [
                    (p.x * scale_x).clamp(0.0, width as f32),
                    (p.y * scale_y).clamp(0.0, height as f32),
                ]
            }))
        })
        .collect())
}

/// Text regions of a probability map, unclipped, in map coordinates.
pub fn regions(map: NdTensorView<f32, 2>) -> Vec<RotatedRect> {
    let mask = map.map(|&p| p > PIXEL_THRESHOLD);
    let contours = find_contours(mask.view(), RetrievalMode::External);
    let mut found = Vec::new();
    for contour in contours.iter() {
        let points: Vec<PointF> = contour.iter().map(|p| p.to_f32()).collect();
        // Long runs of collinear border pixels can throw the convex hull off (a whole line
        // came back 1 pixel high); simplifying first, as ocrs does, keeps the corners only.
        let Some(rect) = min_area_rect(&simplify_polygon(&points, SIMPLIFY_EPSILON)) else {
            continue;
        };
        if rect.width().min(rect.height()) < MIN_SIDE {
            continue;
        }
        if mean_inside(map, &rect) < BOX_THRESHOLD {
            continue;
        }
        // The Vatti offset PaddleOCR applies, which for a rectangle moves each side out by
        // area * ratio / perimeter.
        let perimeter = 2.0 * (rect.width() + rect.height());
        let distance = rect.area() * UNCLIP_RATIO / perimeter;
        let grown = rect.expanded(2.0 * distance, 2.0 * distance);
        if grown.width().min(grown.height()) < MIN_SIDE + 2.0 {
            continue;
        }
        found.push(grown);
    }
    found
}

/// The mean probability of the map's pixels inside `rect` (PaddleOCR's box score).
fn mean_inside(map: NdTensorView<f32, 2>, rect: &RotatedRect) -> f32 {
    let bounds = rect.bounding_rect();
    let (rows, cols) = (map.size(0) as i32, map.size(1) as i32);
    let top = (bounds.top().floor() as i32).clamp(0, rows - 1);
    let bottom = (bounds.bottom().ceil() as i32).clamp(0, rows - 1);
    let left = (bounds.left().floor() as i32).clamp(0, cols - 1);
    let right = (bounds.right().ceil() as i32).clamp(0, cols - 1);
    let (mut sum, mut count) = (0.0f32, 0u32);
    for y in top..=bottom {
        for x in left..=right {
            if rect.contains(PointF::from_yx(y as f32, x as f32)) {
                sum += map[[y as usize, x as usize]];
                count += 1;
            }
        }
    }
    if count == 0 {
        0.0
    } else {
        sum / count as f32
    }
}
