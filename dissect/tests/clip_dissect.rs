//! CLIP-Dissect with a tiny fake CLIP (a TorchScript archive written here, see
//! `dissect::clip_dissect::testing`) and a WordLevel tokenizer: CLIP's token layout, both
//! encoders, the embedding caches and the labels of a synthetic layer.

use dissect::clip_dissect::testing::{write_fake_clip, write_word_tokenizer};
use dissect::clip_dissect::text::CONTEXT_LENGTH;
use dissect::clip_dissect::{label_units, Clip, ClipTextEncoder, ClipTokenizer, Origin, SoftWpmiParams, UnitLabel};
use dissect::crops::Summary;
use dissect::record::{ActivationSummaries, ImageSource};
use std::path::{Path, PathBuf};
use tch::Device;

/// Vocabulary: ids 0–3 are these words, then [UNK] = 4, start = 5, end = 6.
const WORDS: [&str; 4] = ["!", "red", "green", "blue"];
const DIM: usize = 3;
/// Token embeddings (V × 3): colour words point along their (normalised) channel.
const TOKENS: [f32; 21] = [
    1.0, 1.0, 1.0, // !
    1.0, -0.5, -0.5, // red
    -0.5, 1.0, -0.5, // green
    -0.5, -0.5, 1.0, // blue
    0.2, 0.1, 0.3, // [UNK]
    1.0, 1.0, 1.0, // start
    1.0, 1.0, 1.0, // end
];
const IDENTITY: [f32; 9] = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];

struct FakeClip {
    dir: tempfile::TempDir,
    pt: PathBuf,
    tokenizer: PathBuf,
}

fn fake_clip() -> FakeClip {
    let dir = tempfile::tempdir().unwrap();
    let pt = dir.path().join("fake-clip.pt");
    write_fake_clip(&pt, DIM, &IDENTITY, &TOKENS).unwrap();
    let tokenizer = dir.path().join("tokenizer.json");
    assert_eq!(write_word_tokenizer(&tokenizer, &WORDS).unwrap(), 7);
    FakeClip { dir, pt, tokenizer }
}

fn normalized(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5), "{what}: {a:?} vs {b:?}");
}

#[test]
fn tokens_follow_clips_layout() {
    let f = fake_clip();
    let t = ClipTokenizer::from_file(&f.tokenizer).unwrap();
    let ids = t.tokens("Red  green").unwrap();
    assert_eq!(ids.len(), CONTEXT_LENGTH);
    assert_eq!(&ids[..4], &[5, 1, 2, 6], "start, red, green, end");
    assert!(ids[4..].iter().all(|&i| i == 0), "zero padding: {ids:?}");
    assert_eq!(&t.tokens("purple").unwrap()[..3], &[5, 4, 6], "unknown word");
    // 100 words: cut to 75 so that start + 75 + end fill the context exactly.
    let long = vec!["blue"; 100].join(" ");
    let ids = t.tokens(&long).unwrap();
    assert_eq!((ids.len(), ids[0], ids[75], ids[76]), (77, 5, 3, 6));
    let batch = t.batch(&["red", "blue"]).unwrap();
    assert_eq!((batch.size(), batch.kind()), (vec![2, 77], tch::Kind::Int64));
}

#[test]
fn a_tokenizer_whose_end_token_is_not_the_largest_id_is_refused() {
    let f = fake_clip();
    let mut json: serde_json::Value = serde_json::from_slice(&std::fs::read(&f.tokenizer).unwrap()).unwrap();
    json["model"]["vocab"]["zebra"] = 9.into();
    std::fs::write(&f.tokenizer, json.to_string()).unwrap();
    let e = ClipTokenizer::from_file(&f.tokenizer).err().expect("refused").to_string();
    assert!(e.contains("<|endoftext|>") && e.contains("largest id is 9"), "{e}");
    let e = ClipTokenizer::from_file(&f.dir.path().join("missing.json")).err().expect("refused").to_string();
    assert!(e.contains("missing.json"), "{e}");
}

#[test]
fn text_encoder_runs_encode_text_on_the_token_layout() {
    let f = fake_clip();
    let enc = ClipTextEncoder::load(&f.pt, &f.tokenizer, Device::Cpu).unwrap();
    let mut calls = Vec::new();
    let emb = enc.encode(&["red", "Blue", "green red"], &mut |done, total| calls.push((done, total))).unwrap();
    assert_eq!(emb.size(), vec![3, 3]);
    assert_eq!(calls, vec![(3, 3)]);
    let row = |i: i64| Vec::<f32>::try_from(emb.get(i)).unwrap();
    // The fake returns the token before the end token: only right if the end is where CLIP's
    // argmax finds it.
    assert_close(&row(0), &normalized(&TOKENS[3..6]), "red");
    assert_close(&row(1), &normalized(&TOKENS[9..12]), "blue");
    assert_close(&row(2), &normalized(&TOKENS[3..6]), "last word of `green red`");
    // A TorchScript without encode_text is named with the reason.
    let e = ClipTextEncoder::load(&f.tokenizer, &f.tokenizer, Device::Cpu).err().expect("refused").to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
}

fn solid(dir: &Path, name: &str, rgb: [u8; 3]) -> ImageSource {
    let path = dir.join(name);
    image::RgbImage::from_pixel(40, 30, image::Rgb(rgb)).save(&path).unwrap();
    let sha = format!("{:0>64}", name.len().to_string() + &rgb.iter().map(|c| c.to_string()).collect::<String>());
    ImageSource::new(path, sha)
}

#[test]
fn clip_dissect_labels_a_layer_and_caches_both_embeddings() {
    let f = fake_clip();
    let imgs = f.dir.path().join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    let broken = imgs.join("broken.png");
    std::fs::write(&broken, b"not a png").unwrap();
    let images = vec![
        solid(&imgs, "red.png", [230, 20, 20]),
        solid(&imgs, "green.png", [20, 230, 20]),
        solid(&imgs, "blue.png", [20, 20, 230]),
        ImageSource::new(&broken, "f".repeat(64)),
        solid(&imgs, "pink.png", [240, 120, 120]),
    ];
    let cache = f.dir.path().join("cache");
    let clip = Clip::new(&f.pt, &f.tokenizer, &cache, Device::Cpu).unwrap();
    let concepts: Vec<String> = ["red", "green", "blue"].map(String::from).to_vec();

    let (text, origin) = clip.text_embeddings(&concepts, &mut |_, _| {}).unwrap();
    assert_eq!((origin, text.keys.len(), text.dim), (Origin::Computed, 3, 3));
    let mut skipped = Vec::new();
    let (img, origin) = clip.image_embeddings(&images, &mut |_, _| {}, &mut skipped).unwrap();
    assert_eq!(origin, Origin::Computed);
    assert!(img.is_missing(3) && !img.is_missing(0), "the unreadable image has a NaN row");
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0].contains("broken.png"), "{skipped:?}");
    // The red photo is closest to "red", the blue one to "blue".
    let cos = |i: usize, c: usize| img.row(i).iter().zip(text.row(c)).map(|(a, b)| a * b).sum::<f32>();
    assert!(cos(0, 0) > cos(0, 1) && cos(0, 0) > cos(0, 2));
    assert!(cos(2, 2) > cos(2, 0) && cos(2, 2) > cos(2, 1));

    // Second time: both from the cache, identical, without loading CLIP (its file may go).
    std::fs::rename(&f.pt, f.dir.path().join("moved.pt")).unwrap();
    let (text2, o1) = clip.text_embeddings(&concepts, &mut |_, _| panic!("no encoding on a cache hit")).unwrap();
    let (img2, o2) =
        clip.image_embeddings(&images, &mut |_, _| panic!("no encoding on a cache hit"), &mut skipped).unwrap();
    assert_eq!((o1, o2), (Origin::Cache, Origin::Cache));
    assert_eq!(text2, text);
    assert_eq!(img2.keys, img.keys);
    // A different concept list is a different cache entry (CLIP is gone, so it must fail).
    let other = vec!["blue".to_string()];
    assert!(clip.text_embeddings(&other, &mut |_, _| {}).is_err());

    // Layer of 3 units over the 5 images: unit 0 = redness, unit 1 = blueness, unit 2 constant.
    // Image 3 is unreadable for CLIP and image 4 unrecorded (NaN): both are left out.
    let rows: [[f32; 3]; 5] = [[9.0, 0.0, 1.0], [1.0, 1.0, 1.0], [0.0, 8.0, 1.0], [5.0, 5.0, 1.0], [f32::NAN; 3]];
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    let summaries = ActivationSummaries { layer: "l".into(), n_images: 5, channels: 3, mean: flat.clone(), max: flat };
    let params = SoftWpmiParams { top_k: 1, ..Default::default() };
    let out = label_units(&img2, &text2, &summaries, Summary::Mean, &[0, 1, 2], &params).unwrap();
    assert_eq!((out.images_used, out.top_k_used), (3, 1));
    match (&out.labels[0], &out.labels[1], &out.labels[2]) {
        (
            UnitLabel::Labelled { unit: 0, concept: 0, score: s0 },
            UnitLabel::Labelled { unit: 1, concept: 2, score: s1 },
            UnitLabel::Constant { unit: 2 },
        ) => assert!(s0.is_finite() && s1.is_finite()),
        other => panic!("unexpected labels {other:?}"),
    }
    let e = label_units(&img2, &text2, &summaries, Summary::Mean, &[3], &params).unwrap_err().to_string();
    assert!(e.contains("unit 3 is outside layer `l`"), "{e}");
}
