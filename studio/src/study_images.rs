//! The images a rating-study task shows: a neuron's top probing images by mean (or max)
//! activation, read from the layer's recorded activation summaries — the paper's MTurk tasks
//! showed the top-10 images of the probing set, without crops or highlighting.

use dissect::crops::Summary;
use dissect::record::{top_k, ActivationStore, CacheKey};
use sqlx::{Row, SqlitePool};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use study::setup::{LayerTopImages, ShownImage, TopImageSource};

pub struct RecordedTopImages {
    pub db: SqlitePool,
    /// Root of the activation caches (`<data_dir>/activations`).
    pub activation_root: PathBuf,
}

impl RecordedTopImages {
    async fn load(&self, layer_id: i64, units: &[i64], k: usize, summary: &str) -> Result<LayerTopImages, String> {
        let summary = Summary::parse(summary).ok_or_else(|| format!("unknown activation summary `{summary}`"))?;
        let db_err = |e: sqlx::Error| format!("database error: {e}");
        let cache = sqlx::query(
            "SELECT probe_set_id, model_fingerprint, set_sha256, layer_name, channels FROM activation_caches
             WHERE layer_id = ? AND status = 'complete' ORDER BY updated_at DESC, id DESC LIMIT 1",
        )
        .bind(layer_id)
        .fetch_optional(&self.db)
        .await
        .map_err(db_err)?
        .ok_or("no recorded activations for this layer yet: run `dnd record` (or a DnD run) on it first")?;
        let probe_set_id: i64 = cache.get("probe_set_id");
        // Rows of the activation file are the set's images by position (sorted by content hash).
        let images: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT i.id, i.sha256, p.split FROM probe_set_images p JOIN images i ON i.id = p.image_id
             WHERE p.probe_set_id = ? AND p.position IS NOT NULL ORDER BY p.position",
        )
        .bind(probe_set_id)
        .fetch_all(&self.db)
        .await
        .map_err(db_err)?;
        let key = CacheKey::new(cache.get::<String, _>("model_fingerprint"), cache.get::<String, _>("set_sha256"));
        let layer: String = cache.get("layer_name");
        let channels = cache.get::<i64, _>("channels") as usize;
        let root = self.activation_root.clone();
        let units = units.to_vec();
        tokio::task::spawn_blocking(move || {
            let shas: Vec<&str> = images.iter().map(|i| i.1.as_str()).collect();
            let (sums, _) = ActivationStore::new(root).load(&key, &layer, &shas, channels).ok_or_else(|| {
                format!("the recorded activations of layer `{layer}` are missing or stale; record the layer again")
            })?;
            let per_unit = units
                .iter()
                .map(|&u| {
                    // Held-out images are the concept step's retrieval pool, not probing images.
                    top_k(&sums, u as usize, sums.n_images, summary)
                        .into_iter()
                        .filter(|(row, _)| images[*row].2 == "probe")
                        .take(k)
                        .map(|(row, activation)| ShownImage { image_id: images[row].0, activation })
                        .collect()
                })
                .collect();
            Ok(LayerTopImages { probe_set_id: Some(probe_set_id), units: per_unit })
        })
        .await
        .map_err(|e| format!("reading activations failed: {e}"))?
    }
}

impl TopImageSource for RecordedTopImages {
    fn top_images<'a>(
        &'a self,
        layer_id: i64,
        units: &'a [i64],
        k: usize,
        summary: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<LayerTopImages, String>> + Send + 'a>> {
        Box::pin(self.load(layer_id, units, k, summary))
    }
}
