//! The engine's entry points as the service layer uses them: a target model loaded by name or
//! file (with the fingerprint its activation caches are keyed by), a probing set scanned by name
//! or folder, and a recording through the activation cache.

use anyhow::Context;
use dissect::model::{EfficientNetLite, LoadOptions, TargetModel, TorchScriptModel, TorchScriptOptions, Variant};
use dissect::probe::{self, ImageLimits, ScannedSet};
use dissect::record::{ActivationStore, CacheKey, ImageSource, Progress, RecordOptions, Recording};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub mod cache;
pub mod d_top;
pub use cache::EngineCache;

/// A loaded target model and the hash its activation caches are keyed by.
pub struct LoadedModel {
    /// `Send`, so a server can keep it between jobs ([`cache`]): each job runs on whichever
    /// blocking thread is free.
    pub model: Box<dyn TargetModel + Send>,
    pub fingerprint: String,
}

/// `efficientnet-lite0` / `efficientnet-lite2` (built in), or a TorchScript file with its manifest.
pub fn load_model(spec: &str, assets_dir: &Path) -> anyhow::Result<LoadedModel> {
    if let Some(variant) = builtin_variant(spec) {
        let weights = assets_dir.join("models").join(variant.weights_file_name());
        let model = EfficientNetLite::load(variant, &weights, LoadOptions::default())?;
        let bytes = std::fs::read(&weights).with_context(|| format!("reading {}", weights.display()))?;
        let fingerprint = hex::encode(Sha256::digest([spec.as_bytes(), &Sha256::digest(&bytes)].concat()));
        return Ok(LoadedModel { model: Box::new(model), fingerprint });
    }
    let path = PathBuf::from(spec);
    if !path.exists() {
        anyhow::bail!(
            "model `{spec}` is neither a built-in model (efficientnet-lite0, efficientnet-lite2) nor an existing TorchScript file"
        );
    }
    let model = TorchScriptModel::load(&path, TorchScriptOptions::default())?;
    let fingerprint = hex::encode(Sha256::digest(format!("torchscript:{}", model.file_sha256())));
    Ok(LoadedModel { model: Box::new(model), fingerprint })
}

/// The built-in models, by the names `--model` and the registry take for them.
pub const BUILTIN_MODELS: [Variant; 2] = [Variant::Lite0, Variant::Lite2];

/// The built-in model `spec` names, if it names one.
pub fn builtin_variant(spec: &str) -> Option<Variant> {
    BUILTIN_MODELS.into_iter().find(|v| v.name() == spec)
}

/// Checks an uploaded model's manifest (its text, validated as if at `final_path`, so a relative
/// `class_names_file` is looked for there) before anything is stored; the error names the problem.
pub fn check_manifest(text: &str, final_path: &Path) -> anyhow::Result<()> {
    dissect::model::Manifest::from_json(text, final_path)?;
    Ok(())
}

/// `builtin` (the embedded default set) or a folder.
pub fn scan_probe(spec: &str, assets_dir: &Path) -> anyhow::Result<ScannedSet> {
    Ok(probe::scan(&probe_root(spec, assets_dir), ImageLimits::default())?)
}

/// The folder a probing-set spec names.
pub fn probe_root(spec: &str, assets_dir: &Path) -> PathBuf {
    if spec == crate::builtin::BUILTIN_SET_SLUG {
        assets_dir.join("probe/builtin")
    } else {
        PathBuf::from(spec)
    }
}

/// Where a long step reports how far it is: the step's name (`forward` for a recording's forward
/// pass, or the caller's own steps), items done and items in all. Front ends show it as they
/// like (the command line draws a bar per step).
pub type OnStep<'a> = &'a mut dyn FnMut(&str, usize, usize);

/// A recording's progress as [`OnStep`] steps: its forward pass (the cache checks before it are
/// quick).
pub fn forward_steps<'a>(on_step: OnStep<'a>) -> impl FnMut(&Progress) + 'a {
    move |p: &Progress| {
        if p.stage == dissect::record::Stage::Forward {
            on_step("forward", p.done, p.total)
        }
    }
}

/// Records the given layers over the probing set through the activation cache in `cache_dir`,
/// reporting to `on_progress` and stopping between batches once `cancel` is raised.
pub fn record(
    loaded: &LoadedModel,
    set: &ScannedSet,
    layer_names: &[String],
    cache_dir: &Path,
    batch_size: usize,
    cancel: Option<Arc<AtomicBool>>,
    on_progress: &mut dyn FnMut(&Progress),
) -> anyhow::Result<(Vec<ImageSource>, Recording)> {
    let model = loaded.model.as_ref();
    let names: Vec<&str> = layer_names.iter().map(String::as_str).collect();
    let layers = model.layer_indices(&names)?;
    let images = ImageSource::from_scanned(set);
    let store = ActivationStore::new(cache_dir);
    let key = CacheKey::new(loaded.fingerprint.clone(), set.content_hash.clone());
    let opts = RecordOptions { batch_size, cancel, ..RecordOptions::default() };
    let recording = store.record(model, &key, &images, &layers, &opts, &mut |p: Progress| on_progress(&p))?;
    Ok((images, recording))
}
