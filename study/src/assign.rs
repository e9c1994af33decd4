//! Handing out tasks. Each ordinary task (neuron) gets `raters_per_item` distinct raters; no rater
//! sees a neuron twice; every rater gets each attention check once, spread among their tasks; a
//! rater who leaves finds the same unfinished task when coming back; a slot held too long by an
//! absent rater is handed to someone else.
//!
//! Choosing a rater's next task happens in the transaction that stores their answer
//! ([`crate::submit`]), so the acknowledgement carries it; the page only assigns on a first visit
//! or after a slot was released. What a task shows comes from [`TaskCache`].
//!
//! Showing a task is read-only; only choosing a new one writes, in one short transaction that
//! reads the least-covered items through an index on each item's slot count (kept by triggers,
//! migrations/0003), so the cost does not grow with the size of the study.

use crate::error::{Result, StudyError};
use crate::rng::SplitMix64;
use crate::task_cache::TaskCache;
use crate::tokens::hash_token;
use crate::types::{RaterPage, RaterTask};
use crate::write_gate::WriteTx;
use sqlx::{Row, SqliteConnection, SqlitePool};

/// An unfinished assignment older than this no longer holds its slot.
pub const ABANDONED_AFTER_MINUTES: i64 = 30;

/// One attention check after every this many tasks (the first after the second task).
const ATTENTION_EVERY: i64 = 5;

/// Least-covered items a new task is drawn from at random (so raters do not all walk the
/// items in the same order).
const DRAW_AMONG: i64 = 16;

/// "Rater ?2 has not been shown item `i`'s neuron": one lookup in the set kept by triggers
/// (migrations/0006), whatever the length of the rater's history.
macro_rules! unseen_by_rater {
    () => {
        "NOT EXISTS (SELECT 1 FROM rater_neurons rn WHERE rn.rater_id = ?2 AND rn.neuron_id = i.neuron_id)"
    };
}

/// SQLite date modifier for "now minus the abandonment delay".
fn abandoned_modifier() -> String {
    format!("-{ABANDONED_AFTER_MINUTES} minutes")
}

/// What the page needs to know about the rater and their study, in one read.
struct RaterState {
    rater_id: i64,
    study_id: i64,
    worker_id: Option<String>,
    study_name: String,
    instructions: String,
    status: String,
    quota: i64,
    completed: i64,
    given: i64,
    pending: Option<Pending>,
}

/// The rater's unfinished task.
struct Pending {
    assignment_id: i64,
    item_id: i64,
    /// Description ids in this task's display order.
    order: Vec<i64>,
}

/// How a rater is named: by the token of their link, or (inside the study's own code, after the
/// token was checked) by id.
enum Who<'a> {
    Token(&'a str),
    Id(i64),
}

/// The rater's state, with their unfinished task (if any) joined in.
macro_rules! rater_state_sql {
    ($rater:literal) => {
        concat!(
            "SELECT r.id, r.study_id, r.revoked_at, r.worker_id, s.name, s.instructions, s.status, s.raters_per_item,
                    r.tasks_completed AS completed, r.tasks_given AS given,
                    p.id AS pending, p.item_id AS pending_item, p.display_order_json AS pending_order
             FROM raters r JOIN studies s ON s.id = r.study_id
             LEFT JOIN assignments p ON p.id = (SELECT a.id FROM assignments a WHERE a.rater_id = r.id
                 AND a.completed_at IS NULL AND a.released_at IS NULL ORDER BY a.position LIMIT 1)
             WHERE ",
            $rater
        )
    };
}

async fn rater_state(db: &mut SqliteConnection, who: Who<'_>) -> Result<RaterState> {
    let query = match who {
        Who::Token(token) => sqlx::query(rater_state_sql!("r.token_hash = ?")).bind(hash_token(token)),
        Who::Id(id) => sqlx::query(rater_state_sql!("r.id = ?")).bind(id),
    };
    let r = query
        .fetch_optional(&mut *db)
        .await?
        .ok_or_else(|| StudyError::NotFound("this rater link is not valid".into()))?;
    if r.get::<Option<String>, _>("revoked_at").is_some() {
        return Err(StudyError::Forbidden("this rater link has been revoked".into()));
    }
    let pending = match r.get::<Option<i64>, _>("pending") {
        Some(assignment_id) => Some(Pending {
            assignment_id,
            item_id: r.get("pending_item"),
            order: serde_json::from_str(r.get::<&str, _>("pending_order"))
                .map_err(|e| StudyError::Invalid(format!("task {assignment_id}: stored display order unreadable: {e}")))?,
        }),
        None => None,
    };
    Ok(RaterState {
        rater_id: r.get("id"),
        study_id: r.get("study_id"),
        worker_id: r.get("worker_id"),
        study_name: r.get("name"),
        instructions: r.get("instructions"),
        status: r.get("status"),
        quota: r.get("raters_per_item"),
        completed: r.get("completed"),
        given: r.get("given"),
        pending,
    })
}

/// The rater's page: their current task (resumed or newly assigned) and progress.
pub async fn rater_page(db: &SqlitePool, token: &str) -> Result<RaterPage> {
    rater_page_cached(db, &TaskCache::default(), token).await
}

/// [`rater_page`] with the server's cache of task contents.
pub async fn rater_page_cached(db: &SqlitePool, cache: &TaskCache, token: &str) -> Result<RaterPage> {
    let mut conn = db.acquire().await?;
    let mut state = rater_state(&mut conn, Who::Token(token)).await?;
    let task = if state.status != "open" {
        None
    } else if let Some(pending) = &state.pending {
        Some(load_task(&mut conn, cache, &state, pending).await?)
    } else {
        drop(conn);
        let mut w = WriteTx::begin(db).await?;
        // Read again under the write lock: another tab of this rater may have been faster.
        state = rater_state(&mut w.tx, Who::Token(token)).await?;
        let task = current_task(&mut w.tx, cache, &mut state).await?;
        w.commit().await?;
        task
    };
    Ok(RaterPage {
        study_name: state.study_name,
        instructions: state.instructions,
        worker_id: state.worker_id,
        completed: state.completed,
        study_status: state.status,
        task,
    })
}

/// The task rater `rater_id` is to do next, assigned now if they have none: what an accepted
/// answer's acknowledgement carries, read and written in the transaction that stores the answer
/// (so one round trip per task). `None` when nothing is left for them, the study is not open or
/// their link was revoked.
pub(crate) async fn next_task(tx: &mut SqliteConnection, cache: &TaskCache, rater_id: i64) -> Result<Option<RaterTask>> {
    let mut state = match rater_state(tx, Who::Id(rater_id)).await {
        Ok(state) => state,
        Err(StudyError::Forbidden(_) | StudyError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    current_task(tx, cache, &mut state).await
}

/// The pending task of `state`, or a new one (`tx` must be a write transaction).
async fn current_task(tx: &mut SqliteConnection, cache: &TaskCache, state: &mut RaterState) -> Result<Option<RaterTask>> {
    if state.status != "open" {
        return Ok(None);
    }
    if state.pending.is_none() {
        state.pending = assign_next(tx, cache, state).await?;
    }
    match &state.pending {
        Some(pending) => Ok(Some(load_task(tx, cache, state, pending).await?)),
        None => Ok(None),
    }
}

/// Up to `DRAW_AMONG` least-covered ordinary items with a free slot whose neuron the rater has
/// not seen, as (item id, slots taken).
async fn least_covered(tx: &mut SqliteConnection, s: &RaterState) -> Result<Vec<(i64, i64)>> {
    Ok(sqlx::query_as(concat!(
        "SELECT i.id, i.slots_taken FROM study_items i
         WHERE i.study_id = ?1 AND i.is_attention_check = 0 AND i.slots_taken < ?3 AND ",
        unseen_by_rater!(),
        " ORDER BY i.slots_taken, i.position LIMIT ?4"
    ))
    .bind(s.study_id)
    .bind(s.rater_id)
    .bind(s.quota)
    .bind(DRAW_AMONG)
    .fetch_all(&mut *tx)
    .await?)
}

async fn assign_next(tx: &mut SqliteConnection, cache: &TaskCache, s: &RaterState) -> Result<Option<Pending>> {
    let mut ordinary = least_covered(tx, s).await?;
    if ordinary.is_empty() {
        // Slots held too long by absent raters go back to the pool (only needed once every
        // item looks full, so the sweep is rare).
        let released = sqlx::query(
            "UPDATE assignments SET released_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')
             WHERE study_id = ? AND completed_at IS NULL AND released_at IS NULL
               AND assigned_at <= strftime('%Y-%m-%dT%H:%M:%fZ','now', ?)",
        )
        .bind(s.study_id)
        .bind(abandoned_modifier())
        .execute(&mut *tx)
        .await?;
        if released.rows_affected() > 0 {
            ordinary = least_covered(tx, s).await?;
        }
    }
    let mut rng = SplitMix64::new(((s.rater_id as u64) << 20) ^ s.given as u64);
    // An attention check comes among ordinary tasks (never as a rater's only task).
    let check_due = s.given % ATTENTION_EVERY == 2 || (ordinary.is_empty() && s.given > 0);
    let checks: Vec<i64> = if check_due {
        sqlx::query_scalar(concat!(
            "SELECT i.id FROM study_items i WHERE i.study_id = ?1 AND i.is_attention_check = 1 AND ",
            unseen_by_rater!(),
            " ORDER BY i.position"
        ))
        .bind(s.study_id)
        .bind(s.rater_id)
        .fetch_all(&mut *tx)
        .await?
    } else {
        Vec::new()
    };
    let item = if !checks.is_empty() {
        Some(checks[rng.below(checks.len())])
    } else {
        let least = ordinary.first().map(|o| o.1);
        let candidates: Vec<i64> = ordinary.iter().filter(|o| Some(o.1) == least).map(|o| o.0).collect();
        (!candidates.is_empty()).then(|| candidates[rng.below(candidates.len())])
    };
    let Some(item_id) = item else { return Ok(None) };
    let mut descriptions = cache.item(tx, item_id).await?.description_ids();
    // A fresh random order for every task (OS randomness: not predictable from ids).
    let mut seed = [0u8; 8];
    getrandom::fill(&mut seed).expect("the operating system's random generator is available");
    SplitMix64::new(u64::from_le_bytes(seed)).shuffle(&mut descriptions);
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO assignments (study_id, rater_id, item_id, position, display_order_json)
         VALUES (?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(s.study_id)
    .bind(s.rater_id)
    .bind(item_id)
    .bind(s.given)
    .bind(serde_json::to_string(&descriptions).expect("ids serialise"))
    .fetch_one(&mut *tx)
    .await?;
    Ok(Some(Pending { assignment_id: id, item_id, order: descriptions }))
}

async fn load_task(conn: &mut SqliteConnection, cache: &TaskCache, s: &RaterState, task: &Pending) -> Result<RaterTask> {
    let content = cache.item(conn, task.item_id).await?;
    // Total = done + this task + what is still open to this rater: the study's items with a free
    // slot less those of neurons this rater has had (both counters kept by triggers); attention
    // checks count only while ordinary tasks are left, since they only come with those.
    let (open_items, seen_open, checks_open): (i64, i64, i64) = sqlx::query_as(concat!(
        "SELECT s.open_items, r.seen_open_items,
                (SELECT COUNT(*) FROM study_items i WHERE i.study_id = ?1 AND i.is_attention_check = 1 AND ",
        unseen_by_rater!(),
        ") FROM raters r JOIN studies s ON s.id = r.study_id WHERE r.id = ?2"
    ))
    .bind(s.study_id)
    .bind(s.rater_id)
    .fetch_one(&mut *conn)
    .await?;
    let ordinary_open = open_items - seen_open;
    let still_open = ordinary_open + if ordinary_open > 0 { checks_open } else { 0 };
    Ok(RaterTask {
        assignment_id: task.assignment_id,
        number: s.completed + 1,
        total: s.completed + 1 + still_open,
        images: content.images.clone(),
        descriptions: content.in_order(&task.order),
    })
}
