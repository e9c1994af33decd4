//! The study's statistics, pure functions with no database: the paper's validity rule, mean ± SEM,
//! share picked as best, medians, and Krippendorff's alpha.

/// A response is valid when the description picked as best is among that response's
/// highest-rated descriptions (ties at the top all count). `ratings` = (description id, 1..=5).
pub fn is_valid(ratings: &[(i64, i64)], best: i64) -> bool {
    let Some(top) = ratings.iter().map(|&(_, r)| r).max() else {
        return false;
    };
    // A best pick that was never rated cannot be among the top ones.
    ratings.iter().any(|&(id, r)| id == best && r == top)
}

/// Mean with its standard error (sample standard deviation / √n); `sem` is `None` for n = 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MeanSem {
    pub mean: f64,
    pub sem: Option<f64>,
    pub n: usize,
}

/// `None` for no values.
pub fn mean_sem(values: &[f64]) -> Option<MeanSem> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    // Sample (n − 1) standard deviation; undefined for a single value.
    let sem = (n > 1).then(|| {
        let ss: f64 = values.iter().map(|v| (v - mean).powi(2)).sum();
        (ss / (n - 1) as f64).sqrt() / (n as f64).sqrt()
    });
    Some(MeanSem { mean, sem, n })
}

/// Median of whole numbers (the lower middle for an even count); `None` for no values.
pub fn median(values: &[i64]) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    Some(v[(v.len() - 1) / 2])
}

/// Level of measurement of Krippendorff's alpha. Ratings on a 1–5 agreement scale are ordinal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    Nominal,
    Ordinal,
    Interval,
    Ratio,
}

/// Krippendorff's alpha. `units[u]` holds the values the coders gave unit `u` (missing values simply
/// absent); units with fewer than two values are not pairable and are ignored. `None` when no unit
/// is pairable or the data have no variation at all (expected disagreement 0).
///
/// Computed with the coincidence matrix of Krippendorff (2011), "Computing Krippendorff's
/// Alpha-Reliability": `o_ck = Σ_u (c–k pairs in u) / (m_u − 1)`, marginals `n_c`, `n = Σ n_c`, and
/// `α = 1 − (n − 1) Σ o_ck δ²_ck / Σ n_c n_k δ²_ck`.
pub fn krippendorff_alpha(units: &[Vec<f64>], metric: Metric) -> Option<f64> {
    let pairable: Vec<&Vec<f64>> = units.iter().filter(|u| u.len() >= 2).collect();
    if pairable.is_empty() {
        return None;
    }
    // The distinct values, sorted (the ordinal metric needs their order). Values are small whole
    // numbers in practice, so exact equality is the right grouping.
    let mut values: Vec<f64> = pairable.iter().flat_map(|u| u.iter().copied()).collect();
    values.sort_by(f64::total_cmp);
    values.dedup();
    let v = values.len();
    let index = |x: f64| values.binary_search_by(|p| p.total_cmp(&x)).expect("value collected above");

    // Coincidence matrix: each ordered pair of values within a unit adds 1 / (m_u − 1).
    let mut o = vec![vec![0.0f64; v]; v];
    for unit in &pairable {
        let mut counts = vec![0.0f64; v];
        for &x in unit.iter() {
            counts[index(x)] += 1.0;
        }
        let w = 1.0 / (unit.len() - 1) as f64;
        for c in 0..v {
            if counts[c] == 0.0 {
                continue;
            }
            for k in 0..v {
                // Pairs are between distinct coders, so a value does not pair with itself.
                let pairs = if c == k { counts[c] * (counts[c] - 1.0) } else { counts[c] * counts[k] };
                o[c][k] += pairs * w;
            }
        }
    }
    let n_c: Vec<f64> = o.iter().map(|row| row.iter().sum()).collect();
    let n: f64 = n_c.iter().sum();

    let delta2 = |c: usize, k: usize| -> f64 {
        let (a, b) = (values[c], values[k]);
        match metric {
            Metric::Nominal => {
                if c == k {
                    0.0
                } else {
                    1.0
                }
            }
            Metric::Ordinal => {
                let (lo, hi) = if c <= k { (c, k) } else { (k, c) };
                let s: f64 = n_c[lo..=hi].iter().sum::<f64>() - (n_c[c] + n_c[k]) / 2.0;
                s * s
            }
            Metric::Interval => (a - b).powi(2),
            Metric::Ratio => {
                // Both 0 means c = k: no disagreement (avoids 0/0).
                if a + b == 0.0 {
                    0.0
                } else {
                    ((a - b) / (a + b)).powi(2)
                }
            }
        }
    };

    let (mut observed, mut expected) = (0.0, 0.0);
    for c in 0..v {
        for k in 0..v {
            let d = delta2(c, k);
            observed += o[c][k] * d;
            expected += n_c[c] * n_c[k] * d;
        }
    }
    if expected == 0.0 {
        return None;
    }
    Some(1.0 - (n - 1.0) * observed / expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() < tol
    }

    #[test]
    fn validity_rule() {
        // Two tied at the top: either pick is valid.
        let r = [(1, 5), (2, 5), (3, 2)];
        assert!(is_valid(&r, 1));
        assert!(is_valid(&r, 2));
        // Best rated below the top: invalid.
        assert!(!is_valid(&r, 3));
        // All equal: any pick is valid.
        let eq = [(1, 3), (2, 3), (3, 3)];
        assert!(eq.iter().all(|&(id, _)| is_valid(&eq, id)));
        // Best not among the rated descriptions, or nothing rated: invalid.
        assert!(!is_valid(&r, 99));
        assert!(!is_valid(&[], 1));
    }

    #[test]
    fn mean_and_sem_by_hand() {
        let m = mean_sem(&[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        assert_eq!(m.n, 5);
        assert!(close(m.mean, 3.0, 1e-12));
        // sd = √(10/4) = 1.5811…, sem = sd/√5 = √0.5 = 0.7071…
        assert!(close(m.sem.unwrap(), 0.5f64.sqrt(), 1e-12));
        assert!(close(m.sem.unwrap() * 5f64.sqrt(), 1.581_138_8, 1e-6));

        let one = mean_sem(&[4.0]).unwrap();
        assert_eq!(one, MeanSem { mean: 4.0, sem: None, n: 1 });
        assert_eq!(mean_sem(&[]), None);

        // [2, 4]: mean 3, sd √2, sem √2/√2 = 1.
        let two = mean_sem(&[2.0, 4.0]).unwrap();
        assert!(close(two.mean, 3.0, 1e-12) && close(two.sem.unwrap(), 1.0, 1e-12));
    }

    #[test]
    fn median_lower_middle() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[7]), Some(7));
        assert_eq!(median(&[5, 1, 3]), Some(3));
        assert_eq!(median(&[4, 1, 3, 2]), Some(2));
        assert_eq!(median(&[2, 2, 9, 9]), Some(2));
    }

    /// Krippendorff (2011), the 4 observers × 12 units example; `None` = missing.
    fn paper_units() -> Vec<Vec<f64>> {
        let rows: [[Option<u8>; 12]; 4] = [
            [Some(1), Some(2), Some(3), Some(3), Some(2), Some(1), Some(4), Some(1), Some(2), None, None, None],
            [Some(1), Some(2), Some(3), Some(3), Some(2), Some(2), Some(4), Some(1), Some(2), Some(5), None, Some(3)],
            [None, Some(3), Some(3), Some(3), Some(2), Some(3), Some(4), Some(2), Some(2), Some(5), Some(1), None],
            [Some(1), Some(2), Some(3), Some(3), Some(2), Some(4), Some(4), Some(1), Some(2), Some(5), Some(1), None],
        ];
        // A unit is a column: the values the four observers gave that unit.
        (0..12).map(|u| rows.iter().filter_map(|row| row[u]).map(f64::from).collect()).collect()
    }

    #[test]
    fn alpha_matches_published_example() {
        let units = paper_units();
        for (metric, published) in
            [(Metric::Nominal, 0.743), (Metric::Ordinal, 0.815), (Metric::Interval, 0.849), (Metric::Ratio, 0.797)]
        {
            let a = krippendorff_alpha(&units, metric).unwrap();
            assert!(close(a, published, 0.0005), "{metric:?}: {a} vs {published}");
        }
    }

    #[test]
    fn alpha_perfect_agreement_is_one() {
        let units = vec![vec![1.0, 1.0, 1.0], vec![3.0, 3.0], vec![5.0, 5.0, 5.0], vec![2.0, 2.0]];
        for metric in [Metric::Nominal, Metric::Ordinal, Metric::Interval, Metric::Ratio] {
            assert!(close(krippendorff_alpha(&units, metric).unwrap(), 1.0, 1e-12), "{metric:?}");
        }
    }

    #[test]
    fn alpha_none_without_pairable_variation() {
        // Nothing pairable at all.
        assert_eq!(krippendorff_alpha(&[], Metric::Ordinal), None);
        assert_eq!(krippendorff_alpha(&[vec![1.0], vec![5.0]], Metric::Ordinal), None);
        // The only pairable data has no variation (the lone 5 is not pairable).
        let units = vec![vec![3.0, 3.0], vec![3.0, 3.0, 3.0], vec![5.0]];
        for metric in [Metric::Nominal, Metric::Ordinal, Metric::Interval, Metric::Ratio] {
            assert_eq!(krippendorff_alpha(&units, metric), None, "{metric:?}");
        }
    }

    #[test]
    fn alpha_ignores_single_value_units() {
        let units = paper_units();
        let mut padded = units.clone();
        padded.push(vec![5.0]);
        padded.insert(0, vec![1.0]);
        padded.push(vec![]);
        for metric in [Metric::Nominal, Metric::Ordinal, Metric::Interval, Metric::Ratio] {
            let a = krippendorff_alpha(&units, metric).unwrap();
            let b = krippendorff_alpha(&padded, metric).unwrap();
            assert!(close(a, b, 1e-12), "{metric:?}: {a} vs {b}");
        }
    }
}
