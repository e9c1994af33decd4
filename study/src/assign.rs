//! Handing out tasks. Each ordinary task (neuron) gets `raters_per_item` distinct raters; no rater
//! sees a neuron twice; every rater gets each attention check once, spread among their tasks; a
//! rater who leaves finds the same unfinished task when coming back; a slot held too long by an
//! absent rater is handed to someone else.
//!
//! Showing a task is read-only; only choosing a new one writes, in one short transaction that
//! reads the least-covered items through an index on each item's slot count (kept by triggers,
//! migrations/0003), so the cost does not grow with the size of the study.

use crate::error::{Result, StudyError};
use crate::rng::SplitMix64;
use crate::tokens::hash_token;
use crate::types::{RaterPage, RaterTask, TaskDescription, TaskImage};
use crate::write_gate::WriteTx;
use sqlx::{Row, SqliteConnection, SqlitePool};

/// An unfinished assignment older than this no longer holds its slot.
pub const ABANDONED_AFTER_MINUTES: i64 = 30;

/// One attention check after every this many tasks (the first after the second task).
const ATTENTION_EVERY: i64 = 5;

/// Least-covered items a new task is drawn from at random (so raters do not all walk the
/// items in the same order).
const DRAW_AMONG: i64 = 16;

/// Neurons this rater has been given already (as a subquery on ?2 = rater id).
const SEEN_NEURONS: &str =
    "SELECT j.neuron_id FROM assignments a JOIN study_items j ON j.id = a.item_id WHERE a.rater_id = ?2";

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
    pending: Option<i64>,
}

async fn rater_state(db: &mut SqliteConnection, token: &str) -> Result<RaterState> {
    let r = sqlx::query(
        "SELECT r.id, r.study_id, r.revoked_at, r.worker_id, s.name, s.instructions, s.status, s.raters_per_item,
                (SELECT COUNT(*) FROM assignments a WHERE a.rater_id = r.id AND a.completed_at IS NOT NULL) AS completed,
                (SELECT COUNT(*) FROM assignments a WHERE a.rater_id = r.id) AS given,
                (SELECT a.id FROM assignments a WHERE a.rater_id = r.id AND a.completed_at IS NULL
                    AND a.released_at IS NULL ORDER BY a.position LIMIT 1) AS pending
         FROM raters r JOIN studies s ON s.id = r.study_id WHERE r.token_hash = ?",
    )
    .bind(hash_token(token))
    .fetch_optional(&mut *db)
    .await?
    .ok_or_else(|| StudyError::NotFound("this rater link is not valid".into()))?;
    if r.get::<Option<String>, _>("revoked_at").is_some() {
        return Err(StudyError::Forbidden("this rater link has been revoked".into()));
    }
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
        pending: r.get("pending"),
    })
}

/// The rater's page: their current task (resumed or newly assigned) and progress.
pub async fn rater_page(db: &SqlitePool, token: &str) -> Result<RaterPage> {
    let mut conn = db.acquire().await?;
    let mut state = rater_state(&mut conn, token).await?;
    drop(conn);
    if state.status == "open" && state.pending.is_none() {
        let mut w = WriteTx::begin(db).await?;
        // Read again under the write lock: another tab of this rater may have been faster.
        state = rater_state(&mut w.tx, token).await?;
        if state.pending.is_none() {
            state.pending = assign_next(&mut w.tx, &state).await?;
        }
        w.commit().await?;
    }
    let task = match (state.status.as_str(), state.pending) {
        ("open", Some(id)) => Some(load_task(db, &state, id).await?),
        _ => None,
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

/// Up to `DRAW_AMONG` least-covered ordinary items with a free slot whose neuron the rater has
/// not seen, as (item id, slots taken).
async fn least_covered(tx: &mut SqliteConnection, s: &RaterState) -> Result<Vec<(i64, i64)>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT i.id, i.slots_taken FROM study_items i
         WHERE i.study_id = ?1 AND i.is_attention_check = 0 AND i.slots_taken < ?3
           AND i.neuron_id NOT IN ({SEEN_NEURONS})
         ORDER BY i.slots_taken, i.position LIMIT {DRAW_AMONG}"
    )))
    .bind(s.study_id)
    .bind(s.rater_id)
    .bind(s.quota)
    .fetch_all(&mut *tx)
    .await?)
}

async fn assign_next(tx: &mut SqliteConnection, s: &RaterState) -> Result<Option<i64>> {
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
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT i.id FROM study_items i WHERE i.study_id = ?1 AND i.is_attention_check = 1
               AND i.neuron_id NOT IN ({SEEN_NEURONS}) ORDER BY i.position"
        )))
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
    let mut descriptions: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM study_descriptions WHERE item_id = ? ORDER BY id").bind(item_id).fetch_all(&mut *tx).await?;
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
    Ok(Some(id))
}

async fn load_task(db: &SqlitePool, s: &RaterState, assignment_id: i64) -> Result<RaterTask> {
    let a = sqlx::query("SELECT item_id, display_order_json FROM assignments WHERE id = ?")
        .bind(assignment_id)
        .fetch_one(db)
        .await?;
    let item_id: i64 = a.get("item_id");
    let order: Vec<i64> = serde_json::from_str(a.get::<&str, _>("display_order_json")).unwrap_or_default();
    let texts = sqlx::query("SELECT id, text FROM study_descriptions WHERE item_id = ?").bind(item_id).fetch_all(db).await?;
    let descriptions = order
        .iter()
        .filter_map(|id| texts.iter().find(|r| r.get::<i64, _>("id") == *id))
        .map(|r| TaskDescription { id: r.get("id"), text: r.get("text") })
        .collect();
    let images = sqlx::query(
        "SELECT im.sha256, s.crop_x0, s.crop_y0, s.crop_x1, s.crop_y1 FROM study_item_images s
         JOIN images im ON im.id = s.image_id WHERE s.item_id = ? ORDER BY s.position",
    )
    .bind(item_id)
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| {
        let crop: Option<i64> = r.get("crop_x0");
        TaskImage {
            sha256: r.get("sha256"),
            crop: crop.map(|x0| [x0, r.get("crop_y0"), r.get("crop_x1"), r.get("crop_y1")]),
        }
    })
    .collect();
    // Total = done + this task + what is still open to this rater: the study's items with a free
    // slot (a counter kept by triggers) less those of neurons this rater has had; attention
    // checks count only while ordinary tasks are left, since they only come with those.
    let (open_items, seen_open, checks_open): (i64, i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT (SELECT open_items FROM studies WHERE id = ?1),
                (SELECT COUNT(DISTINCT i.id) FROM assignments a JOIN study_items j ON j.id = a.item_id
                 JOIN study_items i ON i.neuron_id = j.neuron_id
                 WHERE a.rater_id = ?2 AND i.study_id = ?1 AND i.is_attention_check = 0 AND i.slots_taken < ?3),
                (SELECT COUNT(*) FROM study_items i WHERE i.study_id = ?1 AND i.is_attention_check = 1
                   AND i.neuron_id NOT IN ({SEEN_NEURONS}))"
    )))
    .bind(s.study_id)
    .bind(s.rater_id)
    .bind(s.quota)
    .fetch_one(db)
    .await?;
    let ordinary_open = open_items - seen_open;
    let still_open = ordinary_open + if ordinary_open > 0 { checks_open } else { 0 };
    Ok(RaterTask {
        assignment_id,
        number: s.completed + 1,
        total: s.completed + 1 + still_open,
        images,
        descriptions,
    })
}
