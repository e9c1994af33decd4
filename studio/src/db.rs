//! The SQLite database: connection options every connection gets, and the migrations.

use crate::methods::Method;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, SqliteConnection, SqlitePool};
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

/// The database handle the front ends (pages, HTTP routes, the command line) hold and pass to the
/// service layer. They name it only through this alias: the backend is chosen here and in the
/// service layer's queries, never in a front end.
pub type Pool = sqlx::SqlitePool;

/// Opens (creating if needed) the database at `path` and applies pending migrations. Its
/// commits survive a killed process ([`Durability::ProcessCrash`]); the rating study's answers
/// have a writer of their own ([`open_writer`]).
pub async fn open(path: &Path) -> anyhow::Result<SqlitePool> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create database folder {}: {e}", dir.display()))?;
    }
    let options = options(path, Durability::ProcessCrash);
    migrate(&options).await.map_err(|e| anyhow::anyhow!("applying migrations to {} failed: {e}", path.display()))?;
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        // A SQLite connection is in-process and cannot go stale; the default ping on every
        // acquire is a round trip to the connection's thread that each request would pay.
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open database {}: {e}", path.display()))?;
    Ok(pool)
}

/// Applies pending migrations on a connection of their own, closed afterwards: a migration that
/// rebuilds tables turns foreign keys off for its span (0009), and a failure half-way must not
/// leave such a connection in the pool. Then fills `label_methods` from [`Method::all`], the one
/// definition of the methods, which every `method` column references.
async fn migrate(options: &SqliteConnectOptions) -> anyhow::Result<()> {
    let mut conn = SqliteConnection::connect_with(options).await?;
    let migrator = sqlx::migrate!("../migrations");
    record_committed_rebuild(&mut conn, &migrator).await?;
    migrator.run(&mut conn).await?;
    for m in Method::all() {
        sqlx::query("INSERT INTO label_methods (slug) VALUES (?) ON CONFLICT (slug) DO NOTHING")
            .bind(m.as_str())
            .execute(&mut conn)
            .await?;
    }
    conn.close().await?;
    Ok(())
}

/// The migrations that commit their own transaction (`-- no-transaction`), each with a query
/// that answers whether its change is in the database.
const SELF_COMMITTING: [(i64, &str); 2] = [
    (9, "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'label_methods')"),
    (
        10,
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'candidate_concepts'
                          AND sql LIKE '%''wordnet''%')",
    ),
];

/// A self-committing migration (0009, 0010) commits its own transaction, and sqlx records it in
/// a second write: a process killed between the two leaves the change made but the migration
/// unrecorded, and running it again would fail on the tables it made. Such a database is recorded
/// as migrated instead.
async fn record_committed_rebuild(conn: &mut SqliteConnection, migrator: &Migrator) -> sqlx::Result<()> {
    let migrations_table: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
    )
    .fetch_one(&mut *conn)
    .await?;
    if !migrations_table {
        return Ok(());
    }
    for (version, applied) in SELF_COMMITTING {
        if !sqlx::query_scalar::<_, bool>(applied).fetch_one(&mut *conn).await? {
            continue;
        }
        let recorded: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM _sqlx_migrations WHERE version = ?)")
            .bind(version)
            .fetch_one(&mut *conn)
            .await?;
        if let Some(m) = migrator.iter().find(|m| m.version == version).filter(|_| !recorded) {
            tracing::warn!(
                "migration {version} was applied but not recorded (the process stopped in between); recording it"
            );
            sqlx::query(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (?, ?, TRUE, ?, -1)",
            )
            .bind(m.version)
            .bind(&*m.description)
            .bind(&*m.checksum)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
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
        let methods: Vec<String> =
            sqlx::query_scalar("SELECT slug FROM label_methods ORDER BY slug").fetch_all(&pool).await.unwrap();
        let mut defined: Vec<&str> = Method::all().iter().map(|m| m.as_str()).collect();
        defined.sort();
        assert_eq!(methods, defined, "label_methods holds exactly the methods defined in Rust");
    }

    async fn row_counts(pool: &SqlitePool, tables: &[&str]) -> Vec<i64> {
        let mut counts = Vec::new();
        for t in tables {
            let sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {t}"));
            counts.push(sqlx::query_scalar(sql).fetch_one(pool).await.unwrap());
        }
        counts
    }

    /// Migration 0009 rebuilds the tables that name a method: a database with labels, imports and
    /// a study that shows those labels comes through whole, with foreign keys on again.
    #[tokio::test]
    async fn rebuilding_the_method_tables_keeps_every_row() {
        use study::fixture::{self, FixedImages};
        use study::types::{LayerChoice, MethodRef, NewStudy};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let options = options(&path, Durability::ProcessCrash);
        let before = SqlitePoolOptions::new().max_connections(1).connect_with(options.clone()).await.unwrap();
        sqlx::migrate!("../migrations").run_to(8, &before).await.unwrap();
        fixture::seed(&before).await;
        let mut s = NewStudy::with_defaults(
            "pilot",
            fixture::MODEL,
            vec![LayerChoice { layer: "block3".into(), units: "0-3".into() }],
            ["dnd", "milan"].iter().map(|m| MethodRef { method: m.to_string(), source: String::new() }).collect(),
        );
        s.raters_per_item = 1;
        // Today's study set-up checks methods against label_methods, which 0008 lacks: a
        // temporary one on this single connection stands in for it, and goes with the connection.
        sqlx::query("CREATE TEMP TABLE label_methods AS SELECT 'dnd' AS slug UNION SELECT 'milan'")
            .execute(&before)
            .await
            .unwrap();
        let study_id = study::setup::create_study(&before, &FixedImages { db: before.clone() }, &s).await.unwrap();
        let tables = ["labels", "label_imports", "study_methods", "study_descriptions", "study_items"];
        let counts = row_counts(&before, &tables).await;
        assert!(counts.iter().all(|&n| n > 0), "{counts:?}");
        let shown: Vec<(i64, String)> = sqlx::query_as(
            "SELECT d.label_id, l.text FROM study_descriptions d JOIN labels l ON l.id = d.label_id ORDER BY d.id",
        )
        .fetch_all(&before)
        .await
        .unwrap();
        before.close().await;

        let pool = open(&path).await.unwrap();
        assert_eq!(row_counts(&pool, &tables).await, counts, "rows of {tables:?}");
        let shown_after: Vec<(i64, String)> = sqlx::query_as(
            "SELECT d.label_id, l.text FROM study_descriptions d JOIN labels l ON l.id = d.label_id ORDER BY d.id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(shown_after, shown, "a study's descriptions still point at the same labels");
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys").fetch_one(&pool).await.unwrap();
        assert_eq!(fk, 1);
        assert!(sqlx::query("PRAGMA foreign_key_check").fetch_all(&pool).await.unwrap().is_empty());
        // The method columns now refer to label_methods: an unknown method is refused...
        let e = sqlx::query("UPDATE study_methods SET method = 'tcav' WHERE study_id = ? AND position = 0")
            .bind(study_id)
            .execute(&pool)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("FOREIGN KEY"), "{e}");
        // A process stopped between 0009's commit and sqlx's record of it: the next start records it.
        sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 9").execute(&pool).await.unwrap();
        pool.close().await;
        let pool = open(&path).await.unwrap();
        let recorded: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE version = 9 AND success")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(recorded, 1);
        assert_eq!(row_counts(&pool, &tables).await, counts, "nothing rebuilt twice");
        // ...and a study of a method the database has never seen cannot be created.
        s.methods[1].method = "tcav".into();
        let e = study::setup::create_study(&pool, &FixedImages { db: pool.clone() }, &s).await.unwrap_err();
        assert!(e.to_string().contains("unknown method `tcav`"), "{e}");
    }

    /// Migration 0010 rebuilds `candidate_concepts` (origin `wordnet`): its rows, their concept
    /// images and the labels that point at them come through whole; a stop between its commit and
    /// sqlx's record is recorded at the next start.
    #[tokio::test]
    async fn rebuilding_the_candidate_table_keeps_concepts_images_and_label_links() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let before = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options(&path, Durability::ProcessCrash))
            .await
            .unwrap();
        sqlx::migrate!("../migrations").run_to(9, &before).await.unwrap();
        study::fixture::seed(&before).await;
        for sql in [
            "INSERT INTO probe_sets (slug, name, source, root_path) VALUES ('p', 'P', 'folder', '/p')",
            "INSERT INTO dissection_runs (model_id, layer_id, probe_set_id, scoring, neurons_spec)
                 SELECT model_id, id, 1, 'mean', '0' FROM layers ORDER BY id LIMIT 1",
            "INSERT INTO run_neurons (run_id, neuron_id) SELECT 1, id FROM neurons ORDER BY id LIMIT 1",
            "INSERT INTO candidate_concepts (run_neuron_id, text, position, origin, selected) VALUES
                 (1, 'stripes', 0, 'llm', 1), (1, 'zebra', 1, 'fallback', 0)",
            "INSERT INTO concept_images (concept_id, source, image_id, activation, rank)
                 SELECT 1, 'retrieved', id, 1.0, 1 FROM images ORDER BY id LIMIT 2",
            "UPDATE labels SET concept_id = 2 WHERE id = (SELECT MIN(id) FROM labels)",
        ] {
            sqlx::query(sql).execute(&before).await.unwrap();
        }
        let snapshot = |pool: SqlitePool| async move {
            let concepts: Vec<(i64, String, String, i64)> =
                sqlx::query_as("SELECT id, text, origin, selected FROM candidate_concepts ORDER BY id")
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            let images: Vec<(i64, i64)> = sqlx::query_as("SELECT concept_id, image_id FROM concept_images ORDER BY id")
                .fetch_all(&pool)
                .await
                .unwrap();
            let linked: Vec<i64> = sqlx::query_scalar("SELECT concept_id FROM labels WHERE concept_id IS NOT NULL")
                .fetch_all(&pool)
                .await
                .unwrap();
            (concepts, images, linked)
        };
        let was = snapshot(before.clone()).await;
        assert_eq!((was.0.len(), was.1.len(), was.2.as_slice()), (2, 2, &[2][..]));
        before.close().await;

        let pool = open(&path).await.unwrap();
        assert_eq!(snapshot(pool.clone()).await, was);
        assert!(sqlx::query("PRAGMA foreign_key_check").fetch_all(&pool).await.unwrap().is_empty());
        let version =
            sqlx::query_scalar::<_, i64>("SELECT version FROM gallery_version").fetch_one(&pool).await.unwrap();
        sqlx::query(
            "INSERT INTO candidate_concepts (run_neuron_id, text, position, origin) VALUES (1, 'cat', 2, 'wordnet')",
        )
        .execute(&pool)
        .await
        .unwrap();
        let bumped =
            sqlx::query_scalar::<_, i64>("SELECT version FROM gallery_version").fetch_one(&pool).await.unwrap();
        assert!(bumped > version, "the gallery triggers came back with the table");
        // Deleting a concept still cascades to its images and clears the label's link.
        sqlx::query("DELETE FROM candidate_concepts WHERE id IN (1, 2)").execute(&pool).await.unwrap();
        let (_, images, linked) = snapshot(pool.clone()).await;
        assert!(images.is_empty() && linked.is_empty(), "{images:?} {linked:?}");

        sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 10").execute(&pool).await.unwrap();
        pool.close().await;
        let pool = open(&path).await.unwrap();
        let recorded: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE version = 10 AND success")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(recorded, 1, "recorded, not run twice");
    }
}
