//! The embedded default chat LLM of Step 2: a small instruct model from a llama.cpp GGUF file,
//! run in-process on the CPU.
//!
//! Built on candle's quantized tensors (`candle_core::quantized`): pure Rust, so the workspace
//! needs no cmake, C++ toolchain or libclang for it, unlike llama.cpp bindings. The transformer
//! ([`Transformer`]), the tokenizer ([`ChatTokenizer`], rebuilt from the GGUF metadata) and the
//! sampler are this module's own.
//!
//! **Prefix reuse.** Step 2 asks the same long few-shot prompt ~15 times per neuron with only the
//! end of the last message (the captions) changing. Prompts are evaluated in blocks of
//! [`BLOCK`] tokens at fixed positions (0–31, 32–63, …), and the KV state of each evaluated
//! prompt is kept (a few, least recently used dropped first). A later prompt starts from a clone
//! of the kept state that shares the most tokens with it, cut back to the last whole block they
//! share. Because blocks sit at fixed positions, that state is bit for bit what a cold
//! evaluation of the new prompt computes, so answers do not depend on what ran before.
//!
//! **Threads.** candle's quantized kernels use one worker per physical core unless
//! `CANDLE_NUM_THREADS` (or `RAYON_NUM_THREADS`) says otherwise, read once at first use. On an
//! idle 2-core machine two workers make a summarize call ~1.7× faster than one. On a busy one,
//! set `CANDLE_NUM_THREADS=1` before anything starts threads: candle's fork-join pool spin-waits
//! for its workers, so when another process holds a core each of the ~300 parallel steps of a
//! forward pass waits for a time slice (measured 6× slower than one worker). Calls are
//! serialised by the model's lock.

mod model;
mod requant;
mod sampling;
mod tokenizer;

pub use model::{q5_0_to_q8_0, Config, KvCache, RopeStyle, Transformer, SUPPORTED_ARCHITECTURES};
pub use sampling::{argmax, sample, Rng};
pub use tokenizer::ChatTokenizer;

use crate::concepts::providers::{
    ChatMessage, ChatModel, ChatRequest, ComponentInfo, ProviderError, ProviderResult, Role,
};
use crate::{Error, Result};
use candle_core::quantized::gguf_file;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

/// File name of the default model under `<assets>/llm/` (made by `scripts/fetch_assets.py`).
pub const DEFAULT_MODEL_FILE: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";

/// File name of the fallback model: SmolLM2-135M-Instruct, ~3× faster, but it mostly repeats the
/// few-shot answers of the summarize prompt (ASSETS.md).
pub const FALLBACK_MODEL_FILE: &str = "smollm2-135m-instruct-q4_1.gguf";

/// Provenance names of the models `scripts/fetch_assets.py` installs, by file name (the GGUF
/// metadata's own `general.name` is misleading for the default one).
const KNOWN_MODELS: [(&str, &str); 2] = [
    (DEFAULT_MODEL_FILE, "Qwen2.5-Coder-0.5B-Instruct Q4_K_M (in-process)"),
    (FALLBACK_MODEL_FILE, "SmolLM2-135M-Instruct Q4_1 (in-process)"),
];

/// Prompts are evaluated in blocks of this many tokens at fixed positions; reuse is per block.
pub const BLOCK: usize = 32;

/// [`PromptEvaluation::OnePass`] evaluates in pieces of at most this many tokens.
const MAX_PIECE: usize = 512;

/// Where the default model is expected.
pub fn default_model_path() -> PathBuf {
    crate::assets::assets_dir().join("llm").join(DEFAULT_MODEL_FILE)
}

/// Where the fallback model is expected.
pub fn fallback_model_path() -> PathBuf {
    crate::assets::assets_dir().join("llm").join(FALLBACK_MODEL_FILE)
}

/// Settings of an in-process chat model.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmOptions {
    /// Longest prompt + answer, in tokens (capped at the model's trained context length).
    pub max_context: usize,
    /// How many prompt KV states to keep for reuse (0 disables reuse). Each takes ~25 kB per
    /// prompt token for Qwen2.5-0.5B (~12 MB for a 500-token few-shot prompt).
    pub prefix_cache_entries: usize,
    /// Re-quantize 32-block weight formats to Q6_K for candle's fast kernels (see
    /// [`Transformer`]'s module docs); `false` keeps the stored values exactly, at a much lower speed.
    pub requantize: bool,
}

impl Default for LlmOptions {
    fn default() -> Self {
        LlmOptions { max_context: 4096, prefix_cache_entries: 6, requantize: true }
    }
}

/// What one generation did, for timing reports and tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationStats {
    /// Tokens of the rendered prompt (ChatML markers and the answer header included).
    pub prompt_tokens: usize,
    /// Of those, how many came from a cached prefix instead of being evaluated.
    pub reused_tokens: usize,
    pub generated_tokens: usize,
    /// Seconds spent evaluating the prompt (the part not reused).
    pub prefill_seconds: f64,
    /// Seconds spent generating.
    pub decode_seconds: f64,
    /// True when the answer ended at an end-of-turn token, false when `max_tokens` cut it.
    pub stopped: bool,
}

/// How [`GgufChat::generate`] evaluates the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptEvaluation {
    /// In [`BLOCK`]s, starting from the longest cached prefix and caching the prompt's state
    /// (what [`ChatModel::complete`] does).
    Cached,
    /// In [`BLOCK`]s from scratch, leaving the cache alone: bit for bit what `Cached` computes.
    Fresh,
    /// All at once from scratch (in pieces of at most 512 tokens), leaving the cache alone: the
    /// plain reference. Equal to the others up to the rounding of 8-bit activations, which can
    /// land differently for different matrix shapes.
    OnePass,
}

/// One answer with its token ids.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The answer text, special tokens removed, trimmed.
    pub text: String,
    /// The generated token ids, without the stop token.
    pub tokens: Vec<u32>,
    pub stats: GenerationStats,
}

/// Length of the common prefix of `a` and `b`, in whole `block`s.
fn shared_blocks(a: &[u32], b: &[u32], block: usize) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count() / block * block
}

/// KV states of evaluated prompts, keyed by their tokens; least recently used first.
///
/// A new prompt replaces any kept one it shares at least half of its tokens with (an earlier
/// call of the same few-shot prompt), so each prompt family holds one entry: the ~10 caption
/// simplifications of a neuron do not push its summarize prompt out, and vice versa.
#[derive(Debug)]
struct PrefixCache<S> {
    entries: Vec<(Vec<u32>, S)>,
    capacity: usize,
}

impl<S: Clone> PrefixCache<S> {
    fn new(capacity: usize) -> Self {
        PrefixCache { entries: Vec::new(), capacity }
    }

    /// The kept state sharing the most whole `block`s with `tokens` (never all of `tokens`: the
    /// last position's logits must be computed), as (shared length, state). The state may be
    /// longer than the shared length: the caller cuts it back.
    fn lookup(&mut self, tokens: &[u32], block: usize) -> Option<(usize, S)> {
        let limit = tokens.len().saturating_sub(1);
        let (best, shared) = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, (key, _))| (i, shared_blocks(key, &tokens[..limit], block)))
            .filter(|&(_, shared)| shared > 0)
            .max_by_key(|&(i, shared)| (shared, i))?;
        let entry = self.entries.remove(best);
        let state = entry.1.clone();
        self.entries.push(entry);
        Some((shared, state))
    }

    fn insert(&mut self, key: Vec<u32>, state: S, block: usize) {
        if self.capacity == 0 {
            return;
        }
        self.entries.retain(|(k, _)| 2 * shared_blocks(k, &key, block) < k.len() && *k != key);
        self.entries.push((key, state));
        while self.entries.len() > self.capacity {
            self.entries.remove(0);
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The system message a ChatML chat template inserts when a conversation has none (Qwen2's
/// "You are Qwen, created by Alibaba Cloud. …"): the first literal text between
/// `<|im_start|>system` and `<|im_end|>` in the template that is not template code.
fn default_system_message(template: &str) -> Option<String> {
    for marker in ["<|im_start|>system\\n", "<|im_start|>system\n"] {
        for (at, _) in template.match_indices(marker) {
            let rest = &template[at + marker.len()..];
            let Some(end) = rest.find("<|im_end|>") else { continue };
            let text = &rest[..end];
            if !text.trim().is_empty() && !text.contains(['\'', '"', '{', '}', '\n']) {
                return Some(text.to_string());
            }
        }
    }
    None
}

/// A chat model from a GGUF file (architectures `qwen2` and `llama` with a ChatML vocabulary),
/// implementing [`ChatModel`].
pub struct GgufChat {
    path: PathBuf,
    model: Transformer,
    tokenizer: ChatTokenizer,
    info: ComponentInfo,
    default_system: Option<String>,
    cache: Mutex<PrefixCache<KvCache>>,
}

fn not_gguf(path: &Path, reason: impl Into<String>) -> Error {
    Error::NotGguf { path: path.to_path_buf(), reason: reason.into() }
}

impl GgufChat {
    /// Loads the default model ([`default_model_path`]) with default options.
    pub fn load_default() -> Result<Self> {
        Self::load(&default_model_path(), LlmOptions::default())
    }

    /// Loads a GGUF chat model. Errors name the file and say whether it is missing, not a GGUF,
    /// of an unsupported architecture, or inconsistent.
    pub fn load(path: &Path, options: LlmOptions) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::WeightsNotFound { path: path.to_path_buf() });
        }
        let io = |source| Error::Io { path: path.to_path_buf(), source };
        let mut reader = BufReader::with_capacity(1 << 20, std::fs::File::open(path).map_err(io)?);
        let mut magic = [0u8; 4];
        if reader.read_exact(&mut magic).is_err() || &magic != b"GGUF" {
            return Err(not_gguf(path, "it does not start with the GGUF magic bytes"));
        }
        reader.seek(SeekFrom::Start(0)).map_err(io)?;
        let ct = gguf_file::Content::read(&mut reader).map_err(|e| not_gguf(path, e.to_string()))?;

        let llm_err = |reason: String| Error::LanguageModel { path: path.to_path_buf(), reason };
        let arch = model::md_string(&ct, "general.architecture").map_err(llm_err)?;
        if !SUPPORTED_ARCHITECTURES.iter().any(|(a, _)| *a == arch) {
            let names: Vec<&str> = SUPPORTED_ARCHITECTURES.iter().map(|(a, _)| *a).collect();
            return Err(Error::Architecture {
                path: path.to_path_buf(),
                model: "a chat model this build can run".into(),
                reason: format!("its architecture is `{arch}`; supported: {}", names.join(", ")),
            });
        }
        let tokenizer = ChatTokenizer::from_gguf(&ct).map_err(llm_err)?;
        let model = Transformer::load(&ct, &mut reader, options.max_context, options.requantize).map_err(llm_err)?;
        // candle re-lays weights for its tiled kernels on first use: do it now, not in the first call.
        model.forward(&[0, 0], &mut model.new_cache()).map_err(|e| llm_err(format!("test evaluation failed: {e}")))?;

        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let name = match KNOWN_MODELS.iter().find(|(file, _)| *file == file_name) {
            Some((_, name)) => name.to_string(),
            None => {
                let general = model::md_string(&ct, "general.name").unwrap_or("GGUF model");
                format!("{general} ({file_name}, in-process)")
            }
        };
        let size = model::md_string(&ct, "general.size_label").unwrap_or("small");
        let info = ComponentInfo::substitute(Role::Llm, name, format!("a {size} local model instead of GPT-3.5 Turbo"));
        let default_system = model::md_string(&ct, "tokenizer.chat_template").ok().and_then(default_system_message);
        Ok(GgufChat {
            path: path.to_path_buf(),
            model,
            tokenizer,
            info,
            default_system,
            cache: Mutex::new(PrefixCache::new(options.prefix_cache_entries)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn config(&self) -> &Config {
        self.model.config()
    }

    pub fn tokenizer(&self) -> &ChatTokenizer {
        &self.tokenizer
    }

    /// Drops every cached prompt prefix.
    pub fn clear_prefix_cache(&self) {
        self.lock().clear();
    }

    /// Number of cached prompt prefixes.
    pub fn prefix_cache_len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PrefixCache<KvCache>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fail(&self, reason: impl std::fmt::Display) -> ProviderError {
        ProviderError::Local { component: self.info.name.clone(), reason: reason.to_string() }
    }

    /// The ChatML token sequence of `messages`, ending with the answer header.
    fn render(&self, messages: &[ChatMessage]) -> ProviderResult<Vec<u32>> {
        if messages.is_empty() {
            return Err(self.fail("the chat request has no messages"));
        }
        let system = match (&self.default_system, messages[0].role.as_str()) {
            (Some(s), role) if role != "system" => Some(ChatMessage::system(s.clone())),
            _ => None,
        };
        let mut tokens = self.tokenizer.prompt_start();
        for m in system.iter().chain(messages) {
            tokens.extend(self.tokenizer.message(&m.role, &m.content).map_err(|e| self.fail(e))?);
        }
        tokens.extend(self.tokenizer.answer_header().map_err(|e| self.fail(e))?);
        Ok(tokens)
    }

    /// Evaluates `tokens[kv.len()..]` in pieces that end at multiples of `piece` (or at the end)
    /// and returns the last logits.
    fn prefill(&self, tokens: &[u32], piece: usize, kv: &mut KvCache) -> ProviderResult<Vec<f32>> {
        let mut logits = Vec::new();
        while kv.len() < tokens.len() {
            let end = ((kv.len() / piece + 1) * piece).min(tokens.len());
            logits = self.model.forward(&tokens[kv.len()..end], kv).map_err(|e| self.fail(e))?;
        }
        Ok(logits)
    }

    /// Answers `request`, evaluating the prompt as `evaluation` says.
    pub fn generate(&self, request: &ChatRequest, evaluation: PromptEvaluation) -> ProviderResult<Generation> {
        let prompt = self.render(&request.messages)?;
        let n = prompt.len();
        let limit = self.model.max_positions();
        if n >= limit {
            return Err(self.fail(format!("the prompt has {n} tokens; the context limit is {limit}")));
        }
        let max_new = request.max_tokens.min(limit - n);
        let mut cache = self.lock();
        let t0 = Instant::now();
        let mut reused = 0;
        let mut kv = self.model.new_cache();
        let logits = match evaluation {
            PromptEvaluation::OnePass => self.prefill(&prompt, MAX_PIECE, &mut kv)?,
            PromptEvaluation::Fresh => self.prefill(&prompt, BLOCK, &mut kv)?,
            PromptEvaluation::Cached => {
                if let Some((shared, state)) = cache.lookup(&prompt, BLOCK) {
                    kv = state;
                    kv.truncate(shared).map_err(|e| self.fail(e))?;
                    reused = shared;
                }
                let logits = self.prefill(&prompt, BLOCK, &mut kv)?;
                cache.insert(prompt.clone(), kv.clone(), BLOCK);
                logits
            }
        };
        let prefill_seconds = t0.elapsed().as_secs_f64();

        let t1 = Instant::now();
        let mut rng = Rng::new(request.seed);
        let mut out = Vec::new();
        let mut stopped = false;
        let mut logits = logits;
        while out.len() < max_new {
            let next = sample(&logits, request.temperature, &mut rng);
            if self.tokenizer.is_stop(next) {
                stopped = true;
                break;
            }
            out.push(next);
            if out.len() < max_new {
                logits = self.model.forward(&[next], &mut kv).map_err(|e| self.fail(e))?;
            }
        }
        drop(cache);
        let text = self.tokenizer.decode(&out).map_err(|e| self.fail(e))?.trim().to_string();
        let stats = GenerationStats {
            prompt_tokens: n,
            reused_tokens: reused,
            generated_tokens: out.len(),
            prefill_seconds,
            decode_seconds: t1.elapsed().as_secs_f64(),
            stopped,
        };
        Ok(Generation { text, tokens: out, stats })
    }
}

/// Most sequences [`GgufChat::generate_batch`] decodes together; more requests go in turns.
/// Per-row speed of candle's tiled kernels levels off well before this, and each sequence holds
/// its own KV cache (~25 kB per token for Qwen2.5-0.5B).
pub const MAX_BATCH: usize = 48;

/// One answer being decoded by [`GgufChat::generate_batch`].
struct Decoding {
    request: usize,
    kv: KvCache,
    logits: Vec<f32>,
    rng: Rng,
    temperature: f32,
    out: Vec<u32>,
    max_new: usize,
    stats: GenerationStats,
}

impl GgufChat {
    /// Answers several independent requests: each prompt is evaluated on its own, reusing cached
    /// prefixes as [`PromptEvaluation::Cached`] does, then all answers are decoded in lock-step,
    /// one [`Transformer::forward_batch`] per token. Each answer is what [`GgufChat::generate`]
    /// gives for its request alone (same prompt, seed and sampler), up to the rounding of 8-bit
    /// activations; a failing request fails alone, except when a shared decoding step fails.
    pub fn generate_batch(&self, requests: &[ChatRequest]) -> Vec<ProviderResult<Generation>> {
        let mut results: Vec<Option<ProviderResult<Generation>>> = (0..requests.len()).map(|_| None).collect();
        for (turn, chunk) in requests.chunks(MAX_BATCH).enumerate() {
            for (i, result) in self.decode_together(chunk).into_iter().enumerate() {
                results[turn * MAX_BATCH + i] = Some(result);
            }
        }
        results.into_iter().map(|r| r.expect("every request answered")).collect()
    }

    fn decode_together(&self, requests: &[ChatRequest]) -> Vec<ProviderResult<Generation>> {
        let mut results: Vec<Option<ProviderResult<Generation>>> = (0..requests.len()).map(|_| None).collect();
        let mut cache = self.lock();
        let mut live = Vec::with_capacity(requests.len());
        for (i, request) in requests.iter().enumerate() {
            match self.start_cached(request, &mut cache) {
                Ok(d) => live.push(Decoding { request: i, ..d }),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        let t = Instant::now();
        while !live.is_empty() {
            // Choose each sequence's next token; the ones that end leave the batch.
            let mut stepping = Vec::with_capacity(live.len());
            let mut tokens = Vec::with_capacity(live.len());
            for mut d in live.drain(..) {
                let next = (d.out.len() < d.max_new).then(|| sample(&d.logits, d.temperature, &mut d.rng));
                match next {
                    Some(token) if !self.tokenizer.is_stop(token) => {
                        d.out.push(token);
                        if d.out.len() < d.max_new {
                            tokens.push(token);
                            stepping.push(d);
                            continue;
                        }
                    }
                    Some(_) => d.stats.stopped = true,
                    None => {}
                }
                d.stats.decode_seconds = t.elapsed().as_secs_f64();
                let request = d.request;
                results[request] = Some(self.finish(d));
            }
            if stepping.is_empty() {
                break;
            }
            let mut kvs: Vec<KvCache> =
                stepping.iter_mut().map(|d| std::mem::replace(&mut d.kv, KvCache::new(0))).collect();
            match self.model.forward_batch(&tokens, &mut kvs) {
                Ok(logits) => {
                    for ((d, kv), l) in stepping.iter_mut().zip(kvs).zip(logits) {
                        (d.kv, d.logits) = (kv, l);
                    }
                    live = stepping;
                }
                Err(e) => {
                    for d in stepping {
                        results[d.request] = Some(Err(self.fail(&e)));
                    }
                }
            }
        }
        drop(cache);
        results.into_iter().map(|r| r.expect("every request answered")).collect()
    }

    /// Renders and evaluates `request`'s prompt from the longest cached prefix, caching its state.
    fn start_cached(&self, request: &ChatRequest, cache: &mut PrefixCache<KvCache>) -> ProviderResult<Decoding> {
        let prompt = self.render(&request.messages)?;
        let n = prompt.len();
        let limit = self.model.max_positions();
        if n >= limit {
            return Err(self.fail(format!("the prompt has {n} tokens; the context limit is {limit}")));
        }
        let t0 = Instant::now();
        let (mut kv, mut reused) = (self.model.new_cache(), 0);
        if let Some((shared, state)) = cache.lookup(&prompt, BLOCK) {
            kv = state;
            kv.truncate(shared).map_err(|e| self.fail(e))?;
            reused = shared;
        }
        let logits = self.prefill(&prompt, BLOCK, &mut kv)?;
        cache.insert(prompt, kv.clone(), BLOCK);
        Ok(Decoding {
            request: 0,
            kv,
            logits,
            rng: Rng::new(request.seed),
            temperature: request.temperature,
            out: Vec::new(),
            max_new: request.max_tokens.min(limit - n),
            stats: GenerationStats {
                prompt_tokens: n,
                reused_tokens: reused,
                prefill_seconds: t0.elapsed().as_secs_f64(),
                ..GenerationStats::default()
            },
        })
    }

    fn finish(&self, d: Decoding) -> ProviderResult<Generation> {
        let text = self.tokenizer.decode(&d.out).map_err(|e| self.fail(e))?.trim().to_string();
        let stats = GenerationStats { generated_tokens: d.out.len(), ..d.stats };
        Ok(Generation { text, tokens: d.out, stats })
    }
}

impl ChatModel for GgufChat {
    fn info(&self) -> ComponentInfo {
        self.info.clone()
    }

    fn complete(&self, request: &ChatRequest) -> ProviderResult<String> {
        self.generate(request, PromptEvaluation::Cached).map(|g| g.text)
    }

    fn complete_batch(&self, requests: &[ChatRequest]) -> Vec<ProviderResult<String>> {
        self.generate_batch(requests).into_iter().map(|g| g.map(|g| g.text)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::PrefixCache;

    #[test]
    fn default_system_message_from_templates() {
        let qwen = "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n{%- else %}\n    {%- if messages[0]['role'] == 'system' %}\n        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}";
        assert_eq!(
            super::default_system_message(qwen).as_deref(),
            Some("You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")
        );
        let smol = "{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}";
        assert_eq!(
            super::default_system_message(smol).as_deref(),
            Some("You are a helpful AI assistant named SmolLM, trained by Hugging Face")
        );
        assert_eq!(super::default_system_message("{{ '<|im_start|>' + message['role'] }}"), None);
    }

    #[test]
    fn prefix_cache_reuses_whole_shared_blocks() {
        let mut c: PrefixCache<&str> = PrefixCache::new(3);
        assert!(c.lookup(&[1, 2, 3], 2).is_none());
        c.insert(vec![1, 2, 3, 4, 5], "a", 2);
        c.insert(vec![1, 2, 3, 9, 9, 9, 9], "b", 2); // shares 2 of a's 5: both kept
        assert_eq!(c.len(), 2);
        // Shares 3 tokens with both: one whole block of 2; the most recent entry wins the tie.
        assert_eq!(c.lookup(&[1, 2, 3, 7, 7], 2), Some((2, "b")));
        // Shares 5 with "a": two whole blocks.
        assert_eq!(c.lookup(&[1, 2, 3, 4, 5, 6], 2), Some((4, "a")));
        // Never the whole prompt, even when it is all cached.
        assert_eq!(c.lookup(&[1, 2, 3, 4, 5], 2), Some((4, "a")));
        assert_eq!(c.lookup(&[1, 2, 3, 4, 5], 5), None);
        // Less than a block in common: no hit.
        assert!(c.lookup(&[1, 8, 8], 2).is_none());
        assert!(c.lookup(&[2, 1, 3], 1).is_none());
    }

    #[test]
    fn prefix_cache_evicts_the_least_recently_used() {
        let mut c: PrefixCache<u8> = PrefixCache::new(2);
        c.insert(vec![1], 1, 1);
        c.insert(vec![2], 2, 1);
        assert_eq!(c.lookup(&[1, 9], 1), Some((1, 1))); // [1] is now the most recent
        c.insert(vec![3], 3, 1); // evicts [2]
        assert_eq!(c.len(), 2);
        assert!(c.lookup(&[2, 9], 1).is_none());
        assert_eq!(c.lookup(&[3, 9], 1), Some((1, 3)));
        c.insert(vec![3], 4, 1); // replaces, does not duplicate
        assert_eq!(c.len(), 2);
        assert_eq!(c.lookup(&[3, 9], 1), Some((1, 4)));

        let mut off: PrefixCache<u8> = PrefixCache::new(0);
        off.insert(vec![1], 1, 1);
        assert_eq!(off.len(), 0);
    }

    #[test]
    fn prefix_cache_keeps_one_entry_per_prompt_family() {
        let mut c: PrefixCache<&str> = PrefixCache::new(2);
        let summarize = |tail: u32| [vec![7; 40], vec![tail; 8]].concat();
        let simplify = |tail: u32| [vec![7; 4], vec![5; 8], vec![tail; 4]].concat();
        c.insert(summarize(1), "sum 1", 4);
        c.insert(simplify(1), "simp 1", 4);
        for i in 2..6 {
            c.insert(simplify(i), "simp", 4); // replaces the previous simplification
        }
        assert_eq!(c.len(), 2);
        assert_eq!(c.lookup(&summarize(9), 4), Some((40, "sum 1")), "the summarize prompt survived");
        c.insert(summarize(9), "sum 9", 4);
        assert_eq!(c.len(), 2);
        assert_eq!(c.lookup(&simplify(9), 4), Some((12, "simp")));
    }
}
