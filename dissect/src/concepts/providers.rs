//! The five swappable components of Steps 2–3 (docs/method.md), as small traits, plus the record of which
//! concrete component produced a label ([`ComponentInfo`]) so the UI and exports can say whether it
//! is the paper's component or an offline substitute.
//!
//! Every method takes `&self`: implementations that hold mutable state (a KV cache, an HTTP
//! client pool) keep it behind their own lock, so one provider can serve a whole run.

use image::RgbImage;
use serde::{Deserialize, Serialize};

/// Which part of the method a component plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Captioner,
    Llm,
    ConceptImages,
    ImageEncoder,
    TextEncoder,
}

impl Role {
    /// The component the paper used for this role.
    pub fn paper_component(self) -> &'static str {
        match self {
            Role::Captioner => "BLIP base (capfilt-large)",
            Role::Llm => "GPT-3.5 Turbo",
            Role::ConceptImages => "Stable Diffusion v1-4 (50 steps, DPM-Solver, seed 0)",
            Role::ImageEncoder => "CLIP ViT-B/16 image encoder",
            Role::TextEncoder => "all-mpnet-base-v2 / CLIP text encoder",
        }
    }
}

/// What one concrete component is, for provenance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentInfo {
    pub role: Role,
    /// Human-readable name, e.g. "EfficientNet-Lite2 top-5 ImageNet classes" or
    /// "openai-compatible chat gpt-4o-mini at https://api.openai.com/v1".
    pub name: String,
    /// True when this is the same kind of component the paper used (a real captioner, a real
    /// chat LLM, a real text-to-image model, CLIP). False for the embedded offline substitutes.
    pub paper_equivalent: bool,
    /// For substitutes: one sentence on how it differs from the paper's component.
    pub note: Option<String>,
}

impl ComponentInfo {
    /// A substitute for the paper's component, with the reason it differs.
    pub fn substitute(role: Role, name: impl Into<String>, note: impl Into<String>) -> Self {
        ComponentInfo { role, name: name.into(), paper_equivalent: false, note: Some(note.into()) }
    }

    /// A component of the kind the paper used.
    pub fn paper_kind(role: Role, name: impl Into<String>) -> Self {
        ComponentInfo { role, name: name.into(), paper_equivalent: true, note: None }
    }
}

/// Errors from a provider. Messages name the component or endpoint so a failed neuron's reason
/// is actionable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// The service answered with an HTTP error status that is not worth retrying (or retries ran out).
    #[error("{endpoint} answered HTTP {status}: {body}")]
    Http { endpoint: String, status: u16, body: String },
    /// Connection failure, timeout, or an answer that could not be understood.
    #[error("{endpoint}: {reason}")]
    Request { endpoint: String, reason: String },
    /// A local (in-process) component failed: missing weights, a tensor error, bad input.
    #[error("{component}: {reason}")]
    Local { component: String, reason: String },
}

pub type ProviderResult<T> = std::result::Result<T, ProviderError>;

/// One image to caption.
#[derive(Debug, Clone, Copy)]
pub struct CaptionInput<'a> {
    /// Hex sha256 identifying the image (content hash of the file, or of the crop's pixels);
    /// the cache key for its caption.
    pub key: &'a str,
    pub image: &'a RgbImage,
    /// The dataset's own description of the image, when the probing set has one. Never set for
    /// a crop: a crop is described from its own pixels (docs/method.md, "Step 2").
    pub description: Option<&'a str>,
    /// ImageNet classes the caption may not name (leak-free mode, when describing classifier
    /// unit c: c, the classes sharing a name with it and its hyponyms). A captioner that can,
    /// avoids them; the pipeline redacts any name that still appears.
    pub withheld_classes: &'a [usize],
}

/// Step 2A: image → one caption.
pub trait Captioner: Send + Sync {
    fn info(&self) -> ComponentInfo;
    /// One caption per input, in order.
    fn caption(&self, images: &[CaptionInput<'_>]) -> ProviderResult<Vec<String>>;
}

/// One chat turn.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatMessage {
    /// "system", "user" or "assistant".
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn system(content: impl Into<String>) -> Self {
        ChatMessage { role: "system".into(), content: content.into() }
    }
    pub fn user(content: impl Into<String>) -> Self {
        ChatMessage { role: "user".into(), content: content.into() }
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        ChatMessage { role: "assistant".into(), content: content.into() }
    }
}

/// One chat completion request. `seed` makes sampling reproducible where the backend allows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    pub temperature: f32,
    pub max_tokens: usize,
    pub seed: u64,
}

/// Step 2 (simplify, summarize): a chat LLM.
pub trait ChatModel: Send + Sync {
    fn info(&self) -> ComponentInfo;
    /// The assistant's answer text (no role markers, trimmed).
    fn complete(&self, request: &ChatRequest) -> ProviderResult<String>;
    /// Answers to several independent requests, in order; each is what [`ChatModel::complete`]
    /// would answer. The in-process model overrides this to decode them together (several times
    /// faster per answer on a CPU); the default asks one at a time.
    fn complete_batch(&self, requests: &[ChatRequest]) -> Vec<ProviderResult<String>> {
        requests.iter().map(|r| self.complete(r)).collect()
    }
}

/// One concept image (generated or retrieved).
#[derive(Debug, Clone)]
pub struct ConceptImage {
    /// Stable identity: content hash of the image (retrieved) or of the generation request
    /// (concept + seed + endpoint) for generated ones.
    pub key: String,
    pub image: RgbImage,
    /// Where it came from, e.g. a probe image's relative path or "seed 3".
    pub origin: String,
}

/// Step 3.1: Q images for a concept.
pub trait ConceptImageSource: Send + Sync {
    fn info(&self) -> ComponentInfo;
    /// Up to `q` images for `concept`, in a deterministic order.
    fn images(&self, concept: &str, q: usize) -> ProviderResult<Vec<ConceptImage>>;
}

/// Image-Products' `E`: L2-normalised image embeddings.
pub trait ImageEncoder: Send + Sync {
    fn info(&self) -> ComponentInfo;
    /// One L2-normalised vector per image, all of the same length.
    fn encode(&self, images: &[&RgbImage]) -> ProviderResult<Vec<Vec<f32>>>;
}

/// Text embeddings for label similarity (multiple-label dedup, retrieval, evaluation).
pub trait TextEncoder: Send + Sync {
    fn info(&self) -> ComponentInfo;
    /// One L2-normalised vector per text, all of the same length.
    fn embed(&self, texts: &[&str]) -> ProviderResult<Vec<Vec<f32>>>;
    /// The cosine above which two labels count as near-duplicates in the top-3 ("multiple
    /// labels"). The paper's 0.81 was set for CLIP's text encoder; an encoder whose cosines run
    /// lower states its own value, calibrated on paraphrase and distinct-concept pairs.
    fn duplicate_cosine(&self) -> f32;
}

/// Cosine of two L2-normalised vectors (their dot product).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
