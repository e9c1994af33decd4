//! The job queue in SQLite (`jobs`, `job_events`): what the server functions ask for, and what
//! the job runner ([`super::runner`]) uses to claim, report on and finish jobs. All of the queue's SQL is
//! here so the two sides agree on its states:
//!
//! queued → running → done | failed | cancelled; a running job whose server stopped goes back to
//! queued (and resumes: finished neurons are kept by the dissection run).

use super::{
    DissectJobRequest, JobDetail, JobEventView, JobFormOptions, JobView, ModelChoice, RegisterRequest, MAX_JOB_NEURONS,
    REGISTER_KINDS, SCORING_FUNCTIONS, SUMMARIES,
};
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
}

/// What a job works on, in words.
fn target_of(kind: &str, payload_json: &str) -> String {
    if kind == "dissect" {
        if let Ok(r) = serde_json::from_str::<DissectJobRequest>(payload_json) {
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
            request: (r.kind == "dissect").then(|| serde_json::from_str(&r.payload_json).ok()).flatten(),
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
        }
    }
}

/// The columns of a [`JobRow`], followed by a literal tail (WHERE/ORDER BY).
macro_rules! select_job {
    ($tail:literal) => {
        concat!("SELECT j.id, j.kind, j.status, j.stage, j.progress_done, j.progress_total, j.message, j.error,
        j.cancel_requested, j.attempts, j.created_at, j.started_at, j.finished_at, j.payload_json,
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
        let layers: Vec<(String, i64)> =
            sqlx::query_as("SELECT name, channels FROM layers WHERE model_id = ? ORDER BY position")
                .bind(id)
                .fetch_all(db)
                .await?;
        choices.push(ModelChoice { slug, name, layers });
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

/// Checks a dissection request against what is registered, naming whatever is wrong.
pub async fn validate(db: &SqlitePool, r: &DissectJobRequest) -> Result<(), JobError> {
    let options = form_options(db).await?;
    let model = options.models.iter().find(|m| m.slug == r.model).ok_or_else(|| {
        JobError::Invalid(format!(
            "unknown model `{}`; registered: {}",
            r.model,
            names(options.models.iter().map(|m| m.slug.as_str()))
        ))
    })?;
    let &(_, channels) = model.layers.iter().find(|(l, _)| *l == r.layer).ok_or_else(|| {
        JobError::Invalid(format!(
            "model `{}` has no layer `{}`; its layers: {}",
            r.model,
            r.layer,
            names(model.layers.iter().map(|(l, _)| l.as_str()))
        ))
    })?;
    let units = study::units::parse_units(&r.neurons, channels as usize, r.seed)
        .map_err(|e| JobError::Invalid(format!("neurons `{}`: {e}", r.neurons.trim())))?;
    if units.len() > MAX_JOB_NEURONS {
        return Err(JobError::Invalid(format!(
            "{} neurons asked; one job takes at most {MAX_JOB_NEURONS}",
            units.len()
        )));
    }
    if !options.probe_sets.iter().any(|(s, _, _)| *s == r.probe_set) {
        return Err(JobError::Invalid(format!(
            "unknown probing set `{}`; ready: {}",
            r.probe_set,
            names(options.probe_sets.iter().map(|(s, _, _)| s.as_str()))
        )));
    }
    if !SUMMARIES.contains(&r.summary.as_str()) {
        return Err(JobError::Invalid(format!("summary `{}`: expected mean or max", r.summary)));
    }
    if !SCORING_FUNCTIONS.contains(&r.scoring.as_str()) {
        return Err(JobError::Invalid(format!(
            "scoring `{}`: expected one of {}",
            r.scoring,
            SCORING_FUNCTIONS.join(", ")
        )));
    }
    Ok(())
}

/// Queues a checked dissection request; an identical queued or running job is answered instead.
pub async fn enqueue_dissection(db: &SqlitePool, r: &DissectJobRequest) -> Result<i64, JobError> {
    validate(db, r).await?;
    enqueue(db, "dissect", &serde_json::to_string(r).map_err(|e| JobError::Invalid(e.to_string()))?).await
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
    let mut tx = db.begin().await?;
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
    let mut tx = db.begin().await?;
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
    let mut tx = db.begin().await?;
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM jobs WHERE status = 'running'").fetch_all(&mut *tx).await?;
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
    let mut tx = db.begin().await?;
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
