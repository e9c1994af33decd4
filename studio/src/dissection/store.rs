//! Persisting a DnD run: the `dissection_runs` row (settings and provenance), one `run_neurons`
//! row per neuron, and for each finished neuron its D_top with captions, its candidate concepts
//! with every score, their concept images, and the current `labels` (top 3). Each neuron is
//! written in one transaction, so a killed run keeps every neuron it reported and resumes after.

use crate::gallery::run::CandidateOrigin;
use anyhow::Context;
use dissect::concepts::pipeline::{DissectOptions, NeuronOutcome, NeuronResult};
use dissect::concepts::scoring::ScoringFunction;
use dissect::concepts::ComponentInfo;
use dissect::crops::{ImageMap, Summary};
use sha2::{Digest, Sha256};
use sqlx::SqlitePool;

/// What identifies a run for resuming: the same target, set, neurons and settings.
pub struct RunSpec<'a> {
    pub model_id: i64,
    pub layer_id: i64,
    pub probe_set_id: i64,
    pub neurons_spec: &'a str,
    pub neuron_seed: Option<u64>,
    pub units: &'a [usize],
    pub options: &'a DissectOptions,
    pub provenance: &'a [ComponentInfo],
    /// The background job doing the work, if any.
    pub job_id: Option<i64>,
}

/// A run ready to receive results, and the units it still has to do.
pub struct OpenRun {
    pub run_id: i64,
    pub resumed: bool,
    pub remaining: Vec<usize>,
}

/// Provenance as stored: `{"captioner": {...}, "llm": {...}, ...}`.
pub fn provenance_json(components: &[ComponentInfo]) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for c in components {
        let role = serde_json::to_value(c.role).expect("role serialises");
        map.insert(
            role.as_str().unwrap_or("unknown").to_string(),
            serde_json::to_value(c).expect("component serialises"),
        );
    }
    serde_json::Value::Object(map)
}

/// Finds an unfinished run with the same spec (resume) or creates one, with a pending row per unit.
pub async fn open_run(db: &SqlitePool, spec: &RunSpec<'_>) -> anyhow::Result<OpenRun> {
    let settings = serde_json::to_string(spec.options)?;
    let provenance = provenance_json(spec.provenance).to_string();
    let summary = spec.options.summary.as_str();
    let scoring = spec.options.scoring.as_str().replace('-', "_");
    let mut tx = crate::db::begin_write(db).await?;
    let existing: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM dissection_runs
         WHERE method = 'dnd' AND model_id = ? AND layer_id = ? AND probe_set_id = ? AND neurons_spec = ?
           AND neuron_seed IS ? AND settings_json = ? AND provenance_json = ? AND status <> 'done'
         ORDER BY id DESC LIMIT 1",
    )
    .bind(spec.model_id)
    .bind(spec.layer_id)
    .bind(spec.probe_set_id)
    .bind(spec.neurons_spec)
    .bind(spec.neuron_seed.map(|s| s as i64))
    .bind(&settings)
    .bind(&provenance)
    .fetch_optional(&mut *tx)
    .await?;
    let (run_id, resumed) = match existing {
        Some(id) => (id, true),
        None => {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO dissection_runs (method, model_id, layer_id, probe_set_id, summary, top_k, scoring,
                     neurons_spec, neuron_seed, settings_json, provenance_json, uses_substitutes, status)
                 VALUES ('dnd', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued') RETURNING id",
            )
            .bind(spec.model_id)
            .bind(spec.layer_id)
            .bind(spec.probe_set_id)
            .bind(summary)
            .bind(spec.options.top_k as i64)
            .bind(&scoring)
            .bind(spec.neurons_spec)
            .bind(spec.neuron_seed.map(|s| s as i64))
            .bind(&settings)
            .bind(&provenance)
            .bind(spec.provenance.iter().any(|c| !c.paper_equivalent) as i64)
            .fetch_one(&mut *tx)
            .await?;
            for &unit in spec.units {
                sqlx::query(
                    "INSERT INTO run_neurons (run_id, neuron_id)
                     SELECT ?, id FROM neurons WHERE layer_id = ? AND unit = ?",
                )
                .bind(id)
                .bind(spec.layer_id)
                .bind(unit as i64)
                .execute(&mut *tx)
                .await?;
            }
            (id, false)
        }
    };
    sqlx::query(
        "UPDATE dissection_runs SET status = 'running', error = NULL, job_id = COALESCE(?, job_id),
             started_at = COALESCE(started_at, strftime('%Y-%m-%dT%H:%M:%fZ','now')) WHERE id = ?",
    )
    .bind(spec.job_id)
    .bind(run_id)
    .execute(&mut *tx)
    .await?;
    let done: Vec<i64> = sqlx::query_scalar(
        "SELECT n.unit FROM run_neurons r JOIN neurons n ON n.id = r.neuron_id WHERE r.run_id = ? AND r.status = 'done'",
    )
    .bind(run_id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let remaining = spec.units.iter().copied().filter(|u| !done.contains(&(*u as i64))).collect();
    Ok(OpenRun { run_id, resumed, remaining })
}

/// Marks the run finished: `done` when every neuron is done or failed, else `cancelled`.
pub async fn close_run(db: &SqlitePool, run_id: i64, cancelled: bool) -> anyhow::Result<()> {
    let status = if cancelled { "cancelled" } else { "done" };
    sqlx::query(
        "UPDATE dissection_runs SET status = ?, finished_at = strftime('%Y-%m-%dT%H:%M:%fZ','now') WHERE id = ?",
    )
    .bind(status)
    .bind(run_id)
    .execute(db)
    .await?;
    Ok(())
}

/// The label source of leak-free DnD runs, so their labels stand beside the ordinary ones.
pub const LEAK_FREE_SOURCE: &str = "leak-free";

/// Per-run facts the neuron writer needs.
pub struct NeuronWriter {
    pub run_id: i64,
    pub layer_id: i64,
    /// The captioner's name; leak-free captions are stored per unit under a name of their own.
    pub captioner_id: String,
    pub llm_id: String,
    pub options: DissectOptions,
    /// sha256 of each probing image, by index (as the pipeline numbers them).
    pub image_sha256: Vec<String>,
    /// The recorded (mean, max) summaries of each probing image for the unit being written are
    /// looked up through this: `stats(image_index, unit)`.
    pub recorded: Box<dyn Fn(usize, usize) -> (f32, f32) + Send + Sync>,
    /// Average and top of the unit's recorded mean and max summaries: `unit_stats(unit)`.
    pub unit_stats: Box<dyn Fn(usize) -> [f64; 4] + Send + Sync>,
}

impl NeuronWriter {
    /// The label source this run writes: empty for ordinary runs.
    fn source_name(&self) -> &'static str {
        if self.options.leak_free {
            LEAK_FREE_SOURCE
        } else {
            ""
        }
    }

    /// Leak-free captions differ per unit (each withholds its own class), so each unit's are
    /// stored under a captioner name of their own.
    fn captioner_id_for(&self, unit: usize) -> String {
        if self.options.leak_free {
            format!("{} (leak-free for unit {unit})", self.captioner_id)
        } else {
            self.captioner_id.clone()
        }
    }

    /// Writes one neuron's outcome in one transaction.
    pub async fn write(&self, db: &SqlitePool, outcome: &NeuronOutcome) -> anyhow::Result<()> {
        let mut tx = crate::db::begin_write(db).await?;
        let unit = outcome.unit();
        let neuron_id: i64 = sqlx::query_scalar("SELECT id FROM neurons WHERE layer_id = ? AND unit = ?")
            .bind(self.layer_id)
            .bind(unit as i64)
            .fetch_one(&mut *tx)
            .await
            .with_context(|| format!("unit {unit} has no neuron row"))?;
        let [mean_avg, mean_top, max_avg, max_top] = (self.unit_stats)(unit);
        let run_neuron_id: i64 = sqlx::query_scalar(
            "INSERT INTO run_neurons (run_id, neuron_id, mean_summary_avg, mean_summary_top, max_summary_avg, max_summary_top,
                 started_at)
             VALUES (?, ?, ?, ?, ?, ?, strftime('%Y-%m-%dT%H:%M:%fZ','now'))
             ON CONFLICT (run_id, neuron_id) DO UPDATE SET
                 mean_summary_avg = excluded.mean_summary_avg, mean_summary_top = excluded.mean_summary_top,
                 max_summary_avg = excluded.max_summary_avg, max_summary_top = excluded.max_summary_top
             RETURNING id",
        )
        .bind(self.run_id)
        .bind(neuron_id)
        .bind(mean_avg)
        .bind(mean_top)
        .bind(max_avg)
        .bind(max_top)
        .fetch_one(&mut *tx)
        .await?;
        // A neuron retried after a failure starts from a clean slate.
        sqlx::query("DELETE FROM top_images WHERE run_neuron_id = ?").bind(run_neuron_id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM candidate_concepts WHERE run_neuron_id = ?")
            .bind(run_neuron_id)
            .execute(&mut *tx)
            .await?;

        match outcome {
            NeuronOutcome::Failed { stage, reason, .. } => {
                sqlx::query(
                    "UPDATE run_neurons SET status = 'failed', last_stage = ?, error = ?,
                         finished_at = strftime('%Y-%m-%dT%H:%M:%fZ','now') WHERE id = ?",
                )
                .bind(stage.as_str())
                .bind(reason)
                .bind(run_neuron_id)
                .execute(&mut *tx)
                .await?;
            }
            NeuronOutcome::Done(result) => {
                self.write_result(&mut tx, run_neuron_id, neuron_id, result).await?;
                sqlx::query(
                    "UPDATE run_neurons SET status = 'done', last_stage = 'scores', error = NULL,
                         finished_at = strftime('%Y-%m-%dT%H:%M:%fZ','now') WHERE id = ?",
                )
                .bind(run_neuron_id)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn image_id(tx: &mut sqlx::SqliteConnection, sha256: &str) -> anyhow::Result<i64> {
        sqlx::query_scalar("SELECT id FROM images WHERE sha256 = ?")
            .bind(sha256)
            .fetch_one(tx)
            .await
            .with_context(|| format!("image {sha256} is not registered"))
    }

    async fn write_result(
        &self,
        tx: &mut sqlx::SqliteConnection,
        run_neuron_id: i64,
        neuron_id: i64,
        r: &NeuronResult,
    ) -> anyhow::Result<()> {
        for (rank, entry) in r.top.iter().enumerate() {
            let image_id = Self::image_id(tx, &self.image_sha256[entry.image_index]).await?;
            let b = entry.crop;
            let simplified = r.candidates.simplified.get(rank);
            let caption_id: i64 = sqlx::query_scalar(
                "INSERT INTO captions (image_id, crop_x0, crop_y0, crop_x1, crop_y1, captioner_id, llm_id,
                     raw_caption, simplified_caption)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (image_id, region_key, captioner_id, llm_id) DO UPDATE SET
                     raw_caption = excluded.raw_caption,
                     simplified_caption = COALESCE(excluded.simplified_caption, simplified_caption)
                 RETURNING id",
            )
            .bind(image_id)
            .bind(b.map(|b| b.x0 as i64))
            .bind(b.map(|b| b.y0 as i64))
            .bind(b.map(|b| b.x1 as i64))
            .bind(b.map(|b| b.y1 as i64))
            .bind(self.captioner_id_for(r.unit))
            .bind(&self.llm_id)
            .bind(&entry.caption)
            .bind(simplified)
            .fetch_one(&mut *tx)
            .await?;
            // Full images have both recorded summaries; a crop only the run's own.
            let (act_mean, act_max) = match (b, self.options.summary) {
                (None, _) => {
                    let (m, x) = (self.recorded)(entry.image_index, r.unit);
                    (Some(m as f64), Some(x as f64))
                }
                (Some(_), Summary::Mean) => (Some(entry.activation as f64), None),
                (Some(_), Summary::Max) => (None, Some(entry.activation as f64)),
            };
            // The source image's map, also on a crop's row: the overlay covers the whole image.
            let map = entry.map.as_ref();
            let sha256 = &self.image_sha256[entry.image_index];
            sqlx::query(
                "INSERT INTO top_images (run_neuron_id, rank, image_id, is_crop, crop_x0, crop_y0, crop_x1, crop_y1,
                     act_mean, act_max, caption_id, map_h, map_w, map_f32, map_x0, map_y0, map_x1, map_y1, map_sha256)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(run_neuron_id)
            .bind(rank as i64 + 1)
            .bind(image_id)
            .bind(b.is_some() as i64)
            .bind(b.map(|b| b.x0 as i64))
            .bind(b.map(|b| b.y0 as i64))
            .bind(b.map(|b| b.x1 as i64))
            .bind(b.map(|b| b.y1 as i64))
            .bind(act_mean)
            .bind(act_max)
            .bind(caption_id)
            .bind(map.map(|m| m.map.height as i64))
            .bind(map.map(|m| m.map.width as i64))
            .bind(map.map(|m| m.map.to_le_bytes()))
            .bind(map.map(|m| m.view.x0 as i64))
            .bind(map.map(|m| m.view.y0 as i64))
            .bind(map.map(|m| m.view.x1 as i64))
            .bind(map.map(|m| m.view.y1 as i64))
            .bind(map.map(|m| heatmap_key(sha256, m)))
            .execute(&mut *tx)
            .await?;
        }

        // Ranks within D_new (1 = best) for the concept_images rows.
        let all: Vec<f32> = r.concepts.iter().flat_map(|c| c.images.iter().map(|i| i.activation)).collect();
        let mut order: Vec<usize> = (0..all.len()).collect();
        order.sort_by(|&a, &b| all[b].total_cmp(&all[a]));
        let mut rank_of = vec![0usize; all.len()];
        for (pos, &i) in order.iter().enumerate() {
            rank_of[i] = pos + 1;
        }

        let mut concept_ids = Vec::with_capacity(r.concepts.len());
        let mut flat = 0;
        let label_set: Vec<&str> = r.concepts.iter().map(|c| c.label.as_str()).collect();
        for (position, c) in r.concepts.iter().enumerate() {
            let llm_gave_it =
                r.candidates.labels.iter().zip(&r.candidates.support).any(|(l, &n)| *l == c.label && n > 0);
            let origin = if r.candidates.grounded.contains(&c.label) && !llm_gave_it {
                CandidateOrigin::WordNet
            } else if r.candidates.fell_back {
                CandidateOrigin::Fallback
            } else if c.label.strip_suffix(" background").is_some_and(|base| label_set.contains(&base)) {
                CandidateOrigin::BackgroundRule
            } else {
                CandidateOrigin::Llm
            };
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO candidate_concepts (run_neuron_id, text, position, origin, score_mean, score_topk_squared,
                     score_image_products, score_topk_squared_image_products, selected)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            )
            .bind(run_neuron_id)
            .bind(&c.label)
            .bind(position as i64)
            .bind(origin.as_str())
            .bind(c.scores.mean)
            .bind(c.scores.topk_squared)
            .bind(c.scores.image_products)
            .bind(c.scores.combined)
            .bind((r.best == Some(position)) as i64)
            .fetch_one(&mut *tx)
            .await?;
            concept_ids.push(id);
            for img in &c.images {
                let known: Option<i64> = sqlx::query_scalar("SELECT id FROM images WHERE sha256 = ?")
                    .bind(&img.key)
                    .fetch_optional(&mut *tx)
                    .await?;
                // Retrieved images are probing images (registered); generated ones are stored
                // by their source and registered there.
                if let Some(image_id) = known {
                    sqlx::query(
                        "INSERT INTO concept_images (concept_id, source, image_id, activation, rank)
                         VALUES (?, 'retrieved', ?, ?, ?) ON CONFLICT (concept_id, image_id) DO NOTHING",
                    )
                    .bind(id)
                    .bind(image_id)
                    .bind(img.activation as f64)
                    .bind(rank_of[flat] as i64)
                    .execute(&mut *tx)
                    .await?;
                }
                flat += 1;
            }
        }

        // Labels: the top 3, superseding this neuron's earlier DnD labels. A neuron redone within
        // the same run (after a kill) replaces that run's own rows.
        sqlx::query("DELETE FROM labels WHERE run_id = ? AND neuron_id = ?")
            .bind(self.run_id)
            .bind(neuron_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE labels SET is_current = 0 WHERE neuron_id = ? AND method = 'dnd' AND source_name = ? AND is_current = 1")
            .bind(neuron_id)
            .bind(self.source_name())
            .execute(&mut *tx)
            .await?;
        for (rank, &ci) in r.top3.iter().enumerate() {
            let c = &r.concepts[ci];
            sqlx::query(
                "INSERT INTO labels (neuron_id, layer_id, method, source_name, rank, text, score, run_id, concept_id)
                 VALUES (?, ?, 'dnd', ?, ?, ?, ?, ?, ?)",
            )
            .bind(neuron_id)
            .bind(self.layer_id)
            .bind(self.source_name())
            .bind(rank as i64 + 1)
            .bind(&c.label)
            .bind(self.options.scoring.of(&c.scores))
            .bind(self.run_id)
            .bind(concept_ids[ci])
            .execute(&mut *tx)
            .await?;
        }
        // The best concept under each scoring function, one label source each (rank 1 only),
        // so the paper's Table 4 study — which scoring function do raters prefer? — needs no
        // second run.
        // Every variant of an earlier run is superseded, even one this result has no entry for.
        for function in ScoringFunction::ALL {
            sqlx::query("UPDATE labels SET is_current = 0 WHERE neuron_id = ? AND method = 'dnd' AND source_name = ? AND is_current = 1")
                .bind(neuron_id)
                .bind(scoring_variant_source(self.source_name(), function))
                .execute(&mut *tx)
                .await?;
        }
        for &(function, ci) in &r.best_by_scoring {
            let source = scoring_variant_source(self.source_name(), function);
            let c = &r.concepts[ci];
            sqlx::query(
                "INSERT INTO labels (neuron_id, layer_id, method, source_name, rank, text, score, run_id, concept_id, is_variant)
                 VALUES (?, ?, 'dnd', ?, 1, ?, ?, ?, ?, 1)",
            )
            .bind(neuron_id)
            .bind(self.layer_id)
            .bind(&source)
            .bind(&c.label)
            .bind(function.of(&c.scores))
            .bind(self.run_id)
            .bind(concept_ids[ci])
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }
}

/// The label source of a run's best concept under `function` ("mean scoring", or "leak-free,
/// mean scoring" for a leak-free run), beside the run's own source `base`.
pub fn scoring_variant_source(base: &str, function: ScoringFunction) -> String {
    if base.is_empty() {
        format!("{} scoring", function.as_str())
    } else {
        format!("{base}, {} scoring", function.as_str())
    }
}

/// Content key of a stored map on its image (`top_images.map_sha256`, the heatmap's URL): sha256
/// over the image's sha256, the map's grid and values, and the region it covers, so a URL never
/// names two different overlays.
pub fn heatmap_key(image_sha256: &str, m: &ImageMap) -> String {
    let mut h = Sha256::new();
    h.update(b"dnd-studio heatmap map v1\n");
    h.update(image_sha256.as_bytes());
    for v in [
        m.map.height as u64,
        m.map.width as u64,
        m.view.x0 as u64,
        m.view.y0 as u64,
        m.view.x1 as u64,
        m.view.y1 as u64,
    ] {
        h.update(v.to_le_bytes());
    }
    h.update(m.map.to_le_bytes());
    hex::encode(h.finalize())
}

/// Unit statistics of recorded summaries: [mean-summary avg, top, max-summary avg, top].
pub fn unit_stats(mean: &[f32], max: &[f32]) -> [f64; 4] {
    let stats = |v: &[f32]| {
        let finite: Vec<f64> = v.iter().filter(|x| x.is_finite()).map(|&x| x as f64).collect();
        if finite.is_empty() {
            return (0.0, 0.0);
        }
        (finite.iter().sum::<f64>() / finite.len() as f64, finite.iter().cloned().fold(f64::MIN, f64::max))
    };
    let (a, b) = stats(mean);
    let (c, d) = stats(max);
    [a, b, c, d]
}
