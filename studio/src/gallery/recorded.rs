//! Thumbnails from the recording: a layer that is recorded but not yet described shows each
//! unit's top probing image (by mean activation) instead of an empty box, so the grid says what
//! the units respond to before any label exists.

use super::{ImageRef, LayerView};
use sqlx::SqlitePool;
use std::collections::HashMap;
use study::setup::TopImageSource;

/// Gives each neuron of `view` (a page of layer grid of model `model`) that has no DnD
/// thumbnail its top probing image in the layer's recording, with that image's activation.
/// A layer without a (current) recording is left as it is: its units simply have no image yet.
pub async fn fill_thumbnails(
    db: &SqlitePool,
    source: &dyn TopImageSource,
    model: &str,
    view: &mut LayerView,
) -> sqlx::Result<()> {
    let missing: Vec<i64> = view.neurons.iter().filter(|n| n.thumb.is_none()).map(|n| n.unit).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let layer_id: Option<i64> = sqlx::query_scalar(
        "SELECT l.id FROM layers l JOIN models m ON m.id = l.model_id WHERE m.slug = ? AND l.name = ?",
    )
    .bind(model)
    .bind(&view.layer.name)
    .fetch_optional(db)
    .await?;
    let Some(layer_id) = layer_id else { return Ok(()) };
    let found = match source.top_images(layer_id, &missing, 1, "mean").await {
        Ok(found) => found,
        Err(why) => {
            tracing::debug!(layer = %view.layer.name, %why, "no recording thumbnails");
            return Ok(());
        }
    };
    let tops: Vec<(i64, i64, f32)> = missing
        .iter()
        .zip(&found.units)
        .filter_map(|(&unit, images)| images.first().map(|top| (unit, top.image_id, top.activation)))
        .collect();
    let ids = serde_json::to_string(&tops.iter().map(|t| t.1).collect::<Vec<_>>()).expect("ids serialise");
    let sha_of: HashMap<i64, String> =
        sqlx::query_as("SELECT id, sha256 FROM images WHERE id IN (SELECT value FROM json_each(?))")
            .bind(ids)
            .fetch_all(db)
            .await?
            .into_iter()
            .collect();
    for (unit, image_id, activation) in tops {
        let (Some(sha256), Some(n)) = (sha_of.get(&image_id), view.neurons.iter_mut().find(|n| n.unit == unit)) else {
            continue;
        };
        n.thumb = Some(ImageRef { sha256: sha256.clone(), crop: None });
        n.recorded_activation = Some(activation as f64);
    }
    Ok(())
}
