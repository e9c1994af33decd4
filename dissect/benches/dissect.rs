//! Amortised seconds per neuron of Steps 1–3 on the embedded default (run with
//! `cargo bench -p dissect --bench dissect`; several minutes on 2 cores).
//!
//! Target: a full intermediate layer of the built-in EfficientNet-Lite0 (default `stage3`, 40
//! units; `DND_BENCH_LAYER` picks another) on the embedded default, with a per-stage breakdown.
//! The reference measured in the same run is the same pipeline *without* amortisation: each of
//! the first `DND_BENCH_REFERENCE` neurons (default 4) dissected on its own with fresh caches,
//! as a per-neuron implementation would. The paper's figure (~38.8 s per neuron on a V100,
//! dominated by LLM calls and diffusion) is printed for context only.

use dissect::concepts::embedded::{embedded_providers, EmbeddedOptions};
use dissect::concepts::pipeline::{DissectOptions, LayerDissector, Providers, StageTimes};
use dissect::model::{EfficientNetLite, LoadOptions, TargetModel, Variant};
use dissect::partition::Partition;
use dissect::probe::{scan, ImageLimits};
use dissect::record::{record_layers, ImageSource, RecordOptions};
use std::time::Instant;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_string())
}

fn print_breakdown(what: &str, neurons: usize, wall: f64, record_s: f64, t: &StageTimes) {
    let per = |d: std::time::Duration| d.as_secs_f64() / neurons as f64;
    println!(
        "{what:<28} {:>6.2} s/neuron over {neurons} neurons ({wall:.1} s): activations {:.3}, crops {:.3}, captions {:.3}, \
         LLM {:.3}, concept images {:.3}, concept activations {:.3}, scoring {:.3}",
        (wall + record_s) / neurons as f64,
        record_s / neurons as f64,
        per(t.crops),
        per(t.captions),
        per(t.llm),
        per(t.concept_images),
        per(t.concept_activations),
        per(t.scoring),
    );
}

fn main() {
    let layer_name = env_or("DND_BENCH_LAYER", "stage3");
    let reference_n: usize = env_or("DND_BENCH_REFERENCE", "4").parse().expect("DND_BENCH_REFERENCE: a number");
    let root = dissect::assets::assets_dir().join("probe/builtin");
    let set = scan(&root, ImageLimits::default()).expect("built-in probing set (run scripts/setup.sh)");
    let images = ImageSource::from_scanned(&set);
    let descriptions: Vec<Option<String>> = set.images.iter().map(|i| i.description.clone()).collect();
    let target = EfficientNetLite::load_default(Variant::Lite0, LoadOptions::default()).expect("Lite0 weights");
    let layer = target.layer_index(&layer_name).expect("layer");
    let channels = target.layers()[layer].channels;

    let t = Instant::now();
    let rec = record_layers(&target, &images, &[layer], &RecordOptions::default(), &mut |_| {}).expect("recording");
    let record_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let partition = Partition::of_set(&set, 0, 0.3);
    let d_probe = partition.d_probe(&rec.layers[0]);
    let providers: Providers =
        embedded_providers(partition.concept_pool(&set), &EmbeddedOptions::default()).expect("embedded default");
    println!("loading the embedded components: {:.1} s (not counted per neuron)", t.elapsed().as_secs_f64());

    let dissect = |units: &[usize], chunk: usize| {
        let d = LayerDissector {
            model: &target,
            layer,
            images: &images,
            descriptions: &descriptions,
            summaries: &d_probe,
            providers: providers.clone(),
            options: DissectOptions { chunk, ..DissectOptions::default() },
            cancel: None,
        };
        let t = Instant::now();
        let mut failed = 0;
        let times = d
            .run::<()>(units, &mut |_| {}, &mut |o| {
                failed += matches!(o, dissect::concepts::pipeline::NeuronOutcome::Failed { .. }) as usize;
                Ok(())
            })
            .unwrap();
        (t.elapsed().as_secs_f64(), times, failed)
    };

    // Reference: one neuron at a time, nothing shared between neurons, recording counted per neuron.
    let mut ref_wall = 0.0;
    let mut ref_times = StageTimes::default();
    for unit in 0..reference_n.min(channels) {
        let (wall, t, _) = dissect(&[unit], 1);
        ref_wall += wall + record_s;
        ref_times.crops += t.crops;
        ref_times.captions += t.captions;
        ref_times.llm += t.llm;
        ref_times.concept_images += t.concept_images;
        ref_times.concept_activations += t.concept_activations;
        ref_times.scoring += t.scoring;
    }
    let n_ref = reference_n.min(channels);

    let all: Vec<usize> = (0..channels).collect();
    let (wall, times, failed) = dissect(&all, DissectOptions::default().chunk);
    println!(
        "EfficientNet-Lite0 `{layer_name}`: {channels} neurons, {} probing images, embedded default, 2 CPU threads",
        images.len()
    );
    print_breakdown("amortised (whole layer)", channels, wall, record_s, &times);
    print_breakdown(
        "reference (one at a time)",
        n_ref,
        ref_wall - record_s * n_ref as f64,
        record_s * n_ref as f64,
        &ref_times,
    );
    let amortised = (wall + record_s) / channels as f64;
    let reference = ref_wall / n_ref as f64;
    println!("speed-up from amortisation: {:.2}×; failed neurons: {failed}", reference / amortised);
    println!("target ≤ 1 s per neuron: {}", if amortised <= 1.0 { "met" } else { "NOT met" });
    println!("paper (for context, not comparable hardware): ~38.8 s per neuron on a V100");
}
