//! The SQLite database: connection options every connection gets, and the migrations.

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use std::path::Path;
use std::time::Duration;

/// What a committed transaction survives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// A killed process (kill -9, a crash), not a power loss or an OS crash: in WAL mode SQLite's
    /// `synchronous=NORMAL` writes the commit to the log but syncs it to disk only at checkpoints.
    ProcessCrash,
    /// Also a power loss: `synchronous=FULL` syncs the log at every commit (one fsync per
    /// commit, which the rating study's group commit shares among the answers it holds).
    PowerLoss,
}

fn options(path: &Path, durability: Durability) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        // WAL: readers never block the writer.
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(match durability {
            Durability::ProcessCrash => SqliteSynchronous::Normal,
            Durability::PowerLoss => SqliteSynchronous::Full,
        })
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10))
}

/// Opens (creating if needed) the database at `path` and applies pending migrations. Its
/// commits survive a killed process ([`Durability::ProcessCrash`]); the rating study's answers
/// have a writer of their own ([`open_writer`]).
pub async fn open(path: &Path) -> anyhow::Result<SqlitePool> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create database folder {}: {e}", dir.display()))?;
    }
    let options = options(path, Durability::ProcessCrash);
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

/// One more connection to the database that [`open`] opened, whose commits have `durability`:
/// the rating study's group-commit writer, which acknowledges an answer only after its commit.
pub async fn open_writer(path: &Path, durability: Durability) -> anyhow::Result<SqlitePool> {
    SqlitePoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .connect_with(options(path, durability).create_if_missing(false))
        .await
        .map_err(|e| anyhow::anyhow!("cannot open database {} for the study's writer: {e}", path.display()))
}

/// A write transaction that holds SQLite's write lock from its start (`BEGIN IMMEDIATE`). A
/// plain (deferred) transaction that reads and then writes fails with "database is locked"
/// (SQLITE_BUSY_SNAPSHOT, which no busy timeout waits out) when another connection committed in
/// between, e.g. a running job's progress while a new job is queued; this one waits its turn.
pub async fn begin_write(db: &SqlitePool) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
    db.begin_with("BEGIN IMMEDIATE").await
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
        let pool = open(&dir.path().join("sub/t.db")).await.unwrap();
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(&pool).await.unwrap();
        assert_eq!(sync, 1, "NORMAL");
        // The study's writer: FULL (2), on the same file.
        let writer = open_writer(&dir.path().join("sub/t.db"), Durability::PowerLoss).await.unwrap();
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(&writer).await.unwrap();
        assert_eq!(sync, 2, "FULL");
        let tables: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM studies").fetch_one(&writer).await.unwrap();
        assert_eq!(tables, 0);
    }
}
