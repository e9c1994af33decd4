//! The paper's Table 3/4 from stored responses: per layer × method, mean rating ± SEM and the share
//! picked as best over valid responses (invalid ones are counted and shown, never used), an "all
//! layers" row, Krippendorff's ordinal alpha, and per-rater statistics. Responses of excluded
//! raters and attention-check tasks never enter the table.

use crate::error::Result;
use crate::stats::{krippendorff_alpha, mean_sem, median, Metric};
use crate::types::{
    Agreement, LayerResults, MethodRef, MethodResult, NeuronResults, NewStudy, RaterStats, StudyResults,
};
use sqlx::{Row, SqlitePool};
use std::collections::BTreeMap;

/// One stored response with what the results need.
struct Response {
    id: i64,
    item_id: i64,
    layer: String,
    unit: i64,
    rater_id: i64,
    valid: bool,
    attention: bool,
    attention_failed: bool,
    excluded: bool,
    time_ms: Option<i64>,
    /// Index into the study's methods of the best pick (None: the decoy).
    best_method: Option<usize>,
}

/// The study's methods in position order, as (study_methods.id, method).
pub async fn study_methods(db: &SqlitePool, study_id: i64) -> Result<Vec<(i64, MethodRef)>> {
    let rows = sqlx::query("SELECT id, method, source_name FROM study_methods WHERE study_id = ? ORDER BY position")
        .bind(study_id)
        .fetch_all(db)
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get("id"), MethodRef { method: r.get("method"), source: r.get("source_name") }))
        .collect())
}

pub async fn results(db: &SqlitePool, study_id: i64) -> Result<StudyResults> {
    let settings: Option<String> =
        sqlx::query_scalar("SELECT settings_json FROM studies WHERE id = ?").bind(study_id).fetch_optional(db).await?;
    let settings = settings.ok_or_else(|| crate::StudyError::NotFound(format!("no study {study_id}")))?;
    let layer_order: Vec<String> = serde_json::from_str::<NewStudy>(&settings)
        .map(|s| s.layers.into_iter().map(|l| l.layer).collect())
        .unwrap_or_default();
    let methods = study_methods(db, study_id).await?;
    let method_index = |id: Option<i64>| id.and_then(|id| methods.iter().position(|m| m.0 == id));

    let responses: Vec<Response> = sqlx::query(
        "SELECT p.id, p.item_id, p.is_valid, p.attention_check_failed, p.client_time_ms, i.is_attention_check,
                l.name AS layer, n.unit, r.id AS rater_id, r.excluded, d.study_method_id AS best_method
         FROM responses p
         JOIN assignments a ON a.id = p.assignment_id JOIN raters r ON r.id = a.rater_id
         JOIN study_items i ON i.id = p.item_id JOIN neurons n ON n.id = i.neuron_id
         JOIN layers l ON l.id = n.layer_id
         JOIN study_descriptions d ON d.id = p.best_description_id
         WHERE p.study_id = ? ORDER BY p.id",
    )
    .bind(study_id)
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| Response {
        id: r.get("id"),
        item_id: r.get("item_id"),
        layer: r.get("layer"),
        unit: r.get("unit"),
        rater_id: r.get("rater_id"),
        valid: r.get::<i64, _>("is_valid") == 1,
        attention: r.get::<i64, _>("is_attention_check") == 1,
        attention_failed: r.get::<Option<i64>, _>("attention_check_failed") == Some(1),
        excluded: r.get::<i64, _>("excluded") == 1,
        time_ms: r.get("client_time_ms"),
        best_method: method_index(r.get("best_method")),
    })
    .collect();

    // response id → ratings per method index (the decoy is left out).
    let mut ratings: BTreeMap<i64, Vec<(usize, f64)>> = BTreeMap::new();
    for r in sqlx::query(
        "SELECT g.response_id, g.rating, d.study_method_id FROM ratings g
         JOIN study_descriptions d ON d.id = g.description_id
         JOIN responses p ON p.id = g.response_id WHERE p.study_id = ?",
    )
    .bind(study_id)
    .fetch_all(db)
    .await?
    {
        if let Some(m) = method_index(r.get("study_method_id")) {
            ratings.entry(r.get("response_id")).or_default().push((m, r.get::<i64, _>("rating") as f64));
        }
    }

    let counted: Vec<&Response> = responses.iter().filter(|r| !r.attention && !r.excluded).collect();
    let mut rows: Vec<LayerResults> = layer_order
        .iter()
        .map(|layer| {
            table_row(Some(layer.clone()), counted.iter().copied().filter(|r| &r.layer == layer), &methods, &ratings)
        })
        .collect();
    rows.push(table_row(None, counted.iter().copied(), &methods, &ratings));

    let mut by_neuron: BTreeMap<(usize, i64), Vec<&Response>> = BTreeMap::new();
    for r in &counted {
        let layer_position = layer_order.iter().position(|l| l == &r.layer).unwrap_or(layer_order.len());
        by_neuron.entry((layer_position, r.unit)).or_default().push(r);
    }
    let neurons = by_neuron
        .into_values()
        .map(|responses| {
            let (layer, unit) = (responses[0].layer.clone(), responses[0].unit);
            let row = table_row(Some(layer.clone()), responses.into_iter(), &methods, &ratings);
            NeuronResults { layer, unit, methods: row.methods, valid: row.valid, total: row.total }
        })
        .collect();

    let valid: Vec<&Response> = counted.iter().copied().filter(|r| r.valid).collect();
    let mut agreement: Vec<Agreement> =
        (0..methods.len()).map(|m| agreement_of(Some(methods[m].1.clone()), &valid, &ratings, |rm| rm == m)).collect();
    agreement.push(agreement_of(None, &valid, &ratings, |_| true));

    let substituted: Vec<i64> = sqlx::query_scalar(
        "SELECT DISTINCT d.study_method_id FROM study_descriptions d JOIN study_items i ON i.id = d.item_id
         JOIN labels l ON l.id = d.label_id JOIN dissection_runs r ON r.id = l.run_id
         WHERE i.study_id = ? AND r.uses_substitutes = 1",
    )
    .bind(study_id)
    .fetch_all(db)
    .await?;
    Ok(StudyResults {
        substituted: methods.iter().filter(|m| substituted.contains(&m.0)).map(|m| m.1.clone()).collect(),
        methods: methods.into_iter().map(|m| m.1).collect(),
        rows,
        agreement,
        raters: rater_stats(db, study_id, &responses).await?,
        neurons,
    })
}

fn table_row<'a>(
    layer: Option<String>,
    responses: impl Iterator<Item = &'a Response>,
    methods: &[(i64, MethodRef)],
    ratings: &BTreeMap<i64, Vec<(usize, f64)>>,
) -> LayerResults {
    let responses: Vec<&Response> = responses.collect();
    let valid: Vec<&&Response> = responses.iter().filter(|r| r.valid).collect();
    let methods = methods
        .iter()
        .enumerate()
        .map(|(m, (_, method))| {
            let values: Vec<f64> = valid
                .iter()
                .flat_map(|r| ratings.get(&r.id).into_iter().flatten().filter(|x| x.0 == m).map(|x| x.1))
                .collect();
            let stats = mean_sem(&values);
            let best_count = valid.iter().filter(|r| r.best_method == Some(m)).count() as i64;
            MethodResult {
                method: method.clone(),
                mean: stats.map(|s| s.mean),
                sem: stats.and_then(|s| s.sem),
                ratings: values.len() as i64,
                best_share: (!valid.is_empty()).then(|| best_count as f64 / valid.len() as f64),
                best_count,
            }
        })
        .collect();
    LayerResults { layer, methods, valid: valid.len() as i64, total: responses.len() as i64 }
}

/// Ordinal alpha with one unit per (item, method) whose ratings `keep` selects.
fn agreement_of(
    method: Option<MethodRef>,
    valid: &[&Response],
    ratings: &BTreeMap<i64, Vec<(usize, f64)>>,
    keep: impl Fn(usize) -> bool,
) -> Agreement {
    let mut units: BTreeMap<(i64, usize), Vec<f64>> = BTreeMap::new();
    for r in valid {
        for &(m, value) in ratings.get(&r.id).into_iter().flatten() {
            if keep(m) {
                units.entry((r.item_id, m)).or_default().push(value);
            }
        }
    }
    let units: Vec<Vec<f64>> = units.into_values().collect();
    let pairable = units.iter().filter(|u| u.len() >= 2).count() as i64;
    Agreement { method, alpha: krippendorff_alpha(&units, Metric::Ordinal), items: pairable }
}

async fn rater_stats(db: &SqlitePool, study_id: i64, responses: &[Response]) -> Result<Vec<RaterStats>> {
    let rows = sqlx::query(
        "SELECT id, note, origin, worker_id, excluded, revoked_at, last_seen_at FROM raters WHERE study_id = ? ORDER BY id",
    )
    .bind(study_id)
    .fetch_all(db)
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let id: i64 = r.get("id");
            let mine: Vec<&Response> = responses.iter().filter(|p| p.rater_id == id).collect();
            let times: Vec<i64> = mine.iter().filter_map(|p| p.time_ms).collect();
            RaterStats {
                rater_id: id,
                note: r.get("note"),
                origin: r.get("origin"),
                worker_id: r.get("worker_id"),
                responses: mine.len() as i64,
                invalid: mine.iter().filter(|p| !p.valid).count() as i64,
                attention_checks: mine.iter().filter(|p| p.attention).count() as i64,
                attention_failures: mine.iter().filter(|p| p.attention_failed).count() as i64,
                median_time_ms: median(&times),
                excluded: r.get::<i64, _>("excluded") == 1,
                revoked: r.get::<Option<String>, _>("revoked_at").is_some(),
                last_seen_at: r.get("last_seen_at"),
            }
        })
        .collect())
}
