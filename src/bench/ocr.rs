//! `quantlab bench --ocr`: our OCR against RapidOCR (PaddleOCR's pipeline on onnxruntime and
//! OpenCV) running the very same PP-OCRv5 ONNX networks, and against Tesseract, on the same
//! images with the same thread count, in one run: median latency with ratios, and the
//! character error rate of each reading against the known text. The images are drawn here: a
//! clean page, and the same page as a phone photo (turned, unevenly lit, noisy, JPEG).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context};
use serde::Deserialize;

use super::stats::median_millis;
use crate::{
    ocr::{
        image_input,
        ppocr::PpOcr,
        synthetic::{cer, degrade, png, render},
        OcrEngine,
    },
    registry::Registry,
};

/// The page: twenty lines of mixed prose, figures and punctuation.
const PAGE: [&str; 20] = [
    "Quarterly report of the Harbour Street cooperative",
    "Prepared on 29 November 2026 for the members' meeting.",
    "Revenue rose to 48,210.75 EUR, up 12.4% on the year.",
    "Costs were 39,880.10 EUR, mostly rent and wages.",
    "The new oven (model KX-220) paid for itself by June.",
    "Opening hours stay 7:30 to 18:00, Monday to Saturday.",
    "Members asked for a vegetarian lunch; we will try it.",
    "Deliveries now come on Tuesdays and Fridays at 6 am.",
    "Please send questions to board@harbour-coop.example.",
    "The next general assembly is on 14 March 2027.",
    "Votes: 37 in favour, 4 against, 2 abstentions.",
    "Our thanks go to the volunteers who painted the hall.",
    "A quick brown fox jumps over the lazy dog, twice.",
    "Pack my box with five dozen liquor jugs, said Jo.",
    "Invoice numbers 2026-0141 to 2026-0187 are settled.",
    "Insurance was renewed at 1,150 EUR per year.",
    "The bicycle rack by the door holds twelve bikes.",
    "Waste sorting improved: 62 kg less landfill a month.",
    "Minutes taken by R. Okafor and checked by L. Brandt.",
    "Signed, the board of the Harbour Street cooperative.",
];

struct BenchImage {
    name: &'static str,
    path: PathBuf,
    bytes: Vec<u8>,
}

#[derive(Deserialize)]
struct RapidResult {
    millis: f64,
    lines: Vec<String>,
}

#[derive(Deserialize)]
struct RapidReference {
    results: Vec<RapidResult>,
    version: String,
}

/// One engine's figures for one image.
struct Measured {
    millis: f64,
    cer: f64,
    lines: usize,
}

pub fn run(
    registry: &Registry,
    python: &str,
    threads: usize,
    repeats: usize,
) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let truth = PAGE.join("\n");
    let page = render(&PAGE, 26.0, 60);
    let photo = degrade(&page, 2.0, 24.0, 11);
    let images = [
        ("clean page", "page.png", png(&page)),
        ("phone photo", "photo.jpg", photo),
    ]
    .into_iter()
    .map(|(name, file, bytes)| {
        let path = work.path().join(file);
        std::fs::write(&path, &bytes)?;
        Ok(BenchImage { name, path, bytes })
    })
    .collect::<anyhow::Result<Vec<_>>>()?;
    let (width, height) = page.dimensions();
    println!(
        "OCR on a {width}x{height} page of {} lines ({} characters), {threads} threads, median of {repeats} runs after a warm-up",
        PAGE.len(),
        truth.chars().count()
    );

    let mut rows: Vec<(String, Vec<Option<Measured>>)> = Vec::new();
    for entry in &registry.ocr_models {
        if let Some(reason) = registry.ocr_unavailability(entry) {
            println!("  {}: skipped — {reason}", entry.id);
            continue;
        }
        let engine = PpOcr::load(&registry.ocr_dir(entry))?;
        let measured = images
            .iter()
            .map(|image| ours(&engine, image, &truth, repeats).map(Some))
            .collect::<anyhow::Result<Vec<_>>>()?;
        rows.push((format!("quantlab {} (rten)", entry.id), measured));
    }

    match rapidocr(registry, python, &images, threads, repeats) {
        Ok(reference) => {
            let measured = reference
                .results
                .iter()
                .map(|r| {
                    Some(Measured {
                        millis: r.millis,
                        cer: cer(&truth, &r.lines.join("\n")),
                        lines: r.lines.len(),
                    })
                })
                .collect();
            rows.push((
                format!(
                    "RapidOCR {} ppocr-v5-mobile (onnxruntime)",
                    reference.version
                ),
                measured,
            ));
        }
        Err(e) => println!(
            "  RapidOCR: {e} (install it with scripts/bench-ocr-deps.sh and pass --python)"
        ),
    }

    match tesseract_version() {
        Ok(version) => {
            let measured = images
                .iter()
                .map(|image| tesseract(image, &truth, threads, repeats).map(Some))
                .collect::<anyhow::Result<Vec<_>>>()?;
            rows.push((format!("Tesseract {version} (eng, CLI)"), measured));
        }
        Err(e) => println!("  Tesseract: {e} (apt-get install tesseract-ocr tesseract-ocr-eng)"),
    }

    for (index, image) in images.iter().enumerate() {
        println!("\n  {}:", image.name);
        for (name, measured) in &rows {
            if let Some(m) = &measured[index] {
                println!(
                    "    {name:<52} {:>8.0} ms   CER {:>6.2}%   {:>2} lines",
                    m.millis,
                    m.cer * 100.0,
                    m.lines
                );
            }
        }
    }
    // Ratios on identical networks, then against each reference.
    let find = |prefix: &str| rows.iter().find(|(name, _)| name.starts_with(prefix));
    let pairs = [
        (
            "quantlab ppocr-v5-mobile",
            "RapidOCR",
            "same PP-OCRv5 networks",
        ),
        (
            "quantlab ppocr-v6-small",
            "RapidOCR",
            "our default against RapidOCR",
        ),
        (
            "quantlab ppocr-v6-small",
            "Tesseract",
            "our default against Tesseract",
        ),
    ];
    println!("\n  Latency ratios (reference ÷ quantlab; above 1 means we are faster):");
    for (ours, theirs, what) in pairs {
        let (Some((_, a)), Some((_, b))) = (find(ours), find(theirs)) else {
            continue;
        };
        let ratios: Vec<String> = images
            .iter()
            .enumerate()
            .filter_map(|(i, image)| {
                let (a, b) = (a[i].as_ref()?, b[i].as_ref()?);
                Some(format!("{} {:.2}x", image.name, b.millis / a.millis))
            })
            .collect();
        println!("    {what}: {}", ratios.join(", "));
    }
    Ok(())
}

fn ours(
    engine: &PpOcr,
    image: &BenchImage,
    truth: &str,
    repeats: usize,
) -> anyhow::Result<Measured> {
    measure(truth, repeats, || {
        let upright = image_input::decode(&image.bytes)?;
        let recognition = engine.read(&upright)?;
        Ok(recognition.lines.into_iter().map(|l| l.text).collect())
    })
}

/// One warm-up reading (scored against `truth`), then the median time of `repeats` more.
fn measure(
    truth: &str,
    repeats: usize,
    mut read: impl FnMut() -> anyhow::Result<Vec<String>>,
) -> anyhow::Result<Measured> {
    let lines = read()?;
    let millis = median_millis(repeats, || read().map(drop))?;
    Ok(Measured {
        millis,
        cer: cer(truth, &lines.join("\n")),
        lines: lines.len(),
    })
}

fn rapidocr(
    registry: &Registry,
    python: &str,
    images: &[BenchImage],
    threads: usize,
    repeats: usize,
) -> anyhow::Result<RapidReference> {
    let entry = registry
        .ocr("ppocr-v5-mobile")
        .context("models.toml does not declare ppocr-v5-mobile")?;
    if let Some(reason) = registry.ocr_unavailability(entry) {
        bail!("{reason}");
    }
    let dir = registry.ocr_dir(entry);
    let job = serde_json::json!({
        "images": images.iter().map(|i| &i.path).collect::<Vec<&PathBuf>>(),
        "detection": dir.join("detection.onnx"),
        "recognition": dir.join("recognition.onnx"),
        "dictionary": dir.join("dictionary.txt"),
        "threads": threads,
        "repeats": repeats,
    });
    super::python::run_script(python, &super::python::OCR_RAPIDOCR, &job)
}

fn tesseract_version() -> anyhow::Result<String> {
    let output = Command::new("tesseract")
        .arg("--version")
        .output()
        .context("tesseract is not installed")?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?")
        .to_string())
}

/// The Tesseract CLI, start-up included (it loads its language model on every run).
fn tesseract(
    image: &BenchImage,
    truth: &str,
    threads: usize,
    repeats: usize,
) -> anyhow::Result<Measured> {
    let read = |path: &Path| -> anyhow::Result<Vec<String>> {
        let output = Command::new("tesseract")
            .arg(path)
            .args(["-", "-l", "eng", "--psm", "3"])
            .env("OMP_THREAD_LIMIT", threads.to_string())
            .output()?;
        if !output.status.success() {
            bail!("{}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    };
    measure(truth, repeats, || read(&image.path))
}
