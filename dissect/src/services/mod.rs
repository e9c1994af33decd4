//! Real model services behind the provider traits of [`crate::concepts::providers`]: the paper's
//! kind of components (a captioner, a chat LLM, a text-to-image model) reached over HTTP.
//!
//! - [`OpenAiChat`]: any OpenAI-compatible `/chat/completions` (OpenAI, vLLM, llama.cpp server,
//!   Ollama, LM Studio…).
//! - [`OpenAiCaptioner`]: the same endpoint with a vision model, one image per request.
//! - [`OpenAiImages`]: an OpenAI-compatible `/images/generations`.
//! - [`Automatic1111Images`]: Stable Diffusion through the AUTOMATIC1111 web UI API
//!   (`/sdapi/v1/txt2img`), which can run the paper's exact generator (SD v1-4, 50 steps,
//!   DPM-Solver multistep, fixed seeds).
//!
//! All share [`http::Endpoint`] (timeouts, bounded concurrency, retries) and
//! [`cache::ResponseCache`] (answers on disk, so a re-run makes no calls). The HTTP client is
//! blocking: call providers from plain threads or `spawn_blocking`, not from async tasks.

pub mod a1111;
pub mod cache;
pub mod http;
pub mod openai;

pub use a1111::{Automatic1111Config, Automatic1111Images};
pub use cache::ResponseCache;
pub use http::{ApiKey, Endpoint, HttpSettings};
pub use openai::{
    OpenAiCaptioner, OpenAiCaptionerConfig, OpenAiChat, OpenAiChatConfig, OpenAiImages, OpenAiImagesConfig,
};

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use base64::Engine as _;
use image::RgbImage;

use crate::concepts::{ProviderError, ProviderResult};

/// `base` without trailing slashes, then `/path`.
pub(crate) fn join_url(base: &str, path: &str) -> String {
    format!("{}/{}", base.trim_end_matches('/'), path.trim_start_matches('/'))
}

/// Runs `f(0..n)` on up to `workers` scoped threads; results in index order. After the first
/// failure no new index is started, and the failure with the lowest index is returned.
pub(crate) fn run_bounded<T, F>(n: usize, workers: usize, f: F) -> ProviderResult<Vec<T>>
where
    T: Send,
    F: Fn(usize) -> ProviderResult<T> + Sync,
{
    let workers = workers.clamp(1, n.max(1));
    if workers == 1 {
        return (0..n).map(&f).collect();
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let slots: Mutex<Vec<Option<ProviderResult<T>>>> = Mutex::new((0..n).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                if failed.load(Ordering::Relaxed) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let result = f(i);
                if result.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
                slots.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(result);
            });
        }
    });
    let slots = slots.into_inner().unwrap_or_else(|e| e.into_inner());
    if let Some(err) = slots.iter().flatten().find_map(|r| r.as_ref().err()) {
        return Err(err.clone());
    }
    Ok(slots.into_iter().map(|r| r.and_then(Result::ok).expect("every index ran")).collect())
}

/// Decodes a base64 image (plain, or a `data:` URL) of any supported format to RGB.
pub(crate) fn decode_base64_image(endpoint: &str, b64: &str) -> ProviderResult<RgbImage> {
    let payload = match b64.strip_prefix("data:") {
        Some(rest) => rest.split_once(',').map(|(_, data)| data).unwrap_or(rest),
        None => b64,
    };
    let compact: String = payload.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD.decode(compact.as_bytes()).map_err(|e| {
        ProviderError::Request { endpoint: endpoint.to_string(), reason: format!("image is not valid base64: {e}") }
    })?;
    let image = image::load_from_memory(&bytes).map_err(|e| ProviderError::Request {
        endpoint: endpoint.to_string(),
        reason: format!("answer's image cannot be decoded: {e}"),
    })?;
    Ok(image.to_rgb8())
}

/// An `f32` as the `f64` with the same shortest decimal form (0.3f32 → 0.3, not
/// 0.30000001192092896), so request bodies and cache keys read as configured.
pub(crate) fn clean_f64(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(x as f64)
}

/// Parses a JSON answer, naming the endpoint on failure.
pub(crate) fn parse_json(endpoint: &str, bytes: &[u8]) -> ProviderResult<serde_json::Value> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| ProviderError::Request {
        endpoint: endpoint.to_string(),
        reason: format!("answer is not JSON ({e}): {}", http::truncate_body(bytes)),
    })?;
    // Some servers answer 200 with an error object.
    if let Some(err) = value.get("error").filter(|e| !e.is_null()) {
        let message =
            err.get("message").and_then(|m| m.as_str()).map(str::to_string).unwrap_or_else(|| err.to_string());
        return Err(ProviderError::Request {
            endpoint: endpoint.to_string(),
            reason: format!("service reported an error: {}", http::truncate_body(message.as_bytes())),
        });
    }
    Ok(value)
}

/// Answers from the cache when it holds a parsable one; otherwise POSTs `body`, parses the
/// answer, and caches the bytes only once they parsed.
pub(crate) fn cached_post<T>(
    endpoint: &Endpoint,
    cache: &ResponseCache,
    key: &str,
    body: impl FnOnce() -> ProviderResult<serde_json::Value>,
    parse: impl Fn(&[u8]) -> ProviderResult<T>,
) -> ProviderResult<T> {
    if let Some(bytes) = cache.get(key) {
        if let Ok(value) = parse(&bytes) {
            return Ok(value);
        }
    }
    let bytes = endpoint.post_json(&body()?)?;
    let value = parse(&bytes)?;
    // Best effort: an unwritable cache must not fail the run.
    let _ = cache.put(key, &bytes);
    Ok(value)
}
