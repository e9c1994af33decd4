//! Target networks: the models whose neurons are dissected.
//!
//! A [`TargetModel`] lists its dissectable layers, says how images must be prepared for it, and
//! runs one batched forward pass returning the activation maps of the layers asked for.

pub mod efficientnet_lite;
mod runtime;
pub mod torchscript;

use crate::error::{Error, Result};
use tch::Tensor;

pub use efficientnet_lite::{EfficientNetLite, LoadOptions, Variant};
pub use runtime::{num_threads, set_num_threads, tune_cpu_allocator, DeviceChoice};
pub use torchscript::{Manifest, ManifestLayer, TorchScriptModel, TorchScriptOptions};

/// What a dissectable layer is; decides e.g. whether attention crops make sense for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerKind {
    /// A convolutional feature map (N×C×H×W activations).
    Conv,
    /// A hidden fully connected layer (N×C activations).
    Linear,
    /// The final class-logit layer (N×classes): it gets no attention crops (docs/method.md, Step 1).
    Classifier,
}

impl LayerKind {
    pub const ALL: [LayerKind; 3] = [LayerKind::Conv, LayerKind::Linear, LayerKind::Classifier];

    /// The spelling manifests and the database use.
    pub fn as_str(self) -> &'static str {
        match self {
            LayerKind::Conv => "conv",
            LayerKind::Linear => "linear",
            LayerKind::Classifier => "classifier",
        }
    }

    /// The kind spelled `s` (see [`LayerKind::as_str`]), if any.
    pub fn parse(s: &str) -> Option<LayerKind> {
        LayerKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether activations carry a spatial map (N×C×H×W) rather than one value per unit.
    pub fn is_spatial(self) -> bool {
        matches!(self, LayerKind::Conv)
    }
}

/// One dissectable layer of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    pub name: String,
    pub kind: LayerKind,
    /// Number of neurons (channels or units).
    pub channels: usize,
    /// Activation map size (h, w) when the input has the model's input size; `None` for
    /// linear/classifier layers.
    pub spatial: Option<(usize, usize)>,
}

/// How an image must be turned into the model's input tensor.
///
/// Resize so that the shorter side equals `resize_shorter`, centre-crop `input_size`, then
/// `(x - mean) / std` per channel with `x` on the 0–255 scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preprocess {
    /// (height, width) of the network input.
    pub input_size: (u32, u32),
    /// Target length of the shorter image side before the centre crop.
    pub resize_shorter: u32,
    /// Per-channel (R, G, B) mean on the 0–255 scale.
    pub mean: [f32; 3],
    /// Per-channel (R, G, B) standard deviation on the 0–255 scale.
    pub std: [f32; 3],
}

impl Preprocess {
    /// The usual ImageNet evaluation transform: resize the shorter side to `size / crop_fraction`
    /// (rounded), centre-crop `size`×`size`.
    pub fn center_crop(size: u32, crop_fraction: f32, mean: [f32; 3], std: [f32; 3]) -> Self {
        let resize_shorter = (size as f32 / crop_fraction).round() as u32;
        Preprocess { input_size: (size, size), resize_shorter, mean, std }
    }
}

/// A network whose neurons can be dissected.
pub trait TargetModel {
    /// Short identifier, e.g. `efficientnet-lite0`.
    fn name(&self) -> &str;

    /// The dissectable layers, in forward order.
    fn layers(&self) -> &[LayerInfo];

    /// How input images must be prepared.
    fn preprocessing(&self) -> Preprocess;

    /// Class names of the classifier output, if the model has a known label set.
    fn class_names(&self) -> Option<&[String]>;

    /// The device the model runs on (batches are moved there; outputs stay there).
    fn device(&self) -> tch::Device;

    /// Runs `batch` (N×3×H×W float, already preprocessed) without gradients and returns the
    /// activations of `layers` (indices into [`Self::layers`]) in the order asked: N×C×H×W for
    /// conv layers, N×C for linear ones. The returned tensors may have any memory layout
    /// (e.g. channels-last strides); call `.contiguous()` before reading raw data.
    fn forward_layers(&self, batch: &Tensor, layers: &[usize]) -> Result<Vec<Tensor>>;

    /// Index of the layer called `name`; the error lists the valid names.
    fn layer_index(&self, name: &str) -> Result<usize> {
        self.layers().iter().position(|l| l.name == name).ok_or_else(|| Error::UnknownLayer {
            model: self.name().to_string(),
            name: name.to_string(),
            valid: self.layers().iter().map(|l| l.name.clone()).collect(),
        })
    }

    /// Indices of several layers by name (see [`Self::layer_index`]).
    fn layer_indices(&self, names: &[&str]) -> Result<Vec<usize>> {
        names.iter().map(|n| self.layer_index(n)).collect()
    }

    /// Convenience: [`Self::forward_layers`] with layer names instead of indices.
    fn forward_named(&self, batch: &Tensor, names: &[&str]) -> Result<Vec<Tensor>> {
        let idx = self.layer_indices(names)?;
        self.forward_layers(batch, &idx)
    }
}

/// Softmax over N×classes logits; returns each row's `k` most probable (class, probability),
/// best first.
pub fn top_k(logits: &Tensor, k: usize) -> Vec<Vec<(usize, f32)>> {
    let probs = logits.to_kind(tch::Kind::Float).softmax(-1, tch::Kind::Float).to_device(tch::Device::Cpu);
    let (values, indices) = probs.topk(k as i64, -1, true, true);
    let n = values.size()[0];
    (0..n)
        .map(|i| {
            let v: Vec<f32> = Vec::try_from(values.get(i)).expect("f32 row");
            let c: Vec<i64> = Vec::try_from(indices.get(i)).expect("i64 row");
            c.into_iter().map(|c| c as usize).zip(v).collect()
        })
        .collect()
}

/// Checks that `batch` is a float N×3×H×W tensor.
pub(crate) fn check_image_batch(model: &str, batch: &Tensor) -> Result<()> {
    let shape = batch.size();
    let float = matches!(batch.kind(), tch::Kind::Float | tch::Kind::Half | tch::Kind::BFloat16 | tch::Kind::Double);
    if shape.len() != 4 || shape[1] != 3 || shape[0] == 0 || !float {
        return Err(Error::InputShape { model: model.to_string(), shape, kind: format!("{:?}", batch.kind()) });
    }
    Ok(())
}
