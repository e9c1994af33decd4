//! Native CLIP-Dissect (`dnd clip-dissect`): CLIP-Dissect labels computed natively (soft-WPMI with the paper's
//! defaults) for a recorded layer, stored as the `clip-dissect` method through the label store
//! the importer uses, so they appear in the comparison table, exports and studies.
//!
//! Reuses the layer's activation recording (`dnd record`'s cache; recorded here if missing) and
//! caches CLIP's text and image embeddings under `<data_dir>/clip-dissect/`, so a second run
//! only computes soft-WPMI.

use crate::config::{Config, ServicesSection};
use crate::engine::{self, OnStep};
use crate::labels::import::{Format, LabelRow, ParsedFile};
use crate::labels::store::{store_import, ImportRecord};
use crate::methods::Method;
use anyhow::Context;
use dissect::clip_dissect::{self, Clip, Origin, SoftWpmiParams, UnitLabel};
use dissect::crops::Summary;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What `dnd clip-dissect` was asked to do.
pub struct ClipDissectArgs {
    pub model: String,
    pub layer: String,
    pub probe: String,
    /// One concept per line; default: CLIP-Dissect's 20k common English words.
    pub concepts: Option<PathBuf>,
    /// `0-49`, `3,7`, `random:N`; default: every unit of the layer.
    pub units: Option<String>,
    pub seed: u64,
    pub batch: usize,
}

/// How a run went, for the command line and tests.
#[derive(Debug)]
pub struct ClipDissectReport {
    pub import_id: Option<i64>,
    /// (unit, concept, soft-WPMI) of each labelled unit.
    pub labelled: Vec<(usize, String, f32)>,
    /// Requested units left unlabelled: the same activation on every image.
    pub constant: Vec<usize>,
    pub images_used: usize,
    pub top_k_used: usize,
    pub text_origin: Origin,
    pub image_origin: Origin,
    /// Images run through the target model (0 when the layer's recording was reused).
    pub forwarded: usize,
    pub provenance: String,
    /// Images CLIP could not read, with the reason (skipped).
    pub unreadable: Vec<String>,
}

/// The two files native CLIP-Dissect needs, or an error naming the config keys.
pub fn clip_files(services: &ServicesSection) -> anyhow::Result<(PathBuf, PathBuf)> {
    match (&services.clip_torchscript, &services.clip_tokenizer) {
        (Some(clip), Some(tokenizer)) => {
            for (key, path) in [("services.clip_torchscript", clip), ("services.clip_tokenizer", tokenizer)] {
                if !path.is_file() {
                    anyhow::bail!("config key `{key}`: {} does not exist", path.display());
                }
            }
            Ok((clip.clone(), tokenizer.clone()))
        }
        _ => anyhow::bail!(
            "CLIP-Dissect needs a CLIP model: set services.clip_torchscript (a TorchScript with encode_image and \
             encode_text, e.g. OpenAI's ViT-B/16) and services.clip_tokenizer (its HF tokenizer.json) in \
             dnd-studio.toml, or DND__SERVICES__CLIP_TORCHSCRIPT and DND__SERVICES__CLIP_TOKENIZER; or import a \
             CLIP-Dissect CSV with `dnd import-labels`"
        ),
    }
}

/// Whether the server can compute CLIP-Dissect (both keys set).
pub fn clip_configured(services: &ServicesSection) -> bool {
    services.clip_torchscript.is_some() && services.clip_tokenizer.is_some()
}

fn device(config: &Config) -> tch::Device {
    match config.engine.device.as_str() {
        "cpu" => tch::Device::Cpu,
        "cuda" => tch::Device::Cuda(0),
        _ => tch::Device::cuda_if_available(),
    }
}

/// Runs CLIP-Dissect on one layer and stores the labels (see the module docs). Steps reported:
/// `forward` (when the layer is not recorded yet), `text` and `CLIP` (embeddings).
pub fn run(config: &Config, args: &ClipDissectArgs, on_step: OnStep<'_>) -> anyhow::Result<ClipDissectReport> {
    let (clip_path, tokenizer_path) = clip_files(&config.services)?;
    let (concepts, list_name) = match &args.concepts {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading the concept list {}", p.display()))?;
            (clip_dissect::parse_concepts(&text), file_name(p))
        }
        None => (
            clip_dissect::parse_concepts(clip_dissect::DEFAULT_CONCEPTS),
            clip_dissect::DEFAULT_CONCEPTS_NAME.to_string(),
        ),
    };
    if concepts.is_empty() {
        anyhow::bail!("the concept list {list_name} has no concepts (one per line)");
    }
    let assets = &config.storage.assets_dir;
    std::fs::create_dir_all(&config.storage.data_dir)
        .with_context(|| format!("creating data folder {}", config.storage.data_dir.display()))?;
    let loaded = engine::load_model(&args.model, assets)?;
    let layer = loaded.model.layer_index(&args.layer)?;
    let channels = loaded.model.layers()[layer].channels;
    let units = match &args.units {
        Some(spec) => {
            study::units::parse_units(spec, channels, args.seed).map_err(|e| anyhow::anyhow!("--units {e}"))?
        }
        None => (0..channels).collect(),
    };
    let set = engine::scan_probe(&args.probe, assets)?;

    // The layer's recording: a cache hit after `dnd record` (no forward pass).
    let (images, recording) = engine::record(
        &loaded,
        &set,
        std::slice::from_ref(&args.layer),
        &crate::dissection::activation_dir(config),
        args.batch,
        None,
        &mut engine::forward_steps(&mut *on_step),
    )?;
    let summaries = &recording.layers[0];

    let clip = Clip::new(&clip_path, &tokenizer_path, &config.storage.data_dir.join("clip-dissect"), device(config))?;
    let (text, text_origin) = clip.text_embeddings(&concepts, &mut |done, total| on_step("text", done, total))?;
    let mut unreadable = Vec::new();
    let (image_emb, image_origin) =
        clip.image_embeddings(&images, &mut |done, total| on_step("CLIP", done, total), &mut unreadable)?;

    let out =
        clip_dissect::label_units(&image_emb, &text, summaries, Summary::Mean, &units, &SoftWpmiParams::default())?;
    let provenance =
        format!("computed natively, CLIP = {}, concepts = {list_name} ({})", file_name(&clip_path), concepts.len());
    let mut labelled = Vec::new();
    let mut constant = Vec::new();
    for l in &out.labels {
        match *l {
            UnitLabel::Labelled { unit, concept, score } => labelled.push((unit, concepts[concept].clone(), score)),
            UnitLabel::Constant { unit } => constant.push(unit),
        }
    }

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    let import_id = rt.block_on(async {
        let db = crate::db::open(&config.database_path()).await?;
        // The model, layer and probing set, and the layer's recording (which this run may have
        // made), so a rating study on the layer finds its top images.
        let (model_id, _, set_row) =
            crate::dissection::register_target(&db, &loaded, &args.model, assets, &args.layer, &args.probe, &set)
                .await?;
        let layers = std::slice::from_ref(&args.layer);
        crate::dissection::note_recorded_layers(&db, config, model_id, set_row.id, &loaded, &set, layers, &recording)
            .await?;
        let id = if labelled.is_empty() {
            None
        } else {
            let extra = serde_json::json!({
                "clip": clip_path.display().to_string(),
                "clip_sha256": clip.clip_sha256,
                "concepts": list_name,
                "concept_count": concepts.len(),
                "probe_set_sha256": set.content_hash,
                "images": out.images_used,
                "top_k": out.top_k_used,
                "summary": "mean",
            });
            let rows: Vec<LabelRow> = labelled
                .iter()
                .map(|(unit, text, score)| LabelRow {
                    layer: args.layer.clone(),
                    unit: *unit as u32,
                    rank: 1,
                    text: text.clone(),
                    score: Some(f64::from(*score)),
                    extra: Some(extra.clone()),
                })
                .collect();
            let csv = to_csv(&rows);
            let parsed = ParsedFile { format: Format::ClipDissect, rows, skipped_layers: BTreeMap::new() };
            let mapping = BTreeMap::new();
            let record = ImportRecord {
                model_id,
                method: Method::CLIP_DISSECT,
                source_name: &provenance,
                file_name: &format!("{provenance}; CLIP file {}", clip_path.display()),
                file_bytes: &csv,
                layer_mapping: &mapping,
            };
            Some(store_import(&db, record, &parsed).await?)
        };
        db.close().await;
        anyhow::Ok(id)
    })?;
    Ok(ClipDissectReport {
        import_id,
        labelled,
        constant,
        images_used: out.images_used,
        top_k_used: out.top_k_used,
        text_origin,
        image_origin,
        forwarded: recording.forwarded,
        provenance,
        unreadable,
    })
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| p.display().to_string())
}

/// The labels in CLIP-Dissect's own CSV layout (what the import row's hash is of).
fn to_csv(rows: &[LabelRow]) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(["layer", "unit", "description", "similarity"]);
    for r in rows {
        let _ = w.write_record([
            r.layer.clone(),
            r.unit.to_string(),
            r.text.clone(),
            r.score.unwrap_or(f64::NAN).to_string(),
        ]);
    }
    w.into_inner().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dissect::clip_dissect::testing::{write_fake_clip, write_word_tokenizer};

    #[test]
    fn without_a_configured_clip_the_error_names_both_keys() {
        let e = clip_files(&ServicesSection::default()).unwrap_err().to_string();
        assert!(e.contains("services.clip_torchscript") && e.contains("services.clip_tokenizer"), "{e}");
        let services = ServicesSection {
            clip_torchscript: Some("/nonexistent/clip.pt".into()),
            clip_tokenizer: Some("/nonexistent/tokenizer.json".into()),
            ..Default::default()
        };
        let e = clip_files(&services).unwrap_err().to_string();
        assert!(e.contains("services.clip_torchscript") && e.contains("/nonexistent/clip.pt"), "{e}");
    }

    /// The whole command on the embedded EfficientNet-Lite0 and the built-in probing photos,
    /// after `dnd record`, with a fake CLIP (mean colour vs colour words).
    #[test]
    fn labels_every_requested_unit_of_a_recorded_layer() {
        let dir = tempfile::tempdir().unwrap();
        let clip = dir.path().join("fake-clip.pt");
        // Image: mean normalised colour; words: their channel.
        let tokens =
            [1., 1., 1., 1., -0.5, -0.5, -0.5, 1., -0.5, -0.5, -0.5, 1., 0.2, 0.1, 0.3, 1., 1., 1., 1., 1., 1.];
        write_fake_clip(&clip, 3, &[1., 0., 0., 0., 1., 0., 0., 0., 1.], &tokens).unwrap();
        let tokenizer = dir.path().join("tokenizer.json");
        write_word_tokenizer(&tokenizer, &["!", "red", "green", "blue"]).unwrap();
        let concepts = dir.path().join("colours.txt");
        std::fs::write(&concepts, "red\n\ngreen\nblue\n").unwrap();
        let mut config = Config::default();
        config.storage.data_dir = dir.path().join("data");
        config.engine.device = "cpu".into();
        config.services.clip_torchscript = Some(clip);
        config.services.clip_tokenizer = Some(tokenizer);

        crate::dissection::record_layers(
            &config,
            "efficientnet-lite0",
            "builtin",
            &["stage2".to_string()],
            32,
            &mut |_, _, _| {},
        )
        .unwrap();
        let args = ClipDissectArgs {
            model: "efficientnet-lite0".into(),
            layer: "stage2".into(),
            probe: "builtin".into(),
            concepts: Some(concepts),
            units: Some("0-5".into()),
            seed: 0,
            batch: 32,
        };
        // The run notes the layer's recording in the database, as `dnd record` does (here the
        // row is dropped first, so only the run can bring it back).
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let caches = |config: &Config| {
            rt.block_on(async {
                let db = crate::db::open(&config.database_path()).await.unwrap();
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM activation_caches WHERE layer_name = 'stage2' AND status = 'complete'",
                )
                .fetch_one(&db)
                .await
                .unwrap();
                n
            })
        };
        assert_eq!(caches(&config), 1);
        rt.block_on(async {
            let db = crate::db::open(&config.database_path()).await.unwrap();
            sqlx::query("DELETE FROM activation_caches").execute(&db).await.unwrap();
        });
        assert_eq!(caches(&config), 0);
        let r = run(&config, &args, &mut |_, _, _| {}).unwrap();
        assert_eq!(caches(&config), 1);
        assert_eq!(r.forwarded, 0, "the recording of `dnd record` is reused");
        assert_eq!((r.text_origin, r.image_origin), (Origin::Computed, Origin::Computed));
        assert!(r.images_used > 100, "{} images", r.images_used);
        assert_eq!(r.top_k_used, 100);
        assert!(r.constant.is_empty(), "stage2 has no constant unit: {:?}", r.constant);
        assert_eq!(r.provenance, "computed natively, CLIP = fake-clip.pt, concepts = colours.txt (3)");

        let stored: Vec<(i64, String, f64, String)> = rt.block_on(async {
            let db = crate::db::open(&config.database_path()).await.unwrap();
            sqlx::query_as(
                "SELECT n.unit, lb.text, lb.score, lb.source_name FROM labels lb JOIN neurons n ON n.id = lb.neuron_id
                 JOIN layers l ON l.id = lb.layer_id
                 WHERE lb.method = 'clip-dissect' AND lb.is_current = 1 AND l.name = 'stage2' ORDER BY n.unit",
            )
            .fetch_all(&db)
            .await
            .unwrap()
        });
        assert_eq!(stored.iter().map(|s| s.0).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4, 5]);
        for (unit, text, score, source) in &stored {
            assert!(["red", "green", "blue"].contains(&text.as_str()), "unit {unit}: {text}");
            assert!(score.is_finite(), "unit {unit}: {score}");
            assert_eq!(source, &r.provenance);
        }

        // Again: both embeddings from the cache, same labels.
        let again = run(&config, &args, &mut |_, _, _| {}).unwrap();
        assert_eq!((again.text_origin, again.image_origin, again.forwarded), (Origin::Cache, Origin::Cache, 0));
        assert_eq!(again.labelled, r.labelled);
    }
}
