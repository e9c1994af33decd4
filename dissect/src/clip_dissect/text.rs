//! CLIP's text side: a HF `tokenizer.json` turned into CLIP's fixed 77-token input, and the
//! TorchScript's `encode_text` method.
//!
//! As OpenAI's `clip.tokenize`: `<|startoftext|>`, the text's tokens (cut after 75 of them),
//! `<|endoftext|>`, then zeros up to 77, as int64. OpenAI's JIT `encode_text` takes the feature at
//! `text.argmax(-1)` as the sentence embedding, i.e. it relies on `<|endoftext|>` having the
//! largest id of the vocabulary; the tokenizer is refused when it does not.

use super::ClipDissectError;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tch::{CModule, Device, IValue, Kind, Tensor};
use tokenizers::Tokenizer;

/// CLIP's context length (start and end tokens included).
pub const CONTEXT_LENGTH: usize = 77;
pub const START_TOKEN: &str = "<|startoftext|>";
pub const END_TOKEN: &str = "<|endoftext|>";

/// A CLIP tokenizer read from a HF `tokenizer.json` (any model type: BPE for real CLIP).
pub struct ClipTokenizer {
    tokenizer: Tokenizer,
    start: i64,
    end: i64,
}

impl ClipTokenizer {
    pub fn from_file(path: &Path) -> Result<Self, ClipDissectError> {
        let bad = |reason: String| ClipDissectError::Tokenizer { path: path.to_path_buf(), reason };
        let mut tokenizer = Tokenizer::from_file(path).map_err(|e| bad(e.to_string()))?;
        // Padding and truncation are CLIP's own here (HF's CLIP pads with <|endoftext|>, which
        // would move the argmax).
        tokenizer.with_padding(None);
        tokenizer.with_truncation(None).map_err(|e| bad(e.to_string()))?;
        let id = |token: &str| {
            tokenizer.token_to_id(token).map(i64::from).ok_or_else(|| bad(format!("it has no `{token}` token")))
        };
        let (start, end) = (id(START_TOKEN)?, id(END_TOKEN)?);
        let largest = tokenizer.get_vocab(true).into_values().max().unwrap_or(0) as i64;
        if end != largest {
            return Err(bad(format!(
                "`{END_TOKEN}` has id {end} but the largest id is {largest}; CLIP's encode_text finds the end of \
                 each text as its largest token id, so this is not CLIP's tokenizer"
            )));
        }
        Ok(ClipTokenizer { tokenizer, start, end })
    }

    /// Token ids of one text in CLIP's layout (77 ids).
    pub fn tokens(&self, text: &str) -> Result<Vec<i64>, ClipDissectError> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| ClipDissectError::Input(format!("cannot tokenize `{text}`: {e}")))?;
        let mut ids = Vec::with_capacity(CONTEXT_LENGTH);
        ids.push(self.start);
        ids.extend(enc.get_ids().iter().take(CONTEXT_LENGTH - 2).map(|&i| i64::from(i)));
        ids.push(self.end);
        ids.resize(CONTEXT_LENGTH, 0);
        Ok(ids)
    }

    /// `texts.len() × 77` int64 tensor.
    pub fn batch(&self, texts: &[&str]) -> Result<Tensor, ClipDissectError> {
        let mut all = Vec::with_capacity(texts.len() * CONTEXT_LENGTH);
        for t in texts {
            all.extend(self.tokens(t)?);
        }
        Ok(Tensor::from_slice(&all).view([texts.len() as i64, CONTEXT_LENGTH as i64]))
    }
}

/// Texts per `encode_text` call.
pub const TEXT_BATCH: usize = 256;

/// CLIP's text encoder: the TorchScript's `encode_text` with [`ClipTokenizer`].
pub struct ClipTextEncoder {
    module: Mutex<CModule>,
    tokenizer: ClipTokenizer,
    path: PathBuf,
    device: Device,
}

impl ClipTextEncoder {
    pub fn load(torchscript: &Path, tokenizer: &Path, device: Device) -> Result<Self, ClipDissectError> {
        let tokenizer = ClipTokenizer::from_file(tokenizer)?;
        let module = CModule::load_on_device(torchscript, device)
            .map_err(|e| ClipDissectError::Clip { path: torchscript.to_path_buf(), reason: e.to_string() })?;
        let enc = ClipTextEncoder { module: Mutex::new(module), tokenizer, path: torchscript.to_path_buf(), device };
        // Fail at load, with the reason, rather than after the first batch.
        let _ = enc.run(&["a"])?;
        Ok(enc)
    }

    fn run(&self, texts: &[&str]) -> Result<Tensor, ClipDissectError> {
        let err = |reason: String| ClipDissectError::Clip { path: self.path.clone(), reason };
        let tokens = self.tokenizer.batch(texts)?.to_device(self.device);
        let module = self.module.lock().unwrap_or_else(|p| p.into_inner());
        let out = tch::no_grad(|| module.method_is("encode_text", &[IValue::Tensor(tokens)])).map_err(|e| {
            err(format!("its encode_text method failed (a CLIP TorchScript needs encode_text(int64 N×77)): {e}"))
        })?;
        let IValue::Tensor(emb) = out else { return Err(err("encode_text did not return a tensor".into())) };
        if emb.dim() != 2 || emb.size()[0] != texts.len() as i64 {
            return Err(err(format!(
                "encode_text returned shape {:?} for {} texts, expected N×D",
                emb.size(),
                texts.len()
            )));
        }
        let emb = emb.to_device(Device::Cpu).to_kind(Kind::Float);
        Ok(&emb / emb.norm_scalaropt_dim(2, &[1i64][..], true).clamp_min(1e-12))
    }

    /// L2-normalised embeddings of `texts`, batched; `progress(done, total)` after each batch.
    pub fn encode(&self, texts: &[&str], progress: &mut dyn FnMut(usize, usize)) -> Result<Tensor, ClipDissectError> {
        let mut parts = Vec::new();
        let mut done = 0;
        for chunk in texts.chunks(TEXT_BATCH) {
            parts.push(self.run(chunk)?);
            done += chunk.len();
            progress(done, texts.len());
        }
        if parts.is_empty() {
            return Err(ClipDissectError::Input("no texts to encode".into()));
        }
        Ok(Tensor::cat(&parts, 0))
    }
}

/// CLIP's text encoder as the pipeline's text encoder (retrieval and top-3 dedup) when CLIP is
/// configured: the paper's own choice for the top-3, with its threshold.
impl crate::concepts::TextEncoder for ClipTextEncoder {
    fn info(&self) -> crate::concepts::ComponentInfo {
        crate::concepts::ComponentInfo::paper_kind(
            crate::concepts::Role::TextEncoder,
            format!("CLIP text encoder ({})", self.path.display()),
        )
    }

    fn embed(&self, texts: &[&str]) -> crate::concepts::ProviderResult<Vec<Vec<f32>>> {
        let err = |e: ClipDissectError| crate::concepts::ProviderError::Local {
            component: "CLIP text encoder".into(),
            reason: e.to_string(),
        };
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let t = self.encode(texts, &mut |_, _| {}).map_err(err)?;
        let dim = t.size()[1] as usize;
        let flat =
            Vec::<f32>::try_from(t.contiguous().view([-1])).map_err(|e| err(ClipDissectError::Input(e.to_string())))?;
        Ok(flat.chunks(dim).map(<[f32]>::to_vec).collect())
    }

    fn duplicate_cosine(&self) -> f32 {
        crate::concepts::scoring::CLIP_DUPLICATE_LABEL_COSINE
    }
}
