//! The embedded offline default: every component runs in-process from the assets that
//! `scripts/setup.sh` fetched, with no service and no network. Each one that stands in for a
//! component of the paper says so in its [`ComponentInfo`], and therefore in every label's
//! provenance:
//!
//! | role | embedded | the paper |
//! |---|---|---|
//! | captioner | EfficientNet-Lite2 top classes + dataset descriptions | BLIP |
//! | LLM | Qwen2.5-Coder-0.5B-Instruct (GGUF, in-process) | GPT-3.5 Turbo |
//! | concept images | retrieval from the held-out split by text similarity | Stable Diffusion |
//! | image encoder | EfficientNet-Lite2 pooled `head` features | CLIP ViT-B/16 |
//! | text encoder | all-MiniLM-L6-v2 (or all-mpnet-base-v2) | — |

use super::classifier_captioner::ClassifierCaptioner;
use super::feature_encoder::FeatureEncoder;
use super::pipeline::Providers;
use super::providers::{CaptionInput, Captioner, ProviderError, TextEncoder};
use super::retrieval::{PoolImage, RetrievalImages};
use super::shared_model::{share, SharedModel};
use crate::llm::GgufChat;
use crate::model::{EfficientNetLite, LoadOptions, Variant};
use crate::preprocess::load_rgb;
use crate::text_encoder::{SentenceEncoder, TextModel};
use std::path::PathBuf;
use std::sync::Arc;

/// Choices within the embedded default.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Text encoder for retrieval and label de-duplication.
    pub text_model: TextModel,
    /// The GGUF chat model.
    pub llm_path: PathBuf,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions { text_model: TextModel::MiniLmL6V2, llm_path: crate::llm::default_model_path() }
    }
}

/// A concept-pool image before it has a text: its description if the set has one
/// ([`crate::partition::Partition::concept_pool`] lists them).
#[derive(Debug, Clone)]
pub struct HeldOutImage {
    pub key: String,
    pub path: PathBuf,
    pub name: String,
    pub description: Option<String>,
}

/// Loads EfficientNet-Lite2, the text encoder and the LLM, and builds the retrieval pool from
/// `held_out` (images without a description are captioned first).
pub fn embedded_providers(held_out: Vec<HeldOutImage>, opts: &EmbeddedOptions) -> crate::Result<Providers> {
    let lite2: SharedModel = share(EfficientNetLite::load_default(Variant::Lite2, LoadOptions::default())?);
    let captioner = Arc::new(ClassifierCaptioner::new(lite2.clone())?);
    let text: Arc<dyn TextEncoder> =
        Arc::new(SentenceEncoder::load(&opts.text_model.default_dir(), opts.text_model, tch::Device::Cpu)?);
    let llm = Arc::new(GgufChat::load(&opts.llm_path, crate::llm::LlmOptions::default())?);
    let pool = pool_texts(held_out, captioner.as_ref()).map_err(provider_error)?;
    let concept_images = Arc::new(RetrievalImages::new(pool, text.clone()).map_err(provider_error)?);
    Ok(Providers {
        captioner,
        llm,
        concept_images,
        image_encoder: Arc::new(FeatureEncoder::new(lite2, "head")?),
        text_encoder: text,
    })
}

fn provider_error(e: ProviderError) -> crate::Error {
    crate::Error::Provider(e.to_string())
}

/// Gives every held-out image a text: its description, else its caption. Unreadable images
/// are left out of the pool (they were already reported when the set was scanned).
pub fn pool_texts(held_out: Vec<HeldOutImage>, captioner: &dyn Captioner) -> Result<Vec<PoolImage>, ProviderError> {
    let mut pool = Vec::with_capacity(held_out.len());
    let mut to_caption = Vec::new();
    for h in held_out {
        match h.description.clone().filter(|d| !d.trim().is_empty()) {
            Some(text) => pool.push(PoolImage { key: h.key, path: h.path, name: h.name, text }),
            None => {
                if let Ok(img) = load_rgb(&h.path) {
                    to_caption.push((h, img));
                }
            }
        }
    }
    let inputs: Vec<CaptionInput> = to_caption
        .iter()
        .map(|(h, img)| CaptionInput { key: &h.key, image: img, description: None, withheld_classes: &[] })
        .collect();
    let captions = captioner.caption(&inputs)?;
    for ((h, _), text) in to_caption.into_iter().zip(captions) {
        pool.push(PoolImage { key: h.key, path: h.path, name: h.name, text });
    }
    Ok(pool)
}
