//! Final-layer evaluation (the paper's Table 2 metric): for classifier units, whose ground truth
//! is their class, the mean cosine between each method's rank-1 label and the class's full
//! synonym line ("tabby, tabby cat") under all-mpnet-base-v2. Reads the current labels from the
//! database, so it compares every method that has labelled the layer (DnD runs and imported
//! labels alike), over all labelled units and over the *covered* ones: units whose class the
//! probing set shows at all ([`covered_classes`]), the only ones any method can describe.

use super::stats::MeanSem;
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

/// Evaluates every method with labels on `layer` of `model` (a classifier layer).
pub async fn final_layer(
    db: &SqlitePool,
    encoder: &SentenceEncoder,
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
    let a = encoder.embed(&classes)?;
    let b = encoder.embed(&labels)?;
    let cosines: Vec<f64> = a.iter().zip(&b).map(|(x, y)| dissect::concepts::cosine(x, y) as f64).collect();

    let mut by_method: BTreeMap<(String, String), (Vec<f64>, Vec<f64>)> = Default::default();
    for (r, c) in rows.iter().zip(&cosines) {
        let e = by_method.entry((r.2.clone(), r.3.clone())).or_default();
        e.0.push(*c);
        if coverage.classes.contains(&r.0) {
            e.1.push(*c);
        }
    }
    let methods = by_method
        .into_iter()
        .map(|((method, source), (all, covered))| MethodScore {
            method,
            source,
            all: MeanSem::of(&all).expect("one label at least"),
            covered: MeanSem::of(&covered),
        })
        .collect();
    let mut examples_out: Vec<Example> = Vec::new();
    for (r, c) in rows.iter().zip(&cosines) {
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
}
