//! `dnd dissect`: a dissection run with progress bars, then the labels and a timing summary.

use super::bars::StepBars;
use anyhow::Context;
use dissect::concepts::pipeline::{ChunkProgress, NeuronOutcome, NeuronProgress};
use studio::config::Config;
use studio::dissection::{describe_outcome, run_dissection, step_text, DissectArgs, RunEnv, RunObserver, RunStage};

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

/// The command line's view of a run: a recording's progress, then the neurons'; labels printed at the end.
#[derive(Default)]
struct CliObserver {
    bars: StepBars,
    failed: usize,
    lines: Vec<String>,
}

impl CliObserver {
    fn finish(&mut self) {
        self.bars.finish();
    }
}

impl RunObserver for CliObserver {
    fn stage(&mut self, stage: RunStage, done: usize, total: Option<usize>) {
        let Some(total) = total else { return };
        // The recording's forward pass (in images), then the neurons.
        let neurons = stage == RunStage::Neurons;
        let p = self.bars.enter(stage.as_str(), if neurons { "neurons" } else { "images" });
        if neurons {
            p.set_message(format!("{} failed", self.failed));
        }
        p.set(done, total);
    }

    fn step(&mut self, at: &ChunkProgress) {
        self.bars.enter(RunStage::Neurons.as_str(), "neurons").set_activity(&step_text(at));
    }

    fn neuron(&mut self, outcome: &NeuronOutcome, progress: NeuronProgress) {
        // Shown with the next count, which the run reports right after.
        self.failed = progress.failed;
        self.lines.push(describe_outcome(outcome));
    }

    fn note(&mut self, message: &str) {
        self.bars.println(message);
    }
}
