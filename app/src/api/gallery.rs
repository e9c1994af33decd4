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
    /// Each method and source with a current label in this layer, in display order (one export
    /// each: a natively computed CLIP-Dissect run or a named import is a source of its own).
    pub sources: Vec<LabelSource>,
    /// How to get CLIP-Dissect labels, when the layer has none.
    #[serde(default)]
    pub clip_dissect_note: Option<String>,
}

/// One method's labels from one source (an import's or a run's name; empty for the usual one).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelSource {
    pub method: String,
    pub source: String,
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
    /// How to get a CLIP-Dissect label, when the neuron has none.
    #[serde(default)]
    pub clip_dissect_note: Option<String>,
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

/// Whether this server has a CLIP configured for `dnd clip-dissect` (set once at start).
#[cfg(feature = "ssr")]
static CLIP_CONFIGURED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cfg(feature = "ssr")]
pub fn set_clip_configured(configured: bool) {
    CLIP_CONFIGURED.store(configured, std::sync::atomic::Ordering::Relaxed);
}

/// What the comparison view says where CLIP-Dissect has no label for `layer` of `model`.
#[cfg(feature = "ssr")]
fn clip_dissect_note(model: &str, layer: &str) -> String {
    if CLIP_CONFIGURED.load(std::sync::atomic::Ordering::Relaxed) {
        format!(
            "No CLIP-Dissect label yet. CLIP is configured on this server: run `dnd clip-dissect --model {model} --layer {layer}`, or import a CLIP-Dissect CSV."
        )
    } else {
        "No CLIP-Dissect label: configure services.clip_torchscript and services.clip_tokenizer and run `dnd clip-dissect`, or import a CLIP-Dissect CSV.".into()
    }
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
pub(crate) mod queries {
    use super::*;
    use crate::api::{db_error, LayerSummary};
    use sqlx::sqlite::SqliteRow;
    use sqlx::{Row, SqliteConnection, SqlitePool};
    use std::collections::HashMap;

    struct LayerRow {
        id: i64,
        model_name: String,
        summary: LayerSummary,
    }

    async fn find_layer(
        db: &mut SqliteConnection,
        model: &str,
        layer: &str,
    ) -> Result<Option<LayerRow>, ServerFnError> {
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

    pub(crate) fn image_ref(t: studio::gallery::TopImage) -> crate::api::ImageRef {
        crate::api::ImageRef { sha256: t.sha256, crop: t.crop }
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

    /// The layer grid's neurons matching the filter (`?2`: a LIKE pattern, `%%` = all): their
    /// class name or any current label's text (one pass over the layer's labels, read from the
    /// `labels_layer_text` index), materialized once for the page and its count.
    const MATCHING: &str = "WITH hit AS (SELECT lb.neuron_id FROM labels lb
             WHERE lb.layer_id = ?1 AND lb.is_current = 1 AND lb.text LIKE ?2 ESCAPE '\\'),
         m AS MATERIALIZED (SELECT n.id, n.unit, n.class_name FROM neurons n
             WHERE n.layer_id = ?1 AND (?2 = '%%' OR n.class_name LIKE ?2 ESCAPE '\\' OR n.id IN hit))";

    /// One page of matching neurons (`?3` rows from `?4`) with the number of all matching ones.
    fn page_sql(by_score: bool) -> String {
        if by_score {
            // Best DnD rank-1 score first (over all DnD sources), unscored last, then by unit.
            format!(
                "{MATCHING}, s AS (SELECT lb.neuron_id, MAX(lb.score) AS score FROM labels lb
                     WHERE lb.layer_id = ?1 AND lb.is_current = 1 AND lb.method = 'dnd' AND lb.rank = 1
                     GROUP BY lb.neuron_id)
                 SELECT m.id, m.unit, m.class_name, (SELECT COUNT(*) FROM m) AS matching
                 FROM m LEFT JOIN s ON s.neuron_id = m.id
                 ORDER BY s.score IS NULL, s.score DESC, m.unit LIMIT ?3 OFFSET ?4"
            )
        } else {
            format!(
                "{MATCHING} SELECT m.id, m.unit, m.class_name, (SELECT COUNT(*) FROM m) AS matching
                 FROM m ORDER BY m.unit LIMIT ?3 OFFSET ?4"
            )
        }
    }

    async fn page_rows(
        conn: &mut SqliteConnection,
        sql: &str,
        layer_id: i64,
        pattern: &str,
        page: i64,
    ) -> Result<Vec<SqliteRow>, ServerFnError> {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .bind(layer_id)
            .bind(pattern)
            .bind(PAGE_SIZE)
            .bind((page - 1) * PAGE_SIZE)
            .fetch_all(conn)
            .await
            .map_err(db_error)
    }

    pub async fn layer(db: &SqlitePool, q: LayerQuery) -> Result<Option<LayerView>, ServerFnError> {
        // One connection for the page's few set-based queries (no pool round trip per query).
        let mut conn = db.acquire().await.map_err(db_error)?;
        let Some(layer) = find_layer(&mut conn, &q.model, &q.layer).await? else { return Ok(None) };
        let pattern = format!("%{}%", q.filter.trim().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        // Both SQL texts are constants of this function, never user input.
        let sql = page_sql(q.sort == "score");
        let in_range = (1..=i64::MAX / PAGE_SIZE).contains(&q.page);
        let mut rows =
            if in_range { page_rows(&mut conn, &sql, layer.id, &pattern, q.page).await? } else { Vec::new() };
        // An empty page: nothing matches, or the page is past the end (then the last one shows).
        let matching: i64 = match rows.first() {
            Some(r) => r.get("matching"),
            None => {
                let count = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("{MATCHING} SELECT COUNT(*) FROM m")))
                    .bind(layer.id)
                    .bind(&pattern)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(db_error)?;
                if count > 0 {
                    let last = (count + PAGE_SIZE - 1) / PAGE_SIZE;
                    rows = page_rows(&mut conn, &sql, layer.id, &pattern, q.page.clamp(1, last)).await?;
                }
                count
            }
        };
        let pages = ((matching + PAGE_SIZE - 1) / PAGE_SIZE).max(1);
        let page = q.page.clamp(1, pages);
        let ids: Vec<i64> = rows.iter().map(|r| r.get::<i64, _>("id")).collect();
        let ids_json = format!("[{}]", ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(","));
        // Rank-1 labels of the page's neurons: one query.
        let mut labels_of: HashMap<i64, Vec<LabelView>> = HashMap::new();
        for r in sqlx::query(
            "SELECT neuron_id, method, source_name, rank, text, score FROM labels
             WHERE neuron_id IN (SELECT value FROM json_each(?)) AND is_current = 1 AND rank = 1",
        )
        .bind(&ids_json)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error)?
        {
            labels_of.entry(r.get("neuron_id")).or_default().push(label_from_row(&r));
        }
        // Rank-1 D_top image of each neuron of the page, from its latest done DnD run: one query.
        let mut thumb_of = studio::gallery::rank1_top_images(db, &ids).await.map_err(db_error)?;
        let neurons = rows
            .iter()
            .map(|r| {
                let id: i64 = r.get("id");
                let mut labels = labels_of.remove(&id).unwrap_or_default();
                labels.sort_by_key(|l| (method_order(&l.method), l.source.clone()));
                NeuronRow {
                    unit: r.get("unit"),
                    class_name: r.get("class_name"),
                    labels,
                    thumb: thumb_of.remove(&id).map(image_ref),
                }
            })
            .collect();
        // Each method's sources with a current label in this layer, walked along the
        // (layer, method, source) index: one probe per method and per source found.
        let rows: Vec<(String, String)> = sqlx::query_as(
            "WITH RECURSIVE src(method, source_name) AS (
                 SELECT m.column1, (SELECT lb.source_name FROM labels lb WHERE lb.layer_id = ?1 AND lb.method = m.column1
                                    AND lb.is_current = 1 ORDER BY lb.source_name LIMIT 1)
                 FROM (VALUES ('dnd'), ('clip-dissect'), ('milan'), ('netdissect'), ('falcon'), ('other')) m
                 UNION ALL
                 SELECT s.method, (SELECT lb.source_name FROM labels lb WHERE lb.layer_id = ?1 AND lb.method = s.method
                                   AND lb.is_current = 1 AND lb.source_name > s.source_name ORDER BY lb.source_name LIMIT 1)
                 FROM src s WHERE s.source_name IS NOT NULL)
             SELECT method, source_name FROM src WHERE source_name IS NOT NULL",
        )
        .bind(layer.id)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error)?;
        let mut sources: Vec<LabelSource> =
            rows.into_iter().map(|(method, source)| LabelSource { method, source }).collect();
        sources.sort_by(|a, b| (method_order(&a.method), &a.source).cmp(&(method_order(&b.method), &b.source)));
        let clip_dissect_note =
            (!sources.iter().any(|s| s.method == "clip-dissect")).then(|| super::clip_dissect_note(&q.model, &q.layer));
        Ok(Some(LayerView {
            model_name: layer.model_name,
            layer: layer.summary,
            neurons,
            matching,
            page,
            pages,
            sources,
            clip_dissect_note,
        }))
    }

    pub async fn neuron(
        db: &SqlitePool,
        model: &str,
        layer_name: &str,
        unit: i64,
    ) -> Result<Option<NeuronView>, ServerFnError> {
        let mut conn = db.acquire().await.map_err(db_error)?;
        let Some(layer) = find_layer(&mut conn, model, layer_name).await? else { return Ok(None) };
        let Some(row) = sqlx::query("SELECT id, class_name FROM neurons WHERE layer_id = ? AND unit = ?")
            .bind(layer.id)
            .bind(unit)
            .fetch_optional(&mut *conn)
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
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error)?;
        let mut labels: Vec<LabelView> = labels.iter().map(label_from_row).collect();
        labels.sort_by_key(|l| (method_order(&l.method), l.source.clone(), l.rank));
        let channels = layer.summary.channels;
        let clip_dissect_note =
            (!labels.iter().any(|l| l.method == "clip-dissect")).then(|| super::clip_dissect_note(model, layer_name));
        Ok(Some(NeuronView {
            model_slug: model.to_string(),
            model_name: layer.model_name,
            layer: layer.summary,
            unit,
            class_name: row.get("class_name"),
            labels,
            prev: (unit > 0).then_some(unit - 1),
            next: (unit + 1 < channels).then_some(unit + 1),
            clip_dissect_note,
        }))
    }
}
