//! Accepting a rater's answer to one task: checked against what the task showed, stored once
//! (a retry with the same idempotency key gets the same acknowledgement), and acknowledged only
//! after the transaction has committed. Validity and the attention check are decided here.
//!
//! Checking needs only reads, done before taking SQLite's write lock; the write is a couple of
//! statements, and [`SubmissionQueue`] commits the answers that arrive together in one
//! transaction (group commit), so many raters submitting at once do not queue one transaction
//! each. The same transaction assigns each rater their next task, which the acknowledgement
//! carries: a rater needs one round trip per task.

use crate::assign;
use crate::error::{Result, StudyError};
use crate::stats::is_valid;
use crate::task_cache::TaskCache;
use crate::tokens::hash_token;
use crate::types::{RaterPage, Submission, SubmitAck};
use crate::write_gate::WriteTx;
use sqlx::{Row, SqlitePool};
use tokio::sync::{mpsc, oneshot};

fn invalid<T>(msg: impl Into<String>) -> Result<T> {
    Err(StudyError::Invalid(msg.into()))
}

/// Checks the answer's shape against the descriptions the task showed (`shown`, display order).
fn check_answer(sub: &Submission, shown: &[i64]) -> Result<()> {
    for (i, &(id, rating)) in sub.ratings.iter().enumerate() {
        if !shown.contains(&id) {
            return invalid(format!("description {id} is not one of this task's descriptions"));
        }
        if sub.ratings[..i].iter().any(|r| r.0 == id) {
            return invalid(format!("description {id} is rated twice"));
        }
        if !(1..=5).contains(&rating) {
            return invalid(format!("rating {rating} is outside the 1-5 scale"));
        }
    }
    if let Some(missing) = shown.iter().find(|id| !sub.ratings.iter().any(|r| r.0 == **id)) {
        return invalid(format!("description {missing} has no rating; rate every description"));
    }
    if !shown.contains(&sub.best) {
        return invalid(format!("the best pick {} is not one of this task's descriptions", sub.best));
    }
    if let Some(t) = sub.client_time_ms {
        if t < 0 {
            return invalid("the time on task cannot be negative");
        }
    }
    Ok(())
}

/// An answer that passed every check, ready to be written.
#[derive(Clone, Debug)]
struct Checked {
    rater_id: i64,
    assignment_id: i64,
    study_id: i64,
    item_id: i64,
    best: i64,
    valid: bool,
    attention_failed: Option<bool>,
    client_time_ms: Option<i64>,
    idempotency_key: String,
    ratings: Vec<(i64, i64)>,
}

impl Checked {
    fn answer(&self) -> Answer {
        Answer::new(&self.idempotency_key, self.best, &self.ratings)
    }
}

/// Either an answer to write, or the acknowledgement of one already stored (a retry).
enum Prepared {
    Write(Checked),
    Stored(SubmitAck),
}

/// What a response says: its key, best pick and ratings (sorted by description), to tell a
/// retry of it from another answer.
#[derive(Debug, PartialEq)]
struct Answer {
    key: String,
    best: i64,
    ratings: Vec<(i64, i64)>,
}

impl Answer {
    fn new(key: &str, best: i64, ratings: &[(i64, i64)]) -> Self {
        let mut ratings = ratings.to_vec();
        ratings.sort_unstable();
        Answer { key: key.to_string(), best, ratings }
    }

    /// The stored answer of response `response_id`.
    async fn stored<'c>(db: impl sqlx::SqliteExecutor<'c>, response_id: i64) -> Result<Self> {
        let (key, best, ratings): (String, i64, String) = sqlx::query_as(
            "SELECT idempotency_key, best_description_id,
                    (SELECT json_group_array(json_array(description_id, rating))
                     FROM ratings WHERE response_id = responses.id)
             FROM responses WHERE id = ?",
        )
        .bind(response_id)
        .fetch_one(db)
        .await?;
        let ratings: Vec<(i64, i64)> = serde_json::from_str(&ratings)
            .map_err(|e| StudyError::Invalid(format!("stored ratings of response {response_id} unreadable: {e}")))?;
        Ok(Answer::new(&key, best, &ratings))
    }
}

/// The acknowledgement, or the conflict, for an assignment that already has a response: the
/// same key and answer is a retry (acknowledged again); the same key with another answer is
/// refused rather than acknowledged, so the client does not believe its new answer was saved.
fn already_answered(response_id: i64, stored: &Answer, given: &Answer) -> Result<SubmitAck> {
    if stored.key != given.key {
        Err(StudyError::Conflict("this task has already been answered".into()))
    } else if stored != given {
        Err(StudyError::Conflict(
            "this task was already saved with another rating or best pick, sent earlier under the same \
             idempotency key; the first answer stands (reload the page for your next task)"
                .into(),
        ))
    } else {
        Ok(SubmitAck { response_id, duplicate: true, next: None })
    }
}

/// Every check of an answer, by reads only.
async fn prepare(db: &SqlitePool, token: &str, sub: &Submission) -> Result<Prepared> {
    if !(8..=200).contains(&sub.idempotency_key.len()) {
        return invalid("the idempotency key must be 8 to 200 characters");
    }
    let row = sqlx::query(
        "SELECT r.id AS rater_id, r.revoked_at, s.status, s.attention_max_rating,
                a.id AS assignment_id, a.item_id, a.display_order_json, a.study_id, i.is_attention_check,
                p.id AS response_id,
                (SELECT d.id FROM study_descriptions d WHERE d.item_id = a.item_id AND d.is_decoy = 1) AS decoy
         FROM raters r JOIN studies s ON s.id = r.study_id
         LEFT JOIN assignments a ON a.id = ?2 AND a.rater_id = r.id
         LEFT JOIN study_items i ON i.id = a.item_id
         LEFT JOIN responses p ON p.assignment_id = a.id
         WHERE r.token_hash = ?1",
    )
    .bind(hash_token(token))
    .bind(sub.assignment_id)
    .fetch_optional(db)
    .await?
    .ok_or_else(|| StudyError::NotFound("this rater link is not valid".into()))?;
    if row.get::<Option<String>, _>("revoked_at").is_some() {
        return Err(StudyError::Forbidden("this rater link has been revoked".into()));
    }
    let Some(assignment_id) = row.get::<Option<i64>, _>("assignment_id") else {
        return Err(StudyError::NotFound(format!("task {} is not one of this rater's tasks", sub.assignment_id)));
    };
    // A malformed answer is refused for what is wrong with it, whether or not the task was
    // answered meanwhile (a true retry repeats a well-formed answer).
    let shown: Vec<i64> = serde_json::from_str(row.get::<&str, _>("display_order_json"))
        .map_err(|e| StudyError::Invalid(format!("stored display order unreadable: {e}")))?;
    check_answer(sub, &shown)?;
    if let Some(response_id) = row.get::<Option<i64>, _>("response_id") {
        let stored = Answer::stored(db, response_id).await?;
        let given = Answer::new(&sub.idempotency_key, sub.best, &sub.ratings);
        return already_answered(response_id, &stored, &given).map(Prepared::Stored);
    }
    let status: String = row.get("status");
    if status != "open" {
        return Err(StudyError::Forbidden(format!("the study is {status} and takes no answers")));
    }
    let attention_failed = (row.get::<i64, _>("is_attention_check") == 1).then(|| {
        let decoy: Option<i64> = row.get("decoy");
        let max: i64 = row.get("attention_max_rating");
        decoy.and_then(|d| sub.ratings.iter().find(|r| r.0 == d)).is_some_and(|r| r.1 > max)
    });
    Ok(Prepared::Write(Checked {
        rater_id: row.get("rater_id"),
        assignment_id,
        study_id: row.get("study_id"),
        item_id: row.get("item_id"),
        best: sub.best,
        valid: is_valid(&sub.ratings, sub.best),
        attention_failed,
        client_time_ms: sub.client_time_ms,
        idempotency_key: sub.idempotency_key.clone(),
        ratings: sub.ratings.clone(),
    }))
}

/// An acknowledgement and the rater's next task as the writer assigned it (shown by
/// [`acknowledge`] after the commit).
type Written = (SubmitAck, Option<assign::Assigned>);

/// Writes `batch` in one transaction; one result per answer, in order, each with its rater's next
/// task (assigned in the same transaction). An answer whose task got a response meanwhile (a
/// concurrent retry) is acknowledged or refused like a late retry.
async fn write_batch(db: &SqlitePool, cache: &TaskCache, batch: &[Checked]) -> Result<Vec<Result<Written>>> {
    let mut w = WriteTx::begin(db).await?;
    let mut insert = sqlx::QueryBuilder::new(
        "INSERT INTO responses (assignment_id, study_id, item_id, best_description_id, is_valid,
             attention_check_failed, client_time_ms, idempotency_key) ",
    );
    insert.push_values(batch, |mut b, c| {
        b.push_bind(c.assignment_id)
            .push_bind(c.study_id)
            .push_bind(c.item_id)
            .push_bind(c.best)
            .push_bind(c.valid as i64)
            .push_bind(c.attention_failed.map(|f| f as i64))
            .push_bind(c.client_time_ms)
            .push_bind(&c.idempotency_key);
    });
    // The assignment is marked completed by a trigger on responses (migrations/0003).
    insert.push(" ON CONFLICT (assignment_id) DO NOTHING RETURNING id, assignment_id");
    let inserted: Vec<(i64, i64)> = insert.build_query_as().fetch_all(&mut *w.tx).await?;
    let id_of = |assignment: i64| inserted.iter().find(|r| r.1 == assignment).map(|r| r.0);
    let mut ratings = sqlx::QueryBuilder::new("INSERT INTO ratings (response_id, item_id, description_id, rating) ");
    let rows: Vec<(i64, i64, i64, i64)> = batch
        .iter()
        .enumerate()
        .filter(|(i, c)| !batch[..*i].iter().any(|e| e.assignment_id == c.assignment_id))
        .filter_map(|(_, c)| Some((id_of(c.assignment_id)?, c)))
        .flat_map(|(id, c)| c.ratings.iter().map(move |&(d, r)| (id, c.item_id, d, r)))
        .collect();
    if !rows.is_empty() {
        ratings.push_values(&rows, |mut b, r| {
            b.push_bind(r.0).push_bind(r.1).push_bind(r.2).push_bind(r.3);
        });
        ratings.build().execute(&mut *w.tx).await?;
    }
    let mut acks = Vec::with_capacity(batch.len());
    for (i, c) in batch.iter().enumerate() {
        // Two answers to one task in the same batch: the first row of the INSERT won.
        let earlier = batch[..i].iter().find(|e| e.assignment_id == c.assignment_id);
        acks.push(match (id_of(c.assignment_id), earlier) {
            (Some(response_id), Some(first)) => already_answered(response_id, &first.answer(), &c.answer()),
            (Some(response_id), None) => Ok(SubmitAck { response_id, duplicate: false, next: None }),
            (None, _) => {
                let id: i64 = sqlx::query_scalar("SELECT id FROM responses WHERE assignment_id = ?")
                    .bind(c.assignment_id)
                    .fetch_one(&mut *w.tx)
                    .await?;
                already_answered(id, &Answer::stored(&mut *w.tx, id).await?, &c.answer())
            }
        });
    }
    let mut out = Vec::with_capacity(batch.len());
    for (ack, c) in acks.into_iter().zip(batch) {
        out.push(match ack {
            Ok(ack) => Ok((ack, assign::assign_next_task(&mut w.tx, cache, c.study_id, c.rater_id).await?)),
            Err(e) => Err(e),
        });
    }
    w.commit().await?;
    Ok(out)
}

/// The acknowledgement with the next task filled in (for a task assigned before, read here on a
/// pooled connection rather than in the single writer).
async fn acknowledge(db: &SqlitePool, cache: &TaskCache, (mut ack, next): Written) -> Result<SubmitAck> {
    if let Some(next) = next {
        ack.next = Some(assign::show(db, cache, &next).await?);
    }
    Ok(ack)
}

/// A retry's acknowledgement, with the rater's current task (as their page would show it).
async fn with_current_task(db: &SqlitePool, cache: &TaskCache, token: &str, mut ack: SubmitAck) -> Result<SubmitAck> {
    ack.next = assign::rater_page_cached(db, cache, token).await?.task;
    Ok(ack)
}

/// Stores `sub` for the rater with `token`, in a transaction of its own.
pub async fn submit(db: &SqlitePool, token: &str, sub: &Submission) -> Result<SubmitAck> {
    let cache = TaskCache::default();
    match prepare(db, token, sub).await? {
        Prepared::Stored(ack) => with_current_task(db, &cache, token, ack).await,
        Prepared::Write(c) => {
            acknowledge(db, &cache, write_batch(db, &cache, std::slice::from_ref(&c)).await?.remove(0)?).await
        }
    }
}

type Job = (Checked, oneshot::Sender<Result<Written>>);

/// Answers that arrive together are committed together: one writer task takes whatever is
/// queued (up to [`SubmissionQueue::MAX_BATCH`]) into one transaction and acknowledges each after
/// the commit. A failing batch is retried answer by answer, so one bad answer fails alone.
#[derive(Clone)]
pub struct SubmissionQueue {
    db: SqlitePool,
    cache: TaskCache,
    jobs: mpsc::Sender<Job>,
}

impl SubmissionQueue {
    pub const MAX_BATCH: usize = 128;

    /// Starts the writer task on the current tokio runtime, committing through `db` itself.
    pub fn start(db: SqlitePool) -> Self {
        Self::start_with_writer(db.clone(), db)
    }

    /// Starts the writer task, committing answers through `writer_db` (a connection to the same
    /// database, e.g. one whose commits survive a power loss: an answer is acknowledged only
    /// after its commit, so the writer's durability is the acknowledgement's).
    pub fn start_with_writer(db: SqlitePool, writer_db: SqlitePool) -> Self {
        let (jobs, mut queue) = mpsc::channel::<Job>(4 * Self::MAX_BATCH);
        let cache = TaskCache::default();
        let writer_cache = cache.clone();
        tokio::spawn(async move {
            let mut batch: Vec<Job> = Vec::with_capacity(Self::MAX_BATCH);
            while queue.recv_many(&mut batch, Self::MAX_BATCH).await > 0 {
                let answers: Vec<Checked> = batch.iter().map(|j| j.0.clone()).collect();
                match write_batch(&writer_db, &writer_cache, &answers).await {
                    Ok(results) => {
                        for ((_, reply), result) in batch.drain(..).zip(results) {
                            let _ = reply.send(result);
                        }
                    }
                    Err(_) => {
                        for (answer, reply) in batch.drain(..) {
                            let result = write_batch(&writer_db, &writer_cache, std::slice::from_ref(&answer)).await;
                            let _ = reply.send(result.and_then(|mut r| r.remove(0)));
                        }
                    }
                }
            }
        });
        SubmissionQueue { db, cache, jobs }
    }

    /// The rater's page ([`assign::rater_page`]) with this server's cache of task contents.
    pub async fn page(&self, token: &str) -> Result<RaterPage> {
        assign::rater_page_cached(&self.db, &self.cache, token).await
    }

    /// Checks `sub`, then waits until it is committed (or refused).
    pub async fn submit(&self, token: &str, sub: &Submission) -> Result<SubmitAck> {
        let checked = match prepare(&self.db, token, sub).await? {
            Prepared::Stored(ack) => return with_current_task(&self.db, &self.cache, token, ack).await,
            Prepared::Write(c) => c,
        };
        let (reply, answer) = oneshot::channel();
        let stopped = || StudyError::Invalid("the server is shutting down; submit again in a moment".into());
        self.jobs.send((checked, reply)).await.map_err(|_| stopped())?;
        let written = answer.await.map_err(|_| stopped())??;
        acknowledge(&self.db, &self.cache, written).await
    }
}
