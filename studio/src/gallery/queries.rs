//! The gallery's reads: a layer's grid page, one neuron's labels, and neurons' top images
//! (shared with concept search).

use super::*;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection, SqlitePool};
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

/// The gallery's data version: bumped by every write a page shows (triggers in the migrations),
/// so a page cache keyed by it is never stale. One indexed row.
pub async fn data_version(db: &SqlitePool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT version FROM gallery_version WHERE id = 1").fetch_one(db).await
}

/// Each given neuron's rank-1 top image (cropped as its run cropped it) from its latest finished
/// DnD run; neurons without one are left out. Takes the caller's connection: a page that holds
/// one must not wait for a second from the pool.
pub async fn rank1_top_images(db: &mut SqliteConnection, neuron_ids: &[i64]) -> sqlx::Result<HashMap<i64, ImageRef>> {
    let ids_json = serde_json::to_string(neuron_ids).expect("ids serialise");
    let rows = sqlx::query(
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
    .bind(ids_json)
    .fetch_all(db)
    .await?;
    Ok(rows.iter().map(|r| (r.get("neuron_id"), ImageRef { sha256: r.get("sha256"), crop: crop_of(r) })).collect())
}

/// The crop box of a row with `crop_x0` … `crop_y1` columns; `None` (the whole image) unless
/// all four are set.
pub fn crop_of(r: &SqliteRow) -> Option<[i64; 4]> {
    let c: [Option<i64>; 4] = [r.get("crop_x0"), r.get("crop_y0"), r.get("crop_x1"), r.get("crop_y1")];
    match c {
        [Some(a), Some(b), Some(c), Some(d)] => Some([a, b, c, d]),
        _ => None,
    }
}

/// The id of layer `layer` of the model with slug `model`, if both exist.
pub async fn layer_id(db: &mut SqliteConnection, model: &str, layer: &str) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("SELECT l.id FROM layers l JOIN models m ON m.id = l.model_id WHERE m.slug = ? AND l.name = ?")
        .bind(model)
        .bind(layer)
        .fetch_optional(db)
        .await
}

struct LayerRow {
    id: i64,
    model_name: String,
    summary: LayerSummary,
}

async fn find_layer(db: &mut SqliteConnection, model: &str, layer: &str) -> sqlx::Result<Option<LayerRow>> {
    let row = sqlx::query(
        "SELECT l.id, m.name AS model_name, l.name, l.kind, l.channels, l.height, l.width
         FROM layers l JOIN models m ON m.id = l.model_id WHERE m.slug = ? AND l.name = ?",
    )
    .bind(model)
    .bind(layer)
    .fetch_optional(db)
    .await?;
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
        method: Method::from_stored(r.get::<&str, _>("method")),
        source: r.get("source_name"),
        rank: r.get("rank"),
        text: r.get("text"),
        score: r.get("score"),
    }
}

/// The layer grid's neurons matching the filter (`?2`: a LIKE pattern, `%%` = all): their
/// class name or, with `?6` = 1, any current label's text the cards show (one pass over the layer's
/// labels, read from the `labels_layer_text` index, which leaves out the scoring variants), and with `?3` = 1 only those with a current label;
/// materialized once for the page and its count.
const MATCHING: &str = "WITH hit AS (SELECT lb.neuron_id FROM labels lb
         WHERE lb.layer_id = ?1 AND lb.is_current = 1 AND lb.is_variant = 0 AND lb.text LIKE ?2 ESCAPE '\\'),
     labelled AS (SELECT lb.neuron_id FROM labels lb WHERE lb.layer_id = ?1 AND lb.is_current = 1),
     m AS MATERIALIZED (SELECT n.id, n.unit, n.class_name FROM neurons n
         WHERE n.layer_id = ?1 AND (?2 = '%%' OR n.class_name LIKE ?2 ESCAPE '\\' OR (?6 AND n.id IN hit))
           AND (?3 = 0 OR n.id IN labelled))";

/// One page of matching neurons (`?4` rows from `?5`) with the number of all matching ones.
fn page_sql(sort: LayerSort) -> String {
    if sort == LayerSort::Score {
        // Best DnD rank-1 score first (over all DnD sources but the scoring variants, whose
        // scores are on other functions' scales), unscored last, then by unit.
        format!(
            "{MATCHING}, s AS (SELECT lb.neuron_id, MAX(lb.score) AS score FROM labels lb
                 WHERE lb.layer_id = ?1 AND lb.is_current = 1 AND lb.method = 'dnd' AND lb.rank = 1 AND lb.is_variant = 0
                 GROUP BY lb.neuron_id)
             SELECT m.id, m.unit, m.class_name, (SELECT COUNT(*) FROM m) AS matching
             FROM m LEFT JOIN s ON s.neuron_id = m.id
             ORDER BY s.score IS NULL, s.score DESC, m.unit LIMIT ?4 OFFSET ?5"
        )
    } else {
        format!(
            "{MATCHING} SELECT m.id, m.unit, m.class_name, (SELECT COUNT(*) FROM m) AS matching
             FROM m ORDER BY m.unit LIMIT ?4 OFFSET ?5"
        )
    }
}

/// What [`MATCHING`]'s parameters select.
struct Matching<'a> {
    layer_id: i64,
    /// A LIKE pattern; `%%` matches every neuron.
    pattern: &'a str,
    labelled_only: bool,
    /// Whether the filter looks at label texts (not while the labels are hidden).
    labels_visible: bool,
}

async fn page_rows(
    conn: &mut SqliteConnection,
    sql: &str,
    m: &Matching<'_>,
    page: i64,
) -> sqlx::Result<Vec<SqliteRow>> {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .bind(m.layer_id)
        .bind(m.pattern)
        .bind(m.labelled_only)
        .bind(PAGE_SIZE)
        .bind((page - 1) * PAGE_SIZE)
        .bind(m.labels_visible)
        .fetch_all(conn)
        .await
}

/// A layer's grid page as `audience` may see it.
pub async fn layer(db: &SqlitePool, q: LayerQuery, audience: Audience) -> sqlx::Result<Option<LayerView>> {
    // One connection for the page's few set-based queries (no pool round trip per query).
    let mut conn = db.acquire().await?;
    let Some(layer) = find_layer(&mut conn, &q.model, &q.layer).await? else { return Ok(None) };
    let blinded = blinding::of_layer(&mut conn, layer.id, audience).await?;
    let pattern = format!("%{}%", q.filter.trim().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
    let selection = Matching {
        layer_id: layer.id,
        pattern: &pattern,
        labelled_only: q.labelled_only,
        labels_visible: blinded.is_none(),
    };
    // Both SQL texts are constants of this function, never user input.
    let sql = page_sql(q.sort);
    let in_range = (1..=i64::MAX / PAGE_SIZE).contains(&q.page);
    let mut rows = if in_range { page_rows(&mut conn, &sql, &selection, q.page).await? } else { Vec::new() };
    // An empty page: nothing matches, or the page is past the end (then the last one shows).
    let matching: i64 = match rows.first() {
        Some(r) => r.get("matching"),
        None => {
            let count = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("{MATCHING} SELECT COUNT(*) FROM m")))
                .bind(layer.id)
                .bind(&pattern)
                .bind(q.labelled_only)
                .bind(PAGE_SIZE)
                .bind(0)
                .bind(selection.labels_visible)
                .fetch_one(&mut *conn)
                .await?;
            if count > 0 {
                let last = (count + PAGE_SIZE - 1) / PAGE_SIZE;
                rows = page_rows(&mut conn, &sql, &selection, q.page.clamp(1, last)).await?;
            }
            count
        }
    };
    let pages = ((matching + PAGE_SIZE - 1) / PAGE_SIZE).max(1);
    let page = q.page.clamp(1, pages);
    let ids: Vec<i64> = rows.iter().map(|r| r.get::<i64, _>("id")).collect();
    let ids_json = serde_json::to_string(&ids).expect("ids serialise");
    // Rank-1 labels of the page's neurons: one query (none while they are hidden).
    let mut labels_of: HashMap<i64, Vec<LabelView>> = HashMap::new();
    let label_rows = if blinded.is_some() {
        Vec::new()
    } else {
        sqlx::query(
            "SELECT neuron_id, method, source_name, rank, text, score FROM labels
         WHERE neuron_id IN (SELECT value FROM json_each(?)) AND is_current = 1 AND rank = 1 AND is_variant = 0",
        )
        .bind(&ids_json)
        .fetch_all(&mut *conn)
        .await?
    };
    for r in label_rows {
        labels_of.entry(r.get("neuron_id")).or_default().push(label_from_row(&r));
    }
    // Rank-1 D_top image of each neuron of the page, from its latest done DnD run: one query.
    let mut thumb_of = rank1_top_images(&mut conn, &ids).await?;
    let neurons = rows
        .iter()
        .map(|r| {
            let id: i64 = r.get("id");
            let mut labels = labels_of.remove(&id).unwrap_or_default();
            labels.sort_by_key(|l| (l.method.order(), l.source.clone()));
            NeuronRow {
                unit: r.get("unit"),
                class_name: r.get("class_name"),
                labels,
                thumb: thumb_of.remove(&id),
                recorded_activation: None,
            }
        })
        .collect();
    // Each method's sources with a current label in this layer, walked along the
    // (layer, method, source) index: one probe per method and per source found.
    let rows: Vec<(String, String)> = sqlx::query_as(
        "WITH RECURSIVE src(method, source_name) AS (
             SELECT m.slug, (SELECT lb.source_name FROM labels lb WHERE lb.layer_id = ?1 AND lb.method = m.slug
                                AND lb.is_current = 1 ORDER BY lb.source_name LIMIT 1)
             FROM label_methods m
             UNION ALL
             SELECT s.method, (SELECT lb.source_name FROM labels lb WHERE lb.layer_id = ?1 AND lb.method = s.method
                               AND lb.is_current = 1 AND lb.source_name > s.source_name ORDER BY lb.source_name LIMIT 1)
             FROM src s WHERE s.source_name IS NOT NULL)
         SELECT method, source_name FROM src WHERE source_name IS NOT NULL",
    )
    .bind(layer.id)
    .fetch_all(&mut *conn)
    .await?;
    let mut sources: Vec<LabelSource> = if blinded.is_some() {
        Vec::new()
    } else {
        rows.into_iter().map(|(method, source)| LabelSource { method: Method::from_stored(&method), source }).collect()
    };
    sources.sort_by(|a, b| (a.method.order(), &a.source).cmp(&(b.method.order(), &b.source)));
    Ok(Some(LayerView {
        model_name: layer.model_name,
        layer: layer.summary,
        neurons,
        matching,
        page,
        pages,
        sources,
        clip_dissect_note: None,
        blinded,
    }))
}

/// One neuron's labels as `audience` may see them.
pub async fn neuron(
    db: &SqlitePool,
    model: &str,
    layer_name: &str,
    unit: i64,
    audience: Audience,
) -> sqlx::Result<Option<NeuronView>> {
    let mut conn = db.acquire().await?;
    let Some(layer) = find_layer(&mut conn, model, layer_name).await? else { return Ok(None) };
    let blinded = blinding::of_layer(&mut conn, layer.id, audience).await?;
    let Some(row) = sqlx::query("SELECT id, class_name FROM neurons WHERE layer_id = ? AND unit = ?")
        .bind(layer.id)
        .bind(unit)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let id: i64 = row.get("id");
    let labels =
        sqlx::query("SELECT method, source_name, rank, text, score FROM labels WHERE neuron_id = ? AND is_current = 1")
            .bind(id)
            .fetch_all(&mut *conn)
            .await?;
    let mut labels: Vec<LabelView> =
        if blinded.is_some() { Vec::new() } else { labels.iter().map(label_from_row).collect() };
    labels.sort_by_key(|l| (l.method.order(), l.source.clone(), l.rank));
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
        clip_dissect_note: None,
        blinded,
    }))
}

/// A registered image: its size and where its bytes may be, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredImage {
    pub width: u32,
    pub height: u32,
    /// Its stored copy (relative paths are under `data_dir`), then its file in each probing set
    /// that holds it. A probing set's relative path that could leave the set's root is left out.
    pub files: Vec<PathBuf>,
}

/// The image with content hash `sha256`; `None` when none is registered.
pub async fn stored_image(db: &SqlitePool, sha256: &str, data_dir: &Path) -> sqlx::Result<Option<StoredImage>> {
    let row: Option<(i64, i64, i64, Option<String>)> =
        sqlx::query_as("SELECT id, width, height, stored_path FROM images WHERE sha256 = ?")
            .bind(sha256)
            .fetch_optional(db)
            .await?;
    let Some((image_id, width, height, stored_path)) = row else { return Ok(None) };
    let sets: Vec<(String, String)> = sqlx::query_as(
        "SELECT s.root_path, p.rel_path FROM probe_set_images p JOIN probe_sets s ON s.id = p.probe_set_id
         WHERE p.image_id = ? ORDER BY s.id",
    )
    .bind(image_id)
    .fetch_all(db)
    .await?;
    let mut files = Vec::new();
    if let Some(p) = stored_path {
        let p = PathBuf::from(p);
        files.push(if p.is_absolute() { p } else { data_dir.join(p) });
    }
    for (root, rel) in sets {
        // rel_path comes from a folder scan; still refuse anything that could leave the root.
        if Path::new(&rel).components().all(|c| matches!(c, Component::Normal(_))) {
            files.push(Path::new(&root).join(rel));
        }
    }
    Ok(Some(StoredImage { width: width as u32, height: height as u32, files }))
}

/// A stored activation map (a D_top image's), with what drawing it over its image needs.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMap {
    /// Map size and values (little-endian f32, row-major).
    pub map_height: usize,
    pub map_width: usize,
    pub map_f32: Vec<u8>,
    /// The part of the image the map covers, `[x0, y0, x1, y1]` in image pixels.
    pub view: [u32; 4],
    pub image_width: u32,
    pub image_height: u32,
}

/// The activation map with content hash `key`; `None` when none is stored.
pub async fn stored_map(db: &SqlitePool, key: &str) -> sqlx::Result<Option<StoredMap>> {
    type Row = (i64, i64, Vec<u8>, i64, i64, i64, i64, i64, i64);
    let row: Option<Row> = sqlx::query_as(
        "SELECT t.map_h, t.map_w, t.map_f32, t.map_x0, t.map_y0, t.map_x1, t.map_y1, i.width, i.height
         FROM top_images t JOIN images i ON i.id = t.image_id WHERE t.map_sha256 = ? LIMIT 1",
    )
    .bind(key)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(mh, mw, map_f32, x0, y0, x1, y1, width, height)| StoredMap {
        map_height: mh as usize,
        map_width: mw as usize,
        map_f32,
        view: [x0 as u32, y0 as u32, x1 as u32, y1 as u32],
        image_width: width as u32,
        image_height: height as u32,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{import_labels, register_fake_model, temp_db, FakeModel};
    use dissect::model::{LayerInfo, LayerKind};

    #[tokio::test]
    async fn the_layer_grid_filters_by_text_and_to_labelled_neurons() {
        let (dir, db) = temp_db().await;
        let fc = LayerInfo { name: "fc".into(), kind: LayerKind::Classifier, channels: 4, spatial: None };
        let classes = ["tench", "goldfish", "shark", "ray"].map(String::from).to_vec();
        register_fake_model(&db, dir.path(), &FakeModel(vec![fc], classes)).await;
        import_labels(&db, "layer,unit,description\nfc,1,orange fish\nfc,3,flat fish\n", None, None).await;
        let units = |q: LayerQuery| {
            let db = db.clone();
            async move {
                let v = layer(&db, q, Audience::Public).await.unwrap().unwrap();
                (v.matching, v.neurons.iter().map(|n| n.unit).collect::<Vec<i64>>())
            }
        };
        let query = |filter: &str, labelled_only| LayerQuery {
            model: "m".into(),
            layer: "fc".into(),
            page: 1,
            filter: filter.into(),
            sort: LayerSort::Unit,
            labelled_only,
        };
        assert_eq!(units(query("", false)).await, (4, vec![0, 1, 2, 3]));
        assert_eq!(units(query("", true)).await, (2, vec![1, 3]));
        // The text filter finds class names too; "labelled only" then keeps the labelled ones.
        assert_eq!(units(query("sh", false)).await, (3, vec![1, 2, 3]));
        assert_eq!(units(query("fish", false)).await, (2, vec![1, 3]));
        assert_eq!(units(query("shark", true)).await, (0, vec![]));
        assert_eq!(units(query("orange", true)).await, (1, vec![1]));
    }
}
