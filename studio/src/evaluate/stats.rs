//! Small statistics for the quality report: mean ± standard error, Spearman's rank correlation,
//! and the area under the ROC curve with ties averaged.

use serde::Serialize;

/// A mean with its standard error over `n` values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MeanSem {
    pub mean: f64,
    pub sem: f64,
    pub n: usize,
}

impl MeanSem {
    /// `None` for no values; the SEM of one value is 0.
    pub fn of(values: &[f64]) -> Option<MeanSem> {
        if values.is_empty() {
            return None;
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var =
            if values.len() > 1 { values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
        Some(MeanSem { mean, sem: (var / n).sqrt(), n: values.len() })
    }
}

impl std::fmt::Display for MeanSem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.4} ± {:.4} (n = {})", self.mean, self.sem, self.n)
    }
}

/// 1-based ascending ranks, ties sharing their mean rank: the engine's fractional ranking (which
/// ranks the highest value first) of the negated values.
fn ranks(values: &[f64]) -> Vec<f64> {
    let negated: Vec<f32> = values.iter().map(|&v| -(v as f32)).collect();
    dissect::concepts::scoring::fractional_ranks(&negated)
}

/// Spearman's rank correlation (Pearson on tie-averaged ranks); `None` when either side is
/// constant or there are fewer than 3 pairs.
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    assert_eq!(x.len(), y.len(), "paired values");
    if x.len() < 3 {
        return None;
    }
    let (rx, ry) = (ranks(x), ranks(y));
    let n = x.len() as f64;
    let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
    let cov: f64 = rx.iter().zip(&ry).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = rx.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = ry.iter().map(|b| (b - my).powi(2)).sum();
    (vx > 0.0 && vy > 0.0).then(|| cov / (vx * vy).sqrt())
}

/// Area under the ROC curve of `scores` for `positive` (the Mann–Whitney statistic, ties counted
/// half, as scikit-learn's `roc_auc_score`); `None` without both classes.
pub fn auroc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    assert_eq!(scores.len(), positive.len(), "one label per score");
    let pos = positive.iter().filter(|&&p| p).count();
    let neg = positive.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let r = ranks(scores);
    let rank_sum: f64 = r.iter().zip(positive).filter(|(_, &p)| p).map(|(r, _)| r).sum();
    let u = rank_sum - (pos * (pos + 1)) as f64 / 2.0;
    Some(u / (pos * neg) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_standard_error() {
        let m = MeanSem::of(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert!((m.mean - 2.5).abs() < 1e-12);
        // sample sd = sqrt(5/3); sem = sd / 2
        assert!((m.sem - (5.0f64 / 3.0).sqrt() / 2.0).abs() < 1e-12);
        assert_eq!(MeanSem::of(&[]), None);
        assert_eq!(MeanSem::of(&[7.0]).unwrap().sem, 0.0);
    }

    #[test]
    fn spearman_of_monotone_reversed_and_tied_data() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert!((spearman(&x, &[10.0, 20.0, 30.0, 40.0, 50.0]).unwrap() - 1.0).abs() < 1e-12);
        assert!((spearman(&x, &[5.0, 4.0, 3.0, 2.0, 1.0]).unwrap() + 1.0).abs() < 1e-12);
        // y's ranks are 1, 4, 2.5, 2.5, 5: covariance 6.5, variances 10 and 9.5 → 6.5/√95.
        assert!((spearman(&x, &[1.0, 3.0, 2.0, 2.0, 5.0]).unwrap() - 6.5 / 95f64.sqrt()).abs() < 1e-12);
        assert_eq!(spearman(&x, &[1.0; 5]), None);
        assert_eq!(spearman(&[1.0, 2.0], &[1.0, 2.0]), None);
    }

    #[test]
    fn auroc_counts_ties_half() {
        assert_eq!(auroc(&[0.9, 0.8, 0.1, 0.2], &[true, true, false, false]), Some(1.0));
        assert_eq!(auroc(&[0.1, 0.2, 0.9, 0.8], &[true, true, false, false]), Some(0.0));
        assert_eq!(auroc(&[0.5, 0.5, 0.5, 0.5], &[true, false, true, false]), Some(0.5));
        // Pairs (positive, negative): 0.8 ties 0.8 (½), beats 0.1 and 0.5; 0.3 beats 0.1 only → 3.5 / 6.
        let a = auroc(&[0.8, 0.8, 0.3, 0.1, 0.5], &[true, false, true, false, false]).unwrap();
        assert!((a - 3.5 / 6.0).abs() < 1e-12);
        assert_eq!(auroc(&[0.1, 0.2], &[true, true]), None);
    }
}
