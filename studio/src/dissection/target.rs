//! A dissection resolved before it runs: the loaded model, the registered layer (its id and the
//! model's own index for it), the scanned and registered probing set, the checked units and the
//! engine's enums. The two front ends build one at their edge, each once:
//!
//! - `dnd dissect` from its command-line strings ([`plan_command_line`]): loads what it names,
//!   registers the model and the set when new, resolves the layer's name;
//! - a queued job from the ids and enums the queue stored when it checked the form
//!   ([`plan_queued`]): nothing is looked up by name or parsed again.
//!
//! Both then hand the plan to the same [`super::run_dissection`]. Models and sets come through
//! an [`EngineCache`], so a server's second job on the same model and set reuses both.

use super::{register_target, DissectArgs, RunEnv, RunObserver, RunStage, SetRow};
use crate::engine::cache::Fetched;
use crate::engine::{EngineCache, LoadedModel};
use crate::jobs::queue::QueuedDissection;
use crate::registry;
use anyhow::Context;
use dissect::concepts::pipeline::DissectOptions;
use dissect::concepts::scoring::ScoringFunction;
use dissect::crops::Summary;
use dissect::probe::ScannedSet;
use std::sync::Arc;

/// A registered layer of the plan's model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    pub id: i64,
    pub name: String,
    /// The model's index for it (`TargetModel::layers`).
    pub index: usize,
    pub channels: usize,
}

/// Everything a dissection run needs, resolved (see the module notes).
pub struct DissectPlan {
    /// What the model was loaded from (a built-in name or a TorchScript file), to hand it back
    /// to the cache.
    pub model_spec: String,
    pub model: LoadedModel,
    pub model_id: i64,
    pub layer: LayerRef,
    pub set: Arc<ScannedSet>,
    pub set_row: SetRow,
    pub units: Vec<usize>,
    /// The units as asked (`0-49`, `random:50`), kept on the run.
    pub neurons_spec: String,
    pub seed: u64,
    pub summary: Summary,
    pub scoring: ScoringFunction,
    pub batch: usize,
    pub leak_free: bool,
    pub grounded_candidates: bool,
}

impl DissectPlan {
    /// Hands the model back to `cache` for the next run.
    pub fn release(self, cache: &EngineCache, assets_dir: &std::path::Path) {
        cache.keep_model(&self.model_spec, assets_dir, self.model);
    }
}

/// `dnd dissect`'s strings resolved once: the model loaded and its layer found by name, the units
/// parsed against it, the set scanned, and both registered when new.
pub fn plan_command_line(
    env: &RunEnv<'_>,
    cache: &EngineCache,
    args: &DissectArgs,
    observer: &mut dyn RunObserver,
) -> anyhow::Result<DissectPlan> {
    let assets = &env.config.storage.assets_dir;
    observer.stage(RunStage::Loading, 0, None);
    let (model, _) = cache.take_model(&args.model, assets)?;
    let index = model.model.layer_index(&args.layer)?;
    let info = &model.model.layers()[index];
    if args.leak_free && !dissect::concepts::pipeline::leak_free_applies(info) {
        anyhow::bail!(
            "--leak-free applies to an ImageNet-1k classifier layer (its units are classes whose names captions could give away); `{}` is not one",
            args.layer
        );
    }
    let channels = info.channels;
    let units =
        study::units::parse_units(&args.neurons, channels, args.seed).map_err(|e| anyhow::anyhow!("--neurons {e}"))?;
    let (set, _) = cache.scan_probe(&args.probe, assets)?;
    let (model_id, layer_id, set_row) =
        env.rt.block_on(register_target(env.db, &model, &args.model, assets, &args.layer, &args.probe, &set))?;
    Ok(DissectPlan {
        model_spec: args.model.clone(),
        model,
        model_id,
        layer: LayerRef { id: layer_id, name: args.layer.clone(), index, channels },
        set,
        set_row,
        units,
        neurons_spec: args.neurons.clone(),
        seed: args.seed,
        summary: args.summary,
        scoring: args.scoring,
        batch: args.batch,
        leak_free: args.leak_free,
        grounded_candidates: args.grounded_candidates,
    })
}

/// A queued job's ids turned into the loaded model, its layer (by the position it was registered
/// at) and the scanned set. A set whose folder changed since it was queued is registered afresh
/// (its images are what the run reads); a model file that no longer has the layer is an error.
pub fn plan_queued(
    env: &RunEnv<'_>,
    cache: &EngineCache,
    q: &QueuedDissection,
    observer: &mut dyn RunObserver,
) -> anyhow::Result<DissectPlan> {
    let (rt, db) = (env.rt, env.db);
    let assets = &env.config.storage.assets_dir;
    let model_row = rt
        .block_on(registry::model(db, q.model_id))?
        .with_context(|| format!("model `{}` is no longer registered", q.request.model))?;
    let layer_row = rt
        .block_on(registry::layer(db, q.layer_id))?
        .filter(|l| l.model_id == q.model_id)
        .with_context(|| format!("layer `{}` is no longer registered", q.request.layer))?;
    let set_row = rt
        .block_on(registry::probe_set(db, q.probe_set_id))?
        .with_context(|| format!("probing set `{}` is no longer registered", q.request.probe_set))?;

    observer.stage(RunStage::Loading, 0, None);
    let (model, fetched) = cache.take_model(&model_row.load_spec, assets)?;
    if fetched == Fetched::Reused {
        observer.note(&format!("model `{}` kept loaded from the last job", model_row.slug));
    }
    let layer_matches = model
        .model
        .layers()
        .get(layer_row.position)
        .is_some_and(|l| l.name == layer_row.name && l.channels == layer_row.channels);
    if !layer_matches {
        anyhow::bail!(
            "model `{}` was registered with layer `{}` at position {} ({} units), which its file no longer has; register it again",
            model_row.slug,
            layer_row.name,
            layer_row.position,
            layer_row.channels
        );
    }
    if let Some(u) = q.units.iter().find(|&&u| u >= layer_row.channels) {
        anyhow::bail!("unit {u} is outside layer `{}` ({} units)", layer_row.name, layer_row.channels);
    }

    let (set, fetched) = cache.scan_probe(&set_row.scan_spec, assets)?;
    if fetched == Fetched::Reused {
        observer.note(&format!("probing set `{}` kept scanned from the last job", set_row.slug));
    }
    let set_row = if set_row.content_sha256.as_deref() == Some(set.content_hash.as_str()) {
        SetRow { id: set_row.id, heldout_fraction: set_row.heldout_fraction, split_seed: set_row.split_seed }
    } else {
        observer
            .note(&format!("probing set `{}` changed on disk since it was queued: registering it again", set_row.slug));
        let spec = super::set_spec_of(&set_row.scan_spec, assets);
        let set_id = rt.block_on(registry::register_scanned_set(db, &spec, &set))?;
        rt.block_on(super::set_row(db, set_id))?
    };
    Ok(DissectPlan {
        model_spec: model_row.load_spec,
        model,
        model_id: q.model_id,
        layer: LayerRef {
            id: layer_row.id,
            name: layer_row.name,
            index: layer_row.position,
            channels: layer_row.channels,
        },
        set,
        set_row,
        units: q.units.clone(),
        neurons_spec: q.request.neurons.clone(),
        seed: q.request.seed,
        summary: q.summary,
        scoring: q.scoring,
        batch: 32,
        leak_free: false,
        grounded_candidates: DissectOptions::default().grounded_candidates,
    })
}
