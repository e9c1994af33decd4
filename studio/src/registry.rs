//! Registering models and probing sets in the database. Registration is idempotent: the same
//! content registered again (after a restart, a rename, a move) finds its existing rows.

use anyhow::Context;
use dissect::model::{LayerKind, TargetModel};
use dissect::probe::{self, ImageLimits, ScannedSet};
use sha2::{Digest, Sha256};
use sqlx::SqlitePool;
use std::path::{Path, PathBuf};

/// What to register as a probing set.
pub struct ProbeSetSpec {
    pub slug: String,
    pub name: String,
    pub description: String,
    /// `builtin`, `folder` or `zip`.
    pub source: &'static str,
    pub root: PathBuf,
    pub heldout_fraction: f64,
    pub split_seed: u64,
}

/// Scans `spec.root` and stores the set, its images and its rejected files in one transaction.
/// Returns the set's id; an existing set with the same content and split is reused.
pub async fn register_probe_set(db: &SqlitePool, spec: ProbeSetSpec) -> anyhow::Result<i64> {
    let root = spec.root.clone();
    let scanned = tokio::task::spawn_blocking(move || probe::scan(&root, ImageLimits::default()))
        .await
        .context("probing-set scan panicked")??;
    register_scanned_set(db, &spec, &scanned).await
}

/// [`register_probe_set`] for a set the caller has scanned already (a dissection scans its set
/// once and registers it from that scan).
pub async fn register_scanned_set(db: &SqlitePool, spec: &ProbeSetSpec, set: &ScannedSet) -> anyhow::Result<i64> {
    let mut tx = crate::db::begin_write(db).await?;
    let existing: Option<(i64, String)> = sqlx::query_as(
        "SELECT id, slug FROM probe_sets WHERE content_sha256 = ? AND heldout_fraction = ? AND split_seed = ?",
    )
    .bind(&set.content_hash)
    .bind(spec.heldout_fraction)
    .bind(spec.split_seed as i64)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((id, _)) = existing {
        // Same images: only the folder may have moved.
        sqlx::query(
            "UPDATE probe_sets SET root_path = ?, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ','now') WHERE id = ?",
        )
        .bind(spec.root.to_string_lossy())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        return Ok(id);
    }
    // The slug is taken by a set with other content (e.g. updated built-in images): keep the old
    // set under a suffixed slug rather than deleting anything computed from it.
    if let Some((old_id, old_hash)) =
        sqlx::query_as::<_, (i64, Option<String>)>("SELECT id, content_sha256 FROM probe_sets WHERE slug = ?")
            .bind(&spec.slug)
            .fetch_optional(&mut *tx)
            .await?
    {
        let suffix = old_hash.as_deref().map(|h| &h[..8]).unwrap_or("old").to_string();
        sqlx::query("UPDATE probe_sets SET slug = slug || '-' || ? WHERE id = ?")
            .bind(suffix)
            .bind(old_id)
            .execute(&mut *tx)
            .await?;
    }
    let set_id: i64 = sqlx::query_scalar(
        "INSERT INTO probe_sets (slug, name, description, source, root_path, content_sha256,
             heldout_fraction, split_seed, status)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'ready') RETURNING id",
    )
    .bind(&spec.slug)
    .bind(&spec.name)
    .bind(&spec.description)
    .bind(spec.source)
    .bind(spec.root.to_string_lossy())
    .bind(&set.content_hash)
    .bind(spec.heldout_fraction)
    .bind(spec.split_seed as i64)
    .fetch_one(&mut *tx)
    .await?;

    // Activation files index images by this position: sorted by content hash, so it does not
    // depend on file names or listing order.
    let mut by_hash: Vec<&probe::ProbeImage> = set.images.iter().collect();
    by_hash.sort_by(|a, b| a.sha256.cmp(&b.sha256));
    for (position, img) in by_hash.into_iter().enumerate() {
        let image_id: i64 = sqlx::query_scalar(
            "INSERT INTO images (sha256, width, height, format, byte_size) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT(sha256) DO UPDATE SET sha256 = excluded.sha256 RETURNING id",
        )
        .bind(&img.sha256)
        .bind(img.width as i64)
        .bind(img.height as i64)
        .bind(&img.format)
        .bind(img.bytes as i64)
        .fetch_one(&mut *tx)
        .await
        .with_context(|| format!("storing image {}", img.rel_path))?;
        let split = probe::split_of(&img.sha256, spec.split_seed, spec.heldout_fraction);
        sqlx::query(
            "INSERT INTO probe_set_images (probe_set_id, image_id, rel_path, label, description, split, position)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(set_id)
        .bind(image_id)
        .bind(&img.rel_path)
        .bind(&img.label)
        .bind(&img.description)
        .bind(split.stored_as())
        .bind(position as i64)
        .execute(&mut *tx)
        .await?;
    }
    for r in &set.rejected {
        sqlx::query("INSERT INTO rejected_files (probe_set_id, rel_path, reason_code, reason) VALUES (?, ?, ?, ?)")
            .bind(set_id)
            .bind(&r.rel_path)
            .bind(r.code.as_str())
            .bind(&r.reason)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(set_id)
}

/// What to register as a model (built-in here; uploaded TorchScript models later).
pub struct ModelSpec<'a> {
    pub slug: &'a str,
    pub name: &'a str,
    pub description: &'a str,
    pub builtin_key: Option<&'a str>,
    pub weights_path: &'a Path,
    pub dataset: Option<&'a str>,
    pub model: &'a dyn TargetModel,
}

/// Stores the model and its layers (and one neuron row per unit). Idempotent by fingerprint.
pub async fn register_model(db: &SqlitePool, spec: ModelSpec<'_>) -> anyhow::Result<i64> {
    let weights = tokio::fs::read(spec.weights_path)
        .await
        .with_context(|| format!("reading model weights {}", spec.weights_path.display()))?;
    let weights_sha256 = hex::encode(Sha256::digest(&weights));
    let pre = spec.model.preprocessing();
    let preprocessing = serde_json::json!({
        "input_size": [pre.input_size.0, pre.input_size.1],
        "resize_shorter": pre.resize_shorter,
        "mean": pre.mean,
        "std": pre.std,
    });
    let layers = spec.model.layers();
    let layer_list: Vec<String> =
        layers.iter().map(|l| format!("{}:{}:{:?}:{:?}", l.name, l.channels, l.kind, l.spatial)).collect();
    let fingerprint = {
        let mut h = Sha256::new();
        h.update(weights_sha256.as_bytes());
        h.update(preprocessing.to_string().as_bytes());
        h.update(layer_list.join("\n").as_bytes());
        hex::encode(h.finalize())
    };
    let mut tx = crate::db::begin_write(db).await?;
    if let Some(id) = sqlx::query_scalar::<_, i64>("SELECT id FROM models WHERE fingerprint = ?")
        .bind(&fingerprint)
        .fetch_optional(&mut *tx)
        .await?
    {
        tx.commit().await?;
        return Ok(id);
    }
    let classes = spec.model.class_names().filter(|c| !c.is_empty());
    let model_id: i64 = sqlx::query_scalar(
        "INSERT INTO models (slug, name, description, source, builtin_key, weights_path, weights_sha256,
             fingerprint, input_height, input_width, preprocessing_json, dataset, num_classes)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(spec.slug)
    .bind(spec.name)
    .bind(spec.description)
    .bind(if spec.builtin_key.is_some() { "builtin" } else { "torchscript" })
    .bind(spec.builtin_key)
    .bind(spec.weights_path.to_string_lossy())
    .bind(&weights_sha256)
    .bind(&fingerprint)
    .bind(pre.input_size.0 as i64)
    .bind(pre.input_size.1 as i64)
    .bind(preprocessing.to_string())
    .bind(spec.dataset)
    .bind(classes.map(|c| c.len() as i64))
    .fetch_one(&mut *tx)
    .await
    .with_context(|| format!("registering model {} (is the slug already used by another model?)", spec.slug))?;
    for (position, layer) in layers.iter().enumerate() {
        let kind = layer.kind.as_str();
        let (h, w) = layer.spatial.map(|(h, w)| (Some(h as i64), Some(w as i64))).unwrap_or((None, None));
        let layer_id: i64 = sqlx::query_scalar(
            "INSERT INTO layers (model_id, name, kind, channels, height, width, position)
             VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(model_id)
        .bind(&layer.name)
        .bind(kind)
        .bind(layer.channels as i64)
        .bind(h)
        .bind(w)
        .bind(position as i64)
        .fetch_one(&mut *tx)
        .await?;
        // Every unit gets a row (and so a gallery page); classifier units carry their class.
        for unit in 0..layer.channels {
            let class_name =
                (layer.kind == LayerKind::Classifier).then(|| classes.and_then(|c| c.get(unit)).cloned()).flatten();
            sqlx::query("INSERT INTO neurons (layer_id, unit, class_name) VALUES (?, ?, ?)")
                .bind(layer_id)
                .bind(unit as i64)
                .bind(class_name)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(model_id)
}

/// A registered model as a job loads it: by its built-in key, or else from its file.
pub struct RegisteredModel {
    pub slug: String,
    /// What [`crate::engine::load_model`] takes.
    pub load_spec: String,
}

/// A registered layer: its name and its place in the model's forward order (the model's own
/// layer index).
pub struct RegisteredLayer {
    pub id: i64,
    pub model_id: i64,
    pub name: String,
    pub position: usize,
    pub channels: usize,
}

/// A registered probing set as a job scans it.
pub struct RegisteredSet {
    pub id: i64,
    pub slug: String,
    /// What [`crate::engine::scan_probe`] takes: `builtin` or the folder.
    pub scan_spec: String,
    pub content_sha256: Option<String>,
    pub heldout_fraction: f64,
    pub split_seed: u64,
}

pub async fn model(db: &SqlitePool, id: i64) -> anyhow::Result<Option<RegisteredModel>> {
    let row: Option<(String, Option<String>, String)> =
        sqlx::query_as("SELECT slug, builtin_key, weights_path FROM models WHERE id = ?")
            .bind(id)
            .fetch_optional(db)
            .await?;
    Ok(row.map(|(slug, key, weights)| RegisteredModel { slug, load_spec: key.unwrap_or(weights) }))
}

pub async fn layer(db: &SqlitePool, id: i64) -> anyhow::Result<Option<RegisteredLayer>> {
    let row: Option<(i64, String, i64, i64)> =
        sqlx::query_as("SELECT model_id, name, position, channels FROM layers WHERE id = ?")
            .bind(id)
            .fetch_optional(db)
            .await?;
    Ok(row.map(|(model_id, name, position, channels)| RegisteredLayer {
        id,
        model_id,
        name,
        position: position as usize,
        channels: channels as usize,
    }))
}

pub async fn probe_set(db: &SqlitePool, id: i64) -> anyhow::Result<Option<RegisteredSet>> {
    let row: Option<(String, String, String, Option<String>, f64, i64)> = sqlx::query_as(
        "SELECT slug, source, root_path, content_sha256, heldout_fraction, split_seed FROM probe_sets WHERE id = ?",
    )
    .bind(id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(slug, source, root, content_sha256, heldout_fraction, split_seed)| RegisteredSet {
        id,
        slug,
        scan_spec: if source == "builtin" { crate::builtin::BUILTIN_SET_SLUG.to_string() } else { root },
        content_sha256,
        heldout_fraction,
        split_seed: split_seed as u64,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{temp_db, FakeModel};
    use dissect::model::LayerInfo;

    fn write_png(path: &Path, seed: u8) {
        let img = image::RgbImage::from_fn(6, 4, |x, y| image::Rgb([seed, x as u8, y as u8]));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        img.save(path).unwrap();
    }

    fn spec(root: &Path) -> ProbeSetSpec {
        ProbeSetSpec {
            slug: "demo".into(),
            name: "Demo".into(),
            description: String::new(),
            source: "folder",
            root: root.into(),
            heldout_fraction: 0.3,
            split_seed: 0,
        }
    }

    #[tokio::test]
    async fn probe_set_registration_is_idempotent_and_survives_a_move() {
        let (dir, db) = temp_db().await;
        let root = dir.path().join("set");
        for i in 0..5u8 {
            write_png(&root.join(format!("cats/{i}.png")), i);
        }
        std::fs::write(root.join("broken.jpg"), b"not a jpeg").unwrap();
        let id = register_probe_set(&db, spec(&root)).await.unwrap();
        let count = |sql: &'static str| {
            let db = db.clone();
            async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(&db).await.unwrap() }
        };
        assert_eq!(count("SELECT COUNT(*) FROM probe_set_images").await, 5);
        assert_eq!(count("SELECT COUNT(*) FROM rejected_files WHERE reason_code = 'not_image'").await, 1);
        assert_eq!(count("SELECT COUNT(*) FROM probe_set_images WHERE label = 'cats'").await, 5);

        let moved = dir.path().join("moved");
        std::fs::rename(&root, &moved).unwrap();
        assert_eq!(register_probe_set(&db, spec(&moved)).await.unwrap(), id);
        assert_eq!(count("SELECT COUNT(*) FROM probe_sets").await, 1);
        let path: String = sqlx::query_scalar("SELECT root_path FROM probe_sets").fetch_one(&db).await.unwrap();
        assert_eq!(path, moved.to_string_lossy());

        // New content under the same slug keeps the old set (renamed) and adds the new one.
        write_png(&moved.join("dogs/new.png"), 99);
        let new_id = register_probe_set(&db, spec(&moved)).await.unwrap();
        assert_ne!(new_id, id);
        let slugs: Vec<String> =
            sqlx::query_scalar("SELECT slug FROM probe_sets ORDER BY id").fetch_all(&db).await.unwrap();
        assert_eq!(slugs.len(), 2);
        assert!(slugs[0].starts_with("demo-") && slugs[1] == "demo", "{slugs:?}");
        // Images are shared by content: 6 distinct images, not 11.
        assert_eq!(count("SELECT COUNT(*) FROM images").await, 6);
    }

    #[tokio::test]
    async fn an_empty_folder_is_refused_and_stores_nothing() {
        let (dir, db) = temp_db().await;
        std::fs::create_dir_all(dir.path().join("empty")).unwrap();
        let e = register_probe_set(&db, spec(&dir.path().join("empty"))).await.unwrap_err();
        assert!(e.to_string().contains("no usable image"), "{e}");
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM probe_sets").fetch_one(&db).await.unwrap();
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn model_registration_stores_layers_and_one_neuron_per_unit() {
        let (dir, db) = temp_db().await;
        let weights = dir.path().join("w.bin");
        std::fs::write(&weights, b"weights").unwrap();
        let model = FakeModel(
            vec![
                LayerInfo { name: "conv".into(), kind: LayerKind::Conv, channels: 4, spatial: Some((8, 8)) },
                LayerInfo { name: "fc".into(), kind: LayerKind::Classifier, channels: 3, spatial: None },
            ],
            vec!["cat".into(), "dog".into(), "car".into()],
        );
        let spec = || ModelSpec {
            slug: "fake",
            name: "Fake",
            description: "",
            builtin_key: Some("fake"),
            weights_path: &weights,
            dataset: None,
            model: &model,
        };
        let id = register_model(&db, spec()).await.unwrap();
        assert_eq!(register_model(&db, spec()).await.unwrap(), id, "same fingerprint, same model");
        let rows: Vec<(String, i64, Option<i64>)> =
            sqlx::query_as("SELECT name, channels, height FROM layers ORDER BY position").fetch_all(&db).await.unwrap();
        assert_eq!(rows, vec![("conv".into(), 4, Some(8)), ("fc".into(), 3, None)]);
        let classes: Vec<Option<String>> = sqlx::query_scalar(
            "SELECT n.class_name FROM neurons n JOIN layers l ON l.id = n.layer_id WHERE l.name = 'fc' ORDER BY unit",
        )
        .fetch_all(&db)
        .await
        .unwrap();
        assert_eq!(classes, vec![Some("cat".into()), Some("dog".into()), Some("car".into())]);
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM neurons").fetch_one(&db).await.unwrap();
        assert_eq!(n, 7);
    }
}
