//! What a long-running server keeps between dissection jobs: the last target model loaded and the
//! last probing set scanned, so a second job on the same model and set neither reloads the weights
//! nor reads and hashes every image again.
//!
//! An entry is reused while its files are unchanged on disk (same size and modification time of
//! the weights, of every file under the set's folder); otherwise it is loaded or scanned afresh.
//! One entry of each: a server that alternates models pays a reload, never unbounded memory.

use super::LoadedModel;
use dissect::probe::ScannedSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The files an entry was built from, as the file system describes them (path, size, mtime).
type Stamp = Vec<(PathBuf, u64, Option<SystemTime>)>;

/// Models and sets kept between jobs (see the module notes). Cheap to share: clone the `Arc`.
#[derive(Default)]
pub struct EngineCache {
    model: Mutex<Option<(String, Stamp, LoadedModel)>>,
    set: Mutex<Option<(String, Stamp, Arc<ScannedSet>)>>,
    counts: Mutex<CacheCounts>,
}

/// How often the cache answered (for tests and the job log).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheCounts {
    pub models_loaded: usize,
    pub models_reused: usize,
    pub sets_scanned: usize,
    pub sets_reused: usize,
}

/// Whether a value came from the cache or was just built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    Reused,
    Fresh,
}

impl EngineCache {
    /// The model `spec` names ([`super::load_model`]), reused if its weights are unchanged. The
    /// caller gets it to itself and hands it back with [`EngineCache::keep_model`] when done
    /// (a model runs one job at a time).
    pub fn take_model(&self, spec: &str, assets_dir: &Path) -> anyhow::Result<(LoadedModel, Fetched)> {
        let stamp = stamp(&model_files(spec, assets_dir));
        let cached = self.model.lock().unwrap().take();
        if let Some((s, st, loaded)) = cached {
            if s == spec && st == stamp {
                self.counts.lock().unwrap().models_reused += 1;
                return Ok((loaded, Fetched::Reused));
            }
        }
        let loaded = super::load_model(spec, assets_dir)?;
        self.counts.lock().unwrap().models_loaded += 1;
        Ok((loaded, Fetched::Fresh))
    }

    /// Keeps `loaded` (taken for `spec`) for the next job.
    pub fn keep_model(&self, spec: &str, assets_dir: &Path, loaded: LoadedModel) {
        let stamp = stamp(&model_files(spec, assets_dir));
        *self.model.lock().unwrap() = Some((spec.to_string(), stamp, loaded));
    }

    /// The set `spec` names ([`super::scan_probe`]), reused if no file under its folder changed.
    pub fn scan_probe(&self, spec: &str, assets_dir: &Path) -> anyhow::Result<(Arc<ScannedSet>, Fetched)> {
        let root = super::probe_root(spec, assets_dir);
        let stamp = stamp(&files_under(&root));
        if let Some((s, st, set)) = self.set.lock().unwrap().as_ref() {
            if s == spec && *st == stamp {
                self.counts.lock().unwrap().sets_reused += 1;
                return Ok((set.clone(), Fetched::Reused));
            }
        }
        let set = Arc::new(super::scan_probe(spec, assets_dir)?);
        *self.set.lock().unwrap() = Some((spec.to_string(), stamp, set.clone()));
        self.counts.lock().unwrap().sets_scanned += 1;
        Ok((set, Fetched::Fresh))
    }

    pub fn counts(&self) -> CacheCounts {
        *self.counts.lock().unwrap()
    }
}

/// The files a model spec loads: the built-in weights, or a TorchScript file and its manifest.
fn model_files(spec: &str, assets_dir: &Path) -> Vec<PathBuf> {
    match super::builtin_variant(spec) {
        Some(v) => vec![assets_dir.join("models").join(v.weights_file_name())],
        None => {
            // Every place a manifest may be, so adding one beside the file counts as a change.
            let path = PathBuf::from(spec);
            let mut files = dissect::model::torchscript::Manifest::candidates_beside(&path);
            files.insert(0, path);
            files
        }
    }
}

/// Every file under `root`, sorted (a missing folder has none: the scan then names the problem).
fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => dirs.push(e.path()),
                Ok(_) => files.push(e.path()),
                Err(_) => {}
            }
        }
    }
    files.sort();
    files
}

fn stamp(files: &[PathBuf]) -> Stamp {
    files
        .iter()
        .map(|p| match std::fs::metadata(p) {
            Ok(m) => (p.clone(), m.len(), m.modified().ok()),
            Err(_) => (p.clone(), u64::MAX, None),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_is_scanned_again_only_when_a_file_under_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("set");
        std::fs::create_dir_all(root.join("cats")).unwrap();
        let png = |path: &Path, shade: u8| {
            image::RgbImage::from_pixel(40, 40, image::Rgb([shade, 10, 10])).save(path).unwrap();
        };
        png(&root.join("cats/a.png"), 200);
        png(&root.join("cats/b.png"), 100);
        let cache = EngineCache::default();
        let spec = root.to_str().unwrap();

        let (first, how) = cache.scan_probe(spec, dir.path()).unwrap();
        assert_eq!((how, first.images.len()), (Fetched::Fresh, 2));
        let (again, how) = cache.scan_probe(spec, dir.path()).unwrap();
        assert_eq!(how, Fetched::Reused);
        assert!(Arc::ptr_eq(&first, &again), "the same scan is handed out");

        png(&root.join("cats/c.png"), 50);
        let (grown, how) = cache.scan_probe(spec, dir.path()).unwrap();
        assert_eq!((how, grown.images.len()), (Fetched::Fresh, 3), "a new image is seen");
        assert_ne!(grown.content_hash, first.content_hash);
        assert_eq!(cache.counts(), CacheCounts { sets_scanned: 2, sets_reused: 1, ..CacheCounts::default() });
    }
}
