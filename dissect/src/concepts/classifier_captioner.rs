//! The embedded captioner: an independent ImageNet classifier's top classes rendered as a
//! caption, joined to the probing set's own description when the image has one.
//!
//! This substitutes BLIP (no captioning weights exist offline). It can only say what its 1000
//! classes can say, and that is stated in every label's provenance.

use super::providers::{CaptionInput, Captioner, ComponentInfo, ProviderError, ProviderResult, Role};
use super::shared_model::{forward_images, SharedModel};
use crate::imagenet;

/// Below this top-1 probability the caption names the two most likely classes.
const CONFIDENT: f32 = 0.5;
/// Classes read beyond the two a caption names, for skipping withheld ones (leak-free mode).
const WITHHELD_SPARE: usize = 6;

pub struct ClassifierCaptioner {
    model: SharedModel,
    classifier_layer: usize,
    model_name: String,
}

impl ClassifierCaptioner {
    /// `model` must have a 1000-way ImageNet classifier layer named `classifier`.
    pub fn new(model: SharedModel) -> crate::Result<Self> {
        let (classifier_layer, model_name) = {
            let m = model.lock().unwrap_or_else(|p| p.into_inner());
            (m.layer_index("classifier")?, m.name().to_string())
        };
        Ok(ClassifierCaptioner { model, classifier_layer, model_name })
    }

    fn error(&self, e: impl std::fmt::Display) -> ProviderError {
        ProviderError::Local { component: format!("{} captioner", self.model_name), reason: e.to_string() }
    }
}

/// `name` after its indefinite article: "a tabby", "an espresso", "a unicycle", "an hourglass".
/// By the first letter, with the few sounds that spelling gets wrong among class names.
pub fn with_article(name: &str) -> String {
    let lower = name.to_lowercase();
    let starts = |prefixes: &[&str]| prefixes.iter().any(|p| lower.starts_with(p));
    let vowel_sound = if starts(&["uni", "eu", "one", "use", "ewe", "uk"]) {
        false
    } else if starts(&["hour", "honest", "honor", "heir"]) {
        true
    } else {
        lower.starts_with(['a', 'e', 'i', 'o', 'u'])
    };
    format!("{} {name}", if vowel_sound { "an" } else { "a" })
}

/// "a photo of a tabby" or "a photo of a tabby or a tiger cat", after the description if any.
pub fn render_caption(top: &[(usize, f32)], description: Option<&str>) -> String {
    let names = imagenet::short_names();
    let mut seen = match top {
        [(a, pa), (b, _), ..] if *pa < CONFIDENT => {
            format!("{} or {}", with_article(&names[*a]), with_article(&names[*b]))
        }
        [(a, _), ..] => with_article(&names[*a]),
        [] => "an image".to_string(),
    };
    match description.map(str::trim).filter(|d| !d.is_empty()) {
        Some(d) => {
            seen.insert_str(0, ", showing ");
            format!("{}{seen}", d.trim_end_matches('.'))
        }
        None => format!("a photo of {seen}"),
    }
}

impl Captioner for ClassifierCaptioner {
    fn info(&self) -> ComponentInfo {
        ComponentInfo::substitute(
            Role::Captioner,
            format!("{} top ImageNet classes + dataset descriptions", self.model_name),
            "an ImageNet classifier's class names rendered as a caption instead of BLIP; it can only name its 1000 classes",
        )
    }

    fn caption(&self, images: &[CaptionInput<'_>]) -> ProviderResult<Vec<String>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let pictures: Vec<&image::RgbImage> = images.iter().map(|i| i.image).collect();
        let logits = forward_images(&self.model, &pictures, self.classifier_layer).map_err(|e| self.error(e))?;
        // A few more than the two a caption names, so withheld classes can be skipped.
        let mut tops = Vec::with_capacity(images.len());
        for batch in &logits {
            tops.extend(crate::model::top_k(batch, 2 + WITHHELD_SPARE));
        }
        Ok(tops
            .iter()
            .zip(images)
            .map(|(top, input)| {
                let allowed: Vec<(usize, f32)> =
                    top.iter().copied().filter(|(c, _)| !input.withheld_classes.contains(c)).take(2).collect();
                render_caption(&allowed, input.description)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captions_name_one_class_when_confident_and_two_otherwise() {
        assert_eq!(render_caption(&[(967, 0.9), (968, 0.05)], None), "a photo of an espresso");
        assert_eq!(render_caption(&[(281, 0.4), (292, 0.3)], None), "a photo of a tabby or a tiger");
        assert_eq!(
            render_caption(&[(967, 0.9), (968, 0.05)], Some("a cup of coffee on a saucer.")),
            "a cup of coffee on a saucer, showing an espresso"
        );
        assert_eq!(render_caption(&[], Some("  ")), "a photo of an image");
    }

    #[test]
    fn articles_follow_the_sound() {
        for (name, expected) in [
            ("tabby", "a tabby"),
            ("Egyptian cat", "an Egyptian cat"),
            ("abacus", "an abacus"),
            ("umbrella", "an umbrella"),
            ("unicycle", "a unicycle"),
            ("European fire salamander", "a European fire salamander"),
            ("hourglass", "an hourglass"),
            ("hognose snake", "a hognose snake"),
        ] {
            assert_eq!(with_article(name), expected);
        }
    }
}
