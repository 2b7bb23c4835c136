//! PP-OCR text recognition: each detected line is sampled straight out of the image along its
//! own (possibly rotated) axes into a strip 48 pixels high, strips of similar shape are run
//! together, and the per-column character probabilities are read by greedy CTC decoding.

use image::RgbImage;
use rayon::prelude::*;
use rten::Model;
use rten_tensor::{prelude::*, NdTensor};

use super::super::{OcrError, Quad};

/// The recognition network's input height.
pub const LINE_HEIGHT: usize = 48;
/// Lines per network run; PaddleOCR's `rec_batch_num`.
const BATCH: usize = 6;
/// The narrowest strip fed. PaddleOCR pads every batch to at least 320 pixels; a batch of short
/// words (a receipt's prices) then costs as much as a long line. Reading them at their own width
/// gave the same text on every test image and bench page, and recognition of the sample receipt
/// took 265 ms instead of 300.
const MIN_WIDTH: usize = 64;
/// The widest strip: a line longer than ~200 characters is squeezed rather than let grow.
const MAX_WIDTH: usize = 3200;
/// Lines read with lower confidence are dropped (PaddleOCR's `drop_score`).
pub const MIN_CONFIDENCE: f32 = 0.5;
/// A box at least this much taller than wide holds vertical text: it is read rotated.
const VERTICAL_RATIO: f32 = 1.5;

/// One line's reading.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    pub text: String,
    pub confidence: f32,
}

/// The character set: index 0 is CTC's blank, then the dictionary, then a space.
pub struct Alphabet {
    symbols: Vec<String>,
}

impl Alphabet {
    /// PaddleOCR's dictionary file, one symbol per line, fitted to a model with `classes`
    /// outputs: most dictionaries leave out CTC's blank (index 0) and the space PaddleOCR
    /// appends (`use_space_char`); some (PP-OCRv5's `ppocr_keys_v5.txt`) already hold both.
    pub fn from_dictionary(text: &str, classes: usize) -> Result<Self, String> {
        let listed: Vec<String> = text
            .lines()
            .map(|line| line.trim_end_matches('\r').to_string())
            .collect();
        let symbols = if classes == listed.len() + 2 {
            std::iter::once(String::new())
                .chain(listed)
                .chain(std::iter::once(" ".to_string()))
                .collect()
        } else if classes == listed.len() && classes > 0 {
            // Its first entry stands for the blank.
            std::iter::once(String::new())
                .chain(listed.into_iter().skip(1))
                .collect()
        } else {
            return Err(format!(
                "the dictionary has {} symbols but the recognition model {classes} classes",
                listed.len()
            ));
        };
        Ok(Self { symbols })
    }

    pub fn classes(&self) -> usize {
        self.symbols.len()
    }
}

/// The class count of the recognition model's output (its last dimension), when declared.
pub fn output_classes(model: &Model) -> Option<usize> {
    let output = *model.output_ids().first()?;
    let shape = model.node_info(output)?.shape()?;
    match shape.last()? {
        rten::Dimension::Fixed(n) => Some(*n),
        rten::Dimension::Symbolic(_) => None,
    }
}

/// Reads the lines `quads` marks in `image`, in order.
pub fn recognize(
    model: &Model,
    alphabet: &Alphabet,
    image: &RgbImage,
    quads: &[Quad],
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<Vec<Reading>, OcrError> {
    let strips: Vec<Strip> = quads.iter().map(Strip::of).collect();
    // Similar widths together waste the least padding.
    let mut order: Vec<usize> = (0..strips.len()).collect();
    order.sort_by_key(|&i| strips[i].width);
    let run_batch = |batch: &[usize]| -> Result<Vec<(usize, Reading)>, OcrError> {
        if stop() {
            return Err(OcrError::Stopped);
        }
        let width = batch
            .iter()
            .map(|&i| strips[i].width)
            .max()
            .unwrap_or(MIN_WIDTH)
            .max(MIN_WIDTH);
        // Zero after normalisation is mid-grey, PaddleOCR's padding.
        let mut input = NdTensor::<f32, 4>::zeros([batch.len(), 3, LINE_HEIGHT, width]);
        for (slot, &i) in batch.iter().enumerate() {
            strips[i].sample(image, &mut input, slot);
        }
        let output = model
            .run_one(input.view().into(), None)
            .map_err(|e| OcrError::Run(format!("recognition: {e}")))?;
        let probabilities: NdTensor<f32, 3> = output
            .try_into()
            .map_err(|e| OcrError::Run(format!("recognition output: {e:?}")))?;
        let [_, _, classes] = probabilities.shape();
        if classes != alphabet.classes() {
            return Err(OcrError::Run(format!(
                "the recognition model has {classes} classes but the dictionary gives {}",
                alphabet.classes()
            )));
        }
        Ok(batch
            .iter()
            .enumerate()
            .map(|(slot, &i)| (i, ctc_greedy(alphabet, probabilities.slice([slot]))))
            .collect())
    };
    // Batches run side by side on rten's own pool (each still splits its operators across
    // it): the threads stay busy where one batch's small operators would leave them waiting.
    let batches: Vec<&[usize]> = order.chunks(BATCH).collect();
    let results = rten::thread_pool().run(|| {
        batches
            .par_iter()
            .map(|batch| run_batch(batch))
            .collect::<Vec<_>>()
    });
    let mut readings = vec![None; strips.len()];
    for result in results {
        for (i, reading) in result? {
            readings[i] = Some(reading);
        }
    }
    Ok(readings.into_iter().flatten().collect())
}

/// Best class per column; repeats collapse, blanks vanish. The confidence is the mean
/// probability of the characters kept (PaddleOCR's score).
fn ctc_greedy(alphabet: &Alphabet, columns: rten_tensor::NdTensorView<f32, 2>) -> Reading {
    let mut emitted: Vec<(usize, &str)> = Vec::new();
    let (mut sum, mut kept) = (0.0f32, 0u32);
    let mut previous = 0usize;
    for column in 0..columns.size(0) {
        let row = columns.slice([column]);
        let (best, probability) =
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |held, (i, &p)| {
                    if p > held.1 {
                        (i, p)
                    } else {
                        held
                    }
                });
        if best != 0 && best != previous {
            if let Some(symbol) = alphabet.symbols.get(best) {
                emitted.push((column, symbol));
                sum += probability;
                kept += 1;
            }
        }
        previous = best;
    }
    let confidence = if kept == 0 { 0.0 } else { sum / kept as f32 };
    Reading {
        text: join_with_gaps(&emitted).trim().to_string(),
        confidence,
    }
}

/// A gap between two characters this many times the line's usual character pitch is a space
/// the network did not write (a receipt's price set apart from its item in one box).
const GAP_PITCHES: usize = 3;
/// …and never less than this many output columns (each 8 pixels of the 48-pixel strip).
const MIN_GAP_COLUMNS: usize = 5;

/// The emitted symbols (with the output column each was read at) as text, with a space where
/// two characters of a spaced script stand a wide gap apart and the network put none.
fn join_with_gaps(emitted: &[(usize, &str)]) -> String {
    let spaced = |symbol: &str| {
        symbol
            .chars()
            .all(|c| !c.is_whitespace() && !is_unspaced_script(c))
    };
    let mut pitches: Vec<usize> = emitted
        .windows(2)
        .filter(|pair| spaced(pair[0].1) && spaced(pair[1].1))
        .map(|pair| pair[1].0 - pair[0].0)
        .collect();
    pitches.sort_unstable();
    let pitch = pitches.get(pitches.len() / 2).copied().unwrap_or(0);
    let wide = (GAP_PITCHES * pitch).max(MIN_GAP_COLUMNS);
    let mut text = String::new();
    for (i, &(column, symbol)) in emitted.iter().enumerate() {
        if let Some(&(before, previous)) = i.checked_sub(1).and_then(|p| emitted.get(p)) {
            if spaced(previous) && spaced(symbol) && column - before >= wide {
                text.push(' ');
            }
        }
        text.push_str(symbol);
    }
    text
}

/// Scripts written without spaces between words (CJK, kana, Thai…), where a gap means nothing.
fn is_unspaced_script(c: char) -> bool {
    matches!(c as u32,
        0x0E00..=0x0EFF // Thai, Lao
        | 0x1000..=0x109F // Myanmar
        | 0x3000..=0x9FFF // CJK punctuation, kana, CJK ideographs
        | 0xF900..=0xFAFF // CJK compatibility ideographs
        | 0xFF00..=0xFFEF // full-width forms
        | 0x20000..=0x2FA1F) // CJK extensions
}

/// How a line is sampled: an origin and two axes in image coordinates.
struct Strip {
    origin: [f32; 2],
    along: [f32; 2],
    across: [f32; 2],
    /// The strip's width in the network input.
    width: usize,
}

impl Strip {
    fn of(quad: &Quad) -> Self {
        let [top_left, top_right, _, bottom_left] = quad.points;
        let vector = |from: [f32; 2], to: [f32; 2]| [to[0] - from[0], to[1] - from[1]];
        let length = |v: [f32; 2]| (v[0] * v[0] + v[1] * v[1]).sqrt().max(1.0);
        let (mut origin, mut along, mut across) = (
            top_left,
            vector(top_left, top_right),
            vector(top_left, bottom_left),
        );
        if length(across) >= VERTICAL_RATIO * length(along) {
            // Vertical text, as PaddleOCR reads it (a quarter turn anticlockwise): down the
            // right edge, the glyphs' tops facing right.
            origin = top_right;
            (along, across) = (
                vector(top_right, quad.points[2]),
                vector(top_right, top_left),
            );
        }
        let width = ((LINE_HEIGHT as f32 * length(along) / length(across)).ceil() as usize)
            .clamp(1, MAX_WIDTH);
        Self {
            origin,
            along,
            across,
            width,
        }
    }

    /// Writes this strip, normalised to [-1, 1] in BGR order, into batch row `slot`.
    fn sample(&self, image: &RgbImage, input: &mut NdTensor<f32, 4>, slot: usize) {
        let (image_width, image_height) = image.dimensions();
        let max_x = image_width as f32 - 1.0;
        let max_y = image_height as f32 - 1.0;
        for row in 0..LINE_HEIGHT {
            let v = (row as f32 + 0.5) / LINE_HEIGHT as f32;
            for column in 0..self.width {
                let u = (column as f32 + 0.5) / self.width as f32;
                let x = (self.origin[0] + u * self.along[0] + v * self.across[0] - 0.5)
                    .clamp(0.0, max_x);
                let y = (self.origin[1] + u * self.along[1] + v * self.across[1] - 0.5)
                    .clamp(0.0, max_y);
                let rgb = bilinear(image, x, y);
                for (channel, value) in [rgb[2], rgb[1], rgb[0]].into_iter().enumerate() {
                    input[[slot, channel, row, column]] = (value / 255.0 - 0.5) / 0.5;
                }
            }
        }
    }
}

fn bilinear(image: &RgbImage, x: f32, y: f32) -> [f32; 3] {
    let (width, height) = image.dimensions();
    let (x0, y0) = (x.floor() as u32, y.floor() as u32);
    let (x1, y1) = ((x0 + 1).min(width - 1), (y0 + 1).min(height - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let at = |x: u32, y: u32| image.get_pixel(x, y).0;
    let (a, b, c, d) = (at(x0, y0), at(x1, y0), at(x0, y1), at(x1, y1));
    std::array::from_fn(|i| {
        let top = a[i] as f32 * (1.0 - fx) + b[i] as f32 * fx;
        let bottom = c[i] as f32 * (1.0 - fx) + d[i] as f32 * fx;
        top * (1.0 - fy) + bottom * fy
    })
}

#[cfg(test)]
mod tests {
    use super::join_with_gaps;

    /// Symbols at a pitch of 3 columns, with `gap` columns before the symbol at `at`.
    fn laid_out<'a>(symbols: &[&'a str], at: usize, gap: usize) -> Vec<(usize, &'a str)> {
        let mut column = 0;
        symbols
            .iter()
            .enumerate()
            .map(|(i, &symbol)| {
                column += if i == at { gap } else { 3 };
                (column, symbol)
            })
            .collect()
    }

    #[test]
    fn a_wide_gap_in_latin_text_becomes_a_space() {
        let symbols = [
            "c", "r", "o", "i", "s", "s", "a", "n", "t", "3", ".", "9", "0",
        ];
        assert_eq!(join_with_gaps(&laid_out(&symbols, 9, 11)), "croissant 3.90");
        // Ordinary letter spacing, and a gap the network already wrote, stay as they are.
        assert_eq!(join_with_gaps(&laid_out(&symbols, 9, 4)), "croissant3.90");
        let spaced = ["a", "b", " ", "c", "d"];
        assert_eq!(join_with_gaps(&laid_out(&spaced, 3, 12)), "ab cd");
    }

    #[test]
    fn scripts_without_spaces_get_none() {
        let symbols = ["合", "计", "金", "额"];
        assert_eq!(join_with_gaps(&laid_out(&symbols, 2, 12)), "合计金额");
    }
}
