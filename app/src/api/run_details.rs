//! One neuron's latest DnD run for the neuron page; the views and their query live in
//! `studio::gallery::run` and `studio::gallery::run_queries`.

use leptos::prelude::*;

pub use studio::gallery::run::*;
pub use studio::gallery::ImageRef;

/// `None` when the model, layer or unit does not exist.
#[server]
pub async fn get_neuron_run(model: String, layer: String, unit: i64) -> Result<Option<NeuronRunView>, ServerFnError> {
    let ctx = crate::state::server_context()?;
    // The run's candidates and concepts are DnD's labels: hidden with the layer's labels.
    let audience = super::audience(&ctx).await?;
    let mut conn = ctx.db.acquire().await.map_err(super::db_error)?;
    if studio::gallery::blinding::of_layer_named(&mut conn, &model, &layer, audience)
        .await
        .map_err(super::db_error)?
        .is_some()
    {
        return Ok(None);
    }
    drop(conn);
    let mut view =
        studio::gallery::run_queries::neuron_run(&ctx.db, &model, &layer, unit).await.map_err(super::db_error)?;
    if let Some(v) = view.as_mut().filter(|v| v.done.is_none()) {
        let source = ctx.top_images.as_ref();
        let tops = studio::gallery::recorded::top_images(&ctx.db, source, &model, &layer, &[unit], RECORDED_SHOWN)
            .await
            .map_err(super::db_error)?;
        v.recorded = tops.into_iter().next().unwrap_or_default();
    }
    Ok(view)
}
