//! Flattening to RGB8: transparency is composited onto [`BACKGROUND`].
//!
//! Compositing runs in f32 so 16-bit alpha keeps its precision. That costs a full `Rgba<f32>`
//! copy of the image, so 8-bit RGBA (most built-in images with alpha) instead looks each
//! (channel, value, alpha) up in a table that the f32 path itself fills once: the result is the
//! same, byte for byte.

use super::BACKGROUND;
use image::{DynamicImage, RgbImage, RgbaImage};
use std::sync::OnceLock;

/// Converts any decoded image (grey, 16-bit, float, with or without alpha) to RGB8, compositing
/// transparency onto [`BACKGROUND`].
pub fn flatten_rgb(img: &DynamicImage) -> RgbImage {
    if !img.color().has_alpha() {
        return img.to_rgb8();
    }
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
        other => composite(other),
    }
}

/// Alpha compositing in f32, for every layout.
fn composite(img: &DynamicImage) -> RgbImage {
    let rgba = img.to_rgba32f();
    let bg = BACKGROUND.map(|c| c as f32 / 255.0);
    RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let p = rgba.get_pixel(x, y).0;
        let a = p[3].clamp(0.0, 1.0);
        let mix = |i: usize| ((p[i] * a + bg[i] * (1.0 - a)) * 255.0).round().clamp(0.0, 255.0) as u8;
        image::Rgb([mix(0), mix(1), mix(2)])
    })
}

/// [`composite`]'s result for every (channel, alpha, value) of an 8-bit RGBA pixel, and the
/// colour space that result holds for.
struct AlphaTable {
    /// Per channel, indexed by `alpha · 256 + value`.
    rgb: [Vec<u8>; 3],
    color_space: image::metadata::Cicp,
}

fn alpha_table() -> &'static AlphaTable {
    static TABLE: OnceLock<AlphaTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        // Pixel (v, a) carries value v in every channel and alpha a: one call covers all
        // 65,536 cases (compositing is per pixel, so position does not matter).
        let all = RgbaImage::from_fn(256, 256, |v, a| image::Rgba([v as u8, v as u8, v as u8, a as u8]));
        let color_space = all.color_space();
        let flat = composite(&DynamicImage::ImageRgba8(all));
        let rgb = [0, 1, 2].map(|c| flat.pixels().map(|px| px.0[c]).collect());
        AlphaTable { rgb, color_space }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha_is_composited_on_grey() {
        let mut img = RgbaImage::from_pixel(2, 1, image::Rgba([255, 0, 0, 255]));
        img.put_pixel(1, 0, image::Rgba([255, 0, 0, 0]));
        let rgb = flatten_rgb(&DynamicImage::ImageRgba8(img));
        assert_eq!(rgb.get_pixel(0, 0).0, [255, 0, 0]);
        assert_eq!(rgb.get_pixel(1, 0).0, BACKGROUND);
        // 16-bit grey with alpha goes through the f32 path.
        let g = image::ImageBuffer::<image::LumaA<u16>, _>::from_pixel(1, 1, image::LumaA([65535, 32768]));
        let rgb = flatten_rgb(&DynamicImage::ImageLumaA16(g));
        assert_eq!(rgb.get_pixel(0, 0).0, [191, 191, 191]);
    }
}
