//! The job runner: one background task per server process that takes queued jobs one at a time (one job
//! per device by default), runs each on a blocking thread, writes its progress and failures to
//! the job's row as it goes, and answers cancel requests and shutdowns between neurons.
//!
//! A job the server was running when it stopped goes back to the queue at the next start and
//! resumes: the dissection run keeps every finished neuron, so only the rest are computed.

use super::queue::{self, ClaimedJob, DissectPayload, Outcome, QueuedDissection};
use super::{JobSignals, RegisterRequest};
use crate::config::Config;
use crate::dissection::{self, RunEnv, RunObserver, RunReport, RunStage};
use crate::engine::EngineCache;
use crate::shutdown::Shutdown;
use anyhow::Context;
use dissect::concepts::pipeline::{ChunkProgress, NeuronOutcome, NeuronProgress};
use sqlx::SqlitePool;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a running job's row is checked for a cancel request (and its heartbeat written).
const POLL: Duration = Duration::from_millis(500);
/// Progress is written at most this often (stage changes and failures are written at once).
const PROGRESS_EVERY: Duration = Duration::from_millis(300);

/// The device jobs run on, as the queue records it.
pub fn device_name() -> String {
    match dissect::model::DeviceChoice::Auto.resolve() {
        Ok(d) if d.is_cuda() => "cuda:0".into(),
        _ => "cpu".into(),
    }
}

/// Starts the runner. It stops after `shutdown`, once the job in progress has stopped between
/// neurons (its row goes back to the queue).
pub fn spawn(config: Config, db: SqlitePool, signals: JobSignals, shutdown: Shutdown) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        match queue::requeue_interrupted(&db).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(jobs = n, "re-queued jobs interrupted by the last stop; they resume where they stopped")
            }
            Err(e) => tracing::error!(error = %e, "could not re-queue interrupted jobs"),
        }
        let device = device_name();
        // The model and set of the last job stay loaded for the next.
        let cache = Arc::new(EngineCache::default());
        while !shutdown.is_requested() {
            match queue::claim_next(&db, &device).await {
                Ok(Some(job)) => {
                    signals.changed();
                    run_job(&config, &db, &signals, &shutdown, &cache, job).await;
                    signals.changed();
                }
                Ok(None) => {
                    // Command-line runs (their own processes) that died say so on /jobs.
                    if let Ok(n @ 1..) = queue::fail_stale_command_line_jobs(&db).await {
                        tracing::info!(jobs = n, "command-line runs without a heartbeat marked failed");
                        signals.changed();
                    }
                    tokio::select! {
                        _ = signals.wait_for_work() => {}
                        _ = shutdown.clone().requested() => {}
                        _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "job queue unavailable");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    })
}

/// A queued dissection's payload: resolved when it was queued, or (a payload from before ids
/// were stored) resolved now.
async fn queued_dissection(db: &SqlitePool, payload_json: &str) -> anyhow::Result<QueuedDissection> {
    Ok(match DissectPayload::parse(payload_json).context("the job's request cannot be read")? {
        DissectPayload::Resolved(q) => q,
        DissectPayload::Request(r) => queue::resolve(db, &r).await?,
    })
}

/// Runs one claimed job to its end (or back to the queue on shutdown), recording how it ended.
async fn run_job(
    config: &Config,
    db: &SqlitePool,
    signals: &JobSignals,
    shutdown: &Shutdown,
    cache: &Arc<EngineCache>,
    job: ClaimedJob,
) {
    let id = job.id;
    if job.kind.starts_with("register_") {
        return run_registration(config, db, signals, job).await;
    }
    let queued = match job.kind.as_str() {
        "dissect" => queued_dissection(db, &job.payload_json).await,
        other => Err(anyhow::anyhow!("this server cannot run jobs of kind `{other}`")),
    };
    let queued = match queued {
        Ok(q) => q,
        Err(e) => return record_end(db, id, Outcome::Failed { error: &format!("{e:#}") }).await,
    };

    let cancel = Arc::new(AtomicBool::new(false));
    let work = {
        let (config, db, signals, cancel, cache) =
            (config.clone(), db.clone(), signals.clone(), cancel.clone(), cache.clone());
        let rt = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let env = RunEnv { rt: &rt, db: &db, config: &config, job_id: Some(id), cancel: Some(cancel) };
            let mut observer = JobObserver::new(&rt, &db, &signals, id);
            let plan = dissection::plan_queued(&env, &cache, &queued, &mut observer)?;
            let report = dissection::run_dissection(&env, &plan, &mut observer);
            plan.release(&cache, &config.storage.assets_dir);
            report
        })
    };
    tokio::pin!(work);
    let mut stopping = false;
    let mut cancelled_by_user = false;
    let result = loop {
        tokio::select! {
            r = &mut work => break r,
            _ = tokio::time::sleep(POLL) => {
                if !cancelled_by_user && queue::heartbeat(db, id).await.unwrap_or(false) {
                    cancelled_by_user = true;
                    cancel.store(true, Ordering::Relaxed);
                }
            }
            _ = shutdown.clone().requested(), if !stopping => {
                stopping = true;
                cancel.store(true, Ordering::Relaxed);
            }
        }
    };
    let summary;
    let outcome = match result {
        Err(panic) => {
            summary = format!("the job stopped unexpectedly: {panic}");
            Outcome::Failed { error: &summary }
        }
        Ok(Err(e)) if stopping && !cancelled_by_user => {
            tracing::info!(job = id, error = %format!("{e:#}"), "job stopped by shutdown");
            Outcome::Interrupted
        }
        Ok(Ok(report)) if report.cancelled && stopping && !cancelled_by_user => Outcome::Interrupted,
        // Done, cancelled by the user, or failed.
        Ok(ended) => return record_run_end(db, id, &ended).await,
    };
    record_end(db, id, outcome).await
}

/// Registers a probing-set folder (scan, hash, store its images and rejected files) or a
/// TorchScript model (load it with its manifest, store its layers and neurons).
async fn run_registration(config: &Config, db: &SqlitePool, signals: &JobSignals, job: ClaimedJob) {
    let id = job.id;
    let result: anyhow::Result<String> = async {
        let request: RegisterRequest =
            serde_json::from_str(&job.payload_json).context("the job's request cannot be read")?;
        let path = std::path::PathBuf::from(&request.path);
        let what = if job.kind == "register_model" { "loading the model" } else { "scanning the folder" };
        queue::set_progress(db, id, "registering", 0, None, what).await?;
        signals.changed();
        match job.kind.as_str() {
            "register_probe_set" => {
                let set_id = dissection::register_folder_set(db, &path).await?;
                let (slug, images, rejected): (String, i64, i64) = sqlx::query_as(
                    "SELECT slug, (SELECT count(*) FROM probe_set_images WHERE probe_set_id = s.id),
                            (SELECT count(*) FROM rejected_files WHERE probe_set_id = s.id)
                     FROM probe_sets s WHERE id = ?",
                )
                .bind(set_id)
                .fetch_one(db)
                .await?;
                Ok(format!("probing set `{slug}`: {images} images, {rejected} files rejected"))
            }
            "register_model" => {
                // The model is not Send: load and register it on one blocking thread.
                let (spec, assets, db, rt) = (
                    request.path.clone(),
                    config.storage.assets_dir.clone(),
                    db.clone(),
                    tokio::runtime::Handle::current(),
                );
                tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
                    let loaded = crate::engine::load_model(&spec, &assets)?;
                    let layers = loaded.model.layers().len();
                    let (_, slug) = rt.block_on(dissection::register_loaded_model(&db, &loaded, &spec, &assets))?;
                    Ok(format!("model `{slug}` with {layers} dissectable layers"))
                })
                .await
                .context("loading the model stopped unexpectedly")?
            }
            other => anyhow::bail!("this server cannot run jobs of kind `{other}`"),
        }
    }
    .await;
    match result {
        Ok(summary) => {
            let json = serde_json::json!({ "summary": summary }).to_string();
            record_end(db, id, Outcome::Done { message: &summary, result_json: &json }).await
        }
        Err(e) => record_end(db, id, Outcome::Failed { error: &format!("{e:#}") }).await,
    }
}

/// Records how a run that its own process watched ended (a `dnd dissect` job: no shutdown to
/// tell from a cancel).
pub async fn record_run_end(db: &SqlitePool, id: i64, result: &anyhow::Result<RunReport>) {
    match result {
        Err(e) => record_end(db, id, Outcome::Failed { error: &format!("{e:#}") }).await,
        Ok(report) if report.cancelled => {
            let summary = format!(
                "stopped after {} neurons ({} failed); run #{} keeps them",
                report.processed, report.failed, report.run_id
            );
            record_end(db, id, Outcome::Cancelled { message: &summary }).await
        }
        Ok(report) => {
            let (summary, result) = (finished_message(report), result_json(report));
            record_end(db, id, Outcome::Done { message: &summary, result_json: &result }).await
        }
    }
}

async fn record_end(db: &SqlitePool, id: i64, outcome: Outcome<'_>) {
    if let Err(e) = queue::finish(db, id, outcome).await {
        tracing::error!(job = id, error = %e, "could not record how the job ended");
    }
}

fn finished_message(r: &RunReport) -> String {
    format!(
        "{} neurons in {:.0} s ({:.1} s per neuron), {} failed; run #{}",
        r.processed,
        r.seconds,
        r.seconds / r.processed.max(1) as f64,
        r.failed,
        r.run_id
    )
}

fn result_json(r: &RunReport) -> String {
    serde_json::json!({
        "run_id": r.run_id,
        "neurons": r.processed,
        "failed": r.failed,
        "seconds": r.seconds,
        "stage_seconds": {
            "crops": r.times.crops.as_secs_f64(),
            "captions": r.times.captions.as_secs_f64(),
            "llm": r.times.llm.as_secs_f64(),
            "concept_images": r.times.concept_images.as_secs_f64(),
            "concept_activations": r.times.concept_activations.as_secs_f64(),
            "scoring": r.times.scoring.as_secs_f64(),
        },
    })
    .to_string()
}

/// A running job's view of its dissection: progress into the job's row (throttled) with the
/// current chunk's step and the time left, each neuron and each note as an event, and a nudge to
/// the live views after every write.
pub struct JobObserver<'a> {
    rt: &'a tokio::runtime::Handle,
    db: &'a SqlitePool,
    signals: &'a JobSignals,
    id: i64,
    stage: Option<RunStage>,
    /// When the current stage began: its pace gives the time left.
    stage_started: Instant,
    done: usize,
    total: Option<usize>,
    /// The current chunk's step, while describing neurons.
    activity: Option<String>,
    last_write: Option<Instant>,
}

impl<'a> JobObserver<'a> {
    pub fn new(rt: &'a tokio::runtime::Handle, db: &'a SqlitePool, signals: &'a JobSignals, id: i64) -> Self {
        JobObserver {
            rt,
            db,
            signals,
            id,
            stage: None,
            stage_started: Instant::now(),
            done: 0,
            total: None,
            activity: None,
            last_write: None,
        }
    }

    fn write<T>(&self, what: &str, r: Result<T, queue::JobError>) {
        match r {
            Ok(_) => self.signals.changed(),
            Err(e) => tracing::warn!(job = self.id, error = %e, "could not record the job's {what}"),
        }
    }

    fn message(&self) -> String {
        progress_message(self.stage, self.done, self.total, self.activity.as_deref(), self.stage_started.elapsed())
    }

    fn write_progress(&mut self) {
        self.last_write = Some(Instant::now());
        let stage = self.stage.unwrap_or(RunStage::Loading).as_str();
        let message = self.message();
        let r = self.rt.block_on(queue::set_progress(
            self.db,
            self.id,
            stage,
            self.done as i64,
            self.total.map(|t| t as i64),
            &message,
        ));
        self.write("progress", r);
    }
}

/// The job's progress line: "describing neurons: 3/10 · chunk 2 of 3 (4 neurons): LLM
/// summaries, 20 requests · about 4.2 min left" (`elapsed`: since the stage began).
fn progress_message(
    stage: Option<RunStage>,
    done: usize,
    total: Option<usize>,
    activity: Option<&str>,
    elapsed: Duration,
) -> String {
    let mut message = match (stage, total) {
        (Some(RunStage::Activations), Some(t)) => format!("recording activations: {done}/{t} images"),
        (Some(RunStage::Neurons), Some(t)) => format!("describing neurons: {done}/{t}"),
        (Some(RunStage::Loading) | None, _) => return "loading models".to_string(),
        (Some(s), None) => s.as_str().to_string(),
    };
    if let Some(activity) = activity.filter(|_| stage == Some(RunStage::Neurons)) {
        message += &format!(" · {activity}");
    }
    match total {
        Some(t) if done < t => match dissection::time_left(elapsed, done, t) {
            Some(left) => message += &format!(" · about {} left", dissection::human_duration(left)),
            None => message += " · time left known after the first one",
        },
        _ => {}
    }
    message
}

impl RunObserver for JobObserver<'_> {
    fn stage(&mut self, stage: RunStage, done: usize, total: Option<usize>) {
        let new_stage = self.stage != Some(stage);
        let finished = total.is_some_and(|t| done >= t);
        let moved = (done, total) != (self.done, self.total);
        (self.done, self.total) = (done, total);
        if new_stage {
            self.stage = Some(stage);
            self.stage_started = Instant::now();
            self.activity = None;
        }
        // Every finished neuron is shown (they come minutes apart on a CPU); a recording's image
        // count at most every PROGRESS_EVERY.
        let neuron_done = stage == RunStage::Neurons && moved;
        if !new_stage && !finished && !neuron_done && self.last_write.is_some_and(|t| t.elapsed() < PROGRESS_EVERY) {
            return;
        }
        self.write_progress();
    }

    fn step(&mut self, at: &ChunkProgress) {
        self.activity = Some(dissection::step_text(at));
        self.write_progress();
    }

    fn neuron(&mut self, outcome: &NeuronOutcome, _progress: NeuronProgress) {
        // Every neuron in the log as it is stored: its labels, or (a warning, which the queue
        // counts) why it failed.
        let (level, message) = match outcome {
            NeuronOutcome::Failed { unit, stage, reason } => {
                ("warn", format!("unit {unit} failed at {}: {reason}", stage.as_str()))
            }
            NeuronOutcome::Done(_) => ("info", dissection::describe_outcome(outcome)),
        };
        let r = self.rt.block_on(queue::add_event(self.db, self.id, level, Some("neurons"), &message));
        self.write("neuron", r);
    }

    fn note(&mut self, message: &str) {
        let stage = self.stage.map(RunStage::as_str);
        let r = self.rt.block_on(queue::add_event(self.db, self.id, "info", stage, message));
        self.write("note", r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_line_says_the_step_and_the_time_left() {
        let neurons = Some(RunStage::Neurons);
        let step = Some("chunk 1 of 5 (2 neurons): LLM summaries, 10 requests");
        assert_eq!(
            progress_message(neurons, 0, Some(10), step, Duration::from_secs(30)),
            "describing neurons: 0/10 · chunk 1 of 5 (2 neurons): LLM summaries, 10 requests · time left known after the first one"
        );
        assert_eq!(
            progress_message(neurons, 2, Some(10), step, Duration::from_secs(60)),
            "describing neurons: 2/10 · chunk 1 of 5 (2 neurons): LLM summaries, 10 requests · about 4.0 min left"
        );
        assert_eq!(
            progress_message(neurons, 10, Some(10), step, Duration::from_secs(60)),
            "describing neurons: 10/10 · chunk 1 of 5 (2 neurons): LLM summaries, 10 requests"
        );
        assert_eq!(
            progress_message(Some(RunStage::Activations), 100, Some(400), step, Duration::from_secs(10)),
            "recording activations: 100/400 images · about 30 s left"
        );
        assert_eq!(progress_message(Some(RunStage::Loading), 0, None, None, Duration::ZERO), "loading models");
    }
}
