//! Accepting a rater's answer to one task: checked against what the task showed, stored once
//! (a retry with the same idempotency key gets the same acknowledgement), and acknowledged only
//! after the transaction has committed. Validity and the attention check are decided here.

use crate::error::{Result, StudyError};
use crate::stats::is_valid;
use crate::tokens::hash_token;
use crate::types::{SubmitAck, Submission};
use sqlx::{Row, SqlitePool};

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

/// Stores `sub` for the rater with `token`.
pub async fn submit(db: &SqlitePool, token: &str, sub: &Submission) -> Result<SubmitAck> {
    if !(8..=200).contains(&sub.idempotency_key.len()) {
        return invalid("the idempotency key must be 8 to 200 characters");
    }
    // One write transaction from the first read: the duplicate check and the insert cannot be
    // split by a concurrent retry of the same submission.
    let mut tx = db.begin_with("BEGIN IMMEDIATE").await?;
    let row = sqlx::query(
        "SELECT r.id AS rater_id, r.revoked_at, s.status, s.attention_max_rating,
                a.id AS assignment_id, a.item_id, a.display_order_json, a.study_id, i.is_attention_check,
                p.id AS response_id, p.idempotency_key
         FROM raters r JOIN studies s ON s.id = r.study_id
         LEFT JOIN assignments a ON a.id = ?2 AND a.rater_id = r.id
         LEFT JOIN study_items i ON i.id = a.item_id
         LEFT JOIN responses p ON p.assignment_id = a.id
         WHERE r.token_hash = ?1",
    )
    .bind(hash_token(token))
    .bind(sub.assignment_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| StudyError::NotFound("this rater link is not valid".into()))?;
    if row.get::<Option<String>, _>("revoked_at").is_some() {
        return Err(StudyError::Forbidden("this rater link has been revoked".into()));
    }
    let Some(assignment_id) = row.get::<Option<i64>, _>("assignment_id") else {
        return Err(StudyError::NotFound(format!("task {} is not one of this rater's tasks", sub.assignment_id)));
    };
    if let Some(response_id) = row.get::<Option<i64>, _>("response_id") {
        return if row.get::<Option<String>, _>("idempotency_key").as_deref() == Some(&sub.idempotency_key) {
            Ok(SubmitAck { response_id, duplicate: true })
        } else {
            Err(StudyError::Conflict("this task has already been answered".into()))
        };
    }
    let status: String = row.get("status");
    if status != "open" {
        return Err(StudyError::Forbidden(format!("the study is {status} and takes no answers")));
    }
    let shown: Vec<i64> = serde_json::from_str(row.get::<&str, _>("display_order_json"))
        .map_err(|e| StudyError::Invalid(format!("stored display order unreadable: {e}")))?;
    check_answer(sub, &shown)?;
    let item_id: i64 = row.get("item_id");
    let attention_failed = if row.get::<i64, _>("is_attention_check") == 1 {
        let decoy: Option<i64> =
            sqlx::query_scalar("SELECT id FROM study_descriptions WHERE item_id = ? AND is_decoy = 1")
                .bind(item_id)
                .fetch_optional(&mut *tx)
                .await?;
        let max: i64 = row.get("attention_max_rating");
        Some(decoy.and_then(|d| sub.ratings.iter().find(|r| r.0 == d)).is_some_and(|r| r.1 > max) as i64)
    } else {
        None
    };
    let response_id: i64 = sqlx::query_scalar(
        "INSERT INTO responses (assignment_id, study_id, item_id, best_description_id, is_valid,
             attention_check_failed, client_time_ms, idempotency_key)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(assignment_id)
    .bind(row.get::<i64, _>("study_id"))
    .bind(item_id)
    .bind(sub.best)
    .bind(is_valid(&sub.ratings, sub.best) as i64)
    .bind(attention_failed)
    .bind(sub.client_time_ms)
    .bind(&sub.idempotency_key)
    .fetch_one(&mut *tx)
    .await?;
    let mut insert = sqlx::QueryBuilder::new("INSERT INTO ratings (response_id, item_id, description_id, rating) ");
    insert.push_values(&sub.ratings, |mut b, (description, rating)| {
        b.push_bind(response_id).push_bind(item_id).push_bind(*description).push_bind(*rating);
    });
    insert.build().execute(&mut *tx).await?;
    sqlx::query("UPDATE assignments SET completed_at = strftime('%Y-%m-%dT%H:%M:%fZ','now') WHERE id = ?")
        .bind(assignment_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(SubmitAck { response_id, duplicate: false })
}
