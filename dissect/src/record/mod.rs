//! Activation recording, the hot path: one batched pass over a probing set that keeps, for every
//! unit of every requested layer, the spatial **mean** and **max** of its map on every image
//! (`n_images × channels` floats per layer), never the maps themselves.
//!
//! * **Pipeline**: decode → resize → normalise runs on worker threads while the
//!   calling thread runs the forward pass; a bounded window keeps memory flat and batches are
//!   assembled in image order.
//! * **Bad images** are skipped with their reason ([`Recording::skipped`]) and the run goes on;
//!   their rows are NaN, so row `i` is always image `i`.
//! * **Memory**: the forward batch halves on an allocation failure and stays at the size that
//!   worked ([`Recording::batch_size`]).
//! * **Persistence** ([`ActivationStore`]): one file per (model, probing set, layer); a second
//!   run is a cache hit with no forward pass, a killed or cancelled run resumes from its last
//!   checkpointed batch.
//! * **Progress and cancellation**: a [`Progress`] callback per batch; [`RecordOptions::cancel`]
//!   is checked between batches.
//!
//! # Threads (measured on the 2-core reference machine, EfficientNet-Lite0, batch 32)
//! See [`RecordOptions::default`] for the chosen split between libtorch's intra-op threads and
//! decode workers, and `benches/record.rs` for the measurement.

mod error;
mod forward;
mod maps;
mod pipeline;
mod run;
mod store;
mod summaries;

pub use error::{RecordError, RecordResult};
pub use maps::{full_maps, full_maps_batch, unit_maps};
pub use store::{ActivationStore, CacheKey, CacheState};
pub use summaries::{top_k, ActivationSummaries};

use crate::model::TargetModel;
use crate::probe::{ProbeImage, ScannedSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// One image to record: where to read it and its content hash (as in the probing set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSource {
    pub path: PathBuf,
    /// Hex sha256 of the file's bytes.
    pub sha256: String,
}

impl ImageSource {
    pub fn new(path: impl Into<PathBuf>, sha256: impl Into<String>) -> Self {
        ImageSource { path: path.into(), sha256: sha256.into() }
    }

    /// One image of a probing set rooted at `root`.
    pub fn from_probe(root: &Path, image: &ProbeImage) -> Self {
        ImageSource::new(root.join(&image.rel_path), image.sha256.clone())
    }

    /// Every image of a scanned set, in the set's order.
    pub fn from_scanned(set: &ScannedSet) -> Vec<Self> {
        set.images.iter().map(|i| ImageSource::from_probe(&set.root, i)).collect()
    }
}

/// How a recording runs.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// Images per forward pass (and per checkpoint).
    pub batch_size: usize,
    /// Threads decoding and resizing images alongside the forward pass.
    pub decode_workers: usize,
    /// libtorch intra-op threads to set for the run (process-wide); `None` leaves the current
    /// setting.
    pub torch_threads: Option<usize>,
    /// Decoded images allowed to wait for the forward pass (at least one batch). Each costs
    /// 3·H·W·4 bytes, 0.6 MB at 224².
    pub queue_images: usize,
    /// Skip files whose sha256 differs from their [`ImageSource::sha256`] (changed on disk since
    /// the probing set was scanned), so cached rows always belong to the content they are keyed
    /// by. Costs one hash per file (well under a millisecond for a typical photo).
    pub verify_hashes: bool,
    /// Checked between batches; when raised the run stops with [`RecordError::Cancelled`].
    pub cancel: Option<Arc<AtomicBool>>,
}

impl Default for RecordOptions {
    /// Batch 32, 2 decode workers, libtorch threads as the process set them (libtorch's
    /// default: one per core). Measured on the 2-core reference machine with `DND_BENCH_SWEEP=1
    /// cargo bench -p dissect --bench record` (EfficientNet-Lite0, quiet machine, best of 2
    /// passes, ±5% between runs): 2 libtorch threads + 1 worker 128 images/s, + 2 workers 134,
    /// + 3 workers 134; 1 libtorch thread + 1 or 2 workers 81; 3 libtorch threads + 1 worker 110.
    /// The forward pass keeps both cores busy, so more libtorch threads than cores only add
    /// synchronisation stalls; a second decoder keeps the queue full when a large image holds up
    /// the first. Decode workers run at the lowest priority (see `pipeline.rs`): an earlier
    /// measurement saw no difference within noise, but over seven later runs the ratio to the
    /// forward-only rate was 0.93–1.0 with it (one 0.89 under heavy load) against 0.89–0.92
    /// without.
    fn default() -> Self {
        RecordOptions {
            batch_size: 32,
            decode_workers: 2,
            torch_threads: None,
            queue_images: 64,
            verify_hashes: true,
            cancel: None,
        }
    }
}

/// What a progress report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Images decoded and resized (bad ones included).
    Decode,
    /// Images whose summaries are recorded.
    Forward,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Forward => "forward",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A progress report, sent once per batch and stage. `done` and `total` count the images this
/// call has to process: a resumed run starts at 0 of the remaining images.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub stage: Stage,
    pub done: usize,
    pub total: usize,
    /// `done` per second since the call started.
    pub images_per_sec: f64,
}

/// An image that could not be used; its rows are NaN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedImage {
    /// Row of the image (its index in the input).
    pub index: usize,
    pub sha256: String,
    /// Names the file and the problem, e.g. "cannot read image x.png: the file is empty".
    pub reason: String,
}

/// Where a layer's summaries came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerSource {
    /// Computed by this call from the first image.
    Computed,
    /// Read from the store; no forward pass.
    Cache,
    /// Rows before `from` read from a partial file, the rest computed.
    Resumed { from: usize },
}

/// The result of a recording.
#[derive(Debug, Clone)]
pub struct Recording {
    /// One entry per requested layer, in the order asked.
    pub layers: Vec<ActivationSummaries>,
    /// Unusable images, by index.
    pub skipped: Vec<SkippedImage>,
    /// Per layer, where its rows came from.
    pub sources: Vec<LayerSource>,
    /// Images this call ran through the model (0 on a full cache hit).
    pub forwarded: usize,
    /// The forward batch size in the end: smaller than asked if memory ran out.
    pub batch_size: usize,
}

impl Recording {
    /// The summaries of the layer called `name`.
    pub fn layer(&self, name: &str) -> Option<&ActivationSummaries> {
        self.layers.iter().find(|l| l.layer == name)
    }
}

/// Records `layers` (model indices) for `images` in one batched pass, in memory.
pub fn record_layers<M: TargetModel + ?Sized>(
    model: &M,
    images: &[ImageSource],
    layers: &[usize],
    opts: &RecordOptions,
    progress: &mut dyn FnMut(Progress),
) -> RecordResult<Recording> {
    run::record(model, images, layers, opts, None, progress)
}

impl ActivationStore {
    /// [`record_layers`] through the store: complete layers are read back without a forward
    /// pass, partial ones resume after their last checkpoint, and every batch is checkpointed.
    pub fn record<M: TargetModel + ?Sized>(
        &self,
        model: &M,
        key: &CacheKey,
        images: &[ImageSource],
        layers: &[usize],
        opts: &RecordOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> RecordResult<Recording> {
        run::record(model, images, layers, opts, Some((self, key)), progress)
    }
}
