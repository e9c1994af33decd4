//! One neuron's latest DnD run, for the neuron page: which component played each role (and
//! whether it is the paper's or a substitute), D_top with captions, and the candidate concepts
//! with every score and their concept images. Kept apart from the neuron's labels so the label
//! comparison stays one small query. The query is [`super::run_queries::neuron_run`].

use super::{ImageRef, RecordedImage};
use serde::{Deserialize, Serialize};

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

/// Where a candidate concept's text came from (stored in `candidate_concepts.origin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CandidateOrigin {
    /// One of the LLM's summary answers.
    Llm,
    /// "… background" added to a design word (docs/method.md, "Step 2").
    BackgroundRule,
    /// No answer survived: the most common caption phrase.
    Fallback,
    /// Step 2's grounded candidate only: the WordNet concept most captions' classes share.
    #[serde(rename = "wordnet")]
    WordNet,
}

impl CandidateOrigin {
    pub const ALL: [CandidateOrigin; 4] =
        [CandidateOrigin::Llm, CandidateOrigin::BackgroundRule, CandidateOrigin::Fallback, CandidateOrigin::WordNet];

    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            CandidateOrigin::Llm => "llm",
            CandidateOrigin::BackgroundRule => "background_rule",
            CandidateOrigin::Fallback => "fallback",
            CandidateOrigin::WordNet => "wordnet",
        }
    }

    /// A stored value (the database's CHECK allows only these; anything else reads as the LLM's).
    pub fn from_stored(s: &str) -> CandidateOrigin {
        CandidateOrigin::ALL.into_iter().find(|o| o.as_str() == s).unwrap_or(CandidateOrigin::Llm)
    }

    /// As the neuron page says it.
    pub fn title(self) -> &'static str {
        match self {
            CandidateOrigin::Llm => "language model",
            CandidateOrigin::BackgroundRule => "background rule",
            CandidateOrigin::Fallback => "fallback (captions)",
            CandidateOrigin::WordNet => "WordNet (captions' classes)",
        }
    }
}

/// One candidate concept with its score under every scoring function.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CandidateView {
    pub text: String,
    pub origin: CandidateOrigin,
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
    pub recorded: Vec<RecordedImage>,
    /// The latest failed attempt, when it is newer than `done` (or there is no done run).
    pub failed: Option<RunFailure>,
}

/// Top probing images shown for a neuron no run has described yet (a run's D_top has ten).
pub const RECORDED_SHOWN: usize = 10;

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
}
