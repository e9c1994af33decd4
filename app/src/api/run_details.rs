//! One neuron's latest DnD run, for the neuron page: which component played each role (and
//! whether it is the paper's or a substitute), D_top with captions, and the candidate concepts
//! with every score and their concept images. Kept apart from `get_neuron` so the label
//! comparison stays one small query.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

pub use studio::gallery::ImageRef;

/// Which concrete component played one role of the method in a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComponentView {
    /// captioner, llm, concept_images, image_encoder, text_encoder.
    pub role: String,
    /// What was used; `None` when the run's provenance does not record this role.
    pub name: Option<String>,
    /// True when it is the same kind of component the paper used.
    pub paper_equivalent: bool,
    /// For a substitute: how it differs from the paper's component.
    pub note: Option<String>,
}

/// The five roles in the order the method uses them.
pub const ROLES: [&str; 5] = ["captioner", "llm", "concept_images", "image_encoder", "text_encoder"];

/// Human name of a role.
pub fn role_title(role: &str) -> &'static str {
    match role {
        "captioner" => "Captioner",
        "llm" => "Language model",
        "concept_images" => "Concept images",
        "image_encoder" => "Image encoder",
        "text_encoder" => "Text encoder",
        _ => "Other",
    }
}

/// The component the paper (Bai et al., TMLR 2025) used for a role.
pub fn paper_component(role: &str) -> &'static str {
    match role {
        "captioner" => "BLIP base (capfilt-large)",
        "llm" => "GPT-3.5 Turbo",
        "concept_images" => "Stable Diffusion v1-4 (50 steps, DPM-Solver, seed 0)",
        "image_encoder" => "CLIP ViT-B/16 image encoder",
        "text_encoder" => "all-mpnet-base-v2 / CLIP text encoder",
        _ => "—",
    }
}

/// One image of D_top.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopImageView {
    pub rank: i64,
    pub image: ImageRef,
    /// Size of the whole source image, for drawing the crop box over it.
    pub width: i64,
    pub height: i64,
    /// Activation under the spatial-mean / spatial-max summary (a crop has only the run's).
    pub act_mean: Option<f64>,
    pub act_max: Option<f64>,
    pub raw_caption: Option<String>,
    pub simplified_caption: Option<String>,
    /// Content key of the unit's activation map on the whole image (`top_images.map_sha256`);
    /// `None` for a layer without spatial maps or a run stored before maps were kept.
    pub heatmap: Option<String>,
}

impl TopImageView {
    /// URL of the activation-heatmap overlay of the whole image at thumbnail width `w` (96, 160,
    /// 320): a transparent PNG the size of `/img/{sha256}?w={w}`, to lay over it.
    pub fn heatmap_url(&self, w: u32) -> Option<String> {
        self.heatmap.as_ref().map(|key| format!("/heatmap/{key}?w={w}"))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConceptImageView {
    pub image: ImageRef,
    /// `generated` or `retrieved`.
    pub source: String,
    /// Activation of the neuron on it under the run's summary.
    pub activation: Option<f64>,
    /// Rank within all of the neuron's concept images (1 = highest activation).
    pub rank: Option<i64>,
}

/// One candidate concept with its score under every scoring function.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CandidateView {
    pub text: String,
    /// `llm`, `background_rule` or `fallback`.
    pub origin: String,
    pub score_mean: Option<f64>,
    pub score_topk_squared: Option<f64>,
    pub score_image_products: Option<f64>,
    pub score_combined: Option<f64>,
    pub selected: bool,
    pub images: Vec<ConceptImageView>,
}

/// A finished neuron of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunDetails {
    pub run_id: i64,
    /// The run's own status (a run still going on already shows its finished neurons).
    pub run_status: String,
    pub finished_at: Option<String>,
    /// `mean` or `max`: the summary D_top was ranked by.
    pub summary: String,
    /// `mean`, `topk_squared`, `image_products` or `topk_squared_image_products`.
    pub scoring: Option<String>,
    pub top_k: i64,
    /// Whether the run's layer has spatial activation maps (a conv layer), i.e. could have heatmaps.
    pub spatial: bool,
    pub uses_substitutes: bool,
    /// Which images D_top was drawn from, as recorded by the run ("402 probe-split images; 89
    /// concept pool, 86 evaluation held out"); `None` for runs that predate the split record.
    pub d_probe: Option<String>,
    /// Whether the captions withheld each unit's own class (a leak-free run).
    pub leak_free: bool,
    pub components: Vec<ComponentView>,
    pub top: Vec<TopImageView>,
    pub candidates: Vec<CandidateView>,
}

/// A neuron the latest attempt failed on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunFailure {
    pub run_id: i64,
    /// The stage that failed (`run_neurons.last_stage` as `dnd dissect` writes it for a failure).
    pub stage: Option<String>,
    pub error: String,
    pub finished_at: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct NeuronRunView {
    /// The latest run this neuron is done in.
    pub done: Option<RunDetails>,
    /// Without a done run: the neuron's top probing images in the layer's recording (what it
    /// responds to before it is described), best first.
    #[serde(default)]
    pub recorded: Vec<studio::gallery::RecordedImage>,
    /// The latest failed attempt, when it is newer than `done` (or there is no done run).
    pub failed: Option<RunFailure>,
}

/// Top probing images shown for a neuron no run has described yet (a run's D_top has ten).
pub const RECORDED_SHOWN: usize = 10;

/// `None` when the model, layer or unit does not exist.
#[server]
pub async fn get_neuron_run(model: String, layer: String, unit: i64) -> Result<Option<NeuronRunView>, ServerFnError> {
    let ctx = crate::state::server_context()?;
    // The run's candidates and concepts are DnD's labels: hidden with the layer's labels.
    let audience = super::audience(&ctx).await?;
    let mut conn = ctx.db.acquire().await.map_err(super::db_error)?;
    if studio::gallery::blinding::of_layer_named(&mut conn, &model, &layer, audience)
        .await
        .map_err(super::db_error)?
        .is_some()
    {
        return Ok(None);
    }
    drop(conn);
    let mut view = queries::neuron_run(&ctx.db, &model, &layer, unit).await?;
    if let Some(v) = view.as_mut().filter(|v| v.done.is_none()) {
        let source = ctx.top_images.as_ref();
        let tops = studio::gallery::recorded::top_images(&ctx.db, source, &model, &layer, &[unit], RECORDED_SHOWN)
            .await
            .map_err(super::db_error)?;
        v.recorded = tops.into_iter().next().unwrap_or_default();
    }
    Ok(view)
}

#[cfg(feature = "ssr")]
pub(crate) mod queries {
    use super::*;
    use crate::api::db_error;
    use sqlx::{Row, SqlitePool};
    use std::collections::HashMap;
    use studio::gallery::queries::crop_of;

    /// What the provenance JSON holds per role (`{"captioner": {...}, "llm": {...}, ...}`).
    #[derive(Deserialize)]
    pub struct StoredComponent {
        name: Option<String>,
        #[serde(default)]
        paper_equivalent: bool,
        note: Option<String>,
    }

    /// What the run's settings JSON says about its images (the engine's `DissectOptions`).
    #[derive(Deserialize, Default)]
    pub struct StoredSettings {
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
        pub fn d_probe(&self) -> Option<String> {
            self.partition.as_ref().map(|p| {
                format!(
                    "{} probe-split images ({} held out as the concept pool, {} for evaluation)",
                    p.probe, p.concept_pool, p.evaluation
                )
            })
        }

        pub fn leak_free(&self) -> bool {
            self.leak_free
        }
    }

    /// Every role of a run, in the method's order; a role the provenance does not record shows
    /// as not recorded, never as the paper's component.
    pub fn components(mut stored: HashMap<String, StoredComponent>) -> Vec<ComponentView> {
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

    pub async fn neuron_run(
        db: &SqlitePool,
        model: &str,
        layer: &str,
        unit: i64,
    ) -> Result<Option<NeuronRunView>, ServerFnError> {
        let neuron_id: Option<i64> = sqlx::query_scalar(
            "SELECT n.id FROM neurons n JOIN layers l ON l.id = n.layer_id JOIN models m ON m.id = l.model_id
             WHERE m.slug = ? AND l.name = ? AND n.unit = ?",
        )
        .bind(model)
        .bind(layer)
        .bind(unit)
        .fetch_optional(db)
        .await
        .map_err(db_error)?;
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
        .await
        .map_err(db_error)?;
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
        .await
        .map_err(db_error)?
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
        .await
        .map_err(db_error)?
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
        .await
        .map_err(db_error)?
        .iter()
        .map(|r| {
            (
                r.get("id"),
                CandidateView {
                    text: r.get("text"),
                    origin: r.get("origin"),
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
        .await
        .map_err(db_error)?;
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
                spatial: run.get::<String, _>("layer_kind") == "conv",
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heatmap_urls_name_the_map_and_the_width() {
        let mut t = TopImageView {
            rank: 1,
            image: ImageRef { sha256: "ab".repeat(32), crop: None },
            width: 10,
            height: 10,
            act_mean: Some(1.0),
            act_max: None,
            raw_caption: None,
            simplified_caption: None,
            heatmap: None,
        };
        assert_eq!(t.heatmap_url(320), None, "no map stored");
        t.heatmap = Some("cd".repeat(32));
        assert_eq!(t.heatmap_url(320).unwrap(), format!("/heatmap/{}?w=320", "cd".repeat(32)));
    }

    #[cfg(feature = "ssr")]
    #[test]
    fn every_role_is_listed_and_unrecorded_ones_are_not_the_papers() {
        let stored: std::collections::HashMap<String, queries::StoredComponent> = leptos::serde_json::from_str(
            r#"{"llm": {"name": "gpt-4o-mini", "paper_equivalent": true, "role": "llm"},
                "captioner": {"name": "lite2 classes", "paper_equivalent": false, "note": "not BLIP"}}"#,
        )
        .unwrap();
        let c = queries::components(stored);
        assert_eq!(c.iter().map(|c| c.role.as_str()).collect::<Vec<_>>(), ROLES);
        assert!(!c[0].paper_equivalent && c[0].note.as_deref() == Some("not BLIP"));
        assert!(c[1].paper_equivalent);
        assert!(c[2..].iter().all(|c| c.name.is_none() && !c.paper_equivalent));
    }
}
