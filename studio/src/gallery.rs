//! What the gallery's pages read about neurons, shared by the layer grid and concept search.

use sqlx::{Row, SqlitePool};
use std::collections::HashMap;

/// An image by content hash, cropped as the run cropped it.
#[derive(Debug, Clone, PartialEq)]
pub struct TopImage {
    pub sha256: String,
    /// `[x0, y0, x1, y1]` in source pixels; `None` = the whole image.
    pub crop: Option<[i64; 4]>,
}

/// Each given neuron's rank-1 top image (cropped as its run cropped it) from its latest finished
/// DnD run; neurons without one are left out.
pub async fn rank1_top_images(db: &SqlitePool, neuron_ids: &[i64]) -> sqlx::Result<HashMap<i64, TopImage>> {
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
    Ok(rows
        .iter()
        .map(|r| {
            let crop: [Option<i64>; 4] = [r.get("crop_x0"), r.get("crop_y0"), r.get("crop_x1"), r.get("crop_y1")];
            let crop = match crop {
                [Some(a), Some(b), Some(c), Some(d)] => Some([a, b, c, d]),
                _ => None,
            };
            (r.get("neuron_id"), TopImage { sha256: r.get("sha256"), crop })
        })
        .collect())
}
