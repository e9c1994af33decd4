//! Neurons as classifiers (the paper's Section 4.4): for each class of a labelled image folder,
//! the unit whose label is closest to the class name (mpnet cosine) is taken as a detector of the
//! class, and the area under the ROC curve of its activation, class images against all others,
//! says how well the label found it. When several units' labels are equally close, their AUROCs
//! are averaged, as the paper does.

use super::stats::auroc;
use serde::Serialize;

/// One class's detector.
#[derive(Debug, Clone, Serialize)]
pub struct ClassDetector {
    pub class: String,
    /// The units whose labels tie for closest, and the label.
    pub units: Vec<usize>,
    pub label: String,
    pub cosine: f64,
    pub auroc: f64,
}

/// A labelled unit: its index, label text and label embedding.
pub struct LabelledUnit<'a> {
    pub unit: usize,
    pub label: &'a str,
    pub embedding: &'a [f32],
}

/// For each class (`classes[c]` = (name, embedding)), the detector among `units`.
/// `image_class[i]` is the class of image `i`, and `activation(unit)` the unit's activation on
/// every image in that order. Classes without both positive and negative images are left out.
pub fn detectors(
    classes: &[(String, Vec<f32>)],
    image_class: &[usize],
    units: &[LabelledUnit<'_>],
    activation: &dyn Fn(usize) -> Vec<f64>,
) -> Vec<ClassDetector> {
    let mut out = Vec::new();
    if units.is_empty() {
        return out;
    }
    for (c, (name, emb)) in classes.iter().enumerate() {
        let positive: Vec<bool> = image_class.iter().map(|&k| k == c).collect();
        let cosines: Vec<f64> = units.iter().map(|u| dissect::concepts::cosine(emb, u.embedding) as f64).collect();
        let best = cosines.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let tied: Vec<usize> = (0..units.len()).filter(|&i| (cosines[i] - best).abs() < 1e-6).collect();
        let aurocs: Vec<f64> = tied.iter().filter_map(|&i| auroc(&activation(units[i].unit), &positive)).collect();
        if aurocs.is_empty() {
            continue;
        }
        out.push(ClassDetector {
            class: name.clone(),
            units: tied.iter().map(|&i| units[i].unit).collect(),
            label: units[tied[0]].label.to_string(),
            cosine: best,
            auroc: aurocs.iter().sum::<f64>() / aurocs.len() as f64,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closest_label_is_the_detector_and_ties_are_averaged() {
        let classes = vec![("dog".to_string(), vec![1.0, 0.0]), ("car".to_string(), vec![0.0, 1.0])];
        // Images: dog, dog, car, car.
        let image_class = [0, 0, 1, 1];
        let (a, b, c) = (vec![1.0, 0.0], vec![0.0, 1.0], vec![0.0, 1.0]);
        let units = [
            LabelledUnit { unit: 3, label: "dogs", embedding: &a },
            LabelledUnit { unit: 5, label: "cars", embedding: &b },
            LabelledUnit { unit: 8, label: "autos", embedding: &c },
        ];
        let activation = |unit: usize| match unit {
            3 => vec![9.0, 8.0, 1.0, 0.0], // a perfect dog detector
            5 => vec![0.0, 1.0, 7.0, 8.0], // a perfect car detector
            _ => vec![5.0, 6.0, 0.0, 1.0], // labelled "autos" but fires on dogs
        };
        let d = detectors(&classes, &image_class, &units, &activation);
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].class.as_str(), d[0].units.clone(), d[0].auroc), ("dog", vec![3], 1.0));
        // Units 5 and 8 tie for "car": AUROC 1 and 0 averaged.
        assert_eq!(d[1].units, vec![5, 8]);
        assert!((d[1].auroc - 0.5).abs() < 1e-12);
    }
}
