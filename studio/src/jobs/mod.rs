//! Background jobs: dissections and registrations queued from the browser (or an upload), run
//! one at a time by the runner, with progress and a log in the database.
//!
//! The types here are shared with the browser bundle (no feature needed); the queue's SQL
//! ([`queue`]), the runner ([`runner`]) and the wake-up signals ([`signals`]) come with the
//! `service` feature.

use serde::{Deserialize, Serialize};

#[cfg(feature = "service")]
pub mod queue;
#[cfg(feature = "service")]
pub mod runner;
#[cfg(feature = "service")]
pub mod signals;
#[cfg(feature = "service")]
pub use signals::JobSignals;

/// The scoring functions a dissection can use (docs/method.md), as the engine names them
/// (`dissect::concepts::scoring::ScoringFunction`, which the browser bundle cannot link; a test
/// keeps the two lists equal), the default first.
pub const SCORING_FUNCTIONS: [&str; 4] = ["topk-squared-image-products", "topk-squared", "image-products", "mean"];

/// Largest number of neurons one job may ask for (a whole layer of the built-in models fits).
pub const MAX_JOB_NEURONS: usize = 4096;

/// A dissection as the browser asks for it (`dnd dissect`'s options).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DissectJobRequest {
    /// Model slug, as in `/m/{slug}`.
    pub model: String,
    pub layer: String,
    /// `0-49`, `3,7,9` or `random:50`.
    pub neurons: String,
    /// Seed of `random:N`.
    pub seed: u64,
    /// Probing-set slug.
    pub probe_set: String,
    /// `mean` or `max` (`dissect::crops::Summary`'s names; a test keeps them equal).
    pub summary: String,
    /// One of [`SCORING_FUNCTIONS`].
    pub scoring: String,
}

/// A folder of images or a TorchScript model file on the server's disk, to register.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// Absolute path on the server.
    pub path: String,
}

/// What registration jobs there are: (job kind, what the path must be).
pub const REGISTER_KINDS: [(&str, &str); 2] = [
    ("register_probe_set", "a folder of images (sub-folders become labels, sidecar .txt files descriptions)"),
    ("register_model", "a TorchScript file with its JSON manifest beside it (tools/export_torchscript.py)"),
];

/// One job as the queue shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub id: i64,
    pub kind: String,
    /// What it works on, in words (model · layer · neurons, or the path it registers).
    pub target: String,
    /// queued, running, done, failed or cancelled.
    pub status: String,
    pub stage: Option<String>,
    pub done: i64,
    pub total: Option<i64>,
    pub message: Option<String>,
    pub error: Option<String>,
    pub cancel_requested: bool,
    /// Times it was started (a restart re-queues a running job, which then resumes).
    pub attempts: i64,
    /// Neurons that failed so far (each has an event with its reason).
    pub failed_neurons: i64,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub request: Option<DissectJobRequest>,
    /// The dissection run it writes, once opened.
    pub run_id: Option<i64>,
    /// Run by `dnd dissect` in its own process, not by the server's queue.
    #[serde(default)]
    pub from_command_line: bool,
}

impl JobView {
    pub fn is_finished(&self) -> bool {
        matches!(self.status.as_str(), "done" | "failed" | "cancelled")
    }
}

/// One line of a job's log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobEventView {
    pub at: String,
    pub level: String,
    pub stage: Option<String>,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobDetail {
    pub job: JobView,
    pub events: Vec<JobEventView>,
}

/// A model the start form offers: its slug, name, and layers (name, units).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelChoice {
    pub slug: String,
    pub name: String,
    pub layers: Vec<(String, i64)>,
    /// The layer the form starts on: the deepest convolutional one (what the method is mostly
    /// used on, and what the README's examples describe), else the last; never the stem.
    #[serde(default)]
    pub default_layer: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobFormOptions {
    pub models: Vec<ModelChoice>,
    /// (slug, name, images) of every probing set.
    pub probe_sets: Vec<(String, String, i64)>,
    /// The admin session's CSRF token; `None` when the visitor is not logged in as admin.
    pub csrf: Option<String>,
}

/// The activation summaries a dissection can use, as the engine names them.
pub const SUMMARIES: [&str; 2] = ["mean", "max"];

#[cfg(all(test, feature = "service"))]
mod tests {
    use super::*;
    use dissect::concepts::scoring::ScoringFunction;
    use dissect::crops::Summary;

    /// The browser's lists are the engine's names, so every choice a form offers parses.
    #[test]
    fn the_forms_choices_are_the_engines_names() {
        let mut offered = SCORING_FUNCTIONS.to_vec();
        let mut engine: Vec<&str> = ScoringFunction::ALL.iter().map(|f| f.as_str()).collect();
        assert_eq!(offered[0], ScoringFunction::default().as_str(), "the default comes first");
        offered.sort();
        engine.sort();
        assert_eq!(offered, engine);
        let summaries: Vec<&str> = Summary::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(SUMMARIES.to_vec(), summaries);
    }
}
