//! Embeddings on disk, so a second CLIP-Dissect run encodes nothing: one file per (CLIP file,
//! concept list) for the texts and per (CLIP file, probing set) for the images, each row under
//! its key (the concept, or the image's sha256). A file that does not hold exactly the expected
//! keys is ignored and rewritten.
//!
//! Layout: `DNDEMB1\n`, u64 rows, u64 dim, each key as u32 length + UTF-8, then rows × dim f32,
//! all little-endian. Written to a temporary file and renamed, so a killed run leaves no torn file.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"DNDEMB1\n";

/// Row-major `rows × dim` vectors, one per key. A row of NaN marks an input that could not be
/// encoded (e.g. an unreadable image).
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub keys: Vec<String>,
    pub dim: usize,
    pub data: Vec<f32>,
}

impl Embeddings {
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..][..self.dim]
    }

    pub fn is_missing(&self, i: usize) -> bool {
        self.dim == 0 || self.row(i)[0].is_nan()
    }
}

/// The cache folder (`<data_dir>/clip-dissect/`).
#[derive(Debug, Clone)]
pub struct EmbeddingCache {
    dir: PathBuf,
}

impl EmbeddingCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        EmbeddingCache { dir: dir.into() }
    }

    /// `<dir>/<kind>-<clip hash>-<content hash>.emb` (hashes shortened to 16 hex digits).
    pub fn path(&self, kind: &str, clip_sha256: &str, content_sha256: &str) -> PathBuf {
        let short = |s: &str| s.chars().take(16).collect::<String>();
        self.dir.join(format!("{kind}-{}-{}.emb", short(clip_sha256), short(content_sha256)))
    }

    /// The file's embeddings if it exists, reads, and holds exactly `keys` in that order.
    pub fn load(&self, path: &Path, keys: &[String]) -> Option<Embeddings> {
        let e = read(path).ok()?;
        (e.keys == keys).then_some(e)
    }

    pub fn store(&self, path: &Path, e: &Embeddings) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = path.with_extension("emb.tmp");
        {
            let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            w.write_all(MAGIC)?;
            w.write_all(&(e.keys.len() as u64).to_le_bytes())?;
            w.write_all(&(e.dim as u64).to_le_bytes())?;
            for k in &e.keys {
                w.write_all(&(k.len() as u32).to_le_bytes())?;
                w.write_all(k.as_bytes())?;
            }
            for v in &e.data {
                w.write_all(&v.to_le_bytes())?;
            }
            w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    }
}

fn read(path: &Path) -> std::io::Result<Embeddings> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an embedding file");
    let mut r = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(bad());
    }
    let mut u64_buf = [0u8; 8];
    let mut next_u64 = |r: &mut dyn Read| -> std::io::Result<u64> {
        r.read_exact(&mut u64_buf)?;
        Ok(u64::from_le_bytes(u64_buf))
    };
    let rows = next_u64(&mut r)? as usize;
    let dim = next_u64(&mut r)? as usize;
    let len = std::fs::metadata(path)?.len() as usize;
    if rows.checked_mul(dim).and_then(|n| n.checked_mul(4)).is_none_or(|n| n > len) {
        return Err(bad());
    }
    let mut keys = Vec::with_capacity(rows);
    for _ in 0..rows {
        let mut l = [0u8; 4];
        r.read_exact(&mut l)?;
        let l = u32::from_le_bytes(l) as usize;
        if l > len {
            return Err(bad());
        }
        let mut k = vec![0u8; l];
        r.read_exact(&mut k)?;
        keys.push(String::from_utf8(k).map_err(|_| bad())?);
    }
    let mut bytes = vec![0u8; rows * dim * 4];
    r.read_exact(&mut bytes)?;
    let data = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok(Embeddings { keys, dim, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_ignores_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let cache = EmbeddingCache::new(dir.path().join("c"));
        let e = Embeddings { keys: vec!["red".into(), "a b".into()], dim: 2, data: vec![1.0, -2.5, f32::NAN, 0.0] };
        let path = cache.path("text", "ab12", "cd34");
        assert!(cache.load(&path, &e.keys).is_none());
        cache.store(&path, &e).unwrap();
        let back = cache.load(&path, &e.keys).unwrap();
        assert_eq!(back.keys, e.keys);
        assert_eq!(back.row(0), &[1.0, -2.5]);
        assert!(back.is_missing(1) && !back.is_missing(0));
        assert!(cache.load(&path, &["red".to_string()]).is_none(), "different keys are a miss");
        std::fs::write(&path, b"garbage").unwrap();
        assert!(cache.load(&path, &e.keys).is_none());
    }
}
