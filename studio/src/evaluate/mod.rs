//! Measuring labels (docs/method.md, "Measuring labels"): `dnd quality` reports, for every method
//! with labels on a model, the final-layer cosine (all and covered units), the simulation score of
//! each labelled layer, and neurons-as-classifiers AUROC; `dnd evaluate-final` reports the first
//! alone. Everything is measured on images no step of the method saw (the evaluation split, or a
//! separate labelled folder), so a leakier pipeline cannot score better by leaking.

pub mod auroc;
pub mod final_layer;
pub mod simulation;
pub mod stats;

use crate::config::Config;
use crate::dissection::providers::clip_text_encoder;
use crate::dissection::register_target;
use crate::engine::{self, LoadedModel, OnStep};
use anyhow::Context;
use dissect::concepts::classifier_captioner::ClassifierCaptioner;
use dissect::concepts::shared_model::share;
use dissect::concepts::{CaptionInput, Captioner, TextEncoder};
use dissect::crops::Summary;
use dissect::model::{EfficientNetLite, LayerKind, LoadOptions, Variant};
use dissect::partition::Partition;
use dissect::probe::{ScannedSet, Split};
use dissect::record::ActivationSummaries;
use dissect::text_encoder::{SentenceEncoder, TextModel};
use serde::Serialize;
use sqlx::SqlitePool;
use stats::MeanSem;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// What `dnd quality` was asked.
pub struct QualityArgs {
    pub model: String,
    pub probe: String,
    /// Layers to measure; empty = every layer with labels.
    pub layers: Vec<String>,
    /// A labelled image folder (one sub-folder per class) for the AUROC, or the name of a shipped
    /// labelled set ([`LABELLED_SETS`]); default: the category folders of the probing set's
    /// evaluation split.
    pub classes: Option<PathBuf>,
    pub examples: usize,
}

/// One method's (and label source's) score on one layer.
#[derive(Debug, Serialize)]
pub struct MethodLayerScore {
    pub method: String,
    pub source: String,
    pub units: usize,
    /// Spearman of simulated vs real activations, and the same with shuffled labels.
    pub simulation: Option<MeanSem>,
    pub simulation_chance: Option<MeanSem>,
    /// Mean AUROC of the classes' detectors, and each detector.
    pub auroc: Option<MeanSem>,
    pub detectors: Vec<auroc::ClassDetector>,
}

#[derive(Debug, Serialize)]
pub struct LayerQuality {
    pub layer: String,
    pub methods: Vec<MethodLayerScore>,
}

#[derive(Debug, Serialize)]
pub struct QualityReport {
    pub model: String,
    pub partition: dissect::partition::PartitionInfo,
    /// Evaluation images the simulation used.
    pub evaluation_images: usize,
    /// Where the AUROC classes came from, and how many images each has.
    pub classes_source: String,
    pub classes: Vec<(String, usize)>,
    pub final_layer: Option<final_layer::FinalLayerReport>,
    pub layers: Vec<LayerQuality>,
}

/// Current rank-1 labels of one layer: (unit, method, source, text).
async fn layer_labels(
    db: &SqlitePool,
    model_id: i64,
    layer: &str,
) -> anyhow::Result<Vec<(i64, String, String, String)>> {
    Ok(sqlx::query_as(
        "SELECT n.unit, lb.method, lb.source_name, lb.text
         FROM labels lb JOIN neurons n ON n.id = lb.neuron_id JOIN layers l ON l.id = n.layer_id
         WHERE l.model_id = ? AND l.name = ? AND lb.is_current = 1 AND lb.rank = 1
         ORDER BY lb.method, lb.source_name, n.unit",
    )
    .bind(model_id)
    .bind(layer)
    .fetch_all(db)
    .await?)
}

/// Layers of the model with current labels, in model order.
async fn labelled_layers(db: &SqlitePool, model_id: i64, loaded: &LoadedModel) -> anyhow::Result<Vec<String>> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT l.name FROM labels lb JOIN neurons n ON n.id = lb.neuron_id JOIN layers l ON l.id = n.layer_id
         WHERE l.model_id = ? AND lb.is_current = 1",
    )
    .bind(model_id)
    .fetch_all(db)
    .await?;
    Ok(loaded.model.layers().iter().map(|l| l.name.clone()).filter(|n| names.contains(n)).collect())
}

/// The images the AUROC is measured on, with their classes.
struct ClassImages {
    source: String,
    names: Vec<String>,
    /// (row in its set, class index) of each image used.
    images: Vec<(usize, usize)>,
    /// The labelled folder, when the classes come from one (else the probing set's rows).
    set: Option<ScannedSet>,
}

/// Classes of the probing set's evaluation images: the folder each image is in, for folders with
/// at least two evaluation images (a class needs positives; the rest are its negatives). For the
/// built-in set, only its category folders, under their class texts
/// ([`crate::builtin::CATEGORY_FOLDERS`]).
fn evaluation_classes(set: &ScannedSet, partition: &Partition, builtin: bool) -> ClassImages {
    let rows = partition.rows(Split::Evaluation);
    let class_text = |folder: &str| -> Option<String> {
        if !builtin {
            return Some(folder.to_string());
        }
        crate::builtin::CATEGORY_FOLDERS.iter().find(|(f, _)| *f == folder).map(|(_, text)| text.to_string())
    };
    let class_of = |r: usize| set.images[r].label.as_deref().and_then(class_text);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for &r in &rows {
        if let Some(c) = class_of(r) {
            *counts.entry(c).or_default() += 1;
        }
    }
    let names: Vec<String> = counts.into_iter().filter(|(_, n)| *n >= 2).map(|(k, _)| k).collect();
    let images = rows
        .iter()
        .filter_map(|&r| class_of(r).and_then(|c| names.iter().position(|n| *n == c)).map(|c| (r, c)))
        .collect();
    let source = if builtin {
        "the built-in set's evaluation split, one class per category folder"
    } else {
        "the probing set's evaluation split, one class per folder"
    };
    ClassImages { source: source.into(), names, images, set: None }
}

/// Labelled image sets that `scripts/setup.sh` installs under `<assets>/labelled/`, usable by name
/// as `--classes`: Fashion-MNIST (Debian `dataset-fashion-mnist`, 50 test images per class; its
/// `SOURCE.txt` gives the package's checksum and licence).
pub const LABELLED_SETS: &[&str] = &["fashion-mnist"];

/// The folder a `--classes` value means: a shipped set's name (unless a folder of that name is
/// at hand), else the folder itself.
fn classes_folder(arg: &std::path::Path) -> PathBuf {
    match arg.to_str() {
        Some(name) if LABELLED_SETS.contains(&name) && !arg.exists() => {
            dissect::assets::assets_dir().join("labelled").join(name)
        }
        _ => arg.to_path_buf(),
    }
}

/// Classes of a labelled folder (or shipped set): its top-level sub-folders.
fn folder_classes(arg: &std::path::Path) -> anyhow::Result<ClassImages> {
    let root = &classes_folder(arg);
    if !root.is_dir() {
        let hint = if root != arg { " (scripts/setup.sh installs it)" } else { "" };
        anyhow::bail!("--classes {}: no folder {}{hint}", arg.display(), root.display());
    }
    let set = dissect::probe::scan(root, dissect::probe::ImageLimits::default())
        .with_context(|| format!("--classes {}", root.display()))?;
    let class_of = |rel: &str| rel.split_once('/').map(|(top, _)| top.to_string());
    let mut names: Vec<String> = set.images.iter().filter_map(|i| class_of(&i.rel_path)).collect();
    names.sort();
    names.dedup();
    if names.len() < 2 {
        anyhow::bail!(
            "--classes {}: needs at least two sub-folders of images, one per class (found {})",
            root.display(),
            names.len()
        );
    }
    let images = set
        .images
        .iter()
        .enumerate()
        .filter_map(|(r, i)| class_of(&i.rel_path).and_then(|c| names.iter().position(|n| *n == c)).map(|c| (r, c)))
        .collect();
    let source = if root != arg {
        format!("the labelled set {} ({})", arg.display(), root.display())
    } else {
        format!("the labelled folder {}", root.display())
    };
    Ok(ClassImages { source, names, images, set: Some(set) })
}

/// Captions of the given images of `set` by the embedded captioner (with the set's descriptions,
/// as Step 2 captions full images).
fn captions(set: &ScannedSet, rows: &[usize]) -> anyhow::Result<Vec<String>> {
    let lite2 = share(
        EfficientNetLite::load_default(Variant::Lite2, LoadOptions::default()).context("loading EfficientNet-Lite2")?,
    );
    let captioner = ClassifierCaptioner::new(lite2)?;
    let mut out = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(32) {
        let pictures: Vec<image::RgbImage> = chunk
            .iter()
            .map(|&r| dissect::preprocess::load_rgb(&set.root.join(&set.images[r].rel_path)))
            .collect::<dissect::Result<_>>()?;
        let inputs: Vec<CaptionInput> = chunk
            .iter()
            .zip(&pictures)
            .map(|(&r, img)| CaptionInput {
                key: &set.images[r].sha256,
                image: img,
                description: set.images[r].description.as_deref(),
                withheld_classes: &[],
            })
            .collect();
        out.extend(captioner.caption(&inputs)?);
    }
    Ok(out)
}

fn column(s: &ActivationSummaries, unit: usize, rows: &[usize]) -> Vec<f64> {
    rows.iter().map(|&r| s.get(r, unit, Summary::Mean) as f64).collect()
}

/// What both reports start from: the database, the loaded model, the probing set and how it is
/// split, registered as `dnd dissect` registers them.
struct Target {
    rt: tokio::runtime::Runtime,
    db: SqlitePool,
    loaded: LoadedModel,
    set: ScannedSet,
    model_id: i64,
    slug: String,
    partition: Partition,
}

impl Target {
    fn open(config: &Config, model: &str, probe: &str) -> anyhow::Result<Target> {
        let rt =
            tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
        let assets = &config.storage.assets_dir;
        let db = rt.block_on(crate::db::open(&config.database_path()))?;
        let loaded = engine::load_model(model, assets)?;
        let set = engine::scan_probe(probe, assets)?;
        let first_layer = loaded.model.layers()[0].name.clone();
        let (model_id, _, set_row) =
            rt.block_on(register_target(&db, &loaded, model, assets, &first_layer, probe, &set))?;
        let slug: String =
            rt.block_on(sqlx::query_scalar("SELECT slug FROM models WHERE id = ?").bind(model_id).fetch_one(&db))?;
        let partition = Partition::of_set(&set, set_row.split_seed, set_row.heldout_fraction);
        Ok(Target { rt, db, loaded, set, model_id, slug, partition })
    }

    fn close(self) {
        self.rt.block_on(self.db.close());
    }
}

/// `dnd quality`: measures every method's labels on the model; the final layer's scores are
/// stored for the gallery. `on_step` hears of recordings.
pub fn quality(config: &Config, args: &QualityArgs, on_step: OnStep<'_>) -> anyhow::Result<QualityReport> {
    // A bad --classes folder fails before any work.
    let labelled_folder = args.classes.as_deref().map(folder_classes).transpose()?;
    let target = Target::open(config, &args.model, &args.probe)?;
    let Target { rt, db, loaded, set, model_id, partition, .. } = &target;
    let (model_id, slug) = (*model_id, target.slug.clone());
    let layers = if args.layers.is_empty() {
        rt.block_on(labelled_layers(&db, model_id, &loaded))?
    } else {
        args.layers.clone()
    };
    if layers.is_empty() {
        anyhow::bail!("no labels on model `{}` yet: run `dnd dissect` (or import labels) first", args.model);
    }
    let names: Vec<&str> = layers.iter().map(String::as_str).collect();
    loaded.model.layer_indices(&names)?;
    let classifier = loaded.model.layers().iter().find(|l| l.kind == LayerKind::Classifier).map(|l| l.name.clone());
    let mut recorded = layers.clone();
    if let Some(c) = classifier.as_ref().filter(|c| !recorded.contains(c)) {
        recorded.push(c.clone());
    }
    let cache = crate::dissection::activation_dir(config);
    let (_, recording) =
        engine::record(loaded, set, &recorded, &cache, 32, None, &mut engine::forward_steps(&mut *on_step))?;
    let layer_of = |name: &str| &recording.layers[recorded.iter().position(|l| l == name).expect("recorded")];
    let encoder = SentenceEncoder::load_default(TextModel::MpnetBaseV2).context("loading all-mpnet-base-v2")?;

    // Final layer, when the model has a classifier with labels.
    let final_layer = match classifier.as_ref().filter(|c| layers.contains(c)) {
        Some(c) => {
            let coverage = final_layer::covered_classes(layer_of(c), &partition.rows(Split::Probe));
            let clip = clip_text_encoder(&config.services)?;
            let clip = clip.as_ref().map(|c| c as &dyn TextEncoder);
            Some(rt.block_on(final_layer::final_layer(&db, &encoder, clip, &slug, c, coverage, args.examples))?)
        }
        None => None,
    };

    // Simulation on the evaluation split.
    let eval_rows = partition.rows(Split::Evaluation);
    if eval_rows.len() < 3 {
        anyhow::bail!(
            "the probing set's evaluation split holds {} images: too few to measure labels on (register a larger set)",
            eval_rows.len()
        );
    }
    let caption_texts = captions(&set, &eval_rows)?;
    let caption_refs: Vec<&str> = caption_texts.iter().map(String::as_str).collect();
    let caption_embs = encoder.embed(&caption_refs)?;

    // AUROC classes and their images' activations.
    let classes = labelled_folder
        .unwrap_or_else(|| evaluation_classes(&set, &partition, args.probe == crate::builtin::BUILTIN_SET_SLUG));
    let class_names: Vec<&str> = classes.names.iter().map(String::as_str).collect();
    let class_embs = if class_names.is_empty() { Vec::new() } else { encoder.embed(&class_names)? };
    let class_list: Vec<(String, Vec<f32>)> = classes.names.iter().cloned().zip(class_embs).collect();
    let class_rows: Vec<usize> = classes.images.iter().map(|&(r, _)| r).collect();
    let image_class: Vec<usize> = classes.images.iter().map(|&(_, c)| c).collect();
    let class_recording = match &classes.set {
        Some(folder) => Some(
            engine::record(loaded, folder, &layers, &cache, 32, None, &mut engine::forward_steps(&mut *on_step))?.1,
        ),
        None => None,
    };

    let mut layer_reports = Vec::new();
    for (li, layer) in layers.iter().enumerate() {
        let sums = layer_of(layer);
        let class_sums = class_recording.as_ref().map(|r| &r.layers[li]).unwrap_or(sums);
        let rows = rt.block_on(layer_labels(&db, model_id, layer))?;
        let mut by_method: BTreeMap<(String, String), Vec<(usize, String)>> = BTreeMap::new();
        for (unit, method, source, text) in rows {
            by_method.entry((method, source)).or_default().push((unit as usize, text));
        }
        let mut methods = Vec::new();
        for ((method, source), units) in by_method {
            let texts: Vec<&str> = units.iter().map(|u| u.1.as_str()).collect();
            let embs = encoder.embed(&texts)?;
            let acts: Vec<Vec<f64>> = units.iter().map(|u| column(sums, u.0, &eval_rows)).collect();
            let (own, chance) = simulation::method_scores(&embs, &caption_embs, &acts);
            let labelled: Vec<auroc::LabelledUnit> = units
                .iter()
                .zip(&embs)
                .map(|(u, e)| auroc::LabelledUnit { unit: u.0, label: &u.1, embedding: e })
                .collect();
            let detectors =
                auroc::detectors(&class_list, &image_class, &labelled, &|unit| column(class_sums, unit, &class_rows));
            let aurocs: Vec<f64> = detectors.iter().map(|d| d.auroc).collect();
            methods.push(MethodLayerScore {
                method,
                source,
                units: units.len(),
                simulation: MeanSem::of(&own),
                simulation_chance: MeanSem::of(&chance),
                auroc: MeanSem::of(&aurocs),
                detectors,
            });
        }
        layer_reports.push(LayerQuality { layer: layer.clone(), methods });
    }
    let report = QualityReport {
        model: slug,
        partition: partition.info().clone(),
        evaluation_images: eval_rows.len(),
        classes_source: classes.source.clone(),
        classes: classes
            .names
            .iter()
            .enumerate()
            .map(|(c, n)| (n.clone(), image_class.iter().filter(|&&k| k == c).count()))
            .collect(),
        final_layer,
        layers: layer_reports,
    };
    if let Some(f) = &report.final_layer {
        rt.block_on(final_layer::store(db, f))?;
    }
    target.close();
    Ok(report)
}

/// `dnd evaluate-final`: the final-layer part of [`quality`] alone (stored too).
pub fn evaluate_final(
    config: &Config,
    model: &str,
    probe: &str,
    layer: &str,
    examples: usize,
    on_step: OnStep<'_>,
) -> anyhow::Result<final_layer::FinalLayerReport> {
    let target = Target::open(config, model, probe)?;
    let cache = crate::dissection::activation_dir(config);
    let (_, recording) = engine::record(
        &target.loaded,
        &target.set,
        &[layer.to_string()],
        &cache,
        32,
        None,
        &mut engine::forward_steps(&mut *on_step),
    )?;
    let coverage = final_layer::covered_classes(&recording.layers[0], &target.partition.rows(Split::Probe));
    let encoder = SentenceEncoder::load_default(TextModel::MpnetBaseV2).context("loading all-mpnet-base-v2")?;
    let clip = clip_text_encoder(&config.services)?;
    let clip = clip.as_ref().map(|c| c as &dyn TextEncoder);
    let report = target.rt.block_on(final_layer::final_layer(
        &target.db,
        &encoder,
        clip,
        &target.slug,
        layer,
        coverage,
        examples,
    ))?;
    target.rt.block_on(final_layer::store(&target.db, &report))?;
    target.close();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped Fashion-MNIST set (installed by scripts/setup.sh) is found by name, with its
    /// ten classes of 50 images.
    #[test]
    fn the_shipped_labelled_set_is_found_by_name() {
        let classes = folder_classes(std::path::Path::new("fashion-mnist")).unwrap();
        assert_eq!(classes.names.len(), 10);
        assert!(classes.names.contains(&"ankle boot".to_string()), "{:?}", classes.names);
        assert_eq!(classes.images.len(), 500);
        for c in 0..10 {
            assert_eq!(classes.images.iter().filter(|&&(_, k)| k == c).count(), 50);
        }
        assert!(classes.source.starts_with("the labelled set fashion-mnist"), "{}", classes.source);
        let e = folder_classes(std::path::Path::new("/no/such/folder")).err().unwrap().to_string();
        assert_eq!(e, "--classes /no/such/folder: no folder /no/such/folder");
    }
}
