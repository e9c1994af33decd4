//! `dnd quality` and `dnd evaluate-final`: label quality reports as text or JSON.

use super::bars::with_step_bars;
use studio::config::Config;
use studio::evaluate::final_layer::{FinalLayerReport, Scores, COVERED_MIN_IMAGES};
use studio::evaluate::stats::MeanSem;
use studio::evaluate::{self, QualityArgs, QualityReport};

/// `dnd quality`.
pub fn quality(config: &Config, args: &QualityArgs, json: bool) -> anyhow::Result<()> {
    let report = with_step_bars(|on_step| evaluate::quality(config, args, on_step))?;
    show(&report, json, print_quality)
}

/// `dnd evaluate-final`.
pub fn evaluate_final(
    config: &Config,
    model: &str,
    probe: &str,
    layer: &str,
    examples: usize,
    json: bool,
) -> anyhow::Result<()> {
    let report = with_step_bars(|on_step| evaluate::evaluate_final(config, model, probe, layer, examples, on_step))?;
    show(&report, json, print_final_layer)
}

/// A report as JSON (for scripts) or as text.
fn show<R: serde::Serialize>(report: &R, json: bool, as_text: fn(&R)) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        as_text(report);
    }
    Ok(())
}

/// The report as text.
fn print_final_layer(report: &FinalLayerReport) {
    let c = &report.coverage;
    println!(
        "final layer ({} `{}`): cosine(label, full class synonym line) under {}",
        report.model, report.layer, report.encoder
    );
    println!(
        "  covered: {} of {} classes are predicted top-1 on ≥ {COVERED_MIN_IMAGES} of the {} D_probe images",
        c.classes.len(),
        c.units,
        c.images
    );
    let line = |encoder: &str, s: &Scores| {
        let covered = s.covered.map(|s| s.to_string()).unwrap_or_else(|| "no covered unit labelled".into());
        format!("{encoder} all {}   covered {covered}", s.all)
    };
    for m in &report.methods {
        let name = method_name(&m.method, &m.source);
        println!("  {name:<28} {}", line("mpnet", &m.mpnet));
        if let Some(clip) = &m.clip {
            println!("  {:<28} {}", "", line("CLIP ", clip));
        }
    }
    if let Some(clip) = &report.clip_encoder {
        println!("  CLIP: cosine under {clip}");
    }
    println!(
        "  (paper, ResNet-50 fc, mpnet / CLIP ViT-B/16: DnD 0.4588 / 0.7598, MILAN 0.2788 / 0.7080, CLIP-Dissect 0.5239 / 0.7900)"
    );
    if !report.examples.is_empty() {
        println!("  examples:");
    }
    for e in &report.examples {
        let labels: Vec<String> = e.labels.iter().map(|(m, l, c)| format!("{m}: {l} ({c:.2})")).collect();
        let class = dissect::imagenet::short_name(&e.class_name);
        println!("    unit {:>4} {:<22} {}", e.unit, class, labels.join(" | "));
    }
}

fn method_name(method: &str, source: &str) -> String {
    if source.is_empty() {
        method.to_string()
    } else {
        format!("{method} ({source})")
    }
}

/// The report as text.
fn print_quality(r: &QualityReport) {
    let p = &r.partition;
    println!(
        "label quality of {}: probing set split {} D_probe / {} concept pool / {} evaluation images (seed {}, held out {:.0} %)",
        r.model,
        p.probe,
        p.concept_pool,
        p.evaluation,
        p.split_seed,
        p.heldout_fraction * 100.0
    );
    if let Some(f) = &r.final_layer {
        print_final_layer(f);
    }
    println!(
        "simulation score: Spearman(cos(label, caption), activation) over {} evaluation images (chance: each unit scored with another unit's label)",
        r.evaluation_images
    );
    let fmt = |m: Option<MeanSem>| m.map(|s| s.to_string()).unwrap_or_else(|| "—".into());
    for l in &r.layers {
        for m in &l.methods {
            println!(
                "  {:<12} {:<28} {}   chance {}",
                l.layer,
                method_name(&m.method, &m.source),
                fmt(m.simulation),
                fmt(m.simulation_chance)
            );
        }
    }
    let classes: Vec<String> = r.classes.iter().map(|(c, n)| format!("{c} ({n})")).collect();
    println!("neurons as classifiers: AUROC of the unit whose label is closest to each class, on {}", r.classes_source);
    println!("  classes: {}", if classes.is_empty() { "none".into() } else { classes.join(", ") });
    for l in &r.layers {
        for m in &l.methods {
            println!("  {:<12} {:<28} {}", l.layer, method_name(&m.method, &m.source), fmt(m.auroc));
        }
    }
}
