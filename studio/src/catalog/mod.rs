//! The catalogue: registered models with their layers, probing sets with the files they refused,
//! and how far a fresh install has come along the first-run path (record → describe → compare →
//! study). The types are shared with the browser bundle; the queries that fill them
//! ([`queries`]) need the `service` feature.

use crate::gallery::LayerSummary;
use serde::{Deserialize, Serialize};

#[cfg(feature = "service")]
pub mod queries;

/// Rejected files listed by name per probing set; the count says how many there are in all.
pub const REJECTED_SHOWN: usize = 20;

/// One registered target model, as listed on the home page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    /// Stable URL name: `/m/{slug}`.
    pub slug: String,
    pub name: String,
    pub description: String,
    /// `builtin` or `torchscript`.
    pub source: String,
    pub layer_count: i64,
}

/// A file a probing-set scan refused, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RejectedFile {
    /// Relative to the probing set's folder.
    pub rel_path: String,
    /// Human-readable: "duplicate of cat/1.jpg", "data ends early (truncated JPEG)", …
    pub reason: String,
}

/// One registered probing set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeSetSummary {
    pub slug: String,
    pub name: String,
    pub source: String,
    pub image_count: i64,
    pub rejected_count: i64,
    /// The first [`REJECTED_SHOWN`] of them, by path.
    pub rejected: Vec<RejectedFile>,
}

impl ProbeSetSummary {
    /// "1 file rejected", "3 files rejected"; `None` when none was.
    pub fn rejected_phrase(&self) -> Option<String> {
        match self.rejected_count {
            0 => None,
            1 => Some("1 file rejected".into()),
            n => Some(format!("{n} files rejected")),
        }
    }
}

/// How far this install has come along the first-run path; the home page shows the next step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirstRunProgress {
    /// Layers with a complete activation recording.
    pub recorded_layers: i64,
    /// Neurons with at least one current label (any method).
    pub labelled_neurons: i64,
    /// Neurons with labels from two or more sources (two methods, or a DnD run and its scoring
    /// variants): what the comparison and a study need.
    pub compared_neurons: i64,
    pub studies: i64,
}

/// A step of the first-run path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FirstRunStep {
    Record,
    Describe,
    Compare,
    Study,
}

impl FirstRunStep {
    pub const ALL: [FirstRunStep; 4] = [Self::Record, Self::Describe, Self::Compare, Self::Study];
}

impl FirstRunProgress {
    /// Whether `step` is done on this install.
    pub fn done(&self, step: FirstRunStep) -> bool {
        match step {
            FirstRunStep::Record => self.recorded_layers > 0,
            FirstRunStep::Describe => self.labelled_neurons > 0,
            FirstRunStep::Compare => self.compared_neurons > 0,
            FirstRunStep::Study => self.studies > 0,
        }
    }

    /// The first step not yet done; `None` once a study exists (the path is walked).
    pub fn next_step(&self) -> Option<FirstRunStep> {
        FirstRunStep::ALL.into_iter().find(|s| !self.done(*s))
    }
}

/// What the home page lists.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Overview {
    pub models: Vec<ModelSummary>,
    pub probe_sets: Vec<ProbeSetSummary>,
    pub progress: FirstRunProgress,
}

/// A model's page: the model and its dissectable layers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelDetail {
    pub model: ModelSummary,
    pub layers: Vec<LayerSummary>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_step_is_the_first_not_done() {
        let mut p = FirstRunProgress::default();
        assert_eq!(p.next_step(), Some(FirstRunStep::Record));
        p.recorded_layers = 1;
        assert_eq!(p.next_step(), Some(FirstRunStep::Describe));
        // Imported labels without a recording still leave recording as the next step.
        let imported = FirstRunProgress { labelled_neurons: 5, compared_neurons: 5, ..Default::default() };
        assert_eq!(imported.next_step(), Some(FirstRunStep::Record));
        p.labelled_neurons = 3;
        p.compared_neurons = 3;
        assert_eq!(p.next_step(), Some(FirstRunStep::Study));
        p.studies = 1;
        assert_eq!(p.next_step(), None);
    }
}
