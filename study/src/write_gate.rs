//! One queue for this process's study writes. SQLite lets one writer in at a time and makes the
//! others poll in its busy handler (sleeping up to 100 ms between tries, in no particular order),
//! which under many concurrent raters turns into seconds-long tails. Writers of this process wait
//! here instead, first come first served, and so reach SQLite one by one.

use crate::error::Result;
use sqlx::{Sqlite, SqlitePool, Transaction};
use tokio::sync::{Mutex, MutexGuard};

static GATE: Mutex<()> = Mutex::const_new(());

/// A write transaction (`BEGIN IMMEDIATE`: it holds SQLite's write lock from its first read, so
/// read-then-write decisions cannot race) that keeps this process's queue until it ends.
pub struct WriteTx {
    pub tx: Transaction<'static, Sqlite>,
    _turn: MutexGuard<'static, ()>,
}

impl WriteTx {
    pub async fn begin(db: &SqlitePool) -> Result<WriteTx> {
        let turn = GATE.lock().await;
        let tx = db.begin_with("BEGIN IMMEDIATE").await?;
        Ok(WriteTx { tx, _turn: turn })
    }

    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
}
