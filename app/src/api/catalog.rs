//! The catalogue: registered models, their layers, and probing sets (the types and queries are
//! `studio::catalog`'s).

use leptos::prelude::*;
pub use studio::catalog::{
    FirstRunProgress, FirstRunStep, ModelDetail, ModelSummary, Overview, ProbeSetSummary, RejectedFile,
};
pub use studio::gallery::LayerSummary;

#[server]
pub async fn get_overview() -> Result<Overview, ServerFnError> {
    let db = crate::state::server_context()?.db;
    studio::catalog::queries::overview(&db).await.map_err(crate::api::db_error)
}

/// `None` when no model has this slug (the page answers 404).
#[server]
pub async fn get_model(slug: String) -> Result<Option<ModelDetail>, ServerFnError> {
    let db = crate::state::server_context()?.db;
    studio::catalog::queries::model_detail(&db, &slug).await.map_err(crate::api::db_error)
}
