//! `dnd clip-dissect`: native CLIP-Dissect with progress bars, then one line per unit and a summary.

use super::bars::with_step_bars;
use dissect::clip_dissect::{Origin, SoftWpmiParams};
use studio::clip_dissect::{run, ClipDissectArgs};
use studio::config::Config;

/// `dnd clip-dissect`: [`run`], then one line per unit and a summary.
pub fn clip_dissect(config: &Config, args: &ClipDissectArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let r = with_step_bars(|on_step| run(config, args, on_step))?;
    for reason in r.unreadable.iter().take(20) {
        eprintln!("skipped by CLIP: {reason}");
    }
    for (unit, text, score) in &r.labelled {
        println!("unit {unit:>4}: {text} ({score:.4})");
    }
    if !r.constant.is_empty() {
        println!("not labelled (the same activation on every image): units {:?}", r.constant);
    }
    let origin = |o: Origin| if o == Origin::Cache { "from cache" } else { "computed" };
    println!(
        "CLIP-Dissect: {} of {} units of {} `{}` labelled in {:.1} s ({}); {} images{}; text embeddings {}, image \
         embeddings {}, recording {}{}",
        r.labelled.len(),
        r.labelled.len() + r.constant.len(),
        args.model,
        args.layer,
        started.elapsed().as_secs_f64(),
        r.provenance,
        r.images_used,
        if r.top_k_used < SoftWpmiParams::default().top_k {
            format!(" (fewer than top_k = 100: all {} used as the top images)", r.top_k_used)
        } else {
            String::new()
        },
        origin(r.text_origin),
        origin(r.image_origin),
        if r.forwarded == 0 { "reused".to_string() } else { format!("computed ({} images)", r.forwarded) },
        r.import_id.map(|id| format!("; stored as import #{id}")).unwrap_or_default(),
    );
    Ok(())
}
