//! Image → model input: decode (any supported format, with size limits), flatten to RGB8 on a
//! neutral grey, resize the shorter side, centre-crop, normalise to a CHW f32 tensor.
//!
//! Resizing uses a bilinear (triangle) filter that widens with the downscale factor, i.e. it is
//! antialiased like PIL's bilinear resize that torchvision-style ImageNet evaluation uses.

use crate::error::{Error, Result};
use crate::model::Preprocess;
use image::{imageops::FilterType, DynamicImage, ImageReader, Limits, RgbImage};
use std::io::Cursor;
use std::path::Path;
use tch::Tensor;

/// Largest accepted width or height; bigger files are rejected before decoding (decompression
/// bombs).
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// Largest decoder allocation in bytes.
pub const MAX_DECODE_BYTES: u64 = 512 * 1024 * 1024;
/// Background that transparent pixels are composited onto (ASSETS.md: photo cut-outs with alpha).
pub const BACKGROUND: [u8; 3] = [127, 127, 127];

fn limits() -> Limits {
    let mut l = Limits::default();
    l.max_image_width = Some(MAX_IMAGE_SIDE);
    l.max_image_height = Some(MAX_IMAGE_SIDE);
    l.max_alloc = Some(MAX_DECODE_BYTES);
    l
}

fn image_err(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Image { path: path.to_path_buf(), reason: reason.to_string() }
}

/// Decodes an image file (format guessed from its content, not its extension) to RGB8.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    decode_rgb(&bytes, path)
}

/// Decodes image bytes to RGB8; `path` only labels errors.
pub fn decode_rgb(bytes: &[u8], path: &Path) -> Result<RgbImage> {
    if bytes.is_empty() {
        return Err(image_err(path, "the file is empty"));
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| image_err(path, e))?;
    if reader.format().is_none() {
        return Err(image_err(path, "not a recognised image format"));
    }
    reader.limits(limits());
    let img = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(l) => image_err(
            path,
            format!("{l} (limits: {MAX_IMAGE_SIDE} px per side, {} MiB decoded)", MAX_DECODE_BYTES >> 20),
        ),
        other => image_err(path, other),
    })?;
    Ok(flatten_rgb(&img))
}

/// Converts any decoded image (grey, 16-bit, float, with or without alpha) to RGB8, compositing
/// transparency onto [`BACKGROUND`].
pub fn flatten_rgb(img: &DynamicImage) -> RgbImage {
    if !img.color().has_alpha() {
        return img.to_rgb8();
    }
    // Composite in f32 so 16-bit alpha keeps its precision.
    let rgba = img.to_rgba32f();
    let bg = BACKGROUND.map(|c| c as f32 / 255.0);
    RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let p = rgba.get_pixel(x, y).0;
        let a = p[3].clamp(0.0, 1.0);
        let mix = |i: usize| ((p[i] * a + bg[i] * (1.0 - a)) * 255.0).round().clamp(0.0, 255.0) as u8;
        image::Rgb([mix(0), mix(1), mix(2)])
    })
}

/// Resizes so the shorter side equals `p.resize_shorter` (never smaller than the crop), then
/// centre-crops `p.input_size`, following torchvision's `Resize(int)` + `CenterCrop` arithmetic.
pub fn resize_center_crop(img: &RgbImage, p: &Preprocess) -> RgbImage {
    let (w, h) = img.dimensions();
    let (nw, nh, top, left) = resize_geometry(w, h, p);
    let resized = if (nw, nh) == (w, h) { img.clone() } else { image::imageops::resize(img, nw, nh, FilterType::Triangle) };
    let (crop_h, crop_w) = p.input_size;
    image::imageops::crop_imm(&resized, left, top, crop_w, crop_h).to_image()
}

/// The resized size (width, height) and the crop origin (top, left) of
/// [`resize_center_crop`] for a `w`×`h` image.
pub(crate) fn resize_geometry(w: u32, h: u32, p: &Preprocess) -> (u32, u32, u32, u32) {
    let (crop_h, crop_w) = p.input_size;
    let (w, h) = (w.max(1), h.max(1));
    let short = w.min(h) as f64;
    let target = p.resize_shorter.max(crop_h).max(crop_w) as f64;
    // torchvision truncates the long side: int(size * long / short).
    let (mut nw, mut nh) =
        if w <= h { (target as u32, (target * h as f64 / short) as u32) } else { ((target * w as f64 / short) as u32, target as u32) };
    nw = nw.max(crop_w);
    nh = nh.max(crop_h);
    let top = ((nh - crop_h) as f64 / 2.0).round() as u32;
    let left = ((nw - crop_w) as f64 / 2.0).round() as u32;
    (nw, nh, top, left)
}

/// RGB8 image → 3×H×W f32 tensor with `(x - mean) / std` per channel (x on 0–255).
pub fn normalize(img: &RgbImage, p: &Preprocess) -> Tensor {
    let (w, h) = img.dimensions();
    let plane = (w * h) as usize;
    let mut buf = vec![0f32; 3 * plane];
    let scale = p.std.map(|s| 1.0 / s);
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            buf[c * plane + i] = (px.0[c] as f32 - p.mean[c]) * scale[c];
        }
    }
    Tensor::from_slice(&buf).view([3, h as i64, w as i64])
}

/// Resize, crop and normalise an RGB8 image for a model.
pub fn image_to_tensor(img: &RgbImage, p: &Preprocess) -> Tensor {
    normalize(&resize_center_crop(img, p), p)
}

/// Decode an image file and prepare it for a model.
pub fn load_tensor(path: &Path, p: &Preprocess) -> Result<Tensor> {
    Ok(image_to_tensor(&load_rgb(path)?, p))
}

/// Stacks 3×H×W tensors into an N×3×H×W batch.
pub fn stack_batch(items: &[Tensor]) -> Result<Tensor> {
    if items.is_empty() {
        return Err(Error::EmptyBatch);
    }
    Ok(Tensor::f_stack(items, 0)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prep(size: u32, shorter: u32) -> Preprocess {
        Preprocess { input_size: (size, size), resize_shorter: shorter, mean: [127.0; 3], std: [128.0; 3] }
    }

    #[test]
    fn crop_has_input_size_and_normalises() {
        let img = RgbImage::from_pixel(300, 200, image::Rgb([255, 127, 0]));
        let t = image_to_tensor(&img, &prep(64, 73));
        assert_eq!(t.size(), vec![3, 64, 64]);
        let v: Vec<f32> = Vec::try_from(t.mean_dim([1i64, 2].as_slice(), false, tch::Kind::Float)).unwrap();
        assert!((v[0] - 1.0).abs() < 1e-6 && v[1].abs() < 1e-6 && (v[2] + 127.0 / 128.0).abs() < 1e-6, "{v:?}");
    }

    #[test]
    fn alpha_is_composited_on_grey() {
        let mut img = image::RgbaImage::from_pixel(2, 1, image::Rgba([255, 0, 0, 255]));
        img.put_pixel(1, 0, image::Rgba([255, 0, 0, 0]));
        let rgb = flatten_rgb(&DynamicImage::ImageRgba8(img));
        assert_eq!(rgb.get_pixel(0, 0).0, [255, 0, 0]);
        assert_eq!(rgb.get_pixel(1, 0).0, BACKGROUND);
        // 16-bit grey with alpha goes through the same path.
        let g = image::ImageBuffer::<image::LumaA<u16>, _>::from_pixel(1, 1, image::LumaA([65535, 32768]));
        let rgb = flatten_rgb(&DynamicImage::ImageLumaA16(g));
        assert_eq!(rgb.get_pixel(0, 0).0, [191, 191, 191]);
    }

    #[test]
    fn bad_bytes_give_clear_errors() {
        let p = Path::new("x.png");
        let e = decode_rgb(b"", p).unwrap_err().to_string();
        assert!(e.contains("x.png") && e.contains("empty"), "{e}");
        let e = decode_rgb(b"hello, I am text", p).unwrap_err().to_string();
        assert!(e.contains("not a recognised image format"), "{e}");
        assert!(matches!(stack_batch(&[]), Err(Error::EmptyBatch)));
    }
}
