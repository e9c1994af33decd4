//! Sentence text encoders in libtorch: the sentence-transformers models all-MiniLM-L6-v2 (BERT) and
//! all-mpnet-base-v2 (MPNet, the paper's metric model), for label similarity, multiple-label dedup
//! and the evaluation metrics.
//!
//! Each text is tokenized with the model's own `tokenizer.json` (truncated to the model's
//! sentence-transformers `max_seq_length`), run through the encoder, mean-pooled over its real
//! tokens and L2-normalised, exactly as sentence-transformers does. Texts are batched by length
//! so that little compute goes to padding; padding never changes a text's embedding.
//!
//! The weights, tokenizer and config live in `<assets>/text/<model name>/`, put there by
//! `scripts/fetch_assets.py` (run by `scripts/setup.sh`).

mod bert;
pub mod calibration;
mod layers;
mod mpnet;

use crate::concepts::{ComponentInfo, ProviderError, ProviderResult, Role, TextEncoder};
use crate::error::{Error, Result};
use bert::Bert;
use layers::{Config, Weights};
use mpnet::Mpnet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tch::{Device, Kind, Tensor};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// The sentence encoders DnD Studio ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TextModel {
    /// sentence-transformers/all-MiniLM-L6-v2: 6-layer BERT, 384 dimensions, 22.7M parameters.
    MiniLmL6V2,
    /// sentence-transformers/all-mpnet-base-v2: 12-layer MPNet, 768 dimensions, 109M parameters.
    MpnetBaseV2,
}

impl TextModel {
    pub const ALL: [TextModel; 2] = [TextModel::MiniLmL6V2, TextModel::MpnetBaseV2];

    /// The model's name, also its folder under `<assets>/text/`.
    pub fn name(self) -> &'static str {
        match self {
            TextModel::MiniLmL6V2 => "all-MiniLM-L6-v2",
            TextModel::MpnetBaseV2 => "all-mpnet-base-v2",
        }
    }

    /// `<assets>/text/<name>/`, where `scripts/fetch_assets.py` installs it.
    pub fn default_dir(self) -> PathBuf {
        crate::assets::assets_dir().join("text").join(self.name())
    }

    /// Longest input in tokens (special tokens included); longer texts are truncated. These are
    /// the models' sentence-transformers `max_seq_length`, which they were trained with.
    pub fn max_tokens(self) -> usize {
        match self {
            TextModel::MiniLmL6V2 => 256,
            TextModel::MpnetBaseV2 => 384,
        }
    }

    /// Top-3 near-duplicate threshold for this model: the cosine that best separates the
    /// paraphrase pairs from the distinct-concept pairs of [`calibration`] (the test
    /// `duplicate_thresholds_are_calibrated` recomputes it and fails if this drifts).
    pub fn duplicate_cosine(self) -> f32 {
        match self {
            TextModel::MiniLmL6V2 => 0.63,
            TextModel::MpnetBaseV2 => 0.61,
        }
    }

    /// `model_type` in the model's `config.json`.
    fn model_type(self) -> &'static str {
        match self {
            TextModel::MiniLmL6V2 => "bert",
            TextModel::MpnetBaseV2 => "mpnet",
        }
    }
}

enum Network {
    Bert(Bert),
    Mpnet(Mpnet),
}

impl Network {
    fn forward(&self, ids: &Tensor, mask: &Tensor) -> Tensor {
        match self {
            Network::Bert(n) => n.forward(ids, mask),
            Network::Mpnet(n) => n.forward(ids, mask),
        }
    }

    fn max_len(&self) -> i64 {
        match self {
            Network::Bert(n) => n.max_len(),
            Network::Mpnet(n) => n.max_len(),
        }
    }
}

/// At most this many texts per forward pass…
const MAX_BATCH: usize = 64;
/// …and at most this many (padded) tokens, which bounds the attention maps' memory.
const MAX_BATCH_TOKENS: usize = 8192;

/// A loaded sentence encoder. Usable from several threads; forward passes run one at a time
/// (each already uses all of libtorch's threads).
pub struct SentenceEncoder {
    model: TextModel,
    device: Device,
    tokenizer: Tokenizer,
    tokenizer_path: PathBuf,
    pad_id: i64,
    dim: usize,
    max_tokens: usize,
    network: Mutex<Network>,
}

impl std::fmt::Debug for SentenceEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentenceEncoder")
            .field("model", &self.model)
            .field("device", &self.device)
            .field("dim", &self.dim)
            .field("max_tokens", &self.max_tokens)
            .finish_non_exhaustive()
    }
}

impl SentenceEncoder {
    /// Loads `model` from its folder in the assets cache ([`TextModel::default_dir`]), on the
    /// first CUDA device when there is one, else on the CPU.
    pub fn load_default(model: TextModel) -> Result<Self> {
        Self::load(&model.default_dir(), model, Device::cuda_if_available())
    }

    /// Loads `model` from `dir`, which holds `config.json`, `model.safetensors` and
    /// `tokenizer.json` as the model's publishers ship them.
    pub fn load(dir: &Path, model: TextModel, device: Device) -> Result<Self> {
        if let Device::Cuda(i) = device {
            if !tch::Cuda::is_available() || i as i64 >= tch::Cuda::device_count() {
                return Err(Error::CudaUnavailable(i));
            }
        }
        let name = model.name();
        let file = |file: &str| {
            let path = dir.join(file);
            if path.is_file() {
                Ok(path)
            } else {
                Err(Error::TextModelFile { model: name.into(), path })
            }
        };
        let config_path = file("config.json")?;
        let weights_path = file("model.safetensors")?;
        let tokenizer_path = file("tokenizer.json")?;

        let cfg = Config::read(&config_path, name)?;
        if cfg.model_type != model.model_type() {
            return Err(Error::Architecture {
                path: config_path,
                model: name.into(),
                reason: format!("model_type is `{}`, {name} is a `{}` model", cfg.model_type, model.model_type()),
            });
        }
        let mut weights = Weights::read(&weights_path, name, device)?;
        let network = tch::no_grad(|| match model {
            TextModel::MiniLmL6V2 => Network::Bert(Bert::load(&mut weights, &cfg)),
            TextModel::MpnetBaseV2 => Network::Mpnet(Mpnet::load(&mut weights, &cfg)),
        });
        weights.finish(match model {
            TextModel::MiniLmL6V2 => Bert::unused,
            TextModel::MpnetBaseV2 => Mpnet::unused,
        })?;
        let max_tokens = model.max_tokens().min(network.max_len().max(0) as usize);

        let tokenizer_error = |reason: String| Error::Tokenizer { path: tokenizer_path.clone(), reason };
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path).map_err(|e| tokenizer_error(e.to_string()))?;
        // The file's own settings (truncate and pad to 128) are not sentence-transformers' ones:
        // truncate to the model's max_seq_length, pad per batch here.
        tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: max_tokens,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| tokenizer_error(e.to_string()))?;
        tokenizer.with_padding(None);

        Ok(SentenceEncoder {
            model,
            device,
            tokenizer,
            tokenizer_path,
            pad_id: cfg.pad_token_id,
            dim: cfg.hidden_size as usize,
            max_tokens,
            network: Mutex::new(network),
        })
    }

    pub fn model(&self) -> TextModel {
        self.model
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Length of every embedding.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Longest input in tokens; longer texts are truncated to it.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// The token ids the model sees for `text` (special tokens included, truncated).
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.tokenizer.encode(text, true).map_err(|e| self.tokenizer_error(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// One L2-normalised embedding per text, in order, each [`dim`](Self::dim) long.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings =
            self.tokenizer.encode_batch(texts.to_vec(), true).map_err(|e| self.tokenizer_error(e.to_string()))?;
        let ids: Vec<&[u32]> = encodings.iter().map(|e| e.get_ids()).collect();
        // Longest first, so each batch holds texts of similar length and pads little.
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));

        let network = self.network.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut out = vec![Vec::new(); texts.len()];
        let mut start = 0;
        while start < order.len() {
            let longest = ids[order[start]].len().max(1);
            let n = (MAX_BATCH_TOKENS / longest).clamp(1, MAX_BATCH).min(order.len() - start);
            let batch = &order[start..start + n];
            let seqs: Vec<&[u32]> = batch.iter().map(|&i| ids[i]).collect();
            let embedded = tch::no_grad(|| self.embed_batch(&network, &seqs))?;
            for (&i, row) in batch.iter().zip(embedded.chunks(self.dim)) {
                out[i] = row.to_vec();
            }
            start += n;
        }
        Ok(out)
    }

    /// Embeds token sequences (longest first) as one padded batch; returns the rows concatenated.
    fn embed_batch(&self, network: &Network, seqs: &[&[u32]]) -> Result<Vec<f32>> {
        let (b, len) = (seqs.len(), seqs.iter().map(|s| s.len()).max().unwrap_or(0).max(1));
        let mut ids = vec![self.pad_id; b * len];
        let mut mask = vec![0i64; b * len];
        for (row, seq) in seqs.iter().enumerate() {
            for (col, &id) in seq.iter().enumerate() {
                ids[row * len + col] = i64::from(id);
                mask[row * len + col] = 1;
            }
        }
        let shape = [b as i64, len as i64];
        let ids = Tensor::from_slice(&ids).view(shape).to_device(self.device);
        let mask = Tensor::from_slice(&mask).view(shape).to_device(self.device);
        let hidden = network.forward(&ids, &mask);

        // Mean over the real tokens, then L2 normalisation (sentence-transformers' Pooling with
        // pooling_mode_mean_tokens, then Normalize).
        let m = mask.to_kind(Kind::Float).unsqueeze(-1);
        let sum = (hidden * &m).sum_dim_intlist(1, false, Kind::Float);
        let count = m.sum_dim_intlist(1, false, Kind::Float).clamp_min(1e-9);
        let mean = sum / count;
        let norm = mean.norm_scalaropt_dim(2, 1, true).clamp_min(1e-12);
        let unit = (mean / norm).to_device(Device::Cpu).contiguous().view(-1);
        Ok(Vec::<f32>::try_from(&unit)?)
    }

    fn tokenizer_error(&self, reason: String) -> Error {
        Error::Tokenizer { path: self.tokenizer_path.clone(), reason }
    }
}

impl TextEncoder for SentenceEncoder {
    fn info(&self) -> ComponentInfo {
        match self.model {
            TextModel::MpnetBaseV2 => ComponentInfo::paper_kind(Role::TextEncoder, "all-mpnet-base-v2"),
            TextModel::MiniLmL6V2 => ComponentInfo::substitute(
                Role::TextEncoder,
                "all-MiniLM-L6-v2",
                "a smaller sentence-transformers model (6 layers, 384 dimensions) standing in for \
                 all-mpnet-base-v2 / the CLIP text encoder; its similarities are close to, not the \
                 same as, the paper's",
            ),
        }
    }

    fn embed(&self, texts: &[&str]) -> ProviderResult<Vec<Vec<f32>>> {
        SentenceEncoder::embed(self, texts)
            .map_err(|e| ProviderError::Local { component: self.model.name().into(), reason: e.to_string() })
    }

    fn duplicate_cosine(&self) -> f32 {
        self.model.duplicate_cosine()
    }
}

#[cfg(test)]
mod tests {
    use super::mpnet::relative_buckets;
    use tch::{Device, Kind, Tensor};

    /// MPNet's relative-position buckets against the Hugging Face implementation
    /// (transformers 5.24 `MPNetEncoder.relative_position_bucket`, 32 buckets, max distance 128,
    /// torch 2.13 CPU): query 0 / key at +d, and query at +d / key 0, around the log-spaced
    /// borders (8, 16, 32, 64, 128), plus two checksums of the whole 400×400 table.
    #[test]
    fn mpnet_relative_buckets_match_reference() {
        let b = relative_buckets(400, 32, 128, Device::Cpu);
        assert_eq!(b.size(), vec![400, 400]);
        let dists =
            [0i64, 1, 7, 8, 9, 11, 12, 15, 16, 17, 22, 23, 31, 32, 33, 45, 46, 63, 64, 65, 90, 91, 127, 128, 129, 399];
        let after: Vec<i64> = dists.iter().map(|&d| b.int64_value(&[0, d])).collect();
        let before: Vec<i64> = dists.iter().map(|&d| b.int64_value(&[d, 0])).collect();
        let reference_after =
            [0, 17, 23, 24, 24, 24, 25, 25, 26, 26, 26, 27, 27, 28, 28, 28, 29, 29, 30, 30, 30, 31, 31, 31, 31, 31];
        let reference_before =
            [0, 1, 7, 8, 8, 8, 9, 9, 10, 10, 10, 11, 11, 12, 12, 12, 13, 13, 14, 14, 14, 15, 15, 15, 15, 15];
        assert_eq!(after, reference_after, "query 0, key at +distance");
        assert_eq!(before, reference_before, "key 0, query at +distance");
        let weights = Tensor::arange(400 * 400, (Kind::Int64, Device::Cpu)).view([400, 400]).remainder(1000);
        assert_eq!(b.sum(Kind::Int64).int64_value(&[]), 3_443_130);
        assert_eq!((&b * weights).sum(Kind::Int64).int64_value(&[]), 1_739_896_235);
    }
}
