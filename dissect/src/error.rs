//! The engine's error type. Every message names the problem and, where it helps, what would be
//! valid instead, because these errors reach users of the CLI and the web UI verbatim.

use std::path::PathBuf;

/// Input quoted in an error message: control characters and quotes escaped, and at most
/// `max_chars` characters *after* escaping (a run of control characters grows tenfold), cut
/// with "…". A pasted file must never come back whole in a message.
pub fn excerpt(input: &str, max_chars: usize) -> String {
    let mut shown = String::new();
    let mut len = 0;
    for c in input.chars() {
        let escaped = c.escape_debug();
        let width = escaped.len();
        if len + width > max_chars {
            shown.push('…');
            break;
        }
        shown.extend(escaped);
        len += width;
    }
    shown
}

/// Errors raised by the dissection engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("unknown layer `{name}` for model `{model}`; valid layers: {}", valid.join(", "))]
    UnknownLayer { model: String, name: String, valid: Vec<String> },

    #[error("layer index {index} is out of range: model `{model}` has {count} layers")]
    LayerIndex { model: String, index: usize, count: usize },

    #[error(
        "weights file {} not found; run `scripts/setup.sh` (or `python3 scripts/fetch_assets.py`) to create it",
        path.display()
    )]
    WeightsNotFound { path: PathBuf },

    #[error(
        "weights file {} does not match {model}: missing tensors [{}]; unexpected tensors [{}]",
        path.display(), missing.join(", "), unexpected.join(", ")
    )]
    WeightsMismatch { path: PathBuf, model: String, missing: Vec<String>, unexpected: Vec<String> },

    #[error(
        "weights file {}: tensor `{name}` has shape {actual:?}, {model} expects {expected:?}",
        path.display()
    )]
    WeightShape { path: PathBuf, model: String, name: String, expected: Vec<i64>, actual: Vec<i64> },

    #[error("weights file {} does not describe {model}: {reason}", path.display())]
    Architecture { path: PathBuf, model: String, reason: String },

    #[error("input batch for model `{model}` must be a float N×3×H×W tensor, got {kind} {shape:?}")]
    InputShape { model: String, shape: Vec<i64>, kind: String },

    #[error("CUDA device {0} was requested but CUDA is not available in this libtorch build/machine")]
    CudaUnavailable(usize),

    #[error("cannot read image {}: {reason}", path.display())]
    Image { path: PathBuf, reason: String },

    #[error("cannot make a batch from zero images")]
    EmptyBatch,

    #[error("model manifest {}: {reason}", path.display())]
    Manifest { path: PathBuf, reason: String },

    #[error(
        "no manifest found for model {}; looked for {}. Write one (see tools/README.md) or give its path",
        model.display(), tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    ManifestNotFound { model: PathBuf, tried: Vec<PathBuf> },

    #[error(
        "{} is not a TorchScript archive: {reason}. Export the model with tools/export_torchscript.py \
         (torch.jit.trace or torch.jit.script, then .save()), not with torch.save()",
        path.display()
    )]
    NotTorchScript { path: PathBuf, reason: String },

    #[error("cannot load TorchScript model {}: {reason}", path.display())]
    TorchScriptLoad { path: PathBuf, reason: String },

    #[error("TorchScript model {} does not match its manifest {}: {reason}", model.display(), manifest.display())]
    ManifestMismatch { model: PathBuf, manifest: PathBuf, reason: String },

    #[error("TorchScript model `{model}` returned outputs that do not match its manifest: {reason}")]
    TorchScriptRun { model: String, reason: String },

    #[error(
        "text encoder {model}: {} not found; run `scripts/setup.sh` (or `python3 scripts/fetch_assets.py`) to create it",
        path.display()
    )]
    TextModelFile { model: String, path: PathBuf },

    #[error("tokenizer {}: {reason}", path.display())]
    Tokenizer { path: PathBuf, reason: String },

    #[error(
        "{} is not a GGUF file ({reason}); the in-process chat model needs a llama.cpp GGUF such as \
         the one `scripts/fetch_assets.py` installs",
        path.display()
    )]
    NotGguf { path: PathBuf, reason: String },

    #[error("cannot load the language model {}: {reason}", path.display())]
    LanguageModel { path: PathBuf, reason: String },

    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A concept-pipeline component (captioner, LLM, image source, encoder) failed.
    #[error("{0}")]
    Provider(String),

    #[error("libtorch error: {0}")]
    Torch(#[from] tch::TchError),
}

/// Result alias for the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    #[test]
    fn excerpts_are_bounded_after_escaping() {
        assert_eq!(super::excerpt("conv1", 10), "conv1");
        assert_eq!(super::excerpt("abcdefghijkl", 10), "abcdefghij…");
        assert_eq!(super::excerpt("a\"b", 10), "a\\\"b");
        let controls = "\u{19}".repeat(100);
        let shown = super::excerpt(&controls, 40);
        assert!(shown.chars().count() <= 41 && shown.ends_with('…'), "{shown}");
        assert_eq!(super::excerpt("日本語のテキスト", 3), "日本語…");
    }
}
