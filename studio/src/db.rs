//! The SQLite database: connection options every connection gets, and the migrations.

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use std::path::Path;
use std::time::Duration;

/// Opens (creating if needed) the database at `path` and applies pending migrations.
pub async fn open(path: &Path) -> anyhow::Result<SqlitePool> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create database folder {}: {e}", dir.display()))?;
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        // WAL: readers never block the writer; NORMAL sync is durable across process crashes
        // (kill -9) in WAL mode, which is what "no acknowledged response lost" needs.
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        // A SQLite connection is in-process and cannot go stale; the default ping on every
        // acquire is a round trip to the connection's thread that each request would pay.
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open database {}: {e}", path.display()))?;
    sqlx::migrate!("../migrations")
        .run(&pool)
        .await
        .map_err(|e| anyhow::anyhow!("applying migrations to {} failed: {e}", path.display()))?;
    Ok(pool)
}

/// Whether the database answers a query (the server's readiness check).
pub async fn ping(db: &SqlitePool) -> sqlx::Result<()> {
    sqlx::query_scalar::<_, i64>("SELECT 1").fetch_one(db).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opens_with_wal_foreign_keys_and_busy_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let pool = open(&dir.path().join("sub/t.db")).await.unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&pool).await.unwrap();
        assert_eq!(mode, "wal");
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys").fetch_one(&pool).await.unwrap();
        assert_eq!(fk, 1);
        let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout").fetch_one(&pool).await.unwrap();
        assert_eq!(busy, 10_000);
        // Migrations are idempotent: a second open of the same file applies nothing new.
        drop(pool);
        open(&dir.path().join("sub/t.db")).await.unwrap();
    }
}
