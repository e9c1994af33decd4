//! Activation recording on the real EfficientNet-Lite0 and real built-in photos (a deterministic
//! subset, for speed), plus crafted bad files. Needs the assets of `scripts/setup.sh`.

mod common;
mod preprocess_reference;

use dissect::crops::Summary;
use dissect::model::{DeviceChoice, EfficientNetLite, LayerInfo, LoadOptions, Preprocess, TargetModel, Variant};
use dissect::preprocess::stack_batch;
use dissect::probe::{scan, ImageLimits};
use dissect::record::{
    full_maps, record_layers, top_k, unit_maps, ActivationStore, ActivationSummaries, CacheKey, CacheState,
    ImageSource, LayerSource, Progress, RecordError, RecordOptions, Recording, Stage,
};
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tch::Tensor;

fn lite0() -> EfficientNetLite {
    common::load(Variant::Lite0, LoadOptions { device: DeviceChoice::Cpu, ..Default::default() })
}

/// Every 12th built-in image, `n` of them: the same subset on every run.
fn builtin_subset(n: usize) -> Vec<ImageSource> {
    let root = dissect::assets::assets_dir().join("probe/builtin");
    let set = scan(&root, ImageLimits::default()).unwrap_or_else(|e| panic!("{e} (run scripts/setup.sh)"));
    let all = ImageSource::from_scanned(&set);
    assert!(all.len() >= 12 * n, "built-in set has only {} images", all.len());
    all.into_iter().step_by(12).take(n).collect()
}

fn source(path: &Path) -> ImageSource {
    ImageSource::new(path, hex::encode(Sha256::digest(std::fs::read(path).unwrap())))
}

fn opts(batch_size: usize) -> RecordOptions {
    RecordOptions { batch_size, ..Default::default() }
}

fn quiet() -> impl FnMut(Progress) {
    |_| {}
}

/// The forward batches a recording ran, as image counts.
fn forward_events(events: &[Progress]) -> Vec<usize> {
    events.iter().filter(|p| p.stage == Stage::Forward).map(|p| p.done).collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Summaries computed the plain way: same images, same batches, the reference preprocessing,
/// `forward_layers` + reduce.
fn direct(
    model: &EfficientNetLite,
    images: &[ImageSource],
    layers: &[usize],
    batch: usize,
) -> Vec<(Vec<f32>, Vec<f32>)> {
    let p = model.preprocessing();
    let mut out: Vec<(Vec<f32>, Vec<f32>)> = layers.iter().map(|_| Default::default()).collect();
    for chunk in images.chunks(batch) {
        let inputs: Vec<Tensor> = chunk.iter().map(|i| preprocess_reference::tensor(&i.path, &p)).collect();
        let acts = model.forward_layers(&stack_batch(&inputs).unwrap(), layers).unwrap();
        for ((mean, max), t) in out.iter_mut().zip(&acts) {
            let read = |t: Tensor| Vec::<f32>::try_from(t.contiguous().view([-1])).unwrap();
            mean.extend(read(Summary::Mean.reduce(t)));
            max.extend(read(Summary::Max.reduce(t)));
        }
    }
    out
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{what}[{i}]: recorded {g}, direct {w}");
    }
}

#[test]
fn summaries_match_a_direct_forward_pass_for_several_layers_in_one_pass() {
    let model = lite0();
    let images = builtin_subset(48);
    // Out of forward order on purpose: results come back in the order asked.
    let layers = model.layer_indices(&["classifier", "stage3", "head"]).unwrap();
    let mut events = Vec::new();
    let rec = record_layers(&model, &images, &layers, &opts(16), &mut |p| events.push(p)).unwrap();

    assert!(rec.skipped.is_empty(), "{:?}", rec.skipped);
    assert_eq!(rec.forwarded, 48);
    assert_eq!(rec.sources, vec![LayerSource::Computed; 3]);
    assert_eq!(forward_events(&events), vec![16, 32, 48]);
    assert!(events.iter().all(|p| p.total == 48 && p.images_per_sec > 0.0));
    assert_eq!(events.iter().filter(|p| p.stage == Stage::Decode).count(), 3);

    let names: Vec<&str> = rec.layers.iter().map(|l| l.layer.as_str()).collect();
    assert_eq!(names, ["classifier", "stage3", "head"]);
    let want = direct(&model, &images, &layers, 16);
    for ((sums, (mean, max)), &l) in rec.layers.iter().zip(&want).zip(&layers) {
        assert_eq!((sums.n_images, sums.channels), (48, model.layers()[l].channels));
        assert_close(&sums.mean, mean, &format!("{} mean", sums.layer));
        assert_close(&sums.max, max, &format!("{} max", sums.layer));
    }
    let logits = rec.layer("classifier").unwrap();
    assert_eq!(bits(&logits.mean), bits(&logits.max), "a linear layer has no map: mean = max = the value");
    let head = rec.layer("head").unwrap();
    assert!(head.mean.iter().zip(&head.max).all(|(m, x)| m <= x));
    assert!(head.max.iter().any(|&x| x > 0.0));
}

/// A forward pass that counts its calls and, above `max_batch` images, fails the way libtorch's
/// CPU allocator does.
struct Instrumented<'a> {
    inner: &'a EfficientNetLite,
    max_batch: usize,
    calls: RefCell<Vec<(usize, Vec<usize>)>>,
}

impl<'a> Instrumented<'a> {
    fn new(inner: &'a EfficientNetLite, max_batch: usize) -> Self {
        Instrumented { inner, max_batch, calls: RefCell::new(Vec::new()) }
    }
}

impl TargetModel for Instrumented<'_> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn layers(&self) -> &[LayerInfo] {
        self.inner.layers()
    }
    fn preprocessing(&self) -> Preprocess {
        self.inner.preprocessing()
    }
    fn class_names(&self) -> Option<&[String]> {
        self.inner.class_names()
    }
    fn device(&self) -> tch::Device {
        self.inner.device()
    }
    fn forward_layers(&self, batch: &Tensor, layers: &[usize]) -> dissect::Result<Vec<Tensor>> {
        let n = batch.size()[0] as usize;
        self.calls.borrow_mut().push((n, layers.to_vec()));
        if n > self.max_batch {
            let msg = format!("DefaultCPUAllocator: can't allocate memory: you tried to allocate {} bytes", n << 30);
            return Err(dissect::Error::Torch(tch::TchError::Torch(msg)));
        }
        self.inner.forward_layers(batch, layers)
    }
}

#[test]
fn one_forward_call_per_batch_serves_all_layers() {
    let model = lite0();
    let counted = Instrumented::new(&model, usize::MAX);
    let images = builtin_subset(20);
    let layers = model.layer_indices(&["stage2", "classifier"]).unwrap();
    record_layers(&counted, &images, &layers, &opts(8), &mut quiet()).unwrap();
    assert_eq!(*counted.calls.borrow(), vec![(8, layers.clone()), (8, layers.clone()), (4, layers.clone())]);
}

#[test]
fn batch_halves_when_memory_runs_out_and_results_stay_exact() {
    let model = lite0();
    let tight = Instrumented::new(&model, 5);
    let images = builtin_subset(16);
    let layers = model.layer_indices(&["head"]).unwrap();
    let rec = record_layers(&tight, &images, &layers, &opts(16), &mut quiet()).unwrap();
    assert_eq!(rec.batch_size, 4, "16 → 8 → 4");
    let sizes: Vec<usize> = tight.calls.borrow().iter().map(|c| c.0).collect();
    assert_eq!(sizes, vec![16, 8, 4, 4, 4, 4], "after the first success the smaller batch sticks");
    let want = direct(&model, &images, &layers, 4);
    assert_close(&rec.layers[0].mean, &want[0].0, "mean");
    assert_close(&rec.layers[0].max, &want[0].1, "max");
}

/// A PNG whose header claims `w`×`h` pixels (valid checksums, no pixel data worth the name).
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]); // 8-bit RGB
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(13u32.to_be_bytes());
    png.extend(&ihdr);
    png.extend(crc32(&ihdr).to_be_bytes());
    png.extend(0u32.to_be_bytes());
    png.extend(b"IEND");
    png.extend(crc32(b"IEND").to_be_bytes());
    png
}

/// A baseline 8×8 JPEG with four components (C, M, Y, K) and an Adobe marker, as print
/// workflows write them. The `image` crate cannot encode CMYK, so it is assembled by hand: one
/// MCU, each component a flat block (DC only) of Huffman category 10, one-symbol code tables.
fn cmyk_jpeg(cmyk: [u8; 4]) -> Vec<u8> {
    let segment = |marker: u8, body: &[u8]| {
        let mut s = vec![0xFF, marker];
        s.extend(((body.len() + 2) as u16).to_be_bytes());
        s.extend(body);
        s
    };
    let mut out = vec![0xFF, 0xD8];
    out.extend(segment(0xEE, b"Adobe\x00\x64\x00\x00\x00\x00\x00")); // APP14, transform 0: plain CMYK
    let mut dqt = vec![0x00];
    dqt.extend([1u8; 64]);
    out.extend(segment(0xDB, &dqt));
    let mut sof = vec![8, 0, 8, 0, 8, 4];
    for id in 1..=4 {
        sof.extend([id, 0x11, 0]);
    }
    out.extend(segment(0xC0, &sof));
    let one_code = |class_id: u8, symbol: u8| {
        let mut t = vec![class_id, 1];
        t.extend([0u8; 15]);
        t.push(symbol);
        t
    };
    out.extend(segment(0xC4, &one_code(0x00, 10))); // DC: category 10 only, code "0"
    out.extend(segment(0xC4, &one_code(0x10, 0x00))); // AC: end-of-block only, code "0"
    out.extend(segment(0xDA, &[4, 1, 0x00, 2, 0x00, 3, 0x00, 4, 0x00, 0, 63, 0]));
    // Per block: DC code "0", 10 magnitude bits, AC code "0" (EOB): 12 bits, 48 bits in all.
    let mut bits: u64 = 0;
    for v in cmyk {
        assert!(!(65..192).contains(&v), "a flat block of {v} is not in DC category 10");
        let dc = (v as i32 - 128) * 8; // pixel = DC/8 + 128 with unit quantisation
        let magnitude = if dc < 0 { (dc + 1023) as u64 } else { dc as u64 };
        bits = (bits << 12) | (magnitude << 1);
    }
    for byte in bits.to_be_bytes()[2..].iter() {
        out.push(*byte);
        if *byte == 0xFF {
            out.push(0x00); // byte stuffing
        }
    }
    out.extend([0xFF, 0xD9]);
    out
}

/// A folder of real photos in awkward but valid encodings, interleaved with broken files.
/// Returns (images, indices that must be skipped).
fn awkward_folder(dir: &Path) -> (Vec<ImageSource>, Vec<usize>) {
    let photo = image::open(common::skimage_photo("chelsea")).unwrap();
    let coffee = image::open(common::skimage_photo("coffee")).unwrap();
    let write = |name: &str, bytes: Vec<u8>| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let save = |name: &str, img: image::DynamicImage| {
        let path = dir.join(name);
        img.save(&path).unwrap();
        path
    };
    let mut rgba = coffee.to_rgba8();
    rgba.pixels_mut().enumerate().for_each(|(i, p)| p.0[3] = if i % 7 == 0 { 0 } else { 200 });
    let mut good_png = Vec::new();
    photo.write_to(&mut std::io::Cursor::new(&mut good_png), image::ImageFormat::Png).unwrap();
    let truncated = good_png[..good_png.len() * 2 / 5].to_vec();

    let files: Vec<(PathBuf, bool)> = vec![
        (save("rgb16.png", image::DynamicImage::ImageRgb16(photo.to_rgb16())), true),
        (write("empty.jpg", Vec::new()), false),
        (save("grey.png", image::DynamicImage::ImageLuma8(photo.to_luma8())), true),
        (write("truncated.png", truncated), false),
        (save("rgba.png", image::DynamicImage::ImageRgba8(rgba)), true),
        (write("notes.jpg", b"these are my notes, not a photo\n".to_vec()), false),
        (write("cmyk.jpg", cmyk_jpeg([20, 200, 40, 230])), true),
        (write("bomb.png", png_claiming(100_000, 100_000)), false),
        (save("grey16.png", image::DynamicImage::ImageLuma16(coffee.to_luma16())), true),
    ];
    let bad = files.iter().enumerate().filter(|(_, (_, ok))| !ok).map(|(i, _)| i).collect();
    (files.iter().map(|(p, _)| source(p)).collect(), bad)
}

#[test]
fn crafted_cmyk_jpeg_decodes() {
    let img = image::load_from_memory(&cmyk_jpeg([20, 200, 40, 230])).unwrap();
    assert_eq!((img.width(), img.height()), (8, 8));
    // Four flat components come out as one flat RGB colour (whatever the CMYK convention).
    let rgb = img.to_rgb8();
    eprintln!("CMYK (20, 200, 40, 230) decodes as {:?}", rgb.get_pixel(0, 0));
    assert!(rgb.pixels().all(|p| p == rgb.get_pixel(0, 0)));
}

#[test]
fn bad_files_are_skipped_with_reasons_and_survive_the_cache() {
    let model = lite0();
    let dir = tempfile::tempdir().unwrap();
    let (images, bad) = awkward_folder(dir.path());
    let layers = model.layer_indices(&["stage5", "classifier"]).unwrap();
    let store = ActivationStore::new(dir.path().join("cache"));
    let key = CacheKey::new("f".repeat(64), "awkward");
    // One batch, so that the good files form the same batch as in the direct pass below.
    let rec = store.record(&model, &key, &images, &layers, &opts(16), &mut quiet()).unwrap();

    for s in &rec.skipped {
        eprintln!("skipped #{}: {}", s.index, s.reason);
    }
    let skipped: Vec<usize> = rec.skipped.iter().map(|s| s.index).collect();
    assert_eq!(skipped, bad);
    let reason = |name: &str| {
        let s = rec.skipped.iter().find(|s| images[s.index].path.ends_with(name)).unwrap();
        assert_eq!(s.sha256, images[s.index].sha256);
        assert!(s.reason.contains(name), "the reason names the file: {}", s.reason);
        s.reason.to_lowercase()
    };
    assert!(reason("empty.jpg").contains("empty"));
    assert!(reason("notes.jpg").contains("not a recognised image format"));
    let r = reason("truncated.png");
    assert!(r.contains("eof") || r.contains("format error") || r.contains("truncat"), "{r}");
    assert!(reason("bomb.png").contains("limit"));
    assert_eq!(rec.forwarded, images.len() - bad.len());

    for sums in &rec.layers {
        for i in 0..images.len() {
            let row = sums.row(i, Summary::Mean);
            if bad.contains(&i) {
                assert!(row.iter().all(|v| v.is_nan()) && sums.is_missing(i), "{}: row {i} is NaN", sums.layer);
            } else {
                assert!(row.iter().all(|v| v.is_finite()), "{}: row {i} is recorded", sums.layer);
            }
        }
    }
    // The awkward encodings go through exactly the reference preprocessing: the same model
    // inputs to the bit, hence the same summaries as a direct pass.
    let good: Vec<usize> = (0..images.len()).filter(|i| !bad.contains(i)).collect();
    let p = model.preprocessing();
    for &i in &good {
        let path = &images[i].path;
        let input = dissect::preprocess::model_input(&std::fs::read(path).unwrap(), path, &p).unwrap();
        assert_eq!(bits(&input), bits(&preprocess_reference::model_input(path, &p)), "{}", path.display());
    }
    let good_images: Vec<ImageSource> = good.iter().map(|&i| images[i].clone()).collect();
    let want = direct(&model, &good_images, &layers, 16);
    for (sums, (mean, max)) in rec.layers.iter().zip(&want) {
        let rows = |v: &[f32]| {
            good.iter().flat_map(|&i| v[i * sums.channels..][..sums.channels].to_vec()).collect::<Vec<f32>>()
        };
        assert_close(&rows(&sums.mean), mean, &format!("{} mean", sums.layer));
        assert_close(&rows(&sums.max), max, &format!("{} max", sums.layer));
    }
    // 16-bit RGB and 8-bit grey of the same photo are distinct inputs, so distinct logits.
    let logits = rec.layer("classifier").unwrap();
    assert_ne!(bits(logits.row(0, Summary::Mean)), bits(logits.row(2, Summary::Mean)));

    // Second run: a cache hit, skips included, nothing forwarded.
    let mut events = Vec::new();
    let again = store.record(&model, &key, &images, &layers, &opts(16), &mut |p| events.push(p)).unwrap();
    assert_eq!(again.sources, vec![LayerSource::Cache; 2]);
    assert_eq!(again.forwarded, 0);
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(again.skipped, rec.skipped);
    for (a, b) in again.layers.iter().zip(&rec.layers) {
        assert_eq!((bits(&a.mean), bits(&a.max)), (bits(&b.mean), bits(&b.max)));
    }
}

fn assert_same(a: &Recording, b: &Recording) {
    assert_eq!(a.skipped, b.skipped);
    for (x, y) in a.layers.iter().zip(&b.layers) {
        assert_eq!(x.layer, y.layer);
        assert_eq!(bits(&x.mean), bits(&y.mean), "{} mean", x.layer);
        assert_eq!(bits(&x.max), bits(&y.max), "{} max", x.layer);
    }
}

#[test]
fn a_cancelled_run_resumes_from_its_last_checkpoint() {
    let model = lite0();
    let dir = tempfile::tempdir().unwrap();
    let mut images = builtin_subset(48);
    // One unreadable image in the checkpointed part: its skip must be remembered too.
    std::fs::write(dir.path().join("bad.jpg"), b"not a jpeg").unwrap();
    images[3] = source(&dir.path().join("bad.jpg"));
    let layers = model.layer_indices(&["stage4", "classifier"]).unwrap();
    let reference = record_layers(&model, &images, &layers, &opts(8), &mut quiet()).unwrap();

    let store = ActivationStore::new(dir.path().join("cache"));
    let key = CacheKey::new("a".repeat(64), "b".repeat(64));
    let cancel = Arc::new(AtomicBool::new(false));
    let o = RecordOptions { cancel: Some(cancel.clone()), ..opts(8) };
    let mut batches = 0;
    let err = store
        .record(&model, &key, &images, &layers, &o, &mut |p| {
            if p.stage == Stage::Forward {
                batches += 1;
                if batches == 2 {
                    cancel.store(true, Ordering::Relaxed); // e.g. a web job's cancel button
                }
            }
        })
        .unwrap_err();
    assert!(matches!(err, RecordError::Cancelled { done: 16, total: 48 }), "{err}");
    assert_eq!(batches, 2);
    for &l in &layers {
        let info = &model.layers()[l];
        let shas: Vec<&str> = images.iter().map(|i| i.sha256.as_str()).collect();
        assert_eq!(store.state(&key, &info.name, &shas, info.channels), CacheState::Partial { completed: 16 });
    }

    cancel.store(false, Ordering::Relaxed);
    let mut events = Vec::new();
    let resumed = store.record(&model, &key, &images, &layers, &o, &mut |p| events.push(p)).unwrap();
    assert_eq!(forward_events(&events), vec![8, 16, 24, 32], "only the 32 remaining images");
    assert!(events.iter().all(|p| p.total == 32));
    assert_eq!(resumed.forwarded, 32);
    assert_eq!(resumed.sources, vec![LayerSource::Resumed { from: 16 }; 2]);
    assert_eq!(resumed.skipped.len(), 1);
    assert_same(&resumed, &reference);

    let hit = store.record(&model, &key, &images, &layers, &o, &mut quiet()).unwrap();
    assert_eq!((hit.forwarded, hit.sources.clone()), (0, vec![LayerSource::Cache; 2]));
    assert_same(&hit, &reference);
    assert!(store.path(&key, "stage4").is_file());

    // A layer added later is computed alone; the cached one is not forwarded again.
    let counted = Instrumented::new(&model, usize::MAX);
    let more = model.layer_indices(&["classifier", "stage1"]).unwrap();
    let rec = store.record(&counted, &key, &images, &more, &o, &mut quiet()).unwrap();
    assert_eq!(rec.sources, vec![LayerSource::Cache, LayerSource::Computed]);
    assert!(counted.calls.borrow().iter().all(|(_, l)| *l == vec![more[1]]));
}

#[test]
fn cancel_flag_is_honoured_between_batches() {
    let model = lite0();
    let images = builtin_subset(24);
    let layers = model.layer_indices(&["head"]).unwrap();
    let cancel = Arc::new(AtomicBool::new(true));
    let o = RecordOptions { cancel: Some(cancel.clone()), ..opts(8) };
    let mut events = Vec::new();
    let err = record_layers(&model, &images, &layers, &o, &mut |p| events.push(p)).unwrap_err();
    assert!(matches!(err, RecordError::Cancelled { done: 0, total: 24 }), "{err}");
    assert!(forward_events(&events).is_empty());

    cancel.store(false, Ordering::Relaxed);
    let mut seen = 0;
    let err = record_layers(&model, &images, &layers, &o, &mut |p| {
        if p.stage == Stage::Forward {
            seen += 1;
            cancel.store(true, Ordering::Relaxed);
        }
    })
    .unwrap_err();
    assert!(matches!(err, RecordError::Cancelled { done: 8, total: 24 }), "{err}");
    assert_eq!(seen, 1);
}

#[test]
fn full_maps_and_top_k_agree_with_the_recording() {
    let model = lite0();
    let images = builtin_subset(16);
    let head = model.layer_index("head").unwrap();
    let rec = record_layers(&model, &images, &[head], &opts(16), &mut quiet()).unwrap();
    let sums: &ActivationSummaries = &rec.layers[0];

    let unit = 7;
    let top = top_k(sums, unit, 3, Summary::Max);
    assert_eq!(top.len(), 3);
    assert!(top.windows(2).all(|w| w[0].1 >= w[1].1));
    let best = top[0].0;
    assert!(sums.column(unit, Summary::Max).all(|v| v <= top[0].1));

    let maps = full_maps(&model, &images[best].path, head).unwrap();
    assert_eq!(maps.size(), vec![1280, 7, 7]);
    let m = unit_maps(&model, &[&images[best].path], head, unit).unwrap().remove(0);
    assert_eq!((m.height, m.width), (7, 7));
    // Batch of 1 vs 16: the same maths, possibly other kernels, so a tolerance.
    let (mean, max) = (m.summary(Summary::Mean), m.summary(Summary::Max));
    assert!((max - top[0].1).abs() < 1e-4 * top[0].1.abs().max(1.0), "{max} vs {}", top[0].1);
    assert!((mean - sums.get(best, unit, Summary::Mean)).abs() < 1e-4);
}

#[test]
fn bad_requests_are_clear_errors() {
    let model = lite0();
    let images = builtin_subset(2);
    let e = record_layers(&model, &[], &[0], &opts(4), &mut quiet()).unwrap_err().to_string();
    assert!(e.contains("no images"), "{e}");
    let e = record_layers(&model, &images, &[8, 8], &opts(4), &mut quiet()).unwrap_err().to_string();
    assert!(e.contains("`head` is requested twice"), "{e}");
    let e = record_layers(&model, &images, &[99], &opts(4), &mut quiet()).unwrap_err().to_string();
    assert!(e.contains("out of range"), "{e}");
}
