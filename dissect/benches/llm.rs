//! The in-process LLM answering Step 2B's requests one at a time against together
//! (`cargo bench -p dissect --bench llm`; a few minutes on 2 cores).
//!
//! Workload: the summary requests of `DND_BENCH_NEURONS` neurons (default 8, one pipeline chunk)
//! × N = 5, each over 10 captions made from ImageNet class names (the embedded captioner's
//! vocabulary), plus the simplification of each distinct caption. The reference, measured in the
//! same run on the same requests, is [`ChatModel::complete`] one request at a time (what the
//! pipeline did before batching); then [`ChatModel::complete_batch`] on the same requests with a
//! cleared prefix cache. Both start from a warm model. Answers are compared: with the same prompt
//! and seed they agree except where 8-bit activation rounding tips a sampled token.

use dissect::concepts::providers::{ChatModel, ChatRequest};
use dissect::concepts::summarize::{simplify_request, summarize_request, SummarizeOptions};
use dissect::llm::GgufChat;
use std::time::Instant;

fn main() {
    let neurons: usize = std::env::var("DND_BENCH_NEURONS").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    let llm = GgufChat::load_default().expect("the default GGUF model (run scripts/setup.sh)");
    let names = dissect::imagenet::short_names();
    let opts = SummarizeOptions::default();

    // Ten captions per neuron; neighbouring neurons share some classes, as D_tops do.
    let captions: Vec<Vec<String>> = (0..neurons)
        .map(|n| {
            (0..10).map(|i| format!("a photo of a {}", names[(n * 37 + (i % 4) * 101 + i / 4) % names.len()])).collect()
        })
        .collect();
    let mut distinct: Vec<&String> = captions.iter().flatten().collect();
    distinct.sort();
    distinct.dedup();
    let simplify: Vec<ChatRequest> = distinct.iter().map(|c| simplify_request(c, &opts, 1)).collect();
    let summarize: Vec<ChatRequest> = captions
        .iter()
        .enumerate()
        .flat_map(|(n, c)| {
            let opts = &opts;
            (0..opts.n_summaries).map(move |k| {
                let mut group = c.clone();
                let shift = k * 3 % group.len();
                group.rotate_left(shift);
                summarize_request(&group, opts, (n * 1000 + 100 + k) as u64)
            })
        })
        .collect();

    llm.complete(&simplify[0]).expect("warm-up");
    println!(
        "{} neurons: {} simplify + {} summarize requests, {}",
        neurons,
        simplify.len(),
        summarize.len(),
        dissect::concepts::providers::ChatModel::info(&llm).name
    );
    let mut results = Vec::new();
    for (what, requests) in [("simplify", &simplify), ("summarize", &summarize)] {
        llm.clear_prefix_cache();
        let t = Instant::now();
        let one: Vec<String> = requests.iter().map(|r| llm.complete(r).expect("answer")).collect();
        let sequential = t.elapsed().as_secs_f64();
        llm.clear_prefix_cache();
        let t = Instant::now();
        let together: Vec<String> = llm.complete_batch(requests).into_iter().map(|a| a.expect("answer")).collect();
        let batched = t.elapsed().as_secs_f64();
        let same = one.iter().zip(&together).filter(|(a, b)| a == b).count();
        println!(
            "{what:<10} one at a time {sequential:>6.2} s ({:.3} s/request) | together {batched:>6.2} s ({:.3} s/request) | \
             speed-up {:.2}× | identical answers {same}/{}",
            sequential / requests.len() as f64,
            batched / requests.len() as f64,
            sequential / batched,
            requests.len()
        );
        results.push((sequential, batched));
    }
    let (s, b) = results.iter().fold((0.0, 0.0), |(s, b), (x, y)| (s + x, b + y));
    println!(
        "LLM seconds per neuron: one at a time {:.2}, together {:.2} ({:.2}×)",
        s / neurons as f64,
        b / neurons as f64,
        s / b
    );
}
