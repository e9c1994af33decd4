//! Stable Diffusion through the AUTOMATIC1111 web UI API (`POST /sdapi/v1/txt2img`): with the
//! SD v1-4 checkpoint loaded, this is the paper's concept-image generator (50 steps, DPM-Solver
//! multistep, fixed seeds).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{
    cached_post, clean_f64, decode_base64_image, join_url, parse_json, run_bounded, ApiKey, Endpoint, HttpSettings,
    ResponseCache,
};
use crate::concepts::{ComponentInfo, ConceptImage, ConceptImageSource, ProviderError, ProviderResult, Role};

/// Settings of an AUTOMATIC1111 server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Automatic1111Config {
    /// Server root, e.g. `http://127.0.0.1:7860` (the web UI started with `--api`).
    pub base_url: String,
    /// Checkpoint title to use (sent as `override_settings.sd_model_checkpoint`); empty = the
    /// checkpoint the server has loaded.
    pub model: String,
    /// Sent as `Authorization: Bearer …` (for servers behind an authenticating proxy).
    pub api_key: Option<ApiKey>,
    /// `{concept}` is replaced by the label.
    pub prompt_template: String,
    pub negative_prompt: String,
    /// Denoising steps (the paper: 50).
    pub steps: u32,
    /// The paper's scheduler is diffusers' DPM-Solver multistep, A1111's "DPM++ 2M".
    pub sampler_name: String,
    /// A1111 ≥ 1.9 takes the noise schedule separately ("Automatic", "Karras", …);
    /// `None` omits the field.
    pub scheduler: Option<String>,
    /// Classifier-free guidance (diffusers' default for SD v1-4: 7.5).
    pub cfg_scale: f32,
    pub width: u32,
    pub height: u32,
    pub timeout_secs: f64,
    pub max_concurrency: usize,
    pub retries: u32,
    pub backoff_ms: u64,
    pub max_retry_wait_secs: f64,
}

impl Default for Automatic1111Config {
    fn default() -> Self {
        Automatic1111Config {
            base_url: "http://127.0.0.1:7860".into(),
            model: String::new(),
            api_key: None,
            prompt_template: super::openai::DEFAULT_IMAGE_PROMPT.into(),
            negative_prompt: String::new(),
            steps: 50,
            sampler_name: "DPM++ 2M".into(),
            scheduler: None,
            cfg_scale: 7.5,
            width: 512,
            height: 512,
            timeout_secs: 600.0,
            // The web UI renders one image at a time; more in flight would only queue there.
            max_concurrency: 1,
            retries: 3,
            backoff_ms: 1000,
            max_retry_wait_secs: 120.0,
        }
    }
}

/// An AUTOMATIC1111 txt2img server ([`ConceptImageSource`]): one image per seed 0..q.
#[derive(Debug)]
pub struct Automatic1111Images {
    config: Automatic1111Config,
    endpoint: Endpoint,
    cache: ResponseCache,
}

impl Automatic1111Images {
    pub fn new(config: Automatic1111Config) -> ProviderResult<Self> {
        let component = "AUTOMATIC1111 image generator";
        let settings = HttpSettings::from_config(
            component,
            config.timeout_secs,
            config.max_concurrency,
            config.retries,
            config.backoff_ms,
            config.max_retry_wait_secs,
        )?;
        let invalid = |reason: String| ProviderError::Local { component: component.into(), reason };
        if !config.prompt_template.contains("{concept}") {
            return Err(invalid(format!(
                "`prompt_template` must contain {{concept}}, got {:?}",
                config.prompt_template
            )));
        }
        if config.steps == 0 || config.width == 0 || config.height == 0 {
            return Err(invalid("`steps`, `width` and `height` must be positive".into()));
        }
        let endpoint = Endpoint::new(join_url(&config.base_url, "sdapi/v1/txt2img"), config.api_key.clone(), settings)?;
        Ok(Automatic1111Images { config, endpoint, cache: ResponseCache::disabled() })
    }

    /// Generated images are cached in `cache` (keyed by endpoint, model, prompt, seed and the
    /// sampling settings).
    pub fn with_cache(mut self, cache: ResponseCache) -> Self {
        self.cache = cache;
        self
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn body(&self, concept: &str, seed: u64) -> Value {
        let c = &self.config;
        let mut body = json!({
            "prompt": c.prompt_template.replace("{concept}", concept),
            "negative_prompt": c.negative_prompt,
            "seed": seed,
            "steps": c.steps,
            "sampler_name": c.sampler_name,
            "cfg_scale": clean_f64(c.cfg_scale),
            "width": c.width,
            "height": c.height,
            "batch_size": 1,
            "n_iter": 1,
            "send_images": true,
            "save_images": false,
        });
        if let Some(scheduler) = &c.scheduler {
            body["scheduler"] = json!(scheduler);
        }
        if !c.model.is_empty() {
            body["override_settings"] = json!({"sd_model_checkpoint": c.model});
            // Keep the checkpoint loaded for the next request instead of switching back.
            body["override_settings_restore_afterwards"] = json!(false);
        }
        body
    }

    fn generate(&self, concept: &str, seed: u64) -> ProviderResult<ConceptImage> {
        let body = self.body(concept, seed);
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
                match value.get("images").and_then(|i| i.get(0)).and_then(|b| b.as_str()) {
                    Some(b64) => decode_base64_image(url, b64),
                    None => Err(ProviderError::Request {
                        endpoint: url.to_string(),
                        reason: "answer has no `images[0]`".into(),
                    }),
                }
            },
        )?;
        Ok(ConceptImage { key, image, origin: format!("seed {seed}") })
    }
}

impl ConceptImageSource for Automatic1111Images {
    fn info(&self) -> ComponentInfo {
        let c = &self.config;
        let model = if c.model.is_empty() { "loaded checkpoint" } else { c.model.as_str() };
        ComponentInfo::paper_kind(
            Role::ConceptImages,
            format!(
                "Stable Diffusion {model} ({} steps, {}, {}x{}) via AUTOMATIC1111 at {}",
                c.steps,
                c.sampler_name,
                c.width,
                c.height,
                c.base_url.trim_end_matches('/')
            ),
        )
    }

    fn images(&self, concept: &str, q: usize) -> ProviderResult<Vec<ConceptImage>> {
        let workers = self.endpoint.settings().max_concurrency;
        run_bounded(q, workers, |seed| self.generate(concept, seed as u64))
    }
}
