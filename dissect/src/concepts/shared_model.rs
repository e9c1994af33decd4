//! A target network shared by several providers (the embedded captioner and image encoder use
//! the same EfficientNet-Lite2). libtorch tensors are `Send` but not `Sync`, so the model sits
//! behind a mutex; each provider call takes it for one batched forward pass.

use crate::model::TargetModel;
use crate::preprocess::{image_to_tensor, stack_batch};
use image::RgbImage;
use std::sync::{Arc, Mutex};
use tch::Tensor;

/// A model that any number of providers can use from any thread.
pub type SharedModel = Arc<Mutex<Box<dyn TargetModel + Send>>>;

pub fn share(model: impl TargetModel + Send + 'static) -> SharedModel {
    Arc::new(Mutex::new(Box::new(model)))
}

/// Images per forward pass when a provider runs the model on many images.
pub const PROVIDER_BATCH: usize = 32;

/// Runs `images` through `layer` of the model in batches and returns one CPU tensor per batch
/// (N×C×H×W or N×C).
pub fn forward_images(model: &SharedModel, images: &[&RgbImage], layer: usize) -> crate::Result<Vec<Tensor>> {
    let model = model.lock().unwrap_or_else(|p| p.into_inner());
    let p = model.preprocessing();
    let mut out = Vec::new();
    for chunk in images.chunks(PROVIDER_BATCH) {
        let inputs: Vec<Tensor> = chunk.iter().map(|img| image_to_tensor(img, &p)).collect();
        let acts = model.forward_layers(&stack_batch(&inputs)?, &[layer])?;
        out.push(acts.into_iter().next().expect("one layer asked").to_device(tch::Device::Cpu));
    }
    Ok(out)
}
