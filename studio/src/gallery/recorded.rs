//! Thumbnails from the recording: a layer that is recorded but not yet described shows each
//! unit's top probing image (by mean activation) instead of an empty box, so the grid says what
//! the units respond to before any label exists.

use super::{ImageRef, LayerView, RecordedImage};
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
    let tops = top_images(db, source, model, &view.layer.name, &missing, 1).await?;
    for (unit, images) in missing.iter().zip(tops) {
        let (Some(top), Some(n)) = (images.into_iter().next(), view.neurons.iter_mut().find(|n| n.unit == *unit))
        else {
            continue;
        };
        n.thumb = Some(top.image);
        n.recorded_activation = Some(top.activation);
    }
    Ok(())
}

/// The `k` top probing images (by mean activation) of each of `units` of `layer` in its
/// recording, in the order asked; empty lists when the layer has no current recording.
pub async fn top_images(
    db: &SqlitePool,
    source: &dyn TopImageSource,
    model: &str,
    layer: &str,
    units: &[i64],
    k: usize,
) -> sqlx::Result<Vec<Vec<RecordedImage>>> {
    let none = || units.iter().map(|_| Vec::new()).collect();
    let Some(layer_id) = super::queries::layer_id(&mut *db.acquire().await?, model, layer).await? else {
        return Ok(none());
    };
    let found = match source.top_images(layer_id, units, k, "mean").await {
        Ok(found) => found,
        Err(why) => {
            tracing::debug!(%layer, %why, "no recorded top images");
            return Ok(none());
        }
    };
    let ids: Vec<i64> = found.units.iter().flatten().map(|i| i.image_id).collect();
    let sha_of: HashMap<i64, String> =
        sqlx::query_as("SELECT id, sha256 FROM images WHERE id IN (SELECT value FROM json_each(?))")
            .bind(serde_json::to_string(&ids).expect("ids serialise"))
            .fetch_all(db)
            .await?
            .into_iter()
            .collect();
    Ok(found
        .units
        .into_iter()
        .map(|images| {
            images
                .into_iter()
                .filter_map(|i| {
                    let sha256 = sha_of.get(&i.image_id)?.clone();
                    Some(RecordedImage { image: ImageRef { sha256, crop: None }, activation: i.activation as f64 })
                })
                .collect()
        })
        .collect())
}
