//! Per-layer activation summaries: for every (image, unit) the spatial mean and max of the unit's
//! map — `n_images × channels` floats each, never the maps themselves.

use crate::crops::Summary;
use std::cmp::Ordering;
use tch::Tensor;

/// One layer's summaries over a probing set. Row `i` is image `i` of the recording's input;
/// rows of skipped (undecodable) images are all NaN, so indices never shift.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivationSummaries {
    pub layer: String,
    pub n_images: usize,
    pub channels: usize,
    /// Spatial means, `n_images × channels`, row-major. For a linear/classifier layer, the value.
    pub mean: Vec<f32>,
    /// Spatial maxima, same layout. For a linear/classifier layer, the value (= `mean`).
    pub max: Vec<f32>,
}

impl ActivationSummaries {
    /// All rows NaN: the state before anything is recorded.
    pub fn empty(layer: &str, n_images: usize, channels: usize) -> Self {
        let nan = vec![f32::NAN; n_images * channels];
        ActivationSummaries { layer: layer.to_string(), n_images, channels, mean: nan.clone(), max: nan }
    }

    /// The whole `n_images × channels` matrix for one summary.
    pub fn values(&self, summary: Summary) -> &[f32] {
        match summary {
            Summary::Mean => &self.mean,
            Summary::Max => &self.max,
        }
    }

    /// Image `image`'s row (one value per unit).
    pub fn row(&self, image: usize, summary: Summary) -> &[f32] {
        &self.values(summary)[image * self.channels..][..self.channels]
    }

    /// `g(A_unit(image))`.
    pub fn get(&self, image: usize, unit: usize, summary: Summary) -> f32 {
        self.row(image, summary)[unit]
    }

    /// One unit's activation on every image, in image order.
    pub fn column(&self, unit: usize, summary: Summary) -> impl Iterator<Item = f32> + '_ {
        assert!(unit < self.channels, "unit {unit} out of range: layer `{}` has {} units", self.layer, self.channels);
        self.values(summary).iter().skip(unit).step_by(self.channels).copied()
    }

    /// Whether image `image` was skipped (its row is NaN).
    pub fn is_missing(&self, image: usize) -> bool {
        self.channels > 0 && self.mean[image * self.channels].is_nan()
    }

    /// Copies `rows` (mean and max, `rows × channels` each) in at row `start`.
    pub(crate) fn write_rows(&mut self, start: usize, mean: &[f32], max: &[f32]) {
        let at = start * self.channels;
        self.mean[at..at + mean.len()].copy_from_slice(mean);
        self.max[at..at + max.len()].copy_from_slice(max);
    }
}

/// The `k` images on which `unit` is most active under `summary`, highest first, as
/// (image index, activation). NaN rows (skipped images) never appear; ties go to the lower index.
pub fn top_k(summaries: &ActivationSummaries, unit: usize, k: usize, summary: Summary) -> Vec<(usize, f32)> {
    let mut all: Vec<(usize, f32)> = summaries.column(unit, summary).enumerate().filter(|(_, v)| !v.is_nan()).collect();
    let order =
        |a: &(usize, f32), b: &(usize, f32)| b.1.partial_cmp(&a.1).unwrap_or(Ordering::Equal).then(a.0.cmp(&b.0));
    if k < all.len() {
        // Partition first: O(n) instead of sorting every image for a top-10.
        all.select_nth_unstable_by(k, order);
        all.truncate(k);
    }
    all.sort_by(order);
    all
}

/// Reduces one layer output (N×C×H×W, or N×C for linear layers) to its N×C spatial means and
/// maxima, read back to the CPU as row-major vectors.
pub(crate) fn reduce(output: &Tensor) -> crate::Result<(Vec<f32>, Vec<f32>)> {
    let read = |t: Tensor| -> crate::Result<Vec<f32>> {
        let t = t.to_device(tch::Device::Cpu).to_kind(tch::Kind::Float).contiguous();
        Ok(Vec::<f32>::try_from(&t.view([-1]))?)
    };
    let mean = read(Summary::Mean.reduce(output))?;
    // A linear layer has no map: its max is its mean; skip the second device read.
    let max = if output.dim() > 2 { read(Summary::Max.reduce(output))? } else { mean.clone() };
    Ok((mean, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sums(mean: Vec<f32>, channels: usize) -> ActivationSummaries {
        let n = mean.len() / channels;
        ActivationSummaries { layer: "l".into(), n_images: n, channels, max: mean.clone(), mean }
    }

    #[test]
    fn top_k_skips_nan_and_breaks_ties_by_index() {
        // 5 images × 2 units; unit 1 = [3, NaN, 5, 3, 1].
        let s = sums(vec![0., 3., 0., f32::NAN, 0., 5., 0., 3., 0., 1.], 2);
        assert_eq!(top_k(&s, 1, 3, Summary::Mean), vec![(2, 5.0), (0, 3.0), (3, 3.0)]);
        assert_eq!(top_k(&s, 1, 10, Summary::Max), vec![(2, 5.0), (0, 3.0), (3, 3.0), (4, 1.0)]);
        assert_eq!(top_k(&s, 1, 0, Summary::Mean), vec![]);
        assert_eq!(s.column(1, Summary::Mean).count(), 5);
        assert!(s.row(1, Summary::Mean)[1].is_nan());
    }

    #[test]
    fn reduce_gives_mean_and_max_per_unit() {
        let t = Tensor::from_slice(&[1f32, 2., 3., 6., 0., 0., 0., 4.]).view([1, 2, 2, 2]);
        let (mean, max) = reduce(&t).unwrap();
        assert_eq!((mean, max), (vec![3.0, 1.0], vec![6.0, 4.0]));
        let (mean, max) = reduce(&Tensor::from_slice(&[1f32, -2.]).view([1, 2])).unwrap();
        assert_eq!((mean, max), (vec![1.0, -2.0], vec![1.0, -2.0]));
    }
}
