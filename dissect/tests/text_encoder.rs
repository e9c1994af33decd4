//! The sentence encoders (all-MiniLM-L6-v2, all-mpnet-base-v2) on their real weights.
//! Needs the assets of `scripts/setup.sh` (`$DND_ASSETS`, default ~/.cache/dnd-studio/assets).
//!
//! Reference values were computed with Hugging Face transformers 5.24.0 on torch 2.13.0 (CPU),
//! from the very files `scripts/fetch_assets.py` installs: `AutoTokenizer` + `AutoModel`, the
//! tokenizer called with `padding=True, truncation=True, max_length=256` (MiniLM) or `384` (MPNet),
//! then mean pooling over the attention mask and L2 normalisation, as on the models' cards.

use dissect::concepts::{cosine, Role, TextEncoder};
use dissect::text_encoder::{SentenceEncoder, TextModel};
use dissect::Error;
use std::sync::OnceLock;
use std::time::Instant;
use tch::Device;

fn load(model: TextModel) -> &'static SentenceEncoder {
    static MINI: OnceLock<SentenceEncoder> = OnceLock::new();
    static MPNET: OnceLock<SentenceEncoder> = OnceLock::new();
    let cell = match model {
        TextModel::MiniLmL6V2 => &MINI,
        TextModel::MpnetBaseV2 => &MPNET,
    };
    cell.get_or_init(|| {
        let dir = model.default_dir();
        if !dir.join("model.safetensors").is_file() {
            panic!(
                "{} not found in {}: run `scripts/setup.sh` (or `python3 scripts/fetch_assets.py`) to fetch it \
                 (the folder comes from $DND_ASSETS, default ~/.cache/dnd-studio/assets; now {})",
                model.name(),
                dir.display(),
                dissect::assets::assets_dir().display()
            );
        }
        SentenceEncoder::load(&dir, model, Device::Cpu).unwrap_or_else(|e| panic!("{e}"))
    })
}

const TEXTS: [&str; 10] = [
    "a dog",
    "a puppy",
    "a spreadsheet",
    "a cat",
    "zebra stripes",
    "striped pattern",
    "A man is playing a guitar.",
    "the ocean",
    "water",
    "Café crème brûlée, naïve résumé!",
];

fn long_text() -> String {
    vec!["the quick brown fox jumps over the lazy dog"; 100].join(" ")
}

struct Reference {
    /// Token ids of "a dog".
    ids: [u32; 4],
    /// Cosine similarities of TEXTS pairs.
    cosines: [(usize, usize, f32); 6],
    /// First five dimensions of the embeddings of "a dog", the accented text and the long text.
    dog: [f32; 5],
    accents: [f32; 5],
    long: [f32; 5],
}

const PAIRS: [(usize, usize); 6] = [(0, 1), (0, 2), (0, 3), (4, 5), (7, 8), (6, 0)];

fn reference(model: TextModel) -> Reference {
    match model {
        TextModel::MiniLmL6V2 => Reference {
            ids: [101, 1037, 3899, 102],
            cosines: [
                (0, 1, 0.76922),
                (0, 2, 0.14377),
                (0, 3, 0.51853),
                (4, 5, 0.68858),
                (7, 8, 0.54493),
                (6, 0, 0.10265),
            ],
            dog: [-0.01437, 0.00067, 0.0336, 0.0902, -0.06273],
            accents: [-0.01281, -0.04883, 0.01301, 0.01696, -0.01201],
            long: [0.05287, -0.03711, 0.07143, 0.00493, -0.06019],
        },
        TextModel::MpnetBaseV2 => Reference {
            ids: [0, 1041, 3903, 2],
            cosines: [
                (0, 1, 0.85262),
                (0, 2, 0.19693),
                (0, 3, 0.66858),
                (4, 5, 0.64653),
                (7, 8, 0.53607),
                (6, 0, 0.03393),
            ],
            dog: [0.05668, -0.01258, -0.01762, -0.02613, 0.00278],
            accents: [0.02693, 0.01995, 0.01004, -0.04587, -0.02586],
            long: [-0.02567, 0.02436, -0.02494, 0.01608, -0.0651],
        },
    }
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol, "{what}[{i}]: got {g:.5}, reference {w:.5} (got {got:?})");
    }
}

fn matches_reference(model: TextModel) {
    let enc = load(model);
    let r = reference(model);
    assert_eq!(enc.token_ids("a dog").unwrap(), r.ids);
    let e = enc.embed(&TEXTS).unwrap();
    for &(i, j, want) in &r.cosines {
        let got = cosine(&e[i], &e[j]);
        assert!(
            (got - want).abs() < 1e-4,
            "{}: cos({:?}, {:?}) = {got:.5}, reference {want:.5}",
            model.name(),
            TEXTS[i],
            TEXTS[j]
        );
    }
    assert_eq!(r.cosines.map(|(i, j, _)| (i, j)), PAIRS);
    assert_close(&format!("{} 'a dog'", model.name()), &e[0][..5], &r.dog, 1e-4);
    assert_close(&format!("{} accented text", model.name()), &e[9][..5], &r.accents, 1e-4);
    let long = enc.embed(&[&long_text()]).unwrap();
    assert_close(&format!("{} long text", model.name()), &long[0][..5], &r.long, 1e-4);
}

#[test]
fn minilm_matches_reference() {
    matches_reference(TextModel::MiniLmL6V2);
}

#[test]
fn mpnet_matches_reference() {
    matches_reference(TextModel::MpnetBaseV2);
}

#[test]
fn related_labels_are_closer_than_unrelated_ones() {
    for model in TextModel::ALL {
        let e = load(model).embed(&["a dog", "a puppy", "a spreadsheet"]).unwrap();
        let (puppy, sheet) = (cosine(&e[0], &e[1]), cosine(&e[0], &e[2]));
        assert!(puppy > sheet + 0.3, "{}: cos(dog, puppy) {puppy} vs cos(dog, spreadsheet) {sheet}", model.name());
    }
}

/// Each model's stated top-3 duplicate threshold is the one its calibration pairs give, and the
/// paper's CLIP threshold (0.81) would keep most paraphrases of these encoders apart.
#[test]
fn duplicate_thresholds_are_calibrated() {
    use dissect::text_encoder::calibration::{best_threshold, pair_cosines, DISTINCT, PARAPHRASES};
    // Every model is calibrated (and printed) before any is checked, so one run shows them all.
    let calibrated: Vec<(TextModel, f32, f64, f64)> = TextModel::ALL
        .into_iter()
        .map(|model| {
            let enc = load(model);
            let para = pair_cosines(&PARAPHRASES, |t| enc.embed(t)).unwrap();
            let dist = pair_cosines(&DISTINCT, |t| enc.embed(t)).unwrap();
            let (threshold, accuracy) = best_threshold(&para, &dist);
            let right = para.iter().filter(|&&c| c > 0.81).count() + dist.iter().filter(|&&c| c <= 0.81).count();
            let clip_accuracy = right as f64 / (para.len() + dist.len()) as f64;
            println!(
                "{}: calibrated {threshold:.3} (accuracy {accuracy:.3}; {clip_accuracy:.3} at CLIP's 0.81); stated {}",
                model.name(),
                model.duplicate_cosine()
            );
            (model, threshold, accuracy, clip_accuracy)
        })
        .collect();
    for (model, threshold, accuracy, clip_accuracy) in calibrated {
        assert!(accuracy >= 0.85, "{}: the pairs separate ({accuracy})", model.name());
        assert!(accuracy > clip_accuracy, "{}: calibration beats CLIP's threshold", model.name());
        assert!(
            (model.duplicate_cosine() - threshold).abs() < 0.02,
            "{}: stated threshold {} but the calibration gives {threshold:.3}",
            model.name(),
            model.duplicate_cosine()
        );
        assert_eq!(TextEncoder::duplicate_cosine(load(model)), model.duplicate_cosine());
    }
}

#[test]
fn embeddings_are_unit_length_with_the_model_dimension() {
    for (model, dim) in [(TextModel::MiniLmL6V2, 384), (TextModel::MpnetBaseV2, 768)] {
        let enc = load(model);
        assert_eq!(enc.dim(), dim);
        let e = enc.embed(&["stripes", "", "   ", "a red double-decker bus on a wet London street"]).unwrap();
        assert_eq!(e.len(), 4);
        for (i, v) in e.iter().enumerate() {
            assert_eq!(v.len(), dim, "{} text {i}", model.name());
            assert!(v.iter().all(|x| x.is_finite()), "{} text {i}", model.name());
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "{} text {i}: norm {norm}", model.name());
        }
        assert!(enc.embed(&[]).unwrap().is_empty());
    }
}

#[test]
fn batched_equals_one_at_a_time() {
    let long = long_text();
    // Mixed lengths, a duplicate and an empty text: every padding and ordering case.
    let texts =
        ["water", "a cat sitting on a windowsill in the afternoon sun", "", long.as_str(), "water", "grass", "a dog"];
    for model in TextModel::ALL {
        let enc = load(model);
        let batched = enc.embed(&texts).unwrap();
        for (text, b) in texts.iter().zip(&batched) {
            let single = enc.embed(&[text]).unwrap().remove(0);
            let diff = single.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            assert!(
                diff < 1e-5,
                "{}: {:?} differs by {diff} between batch and single",
                model.name(),
                &text[..text.len().min(30)]
            );
        }
        assert_eq!(batched[0], batched[4], "{}: the same text twice in one batch", model.name());
    }
}

#[test]
fn long_texts_are_truncated_to_the_model_limit() {
    for (model, limit) in [(TextModel::MiniLmL6V2, 256), (TextModel::MpnetBaseV2, 384)] {
        let enc = load(model);
        assert_eq!(enc.max_tokens(), limit);
        let long = long_text();
        let ids = enc.token_ids(&long).unwrap();
        assert_eq!(ids.len(), limit, "{}", model.name());
        assert_eq!(ids.last(), enc.token_ids("").unwrap().last(), "{}: ends with the separator token", model.name());
        // Ten times longer still: the same first `limit` tokens, so the same embedding.
        let longer = vec![long.as_str(); 10].join(" ");
        let e = enc.embed(&[&long, &longer]).unwrap();
        let diff = e[0].iter().zip(&e[1]).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(diff < 1e-5, "{}: {diff}", model.name());
    }
}

#[test]
fn missing_weights_folder_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("all-MiniLM-L6-v2");
    let err = SentenceEncoder::load(&dir, TextModel::MiniLmL6V2, Device::Cpu).unwrap_err();
    assert!(matches!(&err, Error::TextModelFile { path, .. } if path.starts_with(&dir)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("all-MiniLM-L6-v2") && msg.contains("scripts/setup.sh"), "{msg}");

    // Config and tokenizer present, weights missing: the message names the weights file.
    std::fs::create_dir_all(&dir).unwrap();
    let real = TextModel::MiniLmL6V2.default_dir();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(real.join(f), dir.join(f))
            .unwrap_or_else(|e| panic!("{}: {e}; run scripts/setup.sh", real.join(f).display()));
    }
    let msg = SentenceEncoder::load(&dir, TextModel::MiniLmL6V2, Device::Cpu).unwrap_err().to_string();
    assert!(msg.contains("model.safetensors") && msg.contains("scripts/setup.sh"), "{msg}");
}

#[test]
fn wrong_model_folder_is_refused() {
    load(TextModel::MpnetBaseV2); // fails with set-up instructions when the assets are missing
    let err =
        SentenceEncoder::load(&TextModel::MpnetBaseV2.default_dir(), TextModel::MiniLmL6V2, Device::Cpu).unwrap_err();
    assert!(matches!(err, Error::Architecture { .. }), "{err:?}");
    assert!(err.to_string().contains("mpnet"), "{err}");
}

#[test]
fn text_encoder_trait_reports_provenance() {
    let mini: &dyn TextEncoder = load(TextModel::MiniLmL6V2);
    let info = mini.info();
    assert_eq!((info.role, info.name.as_str(), info.paper_equivalent), (Role::TextEncoder, "all-MiniLM-L6-v2", false));
    assert!(info.note.is_some());
    let mpnet: &dyn TextEncoder = load(TextModel::MpnetBaseV2);
    let info = mpnet.info();
    assert_eq!((info.role, info.name.as_str(), info.paper_equivalent), (Role::TextEncoder, "all-mpnet-base-v2", true));
    let via_trait = mpnet.embed(&["a dog"]).unwrap();
    assert_eq!(via_trait, load(TextModel::MpnetBaseV2).embed(&["a dog"]).unwrap());
}

/// 100 short labels, like one layer's candidate concepts. Generous bound: the point is to catch
/// an accidental slow path (per-text forward passes, debug build), not to benchmark.
#[test]
fn hundred_short_labels_are_fast() {
    let labels: Vec<String> = (0..100)
        .map(|i| format!("{} {}", ["striped", "red", "round", "furry", "metal"][i % 5], LABELS[i % LABELS.len()]))
        .collect();
    let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
    for (model, bound) in [(TextModel::MiniLmL6V2, 5.0), (TextModel::MpnetBaseV2, 30.0)] {
        let enc = load(model);
        enc.embed(&refs[..4]).unwrap(); // warm-up
        let t0 = Instant::now();
        let e = enc.embed(&refs).unwrap();
        let secs = t0.elapsed().as_secs_f64();
        eprintln!("{}: 100 labels in {:.3} s", model.name(), secs);
        assert_eq!(e.len(), 100);
        assert!(secs < bound, "{}: 100 labels took {secs:.2} s", model.name());
    }
}

const LABELS: [&str; 20] = [
    "dog",
    "cat",
    "car wheel",
    "bird feathers",
    "tree bark",
    "water surface",
    "brick wall",
    "human face",
    "text",
    "sky",
    "grass",
    "window",
    "fence",
    "flower petals",
    "food on a plate",
    "keyboard",
    "clock face",
    "fur",
    "road",
    "mountain",
];
