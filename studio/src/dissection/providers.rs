//! Which component plays each role of a run: a configured model service where the config names
//! one (`[services.*]`), else the embedded offline substitute (`dissect::concepts::embedded`).

use crate::config::{ChatService, ImageService, ServicesSection};
use anyhow::Context;
use dissect::clip_dissect::ClipTextEncoder;
use dissect::concepts::classifier_captioner::ClassifierCaptioner;
use dissect::concepts::embedded::{pool_texts, HeldOutImage};
use dissect::concepts::feature_encoder::{ClipImageEncoder, FeatureEncoder};
use dissect::concepts::pipeline::Providers;
use dissect::concepts::retrieval::RetrievalImages;
use dissect::concepts::shared_model::share;
use dissect::concepts::{Captioner, ChatModel, ConceptImageSource, ImageEncoder, TextEncoder};
use dissect::llm::{GgufChat, LlmOptions};
use dissect::model::{EfficientNetLite, LoadOptions, Variant};
use dissect::services::{
    ApiKey, Automatic1111Config, Automatic1111Images, OpenAiCaptioner, OpenAiCaptionerConfig, OpenAiChat,
    OpenAiChatConfig, OpenAiImages, OpenAiImagesConfig, ResponseCache,
};
use dissect::text_encoder::{SentenceEncoder, TextModel};
use std::path::Path;
use std::sync::Arc;

fn key(s: &str) -> Option<ApiKey> {
    (!s.is_empty()).then(|| ApiKey::new(s))
}

fn chat_config(s: &ChatService) -> OpenAiChatConfig {
    let mut c = OpenAiChatConfig { base_url: s.url.clone(), api_key: key(&s.api_key), ..Default::default() };
    if !s.model.is_empty() {
        c.model = s.model.clone();
    }
    c
}

fn images_source(s: &ImageService, cache: &ResponseCache) -> anyhow::Result<Arc<dyn ConceptImageSource>> {
    match s.api.as_str() {
        "openai" => {
            let mut c = OpenAiImagesConfig { base_url: s.url.clone(), api_key: key(&s.api_key), ..Default::default() };
            if !s.model.is_empty() {
                c.model = s.model.clone();
            }
            Ok(Arc::new(OpenAiImages::new(c)?.with_cache(cache.clone())))
        }
        "automatic1111" => {
            let c = Automatic1111Config {
                base_url: s.url.clone(),
                model: s.model.clone(),
                api_key: key(&s.api_key),
                ..Default::default()
            };
            Ok(Arc::new(Automatic1111Images::new(c)?.with_cache(cache.clone())))
        }
        other => anyhow::bail!("services.images.api = `{other}`: expected `openai` or `automatic1111`"),
    }
}

/// Builds the run's components. `concept_pool` is only used when concept images are retrieved.
pub fn build_providers(
    services: &ServicesSection,
    cache_dir: &Path,
    concept_pool: impl FnOnce() -> Vec<HeldOutImage>,
) -> anyhow::Result<Providers> {
    let cache = ResponseCache::at(cache_dir);
    // EfficientNet-Lite2 serves the embedded captioner and image encoder; loaded once if needed.
    let needs_lite2 =
        services.captioner.url.is_empty() || services.clip_torchscript.is_none() || services.images.url.is_empty();
    let lite2 = if needs_lite2 {
        Some(share(
            EfficientNetLite::load_default(Variant::Lite2, LoadOptions::default())
                .context("loading EfficientNet-Lite2 (embedded captioner and image encoder)")?,
        ))
    } else {
        None
    };
    let embedded_captioner = || -> anyhow::Result<Arc<ClassifierCaptioner>> {
        Ok(Arc::new(ClassifierCaptioner::new(lite2.clone().expect("loaded when needed"))?))
    };

    let captioner: Arc<dyn Captioner> = if services.captioner.url.is_empty() {
        embedded_captioner()?
    } else {
        let s = &services.captioner;
        let mut c = OpenAiCaptionerConfig { base_url: s.url.clone(), api_key: key(&s.api_key), ..Default::default() };
        if !s.model.is_empty() {
            c.model = s.model.clone();
        }
        Arc::new(OpenAiCaptioner::new(c)?.with_cache(cache.clone()))
    };
    let llm: Arc<dyn ChatModel> = if services.llm.url.is_empty() {
        Arc::new(
            GgufChat::load(&dissect::llm::default_model_path(), LlmOptions::default())
                .context("loading the embedded language model")?,
        )
    } else {
        Arc::new(OpenAiChat::new(chat_config(&services.llm))?.with_cache(cache.clone()))
    };
    // CLIP's text encoder where CLIP is configured (the paper's choice for the top-3 and its
    // 0.81 threshold); else the embedded sentence encoder with its calibrated threshold.
    let text: Arc<dyn TextEncoder> = match clip_text_encoder(services)? {
        Some(clip) => Arc::new(clip),
        None => Arc::new(
            SentenceEncoder::load_default(TextModel::MiniLmL6V2)
                .context("loading the all-MiniLM-L6-v2 text encoder")?,
        ),
    };
    let image_encoder: Arc<dyn ImageEncoder> = match &services.clip_torchscript {
        Some(path) => Arc::new(ClipImageEncoder::load(path, 224).with_context(|| {
            format!("loading the CLIP image encoder {} (config key services.clip_torchscript)", path.display())
        })?),
        None => Arc::new(FeatureEncoder::new(lite2.clone().expect("loaded when needed"), "head")?),
    };
    let concept_images: Arc<dyn ConceptImageSource> = if services.images.url.is_empty() {
        let pool = pool_texts(concept_pool(), embedded_captioner()?.as_ref())?;
        Arc::new(RetrievalImages::new(pool, text.clone())?)
    } else {
        images_source(&services.images, &cache)?
    };
    Ok(Providers { captioner, llm, concept_images, image_encoder, text_encoder: text })
}

/// CLIP's text encoder, when CLIP is configured (`services.clip_torchscript` and
/// `services.clip_tokenizer`); `None` otherwise.
pub fn clip_text_encoder(services: &ServicesSection) -> anyhow::Result<Option<ClipTextEncoder>> {
    let (Some(clip), Some(tokenizer)) = (&services.clip_torchscript, &services.clip_tokenizer) else {
        return Ok(None);
    };
    let encoder = ClipTextEncoder::load(clip, tokenizer, tch::Device::Cpu).with_context(|| {
        format!(
            "loading the CLIP text encoder {} (config keys services.clip_torchscript, services.clip_tokenizer)",
            clip.display()
        )
    })?;
    Ok(Some(encoder))
}
