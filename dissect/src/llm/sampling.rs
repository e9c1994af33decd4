//! Next-token choice: greedy at temperature 0, otherwise a draw from the tempered softmax with a
//! small seeded generator, so one request and seed always give the same answer.

/// SplitMix64: tiny, fast, and well mixed even for consecutive seeds.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Index of the largest logit (the first one on ties; NaN never wins).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] || logits[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

/// Greedy when `temperature` is 0 (or not a positive number), else a draw from
/// softmax(logits / temperature).
pub fn sample(logits: &[f32], temperature: f32, rng: &mut Rng) -> u32 {
    if !temperature.is_finite() || temperature <= 0.0 {
        return argmax(logits);
    }
    let t = temperature as f64;
    let max = logits[argmax(logits) as usize] as f64;
    let weights: Vec<f64> =
        logits.iter().map(|&l| if l.is_nan() { 0.0 } else { ((l as f64 - max) / t).exp() }).collect();
    let total: f64 = weights.iter().sum();
    let mut r = rng.next_f64() * total;
    for (i, w) in weights.iter().enumerate() {
        if r < *w {
            return i as u32;
        }
        r -= w;
    }
    argmax(logits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_and_seeded_draws() {
        let logits = [0.1f32, 2.0, 1.9, -3.0];
        let mut rng = Rng::new(1);
        assert_eq!(sample(&logits, 0.0, &mut rng), 1);
        assert_eq!(argmax(&[f32::NAN, 1.0, 1.0]), 1);

        let draws = |seed| {
            let mut r = Rng::new(seed);
            (0..200).map(|_| sample(&logits, 1.0, &mut r)).collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7), "same seed, same draws");
        assert_ne!(draws(7), draws(8));
        let d = draws(7);
        let ones = d.iter().filter(|&&i| i == 1).count();
        let twos = d.iter().filter(|&&i| i == 2).count();
        assert!(ones > 50 && twos > 50, "both near-tied tokens drawn: {ones} {twos}");
        assert!(!d.contains(&3) || d.iter().filter(|&&i| i == 3).count() < 5);

        // A very low temperature is practically greedy.
        let mut r = Rng::new(3);
        assert!((0..100).all(|_| sample(&logits, 0.01, &mut r) == 1));
    }
}
