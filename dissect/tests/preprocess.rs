//! `dissect::preprocess` against the plain reference (`preprocess_reference`: `image`'s own
//! triangle resize, `Rgba<f32>` compositing): identical output, bit for bit, on odd sizes, every
//! (value, alpha) pair and several encodings; identical error messages on bad files. Real photos
//! in awkward encodings are checked the same way in `tests/record.rs`.

mod preprocess_reference;

use dissect::model::Preprocess;
use dissect::preprocess::{decode_rgb, flatten_rgb, load_tensor, model_input, normalize, resize_center_crop};
use image::{DynamicImage, RgbImage, RgbaImage};
use preprocess_reference as reference;
use std::path::Path;
use tch::Tensor;

/// Deterministic noise (xorshift), so every pixel differs from its neighbours.
fn noise(w: u32, h: u32, seed: u32) -> RgbImage {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    RgbImage::from_fn(w, h, |_, _| {
        image::Rgb(std::array::from_fn(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 24) as u8
        }))
    })
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn tensor_bits(t: &Tensor) -> Vec<u32> {
    bits(&Vec::<f32>::try_from(t.contiguous().view([-1])).unwrap())
}

fn lite0() -> Preprocess {
    Preprocess::center_crop(224, 0.875, [127.0; 3], [128.0; 3])
}

#[test]
fn resize_matches_image_triangle_filter_on_odd_sizes() {
    let small = Preprocess { input_size: (7, 5), resize_shorter: 9, mean: [0.0; 3], std: [1.0; 3] };
    let wide = Preprocess { input_size: (16, 40), resize_shorter: 16, mean: [0.0; 3], std: [1.0; 3] };
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
        for p in [lite0(), small, wide] {
            let img = noise(w, h, i as u32);
            let ours = resize_center_crop(&img, &p);
            let theirs = reference::resize_center_crop(&img, &p);
            assert_eq!(ours.dimensions(), theirs.dimensions(), "{w}×{h}");
            assert!(ours == theirs, "{w}×{h} → {:?}: pixels differ", p.input_size);
        }
    }
}

#[test]
fn every_value_alpha_pair_flattens_like_f32_compositing() {
    // All 65,536 (value, alpha) pairs, with a different value in each channel.
    let grid = RgbaImage::from_fn(256, 256, |v, a| {
        let v = v as u8;
        image::Rgba([v, 255 - v, v.wrapping_mul(7), a as u8])
    });
    // Random pixels, and the layouts that take the f32 path.
    let rgb = noise(300, 200, 9);
    let alpha = noise(300, 200, 10);
    let random = RgbaImage::from_fn(300, 200, |x, y| {
        let [r, g, b] = rgb.get_pixel(x, y).0;
        image::Rgba([r, g, b, alpha.get_pixel(x, y).0[(x % 3) as usize]])
    });
    let random = DynamicImage::ImageRgba8(random);
    let images = [
        DynamicImage::ImageRgba8(grid),
        random.clone(),
        DynamicImage::ImageLumaA8(random.to_luma_alpha8()),
        DynamicImage::ImageLumaA16(random.to_luma_alpha16()),
        DynamicImage::ImageRgba16(random.to_rgba16()),
        DynamicImage::ImageRgba32F(random.to_rgba32f()),
        DynamicImage::ImageRgb8(rgb),
    ];
    for img in &images {
        assert!(flatten_rgb(img) == reference::flatten(img), "{:?}", img.color());
    }
    assert_eq!(
        flatten_rgb(&images[0]).get_pixel(0, 0).0,
        dissect::preprocess::BACKGROUND,
        "alpha 0 shows the background"
    );
}

#[test]
fn normalisation_matches_to_the_bit() {
    let img = noise(37, 23, 5);
    let p = Preprocess {
        input_size: (23, 37),
        resize_shorter: 23,
        mean: [123.675, 116.28, 103.53],
        std: [58.395, 57.12, 57.375],
    };
    let t = normalize(&img, &p);
    assert_eq!(t.size(), vec![3, 23, 37]);
    assert_eq!(tensor_bits(&t), bits(&reference::normalize(&img, &p)));
}

#[test]
fn model_input_and_load_tensor_match_the_reference_in_several_encodings() {
    let dir = tempfile::tempdir().unwrap();
    let p = lite0();
    let base = DynamicImage::ImageRgb8(noise(320, 240, 3));
    let mut rgba = base.to_rgba8();
    rgba.pixels_mut().enumerate().for_each(|(i, px)| px.0[3] = (i * 37 % 256) as u8);
    let files: Vec<(&str, DynamicImage)> = vec![
        ("rgb.png", base.clone()),
        ("rgba.png", DynamicImage::ImageRgba8(rgba)),
        ("la.png", DynamicImage::ImageLumaA8(base.to_luma_alpha8())),
        ("rgb16.png", DynamicImage::ImageRgb16(base.to_rgb16())),
        ("grey.png", DynamicImage::ImageLuma8(base.to_luma8())),
        ("photo.jpg", base),
    ];
    for (name, img) in files {
        let path = dir.path().join(name);
        img.save(&path).unwrap();
        let want = bits(&reference::model_input(&path, &p));
        assert_eq!(bits(&model_input(&std::fs::read(&path).unwrap(), &path, &p).unwrap()), want, "{name}");
        assert_eq!(tensor_bits(&load_tensor(&path, &p).unwrap()), want, "{name}");
    }
}

#[test]
fn bad_files_give_decode_rgb_messages() {
    let p = lite0();
    let path = Path::new("bad.png");
    let cases: [(&[u8], &str); 3] = [
        (b"", "the file is empty"),
        (b"plain text", "not a recognised image format"),
        (b"\x89PNG\r\n\x1a\n truncated", "bad.png"),
    ];
    for (bytes, says) in cases {
        let ours = model_input(bytes, path, &p).unwrap_err().to_string();
        assert_eq!(ours, decode_rgb(bytes, path).unwrap_err().to_string());
        assert!(ours.contains(says) && ours.contains("bad.png"), "{ours}");
    }
}
