//! Uploaded images, decoded under strict limits: the byte size first, then the dimensions the
//! header declares — checked before a single pixel is allocated, so a small file that claims to
//! be enormous (a decompression bomb) costs nothing — then decoding with an allocation cap, and
//! finally the EXIF orientation, so a phone photo is read the way it was taken.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

/// Largest upload accepted, in bytes (413 beyond).
pub const MAX_UPLOAD_BYTES: usize = 20 * 1024 * 1024;
/// Largest width or height accepted, in pixels (422 beyond).
pub const MAX_SIDE: u32 = 10_000;
/// Largest image accepted, in pixels: a 40-megapixel photo still fits (422 beyond).
pub const MAX_PIXELS: u64 = 40_000_000;
/// Formats we decode; anything else is 415.
pub const FORMATS: [ImageFormat; 5] = [
    ImageFormat::Png,
    ImageFormat::Jpeg,
    ImageFormat::WebP,
    ImageFormat::Gif,
    ImageFormat::Bmp,
];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ImageInputError {
    #[error("the file is empty: choose an image")]
    Empty,
    #[error("the file has {0} bytes; the limit is {MAX_UPLOAD_BYTES} bytes (20 MiB)")]
    TooManyBytes(usize),
    #[error("this is not an image we read (PNG, JPEG, WebP, GIF or BMP){0}")]
    Unsupported(String),
    #[error(
        "the image declares {width}x{height} pixels; the limits are {MAX_SIDE} per side and \
         {MAX_PIXELS} in all: scale it down"
    )]
    TooManyPixels { width: u32, height: u32 },
    #[error("the {format} image is damaged or truncated: {detail}")]
    Corrupt { format: String, detail: String },
}

/// The upload as an upright RGB image.
pub fn decode(bytes: &[u8]) -> Result<RgbImage, ImageInputError> {
    if bytes.is_empty() {
        return Err(ImageInputError::Empty);
    }
    if bytes.len() > MAX_UPLOAD_BYTES {
        return Err(ImageInputError::TooManyBytes(bytes.len()));
    }
    let format =
        image::guess_format(bytes).map_err(|_| ImageInputError::Unsupported(String::new()))?;
    if !FORMATS.contains(&format) {
        return Err(ImageInputError::Unsupported(format!(
            " — it looks like {}",
            format_name(format)
        )));
    }
    let corrupt = |detail: String| ImageInputError::Corrupt {
        format: format_name(format).into(),
        detail,
    };
    // No limits while only the header is read (so the error below can name the dimensions);
    // the allocation cap is set before any pixel is decoded.
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.no_limits();
    let mut decoder = reader.into_decoder().map_err(|e| classify(e, &corrupt))?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(corrupt(format!("it declares {width}x{height} pixels")));
    }
    if width > MAX_SIDE || height > MAX_SIDE || u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(ImageInputError::TooManyPixels { width, height });
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    // The decoded frame (at most RGBA) plus room for the decoder's own buffers.
    limits.max_alloc = Some(MAX_PIXELS * 4 + 64 * 1024 * 1024);
    decoder
        .set_limits(limits)
        .map_err(|e| classify(e, &corrupt))?;
    // A broken EXIF block is no reason to refuse the picture; it is read as stored.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| classify(e, &corrupt))?;
    image.apply_orientation(orientation);
    Ok(image.to_rgb8())
}

fn classify(
    error: image::ImageError,
    corrupt: &dyn Fn(String) -> ImageInputError,
) -> ImageInputError {
    match error {
        image::ImageError::Limits(_) => corrupt(format!(
            "decoding it would take more memory than an image within the limits \
             ({MAX_SIDE} per side, {MAX_PIXELS} pixels) needs"
        )),
        image::ImageError::Unsupported(e) => ImageInputError::Unsupported(format!(": {e}")),
        other => corrupt(other.to_string()),
    }
}

fn format_name(format: ImageFormat) -> &'static str {
    format
        .extensions_str()
        .first()
        .copied()
        .unwrap_or("unknown")
}
