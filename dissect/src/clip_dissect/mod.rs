//! CLIP-Dissect (Oikarinen & Weng, ICLR 2023) computed natively: CLIP embeddings of the probing
//! images and of a concept list, their cosine similarities, and each neuron's label = the concept
//! with the largest soft-WPMI against the neuron's activations on the same images
//! ([`soft_wpmi`]). Needs a CLIP TorchScript with `encode_image` and `encode_text` and CLIP's
//! `tokenizer.json`; embeddings are cached on disk ([`cache`]), so a second run encodes nothing.
//!
//! Concept words are encoded as they are (no prompt template), as CLIP-Dissect does; the default
//! concept set is its 20k most common English words.

pub mod cache;
pub mod soft_wpmi;
pub mod testing;
pub mod text;

pub use cache::{EmbeddingCache, Embeddings};
pub use soft_wpmi::{soft_wpmi, BestConcept, SoftWpmiParams, SoftWpmiScores};
pub use text::{ClipTextEncoder, ClipTokenizer};

use crate::concepts::feature_encoder::ClipImageEncoder;
use crate::concepts::providers::ImageEncoder;
use crate::crops::Summary;
use crate::record::{ActivationSummaries, ImageSource};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

/// CLIP-Dissect's default concept set: 20,000 common English words, one per line
/// (`data/20k.txt` of the CLIP-Dissect repository, kept beside this file).
pub const DEFAULT_CONCEPTS: &str = include_str!("concepts_20k.txt");
pub const DEFAULT_CONCEPTS_NAME: &str = "concepts_20k.txt";

/// CLIP's image input side.
pub const CLIP_INPUT_SIZE: u32 = 224;
/// Images decoded and encoded at once.
const IMAGE_BATCH: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum ClipDissectError {
    #[error("CLIP-Dissect: {0}")]
    Input(String),
    #[error("CLIP tokenizer {}: {reason}", path.display())]
    Tokenizer { path: PathBuf, reason: String },
    #[error("CLIP TorchScript {}: {reason}", path.display())]
    Clip { path: PathBuf, reason: String },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

pub type Result<T> = std::result::Result<T, ClipDissectError>;

/// A concept list's lines, trimmed, empty ones left out (in order, as CLIP-Dissect reads it).
pub fn parse_concepts(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
}

fn sha256_file(path: &Path) -> Result<String> {
    let io = |source| ClipDissectError::Io { path: path.to_path_buf(), source };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(io)?;
    Ok(hex::encode(h.finalize()))
}

/// Where the embeddings came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Cache,
    Computed,
}

/// A configured CLIP: its files, their hashes (the cache keys) and the embedding cache.
pub struct Clip {
    pub torchscript: PathBuf,
    pub tokenizer: PathBuf,
    pub clip_sha256: String,
    tokenizer_sha256: String,
    cache: EmbeddingCache,
    device: Device,
}

impl Clip {
    /// Checks and hashes the files; loads nothing (the model is loaded only on a cache miss).
    pub fn new(torchscript: &Path, tokenizer: &Path, cache_dir: &Path, device: Device) -> Result<Self> {
        Ok(Clip {
            clip_sha256: sha256_file(torchscript)?,
            tokenizer_sha256: sha256_file(tokenizer)?,
            torchscript: torchscript.to_path_buf(),
            tokenizer: tokenizer.to_path_buf(),
            cache: EmbeddingCache::new(cache_dir),
            device,
        })
    }

    /// L2-normalised text embeddings of `concepts`, from the cache when this CLIP, tokenizer
    /// and list were encoded before.
    pub fn text_embeddings(
        &self,
        concepts: &[String],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<(Embeddings, Origin)> {
        let mut h = Sha256::new();
        h.update(self.tokenizer_sha256.as_bytes());
        for c in concepts {
            h.update(c.as_bytes());
            h.update(b"\n");
        }
        let path = self.cache.path("text", &self.clip_sha256, &hex::encode(h.finalize()));
        if let Some(e) = self.cache.load(&path, concepts) {
            return Ok((e, Origin::Cache));
        }
        let encoder = ClipTextEncoder::load(&self.torchscript, &self.tokenizer, self.device)?;
        let texts: Vec<&str> = concepts.iter().map(String::as_str).collect();
        let t = encoder.encode(&texts, progress)?;
        let e = Embeddings { keys: concepts.to_vec(), dim: t.size()[1] as usize, data: tensor_data(&t)? };
        self.cache.store(&path, &e).map_err(|source| ClipDissectError::Io { path: path.clone(), source })?;
        Ok((e, Origin::Computed))
    }

    /// L2-normalised image embeddings, one row per image (NaN for an image that cannot be
    /// read), keyed by the images' sha256; `skipped` gets each unreadable image's reason.
    pub fn image_embeddings(
        &self,
        images: &[ImageSource],
        progress: &mut dyn FnMut(usize, usize),
        skipped: &mut Vec<String>,
    ) -> Result<(Embeddings, Origin)> {
        let keys: Vec<String> = images.iter().map(|i| i.sha256.clone()).collect();
        let set_hash = hex::encode(Sha256::digest(keys.join("\n")));
        let path = self.cache.path("images", &self.clip_sha256, &set_hash);
        if let Some(e) = self.cache.load(&path, &keys) {
            return Ok((e, Origin::Cache));
        }
        let encoder = ClipImageEncoder::load(&self.torchscript, CLIP_INPUT_SIZE)
            .map_err(|e| ClipDissectError::Clip { path: self.torchscript.clone(), reason: e.to_string() })?;
        let mut rows: Vec<Option<Vec<f32>>> = Vec::with_capacity(images.len());
        for chunk in images.chunks(IMAGE_BATCH) {
            let decoded: Vec<Option<image::RgbImage>> = chunk
                .iter()
                .map(|s| match crate::preprocess::load_rgb(&s.path) {
                    Ok(img) => Some(img),
                    Err(e) => {
                        skipped.push(e.to_string());
                        None
                    }
                })
                .collect();
            let ok: Vec<&image::RgbImage> = decoded.iter().flatten().collect();
            let mut encoded = encoder
                .encode(&ok)
                .map_err(|e| ClipDissectError::Clip { path: self.torchscript.clone(), reason: e.to_string() })?
                .into_iter();
            rows.extend(decoded.iter().map(|d| d.as_ref().and_then(|_| encoded.next())));
            progress(rows.len(), images.len());
        }
        let dim = rows.iter().flatten().map(Vec::len).next().unwrap_or(0);
        let data = rows.iter().flat_map(|r| r.clone().unwrap_or_else(|| vec![f32::NAN; dim])).collect();
        let e = Embeddings { keys, dim, data };
        self.cache.store(&path, &e).map_err(|source| ClipDissectError::Io { path: path.clone(), source })?;
        Ok((e, Origin::Computed))
    }
}

fn tensor_data(t: &Tensor) -> Result<Vec<f32>> {
    Vec::<f32>::try_from(t.contiguous().view([-1])).map_err(|e| ClipDissectError::Input(e.to_string()))
}

/// What CLIP-Dissect says about one requested unit.
#[derive(Debug, Clone, PartialEq)]
pub enum UnitLabel {
    /// The best concept (index into the concept list) and its soft-WPMI.
    Labelled { unit: usize, concept: usize, score: f32 },
    /// The unit's activation is the same on every usable image: nothing to explain.
    Constant { unit: usize },
}

/// A layer's CLIP-Dissect labels.
#[derive(Debug)]
pub struct LayerLabels {
    pub labels: Vec<UnitLabel>,
    /// Probing images with both a recording and a CLIP embedding.
    pub images_used: usize,
    /// `min(top_k, images_used)`.
    pub top_k_used: usize,
}

/// Labels `units` of the recorded layer: similarities of `images` (rows aligned with the
/// recording's images) with `concepts`, soft-WPMI against every unit's `summary` activations
/// (the prior is over the whole layer, as in CLIP-Dissect).
pub fn label_units(
    images: &Embeddings,
    concepts: &Embeddings,
    summaries: &ActivationSummaries,
    summary: Summary,
    units: &[usize],
    params: &SoftWpmiParams,
) -> Result<LayerLabels> {
    let bad = |m: String| Err(ClipDissectError::Input(m));
    if images.keys.len() != summaries.n_images {
        return bad(format!("{} image embeddings for {} recorded images", images.keys.len(), summaries.n_images));
    }
    if images.dim != concepts.dim {
        return bad(format!("image embeddings have {} dimensions but text embeddings {}", images.dim, concepts.dim));
    }
    if let Some(&u) = units.iter().find(|&&u| u >= summaries.channels) {
        return bad(format!("unit {u} is outside layer `{}`, which has {} units", summaries.layer, summaries.channels));
    }
    let valid: Vec<usize> =
        (0..summaries.n_images).filter(|&i| !images.is_missing(i) && !summaries.is_missing(i)).collect();
    if valid.is_empty() {
        return bad("no probing image has both a recording and a CLIP embedding".into());
    }
    let (n, d, c) = (valid.len() as i64, images.dim as i64, concepts.keys.len() as i64);
    let img: Vec<f32> = valid.iter().flat_map(|&i| images.row(i).iter().copied()).collect();
    let img = Tensor::from_slice(&img).view([n, d]);
    let txt = Tensor::from_slice(&concepts.data).view([c, d]);
    let similarity = img.matmul(&txt.transpose(0, 1));
    let acts: Vec<f32> = valid.iter().flat_map(|&i| summaries.row(i, summary).iter().copied()).collect();
    let acts = Tensor::from_slice(&acts).view([n, summaries.channels as i64]);
    let scores = soft_wpmi(&similarity, &acts, params)?;
    let labels = scores
        .best(units)
        .into_iter()
        .map(|b| {
            if scores.constant[b.unit] {
                UnitLabel::Constant { unit: b.unit }
            } else {
                UnitLabel::Labelled { unit: b.unit, concept: b.concept, score: b.score }
            }
        })
        .collect();
    Ok(LayerLabels { labels, images_used: valid.len(), top_k_used: scores.top_k_used })
}
