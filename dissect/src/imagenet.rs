//! The 1000 ImageNet-1k class names, in the standard class-index order, and their WordNet 3.0
//! hyponyms.
//!
//! One class a line, synonyms separated by commas ("tench, Tinca tinca"); the first part is the
//! short name used when a single label is needed. The hyponyms (`data/imagenet_hyponyms.tsv`,
//! made by `tools/imagenet_hyponyms.py` from Debian's WordNet and the classes' wnids) are what
//! leak-free captioning withholds beside a class's own names ("blue jay" for "jay").

use std::sync::OnceLock;

/// Number of ImageNet-1k classes.
pub const NUM_CLASSES: usize = 1000;

const RAW: &str = include_str!("../data/imagenet_classes.txt");
const HYPONYMS: &str = include_str!("../data/imagenet_hyponyms.tsv");
const HYPERNYMS: &str = include_str!("../data/imagenet_hypernyms.tsv");

/// A WordNet 3.0 synset above a class: "domestic cat", "feline", "mammal", …, "entity".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ancestor {
    /// The synset's offset in WordNet's data.noun (its identity).
    pub offset: u32,
    /// Shortest distance from WordNet's root, `entity` (0); larger is more specific.
    pub depth: u32,
    /// Its first lemma, lower-case.
    pub name: String,
}

/// Every WordNet 3.0 hypernym of a class, nearest first (`data/imagenet_hypernyms.tsv`, made by
/// `tools/imagenet_hypernyms.py`).
pub fn hypernyms(class: usize) -> &'static [Ancestor] {
    static TABLE: OnceLock<Vec<Vec<Ancestor>>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = vec![Vec::new(); NUM_CLASSES];
        for line in HYPERNYMS.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let (class, fields) = line.split_once('\t').expect("data/imagenet_hypernyms.tsv: class<TAB>ancestors");
            let class: usize = class.parse().expect("data/imagenet_hypernyms.tsv: a class index");
            table[class] = fields
                .split('|')
                .map(|f| {
                    let mut parts = f.splitn(3, ':');
                    let mut next = || parts.next().expect("data/imagenet_hypernyms.tsv: offset:depth:name");
                    let (offset, depth, name) = (next(), next(), next());
                    Ancestor {
                        offset: offset.parse().expect("an offset"),
                        depth: depth.parse().expect("a depth"),
                        name: name.to_string(),
                    }
                })
                .collect();
        }
        table
    });
    &table[class]
}

/// The classes whose short name `text` mentions as whole words (case-insensitive), longer names
/// first so "tiger cat" is not also read as "tiger".
pub fn classes_named(text: &str) -> Vec<usize> {
    static NAMES: OnceLock<Vec<(usize, Vec<String>)>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        let mut v: Vec<(usize, Vec<String>)> = short_names()
            .iter()
            .enumerate()
            .map(|(c, n)| (c, words(&n.to_lowercase()).map(str::to_string).collect::<Vec<_>>()))
            .filter(|(_, w)| !w.is_empty())
            .collect();
        v.sort_by_key(|(c, w)| (std::cmp::Reverse(w.len()), *c));
        v
    });
    let lower = text.to_lowercase();
    let text_words: Vec<&str> = words(&lower).collect();
    let mut taken = vec![false; text_words.len()];
    let mut found = Vec::new();
    for (class, name) in names {
        for start in 0..text_words.len().saturating_sub(name.len() - 1) {
            let span = start..start + name.len();
            if !taken[span.clone()].iter().any(|&t| t)
                && name.iter().zip(&text_words[span.clone()]).all(|(a, b)| a == b)
            {
                taken[span].iter_mut().for_each(|t| *t = true);
                if !found.contains(class) {
                    found.push(*class);
                }
            }
        }
    }
    found
}

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

/// The synonyms of a class line, lower-case ("tabby", "tabby cat").
pub fn synonyms(class: usize) -> Vec<String> {
    class_names()[class].split(',').map(|s| s.trim().to_lowercase()).filter(|s| !s.is_empty()).collect()
}

/// The WordNet 3.0 hyponyms of a class, lower-case ("blue jay", "jaybird", … for "jay"); empty
/// for the 641 classes that have none.
pub fn hyponyms(class: usize) -> &'static [String] {
    static TABLE: OnceLock<Vec<Vec<String>>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = vec![Vec::new(); NUM_CLASSES];
        for line in HYPONYMS.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let (class, names) = line.split_once('\t').expect("data/imagenet_hyponyms.tsv: class<TAB>names");
            let class: usize = class.parse().expect("data/imagenet_hyponyms.tsv: a class index");
            table[class] = names.split('|').map(str::to_string).collect();
        }
        table
    });
    &table[class]
}

/// What a leak-free caption of unit `class` may not say: the class's synonyms and hyponyms.
pub fn withheld_names(class: usize) -> Vec<String> {
    let mut names = synonyms(class);
    names.extend(hyponyms(class).iter().cloned());
    names
}

/// `class`, every class that shares one of its names (ImageNet has two "crane"s, two
/// "maillot"s, …) and every class that is one of its hyponyms: the classes a leak-free caption
/// of unit `class` may not name.
pub fn withheld_classes(class: usize) -> Vec<usize> {
    let own = withheld_names(class);
    (0..NUM_CLASSES).filter(|&c| c == class || synonyms(c).iter().any(|s| own.contains(s))).collect()
}

fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric() && c != '\'' && c != '-').filter(|w| !w.is_empty())
}

/// Whether `text` names any of `classes` (a synonym or hyponym as whole words, case-insensitive).
pub fn names_any(text: &str, classes: &[usize]) -> bool {
    redact(text, classes) != text
}

/// `text` with every whole-word mention of a withheld name of `classes` ([`withheld_names`])
/// replaced by "something" (case-insensitive; longer names first, so "tabby cat" goes before
/// "tabby").
pub fn redact(text: &str, classes: &[usize]) -> String {
    let mut names: Vec<Vec<String>> = classes
        .iter()
        .flat_map(|&c| withheld_names(c))
        .map(|n| words(&n).map(str::to_string).collect::<Vec<_>>())
        .filter(|n| !n.is_empty())
        .collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    // Word spans of the text (byte ranges), compared lower-case.
    let spans: Vec<(usize, usize)> = {
        let mut v = Vec::new();
        let mut start = None;
        for (i, c) in text.char_indices() {
            let in_word = c.is_alphanumeric() || c == '\'' || c == '-';
            match (in_word, start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    v.push((s, i));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            v.push((s, text.len()));
        }
        v
    };
    let lower: Vec<String> = spans.iter().map(|&(a, b)| text[a..b].to_lowercase()).collect();
    let mut out = String::with_capacity(text.len());
    let (mut i, mut copied) = (0, 0);
    while i < spans.len() {
        let hit = names.iter().find(|n| i + n.len() <= spans.len() && n.iter().zip(&lower[i..]).all(|(a, b)| a == b));
        match hit {
            Some(n) => {
                out.push_str(&text[copied..spans[i].0]);
                out.push_str("something");
                copied = spans[i + n.len() - 1].1;
                i += n.len();
            }
            None => i += 1,
        }
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leak_free_names_cover_synonyms_and_classes_sharing_a_name() {
        // 134 is the bird crane, 517 the machine.
        assert_eq!(short_names()[134], "crane");
        assert_eq!(withheld_classes(134), vec![134, 517]);
        assert_eq!(withheld_classes(967), vec![967]);
        assert!(synonyms(281).contains(&"tabby cat".to_string()));
        assert!(names_any("A Tabby Cat on a sofa", &[281]));
        assert!(names_any("an espresso, with foam", &[967]));
        assert!(!names_any("a cup of coffee", &[967]), "coffee is not one of espresso's names");
        assert!(!names_any("a tabbyish toy", &[281]), "whole words only");
        assert_eq!(redact("A Tabby Cat and a tabby, asleep.", &[281]), "A something and a something, asleep.");
        assert_eq!(redact("no names here", &[281]), "no names here");
    }

    #[test]
    fn leak_free_names_cover_wordnet_hyponyms() {
        // 17 is "jay": a blue jay is one, and "blue jay" goes as a whole.
        assert_eq!(short_names()[17], "jay");
        assert!(hyponyms(17).contains(&"blue jay".to_string()), "{:?}", hyponyms(17));
        assert_eq!(redact("A Blue Jay and a jaybird on a fence", &[17]), "A something and a something on a fence");
        assert_eq!(hyponyms(967), ["caffe latte", "latte"], "a latte is an espresso in WordNet");
        assert!(hyponyms(281).is_empty(), "tabby has no hyponyms");
        assert_eq!(hyponyms(4).len(), 8, "hammerhead: {:?}", hyponyms(4));
        let with_hyponyms = (0..NUM_CLASSES).filter(|&c| !hyponyms(c).is_empty()).count();
        assert_eq!(with_hyponyms, 359);
        // A class named among c's hyponyms is withheld with c, not the other way round.
        assert!(withheld_classes(618).contains(&20), "ladle withholds the dipper bird");
        assert!(!withheld_classes(20).contains(&618), "the dipper bird does not withhold the ladle");
        let below: Vec<(usize, usize)> = (0..NUM_CLASSES)
            .flat_map(|c| withheld_classes(c).into_iter().map(move |w| (c, w)))
            .filter(|&(c, w)| synonyms(w).iter().any(|s| hyponyms(c).contains(s)))
            .collect();
        // Names, not synsets, decide: a homonym counts too ("dipper", a ladle, is also the bird
        // class "water ouzel, dipper"), which withholds more, never less.
        assert_eq!(below.len(), 32, "{below:?}");
    }

    #[test]
    fn thousand_classes_in_standard_order() {
        assert_eq!(class_names().len(), NUM_CLASSES);
        assert_eq!(short_names()[0], "tench");
        assert_eq!(short_names()[967], "espresso");
        assert_eq!(short_names()[999], "toilet tissue");
    }
}
