//! Images of known text for tests, benchmarks and the sample page: drawn with DejaVu Sans (from
//! the `dejavu` crate, rasterised by ab_glyph), then, to stand for a phone photo of a page,
//! turned, unevenly lit, blurred, noised and JPEG-compressed; and the character error rate that
//! scores a reading against the known text.

use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};
use image::{Rgb, RgbImage};

/// Black text on white: `lines` at `px` pixels, `margin` around, 1.6 line spacing.
pub fn render(lines: &[&str], px: f32, margin: u32) -> RgbImage {
    let font = FontRef::try_from_slice(dejavu::sans::regular()).expect("DejaVu Sans parses");
    let scaled = font.as_scaled(PxScale::from(px));
    let advance = |line: &str| -> f32 {
        let mut width = 0.0;
        let mut previous = None;
        for c in line.chars() {
            let id = scaled.glyph_id(c);
            if let Some(p) = previous {
                width += scaled.kern(p, id);
            }
            width += scaled.h_advance(id);
            previous = Some(id);
        }
        width
    };
    let line_height = (px * 1.6).ceil();
    let width = lines.iter().map(|l| advance(l)).fold(0.0, f32::max).ceil() as u32 + 2 * margin;
    let height = (line_height * lines.len() as f32).ceil() as u32 + 2 * margin;
    let mut image = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    for (row, line) in lines.iter().enumerate() {
        let baseline = margin as f32 + row as f32 * line_height + scaled.ascent();
        let mut x = margin as f32;
        let mut previous = None;
        for c in line.chars() {
            let id = scaled.glyph_id(c);
            if let Some(p) = previous {
                x += scaled.kern(p, id);
            }
            let glyph = id.with_scale_and_position(PxScale::from(px), point(x, baseline));
            if let Some(outline) = font.outline_glyph(glyph) {
                let bounds = outline.px_bounds();
                outline.draw(|gx, gy, coverage| {
                    let (px_x, px_y) = (
                        bounds.min.x as i32 + gx as i32,
                        bounds.min.y as i32 + gy as i32,
                    );
                    if px_x >= 0 && px_y >= 0 && (px_x as u32) < width && (px_y as u32) < height {
                        let pixel = image.get_pixel_mut(px_x as u32, px_y as u32);
                        let value = (255.0 * (1.0 - coverage.clamp(0.0, 1.0))) as u8;
                        pixel.0 = pixel.0.map(|old| old.min(value));
                    }
                });
            }
            x += scaled.h_advance(id);
            previous = Some(id);
        }
    }
    image
}

/// A cheap deterministic random sequence, so noisy images are the same on every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32) / (1u64 << 24) as f32
    }
}

/// What a phone photo of a page does to it: turned by `degrees`, a grey-ish uneven
/// background, blur, sensor noise of about `noise` grey levels, then JPEG at quality 60.
pub fn degrade(image: &RgbImage, degrees: f32, noise: f32, seed: u64) -> Vec<u8> {
    let (width, height) = image.dimensions();
    let (sin, cos) = degrees.to_radians().sin_cos();
    let (cx, cy) = (width as f32 / 2.0, height as f32 / 2.0);
    let mut random = Lcg(seed);
    let mut out = RgbImage::new(width, height);
    for (x, y, pixel) in out.enumerate_pixels_mut() {
        // Inverse rotation, sampling a 2x2 neighbourhood (blur).
        let (dx, dy) = (x as f32 - cx, y as f32 - cy);
        let (sx, sy) = (cos * dx + sin * dy + cx, -sin * dx + cos * dy + cy);
        let mut sum = 0.0;
        for (ox, oy) in [(-0.5, -0.5), (0.5, -0.5), (-0.5, 0.5), (0.5, 0.5)] {
            let (ix, iy) = ((sx + ox).round(), (sy + oy).round());
            sum += if ix >= 0.0 && iy >= 0.0 && (ix as u32) < width && (iy as u32) < height {
                image.get_pixel(ix as u32, iy as u32).0[0] as f32
            } else {
                255.0
            };
        }
        let shade = 0.82 + 0.12 * (x as f32 / width as f32); // uneven lighting
        let value = sum / 4.0 * shade + (random.next() - 0.5) * 2.0 * noise;
        let v = value.clamp(0.0, 255.0) as u8;
        *pixel = Rgb([v, v.saturating_sub(4), v.saturating_sub(10)]);
    }
    let mut bytes = Vec::new();
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 60);
    // Encoding into memory cannot fail for an RGB8 image.
    let _ = out.write_with_encoder(encoder);
    bytes
}

pub fn png(image: &RgbImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    // Encoding into memory cannot fail for an RGB8 image.
    let _ = image.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    );
    bytes
}

/// Character error rate: edit distance over the reference's length.
pub fn cer(reference: &str, read: &str) -> f64 {
    let (a, b): (Vec<char>, Vec<char>) = (reference.chars().collect(), read.chars().collect());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut diagonal = row[0];
        row[0] = i;
        for j in 1..=b.len() {
            let above = row[j];
            row[j] = (row[j] + 1)
                .min(row[j - 1] + 1)
                .min(diagonal + usize::from(a[i - 1] != b[j - 1]));
            diagonal = above;
        }
    }
    row[b.len()] as f64 / a.len().max(1) as f64
}
