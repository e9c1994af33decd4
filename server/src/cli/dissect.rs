//! `dnd dissect`: a dissection run with progress bars, then the labels and a timing summary.

use super::bars::StepBars;
use anyhow::Context;
use dissect::concepts::pipeline::{ChunkProgress, NeuronOutcome, NeuronProgress};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use studio::config::Config;
use studio::dissection::{
    describe_outcome, plan_command_line, run_dissection, step_text, DissectArgs, RunEnv, RunObserver, RunStage,
};
use studio::engine::EngineCache;
use studio::jobs::runner::{record_run_end, JobObserver};
use studio::jobs::{queue, DissectJobRequest, JobSignals};

/// How often a command-line run tells `/jobs` it is alive and asks whether it was cancelled there
/// (well inside [`queue::COMMAND_LINE_STALE_SECS`]).
const HEARTBEAT: Duration = Duration::from_secs(5);

/// `dnd dissect`: [`run_dissection`] with progress bars, then the labels and a timing summary.
/// The run is also a job on `/jobs` (its own device, `cli:<pid>`), with the same live progress as
/// a job the server runs, and can be cancelled from there.
pub fn dissect(config: &Config, args: &DissectArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    let db = rt.block_on(studio::db::open(&config.database_path()))?;
    let job_id = rt.block_on(queue::start_command_line_job(&db, &listed_request(args)))?;
    let cancel = Arc::new(AtomicBool::new(false));
    let heartbeat = {
        let (db, cancel) = (db.clone(), cancel.clone());
        rt.spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                if queue::heartbeat(&db, job_id).await.unwrap_or(false) && !cancel.swap(true, Ordering::Relaxed) {
                    eprintln!("cancelled on /jobs: stopping after the neurons in progress");
                }
            }
        })
    };
    let env = RunEnv { rt: rt.handle(), db: &db, config, job_id: Some(job_id), cancel: Some(cancel) };
    // Another process's live views are woken by what it writes, not by these signals.
    let signals = JobSignals::default();
    let mut observer = Both(CliObserver::default(), JobObserver::new(rt.handle(), &db, &signals, job_id));
    // The strings are resolved here, once; the run is the one a queued job runs.
    let result = plan_command_line(&env, &EngineCache::default(), args, &mut observer)
        .and_then(|plan| run_dissection(&env, &plan, &mut observer));
    heartbeat.abort();
    rt.block_on(record_run_end(&db, job_id, &result));
    let report = result?;
    observer.0.finish();
    for l in &observer.0.lines {
        println!("{l}");
    }
    if report.cancelled {
        println!("job #{job_id} was cancelled on /jobs after {} neurons", report.processed);
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

/// How `/jobs` lists a command-line run: the request's fields, with a model or probing set given
/// as a path named by its file name only (the queue is public).
fn listed_request(args: &DissectArgs) -> DissectJobRequest {
    let name = |spec: &str| {
        let path = std::path::Path::new(spec);
        if path.components().count() > 1 {
            path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| spec.to_string())
        } else {
            spec.to_string()
        }
    };
    DissectJobRequest {
        model: name(&args.model),
        layer: args.layer.clone(),
        neurons: args.neurons.clone(),
        seed: args.seed,
        probe_set: name(&args.probe),
        summary: args.summary.as_str().to_string(),
        scoring: args.scoring.as_str().to_string(),
    }
}

/// Two observers of one run: the terminal's and the job row's.
struct Both<A, B>(A, B);

impl<A: RunObserver, B: RunObserver> RunObserver for Both<A, B> {
    fn stage(&mut self, stage: RunStage, done: usize, total: Option<usize>) {
        self.0.stage(stage, done, total);
        self.1.stage(stage, done, total);
    }

    fn step(&mut self, at: &ChunkProgress) {
        self.0.step(at);
        self.1.step(at);
    }

    fn neuron(&mut self, outcome: &NeuronOutcome, progress: NeuronProgress) {
        self.0.neuron(outcome, progress);
        self.1.neuron(outcome, progress);
    }

    fn note(&mut self, message: &str) {
        self.0.note(message);
        self.1.note(message);
    }
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
