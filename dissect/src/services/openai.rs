//! OpenAI-compatible services: chat completions (the LLM of Step 2), the same endpoint with a
//! vision model as the captioner of Step 2A, and image generation for Step 3.1.

use base64::Engine as _;
use image::RgbImage;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{
    cached_post, clean_f64, decode_base64_image, join_url, parse_json, run_bounded, ApiKey, Endpoint, HttpSettings,
    ResponseCache,
};
use crate::concepts::{
    CaptionInput, Captioner, ChatModel, ChatRequest, ComponentInfo, ConceptImage, ConceptImageSource, ProviderError,
    ProviderResult, Role,
};

pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

/// The captioning instruction: asks for what BLIP (the paper's captioner) produces, a short
/// literal caption.
pub const DEFAULT_CAPTION_PROMPT: &str = "Write a short caption for this image, like an image \
captioning model would: one plain phrase of at most 15 words describing what is shown, without \
a final period.";

/// The paper's text-to-image prompt; `{concept}` is replaced by the candidate label.
pub const DEFAULT_IMAGE_PROMPT: &str = "One realistic image of {concept}";

/// `[llm]`-style settings of an OpenAI-compatible chat model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenAiChatConfig {
    /// API root, e.g. `https://api.openai.com/v1` or `http://localhost:8000/v1`.
    pub base_url: String,
    pub model: String,
    /// Sent as `Authorization: Bearer …` when present.
    pub api_key: Option<ApiKey>,
    /// Name of the answer-length field: `max_tokens`, or `max_completion_tokens` for OpenAI
    /// models that reject the older name.
    pub token_limit_field: String,
    pub timeout_secs: f64,
    pub max_concurrency: usize,
    pub retries: u32,
    pub backoff_ms: u64,
    pub max_retry_wait_secs: f64,
}

impl Default for OpenAiChatConfig {
    fn default() -> Self {
        OpenAiChatConfig {
            base_url: OPENAI_BASE_URL.into(),
            // The paper's LLM.
            model: "gpt-3.5-turbo".into(),
            api_key: None,
            token_limit_field: "max_tokens".into(),
            timeout_secs: 120.0,
            max_concurrency: 4,
            retries: 4,
            backoff_ms: 500,
            max_retry_wait_secs: 120.0,
        }
    }
}

/// `[captioner]`-style settings of an OpenAI-compatible vision chat model used as captioner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenAiCaptionerConfig {
    pub base_url: String,
    pub model: String,
    pub api_key: Option<ApiKey>,
    /// The text part sent with each image.
    pub prompt: String,
    /// Answer length limit (BLIP in the paper: `max_new_tokens=32`).
    pub max_tokens: usize,
    /// Name of the answer-length field (see [`OpenAiChatConfig::token_limit_field`]).
    pub token_limit_field: String,
    /// Images larger than this on their long side are downscaled before upload (0 = never).
    pub max_side: u32,
    pub timeout_secs: f64,
    pub max_concurrency: usize,
    pub retries: u32,
    pub backoff_ms: u64,
    pub max_retry_wait_secs: f64,
}

impl Default for OpenAiCaptionerConfig {
    fn default() -> Self {
        OpenAiCaptionerConfig {
            base_url: OPENAI_BASE_URL.into(),
            model: "gpt-4o-mini".into(),
            api_key: None,
            prompt: DEFAULT_CAPTION_PROMPT.into(),
            max_tokens: 40,
            token_limit_field: "max_tokens".into(),
            max_side: 768,
            timeout_secs: 120.0,
            max_concurrency: 4,
            retries: 4,
            backoff_ms: 500,
            max_retry_wait_secs: 120.0,
        }
    }
}

/// `[concept_images]`-style settings of an OpenAI-compatible `/images/generations` service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenAiImagesConfig {
    pub base_url: String,
    pub model: String,
    pub api_key: Option<ApiKey>,
    /// `{concept}` is replaced by the label.
    pub prompt_template: String,
    /// `WIDTHxHEIGHT`.
    pub size: String,
    /// Sent as `response_format` when set; the answer must carry `b64_json` images. Models that
    /// always answer base64 and reject the field (gpt-image-1) need `None`.
    pub response_format: Option<String>,
    /// Send `seed` (0..q) with each request; servers that reject unknown fields need `false`.
    pub send_seed: bool,
    pub timeout_secs: f64,
    pub max_concurrency: usize,
    pub retries: u32,
    pub backoff_ms: u64,
    pub max_retry_wait_secs: f64,
}

impl Default for OpenAiImagesConfig {
    fn default() -> Self {
        OpenAiImagesConfig {
            base_url: OPENAI_BASE_URL.into(),
            model: "dall-e-2".into(),
            api_key: None,
            prompt_template: DEFAULT_IMAGE_PROMPT.into(),
            size: "512x512".into(),
            response_format: Some("b64_json".into()),
            send_seed: true,
            timeout_secs: 300.0,
            max_concurrency: 2,
            retries: 4,
            backoff_ms: 1000,
            max_retry_wait_secs: 180.0,
        }
    }
}

/// An OpenAI-compatible chat model ([`ChatModel`]).
#[derive(Debug)]
pub struct OpenAiChat {
    config: OpenAiChatConfig,
    endpoint: Endpoint,
    cache: ResponseCache,
}

impl OpenAiChat {
    /// A client for `POST {base_url}/chat/completions`; nothing is sent until the first call.
    pub fn new(config: OpenAiChatConfig) -> ProviderResult<Self> {
        let settings = HttpSettings::from_config(
            "OpenAI-compatible chat model",
            config.timeout_secs,
            config.max_concurrency,
            config.retries,
            config.backoff_ms,
            config.max_retry_wait_secs,
        )?;
        let endpoint = Endpoint::new(join_url(&config.base_url, "chat/completions"), config.api_key.clone(), settings)?;
        Ok(OpenAiChat { config, endpoint, cache: ResponseCache::disabled() })
    }

    /// Answers are cached in `cache` (keyed by the full request).
    pub fn with_cache(mut self, cache: ResponseCache) -> Self {
        self.cache = cache;
        self
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn body(&self, request: &ChatRequest) -> Value {
        let mut body = json!({
            "model": self.config.model,
            "messages": request
                .messages
                .iter()
                .map(|m| json!({"role": m.role, "content": m.content}))
                .collect::<Vec<_>>(),
            "temperature": clean_f64(request.temperature),
            "seed": request.seed,
        });
        body[self.config.token_limit_field.as_str()] = json!(request.max_tokens);
        body
    }
}

impl ChatModel for OpenAiChat {
    fn info(&self) -> ComponentInfo {
        ComponentInfo::paper_kind(
            Role::Llm,
            format!("{} via {}", self.config.model, self.config.base_url.trim_end_matches('/')),
        )
    }

    fn complete(&self, request: &ChatRequest) -> ProviderResult<String> {
        let body = self.body(request);
        let key = ResponseCache::key(&json!({
            "kind": "chat",
            "endpoint": self.endpoint.url(),
            "model": self.config.model,
            "request": body,
        }));
        let url = self.endpoint.url();
        cached_post(&self.endpoint, &self.cache, &key, || Ok(body.clone()), |bytes| chat_answer(url, bytes))
    }
}

/// `choices[0].message.content`, trimmed (a string, or the text parts of a content array).
fn chat_answer(endpoint: &str, bytes: &[u8]) -> ProviderResult<String> {
    let value = parse_json(endpoint, bytes)?;
    let bad = |reason: String| ProviderError::Request { endpoint: endpoint.to_string(), reason };
    let choice = value.get("choices").and_then(|c| c.get(0)).ok_or_else(|| bad("answer has no `choices[0]`".into()))?;
    let content = choice.get("message").and_then(|m| m.get("content"));
    let text = match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            parts.iter().filter_map(|p| p.get("text").and_then(|t| t.as_str())).collect::<Vec<_>>().join("")
        }
        _ => String::new(),
    };
    let text = text.trim();
    if text.is_empty() {
        let finish = choice.get("finish_reason").and_then(|f| f.as_str()).unwrap_or("unknown");
        return Err(bad(format!("answer has no message text (finish_reason: {finish})")));
    }
    Ok(text.to_string())
}

/// A vision chat model as captioner ([`Captioner`]): one request per image, at most
/// `max_concurrency` in flight.
#[derive(Debug)]
pub struct OpenAiCaptioner {
    config: OpenAiCaptionerConfig,
    endpoint: Endpoint,
    cache: ResponseCache,
}

impl OpenAiCaptioner {
    pub fn new(config: OpenAiCaptionerConfig) -> ProviderResult<Self> {
        let settings = HttpSettings::from_config(
            "OpenAI-compatible captioner",
            config.timeout_secs,
            config.max_concurrency,
            config.retries,
            config.backoff_ms,
            config.max_retry_wait_secs,
        )?;
        let endpoint = Endpoint::new(join_url(&config.base_url, "chat/completions"), config.api_key.clone(), settings)?;
        Ok(OpenAiCaptioner { config, endpoint, cache: ResponseCache::disabled() })
    }

    /// Captions are cached in `cache` (keyed by image hash, model and prompt).
    pub fn with_cache(mut self, cache: ResponseCache) -> Self {
        self.cache = cache;
        self
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn caption_one(&self, input: &CaptionInput<'_>) -> ProviderResult<String> {
        let image_id = if input.key.is_empty() { pixel_hash(input.image) } else { input.key.to_string() };
        let key = ResponseCache::key(&json!({
            "kind": "caption",
            "endpoint": self.endpoint.url(),
            "model": self.config.model,
            "prompt": self.config.prompt,
            "max_tokens": self.config.max_tokens,
            "max_side": self.config.max_side,
            "image": image_id,
        }));
        let url = self.endpoint.url();
        let body = || -> ProviderResult<Value> {
            let data_url = jpeg_data_url(url, input.image, self.config.max_side)?;
            let mut body = json!({
                "model": self.config.model,
                "messages": [{
                    "role": "user",
                    "content": [
                        {"type": "text", "text": self.config.prompt},
                        {"type": "image_url", "image_url": {"url": data_url}},
                    ],
                }],
                "temperature": 0.0,
                "seed": 0,
            });
            body[self.config.token_limit_field.as_str()] = json!(self.config.max_tokens);
            Ok(body)
        };
        cached_post(&self.endpoint, &self.cache, &key, body, |bytes| {
            chat_answer(url, bytes).map(|text| clean_caption(&text))
        })
    }
}

impl Captioner for OpenAiCaptioner {
    fn info(&self) -> ComponentInfo {
        ComponentInfo::paper_kind(
            Role::Captioner,
            format!("{} via {}", self.config.model, self.config.base_url.trim_end_matches('/')),
        )
    }

    fn caption(&self, images: &[CaptionInput<'_>]) -> ProviderResult<Vec<String>> {
        let workers = self.endpoint.settings().max_concurrency;
        run_bounded(images.len(), workers, |i| self.caption_one(&images[i]))
    }
}

/// The first line of a caption, without surrounding quotes or whitespace.
fn clean_caption(text: &str) -> String {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    line.trim_matches(|c: char| c == '"' || c == '\'' || c == '“' || c == '”').trim().to_string()
}

/// Hex sha256 of an image's size and pixels, for inputs without a key.
fn pixel_hash(image: &RgbImage) -> String {
    let mut hasher = Sha256::new();
    hasher.update(image.width().to_le_bytes());
    hasher.update(image.height().to_le_bytes());
    hasher.update(image.as_raw());
    hex::encode(hasher.finalize())
}

/// `data:image/jpeg;base64,…` of `image` (quality 90), downscaled to `max_side` if larger.
fn jpeg_data_url(endpoint: &str, image: &RgbImage, max_side: u32) -> ProviderResult<String> {
    let (w, h) = image.dimensions();
    let resized;
    let image = if max_side > 0 && w.max(h) > max_side {
        let scale = max_side as f64 / w.max(h) as f64;
        let nw = ((w as f64 * scale).round() as u32).max(1);
        let nh = ((h as f64 * scale).round() as u32).max(1);
        resized = image::imageops::resize(image, nw, nh, image::imageops::FilterType::Triangle);
        &resized
    } else {
        image
    };
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90).encode_image(image).map_err(|e| {
        ProviderError::Request {
            endpoint: endpoint.to_string(),
            reason: format!("cannot encode the image as JPEG: {e}"),
        }
    })?;
    Ok(format!("data:image/jpeg;base64,{}", base64::engine::general_purpose::STANDARD.encode(&jpeg)))
}

/// An OpenAI-compatible image generator ([`ConceptImageSource`]): one request (n = 1) per seed
/// 0..q, at most `max_concurrency` in flight.
#[derive(Debug)]
pub struct OpenAiImages {
    config: OpenAiImagesConfig,
    endpoint: Endpoint,
    cache: ResponseCache,
}

impl OpenAiImages {
    pub fn new(config: OpenAiImagesConfig) -> ProviderResult<Self> {
        let settings = HttpSettings::from_config(
            "OpenAI-compatible image generator",
            config.timeout_secs,
            config.max_concurrency,
            config.retries,
            config.backoff_ms,
            config.max_retry_wait_secs,
        )?;
        if !config.prompt_template.contains("{concept}") {
            return Err(ProviderError::Local {
                component: "OpenAI-compatible image generator".into(),
                reason: format!("`prompt_template` must contain {{concept}}, got {:?}", config.prompt_template),
            });
        }
        let endpoint =
            Endpoint::new(join_url(&config.base_url, "images/generations"), config.api_key.clone(), settings)?;
        Ok(OpenAiImages { config, endpoint, cache: ResponseCache::disabled() })
    }

    /// Generated images are cached in `cache` (keyed by endpoint, model, prompt and seed).
    pub fn with_cache(mut self, cache: ResponseCache) -> Self {
        self.cache = cache;
        self
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn generate(&self, concept: &str, seed: u64) -> ProviderResult<ConceptImage> {
        let prompt = self.config.prompt_template.replace("{concept}", concept);
        let mut body = json!({
            "model": self.config.model,
            "prompt": prompt,
            "n": 1,
            "size": self.config.size,
        });
        if let Some(format) = &self.config.response_format {
            body["response_format"] = json!(format);
        }
        if self.config.send_seed {
            body["seed"] = json!(seed);
        }
        let key = ResponseCache::key(&json!({
            "kind": "image",
            "endpoint": self.endpoint.url(),
            "model": self.config.model,
            "concept": concept,
            "seed": seed,
            "request": body,
        }));
        let url = self.endpoint.url();
        let image = cached_post(
            &self.endpoint,
            &self.cache,
            &key,
            || Ok(body.clone()),
            |bytes| {
                let value = parse_json(url, bytes)?;
                let item = value.get("data").and_then(|d| d.get(0));
                match item.and_then(|i| i.get("b64_json")).and_then(|b| b.as_str()) {
                    Some(b64) => decode_base64_image(url, b64),
                    None => Err(ProviderError::Request {
                        endpoint: url.to_string(),
                        reason: if item.and_then(|i| i.get("url")).is_some() {
                            concat!(
                                "answer carries an image URL, not `b64_json`; ",
                                "set response_format = \"b64_json\""
                            )
                            .into()
                        } else {
                            "answer has no `data[0].b64_json` image".into()
                        },
                    }),
                }
            },
        )?;
        Ok(ConceptImage { key, image, origin: format!("seed {seed}") })
    }
}

impl ConceptImageSource for OpenAiImages {
    fn info(&self) -> ComponentInfo {
        ComponentInfo::paper_kind(
            Role::ConceptImages,
            format!("{} ({}) via {}", self.config.model, self.config.size, self.config.base_url.trim_end_matches('/')),
        )
    }

    fn images(&self, concept: &str, q: usize) -> ProviderResult<Vec<ConceptImage>> {
        let workers = self.endpoint.settings().max_concurrency;
        run_bounded(q, workers, |seed| self.generate(concept, seed as u64))
    }
}
