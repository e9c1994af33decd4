//! Errors of activation recording. Kept apart from [`crate::Error`] because cancellation and
//! cache trouble are outcomes of a *run*, not of a model or an image; engine errors pass through.

use std::path::PathBuf;

/// Why a recording did not finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The cancel flag was raised; every batch before `done` is checkpointed (when a store is
    /// used), so the next run resumes there.
    #[error("recording cancelled after {done} of {total} images")]
    Cancelled { done: usize, total: usize },

    /// Nothing to record, a duplicate layer, a malformed cache key, …
    #[error("invalid recording request: {0}")]
    Invalid(String),

    /// Another process (or job) is recording the same (model, set, layer) right now.
    #[error("activation cache {} is being written by another recording; try again when it finishes", path.display())]
    Busy { path: PathBuf },

    #[error("activation cache {}: {source}", path.display())]
    CacheIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A decode worker died (a bug, not bad input: bad images are skipped, not errors).
    #[error("image decoding pipeline failed: {0}")]
    Pipeline(String),

    #[error(transparent)]
    Engine(#[from] crate::Error),
}

impl From<tch::TchError> for RecordError {
    fn from(e: tch::TchError) -> Self {
        RecordError::Engine(e.into())
    }
}

/// Result alias for recording.
pub type RecordResult<T> = std::result::Result<T, RecordError>;

pub(crate) fn cache_io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> RecordError + '_ {
    move |source| RecordError::CacheIo { path: path.to_path_buf(), source }
}
