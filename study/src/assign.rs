//! Handing out tasks. Each ordinary task (neuron) gets `raters_per_item` distinct raters; no rater
//! sees a neuron twice; every rater gets each attention check once, spread among their tasks; a
//! rater who leaves finds the same unfinished task when coming back; a slot held too long by an
//! absent rater is handed to someone else.

use crate::error::Result;
use crate::raters::rater_by_token;
use crate::rng::SplitMix64;
use crate::types::{RaterPage, RaterTask, TaskDescription, TaskImage};
use sqlx::{Row, SqlitePool};

/// An unfinished assignment older than this no longer holds its slot.
pub const ABANDONED_AFTER_MINUTES: i64 = 30;

/// SQLite date modifier for "now minus the abandonment delay".
fn abandoned_modifier() -> String {
    format!("-{ABANDONED_AFTER_MINUTES} minutes")
}

/// One attention check after every this many tasks (the first after the second task).
const ATTENTION_EVERY: i64 = 5;

/// The rater's page: their current task (resumed or newly assigned) and progress.
pub async fn rater_page(db: &SqlitePool, token: &str) -> Result<RaterPage> {
    let rater = rater_by_token(db, token).await?;
    let study = sqlx::query("SELECT name, instructions, status, raters_per_item FROM studies WHERE id = ?")
        .bind(rater.study_id)
        .fetch_one(db)
        .await?;
    let row = sqlx::query(
        "UPDATE raters SET last_seen_at = strftime('%Y-%m-%dT%H:%M:%fZ','now') WHERE id = ? RETURNING worker_id",
    )
    .bind(rater.id)
    .fetch_one(db)
    .await?;
    let worker_id: Option<String> = row.get("worker_id");
    let completed: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM assignments WHERE rater_id = ? AND completed_at IS NOT NULL")
            .bind(rater.id)
            .fetch_one(db)
            .await?;
    let status: String = study.get("status");
    let task = if status == "open" {
        current_or_next(db, rater.id, rater.study_id, study.get("raters_per_item")).await?
    } else {
        None
    };
    Ok(RaterPage {
        study_name: study.get("name"),
        instructions: study.get("instructions"),
        worker_id,
        completed,
        study_status: status,
        task,
    })
}

async fn current_or_next(db: &SqlitePool, rater_id: i64, study_id: i64, quota: i64) -> Result<Option<RaterTask>> {
    // Assigning is read-then-write: BEGIN IMMEDIATE takes the write lock first, so two raters
    // asking at once cannot both take an item's last slot.
    let mut tx = db.begin_with("BEGIN IMMEDIATE").await?;
    let pending: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM assignments WHERE rater_id = ? AND completed_at IS NULL AND released_at IS NULL
         ORDER BY position LIMIT 1",
    )
    .bind(rater_id)
    .fetch_optional(&mut *tx)
    .await?;
    let assignment_id = match pending {
        Some(id) => Some(id),
        None => assign_next(&mut tx, rater_id, study_id, quota).await?,
    };
    let task = match assignment_id {
        Some(id) => Some(load_task(&mut tx, rater_id, study_id, quota, id).await?),
        None => None,
    };
    tx.commit().await?;
    Ok(task)
}

/// Items this rater may still be given, as (item id, is attention check, slots taken).
async fn open_items(
    tx: &mut sqlx::SqliteConnection,
    rater_id: i64,
    study_id: i64,
) -> Result<Vec<(i64, bool, i64)>> {
    let rows = sqlx::query(
        "SELECT i.id, i.is_attention_check,
                (SELECT COUNT(*) FROM assignments a WHERE a.item_id = i.id AND (a.completed_at IS NOT NULL
                    OR (a.released_at IS NULL
                        AND a.assigned_at > strftime('%Y-%m-%dT%H:%M:%fZ','now', ?3))))
                    AS taken
         FROM study_items i
         WHERE i.study_id = ?1
           AND NOT EXISTS (SELECT 1 FROM assignments a JOIN study_items j ON j.id = a.item_id
                           WHERE a.rater_id = ?2 AND j.neuron_id = i.neuron_id)
         ORDER BY i.position",
    )
    .bind(study_id)
    .bind(rater_id)
    .bind(abandoned_modifier())
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows.iter().map(|r| (r.get("id"), r.get::<i64, _>("is_attention_check") == 1, r.get("taken"))).collect())
}

async fn assign_next(tx: &mut sqlx::SqliteConnection, rater_id: i64, study_id: i64, quota: i64) -> Result<Option<i64>> {
    let open = open_items(tx, rater_id, study_id).await?;
    let given: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM assignments WHERE rater_id = ?")
        .bind(rater_id)
        .fetch_one(&mut *tx)
        .await?;
    let ordinary: Vec<(i64, i64)> = open.iter().filter(|o| !o.1 && o.2 < quota).map(|o| (o.0, o.2)).collect();
    let checks: Vec<i64> = open.iter().filter(|o| o.1).map(|o| o.0).collect();
    let mut rng = SplitMix64::new((rater_id as u64) << 20 ^ given as u64);
    let check_due = given % ATTENTION_EVERY == 2 || ordinary.is_empty();
    let item = if check_due && !checks.is_empty() && (!ordinary.is_empty() || given > 0) {
        Some(checks[rng.below(checks.len())])
    } else {
        // The least-covered items first, so coverage grows evenly; a random one among those.
        let least = ordinary.iter().map(|o| o.1).min();
        let candidates: Vec<i64> = ordinary.iter().filter(|o| Some(o.1) == least).map(|o| o.0).collect();
        (!candidates.is_empty()).then(|| candidates[rng.below(candidates.len())])
    };
    let Some(item_id) = item else { return Ok(None) };
    // Slots held too long by absent raters go back to the pool.
    sqlx::query(
        "UPDATE assignments SET released_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')
         WHERE item_id = ? AND completed_at IS NULL AND released_at IS NULL
           AND assigned_at <= strftime('%Y-%m-%dT%H:%M:%fZ','now', ?)",
    )
    .bind(item_id)
    .bind(abandoned_modifier())
    .execute(&mut *tx)
    .await?;
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
    .bind(study_id)
    .bind(rater_id)
    .bind(item_id)
    .bind(given)
    .bind(serde_json::to_string(&descriptions).expect("ids serialise"))
    .fetch_one(&mut *tx)
    .await?;
    Ok(Some(id))
}

async fn load_task(
    tx: &mut sqlx::SqliteConnection,
    rater_id: i64,
    study_id: i64,
    quota: i64,
    assignment_id: i64,
) -> Result<RaterTask> {
    let a = sqlx::query("SELECT item_id, display_order_json FROM assignments WHERE id = ?")
        .bind(assignment_id)
        .fetch_one(&mut *tx)
        .await?;
    let item_id: i64 = a.get("item_id");
    let order: Vec<i64> = serde_json::from_str(a.get::<&str, _>("display_order_json")).unwrap_or_default();
    let texts = sqlx::query("SELECT id, text FROM study_descriptions WHERE item_id = ?").bind(item_id).fetch_all(&mut *tx).await?;
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
    .fetch_all(&mut *tx)
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
    let done_before: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM assignments WHERE rater_id = ? AND completed_at IS NOT NULL",
    )
    .bind(rater_id)
    .fetch_one(&mut *tx)
    .await?;
    // Total = what this rater has done + this task + what is still open to them.
    let open = open_items(tx, rater_id, study_id).await?;
    // Attention checks only come with ordinary tasks, so they count while some are left.
    let ordinary_open = open.iter().filter(|o| !o.1 && o.2 < quota).count() as i64;
    let checks_open = open.iter().filter(|o| o.1).count() as i64;
    let still_open = ordinary_open + if ordinary_open > 0 { checks_open } else { 0 };
    Ok(RaterTask {
        assignment_id,
        number: done_before + 1,
        total: done_before + 1 + still_open,
        images,
        descriptions,
    })
}
