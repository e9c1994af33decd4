//! Step 2B: captions → candidate concepts with a chat LLM, with the paper's two prompts
//! (A.1.2), two few-shot examples of this project's own, and the post-processing of
//! docs/method.md ("Step 2").
//!
//! Small local models misbehave in known ways: they parrot a few-shot example, answer with a
//! comma list or nothing. Copies and empty or over-long answers are rejected here (an answer that
//! repeats a caption is not: it may be the best label), and when every answer is rejected the most
//! common caption phrase stands in, so a neuron always gets candidates.

use super::providers::{ChatMessage, ChatModel, ChatRequest, ProviderError, ProviderResult};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The paper's caption-simplification instruction (A.1.2, prompt 1).
pub const SIMPLIFY_INSTRUCTION: &str = "Only state your answer without a period and quotation marks. \
Do not number your answer. State one coherent and concise concept label that simplifies the \
following description and deletes any unnecessary details:";

/// The paper's similarity instruction (A.1.2, prompt 2).
pub const SUMMARIZE_INSTRUCTION: &str = "Only state your answer without a period and quotation marks \
and do not simply repeat the descriptions. State one coherent and concise concept label that is 1-5 \
words long and can semantically summarize and represent most, not necessarily all, of the \
conceptual similarities in the following descriptions:";

/// The re-ask for an answer that came back as a comma-separated list.
pub const MERGE_INSTRUCTION: &str = "Only state your answer without a period and quotation marks. \
Merge the following comma-separated concept labels into one coherent and concise concept label \
that is 1-5 words long:";

/// The paper's one-shot example for simplification (A.1.2).
const SIMPLIFY_EXAMPLE: (&str, &str) =
    ("a red background with a red background and a red background with a red background.", "A red background");

/// The two few-shot examples that precede every summary request, written for this project. They
/// keep what the paper's two examples teach (docs/method.md, "Step 2"):
/// * the first names a shared *kind of thing* (fabrics) while one caption (the lighthouse) does
///   not fit: the label summarises most captions, not necessarily all;
/// * the second names a shared *property* (a colour) across unrelated objects, in a short
///   "<property> objects" phrase rather than any one caption's words;
/// * both answers are 1–5 words, lower-case, with no period or quotes, and repeat no caption.
pub const SUMMARIZE_EXAMPLES: [(&[&str], &str); 2] = [
    (
        &[
            "a close up of a grey knitted wool sweater",
            "a folded stack of woven cotton blankets",
            "a lighthouse on a rocky coast at sunset",
            "a knitted scarf with a cable pattern",
            "a loom with half-woven striped cloth",
        ],
        "knitted and woven fabrics",
    ),
    (
        &[
            "a yellow taxi waiting at a crossing",
            "a bunch of ripe bananas on a table",
            "a child in a yellow raincoat",
            "a field of sunflowers under a blue sky",
            "a yellow rubber duck in a bathtub",
        ],
        "yellow objects",
    ),
];

/// Words after which the paper also adds "<label> background" as a candidate.
const BACKGROUND_WORDS: [&str; 4] = ["design", "designs", "graphic", "graphics"];

/// A label has at most this many words, as the paper's few-shot answers teach (its longest has
/// four); a longer answer is a sentence, not a concept.
pub const MAX_LABEL_WORDS: usize = 8;

/// And at most this many characters: eight words of a broken answer ("aaaa…") must not become a
/// label either. A fallback caption phrase is cut to it at a word boundary.
pub const MAX_LABEL_CHARS: usize = 100;

/// `phrase` cut to [`MAX_LABEL_CHARS`] characters, at the last word boundary that fits (or
/// mid-word when a single word is longer).
fn bounded(phrase: String) -> String {
    if phrase.chars().count() <= MAX_LABEL_CHARS {
        return phrase;
    }
    let cut: String = phrase.chars().take(MAX_LABEL_CHARS).collect();
    let at_word = phrase.chars().nth(MAX_LABEL_CHARS).is_some_and(char::is_whitespace);
    match cut.rfind(' ') {
        Some(i) if !at_word && i > 0 => cut[..i].to_string(),
        _ => cut.trim_end().to_string(),
    }
}

/// Settings of Step 2B.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummarizeOptions {
    /// N: how many times the summary is asked for (captions reshuffled each time).
    pub n_summaries: usize,
    pub temperature: f32,
    /// Cap on generated tokens per answer: labels are 1–5 words.
    pub max_tokens: usize,
    /// Base seed: call `i` of a neuron uses `seed + i`, so runs are reproducible.
    pub seed: u64,
    /// Whether captions are simplified first (the paper does).
    pub simplify: bool,
}

impl Default for SummarizeOptions {
    fn default() -> Self {
        SummarizeOptions { n_summaries: 5, temperature: 0.3, max_tokens: 20, seed: 0, simplify: true }
    }
}

/// What came out of Step 2B for one neuron, with the raw material for provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidates {
    /// The candidate set T (lowercase, deduplicated, in the order found).
    pub labels: Vec<String>,
    /// The captions after simplification (input of the summary calls).
    pub simplified: Vec<String>,
    /// Every summary answer as the LLM gave it, and why it was rejected (if it was).
    pub answers: Vec<RawAnswer>,
    /// True when no answer survived and the most common caption phrase was used instead.
    pub fell_back: bool,
    /// Per label (same order): how many of the N answers gave it. A tie-breaker in Step 3.
    #[serde(default)]
    pub support: Vec<usize>,
    /// Labels that came from the captions' ImageNet classes rather than the LLM
    /// ([`super::grounded`]); also in `labels` (with support 0 unless the LLM gave them too).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grounded: Vec<String>,
}

impl Candidates {
    /// Adds a grounded candidate (see [`Candidates::grounded`]).
    pub fn add_grounded(&mut self, label: String) {
        if !self.labels.contains(&label) {
            self.labels.push(label.clone());
            self.support.push(0);
        }
        if !self.grounded.contains(&label) {
            self.grounded.push(label);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawAnswer {
    pub text: String,
    pub rejected: Option<String>,
}

/// The chat request that simplifies one caption.
pub fn simplify_request(caption: &str, opts: &SummarizeOptions, seed: u64) -> ChatRequest {
    let messages = vec![
        ChatMessage::user(format!("{SIMPLIFY_INSTRUCTION}\n{}", SIMPLIFY_EXAMPLE.0)),
        ChatMessage::assistant(SIMPLIFY_EXAMPLE.1),
        ChatMessage::user(format!("{SIMPLIFY_INSTRUCTION}\n{caption}")),
    ];
    ChatRequest { messages, temperature: opts.temperature, max_tokens: opts.max_tokens, seed }
}

/// The chat request that summarizes a group of (simplified) captions, with the few-shot examples.
pub fn summarize_request(captions: &[String], opts: &SummarizeOptions, seed: u64) -> ChatRequest {
    let mut messages = Vec::with_capacity(5);
    for (examples, answer) in SUMMARIZE_EXAMPLES {
        messages.push(ChatMessage::user(format!("{SUMMARIZE_INSTRUCTION}\n{}", numbered(examples.iter().copied()))));
        messages.push(ChatMessage::assistant(answer));
    }
    messages
        .push(ChatMessage::user(format!("{SUMMARIZE_INSTRUCTION}\n{}", numbered(captions.iter().map(String::as_str)))));
    ChatRequest { messages, temperature: opts.temperature, max_tokens: opts.max_tokens, seed }
}

fn merge_request(answer: &str, opts: &SummarizeOptions, seed: u64) -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage::user(format!("{MERGE_INSTRUCTION}\n{answer}"))],
        temperature: opts.temperature,
        max_tokens: opts.max_tokens,
        seed,
    }
}

fn numbered<'a>(lines: impl Iterator<Item = &'a str>) -> String {
    lines.enumerate().map(|(i, l)| format!("{}. {}", i + 1, l.trim())).collect::<Vec<_>>().join("\n")
}

/// The paper's post-processing of one answer: keep the text after a ':', drop quotes, numbering,
/// trailing periods and extra whitespace; lowercase. Empty stays empty.
pub fn clean_answer(answer: &str) -> String {
    let first_line = answer.trim().lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let after_colon = first_line.rsplit(':').next().unwrap_or(first_line);
    let mut s = after_colon.trim().trim_matches(|c: char| matches!(c, '"' | '\'' | '`' | '*' | '“' | '”'));
    // A leading "1." / "1)" / "- " numbering.
    let digits = s.chars().take_while(|c| c.is_ascii_digit()).count();
    if digits > 0 && s[digits..].starts_with(['.', ')']) {
        s = &s[digits + 1..];
    }
    let s = s.trim_start_matches(['-', '•']).trim();
    let s = s.trim_end_matches(['.', '!', ' ']).trim_matches(|c: char| matches!(c, '"' | '\'' | '`' | '*'));
    s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// Why an answer cannot be a candidate, if it cannot: only an empty, over-long or copied answer.
/// An answer equal to a caption is kept on purpose: when most of D_top shares one caption, that
/// caption is often the most faithful label (docs/method.md, "Step 2").
fn rejection(label: &str) -> Option<String> {
    if label.is_empty() {
        return Some("empty answer".into());
    }
    if label.split_whitespace().count() > MAX_LABEL_WORDS || label.chars().count() > MAX_LABEL_CHARS {
        return Some("longer than a label".into());
    }
    let copied = SUMMARIZE_EXAMPLES
        .iter()
        .any(|(captions, answer)| *answer == label || captions.iter().any(|c| clean_answer(c) == label));
    if copied {
        return Some("copies a few-shot example".into());
    }
    None
}

/// Runs Step 2B for one neuron's captions. `neuron_seed` varies per neuron so shuffles differ.
///
/// Errors from the LLM propagate (the caller marks the neuron failed); bad answers do not.
///
/// `simplified_cache` maps a caption to its simplification and is meant to live for a whole run:
/// the same images (and so the same captions) recur in many neurons' D_top. A caption's
/// simplification is seeded by its own text, so it does not depend on which neuron asked first.
pub fn candidates(
    llm: &dyn ChatModel,
    captions: &[String],
    opts: &SummarizeOptions,
    neuron_seed: u64,
    simplified_cache: &mut HashMap<String, String>,
) -> ProviderResult<Candidates> {
    candidates_batch(llm, &[(captions, neuron_seed)], opts, simplified_cache).remove(0)
}

/// [`candidates`] for several neurons (`(captions, neuron_seed)` each), asking the LLM in three
/// rounds of independent requests so that it can answer each round together
/// ([`ChatModel::complete_batch`]): every new caption's simplification, then every neuron's N
/// summaries, then the merges of comma-list answers. The prompts and seeds are those of
/// one-neuron-at-a-time calls, so the answers are too. One neuron's failure (or a failed
/// simplification of one of its captions) fails that neuron only.
pub fn candidates_batch(
    llm: &dyn ChatModel,
    neurons: &[(&[String], u64)],
    opts: &SummarizeOptions,
    simplified_cache: &mut HashMap<String, String>,
) -> Vec<ProviderResult<Candidates>> {
    candidates_batch_until(llm, neurons, opts, simplified_cache, &|| false, &mut |_| {}).expect("never stopped")
}

/// One of [`candidates_batch`]'s rounds of LLM requests, announced as it is sent: these rounds
/// take most of a dissection's time, so a front end says which one is running and how big it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmRound {
    /// Simplifying `requests` captions not seen before.
    Simplify { requests: usize },
    /// `requests` summaries: N per neuron.
    Summaries { requests: usize },
    /// Merging `requests` comma-list answers into one concept each.
    Merges { requests: usize },
}

/// [`candidates_batch`] that gives up (`None`) when `stop` says so before a round, so a cancelled
/// run waits for one round of LLM requests at most, not all three. Simplifications already
/// answered stay cached. `on_round` hears of each non-empty round as it is sent.
pub fn candidates_batch_until(
    llm: &dyn ChatModel,
    neurons: &[(&[String], u64)],
    opts: &SummarizeOptions,
    simplified_cache: &mut HashMap<String, String>,
    stop: &dyn Fn() -> bool,
    on_round: &mut dyn FnMut(LlmRound),
) -> Option<Vec<ProviderResult<Candidates>>> {
    // Round 1: simplifications of the captions not seen before.
    let mut failed_captions: HashMap<&str, ProviderError> = HashMap::new();
    if opts.simplify {
        let mut new: Vec<&String> = Vec::new();
        for c in neurons.iter().flat_map(|(captions, _)| captions.iter()) {
            if !simplified_cache.contains_key(c) && !new.contains(&c) {
                new.push(c);
            }
        }
        let requests: Vec<ChatRequest> =
            new.iter().map(|c| simplify_request(c, opts, opts.seed.wrapping_add(text_seed(c)))).collect();
        let answers = if requests.is_empty() {
            Vec::new()
        } else {
            on_round(LlmRound::Simplify { requests: requests.len() });
            llm.complete_batch(&requests)
        };
        for (c, answer) in new.into_iter().zip(answers) {
            match answer {
                Ok(answer) => {
                    let answer = clean_answer(&answer);
                    // A failed simplification keeps the caption: it still carries the content.
                    let failed = answer.is_empty() || answer == clean_answer(SIMPLIFY_EXAMPLE.1);
                    simplified_cache.insert(c.clone(), if failed { c.clone() } else { answer });
                }
                Err(e) => {
                    failed_captions.insert(c.as_str(), e);
                }
            }
        }
    }

    // Round 2: N summaries per neuron, captions reshuffled for each.
    struct Pending {
        simplified: Vec<String>,
        /// Index of the neuron's first summary request; its N requests are consecutive.
        first: usize,
    }
    let mut pending: Vec<ProviderResult<Pending>> = Vec::with_capacity(neurons.len());
    let mut requests = Vec::new();
    for &(captions, neuron_seed) in neurons {
        if let Some(e) = captions.iter().find_map(|c| failed_captions.get(c.as_str())) {
            pending.push(Err(e.clone()));
            continue;
        }
        let simplified: Vec<String> =
            captions.iter().map(|c| if opts.simplify { simplified_cache[c].clone() } else { c.clone() }).collect();
        let seed = summary_seed(opts, neuron_seed);
        let mut order: Vec<usize> = (0..simplified.len()).collect();
        let mut rng = SplitMix64(seed ^ 0x5eed);
        let first = requests.len();
        for call in 0..opts.n_summaries {
            shuffle(&mut order, &mut rng);
            let group: Vec<String> = order.iter().map(|&i| simplified[i].clone()).collect();
            requests.push(summarize_request(&group, opts, seed + 100 + call as u64));
        }
        pending.push(Ok(Pending { simplified, first }));
    }
    if stop() {
        return None;
    }
    if !requests.is_empty() {
        on_round(LlmRound::Summaries { requests: requests.len() });
    }
    let raw_answers = llm.complete_batch(&requests);

    // Round 3: as in the paper, a comma list is merged by asking once more.
    let mut merges: Vec<(usize, ChatRequest)> = Vec::new();
    for (i, answer) in raw_answers.iter().enumerate() {
        if let Ok(raw) = answer {
            let label = clean_answer(raw);
            if label.contains(',') {
                merges.push((i, merge_request(&label, opts, requests[i].seed + 50)));
            }
        }
    }
    if !merges.is_empty() && stop() {
        return None;
    }
    let merge_requests: Vec<ChatRequest> = merges.iter().map(|(_, r)| r.clone()).collect();
    if !merge_requests.is_empty() {
        on_round(LlmRound::Merges { requests: merge_requests.len() });
    }
    let merged: HashMap<usize, ProviderResult<String>> =
        merges.iter().map(|(i, _)| *i).zip(llm.complete_batch(&merge_requests)).collect();

    let out = pending
        .into_iter()
        .map(|p| {
            let p = p?;
            let mut labels: Vec<String> = Vec::new();
            let mut support: Vec<usize> = Vec::new();
            let mut answers = Vec::new();
            for i in p.first..p.first + opts.n_summaries {
                let raw = raw_answers[i].clone()?;
                let mut label = clean_answer(&raw);
                if let Some(merged) = merged.get(&i) {
                    let merged = clean_answer(&merged.clone()?);
                    // If the merge fails too, keep the list's first item.
                    label = if merged.is_empty() || merged.contains(',') {
                        label.split(',').next().unwrap_or("").trim().to_string()
                    } else {
                        merged
                    };
                }
                let rejected = rejection(&label);
                answers.push(RawAnswer { text: raw, rejected: rejected.clone() });
                if rejected.is_none() {
                    push_candidate(&mut labels, &mut support, label);
                }
            }
            let fell_back = labels.is_empty();
            if fell_back {
                if let Some(phrase) = most_common(&p.simplified) {
                    push_candidate(&mut labels, &mut support, bounded(phrase));
                }
            }
            Ok(Candidates { labels, simplified: p.simplified, answers, fell_back, support, grounded: Vec::new() })
        })
        .collect();
    Some(out)
}

/// Seed of a neuron's summary calls: call `i` uses this + 100 + i, its shuffles this ^ 0x5eed.
fn summary_seed(opts: &SummarizeOptions, neuron_seed: u64) -> u64 {
    opts.seed.wrapping_add(neuron_seed.wrapping_mul(1000))
}

/// Adds a label (or counts one more answer for it), and "<label> background" after
/// design/graphic words.
pub fn push_candidate(labels: &mut Vec<String>, support: &mut Vec<usize>, label: String) {
    let last = label.split_whitespace().last().unwrap_or("").to_string();
    let mut add = |text: String| match labels.iter().position(|l| *l == text) {
        Some(i) => support[i] += 1,
        None => {
            labels.push(text);
            support.push(1);
        }
    };
    if BACKGROUND_WORDS.contains(&last.as_str()) {
        add(label.clone());
        add(format!("{label} background"));
    } else {
        add(label);
    }
}

/// The most frequent cleaned caption (first one on ties).
fn most_common(captions: &[String]) -> Option<String> {
    let mut counts: HashMap<String, (usize, usize)> = HashMap::new();
    for (i, c) in captions.iter().enumerate() {
        let e = counts.entry(clean_answer(c)).or_insert((0, i));
        e.0 += 1;
    }
    counts
        .into_iter()
        .filter(|(k, _)| !k.is_empty())
        .max_by(|a, b| a.1 .0.cmp(&b.1 .0).then(b.1 .1.cmp(&a.1 .1)))
        .map(|(k, _)| k)
}

/// A stable seed from a text (FNV-1a), so a caption's simplification is reproducible.
fn text_seed(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// A small deterministic generator for reshuffling captions (no need for a crypto RNG).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn shuffle(v: &mut [usize], rng: &mut SplitMix64) {
    for i in (1..v.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::concepts::providers::{ComponentInfo, Role};
    use std::sync::Mutex;

    /// A scripted LLM: answers simplify requests by echoing a fixed mapping and summary
    /// requests from a queue; records every request.
    struct Scripted {
        summaries: Mutex<Vec<&'static str>>,
        seen: Mutex<Vec<ChatRequest>>,
    }

    impl Scripted {
        fn new(summaries: &[&'static str]) -> Self {
            Scripted { summaries: Mutex::new(summaries.iter().rev().copied().collect()), seen: Mutex::new(vec![]) }
        }
    }

    impl ChatModel for Scripted {
        fn info(&self) -> ComponentInfo {
            ComponentInfo::substitute(Role::Llm, "scripted", "test")
        }
        fn complete(&self, r: &ChatRequest) -> ProviderResult<String> {
            self.seen.lock().unwrap().push(r.clone());
            let last = &r.messages.last().unwrap().content;
            if last.starts_with(SIMPLIFY_INSTRUCTION) {
                let caption = last.lines().nth(1).unwrap();
                return Ok(format!("\"{}.\"", caption.replace("a photo of ", "")));
            }
            if last.starts_with(MERGE_INSTRUCTION) {
                return Ok("Merged Label".into());
            }
            Ok(self.summaries.lock().unwrap().pop().unwrap_or("").to_string())
        }
    }

    fn caps(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn clean_answer_applies_the_spec_post_processing() {
        assert_eq!(clean_answer("Concept: Red Cars."), "red cars");
        assert_eq!(clean_answer("\"Striped Patterns\""), "striped patterns");
        assert_eq!(clean_answer("1. Dogs on grass"), "dogs on grass");
        assert_eq!(clean_answer("  bird   wings \n extra line"), "bird wings");
        assert_eq!(clean_answer("**Fruit**"), "fruit");
        assert_eq!(clean_answer(""), "");
    }

    #[test]
    fn prompts_carry_the_paper_instructions_and_few_shot_examples() {
        let o = SummarizeOptions::default();
        let r = summarize_request(&caps(&["a dog", "a cat"]), &o, 7);
        assert_eq!(r.messages.len(), 5);
        assert_eq!(r.messages[1].content, "knitted and woven fabrics");
        assert_eq!(r.messages[3].content, "yellow objects");
        assert!(r.messages[4].content.starts_with(SUMMARIZE_INSTRUCTION));
        assert!(r.messages[4].content.ends_with("1. a dog\n2. a cat"));
        assert_eq!((r.temperature, r.seed), (0.3, 7));
        let s = simplify_request("a big red bus", &o, 1);
        assert_eq!(s.messages[1].content, "A red background");
        assert!(s.messages[2].content.ends_with("\na big red bus"));
    }

    #[test]
    fn summaries_are_cleaned_deduplicated_and_filtered() {
        let llm = Scripted::new(&[
            "Fruit-themed scenes.",
            "fruit-themed scenes",
            "yellow objects",           // parrots the few-shot answer
            "banana",                   // echoes a caption: kept
            "Label: Geometric Designs", // gains "… background"
        ]);
        let captions = caps(&["a photo of banana", "a photo of apple", "a photo of orange"]);
        let c = candidates(&llm, &captions, &SummarizeOptions::default(), 3, &mut HashMap::new()).unwrap();
        assert_eq!(c.simplified, caps(&["banana", "apple", "orange"]));
        assert_eq!(
            c.labels,
            caps(&["fruit-themed scenes", "banana", "geometric designs", "geometric designs background"])
        );
        assert_eq!(c.support, vec![2, 1, 1, 1], "two answers gave the first label");
        assert_eq!(c.answers.len(), 5);
        assert_eq!(c.answers[2].rejected.as_deref(), Some("copies a few-shot example"));
        assert_eq!(c.answers[3].rejected, None);
        assert!(!c.fell_back);
        // 3 simplify calls + 5 summary calls, each summary with all three captions.
        let seen = llm.seen.lock().unwrap();
        assert_eq!(seen.len(), 8);
        for r in &seen[3..] {
            let body = &r.messages[4].content;
            assert!(["banana", "apple", "orange"].iter().all(|w| body.contains(w)));
        }
    }

    #[test]
    fn an_answer_equal_to_the_shared_caption_is_a_candidate() {
        // Most of D_top got the same caption: the label that repeats it is the faithful one.
        let llm = Scripted::new(&["kneepad", "sports equipment", "kneepad"]);
        let o = SummarizeOptions { n_summaries: 3, ..Default::default() };
        let captions =
            caps(&["a photo of kneepad", "a photo of kneepad", "a photo of kneepad", "a photo of shin guard"]);
        let c = candidates(&llm, &captions, &o, 0, &mut HashMap::new()).unwrap();
        assert_eq!(c.labels, caps(&["kneepad", "sports equipment"]));
        assert_eq!(c.support, vec![2, 1]);
        assert!(c.answers.iter().all(|a| a.rejected.is_none()));
        // A copied few-shot caption is still rejected.
        let llm = Scripted::new(&["a child in a yellow raincoat"]);
        let o = SummarizeOptions { n_summaries: 1, ..Default::default() };
        let c = candidates(&llm, &captions, &o, 0, &mut HashMap::new()).unwrap();
        assert_eq!(c.answers[0].rejected.as_deref(), Some("copies a few-shot example"));
    }

    #[test]
    fn the_few_shot_examples_keep_what_they_teach() {
        let words = |t: &str| {
            t.split(|c: char| !c.is_alphanumeric()).filter(|w| w.len() > 2).map(str::to_lowercase).collect::<Vec<_>>()
        };
        for (captions, answer) in SUMMARIZE_EXAMPLES {
            assert_eq!(captions.len(), 5);
            assert!((1..=5).contains(&answer.split_whitespace().count()), "{answer}: 1-5 words");
            assert_eq!(clean_answer(answer), answer, "{answer}: already in the cleaned form");
            assert!(captions.iter().all(|c| clean_answer(c) != answer), "{answer} repeats no caption");
        }
        // "Most, not all": exactly one caption of the first example has nothing of its answer
        // (the lighthouse), the others share a word stem with it (knit/woven).
        let (captions, _) = SUMMARIZE_EXAMPLES[0];
        let fits = |c: &str| words(c).iter().any(|w| w.starts_with("knit") || w.starts_with("wov"));
        assert_eq!(captions.iter().filter(|c| !fits(c)).count(), 1);
        // A shared property of unrelated things: the answer names a colour most captions state.
        let (captions, answer) = SUMMARIZE_EXAMPLES[1];
        let property = words(answer)[0].clone();
        assert!(captions.iter().filter(|c| words(c).contains(&property)).count() >= 3);
    }

    #[test]
    fn comma_lists_are_merged_by_a_second_question() {
        let llm = Scripted::new(&["dogs, cats, birds", "pets"]);
        let o = SummarizeOptions { n_summaries: 2, ..Default::default() };
        let c = candidates(&llm, &caps(&["a dog", "a cat"]), &o, 0, &mut HashMap::new()).unwrap();
        assert_eq!(c.labels, caps(&["merged label", "pets"]));
    }

    #[test]
    fn all_answers_rejected_falls_back_to_the_most_common_caption() {
        let llm = Scripted::new(&["", "knitted and woven fabrics", ""]);
        let o = SummarizeOptions { n_summaries: 3, ..Default::default() };
        let c = candidates(
            &llm,
            &caps(&["a photo of kite", "a photo of bird", "a photo of bird"]),
            &o,
            0,
            &mut HashMap::new(),
        )
        .unwrap();
        assert!(c.fell_back);
        assert_eq!(c.labels, caps(&["bird"]));
    }

    /// Eight words of a broken answer are no label; a fallback caption phrase is cut to the
    /// bound at a word boundary.
    #[test]
    fn labels_are_bounded_in_characters_too() {
        let huge: &'static str = Box::leak(format!("{} cats", "a".repeat(300)).into_boxed_str());
        let llm = Scripted::new(&[huge, "tabby cats"]);
        let o = SummarizeOptions { n_summaries: 2, ..Default::default() };
        let c = candidates(&llm, &caps(&["a photo of cat"]), &o, 0, &mut HashMap::new()).unwrap();
        assert_eq!(c.answers[0].rejected.as_deref(), Some("longer than a label"));
        assert_eq!(c.labels, caps(&["tabby cats"]));

        let words = "striped ".repeat(30);
        assert_eq!(bounded(words.trim().to_string()), "striped ".repeat(12).trim_end());
        assert!(bounded(words.trim().to_string()).chars().count() <= MAX_LABEL_CHARS);
        assert_eq!(bounded("x".repeat(250)), "x".repeat(MAX_LABEL_CHARS));
        assert_eq!(bounded("short phrase".into()), "short phrase");
        let exact = format!("{} {}", "a".repeat(49), "b".repeat(50));
        assert_eq!(bounded(format!("{exact} tail")), exact, "a cut that falls on a space keeps the last word");
    }

    #[test]
    fn shuffles_are_seeded_and_differ_between_calls() {
        let captions = caps(&["a", "b", "c", "d", "e", "f"]);
        let run = |seed| {
            let llm = Scripted::new(&["x1", "x2", "x3"]);
            let o = SummarizeOptions { n_summaries: 3, simplify: false, seed, ..Default::default() };
            candidates(&llm, &captions, &o, 0, &mut HashMap::new()).unwrap();
            let seen = llm.seen.lock().unwrap();
            seen.iter().map(|r| r.messages[4].content.clone()).collect::<Vec<_>>()
        };
        let a = run(1);
        assert_eq!(a, run(1));
        assert_ne!(a, run(2));
        assert!(a[0] != a[1] || a[1] != a[2], "reshuffled between calls");
    }

    /// Answers like [`Scripted`] but records the size of each `complete_batch` round, and fails
    /// the simplification of any caption containing "broken".
    struct Rounds {
        inner: Scripted,
        rounds: Mutex<Vec<usize>>,
    }

    impl ChatModel for Rounds {
        fn info(&self) -> ComponentInfo {
            self.inner.info()
        }
        fn complete(&self, r: &ChatRequest) -> ProviderResult<String> {
            if r.messages.last().unwrap().content.contains("broken") {
                return Err(crate::concepts::providers::ProviderError::Local {
                    component: "llm".into(),
                    reason: "boom".into(),
                });
            }
            self.inner.complete(r)
        }
        fn complete_batch(&self, requests: &[ChatRequest]) -> Vec<ProviderResult<String>> {
            self.rounds.lock().unwrap().push(requests.len());
            requests.iter().map(|r| self.complete(r)).collect()
        }
    }

    #[test]
    fn a_batch_of_neurons_asks_in_three_rounds_and_fails_neurons_alone() {
        let llm = Rounds {
            inner: Scripted::new(&["dogs, cats", "pets", "birds", "kites", "trees", "leaves"]),
            rounds: Mutex::new(vec![]),
        };
        let o = SummarizeOptions { n_summaries: 2, ..Default::default() };
        let (a, b, c) = (
            caps(&["a photo of dog", "a photo of cat"]),
            caps(&["a photo of cat", "a broken photo"]),
            caps(&["a photo of bird", "a photo of kite"]),
        );
        let mut cache = HashMap::new();
        let out = candidates_batch(&llm, &[(&a, 0), (&b, 1), (&c, 2)], &o, &mut cache);
        // 5 distinct captions simplified together, then 2 summaries for each of the 2 neurons left,
        // then one merge for the comma list.
        assert_eq!(*llm.rounds.lock().unwrap(), vec![5, 4, 1]);
        assert_eq!(out[0].as_ref().unwrap().labels, caps(&["merged label", "pets"]));
        assert!(out[1].as_ref().unwrap_err().to_string().contains("boom"), "the neuron with the failing caption fails");
        assert_eq!(out[2].as_ref().unwrap().labels, caps(&["birds", "kites"]));
        assert_eq!(cache.len(), 4, "a failed simplification is not cached");
        // The same neurons one at a time give the same candidates (prompts and seeds do not depend on batching).
        let llm = Scripted::new(&["dogs, cats", "pets", "birds", "kites"]);
        let alone = candidates(&llm, &a, &o, 0, &mut HashMap::new()).unwrap();
        assert_eq!(alone, *out[0].as_ref().unwrap());
    }

    #[test]
    fn a_stop_between_rounds_asks_no_further_round() {
        let llm =
            Rounds { inner: Scripted::new(&["dogs, cats", "pets", "birds", "kites"]), rounds: Mutex::new(vec![]) };
        let o = SummarizeOptions { n_summaries: 2, ..Default::default() };
        let (a, b) = (caps(&["a photo of dog", "a photo of cat"]), caps(&["a photo of bird", "a photo of kite"]));
        let mut cache = HashMap::new();
        // Stopped once the simplifications are answered (as a cancel arriving during round 1).
        let stop = || !llm.rounds.lock().unwrap().is_empty();
        let mut announced = Vec::new();
        let mut on_round = |r| announced.push(r);
        assert!(candidates_batch_until(&llm, &[(&a, 0), (&b, 1)], &o, &mut cache, &stop, &mut on_round).is_none());
        assert_eq!(*llm.rounds.lock().unwrap(), vec![4], "no summaries asked after the stop");
        assert_eq!(cache.len(), 4, "the answered simplifications are kept");
        // Without a stop, the same call runs all its rounds, each announced with its size.
        let out = candidates_batch_until(&llm, &[(&a, 0), (&b, 1)], &o, &mut cache, &|| false, &mut on_round).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(*llm.rounds.lock().unwrap(), vec![4, 4, 1], "cached captions are not simplified again");
        assert_eq!(
            announced,
            [LlmRound::Simplify { requests: 4 }, LlmRound::Summaries { requests: 4 }, LlmRound::Merges { requests: 1 }]
        );
    }

    #[test]
    fn simplifications_are_cached_across_neurons() {
        let llm = Scripted::new(&["x", "y", "z", "w"]);
        let o = SummarizeOptions { n_summaries: 1, ..Default::default() };
        let mut cache = HashMap::new();
        candidates(&llm, &caps(&["a photo of dog", "a photo of cat"]), &o, 0, &mut cache).unwrap();
        candidates(&llm, &caps(&["a photo of cat", "a photo of cow"]), &o, 1, &mut cache).unwrap();
        let seen = llm.seen.lock().unwrap();
        let simplify_calls =
            seen.iter().filter(|r| r.messages.last().unwrap().content.starts_with(SIMPLIFY_INSTRUCTION)).count();
        assert_eq!(simplify_calls, 3, "cat is simplified once");
        assert_eq!(cache["a photo of cat"], "cat");
    }
}
