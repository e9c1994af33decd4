//! Step 1 (docs/method.md) for one neuron, end to end: its top-K probing images by the chosen summary, their
//! attention crops, the crops' own activations, and the re-ranked top-K of images ∪ crops
//! (D_top: what gets captioned and shown to raters).

use crate::crops::{self, CropBox, CropProbe, ImageMap, Summary, TopCandidate, TopImage};
use crate::model::{LayerKind, TargetModel};
use crate::record::{top_k, unit_maps, ActivationSummaries, ImageSource};
use crate::{preprocess, Result};

/// D_top of one neuron, with what led to it.
#[derive(Debug, Clone)]
pub struct NeuronTop {
    pub unit: usize,
    /// The top-K probing images before crops: (image index, activation).
    pub top_images: Vec<(usize, f32)>,
    /// Crop boxes (source pixels) per top image, in `top_images` order.
    pub crops: Vec<Vec<CropBox>>,
    /// The re-ranked top-K of the top images and their crops.
    pub d_top: Vec<TopCandidate>,
    /// The decoded top images, in `top_images` order, when crops needed them (conv layers);
    /// empty otherwise. Callers reuse them instead of decoding again.
    pub pictures: Vec<image::RgbImage>,
    /// The unit's activation map on each top image, in `top_images` order, placed on the image
    /// (conv layers only; empty otherwise): what the crops were cut from, kept for heatmaps.
    pub maps: Vec<ImageMap>,
}

/// Computes D_top of `unit` in `layer` (model index), given the layer's recorded summaries over
/// `images`. Only the top-K images' full maps are recomputed.
pub fn neuron_top<M: TargetModel + ?Sized>(
    model: &M,
    images: &[ImageSource],
    summaries: &ActivationSummaries,
    layer: usize,
    unit: usize,
    summary: Summary,
    k: usize,
) -> Result<NeuronTop> {
    let info = model.layers()[layer].clone();
    let top_images = top_k(summaries, unit, k, summary);
    let originals = top_images.iter().map(|&(i, a)| TopCandidate { image_index: i, crop: None, activation: a });
    if info.kind != LayerKind::Conv || top_images.is_empty() {
        // As in the paper, a classifier (or any non-spatial) layer gets no crops.
        let crops = vec![Vec::new(); top_images.len()];
        let d_top = crops::rerank_top(&originals.collect::<Vec<_>>(), k);
        return Ok(NeuronTop { unit, top_images, crops, d_top, pictures: Vec::new(), maps: Vec::new() });
    }
    let paths: Vec<&std::path::Path> = top_images.iter().map(|&(i, _)| images[i].path.as_path()).collect();
    let maps = unit_maps(model, &paths, layer, unit)?;
    let pictures = paths.iter().map(|p| preprocess::load_rgb(p)).collect::<Result<Vec<_>>>()?;
    let tops: Vec<TopImage> = pictures.iter().zip(&maps).map(|(img, map)| TopImage::new(img, map)).collect();
    let boxes = crops::neuron_crops(&info, &model.preprocessing(), &tops, crops::WORKING_SIZE);

    let mut probes = Vec::new();
    let mut owners = Vec::new();
    for (slot, crop_boxes) in boxes.iter().enumerate() {
        for b in crop_boxes {
            probes.push(CropProbe { image: &pictures[slot], crop: *b, layer, unit });
            owners.push(top_images[slot].0);
        }
    }
    let acts = crops::crop_activations(model, &probes, summary, crops::WORKING_SIZE)?;
    let mut candidates: Vec<TopCandidate> = originals.collect();
    candidates.extend(probes.iter().zip(owners).zip(acts).map(|((p, image_index), activation)| TopCandidate {
        image_index,
        crop: Some(p.crop),
        activation,
    }));
    let d_top = crops::rerank_top(&candidates, k);
    let p = model.preprocessing();
    let maps = maps.into_iter().zip(&pictures).map(|(m, img)| ImageMap::new(m, img.dimensions(), &p)).collect();
    Ok(NeuronTop { unit, top_images, crops: boxes, d_top, pictures, maps })
}
