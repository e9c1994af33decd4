//! Background jobs: dissections started from the browser, run one at a time by the server's job
//! runner, with progress pushed to `/jobs` over server-sent events (`/events/jobs`).
//!
//! Anyone who can see the gallery can see the queue; starting and cancelling a job need the
//! admin session and its CSRF token (JSON bodies only, which a cross-site form cannot send).

use leptos::prelude::*;
use leptos::server_fn::codec::Json;
use serde::{Deserialize, Serialize};

/// The scoring functions a dissection can use (docs/method.md), as the engine names them.
pub const SCORING_FUNCTIONS: [&str; 4] = ["topk-squared-image-products", "topk-squared", "image-products", "mean"];

/// Largest number of neurons one job may ask for (a whole layer of the built-in models fits).
pub const MAX_JOB_NEURONS: usize = 4096;

/// A dissection as the browser asks for it (`dnd dissect`'s options).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DissectJobRequest {
    /// Model slug, as in `/m/{slug}`.
    pub model: String,
    pub layer: String,
    /// `0-49`, `3,7,9` or `random:50`.
    pub neurons: String,
    /// Seed of `random:N`.
    pub seed: u64,
    /// Probing-set slug.
    pub probe_set: String,
    /// `mean` or `max`.
    pub summary: String,
    /// One of [`SCORING_FUNCTIONS`].
    pub scoring: String,
}

/// A folder of images or a TorchScript model file on the server's disk, to register.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// Absolute path on the server.
    pub path: String,
}

/// What registration jobs there are: (job kind, what the path must be).
pub const REGISTER_KINDS: [(&str, &str); 2] = [
    ("register_probe_set", "a folder of images (sub-folders become labels, sidecar .txt files descriptions)"),
    ("register_model", "a TorchScript file with its JSON manifest beside it (tools/export_torchscript.py)"),
];

/// One job as the queue shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub id: i64,
    pub kind: String,
    /// What it works on, in words (model · layer · neurons, or the path it registers).
    pub target: String,
    /// queued, running, done, failed or cancelled.
    pub status: String,
    pub stage: Option<String>,
    pub done: i64,
    pub total: Option<i64>,
    pub message: Option<String>,
    pub error: Option<String>,
    pub cancel_requested: bool,
    /// Times it was started (a restart re-queues a running job, which then resumes).
    pub attempts: i64,
    /// Neurons that failed so far (each has an event with its reason).
    pub failed_neurons: i64,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub request: Option<DissectJobRequest>,
    /// The dissection run it writes, once opened.
    pub run_id: Option<i64>,
}

impl JobView {
    pub fn is_finished(&self) -> bool {
        matches!(self.status.as_str(), "done" | "failed" | "cancelled")
    }
}

/// One line of a job's log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobEventView {
    pub at: String,
    pub level: String,
    pub stage: Option<String>,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobDetail {
    pub job: JobView,
    pub events: Vec<JobEventView>,
}

/// A model the start form offers: its slug, name, and layers (name, units).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelChoice {
    pub slug: String,
    pub name: String,
    pub layers: Vec<(String, i64)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobFormOptions {
    pub models: Vec<ModelChoice>,
    /// (slug, name, images) of every probing set.
    pub probe_sets: Vec<(String, String, i64)>,
    /// The admin session's CSRF token; `None` when the visitor is not logged in as admin.
    pub csrf: Option<String>,
}

/// The most recent jobs, newest first (the SSE stream sends the same list).
#[server(prefix = "/api", endpoint = "jobs/list")]
pub async fn list_jobs() -> Result<Vec<JobView>, ServerFnError> {
    let ctx = crate::state::server_context()?;
    queue::list(&ctx.db, queue::LIST_LIMIT).await.map_err(queue::fail)
}

/// One job with its log.
#[server(prefix = "/api", endpoint = "jobs/get")]
pub async fn load_job(id: i64) -> Result<Option<JobDetail>, ServerFnError> {
    let ctx = crate::state::server_context()?;
    queue::detail(&ctx.db, id).await.map_err(queue::fail)
}

/// What the start form can offer, and whether the visitor may use it.
#[server(prefix = "/api", endpoint = "jobs/form")]
pub async fn load_job_form() -> Result<JobFormOptions, ServerFnError> {
    let ctx = crate::state::server_context()?;
    let cookie = super::study::admin_cookie().await;
    let csrf = study::admin::authorize(&ctx.db, cookie.as_deref(), None).await.ok().map(|s| s.csrf_token);
    let mut options = queue::form_options(&ctx.db).await.map_err(queue::fail)?;
    options.csrf = csrf;
    Ok(options)
}

/// Queues a dissection (admin); answers the job's id. The same request while an identical job is
/// still queued or running answers that job instead of queueing a second.
#[server(prefix = "/api", endpoint = "jobs/start", input = Json)]
pub async fn start_dissection(csrf: String, request: DissectJobRequest) -> Result<i64, ServerFnError> {
    let (db, _) = super::study::admin_guard(Some(&csrf)).await?;
    let id = queue::enqueue_dissection(&db, &request).await.map_err(queue::fail)?;
    crate::state::server_context()?.jobs.changed();
    Ok(id)
}

/// Queues the registration of a probing-set folder or a TorchScript model on the server's disk
/// (admin; `kind` is one of [`REGISTER_KINDS`]); answers the job's id.
#[server(prefix = "/api", endpoint = "jobs/register", input = Json)]
pub async fn start_registration(csrf: String, kind: String, request: RegisterRequest) -> Result<i64, ServerFnError> {
    let (db, _) = super::study::admin_guard(Some(&csrf)).await?;
    let id = queue::enqueue_registration(&db, &kind, &request).await.map_err(queue::fail)?;
    crate::state::server_context()?.jobs.changed();
    Ok(id)
}

/// Cancels a job (admin): a queued one at once, a running one between neurons.
#[server(prefix = "/api", endpoint = "jobs/cancel", input = Json)]
pub async fn cancel_job(csrf: String, id: i64) -> Result<(), ServerFnError> {
    let (db, _) = super::study::admin_guard(Some(&csrf)).await?;
    queue::request_cancel(&db, id).await.map_err(queue::fail)?;
    crate::state::server_context()?.jobs.changed();
    Ok(())
}

#[cfg(feature = "ssr")]
pub mod queue;
