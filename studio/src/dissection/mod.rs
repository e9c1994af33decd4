//! DnD runs (Steps 1–3 for many neurons), stored in SQLite: what `dnd dissect --model … --layer …
//! --neurons 0-49|random:50 --probe …` and a background job both call.
//!
//! The engine runs on the calling thread (a plain thread: it blocks on the async runtime); each finished neuron is written to the database in its
//! own transaction before the next is reported, so a killed run resumes where it stopped.

pub mod providers;
pub mod store;
pub mod target;

use crate::builtin::{self, BUILTIN_HELDOUT_FRACTION, BUILTIN_SET_SLUG};
use crate::config::Config;
use crate::engine::{self, LoadedModel, OnStep};
use crate::registry::{self, ModelSpec, ProbeSetSpec};
use anyhow::Context;
use dissect::concepts::pipeline::{
    ChunkProgress, ChunkStep, DissectOptions, LayerDissector, NeuronOutcome, NeuronProgress, RunProgress, StageTimes,
};
pub use dissect::concepts::scoring::ScoringFunction;
use dissect::concepts::summarize::LlmRound;
pub use dissect::crops::Summary;
use dissect::partition::Partition;
use dissect::probe::ScannedSet;
use sqlx::SqlitePool;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use store::{NeuronWriter, OpenRun, RunSpec};
pub use target::{plan_command_line, plan_queued, DissectPlan, LayerRef};

/// What `dnd dissect` was asked to do, as typed ([`plan_command_line`] resolves it).
pub struct DissectArgs {
    pub model: String,
    pub layer: String,
    pub neurons: String,
    pub seed: u64,
    pub probe: String,
    pub scoring: ScoringFunction,
    pub summary: Summary,
    pub batch: usize,
    /// Leak-free captions on a classifier layer (labels stored under source [`store::LEAK_FREE_SOURCE`]).
    pub leak_free: bool,
    /// Step 2's grounded candidates (docs/method.md); on unless `--no-grounded-candidates`.
    pub grounded_candidates: bool,
}

/// What [`record_layers`] recorded.
pub struct LayersRecorded {
    pub set: ScannedSet,
    pub recording: dissect::record::Recording,
}

/// `dnd record`: records the layers, then registers the model, the probing set and each layer's
/// activation cache in the database, so the gallery and rating studies can use them.
pub fn record_layers(
    config: &Config,
    model_spec: &str,
    probe_spec: &str,
    layers: &[String],
    batch: usize,
    on_step: OnStep<'_>,
) -> anyhow::Result<LayersRecorded> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    let assets = &config.storage.assets_dir;
    std::fs::create_dir_all(&config.storage.data_dir)
        .with_context(|| format!("creating data folder {}", config.storage.data_dir.display()))?;
    let loaded = engine::load_model(model_spec, assets)?;
    // A typo fails here, listing the valid names, before anything is registered.
    let names: Vec<&str> = layers.iter().map(String::as_str).collect();
    loaded.model.layer_indices(&names)?;
    let set = engine::scan_probe(probe_spec, assets)?;
    let db = rt.block_on(crate::db::open(&config.database_path()))?;
    let (model_id, _, set_row) =
        rt.block_on(register_target(&db, &loaded, model_spec, assets, &layers[0], probe_spec, &set))?;
    let (_, recording) = engine::record(
        &loaded,
        &set,
        layers,
        &activation_dir(config),
        batch,
        None,
        &mut engine::forward_steps(on_step),
    )?;
    rt.block_on(note_recorded_layers(&db, config, model_id, set_row.id, &loaded, &set, layers, &recording))?;
    rt.block_on(db.close());
    Ok(LayersRecorded { set, recording })
}

/// Notes the activation cache of each of `layers` just recorded (`recording`, in the same order)
/// for the registered model and probing set: what rating studies find top images through.
#[allow(clippy::too_many_arguments)]
pub async fn note_recorded_layers(
    db: &SqlitePool,
    config: &Config,
    model_id: i64,
    probe_set_id: i64,
    loaded: &LoadedModel,
    set: &ScannedSet,
    layers: &[String],
    recording: &dissect::record::Recording,
) -> anyhow::Result<()> {
    for (name, sums) in layers.iter().zip(&recording.layers) {
        let layer_id: i64 = sqlx::query_scalar("SELECT id FROM layers WHERE model_id = ? AND name = ?")
            .bind(model_id)
            .bind(name)
            .fetch_one(db)
            .await?;
        note_activation_cache(db, model_id, layer_id, probe_set_id, loaded, set, name, sums.channels, config).await?;
    }
    Ok(())
}

/// The stages of a dissection run, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStage {
    /// Loading the target model and the concept pipeline's models.
    Loading,
    /// Recording the layer over the probing set (counted in images).
    Activations,
    /// Describing neurons (counted in neurons).
    Neurons,
}

impl RunStage {
    /// As stored in `jobs.stage`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStage::Loading => "loading",
            RunStage::Activations => "activations",
            RunStage::Neurons => "neurons",
        }
    }
}

/// Where a dissection reports what it is doing: the command line's progress bars, or a
/// background job's database row.
pub trait RunObserver {
    /// The run entered `stage` or moved on in it (`done` of `total`).
    fn stage(&mut self, stage: RunStage, done: usize, total: Option<usize>);
    /// A step of the current chunk of neurons started (what a chunk's minutes are spent on).
    fn step(&mut self, at: &ChunkProgress);
    /// A neuron was stored (or failed), `progress` counts the run's neurons so far.
    fn neuron(&mut self, outcome: &NeuronOutcome, progress: NeuronProgress);
    /// A line worth showing as it happens (resuming, substitutes in use).
    fn note(&mut self, message: &str);
}

/// A chunk step in words: "chunk 2 of 5 (8 neurons): LLM summaries, 40 requests".
pub fn step_text(at: &ChunkProgress) -> String {
    let what = match at.step {
        ChunkStep::TopImages => "top images and crops".to_string(),
        ChunkStep::Captions { regions } => format!("captioning {regions} image regions"),
        ChunkStep::Llm(LlmRound::Simplify { requests }) => format!("LLM simplifying {requests} captions"),
        ChunkStep::Llm(LlmRound::Summaries { requests }) => format!("LLM summaries, {requests} requests"),
        ChunkStep::Llm(LlmRound::Merges { requests }) => format!("LLM merging {requests} answers"),
        ChunkStep::ConceptImages { concepts } => format!("images for {concepts} concepts"),
        ChunkStep::Scores => "scoring concepts".to_string(),
    };
    let neurons = if at.neurons == 1 { "1 neuron".to_string() } else { format!("{} neurons", at.neurons) };
    format!("chunk {} of {} ({neurons}): {what}", at.chunk, at.chunks)
}

/// Time left in the neurons stage at the pace so far (from the stage's start); `None` before the
/// first neuron finishes, when there is no pace to go by.
pub fn time_left(elapsed: std::time::Duration, finished: usize, total: usize) -> Option<std::time::Duration> {
    (finished > 0 && finished <= total).then(|| elapsed.mul_f64((total - finished) as f64 / finished as f64))
}

/// `42 s`, `3.5 min`, `2.1 h`.
pub fn human_duration(d: std::time::Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 90.0 {
        format!("{secs:.0} s")
    } else if secs < 5400.0 {
        format!("{:.1} min", secs / 60.0)
    } else {
        format!("{:.1} h", secs / 3600.0)
    }
}

/// How a dissection ended.
pub struct RunReport {
    pub run_id: i64,
    /// Neurons processed in this call (a resumed run counts only those left).
    pub processed: usize,
    pub failed: usize,
    /// Stopped early because `cancel` was raised; the run resumes where it stopped.
    pub cancelled: bool,
    pub times: StageTimes,
    pub seconds: f64,
}

/// What a dissection needs from its surroundings.
pub struct RunEnv<'a> {
    pub rt: &'a tokio::runtime::Handle,
    pub db: &'a SqlitePool,
    pub config: &'a Config,
    /// The background job running it, if any (recorded on the run).
    pub job_id: Option<i64>,
    /// Raised to stop between recording batches or between neurons; finished neurons are kept.
    pub cancel: Option<Arc<AtomicBool>>,
}

/// Records the plan's layer, runs the pipeline and stores every neuron as it finishes. Called
/// from a plain thread (never from inside the async runtime), with a plan from
/// [`plan_command_line`] or [`plan_queued`].
pub fn run_dissection(
    env: &RunEnv<'_>,
    plan: &DissectPlan,
    observer: &mut dyn RunObserver,
) -> anyhow::Result<RunReport> {
    let started = std::time::Instant::now();
    let (rt, db, config) = (env.rt, env.db, env.config);
    std::fs::create_dir_all(&config.storage.data_dir)
        .with_context(|| format!("creating data folder {}", config.storage.data_dir.display()))?;
    let (loaded, set, set_row, units) = (&plan.model, plan.set.as_ref(), &plan.set_row, &plan.units);
    let model = loaded.model.as_ref();
    let (model_id, layer_id, layer) = (plan.model_id, plan.layer.id, plan.layer.index);

    let (images, recording) = engine::record(
        loaded,
        set,
        std::slice::from_ref(&plan.layer.name),
        &activation_dir(config),
        plan.batch,
        env.cancel.clone(),
        &mut |p| {
            if p.stage == dissect::record::Stage::Forward {
                observer.stage(RunStage::Activations, p.done, Some(p.total));
            }
        },
    )?;
    rt.block_on(note_activation_cache(
        db,
        model_id,
        layer_id,
        set_row.id,
        loaded,
        set,
        &plan.layer.name,
        recording.layers[0].channels,
        config,
    ))?;

    // The one place a run's images are split: D_top and every rank read D_probe; Step 3 may
    // retrieve from the concept pool only; the evaluation split is left for measuring labels.
    let partition = Partition::of_set(set, set_row.split_seed, set_row.heldout_fraction);
    let d_probe = partition.d_probe(&recording.layers[0]);
    let summaries = d_probe.summaries();
    observer.stage(RunStage::Loading, 0, None);
    observer.note("loading the concept pipeline's models");
    let concept_pool = || partition.concept_pool(set);
    let providers =
        providers::build_providers(&config.services, &config.storage.data_dir.join("provider-cache"), concept_pool)?;
    let provenance = providers.provenance();
    let options = DissectOptions {
        summary: plan.summary,
        scoring: plan.scoring,
        partition: Some(partition.info().clone()),
        duplicate_label_cosine: Some(providers.text_encoder.duplicate_cosine()),
        leak_free: plan.leak_free,
        grounded_candidates: plan.grounded_candidates,
        ..DissectOptions::default()
    };
    let spec = RunSpec {
        model_id,
        layer_id,
        probe_set_id: set_row.id,
        neurons_spec: &plan.neurons_spec,
        neuron_seed: plan.neurons_spec.starts_with("random:").then_some(plan.seed),
        units,
        options: &options,
        provenance: &provenance,
        job_id: env.job_id,
    };
    let OpenRun { run_id, resumed, remaining } = rt.block_on(store::open_run(db, &spec))?;
    if resumed {
        observer.note(&format!("resuming run #{run_id}: {} of {} neurons left", remaining.len(), units.len()));
    }
    for c in provenance.iter().filter(|c| !c.paper_equivalent) {
        observer.note(&format!("substitute {:?}: {} ({})", c.role, c.name, c.note.as_deref().unwrap_or("")));
    }

    let descriptions: Vec<Option<String>> = set.images.iter().map(|i| i.description.clone()).collect();
    let writer = NeuronWriter {
        run_id,
        layer_id,
        captioner_id: provenance[0].name.clone(),
        llm_id: provenance[1].name.clone(),
        options: options.clone(),
        image_sha256: images.iter().map(|i| i.sha256.clone()).collect(),
        recorded: {
            let s = summaries.clone();
            Box::new(move |image, unit| (s.get(image, unit, Summary::Mean), s.get(image, unit, Summary::Max)))
        },
        unit_stats: {
            let s = summaries.clone();
            Box::new(move |unit| {
                let mean: Vec<f32> = s.column(unit, Summary::Mean).collect();
                let max: Vec<f32> = s.column(unit, Summary::Max).collect();
                store::unit_stats(&mean, &max)
            })
        },
    };
    let dissector = LayerDissector {
        model,
        layer,
        images: &images,
        descriptions: &descriptions,
        summaries: &d_probe,
        providers,
        options,
        cancel: env.cancel.clone(),
    };
    observer.stage(RunStage::Neurons, 0, Some(remaining.len()));
    let mut last = NeuronProgress { finished: 0, total: remaining.len(), failed: 0 };
    // The engine reports a neuron to `sink` (stored here) and then its progress; the observer
    // hears of both together.
    let stored: std::cell::RefCell<Option<NeuronOutcome>> = Default::default();
    let times = dissector.run(
        &remaining,
        &mut |p: RunProgress| match p {
            RunProgress::Step(at) => observer.step(&at),
            RunProgress::Neuron(p) => {
                last = p;
                if let Some(o) = stored.borrow_mut().take() {
                    observer.neuron(&o, p);
                }
                observer.stage(RunStage::Neurons, p.finished, Some(p.total));
            }
        },
        &mut |o: NeuronOutcome| -> anyhow::Result<()> {
            rt.block_on(writer.write(db, &o))?;
            *stored.borrow_mut() = Some(o);
            Ok(())
        },
    )?;
    let cancelled = env.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) && last.finished < remaining.len();
    rt.block_on(store::close_run(db, run_id, cancelled))?;
    Ok(RunReport {
        run_id,
        processed: last.finished,
        failed: last.failed,
        cancelled,
        times,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A finished neuron in one line: its unit and top-3 labels, or where and why it failed (the
/// command line prints these; a job's log keeps them).
pub fn describe_outcome(o: &NeuronOutcome) -> String {
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

/// Where recordings are cached.
pub fn activation_dir(config: &Config) -> PathBuf {
    config.storage.data_dir.join("activations")
}

/// The probing set row a run uses.
pub struct SetRow {
    pub id: i64,
    pub heldout_fraction: f64,
    pub split_seed: u64,
}

/// A slug made of a file or folder name: lower-case letters, digits, `-` and `.`.
fn slug_of(name: &str) -> String {
    name.to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '-' })
        .collect()
}

/// Registers a loaded model (built in by name, or a TorchScript file); answers its id and slug.
pub async fn register_loaded_model(
    db: &SqlitePool,
    loaded: &LoadedModel,
    model_spec: &str,
    assets: &Path,
) -> anyhow::Result<(i64, String)> {
    let id = match engine::builtin_variant(model_spec) {
        Some(v) => {
            let weights = assets.join("models").join(v.weights_file_name());
            registry::register_model(db, builtin::model_spec(v, &weights, loaded.model.as_ref())).await?
        }
        None => {
            let path = PathBuf::from(model_spec);
            let stem = path.file_stem().map(|s| s.to_string_lossy().to_lowercase()).unwrap_or_else(|| "model".into());
            let slug = slug_of(&stem);
            let spec = ModelSpec {
                slug: &slug,
                name: &stem,
                description: "",
                builtin_key: None,
                weights_path: &path,
                dataset: None,
                model: loaded.model.as_ref(),
            };
            registry::register_model(db, spec).await?
        }
    };
    let slug: String = sqlx::query_scalar("SELECT slug FROM models WHERE id = ?").bind(id).fetch_one(db).await?;
    Ok((id, slug))
}

/// Registers a folder of images as a probing set (named after the folder); answers its id.
pub async fn register_folder_set(db: &SqlitePool, root: &Path) -> anyhow::Result<i64> {
    registry::register_probe_set(db, folder_set_spec(root)).await
}

/// A folder of images as a probing set: named after the folder, split as the built-in set is.
fn folder_set_spec(root: &Path) -> ProbeSetSpec {
    let base = root.file_name().map(|s| s.to_string_lossy().to_lowercase()).unwrap_or_else(|| "set".into());
    ProbeSetSpec {
        slug: slug_of(&base),
        name: base,
        description: String::new(),
        source: "folder",
        root: root.to_path_buf(),
        heldout_fraction: BUILTIN_HELDOUT_FRACTION,
        split_seed: 0,
    }
}

/// Model, layer and probing-set ids, registering the model and the set (from `set`, already
/// scanned) when new.
pub async fn register_target(
    db: &SqlitePool,
    loaded: &LoadedModel,
    model_spec: &str,
    assets: &Path,
    layer_name: &str,
    probe_spec: &str,
    set: &ScannedSet,
) -> anyhow::Result<(i64, i64, SetRow)> {
    let (model_id, _) = register_loaded_model(db, loaded, model_spec, assets).await?;
    let layer_id: i64 = sqlx::query_scalar("SELECT id FROM layers WHERE model_id = ? AND name = ?")
        .bind(model_id)
        .bind(layer_name)
        .fetch_one(db)
        .await
        .with_context(|| format!("layer `{layer_name}` of model #{model_id} is not registered"))?;

    // From the scan the caller made: a set is scanned and hashed once per command or job.
    let set_id = registry::register_scanned_set(db, &set_spec_of(probe_spec, assets), set).await?;
    Ok((model_id, layer_id, set_row(db, set_id).await?))
}

/// How a probing-set spec (`builtin` or a folder) is registered.
fn set_spec_of(probe_spec: &str, assets: &Path) -> ProbeSetSpec {
    if probe_spec == BUILTIN_SET_SLUG {
        builtin::probe_set_spec(assets)
    } else {
        folder_set_spec(Path::new(probe_spec))
    }
}

/// The split a registered set's runs use.
async fn set_row(db: &SqlitePool, set_id: i64) -> anyhow::Result<SetRow> {
    let (fraction, seed): (f64, i64) =
        sqlx::query_as("SELECT heldout_fraction, split_seed FROM probe_sets WHERE id = ?")
            .bind(set_id)
            .fetch_one(db)
            .await?;
    Ok(SetRow { id: set_id, heldout_fraction: fraction, split_seed: seed as u64 })
}

/// Records where the layer's activation summaries are, so the database knows its caches.
#[allow(clippy::too_many_arguments)]
async fn note_activation_cache(
    db: &SqlitePool,
    model_id: i64,
    layer_id: i64,
    probe_set_id: i64,
    loaded: &LoadedModel,
    set: &ScannedSet,
    layer: &str,
    channels: usize,
    config: &Config,
) -> anyhow::Result<()> {
    let store = dissect::record::ActivationStore::new(activation_dir(config));
    let key = dissect::record::CacheKey::new(loaded.fingerprint.clone(), set.content_hash.clone());
    let path = store.path(&key, layer);
    sqlx::query(
        "INSERT INTO activation_caches (model_id, layer_id, probe_set_id, model_fingerprint, set_sha256, layer_name,
             file_path, channels, images_total, images_done, status, completed_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'complete', strftime('%Y-%m-%dT%H:%M:%fZ','now'))
         ON CONFLICT (model_fingerprint, set_sha256, layer_name) DO UPDATE SET
             file_path = excluded.file_path, images_done = excluded.images_done, status = 'complete',
             updated_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')",
    )
    .bind(model_id)
    .bind(layer_id)
    .bind(probe_set_id)
    .bind(&loaded.fingerprint)
    .bind(&set.content_hash)
    .bind(layer)
    .bind(path.to_string_lossy())
    .bind(channels as i64)
    .bind(set.images.len() as i64)
    .bind(set.images.len() as i64)
    .execute(db)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(human_duration(Duration::from_secs_f64(42.4)), "42 s");
        assert_eq!(human_duration(Duration::from_secs(210)), "3.5 min");
        assert_eq!(human_duration(Duration::from_secs(7560)), "2.1 h");
    }

    #[test]
    fn time_left_follows_the_pace_so_far() {
        assert_eq!(time_left(Duration::from_secs(60), 0, 10), None, "no pace before the first neuron");
        assert_eq!(time_left(Duration::from_secs(60), 2, 10), Some(Duration::from_secs(240)));
        assert_eq!(time_left(Duration::from_secs(60), 10, 10), Some(Duration::ZERO));
    }

    #[test]
    fn a_chunk_step_says_where_the_run_is_and_what_it_does() {
        let at = ChunkProgress {
            step: ChunkStep::Llm(LlmRound::Summaries { requests: 40 }),
            chunk: 2,
            chunks: 5,
            neurons: 8,
            finished: 8,
            total: 40,
        };
        assert_eq!(step_text(&at), "chunk 2 of 5 (8 neurons): LLM summaries, 40 requests");
        let one = ChunkProgress { step: ChunkStep::Captions { regions: 10 }, chunk: 1, chunks: 1, neurons: 1, ..at };
        assert_eq!(step_text(&one), "chunk 1 of 1 (1 neuron): captioning 10 image regions");
    }
}
