//! The catalogue's reads: models, their layers, probing sets and the first-run progress.

use super::*;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};

/// `SELECT <model summary columns> FROM models m <tail>` as one static string (sqlx only takes
/// static SQL, so the shared column list is spliced in at compile time).
macro_rules! select_models {
    ($tail:literal) => {
        concat!(
            "SELECT m.slug, m.name, m.description, m.source,
                (SELECT COUNT(*) FROM layers l WHERE l.model_id = m.id) AS layer_count
             FROM models m ",
            $tail
        )
    };
}

fn model_from_row(r: &SqliteRow) -> ModelSummary {
    ModelSummary {
        slug: r.get("slug"),
        name: r.get("name"),
        description: r.get("description"),
        source: r.get("source"),
        layer_count: r.get("layer_count"),
    }
}

pub async fn models(db: &SqlitePool) -> sqlx::Result<Vec<ModelSummary>> {
    let rows = sqlx::query(select_models!("ORDER BY m.name")).fetch_all(db).await?;
    Ok(rows.iter().map(model_from_row).collect())
}

/// The model page's data; `None` when no model has this slug.
pub async fn model_detail(db: &SqlitePool, slug: &str) -> sqlx::Result<Option<ModelDetail>> {
    let Some(row) = sqlx::query(select_models!("WHERE m.slug = ?")).bind(slug).fetch_optional(db).await? else {
        return Ok(None);
    };
    let layers = sqlx::query(
        "SELECT l.name, l.kind, l.channels, l.height, l.width FROM layers l
         JOIN models m ON m.id = l.model_id WHERE m.slug = ? ORDER BY l.position",
    )
    .bind(slug)
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| LayerSummary {
        name: r.get("name"),
        kind: r.get("kind"),
        channels: r.get("channels"),
        height: r.get("height"),
        width: r.get("width"),
    })
    .collect();
    Ok(Some(ModelDetail { model: model_from_row(&row), layers }))
}

/// Every probing set with its image count and (the first [`REJECTED_SHOWN`] of) the files its
/// scan refused.
pub async fn probe_sets(db: &SqlitePool) -> sqlx::Result<Vec<ProbeSetSummary>> {
    let rows = sqlx::query(
        "SELECT p.id, p.slug, p.name, p.source,
            (SELECT COUNT(*) FROM probe_set_images i WHERE i.probe_set_id = p.id) AS image_count,
            (SELECT COUNT(*) FROM rejected_files r WHERE r.probe_set_id = p.id) AS rejected_count
         FROM probe_sets p ORDER BY p.name",
    )
    .fetch_all(db)
    .await?;
    let mut sets = Vec::with_capacity(rows.len());
    for r in &rows {
        let rejected_count: i64 = r.get("rejected_count");
        let rejected = if rejected_count == 0 {
            Vec::new()
        } else {
            sqlx::query("SELECT rel_path, reason FROM rejected_files WHERE probe_set_id = ? ORDER BY rel_path LIMIT ?")
                .bind(r.get::<i64, _>("id"))
                .bind(REJECTED_SHOWN as i64)
                .fetch_all(db)
                .await?
                .iter()
                .map(|f| RejectedFile { rel_path: f.get("rel_path"), reason: f.get("reason") })
                .collect()
        };
        sets.push(ProbeSetSummary {
            slug: r.get("slug"),
            name: r.get("name"),
            source: r.get("source"),
            image_count: r.get("image_count"),
            rejected_count,
            rejected,
        });
    }
    Ok(sets)
}

pub async fn first_run_progress(db: &SqlitePool) -> sqlx::Result<FirstRunProgress> {
    let r = sqlx::query(
        "SELECT
            (SELECT COUNT(DISTINCT layer_id) FROM activation_caches WHERE status = 'complete') AS recorded_layers,
            (SELECT COUNT(DISTINCT neuron_id) FROM labels WHERE is_current = 1) AS labelled_neurons,
            (SELECT COUNT(*) FROM (SELECT neuron_id FROM labels WHERE is_current = 1
                                   GROUP BY neuron_id
                                   HAVING COUNT(DISTINCT method || '/' || source_name) >= 2)) AS compared_neurons,
            (SELECT COUNT(*) FROM studies) AS studies",
    )
    .fetch_one(db)
    .await?;
    Ok(FirstRunProgress {
        recorded_layers: r.get("recorded_layers"),
        labelled_neurons: r.get("labelled_neurons"),
        compared_neurons: r.get("compared_neurons"),
        studies: r.get("studies"),
    })
}

/// The home page's data.
pub async fn overview(db: &SqlitePool) -> sqlx::Result<Overview> {
    Ok(Overview {
        models: models(db).await?,
        probe_sets: probe_sets(db).await?,
        progress: first_run_progress(db).await?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methods::Method;
    use crate::test_support::{self, import_labels, register_fake_model, FakeModel};
    use dissect::model::{LayerInfo, LayerKind};

    #[tokio::test]
    async fn rejected_files_are_named_and_progress_follows_the_path() {
        let (dir, db) = test_support::temp_db().await;
        let fresh = overview(&db).await.unwrap();
        assert_eq!(fresh.progress.next_step(), Some(FirstRunStep::Record));

        sqlx::query("INSERT INTO probe_sets (slug, name, source, root_path) VALUES ('p', 'P', 'folder', '/x')")
            .execute(&db)
            .await
            .unwrap();
        for (path, reason) in [("b/broken.jpg", "data ends early"), ("a/dup.png", "duplicate of a/1.png")] {
            sqlx::query(
                "INSERT INTO rejected_files (probe_set_id, rel_path, reason_code, reason) VALUES (1, ?, 'other', ?)",
            )
            .bind(path)
            .bind(reason)
            .execute(&db)
            .await
            .unwrap();
        }
        let sets = probe_sets(&db).await.unwrap();
        assert_eq!(sets[0].rejected_count, 2);
        assert_eq!(sets[0].rejected_phrase().as_deref(), Some("2 files rejected"));
        let names: Vec<_> = sets[0].rejected.iter().map(|f| (f.rel_path.as_str(), f.reason.as_str())).collect();
        assert_eq!(names, [("a/dup.png", "duplicate of a/1.png"), ("b/broken.jpg", "data ends early")]);

        // Two neurons labelled, one of them by two methods.
        let layer = LayerInfo { name: "fc".into(), kind: LayerKind::Classifier, channels: 3, spatial: None };
        register_fake_model(&db, dir.path(), &FakeModel(vec![layer], vec!["a".into(), "b".into(), "c".into()])).await;
        import_labels(&db, "layer,unit,description\nfc,0,fish\nfc,1,coffee\n", Some(Method::MILAN), None).await;
        import_labels(&db, "layer,unit,description\nfc,0,fishes\n", Some(Method::CLIP_DISSECT), None).await;
        let progress = first_run_progress(&db).await.unwrap();
        assert_eq!((progress.labelled_neurons, progress.compared_neurons, progress.studies), (2, 1, 0));
    }
}
