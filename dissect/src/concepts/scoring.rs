//! Step 3: rank the concept images `D_new` by the neuron's activation and score every candidate
//! concept with the paper's four functions (docs/method.md, "Step 3").
//!
//! Ranks are 1-based (best = 1). Tied activations share the mean of the ranks they span
//! ("fractional ranking"), so a score never depends on the order in which tied images arrived.

use serde::{Deserialize, Serialize};

/// β of TopK-Squared: how many of a concept's best ranks count.
pub const TOPK_BETA: usize = 5;
/// ξ of Image-Products: a concept image counts only if it ranks within the top ξ of `D_new`.
pub const IMAGE_PRODUCTS_XI: usize = 10;

/// The scoring function that picks the best concept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScoringFunction {
    Mean,
    TopkSquared,
    ImageProducts,
    /// TopK-Squared + Image-Products, the paper's default.
    #[default]
    TopkSquaredImageProducts,
}

impl ScoringFunction {
    pub const ALL: [ScoringFunction; 4] = [
        ScoringFunction::Mean,
        ScoringFunction::TopkSquared,
        ScoringFunction::ImageProducts,
        ScoringFunction::TopkSquaredImageProducts,
    ];

    /// The name used on the command line, in the database and in exports.
    pub fn as_str(self) -> &'static str {
        match self {
            ScoringFunction::Mean => "mean",
            ScoringFunction::TopkSquared => "topk-squared",
            ScoringFunction::ImageProducts => "image-products",
            ScoringFunction::TopkSquaredImageProducts => "topk-squared-image-products",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        ScoringFunction::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// The score a concept gets under this function.
    pub fn of(self, scores: &ConceptScores) -> f64 {
        match self {
            ScoringFunction::Mean => scores.mean,
            ScoringFunction::TopkSquared => scores.topk_squared,
            ScoringFunction::ImageProducts => scores.image_products,
            ScoringFunction::TopkSquaredImageProducts => scores.combined,
        }
    }
}

/// One candidate's scores under every function, and the ranks behind them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConceptScores {
    /// `−mean(R_t)`.
    pub mean: f64,
    /// `−(1/β) Σ R_t[i]²` over the β best ranks (missing ones count as `|D_new| + 1`).
    pub topk_squared: f64,
    /// Mean cosine between `D_top` and the concept's images ranked within the top ξ; −1 if none.
    pub image_products: f64,
    /// `(|T| − p(t)) · IP(t)` where `p` is the concept's position by TopK-Squared.
    pub combined: f64,
    /// The concept's image ranks within `D_new`, best first.
    pub ranks: Vec<f64>,
}

/// Fractional 1-based ranks of `values`, highest value = rank 1. NaN ranks last.
pub fn fractional_ranks(values: &[f32]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    let key = |i: usize| if values[i].is_nan() { f32::NEG_INFINITY } else { values[i] };
    order.sort_by(|&a, &b| key(b).total_cmp(&key(a)));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && key(order[end]) == key(order[start]) {
            end += 1;
        }
        // Positions start..end (0-based) hold equal values: they share the mean 1-based rank.
        let shared = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = shared;
        }
        start = end;
    }
    ranks
}

/// Scores every concept under all four functions.
///
/// * `activations[t]`: the neuron's activation on concept `t`'s images (may be empty).
/// * `top_embeddings`: `E(x)` for `x ∈ D_top` (L2-normalised).
/// * `image_embeddings[t]`: `E(y)` for concept `t`'s images, same order as `activations[t]`.
pub fn score_concepts(
    activations: &[Vec<f32>],
    top_embeddings: &[Vec<f32>],
    image_embeddings: &[Vec<Vec<f32>>],
) -> Vec<ConceptScores> {
    assert_eq!(activations.len(), image_embeddings.len(), "one embedding list per concept");
    let flat: Vec<f32> = activations.iter().flatten().copied().collect();
    let all_ranks = fractional_ranks(&flat);
    let penalty = (flat.len() + 1) as f64;

    let mut offset = 0;
    let mut scores: Vec<ConceptScores> = activations
        .iter()
        .zip(image_embeddings)
        .map(|(acts, embs)| {
            assert_eq!(acts.len(), embs.len(), "one embedding per concept image");
            let mine = &all_ranks[offset..offset + acts.len()];
            offset += acts.len();
            let mut ranks = mine.to_vec();
            ranks.sort_by(f64::total_cmp);

            let mean = if ranks.is_empty() { -penalty } else { -ranks.iter().sum::<f64>() / ranks.len() as f64 };
            let topk_squared = -(0..TOPK_BETA).map(|i| ranks.get(i).copied().unwrap_or(penalty).powi(2)).sum::<f64>()
                / TOPK_BETA as f64;

            let kept: Vec<&Vec<f32>> =
                mine.iter().zip(embs).filter(|(r, _)| **r <= IMAGE_PRODUCTS_XI as f64).map(|(_, e)| e).collect();
            let image_products = if kept.is_empty() || top_embeddings.is_empty() {
                -1.0
            } else {
                let total: f64 =
                    top_embeddings.iter().flat_map(|x| kept.iter().map(move |y| super::cosine(x, y) as f64)).sum();
                total / (top_embeddings.len() * kept.len()) as f64
            };
            ConceptScores { mean, topk_squared, image_products, combined: 0.0, ranks }
        })
        .collect();

    // Combined: position by TopK-Squared, best = 0. Equal TopK-Squared scores share the better
    // position, so the combined score never depends on the order the LLM gave the candidates.
    let n = scores.len();
    let positions: Vec<usize> =
        (0..n).map(|t| (0..n).filter(|&u| scores[u].topk_squared > scores[t].topk_squared).count()).collect();
    for (t, position) in positions.into_iter().enumerate() {
        scores[t].combined = (n - position) as f64 * scores[t].image_products;
    }
    scores
}

/// Candidate indices ordered best first under `function` (ties keep candidate order; the
/// pipeline breaks them with [`order_with_ties`]).
pub fn order_by(scores: &[ConceptScores], function: ScoringFunction) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| function.of(&scores[b]).total_cmp(&function.of(&scores[a])));
    order
}

/// What decides between candidates that tie under the scoring function. Near-synonymous
/// candidates retrieve the same concept images and so tie in every score; without a rule the
/// LLM's answer order would pick the label.
pub struct TieBreak<'a> {
    /// How many of the N summary answers gave each candidate: more wins.
    pub support: &'a [usize],
    /// The candidate texts: then the shorter (fewer words, more general) wins, then the
    /// alphabetically first, so the order never depends on the order the answers came in.
    pub labels: &'a [String],
}

/// Candidate indices best first under `function`, ties broken by [`TieBreak`].
pub fn order_with_ties(scores: &[ConceptScores], function: ScoringFunction, ties: &TieBreak<'_>) -> Vec<usize> {
    let words = |i: usize| ties.labels[i].split_whitespace().count();
    let support = |i: usize| ties.support.get(i).copied().unwrap_or(1);
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| {
        function
            .of(&scores[b])
            .total_cmp(&function.of(&scores[a]))
            .then(support(b).cmp(&support(a)))
            .then(words(a).cmp(&words(b)))
            .then(ties.labels[a].cmp(&ties.labels[b]))
    });
    order
}

/// The paper's cosine above which a lower-ranked label is dropped from the top-3 as a
/// near-duplicate (A.5). It was set for CLIP's text encoder; other encoders state their own
/// calibrated value ([`super::TextEncoder::duplicate_cosine`]).
pub const CLIP_DUPLICATE_LABEL_COSINE: f32 = 0.81;

/// The concepts a neuron's labels are made of, best first: the best concept always (it is the
/// answer of Step 3), then up to `n - 1` more among those that had concept images to be judged
/// by (a concept without any scores −1 for lack of evidence, not because its images missed),
/// skipping near-duplicates as [`top_distinct`] does.
pub fn label_concepts(
    order: &[usize],
    has_images: &[bool],
    text_embeddings: &[Vec<f32>],
    n: usize,
    duplicate_cosine: f32,
) -> Vec<usize> {
    let judged: Vec<usize> =
        order.iter().enumerate().filter(|&(pos, &c)| pos == 0 || has_images[c]).map(|(_, &c)| c).collect();
    top_distinct(&judged, text_embeddings, n, duplicate_cosine)
}

/// The "multiple labels": walk candidates best first and keep up to `n` whose text embedding has
/// cosine ≤ `duplicate_cosine` with every label kept before it.
pub fn top_distinct(order: &[usize], text_embeddings: &[Vec<f32>], n: usize, duplicate_cosine: f32) -> Vec<usize> {
    let mut kept: Vec<usize> = Vec::with_capacity(n);
    for &t in order {
        if kept.len() == n {
            break;
        }
        if kept.iter().all(|&k| super::cosine(&text_embeddings[k], &text_embeddings[t]) <= duplicate_cosine) {
            kept.push(t);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn labels_leave_out_runners_up_without_concept_images() {
        let emb = |x: f32| vec![x, 1.0 - x];
        let text = vec![emb(1.0), emb(0.0), emb(0.5), emb(0.2)];
        // Order 2, 0, 1, 3; concept 0 has no images: it is skipped as a runner-up.
        let has = [false, true, true, true];
        assert_eq!(label_concepts(&[2, 0, 1, 3], &has, &text, 3, 0.99), vec![2, 1, 3]);
        // The best concept stays even without images (it is Step 3's answer).
        assert_eq!(label_concepts(&[0, 1], &has, &text, 3, 0.99), vec![0, 1]);
    }

    #[test]
    fn ranks_are_one_based_and_ties_share_the_mean_rank() {
        assert_eq!(fractional_ranks(&[0.1, 0.9, 0.5]), vec![3.0, 1.0, 2.0]);
        // 0.7 and 0.7 span ranks 2 and 3 → both 2.5.
        assert_eq!(fractional_ranks(&[0.9, 0.7, 0.7, 0.1]), vec![1.0, 2.5, 2.5, 4.0]);
        assert_eq!(fractional_ranks(&[f32::NAN, 0.0]), vec![2.0, 1.0]);
        assert!(fractional_ranks(&[]).is_empty());
    }

    /// Three concepts, 12 images. Activations chosen so ranks are easy to read:
    /// A gets ranks 1,2,3,4,5,6 (activations 12..7), B gets 7,8,9,10, C gets 11,12.
    fn three_concepts() -> Vec<Vec<f32>> {
        vec![vec![12.0, 11.0, 10.0, 9.0, 8.0, 7.0], vec![3.0, 4.0, 5.0, 6.0], vec![1.0, 2.0]]
    }

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn mean_and_topk_squared_match_hand_computation() {
        let acts = three_concepts();
        let e = vec![unit(&[1.0, 0.0])];
        let embs: Vec<Vec<Vec<f32>>> = acts.iter().map(|a| vec![e[0].clone(); a.len()]).collect();
        let s = score_concepts(&acts, &e, &embs);
        assert!(close(s[0].mean, -3.5)); // (1+…+6)/6
        assert!(close(s[1].mean, -8.5)); // (7+8+9+10)/4
        assert!(close(s[2].mean, -11.5));
        assert_eq!(s[1].ranks, vec![7.0, 8.0, 9.0, 10.0]);
        // A: (1+4+9+16+25)/5 = 11
        assert!(close(s[0].topk_squared, -11.0));
        // B has 4 images: the 5th is the penalty rank 13: (49+64+81+100+169)/5 = 92.6
        assert!(close(s[1].topk_squared, -92.6));
        // C: (121+144+169+169+169)/5 = 154.4
        assert!(close(s[2].topk_squared, -154.4));
    }

    #[test]
    fn image_products_use_only_images_in_the_top_xi() {
        let acts = three_concepts();
        let top = vec![unit(&[1.0, 0.0]), unit(&[0.0, 1.0])];
        let a = unit(&[1.0, 1.0]); // cos 0.7071 with both top images
        let b = unit(&[1.0, 0.0]); // cos 1 and 0
        let far = unit(&[-1.0, 0.0]); // would drag the mean down if counted
        let embs = vec![vec![a.clone(); 6], vec![b.clone(), b.clone(), b.clone(), b.clone()], vec![far.clone(), far]];
        let s = score_concepts(&acts, &top, &embs);
        assert!((s[0].image_products - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        // B's ranks 7..10 are all within ξ = 10: mean of (1, 0) = 0.5.
        assert!((s[1].image_products - 0.5).abs() < 1e-6);
        // C ranks 11, 12: none within the top 10 → −1.
        assert_eq!(s[2].image_products, -1.0);
        // Combined: TopK order A (p=0), B (p=1), C (p=2); |T| = 3.
        assert!((s[0].combined - 3.0 * std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert!((s[1].combined - 2.0 * 0.5).abs() < 1e-6);
        assert!(close(s[2].combined, -1.0));
        assert_eq!(order_by(&s, ScoringFunction::TopkSquaredImageProducts), vec![0, 1, 2]);
    }

    #[test]
    fn combined_can_prefer_a_concept_that_topk_ranks_second() {
        // A ranks best but its images look nothing like D_top; B is second but similar.
        let acts = vec![vec![10.0, 9.0], vec![8.0, 7.0]];
        let top = vec![unit(&[1.0, 0.0])];
        let embs = vec![vec![unit(&[0.2, 1.0]); 2], vec![unit(&[1.0, 0.0]); 2]];
        let s = score_concepts(&acts, &top, &embs);
        assert_eq!(order_by(&s, ScoringFunction::TopkSquared), vec![0, 1]);
        // A: 2 · 0.196 = 0.392; B: 1 · 1.0 = 1.0.
        assert_eq!(order_by(&s, ScoringFunction::TopkSquaredImageProducts), vec![1, 0]);
        assert_eq!(order_by(&s, ScoringFunction::ImageProducts), vec![1, 0]);
        assert_eq!(order_by(&s, ScoringFunction::Mean), vec![0, 1]);
    }

    #[test]
    fn a_concept_with_no_images_gets_the_penalty_everywhere() {
        let acts = vec![vec![1.0, 2.0], vec![]];
        let top = vec![unit(&[1.0])];
        let embs = vec![vec![unit(&[1.0]); 2], vec![]];
        let s = score_concepts(&acts, &top, &embs);
        // |D_new| = 2 → penalty rank 3.
        assert!(close(s[1].mean, -3.0));
        assert!(close(s[1].topk_squared, -9.0));
        assert_eq!(s[1].image_products, -1.0);
        assert!(s[1].ranks.is_empty());
        assert!(close(s[1].combined, -1.0)); // position 1 of 2 → (2 − 1) · −1
        for f in ScoringFunction::ALL {
            assert_eq!(order_by(&s, f)[0], 0, "{f:?}");
        }
    }

    #[test]
    fn tied_activations_across_concepts_tie_the_scores() {
        let acts = vec![vec![5.0, 1.0], vec![1.0, 5.0]];
        let top = vec![unit(&[1.0])];
        let embs = vec![vec![unit(&[1.0]); 2]; 2];
        let s = score_concepts(&acts, &top, &embs);
        assert!(close(s[0].mean, s[1].mean));
        assert!(close(s[0].topk_squared, s[1].topk_squared));
        assert_eq!(s[0].ranks, vec![1.5, 3.5]);
        // Equal TopK-Squared keeps candidate order: A first.
        assert_eq!(order_by(&s, ScoringFunction::TopkSquared), vec![0, 1]);
        // …and both share the first position, so the combined scores tie too.
        assert!(close(s[0].combined, s[1].combined));
    }

    #[test]
    fn ties_are_broken_by_support_then_words_then_text_whatever_the_answer_order() {
        // Three near-synonyms retrieve the same images: every score ties.
        let acts = vec![vec![5.0, 1.0]; 3];
        let top = vec![unit(&[1.0])];
        let embs = vec![vec![unit(&[1.0]); 2]; 3];
        let s = score_concepts(&acts, &top, &embs);
        for f in ScoringFunction::ALL {
            assert!(close(f.of(&s[0]), f.of(&s[2])), "{f:?} ties");
        }
        let labels = |v: &[&str]| v.iter().map(|l| l.to_string()).collect::<Vec<_>>();
        let f = ScoringFunction::TopkSquaredImageProducts;
        let l = labels(&["red sports cars", "cars", "automobiles"]);
        // Support decides first.
        let order = order_with_ties(&s, f, &TieBreak { support: &[1, 1, 3], labels: &l });
        assert_eq!(order, vec![2, 1, 0]);
        // Equal support: fewer words, then alphabetical.
        assert_eq!(order_with_ties(&s, f, &TieBreak { support: &[1, 1, 1], labels: &l }), vec![2, 1, 0]);
        let reversed = labels(&["automobiles", "cars", "red sports cars"]);
        assert_eq!(order_with_ties(&s, f, &TieBreak { support: &[1, 1, 1], labels: &reversed }), vec![0, 1, 2]);
        // A real score difference still wins over support.
        let acts = vec![vec![5.0, 4.0], vec![1.0, 2.0]];
        let s = score_concepts(&acts, &top, &vec![vec![unit(&[1.0]); 2]; 2]);
        let l = labels(&["a", "b"]);
        assert_eq!(order_with_ties(&s, f, &TieBreak { support: &[1, 5], labels: &l }), vec![0, 1]);
    }

    #[test]
    fn top_distinct_drops_near_duplicates_of_higher_labels() {
        let emb = vec![unit(&[1.0, 0.0]), unit(&[0.95, 0.2]), unit(&[0.0, 1.0]), unit(&[0.6, 0.8])];
        // 1 is a near-duplicate of 0 (cos ≈ 0.978); 3 has cos 0.6 with 0 and 0.8 with 2 (≤ 0.81).
        assert_eq!(top_distinct(&[0, 1, 2, 3], &emb, 3, 0.81), vec![0, 2, 3]);
        assert_eq!(top_distinct(&[1, 0, 2], &emb, 2, 0.81), vec![1, 2]);
        assert_eq!(top_distinct(&[], &emb, 3, 0.81), Vec::<usize>::new());
        // A lower threshold (an encoder whose cosines run lower) drops 3 as well (cos 0.8 with 2).
        assert_eq!(top_distinct(&[0, 1, 2, 3], &emb, 3, 0.7), vec![0, 2]);
    }

    #[test]
    fn names_round_trip() {
        for f in ScoringFunction::ALL {
            assert_eq!(ScoringFunction::parse(f.as_str()), Some(f));
        }
        assert_eq!(ScoringFunction::default(), ScoringFunction::TopkSquaredImageProducts);
        assert_eq!(ScoringFunction::parse("median"), None);
    }
}
