//! The neuron gallery: a layer's neurons with every method's current label, and one neuron's
//! page with all labels side by side. The views and their queries live in `studio::gallery`.

use leptos::prelude::*;
pub use studio::gallery::{
    Blinding, LabelSource, LabelView, LayerQuery, LayerSort, LayerView, NeuronRow, NeuronView, PAGE_SIZE,
};
use studio::methods::Method;

/// `None` when the model or layer does not exist.
#[server]
pub async fn get_layer(query: LayerQuery) -> Result<Option<LayerView>, ServerFnError> {
    let ctx = crate::state::server_context()?;
    let audience = super::audience(&ctx).await?;
    let (model, layer) = (query.model.clone(), query.layer.clone());
    let mut view = studio::gallery::queries::layer(&ctx.db, query, audience).await.map_err(super::db_error)?;
    if let Some(v) = view.as_mut() {
        studio::gallery::recorded::fill_thumbnails(&ctx.db, ctx.top_images.as_ref(), &model, v)
            .await
            .map_err(super::db_error)?;
    }
    if let Some(v) =
        view.as_mut().filter(|v| v.blinded.is_none() && !v.sources.iter().any(|s| s.method == Method::CLIP_DISSECT))
    {
        v.clip_dissect_note = Some(clip_dissect_note(&model, &layer));
    }
    Ok(view)
}

/// `None` when the model, layer or unit does not exist.
#[server]
pub async fn get_neuron(model: String, layer: String, unit: i64) -> Result<Option<NeuronView>, ServerFnError> {
    let ctx = crate::state::server_context()?;
    let audience = super::audience(&ctx).await?;
    let mut view =
        studio::gallery::queries::neuron(&ctx.db, &model, &layer, unit, audience).await.map_err(super::db_error)?;
    if let Some(v) =
        view.as_mut().filter(|v| v.blinded.is_none() && !v.labels.iter().any(|l| l.method == Method::CLIP_DISSECT))
    {
        v.clip_dissect_note = Some(clip_dissect_note(&model, &layer));
    }
    Ok(view)
}

/// Whether this server has a CLIP configured for `dnd clip-dissect` (set once at start).
#[cfg(feature = "ssr")]
static CLIP_CONFIGURED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cfg(feature = "ssr")]
pub fn set_clip_configured(configured: bool) {
    CLIP_CONFIGURED.store(configured, std::sync::atomic::Ordering::Relaxed);
}

/// What the comparison view says where CLIP-Dissect has no label for `layer` of `model`.
#[cfg(feature = "ssr")]
fn clip_dissect_note(model: &str, layer: &str) -> String {
    if CLIP_CONFIGURED.load(std::sync::atomic::Ordering::Relaxed) {
        format!(
            "No CLIP-Dissect label yet. CLIP is configured on this server: run `dnd clip-dissect --model {model} --layer {layer}`, or import a CLIP-Dissect CSV."
        )
    } else {
        "No CLIP-Dissect label: configure services.clip_torchscript and services.clip_tokenizer and run `dnd clip-dissect`, or import a CLIP-Dissect CSV.".into()
    }
}

/// Human name of a method given by its slug (as study set-ups store it).
pub fn method_title(slug: &str) -> &'static str {
    Method::from_stored(slug).title()
}
