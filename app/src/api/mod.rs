//! Types shared by server and browser, and the server functions that produce them, one module
//! per area.

mod catalog;
mod gallery;
pub mod jobs;
mod run_details;
mod search;
pub mod study;

pub use catalog::*;
pub use gallery::*;
pub use run_details::*;
pub use search::*;

/// Logs a database failure on the server and turns it into a server-function error.
#[cfg(feature = "ssr")]
pub(crate) fn db_error(e: sqlx::Error) -> leptos::prelude::ServerFnError {
    tracing::error!(error = %e, "database query failed");
    leptos::prelude::ServerFnError::new(format!("database error: {e}"))
}

/// Who is asking this server function, for blinding (`studio::gallery::blinding`).
#[cfg(feature = "ssr")]
pub(crate) async fn audience(
    ctx: &crate::state::ServerContext,
) -> Result<studio::gallery::Audience, leptos::prelude::ServerFnError> {
    ctx.audience(study::admin_cookie().await.as_deref()).await.map_err(db_error)
}
