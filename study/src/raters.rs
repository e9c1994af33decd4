//! Raters: per-rater invite links, the open link that issues a token on first visit, revoking,
//! excluding (results are recomputed without them), and the rater-entered worker id.

use crate::error::{Result, StudyError};
use crate::tokens::{hash_token, new_token};
use crate::write_gate::WriteTx;
use sqlx::{Row, SqlitePool};

/// A rater found by token.
#[derive(Clone, Debug)]
pub struct Rater {
    pub id: i64,
    pub study_id: i64,
    pub study_status: String,
}

/// Creates `count` invite tokens (returned once: only their hashes are stored).
pub async fn invite(db: &SqlitePool, study_id: i64, count: usize, note: &str) -> Result<Vec<String>> {
    if !(1..=1000).contains(&count) {
        return Err(StudyError::Invalid(format!("invite 1 to 1000 raters at a time, not {count}")));
    }
    study_exists(db, study_id).await?;
    let mut w = WriteTx::begin(db).await?;
    let tx = &mut w.tx;
    let mut tokens = Vec::with_capacity(count);
    for _ in 0..count {
        let token = new_token();
        sqlx::query("INSERT INTO raters (study_id, token_hash, origin, note) VALUES (?, ?, 'invite', ?)")
            .bind(study_id)
            .bind(hash_token(&token))
            .bind(note.trim())
            .execute(&mut **tx)
            .await?;
        tokens.push(token);
    }
    w.commit().await?;
    Ok(tokens)
}

/// Ok if study `study_id` exists, else NotFound naming it.
pub async fn study_exists(db: &SqlitePool, study_id: i64) -> Result<()> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT id FROM studies WHERE id = ?").bind(study_id).fetch_optional(db).await?;
    found.map(|_| ()).ok_or_else(|| StudyError::NotFound(format!("no study {study_id}")))
}

/// The study's open link token, created on first request.
pub async fn open_link(db: &SqlitePool, study_id: i64) -> Result<String> {
    study_exists(db, study_id).await?;
    sqlx::query("UPDATE studies SET open_link_token = ? WHERE id = ? AND open_link_token IS NULL")
        .bind(new_token())
        .bind(study_id)
        .execute(db)
        .await?;
    Ok(sqlx::query_scalar("SELECT open_link_token FROM studies WHERE id = ?").bind(study_id).fetch_one(db).await?)
}

/// The study whose open link is `link`, if any.
pub async fn study_of_open_link(db: &SqlitePool, link: &str) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar("SELECT id FROM studies WHERE open_link_token = ?").bind(link).fetch_optional(db).await?)
}

/// A visit to the open link: a new rater token for its study.
pub async fn claim_open_link(db: &SqlitePool, link: &str) -> Result<String> {
    let study_id = study_of_open_link(db, link).await?;
    let study_id = study_id.ok_or_else(|| StudyError::NotFound("this study link is not valid".into()))?;
    let token = new_token();
    sqlx::query("INSERT INTO raters (study_id, token_hash, origin) VALUES (?, ?, 'open_link')")
        .bind(study_id)
        .bind(hash_token(&token))
        .execute(db)
        .await?;
    Ok(token)
}

/// The rater behind a token: unknown → NotFound, revoked → Forbidden.
pub async fn rater_by_token(db: &SqlitePool, token: &str) -> Result<Rater> {
    let row = sqlx::query(
        "SELECT r.id, r.study_id, r.revoked_at, s.status FROM raters r JOIN studies s ON s.id = r.study_id
         WHERE r.token_hash = ?",
    )
    .bind(hash_token(token))
    .fetch_optional(db)
    .await?
    .ok_or_else(|| StudyError::NotFound("this rater link is not valid".into()))?;
    if row.get::<Option<String>, _>("revoked_at").is_some() {
        return Err(StudyError::Forbidden("this rater link has been revoked".into()));
    }
    Ok(Rater { id: row.get("id"), study_id: row.get("study_id"), study_status: row.get("status") })
}

/// Stores the worker id a rater typed (for payment reconciliation); empty clears it.
pub async fn set_worker_id(db: &SqlitePool, token: &str, worker_id: &str) -> Result<()> {
    let rater = rater_by_token(db, token).await?;
    let worker_id = worker_id.trim();
    if worker_id.chars().count() > 100 {
        return Err(StudyError::Invalid("the worker id is longer than 100 characters".into()));
    }
    sqlx::query("UPDATE raters SET worker_id = ? WHERE id = ?")
        .bind((!worker_id.is_empty()).then_some(worker_id))
        .bind(rater.id)
        .execute(db)
        .await?;
    Ok(())
}

/// Runs `sql` on one rater of one study: ?1 = `arg`, ?2 = rater id, ?3 = study id.
async fn update_rater(
    db: &SqlitePool,
    study_id: i64,
    rater_id: i64,
    sql: &'static str,
    arg: Option<&str>,
) -> Result<()> {
    let done = sqlx::query(sql).bind(arg).bind(rater_id).bind(study_id).execute(db).await?;
    if done.rows_affected() == 0 {
        return Err(StudyError::NotFound(format!("study {study_id} has no rater {rater_id}")));
    }
    Ok(())
}

/// Revokes a rater's link: it stops working at once; answers already given are kept.
pub async fn revoke(db: &SqlitePool, study_id: i64, rater_id: i64) -> Result<()> {
    update_rater(
        db,
        study_id,
        rater_id,
        "UPDATE raters SET revoked_at = COALESCE(revoked_at, strftime('%Y-%m-%dT%H:%M:%fZ','now'))
         WHERE id = ?2 AND study_id = ?3",
        None,
    )
    .await
}

/// Excludes a rater's responses from the results (`reason` = Some) or includes them again (None).
pub async fn set_excluded(db: &SqlitePool, study_id: i64, rater_id: i64, reason: Option<&str>) -> Result<()> {
    update_rater(
        db,
        study_id,
        rater_id,
        "UPDATE raters SET excluded = (?1 IS NOT NULL), excluded_reason = ?1 WHERE id = ?2 AND study_id = ?3",
        reason,
    )
    .await
}
