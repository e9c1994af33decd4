//! `dnd record` and `dnd crops`: the engine from the command line, with a progress bar and a
//! summary at the end.

use super::bars::with_step_bars;
use dissect::crops::Summary;
use dissect::probe::ScannedSet;
use dissect::record::{LayerSource, Recording};
use studio::config::Config;
use studio::engine::d_top::NeuronDTop;

/// `dnd record`: records the layers and registers them (see [`studio::dissection::record_layers`]).
pub fn record(config: &Config, model: &str, probe: &str, layers: &[String], batch: usize) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let recorded =
        with_step_bars(|on_step| studio::dissection::record_layers(config, model, probe, layers, batch, on_step))?;
    print_summary(&recorded.set, &recorded.recording, started);
    Ok(())
}

fn print_summary(set: &ScannedSet, recording: &Recording, started: std::time::Instant) {
    let secs = started.elapsed().as_secs_f64();
    println!(
        "recorded {} images ({} skipped, {} files rejected at scan) in {secs:.1} s; {} forwarded{}",
        set.images.len() - recording.skipped.len(),
        recording.skipped.len(),
        set.rejected.len(),
        recording.forwarded,
        if recording.forwarded > 0 {
            format!(" ({:.1} images/s)", recording.forwarded as f64 / secs)
        } else {
            String::new()
        },
    );
    for (layer, source) in recording.layers.iter().zip(&recording.sources) {
        let from = match source {
            LayerSource::Computed => "computed".to_string(),
            LayerSource::Cache => "from cache".to_string(),
            LayerSource::Resumed { from } => format!("resumed at image {from}"),
        };
        println!(
            "  {:<12} {:>5} units × {} images, mean and max per unit ({from})",
            layer.layer, layer.channels, layer.n_images
        );
    }
    for s in recording.skipped.iter().take(20) {
        println!("  skipped: {}", s.reason);
    }
    for r in set.rejected.iter().take(20) {
        println!("  rejected: {} ({})", r.rel_path, r.reason);
    }
}

/// Prints D_top of one neuron (see [`studio::engine::d_top`]): the top images of D_probe, their
/// crops, and the re-ranked top-K.
pub fn crops(
    config: &Config,
    model: &str,
    probe: &str,
    layer_name: &str,
    unit: usize,
    summary: Summary,
) -> anyhow::Result<()> {
    let NeuronDTop { set, partition: info, top } = with_step_bars(|on_step| {
        studio::engine::d_top::neuron_d_top(config, model, probe, layer_name, unit, summary, on_step)
    })?;
    let name = |i: usize| set.images[i].rel_path.as_str();
    println!(
        "top-{} of the {} D_probe images ({} held out) for {layer_name} unit {unit} ({summary:?} activation):",
        top.top_images.len(),
        info.probe,
        info.concept_pool + info.evaluation
    );
    for ((i, act), boxes) in top.top_images.iter().zip(&top.crops) {
        let crops = boxes.iter().map(|b| format!("[{},{} → {},{}]", b.x0, b.y0, b.x1, b.y1)).collect::<Vec<_>>();
        println!(
            "  {act:>9.4}  {}  crops: {}",
            name(*i),
            if crops.is_empty() { "none".into() } else { crops.join(" ") }
        );
    }
    println!("D_top (probing images ∪ crops, re-ranked):");
    for (rank, c) in top.d_top.iter().enumerate() {
        let what = match c.crop {
            Some(b) => format!("crop [{},{} → {},{}] of {}", b.x0, b.y0, b.x1, b.y1, name(c.image_index)),
            None => name(c.image_index).to_string(),
        };
        println!("  {:>2}. {:>9.4}  {what}", rank + 1, c.activation);
    }
    Ok(())
}
