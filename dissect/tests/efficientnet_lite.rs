//! The built-in EfficientNet-Lite networks on their real weights and real photos.
//! Needs the assets of `scripts/setup.sh` (`$DND_ASSETS`, default ~/.cache/dnd-studio/assets).

mod common;

use dissect::imagenet::short_names;
use dissect::model::{top_k, EfficientNetLite, LayerKind, LoadOptions, TargetModel, Variant};
use dissect::preprocess::{load_tensor, stack_batch};
use dissect::Error;
use tch::Tensor;

fn cpu() -> LoadOptions {
    LoadOptions { device: dissect::model::DeviceChoice::Cpu, ..Default::default() }
}

/// Top-5 (short name, probability) for each photo.
fn classify(model: &EfficientNetLite, stems: &[&str]) -> Vec<Vec<(String, f32)>> {
    let p = model.preprocessing();
    let items: Vec<Tensor> =
        stems.iter().map(|s| load_tensor(&common::skimage_photo(s), &p).unwrap_or_else(|e| panic!("{e}"))).collect();
    let batch = stack_batch(&items).unwrap();
    let logits = model.forward_named(&batch, &["classifier"]).unwrap().remove(0);
    assert_eq!(logits.size(), vec![stems.len() as i64, 1000]);
    let top = top_k(&logits, 5);
    for (stem, row) in stems.iter().zip(&top) {
        let shown: Vec<String> = row.iter().map(|(c, p)| format!("{} {:.3}", short_names()[*c], p)).collect();
        eprintln!("{} {stem}: {}", model.name(), shown.join(", "));
    }
    top.into_iter().map(|row| row.into_iter().map(|(c, p)| (short_names()[c].clone(), p)).collect()).collect()
}

#[test]
fn lite0_classifies_real_photos() {
    let model = common::load(Variant::Lite0, cpu());
    let top = classify(&model, &["coffee", "chelsea", "rocket"]);

    let (coffee, p) = &top[0][0];
    assert_eq!(coffee, "espresso", "coffee.png top-5: {:?}", top[0]);
    assert!(*p > 0.5, "espresso probability {p}");

    let cats = ["tabby", "tiger cat", "Egyptian cat"];
    assert!(cats.contains(&top[1][0].0.as_str()), "chelsea.png top-5: {:?}", top[1]);

    let rockets = ["missile", "projectile", "space shuttle"];
    assert!(top[2].iter().any(|(c, _)| rockets.contains(&c.as_str())), "rocket top-5: {:?}", top[2]);
}

#[test]
fn lite2_classifies_coffee_as_espresso() {
    let model = common::load(Variant::Lite2, cpu());
    let top = classify(&model, &["coffee", "chelsea"]);
    assert_eq!(top[0][0].0, "espresso", "coffee.png top-5: {:?}", top[0]);
    assert!(["tabby", "tiger cat", "Egyptian cat"].contains(&top[1][0].0.as_str()), "chelsea top-5: {:?}", top[1]);
}

#[test]
fn reported_layer_shapes_match_forward_outputs() {
    for variant in [Variant::Lite0, Variant::Lite2] {
        let model = common::load(variant, cpu());
        let p = model.preprocessing();
        let (h, w) = p.input_size;
        let batch = Tensor::randn([2, 3, h as i64, w as i64], (tch::Kind::Float, tch::Device::Cpu));
        let all: Vec<usize> = (0..model.layers().len()).collect();
        let outs = model.forward_layers(&batch, &all).unwrap();
        let names: Vec<&str> = model.layers().iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            names,
            ["stem", "stage1", "stage2", "stage3", "stage4", "stage5", "stage6", "stage7", "head", "classifier"]
        );
        for (info, out) in model.layers().iter().zip(&outs) {
            let expected: Vec<i64> = match info.spatial {
                Some((sh, sw)) => vec![2, info.channels as i64, sh as i64, sw as i64],
                None => vec![2, info.channels as i64],
            };
            assert_eq!(out.size(), expected, "{} {}", model.name(), info.name);
            assert_eq!(info.kind == LayerKind::Classifier, info.name == "classifier");
        }
        // Asking for one shallow layer, out of order and twice, gives the same tensors.
        let some = model.forward_layers(&batch, &[3, 1, 3]).unwrap();
        assert_eq!(some.len(), 3);
        assert!(some[0].allclose(&outs[3], 1e-5, 1e-5, false));
        assert!(some[1].allclose(&outs[1], 1e-5, 1e-5, false));
    }
}

#[test]
fn folded_channels_last_matches_reference() {
    tch::manual_seed(7);
    let fast = common::load(Variant::Lite0, cpu());
    let reference = common::load(Variant::Lite0, LoadOptions::reference(dissect::model::DeviceChoice::Cpu));
    let p = fast.preprocessing();
    let batch = stack_batch(&[load_tensor(&common::skimage_photo("coffee"), &p).unwrap(), {
        let (h, w) = p.input_size;
        Tensor::randn([3, h as i64, w as i64], (tch::Kind::Float, tch::Device::Cpu))
    }])
    .unwrap();
    let all: Vec<usize> = (0..fast.layers().len()).collect();
    let a = fast.forward_layers(&batch, &all).unwrap();
    let b = reference.forward_layers(&batch, &all).unwrap();
    for ((info, x), y) in fast.layers().iter().zip(&a).zip(&b) {
        let diff = (x - y).abs().max().double_value(&[]);
        let scale = y.abs().max().double_value(&[]).max(1.0);
        eprintln!("{}: max |folded − reference| = {diff:.2e} (max |reference| {scale:.1})", info.name);
        assert!(diff / scale < 1e-4, "{}: max diff {diff} vs scale {scale}", info.name);
    }
}

#[test]
fn unknown_layer_error_lists_valid_names() {
    let model = common::load(Variant::Lite0, cpu());
    let err = model.layer_index("stage9").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::UnknownLayer { .. }));
    for name in ["stem", "stage1", "stage7", "head", "classifier"] {
        assert!(msg.contains(name), "{msg}");
    }
    let batch = Tensor::zeros([1, 3, 224, 224], (tch::Kind::Float, tch::Device::Cpu));
    assert!(model.forward_named(&batch, &["head", "layer4"]).unwrap_err().to_string().contains("layer4"));
    assert!(matches!(model.forward_layers(&batch, &[10]), Err(Error::LayerIndex { .. })));
    let bad = Tensor::zeros([1, 1, 224, 224], (tch::Kind::Float, tch::Device::Cpu));
    assert!(matches!(model.forward_layers(&bad, &[0]), Err(Error::InputShape { .. })));
}

#[test]
fn wrong_or_missing_weights_are_clear_errors() {
    let lite2 = Variant::Lite2.default_weights_path();
    let err = EfficientNetLite::load(Variant::Lite0, &lite2, cpu()).unwrap_err().to_string();
    assert!(err.contains("21 MBConv blocks") && err.contains("efficientnet-lite0"), "{err}");

    let err = EfficientNetLite::load(Variant::Lite0, std::path::Path::new("/nonexistent/w.safetensors"), cpu())
        .unwrap_err()
        .to_string();
    assert!(err.contains("scripts/setup.sh"), "{err}");
}
