//! Grounded candidates, a departure from the paper (docs/method.md, "Step 2"): beside the LLM's
//! answers, Step 2 offers the most specific WordNet concept that most of the neuron's captions
//! fall under, read from the ImageNet classes the captions name ("tiger cat", "Persian cat",
//! "Siamese cat" → "domestic cat"). A small LLM often answers with its own habits ("animal
//! traits"); this candidate comes from the captions alone, and Step 3 decides, as for any
//! candidate, whether its concept images make the neuron fire.

use crate::imagenet::{self, Ancestor};
use std::collections::HashMap;

/// Share of the captions a grounded concept must cover (at least two captions).
pub const MIN_SHARE: f64 = 0.5;

/// A concept above more classes than this says next to nothing ("organism", "object").
const MAX_CLASSES_UNDER: usize = 400;

/// WordNet synsets that are real categories but poor descriptions: taxonomic ranks nobody
/// says and abstract roots. A covered set of captions gets the next concept up or down instead.
const UNSAYABLE: [&str; 12] = [
    "instrumentality",
    "chordate",
    "placental",
    "diapsid",
    "artifact",
    "commodity",
    "consumer goods",
    "matter",
    "substance",
    "solid",
    "whole",
    "craniate",
];

/// How many of the 1000 classes fall under each ancestor (its generality).
fn classes_under() -> &'static HashMap<u32, usize> {
    static COUNTS: std::sync::OnceLock<HashMap<u32, usize>> = std::sync::OnceLock::new();
    COUNTS.get_or_init(|| {
        let mut counts = HashMap::new();
        for c in 0..imagenet::NUM_CLASSES {
            for a in imagenet::hypernyms(c) {
                *counts.entry(a.offset).or_insert(0) += 1;
            }
        }
        counts
    })
}

/// The most specific WordNet concept above the classes named by at least [`MIN_SHARE`] of
/// `captions` (fewest classes under it; ties: more captions, then the name), unless it names
/// one of `withheld` (leak-free mode). `None` when no concept covers enough captions.
pub fn common_concept(captions: &[String], withheld: &[usize]) -> Option<String> {
    let needed = ((captions.len() as f64 * MIN_SHARE).ceil() as usize).max(2);
    let mut covered: HashMap<u32, (usize, &'static Ancestor)> = HashMap::new();
    for caption in captions {
        let mut above: HashMap<u32, &'static Ancestor> = HashMap::new();
        for class in imagenet::classes_named(caption) {
            for a in imagenet::hypernyms(class) {
                above.insert(a.offset, a);
            }
        }
        for (offset, a) in above {
            covered.entry(offset).or_insert((0, a)).0 += 1;
        }
    }
    let under = classes_under();
    let best = covered
        .into_values()
        .filter(|(n, a)| *n >= needed && under[&a.offset] <= MAX_CLASSES_UNDER && !UNSAYABLE.contains(&a.name.as_str()))
        .min_by(|(n1, a1), (n2, a2)| {
            (under[&a1.offset], std::cmp::Reverse(*n1), &a1.name).cmp(&(
                under[&a2.offset],
                std::cmp::Reverse(*n2),
                &a2.name,
            ))
        })?;
    let name = best.1.name.clone();
    (withheld.is_empty() || !imagenet::names_any(&name, withheld)).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(texts: &[&str]) -> Vec<String> {
        texts.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn captions_of_several_cats_are_grounded_in_domestic_cat() {
        let c = caps(&[
            "a photo of a tiger cat",
            "a photo of a Persian cat",
            "a photo of a Siamese cat or an Egyptian cat",
            "a photo of a tiger cat",
            "a photo of a lawn mower",
        ]);
        assert_eq!(common_concept(&c, &[]).as_deref(), Some("domestic cat"));
    }

    #[test]
    fn a_mixed_set_goes_up_to_what_most_captions_share_and_no_further() {
        // Two dogs, a cat and a wolf: "carnivore" covers four of five, but "domestic animal"
        // (the dogs and the cat, three of five) is more specific and still most.
        let c = caps(&[
            "a photo of a beagle",
            "a photo of a golden retriever",
            "a photo of a tabby",
            "a photo of a timber wolf",
            "a street at night",
        ]);
        assert_eq!(common_concept(&c, &[]).as_deref(), Some("domestic animal"));
        let few = caps(&["a photo of a beagle", "a street", "a field", "a wall", "a sky"]);
        assert_eq!(common_concept(&few, &[]), None, "one caption of five is not most");
        assert_eq!(common_concept(&caps(&["a street", "a field"]), &[]), None, "no class named");
    }

    #[test]
    fn general_roots_and_unsayable_ranks_are_never_offered() {
        // A beagle, a car and a pizza share only "physical entity"-level roots.
        let c = caps(&["a photo of a beagle", "a photo of a sports car", "a photo of a pizza", "a photo of a beagle"]);
        let got = common_concept(&c, &[]);
        assert!(
            got.as_deref().is_none_or(|g| !["entity", "object", "whole", "physical entity"].contains(&g)),
            "{got:?}"
        );
    }

    #[test]
    fn a_withheld_class_name_is_never_a_candidate() {
        // "tiger cat" withheld (leak-free for that unit): the redacted captions still name other
        // cats, and the concept must not be one of the withheld names.
        let tiger_cat = imagenet::short_names().iter().position(|n| n == "tiger cat").unwrap();
        let withheld = imagenet::withheld_classes(tiger_cat);
        let c = caps(&["a photo of a Persian cat", "a photo of a Siamese cat", "a photo of a tabby"]);
        let got = common_concept(&c, &withheld).unwrap();
        assert!(!imagenet::names_any(&got, &withheld), "{got}");
        assert_eq!(got, "domestic cat");
    }
}
