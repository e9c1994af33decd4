//! Final-layer evaluation (the paper's Table 2 metric): for classifier units, whose ground truth
//! is their class, the mean cosine between each method's rank-1 label and the class's full
//! synonym line ("tabby, tabby cat") under all-mpnet-base-v2, and under CLIP's text encoder when
//! CLIP is configured (the paper reports both). Reads the current labels from the
//! database, so it compares every method that has labelled the layer (DnD runs and imported
//! labels alike), over all labelled units and over the *covered* ones: units whose class the
//! probing set shows at all ([`covered_classes`]), the only ones any method can describe.

use super::stats::MeanSem;
use dissect::concepts::TextEncoder;
use dissect::crops::Summary;
use dissect::record::ActivationSummaries;
use dissect::text_encoder::SentenceEncoder;
use serde::Serialize;
use sqlx::SqlitePool;
use std::collections::{BTreeMap, BTreeSet};

/// A class is covered when the target model predicts it (top-1) on at least this many D_probe
/// images: decided from the model, not from the ground truth.
pub const COVERED_MIN_IMAGES: usize = 3;

/// One method's (and label source's) result.
#[derive(Debug, Serialize)]
pub struct MethodScore {
    pub method: String,
    pub source: String,
    /// Under all-mpnet-base-v2.
    #[serde(flatten)]
    pub mpnet: Scores,
    /// Under CLIP's text encoder, when CLIP is configured.
    pub clip: Option<Scores>,
}

/// Mean cosines of one method under one encoder.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Scores {
    /// Over every labelled unit.
    pub all: MeanSem,
    /// Over the labelled units whose class is covered; `None` when none is.
    pub covered: Option<MeanSem>,
}

#[derive(Debug, Serialize)]
pub struct Example {
    pub unit: i64,
    pub class_name: String,
    /// (method, label, cosine)
    pub labels: Vec<(String, String, f64)>,
}

/// Which classes the probing set covers.
#[derive(Debug, Clone, Serialize)]
pub struct Coverage {
    /// Covered class ids (= classifier units).
    pub classes: BTreeSet<i64>,
    /// Units of the classifier layer.
    pub units: usize,
    /// D_probe images the decision was made on.
    pub images: usize,
}

#[derive(Debug, Serialize)]
pub struct FinalLayerReport {
    pub model: String,
    pub layer: String,
    pub encoder: String,
    /// The CLIP text encoder's name, when the report has CLIP scores too.
    pub clip_encoder: Option<String>,
    pub coverage: Coverage,
    pub methods: Vec<MethodScore>,
    pub examples: Vec<Example>,
}

/// Classes the model predicts top-1 on at least [`COVERED_MIN_IMAGES`] of `rows` (D_probe rows
/// of the classifier layer's recording).
pub fn covered_classes(classifier: &ActivationSummaries, rows: &[usize]) -> Coverage {
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for &row in rows {
        let logits = classifier.row(row, Summary::Mean);
        let top =
            logits.iter().enumerate().filter(|(_, v)| v.is_finite()).max_by(|a, b| a.1.total_cmp(b.1)).map(|(c, _)| c);
        if let Some(c) = top {
            *counts.entry(c as i64).or_default() += 1;
        }
    }
    let classes = counts.into_iter().filter(|&(_, n)| n >= COVERED_MIN_IMAGES).map(|(c, _)| c).collect();
    Coverage { classes, units: classifier.channels, images: rows.len() }
}

/// Evaluates every method with labels on `layer` of `model` (a classifier layer), under mpnet
/// and, when given, CLIP's text encoder.
pub async fn final_layer(
    db: &SqlitePool,
    encoder: &SentenceEncoder,
    clip: Option<&dyn TextEncoder>,
    model: &str,
    layer: &str,
    coverage: Coverage,
    examples: usize,
) -> anyhow::Result<FinalLayerReport> {
    let rows: Vec<(i64, Option<String>, String, String, String)> = sqlx::query_as(
        "SELECT n.unit, n.class_name, lb.method, lb.source_name, lb.text
         FROM labels lb JOIN neurons n ON n.id = lb.neuron_id JOIN layers l ON l.id = n.layer_id
         JOIN models m ON m.id = l.model_id
         WHERE m.slug = ? AND l.name = ? AND lb.is_current = 1 AND lb.rank = 1
         ORDER BY n.unit, lb.method, lb.source_name",
    )
    .bind(model)
    .bind(layer)
    .fetch_all(db)
    .await?;
    let rows: Vec<_> = rows.into_iter().filter_map(|r| r.1.clone().map(|class| (r.0, class, r.2, r.3, r.4))).collect();
    if rows.is_empty() {
        anyhow::bail!(
            "no labels with a ground-truth class on {model} `{layer}`: run `dnd dissect --layer {layer} --neurons random:100` \
             first (only classifier layers have class names)"
        );
    }
    let classes: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    let labels: Vec<&str> = rows.iter().map(|r| r.4.as_str()).collect();
    let cosines = |a: Vec<Vec<f32>>, b: Vec<Vec<f32>>| -> Vec<f64> {
        a.iter().zip(&b).map(|(x, y)| dissect::concepts::cosine(x, y) as f64).collect()
    };
    let mpnet = cosines(encoder.embed(&classes)?, encoder.embed(&labels)?);
    let clip_cosines = match clip {
        Some(clip) => Some(cosines(clip.embed(&classes)?, clip.embed(&labels)?)),
        None => None,
    };
    let covered_flags: Vec<bool> = rows.iter().map(|r| coverage.classes.contains(&r.0)).collect();
    let mut methods: Vec<MethodScore> = Vec::new();
    for key in rows.iter().map(|r| (&r.2, &r.3)).collect::<BTreeSet<_>>() {
        let of_method: Vec<usize> = (0..rows.len()).filter(|&i| (&rows[i].2, &rows[i].3) == key).collect();
        let scores = |cos: &[f64]| Scores {
            all: MeanSem::of(&of_method.iter().map(|&i| cos[i]).collect::<Vec<_>>()).expect("one label at least"),
            covered: MeanSem::of(&of_method.iter().filter(|&&i| covered_flags[i]).map(|&i| cos[i]).collect::<Vec<_>>()),
        };
        methods.push(MethodScore {
            method: key.0.clone(),
            source: key.1.clone(),
            mpnet: scores(&mpnet),
            clip: clip_cosines.as_deref().map(scores),
        });
    }
    let mut examples_out: Vec<Example> = Vec::new();
    for (r, c) in rows.iter().zip(&mpnet) {
        if examples_out.last().map(|e| e.unit) != Some(r.0) {
            if examples_out.len() == examples {
                break;
            }
            examples_out.push(Example { unit: r.0, class_name: r.1.clone(), labels: vec![] });
        }
        let method = if r.3.is_empty() { r.2.clone() } else { format!("{} ({})", r.2, r.3) };
        examples_out.last_mut().expect("pushed above").labels.push((method, r.4.clone(), *c));
    }
    Ok(FinalLayerReport {
        model: model.into(),
        layer: layer.into(),
        encoder: dissect::text_encoder::TextModel::MpnetBaseV2.name().to_string(),
        clip_encoder: clip.map(|c| c.info().name),
        coverage,
        methods,
        examples: examples_out,
    })
}

/// Stores the report in `evaluations` (one row per method).
pub async fn store(db: &SqlitePool, report: &FinalLayerReport) -> anyhow::Result<()> {
    let (model_id, layer_id): (i64, i64) = sqlx::query_as(
        "SELECT m.id, l.id FROM models m JOIN layers l ON l.model_id = m.id WHERE m.slug = ? AND l.name = ?",
    )
    .bind(&report.model)
    .bind(&report.layer)
    .fetch_one(db)
    .await?;
    let settings = serde_json::json!({
        "encoder": report.encoder,
        "clip_encoder": report.clip_encoder,
        "ground_truth": "full synonym line",
        "covered_classes": report.coverage.classes.len(),
        "covered_min_images": COVERED_MIN_IMAGES,
    });
    for m in &report.methods {
        sqlx::query(
            "INSERT INTO evaluations (kind, model_id, layer_id, method, source_name, settings_json, result_json)
             VALUES ('final_layer_cosine', ?, ?, ?, ?, ?, ?)",
        )
        .bind(model_id)
        .bind(layer_id)
        .bind(&m.method)
        .bind(&m.source)
        .bind(settings.to_string())
        .bind(serde_json::to_string(m)?)
        .execute(db)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_needs_three_top_one_predictions_on_the_given_rows() {
        // 3 classes, 6 images: class 1 wins rows 0, 1, 2; class 2 wins rows 3, 4 and row 5,
        // which is not among the rows given.
        let winners = [1, 1, 1, 2, 2, 2];
        let mut mean = vec![0.0f32; 18];
        for (row, &c) in winners.iter().enumerate() {
            mean[row * 3 + c] = 5.0;
        }
        let sums =
            ActivationSummaries { layer: "classifier".into(), n_images: 6, channels: 3, max: mean.clone(), mean };
        let c = covered_classes(&sums, &[0, 1, 2, 3, 4]);
        assert_eq!(c.classes, BTreeSet::from([1]));
        assert_eq!((c.units, c.images), (3, 5));
        assert_eq!(covered_classes(&sums, &[0, 1, 2, 3, 4, 5]).classes, BTreeSet::from([1, 2]));
    }

    /// mpnet always; CLIP's text encoder (here the fake CLIP of the engine's tests, whose text
    /// embedding is its last word's row) when CLIP is configured, through the same loader.
    #[tokio::test]
    async fn clip_cosines_join_mpnet_when_clip_is_configured() {
        use crate::config::ServicesSection;
        use crate::dissection::providers::clip_text_encoder;
        use crate::test_support::{import_labels, register_fake_model, temp_db, FakeModel};
        use dissect::clip_dissect::testing::{write_fake_clip, write_word_tokenizer};
        use dissect::model::{LayerInfo, LayerKind};

        let (dir, db) = temp_db().await;
        let classes = ["tench", "espresso", "goldfish"].map(String::from).to_vec();
        let layer = LayerInfo { name: "fc".into(), kind: LayerKind::Classifier, channels: 3, spatial: None };
        register_fake_model(&db, dir.path(), &FakeModel(vec![layer], classes)).await;
        import_labels(&db, "layer,unit,description\nfc,0,fish\nfc,1,coffee\nfc,2,coffee\n", None, None).await;

        // Words: tench, espresso, goldfish, coffee, fish; fish words along x, coffee words along y.
        let clip_path = dir.path().join("clip.pt");
        let table = [1., 0., 0., 1., 1., 0., 0., 1., 1., 0., 0.5, 0.5, 0.5, 0.5, 0.5, 0.5];
        write_fake_clip(&clip_path, 2, &[1., 0., 0., 1., 0., 0.], &table).unwrap();
        let tokenizer = dir.path().join("tokenizer.json");
        write_word_tokenizer(&tokenizer, &["tench", "espresso", "goldfish", "coffee", "fish"]).unwrap();
        let services = ServicesSection {
            clip_torchscript: Some(clip_path),
            clip_tokenizer: Some(tokenizer),
            ..Default::default()
        };
        let clip = clip_text_encoder(&services).unwrap().expect("CLIP is configured");
        assert!(clip_text_encoder(&ServicesSection::default()).unwrap().is_none());

        let mpnet = SentenceEncoder::load_default(dissect::text_encoder::TextModel::MpnetBaseV2).unwrap();
        let coverage = Coverage { classes: BTreeSet::from([1]), units: 3, images: 9 };
        let r = final_layer(&db, &mpnet, Some(&clip), "m", "fc", coverage.clone(), 3).await.unwrap();
        assert!(r.clip_encoder.as_deref().unwrap().starts_with("CLIP text encoder"));
        let m = &r.methods[0];
        let clip_scores = m.clip.expect("CLIP scores");
        // fish~tench and coffee~espresso are 1, coffee~goldfish is 0.
        assert!((clip_scores.all.mean - 2.0 / 3.0).abs() < 1e-5, "{clip_scores:?}");
        assert_eq!(clip_scores.all.n, 3);
        assert!((clip_scores.covered.unwrap().mean - 1.0).abs() < 1e-5);
        assert_eq!(m.mpnet.all.n, 3);
        assert!(m.mpnet.all.mean < 0.9, "mpnet is measured apart from CLIP: {:?}", m.mpnet);

        let r = final_layer(&db, &mpnet, None, "m", "fc", coverage, 3).await.unwrap();
        assert!(r.clip_encoder.is_none() && r.methods[0].clip.is_none());
    }
}
