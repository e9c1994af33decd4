//! Resize the shorter side + centre crop, with `image`'s triangle (bilinear) filter.
//!
//! The pixels are exactly those of `image::imageops::resize(.., FilterType::Triangle)` followed
//! by a crop: the *same* floating-point operations in the same order — same tap weights,
//! products summed tap by tap from 0.0, vertical pass then horizontal, clamp, round half away
//! from zero. It is ~5× cheaper because the generic code sends every tap of every pixel through
//! `Rgba<f32>`, bounds-checked accessors and a libm `roundf` call, while this computes the
//! weights once per axis, runs each tap as one pass over a contiguous row (vertical) or column
//! (horizontal, after a transpose), and resamples only the rows and columns the crop keeps.
//! `tests/preprocess.rs` checks equality against `image` itself.

use crate::model::Preprocess;
use image::RgbImage;

/// Resizes so the shorter side equals `p.resize_shorter` (never smaller than the crop), then
/// centre-crops `p.input_size`, following torchvision's `Resize(int)` + `CenterCrop` arithmetic.
/// The filter widens with the downscale factor, i.e. it is antialiased like PIL's bilinear
/// resize that torchvision-style ImageNet evaluation uses.
pub fn resize_center_crop(img: &RgbImage, p: &Preprocess) -> RgbImage {
    let (w, h) = img.dimensions();
    let (crop_h, crop_w) = p.input_size;
    if w == 0 || h == 0 {
        // Nothing to sample (decoders do not produce such images): an all-black crop.
        return RgbImage::new(crop_w, crop_h);
    }
    let (nw, nh, top, left) = resize_geometry(w, h, p);
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
    let col_len = 3 * crop_h as usize;
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

/// The resized size (width, height) and the crop origin (top, left) of
/// [`resize_center_crop`] for a `w`×`h` image.
fn resize_geometry(w: u32, h: u32, p: &Preprocess) -> (u32, u32, u32, u32) {
    let (crop_h, crop_w) = p.input_size;
    let (w, h) = (w.max(1), h.max(1));
    let short = w.min(h) as f64;
    let target = p.resize_shorter.max(crop_h).max(crop_w) as f64;
    // torchvision truncates the long side: int(size * long / short).
    let (mut nw, mut nh) = if w <= h {
        (target as u32, (target * h as f64 / short) as u32)
    } else {
        ((target * w as f64 / short) as u32, target as u32)
    };
    nw = nw.max(crop_w);
    nh = nh.max(crop_h);
    let top = ((nh - crop_h) as f64 / 2.0).round() as u32;
    let left = ((nw - crop_w) as f64 / 2.0).round() as u32;
    (nw, nh, top, left)
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn an_empty_image_gives_a_black_crop() {
        let p = Preprocess { input_size: (7, 5), resize_shorter: 9, mean: [0.0; 3], std: [1.0; 3] };
        for (w, h) in [(0, 0), (0, 12), (12, 0)] {
            assert!(resize_center_crop(&RgbImage::new(w, h), &p) == RgbImage::new(5, 7));
        }
    }
}
