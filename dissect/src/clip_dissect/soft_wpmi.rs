//! CLIP-Dissect's soft-WPMI (Oikarinen & Weng, ICLR 2023), on plain tensors.
//!
//! For probing images `x_i`, concepts `t_m` and one neuron with summary activations `g(x_i)`:
//! * `P[i, m] = softmax_m(a · cos(CLIP(x_i), CLIP(t_m)))` — how much image `i` "is" concept `m`;
//! * the neuron's top-k images by activation, highest first, each kept as evidence with a
//!   probability falling linearly from `p_start` (rank 0) towards `p_end` (`p_j = p_start −
//!   j/k · (p_start − p_end)`), so `log p(t_m | neuron) = Σ_j log(1 + p_j·(P[top_j, m] − 1) + min_prob)`;
//! * the concept's prior over the layer: `log p(t_m) = logsumexp_units(log p(t_m | unit)) − log(#units)`;
//! * `soft-WPMI(neuron, t_m) = log p(t_m | neuron) − λ · log p(t_m)`.
//!
//! The label is the concept with the largest soft-WPMI, and that value is the `similarity`
//! column of CLIP-Dissect's CSV. Defaults are the paper's: top_k = 100, a = 10, λ = 1,
//! p from 0.998 down to 0.97, min_prob = 1e-7.

use super::ClipDissectError;
use std::cmp::Ordering;
use tch::{Kind, Tensor};

/// The soft-WPMI hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SoftWpmiParams {
    /// Most-activating images per neuron (fewer when the probing set is smaller).
    pub top_k: usize,
    /// Softmax temperature multiplier on the CLIP similarities.
    pub a: f64,
    /// Weight of the concept prior.
    pub lambda: f64,
    /// Probability that the top-1 image is evidence; falls linearly towards `p_end`.
    pub p_start: f64,
    pub p_end: f64,
    /// Added inside the log so an image with probability ~0 does not give −∞.
    pub min_prob: f64,
}

impl Default for SoftWpmiParams {
    fn default() -> Self {
        SoftWpmiParams { top_k: 100, a: 10.0, lambda: 1.0, p_start: 0.998, p_end: 0.97, min_prob: 1e-7 }
    }
}

/// Soft-WPMI of every unit with every concept.
#[derive(Debug)]
pub struct SoftWpmiScores {
    /// `units × concepts`, float.
    pub scores: Tensor,
    /// The top-k actually used: `min(top_k, images)`.
    pub top_k_used: usize,
    /// Per unit: the same activation on every image (its top-k is then an arbitrary choice,
    /// the lowest image indices, and its label means nothing).
    pub constant: Vec<bool>,
}

/// The best concept of one unit and its soft-WPMI.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BestConcept {
    pub unit: usize,
    pub concept: usize,
    pub score: f32,
}

/// Units whose top-k images are gathered at once: bounds the `units × k × concepts` buffer.
const GATHER_ELEMENTS: i64 = 1 << 25;

/// `similarity`: `images × concepts` CLIP cosine similarities; `activations`: `images × units`
/// summary activations of the same images (every unit of the layer: the prior is over them
/// all). Both must be finite: leave out images that could not be used.
pub fn soft_wpmi(
    similarity: &Tensor,
    activations: &Tensor,
    params: &SoftWpmiParams,
) -> Result<SoftWpmiScores, ClipDissectError> {
    let invalid = |reason: String| Err(ClipDissectError::Input(reason));
    if similarity.dim() != 2 || activations.dim() != 2 {
        return invalid(format!(
            "expected 2-D similarities (images × concepts) and activations (images × units), got shapes {:?} and {:?}",
            similarity.size(),
            activations.size()
        ));
    }
    let (n, concepts) = (similarity.size()[0], similarity.size()[1]);
    let units = activations.size()[1];
    if activations.size()[0] != n {
        return invalid(format!("{n} images have similarities but {} have activations", activations.size()[0]));
    }
    if n == 0 || concepts == 0 || units == 0 {
        return invalid(format!("nothing to score: {n} images, {concepts} concepts, {units} units"));
    }
    if params.top_k == 0 || !(params.p_end > 0.0 && params.p_end <= params.p_start && params.p_start <= 1.0) {
        return invalid(format!("top_k must be ≥ 1 and 0 < p_end ≤ p_start ≤ 1 (got {params:?})"));
    }
    let acts = Vec::<f32>::try_from(activations.to_kind(Kind::Float).contiguous().view([-1]))
        .map_err(|e: tch::TchError| ClipDissectError::Input(e.to_string()))?;
    if let Some(i) = acts.iter().position(|v| !v.is_finite()) {
        return invalid(format!(
            "activation of image {} unit {} is not finite",
            i / units as usize,
            i % units as usize
        ));
    }
    let sim = similarity.to_kind(Kind::Float);
    if !bool::try_from(sim.isfinite().all()).unwrap_or(false) {
        return invalid("a CLIP similarity is not finite".into());
    }

    let (n, units_n) = (n as usize, units as usize);
    let k = params.top_k.min(n);
    let mut top = Vec::with_capacity(units_n * k);
    let mut constant = Vec::with_capacity(units_n);
    for u in 0..units_n {
        let column: Vec<f32> = (0..n).map(|i| acts[i * units_n + u]).collect();
        let (lo, hi) = column.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
        constant.push(lo == hi);
        top.extend(top_indices(&column, k).into_iter().map(|i| i as i64));
    }
    let top = Tensor::from_slice(&top).view([units, k as i64]).to_device(sim.device());

    let probs = (sim * params.a).softmax(1, Kind::Float);
    // p_j = p_start − j/k·(p_start − p_end), one per rank, as a k×1 column.
    let ramp: Vec<f32> =
        (0..k).map(|j| (params.p_start - j as f64 / k as f64 * (params.p_start - params.p_end)) as f32).collect();
    let ramp = Tensor::from_slice(&ramp).view([1, k as i64, 1]).to_device(probs.device());
    let chunk = (GATHER_ELEMENTS / (k as i64 * concepts)).max(1);
    let mut log_given = Vec::new();
    let mut start = 0;
    while start < units {
        let len = chunk.min(units - start);
        let idx = top.narrow(0, start, len).reshape([-1]);
        let picked = probs.index_select(0, &idx).view([len, k as i64, concepts]);
        let p = (&ramp * (picked - 1.0) + 1.0 + params.min_prob).log();
        log_given.push(p.sum_dim_intlist(&[1i64][..], false, Kind::Float));
        start += len;
    }
    let log_given = Tensor::cat(&log_given, 0);
    let prior = log_given.logsumexp(&[0i64][..], true) - (units as f64).ln();
    let scores = &log_given - prior * params.lambda;
    Ok(SoftWpmiScores { scores, top_k_used: k, constant })
}

/// Indices of the `k` largest values, largest first; ties go to the lower index (so a
/// constant unit's choice is reproducible).
fn top_indices(values: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].partial_cmp(&values[a]).unwrap_or(Ordering::Equal).then(a.cmp(&b)));
    order.truncate(k);
    order
}

impl SoftWpmiScores {
    /// The argmax concept of each of `units` and its soft-WPMI.
    pub fn best(&self, units: &[usize]) -> Vec<BestConcept> {
        let (values, indices) = self.scores.max_dim(1, false);
        let values: Vec<f32> = Vec::try_from(values.to_device(tch::Device::Cpu)).expect("float scores");
        let indices: Vec<i64> = Vec::try_from(indices.to_device(tch::Device::Cpu)).expect("int64 indices");
        units.iter().map(|&u| BestConcept { unit: u, concept: indices[u] as usize, score: values[u] }).collect()
    }

    /// One unit's soft-WPMI with every concept.
    pub fn row(&self, unit: usize) -> Vec<f32> {
        Vec::try_from(self.scores.get(unit as i64).to_device(tch::Device::Cpu)).expect("float scores")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(values: &[f32], rows: i64) -> Tensor {
        Tensor::from_slice(values).view([rows, -1])
    }

    #[test]
    fn hand_computed_three_images_two_concepts() {
        // a = ln(3)/0.1 makes softmax(a·s) exact: images 0 and 1 have similarities (0.1, 0)
        // → P = (3/4, 1/4); image 2 has (0, 0) → P = (1/2, 1/2).
        let a = 3f64.ln() / 0.1;
        let sim = t(&[0.1, 0.0, 0.1, 0.0, 0.0, 0.0], 3);
        // Unit 0 fires on images 0 and 1; unit 1 on image 2 then image 0.
        let acts = t(&[5.0, 1.0, 4.0, 0.0, 0.0, 3.0], 3);
        let params = SoftWpmiParams { top_k: 2, a, lambda: 1.0, p_start: 0.9, p_end: 0.7, min_prob: 0.0 };
        let s = soft_wpmi(&sim, &acts, &params).unwrap();
        assert_eq!(s.top_k_used, 2);
        // p = (0.9, 0.8). Unit 0, top images (0, 1):
        //   concept 0: log(1 − 0.9·0.25) + log(1 − 0.8·0.25) = log(0.775) + log(0.8)
        //   concept 1: log(1 − 0.9·0.75) + log(1 − 0.8·0.75) = log(0.325) + log(0.4)
        // Unit 1, top images (2, 0):
        //   concept 0: log(1 − 0.9·0.5) + log(1 − 0.8·0.25) = log(0.55) + log(0.8)
        //   concept 1: log(0.55) + log(1 − 0.8·0.75) = log(0.55) + log(0.4)
        let lg = [[0.775f64 * 0.8, 0.325 * 0.4], [0.55 * 0.8, 0.55 * 0.4]];
        // Prior per concept: log((L_0 + L_1) / 2) over the two units' likelihoods.
        for (u, row) in lg.iter().enumerate() {
            let got = s.row(u);
            for c in 0..2 {
                let prior = ((lg[0][c] + lg[1][c]) / 2.0).ln();
                let want = row[c].ln() - prior;
                assert!((got[c] as f64 - want).abs() < 1e-5, "unit {u} concept {c}: {} vs {want}", got[c]);
            }
        }
        // Unit 0: concept 0 ln(0.62/0.53) = 0.157 beats concept 1 ln(0.13/0.175) = −0.297.
        // Unit 1: concept 1 ln(0.22/0.175) = 0.229 beats concept 0 ln(0.44/0.53) = −0.186.
        let best = s.best(&[0, 1]);
        assert_eq!((best[0].concept, best[1].concept), (0, 1));
        assert!((best[0].score as f64 - (0.62f64 / 0.53).ln()).abs() < 1e-5);
        assert!((best[1].score as f64 - (0.22f64 / 0.175).ln()).abs() < 1e-5);
        assert_eq!(s.constant, vec![false, false]);
    }

    #[test]
    fn a_concept_that_tracks_the_activations_wins() {
        // 40 images, 5 concepts; unit u's activation is concept u's similarity plus noise-free
        // offsets, so unit u must be labelled concept u.
        let (n, c) = (40usize, 5usize);
        let mut sim = vec![0f32; n * c];
        let mut acts = vec![0f32; n * c];
        for i in 0..n {
            for m in 0..c {
                let v = (((i * 7 + m * 13) % 17) as f32) / 17.0 * 0.3;
                sim[i * c + m] = v;
                acts[i * c + m] = 2.0 * v + 0.5;
            }
        }
        let s = soft_wpmi(&t(&sim, n as i64), &t(&acts, n as i64), &SoftWpmiParams { top_k: 8, ..Default::default() })
            .unwrap();
        let best = s.best(&[0, 1, 2, 3, 4]);
        for b in best {
            assert_eq!(b.concept, b.unit, "{b:?}");
            assert!(b.score.is_finite() && b.score > 0.0, "{b:?}");
        }
    }

    #[test]
    fn fewer_images_than_top_k_uses_all_and_constant_units_are_flagged() {
        let sim = t(&[0.3, 0.1, 0.2, 0.2, 0.1, 0.3], 3);
        let acts = t(&[1.0, 7.0, 2.0, 7.0, 3.0, 7.0], 3);
        let s = soft_wpmi(&sim, &acts, &SoftWpmiParams::default()).unwrap();
        assert_eq!(s.top_k_used, 3);
        assert_eq!(s.constant, vec![false, true]);
        assert!(s.best(&[0, 1]).iter().all(|b| b.score.is_finite()));
    }

    #[test]
    fn bad_input_is_refused_with_the_reason() {
        let sim = t(&[0.3, 0.1, 0.2, 0.2], 2);
        let e = soft_wpmi(&sim, &t(&[1.0, 2.0, 3.0], 3), &SoftWpmiParams::default()).unwrap_err().to_string();
        assert!(e.contains("2 images have similarities but 3"), "{e}");
        let e = soft_wpmi(&sim, &t(&[1.0, f32::NAN], 2), &SoftWpmiParams::default()).unwrap_err().to_string();
        assert!(e.contains("image 1 unit 0 is not finite"), "{e}");
    }

    #[test]
    fn top_indices_break_ties_by_index() {
        assert_eq!(top_indices(&[1.0, 3.0, 3.0, 2.0], 3), vec![1, 2, 3]);
        assert_eq!(top_indices(&[0.0; 4], 2), vec![0, 1]);
    }
}
