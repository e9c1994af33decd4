//! Attention crops and D_top (docs/method.md, "Step 1").
//!
//! For each of a neuron's top-K images: upsample its activation map (bilinear) to a square working
//! frame, threshold it with Otsu's method, take the bounding boxes of the external contours of the
//! foreground, keep the largest non-overlapping ones, and map them to the source image's own pixel
//! frame (what the database stores). The crops are then run through the model and compete with
//! the full images for the final top-K, D_top.
//!
//! # Frames
//! * **Source frame**: the decoded image's pixels. [`CropBox`]es returned to callers live here.
//! * **Model view**: the region of the source that the network actually sees, i.e. the centre crop
//!   that [`crate::preprocess::resize_center_crop`] cuts ([`ModelView`]). An activation map covers
//!   exactly this region, not the whole source image.
//! * **Working frame**: the model view resized to `working_size`×`working_size` (the released DnD
//!   code uses 375×375, [`WORKING_SIZE`]). Upsampling, Otsu, contours and the IoU rules all run
//!   here, so the thresholds behave the same whatever the source resolution.
//!
//! The released code overlays the map on the *whole* image resized to 375×375, ignoring the
//! centre crop of the model's transform; mapping through the model view instead puts boxes where
//! the neuron looked. For a square source this is the same up to the crop margin.

use crate::error::{Error, Result};
use crate::model::{LayerInfo, LayerKind, Preprocess, TargetModel};
use crate::preprocess::{image_to_tensor, stack_batch};
use image::{imageops::FilterType, GrayImage, RgbImage};
use imageproc::contours::{find_contours, BorderType};
use std::cmp::Ordering;
use tch::Tensor;

/// Step 1.1 / 1.7: images kept per neuron, before and after adding crops.
pub const K: usize = 10;
/// Step 1.5: at most this many crops per image.
pub const MAX_CROPS: usize = 4;
/// Step 1.5: a box is accepted only if its IoU with every accepted box is ≤ this.
pub const IOU_MAX: f64 = 0.5;
/// Step 1.5: a box is accepted only if its IoU with the whole image is < this.
pub const FULL_IMAGE_IOU_MAX: f64 = 0.8;
/// Step 1.2: default side of the square working frame (the released code's 375×375).
pub const WORKING_SIZE: u32 = 375;
/// Largest accepted working size: imageproc's Otsu sums `level × count` in `u32`, which stays
/// exact up to about 4100² pixels.
pub const MAX_WORKING_SIZE: u32 = 4096;
/// Crops per forward pass in [`crop_activations`].
pub const CROP_BATCH: usize = 32;

/// How a neuron's activation map is reduced to one number, `g` in docs/method.md. Serialized
/// by its name ([`Summary::as_str`]), as settings and job payloads store it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Summary {
    /// Spatial mean (the default).
    #[default]
    Mean,
    /// Spatial maximum.
    Max,
}

impl Summary {
    /// Every summary, with the name settings, the database and the command line use.
    pub const ALL: [Summary; 2] = [Summary::Mean, Summary::Max];

    /// `mean` or `max`.
    pub fn as_str(self) -> &'static str {
        match self {
            Summary::Mean => "mean",
            Summary::Max => "max",
        }
    }

    /// The summary named `name` ([`Summary::as_str`]).
    pub fn parse(name: &str) -> Option<Summary> {
        Summary::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Reduces a layer output to one value per (image, unit): `N×C×H×W` → `N×C` by the spatial
    /// mean or max; an `N×C` output (linear layers) has no map and is only cast to f32.
    pub fn reduce(self, t: &Tensor) -> Tensor {
        let spatial: Vec<i64> = (2..t.dim() as i64).collect();
        let t = t.to_kind(tch::Kind::Float);
        match (self, spatial.is_empty()) {
            (_, true) => t,
            (Summary::Mean, false) => t.mean_dim(spatial.as_slice(), false, tch::Kind::Float),
            (Summary::Max, false) => t.amax(spatial.as_slice(), false),
        }
    }
}

/// An axis-aligned box in integer pixels: `x0`, `y0` inclusive, `x1`, `y1` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct CropBox {
    pub x0: u32,
    pub y0: u32,
    pub x1: u32,
    pub y1: u32,
}

impl CropBox {
    pub fn new(x0: u32, y0: u32, x1: u32, y1: u32) -> Self {
        debug_assert!(x1 >= x0 && y1 >= y0, "inverted box {x0},{y0},{x1},{y1}");
        CropBox { x0, y0, x1, y1 }
    }

    /// The whole `width`×`height` frame.
    pub fn full(width: u32, height: u32) -> Self {
        CropBox::new(0, 0, width, height)
    }

    pub fn width(&self) -> u32 {
        self.x1.saturating_sub(self.x0)
    }

    pub fn height(&self) -> u32 {
        self.y1.saturating_sub(self.y0)
    }

    pub fn area(&self) -> u64 {
        self.width() as u64 * self.height() as u64
    }

    pub fn intersection_area(&self, other: &CropBox) -> u64 {
        let w = self.x1.min(other.x1).saturating_sub(self.x0.max(other.x0));
        let h = self.y1.min(other.y1).saturating_sub(self.y0.max(other.y0));
        w as u64 * h as u64
    }

    /// Intersection over union; boxes that only touch along an edge have IoU 0. Two empty boxes
    /// have IoU 0 too (no area to share).
    pub fn iou(&self, other: &CropBox) -> f64 {
        let inter = self.intersection_area(other);
        let union = self.area() + other.area() - inter;
        if union == 0 {
            0.0
        } else {
            inter as f64 / union as f64
        }
    }

    /// Whether the box is non-empty and lies inside a `width`×`height` frame.
    pub fn is_within(&self, width: u32, height: u32) -> bool {
        self.x0 < self.x1 && self.y0 < self.y1 && self.x1 <= width && self.y1 <= height
    }

    /// The box in a frame scaled by `(sx, sy)` (e.g. a thumbnail), edges rounded to the nearest
    /// pixel and kept at least one pixel wide.
    pub fn scale(&self, sx: f64, sy: f64) -> CropBox {
        self.affine(0.0, 0.0, sx, sy, u32::MAX, u32::MAX)
    }

    /// Maps edges through `x ↦ ox + x·sx`, `y ↦ oy + y·sy`, rounds them to the nearest pixel,
    /// clamps to `max_w`×`max_h` and keeps the box at least one pixel wide and high.
    fn affine(&self, ox: f64, oy: f64, sx: f64, sy: f64, max_w: u32, max_h: u32) -> CropBox {
        let edge = |o: f64, v: u32, s: f64, max: u32| (o + v as f64 * s).round().clamp(0.0, max as f64) as u32;
        let (mut x0, mut x1) = (edge(ox, self.x0, sx, max_w), edge(ox, self.x1, sx, max_w));
        let (mut y0, mut y1) = (edge(oy, self.y0, sy, max_h), edge(oy, self.y1, sy, max_h));
        // Rounding can collapse a thin box; a stored crop must keep at least one pixel.
        if x1 <= x0 {
            (x0, x1) = if x0 < max_w { (x0, x0 + 1) } else { (max_w - 1, max_w) };
        }
        if y1 <= y0 {
            (y0, y1) = if y0 < max_h { (y0, y0 + 1) } else { (max_h - 1, max_h) };
        }
        CropBox::new(x0, y0, x1, y1)
    }
}

/// One neuron's activation map for one image: `height`×`width` values, row-major.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ActivationMap {
    pub height: usize,
    pub width: usize,
    pub values: Vec<f32>,
}

impl ActivationMap {
    /// Panics if `values.len() != height * width` (a programming error, not bad input).
    pub fn new(height: usize, width: usize, values: Vec<f32>) -> Self {
        assert_eq!(values.len(), height * width, "activation map {height}×{width} needs {} values", height * width);
        ActivationMap { height, width, values }
    }

    /// From an `H×W` tensor of any float kind, on any device, with any strides (e.g. one unit of a
    /// channels-last layer output: `out.get(image).get(unit)`).
    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        let size = t.size();
        let &[h, w] = size.as_slice() else {
            return Err(Error::Torch(tch::TchError::Shape(format!(
                "an activation map must be H×W, got shape {size:?}"
            ))));
        };
        let flat = t.to_device(tch::Device::Cpu).to_kind(tch::Kind::Float).contiguous().view([-1]);
        Ok(ActivationMap::new(h as usize, w as usize, Vec::<f32>::try_from(&flat)?))
    }

    /// `g(A)` for this map; NaN for an empty map.
    pub fn summary(&self, summary: Summary) -> f32 {
        if self.values.is_empty() {
            return f32::NAN;
        }
        match summary {
            Summary::Mean => (self.values.iter().map(|&v| v as f64).sum::<f64>() / self.values.len() as f64) as f32,
            Summary::Max => self.values.iter().copied().fold(f32::NEG_INFINITY, f32::max),
        }
    }

    /// The values as stored in the database: f32 little-endian, row-major (4 bytes a cell).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        self.values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// The inverse of [`ActivationMap::to_le_bytes`]; a size that does not match the bytes is an
    /// error naming both.
    pub fn from_le_bytes(height: usize, width: usize, bytes: &[u8]) -> std::result::Result<Self, String> {
        if height == 0 || width == 0 {
            return Err(format!("an activation map must have at least one cell, got {height}×{width}"));
        }
        if bytes.len() != height * width * 4 {
            return Err(format!(
                "a {height}×{width} activation map needs {} bytes of f32, got {}",
                height * width * 4,
                bytes.len()
            ));
        }
        let values = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        Ok(ActivationMap { height, width, values })
    }

    /// The map's value at fractional position (`u`, `v`) of its extent (0 = left/top edge, 1 =
    /// right/bottom edge), interpolated bilinearly between cell centres with the same
    /// half-pixel convention and edge clamping as [`ActivationMap::upsample`]; NaN when empty.
    pub fn sample(&self, u: f64, v: f64) -> f32 {
        if self.values.is_empty() {
            return f32::NAN;
        }
        let tap = |f: f64, len: usize| {
            let s = (f * len as f64 - 0.5).clamp(0.0, (len - 1) as f64);
            let i0 = s.floor() as usize;
            (i0, (i0 + 1).min(len - 1), (s - i0 as f64) as f32)
        };
        let (x0, x1, fx) = tap(u, self.width);
        let (y0, y1, fy) = tap(v, self.height);
        let at = |x: usize, y: usize| self.values[y * self.width + x];
        let top = at(x0, y0) + (at(x1, y0) - at(x0, y0)) * fx;
        let bottom = at(x0, y1) + (at(x1, y1) - at(x0, y1)) * fx;
        top + (bottom - top) * fy
    }

    /// Bilinear resize to `out_w`×`out_h` with half-pixel centres (OpenCV `INTER_LINEAR`,
    /// PyTorch `align_corners=False`): an `n`-cell map stretches over the whole output, and equal
    /// sizes give the map back unchanged.
    pub fn upsample(&self, out_w: usize, out_h: usize) -> Vec<f32> {
        if self.values.is_empty() {
            return vec![0.0; out_w * out_h];
        }
        let xs: Vec<_> = (0..out_w).map(|x| taps(x, self.width, out_w)).collect();
        let mut out = Vec::with_capacity(out_w * out_h);
        for y in 0..out_h {
            let (y0, y1, fy) = taps(y, self.height, out_h);
            let (r0, r1) =
                (&self.values[y0 * self.width..][..self.width], &self.values[y1 * self.width..][..self.width]);
            for &(x0, x1, fx) in &xs {
                let top = r0[x0] + (r0[x1] - r0[x0]) * fx;
                let bottom = r1[x0] + (r1[x1] - r1[x0]) * fx;
                out.push(top + (bottom - top) * fy);
            }
        }
        out
    }
}

/// Source cells and weight of the second one for output index `i` (half-pixel centres,
/// clamped at the edges).
fn taps(i: usize, in_len: usize, out_len: usize) -> (usize, usize, f32) {
    let s = ((i as f64 + 0.5) * in_len as f64 / out_len as f64 - 0.5).max(0.0);
    let i0 = (s.floor() as usize).min(in_len - 1);
    let i1 = (i0 + 1).min(in_len - 1);
    (i0, i1, (s - i0 as f64) as f32)
}

/// Values linearly rescaled to 0–255 (min → 0, max → 255, rounded): the 8-bit image imageproc's
/// Otsu works on. `None` when the finite values are constant (no foreground to separate) or
/// absent. Non-finite values count as the minimum.
fn quantise(values: &[f32]) -> Option<(Vec<u8>, f32, f32)> {
    let finite = values.iter().copied().filter(|v| v.is_finite());
    let (min, max) = finite.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !(max > min) {
        return None;
    }
    let range = max as f64 - min as f64;
    let q = |v: f32| if v.is_finite() { ((v as f64 - min as f64) / range * 255.0).round() as u8 } else { 0 };
    Some((values.iter().map(|&v| q(v)).collect(), min, max))
}

fn otsu_on(bytes: Vec<u8>) -> u8 {
    let n = bytes.len() as u32;
    imageproc::contrast::otsu_level(&GrayImage::from_raw(n, 1, bytes).expect("1×n buffer"))
}

/// Otsu's threshold of `values` (Step 1.3: maximise `w_b·w_f·(μ_b−μ_f)²`). Foreground is
/// `v ≥ threshold`; `None` for a constant map, which has no foreground.
///
/// Quantisation: imageproc's `otsu_level` works on 8-bit images, so the values are first
/// rescaled linearly to 0–255 (min → 0, max → 255, rounded). This departs from the released DnD
/// code on purpose (docs/method.md, "Departures"): it upsamples bicubically and multiplies the raw
/// map by 255 before OpenCV's Otsu, so maps whose values exceed 1 saturate and the crops depend on
/// the layer's scale. Min-max after bilinear upsampling gives the same boxes for a map and any
/// positive multiple of it. The optimum is searched over 255 candidate levels; level `L`
/// (background = quantised value ≤ `L`) maps back to `min + (L + ½)·(max − min)/255`, the value
/// where rounding moves from bin `L` to `L + 1`.
pub fn otsu_threshold(values: &[f32]) -> Option<f32> {
    let (bytes, min, max) = quantise(values)?;
    let level = otsu_on(bytes) as f64;
    Some((min as f64 + (level + 0.5) * (max as f64 - min as f64) / 255.0) as f32)
}

/// The Otsu foreground of a `width`×`height` row-major map as a mask (255 = foreground), or
/// `None` for a constant map. Uses the quantised values directly, so it agrees exactly with the
/// level imageproc chose.
pub fn foreground_mask(values: &[f32], width: u32, height: u32) -> Option<GrayImage> {
    assert_eq!(values.len(), (width as usize) * (height as usize), "mask size");
    let (bytes, _, _) = quantise(values)?;
    let level = otsu_on(bytes.clone());
    let mask = bytes.into_iter().map(|q| if q > level { 255 } else { 0 }).collect();
    Some(GrayImage::from_raw(width, height, mask).expect("sized above"))
}

/// Bounding boxes of the external (outermost) contours of a mask's non-zero pixels, like
/// OpenCV's `RETR_EXTERNAL` + `boundingRect`: a ring gives one box, a blob inside a ring's hole
/// none. Boxes are in mask pixels, in raster order of each contour's first pixel.
pub fn external_boxes(mask: &GrayImage) -> Vec<CropBox> {
    let (w, h) = mask.dimensions();
    // imageproc (like Suzuki–Abe) only starts an outer border at a 0→1 step, so a blob touching
    // the left edge would be missed; OpenCV pads a zero frame for the same reason.
    let mut padded = GrayImage::new(w + 2, h + 2);
    image::imageops::replace(&mut padded, mask, 1, 1);
    find_contours::<u32>(&padded)
        .into_iter()
        .filter(|c| c.parent.is_none() && c.border_type == BorderType::Outer)
        .map(|c| {
            let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
            for p in &c.points {
                (x0, y0, x1, y1) = (x0.min(p.x), y0.min(p.y), x1.max(p.x), y1.max(p.y));
            }
            // Undo the padding; the far edges become exclusive.
            CropBox::new(x0 - 1, y0 - 1, x1, y1)
        })
        .collect()
}

/// Step 1.5: sort by area, largest first (ties keep their order), accept a box if its IoU
/// with every accepted box is ≤ [`IOU_MAX`] and its IoU with the whole `width`×`height` frame is
/// < [`FULL_IMAGE_IOU_MAX`]; stop at [`MAX_CROPS`].
pub fn select_boxes(mut boxes: Vec<CropBox>, width: u32, height: u32) -> Vec<CropBox> {
    boxes.sort_by_key(|b| std::cmp::Reverse(b.area()));
    let full = CropBox::full(width, height);
    let mut accepted: Vec<CropBox> = Vec::with_capacity(MAX_CROPS);
    for b in boxes {
        if accepted.len() == MAX_CROPS {
            break;
        }
        if b.area() > 0 && b.iou(&full) < FULL_IMAGE_IOU_MAX && accepted.iter().all(|a| a.iou(&b) <= IOU_MAX) {
            accepted.push(b);
        }
    }
    accepted
}

/// Steps 1.2–1.5 for one map: the accepted boxes in the `working_size`² working frame.
pub fn attention_boxes(map: &ActivationMap, working_size: u32) -> Vec<CropBox> {
    assert!(
        (1..=MAX_WORKING_SIZE).contains(&working_size),
        "working size {working_size} outside 1..={MAX_WORKING_SIZE}"
    );
    if map.values.is_empty() {
        return Vec::new();
    }
    let side = working_size as usize;
    match foreground_mask(&map.upsample(side, side), working_size, working_size) {
        Some(mask) => select_boxes(external_boxes(&mask), working_size, working_size),
        None => Vec::new(),
    }
}

/// The region of a source image the model sees, in source pixels (fractional), following the
/// arithmetic of [`crate::preprocess::resize_center_crop`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelView {
    pub source_width: u32,
    pub source_height: u32,
    pub x0: f64,
    pub y0: f64,
    pub width: f64,
    pub height: f64,
}

impl ModelView {
    /// The view of a `source_width`×`source_height` image under preprocessing `p`.
    pub fn new(source_width: u32, source_height: u32, p: &Preprocess) -> Self {
        // Keep in step with `preprocess::resize_center_crop` (tested against it below).
        let (crop_h, crop_w) = p.input_size;
        let (w, h) = (source_width.max(1), source_height.max(1));
        let short = w.min(h) as f64;
        let target = p.resize_shorter.max(crop_h).max(crop_w) as f64;
        let (nw, nh) = if w <= h {
            (target as u32, (target * h as f64 / short) as u32)
        } else {
            ((target * w as f64 / short) as u32, target as u32)
        };
        let (nw, nh) = (nw.max(crop_w), nh.max(crop_h));
        let top = ((nh - crop_h) as f64 / 2.0).round();
        let left = ((nw - crop_w) as f64 / 2.0).round();
        let (sx, sy) = (w as f64 / nw as f64, h as f64 / nh as f64);
        ModelView {
            source_width: w,
            source_height: h,
            x0: left * sx,
            y0: top * sy,
            width: crop_w as f64 * sx,
            height: crop_h as f64 * sy,
        }
    }

    /// A working-frame box in source pixels (edges rounded to the nearest pixel, clamped to the
    /// image, at least one pixel wide).
    pub fn to_source(&self, b: &CropBox, working_size: u32) -> CropBox {
        let (sx, sy) = (self.width / working_size as f64, self.height / working_size as f64);
        b.affine(self.x0, self.y0, sx, sy, self.source_width, self.source_height)
    }
}

/// One unit's activation map on one probing image, placed on that image: the map covers `view`,
/// the centre crop the model saw (source pixels, rounded to whole pixels), not the whole image.
/// Kept with each D_top image so the neuron page can overlay it as a heatmap.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImageMap {
    pub map: ActivationMap,
    pub view: CropBox,
}

impl ImageMap {
    /// `map` of a `source_size` = (width, height) image under preprocessing `p`.
    pub fn new(map: ActivationMap, source_size: (u32, u32), p: &Preprocess) -> Self {
        let view = ModelView::new(source_size.0, source_size.1, p).to_source(&CropBox::full(1, 1), 1);
        ImageMap { map, view }
    }
}

/// Attention crops of one image, in its source pixels: [`attention_boxes`] mapped through the
/// model view of a `source_size` = (width, height) image.
pub fn image_crops(map: &ActivationMap, source_size: (u32, u32), p: &Preprocess, working_size: u32) -> Vec<CropBox> {
    let view = ModelView::new(source_size.0, source_size.1, p);
    attention_boxes(map, working_size).iter().map(|b| view.to_source(b, working_size)).collect()
}

/// One of a neuron's top-K images: its source size (width, height) and its activation map.
#[derive(Debug, Clone, Copy)]
pub struct TopImage<'a> {
    pub source_size: (u32, u32),
    pub map: &'a ActivationMap,
}

impl<'a> TopImage<'a> {
    pub fn new(image: &RgbImage, map: &'a ActivationMap) -> Self {
        TopImage { source_size: image.dimensions(), map }
    }
}

/// Crop boxes (source pixels) for each of a neuron's top images, in the order given. Only
/// convolutional layers get crops: a linear or classifier unit has no spatial map (Step 1.6
/// "the final (classification) layer gets no crops"), so every image gets an empty list.
pub fn neuron_crops(layer: &LayerInfo, p: &Preprocess, top: &[TopImage<'_>], working_size: u32) -> Vec<Vec<CropBox>> {
    top.iter()
        .map(|t| {
            if layer.kind == LayerKind::Conv {
                image_crops(t.map, t.source_size, p, working_size)
            } else {
                Vec::new()
            }
        })
        .collect()
}

/// Step 1.6: the crop cut from the source and resized (bilinear) to the working size, as the
/// released code stores it; the model's own preprocessing then applies on top, as for any
/// probing image.
pub fn crop_image(source: &RgbImage, b: &CropBox, working_size: u32) -> RgbImage {
    let (w, h) = source.dimensions();
    let b = CropBox::new(b.x0.min(w), b.y0.min(h), b.x1.min(w), b.y1.min(h));
    let cut = image::imageops::crop_imm(source, b.x0, b.y0, b.width().max(1), b.height().max(1)).to_image();
    image::imageops::resize(&cut, working_size, working_size, FilterType::Triangle)
}

/// One crop whose activation is wanted: which image, which box, and which neuron.
#[derive(Debug, Clone, Copy)]
pub struct CropProbe<'a> {
    pub image: &'a RgbImage,
    pub crop: CropBox,
    /// Index into the model's `layers()`.
    pub layer: usize,
    pub unit: usize,
}

/// `g(A_k(crop))` for each probe, in order. Crops of any mix of neurons are run together,
/// [`CROP_BATCH`] per forward pass, each pass asking only for the layers its crops need.
pub fn crop_activations<M: TargetModel + ?Sized>(
    model: &M,
    probes: &[CropProbe<'_>],
    summary: Summary,
    working_size: u32,
) -> Result<Vec<f32>> {
    let layers = model.layers();
    for pr in probes {
        let info = layers.get(pr.layer).ok_or_else(|| Error::LayerIndex {
            model: model.name().to_string(),
            index: pr.layer,
            count: layers.len(),
        })?;
        if pr.unit >= info.channels {
            let msg = format!("unit {} out of range: layer `{}` has {} units", pr.unit, info.name, info.channels);
            return Err(Error::Torch(tch::TchError::Shape(msg)));
        }
    }
    let p = model.preprocessing();
    let mut out = Vec::with_capacity(probes.len());
    for chunk in probes.chunks(CROP_BATCH) {
        let inputs: Vec<Tensor> =
            chunk.iter().map(|pr| image_to_tensor(&crop_image(pr.image, &pr.crop, working_size), &p)).collect();
        let mut wanted: Vec<usize> = chunk.iter().map(|pr| pr.layer).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let acts = model.forward_layers(&stack_batch(&inputs)?, &wanted)?;
        // Reduce each needed layer to N×C on the device, then read it once.
        let mut summaries = Vec::with_capacity(acts.len());
        for t in &acts {
            let s = summary.reduce(t).to_device(tch::Device::Cpu).contiguous();
            let c = s.size()[1] as usize;
            summaries.push((Vec::<f32>::try_from(&s.view([-1]))?, c));
        }
        for (i, pr) in chunk.iter().enumerate() {
            let (values, c) = &summaries[wanted.binary_search(&pr.layer).expect("asked for")];
            out.push(values[i * c + pr.unit]);
        }
    }
    Ok(out)
}

/// A D_top candidate: a probing image (`crop: None`) or one of its crops, with `g` of the neuron.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TopCandidate {
    pub image_index: usize,
    pub crop: Option<CropBox>,
    pub activation: f32,
}

/// Step 1.7: the best `k` of probing images ∪ crops by activation, highest first. Ties go to
/// the lower image index, then the full image before its crops, then the order given (stable).
/// NaN activations rank last.
pub fn rerank_top(candidates: &[TopCandidate], k: usize) -> Vec<TopCandidate> {
    let mut v = candidates.to_vec();
    v.sort_by(|a, b| {
        desc_nan_last(a.activation, b.activation)
            .then(a.image_index.cmp(&b.image_index))
            .then(a.crop.is_some().cmp(&b.crop.is_some()))
    });
    v.truncate(k);
    v
}

fn desc_nan_last(a: f32, b: f32) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => b.partial_cmp(&a).expect("not NaN"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_are_named_in_one_place() {
        for s in Summary::ALL {
            assert_eq!(Summary::parse(s.as_str()), Some(s));
        }
        assert_eq!(Summary::parse("Mean"), None, "names are lower-case, as stored");
        assert_eq!(Summary::parse(""), None);
        for s in Summary::ALL {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{}\"", s.as_str()), "serialized by name");
        }
    }

    fn b(x0: u32, y0: u32, x1: u32, y1: u32) -> CropBox {
        CropBox::new(x0, y0, x1, y1)
    }

    #[test]
    fn iou_edge_cases() {
        let a = b(0, 0, 10, 10);
        assert_eq!(a.iou(&a), 1.0);
        assert_eq!(a.iou(&b(20, 20, 30, 30)), 0.0, "disjoint");
        assert_eq!(a.iou(&b(10, 0, 20, 10)), 0.0, "touching edges");
        assert_eq!(a.iou(&b(10, 10, 20, 20)), 0.0, "touching corners");
        assert_eq!(a.iou(&b(0, 0, 10, 5)), 0.5, "half, nested");
        assert_eq!(a.iou(&b(5, 0, 15, 10)), 50.0 / 150.0, "half-overlapping shift");
        assert_eq!(b(3, 3, 3, 3).iou(&b(3, 3, 3, 3)), 0.0, "empty boxes");
        assert_eq!((a.area(), a.width(), a.height()), (100, 10, 10));
    }

    #[test]
    fn selection_thresholds_are_inclusive_and_exclusive_as_specified() {
        // IoU exactly 0.5 with an accepted box is accepted (≤ 0.5) …
        assert_eq!(select_boxes(vec![b(0, 0, 10, 5), b(0, 0, 10, 10)], 100, 100), [b(0, 0, 10, 10), b(0, 0, 10, 5)]);
        // … just above is not.
        assert_eq!(select_boxes(vec![b(0, 0, 100, 51), b(0, 0, 100, 100)], 200, 200), [b(0, 0, 100, 100)]);
        // IoU with the frame exactly 0.8 is rejected (< 0.8 required), just below is kept.
        assert_eq!(select_boxes(vec![b(0, 0, 40, 32)], 40, 40), []);
        assert_eq!(select_boxes(vec![b(0, 0, 40, 31)], 40, 40), [b(0, 0, 40, 31)]);
    }

    #[test]
    fn at_most_four_crops_the_largest() {
        let boxes: Vec<_> = (0..6).map(|i| b(i * 20, 0, i * 20 + 5 + i, 10)).collect();
        let got = select_boxes(boxes, 200, 200);
        assert_eq!(got, [b(100, 0, 110, 10), b(80, 0, 89, 10), b(60, 0, 68, 10), b(40, 0, 47, 10)]);
    }

    #[test]
    fn otsu_of_two_levels_and_constant_maps() {
        let mut v = vec![0.0f32; 100];
        v[..30].fill(2.0);
        // Level 0 of 255 → halfway into the first quantisation step.
        let t = otsu_threshold(&v).unwrap();
        assert!((t - 0.5 * 2.0 / 255.0).abs() < 1e-6, "{t}");
        assert_eq!(otsu_threshold(&[3.0; 16]), None);
        assert_eq!(otsu_threshold(&[]), None);
        assert_eq!(foreground_mask(&[1.5; 4], 2, 2), None);
        // Three clusters: Otsu splits off the high one from the two lower ones here.
        let v: Vec<f32> = [0.0; 50].into_iter().chain([1.0; 45]).chain([10.0; 5]).collect();
        let t = otsu_threshold(&v).unwrap();
        assert!(t > 1.0 && t < 10.0, "{t}");
        let mask = foreground_mask(&v, 100, 1).unwrap();
        assert_eq!(mask.pixels().filter(|p| p.0[0] > 0).count(), 5);
        assert!(v.iter().zip(mask.pixels()).all(|(&x, m)| (x >= t) == (m.0[0] > 0)));
    }

    #[test]
    fn crops_do_not_depend_on_the_scale_of_the_map() {
        // A blob on a 7×7 map: raw × 255 would saturate it at ×4; min-max rescaling does not.
        let values: Vec<f32> = (0..49)
            .map(|i| {
                let (x, y) = ((i % 7) as f32 - 2.0, (i / 7) as f32 - 4.0);
                (-(x * x + y * y) / 3.0).exp() * 0.8 + 0.05 * ((i * 7 % 5) as f32)
            })
            .collect();
        let boxes = attention_boxes(&ActivationMap::new(7, 7, values.clone()), 64);
        assert!(!boxes.is_empty());
        // Powers of two scale floats exactly, so any difference would be the method's, not rounding.
        for scale in [0.25f32, 4.0, 1024.0] {
            let scaled = values.iter().map(|v| v * scale).collect();
            assert_eq!(attention_boxes(&ActivationMap::new(7, 7, scaled), 64), boxes, "×{scale}");
        }
    }

    #[test]
    fn upsample_is_identity_at_equal_size_and_bilinear_otherwise() {
        let m = ActivationMap::new(2, 3, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(m.upsample(3, 2), m.values);
        // 1×2 → 1×4 with half-pixel centres: [0, 0.25, 0.75, 1] like cv2.resize / F.interpolate.
        let m = ActivationMap::new(1, 2, vec![0.0, 1.0]);
        assert_eq!(m.upsample(4, 1), [0.0, 0.25, 0.75, 1.0]);
    }

    #[test]
    fn stored_bytes_round_trip_and_bad_sizes_are_named() {
        let m = ActivationMap::new(2, 3, vec![0.5, -1.0, f32::MAX, 3.25, 0.0, -7e-8]);
        let bytes = m.to_le_bytes();
        assert_eq!(bytes.len(), 24);
        assert_eq!(ActivationMap::from_le_bytes(2, 3, &bytes).unwrap(), m);
        let e = ActivationMap::from_le_bytes(3, 3, &bytes).unwrap_err();
        assert!(e.contains("3×3") && e.contains("36") && e.contains("24"), "{e}");
        assert!(ActivationMap::from_le_bytes(0, 3, &[]).unwrap_err().contains("0×3"));
    }

    #[test]
    fn sampling_agrees_with_upsampling() {
        let m = ActivationMap::new(3, 4, (0..12).map(|v| ((v * 7) % 5) as f32).collect());
        let (ow, oh) = (10, 7);
        let up = m.upsample(ow, oh);
        for y in 0..oh {
            for x in 0..ow {
                let s = m.sample((x as f64 + 0.5) / ow as f64, (y as f64 + 0.5) / oh as f64);
                assert!((s - up[y * ow + x]).abs() < 1e-5, "({x},{y}): {s} vs {}", up[y * ow + x]);
            }
        }
        // A cell's centre gives the cell's own value.
        assert_eq!(m.sample(2.5 / 4.0, 1.5 / 3.0), m.values[4 + 2]);
    }

    #[test]
    fn image_maps_cover_the_model_view() {
        let p = Preprocess { input_size: (64, 64), resize_shorter: 73, mean: [0.0; 3], std: [1.0; 3] };
        let m = ImageMap::new(ActivationMap::new(1, 1, vec![1.0]), (300, 200), &p);
        let v = ModelView::new(300, 200, &p);
        assert_eq!(
            m.view,
            b(
                v.x0.round() as u32,
                v.y0.round() as u32,
                (v.x0 + v.width).round() as u32,
                (v.y0 + v.height).round() as u32
            )
        );
        assert!(m.view.is_within(300, 200) && m.view.width() < 300);
    }

    #[test]
    fn activation_map_from_a_channels_last_tensor() {
        let t = Tensor::arange(2 * 3 * 4 * 5, (tch::Kind::Float, tch::Device::Cpu)).view([2, 3, 4, 5]);
        let cl = t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2]);
        let m = ActivationMap::from_tensor(&cl.get(1).get(2)).unwrap();
        assert_eq!((m.height, m.width), (4, 5));
        assert_eq!(m.values[0], (3 * 20 + 2 * 20) as f32);
        assert_eq!(m.summary(Summary::Max), (3 * 20 + 2 * 20 + 19) as f32);
        assert!((m.summary(Summary::Mean) - (100.0 + 9.5)).abs() < 1e-5);
        assert!(ActivationMap::from_tensor(&t).is_err());
    }

    #[test]
    fn model_view_matches_resize_center_crop() {
        let p = Preprocess { input_size: (64, 64), resize_shorter: 73, mean: [0.0; 3], std: [1.0; 3] };
        // 300×200 → resized 109×73 (torchvision truncation), crop offset (23, 5).
        let v = ModelView::new(300, 200, &p);
        assert!((v.x0 - 23.0 * 300.0 / 109.0).abs() < 1e-9 && (v.width - 64.0 * 300.0 / 109.0).abs() < 1e-9);
        assert!((v.y0 - 5.0 * 200.0 / 73.0).abs() < 1e-9 && (v.height - 64.0 * 200.0 / 73.0).abs() < 1e-9);
        // Cross-check on pixels: a horizontal/vertical ramp encoding source coordinates.
        for (w, h) in [(300u32, 200u32), (150, 400), (64, 64), (97, 131)] {
            let img =
                RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 255 / (w - 1)) as u8, (y * 255 / (h - 1)) as u8, 0]));
            let out = crate::preprocess::resize_center_crop(&img, &p);
            let v = ModelView::new(w, h, &p);
            // Centre of output pixel (i, j) sits at source x0 + (i + ½)·width/64.
            for (i, j) in [(0u32, 0u32), (63, 63), (10, 50)] {
                let sx = v.x0 + (i as f64 + 0.5) * v.width / 64.0 - 0.5;
                let sy = v.y0 + (j as f64 + 0.5) * v.height / 64.0 - 0.5;
                let px = out.get_pixel(i, j).0;
                let (ex, ey) = (sx * 255.0 / (w - 1) as f64, sy * 255.0 / (h - 1) as f64);
                // Allow the antialiasing filter's blur: a few source pixels' worth of ramp.
                let tol = 3.0 + 3.0 * 255.0 / w.min(h) as f64;
                assert!(
                    (px[0] as f64 - ex).abs() <= tol && (px[1] as f64 - ey).abs() <= tol,
                    "{w}×{h} ({i},{j}): {px:?} vs ({ex:.1},{ey:.1})"
                );
            }
        }
    }

    #[test]
    fn working_boxes_map_to_source_pixels() {
        // Identity preprocessing: the view is the whole image.
        let p = Preprocess { input_size: (40, 40), resize_shorter: 40, mean: [0.0; 3], std: [1.0; 3] };
        let v = ModelView::new(80, 80, &p);
        assert_eq!(v.to_source(&b(5, 8, 15, 20), 40), b(10, 16, 30, 40));
        assert_eq!(v.to_source(&b(0, 0, 40, 40), 40), b(0, 0, 80, 80));
        // A one-pixel box in a large working frame stays one pixel in a small source.
        let v = ModelView::new(40, 40, &p);
        assert_eq!(v.to_source(&b(374, 374, 375, 375), 375), b(39, 39, 40, 40));
        assert_eq!(b(1, 2, 3, 4).scale(2.0, 0.5), b(2, 1, 6, 2));
    }

    #[test]
    fn rerank_orders_by_activation_then_image_then_original_first() {
        let c = |image_index, crop: Option<CropBox>, activation| TopCandidate { image_index, crop, activation };
        let (k1, k2) = (Some(b(0, 0, 5, 5)), Some(b(5, 5, 9, 9)));
        let cands = [
            c(3, None, 1.0),
            c(1, k1, 2.0),
            c(1, k2, 2.0),
            c(1, None, 2.0),
            c(0, k2, 2.0),
            c(2, None, f32::NAN),
            c(4, None, 5.0),
        ];
        let top = rerank_top(&cands, 6);
        assert_eq!(
            top,
            [c(4, None, 5.0), c(0, k2, 2.0), c(1, None, 2.0), c(1, k1, 2.0), c(1, k2, 2.0), c(3, None, 1.0)]
        );
        assert_eq!(rerank_top(&cands, K).len(), 7);
        assert!(rerank_top(&cands, K)[6].activation.is_nan());
    }
}
