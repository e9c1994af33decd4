//! Image → model input: decode (any supported format, with size limits), flatten to RGB8 on a
//! neutral grey (`alpha.rs`), resize the shorter side and centre-crop (`resize.rs`), normalise
//! to CHW f32.
//!
//! Every caller (recording, crops, heatmaps, concept images) shares these steps, so they are
//! written for speed: on 2 cores the forward pass keeps both busy, and each millisecond of
//! preparation is throughput lost. [`model_input`] never touches libtorch, so the recording's
//! decode workers can call it (see `record/pipeline.rs`); the `Tensor` functions wrap it.

mod alpha;
mod resize;

pub use alpha::flatten_rgb;
pub use resize::resize_center_crop;

use crate::error::{Error, Result};
use crate::model::Preprocess;
use image::{ImageReader, Limits, RgbImage};
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
    decode_rgb(&read(path)?, path)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })
}

/// Decodes image bytes to RGB8; `path` only labels errors.
pub fn decode_rgb(bytes: &[u8], path: &Path) -> Result<RgbImage> {
    if bytes.is_empty() {
        return Err(image_err(path, "the file is empty"));
    }
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| image_err(path, e))?;
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

/// The model input for an image file's bytes: 3×H×W, CHW, f32, without libtorch. `path` only
/// labels errors.
pub fn model_input(bytes: &[u8], path: &Path, p: &Preprocess) -> Result<Vec<f32>> {
    Ok(normalize_chw(&resize_center_crop(&decode_rgb(bytes, path)?, p), p))
}

/// `(x - mean) / std` per channel (x on 0–255, multiplied by `1/std`), as CHW f32.
fn normalize_chw(img: &RgbImage, p: &Preprocess) -> Vec<f32> {
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

fn chw_tensor(buf: &[f32], h: u32, w: u32) -> Tensor {
    Tensor::from_slice(buf).view([3, h as i64, w as i64])
}

/// RGB8 image → 3×H×W f32 tensor with `(x - mean) / std` per channel (x on 0–255).
pub fn normalize(img: &RgbImage, p: &Preprocess) -> Tensor {
    chw_tensor(&normalize_chw(img, p), img.height(), img.width())
}

/// Resize, crop and normalise an RGB8 image for a model.
pub fn image_to_tensor(img: &RgbImage, p: &Preprocess) -> Tensor {
    normalize(&resize_center_crop(img, p), p)
}

/// Decode an image file and prepare it for a model.
pub fn load_tensor(path: &Path, p: &Preprocess) -> Result<Tensor> {
    let (h, w) = p.input_size;
    Ok(chw_tensor(&model_input(&read(path)?, path, p)?, h, w))
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
    fn bad_bytes_give_clear_errors() {
        let p = Path::new("x.png");
        let e = decode_rgb(b"", p).unwrap_err().to_string();
        assert!(e.contains("x.png") && e.contains("empty"), "{e}");
        let e = decode_rgb(b"hello, I am text", p).unwrap_err().to_string();
        assert!(e.contains("not a recognised image format"), "{e}");
        assert!(matches!(stack_batch(&[]), Err(Error::EmptyBatch)));
    }
}
