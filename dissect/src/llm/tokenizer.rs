//! The chat model's tokenizer, rebuilt from the GGUF metadata (`tokenizer.ggml.*`) as a
//! `tokenizers` byte-level BPE, and the ChatML layout the instruct models were trained on.
//!
//! The tokenizer is described in the `tokenizer.json` format and parsed by `Tokenizer::from_bytes`,
//! the format HF publishes with these models, rather than assembled through the builder API: the
//! JSON schema is stable across `tokenizers` releases, the builder signatures are not.

use super::model::{md_string, md_usize};
use candle_core::quantized::gguf_file::{Content, Value};
use serde_json::{json, Map};

/// Qwen2's pre-tokenizer split (its `tokenizer.json`): contractions, letter runs with one leading
/// non-letter, single digits, punctuation runs, newlines, other whitespace.
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_CONTROL: usize = 3;
const TOKEN_USER_DEFINED: usize = 4;

/// A tokenizer plus the ids of the ChatML markers and of the tokens that end an answer.
pub struct ChatTokenizer {
    inner: tokenizers::Tokenizer,
    im_start: u32,
    im_end: u32,
    stops: Vec<u32>,
    bos: Option<u32>,
}

fn strings(ct: &Content, key: &str) -> Result<Vec<String>, String> {
    match ct.metadata.get(key) {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!("`{key}` holds a non-string: {other:?}")),
            })
            .collect(),
        Some(other) => Err(format!("`{key}` is not an array: {:?}", other.value_type())),
        None => Err(format!("metadata key `{key}` is missing")),
    }
}

fn token_types(ct: &Content, n: usize) -> Result<Vec<usize>, String> {
    let Some(v) = ct.metadata.get("tokenizer.ggml.token_type") else {
        return Ok(vec![1; n]);
    };
    let Value::Array(items) = v else {
        return Err("`tokenizer.ggml.token_type` is not an array".into());
    };
    if items.len() != n {
        return Err(format!("{} token types for {n} tokens", items.len()));
    }
    items
        .iter()
        .map(|v| match v {
            Value::I32(t) => Ok(*t as usize),
            Value::U32(t) => Ok(*t as usize),
            Value::I8(t) => Ok(*t as usize),
            Value::U8(t) => Ok(*t as usize),
            other => Err(format!("token type {other:?} is not an integer")),
        })
        .collect()
}

impl ChatTokenizer {
    /// Builds the tokenizer; `Err` says which metadata is missing or unsupported.
    pub fn from_gguf(ct: &Content) -> Result<Self, String> {
        let model = md_string(ct, "tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(format!("tokenizer model `{model}` is not supported (only byte-level BPE, `gpt2`)"));
        }
        let pre = md_string(ct, "tokenizer.ggml.pre").unwrap_or("default");
        let (normalizer, pre_tokenizer) = match pre {
            "qwen2" => (
                json!({"type": "NFC"}),
                json!({"type": "Sequence", "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": false},
                    {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
                ]}),
            ),
            // SmolLM / GPT-2 style: digits one by one, then GPT-2's own split regex.
            "smollm" | "gpt2" | "default" => (
                serde_json::Value::Null,
                json!({"type": "Sequence", "pretokenizers": [
                    {"type": "Digits", "individual_digits": pre == "smollm"},
                    {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
                ]}),
            ),
            other => return Err(format!("pre-tokenizer `{other}` is not supported (qwen2, smollm, gpt2)")),
        };

        let tokens = strings(ct, "tokenizer.ggml.tokens")?;
        let merges = strings(ct, "tokenizer.ggml.merges")?;
        let types = token_types(ct, tokens.len())?;
        let mut vocab = Map::with_capacity(tokens.len());
        let mut added = Vec::new();
        for (id, (tok, &ty)) in tokens.iter().zip(&types).enumerate() {
            vocab.insert(tok.clone(), json!(id));
            if ty == TOKEN_CONTROL || ty == TOKEN_USER_DEFINED {
                added.push(json!({
                    "id": id, "content": tok, "single_word": false, "lstrip": false, "rstrip": false,
                    "normalized": false, "special": ty == TOKEN_CONTROL,
                }));
            }
        }
        let spec = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": normalizer,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
            "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": merges,
            },
        });
        let bytes = serde_json::to_vec(&spec).map_err(|e| e.to_string())?;
        let inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| format!("cannot build the tokenizer: {e}"))?;

        let id = |tok: &str| {
            inner.token_to_id(tok).ok_or_else(|| format!("token `{tok}` is not in the vocabulary: not a ChatML model"))
        };
        let (im_start, im_end) = (id("<|im_start|>")?, id("<|im_end|>")?);
        let mut stops = vec![im_end];
        let eos = md_usize(ct, "tokenizer.ggml.eos_token_id").ok().map(|e| e as u32);
        stops.extend(eos);
        stops.extend(inner.token_to_id("<|endoftext|>"));
        stops.sort_unstable();
        stops.dedup();
        let bos = md_usize(ct, "tokenizer.ggml.bos_token_id").ok().map(|b| b as u32);
        let add_bos = matches!(ct.metadata.get("tokenizer.ggml.add_bos_token"), Some(Value::Bool(true)));
        Ok(ChatTokenizer { inner, im_start, im_end, stops, bos: bos.filter(|_| add_bos) })
    }

    /// Token ids of plain text. ChatML markers written in the text are recognised as such.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        self.inner.encode_fast(text, false).map(|e| e.get_ids().to_vec()).map_err(|e| e.to_string())
    }

    /// Text of `ids`, without special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String, String> {
        self.inner.decode(ids, true).map_err(|e| e.to_string())
    }

    /// Whether generation ends at this token.
    pub fn is_stop(&self, id: u32) -> bool {
        self.stops.contains(&id)
    }

    /// Tokens the prompt starts with (BOS, for models that want one).
    pub fn prompt_start(&self) -> Vec<u32> {
        self.bos.into_iter().collect()
    }

    /// `<|im_start|>{role}\n{content}<|im_end|>\n`, tokenized the way HF's template output is:
    /// the text between markers on its own.
    pub fn message(&self, role: &str, content: &str) -> Result<Vec<u32>, String> {
        let mut ids = vec![self.im_start];
        ids.extend(self.encode(&format!("{role}\n{content}"))?);
        ids.push(self.im_end);
        ids.extend(self.encode("\n")?);
        Ok(ids)
    }

    /// `<|im_start|>assistant\n`: the answer starts after it.
    pub fn answer_header(&self) -> Result<Vec<u32>, String> {
        let mut ids = vec![self.im_start];
        ids.extend(self.encode("assistant\n")?);
        Ok(ids)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
