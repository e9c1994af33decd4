//! The pieces both encoders share: named weight loading with shape checks, the model config, and
//! the post-LayerNorm transformer layer (self-attention, then a GELU feed-forward block).

use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// The fields of a Hugging Face `config.json` that the encoders need.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Config {
    pub model_type: String,
    pub hidden_size: i64,
    pub num_hidden_layers: usize,
    pub num_attention_heads: i64,
    pub intermediate_size: i64,
    pub layer_norm_eps: f64,
    pub max_position_embeddings: i64,
    pub vocab_size: i64,
    pub hidden_act: String,
    #[serde(default)]
    pub pad_token_id: i64,
    /// BERT only.
    #[serde(default)]
    pub type_vocab_size: i64,
    /// MPNet only.
    #[serde(default)]
    pub relative_attention_num_buckets: i64,
}

impl Config {
    pub fn read(path: &Path, model: &str) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        let cfg: Config = serde_json::from_str(&text).map_err(|e| Error::Architecture {
            path: path.to_path_buf(),
            model: model.into(),
            reason: format!("cannot parse config.json: {e}"),
        })?;
        let bad = |reason: String| Error::Architecture { path: path.to_path_buf(), model: model.into(), reason };
        if cfg.hidden_act != "gelu" {
            return Err(bad(format!("hidden_act is `{}`, only `gelu` is implemented", cfg.hidden_act)));
        }
        if cfg.num_attention_heads <= 0 || cfg.hidden_size % cfg.num_attention_heads != 0 {
            return Err(bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                cfg.hidden_size, cfg.num_attention_heads
            )));
        }
        Ok(cfg)
    }
}

/// Tensors of a safetensors file, taken out by name. Missing names and wrong shapes are collected
/// (a zero placeholder stands in) so that [`Weights::finish`] can report all of them at once.
pub(crate) struct Weights {
    path: PathBuf,
    model: String,
    device: Device,
    tensors: HashMap<String, Tensor>,
    missing: Vec<String>,
    wrong_shape: Option<(String, Vec<i64>, Vec<i64>)>,
}

impl Weights {
    pub fn read(path: &Path, model: &str, device: Device) -> Result<Self> {
        let tensors = Tensor::read_safetensors(path)?.into_iter().collect();
        Ok(Weights {
            path: path.to_path_buf(),
            model: model.into(),
            device,
            tensors,
            missing: Vec::new(),
            wrong_shape: None,
        })
    }

    /// The tensor `name`, which must have `shape`, as F32 on the target device.
    pub fn take(&mut self, name: &str, shape: &[i64]) -> Tensor {
        match self.tensors.remove(name) {
            Some(t) if t.size() == shape => t.to_kind(Kind::Float).to_device(self.device),
            Some(t) => {
                if self.wrong_shape.is_none() {
                    self.wrong_shape = Some((name.to_string(), shape.to_vec(), t.size()));
                }
                Tensor::zeros(shape, (Kind::Float, self.device))
            }
            None => {
                self.missing.push(name.to_string());
                Tensor::zeros(shape, (Kind::Float, self.device))
            }
        }
    }

    /// Fails if any tensor was missing or misshapen, or if the file holds tensors the model does
    /// not use (other than those `ignore` accepts, such as BERT's unused pooler).
    pub fn finish(self, ignore: impl Fn(&str) -> bool) -> Result<()> {
        let mut unexpected: Vec<String> = self.tensors.into_keys().filter(|k| !ignore(k)).collect();
        unexpected.sort();
        if !self.missing.is_empty() || !unexpected.is_empty() {
            return Err(Error::WeightsMismatch {
                path: self.path,
                model: self.model,
                missing: self.missing,
                unexpected,
            });
        }
        if let Some((name, expected, actual)) = self.wrong_shape {
            return Err(Error::WeightShape { path: self.path, model: self.model, name, expected, actual });
        }
        Ok(())
    }
}

/// `x W^T + b`.
pub(crate) struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    pub fn load(w: &mut Weights, prefix: &str, input: i64, output: i64) -> Self {
        Linear {
            weight: w.take(&format!("{prefix}.weight"), &[output, input]),
            bias: w.take(&format!("{prefix}.bias"), &[output]),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, Some(&self.bias))
    }

    /// One layer computing all of `parts` (same input size) side by side: `[a; b; c]`.
    pub fn concat(parts: &[Linear]) -> Linear {
        let ws: Vec<&Tensor> = parts.iter().map(|l| &l.weight).collect();
        let bs: Vec<&Tensor> = parts.iter().map(|l| &l.bias).collect();
        Linear { weight: Tensor::cat(&ws, 0), bias: Tensor::cat(&bs, 0) }
    }
}

pub(crate) struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
    size: i64,
}

impl LayerNorm {
    pub fn load(w: &mut Weights, prefix: &str, size: i64, eps: f64) -> Self {
        LayerNorm {
            weight: w.take(&format!("{prefix}.weight"), &[size]),
            bias: w.take(&format!("{prefix}.bias"), &[size]),
            eps,
            size,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.layer_norm([self.size], Some(&self.weight), Some(&self.bias), self.eps, false)
    }
}

/// Tensor names of one transformer layer, relative to its prefix (they differ between BERT and
/// MPNet checkpoints; the computation does not).
pub(crate) struct LayerNames {
    pub query: &'static str,
    pub key: &'static str,
    pub value: &'static str,
    pub attn_out: &'static str,
    pub attn_norm: &'static str,
    pub ffn_in: &'static str,
    pub ffn_out: &'static str,
    pub ffn_norm: &'static str,
}

/// One post-LN encoder layer: `h = LN(x + Attn(x)); out = LN(h + W2 GELU(W1 h))`.
pub(crate) struct TransformerLayer {
    /// Query, key and value projections fused into one matmul.
    qkv: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    ffn_in: Linear,
    ffn_out: Linear,
    ffn_norm: LayerNorm,
    heads: i64,
    hidden: i64,
}

impl TransformerLayer {
    pub fn load(w: &mut Weights, prefix: &str, names: &LayerNames, cfg: &Config) -> Self {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let proj = |w: &mut Weights, name: &str| Linear::load(w, &format!("{prefix}.{name}"), h, h);
        let q = proj(w, names.query);
        let k = proj(w, names.key);
        let v = proj(w, names.value);
        TransformerLayer {
            qkv: Linear::concat(&[q, k, v]),
            attn_out: proj(w, names.attn_out),
            attn_norm: LayerNorm::load(w, &format!("{prefix}.{}", names.attn_norm), h, cfg.layer_norm_eps),
            ffn_in: Linear::load(w, &format!("{prefix}.{}", names.ffn_in), h, i),
            ffn_out: Linear::load(w, &format!("{prefix}.{}", names.ffn_out), i, h),
            ffn_norm: LayerNorm::load(w, &format!("{prefix}.{}", names.ffn_norm), h, cfg.layer_norm_eps),
            heads: cfg.num_attention_heads,
            hidden: h,
        }
    }

    /// `x`: `[batch, len, hidden]`. `bias`: added to the attention scores, broadcastable to
    /// `[batch, heads, len, len]` (padding mask, plus MPNet's relative position bias).
    pub fn forward(&self, x: &Tensor, bias: &Tensor) -> Tensor {
        let (b, l) = (x.size()[0], x.size()[1]);
        let d = self.hidden / self.heads;
        let qkv = self.qkv.forward(x).view([b, l, 3, self.heads, d]).permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        let ctx = Tensor::scaled_dot_product_attention(&q, &k, &v, Some(bias), 0.0, false, None, false);
        let ctx = ctx.transpose(1, 2).reshape([b, l, self.hidden]);
        let h = self.attn_norm.forward(&(self.attn_out.forward(&ctx) + x));
        let f = self.ffn_out.forward(&self.ffn_in.forward(&h).gelu("none"));
        self.ffn_norm.forward(&(f + h))
    }
}

/// Additive attention mask `[batch, 1, 1, len]`: 0 for tokens, a very large negative number for
/// padding (as Hugging Face does, rather than -inf, so no row can turn into NaN).
pub(crate) fn padding_bias(attention_mask: &Tensor) -> Tensor {
    let m = attention_mask.to_kind(Kind::Float);
    ((m - 1.0) * f64::from(f32::MAX)).unsqueeze(1).unsqueeze(1)
}
