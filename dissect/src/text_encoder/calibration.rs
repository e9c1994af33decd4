//! Calibration of the top-3 near-duplicate threshold for a text encoder (docs/method.md,
//! "Top-3 labels"). The paper drops a lower label whose CLIP text cosine with a higher one
//! exceeds 0.81; sentence encoders give lower cosines to the same pairs, so a threshold set for
//! CLIP would keep obvious paraphrases. Each encoder's threshold is the cosine that best separates
//! the paraphrase pairs below (the same concept said twice, as the LLM's N answers often are)
//! from the distinct pairs (related but different concepts, which the top-3 should keep).

/// Two labels naming the same concept.
pub const PARAPHRASES: [(&str, &str); 24] = [
    ("dogs", "canines"),
    ("red cars", "red automobiles"),
    ("striped patterns", "stripes"),
    ("bird feathers", "feathers of birds"),
    ("water surfaces", "bodies of water"),
    ("wooden furniture", "furniture made of wood"),
    ("musical instruments", "instruments for music"),
    ("outdoor sports", "sports played outdoors"),
    ("circular shapes", "round shapes"),
    ("text and letters", "written text"),
    ("ocean waves", "sea waves"),
    ("green foliage", "green leaves"),
    ("kitchen utensils", "cooking utensils"),
    ("snowy landscapes", "snow-covered scenery"),
    ("human faces", "faces of people"),
    ("cats", "felines"),
    ("metallic objects", "metal objects"),
    ("checkered patterns", "checkerboard patterns"),
    ("fruit", "fruits"),
    ("boats on water", "watercraft"),
    ("spotted fur", "fur with spots"),
    ("city streets", "urban streets"),
    ("blue sky", "clear blue skies"),
    ("insects", "bugs"),
];

/// Two labels naming related but different concepts.
pub const DISTINCT: [(&str, &str); 24] = [
    ("dogs", "cats"),
    ("red cars", "red dresses"),
    ("striped patterns", "spotted patterns"),
    ("bird feathers", "fish scales"),
    ("water surfaces", "sandy beaches"),
    ("wooden furniture", "metal tools"),
    ("musical instruments", "sports equipment"),
    ("outdoor sports", "indoor games"),
    ("circular shapes", "square tiles"),
    ("text and letters", "faces"),
    ("ocean waves", "mountain peaks"),
    ("green foliage", "autumn colors"),
    ("kitchen utensils", "garden tools"),
    ("snowy landscapes", "desert dunes"),
    ("human faces", "human hands"),
    ("cats", "tigers"),
    ("metallic objects", "glass bottles"),
    ("checkered patterns", "wavy lines"),
    ("fruit", "vegetables"),
    ("boats on water", "airplanes in the sky"),
    ("spotted fur", "smooth skin"),
    ("city streets", "country roads"),
    ("blue sky", "night sky"),
    ("insects", "spiders"),
];

/// Cosine of each pair under `embed` (which returns L2-normalised vectors).
pub fn pair_cosines<E>(
    pairs: &[(&str, &str)],
    embed: impl Fn(&[&str]) -> Result<Vec<Vec<f32>>, E>,
) -> Result<Vec<f32>, E> {
    let texts: Vec<&str> = pairs.iter().flat_map(|(a, b)| [*a, *b]).collect();
    let v = embed(&texts)?;
    Ok(v.chunks(2).map(|p| p[0].iter().zip(&p[1]).map(|(x, y)| x * y).sum()).collect())
}

/// The threshold `t` (a pair is a duplicate when its cosine is > `t`) that classifies the most
/// pairs right, and that accuracy. Among equally good thresholds, the midpoint of the widest gap.
pub fn best_threshold(paraphrase: &[f32], distinct: &[f32]) -> (f32, f64) {
    let mut cuts: Vec<f32> = paraphrase.iter().chain(distinct).copied().collect();
    cuts.sort_by(f32::total_cmp);
    let total = (paraphrase.len() + distinct.len()) as f64;
    let accuracy = |t: f32| {
        let right = paraphrase.iter().filter(|&&c| c > t).count() + distinct.iter().filter(|&&c| c <= t).count();
        right as f64 / total
    };
    // Candidate thresholds: each observed cosine (ties go to "distinct"), scored with the gap to
    // the next one so the midpoint can be returned.
    let mut best: Option<(f64, f32, f32)> = None; // (accuracy, gap, midpoint)
    for w in cuts.windows(2) {
        let (t, gap) = (w[0], w[1] - w[0]);
        let a = accuracy(t);
        let better = match best {
            None => true,
            Some((ba, bg, _)) => a > ba || (a == ba && gap > bg),
        };
        if better {
            best = Some((a, gap, t + gap / 2.0));
        }
    }
    best.map(|(a, _, mid)| (mid, a)).unwrap_or((0.5, 0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_separates_the_two_groups() {
        let (t, a) = best_threshold(&[0.9, 0.8, 0.75], &[0.3, 0.5, 0.55]);
        assert!((t - 0.65).abs() < 1e-6, "{t}");
        assert_eq!(a, 1.0);
        // One distinct pair above one paraphrase: the best threshold still gets 5 of 6.
        let (_, a) = best_threshold(&[0.9, 0.8, 0.4], &[0.3, 0.5, 0.2]);
        assert!((a - 5.0 / 6.0).abs() < 1e-9);
    }
}
