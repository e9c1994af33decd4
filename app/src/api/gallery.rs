//! The neuron gallery: a layer's neurons with every method's current label, and one neuron's
//! page with all labels side by side.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

/// Neurons shown per page of the layer grid.
pub const PAGE_SIZE: i64 = 60;

/// One method's current label of a neuron.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelView {
    /// `dnd`, `clip-dissect`, `milan`, `netdissect`, `falcon` or `other`.
    pub method: String,
    /// Distinguishes several sources of one method; usually empty.
    pub source: String,
    /// 1 = the method's best label.
    pub rank: i64,
    pub text: String,
    pub score: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NeuronRow {
    pub unit: i64,
    /// Ground-truth class name for classifier units.
    pub class_name: Option<String>,
    /// Rank-1 labels, one per method/source.
    pub labels: Vec<LabelView>,
    /// The rank-1 image of D_top (cropped as the run cropped it) from the neuron's latest DnD
    /// run it is done in.
    pub thumb: Option<crate::api::ImageRef>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerQuery {
    pub model: String,
    pub layer: String,
    /// 1-based page.
    pub page: i64,
    /// Case-insensitive text to find in any method's label (or the class name).
    pub filter: String,
    /// `unit` (default) or `score` (DnD label score, best first).
    pub sort: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerView {
    pub model_name: String,
    pub layer: super::LayerSummary,
    pub neurons: Vec<NeuronRow>,
    /// Neurons matching the filter (all pages).
    pub matching: i64,
    pub page: i64,
    pub pages: i64,
    /// Methods with at least one label in this layer, in display order.
    pub methods: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NeuronView {
    pub model_slug: String,
    pub model_name: String,
    pub layer: super::LayerSummary,
    pub unit: i64,
    pub class_name: Option<String>,
    /// Every method's current labels (all ranks), DnD first.
    pub labels: Vec<LabelView>,
    pub prev: Option<i64>,
    pub next: Option<i64>,
}

/// `None` when the model or layer does not exist.
#[server]
pub async fn get_layer(query: LayerQuery) -> Result<Option<LayerView>, ServerFnError> {
    let db = crate::state::server_context()?.db;
    queries::layer(&db, query).await
}

/// `None` when the model, layer or unit does not exist.
#[server]
pub async fn get_neuron(model: String, layer: String, unit: i64) -> Result<Option<NeuronView>, ServerFnError> {
    let db = crate::state::server_context()?.db;
    queries::neuron(&db, &model, &layer, unit).await
}

/// Display order of methods: DnD first, then the compared methods as in the paper's tables.
pub fn method_order(method: &str) -> usize {
    ["dnd", "clip-dissect", "milan", "netdissect", "falcon", "other"].iter().position(|m| *m == method).unwrap_or(9)
}

/// Human name of a method.
pub fn method_title(method: &str) -> &'static str {
    match method {
        "dnd" => "DnD",
        "clip-dissect" => "CLIP-Dissect",
        "milan" => "MILAN",
        "netdissect" => "Network Dissection",
        "falcon" => "FALCON",
        _ => "Other",
    }
}

#[cfg(feature = "ssr")]
mod queries {
    use super::*;
    use crate::api::run_details::queries::crop_of;
    use crate::api::{db_error, LayerSummary};
    use sqlx::{Row, SqlitePool};

    struct LayerRow {
        id: i64,
        model_name: String,
        summary: LayerSummary,
    }

    async fn find_layer(db: &SqlitePool, model: &str, layer: &str) -> Result<Option<LayerRow>, ServerFnError> {
        let row = sqlx::query(
            "SELECT l.id, m.name AS model_name, l.name, l.kind, l.channels, l.height, l.width
             FROM layers l JOIN models m ON m.id = l.model_id WHERE m.slug = ? AND l.name = ?",
        )
        .bind(model)
        .bind(layer)
        .fetch_optional(db)
        .await
        .map_err(db_error)?;
        Ok(row.map(|r| LayerRow {
            id: r.get("id"),
            model_name: r.get("model_name"),
            summary: LayerSummary {
                name: r.get("name"),
                kind: r.get("kind"),
                channels: r.get("channels"),
                height: r.get("height"),
                width: r.get("width"),
            },
        }))
    }

    fn label_from_row(r: &sqlx::sqlite::SqliteRow) -> LabelView {
        LabelView {
            method: r.get("method"),
            source: r.get("source_name"),
            rank: r.get("rank"),
            text: r.get("text"),
            score: r.get("score"),
        }
    }

    pub async fn layer(db: &SqlitePool, q: LayerQuery) -> Result<Option<LayerView>, ServerFnError> {
        let Some(layer) = find_layer(db, &q.model, &q.layer).await? else { return Ok(None) };
        let pattern = format!("%{}%", q.filter.trim().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        // Neurons whose class name or any current label contains the filter text.
        const MATCHES: &str = "n.layer_id = ?1 AND (?2 = '%%' OR n.class_name LIKE ?2 ESCAPE '\\'
            OR EXISTS (SELECT 1 FROM labels lb WHERE lb.neuron_id = n.id AND lb.is_current = 1
                       AND lb.text LIKE ?2 ESCAPE '\\'))";
        let matching: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM neurons n WHERE {MATCHES}")))
            .bind(layer.id)
            .bind(&pattern)
            .fetch_one(db)
            .await
            .map_err(db_error)?;
        let pages = ((matching + PAGE_SIZE - 1) / PAGE_SIZE).max(1);
        let page = q.page.clamp(1, pages);
        let order = if q.sort == "score" {
            "(SELECT MAX(lb.score) FROM labels lb WHERE lb.neuron_id = n.id AND lb.is_current = 1
               AND lb.method = 'dnd' AND lb.rank = 1) IS NULL,
             (SELECT MAX(lb.score) FROM labels lb WHERE lb.neuron_id = n.id AND lb.is_current = 1
               AND lb.method = 'dnd' AND lb.rank = 1) DESC, n.unit"
        } else {
            "n.unit"
        };
        // Both pieces spliced in are constants of this function, never user input.
        let sql = format!(
            "SELECT n.id, n.unit, n.class_name FROM neurons n WHERE {MATCHES} ORDER BY {order} LIMIT ?3 OFFSET ?4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(layer.id)
            .bind(&pattern)
            .bind(PAGE_SIZE)
            .bind((page - 1) * PAGE_SIZE)
            .fetch_all(db)
            .await
            .map_err(db_error)?;
        // Rank-1 D_top image of each neuron of the page, from its latest done DnD run: one query.
        let ids: Vec<i64> = rows.iter().map(|r| r.get::<i64, _>("id")).collect();
        let ids_json = format!("[{}]", ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(","));
        let thumbs = sqlx::query(
            "WITH latest AS (
                 SELECT rn.neuron_id, MAX(rn.run_id) AS run_id FROM run_neurons rn
                 JOIN dissection_runs r ON r.id = rn.run_id
                 WHERE rn.neuron_id IN (SELECT value FROM json_each(?)) AND rn.status = 'done' AND r.method = 'dnd'
                 GROUP BY rn.neuron_id)
             SELECT l.neuron_id, i.sha256, t.crop_x0, t.crop_y0, t.crop_x1, t.crop_y1
             FROM latest l
             JOIN run_neurons rn ON rn.neuron_id = l.neuron_id AND rn.run_id = l.run_id
             JOIN top_images t ON t.run_neuron_id = rn.id AND t.rank = 1
             JOIN images i ON i.id = t.image_id",
        )
        .bind(&ids_json)
        .fetch_all(db)
        .await
        .map_err(db_error)?;
        let mut thumb_of: std::collections::HashMap<i64, crate::api::ImageRef> = thumbs
            .iter()
            .map(|r| (r.get::<i64, _>("neuron_id"), crate::api::ImageRef { sha256: r.get("sha256"), crop: crop_of(r) }))
            .collect();
        let mut neurons = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: i64 = r.get("id");
            let labels = sqlx::query(
                "SELECT method, source_name, rank, text, score FROM labels
                 WHERE neuron_id = ? AND is_current = 1 AND rank = 1",
            )
            .bind(id)
            .fetch_all(db)
            .await
            .map_err(db_error)?;
            let mut labels: Vec<LabelView> = labels.iter().map(label_from_row).collect();
            labels.sort_by_key(|l| (method_order(&l.method), l.source.clone()));
            neurons.push(NeuronRow { unit: r.get("unit"), class_name: r.get("class_name"), labels, thumb: thumb_of.remove(&id) });
        }
        let mut methods: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT method FROM labels WHERE layer_id = ? AND is_current = 1",
        )
        .bind(layer.id)
        .fetch_all(db)
        .await
        .map_err(db_error)?;
        methods.sort_by_key(|m| method_order(m));
        Ok(Some(LayerView { model_name: layer.model_name, layer: layer.summary, neurons, matching, page, pages, methods }))
    }

    pub async fn neuron(db: &SqlitePool, model: &str, layer_name: &str, unit: i64) -> Result<Option<NeuronView>, ServerFnError> {
        let Some(layer) = find_layer(db, model, layer_name).await? else { return Ok(None) };
        let Some(row) = sqlx::query("SELECT id, class_name FROM neurons WHERE layer_id = ? AND unit = ?")
            .bind(layer.id)
            .bind(unit)
            .fetch_optional(db)
            .await
            .map_err(db_error)?
        else {
            return Ok(None);
        };
        let id: i64 = row.get("id");
        let labels = sqlx::query(
            "SELECT method, source_name, rank, text, score FROM labels WHERE neuron_id = ? AND is_current = 1",
        )
        .bind(id)
        .fetch_all(db)
        .await
        .map_err(db_error)?;
        let mut labels: Vec<LabelView> = labels.iter().map(label_from_row).collect();
        labels.sort_by_key(|l| (method_order(&l.method), l.source.clone(), l.rank));
        let channels = layer.summary.channels;
        Ok(Some(NeuronView {
            model_slug: model.to_string(),
            model_name: layer.model_name,
            layer: layer.summary,
            unit,
            class_name: row.get("class_name"),
            labels,
            prev: (unit > 0).then_some(unit - 1),
            next: (unit + 1 < channels).then_some(unit + 1),
        }))
    }
}
