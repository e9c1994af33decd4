//! BERT encoder (all-MiniLM-L6-v2): word + absolute position + token-type embeddings, LayerNorm,
//! then post-LN transformer layers with GELU feed-forward blocks.

use super::layers::{padding_bias, Config, LayerNames, LayerNorm, TransformerLayer, Weights};
use tch::{Kind, Tensor};

const NAMES: LayerNames = LayerNames {
    query: "attention.self.query",
    key: "attention.self.key",
    value: "attention.self.value",
    attn_out: "attention.output.dense",
    attn_norm: "attention.output.LayerNorm",
    ffn_in: "intermediate.dense",
    ffn_out: "output.dense",
    ffn_norm: "output.LayerNorm",
};

pub(crate) struct Bert {
    word: Tensor,
    /// Position embeddings with the (single-sentence) token type 0 embedding already added.
    position_and_type: Tensor,
    norm: LayerNorm,
    layers: Vec<TransformerLayer>,
}

impl Bert {
    pub fn load(w: &mut Weights, cfg: &Config) -> Self {
        let h = cfg.hidden_size;
        let word = w.take("embeddings.word_embeddings.weight", &[cfg.vocab_size, h]);
        let position = w.take("embeddings.position_embeddings.weight", &[cfg.max_position_embeddings, h]);
        let types = w.take("embeddings.token_type_embeddings.weight", &[cfg.type_vocab_size.max(1), h]);
        let norm = LayerNorm::load(w, "embeddings.LayerNorm", h, cfg.layer_norm_eps);
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| TransformerLayer::load(w, &format!("encoder.layer.{i}"), &NAMES, cfg))
            .collect();
        Bert { word, position_and_type: position + types.get(0), norm, layers }
    }

    /// Tensors of the checkpoint that sentence embeddings do not use.
    pub fn unused(name: &str) -> bool {
        name == "embeddings.position_ids" || name.starts_with("pooler.")
    }

    /// The longest input the position table allows.
    pub fn max_len(&self) -> i64 {
        self.position_and_type.size()[0]
    }

    /// `ids`, `mask`: `[batch, len]` Int64. Returns the last hidden states `[batch, len, hidden]`.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Tensor {
        let len = ids.size()[1];
        let x = Tensor::embedding(&self.word, ids, -1, false, false) + self.position_and_type.narrow(0, 0, len);
        let mut x = self.norm.forward(&x);
        let bias = padding_bias(mask).to_kind(Kind::Float);
        for layer in &self.layers {
            x = layer.forward(&x, &bias);
        }
        x
    }
}
