//! What the study's pages and exports exchange. Rater-facing types never carry a method's name.

use serde::{Deserialize, Serialize};

/// The paper's question, the default instructions of a study.
pub const DEFAULT_INSTRUCTIONS: &str = "Does the description accurately describe most of the above 10 images?";

/// Labels of the 1–5 scale, as the paper showed them (2 and 4 have none).
pub const SCALE: [(u8, &str); 5] =
    [(1, "Strongly disagree"), (2, ""), (3, "Neither agree nor disagree"), (4, ""), (5, "Strongly agree")];

/// One method (and source, when a method has several imported sources) compared by a study.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MethodRef {
    /// `dnd`, `clip-dissect`, `milan`, `netdissect`, `falcon` or `other`.
    pub method: String,
    #[serde(default)]
    pub source: String,
}

/// Which neurons of one layer a study rates: a unit spec (`0-49`, `3,7`, `random:50`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerChoice {
    pub layer: String,
    pub units: String,
}

/// Everything an admin chooses when creating a study.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewStudy {
    pub name: String,
    /// Model slug.
    pub model: String,
    pub layers: Vec<LayerChoice>,
    /// Seed of `random:N` samples (recorded with the study).
    pub seed: u64,
    /// 2–6 methods; a neuron is eligible only if each has a current rank-1 label for it.
    pub methods: Vec<MethodRef>,
    pub raters_per_item: i64,
    /// `mean` (default) or `max`: which activation summary picks the images shown.
    pub image_summary: String,
    pub images_per_item: i64,
    pub instructions: String,
    /// Attention-check tasks to add (0 = none): a study neuron shown again with a decoy
    /// description taken from a far-away neuron, which must be rated low.
    pub attention_checks: i64,
}

impl NewStudy {
    /// The paper's defaults for everything but the model, layers and methods.
    pub fn with_defaults(name: &str, model: &str, layers: Vec<LayerChoice>, methods: Vec<MethodRef>) -> Self {
        NewStudy {
            name: name.to_string(),
            model: model.to_string(),
            layers,
            seed: 0,
            methods,
            raters_per_item: 3,
            image_summary: "mean".into(),
            images_per_item: 10,
            instructions: DEFAULT_INSTRUCTIONS.into(),
            attention_checks: 0,
        }
    }
}

/// `draft` (being set up, no rater may start), `open`, `closed` (no new submissions).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudySummary {
    pub id: i64,
    pub name: String,
    pub model: String,
    pub status: String,
    /// Neurons rated (attention-check tasks not counted).
    pub neurons: i64,
    /// Attention-check tasks besides them.
    pub attention_checks: i64,
    pub raters: i64,
    pub responses: i64,
    pub created_at: String,
}

/// An image of a task: a content-hash URL key and an optional crop box.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskImage {
    pub sha256: String,
    pub crop: Option<[i64; 4]>,
}

/// A description as a rater sees it: an opaque id and the text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskDescription {
    pub id: i64,
    pub text: String,
}

/// One task for one rater.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RaterTask {
    pub assignment_id: i64,
    /// 1-based: "task `number` of `total`".
    pub number: i64,
    pub total: i64,
    pub images: Vec<TaskImage>,
    /// In this task's own random order.
    pub descriptions: Vec<TaskDescription>,
}

/// What a rater's link shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RaterPage {
    pub study_name: String,
    pub instructions: String,
    pub worker_id: Option<String>,
    pub completed: i64,
    /// `open`, `draft` or `closed`.
    pub study_status: String,
    /// `None` when nothing is left for this rater (or the study is not open).
    pub task: Option<RaterTask>,
}

/// One submitted task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    pub assignment_id: i64,
    /// (description id, 1..=5), one per description shown.
    pub ratings: Vec<(i64, i64)>,
    pub best: i64,
    pub client_time_ms: Option<i64>,
    /// Chosen by the client once per task; a retry with the same key is answered with the same
    /// acknowledgement instead of a second response.
    pub idempotency_key: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubmitAck {
    pub response_id: i64,
    /// True when this exact submission had already been stored (a retry).
    pub duplicate: bool,
    /// The rater's next task, assigned when the answer was stored (for a retry: their current
    /// task), so the rater page shows it without asking again; `None` when nothing is left for
    /// this rater or the study is not open (the rater page then says which).
    #[serde(default)]
    pub next: Option<RaterTask>,
}

/// One method's results in one layer (a row cell group of the paper's Table 3/4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MethodResult {
    pub method: MethodRef,
    /// Mean 1–5 rating over valid responses, with its standard error; `None` without ratings.
    pub mean: Option<f64>,
    pub sem: Option<f64>,
    pub ratings: i64,
    /// Share of valid responses that picked this method's description as best (0..=1).
    pub best_share: Option<f64>,
    pub best_count: i64,
}

/// One row of the results table: a layer, or `all layers`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerResults {
    /// Layer name; `None` for the "all layers" row.
    pub layer: Option<String>,
    pub methods: Vec<MethodResult>,
    /// Responses counted (valid, from raters not excluded, ordinary tasks).
    pub valid: i64,
    /// All responses of ordinary tasks from raters not excluded.
    pub total: i64,
}

/// Krippendorff's alpha (ordinal) over valid responses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Agreement {
    /// `None` for the overall figure (every method's descriptions pooled).
    pub method: Option<MethodRef>,
    pub alpha: Option<f64>,
    /// Items with at least two ratings, which are all alpha can use.
    pub items: i64,
}

/// What an admin needs to decide whether to exclude a rater.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RaterStats {
    pub rater_id: i64,
    pub note: String,
    pub origin: String,
    pub worker_id: Option<String>,
    pub responses: i64,
    pub invalid: i64,
    pub attention_checks: i64,
    pub attention_failures: i64,
    pub median_time_ms: Option<i64>,
    pub excluded: bool,
    pub revoked: bool,
    pub last_seen_at: Option<String>,
}

/// Median time per task below which a rater is flagged as too fast: a task shows 10 images and
/// 2–6 descriptions to rate, which nobody reads in under two seconds (a new user saw 0.3 s).
pub const TOO_FAST_MS: i64 = 2_000;

/// Why a rater deserves the admin's look before the results are trusted. Flags only inform:
/// excluding a rater stays the admin's decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaterFlag {
    /// Failed at least one attention check (rated the decoy description above 2).
    FailedAttentionChecks { failed: i64, checks: i64 },
    /// Median time per task under [`TOO_FAST_MS`].
    TooFast { median_ms: i64 },
    /// At least half of their responses (two or more) are invalid: the best pick was not among
    /// their highest-rated descriptions.
    MostlyInvalid { invalid: i64, responses: i64 },
}

impl RaterFlag {
    /// A short phrase for the raters table.
    pub fn text(&self) -> String {
        match self {
            RaterFlag::FailedAttentionChecks { failed, checks } => {
                format!("failed {failed} of {checks} attention checks")
            }
            RaterFlag::TooFast { median_ms } => format!("too fast ({:.1} s per task)", *median_ms as f64 / 1000.0),
            RaterFlag::MostlyInvalid { invalid, responses } => format!("{invalid} of {responses} responses invalid"),
        }
    }
}

impl RaterStats {
    pub fn flags(&self) -> Vec<RaterFlag> {
        let mut flags = Vec::new();
        if self.attention_failures > 0 {
            flags.push(RaterFlag::FailedAttentionChecks {
                failed: self.attention_failures,
                checks: self.attention_checks,
            });
        }
        if let Some(median_ms) = self.median_time_ms.filter(|&ms| ms < TOO_FAST_MS) {
            flags.push(RaterFlag::TooFast { median_ms });
        }
        if self.responses >= 2 && self.invalid * 2 >= self.responses {
            flags.push(RaterFlag::MostlyInvalid { invalid: self.invalid, responses: self.responses });
        }
        flags
    }
}

/// One neuron's ratings per method (valid responses of raters not excluded), for the
/// per-neuron breakdown under the table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NeuronResults {
    pub layer: String,
    pub unit: i64,
    pub methods: Vec<MethodResult>,
    pub valid: i64,
    pub total: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudyResults {
    pub methods: Vec<MethodRef>,
    /// Methods some of whose descriptions in this study come from DnD runs that used offline
    /// substitutes for the paper's components: the results page and exports say so.
    pub substituted: Vec<MethodRef>,
    /// One row per layer in study order, then the "all layers" row.
    pub rows: Vec<LayerResults>,
    /// Per method, then overall.
    pub agreement: Vec<Agreement>,
    pub raters: Vec<RaterStats>,
    /// Every neuron with at least one counted response, in study layer order then unit.
    pub neurons: Vec<NeuronResults>,
}

/// A layer and what each method has labelled in it (for the study form).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerLabels {
    pub layer: String,
    pub channels: i64,
    /// (method, labelled units) for every method/source with current rank-1 labels here.
    pub methods: Vec<(MethodRef, i64)>,
    /// Whether activations are recorded for the layer (the study's images come from them).
    pub recorded: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewStudyOptions {
    /// (slug, name) of every model.
    pub models: Vec<(String, String)>,
    /// The chosen model's layers.
    pub layers: Vec<LayerLabels>,
}

/// A study as its admin page shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudyDetail {
    pub summary: StudySummary,
    pub settings: NewStudy,
    /// The open link's token, once created.
    pub open_link: Option<String>,
    pub results: StudyResults,
}
