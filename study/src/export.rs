//! Exports: raw responses (one row per response × description, method revealed), the results
//! table and its per-neuron breakdown, as CSV and JSON.

use crate::error::Result;
use crate::types::{MethodResult, StudyResults};
use serde::Serialize;
use sqlx::{Row, SqlitePool};

/// One rating of one description in one response.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ResponseRow {
    pub response_id: i64,
    pub rater_id: i64,
    pub worker_id: Option<String>,
    pub rater_excluded: bool,
    pub layer: String,
    pub unit: i64,
    pub item_id: i64,
    pub attention_check: bool,
    pub description_id: i64,
    /// `decoy` for an attention check's known-bad description.
    pub method: String,
    pub source: String,
    pub description: String,
    /// The description is a label of a DnD run that used offline substitutes for the paper's
    /// components (not the paper's DnD).
    pub label_uses_substitutes: bool,
    pub rating: i64,
    pub picked_best: bool,
    pub response_valid: bool,
    pub attention_check_failed: Option<bool>,
    pub client_time_ms: Option<i64>,
    pub submitted_at: String,
}

pub async fn response_rows(db: &SqlitePool, study_id: i64) -> Result<Vec<ResponseRow>> {
    let rows = sqlx::query(
        "SELECT p.id AS response_id, r.id AS rater_id, r.worker_id, r.excluded, l.name AS layer, n.unit, p.item_id,
                i.is_attention_check, d.id AS description_id, COALESCE(m.method, 'decoy') AS method,
                COALESCE(m.source_name, '') AS source, d.text, g.rating, p.best_description_id, p.is_valid,
                p.attention_check_failed, p.client_time_ms, p.submitted_at,
                COALESCE(run.uses_substitutes, 0) AS uses_substitutes
         FROM responses p
         JOIN assignments a ON a.id = p.assignment_id JOIN raters r ON r.id = a.rater_id
         JOIN study_items i ON i.id = p.item_id JOIN neurons n ON n.id = i.neuron_id JOIN layers l ON l.id = n.layer_id
         JOIN ratings g ON g.response_id = p.id JOIN study_descriptions d ON d.id = g.description_id
         LEFT JOIN study_methods m ON m.id = d.study_method_id
         LEFT JOIN labels lb ON lb.id = d.label_id LEFT JOIN dissection_runs run ON run.id = lb.run_id
         WHERE p.study_id = ? ORDER BY p.id, COALESCE(m.position, 99)",
    )
    .bind(study_id)
    .fetch_all(db)
    .await?;
    Ok(rows
        .iter()
        .map(|r| ResponseRow {
            response_id: r.get("response_id"),
            rater_id: r.get("rater_id"),
            worker_id: r.get("worker_id"),
            rater_excluded: r.get::<i64, _>("excluded") == 1,
            layer: r.get("layer"),
            unit: r.get("unit"),
            item_id: r.get("item_id"),
            attention_check: r.get::<i64, _>("is_attention_check") == 1,
            description_id: r.get("description_id"),
            method: r.get("method"),
            source: r.get("source"),
            description: r.get("text"),
            label_uses_substitutes: r.get::<i64, _>("uses_substitutes") == 1,
            rating: r.get("rating"),
            picked_best: r.get::<i64, _>("best_description_id") == r.get::<i64, _>("description_id"),
            response_valid: r.get::<i64, _>("is_valid") == 1,
            attention_check_failed: r.get::<Option<i64>, _>("attention_check_failed").map(|f| f == 1),
            client_time_ms: r.get("client_time_ms"),
            submitted_at: r.get("submitted_at"),
        })
        .collect())
}

/// CSV of serialisable rows (header from the field names), with the csv crate's RFC 4180 quoting.
fn to_csv<T: Serialize>(rows: impl IntoIterator<Item = T>) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    for row in rows {
        w.serialize(row).expect("rows serialise to CSV");
    }
    String::from_utf8(w.into_inner().expect("writing to memory cannot fail")).expect("CSV of UTF-8 text")
}

pub fn responses_csv(rows: &[ResponseRow]) -> String {
    to_csv(rows)
}

/// One cell group of the results table (or, with `unit`, of the per-neuron breakdown), flattened
/// for CSV.
#[derive(Serialize)]
struct ResultRow<'a> {
    layer: &'a str,
    /// Only in the per-neuron export.
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<i64>,
    method: &'a str,
    source: &'a str,
    mean_rating: Option<f64>,
    sem: Option<f64>,
    ratings: i64,
    best_share: Option<f64>,
    best_count: i64,
    /// Some of the method's descriptions come from runs with offline substitutes.
    uses_substitutes: bool,
    valid_responses: i64,
    total_responses: i64,
}

impl<'a> ResultRow<'a> {
    /// `m`'s cells, in a group of `valid` of `total` responses.
    fn new(
        results: &StudyResults,
        layer: &'a str,
        unit: Option<i64>,
        m: &'a MethodResult,
        (valid, total): (i64, i64),
    ) -> Self {
        ResultRow {
            layer,
            unit,
            method: &m.method.method,
            source: &m.method.source,
            mean_rating: m.mean,
            sem: m.sem,
            ratings: m.ratings,
            best_share: m.best_share,
            best_count: m.best_count,
            uses_substitutes: results.substituted.contains(&m.method),
            valid_responses: valid,
            total_responses: total,
        }
    }
}

/// The results table, one row per layer (then `all layers`) × method.
pub fn results_csv(results: &StudyResults) -> String {
    to_csv(results.rows.iter().flat_map(|row| {
        let layer = row.layer.as_deref().unwrap_or("all layers");
        row.methods.iter().map(move |m| ResultRow::new(results, layer, None, m, (row.valid, row.total)))
    }))
}

/// The per-neuron breakdown, one row per neuron × method, with the same columns as the results
/// table plus `unit`.
pub fn neurons_csv(results: &StudyResults) -> String {
    to_csv(results.neurons.iter().flat_map(|n| {
        n.methods.iter().map(move |m| ResultRow::new(results, &n.layer, Some(n.unit), m, (n.valid, n.total)))
    }))
}
