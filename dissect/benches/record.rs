//! Recording throughput on the built-in model and probing set (run with
//! `cargo bench -p dissect --bench record`; about a minute on 2 quiet cores). Prints, in one run:
//! * images/s of the full recording path (decode → resize → forward → summaries, default
//!   [`RecordOptions`]), the first pass through the activation store as the product runs it;
//! * the forward-only rate on pre-decoded, pre-stacked tensors, and the ratio (target ≥ 0.9);
//! * peak RSS (VmHWM) of the recording, read before the pre-decoded baseline inflates it;
//! * seconds per 1k images, CPU time per image, and the one-thread cost per image of
//!   `preprocess::model_input` (read, decode, resize, crop, normalise).
//!
//! The machine this runs on may be shared, so both rates are measured in interleaved rounds
//! and the best of each is kept. `DND_BENCH_SWEEP=1` also times other splits of the cores
//! between libtorch threads and decode workers (what chose the defaults);
//! `DND_BENCH_LAYERS=stage4,classifier` picks other layers (default `head,classifier`).

use dissect::model::{DeviceChoice, EfficientNetLite, LoadOptions, TargetModel, Variant};
use dissect::preprocess::{load_tensor, model_input, stack_batch};
use dissect::probe::{scan, ImageLimits};
use dissect::record::{record_layers, ActivationStore, CacheKey, ImageSource, RecordOptions};
use std::time::{Duration, Instant};
use tch::Tensor;

/// Interleaved rounds of (forward only, full path); fewer if the machine is so slow that the
/// run would pass its time budget.
const ROUNDS: usize = 3;
const BUDGET: Duration = Duration::from_secs(100);

/// Peak resident set size of this process so far, in MiB.
fn vm_hwm_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kb.map_or(f64::NAN, |kb| kb / 1024.0)
}

/// CPU time (user + system) this process has used, in seconds (clock ticks of 10 ms).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse().ok()).collect();
    f.iter().sum::<f64>() / 100.0
}

/// Best wall-clock time and total CPU time over the passes of one measurement.
#[derive(Default)]
struct Timing {
    best: f64,
    cpu: f64,
    passes: usize,
}

impl Timing {
    fn run(&mut self, f: impl FnOnce()) -> f64 {
        let (t, c) = (Instant::now(), cpu_seconds());
        f();
        let wall = t.elapsed().as_secs_f64();
        self.cpu += cpu_seconds() - c;
        self.best = if self.passes == 0 { wall } else { self.best.min(wall) };
        self.passes += 1;
        wall
    }
}

/// Forward passes only (no decode, no summaries) over ready-made batches.
fn forward_only(model: &EfficientNetLite, batches: &[Tensor], layers: &[usize]) {
    for b in batches {
        assert_eq!(model.forward_layers(b, layers).unwrap().len(), layers.len());
    }
}

fn main() {
    let started = Instant::now();
    let threads = 2;
    dissect::model::set_num_threads(threads);
    let cpu = LoadOptions { device: DeviceChoice::Cpu, ..Default::default() };
    let model =
        EfficientNetLite::load_default(Variant::Lite0, cpu).unwrap_or_else(|e| panic!("{e} (run scripts/setup.sh)"));
    let root = dissect::assets::assets_dir().join("probe/builtin");
    let set = scan(&root, ImageLimits::default()).expect("built-in probing set");
    let images = ImageSource::from_scanned(&set);
    let n = images.len();
    let names = std::env::var("DND_BENCH_LAYERS").unwrap_or_else(|_| "head,classifier".into());
    let names: Vec<&str> = names.split(',').collect();
    let layers = model.layer_indices(&names).unwrap_or_else(|e| panic!("{e}"));
    let opts = RecordOptions::default();
    let p = model.preprocessing();
    println!(
        "EfficientNet-Lite0, {n} built-in images, layers {names:?}, batch {}, {threads} libtorch threads, {} decode worker(s), {} cores",
        opts.batch_size,
        opts.decode_workers,
        std::thread::available_parallelism().map_or(0, |c| c.get())
    );

    // Warm-up: allocator and oneDNN primitive caches, so no measurement pays for them.
    let warm: Vec<_> = images[..opts.batch_size].iter().map(|i| load_tensor(&i.path, &p).unwrap()).collect();
    model.forward_layers(&stack_batch(&warm).unwrap(), &layers).unwrap();
    drop(warm);
    let rss_warm = vm_hwm_mib();

    // The full path through the store, as the product runs it; then a cache hit.
    let (mut full, mut forward) = (Timing::default(), Timing::default());
    let dir = tempfile::tempdir().unwrap();
    let store = ActivationStore::new(dir.path());
    let key = CacheKey::new("bench-model", set.content_hash.clone());
    let mut rec = None;
    let store_s = full.run(|| rec = Some(store.record(&model, &key, &images, &layers, &opts, &mut |_| {}).unwrap()));
    let rec = rec.unwrap();
    let rss_peak = vm_hwm_mib();
    assert_eq!(rec.forwarded + rec.skipped.len(), n);
    let hit = Instant::now();
    assert_eq!(store.record(&model, &key, &images, &layers, &opts, &mut |_| {}).unwrap().forwarded, 0);
    let hit = hit.elapsed().as_secs_f64();

    // Pre-decoded batches for the forward-only baseline. Their preparation is timed on its own,
    // on one thread: file read + `preprocess::model_input` (what a decode worker runs per
    // image); the conversion to tensors is not.
    let mut decode = Timing::default();
    let mut decoded = Vec::new();
    let (h, w) = p.input_size;
    for image in &images {
        let mut input = None;
        decode.run(|| {
            input = std::fs::read(&image.path).ok().and_then(|bytes| model_input(&bytes, &image.path, &p).ok());
        });
        decoded.extend(input.map(|v| Tensor::from_slice(&v).view([3, h as i64, w as i64])));
    }
    let decode_ms = 1000.0 * decode.cpu / n as f64;
    let batches: Vec<Tensor> = decoded.chunks(opts.batch_size).map(|c| stack_batch(c).unwrap()).collect();
    drop(decoded);

    let mut walls = (Vec::new(), vec![store_s]);
    for round in 0..ROUNDS {
        if round > 0 && started.elapsed() > BUDGET {
            break;
        }
        walls.0.push(forward.run(|| forward_only(&model, &batches, &layers)));
        walls.1.push(full.run(|| {
            record_layers(&model, &images, &layers, &opts, &mut |_| {}).unwrap();
        }));
    }

    let rate = |s: f64| n as f64 / s;
    let rates = |w: &[f64]| w.iter().map(|&s| format!("{:.1}", rate(s))).collect::<Vec<_>>().join(", ");
    println!(
        "full recording path : {:6.1} images/s  {:6.2} s per 1k images  (passes: {}; the first through the store)",
        rate(full.best),
        1000.0 * full.best / n as f64,
        rates(&walls.1)
    );
    println!(
        "forward only        : {:6.1} images/s  {:6.2} s per 1k images  (pre-decoded tensors; passes: {})",
        rate(forward.best),
        1000.0 * forward.best / n as f64,
        rates(&walls.0)
    );
    println!("ratio full/forward  : {:.3}  (target >= 0.9; best pass of each)", forward.best / full.best);
    println!(
        "CPU time per image  : {:.1} ms full path, {:.1} ms forward only (mean over passes)",
        1000.0 * full.cpu / (full.passes * n) as f64,
        1000.0 * forward.cpu / (forward.passes * n) as f64
    );
    println!("peak RSS (VmHWM)    : {rss_peak:.0} MiB after recording ({rss_warm:.0} MiB after model load + one warm-up batch)");
    println!(
        "preparation         : {:.1} ms CPU per image in the pipeline (full - forward); \
         read + preprocess::model_input alone: {decode_ms:.1} ms per image on one thread",
        1000.0 * (full.cpu / full.passes as f64 - forward.cpu / forward.passes as f64) / n as f64
    );
    println!(
        "cache hit           : {:.1} ms for {} layers ({} skipped images)",
        1000.0 * hit,
        layers.len(),
        rec.skipped.len()
    );

    if std::env::var("DND_BENCH_SWEEP").is_ok_and(|v| v == "1") {
        // (libtorch threads, decode workers), each timed twice, interleaved.
        let splits = [(2, 1), (2, 2), (2, 3), (1, 1), (1, 2), (3, 1)];
        let mut best = vec![f64::INFINITY; splits.len()];
        for _ in 0..2 {
            for (b, &(torch, workers)) in best.iter_mut().zip(&splits) {
                dissect::model::set_num_threads(torch);
                let o = RecordOptions { decode_workers: workers, ..RecordOptions::default() };
                let t = Instant::now();
                record_layers(&model, &images, &layers, &o, &mut |_| {}).unwrap();
                *b = b.min(t.elapsed().as_secs_f64());
            }
        }
        for (&(torch, workers), &b) in splits.iter().zip(&best) {
            println!(
                "sweep: {torch} libtorch thread(s), {workers} decode worker(s): {:6.1} images/s (best of 2)",
                rate(b)
            );
        }
        dissect::model::set_num_threads(threads);
    }
    println!("bench time          : {:.0} s", started.elapsed().as_secs_f64());
}
