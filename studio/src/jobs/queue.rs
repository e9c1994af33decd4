//! The job queue in SQLite (`jobs`, `job_events`): what the server functions ask for, and what
//! the job runner ([`super::runner`]) uses to claim, report on and finish jobs. All of the queue's SQL is
//! here so the two sides agree on its states:
//!
//! queued → running → done | failed | cancelled; a running job whose server stopped goes back to
//! queued (and resumes: finished neurons are kept by the dissection run).

use super::{
    DissectJobRequest, JobDetail, JobEventView, JobFormOptions, JobView, ModelChoice, RegisterRequest, MAX_JOB_NEURONS,
    REGISTER_KINDS, SCORING_FUNCTIONS,
};
use crate::labels::import::excerpt;
use dissect::concepts::scoring::ScoringFunction;
use dissect::crops::Summary;
use dissect::model::LayerKind;
use serde::{Deserialize, Serialize};
use sqlx::SqlitePool;

/// How many jobs the queue view lists.
pub const LIST_LIMIT: i64 = 50;
/// The newest events a job's page shows.
const EVENT_LIMIT: i64 = 500;

/// A refused request, with its HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

impl JobError {
    pub fn status(&self) -> u16 {
        match self {
            JobError::Invalid(_) => 400,
            JobError::NotFound(_) => 404,
            JobError::Conflict(_) => 409,
            JobError::Db(_) => 500,
        }
    }
}

#[derive(sqlx::FromRow)]
struct JobRow {
    id: i64,
    kind: String,
    status: String,
    stage: Option<String>,
    progress_done: i64,
    progress_total: Option<i64>,
    message: Option<String>,
    error: Option<String>,
    cancel_requested: i64,
    attempts: i64,
    failed_neurons: i64,
    created_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
    payload_json: String,
    run_id: Option<i64>,
    device: Option<String>,
}

/// What a job works on, in words.
fn target_of(kind: &str, payload_json: &str) -> String {
    if kind == "dissect" {
        if let Some(p) = DissectPayload::parse(payload_json) {
            let r = p.request();
            return format!("{} · {} · neurons {} · {}", r.model, r.layer, r.neurons, r.probe_set);
        }
    } else if let Ok(r) = serde_json::from_str::<RegisterRequest>(payload_json) {
        // The queue is public: name the folder or file, not where it is on the server.
        let name = std::path::Path::new(&r.path).file_name().map(|n| n.to_string_lossy().into_owned());
        return format!("{}: {}", kind.trim_start_matches("register_").replace('_', " "), name.unwrap_or_default());
    }
    kind.to_string()
}

impl From<JobRow> for JobView {
    fn from(r: JobRow) -> Self {
        JobView {
            id: r.id,
            target: target_of(&r.kind, &r.payload_json),
            request: (r.kind == "dissect")
                .then(|| DissectPayload::parse(&r.payload_json).map(|p| p.request().clone()))
                .flatten(),
            kind: r.kind,
            status: r.status,
            stage: r.stage,
            done: r.progress_done,
            total: r.progress_total,
            message: r.message,
            error: r.error,
            cancel_requested: r.cancel_requested != 0,
            attempts: r.attempts,
            failed_neurons: r.failed_neurons,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            run_id: r.run_id,
            from_command_line: r.device.as_deref().is_some_and(|d| d.starts_with(COMMAND_LINE_DEVICE)),
        }
    }
}

/// The columns of a [`JobRow`], followed by a literal tail (WHERE/ORDER BY).
macro_rules! select_job {
    ($tail:literal) => {
        concat!("SELECT j.id, j.kind, j.status, j.stage, j.progress_done, j.progress_total, j.message, j.error,
        j.cancel_requested, j.attempts, j.created_at, j.started_at, j.finished_at, j.payload_json, j.device,
        (SELECT count(*) FROM job_events e WHERE e.job_id = j.id AND e.level = 'warn' AND e.stage = 'neurons') AS failed_neurons,
        (SELECT max(r.id) FROM dissection_runs r WHERE r.job_id = j.id) AS run_id
    FROM jobs j ", $tail)
    };
}

/// The newest `limit` jobs, newest first.
pub async fn list(db: &SqlitePool, limit: i64) -> Result<Vec<JobView>, JobError> {
    let rows: Vec<JobRow> = sqlx::query_as(select_job!("ORDER BY j.id DESC LIMIT ?")).bind(limit).fetch_all(db).await?;
    Ok(rows.into_iter().map(JobView::from).collect())
}

pub async fn get(db: &SqlitePool, id: i64) -> Result<Option<JobView>, JobError> {
    let row: Option<JobRow> = sqlx::query_as(select_job!("WHERE j.id = ?")).bind(id).fetch_optional(db).await?;
    Ok(row.map(JobView::from))
}

/// A job and its newest events, oldest first.
pub async fn detail(db: &SqlitePool, id: i64) -> Result<Option<JobDetail>, JobError> {
    let Some(job) = get(db, id).await? else { return Ok(None) };
    let mut events: Vec<(String, String, Option<String>, String)> =
        sqlx::query_as("SELECT at, level, stage, message FROM job_events WHERE job_id = ? ORDER BY id DESC LIMIT ?")
            .bind(id)
            .bind(EVENT_LIMIT)
            .fetch_all(db)
            .await?;
    events.reverse();
    let events =
        events.into_iter().map(|(at, level, stage, message)| JobEventView { at, level, stage, message }).collect();
    Ok(Some(JobDetail { job, events }))
}

/// Models with their layers, and probing sets that are ready.
pub async fn form_options(db: &SqlitePool) -> Result<JobFormOptions, JobError> {
    let models: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT id, slug, name FROM models ORDER BY id").fetch_all(db).await?;
    let mut choices = Vec::with_capacity(models.len());
    for (id, slug, name) in models {
        let rows: Vec<(String, i64, String)> =
            sqlx::query_as("SELECT name, channels, kind FROM layers WHERE model_id = ? ORDER BY position")
                .bind(id)
                .fetch_all(db)
                .await?;
        let default_layer = rows
            .iter()
            .rev()
            .find(|l| LayerKind::parse(&l.2) == Some(LayerKind::Conv))
            .or(rows.last())
            .map(|l| l.0.clone());
        let layers = rows.into_iter().map(|(name, channels, _)| (name, channels)).collect();
        choices.push(ModelChoice { slug, name, layers, default_layer });
    }
    let probe_sets: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT s.slug, s.name, (SELECT count(*) FROM probe_set_images i WHERE i.probe_set_id = s.id)
         FROM probe_sets s WHERE s.status = 'ready' ORDER BY s.id",
    )
    .fetch_all(db)
    .await?;
    Ok(JobFormOptions { models: choices, probe_sets, csrf: None })
}

fn names<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

/// A dissection as the queue stores it (the job's payload): what was asked, for the queue's
/// views, and what that was resolved to when it was queued (ids, the checked units, the engine's
/// enums), so the runner looks nothing up by name and parses nothing again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedDissection {
    pub request: DissectJobRequest,
    pub model_id: i64,
    pub layer_id: i64,
    pub probe_set_id: i64,
    pub units: Vec<usize>,
    pub summary: Summary,
    pub scoring: ScoringFunction,
}

/// A dissection job's payload: resolved ([`QueuedDissection`]), or the bare request a server
/// before resolved payloads queued (the runner resolves it when it starts).
pub enum DissectPayload {
    Resolved(QueuedDissection),
    Request(DissectJobRequest),
}

impl DissectPayload {
    pub fn parse(payload_json: &str) -> Option<DissectPayload> {
        match serde_json::from_str::<QueuedDissection>(payload_json) {
            Ok(q) => Some(DissectPayload::Resolved(q)),
            Err(_) => serde_json::from_str(payload_json).ok().map(DissectPayload::Request),
        }
    }

    pub fn request(&self) -> &DissectJobRequest {
        match self {
            DissectPayload::Resolved(q) => &q.request,
            DissectPayload::Request(r) => r,
        }
    }
}

/// Resolves a dissection request against what is registered (the edge where the form's names
/// become ids and enums), naming whatever is wrong (quoting the request within bounds).
pub async fn resolve(db: &SqlitePool, r: &DissectJobRequest) -> Result<QueuedDissection, JobError> {
    // What is registered is listed (form_options) only when a name does not resolve.
    let model_id: Option<i64> =
        sqlx::query_scalar("SELECT id FROM models WHERE slug = ?").bind(&r.model).fetch_optional(db).await?;
    let Some(model_id) = model_id else {
        let options = form_options(db).await?;
        return Err(JobError::Invalid(format!(
            "unknown model `{}`; registered: {}",
            excerpt(&r.model),
            names(options.models.iter().map(|m| m.slug.as_str()))
        )));
    };
    let layer: Option<(i64, i64)> = sqlx::query_as("SELECT id, channels FROM layers WHERE model_id = ? AND name = ?")
        .bind(model_id)
        .bind(&r.layer)
        .fetch_optional(db)
        .await?;
    let Some((layer_id, channels)) = layer else {
        let options = form_options(db).await?;
        let layers = options.models.iter().find(|m| m.slug == r.model).map(|m| m.layers.as_slice()).unwrap_or(&[]);
        return Err(JobError::Invalid(format!(
            "model `{}` has no layer `{}`; its layers: {}",
            excerpt(&r.model),
            excerpt(&r.layer),
            names(layers.iter().map(|(l, _)| l.as_str()))
        )));
    };
    let units = study::units::parse_units(&r.neurons, channels as usize, r.seed)
        .map_err(|e| JobError::Invalid(format!("neurons: {e}")))?;
    if units.len() > MAX_JOB_NEURONS {
        return Err(JobError::Invalid(format!(
            "{} neurons asked; one job takes at most {MAX_JOB_NEURONS}",
            units.len()
        )));
    }
    let probe_set_id: Option<i64> = sqlx::query_scalar("SELECT id FROM probe_sets WHERE slug = ? AND status = 'ready'")
        .bind(&r.probe_set)
        .fetch_optional(db)
        .await?;
    let Some(probe_set_id) = probe_set_id else {
        let options = form_options(db).await?;
        return Err(JobError::Invalid(format!(
            "unknown probing set `{}`; ready: {}",
            excerpt(&r.probe_set),
            names(options.probe_sets.iter().map(|(s, _, _)| s.as_str()))
        )));
    };
    let summary = Summary::parse(&r.summary)
        .ok_or_else(|| JobError::Invalid(format!("summary `{}`: expected mean or max", excerpt(&r.summary))))?;
    let scoring = ScoringFunction::parse(&r.scoring).ok_or_else(|| {
        JobError::Invalid(format!(
            "scoring `{}`: expected one of {}",
            excerpt(&r.scoring),
            SCORING_FUNCTIONS.join(", ")
        ))
    })?;
    Ok(QueuedDissection { request: r.clone(), model_id, layer_id, probe_set_id, units, summary, scoring })
}

/// Queues a dissection request once resolved; an identical queued or running job is answered
/// instead.
pub async fn enqueue_dissection(db: &SqlitePool, r: &DissectJobRequest) -> Result<i64, JobError> {
    let queued = resolve(db, r).await?;
    enqueue(db, "dissect", &serde_json::to_string(&queued).map_err(|e| JobError::Invalid(e.to_string()))?).await
}

/// Queues the registration of a folder or model file on the server's disk, after checking that
/// the path is what `kind` needs (the job itself checks the contents).
pub async fn enqueue_registration(db: &SqlitePool, kind: &str, r: &RegisterRequest) -> Result<i64, JobError> {
    let Some((kind, what)) = REGISTER_KINDS.iter().find(|(k, _)| *k == kind) else {
        return Err(JobError::Invalid(format!(
            "unknown registration `{kind}`: expected register_probe_set or register_model"
        )));
    };
    let path = std::path::Path::new(r.path.trim());
    if !path.is_absolute() {
        return Err(JobError::Invalid(format!(
            "`{}` is not an absolute path on the server; give {what}",
            r.path.trim()
        )));
    }
    let fits = if *kind == "register_probe_set" { path.is_dir() } else { path.is_file() };
    if !fits {
        return Err(JobError::Invalid(format!("`{}` is not {what}", path.display())));
    }
    let request = RegisterRequest { path: path.display().to_string() };
    enqueue(db, kind, &serde_json::to_string(&request).map_err(|e| JobError::Invalid(e.to_string()))?).await
}

/// Queues a job unless an identical one is queued or running (then answers that one).
async fn enqueue(db: &SqlitePool, kind: &str, payload: &str) -> Result<i64, JobError> {
    let mut tx = crate::db::begin_write(db).await?;
    let existing: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM jobs WHERE kind = ? AND status IN ('queued', 'running') AND cancel_requested = 0
           AND payload_json = ? ORDER BY id LIMIT 1",
    )
    .bind(kind)
    .bind(payload)
    .fetch_optional(&mut *tx)
    .await?;
    let id = match existing {
        Some(id) => id,
        None => {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO jobs (kind, payload_json, message) VALUES (?, ?, 'waiting in the queue') RETURNING id",
            )
            .bind(kind)
            .bind(payload)
            .fetch_one(&mut *tx)
            .await?;
            add_event_in(&mut tx, id, "info", None, "queued").await?;
            id
        }
    };
    tx.commit().await?;
    Ok(id)
}

/// A queued job is cancelled at once; a running one is asked to stop (the runner stops it
/// between neurons, keeping those finished).
pub async fn request_cancel(db: &SqlitePool, id: i64) -> Result<(), JobError> {
    let mut tx = crate::db::begin_write(db).await?;
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM jobs WHERE id = ?").bind(id).fetch_optional(&mut *tx).await?;
    match status.as_deref() {
        None => return Err(JobError::NotFound(format!("no job #{id}"))),
        Some("queued") => {
            sqlx::query("UPDATE jobs SET status = 'cancelled', cancel_requested = 1, finished_at = strftime('%Y-%m-%dT%H:%M:%fZ','now'), message = 'cancelled before it started' WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
            add_event_in(&mut tx, id, "info", None, "cancelled before it started").await?;
        }
        Some("running") => {
            sqlx::query("UPDATE jobs SET cancel_requested = 1, message = 'cancelling: stops after the neuron in progress' WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            add_event_in(&mut tx, id, "info", None, "cancel requested").await?;
        }
        Some(other) => return Err(JobError::Conflict(format!("job #{id} is already {other}"))),
    }
    tx.commit().await?;
    Ok(())
}

// ------------------------------------------------------------------------------------------
// The runner's side
// ------------------------------------------------------------------------------------------

/// A job the runner has claimed.
pub struct ClaimedJob {
    pub id: i64,
    pub kind: String,
    pub payload_json: String,
}

/// Puts jobs left running by a server that stopped back in the queue (run at start-up, before
/// any job is claimed); answers how many.
pub async fn requeue_interrupted(db: &SqlitePool) -> Result<u64, JobError> {
    fail_stale_command_line_jobs(db).await?;
    let mut tx = crate::db::begin_write(db).await?;
    // A command-line run is its own process's, which may well be running still.
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM jobs WHERE status = 'running' AND device NOT LIKE 'cli:%'")
        .fetch_all(&mut *tx)
        .await?;
    for &id in &ids {
        sqlx::query("UPDATE jobs SET status = 'queued', device = NULL, message = 'interrupted by a server stop; resumes where it stopped' WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        add_event_in(
            &mut tx,
            id,
            "warn",
            None,
            "the server stopped while this job ran; it was put back in the queue and resumes where it stopped",
        )
        .await?;
    }
    tx.commit().await?;
    Ok(ids.len() as u64)
}

/// The `device` of a job that a `dnd` command runs in its own process: `cli:<process id>`.
pub fn command_line_device() -> String {
    format!("{COMMAND_LINE_DEVICE}{}", std::process::id())
}

/// Prefix of [`command_line_device`].
const COMMAND_LINE_DEVICE: &str = "cli:";

/// A command-line job without a heartbeat for this long has died with its process (it beats
/// every few seconds while it runs).
pub const COMMAND_LINE_STALE_SECS: i64 = 120;

/// Records a dissection that `dnd dissect` runs in its own process, as a running job of its own
/// device, so `/jobs` lists it with its progress; answers its id. Its owner keeps the heartbeat,
/// progress and end ([`set_progress`], [`heartbeat`], [`finish`]) as the server's runner does.
pub async fn start_command_line_job(db: &SqlitePool, request: &DissectJobRequest) -> Result<i64, JobError> {
    let payload = serde_json::to_string(request).expect("a request serialises");
    let mut tx = crate::db::begin_write(db).await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO jobs (kind, payload_json, status, device, attempts, started_at, heartbeat_at, message)
         VALUES ('dissect', ?, 'running', ?, 1, strftime('%Y-%m-%dT%H:%M:%fZ','now'),
                 strftime('%Y-%m-%dT%H:%M:%fZ','now'), 'starting')
         RETURNING id",
    )
    .bind(payload)
    .bind(command_line_device())
    .fetch_one(&mut *tx)
    .await?;
    let started = format!("started from the command line (`dnd dissect`, process {})", std::process::id());
    add_event_in(&mut tx, id, "info", None, &started).await?;
    tx.commit().await?;
    Ok(id)
}

/// What command-line jobs look like now (running ones, and those that ended in the last
/// minute), as one string that changes whenever their progress does: live views poll it, since
/// another process's writes do not reach this one's [`super::JobSignals`].
pub async fn command_line_jobs_state(db: &SqlitePool) -> Result<String, JobError> {
    Ok(sqlx::query_scalar(
        "SELECT COALESCE(group_concat(id || ':' || status || ':' || progress_done || ':' || COALESCE(message, ''), '|'), '')
         FROM jobs WHERE device LIKE 'cli:%'
           AND (status = 'running' OR finished_at > strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-60 seconds'))",
    )
    .fetch_one(db)
    .await?)
}

/// Marks command-line jobs whose process stopped without recording an end (killed, crashed,
/// machine down) as failed; answers how many.
pub async fn fail_stale_command_line_jobs(db: &SqlitePool) -> Result<u64, JobError> {
    // The runner asks this on every idle tick: read first, and take the write lock only when
    // there is something to mark.
    const STALE: &str = "SELECT id, heartbeat_at FROM jobs WHERE status = 'running' AND device LIKE 'cli:%'
           AND (heartbeat_at IS NULL OR heartbeat_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?))";
    let age = format!("-{COMMAND_LINE_STALE_SECS} seconds");
    let any: Vec<(i64, Option<String>)> = sqlx::query_as(STALE).bind(&age).fetch_all(db).await?;
    if any.is_empty() {
        return Ok(0);
    }
    let mut tx = crate::db::begin_write(db).await?;
    let stale: Vec<(i64, Option<String>)> = sqlx::query_as(STALE).bind(&age).fetch_all(&mut *tx).await?;
    for (id, last) in &stale {
        let error = format!(
            "the command-line run stopped without finishing: no sign of its process since {}              (killed or crashed?); run the same `dnd dissect` again to resume",
            last.as_deref().unwrap_or("its start")
        );
        sqlx::query(
            "UPDATE jobs SET status = 'failed', finished_at = strftime('%Y-%m-%dT%H:%M:%fZ','now'), error = ?,
                 message = NULL WHERE id = ?",
        )
        .bind(&error)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        add_event_in(&mut tx, *id, "error", None, &format!("failed: {error}")).await?;
    }
    tx.commit().await?;
    Ok(stale.len() as u64)
}

/// Takes the next queued job (highest priority, then oldest) and marks it running on `device`.
pub async fn claim_next(db: &SqlitePool, device: &str) -> Result<Option<ClaimedJob>, JobError> {
    let row: Option<(i64, String, String)> = sqlx::query_as("UPDATE jobs SET status = 'running', device = ?, attempts = attempts + 1, stage = NULL,
             started_at = COALESCE(started_at, strftime('%Y-%m-%dT%H:%M:%fZ','now')), heartbeat_at = strftime('%Y-%m-%dT%H:%M:%fZ','now'), message = 'starting'
         WHERE id = (SELECT id FROM jobs WHERE status = 'queued' ORDER BY priority DESC, id LIMIT 1)
         RETURNING id, kind, payload_json")
    .bind(device)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(id, kind, payload_json)| ClaimedJob { id, kind, payload_json }))
}

/// Records where a running job is; also its heartbeat.
pub async fn set_progress(
    db: &SqlitePool,
    id: i64,
    stage: &str,
    done: i64,
    total: Option<i64>,
    message: &str,
) -> Result<(), JobError> {
    sqlx::query("UPDATE jobs SET stage = ?, progress_done = ?, progress_total = ?, message = ?, heartbeat_at = strftime('%Y-%m-%dT%H:%M:%fZ','now') WHERE id = ?")
    .bind(stage)
    .bind(done)
    .bind(total)
    .bind(message)
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

/// Whether someone asked to cancel the job; also its heartbeat.
pub async fn heartbeat(db: &SqlitePool, id: i64) -> Result<bool, JobError> {
    let cancel: Option<i64> = sqlx::query_scalar(
        "UPDATE jobs SET heartbeat_at = strftime('%Y-%m-%dT%H:%M:%fZ','now') WHERE id = ? RETURNING cancel_requested",
    )
    .bind(id)
    .fetch_optional(db)
    .await?;
    Ok(cancel.unwrap_or(0) != 0)
}

pub async fn add_event(
    db: &SqlitePool,
    id: i64,
    level: &str,
    stage: Option<&str>,
    message: &str,
) -> Result<(), JobError> {
    let mut conn = db.acquire().await?;
    add_event_in(&mut conn, id, level, stage, message).await
}

async fn add_event_in(
    conn: &mut sqlx::SqliteConnection,
    id: i64,
    level: &str,
    stage: Option<&str>,
    message: &str,
) -> Result<(), JobError> {
    sqlx::query("INSERT INTO job_events (job_id, level, stage, message) VALUES (?, ?, ?, ?)")
        .bind(id)
        .bind(level)
        .bind(stage)
        .bind(message)
        .execute(conn)
        .await?;
    Ok(())
}

/// How a job ended.
pub enum Outcome<'a> {
    Done {
        message: &'a str,
        result_json: &'a str,
    },
    Failed {
        error: &'a str,
    },
    Cancelled {
        message: &'a str,
    },
    /// Stopped by a server shutdown: back to the queue, to resume at the next start.
    Interrupted,
}

pub async fn finish(db: &SqlitePool, id: i64, outcome: Outcome<'_>) -> Result<(), JobError> {
    let mut tx = crate::db::begin_write(db).await?;
    let (sql, level, event, text, result): (&'static str, &str, String, &str, Option<&str>) = match outcome {
        Outcome::Done { message, result_json } => (
            "UPDATE jobs SET status = 'done', finished_at = strftime('%Y-%m-%dT%H:%M:%fZ','now'), message = ?, result_json = ? WHERE id = ?",
            "info",
            format!("done: {message}"),
            message,
            Some(result_json),
        ),
        Outcome::Failed { error } => (
            "UPDATE jobs SET status = 'failed', finished_at = strftime('%Y-%m-%dT%H:%M:%fZ','now'), error = ?, message = NULL, result_json = ? WHERE id = ?",
            "error",
            format!("failed: {error}"),
            error,
            None,
        ),
        Outcome::Cancelled { message } => (
            "UPDATE jobs SET status = 'cancelled', finished_at = strftime('%Y-%m-%dT%H:%M:%fZ','now'), message = ?, result_json = ? WHERE id = ?",
            "info",
            format!("cancelled: {message}"),
            message,
            None,
        ),
        Outcome::Interrupted => (
            "UPDATE jobs SET status = 'queued', device = NULL, message = ?, result_json = ? WHERE id = ?",
            "warn",
            "stopped by a server shutdown; resumes at the next start".to_string(),
            "interrupted by a server stop; resumes where it stopped",
            None,
        ),
    };
    sqlx::query(sql).bind(text).bind(result).bind(id).execute(&mut *tx).await?;
    add_event_in(&mut tx, id, level, None, &event).await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{register_model, register_probe_set, ModelSpec, ProbeSetSpec};
    use crate::test_support::{temp_db, FakeModel};
    use dissect::model::LayerInfo;

    /// A database with model `fake` (layer `conv`, 4 units) and a ready probing set `demo`.
    async fn registered() -> (tempfile::TempDir, SqlitePool) {
        let (dir, db) = temp_db().await;
        let weights = dir.path().join("w.bin");
        std::fs::write(&weights, b"weights").unwrap();
        let layers = vec![LayerInfo { name: "conv".into(), kind: LayerKind::Conv, channels: 4, spatial: Some((8, 8)) }];
        let model = FakeModel(layers, vec![]);
        let spec = ModelSpec {
            slug: "fake",
            name: "Fake",
            description: "",
            builtin_key: None,
            weights_path: &weights,
            dataset: None,
            model: &model,
        };
        register_model(&db, spec).await.unwrap();
        let root = dir.path().join("set");
        std::fs::create_dir_all(&root).unwrap();
        for i in 0..3u8 {
            image::RgbImage::from_pixel(4, 4, image::Rgb([i, 9, 9])).save(root.join(format!("{i}.png"))).unwrap();
        }
        let set = ProbeSetSpec {
            slug: "demo".into(),
            name: "Demo".into(),
            description: String::new(),
            source: "folder",
            root,
            heldout_fraction: 0.3,
            split_seed: 0,
        };
        register_probe_set(&db, set).await.unwrap();
        (dir, db)
    }

    fn request(neurons: &str) -> DissectJobRequest {
        DissectJobRequest {
            model: "fake".into(),
            layer: "conv".into(),
            neurons: neurons.into(),
            seed: 0,
            probe_set: "demo".into(),
            summary: "max".into(),
            scoring: "topk-squared".into(),
        }
    }

    /// The form's names become ids, units and enums once, when the job is queued; the runner
    /// reads them back, and a payload from before (the bare request) still reads.
    #[tokio::test]
    async fn a_queued_dissection_stores_what_it_resolved_to() {
        let (_dir, db) = registered().await;
        let id = enqueue_dissection(&db, &request("1,3")).await.unwrap();
        let payload: String =
            sqlx::query_scalar("SELECT payload_json FROM jobs WHERE id = ?").bind(id).fetch_one(&db).await.unwrap();
        let Some(DissectPayload::Resolved(q)) = DissectPayload::parse(&payload) else { panic!("{payload}") };
        let ids: (i64, i64, i64) = sqlx::query_as(
            "SELECT m.id, l.id, s.id FROM models m JOIN layers l ON l.model_id = m.id, probe_sets s
             WHERE m.slug = 'fake' AND l.name = 'conv' AND s.slug = 'demo'",
        )
        .fetch_one(&db)
        .await
        .unwrap();
        assert_eq!((q.model_id, q.layer_id, q.probe_set_id), ids);
        assert_eq!(q.units, vec![1, 3]);
        assert_eq!((q.summary, q.scoring), (Summary::Max, ScoringFunction::TopkSquared));
        assert_eq!(q.request, request("1,3"));
        assert_eq!(enqueue_dissection(&db, &request("1,3")).await.unwrap(), id, "the same request is the same job");
        let view = get(&db, id).await.unwrap().unwrap();
        assert_eq!(view.request, Some(request("1,3")));
        assert_eq!(view.target, "fake · conv · neurons 1,3 · demo");

        let legacy = serde_json::to_string(&request("2")).unwrap();
        let Some(DissectPayload::Request(r)) = DissectPayload::parse(&legacy) else { panic!("{legacy}") };
        assert_eq!(resolve(&db, &r).await.unwrap().units, vec![2]);
    }

    #[tokio::test]
    async fn a_request_that_does_not_resolve_names_the_problem_and_queues_nothing() {
        let (_dir, db) = registered().await;
        let error = |r: DissectJobRequest| {
            let db = db.clone();
            async move { resolve(&db, &r).await.unwrap_err().to_string() }
        };
        let e = error(DissectJobRequest { layer: "conx".into(), ..request("0") }).await;
        assert!(e.contains("has no layer `conx`") && e.contains("conv"), "{e}");
        let e = error(DissectJobRequest { probe_set: "nope".into(), ..request("0") }).await;
        assert!(e.contains("unknown probing set `nope`") && e.contains("demo"), "{e}");
        let e = error(DissectJobRequest { summary: "median".into(), ..request("0") }).await;
        assert!(e.contains("summary `median`"), "{e}");
        let e = error(request("4")).await;
        assert!(e.contains("neurons: unit 4 is outside the layer"), "{e}");
        // A pasted file is quoted within bounds, wherever it lands.
        let huge = "1,".repeat(100_000);
        let e = error(request(&huge)).await;
        assert!(e.len() < 200 && e.contains("1,1,1,"), "{} bytes: {}", e.len(), &e[..e.len().min(300)]);
        let e = error(DissectJobRequest { model: "m".repeat(100_000), ..request("0") }).await;
        assert!(e.len() < 300, "{} bytes", e.len());
        assert!(enqueue_dissection(&db, &request("9")).await.is_err());
        let jobs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs").fetch_one(&db).await.unwrap();
        assert_eq!(jobs, 0);
    }

    /// Fuzz: unit specs as a user types them (job form, `dnd dissect`, study set-up). A spec
    /// is accepted only as sorted, distinct units of the layer; refused, the message is bounded.
    #[test]
    fn fuzz_unit_specs() {
        let seeds: Vec<Vec<u8>> =
            ["0-49", "3,7,9", "0-9,20", "random:50", " 1 - 3 ,5"].iter().map(|s| s.as_bytes().to_vec()).collect();
        dissect::fuzz::run(
            "unit specs",
            &seeds,
            &[b",", b"-", b"random:", b" "],
            dissect::fuzz::DEFAULT_ITERATIONS,
            |bytes| match study::units::parse_units(&String::from_utf8_lossy(bytes), 64, 1) {
                Ok(units) if units.is_empty() => Err("an empty selection was accepted".into()),
                Ok(units) if units.windows(2).any(|w| w[0] >= w[1]) || units.iter().any(|&u| u >= 64) => {
                    Err(format!("accepted units are not sorted, distinct and in the layer: {units:?}"))
                }
                Ok(_) => Ok(()),
                Err(e) => dissect::fuzz::bounded_message(&e, 200),
            },
        );
    }

    /// A `dnd dissect` run is a running job of its own device: a server start leaves it running
    /// while its heartbeat is fresh (it is another process's), and fails it once the heartbeat
    /// is stale, saying why; the live views' state string follows its progress.
    #[tokio::test]
    async fn command_line_jobs_are_listed_left_alone_and_failed_when_their_process_dies() {
        let (_dir, db) = registered().await;
        let id = start_command_line_job(&db, &request("1")).await.unwrap();
        let listed = list(&db, 10).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].from_command_line && listed[0].status == "running", "{:?}", listed[0]);
        assert_eq!(listed[0].target, "fake · conv · neurons 1 · demo");
        let before = command_line_jobs_state(&db).await.unwrap();
        set_progress(&db, id, "neurons", 1, Some(2), "describing").await.unwrap();
        assert_ne!(command_line_jobs_state(&db).await.unwrap(), before, "progress changes the state");

        assert_eq!(requeue_interrupted(&db).await.unwrap(), 0, "a live command-line run is not the server's");
        assert_eq!(get(&db, id).await.unwrap().unwrap().status, "running");
        assert!(claim_next(&db, "cpu").await.unwrap().is_none(), "nor does the server's runner take it");

        sqlx::query("UPDATE jobs SET heartbeat_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-10 minutes') WHERE id = ?")
            .bind(id)
            .execute(&db)
            .await
            .unwrap();
        assert_eq!(requeue_interrupted(&db).await.unwrap(), 0);
        let job = get(&db, id).await.unwrap().unwrap();
        assert_eq!(job.status, "failed");
        assert!(job.error.as_deref().unwrap().contains("stopped without finishing"), "{:?}", job.error);
        assert_eq!(fail_stale_command_line_jobs(&db).await.unwrap(), 0, "once");
    }
}
