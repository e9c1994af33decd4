//! One neuron's D_top as a dissection would build it (`dnd crops`): the set split as every
//! registration splits it, the layer recorded through the activation cache, then the top images
//! of D_probe, their crops and the re-ranked top-K.

use super::OnStep;
use crate::builtin::BUILTIN_HELDOUT_FRACTION;
use crate::config::Config;
use dissect::crops::Summary;
use dissect::dtop::NeuronTop;
use dissect::partition::{Partition, PartitionInfo};
use dissect::probe::ScannedSet;

/// What [`neuron_d_top`] found: the set (for image names), how it was split, and the neuron's top.
pub struct NeuronDTop {
    pub set: ScannedSet,
    pub partition: PartitionInfo,
    pub top: NeuronTop,
}

/// D_top of `unit` of `layer_name` of the model `model_spec` names, over the set `probe_spec` names.
pub fn neuron_d_top(
    config: &Config,
    model_spec: &str,
    probe_spec: &str,
    layer_name: &str,
    unit: usize,
    summary: Summary,
    on_step: OnStep<'_>,
) -> anyhow::Result<NeuronDTop> {
    let assets = &config.storage.assets_dir;
    let loaded = super::load_model(model_spec, assets)?;
    let model = loaded.model.as_ref();
    let layer = model.layer_index(layer_name)?;
    let channels = model.layers()[layer].channels;
    if unit >= channels {
        anyhow::bail!("unit {unit} is outside layer `{layer_name}`, which has units 0..={}", channels - 1);
    }
    let set = super::scan_probe(probe_spec, assets)?;
    // Seed 0 and the built-in held-out fraction: every registration splits a set so.
    let partition = Partition::of_set(&set, 0, BUILTIN_HELDOUT_FRACTION);
    let layers = [layer_name.to_string()];
    let cache_dir = crate::dissection::activation_dir(config);
    let (images, recording) =
        super::record(&loaded, &set, &layers, &cache_dir, 32, None, &mut super::forward_steps(on_step))?;
    let d_probe = partition.d_probe(&recording.layers[0]);
    let top = dissect::dtop::neuron_top(model, &images, d_probe.summaries(), layer, unit, summary, dissect::crops::K)?;
    Ok(NeuronDTop { set, partition: partition.info().clone(), top })
}
