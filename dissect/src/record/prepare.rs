//! Image bytes → model input on the decode workers: bit for bit what
//! [`crate::preprocess`] produces (`decode_rgb` → `resize_center_crop` → `normalize`), in about a
//! fifth of the CPU time, and without touching libtorch.
//!
//! Why a twin: on 2 cores the forward pass keeps both busy (~13 ms of CPU per Lite0 image), so
//! every millisecond of preparation costs throughput the pipeline cannot hide. The reference
//! spent ~4.5 ms per built-in image, mostly in `image::imageops::resize` (generic code that
//! sends every tap of every pixel through `Rgba<f32>`, bounds-checked accessors and a libm
//! `roundf` call) and in alpha compositing (a full `Rgba<f32>` copy of the image).
//!
//! * **Resize** performs the *same* floating-point operations in the same order as `image`'s
//!   triangle filter — same tap weights, products summed tap by tap from 0.0, vertical pass then
//!   horizontal, clamp, round half away from zero — so its pixels are identical. It is faster
//!   because it computes weights once per axis, runs each tap as one pass over a contiguous row
//!   (vertical) or column (horizontal, after a transpose), and resamples only the rows and
//!   columns the centre crop keeps.
//! * **Alpha** on 8-bit RGBA (most built-in images) is a lookup table *filled by running
//!   [`crate::preprocess::flatten_rgb`] itself* on every (value, alpha) pair; other layouts use
//!   `flatten_rgb` directly.
//! * **Errors**: any file this fast path cannot decode is handed to
//!   [`crate::preprocess::decode_rgb`], so skip reasons are the reference's own messages.
//!
//! Tests check equality against the reference on odd sizes, every (value, alpha) pair, and real
//! photos in several encodings (`tests/record.rs`). If `preprocess` changes, they fail: update
//! or drop the twin (better: move it into `preprocess`, so crops and heatmaps get it too).

use crate::model::Preprocess;
use crate::preprocess::{decode_rgb, flatten_rgb, MAX_DECODE_BYTES, MAX_IMAGE_SIDE};
use image::{DynamicImage, ImageReader, Limits, RgbImage, RgbaImage};
use std::io::Cursor;
use std::path::Path;
use std::sync::OnceLock;

/// The model input for an image file's bytes: 3×H×W, CHW, f32. `path` only labels errors.
pub(crate) fn model_input(bytes: &[u8], path: &Path, p: &Preprocess) -> crate::Result<Vec<f32>> {
    let rgb = match decode(bytes) {
        Some(img) => flatten(&img),
        // The reference decoder gives the reason (or, should it accept what this one did not,
        // the image).
        None => decode_rgb(bytes, path)?,
    };
    Ok(normalize(&resize_center_crop(&rgb, p), p))
}

/// Decodes with the reference's size limits; `None` on any failure.
fn decode(bytes: &[u8]) -> Option<DynamicImage> {
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().ok()?;
    reader.format()?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    reader.decode().ok()
}

/// [`flatten_rgb`]'s result for every (channel, alpha, value) of an 8-bit RGBA pixel, and the
/// colour space that result holds for.
struct AlphaTable {
    rgb: [Vec<u8>; 3],
    color_space: image::metadata::Cicp,
}

fn alpha_table() -> &'static AlphaTable {
    static TABLE: OnceLock<AlphaTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        // Pixel (v, a) carries value v in every channel and alpha a: one reference call covers
        // all 65,536 cases (compositing is per pixel, so position does not matter).
        let all = RgbaImage::from_fn(256, 256, |v, a| image::Rgba([v as u8, v as u8, v as u8, a as u8]));
        let color_space = all.color_space();
        let flat = flatten_rgb(&DynamicImage::ImageRgba8(all));
        let rgb = [0, 1, 2].map(|c| flat.pixels().map(|px| px.0[c]).collect());
        AlphaTable { rgb, color_space }
    })
}

/// [`flatten_rgb`], by table lookup for 8-bit RGBA in the default colour space.
fn flatten(img: &DynamicImage) -> RgbImage {
    let table = alpha_table();
    match img {
        DynamicImage::ImageRgba8(rgba) if rgba.color_space() == table.color_space => {
            let mut data = vec![0u8; 3 * rgba.pixels().len()];
            for (out, px) in data.chunks_exact_mut(3).zip(rgba.as_raw().chunks_exact(4)) {
                let row = px[3] as usize * 256;
                for c in 0..3 {
                    out[c] = table.rgb[c][row + px[c] as usize];
                }
            }
            RgbImage::from_raw(rgba.width(), rgba.height(), data).expect("w × h × 3 bytes")
        }
        other => flatten_rgb(other),
    }
}

/// [`crate::preprocess::normalize`] into a plain buffer (CHW, `(x − mean) · (1/std)`, the same
/// operations).
pub(crate) fn normalize(img: &RgbImage, p: &Preprocess) -> Vec<f32> {
    let plane = (img.width() * img.height()) as usize;
    let scale = p.std.map(|s| 1.0 / s);
    let mut buf = vec![0f32; 3 * plane];
    let (r, rest) = buf.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (i, px) in img.pixels().enumerate() {
        r[i] = (px.0[0] as f32 - p.mean[0]) * scale[0];
        g[i] = (px.0[1] as f32 - p.mean[1]) * scale[1];
        b[i] = (px.0[2] as f32 - p.mean[2]) * scale[2];
    }
    buf
}

/// Which input samples feed one output sample, and how much each weighs.
struct Taps {
    first: usize,
    weights: Vec<f32>,
}

/// `image`'s triangle (bilinear) kernel.
fn triangle(x: f32) -> f32 {
    if x.abs() < 1.0 {
        1.0 - x.abs()
    } else {
        0.0
    }
}

/// `image`'s clamp (not `f32::clamp`: same result here, but kept literal).
fn clamp<N: PartialOrd>(a: N, min: N, max: N) -> N {
    if a < min {
        min
    } else if a > max {
        max
    } else {
        a
    }
}

/// `v.round() as u8` for `v` in 0..=255 (half away from zero), without the libm call that
/// `f32::round` becomes on baseline x86-64: the integer part and the fraction of such a `v` are
/// both exact in f32.
fn round_u8(v: f32) -> u8 {
    let whole = v as u8;
    whole + (v - whole as f32 >= 0.5) as u8
}

/// Tap weights of output samples `range` when resampling `in_len` samples to `out_len`, as
/// `image::imageops::sample::{vertical,horizontal}_sample` compute them (support 1.0).
fn taps(in_len: u32, out_len: u32, range: std::ops::Range<u32>) -> Vec<Taps> {
    let ratio = in_len as f32 / out_len as f32;
    let sratio = if ratio < 1.0 { 1.0 } else { ratio };
    let src_support = 1.0 * sratio;
    range
        .map(|out| {
            let input = (out as f32 + 0.5) * ratio;
            let left = clamp((input - src_support).floor() as i64, 0, in_len as i64 - 1);
            let right = clamp((input + src_support).ceil() as i64, left + 1, in_len as i64);
            let input = input - 0.5;
            let mut weights: Vec<f32> = (left..right).map(|i| triangle((i as f32 - input) / sratio)).collect();
            let mut sum = 0.0;
            for w in &weights {
                sum += w;
            }
            for w in weights.iter_mut() {
                *w /= sum;
            }
            Taps { first: left as usize, weights }
        })
        .collect()
}

/// Resize so the shorter side is `p.resize_shorter` (never below the crop), centre-crop
/// `p.input_size`: pixel for pixel what [`crate::preprocess::resize_center_crop`] returns.
pub(crate) fn resize_center_crop(img: &RgbImage, p: &Preprocess) -> RgbImage {
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return crate::preprocess::resize_center_crop(img, p);
    }
    let (crop_h, crop_w) = p.input_size;
    let (nw, nh, top, left) = crate::preprocess::resize_geometry(w, h, p);
    if (nw, nh) == (w, h) {
        return image::imageops::crop_imm(img, left, top, crop_w, crop_h).to_image();
    }
    let src = img.as_raw();
    let row_len = 3 * w as usize;

    // Vertical pass over the kept rows: f32 rows of the full input width.
    let rows = taps(h, nh, top..top + crop_h);
    let mut mid = vec![0f32; crop_h as usize * row_len];
    for (out, t) in mid.chunks_exact_mut(row_len).zip(&rows) {
        for (k, &wt) in t.weights.iter().enumerate() {
            let line = &src[(t.first + k) * row_len..][..row_len];
            for (o, &v) in out.iter_mut().zip(line) {
                *o += v as f32 * wt;
            }
        }
    }

    // Horizontal pass over the kept columns. Working column-major (each input column a
    // contiguous run of rows) turns every tap into one vectorisable pass, like the vertical
    // pass; per value the operations and their order are unchanged.
    let (rows_n, width) = (crop_h as usize, w as usize);
    let col_len = 3 * rows_n;
    let mut by_col = vec![0f32; mid.len()];
    for (y, line) in mid.chunks_exact(row_len).enumerate() {
        for (x, px) in line.chunks_exact(3).enumerate() {
            by_col[x * col_len + 3 * y..][..3].copy_from_slice(px);
        }
    }
    let cols = taps(w, nw, left..left + crop_w);
    let mut out = vec![0f32; cols.len() * col_len];
    for (o, t) in out.chunks_exact_mut(col_len).zip(&cols) {
        for (k, &wt) in t.weights.iter().enumerate() {
            let column = &by_col[(t.first + k) * col_len..][..col_len];
            for (a, &v) in o.iter_mut().zip(column) {
                *a += v * wt;
            }
        }
    }
    debug_assert_eq!(by_col.len(), width * col_len);
    // Back to row-major, rounded to u8 as `image` does.
    let mut dst = vec![0u8; 3 * (crop_w * crop_h) as usize];
    for (x, column) in out.chunks_exact(col_len).enumerate() {
        for (y, px) in column.chunks_exact(3).enumerate() {
            let at = 3 * (y * crop_w as usize + x);
            for c in 0..3 {
                dst[at + c] = round_u8(clamp(px[c], 0.0, 255.0));
            }
        }
    }
    RgbImage::from_raw(crop_w, crop_h, dst).expect("crop_w × crop_h × 3 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::BACKGROUND;

    fn noise(w: u32, h: u32, seed: u32) -> RgbImage {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        RgbImage::from_fn(w, h, |_, _| {
            let mut px = [0u8; 3];
            for c in &mut px {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                *c = (s >> 24) as u8;
            }
            image::Rgb(px)
        })
    }

    #[test]
    fn rounding_matches_f32_round() {
        for i in 0..=255 * 4096 {
            let v = i as f32 / 4096.0;
            for v in
                [v, f32::from_bits(v.to_bits().saturating_sub(1)).max(0.0), f32::from_bits(v.to_bits() + 1).min(255.0)]
            {
                assert_eq!(round_u8(v), v.round() as u8, "{v}");
            }
        }
    }

    #[test]
    fn identical_to_preprocess_on_odd_sizes() {
        let lite0 = Preprocess::center_crop(224, 0.875, [127.0; 3], [128.0; 3]);
        let small = Preprocess { input_size: (7, 5), resize_shorter: 9, mean: [0.0; 3], std: [1.0; 3] };
        let sizes = [
            (1, 1),
            (1, 300),
            (300, 1),
            (224, 224),
            (256, 256),
            (256, 300),
            (255, 257),
            (640, 480),
            (97, 1031),
            (3000, 17),
        ];
        for (i, &(w, h)) in sizes.iter().enumerate() {
            for p in [lite0, small] {
                let img = noise(w, h, i as u32);
                let ours = resize_center_crop(&img, &p);
                let theirs = crate::preprocess::resize_center_crop(&img, &p);
                assert_eq!(ours.dimensions(), theirs.dimensions(), "{w}×{h}");
                assert!(ours == theirs, "{w}×{h} → {:?}: pixels differ", p.input_size);
            }
        }
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn normalisation_matches_preprocess_to_the_bit() {
        let img = noise(37, 23, 5);
        let p = Preprocess {
            input_size: (23, 37),
            resize_shorter: 23,
            mean: [123.675, 116.28, 103.53],
            std: [58.395, 57.12, 57.375],
        };
        let theirs = crate::preprocess::normalize(&img, &p);
        assert_eq!(theirs.size(), vec![3, 23, 37]);
        assert_eq!(bits(&normalize(&img, &p)), bits(&Vec::<f32>::try_from(theirs.view([-1])).unwrap()));
    }

    #[test]
    fn alpha_table_matches_flatten_rgb() {
        // Random pixels, not the grid the table was built from.
        let rgb = noise(300, 200, 9);
        let alpha = noise(300, 200, 10);
        let rgba = RgbaImage::from_fn(300, 200, |x, y| {
            let [r, g, b] = rgb.get_pixel(x, y).0;
            image::Rgba([r, g, b, alpha.get_pixel(x, y).0[(x % 3) as usize]])
        });
        let img = DynamicImage::ImageRgba8(rgba);
        assert!(flatten(&img) == flatten_rgb(&img));
        assert_eq!(BACKGROUND, [127; 3], "update the example below if the background changes");
        assert_eq!(alpha_table().rgb[0][0], 127, "alpha 0 shows the background");
    }

    #[test]
    fn model_input_matches_load_tensor_and_errors_match_decode_rgb() {
        let dir = tempfile::tempdir().unwrap();
        let p = Preprocess::center_crop(224, 0.875, [127.0; 3], [128.0; 3]);
        let base = noise(320, 240, 3);
        let files: Vec<(&str, DynamicImage)> = vec![
            ("rgb.png", DynamicImage::ImageRgb8(base.clone())),
            ("rgba.png", DynamicImage::ImageRgba8(DynamicImage::ImageRgb8(base.clone()).to_rgba8())),
            ("la.png", DynamicImage::ImageLumaA8(DynamicImage::ImageRgb8(base.clone()).to_luma_alpha8())),
            ("rgb16.png", DynamicImage::ImageRgb16(DynamicImage::ImageRgb8(base.clone()).to_rgb16())),
            ("photo.jpg", DynamicImage::ImageRgb8(base)),
        ];
        for (name, img) in files {
            let path = dir.path().join(name);
            img.save(&path).unwrap();
            let ours = model_input(&std::fs::read(&path).unwrap(), &path, &p).unwrap();
            let theirs = crate::preprocess::load_tensor(&path, &p).unwrap();
            assert_eq!(bits(&ours), bits(&Vec::<f32>::try_from(theirs.view([-1])).unwrap()), "{name}");
        }
        let path = Path::new("bad.png");
        for bytes in [&b""[..], b"plain text", b"\x89PNG\r\n\x1a\n truncated"] {
            let ours = model_input(bytes, path, &p).unwrap_err().to_string();
            assert_eq!(ours, decode_rgb(bytes, path).unwrap_err().to_string());
        }
    }
}
