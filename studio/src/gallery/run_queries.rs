//! The query behind [`super::run`]'s views: one neuron's latest DnD run (or latest failure).

use super::queries::crop_of;
use super::run::*;
use super::ImageRef;
use dissect::model::LayerKind;
use serde::Deserialize;
use sqlx::{Row, SqlitePool};
use std::collections::HashMap;

/// What the provenance JSON holds per role (`{"captioner": {...}, "llm": {...}, ...}`).
#[derive(Deserialize)]
struct StoredComponent {
    name: Option<String>,
    #[serde(default)]
    paper_equivalent: bool,
    note: Option<String>,
}

/// What the run's settings JSON says about its images (the engine's `DissectOptions`).
#[derive(Deserialize, Default)]
struct StoredSettings {
    partition: Option<StoredPartition>,
    #[serde(default)]
    leak_free: bool,
}

#[derive(Deserialize)]
struct StoredPartition {
    probe: u64,
    concept_pool: u64,
    evaluation: u64,
}

impl StoredSettings {
    fn d_probe(&self) -> Option<String> {
        self.partition.as_ref().map(|p| {
            format!(
                "{} probe-split images ({} held out as the concept pool, {} for evaluation)",
                p.probe, p.concept_pool, p.evaluation
            )
        })
    }

    fn leak_free(&self) -> bool {
        self.leak_free
    }
}

/// Every role of a run, in the method's order; a role the provenance does not record shows
/// as not recorded, never as the paper's component.
fn components(mut stored: HashMap<String, StoredComponent>) -> Vec<ComponentView> {
    ROLES
        .iter()
        .map(|role| match stored.remove(*role) {
            Some(s) => ComponentView {
                role: role.to_string(),
                name: s.name,
                paper_equivalent: s.paper_equivalent,
                note: s.note,
            },
            None => ComponentView { role: role.to_string(), name: None, paper_equivalent: false, note: None },
        })
        .collect()
}

/// The neuron's latest done DnD run and any newer failure; `None` when the model, layer or unit
/// does not exist. (A neuron without a done run gets its recorded top images from
/// [`super::recorded::top_images`], which needs the server's top-image source.)
pub async fn neuron_run(db: &SqlitePool, model: &str, layer: &str, unit: i64) -> sqlx::Result<Option<NeuronRunView>> {
    let neuron_id: Option<i64> = sqlx::query_scalar(
        "SELECT n.id FROM neurons n JOIN layers l ON l.id = n.layer_id JOIN models m ON m.id = l.model_id
         WHERE m.slug = ? AND l.name = ? AND n.unit = ?",
    )
    .bind(model)
    .bind(layer)
    .bind(unit)
    .fetch_optional(db)
    .await?;
    let Some(neuron_id) = neuron_id else { return Ok(None) };

    let done = sqlx::query(
        "SELECT rn.id AS run_neuron_id, r.id AS run_id, r.status, r.finished_at, r.summary, r.scoring, r.top_k,
                r.uses_substitutes, r.provenance_json, r.settings_json, l.kind AS layer_kind
         FROM run_neurons rn JOIN dissection_runs r ON r.id = rn.run_id JOIN layers l ON l.id = r.layer_id
         WHERE rn.neuron_id = ? AND rn.status = 'done' AND r.method = 'dnd'
         ORDER BY rn.run_id DESC LIMIT 1",
    )
    .bind(neuron_id)
    .fetch_optional(db)
    .await?;
    let done_run = done.as_ref().map(|r| r.get::<i64, _>("run_id")).unwrap_or(0);
    let failed = sqlx::query(
        "SELECT rn.run_id, rn.last_stage, rn.error, rn.finished_at
         FROM run_neurons rn JOIN dissection_runs r ON r.id = rn.run_id
         WHERE rn.neuron_id = ? AND rn.status = 'failed' AND r.method = 'dnd' AND rn.run_id > ?
         ORDER BY rn.run_id DESC LIMIT 1",
    )
    .bind(neuron_id)
    .bind(done_run)
    .fetch_optional(db)
    .await?
    .map(|r| RunFailure {
        run_id: r.get("run_id"),
        stage: r.get("last_stage"),
        error: r.get::<Option<String>, _>("error").unwrap_or_default(),
        finished_at: r.get("finished_at"),
    });

    let Some(run) = done else { return Ok(Some(NeuronRunView { done: None, failed, recorded: Vec::new() })) };
    let run_neuron_id: i64 = run.get("run_neuron_id");
    let top = sqlx::query(
        "SELECT t.rank, i.sha256, i.width, i.height, t.crop_x0, t.crop_y0, t.crop_x1, t.crop_y1, t.act_mean, t.act_max,
                c.raw_caption, c.simplified_caption, t.map_sha256
         FROM top_images t JOIN images i ON i.id = t.image_id LEFT JOIN captions c ON c.id = t.caption_id
         WHERE t.run_neuron_id = ? ORDER BY t.rank",
    )
    .bind(run_neuron_id)
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| TopImageView {
        rank: r.get("rank"),
        image: ImageRef { sha256: r.get("sha256"), crop: crop_of(r) },
        width: r.get("width"),
        height: r.get("height"),
        act_mean: r.get("act_mean"),
        act_max: r.get("act_max"),
        raw_caption: r.get("raw_caption"),
        simplified_caption: r.get("simplified_caption"),
        heatmap: r.get("map_sha256"),
    })
    .collect();

    let mut candidates: Vec<(i64, CandidateView)> = sqlx::query(
        "SELECT id, text, origin, score_mean, score_topk_squared, score_image_products,
                score_topk_squared_image_products, selected
         FROM candidate_concepts WHERE run_neuron_id = ? ORDER BY position",
    )
    .bind(run_neuron_id)
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| {
        (
            r.get("id"),
            CandidateView {
                text: r.get("text"),
                origin: CandidateOrigin::from_stored(r.get("origin")),
                score_mean: r.get("score_mean"),
                score_topk_squared: r.get("score_topk_squared"),
                score_image_products: r.get("score_image_products"),
                score_combined: r.get("score_topk_squared_image_products"),
                selected: r.get::<i64, _>("selected") == 1,
                images: Vec::new(),
            },
        )
    })
    .collect();
    let images = sqlx::query(
        "SELECT ci.concept_id, ci.source, ci.activation, ci.rank, i.sha256
         FROM concept_images ci JOIN candidate_concepts cc ON cc.id = ci.concept_id JOIN images i ON i.id = ci.image_id
         WHERE cc.run_neuron_id = ?
         ORDER BY ci.concept_id, ci.activation IS NULL, ci.activation DESC, ci.id",
    )
    .bind(run_neuron_id)
    .fetch_all(db)
    .await?;
    for r in &images {
        let concept: i64 = r.get("concept_id");
        if let Some((_, c)) = candidates.iter_mut().find(|(id, _)| *id == concept) {
            c.images.push(ConceptImageView {
                image: ImageRef { sha256: r.get("sha256"), crop: None },
                source: r.get("source"),
                activation: r.get("activation"),
                rank: r.get("rank"),
            });
        }
    }

    // A malformed provenance reads as empty: every role then shows as not recorded.
    let provenance = run
        .try_get::<sqlx::types::Json<HashMap<String, StoredComponent>>, _>("provenance_json")
        .map(|j| j.0)
        .unwrap_or_default();
    let settings =
        run.try_get::<sqlx::types::Json<StoredSettings>, _>("settings_json").map(|j| j.0).unwrap_or_default();
    Ok(Some(NeuronRunView {
        done: Some(RunDetails {
            run_id: run.get("run_id"),
            run_status: run.get("status"),
            finished_at: run.get("finished_at"),
            summary: run.get("summary"),
            scoring: run.get("scoring"),
            top_k: run.get("top_k"),
            spatial: LayerKind::parse(run.get::<&str, _>("layer_kind")) == Some(LayerKind::Conv),
            uses_substitutes: run.get::<i64, _>("uses_substitutes") == 1,
            d_probe: settings.d_probe(),
            leak_free: settings.leak_free(),
            components: components(provenance),
            top,
            candidates: candidates.into_iter().map(|(_, c)| c).collect(),
        }),
        failed,
        recorded: Vec::new(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_is_listed_and_unrecorded_ones_are_not_the_papers() {
        let stored: std::collections::HashMap<String, StoredComponent> = serde_json::from_str(
            r#"{"llm": {"name": "gpt-4o-mini", "paper_equivalent": true, "role": "llm"},
                "captioner": {"name": "lite2 classes", "paper_equivalent": false, "note": "not BLIP"}}"#,
        )
        .unwrap();
        let c = components(stored);
        assert_eq!(c.iter().map(|c| c.role.as_str()).collect::<Vec<_>>(), ROLES);
        assert!(!c[0].paper_equivalent && c[0].note.as_deref() == Some("not BLIP"));
        assert!(c[1].paper_equivalent);
        assert!(c[2..].iter().all(|c| c.name.is_none() && !c.paper_equivalent));
    }
}
