//! MPNet encoder (all-mpnet-base-v2): word + absolute position embeddings (positions counted from
//! `padding_idx + 1`, padding keeps `padding_idx`), LayerNorm, then post-LN transformer layers whose
//! attention scores get a relative position bias. The bias table (`encoder.relative_attention_bias`,
//! `[buckets, heads]`) is shared by all layers; distances go into 32 buckets, half per direction:
//! exact below 8, log-spaced up to a maximum distance of 128.

use super::layers::{padding_bias, Config, LayerNames, LayerNorm, TransformerLayer, Weights};
use tch::{Device, Kind, Tensor};

const NAMES: LayerNames = LayerNames {
    query: "attention.attn.q",
    key: "attention.attn.k",
    value: "attention.attn.v",
    attn_out: "attention.attn.o",
    attn_norm: "attention.LayerNorm",
    ffn_in: "intermediate.dense",
    ffn_out: "output.dense",
    ffn_norm: "output.LayerNorm",
};

/// Distances at or beyond this share the last (log-spaced) bucket of their direction.
const MAX_DISTANCE: i64 = 128;

pub(crate) struct Mpnet {
    word: Tensor,
    position: Tensor,
    norm: LayerNorm,
    layers: Vec<TransformerLayer>,
    /// `[buckets, heads]`.
    relative_bias: Tensor,
    buckets: i64,
    padding_idx: i64,
}

impl Mpnet {
    pub fn load(w: &mut Weights, cfg: &Config) -> Self {
        let h = cfg.hidden_size;
        let word = w.take("embeddings.word_embeddings.weight", &[cfg.vocab_size, h]);
        let position = w.take("embeddings.position_embeddings.weight", &[cfg.max_position_embeddings, h]);
        let norm = LayerNorm::load(w, "embeddings.LayerNorm", h, cfg.layer_norm_eps);
        let buckets = cfg.relative_attention_num_buckets;
        let relative_bias = w.take("encoder.relative_attention_bias.weight", &[buckets, cfg.num_attention_heads]);
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| TransformerLayer::load(w, &format!("encoder.layer.{i}"), &NAMES, cfg))
            .collect();
        Mpnet { word, position, norm, layers, relative_bias, buckets, padding_idx: cfg.pad_token_id }
    }

    /// Tensors of the checkpoint that sentence embeddings do not use.
    pub fn unused(name: &str) -> bool {
        name == "embeddings.position_ids" || name.starts_with("pooler.")
    }

    /// The longest input the position table allows (positions start after `padding_idx`).
    pub fn max_len(&self) -> i64 {
        self.position.size()[0] - self.padding_idx - 1
    }

    /// `ids`, `mask`: `[batch, len]` Int64. Returns the last hidden states `[batch, len, hidden]`.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Tensor {
        let len = ids.size()[1];
        let real = ids.ne(self.padding_idx).to_kind(Kind::Int64);
        let positions = real.cumsum(1, Kind::Int64) * &real + self.padding_idx;
        let x = Tensor::embedding(&self.word, ids, -1, false, false)
            + Tensor::embedding(&self.position, &positions, -1, false, false);
        let mut x = self.norm.forward(&x);
        let buckets = relative_buckets(len, self.buckets, MAX_DISTANCE, ids.device());
        // [len, len, heads] -> [1, heads, len, len]
        let position_bias =
            Tensor::embedding(&self.relative_bias, &buckets, -1, false, false).permute([2, 0, 1]).unsqueeze(0);
        let bias = position_bias + padding_bias(mask);
        for layer in &self.layers {
            x = layer.forward(&x, &bias);
        }
        x
    }
}

/// Bucket of every (query i, key j) pair, `[len, len]` Int64, from the signed distance `j - i`.
/// Keys before the query use buckets `0..half`, keys after it `half..2*half`; within a direction
/// distances below `half / 2` get their own bucket and larger ones share log-spaced buckets up to
/// `max_distance`. Computed with the same F32 tensor ops as the reference implementation, so the
/// bucket borders (e.g. at distance 16, where the log ratio is exactly 2) fall on the same side.
pub(crate) fn relative_buckets(len: i64, num_buckets: i64, max_distance: i64, device: Device) -> Tensor {
    let pos = Tensor::arange(len, (Kind::Int64, device));
    // n = i - j: positive when the key lies before the query.
    let n = pos.unsqueeze(1) - pos.unsqueeze(0);
    let half = num_buckets / 2;
    let direction = n.lt(0).to_kind(Kind::Int64) * half;
    let n = n.abs();
    let max_exact = half / 2;
    let scale = ((max_distance as f64) / (max_exact as f64)).ln();
    // (Clamped at 1 only to keep log(0) out; those distances take the exact branch.)
    let log_spaced = ((n.clamp_min(1).to_kind(Kind::Float) / max_exact as f64).log() / scale
        * (half - max_exact) as f64)
        .to_kind(Kind::Int64)
        + max_exact;
    let log_spaced = log_spaced.clamp_max(half - 1);
    direction + n.where_self(&n.lt(max_exact), &log_spaced)
}
