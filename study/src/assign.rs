//! Handing out tasks. Each ordinary task (neuron) gets `raters_per_item` distinct raters; no rater
//! sees a neuron twice; every rater gets each attention check once, spread among their tasks; a
//! rater who leaves finds the same unfinished task when coming back; a slot held too long by an
//! absent rater is handed to someone else.
//!
//! Choosing a rater's next task happens in the transaction that stores their answer
//! ([`crate::submit`]), so the acknowledgement carries it; the page only assigns on a first visit
//! or after a slot was released. The insert that assigns a task also returns what it shows (the
//! item's content unless [`TaskCache`] holds it, and "x of n"), so the single writer spends two
//! statements per task and the acknowledgement needs no further read.
//!
//! Showing a task is read-only; only choosing a new one writes, in one short transaction that
//! reads the least-covered items through an index on each item's slot count (kept by triggers,
//! migrations/0003) and checks "seen this neuron" per candidate in a per-rater set
//! (migrations/0006), so the cost grows neither with the study nor with the rater's history.

use crate::error::{Result, StudyError};
use crate::rng::SplitMix64;
use crate::task_cache::{item_content_columns, ItemContent, TaskCache};
use crate::tokens::hash_token;
use crate::types::{RaterPage, RaterTask};
use crate::write_gate::WriteTx;
use sqlx::{Row, SqliteConnection, SqlitePool};
use std::sync::Arc;

/// An unfinished assignment older than this no longer holds its slot.
pub const ABANDONED_AFTER_MINUTES: i64 = 30;

/// One attention check after every this many tasks (the first after the second task).
const ATTENTION_EVERY: i64 = 5;

/// Least-covered items a new task is drawn from at random (so raters do not all walk the
/// items in the same order). A literal in the SQL, not a bound `LIMIT ?`: SQLite plans a LIMIT
/// around its parameter's value, so every new binding would make it parse and plan the
/// statement again (that re-preparation was an eighth of the server's CPU under load).
macro_rules! draw_among {
    () => {
        "16"
    };
}

/// "Rater ?2 has not been shown item `i`'s neuron": one lookup in the set kept by triggers
/// (migrations/0006), whatever the length of the rater's history.
macro_rules! unseen_by_rater {
    () => {
        "NOT EXISTS (SELECT 1 FROM rater_neurons rn WHERE rn.rater_id = ?2 AND rn.neuron_id = i.neuron_id)"
    };
}

/// Joins rater `r`'s unfinished task as `p` (none: NULL columns): their earliest assignment
/// neither completed nor released.
macro_rules! join_pending_task {
    () => {
        " LEFT JOIN assignments p ON p.id = (SELECT a.id FROM assignments a WHERE a.rater_id = r.id
             AND a.completed_at IS NULL AND a.released_at IS NULL ORDER BY a.position LIMIT 1) "
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
    completed: i64,
    pending: Option<Pending>,
}

/// The rater's unfinished task.
struct Pending {
    assignment_id: i64,
    item_id: i64,
    /// Description ids in this task's display order.
    order: Vec<i64>,
    /// What the task shows, when its assignment just computed it (else read by [`load_task`]).
    shown: Option<Shown>,
}

impl Pending {
    /// The task as shown, when its assignment computed everything for it.
    fn ready(&self, completed: i64) -> Option<RaterTask> {
        let shown = self.shown.as_ref()?;
        Some(RaterTask {
            assignment_id: self.assignment_id,
            number: completed + 1,
            total: completed + 1 + shown.still_open,
            images: shown.content.images.clone(),
            descriptions: shown.content.in_order(&self.order),
        })
    }
}

/// A newly assigned task's content and how many tasks are still open to its rater after it.
struct Shown {
    content: Arc<ItemContent>,
    still_open: i64,
}

/// The rater with link `token`: their state, with their unfinished task (if any) joined in.
async fn rater_state(db: &mut SqliteConnection, token: &str) -> Result<RaterState> {
    let query = sqlx::query(concat!(
        "SELECT r.id, r.study_id, r.revoked_at, r.worker_id, s.name, s.instructions, s.status,
                r.tasks_completed AS completed,
                p.id AS pending, p.item_id AS pending_item, p.display_order_json AS pending_order
         FROM raters r JOIN studies s ON s.id = r.study_id",
        join_pending_task!(),
        "WHERE r.token_hash = ?"
    ))
    .bind(hash_token(token));
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
            order: display_order(assignment_id, r.get("pending_order"))?,
            shown: None,
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
        completed: r.get("completed"),
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
    let mut state = rater_state(&mut conn, token).await?;
    let task = if state.status != "open" {
        None
    } else if let Some(pending) = &state.pending {
        Some(load_task(&mut conn, cache, state.study_id, state.rater_id, state.completed, pending).await?)
    } else {
        drop(conn);
        let mut w = WriteTx::begin(db).await?;
        // Read again under the write lock: another tab of this rater may have been faster.
        state = rater_state(&mut w.tx, token).await?;
        let task = current_task(&mut w.tx, cache, &state).await?;
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

/// A rater's task as the writer leaves it: which assignment, and what the rater had completed
/// then. [`show`] turns it into what the rater sees, outside the write transaction.
pub(crate) struct Assigned {
    study_id: i64,
    rater_id: i64,
    completed: i64,
    pending: Pending,
}

/// Everything choosing rater ?2's next task needs, in one read (each statement is a round trip
/// to SQLite's thread, and this runs inside the single writer for every answer): their state,
/// their unfinished task, up to `draw_among!()` least-covered items they may get, and the
/// attention checks they have not had. (`INDEXED BY` on the checks: ordered by position, the
/// planner would otherwise walk the study's unique (study, position) index through every item
/// to find them.)
const STATE_FOR_NEXT_TASK: &str = concat!(
    "SELECT r.revoked_at, s.status, r.tasks_completed, r.tasks_given,
            p.id AS pending, p.item_id AS pending_item, p.display_order_json AS pending_order,
            (SELECT json_group_array(json_array(c.id, c.slots_taken)) FROM (
                SELECT i.id, i.slots_taken FROM study_items i
                WHERE i.study_id = ?1 AND i.is_attention_check = 0
                  AND i.slots_taken < (SELECT raters_per_item FROM studies WHERE id = ?1) AND ",
    unseen_by_rater!(),
    "           ORDER BY i.slots_taken, i.position LIMIT ",
    draw_among!(),
    ") c) AS ordinary,
            (SELECT json_group_array(c.id) FROM (
                SELECT i.id FROM study_items i INDEXED BY study_items_open WHERE i.study_id = ?1 AND i.is_attention_check = 1 AND ",
    unseen_by_rater!(),
    "           ORDER BY i.position) c) AS checks
     FROM raters r JOIN studies s ON s.id = r.study_id",
    join_pending_task!(),
    "WHERE r.id = ?2 AND r.study_id = ?1"
);

/// The task rater `rater_id` is to do next, assigned now if they have none (`tx` must be a write
/// transaction): what an accepted answer's acknowledgement carries, decided in the transaction
/// that stores the answer (so one round trip per task), and what a first visit gets. Usually two
/// statements: [`STATE_FOR_NEXT_TASK`] and the insert. `None` when nothing is left for them, the
/// study is not open or their link was revoked.
pub(crate) async fn assign_next_task(
    tx: &mut SqliteConnection,
    cache: &TaskCache,
    study_id: i64,
    rater_id: i64,
) -> Result<Option<Assigned>> {
    let mut swept = false;
    loop {
        let Some(r) = sqlx::query(STATE_FOR_NEXT_TASK).bind(study_id).bind(rater_id).fetch_optional(&mut *tx).await?
        else {
            return Ok(None);
        };
        if r.get::<Option<String>, _>("revoked_at").is_some() || r.get::<&str, _>("status") != "open" {
            return Ok(None);
        }
        let completed: i64 = r.get("tasks_completed");
        if let Some(assignment_id) = r.get::<Option<i64>, _>("pending") {
            let order = display_order(assignment_id, r.get("pending_order"))?;
            let pending = Pending { assignment_id, item_id: r.get("pending_item"), order, shown: None };
            return Ok(Some(Assigned { study_id, rater_id, completed, pending }));
        }
        let unreadable =
            |e: serde_json::Error| StudyError::Invalid(format!("rater {rater_id}: candidate items unreadable: {e}"));
        let ordinary: Vec<(i64, i64)> = serde_json::from_str(r.get("ordinary")).map_err(unreadable)?;
        if ordinary.is_empty() && !swept {
            // Every item looks full: slots held too long by absent raters go back to the pool
            // (rare, so not worth a statement on every task), then choose again.
            swept = true;
            if release_abandoned(tx, study_id).await? > 0 {
                continue;
            }
        }
        let checks: Vec<i64> = serde_json::from_str(r.get("checks")).map_err(unreadable)?;
        let choice = Choice { study_id, rater_id, given: r.get("tasks_given") };
        let pending = match choose(&choice, &ordinary, &checks) {
            Some(item_id) => Some(insert_assignment(tx, cache, &choice, item_id).await?),
            None => None,
        };
        return Ok(pending.map(|pending| Assigned { study_id, rater_id, completed, pending }));
    }
}

/// Hands the slots of study `study_id` held longer than the abandonment delay back to the pool;
/// how many were released.
async fn release_abandoned(tx: &mut SqliteConnection, study_id: i64) -> Result<u64> {
    let released = sqlx::query(
        "UPDATE assignments SET released_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')
         WHERE study_id = ? AND completed_at IS NULL AND released_at IS NULL
           AND assigned_at <= strftime('%Y-%m-%dT%H:%M:%fZ','now', ?)",
    )
    .bind(study_id)
    .bind(abandoned_modifier())
    .execute(&mut *tx)
    .await?;
    Ok(released.rows_affected())
}

/// What rater and study a task is being chosen for.
struct Choice {
    study_id: i64,
    rater_id: i64,
    /// Tasks given to the rater so far (the new one's position).
    given: i64,
}

/// Reads a stored display order.
fn display_order(assignment_id: i64, json: &str) -> Result<Vec<i64>> {
    serde_json::from_str(json)
        .map_err(|e| StudyError::Invalid(format!("task {assignment_id}: stored display order unreadable: {e}")))
}

/// What the rater sees of an assigned task: ready when the writer assigned it just now, else
/// read on a pooled connection (run it after the writer committed).
pub(crate) async fn show(db: &SqlitePool, cache: &TaskCache, a: &Assigned) -> Result<RaterTask> {
    if let Some(ready) = a.pending.ready(a.completed) {
        return Ok(ready);
    }
    let mut conn = db.acquire().await?;
    load_task(&mut conn, cache, a.study_id, a.rater_id, a.completed, &a.pending).await
}

/// The pending task of `state`, or a new one (`tx` must be a write transaction).
async fn current_task(tx: &mut SqliteConnection, cache: &TaskCache, state: &RaterState) -> Result<Option<RaterTask>> {
    if state.status != "open" {
        return Ok(None);
    }
    // (load_task returns a just-assigned task as its insert computed it, without reading.)
    match &state.pending {
        Some(pending) => {
            Ok(Some(load_task(tx, cache, state.study_id, state.rater_id, state.completed, pending).await?))
        }
        None => match assign_next_task(tx, cache, state.study_id, state.rater_id).await? {
            Some(a) => Ok(Some(load_task(tx, cache, a.study_id, a.rater_id, a.completed, &a.pending).await?)),
            None => Ok(None),
        },
    }
}

/// An attention check comes among ordinary tasks (never as a rater's only task).
fn check_due(given: i64, ordinary: &[(i64, i64)]) -> bool {
    given % ATTENTION_EVERY == 2 || (ordinary.is_empty() && given > 0)
}

/// The item to give: an attention check when one is due and left, else one of the least-covered
/// ordinary items (`ordinary`: (item id, slots taken), least covered first), at random.
fn choose(s: &Choice, ordinary: &[(i64, i64)], checks: &[i64]) -> Option<i64> {
    let mut rng = SplitMix64::new(((s.rater_id as u64) << 20) ^ s.given as u64);
    if check_due(s.given, ordinary) && !checks.is_empty() {
        return Some(checks[rng.below(checks.len())]);
    }
    let least = ordinary.first().map(|o| o.1);
    let candidates: Vec<i64> = ordinary.iter().filter(|o| Some(o.1) == least).map(|o| o.0).collect();
    (!candidates.is_empty()).then(|| candidates[rng.below(candidates.len())])
}

/// Assigns `item_id` to the rater, its descriptions in a fresh random order for this task
/// (SQLite's `random()`: a ChaCha20 stream seeded from the operating system, so not predictable
/// from ids), in one statement that also returns what the task shows: the item's content unless
/// cached, and how many tasks stay open to the rater (see [`load_task`]).
///
/// The counts come from `RETURNING`, which SQLite evaluates before the insert's AFTER triggers
/// run, so they see the counters as they were before this assignment: the rater's open ordinary
/// items lose the open ordinary item of the new task's neuron (the item itself, or for an
/// attention check the neuron's ordinary item), and the checks lose those of that neuron. The
/// study tests compare these totals with ones read afterwards.
async fn insert_assignment(tx: &mut SqliteConnection, cache: &TaskCache, s: &Choice, item_id: i64) -> Result<Pending> {
    macro_rules! insert {
        ($more:expr) => {
            concat!(
                "INSERT INTO assignments (study_id, rater_id, item_id, position, display_order_json)
                 SELECT ?1, ?2, ?3, ?4, json_group_array(d.id ORDER BY random()) FROM study_descriptions d WHERE d.item_id = ?3
                 RETURNING id, display_order_json,
                    (SELECT open_items FROM studies WHERE id = ?1) - (SELECT seen_open_items FROM raters WHERE id = ?2)
                    - (SELECT COUNT(*) FROM study_items o WHERE o.study_id = ?1 AND o.is_attention_check = 0
                         AND o.neuron_id = (SELECT neuron_id FROM study_items WHERE id = ?3)
                         AND o.slots_taken < (SELECT raters_per_item FROM studies WHERE id = ?1)),
                    (SELECT COUNT(*) FROM study_items i INDEXED BY study_items_open WHERE i.study_id = ?1 AND i.is_attention_check = 1
                         AND i.neuron_id <> (SELECT neuron_id FROM study_items WHERE id = ?3) AND ",
                unseen_by_rater!(),
                ")",
                $more
            )
        };
    }
    let cached = cache.get(item_id);
    let row =
        sqlx::query(if cached.is_some() { insert!("") } else { insert!(concat!(", ", item_content_columns!("?3"))) })
            .bind(s.study_id)
            .bind(s.rater_id)
            .bind(item_id)
            .bind(s.given)
            .fetch_one(&mut *tx)
            .await?;
    let id: i64 = row.get(0);
    let content = match cached {
        Some(content) => content,
        None => cache.insert_json(item_id, row.get(4), row.get(5))?,
    };
    let (ordinary_open, checks_open): (i64, i64) = (row.get(2), row.get(3));
    Ok(Pending {
        assignment_id: id,
        item_id,
        order: display_order(id, row.get(1))?,
        shown: Some(Shown { content, still_open: still_open(ordinary_open, checks_open) }),
    })
}

/// Tasks still open to a rater besides the current one: attention checks count only while
/// ordinary tasks are left, since they only come with those.
fn still_open(ordinary_open: i64, checks_open: i64) -> i64 {
    ordinary_open + if ordinary_open > 0 { checks_open } else { 0 }
}

async fn load_task(
    conn: &mut SqliteConnection,
    cache: &TaskCache,
    study_id: i64,
    rater_id: i64,
    completed: i64,
    task: &Pending,
) -> Result<RaterTask> {
    // Total = done + this task + what is still open to this rater: the study's items with a free
    // slot less those of neurons this rater has had (both counters kept by triggers), and the
    // attention checks they have not had. An item not cached yet is read in the same statement
    // (each statement is a trip to SQLite's thread).
    macro_rules! counts {
        ($more:expr) => {
            concat!(
                "SELECT s.open_items, r.seen_open_items,
                        (SELECT COUNT(*) FROM study_items i INDEXED BY study_items_open WHERE i.study_id = ?1 AND i.is_attention_check = 1 AND ",
                unseen_by_rater!(),
                ")",
                $more,
                " FROM raters r JOIN studies s ON s.id = r.study_id WHERE r.id = ?2"
            )
        };
    }
    if let Some(ready) = task.ready(completed) {
        return Ok(ready);
    }
    let (open_items, seen_open, checks_open, content) = match cache.get(task.item_id) {
        Some(content) => {
            let (a, b, c): (i64, i64, i64) =
                sqlx::query_as(counts!("")).bind(study_id).bind(rater_id).fetch_one(&mut *conn).await?;
            (a, b, c, content)
        }
        None => {
            let (a, b, c, descriptions, images): (i64, i64, i64, String, String) =
                sqlx::query_as(counts!(concat!(", ", item_content_columns!("?3"))))
                    .bind(study_id)
                    .bind(rater_id)
                    .bind(task.item_id)
                    .fetch_one(&mut *conn)
                    .await?;
            (a, b, c, cache.insert_json(task.item_id, &descriptions, &images)?)
        }
    };
    Ok(RaterTask {
        assignment_id: task.assignment_id,
        number: completed + 1,
        total: completed + 1 + still_open(open_items - seen_open, checks_open),
        images: content.images.clone(),
        descriptions: content.in_order(&task.order),
    })
}
