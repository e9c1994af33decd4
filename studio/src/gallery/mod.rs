//! The neuron gallery's data: a layer's neurons with every method's current label, one neuron's
//! labels side by side, and the images they show. The types are shared with the browser bundle;
//! the queries that fill them ([`queries`]) need the `service` feature.

pub use crate::methods::Method;
use serde::{Deserialize, Serialize};

pub mod blinding;
#[cfg(feature = "service")]
pub mod queries;
#[cfg(feature = "service")]
pub mod recorded;
pub mod run;
#[cfg(feature = "service")]
pub mod run_queries;

pub use blinding::{Audience, Blinding};

/// Neurons shown per page of the layer grid.
pub const PAGE_SIZE: i64 = 60;

/// An image as the `/img/{sha256}` route serves it: the whole image or a crop of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageRef {
    pub sha256: String,
    /// `[x0, y0, x1, y1]` in source pixels (`x1`/`y1` exclusive); `None` = the whole image.
    pub crop: Option<[i64; 4]>,
}

impl ImageRef {
    /// URL of this image (or crop) at thumbnail width `w` (96, 160, 320) or full size (`None`).
    pub fn url(&self, w: Option<u32>) -> String {
        let mut url = format!("/img/{}", self.sha256);
        let mut sep = '?';
        if let Some([x0, y0, x1, y1]) = self.crop {
            url.push_str(&format!("{sep}crop={x0},{y0},{x1},{y1}"));
            sep = '&';
        }
        if let Some(w) = w {
            url.push_str(&format!("{sep}w={w}"));
        }
        url
    }

    /// The whole image this one is (or is cropped from).
    pub fn whole(&self) -> ImageRef {
        ImageRef { sha256: self.sha256.clone(), crop: None }
    }
}

/// One layer of a model, as the catalogue and the gallery list it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerSummary {
    pub name: String,
    /// `conv`, `linear` or `classifier`.
    pub kind: String,
    pub channels: i64,
    pub height: Option<i64>,
    pub width: Option<i64>,
}

/// A probing image among a unit's top images in the layer's recording (before any DnD run).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedImage {
    pub image: ImageRef,
    /// The unit's mean activation on it.
    pub activation: f64,
}

/// One method's current label of a neuron.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelView {
    pub method: Method,
    /// Distinguishes several sources of one method; usually empty.
    pub source: String,
    /// 1 = the method's best label.
    pub rank: i64,
    pub text: String,
    pub score: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NeuronRow {
    pub unit: i64,
    /// Ground-truth class name for classifier units.
    pub class_name: Option<String>,
    /// Rank-1 labels, one per method/source.
    pub labels: Vec<LabelView>,
    /// The rank-1 image of D_top (cropped as the run cropped it) from the neuron's latest DnD
    /// run it is done in; without one, the layer recording's top probing image.
    pub thumb: Option<ImageRef>,
    /// Set when `thumb` comes from the recording (no DnD run yet): that image's mean activation.
    #[serde(default)]
    pub recorded_activation: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerQuery {
    pub model: String,
    pub layer: String,
    /// 1-based page.
    pub page: i64,
    /// Case-insensitive text to find in any method's label (or the class name).
    pub filter: String,
    pub sort: LayerSort,
    /// Only neurons with at least one current label (any method).
    #[serde(default)]
    pub labelled_only: bool,
}

/// The layer grid's order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerSort {
    /// By unit number.
    #[default]
    Unit,
    /// By the DnD label's score, best first; unscored neurons last.
    Score,
}

impl LayerSort {
    /// The URL's `sort=` value.
    pub fn as_param(self) -> &'static str {
        match self {
            LayerSort::Unit => "unit",
            LayerSort::Score => "score",
        }
    }

    /// From the URL's `sort=` value; anything else is the default order.
    pub fn from_param(value: Option<&str>) -> Self {
        match value {
            Some("score") => LayerSort::Score,
            _ => LayerSort::Unit,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerView {
    pub model_name: String,
    pub layer: LayerSummary,
    pub neurons: Vec<NeuronRow>,
    /// Neurons matching the filter (all pages).
    pub matching: i64,
    pub page: i64,
    pub pages: i64,
    /// Each method and source with a current label in this layer, in display order (one export
    /// each: a natively computed CLIP-Dissect run or a named import is a source of its own).
    pub sources: Vec<LabelSource>,
    /// How to get CLIP-Dissect labels, when the layer has none (the front end words it).
    #[serde(default)]
    pub clip_dissect_note: Option<String>,
    /// Set when the labels are hidden from this visitor (an open study rates the layer): then
    /// `neurons` carry no labels, `sources` is empty and the filter matched class names only.
    #[serde(default)]
    pub blinded: Option<Blinding>,
}

/// One method's labels from one source (an import's or a run's name; empty for the usual one).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelSource {
    pub method: Method,
    pub source: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NeuronView {
    pub model_slug: String,
    pub model_name: String,
    pub layer: LayerSummary,
    pub unit: i64,
    pub class_name: Option<String>,
    /// Every method's current labels (all ranks), DnD first.
    pub labels: Vec<LabelView>,
    pub prev: Option<i64>,
    pub next: Option<i64>,
    /// How to get a CLIP-Dissect label, when the neuron has none (the front end words it).
    #[serde(default)]
    pub clip_dissect_note: Option<String>,
    /// Set when the labels are hidden from this visitor (then `labels` is empty).
    #[serde(default)]
    pub blinded: Option<Blinding>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_urls_name_the_crop_and_the_width() {
        let whole = ImageRef { sha256: "ab".repeat(32), crop: None };
        assert_eq!(whole.url(None), format!("/img/{}", "ab".repeat(32)));
        assert_eq!(whole.url(Some(96)), format!("/img/{}?w=96", "ab".repeat(32)));
        let crop = ImageRef { sha256: "ab".repeat(32), crop: Some([1, 2, 30, 40]) };
        assert_eq!(crop.url(Some(320)), format!("/img/{}?crop=1,2,30,40&w=320", "ab".repeat(32)));
        assert_eq!(crop.url(None), format!("/img/{}?crop=1,2,30,40", "ab".repeat(32)));
        assert_eq!(crop.whole(), whole);
    }
}
