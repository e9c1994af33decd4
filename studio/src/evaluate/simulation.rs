//! Simulation score (in the spirit of explain–simulate–score): from its label alone, how well can a
//! unit's activations on unseen images be predicted? The simulator here is deliberately simple:
//! the predicted activation on an image is the cosine, under all-mpnet-base-v2, between the label
//! and the image's caption; the score is Spearman's rank correlation between the predictions and
//! the real activations over the evaluation split (images no step of the method saw).
//!
//! Limits (docs/method.md, "Measuring labels"): the captions come from the embedded captioner, so a
//! concept it cannot name (a texture, a colour) cannot be simulated however right the label is;
//! the score is a correlation of ranks, not a reconstruction; and with a few dozen evaluation
//! images one unit's score is noisy, so only means over many units compare methods. The chance
//! level is measured on the same units by scoring each with another unit's label (a derangement).

use super::stats::spearman;

/// Spearman(cos(label, caption_i), activation_i) over the evaluation images; `None` when the
/// activations (or the predictions) are constant.
pub fn simulate(label: &[f32], captions: &[Vec<f32>], activations: &[f64]) -> Option<f64> {
    let predicted: Vec<f64> = captions.iter().map(|c| dissect::concepts::cosine(label, c) as f64).collect();
    spearman(&predicted, activations)
}

/// Scores of one method's labels: per unit with its own label, and per unit with the next
/// unit's label (the chance level; empty with fewer than two units). `labels[i]` is the
/// embedding of the label of the unit whose activations are `activations[i]`.
pub fn method_scores(labels: &[Vec<f32>], captions: &[Vec<f32>], activations: &[Vec<f64>]) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(labels.len(), activations.len(), "one label per unit");
    let own = labels.iter().zip(activations).filter_map(|(l, a)| simulate(l, captions, a)).collect();
    let n = labels.len();
    let chance = if n < 2 {
        Vec::new()
    } else {
        (0..n).filter_map(|i| simulate(&labels[(i + 1) % n], captions, &activations[i])).collect()
    };
    (own, chance)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_that_names_what_fires_the_unit_scores_high_and_a_shuffled_one_does_not() {
        // Captions along two axes (dogs, cars); unit 0 fires on dogs, unit 1 on cars.
        let captions = vec![vec![1.0, 0.0], vec![0.9, 0.1], vec![0.2, 0.8], vec![0.0, 1.0]];
        let acts = vec![vec![5.0, 4.0, 1.0, 0.0], vec![0.0, 1.0, 3.0, 6.0]];
        let labels = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
        let (own, chance) = method_scores(&labels, &captions, &acts);
        assert_eq!(own.len(), 2);
        assert!(own.iter().all(|&r| (r - 1.0).abs() < 1e-12), "{own:?}");
        assert!(chance.iter().all(|&r| (r + 1.0).abs() < 1e-12), "{chance:?}");
        // A constant unit has no score.
        assert_eq!(simulate(&[1.0, 0.0], &captions, &[2.0; 4]), None);
        assert!(method_scores(&labels[..1], &captions, &acts[..1]).1.is_empty());
    }
}
