//! Persistent activation summaries: one compact binary file per (model fingerprint, probing-set
//! hash, layer), written batch by batch so a killed run resumes from its last checkpoint.
//!
//! # Layout
//! `<root>/<fingerprint[..16]>/<set_hash[..16]>/<layer>.bin` once complete; `<layer>.partial`
//! while recording (renamed atomically on completion). Little-endian throughout:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `DNDACTS\0` |
//! | 8 | 4 | format version (1) |
//! | 12 | 4 | header length (512) |
//! | 16 | 8 | `n_images` |
//! | 24 | 8 | `channels` |
//! | 32 | 8 | `completed`: rows `0..completed` are final (the checkpoint) |
//! | 40 | 8 | number of committed skip records |
//! | 48 | 8 | bytes of committed skip records |
//! | 56 | 64 | model fingerprint (UTF-8, zero-padded) |
//! | 120 | 64 | probing-set hash (UTF-8, zero-padded) |
//! | 184 | 32 | sha256 of the image sha256s *in row order* (the set hash ignores order; rows don't) |
//! | 216 | 2 | layer name length, then the name (≤ 256 bytes) |
//! | 512 | 4·n·c | spatial means, row-major f32 |
//! | … | 4·n·c | spatial maxima, row-major f32 |
//! | … | … | skip records: u64 row, u32 length, UTF-8 reason |
//!
//! A checkpoint writes the batch's rows and skip records, syncs, then rewrites the header's
//! counters and syncs again, so a crash never leaves `completed` ahead of the data. Anything that
//! does not match (other version, other image order, truncated file) is treated as absent and
//! recomputed: the store is a cache.

use super::error::{cache_io, RecordError, RecordResult};
use super::summaries::ActivationSummaries;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"DNDACTS\0";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 512;
const KEY_FIELD: usize = 64;
const MAX_LAYER_NAME: usize = 256;

/// What a cache file is keyed by, besides the layer: the model's fingerprint (weights +
/// preprocessing + layers, as registered) and the probing set's content hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub model_fingerprint: String,
    pub set_hash: String,
}

impl CacheKey {
    pub fn new(model_fingerprint: impl Into<String>, set_hash: impl Into<String>) -> Self {
        CacheKey { model_fingerprint: model_fingerprint.into(), set_hash: set_hash.into() }
    }

    fn validate(&self) -> RecordResult<()> {
        for (what, v) in [("model fingerprint", &self.model_fingerprint), ("probing-set hash", &self.set_hash)] {
            if v.is_empty() || v.len() > KEY_FIELD || v.contains(['/', '\\', '\0']) || v.starts_with('.') {
                return Err(RecordError::Invalid(format!(
                    "{what} `{v}` must be 1–{KEY_FIELD} bytes without path separators (e.g. a hex sha256)"
                )));
            }
        }
        Ok(())
    }
}

/// Where a layer's cache stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheState {
    Missing,
    /// A killed or cancelled run left rows `0..completed` final.
    Partial {
        completed: usize,
    },
    Complete,
}

/// Skipped rows as stored: (row, reason).
pub(crate) type SkipRecords = Vec<(usize, String)>;

/// A folder of activation caches.
#[derive(Debug, Clone)]
pub struct ActivationStore {
    root: PathBuf,
}

impl ActivationStore {
    /// A store under `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ActivationStore { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Folder holding one (model, set)'s layer files.
    pub fn dir(&self, key: &CacheKey) -> PathBuf {
        let short = |s: &str| s.chars().take(16).collect::<String>();
        self.root.join(short(&key.model_fingerprint)).join(short(&key.set_hash))
    }

    /// The completed cache file of `layer` (what `activation_caches.file_path` points at).
    pub fn path(&self, key: &CacheKey, layer: &str) -> PathBuf {
        self.dir(key).join(format!("{}.bin", file_stem(layer)))
    }

    fn partial_path(&self, key: &CacheKey, layer: &str) -> PathBuf {
        self.dir(key).join(format!("{}.partial", file_stem(layer)))
    }

    /// Whether `layer` is cached for these images (`image_sha256s` in row order).
    pub fn state(&self, key: &CacheKey, layer: &str, image_sha256s: &[&str], channels: usize) -> CacheState {
        let expect = Expected::new(key, layer, image_sha256s, channels);
        if read_header(&self.path(key, layer)).is_some_and(|h| expect.matches(&h) && h.completed == h.n_images) {
            return CacheState::Complete;
        }
        match read_header(&self.partial_path(key, layer)) {
            Some(h) if expect.matches(&h) && h.completed > 0 => CacheState::Partial { completed: h.completed },
            _ => CacheState::Missing,
        }
    }

    /// The cached summaries of `layer` and its skipped rows, if complete and valid.
    pub fn load(
        &self,
        key: &CacheKey,
        layer: &str,
        image_sha256s: &[&str],
        channels: usize,
    ) -> Option<(ActivationSummaries, SkipRecords)> {
        let expect = Expected::new(key, layer, image_sha256s, channels);
        let (sums, skips, completed) = read_file(&self.path(key, layer), &expect)?;
        (completed == sums.n_images).then_some((sums, skips))
    }

    /// Opens `layer` for recording and returns the rows (NaN beyond `completed()`) and skips
    /// recovered from an earlier run: the completed rows of a partial file are kept (resume),
    /// anything invalid is started afresh. Fails with [`RecordError::Busy`] if another recording
    /// holds the file.
    pub(crate) fn open_writer(
        &self,
        key: &CacheKey,
        layer: &str,
        image_sha256s: &[&str],
        channels: usize,
    ) -> RecordResult<(LayerWriter, ActivationSummaries, SkipRecords)> {
        key.validate()?;
        if layer.len() > MAX_LAYER_NAME {
            return Err(RecordError::Invalid(format!("layer name longer than {MAX_LAYER_NAME} bytes: `{layer}`")));
        }
        let dir = self.dir(key);
        std::fs::create_dir_all(&dir).map_err(cache_io(&dir))?;
        let path = self.partial_path(key, layer);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(cache_io(&path))?;
        // An advisory lock: released by the OS when the holder exits, so a killed run never
        // leaves a stale lock behind.
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(RecordError::Busy { path }),
            Err(std::fs::TryLockError::Error(e)) => return Err(cache_io(&path)(e)),
        }
        let expect = Expected::new(key, layer, image_sha256s, channels);
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(cache_io(&path))?;
        let (sums, skips, completed) = match parse(&bytes, &expect) {
            Some(found) => found,
            None => (ActivationSummaries::empty(layer, expect.n_images, channels), Vec::new(), 0),
        };
        let data_end = (HEADER_LEN + 8 * expect.n_images * channels) as u64;
        let skip_bytes = skip_records_len(&skips);
        let mut w = LayerWriter {
            path,
            final_path: self.path(key, layer),
            file,
            expect,
            data_end,
            completed,
            skips: skips.len(),
            skip_bytes,
        };
        if completed == 0 {
            w.file.set_len(0).map_err(cache_io(&w.path))?;
        }
        // Drops uncommitted skip records past the checkpoint and sizes the data region.
        w.file.set_len(data_end + w.skip_bytes).map_err(cache_io(&w.path))?;
        w.write_header()?;
        Ok((w, sums, skips))
    }
}

/// The layer name as a safe file stem: kept as is when it is plain, else sanitised with a short
/// hash so that different names never share a file.
fn file_stem(layer: &str) -> String {
    let plain = !layer.is_empty()
        && !layer.starts_with('.')
        && layer.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if plain {
        return layer.to_string();
    }
    let safe: String =
        layer.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).take(64).collect();
    format!("{safe}-{}", &hex::encode(Sha256::digest(layer.as_bytes()))[..12])
}

/// What a cache file must say to be used.
pub(crate) struct Expected {
    fingerprint: String,
    set_hash: String,
    order: [u8; 32],
    layer: String,
    n_images: usize,
    channels: usize,
}

impl Expected {
    fn new(key: &CacheKey, layer: &str, image_sha256s: &[&str], channels: usize) -> Self {
        let mut h = Sha256::new();
        for s in image_sha256s {
            h.update(s.as_bytes());
            h.update(b"\n");
        }
        Expected {
            fingerprint: key.model_fingerprint.clone(),
            set_hash: key.set_hash.clone(),
            order: h.finalize().into(),
            layer: layer.to_string(),
            n_images: image_sha256s.len(),
            channels,
        }
    }

    fn matches(&self, h: &Header) -> bool {
        h.fingerprint == self.fingerprint
            && h.set_hash == self.set_hash
            && h.order == self.order
            && h.layer == self.layer
            && h.n_images == self.n_images
            && h.channels == self.channels
            && h.completed <= h.n_images
    }

    fn header(&self, completed: usize, skips: usize, skip_bytes: u64) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        for (at, v) in [
            (16, self.n_images as u64),
            (24, self.channels as u64),
            (32, completed as u64),
            (40, skips as u64),
            (48, skip_bytes),
        ] {
            b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        b[56..56 + self.fingerprint.len()].copy_from_slice(self.fingerprint.as_bytes());
        b[120..120 + self.set_hash.len()].copy_from_slice(self.set_hash.as_bytes());
        b[184..216].copy_from_slice(&self.order);
        b[216..218].copy_from_slice(&(self.layer.len() as u16).to_le_bytes());
        b[218..218 + self.layer.len()].copy_from_slice(self.layer.as_bytes());
        b
    }
}

struct Header {
    n_images: usize,
    channels: usize,
    completed: usize,
    skips: usize,
    skip_bytes: usize,
    fingerprint: String,
    set_hash: String,
    order: [u8; 32],
    layer: String,
}

fn parse_header(b: &[u8]) -> Option<Header> {
    if b.len() < HEADER_LEN || &b[0..8] != MAGIC {
        return None;
    }
    let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| usize::try_from(u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))).ok();
    if u32_at(8) != VERSION || u32_at(12) as usize != HEADER_LEN {
        return None;
    }
    let text = |field: &[u8]| {
        let end = field.iter().position(|&c| c == 0).unwrap_or(field.len());
        String::from_utf8(field[..end].to_vec()).ok()
    };
    let name_len = u16::from_le_bytes([b[216], b[217]]) as usize;
    if name_len > MAX_LAYER_NAME {
        return None;
    }
    Some(Header {
        n_images: u64_at(16)?,
        channels: u64_at(24)?,
        completed: u64_at(32)?,
        skips: u64_at(40)?,
        skip_bytes: u64_at(48)?,
        fingerprint: text(&b[56..120])?,
        set_hash: text(&b[120..184])?,
        order: b[184..216].try_into().expect("32 bytes"),
        layer: String::from_utf8(b[218..218 + name_len].to_vec()).ok()?,
    })
}

fn read_header(path: &Path) -> Option<Header> {
    let mut b = [0u8; HEADER_LEN];
    File::open(path).ok()?.read_exact(&mut b).ok()?;
    parse_header(&b)
}

fn read_file(path: &Path, expect: &Expected) -> Option<(ActivationSummaries, SkipRecords, usize)> {
    parse(&std::fs::read(path).ok()?, expect)
}

/// Parses a whole cache file; rows at and after `completed` are NaN.
fn parse(b: &[u8], expect: &Expected) -> Option<(ActivationSummaries, SkipRecords, usize)> {
    let h = parse_header(b)?;
    if !expect.matches(&h) {
        return None;
    }
    let cells = h.n_images.checked_mul(h.channels)?;
    let data_end = HEADER_LEN.checked_add(cells.checked_mul(8)?)?;
    if b.len() < data_end.checked_add(h.skip_bytes)? {
        return None;
    }
    let floats = |at: usize| -> Vec<f32> {
        let done = h.completed * h.channels;
        let mut v: Vec<f32> =
            b[at..at + 4 * done].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect();
        v.resize(cells, f32::NAN);
        v
    };
    let sums = ActivationSummaries {
        layer: h.layer.clone(),
        n_images: h.n_images,
        channels: h.channels,
        mean: floats(HEADER_LEN),
        max: floats(HEADER_LEN + 4 * cells),
    };
    let mut skips = Vec::with_capacity(h.skips);
    let mut rest = &b[data_end..data_end + h.skip_bytes];
    for _ in 0..h.skips {
        if rest.len() < 12 {
            return None;
        }
        let row = usize::try_from(u64::from_le_bytes(rest[..8].try_into().expect("8 bytes"))).ok()?;
        let len = u32::from_le_bytes(rest[8..12].try_into().expect("4 bytes")) as usize;
        let reason = String::from_utf8(rest.get(12..12 + len)?.to_vec()).ok()?;
        if row >= h.completed {
            return None;
        }
        skips.push((row, reason));
        rest = &rest[12 + len..];
    }
    Some((sums, skips, h.completed))
}

fn skip_record(row: usize, reason: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(12 + reason.len());
    v.extend_from_slice(&(row as u64).to_le_bytes());
    v.extend_from_slice(&(reason.len() as u32).to_le_bytes());
    v.extend_from_slice(reason.as_bytes());
    v
}

fn skip_records_len(skips: &[(usize, String)]) -> u64 {
    skips.iter().map(|(_, r)| 12 + r.len() as u64).sum()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// An open, locked partial file of one layer.
pub(crate) struct LayerWriter {
    path: PathBuf,
    final_path: PathBuf,
    file: File,
    expect: Expected,
    data_end: u64,
    completed: usize,
    /// Committed skip records.
    skips: usize,
    skip_bytes: u64,
}

impl LayerWriter {
    /// Rows `0..completed()` are already final.
    pub fn completed(&self) -> usize {
        self.completed
    }

    /// Writes rows `start..start + mean.len() / channels` and their skip records, then moves
    /// the checkpoint to the end of those rows. Rows must continue from `completed()`.
    pub fn checkpoint(
        &mut self,
        start: usize,
        mean: &[f32],
        max: &[f32],
        skipped: &[(usize, String)],
    ) -> RecordResult<()> {
        let c = self.expect.channels;
        let rows = mean.len() / c.max(1);
        debug_assert!(start <= self.completed && mean.len() == max.len());
        let cells = (self.expect.n_images * c) as u64;
        let at = (HEADER_LEN + 4 * start * c) as u64;
        let write = |file: &mut File, at: u64, bytes: &[u8]| -> std::io::Result<()> {
            file.seek(SeekFrom::Start(at))?;
            file.write_all(bytes)
        };
        (|| {
            write(&mut self.file, at, &f32_bytes(mean))?;
            write(&mut self.file, at + 4 * cells, &f32_bytes(max))?;
            let mut journal = Vec::new();
            for (row, reason) in skipped.iter().filter(|(r, _)| *r >= self.completed) {
                journal.extend(skip_record(*row, reason));
                self.skips += 1;
            }
            write(&mut self.file, self.data_end + self.skip_bytes, &journal)?;
            self.skip_bytes += journal.len() as u64;
            // Data first, then the counters that make it count.
            self.file.sync_data()?;
            self.completed = self.completed.max(start + rows);
            self.write_header_io()?;
            self.file.sync_data()
        })()
        .map_err(cache_io(&self.path))
    }

    fn write_header_io(&mut self) -> std::io::Result<()> {
        let header = self.expect.header(self.completed, self.skips, self.skip_bytes);
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(&header)
    }

    fn write_header(&mut self) -> RecordResult<()> {
        self.write_header_io().map_err(cache_io(&self.path))
    }

    /// Publishes the completed file under its final name (atomic rename, then the folder is
    /// synced so the rename survives a crash).
    pub fn finish(self) -> RecordResult<()> {
        debug_assert_eq!(self.completed, self.expect.n_images);
        std::fs::rename(&self.path, &self.final_path).map_err(cache_io(&self.path))?;
        if let Some(dir) = self.final_path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(cache_io(dir))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> CacheKey {
        CacheKey::new("f".repeat(64), "s".repeat(64))
    }

    #[test]
    fn writes_resumes_and_completes() {
        let dir = tempfile::tempdir().unwrap();
        let store = ActivationStore::new(dir.path());
        let shas = ["a", "b", "c"];
        assert_eq!(store.state(&key(), "l/1", &shas, 2), CacheState::Missing);
        let (mut w, _, _) = store.open_writer(&key(), "l/1", &shas, 2).unwrap();
        assert!(matches!(store.open_writer(&key(), "l/1", &shas, 2), Err(RecordError::Busy { .. })));
        w.checkpoint(0, &[1., 2., f32::NAN, f32::NAN], &[3., 4., f32::NAN, f32::NAN], &[(1, "bad".into())]).unwrap();
        drop(w);
        assert_eq!(store.state(&key(), "l/1", &shas, 2), CacheState::Partial { completed: 2 });
        // Other image order: not the same rows, so not resumable.
        assert_eq!(store.state(&key(), "l/1", &["b", "a", "c"], 2), CacheState::Missing);

        let (mut w, sums, skips) = store.open_writer(&key(), "l/1", &shas, 2).unwrap();
        assert_eq!(w.completed(), 2);
        assert_eq!(&sums.mean[..2], &[1., 2.]);
        assert!(sums.mean[4].is_nan());
        assert_eq!(skips, vec![(1, "bad".to_string())]);
        w.checkpoint(2, &[5., 6.], &[7., 8.], &[]).unwrap();
        w.finish().unwrap();
        assert_eq!(store.state(&key(), "l/1", &shas, 2), CacheState::Complete);
        let (sums, skips) = store.load(&key(), "l/1", &shas, 2).unwrap();
        assert_eq!(sums.max[4..], [7., 8.]);
        assert_eq!(sums.layer, "l/1");
        assert_eq!(skips.len(), 1);
        assert!(store.path(&key(), "l/1").file_name().unwrap().to_str().unwrap().starts_with("l_1-"));
        assert!(store.load(&key(), "l/1", &shas, 3).is_none(), "other channel count");
    }

    #[test]
    fn rejects_unsafe_keys() {
        let store = ActivationStore::new("/nonexistent");
        let e = store.open_writer(&CacheKey::new("../x", "s"), "l", &["a"], 1).err().unwrap();
        assert!(e.to_string().contains("path separators"), "{e}");
    }
}
