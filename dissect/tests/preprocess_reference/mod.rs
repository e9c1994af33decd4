//! The reference preprocessing, written the plain way, for equality tests: `image`'s own
//! `resize(.., FilterType::Triangle)`, alpha compositing through `Rgba<f32>`, a per-pixel
//! normalisation loop. `dissect::preprocess` is a faster implementation of the same steps and
//! must match this bit for bit; keeping the reference here, apart from the library, is what lets
//! those tests fail if the fast path drifts.
#![allow(dead_code)]

use dissect::model::Preprocess;
use dissect::preprocess::BACKGROUND;
use image::imageops::FilterType;
use image::{DynamicImage, Rgb, RgbImage, Rgba};
use std::path::Path;
use tch::Tensor;

/// Any decoded image → RGB8, transparency composited onto [`BACKGROUND`] in f32.
pub fn flatten(img: &DynamicImage) -> RgbImage {
    if !img.color().has_alpha() {
        return img.to_rgb8();
    }
    let rgba = img.to_rgba32f();
    let mut out = RgbImage::new(rgba.width(), rgba.height());
    for (dst, &Rgba(src)) in out.pixels_mut().zip(rgba.pixels()) {
        let alpha = src[3].clamp(0.0, 1.0);
        *dst = Rgb(std::array::from_fn(|c| {
            let under = BACKGROUND[c] as f32 / 255.0;
            ((src[c] * alpha + under * (1.0 - alpha)) * 255.0).round().clamp(0.0, 255.0) as u8
        }));
    }
    out
}

/// torchvision's `Resize(shorter)` + `CenterCrop(input_size)` with `image`'s triangle filter.
pub fn resize_center_crop(img: &RgbImage, p: &Preprocess) -> RgbImage {
    let (crop_h, crop_w) = p.input_size;
    let target = p.resize_shorter.max(crop_h).max(crop_w) as f64;
    let (w, h) = (img.width().max(1) as f64, img.height().max(1) as f64);
    // The shorter side becomes `target` (exactly: target·s/s), the longer int(target·long/short).
    let side = |s: f64| (target * s / w.min(h)) as u32;
    let (nw, nh) = (side(w).max(crop_w), side(h).max(crop_h));
    let resized = if (nw, nh) == img.dimensions() {
        img.clone()
    } else {
        image::imageops::resize(img, nw, nh, FilterType::Triangle)
    };
    let offset = |resized: u32, crop: u32| ((resized - crop) as f64 / 2.0).round() as u32;
    image::imageops::crop_imm(&resized, offset(nw, crop_w), offset(nh, crop_h), crop_w, crop_h).to_image()
}

/// CHW f32, `(x - mean) · (1/std)` per channel.
pub fn normalize(img: &RgbImage, p: &Preprocess) -> Vec<f32> {
    let mut planes: [Vec<f32>; 3] = Default::default();
    for px in img.pixels() {
        for (c, plane) in planes.iter_mut().enumerate() {
            plane.push((px.0[c] as f32 - p.mean[c]) * (1.0 / p.std[c]));
        }
    }
    planes.concat()
}

/// A good image file's model input, CHW f32 (format guessed from the content, as the library
/// does).
pub fn model_input(path: &Path, p: &Preprocess) -> Vec<f32> {
    let decode = || image::ImageReader::open(path)?.with_guessed_format()?.decode().map_err(std::io::Error::other);
    let img = decode().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    normalize(&resize_center_crop(&flatten(&img), p), p)
}

/// [`model_input`] as a 3×H×W tensor.
pub fn tensor(path: &Path, p: &Preprocess) -> Tensor {
    let (h, w) = p.input_size;
    Tensor::from_slice(&model_input(path, p)).view([3, h as i64, w as i64])
}
