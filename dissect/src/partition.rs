//! Which probing images each step of the method may see, decided in one place
//! (docs/method.md, "Splits"): D_probe is the probe split, the concept pool is what Step 3 may
//! retrieve from, and the evaluation split is seen by no step. Every rank a dissection makes
//! (D_top, percentiles, the study's top images) reads [`Partition::d_probe`], so a neuron's own
//! top images can never come back as its concept images.

use crate::concepts::embedded::HeldOutImage;
use crate::probe::{split_of, ScannedSet, Split};
use crate::record::ActivationSummaries;
use serde::{Deserialize, Serialize};

/// The split of one probing set, row by row (rows follow the set's image order, which is the
/// order of its activation recordings).
#[derive(Debug, Clone)]
pub struct Partition {
    splits: Vec<Split>,
    info: PartitionInfo,
}

/// A layer's recording restricted to D_probe: only [`Partition::d_probe`] makes one, and the
/// dissection takes nothing else, so no rank of a run can see a held-out image.
#[derive(Debug, Clone)]
pub struct DProbe(ActivationSummaries);

impl DProbe {
    pub fn summaries(&self) -> &ActivationSummaries {
        &self.0
    }
}

/// How a run's probing set was split: recorded in every run's settings (provenance).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionInfo {
    pub split_seed: u64,
    pub heldout_fraction: f64,
    /// Images in D_probe (recorded and ranked for D_top).
    pub probe: usize,
    /// Images Step 3 may retrieve concept images from.
    pub concept_pool: usize,
    /// Images no step sees, kept for measuring labels.
    pub evaluation: usize,
}

impl Partition {
    /// The split of `set` under the seed and held-out fraction its registration chose.
    pub fn of_set(set: &ScannedSet, split_seed: u64, heldout_fraction: f64) -> Self {
        let splits = set.images.iter().map(|i| split_of(&i.sha256, split_seed, heldout_fraction)).collect();
        Self::from_splits(splits, split_seed, heldout_fraction)
    }

    /// Every row in D_probe (a set with nothing held out, e.g. when concept images are generated).
    pub fn all_probe(n_images: usize) -> Self {
        Self::from_splits(vec![Split::Probe; n_images], 0, 0.0)
    }

    fn from_splits(splits: Vec<Split>, split_seed: u64, heldout_fraction: f64) -> Self {
        let count = |s: Split| splits.iter().filter(|&&x| x == s).count();
        let info = PartitionInfo {
            split_seed,
            heldout_fraction,
            probe: count(Split::Probe),
            concept_pool: count(Split::ConceptPool),
            evaluation: count(Split::Evaluation),
        };
        Partition { splits, info }
    }

    pub fn info(&self) -> &PartitionInfo {
        &self.info
    }

    pub fn split(&self, row: usize) -> Split {
        self.splits[row]
    }

    /// The rows of one split, ascending.
    pub fn rows(&self, split: Split) -> Vec<usize> {
        (0..self.splits.len()).filter(|&r| self.splits[r] == split).collect()
    }

    /// D_probe: the recording with every held-out row blanked (NaN), so anything that ranks it
    /// (top-k skips NaN) sees the probe split only. Row indices stay those of the whole set.
    pub fn d_probe(&self, summaries: &ActivationSummaries) -> DProbe {
        assert_eq!(summaries.n_images, self.splits.len(), "the recording and the partition cover the same images");
        let mut out = summaries.clone();
        let c = summaries.channels;
        for (row, split) in self.splits.iter().enumerate() {
            if *split != Split::Probe {
                out.mean[row * c..(row + 1) * c].fill(f32::NAN);
                out.max[row * c..(row + 1) * c].fill(f32::NAN);
            }
        }
        DProbe(out)
    }

    /// The concept pool of `set` (the set this partition was made from).
    pub fn concept_pool(&self, set: &ScannedSet) -> Vec<HeldOutImage> {
        assert_eq!(set.images.len(), self.splits.len(), "the partition belongs to this set");
        set.images
            .iter()
            .zip(&self.splits)
            .filter(|(_, s)| **s == Split::ConceptPool)
            .map(|(i, _)| HeldOutImage {
                key: i.sha256.clone(),
                path: set.root.join(&i.rel_path),
                name: i.rel_path.clone(),
                description: i.description.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crops::Summary;
    use crate::record::top_k;

    #[test]
    fn d_probe_ranks_the_probe_split_only() {
        let splits = vec![Split::Probe, Split::ConceptPool, Split::Probe, Split::Evaluation];
        let p = Partition::from_splits(splits, 3, 0.5);
        assert_eq!((p.info().probe, p.info().concept_pool, p.info().evaluation), (2, 1, 1));
        assert_eq!(p.rows(Split::Probe), vec![0, 2]);
        // One unit; the held-out rows hold the highest activations.
        let sums = ActivationSummaries {
            layer: "l".into(),
            n_images: 4,
            channels: 1,
            mean: vec![1.0, 9.0, 2.0, 8.0],
            max: vec![1.0, 9.0, 2.0, 8.0],
        };
        assert_eq!(top_k(&sums, 0, 2, Summary::Mean), vec![(1, 9.0), (3, 8.0)]);
        let d = p.d_probe(&sums);
        assert_eq!(top_k(d.summaries(), 0, 4, Summary::Mean), vec![(2, 2.0), (0, 1.0)]);
        assert_eq!(top_k(d.summaries(), 0, 4, Summary::Max), vec![(2, 2.0), (0, 1.0)]);
        assert_eq!(Partition::all_probe(4).d_probe(&sums).summaries().mean, sums.mean);
    }
}
