//! Where an upload lives until it is accepted: a private folder under `<data_dir>/uploads/`,
//! removed when dropped (a refused upload, an error, or a client that went away mid-body), so
//! nothing of a rejected upload stays on disk. Fields are streamed into it chunk by chunk,
//! never held whole in memory.

use super::UploadError;
use axum::extract::multipart::Field;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::AsyncWriteExt;

pub struct Staging {
    dir: PathBuf,
}

impl Staging {
    pub fn new(data_dir: &Path) -> Result<Staging, UploadError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let name = format!("staging-{}-{nanos}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let dir = data_dir.join("uploads").join(name);
        std::fs::create_dir_all(&dir).map_err(|e| UploadError::Internal(format!("creating {}: {e}", dir.display())))?;
        Ok(Staging { dir })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove an upload's staging folder");
            }
        }
    }
}

/// Writes a file field to `path`, refusing it (413, naming `limit_key`) once it passes `max`
/// bytes; answers its size.
pub async fn stream_field(mut field: Field<'_>, path: &Path, max: u64, limit_key: &str) -> Result<u64, UploadError> {
    let internal = |e: std::io::Error| UploadError::Internal(format!("writing {}: {e}", path.display()));
    let mut file = tokio::fs::File::create(path).await.map_err(internal)?;
    let mut size: u64 = 0;
    while let Some(chunk) = field.chunk().await.map_err(super::body_error)? {
        size += chunk.len() as u64;
        if size > max {
            return Err(UploadError::TooLarge(format!(
                "the file `{}` is larger than {max} bytes (limit `uploads.{limit_key}`)",
                field.file_name().unwrap_or("upload")
            )));
        }
        file.write_all(&chunk).await.map_err(internal)?;
    }
    file.flush().await.map_err(internal)?;
    Ok(size)
}

/// A short text field (name, CSRF token), at most 4 KiB.
pub async fn text_field(mut field: Field<'_>) -> Result<String, UploadError> {
    let name = field.name().unwrap_or("").to_string();
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(super::body_error)? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > 4096 {
            return Err(UploadError::Invalid(format!("the form field `{name}` is too long")));
        }
    }
    String::from_utf8(bytes).map_err(|_| UploadError::Invalid(format!("the form field `{name}` is not UTF-8 text")))
}
