//! The catalogue: registered models, their layers, and probing sets.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};
pub use studio::gallery::LayerSummary;

/// One registered target model, as listed on the home page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    /// Stable URL name: `/m/{slug}`.
    pub slug: String,
    pub name: String,
    pub description: String,
    /// `builtin` or `torchscript`.
    pub source: String,
    pub layer_count: i64,
}

/// One registered probing set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeSetSummary {
    pub slug: String,
    pub name: String,
    pub source: String,
    pub image_count: i64,
    pub rejected_count: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Overview {
    pub models: Vec<ModelSummary>,
    pub probe_sets: Vec<ProbeSetSummary>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelDetail {
    pub model: ModelSummary,
    pub layers: Vec<LayerSummary>,
}

#[server]
pub async fn get_overview() -> Result<Overview, ServerFnError> {
    let db = crate::state::server_context()?.db;
    let models = queries::models(&db).await?;
    let probe_sets = queries::probe_sets(&db).await?;
    Ok(Overview { models, probe_sets })
}

/// `None` when no model has this slug (the page answers 404).
#[server]
pub async fn get_model(slug: String) -> Result<Option<ModelDetail>, ServerFnError> {
    let db = crate::state::server_context()?.db;
    let Some(model) = queries::model(&db, &slug).await? else {
        return Ok(None);
    };
    let layers = queries::layers(&db, &slug).await?;
    Ok(Some(ModelDetail { model, layers }))
}

/// The SQL behind the server functions (server side only).
#[cfg(feature = "ssr")]
mod queries {
    use super::*;
    use crate::api::db_error;
    use sqlx::{Row, SqlitePool};

    /// `SELECT <model summary columns> FROM models m <tail>` as one static string (sqlx only
    /// takes static SQL, so the shared column list is spliced in at compile time).
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

    fn model_from_row(r: &sqlx::sqlite::SqliteRow) -> ModelSummary {
        ModelSummary {
            slug: r.get("slug"),
            name: r.get("name"),
            description: r.get("description"),
            source: r.get("source"),
            layer_count: r.get("layer_count"),
        }
    }

    pub async fn models(db: &SqlitePool) -> Result<Vec<ModelSummary>, ServerFnError> {
        let rows = sqlx::query(select_models!("ORDER BY m.name")).fetch_all(db).await.map_err(db_error)?;
        Ok(rows.iter().map(model_from_row).collect())
    }

    pub async fn model(db: &SqlitePool, slug: &str) -> Result<Option<ModelSummary>, ServerFnError> {
        let row =
            sqlx::query(select_models!("WHERE m.slug = ?")).bind(slug).fetch_optional(db).await.map_err(db_error)?;
        Ok(row.as_ref().map(model_from_row))
    }

    pub async fn layers(db: &SqlitePool, slug: &str) -> Result<Vec<LayerSummary>, ServerFnError> {
        let rows = sqlx::query(
            "SELECT l.name, l.kind, l.channels, l.height, l.width FROM layers l
             JOIN models m ON m.id = l.model_id WHERE m.slug = ? ORDER BY l.position",
        )
        .bind(slug)
        .fetch_all(db)
        .await
        .map_err(db_error)?;
        Ok(rows
            .iter()
            .map(|r| LayerSummary {
                name: r.get("name"),
                kind: r.get("kind"),
                channels: r.get("channels"),
                height: r.get("height"),
                width: r.get("width"),
            })
            .collect())
    }

    pub async fn probe_sets(db: &SqlitePool) -> Result<Vec<ProbeSetSummary>, ServerFnError> {
        let rows = sqlx::query(
            "SELECT p.slug, p.name, p.source,
                (SELECT COUNT(*) FROM probe_set_images i WHERE i.probe_set_id = p.id) AS image_count,
                (SELECT COUNT(*) FROM rejected_files r WHERE r.probe_set_id = p.id) AS rejected_count
             FROM probe_sets p ORDER BY p.name",
        )
        .fetch_all(db)
        .await
        .map_err(db_error)?;
        Ok(rows
            .iter()
            .map(|r| ProbeSetSummary {
                slug: r.get("slug"),
                name: r.get("name"),
                source: r.get("source"),
                image_count: r.get("image_count"),
                rejected_count: r.get("rejected_count"),
            })
            .collect())
    }
}
