//! Storing an imported label file: one `label_imports` row and its `labels`, in one transaction.
//! Earlier labels of the same (neuron, method, source) stay in the database but stop being
//! current, so rating studies that showed them keep their meaning.

use super::import::ParsedFile;
use crate::methods::Method;
use sha2::{Digest, Sha256};
use sqlx::SqlitePool;
use std::collections::BTreeMap;

pub struct ImportRecord<'a> {
    pub model_id: i64,
    pub method: Method,
    /// Distinguishes several sources of one method (e.g. two MILAN checkpoints); may be empty.
    pub source_name: &'a str,
    pub file_name: &'a str,
    pub file_bytes: &'a [u8],
    pub layer_mapping: &'a BTreeMap<String, String>,
}

/// Stores `parsed` and returns the import's id. Nothing is written if any row fails.
pub async fn store_import(db: &SqlitePool, rec: ImportRecord<'_>, parsed: &ParsedFile) -> anyhow::Result<i64> {
    // Every writer of imported labels (files, native CLIP-Dissect) is bounded alike.
    for r in &parsed.rows {
        super::import::check_label_length(&r.text)
            .map_err(|e| anyhow::anyhow!("unit {} of layer `{}`: {e}", r.unit, r.layer))?;
    }
    let mut tx = crate::db::begin_write(db).await?;
    let import_id: i64 = sqlx::query_scalar(
        "INSERT INTO label_imports (model_id, method, source_name, format, file_name, file_sha256,
             layer_mapping_json, row_count)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(rec.model_id)
    .bind(rec.method.as_str())
    .bind(rec.source_name)
    .bind(parsed.format.as_str())
    .bind(rec.file_name)
    .bind(hex::encode(Sha256::digest(rec.file_bytes)))
    .bind(serde_json::to_string(rec.layer_mapping)?)
    .bind(parsed.rows.len() as i64)
    .fetch_one(&mut *tx)
    .await?;
    for row in &parsed.rows {
        let (neuron_id, layer_id): (i64, i64) = sqlx::query_as(
            "SELECT n.id, n.layer_id FROM neurons n JOIN layers l ON l.id = n.layer_id
             WHERE l.model_id = ? AND l.name = ? AND n.unit = ?",
        )
        .bind(rec.model_id)
        .bind(&row.layer)
        .bind(row.unit as i64)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| anyhow::anyhow!("unit {} of layer {} has no neuron row: {e}", row.unit, row.layer))?;
        sqlx::query(
            "UPDATE labels SET is_current = 0
             WHERE neuron_id = ? AND method = ? AND source_name = ? AND rank = ? AND is_current = 1",
        )
        .bind(neuron_id)
        .bind(rec.method.as_str())
        .bind(rec.source_name)
        .bind(row.rank as i64)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO labels (neuron_id, layer_id, method, source_name, rank, text, score, import_id, extra_json)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(neuron_id)
        .bind(layer_id)
        .bind(rec.method.as_str())
        .bind(rec.source_name)
        .bind(row.rank as i64)
        .bind(&row.text)
        .bind(row.score)
        .bind(import_id)
        .bind(row.extra.as_ref().map(|v| v.to_string()))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(import_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::import::{parse, ImportTarget};
    use crate::test_support::{register_fake_model, temp_db, FakeModel};
    use dissect::model::{LayerInfo, LayerKind};
    use std::collections::HashMap;

    #[tokio::test]
    async fn a_second_import_supersedes_the_first_without_deleting_it() {
        let (dir, db) = temp_db().await;
        let model = FakeModel(
            vec![LayerInfo { name: "conv1".into(), kind: LayerKind::Conv, channels: 4, spatial: Some((2, 2)) }],
            vec![],
        );
        let model_id = register_fake_model(&db, dir.path(), &model).await;
        let layers: HashMap<String, usize> = [("conv1".to_string(), 4)].into();
        let mapping = BTreeMap::new();
        let target = ImportTarget { layers: &layers, layer_mapping: &mapping, layer: None, skip_unknown_layers: false };
        let import = |bytes: &'static [u8]| {
            let db = db.clone();
            let parsed = parse(bytes, &target).unwrap();
            let mapping = mapping.clone();
            async move {
                let rec = ImportRecord {
                    model_id,
                    method: Method::MILAN,
                    source_name: "",
                    file_name: "m.csv",
                    file_bytes: bytes,
                    layer_mapping: &mapping,
                };
                store_import(&db, rec, &parsed).await.unwrap()
            }
        };
        let first = import(b"layer,unit,description\nconv1,0,red\nconv1,1,green\n").await;
        let second = import(b"layer,unit,description\nconv1,0,crimson\n").await;
        assert_ne!(first, second);
        let current: Vec<(i64, String)> = sqlx::query_as(
            "SELECT n.unit, l.text FROM labels l JOIN neurons n ON n.id = l.neuron_id WHERE l.is_current = 1 ORDER BY n.unit",
        )
        .fetch_all(&db)
        .await
        .unwrap();
        assert_eq!(current, vec![(0, "crimson".to_string()), (1, "green".to_string())]);
        let all: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM labels").fetch_one(&db).await.unwrap();
        assert_eq!(all, 3, "the superseded label is kept");

        // A writer that skips the importer's check meets the database's bound (migration 0008).
        let bound = crate::labels::import::MAX_LABEL_CHARS;
        let write = |text: String| {
            let db = db.clone();
            async move {
                sqlx::query(
                    "INSERT INTO labels (neuron_id, layer_id, method, rank, text, import_id)
                     SELECT n.id, n.layer_id, 'milan', 1, ?, ? FROM neurons n WHERE n.unit = 3",
                )
                .bind(text)
                .bind(first)
                .execute(&db)
                .await
            }
        };
        let e = write("x".repeat(bound + 1)).await.unwrap_err();
        assert!(e.to_string().contains("longer than 500 characters"), "{e}");
        write("x".repeat(bound)).await.unwrap();
        let e = sqlx::query("UPDATE labels SET text = text || 'y' WHERE length(text) = ?")
            .bind(bound as i64)
            .execute(&db)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("longer than 500 characters"), "{e}");
    }
}
