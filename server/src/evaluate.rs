//! Final-layer evaluation (the paper's Table 2 metric): for classifier units, whose ground truth
//! is their class name, the mean cosine between each method's rank-1 label and the class name
//! under all-mpnet-base-v2 embeddings. Reads the current labels from the database, so it compares
//! every method that has labelled the layer (DnD runs and imported labels alike).

use anyhow::Context;
use dissect::imagenet::short_name;
use dissect::text_encoder::{SentenceEncoder, TextModel};
use serde::Serialize;
use sqlx::SqlitePool;

/// One method's result.
#[derive(Debug, Serialize)]
pub struct MethodScore {
    pub method: String,
    pub source: String,
    pub neurons: usize,
    pub mean_cosine: f64,
    /// Standard error of the mean.
    pub sem: f64,
}

#[derive(Debug, Serialize)]
pub struct Example {
    pub unit: i64,
    pub class_name: String,
    /// (method, label, cosine)
    pub labels: Vec<(String, String, f64)>,
}

#[derive(Debug, Serialize)]
pub struct FinalLayerReport {
    pub model: String,
    pub layer: String,
    pub encoder: String,
    pub methods: Vec<MethodScore>,
    pub examples: Vec<Example>,
}

/// Evaluates every method with labels on `layer` of `model` (a classifier layer).
pub async fn final_layer(db: &SqlitePool, model: &str, layer: &str, examples: usize) -> anyhow::Result<FinalLayerReport> {
    let rows: Vec<(i64, Option<String>, String, String, String, i64, i64)> = sqlx::query_as(
        "SELECT n.unit, n.class_name, lb.method, lb.source_name, lb.text, l.id, m.id
         FROM labels lb JOIN neurons n ON n.id = lb.neuron_id JOIN layers l ON l.id = n.layer_id
         JOIN models m ON m.id = l.model_id
         WHERE m.slug = ? AND l.name = ? AND lb.is_current = 1 AND lb.rank = 1
         ORDER BY n.unit, lb.method, lb.source_name",
    )
    .bind(model)
    .bind(layer)
    .fetch_all(db)
    .await?;
    let rows: Vec<_> = rows.into_iter().filter(|r| r.1.is_some()).collect();
    if rows.is_empty() {
        anyhow::bail!(
            "no labels with a ground-truth class on {model} `{layer}`: run `dnd dissect --layer {layer} --neurons random:100` \
             first (only classifier layers have class names)"
        );
    }
    let texts: Vec<(String, String)> = rows.iter().map(|r| (short_name(r.1.as_deref().unwrap()).to_string(), r.4.clone())).collect();
    let encoder_name = TextModel::MpnetBaseV2.name().to_string();
    let cosines = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<f64>> {
        let enc = SentenceEncoder::load_default(TextModel::MpnetBaseV2).context("loading all-mpnet-base-v2")?;
        let classes: Vec<&str> = texts.iter().map(|t| t.0.as_str()).collect();
        let labels: Vec<&str> = texts.iter().map(|t| t.1.as_str()).collect();
        let a = enc.embed(&classes)?;
        let b = enc.embed(&labels)?;
        Ok(a.iter().zip(&b).map(|(x, y)| dissect::concepts::cosine(x, y) as f64).collect())
    })
    .await??;

    let mut by_method: std::collections::BTreeMap<(String, String), Vec<f64>> = Default::default();
    for (r, c) in rows.iter().zip(&cosines) {
        by_method.entry((r.2.clone(), r.3.clone())).or_default().push(*c);
    }
    let methods = by_method
        .into_iter()
        .map(|((method, source), v)| {
            let n = v.len() as f64;
            let mean = v.iter().sum::<f64>() / n;
            let var = if v.len() > 1 { v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
            MethodScore { method, source, neurons: v.len(), mean_cosine: mean, sem: (var / n).sqrt() }
        })
        .collect();
    let mut examples_out: Vec<Example> = Vec::new();
    for (r, c) in rows.iter().zip(&cosines) {
        if examples_out.last().map(|e| e.unit) != Some(r.0) {
            if examples_out.len() == examples {
                break;
            }
            examples_out.push(Example { unit: r.0, class_name: short_name(r.1.as_deref().unwrap()).to_string(), labels: vec![] });
        }
        let method = if r.3.is_empty() { r.2.clone() } else { format!("{} ({})", r.2, r.3) };
        examples_out.last_mut().unwrap().labels.push((method, r.4.clone(), *c));
    }
    Ok(FinalLayerReport { model: model.into(), layer: layer.into(), encoder: encoder_name, methods, examples: examples_out })
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
    for m in &report.methods {
        sqlx::query(
            "INSERT INTO evaluations (kind, model_id, layer_id, method, source_name, settings_json, result_json)
             VALUES ('final_layer_cosine', ?, ?, ?, ?, ?, ?)",
        )
        .bind(model_id)
        .bind(layer_id)
        .bind(&m.method)
        .bind(&m.source)
        .bind(serde_json::json!({ "encoder": report.encoder }).to_string())
        .bind(serde_json::to_string(m)?)
        .execute(db)
        .await?;
    }
    Ok(())
}

/// The report as text.
pub fn print(report: &FinalLayerReport) {
    println!("final-layer evaluation of {} `{}`: cosine(label, class name) with {}", report.model, report.layer, report.encoder);
    for m in &report.methods {
        let name = if m.source.is_empty() { m.method.clone() } else { format!("{} ({})", m.method, m.source) };
        println!("  {name:<24} {:.4} ± {:.4} over {} neurons", m.mean_cosine, m.sem, m.neurons);
    }
    println!("  (paper, ResNet-50 fc with mpnet: DnD 0.4588, MILAN 0.2788, CLIP-Dissect 0.5239)");
    println!("examples:");
    for e in &report.examples {
        let labels: Vec<String> = e.labels.iter().map(|(m, l, c)| format!("{m}: {l} ({c:.2})")).collect();
        println!("  unit {:>4} {:<24} {}", e.unit, e.class_name, labels.join(" | "));
    }
}
