//! Full activation maps, recomputed on demand for the few images that need them (top-K attention
//! crops, heatmaps); recording itself keeps only per-unit summaries.

use crate::crops::ActivationMap;
use crate::model::TargetModel;
use crate::preprocess::{load_tensor, stack_batch};
use std::path::Path;
use tch::Tensor;

/// Images per forward pass in [`full_maps_batch`].
const MAPS_BATCH: usize = 16;

/// The full output of `layer` (model index) for one image: `C×H×W` (or `C` for a linear layer),
/// f32, contiguous, on the CPU.
pub fn full_maps<M: TargetModel + ?Sized>(model: &M, image: &Path, layer: usize) -> crate::Result<Tensor> {
    Ok(full_maps_batch(model, &[image], layer)?.get(0))
}

/// [`full_maps`] for several images at once: `N×C×H×W` (or `N×C`), in the order given.
pub fn full_maps_batch<M: TargetModel + ?Sized, P: AsRef<Path>>(
    model: &M,
    images: &[P],
    layer: usize,
) -> crate::Result<Tensor> {
    let p = model.preprocessing();
    let mut parts = Vec::new();
    for chunk in images.chunks(MAPS_BATCH) {
        let inputs = chunk.iter().map(|path| load_tensor(path.as_ref(), &p)).collect::<crate::Result<Vec<_>>>()?;
        let out = model.forward_layers(&stack_batch(&inputs)?, &[layer])?.remove(0);
        parts.push(out.to_device(tch::Device::Cpu).to_kind(tch::Kind::Float).contiguous());
    }
    if parts.is_empty() {
        return Err(crate::Error::EmptyBatch);
    }
    Ok(if parts.len() == 1 { parts.remove(0) } else { Tensor::f_cat(&parts, 0)? })
}

/// One unit's map on each image, ready for [`crate::crops`] (conv layers only).
pub fn unit_maps<M: TargetModel + ?Sized, P: AsRef<Path>>(
    model: &M,
    images: &[P],
    layer: usize,
    unit: usize,
) -> crate::Result<Vec<ActivationMap>> {
    let maps = full_maps_batch(model, images, layer)?;
    let size = maps.size();
    if size.len() != 4 || unit as i64 >= size[1] {
        let msg =
            format!("unit {unit} of layer {layer}: expected a conv layer output N×C×H×W with C > {unit}, got {size:?}");
        return Err(crate::Error::Torch(tch::TchError::Shape(msg)));
    }
    (0..size[0]).map(|i| ActivationMap::from_tensor(&maps.get(i).get(unit as i64))).collect()
}
