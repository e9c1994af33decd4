//! A response cache on disk, so re-running a dissection costs no service calls.
//!
//! Key: the sha256 of a canonical JSON description of the request (endpoint, model, and whatever
//! decides the answer: the full chat request, or image hash + prompt, or concept + seed). Value:
//! the raw response body bytes. Files live at `<dir>/<first two hex digits>/<key>`; writes go to a
//! temporary file in the same folder and are renamed into place, so readers never see half a file
//! and concurrent writers of the same key do not interfere.
//!
//! The cache is best effort: a file that cannot be read is a miss, and a failed write leaves the
//! answer uncached but still returned.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Where cached responses live; [`ResponseCache::disabled`] caches nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseCache {
    dir: Option<PathBuf>,
}

impl ResponseCache {
    /// A cache in `dir` (created on first write), or none when `dir` is `None`.
    pub fn new(dir: Option<PathBuf>) -> Self {
        ResponseCache { dir }
    }

    /// A cache in `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        ResponseCache { dir: Some(dir.into()) }
    }

    /// No caching.
    pub fn disabled() -> Self {
        ResponseCache { dir: None }
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    pub fn is_enabled(&self) -> bool {
        self.dir.is_some()
    }

    /// The key of a request description: hex sha256 of its canonical JSON (object keys sorted,
    /// no whitespace), so equal descriptions give equal keys whatever the construction order.
    pub fn key(description: &Value) -> String {
        let mut text = String::new();
        write_canonical(description, &mut text);
        hex::encode(Sha256::digest(text.as_bytes()))
    }

    fn path(&self, key: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        // Keys are hex digests; anything else (a path separator, "..") is refused.
        if key.len() < 3 || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        Some(dir.join(&key[..2]).join(key))
    }

    /// The cached bytes for `key`, if any.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.path(key)?).ok()
    }

    /// Stores `bytes` under `key` atomically (temporary file + rename). A no-op when disabled.
    pub fn put(&self, key: &str, bytes: &[u8]) -> std::io::Result<()> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let Some(path) = self.path(key) else {
            if self.dir.is_some() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("cache key `{key}` is not a hex digest"),
                ));
            }
            return Ok(());
        };
        let folder = path.parent().expect("cache paths have a parent");
        std::fs::create_dir_all(folder)?;
        let tmp = folder.join(format!(".{key}.{}.{}.tmp", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
        let written = (|| {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(bytes)?;
            file.flush()?;
            drop(file);
            std::fs::rename(&tmp, &path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }
}

/// JSON with object keys in sorted order and no insignificant whitespace.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_ignores_key_order() {
        let a = json!({"endpoint": "e", "model": "m", "request": {"x": 1, "y": [1, 2]}});
        let mut map = serde_json::Map::new();
        map.insert("request".into(), json!({"y": [1, 2], "x": 1}));
        map.insert("model".into(), json!("m"));
        map.insert("endpoint".into(), json!("e"));
        assert_eq!(ResponseCache::key(&a), ResponseCache::key(&Value::Object(map)));
        assert_ne!(ResponseCache::key(&a), ResponseCache::key(&json!({"endpoint": "e"})));
    }

    #[test]
    fn put_then_get_and_disabled() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ResponseCache::at(dir.path());
        let key = ResponseCache::key(&json!({"a": 1}));
        assert_eq!(cache.get(&key), None);
        cache.put(&key, b"hello").unwrap();
        assert_eq!(cache.get(&key).as_deref(), Some(&b"hello"[..]));
        cache.put(&key, b"again").unwrap();
        assert_eq!(cache.get(&key).as_deref(), Some(&b"again"[..]));
        assert!(cache.put("../evil", b"x").is_err());
        let leftovers: Vec<_> =
            std::fs::read_dir(dir.path().join(&key[..2])).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers.len(), 1, "no temporary files left: {leftovers:?}");

        let off = ResponseCache::disabled();
        off.put(&key, b"x").unwrap();
        assert_eq!(off.get(&key), None);
    }
}
