//! The rater path's statements (pages, submissions, choosing the next task) are parsed and
//! planned once per connection and then reused. Some SQL makes SQLite plan around a bound
//! parameter's value, and then every new binding throws the plan away and prepares the statement
//! again on the next step: a bound `LIMIT ?` did that on every task, an eighth of the server's CPU
//! under load. SQLite counts these re-preparations per statement; this test reads the counters.

mod fixture;

use fixture::{labelled_db, FixedImages};
use libsqlite3_sys as ffi;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::SqliteConnection;
use std::ffi::CStr;
use study::types::{LayerChoice, MethodRef, NewStudy, Submission};
use study::{raters, setup, submit};

/// Per statement cached on `conn`: its SQL, how many times it ran, how many times it was
/// prepared again.
async fn statement_counters(conn: &mut SqliteConnection) -> Vec<(String, i32, i32)> {
    let mut handle = conn.lock_handle().await.unwrap();
    let db = handle.as_raw_handle().as_ptr();
    let mut out = Vec::new();
    // SAFETY: the connection is locked for the whole walk, so no statement is finalized meanwhile;
    // each pointer comes from sqlite3_next_stmt on that connection.
    unsafe {
        let mut stmt = ffi::sqlite3_next_stmt(db, std::ptr::null_mut());
        while !stmt.is_null() {
            let sql = CStr::from_ptr(ffi::sqlite3_sql(stmt)).to_string_lossy().into_owned();
            let runs = ffi::sqlite3_stmt_status(stmt, ffi::SQLITE_STMTSTATUS_RUN, 0);
            let reprepared = ffi::sqlite3_stmt_status(stmt, ffi::SQLITE_STMTSTATUS_REPREPARE, 0);
            out.push((sql, runs, reprepared));
            stmt = ffi::sqlite3_next_stmt(db, stmt);
        }
    }
    out
}

#[tokio::test]
async fn a_rater_s_statements_are_prepared_once_however_often_they_run() {
    let (dir, seeded) = labelled_db().await;
    let methods = ["dnd", "milan"].iter().map(|m| MethodRef { method: m.to_string(), source: String::new() });
    let layers = vec![LayerChoice { layer: "block3".into(), units: "0-7".into() }];
    let mut s = NewStudy::with_defaults("reuse", fixture::MODEL, layers, methods.collect());
    s.attention_checks = 1;
    let study_id = setup::create_study(&seeded, &FixedImages { db: seeded.clone() }, &s).await.unwrap();
    setup::set_status(&seeded, study_id, "open").await.unwrap();
    let token = raters::invite(&seeded, study_id, 1, "").await.unwrap().remove(0);
    seeded.close().await;

    // One connection, as the server's submission queue uses it, so every statement is on it.
    let options = SqliteConnectOptions::new().filename(dir.path().join("t.db")).foreign_keys(true);
    let db = SqlitePoolOptions::new().max_connections(1).connect_with(options).await.unwrap();
    let queue = submit::SubmissionQueue::start(db.clone());
    let mut next = queue.page(&token).await.unwrap().task;
    let mut tasks = 0;
    while let Some(task) = next {
        tasks += 1;
        let ratings: Vec<(i64, i64)> = task.descriptions.iter().map(|d| (d.id, 3)).collect();
        let sub = Submission {
            assignment_id: task.assignment_id,
            best: ratings[0].0,
            ratings,
            client_time_ms: Some(900),
            idempotency_key: format!("reuse-task-{tasks}"),
        };
        next = queue.submit(&token, &sub).await.unwrap().next;
        // Coming back to the page between tasks runs the page's own statements again.
        queue.page(&token).await.unwrap();
    }
    assert!(tasks >= 8, "a task for each of the 8 neurons (an attention check takes its neuron's place): {tasks}");

    let counters = statement_counters(&mut *db.acquire().await.unwrap()).await;
    let hot = counters.iter().filter(|c| c.1 >= tasks - 1).count();
    assert!(hot >= 4, "the statements of every task ran once per task: {counters:#?}");
    let reprepared: Vec<_> = counters.iter().filter(|c| c.2 > 0).collect();
    assert!(reprepared.is_empty(), "statements SQLite had to prepare again after a new binding: {reprepared:#?}");
}
