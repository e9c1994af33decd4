//! The 1000 ImageNet-1k class names, in the standard class-index order.
//!
//! One class a line, synonyms separated by commas ("tench, Tinca tinca"); the first part is the
//! short name used when a single label is needed.

use std::sync::OnceLock;

/// Number of ImageNet-1k classes.
pub const NUM_CLASSES: usize = 1000;

const RAW: &str = include_str!("../data/imagenet_classes.txt");

/// Full class lines ("tench, Tinca tinca"), indexed by class id.
pub fn class_names() -> &'static [String] {
    static NAMES: OnceLock<Vec<String>> = OnceLock::new();
    NAMES.get_or_init(|| RAW.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
}

/// Short class names (first synonym: "tench"), indexed by class id.
pub fn short_names() -> &'static [String] {
    static NAMES: OnceLock<Vec<String>> = OnceLock::new();
    NAMES.get_or_init(|| class_names().iter().map(|l| short_name(l).to_string()).collect())
}

/// The first comma-separated part of a class line.
pub fn short_name(line: &str) -> &str {
    line.split(',').next().unwrap_or(line).trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousand_classes_in_standard_order() {
        assert_eq!(class_names().len(), NUM_CLASSES);
        assert_eq!(short_names()[0], "tench");
        assert_eq!(short_names()[967], "espresso");
        assert_eq!(short_names()[999], "toilet tissue");
    }
}
