//! The in-process chat LLM (`dissect::llm`) on the real default GGUF
//! (Qwen2.5-Coder-0.5B-Instruct Q4_K_M). Needs the assets of `scripts/setup.sh`
//! (`$DND_ASSETS/llm/`, default ~/.cache/dnd-studio/assets/llm/).

use dissect::concepts::summarize::{summarize_request, SummarizeOptions};
use dissect::concepts::{ChatMessage, ChatModel, ChatRequest, Role};
use dissect::llm::{
    default_model_path, fallback_model_path, GgufChat, LlmOptions,
    PromptEvaluation::{Cached, Fresh, OnePass},
};
use dissect::Error;
use std::path::Path;
use std::sync::OnceLock;

fn load(path: &Path) -> GgufChat {
    if !path.is_file() {
        panic!(
            "chat model not found at {}: run `scripts/setup.sh` (or `python3 scripts/fetch_assets.py`) \
             to fetch it (the folder comes from $DND_ASSETS, default ~/.cache/dnd-studio/assets; now {})",
            path.display(),
            dissect::assets::assets_dir().display()
        );
    }
    GgufChat::load(path, LlmOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

/// One model for the whole test binary (loading it takes a few seconds and ~1 GB).
fn model() -> &'static GgufChat {
    static MODEL: OnceLock<GgufChat> = OnceLock::new();
    MODEL.get_or_init(|| load(&default_model_path()))
}

fn request(messages: Vec<ChatMessage>, temperature: f32, max_tokens: usize, seed: u64) -> ChatRequest {
    ChatRequest { messages, temperature, max_tokens, seed }
}

/// The pipeline's own summarize request (the paper's prompt and the project's two few-shot
/// examples, docs/method.md Step 2) for `captions`, with a 16-token cap.
fn summarize(captions: &[&str], temperature: f32, seed: u64) -> ChatRequest {
    let captions: Vec<String> = captions.iter().map(|c| c.to_string()).collect();
    let opts = SummarizeOptions { temperature, max_tokens: 16, ..SummarizeOptions::default() };
    summarize_request(&captions, &opts, seed)
}

const FRUIT: [&str; 5] = [
    "a bowl of red apples on a wooden table",
    "a pile of oranges at a market stall",
    "a bunch of ripe bananas",
    "sliced strawberries on a white plate",
    "a basket of green pears and grapes",
];

const DOGS: [&str; 5] = [
    "a golden retriever running on a beach",
    "a small brown puppy sleeping on a couch",
    "a black dog catching a frisbee",
    "a dog wearing a red collar sitting on grass",
    "two dogs playing in the snow",
];

#[test]
fn tokenizer_round_trips() {
    let tok = model().tokenizer();
    assert_eq!(tok.vocab_size(), 151_936);
    for text in [
        "Hello world",
        "a red camaro parked on a street, 1967.",
        "Grüße aus Köln: naïve café, 東京タワー, Ελλάδα, emoji 🍎🚗!",
        "  two leading spaces\n\ttab and\r\nCRLF   trailing   ",
        "it's what we'll do, I'd say; DON'T",
    ] {
        let ids = tok.encode(text).unwrap();
        assert!(!ids.is_empty());
        assert_eq!(tok.decode(&ids).unwrap(), text, "ids {ids:?}");
    }
    // Qwen2's own ids for these words, and one id per ChatML marker.
    assert_eq!(tok.encode("Hello world").unwrap(), vec![9707, 1879]);
    assert_eq!(tok.encode("<|im_start|>user").unwrap(), vec![151_644, 872]);
    // Digits are split one by one (Qwen2's pre-tokenizer).
    assert_eq!(tok.encode("2024").unwrap().len(), 4);
    let m = tok.message("user", "hi").unwrap();
    assert_eq!(m.first(), Some(&151_644));
    assert!(m.contains(&151_645));
    assert!(tok.is_stop(151_645) && tok.is_stop(151_643) && !tok.is_stop(9707));
}

#[test]
fn provenance_names_the_substitute() {
    let info = model().info();
    assert_eq!(info.role, Role::Llm);
    assert_eq!(info.name, "Qwen2.5-Coder-0.5B-Instruct Q4_K_M (in-process)");
    assert!(!info.paper_equivalent);
    assert_eq!(info.note.as_deref(), Some("a 0.5B local model instead of GPT-3.5 Turbo"));
    let c = model().config();
    assert_eq!((c.architecture.as_str(), c.n_layer, c.n_embd, c.n_head, c.n_kv_head), ("qwen2", 24, 896, 14, 2));
    assert_eq!(c.rope_base, 1_000_000.0);
}

#[test]
fn greedy_answer_is_sensible() {
    let r = request(vec![ChatMessage::user("What is the capital of France? Answer in one word.")], 0.0, 8, 0);
    let answer = model().complete(&r).unwrap();
    eprintln!("capital of France: {answer:?}");
    assert!(answer.contains("Paris"), "{answer:?}");
}

#[test]
fn same_request_and_seed_give_the_same_answer() {
    let r = summarize(&DOGS, 0.9, 1234);
    let a = model().generate(&r, Cached).unwrap();
    let b = model().generate(&r, Cached).unwrap();
    assert_eq!(a.tokens, b.tokens);
    assert_eq!(a.text, b.text);
    // Also from scratch, without the cached prefix.
    assert_eq!(model().generate(&r, Fresh).unwrap().tokens, a.tokens);
    // Other seeds may answer differently, but each is reproducible too.
    let other: Vec<String> = (0..3).map(|s| model().complete(&summarize(&DOGS, 0.9, s)).unwrap()).collect();
    let again: Vec<String> = (0..3).map(|s| model().complete(&summarize(&DOGS, 0.9, s)).unwrap()).collect();
    eprintln!("dogs at T=0.9: {:?} / seeds 0..3: {other:?}", a.text);
    assert_eq!(other, again);
}

#[test]
fn cached_prefix_gives_the_tokens_of_an_uncached_run() {
    let m = model();
    let fruit = summarize(&FRUIT, 0.0, 0);
    let dogs = summarize(&DOGS, 0.0, 0);
    let reference_fruit = m.generate(&fruit, OnePass).unwrap();
    let reference_dogs = m.generate(&dogs, OnePass).unwrap();
    assert_eq!(reference_fruit.stats.reused_tokens, 0);

    let first = m.generate(&fruit, Cached).unwrap(); // stores the few-shot prefix (if not already there)
    let second = m.generate(&dogs, Cached).unwrap(); // starts from it
                                                     // Reuse covers the few-shot messages and, in whole 32-token blocks, the instruction that
                                                     // starts the last message.
    let s = &second.stats;
    assert!(s.reused_tokens % 32 == 0 && s.reused_tokens > s.prompt_tokens - last_turn_tokens(&dogs), "{s:?}");
    assert_eq!(first.tokens, reference_fruit.tokens, "{:?} vs {:?}", first.text, reference_fruit.text);
    assert_eq!(second.tokens, reference_dogs.tokens, "{:?} vs {:?}", second.text, reference_dogs.text);
    assert!(m.prefix_cache_len() >= 1);
    let fresh = m.generate(&dogs, Fresh).unwrap();
    assert_eq!((fresh.stats.reused_tokens, &fresh.tokens), (0, &second.tokens));
}

#[test]
fn answers_decoded_together_match_answers_alone() {
    let m = model();
    // Greedy requests of different lengths and caps, one of them with nothing to generate and one
    // whose prompt is too long for the context: each gets what it gets alone.
    let too_long = request(vec![ChatMessage::user("word ".repeat(5000))], 0.0, 8, 0);
    let requests = vec![
        summarize(&FRUIT, 0.0, 0),
        summarize(&DOGS, 0.0, 0),
        request(vec![ChatMessage::user("Count from 1 to 100, separated by commas.")], 0.0, 7, 0),
        request(vec![ChatMessage::user("Reply with just the word yes.")], 0.0, 50, 0),
        too_long,
        ChatRequest { max_tokens: 0, ..summarize(&DOGS, 0.0, 0) },
    ];
    let together = m.generate_batch(&requests);
    assert_eq!(together.len(), requests.len());
    for (r, got) in requests.iter().zip(&together) {
        match (m.generate(r, OnePass), got) {
            (Ok(alone), Ok(got)) => {
                assert_eq!(got.tokens, alone.tokens, "{:?} vs {:?}", got.text, alone.text);
                assert_eq!(
                    (got.stats.stopped, got.stats.prompt_tokens),
                    (alone.stats.stopped, alone.stats.prompt_tokens)
                );
            }
            (Err(alone), Err(got)) => assert_eq!(got.to_string(), alone.to_string()),
            (alone, got) => panic!("alone {alone:?}, together {got:?}"),
        }
    }
    assert!(together[4].as_ref().unwrap_err().to_string().contains("context limit"));
    assert_eq!(together[2].as_ref().unwrap().tokens.len(), 7, "the cap holds in a batch");
    // Sampled answers follow each request's own seed, as alone.
    let sampled: Vec<ChatRequest> = (0..4).map(|s| summarize(&DOGS, 0.9, s)).collect();
    let alone: Vec<String> = sampled.iter().map(|r| m.complete(r).unwrap()).collect();
    let together: Vec<String> = m.complete_batch(&sampled).into_iter().map(Result::unwrap).collect();
    eprintln!("dogs at T=0.9 alone {alone:?} / together {together:?}");
    let same = alone.iter().zip(&together).filter(|(a, b)| a == b).count();
    assert!(same >= 3, "8-bit rounding may tip one sampled token, not most: {alone:?} vs {together:?}");
}

/// Tokens of the last message plus the answer header: what a prefix hit leaves to evaluate.
fn last_turn_tokens(r: &ChatRequest) -> usize {
    let tok = model().tokenizer();
    let last = r.messages.last().unwrap();
    tok.message(&last.role, &last.content).unwrap().len() + tok.answer_header().unwrap().len()
}

#[test]
fn max_tokens_is_honoured() {
    let m = model();
    let r = request(vec![ChatMessage::user("Count from 1 to 100, separated by commas.")], 0.0, 5, 0);
    let g = m.generate(&r, Cached).unwrap();
    assert_eq!(g.tokens.len(), 5, "{g:?}");
    assert!(!g.stats.stopped);
    let none = m.generate(&ChatRequest { max_tokens: 0, ..r.clone() }, Cached).unwrap();
    assert!(none.tokens.is_empty() && none.text.is_empty());
    // A short answer stops by itself before the cap.
    let short = request(vec![ChatMessage::user("Reply with just the word yes.")], 0.0, 50, 0);
    let g = m.generate(&short, Cached).unwrap();
    assert!(g.stats.stopped && g.tokens.len() < 50, "{g:?}");
}

#[test]
fn summarizes_fruit_captions() {
    let answers: Vec<String> = (0..3).map(|seed| model().complete(&summarize(&FRUIT, 0.3, seed)).unwrap()).collect();
    eprintln!("fruit at T=0.3: {answers:?}");
    for a in &answers {
        assert!(a.to_lowercase().contains("fruit"), "{answers:?}");
        assert!(!a.contains("<|"), "{a:?}");
    }
}

#[test]
fn fallback_model_runs_the_llama_layout() {
    let smol = load(&fallback_model_path());
    assert_eq!(smol.info().name, "SmolLM2-135M-Instruct Q4_1 (in-process)");
    assert_eq!(smol.info().note.as_deref(), Some("a 135M local model instead of GPT-3.5 Turbo"));
    assert_eq!(smol.config().architecture, "llama");
    let tok = smol.tokenizer();
    for text in ["Hello world", "Grüße aus Köln: naïve café, 東京タワー 🍎 2024", "  two\n\ttabs  "] {
        assert_eq!(tok.decode(&tok.encode(text).unwrap()).unwrap(), text);
    }
    let r = request(vec![ChatMessage::user("What is the capital of France? Answer in one word.")], 0.0, 12, 0);
    let answer = smol.complete(&r).unwrap();
    assert!(answer.contains("Paris"), "{answer:?}");
}

#[test]
fn load_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.gguf");
    let err = GgufChat::load(&missing, LlmOptions::default()).err().unwrap();
    assert!(matches!(err, Error::WeightsNotFound { .. }), "{err}");

    let text = dir.path().join("model.gguf");
    std::fs::write(&text, "this is not a model").unwrap();
    let err = GgufChat::load(&text, LlmOptions::default()).err().unwrap();
    assert!(matches!(err, Error::NotGguf { .. }), "{err}");
    assert!(err.to_string().contains("is not a GGUF file"), "{err}");

    use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
    let arch = gguf_file::Value::String("bert".into());
    let t = QTensor::quantize(
        &candle_core::Tensor::zeros(4, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap(),
        GgmlDType::F32,
    )
    .unwrap();
    let mut buf = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut buf, &[("general.architecture", &arch)], &[("x", &t)]).unwrap();
    let bert = dir.path().join("bert.gguf");
    std::fs::write(&bert, buf.into_inner()).unwrap();
    let err = GgufChat::load(&bert, LlmOptions::default()).err().unwrap();
    assert!(matches!(err, Error::Architecture { .. }), "{err}");
    assert!(err.to_string().contains("`bert`") && err.to_string().contains("qwen2"), "{err}");
}

/// Prints the numbers the README quotes (run with `--nocapture`); asserts only that reuse pays.
/// The pipeline's pattern: one long shared prefix, then summarize calls whose captions come in a
/// different order each time.
#[test]
fn timings() {
    let m = model();
    // ~400-token shared prefix: a long system message, then the two few-shot pairs.
    let system = "When you label a group of image descriptions, look for what most of them share: the \
        objects, their colours, materials, textures, the setting or the activity. Prefer a short noun \
        phrase over a sentence, avoid brand names and proper names, and never list the descriptions \
        back. "
        .repeat(2);
    let call = |captions: &[&str], seed: u64| {
        let mut r = summarize(captions, 0.3, seed);
        r.messages.insert(0, ChatMessage::system(system.clone()));
        let g = m.generate(&r, Cached).unwrap();
        // Not wall time: other tests may hold the model meanwhile.
        (g.stats.prefill_seconds + g.stats.decode_seconds, g)
    };
    let (cold_s, cold) = call(&FRUIT, 0);
    let c = &cold.stats;
    eprintln!(
        "cold call: {} prompt tokens evaluated in {:.3} s ({:.0} tok/s), {} generated in {:.3} s; {:.3} s per call",
        c.prompt_tokens,
        c.prefill_seconds,
        c.prompt_tokens as f64 / c.prefill_seconds,
        c.generated_tokens,
        c.decode_seconds,
        cold_s
    );
    let mut warm = Vec::new();
    for (i, caps) in [DOGS, FRUIT, DOGS, FRUIT].iter().enumerate() {
        let mut caps = caps.to_vec();
        caps.rotate_left(i + 1); // the pipeline reshuffles the captions for every call
        let (secs, g) = call(&caps, i as u64 + 1);
        let s = &g.stats;
        let evaluated = s.prompt_tokens - s.reused_tokens;
        eprintln!(
            "warm call: {} prompt tokens, {} reused, {evaluated} evaluated in {:.3} s ({:.0} tok/s); \
             {} generated in {:.3} s; {secs:.3} s per call: {:?}",
            s.prompt_tokens,
            s.reused_tokens,
            s.prefill_seconds,
            evaluated as f64 / s.prefill_seconds,
            s.generated_tokens,
            s.decode_seconds,
            g.text
        );
        warm.push((secs, g.stats));
    }
    let mean = warm.iter().map(|(s, _)| s).sum::<f64>() / warm.len() as f64;
    eprintln!(
        "mean warm call {mean:.3} s ({} threads)",
        std::env::var("CANDLE_NUM_THREADS").unwrap_or("default".into())
    );

    // Decode speed on a longer answer.
    let long = request(vec![ChatMessage::user("Count from 1 to 50, separated by commas.")], 0.0, 40, 0);
    let g = m.generate(&long, Cached).unwrap();
    eprintln!(
        "decode: {} tokens in {:.3} s ({:.1} tok/s)",
        g.stats.generated_tokens,
        g.stats.decode_seconds,
        g.stats.generated_tokens as f64 / g.stats.decode_seconds
    );

    assert!(warm.iter().all(|(_, s)| s.reused_tokens > 350), "{warm:?}");
    assert!(warm.iter().all(|(_, s)| s.prefill_seconds < c.prefill_seconds), "{warm:?} vs {c:?}");
}
