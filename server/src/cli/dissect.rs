//! `dnd dissect`: a dissection run with progress bars, then the labels and a timing summary.

use super::bars::image_bar;
use anyhow::Context;
use dissect::concepts::pipeline::{NeuronOutcome, NeuronProgress};
use indicatif::{ProgressBar, ProgressStyle};
use studio::config::Config;
use studio::dissection::{run_dissection, DissectArgs, RunEnv, RunObserver};

/// `dnd dissect`: [`run_dissection`] with progress bars, then the labels and a timing summary.
pub fn dissect(config: &Config, args: &DissectArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    let db = rt.block_on(studio::db::open(&config.database_path()))?;
    let env = RunEnv { rt: rt.handle(), db: &db, config, job_id: None, cancel: None };
    let mut observer = CliObserver::default();
    let report = run_dissection(&env, args, &mut observer)?;
    observer.finish();
    for l in &observer.lines {
        println!("{l}");
    }
    let t = &report.times;
    println!(
        "run #{}: {} neurons of {} `{}` in {:.1} s ({:.2} s per neuron); stages: crops {:.1} s, captions {:.1} s, \
         LLM {:.1} s, concept images {:.1} s, concept activations {:.1} s, scoring {:.1} s",
        report.run_id,
        report.processed,
        args.model,
        args.layer,
        report.seconds,
        report.seconds / report.processed.max(1) as f64,
        t.crops.as_secs_f64(),
        t.captions.as_secs_f64(),
        t.llm.as_secs_f64(),
        t.concept_images.as_secs_f64(),
        t.concept_activations.as_secs_f64(),
        t.scoring.as_secs_f64(),
    );
    rt.block_on(db.close());
    Ok(())
}

/// The command line's view of a run: a recording bar, then a neuron bar; labels printed at the end.
#[derive(Default)]
struct CliObserver {
    bar: Option<(String, ProgressBar)>,
    lines: Vec<String>,
}

impl CliObserver {
    fn finish(&mut self) {
        if let Some((_, bar)) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl RunObserver for CliObserver {
    fn stage(&mut self, stage: &str, done: usize, total: Option<usize>) {
        let Some(total) = total else { return };
        if self.bar.as_ref().is_none_or(|(s, _)| s != stage) {
            self.finish();
            let bar = if stage == "neurons" {
                let bar = ProgressBar::new(0);
                bar.set_style(
                    ProgressStyle::with_template("neurons [{bar:40}] {pos}/{len} ({msg}), {per_sec}, eta {eta}")
                        .expect("valid template")
                        .progress_chars("=> "),
                );
                bar.set_message("0 failed");
                bar
            } else {
                let bar = image_bar();
                bar.set_message("forward");
                bar
            };
            bar.set_length(total as u64);
            self.bar = Some((stage.to_string(), bar));
        }
        if let Some((_, bar)) = &self.bar {
            bar.set_position(done as u64);
        }
    }

    fn neuron(&mut self, outcome: &NeuronOutcome, progress: NeuronProgress) {
        if let Some((_, bar)) = &self.bar {
            bar.set_message(format!("{} failed", progress.failed));
        }
        self.lines.push(describe(outcome));
    }

    fn note(&mut self, message: &str) {
        // Printed whether or not stderr is a terminal (a bar's own println is dropped when
        // the bar is hidden, e.g. in a pipe).
        match &self.bar {
            Some((_, bar)) => bar.suspend(|| eprintln!("{message}")),
            None => eprintln!("{message}"),
        }
    }
}

fn describe(o: &NeuronOutcome) -> String {
    match o {
        NeuronOutcome::Done(r) => {
            let top3: Vec<&str> = r.top3.iter().map(|&i| r.concepts[i].label.as_str()).collect();
            format!("unit {:>4}: {}", r.unit, top3.join(" | "))
        }
        NeuronOutcome::Failed { unit, stage, reason } => {
            format!("unit {unit:>4}: FAILED at {}: {reason}", stage.as_str())
        }
    }
}
