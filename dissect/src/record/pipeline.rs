//! The decode side of recording: worker threads decode, resize and normalise images while the
//! caller's thread runs the forward pass, and hand them over in index order, one batch at a time.
//!
//! Workers never call into libtorch: they hand over plain `f32` buffers, and the consumer makes
//! one tensor per batch. A libtorch call on a worker (e.g. one `Tensor::from_slice` per image)
//! starts an OpenMP team *per worker thread*, which then fights the forward pass's team for the
//! cores; measured here (on a busy machine) it turned an image's 0.06 ms normalisation into
//! several milliseconds.
//!
//! Memory stays bounded by a *window*: a worker may only start image `i` once the consumer has
//! taken every image before `i - window`. A plain bounded channel is not enough here: with
//! several workers, one slow image (a 16k-pixel PNG) would let the others run arbitrarily far
//! ahead into the reorder buffer, or deadlock if that buffer were capped too.

use super::error::{RecordError, RecordResult};
use super::ImageSource;
use crate::model::Preprocess;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::ops::{ControlFlow, Range};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Condvar, Mutex};
use tch::Tensor;

/// Images `range` of the input, in order: the decoded ones and the skipped ones with reasons.
pub(crate) struct Batch {
    pub range: Range<usize>,
    /// Indices of the decoded images, ascending.
    pub decoded: Vec<usize>,
    /// Their model inputs, `decoded.len()`×3×H×W; `None` when every image was skipped.
    pub input: Option<Tensor>,
    /// (image index, why it could not be used), ascending.
    pub skipped: Vec<(usize, String)>,
}

/// How the decode side runs.
pub(crate) struct DecodeConfig<'a> {
    pub preprocess: Preprocess,
    pub batch_size: usize,
    pub workers: usize,
    /// Images a worker may run ahead of the consumer.
    pub window: usize,
    /// Check each file's sha256 against its [`ImageSource`] before decoding.
    pub verify_hashes: bool,
    pub cancel: Option<&'a AtomicBool>,
}

/// Lowers the calling decode worker's scheduling priority (Linux: `setpriority` applies to the
/// calling thread). The forward pass's OpenMP team waits at a barrier for its slowest thread,
/// so a worker that preempts one team thread stalls the whole team; at low priority a worker
/// runs in the team's idle gaps instead. Best effort: an error leaves the default priority.
fn yield_to_forward_pass() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread with no pointers involved.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, DECODE_NICENESS);
    }
}

/// Niceness of decode workers (0 = default, 19 = lowest).
const DECODE_NICENESS: libc::c_int = 19;

/// Which image a worker may decode next.
struct Gate {
    state: Mutex<GateState>,
    wake: Condvar,
}

struct GateState {
    next: usize,
    /// Workers may not start an image at or beyond this index.
    limit: usize,
    stop: bool,
}

impl Gate {
    /// The next image to decode, waiting while the window is full; `None` when done or stopped.
    fn take(&self, end: usize) -> Option<usize> {
        let mut s = self.state.lock().expect("gate lock");
        while !s.stop && s.next < end && s.next >= s.limit {
            s = self.wake.wait(s).expect("gate lock");
        }
        if s.stop || s.next >= end {
            return None;
        }
        s.next += 1;
        Some(s.next - 1)
    }

    fn set_limit(&self, limit: usize) {
        self.state.lock().expect("gate lock").limit = limit;
        self.wake.notify_all();
    }

    fn stop(&self) {
        self.state.lock().expect("gate lock").stop = true;
        self.wake.notify_all();
    }
}

/// Reads, checks, decodes, resizes and normalises one image into a 3×H×W buffer. A file whose
/// content no longer has the hash it was registered under is skipped: its row would otherwise
/// be cached under the wrong identity. A panic inside a decoder (hostile input) becomes a skip
/// reason too.
fn decode(path: &Path, sha256: Option<&str>, p: &Preprocess) -> Result<Vec<f32>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read image {}: {e}", path.display()))?;
    if let Some(expected) = sha256 {
        let actual = hex::encode(Sha256::digest(&bytes));
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(format!(
                "image {} changed since it was registered (sha256 {actual}, expected {expected}); re-scan the probing set",
                path.display()
            ));
        }
    }
    let prepare = || crate::preprocess::model_input(&bytes, path, p);
    match std::panic::catch_unwind(prepare) {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("cannot read image {}: the decoder crashed on this file", path.display())),
    }
}

/// One N×3×H×W tensor from N decoded buffers (one copy into libtorch per batch).
fn batch_tensor(items: &[Vec<f32>], p: &Preprocess) -> Option<Tensor> {
    if items.is_empty() {
        return None;
    }
    let flat: Vec<f32> = items.concat();
    let (h, w) = p.input_size;
    Some(Tensor::from_slice(&flat).view([items.len() as i64, 3, h as i64, w as i64]))
}

/// Decodes images `range` of `images` on `cfg.workers` threads and calls `on_batch` with
/// consecutive batches of `cfg.batch_size` indices (the last may be shorter), in order, on the
/// calling thread. Stops early when `on_batch` breaks or fails, or when the cancel flag is seen
/// (then it returns `Ok` and the caller checks the flag).
pub(crate) fn decode_batches<F>(
    images: &[ImageSource],
    range: Range<usize>,
    cfg: &DecodeConfig<'_>,
    mut on_batch: F,
) -> RecordResult<()>
where
    F: FnMut(Batch) -> RecordResult<ControlFlow<()>>,
{
    let batch_size = cfg.batch_size.max(1);
    let window = cfg.window.max(batch_size);
    let end = range.end;
    let gate = Gate {
        state: Mutex::new(GateState { next: range.start, limit: range.start + window, stop: false }),
        wake: Condvar::new(),
    };
    let cancelled = || cfg.cancel.is_some_and(|c| c.load(Ordering::Relaxed));

    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(usize, Result<Vec<f32>, String>)>();
        for w in 0..cfg.workers.max(1) {
            let (tx, gate, p, verify) = (tx.clone(), &gate, cfg.preprocess, cfg.verify_hashes);
            std::thread::Builder::new()
                .name(format!("dnd-decode-{w}"))
                .spawn_scoped(scope, move || {
                    yield_to_forward_pass();
                    while let Some(i) = gate.take(end) {
                        let sha256 = verify.then_some(images[i].sha256.as_str());
                        let d = decode(&images[i].path, sha256, &p);
                        if tx.send((i, d)).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|e| RecordError::Pipeline(format!("cannot start a decode thread: {e}")))?;
        }
        drop(tx);

        let result = (|| {
            let mut pending = BTreeMap::new();
            let mut start = range.start;
            while start < end {
                let stop = (start + batch_size).min(end);
                let mut batch = Batch { range: start..stop, decoded: Vec::new(), input: None, skipped: Vec::new() };
                let mut buffers = Vec::with_capacity(stop - start);
                for want in start..stop {
                    let item = loop {
                        if let Some(item) = pending.remove(&want) {
                            break item;
                        }
                        if cancelled() {
                            return Ok(());
                        }
                        let r = rx.recv();
                        let (i, item) =
                            r.map_err(|_| RecordError::Pipeline("all decode workers exited early".into()))?;
                        pending.insert(i, item);
                    };
                    match item {
                        Ok(buf) => {
                            batch.decoded.push(want);
                            buffers.push(buf);
                        }
                        Err(reason) => batch.skipped.push((want, reason)),
                    }
                    gate.set_limit(want + 1 + window);
                }
                batch.input = batch_tensor(&buffers, &cfg.preprocess);
                drop(buffers);
                if on_batch(batch)?.is_break() {
                    return Ok(());
                }
                start = stop;
            }
            Ok(())
        })();
        // Release workers blocked on the gate; ones mid-decode exit when their send fails.
        gate.stop();
        drop(rx);
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(dir: &Path, name: &str, shade: u8) -> ImageSource {
        let path = dir.join(name);
        image::RgbImage::from_pixel(40, 30, image::Rgb([shade, 0, 0])).save(&path).unwrap();
        let sha256 = hex::encode(Sha256::digest(std::fs::read(&path).unwrap()));
        ImageSource { path, sha256 }
    }

    #[test]
    fn batches_come_in_order_with_skips_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let mut paths: Vec<_> = (0..12).map(|i| png(dir.path(), &format!("{i}.png"), i as u8 * 20)).collect();
        std::fs::write(dir.path().join("bad.png"), b"text").unwrap();
        paths[4].path = dir.path().join("bad.png");
        paths[6].sha256 = "0".repeat(64);
        let p = Preprocess { input_size: (8, 8), resize_shorter: 8, mean: [0.0; 3], std: [1.0; 3] };
        let cfg =
            DecodeConfig { preprocess: p, batch_size: 4, workers: 3, window: 4, verify_hashes: true, cancel: None };
        let mut seen = Vec::new();
        decode_batches(&paths, 1..11, &cfg, |b| {
            let input = b.input.as_ref().unwrap();
            assert_eq!(input.size(), vec![b.decoded.len() as i64, 3, 8, 8]);
            let red: Vec<(usize, f64)> = b
                .decoded
                .iter()
                .enumerate()
                .map(|(k, i)| (*i, input.get(k as i64).get(0).mean(tch::Kind::Float).double_value(&[])))
                .collect();
            for (i, r) in &red {
                assert_eq!(*r, (*i * 20) as f64, "image {i} in the right slot");
            }
            seen.push((b.range.clone(), red.len(), b.skipped.iter().map(|s| s.0).collect::<Vec<_>>()));
            if b.range.contains(&6) {
                assert!(
                    b.skipped.iter().any(|(i, r)| *i == 6 && r.contains("changed since it was registered")),
                    "{:?}",
                    b.skipped
                );
            }
            Ok(ControlFlow::Continue(()))
        })
        .unwrap();
        assert_eq!(seen, vec![(1..5, 3, vec![4]), (5..9, 3, vec![6]), (9..11, 2, vec![])]);
    }

    #[test]
    fn break_stops_early() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<_> = (0..20).map(|i| png(dir.path(), &format!("{i}.png"), 1)).collect();
        let p = Preprocess { input_size: (8, 8), resize_shorter: 8, mean: [0.0; 3], std: [1.0; 3] };
        let cfg =
            DecodeConfig { preprocess: p, batch_size: 2, workers: 2, window: 2, verify_hashes: false, cancel: None };
        let mut n = 0;
        decode_batches(&paths, 0..20, &cfg, |_| {
            n += 1;
            Ok(if n == 3 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) })
        })
        .unwrap();
        assert_eq!(n, 3);
    }
}
