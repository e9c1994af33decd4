//! Steps 1–3 end to end on the real built-in networks and the real built-in probing images:
//! EfficientNet-Lite0 as the target, EfficientNet-Lite2 as the embedded captioner and image
//! encoder, concept images retrieved from the concept pool of the probing set's partition. The LLM and text encoder here are
//! small deterministic stand-ins so this test pins the pipeline's own behaviour; the real
//! embedded LLM and text encoder have their own tests and are exercised in `embedded_default.rs`.

mod common;

use dissect::concepts::classifier_captioner::ClassifierCaptioner;
use dissect::concepts::feature_encoder::FeatureEncoder;
use dissect::concepts::pipeline::{
    ChunkStep, DissectOptions, LayerDissector, NeuronOutcome, PipelineStage, Providers, RunProgress,
};
use dissect::concepts::retrieval::{PoolImage, RetrievalImages};
use dissect::concepts::shared_model::share;
use dissect::concepts::summarize::{LlmRound, SUMMARIZE_INSTRUCTION};
use dissect::concepts::{ChatModel, ChatRequest, ComponentInfo, ProviderError, ProviderResult, Role, TextEncoder};
use dissect::model::{LoadOptions, TargetModel, Variant};
use dissect::partition::Partition;
use dissect::probe::{self, ImageLimits, Split};
use dissect::record::{record_layers, ImageSource, RecordOptions};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Answers a summary request with the last word group of the first caption after "showing a",
/// or the first caption itself; simplification returns the caption unchanged.
struct FirstCaptionLlm {
    calls: AtomicUsize,
}

impl ChatModel for FirstCaptionLlm {
    fn info(&self) -> ComponentInfo {
        ComponentInfo::substitute(Role::Llm, "first-caption stand-in", "test")
    }
    fn complete(&self, r: &ChatRequest) -> ProviderResult<String> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let last = &r.messages.last().unwrap().content;
        let body: Vec<&str> = last.lines().skip(1).collect();
        if !last.starts_with(SUMMARIZE_INSTRUCTION) {
            return Ok(body.join(" "));
        }
        // Rotate through the captions with the seed so the N answers differ.
        let line = body[(r.seed as usize) % body.len()];
        let caption = line.split_once(". ").map(|x| x.1).unwrap_or(line);
        let phrase = caption.rsplit("showing ").next().unwrap_or(caption);
        let phrase = phrase.trim_start_matches("a photo of ");
        let first = phrase.split(" or ").next().unwrap();
        Ok(first.strip_prefix("an ").or_else(|| first.strip_prefix("a ")).unwrap_or(first).to_string())
    }
}

/// Bag of character trigrams, hashed into 64 buckets: similar strings get similar vectors.
struct TrigramEncoder;

impl TextEncoder for TrigramEncoder {
    fn info(&self) -> ComponentInfo {
        ComponentInfo::substitute(Role::TextEncoder, "trigram stand-in", "test")
    }
    fn embed(&self, texts: &[&str]) -> ProviderResult<Vec<Vec<f32>>> {
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0f32; 64];
                let chars: Vec<char> = format!("  {}  ", t.to_lowercase()).chars().collect();
                for w in chars.windows(3) {
                    let h = w.iter().fold(7u64, |h, c| h.wrapping_mul(31).wrapping_add(*c as u64));
                    v[(h % 64) as usize] += 1.0;
                }
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
                v.into_iter().map(|x| x / n).collect()
            })
            .collect())
    }
    fn duplicate_cosine(&self) -> f32 {
        0.9
    }
}

struct FailingLlm;
impl ChatModel for FailingLlm {
    fn info(&self) -> ComponentInfo {
        ComponentInfo::substitute(Role::Llm, "failing", "test")
    }
    fn complete(&self, _: &ChatRequest) -> ProviderResult<String> {
        Err(ProviderError::Request {
            endpoint: "http://127.0.0.1:9/v1/chat/completions".into(),
            reason: "connection refused".into(),
        })
    }
}

#[test]
fn dissects_real_neurons_with_crops_captions_retrieval_and_scores() {
    let root = dissect::assets::assets_dir().join("probe/builtin");
    let set = probe::scan(&root, ImageLimits::default()).expect("built-in probing set (run scripts/setup.sh)");
    let images = ImageSource::from_scanned(&set);
    let descriptions: Vec<Option<String>> = set.images.iter().map(|i| i.description.clone()).collect();

    let target = common::load(Variant::Lite0, LoadOptions::default());
    let layer = target.layer_index("stage6").unwrap();
    let classifier = target.layer_index("classifier").unwrap();
    let rec = record_layers(&target, &images, &[layer, classifier], &RecordOptions::default(), &mut |_| {}).unwrap();

    let lite2 = share(common::load(Variant::Lite2, LoadOptions::default()));
    let text: Arc<dyn TextEncoder> = Arc::new(TrigramEncoder);
    let partition = Partition::of_set(&set, 0, 0.3);
    let d_probe = partition.d_probe(rec.layer("stage6").unwrap());
    let pool: Vec<PoolImage> = partition
        .concept_pool(&set)
        .into_iter()
        .map(|h| {
            let label = h.name.split('/').next().unwrap_or_default().to_string();
            PoolImage { key: h.key, path: h.path, name: h.name, text: h.description.unwrap_or(label) }
        })
        .collect();
    assert!(pool.len() > 60, "concept pool of the built-in set: {}", pool.len());
    let probe_rows = partition.rows(Split::Probe);
    let llm = Arc::new(FirstCaptionLlm { calls: AtomicUsize::new(0) });
    let providers = Providers {
        captioner: Arc::new(ClassifierCaptioner::new(lite2.clone()).unwrap()),
        llm: llm.clone(),
        concept_images: Arc::new(RetrievalImages::new(pool, text.clone()).unwrap()),
        image_encoder: Arc::new(FeatureEncoder::new(lite2, "head").unwrap()),
        text_encoder: text,
    };
    assert!(providers.uses_substitutes());

    let opts = DissectOptions { chunk: 2, ..DissectOptions::default() };
    let dissector = LayerDissector {
        model: &target,
        layer,
        images: &images,
        descriptions: &descriptions,
        summaries: &d_probe,
        providers: providers.clone(),
        options: opts.clone(),
        cancel: None,
    };
    let mut outcomes = Vec::new();
    let mut seen_progress = Vec::new();
    let times = dissector
        .run::<()>(
            &[5, 17, 40],
            &mut |p| {
                if let RunProgress::Neuron(p) = p {
                    seen_progress.push(p.finished)
                }
            },
            &mut |o| {
                outcomes.push(o);
                Ok(())
            },
        )
        .unwrap();
    assert_eq!(seen_progress, vec![1, 2, 3]);
    assert!(times.crops.as_nanos() > 0 && times.concept_activations.as_nanos() > 0);
    assert_eq!(outcomes.iter().map(|o| o.unit()).collect::<Vec<_>>(), vec![5, 17, 40]);

    for o in &outcomes {
        let NeuronOutcome::Done(r) = o else { panic!("neuron failed: {o:?}") };
        // D_top: K entries, best first, each captioned; crops have their own captions.
        assert_eq!(r.top.len(), 10);
        assert!(r.top.windows(2).all(|w| w[0].activation >= w[1].activation));
        assert!(r.top.iter().all(|e| !e.caption.is_empty()));
        // D_top comes from D_probe only, and the unit's strongest D_probe image is at least as
        // strong as its recorded summary.
        assert!(r.top.iter().all(|e| probe_rows.contains(&e.image_index)), "D_top holds a held-out image");
        let column = d_probe.summaries().column(r.unit, dissect::crops::Summary::Mean);
        let best_probe = column.filter(|v| !v.is_nan()).fold(f32::MIN, f32::max);
        assert!(r.top[0].activation >= best_probe - 1e-4);
        // Step 3 is not circular: none of the neuron's own top images is a concept image.
        let own: Vec<&str> = r.top.iter().map(|e| set.images[e.image_index].sha256.as_str()).collect();
        for c in &r.concepts {
            assert!(
                c.images.iter().all(|i| !own.contains(&i.key.as_str())),
                "{}: a D_top image came back as a concept image",
                c.label
            );
        }
        // A crop is captioned from its own pixels: never with its image's description.
        for e in r.top.iter().filter(|e| e.crop.is_some()) {
            assert!(e.caption.starts_with("a photo of"), "crop caption {:?} carries a description", e.caption);
        }

        assert!(!r.concepts.is_empty());
        let best = r.best.expect("a best concept");
        assert_eq!(r.top3[0], best);
        assert!(r.top3.len() <= 3);
        for c in &r.concepts {
            assert!(c.images.len() <= 10 && !c.images.is_empty(), "{}: {} images", c.label, c.images.len());
            // Each concept image's recorded activation is that of the target unit.
            assert!(c.images.iter().all(|i| i.activation.is_finite()));
            assert!(c.scores.image_products >= -1.0 && c.scores.image_products <= 1.0);
        }
        // The chosen concept has the best combined score.
        let top_score = r.concepts[best].scores.combined;
        assert!(r.concepts.iter().all(|c| c.scores.combined <= top_score));
    }

    // A concept image's activation equals a direct forward pass of the target on that image.
    let NeuronOutcome::Done(r) = &outcomes[0] else { unreachable!() };
    let img = &r.concepts[0].images[0];
    let path = set.images.iter().find(|i| i.sha256 == img.key).map(|i| root.join(&i.rel_path)).unwrap();
    let t = dissect::preprocess::load_tensor(&path, &target.preprocessing()).unwrap().unsqueeze(0);
    let direct = dissect::crops::Summary::Mean.reduce(&target.forward_layers(&t, &[layer]).unwrap()[0]);
    let direct = direct.double_value(&[0, r.unit as i64]) as f32;
    assert!((direct - img.activation).abs() < 1e-3 * direct.abs().max(1.0), "{direct} vs {}", img.activation);

    // A failing LLM fails each neuron at the candidates stage, naming the endpoint; the run goes on.
    let failing = LayerDissector { providers: Providers { llm: Arc::new(FailingLlm), ..providers }, ..dissector };
    let mut failed = Vec::new();
    failing
        .run::<()>(&[1, 2], &mut |_| {}, &mut |o| {
            failed.push(o);
            Ok(())
        })
        .unwrap();
    assert_eq!(failed.len(), 2);
    for o in failed {
        let NeuronOutcome::Failed { stage, reason, .. } = o else { panic!("expected failure") };
        assert_eq!(stage, PipelineStage::Candidates);
        assert!(reason.contains("127.0.0.1:9"), "{reason}");
    }
    assert!(llm.calls.load(Ordering::Relaxed) > 0);
}

#[test]
fn classifier_units_get_no_crops_and_a_class_related_label() {
    let root = dissect::assets::assets_dir().join("probe/builtin");
    let set = probe::scan(&root, ImageLimits::default()).unwrap();
    let images = ImageSource::from_scanned(&set);
    let descriptions: Vec<Option<String>> = set.images.iter().map(|i| i.description.clone()).collect();
    let target = common::load(Variant::Lite0, LoadOptions::default());
    let classifier = target.layer_index("classifier").unwrap();
    let rec = record_layers(&target, &images, &[classifier], &RecordOptions::default(), &mut |_| {}).unwrap();
    // Every image probes here (the pool below is the whole set): this test is about crops.
    let d_probe = Partition::all_probe(set.images.len()).d_probe(&rec.layers[0]);
    let lite2 = share(common::load(Variant::Lite2, LoadOptions::default()));
    let text: Arc<dyn TextEncoder> = Arc::new(TrigramEncoder);
    let pool: Vec<PoolImage> = set
        .images
        .iter()
        .map(|i| PoolImage {
            key: i.sha256.clone(),
            path: root.join(&i.rel_path),
            name: i.rel_path.clone(),
            text: i.description.clone().unwrap_or_default(),
        })
        .collect();
    let providers = Providers {
        captioner: Arc::new(ClassifierCaptioner::new(lite2.clone()).unwrap()),
        llm: Arc::new(FirstCaptionLlm { calls: AtomicUsize::new(0) }),
        concept_images: Arc::new(RetrievalImages::new(pool, text.clone()).unwrap()),
        image_encoder: Arc::new(FeatureEncoder::new(lite2, "head").unwrap()),
        text_encoder: text,
    };
    let dissector = LayerDissector {
        model: &target,
        layer: classifier,
        images: &images,
        descriptions: &descriptions,
        summaries: &d_probe,
        providers,
        options: DissectOptions::default(),
        cancel: None,
    };
    let mut out = Vec::new();
    let mut reported = Vec::new();
    // 967 = espresso: the built-in set has scikit-image's coffee photo.
    dissector.run::<()>(&[967], &mut |p| reported.push(p), &mut |o| Ok(out.push(o))).unwrap();
    // Each step of the chunk is announced as it starts, with its size, then the neuron.
    let steps: Vec<ChunkStep> =
        reported.iter().filter_map(|p| if let RunProgress::Step(c) = p { Some(c.step) } else { None }).collect();
    assert!(
        matches!(
            steps.as_slice(),
            [
                ChunkStep::TopImages,
                ChunkStep::Captions { regions: 10 },
                ChunkStep::Llm(LlmRound::Simplify { .. }),
                ChunkStep::Llm(LlmRound::Summaries { requests: 5 }),
                ..,
                ChunkStep::ConceptImages { .. },
                ChunkStep::Scores
            ]
        ),
        "{steps:?}"
    );
    assert!(matches!(reported.last(), Some(RunProgress::Neuron(p)) if p.finished == 1 && p.total == 1));
    let NeuronOutcome::Done(r) = &out[0] else { panic!("{:?}", out[0]) };
    assert!(r.top.iter().all(|e| e.crop.is_none()), "classifier units get no crops");
    let coffee = set.images.iter().position(|i| i.rel_path.starts_with("skimage/coffee")).unwrap();
    assert_eq!(r.top[0].image_index, coffee, "the coffee photo is the espresso unit's top image");
    assert!(r.top[0].caption.contains("espresso") || r.top[0].caption.contains("coffee"), "{}", r.top[0].caption);
    assert!(r.top.iter().any(|e| e.caption.contains("espresso")), "the leaky captioner names the class");

    // Leak-free: the same unit's captions never name its class; the other units' are untouched.
    let leak_free =
        LayerDissector { options: DissectOptions { leak_free: true, ..DissectOptions::default() }, ..dissector };
    let mut out = Vec::new();
    leak_free.run::<()>(&[967, 504], &mut |_| {}, &mut |o| Ok(out.push(o))).unwrap();
    let NeuronOutcome::Done(r) = &out[0] else { panic!("{:?}", out[0]) };
    assert!(
        r.top.iter().all(|e| !dissect::imagenet::names_any(&e.caption, &[967])),
        "{:?}",
        r.top.iter().map(|e| &e.caption).collect::<Vec<_>>()
    );
    assert!(r.candidates.labels.iter().all(|l| !l.contains("espresso")), "{:?}", r.candidates.labels);
    let NeuronOutcome::Done(other) = &out[1] else { panic!("{:?}", out[1]) };
    assert!(
        other.top.iter().all(|e| !dissect::imagenet::names_any(&e.caption, &[504])),
        "unit 504 (coffee mug) withholds its own class"
    );
}
