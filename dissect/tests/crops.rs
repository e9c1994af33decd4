//! Attention crops (docs/method.md, Step 1): synthetic maps with known blobs, and a real neuron of the
//! built-in EfficientNet-Lite0 on the built-in probing images (assets of `scripts/setup.sh`).

mod common;

use dissect::crops::{
    attention_boxes, crop_activations, image_crops, neuron_crops, rerank_top, ActivationMap, CropBox, CropProbe,
    Summary, TopCandidate, TopImage, FULL_IMAGE_IOU_MAX, IOU_MAX, K, MAX_CROPS, WORKING_SIZE,
};
use dissect::model::{DeviceChoice, LayerInfo, LayerKind, LoadOptions, Preprocess, TargetModel, Variant};
use dissect::preprocess::{image_to_tensor, load_rgb, stack_batch};
use image::RgbImage;
use std::path::{Path, PathBuf};
use tch::Tensor;

fn b(x0: u32, y0: u32, x1: u32, y1: u32) -> CropBox {
    CropBox::new(x0, y0, x1, y1)
}

/// A `side`×`side` map of 0.0 with the given (half-open) rectangles set to 1.0.
fn blobs(side: usize, rects: &[CropBox]) -> ActivationMap {
    let mut m = ActivationMap::new(side, side, vec![0.0; side * side]);
    for r in rects {
        for y in r.y0..r.y1 {
            for x in r.x0..r.x1 {
                m.values[y as usize * side + x as usize] = 1.0;
            }
        }
    }
    m
}

/// Preprocessing that leaves a `side`×`side` image as it is (the model view is the whole image).
fn identity(side: u32) -> Preprocess {
    Preprocess { input_size: (side, side), resize_shorter: side, mean: [0.0; 3], std: [1.0; 3] }
}

#[test]
fn two_rectangles_give_exactly_their_boxes() {
    let (a, c) = (b(5, 8, 15, 20), b(25, 22, 35, 30));
    let map = blobs(40, &[c, a]);
    // Map size = working size: the upsample is the identity, so boxes are exact; largest first.
    assert_eq!(attention_boxes(&map, 40), [a, c]);
    // Same view in source pixels: identical for a 40×40 source, doubled for an 80×80 one.
    assert_eq!(image_crops(&map, (40, 40), &identity(40), 40), [a, c]);
    assert_eq!(image_crops(&map, (80, 80), &identity(40), 40), [b(10, 16, 30, 40), b(50, 44, 70, 60)]);
}

#[test]
fn coarse_map_upsampled_to_the_working_size() {
    // 7×7 map: a 2×2-cell blob at cells (1..3, 1..3) and a 1×2-cell blob at (5, 4..6).
    let map = blobs(7, &[b(1, 1, 3, 3), b(5, 4, 6, 6)]);
    let boxes = attention_boxes(&map, WORKING_SIZE);
    assert_eq!(boxes.len(), 2, "{boxes:?}");
    // Bilinear interpolation ramps between cell centres, and Otsu's level lies strictly between
    // the background and the blob value, so every box edge falls between the centre of the last
    // background cell and that of the first blob cell: within half a cell of the cell boundary.
    let cell = WORKING_SIZE as f64 / 7.0;
    let tol = cell / 2.0;
    let near = |edge: u32, cells: f64| (edge as f64 - cells * cell).abs() <= tol;
    let (big, small) = (boxes[0], boxes[1]);
    assert!(near(big.x0, 1.0) && near(big.y0, 1.0) && near(big.x1, 3.0) && near(big.y1, 3.0), "{big:?}");
    assert!(near(small.x0, 5.0) && near(small.y0, 4.0) && near(small.x1, 6.0) && near(small.y1, 6.0), "{small:?}");
    // Both blobs see the same ramps, so the margins agree to about a pixel on every side.
    let margin = |edge: u32, cells: f64| (edge as f64 - cells * cell).abs();
    let margins = [margin(big.x0, 1.0), margin(big.x1, 3.0), margin(small.x0, 5.0), margin(small.y1, 6.0)];
    assert!(margins.iter().all(|m| (m - margins[0]).abs() <= 1.5), "{margins:?}");
}

#[test]
fn blobs_touching_the_border_keep_their_edges() {
    let (tl, br, left) = (b(0, 0, 10, 12), b(30, 35, 40, 40), b(0, 20, 3, 30));
    let boxes = attention_boxes(&blobs(40, &[tl, br, left]), 40);
    assert_eq!(boxes, [tl, br, left]);
}

#[test]
fn a_ring_with_a_blob_in_its_hole_is_one_box() {
    let mut map = blobs(40, &[b(5, 5, 30, 30)]);
    for y in 10..25 {
        for x in 10..25 {
            map.values[y * 40 + x] = 0.0;
        }
    }
    for y in 15..20 {
        for x in 15..20 {
            map.values[y * 40 + x] = 1.0;
        }
    }
    assert_eq!(attention_boxes(&map, 40), [b(5, 5, 30, 30)]);
}

#[test]
fn constant_maps_have_no_boxes() {
    assert_eq!(attention_boxes(&ActivationMap::new(40, 40, vec![0.7; 1600]), 40), []);
    assert_eq!(attention_boxes(&ActivationMap::new(7, 7, vec![-2.0; 49]), WORKING_SIZE), []);
    assert_eq!(attention_boxes(&ActivationMap::new(0, 0, vec![]), WORKING_SIZE), []);
}

#[test]
fn a_box_covering_most_of_the_image_is_rejected() {
    // 40×36 of 40×40: IoU 0.9 with the whole image ≥ 0.8.
    assert_eq!(attention_boxes(&blobs(40, &[b(0, 0, 40, 36)]), 40), []);
    // 40×34 (IoU 0.85) is rejected while a small blob beside it is kept.
    assert_eq!(attention_boxes(&blobs(40, &[b(0, 0, 40, 34), b(5, 36, 10, 39)]), 40), [b(5, 36, 10, 39)]);
    assert!(FULL_IMAGE_IOU_MAX == 0.8 && IOU_MAX == 0.5 && MAX_CROPS == 4 && K == 10);
}

#[test]
fn six_blobs_give_the_four_largest() {
    let rects: Vec<CropBox> = (0..6).map(|i| b(2 + i * 10, 5, 2 + i * 10 + 3 + i, 5 + 3 + i)).collect();
    let mut want: Vec<CropBox> = rects.clone();
    want.sort_by_key(|r| std::cmp::Reverse(r.area()));
    want.truncate(4);
    assert_eq!(attention_boxes(&blobs(64, &rects), 64), want);
}

#[test]
fn non_conv_layers_get_no_crops() {
    let map = blobs(40, &[b(5, 8, 15, 20)]);
    let top = [TopImage { source_size: (40, 40), map: &map }];
    let layer = |kind| LayerInfo { name: "x".into(), kind, channels: 1, spatial: None };
    assert_eq!(neuron_crops(&layer(LayerKind::Conv), &identity(40), &top, 40), [vec![b(5, 8, 15, 20)]]);
    assert_eq!(neuron_crops(&layer(LayerKind::Classifier), &identity(40), &top, 40), [vec![]]);
    assert_eq!(neuron_crops(&layer(LayerKind::Linear), &identity(40), &top, 40), [vec![]]);
}

// ----- a real neuron of the built-in model --------------------------------------------------

/// Every 9th built-in probing image in sorted path order, at most 64.
fn probe_subset() -> Vec<PathBuf> {
    let root = dissect::assets::assets_dir().join("probe/builtin");
    let mut paths = Vec::new();
    collect(&root, &mut paths);
    assert!(
        !paths.is_empty(),
        "built-in probing images not found under {}: run `scripts/setup.sh` to fetch the assets \
         (the folder comes from $DND_ASSETS, default ~/.cache/dnd-studio/assets)",
        root.display()
    );
    paths.sort();
    paths.into_iter().step_by(9).take(64).collect()
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if p
            .extension()
            .is_some_and(|x| ["png", "jpg", "jpeg"].contains(&x.to_string_lossy().to_lowercase().as_str()))
        {
            out.push(p);
        }
    }
}

#[test]
fn real_neuron_crops_of_lite0() {
    let model = common::load(Variant::Lite0, LoadOptions { device: DeviceChoice::Cpu, ..Default::default() });
    let p = model.preprocessing();
    let paths = probe_subset();
    assert_eq!(paths.len(), 64);
    let images: Vec<RgbImage> = paths.iter().map(|q| load_rgb(q).unwrap_or_else(|e| panic!("{e}"))).collect();

    let stage = model.layer_index("stage4").unwrap();
    let classifier = model.layer_index("classifier").unwrap();
    let info = model.layers()[stage].clone();
    assert_eq!(info.kind, LayerKind::Conv);
    let mut maps: Vec<Tensor> = Vec::new();
    for chunk in images.chunks(16) {
        let batch = stack_batch(&chunk.iter().map(|i| image_to_tensor(i, &p)).collect::<Vec<_>>()).unwrap();
        maps.push(model.forward_layers(&batch, &[stage]).unwrap().remove(0).to_device(tch::Device::Cpu).contiguous());
    }
    let maps = Tensor::cat(&maps, 0); // 64×C×h×w
    let means = Summary::Mean.reduce(&maps); // 64×C

    // The unit with the strongest single-image mean response: surely not a dead one.
    let unit = means.amax([0i64].as_slice(), false).argmax(0, false).int64_value(&[]) as usize;
    let originals: Vec<TopCandidate> = (0..images.len())
        .map(|i| TopCandidate {
            image_index: i,
            crop: None,
            activation: means.double_value(&[i as i64, unit as i64]) as f32,
        })
        .collect();
    let top = rerank_top(&originals, K);
    let top_maps: Vec<ActivationMap> = top
        .iter()
        .map(|t| ActivationMap::from_tensor(&maps.get(t.image_index as i64).get(unit as i64)).unwrap())
        .collect();
    let tops: Vec<TopImage> =
        top.iter().zip(&top_maps).map(|(t, m)| TopImage::new(&images[t.image_index], m)).collect();
    let crops = neuron_crops(&info, &p, &tops, WORKING_SIZE);

    let mut probes = Vec::new();
    for ((t, m), boxes) in top.iter().zip(&top_maps).zip(&crops) {
        let (w, h) = images[t.image_index].dimensions();
        assert!(boxes.len() <= MAX_CROPS, "{boxes:?}");
        // The paper's rules hold exactly in the working frame, where they are applied …
        let working = attention_boxes(m, WORKING_SIZE);
        assert_eq!(working.len(), boxes.len());
        let full = CropBox::full(WORKING_SIZE, WORKING_SIZE);
        for (i, a) in working.iter().enumerate() {
            assert!(a.iou(&full) < FULL_IMAGE_IOU_MAX, "{a:?}");
            assert!(working[..i].iter().all(|o| o.iou(a) <= IOU_MAX), "{working:?}");
        }
        // … and survive the mapping to source pixels up to whole-pixel rounding.
        for (i, a) in boxes.iter().enumerate() {
            assert!(a.is_within(w, h), "{a:?} outside {w}×{h}");
            assert!(boxes[..i].iter().all(|o| o.iou(a) <= IOU_MAX + 0.02), "{boxes:?}");
            probes.push(CropProbe { image: &images[t.image_index], crop: *a, layer: stage, unit });
        }
        eprintln!("{} ({w}×{h}) mean {:.3}: {boxes:?}", paths[t.image_index].display(), t.activation);
    }
    assert!(!probes.is_empty(), "no image of unit {unit} got a crop");

    // Crops of several neurons in one call: also ask the classifier about each crop, so batches
    // of 32 mix two layers and the call spans more than one batch.
    let n = probes.len();
    let mixed: Vec<CropProbe> =
        probes.iter().copied().chain(probes.iter().map(|q| CropProbe { layer: classifier, unit: 0, ..*q })).collect();
    let acts = crop_activations(&model, &mixed, Summary::Mean, WORKING_SIZE).unwrap();
    assert_eq!(acts.len(), 2 * n);
    assert!(acts.iter().all(|a| a.is_finite()), "{acts:?}");
    // Batching changes nothing: one crop alone gives the same value.
    for i in [0, n - 1, 2 * n - 1] {
        let alone = crop_activations(&model, &mixed[i..=i], Summary::Mean, WORKING_SIZE).unwrap()[0];
        assert!(
            (alone - acts[i]).abs() <= 1e-4 * (1.0 + alone.abs()),
            "probe {i}: {alone} alone vs {} batched",
            acts[i]
        );
    }
    let maxes = crop_activations(&model, &probes, Summary::Max, WORKING_SIZE).unwrap();
    assert!(maxes.iter().zip(&acts).all(|(mx, mean)| mx >= mean));

    // D_top: originals ∪ crops, re-ranked.
    let candidates: Vec<TopCandidate> = originals
        .iter()
        .copied()
        .chain(probes.iter().zip(&acts).map(|(q, &a)| {
            let image_index = images.iter().position(|i| std::ptr::eq(i, q.image)).unwrap();
            TopCandidate { image_index, crop: Some(q.crop), activation: a }
        }))
        .collect();
    let d_top = rerank_top(&candidates, K);
    assert_eq!(d_top.len(), K);
    assert!(d_top.windows(2).all(|w| w[0].activation >= w[1].activation));
    eprintln!(
        "unit {unit} of stage4: {n} crops, {} of them in D_top",
        d_top.iter().filter(|t| t.crop.is_some()).count()
    );

    // The classifier layer gets no crops; a unit out of range is a clear error.
    let cls = model.layers()[classifier].clone();
    assert!(neuron_crops(&cls, &p, &tops, WORKING_SIZE).iter().all(Vec::is_empty));
    let bad = CropProbe { unit: info.channels, ..probes[0] };
    let e = crop_activations(&model, &[bad], Summary::Mean, WORKING_SIZE).unwrap_err().to_string();
    assert!(e.contains("out of range") && e.contains("stage4"), "{e}");
}
