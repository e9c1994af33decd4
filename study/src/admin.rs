//! Admin sessions: the admin secret buys a session cookie (stored hashed) and a CSRF token that
//! every state-changing admin request must echo. The server holds only the secret's digest.

use crate::error::{Result, StudyError};
use crate::tokens::{constant_time_eq, hash_token, new_token};
use sqlx::SqlitePool;

/// How long an admin session lasts.
pub const SESSION_HOURS: i64 = 12;

/// A live admin session.
#[derive(Clone, Debug)]
pub struct AdminSession {
    pub id: i64,
    pub csrf_token: String,
}

/// Checks `given` against the secret whose SHA-256 is `secret_digest` (hex) and opens a session:
/// returns (cookie token, CSRF token).
pub async fn login(
    db: &SqlitePool,
    secret_digest: &str,
    given: &str,
    user_agent: Option<&str>,
) -> Result<(String, String)> {
    let given = given.trim();
    if secret_digest.is_empty() || given.is_empty() || !constant_time_eq(secret_digest, &hash_token(given)) {
        return Err(StudyError::Forbidden("wrong admin secret".into()));
    }
    let (cookie, csrf) = (new_token(), new_token());
    sqlx::query(
        "INSERT INTO admin_sessions (token_hash, csrf_token, expires_at, user_agent)
         VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ','now', ?), ?)",
    )
    .bind(hash_token(&cookie))
    .bind(&csrf)
    .bind(format!("+{SESSION_HOURS} hours"))
    .bind(user_agent.map(|u| u.chars().take(300).collect::<String>()))
    .execute(db)
    .await?;
    // Old sessions are dropped on the way (they are not research data).
    sqlx::query("DELETE FROM admin_sessions WHERE expires_at <= strftime('%Y-%m-%dT%H:%M:%fZ','now')")
        .execute(db)
        .await?;
    Ok((cookie, csrf))
}

/// The unexpired session behind a cookie token, if any.
pub async fn session(db: &SqlitePool, cookie: &str) -> Result<Option<AdminSession>> {
    let row: Option<(i64, String)> = sqlx::query_as(
        "UPDATE admin_sessions SET last_seen_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')
         WHERE token_hash = ? AND expires_at > strftime('%Y-%m-%dT%H:%M:%fZ','now') RETURNING id, csrf_token",
    )
    .bind(hash_token(cookie))
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(id, csrf_token)| AdminSession { id, csrf_token }))
}

/// The session, required to exist and, for a state-changing request, to match `csrf`.
pub async fn authorize(db: &SqlitePool, cookie: Option<&str>, csrf: Option<&str>) -> Result<AdminSession> {
    let session = match cookie {
        Some(c) => session(db, c).await?,
        None => None,
    };
    let session = session.ok_or_else(|| StudyError::Forbidden("admin login required".into()))?;
    if let Some(csrf) = csrf {
        if !constant_time_eq(&session.csrf_token, csrf) {
            return Err(StudyError::Forbidden(
                "the form is stale or forged (CSRF token mismatch); reload the page".into(),
            ));
        }
    }
    Ok(session)
}

pub async fn logout(db: &SqlitePool, cookie: &str) -> Result<()> {
    sqlx::query("DELETE FROM admin_sessions WHERE token_hash = ?").bind(hash_token(cookie)).execute(db).await?;
    Ok(())
}
