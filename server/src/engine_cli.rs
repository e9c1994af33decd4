//! `dnd record` and `dnd crops`: the engine from the command line, without the web server,
//! with a progress bar and a summary at the end.

use anyhow::Context;
use dissect::crops::Summary;
use dissect::model::{EfficientNetLite, LoadOptions, TargetModel, TorchScriptModel, TorchScriptOptions, Variant};
use dissect::probe::{self, ImageLimits, ScannedSet};
use dissect::record::{ActivationStore, CacheKey, ImageSource, LayerSource, Progress, RecordOptions, Recording};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// A loaded target model and the hash its activation caches are keyed by.
pub struct LoadedModel {
    pub model: Box<dyn TargetModel>,
    pub fingerprint: String,
}

/// `efficientnet-lite0` / `efficientnet-lite2` (built in), or a TorchScript file with its manifest.
pub fn load_model(spec: &str, assets_dir: &Path) -> anyhow::Result<LoadedModel> {
    let builtin = [Variant::Lite0, Variant::Lite2].into_iter().find(|v| v.name() == spec);
    if let Some(variant) = builtin {
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

/// `builtin` (the embedded default set) or a folder.
pub fn scan_probe(spec: &str, assets_dir: &Path) -> anyhow::Result<ScannedSet> {
    let root = if spec == "builtin" { assets_dir.join("probe/builtin") } else { PathBuf::from(spec) };
    Ok(probe::scan(&root, ImageLimits::default())?)
}

/// The recording's terminal progress bar (images).
pub(crate) fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg:>8} [{bar:40}] {pos}/{len} images, {per_sec}, eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

/// Records the given layers over the probing set through the activation cache in `cache_dir`,
/// with a progress bar on the terminal.
pub fn record(
    loaded: &LoadedModel,
    set: &ScannedSet,
    layer_names: &[String],
    cache_dir: &Path,
    batch_size: usize,
) -> anyhow::Result<(Vec<ImageSource>, Recording)> {
    let bar = progress_bar();
    let result = record_with(loaded, set, layer_names, cache_dir, batch_size, None, &mut |p: &Progress| {
        if p.stage == dissect::record::Stage::Forward {
            bar.set_message("forward");
            bar.set_length(p.total as u64);
            bar.set_position(p.done as u64);
        }
    });
    bar.finish_and_clear();
    result
}

/// [`record`] reporting to `on_progress` instead, stopping between batches once `cancel` is raised.
pub fn record_with(
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

pub fn print_record_summary(set: &ScannedSet, recording: &Recording, started: std::time::Instant) {
    let secs = started.elapsed().as_secs_f64();
    println!(
        "recorded {} images ({} skipped, {} files rejected at scan) in {secs:.1} s; {} forwarded{}",
        set.images.len() - recording.skipped.len(),
        recording.skipped.len(),
        set.rejected.len(),
        recording.forwarded,
        if recording.forwarded > 0 { format!(" ({:.1} images/s)", recording.forwarded as f64 / secs) } else { String::new() },
    );
    for (layer, source) in recording.layers.iter().zip(&recording.sources) {
        let from = match source {
            LayerSource::Computed => "computed".to_string(),
            LayerSource::Cache => "from cache".to_string(),
            LayerSource::Resumed { from } => format!("resumed at image {from}"),
        };
        println!("  {:<12} {:>5} units × {} images, mean and max per unit ({from})", layer.layer, layer.channels, layer.n_images);
    }
    for s in recording.skipped.iter().take(20) {
        println!("  skipped: {}", s.reason);
    }
    for r in set.rejected.iter().take(20) {
        println!("  rejected: {} ({})", r.rel_path, r.reason);
    }
}

/// Prints D_top of one neuron: the top images of D_probe (`partition`'s probe split, as a
/// dissection ranks them), their crops, and the re-ranked top-K.
pub fn crops(
    loaded: &LoadedModel,
    set: &ScannedSet,
    partition: &dissect::partition::Partition,
    layer_name: &str,
    unit: usize,
    summary: Summary,
    cache_dir: &Path,
) -> anyhow::Result<()> {
    let model = loaded.model.as_ref();
    let layer = model.layer_index(layer_name)?;
    let channels = model.layers()[layer].channels;
    if unit >= channels {
        anyhow::bail!("unit {unit} is outside layer `{layer_name}`, which has units 0..={}", channels - 1);
    }
    let (images, recording) = record(loaded, set, &[layer_name.to_string()], cache_dir, 32)?;
    let d_probe = partition.d_probe(&recording.layers[0]);
    let top = dissect::dtop::neuron_top(model, &images, d_probe.summaries(), layer, unit, summary, dissect::crops::K)?;
    let name = |i: usize| set.images[i].rel_path.as_str();
    let info = partition.info();
    println!(
        "top-{} of the {} D_probe images ({} held out) for {layer_name} unit {unit} ({summary:?} activation):",
        top.top_images.len(),
        info.probe,
        info.concept_pool + info.evaluation
    );
    for ((i, act), boxes) in top.top_images.iter().zip(&top.crops) {
        let crops = boxes.iter().map(|b| format!("[{},{} → {},{}]", b.x0, b.y0, b.x1, b.y1)).collect::<Vec<_>>();
        println!("  {act:>9.4}  {}  crops: {}", name(*i), if crops.is_empty() { "none".into() } else { crops.join(" ") });
    }
    println!("D_top (probing images ∪ crops, re-ranked):");
    for (rank, c) in top.d_top.iter().enumerate() {
        let what = match c.crop {
            Some(b) => format!("crop [{},{} → {},{}] of {}", b.x0, b.y0, b.x1, b.y1, name(c.image_index)),
            None => name(c.image_index).to_string(),
        };
        println!("  {:>2}. {:>9.4}  {what}", rank + 1, c.activation);
    }
    Ok(())
}
