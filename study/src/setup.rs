//! Creating a study: validate the admin's choices, find the neurons every chosen method has
//! labelled, draw the sample, and snapshot what each task shows (images and descriptions), so
//! what raters saw stays fixed even if runs or imports change later.

use crate::error::{Result, StudyError};
use crate::rng::SplitMix64;
use crate::types::{LayerLabels, MethodRef, NewStudy, NewStudyOptions, StudyDetail};
use crate::units::{parse_units, random_count, sample_units};
use crate::write_gate::WriteTx;
use sqlx::{Row, SqlitePool};
use std::future::Future;
use std::pin::Pin;

/// An image a task shows, with the neuron's activation on it.
#[derive(Clone, Debug, PartialEq)]
pub struct ShownImage {
    pub image_id: i64,
    pub activation: f32,
}

/// The top images of some units of a layer, and the probing set they come from.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerTopImages {
    /// The probing set's id (None when the images belong to no registered set).
    pub probe_set_id: Option<i64>,
    /// One list per requested unit, in request order, highest activation first.
    pub units: Vec<Vec<ShownImage>>,
}

/// Where a study's images come from: the server answers from the recorded activations; tests
/// can answer from anything. The error text is shown to the admin as is.
pub trait TopImageSource: Send + Sync {
    fn top_images<'a>(
        &'a self,
        layer_id: i64,
        units: &'a [i64],
        k: usize,
        summary: &'a str,
    ) -> Pin<Box<dyn Future<Output = std::result::Result<LayerTopImages, String>> + Send + 'a>>;
}

struct PlannedItem {
    layer_pos: usize,
    neuron_id: i64,
    unit: i64,
    images: Vec<ShownImage>,
    /// (method index, label id, text), one per study method.
    labels: Vec<(usize, i64, String)>,
}

fn invalid<T>(msg: impl Into<String>) -> Result<T> {
    Err(StudyError::Invalid(msg.into()))
}

fn validate(s: &NewStudy) -> Result<()> {
    if s.name.trim().is_empty() {
        return invalid("the study needs a name");
    }
    if !(2..=6).contains(&s.methods.len()) {
        return invalid(format!("a study compares 2 to 6 methods; {} chosen", s.methods.len()));
    }
    for (i, m) in s.methods.iter().enumerate() {
        if s.methods[..i].contains(m) {
            return invalid(format!("method `{}` is chosen twice", describe(m)));
        }
    }
    if !(1..=100).contains(&s.raters_per_item) {
        return invalid(format!("raters per neuron must be 1 to 100, not {}", s.raters_per_item));
    }
    if !(1..=100).contains(&s.images_per_item) {
        return invalid(format!("images per task must be 1 to 100, not {}", s.images_per_item));
    }
    if !["mean", "max"].contains(&s.image_summary.as_str()) {
        return invalid(format!("image summary must be `mean` or `max`, not `{}`", s.image_summary));
    }
    if s.instructions.trim().is_empty() {
        return invalid("the instructions are empty");
    }
    if s.layers.is_empty() {
        return invalid("choose at least one layer");
    }
    for (i, l) in s.layers.iter().enumerate() {
        if s.layers[..i].iter().any(|o| o.layer == l.layer) {
            return invalid(format!("layer `{}` is chosen twice", l.layer));
        }
    }
    if s.attention_checks < 0 {
        return invalid("the number of attention checks cannot be negative");
    }
    Ok(())
}

/// `dnd` or `other (my-source)`.
pub fn describe(m: &MethodRef) -> String {
    if m.source.is_empty() {
        m.method.clone()
    } else {
        format!("{} ({})", m.method, m.source)
    }
}

/// Every chosen method is one the database knows (`label_methods`, filled by the service layer
/// from its one definition of the methods).
async fn check_methods_known(db: &SqlitePool, s: &NewStudy) -> Result<()> {
    let known: Vec<String> = sqlx::query_scalar("SELECT slug FROM label_methods ORDER BY slug").fetch_all(db).await?;
    match s.methods.iter().find(|m| !known.contains(&m.method)) {
        Some(m) => invalid(format!("unknown method `{}` (one of {})", m.method, known.join(", "))),
        None => Ok(()),
    }
}

/// Creates the study (status `draft`) and returns its id. Nothing is written unless everything
/// checks out.
pub async fn create_study(db: &SqlitePool, images: &dyn TopImageSource, s: &NewStudy) -> Result<i64> {
    validate(s)?;
    check_methods_known(db, s).await?;
    let model_id: i64 = sqlx::query_scalar("SELECT id FROM models WHERE slug = ?")
        .bind(&s.model)
        .fetch_optional(db)
        .await?
        .ok_or_else(|| StudyError::Invalid(format!("no model `{}`", s.model)))?;
    let mut planned: Vec<PlannedItem> = Vec::new();
    // Neurons not sampled but eligible: attention checks prefer them, so a rater never meets
    // an attention check's neuron as an ordinary task.
    let mut spare: Vec<PlannedItem> = Vec::new();
    let mut probe_set_id: Option<Option<i64>> = None;
    for (layer_pos, choice) in s.layers.iter().enumerate() {
        let layer = sqlx::query("SELECT id, channels FROM layers WHERE model_id = ? AND name = ?")
            .bind(model_id)
            .bind(&choice.layer)
            .fetch_optional(db)
            .await?;
        let Some(layer) = layer else {
            let names: Vec<String> = sqlx::query_scalar("SELECT name FROM layers WHERE model_id = ? ORDER BY position")
                .bind(model_id)
                .fetch_all(db)
                .await?;
            return invalid(format!(
                "model `{}` has no layer `{}`; its layers: {}",
                s.model,
                choice.layer,
                names.join(", ")
            ));
        };
        let (layer_id, channels): (i64, i64) = (layer.get("id"), layer.get("channels"));
        let labelled = eligible_labels(db, layer_id, &s.methods).await?;
        let eligible: Vec<usize> = labelled.keys().map(|&u| u as usize).collect();
        let units = match random_count(&choice.units) {
            Some(n) => {
                let n = n.map_err(StudyError::Invalid)?;
                if n == 0 || n > eligible.len() {
                    return invalid(format!(
                        "layer `{}`: {n} neurons asked for, but {} are labelled by every chosen method",
                        choice.layer,
                        eligible.len()
                    ));
                }
                sample_units(&eligible, n, s.seed)
            }
            None => {
                let units = parse_units(&choice.units, channels as usize, s.seed)
                    .map_err(|e| StudyError::Invalid(format!("layer `{}`: {e}", choice.layer)))?;
                let missing: Vec<String> = units
                    .iter()
                    .filter(|u| !labelled.contains_key(&(**u as i64)))
                    .take(10)
                    .map(|u| u.to_string())
                    .collect();
                if !missing.is_empty() {
                    return invalid(format!(
                        "layer `{}`: units {} lack a label from at least one chosen method",
                        choice.layer,
                        missing.join(", ")
                    ));
                }
                units
            }
        };
        let spare_units: Vec<i64> = eligible
            .iter()
            .filter(|u| !units.contains(u))
            .take(s.attention_checks.max(0) as usize)
            .map(|&u| u as i64)
            .collect();
        let units: Vec<i64> = units.into_iter().map(|u| u as i64).collect();
        for (list, target) in [(&units, &mut planned), (&spare_units, &mut spare)] {
            if list.is_empty() {
                continue;
            }
            let top = images
                .top_images(layer_id, list, s.images_per_item as usize, &s.image_summary)
                .await
                .map_err(|e| StudyError::Invalid(format!("layer `{}`: {e}", choice.layer)))?;
            if *probe_set_id.get_or_insert(top.probe_set_id) != top.probe_set_id {
                return invalid("the chosen layers' activations were recorded on different probing sets");
            }
            for (unit, shown) in list.iter().zip(top.units) {
                if shown.is_empty() {
                    return invalid(format!(
                        "layer `{}` unit {unit}: no images with recorded activations",
                        choice.layer
                    ));
                }
                let (neuron_id, labels) = labelled[unit].clone();
                target.push(PlannedItem { layer_pos, neuron_id, unit: *unit, images: shown, labels });
            }
        }
    }
    let decoys = plan_attention_checks(&planned, &mut spare, s.attention_checks as usize, s.seed)?;
    store(db, model_id, probe_set_id.flatten(), s, &planned, &decoys).await
}

/// Units of a layer with a current rank-1 label from every method: unit → (neuron id, labels).
async fn eligible_labels(
    db: &SqlitePool,
    layer_id: i64,
    methods: &[MethodRef],
) -> Result<std::collections::BTreeMap<i64, (i64, Vec<(usize, i64, String)>)>> {
    let mut out: std::collections::BTreeMap<i64, (i64, Vec<(usize, i64, String)>)> = Default::default();
    for (i, m) in methods.iter().enumerate() {
        let rows = sqlx::query(
            "SELECT n.unit, n.id AS neuron_id, l.id AS label_id, l.text FROM labels l JOIN neurons n ON n.id = l.neuron_id
             WHERE l.layer_id = ? AND l.method = ? AND l.source_name = ? AND l.rank = 1 AND l.is_current = 1",
        )
        .bind(layer_id)
        .bind(&m.method)
        .bind(&m.source)
        .fetch_all(db)
        .await?;
        let mut next: std::collections::BTreeMap<i64, (i64, Vec<(usize, i64, String)>)> = Default::default();
        for r in rows {
            let unit: i64 = r.get("unit");
            let entry = (i, r.get::<i64, _>("label_id"), r.get::<String, _>("text"));
            if i == 0 {
                next.insert(unit, (r.get("neuron_id"), vec![entry]));
            } else if let Some((nid, mut labels)) = out.remove(&unit) {
                labels.push(entry);
                next.insert(unit, (nid, labels));
            }
        }
        out = next;
    }
    Ok(out)
}

/// An attention check: a neuron's task again with one extra, known-bad description.
struct AttentionCheck {
    item: PlannedItem,
    decoy: String,
}

/// Picks the attention-check neurons (spare eligible neurons first) and for each a decoy: the
/// label of the study neuron farthest away (another layer first, then the most distant unit)
/// whose text matches none of the check's own descriptions.
fn plan_attention_checks(
    planned: &[PlannedItem],
    spare: &mut Vec<PlannedItem>,
    count: usize,
    seed: u64,
) -> Result<Vec<AttentionCheck>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    if count > planned.len() {
        return invalid(format!("{count} attention checks asked for, but the study has {} neurons", planned.len()));
    }
    let mut rng = SplitMix64::new(seed ^ 0xA77E);
    let mut hosts: Vec<PlannedItem> = spare.drain(..).collect();
    rng.shuffle(&mut hosts);
    let mut reused: Vec<usize> = (0..planned.len()).collect();
    rng.shuffle(&mut reused);
    let mut reused = reused.into_iter();
    let mut checks = Vec::new();
    while checks.len() < count {
        let host = match hosts.pop() {
            Some(h) => h,
            None => {
                let p = &planned[reused.next().expect("count <= planned.len()")];
                PlannedItem {
                    layer_pos: p.layer_pos,
                    neuron_id: p.neuron_id,
                    unit: p.unit,
                    images: p.images.clone(),
                    labels: p.labels.clone(),
                }
            }
        };
        let distance = |p: &PlannedItem| ((p.layer_pos != host.layer_pos) as i64, (p.unit - host.unit).abs());
        let own: Vec<String> = host.labels.iter().map(|(_, _, t)| t.trim().to_lowercase()).collect();
        let decoy = planned
            .iter()
            .filter(|p| p.neuron_id != host.neuron_id)
            .flat_map(|p| p.labels.iter().map(move |(_, _, t)| (distance(p), t)))
            .filter(|(_, t)| !own.contains(&t.trim().to_lowercase()))
            .max_by_key(|(d, _)| *d)
            .map(|(_, t)| t.clone());
        let Some(decoy) = decoy else {
            return invalid("attention checks need a neuron whose label differs from another neuron's labels");
        };
        checks.push(AttentionCheck { item: host, decoy });
    }
    Ok(checks)
}

async fn store(
    db: &SqlitePool,
    model_id: i64,
    probe_set_id: Option<i64>,
    s: &NewStudy,
    planned: &[PlannedItem],
    checks: &[AttentionCheck],
) -> Result<i64> {
    let mut rng = SplitMix64::new(s.seed ^ 0x5EED_0F_1DE5);
    let mut w = WriteTx::begin(db).await?;
    let tx = &mut w.tx;
    let settings = serde_json::to_string(s).expect("NewStudy serialises");
    let study_id: i64 = sqlx::query_scalar(
        "INSERT INTO studies (name, model_id, probe_set_id, settings_json, neuron_seed, raters_per_item,
             images_per_item, image_summary, instructions, attention_checks)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(s.name.trim())
    .bind(model_id)
    .bind(probe_set_id)
    .bind(settings)
    .bind(s.seed as i64)
    .bind(s.raters_per_item)
    .bind(s.images_per_item)
    .bind(&s.image_summary)
    .bind(s.instructions.trim())
    .bind((!checks.is_empty()) as i64)
    .fetch_one(&mut **tx)
    .await?;
    let mut method_ids = Vec::new();
    for (pos, m) in s.methods.iter().enumerate() {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO study_methods (study_id, position, method, source_name) VALUES (?, ?, ?, ?) RETURNING id",
        )
        .bind(study_id)
        .bind(pos as i64)
        .bind(&m.method)
        .bind(&m.source)
        .fetch_one(&mut **tx)
        .await?;
        method_ids.push(id);
    }
    // Items in a shuffled order, so positions say nothing about layers.
    let mut order: Vec<(&PlannedItem, Option<&str>)> =
        planned.iter().map(|p| (p, None)).chain(checks.iter().map(|c| (&c.item, Some(c.decoy.as_str())))).collect();
    rng.shuffle(&mut order);
    for (position, (item, decoy)) in order.into_iter().enumerate() {
        let item_id: i64 = sqlx::query_scalar(
            "INSERT INTO study_items (study_id, neuron_id, position, is_attention_check) VALUES (?, ?, ?, ?) RETURNING id",
        )
        .bind(study_id)
        .bind(item.neuron_id)
        .bind(position as i64)
        .bind(decoy.is_some() as i64)
        .fetch_one(&mut **tx)
        .await?;
        for (pos, img) in item.images.iter().enumerate() {
            sqlx::query("INSERT INTO study_item_images (item_id, position, image_id, activation) VALUES (?, ?, ?, ?)")
                .bind(item_id)
                .bind(pos as i64)
                .bind(img.image_id)
                .bind(img.activation as f64)
                .execute(&mut **tx)
                .await?;
        }
        // Rows in a random order per item, so description ids do not reveal the method.
        let mut rows: Vec<(Option<i64>, Option<i64>, &str)> = item
            .labels
            .iter()
            .map(|(m, label_id, text)| (Some(method_ids[*m]), Some(*label_id), text.as_str()))
            .collect();
        if let Some(d) = decoy {
            rows.push((None, None, d));
        }
        rng.shuffle(&mut rows);
        for (method_id, label_id, text) in rows {
            sqlx::query(
                "INSERT INTO study_descriptions (item_id, study_method_id, label_id, text, is_decoy) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(item_id)
            .bind(method_id)
            .bind(label_id)
            .bind(text)
            .bind(method_id.is_none() as i64)
            .execute(&mut **tx)
            .await?;
        }
    }
    w.commit().await?;
    Ok(study_id)
}

/// Opens a draft study to raters, or closes an open one (closed studies take no submissions;
/// reopening is allowed so an admin can extend a study).
pub async fn set_status(db: &SqlitePool, study_id: i64, status: &str) -> Result<()> {
    let column = match status {
        "open" => "opened_at",
        "closed" => "closed_at",
        _ => return invalid(format!("a study can be set `open` or `closed`, not `{status}`")),
    };
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE studies SET status = ?, {column} = strftime('%Y-%m-%dT%H:%M:%fZ','now') WHERE id = ?"
    )))
    .bind(status)
    .bind(study_id)
    .execute(db)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StudyError::NotFound(format!("no study {study_id}")));
    }
    Ok(())
}

/// A study with its counts, as lists show it; `filter` completes the WHERE clause.
async fn summaries(db: &SqlitePool, filter: &'static str, id: Option<i64>) -> Result<Vec<crate::types::StudySummary>> {
    let sql = format!(
        "SELECT s.id, s.name, m.slug AS model, s.status, s.created_at,
                (SELECT COUNT(*) FROM study_items i WHERE i.study_id = s.id AND i.is_attention_check = 0) AS neurons,
                (SELECT COUNT(*) FROM study_items i WHERE i.study_id = s.id AND i.is_attention_check = 1) AS checks,
                (SELECT COUNT(*) FROM raters r WHERE r.study_id = s.id) AS raters,
                (SELECT COUNT(*) FROM responses p WHERE p.study_id = s.id) AS responses
         FROM studies s JOIN models m ON m.id = s.model_id WHERE {filter} ORDER BY s.id DESC"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_all(db).await?;
    Ok(rows
        .iter()
        .map(|r| crate::types::StudySummary {
            id: r.get("id"),
            name: r.get("name"),
            model: r.get("model"),
            status: r.get("status"),
            neurons: r.get("neurons"),
            attention_checks: r.get("checks"),
            raters: r.get("raters"),
            responses: r.get("responses"),
            created_at: r.get("created_at"),
        })
        .collect())
}

/// Every study, newest first, with its counts.
pub async fn list_studies(db: &SqlitePool) -> Result<Vec<crate::types::StudySummary>> {
    summaries(db, "?1 IS NULL", None).await
}

/// One study with its counts (`None`: no such study).
pub async fn study_summary(db: &SqlitePool, id: i64) -> Result<Option<crate::types::StudySummary>> {
    Ok(summaries(db, "s.id = ?1", Some(id)).await?.pop())
}

/// What the new-study form offers: every model, and the chosen one's (else the first's) layers
/// with what each labelling method has labelled there and whether activations are recorded.
pub async fn form_options(db: &SqlitePool, model: Option<String>) -> Result<NewStudyOptions> {
    let models: Vec<(String, String)> =
        sqlx::query_as("SELECT slug, name FROM models ORDER BY slug").fetch_all(db).await?;
    let Some(slug) = model.filter(|m| !m.is_empty()).or_else(|| models.first().map(|m| m.0.clone())) else {
        return Ok(NewStudyOptions { models, layers: Vec::new() });
    };
    let rows = sqlx::query(
        "SELECT l.id, l.name, l.channels,
                EXISTS (SELECT 1 FROM activation_caches c WHERE c.layer_id = l.id AND c.status = 'complete') AS recorded
         FROM layers l JOIN models m ON m.id = l.model_id WHERE m.slug = ? ORDER BY l.position",
    )
    .bind(&slug)
    .fetch_all(db)
    .await?;
    let mut layers = Vec::new();
    for r in rows {
        let methods: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT method, source_name, COUNT(*) FROM labels WHERE layer_id = ? AND rank = 1 AND is_current = 1
             GROUP BY method, source_name ORDER BY method, source_name",
        )
        .bind(r.get::<i64, _>("id"))
        .fetch_all(db)
        .await?;
        layers.push(LayerLabels {
            layer: r.get("name"),
            channels: r.get("channels"),
            methods: methods.into_iter().map(|(method, source, n)| (MethodRef { method, source }, n)).collect(),
            recorded: r.get::<i64, _>("recorded") == 1,
        });
    }
    Ok(NewStudyOptions { models, layers })
}

/// A study as its admin page shows it: summary, settings, open link and results.
pub async fn study_detail(db: &SqlitePool, id: i64) -> Result<Option<StudyDetail>> {
    let Some(summary) = study_summary(db, id).await? else {
        return Ok(None);
    };
    let row =
        sqlx::query("SELECT settings_json, open_link_token FROM studies WHERE id = ?").bind(id).fetch_one(db).await?;
    let settings: NewStudy = serde_json::from_str(row.get::<&str, _>("settings_json"))
        .map_err(|e| StudyError::Invalid(format!("study {id}: stored settings unreadable: {e}")))?;
    Ok(Some(StudyDetail {
        summary,
        settings,
        open_link: row.get("open_link_token"),
        results: crate::results::results(db, id).await?,
    }))
}
