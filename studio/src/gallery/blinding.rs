//! Blinding outside the rater page. A rater sees a task's descriptions without their methods; the
//! public gallery shows the same texts with their methods. While a study is open, a rater could
//! paste a description into the layer page's filter, the concept search or an export and learn
//! which method wrote it. So, for visitors without an admin session, the labels of every layer
//! that an open study rates are hidden (the grid, neuron pages, the neuron's DnD run, concept
//! search and exports), until the study closes. Images, units and class names stay visible: raters
//! see the images anyway. `study.blind_gallery = false` turns this off for a deployment.

use serde::{Deserialize, Serialize};

/// Who is looking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    /// An admin session, or a deployment without blinding: sees every label.
    Trusted,
    /// Anyone else: sees no label of a layer that an open study rates.
    Public,
}

/// Why a layer's labels are hidden from this visitor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Blinding {
    /// Open studies that rate neurons of the layer (their names are not shown publicly).
    pub open_studies: i64,
}

impl Blinding {
    /// What the gallery says in place of the labels.
    pub fn notice(&self) -> String {
        let studies = if self.open_studies == 1 {
            "a rating study".to_string()
        } else {
            format!("{} rating studies", self.open_studies)
        };
        format!(
            "Labels of this layer are hidden while {studies} of its neurons is open, so that raters cannot look up \
             which method wrote a description. They return when the study closes; an admin sees them now."
        )
    }
}

#[cfg(feature = "service")]
pub use queries::*;

#[cfg(feature = "service")]
mod queries {
    use super::*;
    use sqlx::SqliteConnection;
    use std::collections::HashSet;

    /// Open studies with an item on a neuron of layer `?1`.
    const OPEN_STUDIES_OF_LAYER: &str = "SELECT COUNT(*) FROM studies s WHERE s.status = 'open' AND EXISTS (
             SELECT 1 FROM study_items i JOIN neurons n ON n.id = i.neuron_id
             WHERE i.study_id = s.id AND n.layer_id = ?1)";

    /// Whether layer `layer_id`'s labels are hidden from `audience`, and why.
    pub async fn of_layer(
        conn: &mut SqliteConnection,
        layer_id: i64,
        audience: Audience,
    ) -> sqlx::Result<Option<Blinding>> {
        if audience == Audience::Trusted {
            return Ok(None);
        }
        let open_studies: i64 = sqlx::query_scalar(OPEN_STUDIES_OF_LAYER).bind(layer_id).fetch_one(conn).await?;
        Ok((open_studies > 0).then_some(Blinding { open_studies }))
    }

    /// The layers of model `model_id` whose labels are hidden from `audience`.
    pub async fn hidden_layers(
        conn: &mut SqliteConnection,
        model_id: i64,
        audience: Audience,
    ) -> sqlx::Result<HashSet<i64>> {
        if audience == Audience::Trusted {
            return Ok(HashSet::new());
        }
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT DISTINCT n.layer_id FROM studies s JOIN study_items i ON i.study_id = s.id
             JOIN neurons n ON n.id = i.neuron_id JOIN layers l ON l.id = n.layer_id
             WHERE s.status = 'open' AND l.model_id = ?",
        )
        .bind(model_id)
        .fetch_all(conn)
        .await?;
        Ok(ids.into_iter().collect())
    }

    /// Whether layer `layer` of the model with slug `model` is hidden from `audience` (`None` also
    /// when the layer does not exist; its callers answer that themselves).
    pub async fn of_layer_named(
        conn: &mut SqliteConnection,
        model: &str,
        layer: &str,
        audience: Audience,
    ) -> sqlx::Result<Option<Blinding>> {
        if audience == Audience::Trusted {
            return Ok(None);
        }
        match crate::gallery::queries::layer_id(conn, model, layer).await? {
            Some(id) => of_layer(conn, id, audience).await,
            None => Ok(None),
        }
    }
}
