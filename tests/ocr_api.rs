//! `POST /api/ocr` end to end on the real PP-OCRv6 models: multipart upload, lines with boxes in
//! the upright image's coordinates, EXIF orientation, and every limit and hostile input.

mod common;

use image::RgbImage;
use quantlab::ocr::synthetic::{png, render};
use serde_json::Value;

async fn post(form: reqwest::multipart::Form) -> (u16, Value) {
    let url = common::shared_server();
    let response = reqwest::Client::new()
        .post(format!("{url}/api/ocr"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn upload(bytes: Vec<u8>) -> (u16, Value) {
    let part = reqwest::multipart::Part::bytes(bytes).file_name("upload");
    post(reqwest::multipart::Form::new().part("file", part)).await
}

fn texts(answer: &Value) -> Vec<String> {
    answer["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| l["text"].as_str().unwrap().to_string())
        .collect()
}

fn message(answer: &Value) -> String {
    answer["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_uploaded_page_comes_back_as_lines_with_boxes_and_metrics() {
    let image = render(&["Hello from Quantlab", "Second line 42"], 32.0, 30);
    let (status, answer) = upload(png(&image)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(texts(&answer), ["Hello from Quantlab", "Second line 42"]);
    let line = &answer["lines"][0];
    let corners = line["box"].as_array().unwrap();
    assert_eq!(corners.len(), 4);
    for corner in corners {
        let (x, y) = (corner[0].as_f64().unwrap(), corner[1].as_f64().unwrap());
        assert!(
            (0.0..=image.width() as f64).contains(&x) && (0.0..=image.height() as f64).contains(&y)
        );
    }
    assert!(line["confidence"].as_f64().unwrap() > 0.9);
    let metrics = &answer["metrics"];
    assert_eq!(metrics["engine"], "ppocr-v6-small");
    assert_eq!(metrics["width"], image.width());
    assert_eq!(metrics["height"], image.height());
    assert_eq!(metrics["lines"], 2);
    assert_eq!(metrics["characters"], 33);
    assert!(metrics["millis"].as_f64().unwrap() >= metrics["detect_millis"].as_f64().unwrap());
    // The model is loaded now: a second request reports no loading, and its own time only.
    let (status, again) = upload(png(&image)).await;
    assert_eq!(status, 200, "{again}");
    let metrics = &again["metrics"];
    assert_eq!(metrics["load_millis"].as_f64(), Some(0.0), "{metrics}");
    let parts: f64 = ["decode_millis", "detect_millis", "recognize_millis"]
        .iter()
        .map(|k| metrics[k].as_f64().unwrap())
        .sum();
    assert!(metrics["millis"].as_f64().unwrap() >= parts, "{metrics}");
}

/// A JPEG whose pixels are stored turned a quarter anticlockwise, with the EXIF tag
/// (orientation 6) that tells viewers to turn it back.
fn sideways_jpeg(upright: &RgbImage) -> Vec<u8> {
    let stored = image::imageops::rotate270(upright);
    let mut jpeg = Vec::new();
    stored
        .write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(
            &mut jpeg, 95,
        ))
        .unwrap();
    // APP1 "Exif": a big-endian TIFF header and one IFD entry, Orientation (0x0112) = 6.
    let tiff: [u8; 26] = [
        b'M', b'M', 0, 42, 0, 0, 0, 8, // header, IFD at 8
        0, 1, // one entry
        0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, // tag, SHORT, count 1, value 6
        0, 0, 0, 0, // no next IFD
    ];
    let mut app1 = vec![0xFF, 0xE1, 0, (2 + 6 + tiff.len()) as u8];
    app1.extend_from_slice(b"Exif\0\0");
    app1.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec(); // SOI
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn exif_orientation_is_applied_before_reading() {
    let upright = render(&["Turned by the camera"], 32.0, 30);
    let (status, answer) = upload(sideways_jpeg(&upright)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(texts(&answer), ["Turned by the camera"]);
    assert_eq!(answer["metrics"]["width"], upright.width());
    assert_eq!(answer["metrics"]["height"], upright.height());
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A valid 1x1 PNG whose header is rewritten to claim `width`x`height`.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = png(&RgbImage::new(1, 1));
    bytes[16..20].copy_from_slice(&width.to_be_bytes());
    bytes[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

#[tokio::test(flavor = "multi_thread")]
async fn a_small_file_claiming_huge_dimensions_is_refused_unread() {
    let bomb = png_claiming(100_000, 100_000);
    assert!(bomb.len() < 100);
    let (status, answer) = upload(bomb).await;
    assert_eq!(status, 422, "{answer}");
    assert!(message(&answer).contains("100000x100000"), "{answer}");
    // Within each side's limit but over the total.
    let (status, answer) = upload(png_claiming(9_000, 9_000)).await;
    assert_eq!(status, 422, "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn damaged_and_foreign_files_get_clear_errors() {
    let whole = png(&render(&["Cut short"], 32.0, 30));
    let (status, answer) = upload(whole[..whole.len() / 2].to_vec()).await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        message(&answer).contains("damaged or truncated"),
        "{answer}"
    );

    let (status, answer) = upload(b"%PDF-1.7 this is not an image".to_vec()).await;
    assert_eq!(status, 415, "{answer}");
    assert!(message(&answer).contains("PNG, JPEG"), "{answer}");

    let (status, answer) = upload(Vec::new()).await;
    assert_eq!(status, 400, "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_say_what_to_send() {
    let url = common::shared_server();
    let response = reqwest::Client::new()
        .post(format!("{url}/api/ocr"))
        .json(&serde_json::json!({ "file": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 415);
    let answer: Value = response.json().await.unwrap();
    assert!(message(&answer).contains("multipart/form-data"), "{answer}");

    let form = reqwest::multipart::Form::new().text("model", "ppocr-v6-small");
    let (status, answer) = post(form).await;
    assert_eq!(status, 400);
    assert!(message(&answer).contains("`file`"), "{answer}");

    let part = reqwest::multipart::Part::bytes(png(&RgbImage::new(8, 8))).file_name("a.png");
    let form = reqwest::multipart::Form::new()
        .part("file", part)
        .text("model", "no-such-engine");
    let (status, answer) = post(form).await;
    assert_eq!(status, 404);
    assert!(message(&answer).contains("ppocr-v6-small"), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_over_the_size_limit_is_413() {
    let limit = quantlab::ocr::image_input::MAX_UPLOAD_BYTES;
    let (status, answer) = upload(vec![0u8; limit + 1]).await;
    assert_eq!(status, 413, "{answer}");
    // A body declared larger than the route takes is refused from its Content-Length alone.
    let (status, answer) = upload(vec![0u8; limit + 200 * 1024]).await;
    assert_eq!(status, 413, "{answer}");
    let limit_text =
        quantlab::api::limits::body_limit(&quantlab::config::Limits::default(), "/api/ocr")
            .to_string();
    assert!(message(&answer).contains(&limit_text), "{answer}");
}

async fn engines() -> Value {
    let url = common::shared_server();
    let response = reqwest::get(format!("{url}/api/ocr/models")).await.unwrap();
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn engines_are_listed_with_their_state() {
    let list = engines().await;
    let first = &list[0];
    assert_eq!(first["id"], "ppocr-v6-small");
    assert_eq!(first["default"], true);
    assert!(first["unavailable"].is_null(), "{list}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_engine_not_downloaded_says_how_to_get_it() {
    let list = engines().await;
    let ocrs = list
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == "ocrs")
        .expect("ocrs is declared");
    // Its networks come from the ocrs project's servers, which these machines cannot reach.
    let reason = ocrs["unavailable"].as_str().expect("not downloaded here");
    assert!(reason.contains("quantlab models fetch ocrs"), "{reason}");

    let part =
        reqwest::multipart::Part::bytes(png(&render(&["Hello"], 32.0, 20))).file_name("a.png");
    let form = reqwest::multipart::Form::new()
        .part("file", part)
        .text("model", "ocrs");
    let (status, answer) = post(form).await;
    assert_eq!(status, 503, "{answer}");
    assert!(
        message(&answer).contains("quantlab models fetch ocrs"),
        "{answer}"
    );
}
