//! One recording run: works out what each layer still needs (from the store, if any), drives
//! the decode pipeline and the forward pass over the remaining images, writes rows and
//! checkpoints batch by batch, and reports progress.

use super::error::{RecordError, RecordResult};
use super::forward::AdaptiveForward;
use super::pipeline::{decode_batches, Batch, DecodeConfig};
use super::store::{ActivationStore, CacheKey, LayerWriter};
use super::summaries::ActivationSummaries;
use super::{ImageSource, LayerSource, Progress, RecordOptions, Recording, SkippedImage, Stage};
use crate::model::TargetModel;
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// One requested layer during a run.
struct LayerJob {
    /// Index into the model's layers.
    index: usize,
    sums: ActivationSummaries,
    /// Rows `0..done` are final.
    done: usize,
    source: LayerSource,
    writer: Option<LayerWriter>,
}

pub(super) fn record<M: TargetModel + ?Sized>(
    model: &M,
    images: &[ImageSource],
    layers: &[usize],
    opts: &RecordOptions,
    store: Option<(&ActivationStore, &CacheKey)>,
    progress: &mut dyn FnMut(Progress),
) -> RecordResult<Recording> {
    validate(model, images, layers)?;
    if let Some(n) = opts.torch_threads {
        crate::model::set_num_threads(n);
    }
    let n = images.len();
    let shas: Vec<&str> = images.iter().map(|i| i.sha256.as_str()).collect();
    let mut skipped = BTreeMap::new();
    let mut jobs = Vec::with_capacity(layers.len());
    for &index in layers {
        let info = &model.layers()[index];
        let job = match store {
            None => LayerJob {
                index,
                sums: ActivationSummaries::empty(&info.name, n, info.channels),
                done: 0,
                source: LayerSource::Computed,
                writer: None,
            },
            Some((store, key)) => match store.load(key, &info.name, &shas, info.channels) {
                Some((sums, skips)) => {
                    skipped.extend(skips);
                    LayerJob { index, sums, done: n, source: LayerSource::Cache, writer: None }
                }
                None => {
                    let (writer, sums, skips) = store.open_writer(key, &info.name, &shas, info.channels)?;
                    skipped.extend(skips);
                    let done = writer.completed();
                    let source = if done > 0 { LayerSource::Resumed { from: done } } else { LayerSource::Computed };
                    LayerJob { index, sums, done, source, writer: Some(writer) }
                }
            },
        };
        jobs.push(job);
    }

    let mut forward = AdaptiveForward::new(opts.batch_size);
    let forwarded = drive(model, images, &mut jobs, opts, &mut forward, &mut skipped, progress)?;
    let mut out = Recording {
        layers: Vec::with_capacity(jobs.len()),
        skipped: skipped
            .into_iter()
            .map(|(index, reason)| SkippedImage { index, sha256: images[index].sha256.clone(), reason })
            .collect(),
        sources: jobs.iter().map(|j| j.source).collect(),
        forwarded,
        batch_size: forward.batch_size(),
    };
    for job in jobs {
        if let Some(w) = job.writer {
            w.finish()?;
        }
        out.layers.push(job.sums);
    }
    Ok(out)
}

fn validate<M: TargetModel + ?Sized>(model: &M, images: &[ImageSource], layers: &[usize]) -> RecordResult<()> {
    if images.is_empty() {
        return Err(RecordError::Invalid("no images to record".into()));
    }
    if layers.is_empty() {
        return Err(RecordError::Invalid("no layers to record".into()));
    }
    let count = model.layers().len();
    for (i, &l) in layers.iter().enumerate() {
        if l >= count {
            return Err(crate::Error::LayerIndex { model: model.name().into(), index: l, count }.into());
        }
        if layers[..i].contains(&l) {
            return Err(RecordError::Invalid(format!("layer `{}` is requested twice", model.layers()[l].name)));
        }
    }
    Ok(())
}

/// Runs the images that some layer still lacks; returns how many went through the model.
fn drive<M: TargetModel + ?Sized>(
    model: &M,
    images: &[ImageSource],
    jobs: &mut [LayerJob],
    opts: &RecordOptions,
    forward: &mut AdaptiveForward,
    skipped: &mut BTreeMap<usize, String>,
    progress: &mut dyn FnMut(Progress),
) -> RecordResult<usize> {
    let n = images.len();
    let Some(start) = jobs.iter().map(|j| j.done).filter(|&d| d < n).min() else { return Ok(0) };
    let total = n - start;
    let cancel = opts.cancel.as_deref();
    let cancelled = || cancel.is_some_and(|c| c.load(Ordering::Relaxed));
    let cfg = DecodeConfig {
        preprocess: model.preprocessing(),
        batch_size: opts.batch_size,
        workers: opts.decode_workers,
        window: opts.queue_images,
        verify_hashes: opts.verify_hashes,
        cancel,
    };
    let started = Instant::now();
    let report = |stage, done: usize| Progress {
        stage,
        done,
        total,
        images_per_sec: done as f64 / started.elapsed().as_secs_f64().max(1e-9),
    };
    let mut forwarded = 0;
    let mut finished = start;

    decode_batches(images, start..n, &cfg, |batch: Batch| {
        progress(report(Stage::Decode, batch.range.end - start));
        if cancelled() {
            return Ok(ControlFlow::Break(()));
        }
        let (s, e) = (batch.range.start, batch.range.end);
        let needed: Vec<usize> = (0..jobs.len()).filter(|&j| jobs[j].done < e).collect();
        let indices: Vec<usize> = needed.iter().map(|&j| jobs[j].index).collect();
        let rows = match &batch.input {
            Some(input) if !needed.is_empty() => forward.run(model, input, &indices)?,
            _ => Vec::new(),
        };
        forwarded += batch.decoded.len();
        for (k, &j) in needed.iter().enumerate() {
            let job = &mut jobs[j];
            let c = job.sums.channels;
            // Scatter the decoded images' rows into the batch's rows; skipped rows stay NaN.
            let mut mean = vec![f32::NAN; (e - s) * c];
            let mut max = mean.clone();
            if let Some((m, x)) = rows.get(k) {
                for (r, i) in batch.decoded.iter().enumerate() {
                    let at = (i - s) * c;
                    mean[at..at + c].copy_from_slice(&m[r * c..][..c]);
                    max[at..at + c].copy_from_slice(&x[r * c..][..c]);
                }
            }
            // Rows before `done` came from a checkpoint; keep them as they are.
            let from = job.done.max(s);
            let skip = (from - s) * c;
            job.sums.write_rows(from, &mean[skip..], &max[skip..]);
            if let Some(w) = job.writer.as_mut() {
                w.checkpoint(from, &mean[skip..], &max[skip..], &batch.skipped)?;
            }
            job.done = e;
        }
        skipped.extend(batch.skipped);
        finished = e;
        progress(report(Stage::Forward, e - start));
        Ok(ControlFlow::Continue(()))
    })?;

    if finished < n {
        if cancelled() {
            return Err(RecordError::Cancelled { done: finished - start, total });
        }
        return Err(RecordError::Pipeline(format!("stopped after {} of {total} images", finished - start)));
    }
    Ok(forwarded)
}
