//! Background jobs: dissections started from the browser, run one at a time by the server's job
//! runner, with progress pushed to `/jobs` over server-sent events (`/events/jobs`).
//!
//! Anyone who can see the gallery can see the queue; starting and cancelling a job need the
//! admin session and its CSRF token (JSON bodies only, which a cross-site form cannot send).

use leptos::prelude::*;
use leptos::server_fn::codec::Json;

// The job types live in the service layer (shared with the browser bundle); the queue's SQL and
// the runner are there too.
#[cfg(feature = "ssr")]
use studio::jobs::queue;
pub use studio::jobs::{
    DissectJobRequest, JobDetail, JobEventView, JobFormOptions, JobView, ModelChoice, RegisterRequest, MAX_JOB_NEURONS,
    REGISTER_KINDS, SCORING_FUNCTIONS, SUMMARIES,
};

/// A job error as a server-function error, with its status on the response.
#[cfg(feature = "ssr")]
fn fail(e: queue::JobError) -> ServerFnError {
    if let Some(resp) = use_context::<leptos_axum::ResponseOptions>() {
        resp.set_status(http::StatusCode::from_u16(e.status()).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR));
    }
    if let queue::JobError::Db(db) = &e {
        tracing::error!(error = %db, "job queue query failed");
    }
    ServerFnError::new(e.to_string())
}

/// The most recent jobs, newest first (the SSE stream sends the same list).
#[server(prefix = "/api", endpoint = "jobs/list")]
pub async fn list_jobs() -> Result<Vec<JobView>, ServerFnError> {
    let ctx = crate::state::server_context()?;
    queue::list(&ctx.db, queue::LIST_LIMIT).await.map_err(fail)
}

/// One job with its log.
#[server(prefix = "/api", endpoint = "jobs/get")]
pub async fn load_job(id: i64) -> Result<Option<JobDetail>, ServerFnError> {
    let ctx = crate::state::server_context()?;
    queue::detail(&ctx.db, id).await.map_err(fail)
}

/// What the start form can offer, and whether the visitor may use it.
#[server(prefix = "/api", endpoint = "jobs/form")]
pub async fn load_job_form() -> Result<JobFormOptions, ServerFnError> {
    let ctx = crate::state::server_context()?;
    let cookie = super::study::admin_cookie().await;
    let csrf = study::admin::authorize(&ctx.db, cookie.as_deref(), None).await.ok().map(|s| s.csrf_token);
    let mut options = queue::form_options(&ctx.db).await.map_err(fail)?;
    options.csrf = csrf;
    Ok(options)
}

/// Queues a dissection (admin); answers the job's id. The same request while an identical job is
/// still queued or running answers that job instead of queueing a second.
#[server(prefix = "/api", endpoint = "jobs/start", input = Json)]
pub async fn start_dissection(csrf: String, request: DissectJobRequest) -> Result<i64, ServerFnError> {
    let (db, _) = super::study::admin_guard(Some(&csrf)).await?;
    let id = queue::enqueue_dissection(&db, &request).await.map_err(fail)?;
    crate::state::server_context()?.jobs.changed();
    Ok(id)
}

/// Queues the registration of a probing-set folder or a TorchScript model on the server's disk
/// (admin; `kind` is one of [`REGISTER_KINDS`]); answers the job's id.
#[server(prefix = "/api", endpoint = "jobs/register", input = Json)]
pub async fn start_registration(csrf: String, kind: String, request: RegisterRequest) -> Result<i64, ServerFnError> {
    let (db, _) = super::study::admin_guard(Some(&csrf)).await?;
    let id = queue::enqueue_registration(&db, &kind, &request).await.map_err(fail)?;
    crate::state::server_context()?.jobs.changed();
    Ok(id)
}

/// Cancels a job (admin): a queued one at once, a running one between neurons.
#[server(prefix = "/api", endpoint = "jobs/cancel", input = Json)]
pub async fn cancel_job(csrf: String, id: i64) -> Result<(), ServerFnError> {
    let (db, _) = super::study::admin_guard(Some(&csrf)).await?;
    queue::request_cancel(&db, id).await.map_err(fail)?;
    crate::state::server_context()?.jobs.changed();
    Ok(())
}
