//! Image encoders for Image-Products: the embedded substitute (an independent network's
//! globally pooled penultimate features) and CLIP from a user-supplied TorchScript file.

use super::providers::{ComponentInfo, ImageEncoder, ProviderError, ProviderResult, Role};
use super::shared_model::{forward_images, SharedModel};
use crate::model::Preprocess;
use crate::preprocess::{image_to_tensor, stack_batch};
use image::RgbImage;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tch::{CModule, Kind, Tensor};

/// Global-average-pooled features of one layer of a network, L2-normalised.
pub struct FeatureEncoder {
    model: SharedModel,
    layer: usize,
    description: String,
}

impl FeatureEncoder {
    pub fn new(model: SharedModel, layer_name: &str) -> crate::Result<Self> {
        let (layer, description) = {
            let m = model.lock().unwrap_or_else(|p| p.into_inner());
            let layer = m.layer_index(layer_name)?;
            (layer, format!("{} `{layer_name}` features (pooled)", m.name()))
        };
        Ok(FeatureEncoder { model, layer, description })
    }
}

/// Rows of an N×C(×H×W) tensor, spatially averaged and L2-normalised, as vectors.
fn pooled_unit_rows(t: &Tensor) -> Vec<Vec<f32>> {
    let pooled = if t.dim() == 4 { t.mean_dim(&[2i64, 3][..], false, Kind::Float) } else { t.to_kind(Kind::Float) };
    let norms = pooled.norm_scalaropt_dim(2, &[1i64][..], true).clamp_min(1e-12);
    let unit = (pooled / norms).contiguous();
    let n = unit.size()[0];
    (0..n).map(|i| Vec::<f32>::try_from(unit.get(i)).expect("float row")).collect()
}

impl ImageEncoder for FeatureEncoder {
    fn info(&self) -> ComponentInfo {
        ComponentInfo::substitute(
            Role::ImageEncoder,
            self.description.clone(),
            "an ImageNet CNN's pooled features instead of CLIP ViT-B/16 image embeddings",
        )
    }

    fn encode(&self, images: &[&RgbImage]) -> ProviderResult<Vec<Vec<f32>>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let outputs = forward_images(&self.model, images, self.layer)
            .map_err(|e| ProviderError::Local { component: self.description.clone(), reason: e.to_string() })?;
        Ok(outputs.iter().flat_map(pooled_unit_rows).collect())
    }
}

/// CLIP's image encoder exported as TorchScript (e.g. OpenAI's ViT-B/16 JIT archive, whose
/// `encode_image` method is used when present, else `forward`). Input: 224×224, CLIP's mean/std.
pub struct ClipImageEncoder {
    module: Mutex<CModule>,
    path: PathBuf,
    preprocess: Preprocess,
    has_encode_image: bool,
}

/// CLIP's normalisation constants (on the 0–255 scale used by [`Preprocess`]).
const CLIP_MEAN: [f32; 3] = [0.481_454_66 * 255.0, 0.457_827_5 * 255.0, 0.408_210_73 * 255.0];
const CLIP_STD: [f32; 3] = [0.268_629_54 * 255.0, 0.261_302_6 * 255.0, 0.275_777_1 * 255.0];

impl ClipImageEncoder {
    pub fn load(path: &Path, input_size: u32) -> crate::Result<Self> {
        let module = CModule::load(path)
            .map_err(|e| crate::Error::TorchScriptLoad { path: path.to_path_buf(), reason: e.to_string() })?;
        // OpenAI's JIT archives expose `encode_image`; a plain exported encoder only `forward`.
        let dummy = Tensor::zeros([1, 3, input_size as i64, input_size as i64], (Kind::Float, tch::Device::Cpu));
        let has_encode_image = tch::no_grad(|| module.method_ts("encode_image", &[dummy])).is_ok();
        let preprocess = Preprocess {
            input_size: (input_size, input_size),
            resize_shorter: input_size,
            mean: CLIP_MEAN,
            std: CLIP_STD,
        };
        Ok(ClipImageEncoder { module: Mutex::new(module), path: path.to_path_buf(), preprocess, has_encode_image })
    }

    fn error(&self, e: impl std::fmt::Display) -> ProviderError {
        ProviderError::Local { component: format!("CLIP image encoder {}", self.path.display()), reason: e.to_string() }
    }
}

impl ImageEncoder for ClipImageEncoder {
    fn info(&self) -> ComponentInfo {
        ComponentInfo::paper_kind(
            Role::ImageEncoder,
            format!("CLIP image encoder (TorchScript {})", self.path.display()),
        )
    }

    fn encode(&self, images: &[&RgbImage]) -> ProviderResult<Vec<Vec<f32>>> {
        let module = self.module.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(super::shared_model::PROVIDER_BATCH) {
            let inputs: Vec<Tensor> = chunk.iter().map(|img| image_to_tensor(img, &self.preprocess)).collect();
            let batch = stack_batch(&inputs).map_err(|e| self.error(e))?;
            let emb = tch::no_grad(|| {
                if self.has_encode_image {
                    module.method_ts("encode_image", &[batch])
                } else {
                    module.forward_ts(&[batch])
                }
            })
            .map_err(|e| self.error(e))?;
            if emb.dim() != 2 || emb.size()[0] != chunk.len() as i64 {
                return Err(self.error(format!("expected an N×D embedding, got shape {:?}", emb.size())));
            }
            out.extend(pooled_unit_rows(&emb));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_rows_are_unit_length_spatial_means() {
        // Two images, two channels, 1×2 maps: means (1, 3) and (0, 2).
        let t = Tensor::from_slice(&[0f32, 2.0, 2.0, 4.0, 0.0, 0.0, 1.0, 3.0]).view([2, 2, 1, 2]);
        let rows = pooled_unit_rows(&t);
        let n = 10f32.sqrt();
        assert!((rows[0][0] - 1.0 / n).abs() < 1e-6 && (rows[0][1] - 3.0 / n).abs() < 1e-6);
        assert!((rows[1][0]).abs() < 1e-6 && (rows[1][1] - 1.0).abs() < 1e-6);
    }
}
