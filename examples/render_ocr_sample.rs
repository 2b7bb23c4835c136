//! Draws the OCR tab's sample page (public/samples/ocr-sample.jpg) with the same renderer and
//! "phone photo" degradation the tests use, so the sample is reproducible:
//! `cargo run --example render_ocr_sample --no-default-features --features ssr`.

use quantlab::ocr::synthetic;

fn main() -> std::io::Result<()> {
    let page = synthetic::render(
        &[
            "QUANTLAB CAFE",
            "12 Harbour Street, Springfield",
            "",
            "2 x Flat white            7.80",
            "1 x Almond croissant      3.90",
            "1 x Sparkling water       2.50",
            "",
            "Total (EUR)              14.20",
            "Paid by card, 29 Nov 2026 10:42",
            "Thank you for your visit!",
        ],
        30.0,
        70,
    );
    let photo = synthetic::degrade(&page, 2.0, 14.0, 2026);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/public/samples/ocr-sample.jpg");
    std::fs::create_dir_all(
        std::path::Path::new(path)
            .parent()
            .unwrap_or(std::path::Path::new(".")),
    )?;
    std::fs::write(path, photo)?;
    println!("wrote {path}");
    Ok(())
}
