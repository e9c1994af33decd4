//! A small labelled model for tests and benchmarks (feature `fixture`): two layers, labels from
//! three methods stored as imports, images, and a top-image source answering from a fixed table.

use crate::setup::{LayerTopImages, ShownImage, TopImageSource};
use sqlx::SqlitePool;
use std::future::Future;
use std::pin::Pin;

pub const MODEL: &str = "toy";
pub const LAYERS: [(&str, i64); 2] = [("block3", 8), ("block5", 6)];
pub const IMAGES: i64 = 12;

fn sha(i: i64) -> String {
    format!("{:064x}", i + 1)
}

/// The label text a method gives a unit: distinct per method and unit.
pub fn label(method: &str, layer: &str, unit: i64) -> String {
    format!("{method} concept {layer}-{unit}")
}

/// Model `toy` with both layers into a migrated database; every unit labelled by dnd and milan;
/// clip-dissect labels only the even units.
pub async fn seed(db: &SqlitePool) {
    let model_id: i64 = sqlx::query_scalar(
        "INSERT INTO models (slug, name, source, builtin_key, weights_path, weights_sha256, fingerprint,
             input_height, input_width, preprocessing_json)
         VALUES (?, 'Toy', 'builtin', 'toy', '/dev/null', ?, ?, 32, 32, '{}') RETURNING id",
    )
    .bind(MODEL)
    .bind(sha(1000))
    .bind(sha(1001))
    .fetch_one(db)
    .await
    .unwrap();
    for i in 0..IMAGES {
        sqlx::query("INSERT INTO images (sha256, width, height, format, byte_size) VALUES (?, 32, 32, 'png', 100)")
            .bind(sha(i))
            .execute(db)
            .await
            .unwrap();
    }
    for (pos, (layer, channels)) in LAYERS.iter().enumerate() {
        let layer_id: i64 = sqlx::query_scalar(
            "INSERT INTO layers (model_id, name, kind, channels, height, width, position)
             VALUES (?, ?, 'conv', ?, 4, 4, ?) RETURNING id",
        )
        .bind(model_id)
        .bind(layer)
        .bind(channels)
        .bind(pos as i64)
        .fetch_one(db)
        .await
        .unwrap();
        for unit in 0..*channels {
            sqlx::query("INSERT INTO neurons (layer_id, unit) VALUES (?, ?)")
                .bind(layer_id)
                .bind(unit)
                .execute(db)
                .await
                .unwrap();
        }
    }
    for method in ["dnd", "milan", "clip-dissect"] {
        let import_id: i64 = sqlx::query_scalar(
            "INSERT INTO label_imports (model_id, method, format, file_name, file_sha256, row_count)
             VALUES (?, ?, 'json', 'fixture.json', ?, 0) RETURNING id",
        )
        .bind(model_id)
        .bind(method)
        .bind(sha(2000))
        .fetch_one(db)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO labels (neuron_id, layer_id, method, rank, text, import_id)
             SELECT n.id, n.layer_id, ?1, 1, ?1 || ' concept ' || l.name || '-' || n.unit, ?2
             FROM neurons n JOIN layers l ON l.id = n.layer_id
             WHERE ?1 <> 'clip-dissect' OR n.unit % 2 = 0",
        )
        .bind(method)
        .bind(import_id)
        .execute(db)
        .await
        .unwrap();
    }
}

/// Top images by a made-up activation: unit u's top images are images u, u+1, … (mod 12).
pub struct FixedImages {
    pub db: SqlitePool,
}

impl TopImageSource for FixedImages {
    fn top_images<'a>(
        &'a self,
        _layer_id: i64,
        units: &'a [i64],
        k: usize,
        _summary: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<LayerTopImages, String>> + Send + 'a>> {
        Box::pin(async move {
            let ids: Vec<i64> =
                sqlx::query_scalar("SELECT id FROM images ORDER BY sha256").fetch_all(&self.db).await.unwrap();
            Ok(LayerTopImages {
                probe_set_id: None,
                units: units
                    .iter()
                    .map(|&u| {
                        (0..k.min(ids.len()))
                            .map(|i| ShownImage {
                                image_id: ids[(u as usize + i) % ids.len()],
                                activation: 10.0 - i as f32,
                            })
                            .collect()
                    })
                    .collect(),
            })
        })
    }
}
