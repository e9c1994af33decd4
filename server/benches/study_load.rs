//! Load benchmark of the rating study on a release server over loopback.
//!
//! `cargo bench -p server --bench study_load` starts `target/release/dnd serve` (or `$DND_BIN`) on
//! a free port with a throw-away data folder, seeds a study straight into its database, then:
//!
//! 1. reference: `GET /healthz` from the same number of concurrent clients (the floor any
//!    request pays: HTTP, routing, layers and one pooled SQLite read), measured in this run;
//! 2. load: that many raters each loading their page once (the first task), then looping
//!    submit → the next task, which the acknowledgement carries (the browser's rater flow), with
//!    varied (sometimes invalid) answers;
//! 3. kill -9: another load phase, the server SIGKILLed mid-way, then every acknowledged
//!    submission looked up in the database file.
//!
//! The server runs with the default durability (answers synced before they are acknowledged);
//! `DND__STUDY__DURABLE_RATINGS=false` measures it without the sync, for comparison.
//!
//! Sizing (env): `DND_LOAD_RATERS` (64), `DND_LOAD_ITEMS` (40000: one rater per item, so at
//! ~2,700 submissions/s enough for both phases), `DND_LOAD_SECS` (8), `DND_LOAD_REF_SECS` (3),
//! `DND_LOAD_KILL_AFTER_MS` (2000), `DND_LOAD_CHECKS` (2 attention checks).
//! Exits non-zero when an acknowledged submission is missing, when the server answers a rater
//! with an error status, or when set-up fails; the throughput/latency targets are reported, not
//! enforced, because the numbers depend on the host.

mod support;

use reqwest::{Client, StatusCode};
use sqlx::SqlitePool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use study::types::{LayerChoice, MethodRef, NewStudy, RaterPage, Submission, SubmitAck};
use support::{client, env_u64, open_db, Latencies, Phase, Server};

/// The targets.
const TARGET_SUBMITS_PER_S: f64 = 2000.0;
const TARGET_P99_MS: f64 = 50.0;

/// Run size, from the environment.
struct Sizing {
    /// Raters (the concurrent clients), load and reference phases.
    common: support::Sizing,
    items: usize,
    kill_after: Duration,
    attention_checks: i64,
}

impl Sizing {
    fn from_env() -> Self {
        Sizing {
            common: support::Sizing::from_env("DND_LOAD_RATERS"),
            items: env_u64("DND_LOAD_ITEMS", 40000).max(8) as usize,
            kill_after: Duration::from_millis(env_u64("DND_LOAD_KILL_AFTER_MS", 2000)),
            attention_checks: env_u64("DND_LOAD_CHECKS", 2) as i64,
        }
    }
}

// ------------------------------------------------------------------------------------------
// Seeding
// ------------------------------------------------------------------------------------------

const MODEL: &str = "load-toy";
const METHODS: [&str; 4] = ["dnd", "milan", "clip-dissect", "netdissect"];
const IMAGES: i64 = 16;

/// Writes a one-layer model whose `items` units all have a label from each of the 4 methods,
/// creates the study (1 rater per item, 10 images), invites the raters and opens it. Returns
/// the rater tokens. Goes through the `study` crate so the rows are exactly what the app makes.
async fn seed(db: &SqlitePool, size: &Sizing) -> Vec<String> {
    let hex = |i: i64| format!("{:064x}", 0xD0D0_0000_i64 + i);
    let model_id: i64 = sqlx::query_scalar(
        "INSERT INTO models (slug, name, source, builtin_key, weights_path, weights_sha256, fingerprint,
             input_height, input_width, preprocessing_json)
         VALUES (?, 'Load toy', 'builtin', ?, '/dev/null', ?, ?, 32, 32, '{}') RETURNING id",
    )
    .bind(MODEL)
    .bind(MODEL)
    .bind(hex(1000))
    .bind(hex(1001))
    .fetch_one(db)
    .await
    .unwrap();
    for i in 0..IMAGES {
        sqlx::query("INSERT INTO images (sha256, width, height, format, byte_size) VALUES (?, 32, 32, 'png', 100)")
            .bind(hex(i))
            .execute(db)
            .await
            .unwrap();
    }
    let layer_id: i64 = sqlx::query_scalar(
        "INSERT INTO layers (model_id, name, kind, channels, height, width, position)
         VALUES (?, 'block', 'conv', ?, 4, 4, 0) RETURNING id",
    )
    .bind(model_id)
    .bind(size.items as i64)
    .fetch_one(db)
    .await
    .unwrap();
    sqlx::query(
        "WITH RECURSIVE u(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM u WHERE n + 1 < ?2)
         INSERT INTO neurons (layer_id, unit) SELECT ?1, n FROM u",
    )
    .bind(layer_id)
    .bind(size.items as i64)
    .execute(db)
    .await
    .unwrap();
    for (m, method) in METHODS.iter().enumerate() {
        let import_id: i64 = sqlx::query_scalar(
            "INSERT INTO label_imports (model_id, method, format, file_name, file_sha256, row_count)
             VALUES (?, ?, 'json', 'load.json', ?, 0) RETURNING id",
        )
        .bind(model_id)
        .bind(method)
        .bind(hex(2000 + m as i64))
        .fetch_one(db)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO labels (neuron_id, layer_id, method, rank, text, import_id)
             SELECT id, layer_id, ?1, 1, ?1 || ' concept ' || unit, ?2 FROM neurons WHERE layer_id = ?3",
        )
        .bind(method)
        .bind(import_id)
        .bind(layer_id)
        .execute(db)
        .await
        .unwrap();
    }
    let methods = METHODS.iter().map(|m| MethodRef { method: m.to_string(), source: String::new() }).collect();
    let layers = vec![LayerChoice { layer: "block".into(), units: format!("0-{}", size.items - 1) }];
    let mut s = NewStudy::with_defaults("load", MODEL, layers, methods);
    s.raters_per_item = 1;
    s.attention_checks = size.attention_checks;
    s.seed = 1;
    let study_id = study::setup::create_study(db, &study::fixture::FixedImages { db: db.clone() }, &s).await.unwrap();
    let tokens = study::raters::invite(db, study_id, size.common.clients, "load").await.unwrap();
    study::setup::set_status(db, study_id, "open").await.unwrap();
    tokens
}

// ------------------------------------------------------------------------------------------
// Measuring
// ------------------------------------------------------------------------------------------

/// A submission the server acknowledged, and what the database must then hold for it.
#[derive(Clone, Copy)]
struct Ack {
    response_id: i64,
    assignment_id: i64,
    ratings: i64,
    valid: bool,
}

/// What one rater load phase measured.
#[derive(Default)]
struct Load {
    elapsed: f64,
    page: Latencies,
    submit: Latencies,
    acks: Vec<Ack>,
    /// Non-2xx answers (the message of the first one kept) and transport failures.
    http_errors: usize,
    first_http_error: Option<String>,
    transport_errors: usize,
    /// Raters that ran out of tasks before the end (the study was too small for the run).
    exhausted: usize,
}

/// Small deterministic generator for answers (per rater, so runs are reproducible).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// An answer to the task: random 1–5 ratings; the best pick among the top-rated ones, except
/// about 1 in 8 times a lower-rated one (an invalid answer, which the server must still store).
fn answer(rng: &mut XorShift, assignment_id: i64, descriptions: &[i64], key: String) -> Submission {
    let ratings: Vec<(i64, i64)> = descriptions.iter().map(|&d| (d, 1 + rng.below(5) as i64)).collect();
    let top = ratings.iter().map(|r| r.1).max().unwrap();
    let (high, low): (Vec<&(i64, i64)>, Vec<&(i64, i64)>) = ratings.iter().partition(|r| r.1 == top);
    let pool = if !low.is_empty() && rng.below(8) == 0 { low } else { high };
    let best = pool[rng.below(pool.len() as u64) as usize].0;
    Submission {
        assignment_id,
        ratings,
        best,
        client_time_ms: Some(500 + rng.below(20_000) as i64),
        idempotency_key: key,
    }
}

enum Step<T> {
    Ok(T),
    /// The server answered with an error status (a bug in the server or the bench).
    Http(String),
    /// No answer (connection refused/reset: expected after kill -9).
    Transport,
}

async fn page(http: &Client, base: &str, token: &str) -> Step<RaterPage> {
    // Tokens are hex, so the form body needs no escaping.
    let sent = http
        .post(format!("{base}/api/rate/page"))
        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await;
    decode(sent).await
}

async fn submit(http: &Client, base: &str, token: &str, sub: &Submission) -> Step<SubmitAck> {
    let body = serde_json::json!({ "token": token, "submission": sub });
    decode(http.post(format!("{base}/api/rate/submit")).json(&body).send().await).await
}

async fn decode<T: serde::de::DeserializeOwned>(sent: reqwest::Result<reqwest::Response>) -> Step<T> {
    let Ok(resp) = sent else { return Step::Transport };
    let status: StatusCode = resp.status();
    let Ok(bytes) = resp.bytes().await else { return Step::Transport };
    if !status.is_success() {
        return Step::Http(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
    }
    match serde_json::from_slice(&bytes) {
        Ok(v) => Step::Ok(v),
        Err(e) => Step::Http(format!("{status} with an unreadable body ({e}): {}", String::from_utf8_lossy(&bytes))),
    }
}

/// One rater: the page once, then submit → next task (from the acknowledgement) until
/// `deadline`, the study has nothing left for them, or an error (a rater never retries here: a
/// retry would blur what was acknowledged when).
async fn rater(http: Client, base: Arc<str>, token: String, seed: u64, phase: u32, deadline: Instant) -> Load {
    let mut out = Load::default();
    let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut n = 0u64;
    let t = Instant::now();
    let mut next = match page(&http, &base, &token).await {
        Step::Ok(p) => p.task,
        Step::Http(e) => {
            out.http_errors += 1;
            out.first_http_error.get_or_insert(format!("page {e}"));
            return out;
        }
        Step::Transport => {
            out.transport_errors += 1;
            return out;
        }
    };
    out.page.0.push(t.elapsed());
    while Instant::now() < deadline {
        let Some(task) = next.take() else {
            out.exhausted = 1;
            break;
        };
        n += 1;
        let ids: Vec<i64> = task.descriptions.iter().map(|d| d.id).collect();
        let sub = answer(&mut rng, task.assignment_id, &ids, format!("load-{phase}-{seed}-{n}"));
        let t = Instant::now();
        match submit(&http, &base, &token, &sub).await {
            Step::Ok(ack) => {
                out.submit.0.push(t.elapsed());
                out.acks.push(Ack {
                    response_id: ack.response_id,
                    assignment_id: task.assignment_id,
                    ratings: ids.len() as i64,
                    valid: study::stats::is_valid(&sub.ratings, sub.best),
                });
                next = ack.next;
            }
            Step::Http(e) => {
                out.http_errors += 1;
                out.first_http_error.get_or_insert(format!("submit {e}"));
                break;
            }
            Step::Transport => {
                out.transport_errors += 1;
                break;
            }
        }
    }
    out
}

/// Runs every rater concurrently until `span` has passed; with `kill`, SIGKILLs the server
/// `kill_after` into the phase and lets the raters run into the dead socket.
async fn rater_load(
    server: &mut Server,
    tokens: &[String],
    phase: u32,
    span: Duration,
    kill_after: Option<Duration>,
) -> Load {
    let http = client(tokens.len());
    let base: Arc<str> = server.base.clone().into();
    let start = Instant::now();
    let deadline = start + span;
    let workers: Vec<_> = tokens
        .iter()
        .enumerate()
        .map(|(i, token)| tokio::spawn(rater(http.clone(), base.clone(), token.clone(), i as u64 + 1, phase, deadline)))
        .collect();
    if let Some(after) = kill_after {
        tokio::time::sleep(after).await;
        server.kill9();
    }
    let mut load = Load::default();
    for w in workers {
        let r = w.await.unwrap();
        load.page.merge(r.page);
        load.submit.merge(r.submit);
        load.acks.extend(r.acks);
        load.http_errors += r.http_errors;
        load.transport_errors += r.transport_errors;
        load.exhausted += r.exhausted;
        if load.first_http_error.is_none() {
            load.first_http_error = r.first_http_error;
        }
    }
    load.elapsed = start.elapsed().as_secs_f64();
    load.page.finish();
    load.submit.finish();
    load
}

// ------------------------------------------------------------------------------------------
// The kill -9 check
// ------------------------------------------------------------------------------------------

/// Looks every acknowledged submission up in the database file: its response row (same
/// assignment, same validity), one rating per description shown, and the assignment completed.
/// Returns the acknowledgements that are missing or incomplete, with why.
async fn verify(db: &SqlitePool, acks: &[Ack]) -> Vec<String> {
    let mut missing = Vec::new();
    for a in acks {
        let row: Option<(i64, i64, i64, Option<String>)> = sqlx::query_as(
            "SELECT p.assignment_id, p.is_valid,
                    (SELECT COUNT(*) FROM ratings r WHERE r.response_id = p.id),
                    (SELECT completed_at FROM assignments a WHERE a.id = p.assignment_id)
             FROM responses p WHERE p.id = ?",
        )
        .bind(a.response_id)
        .fetch_optional(db)
        .await
        .unwrap();
        let problem = match row {
            None => Some("no response row".to_string()),
            Some((assignment, _, _, _)) if assignment != a.assignment_id => {
                Some(format!("belongs to assignment {assignment}, not {}", a.assignment_id))
            }
            Some((_, _, ratings, _)) if ratings != a.ratings => Some(format!("{ratings} ratings, {} sent", a.ratings)),
            Some((_, _, _, None)) => Some("assignment not completed".into()),
            Some((_, valid, _, _)) if (valid == 1) != a.valid => Some(format!("is_valid = {valid}")),
            Some(_) => None,
        };
        if let Some(p) = problem {
            missing.push(format!("response {} (assignment {}): {p}", a.response_id, a.assignment_id));
        }
    }
    missing
}

// ------------------------------------------------------------------------------------------
// Report
// ------------------------------------------------------------------------------------------

fn report(size: &Sizing, r: &Phase, load: &Load) {
    let submits = load.acks.len() as f64 / load.elapsed;
    let requests = (load.page.0.len() + load.submit.0.len()) as f64 / load.elapsed;
    let invalid = load.acks.iter().filter(|a| !a.valid).count();
    println!();
    println!(
        "study_load: {} concurrent clients on loopback, {} items x 4 methods, {} attention checks; load {:.1} s, reference {:.1} s",
        size.common.clients,
        size.items,
        size.attention_checks,
        load.elapsed,
        size.common.reference.as_secs_f64()
    );
    println!(
        "  rater phase: {} submissions ({} invalid answers stored as such), {} pages, {} http errors, {} transport errors, {} raters ran out of tasks",
        load.acks.len(),
        invalid,
        load.page.0.len(),
        load.http_errors,
        load.transport_errors,
        load.exhausted
    );
    if let Some(e) = &load.first_http_error {
        println!("  first http error: {e}");
    }
    println!("  reference: {} requests, {} errors", r.latency.0.len(), r.errors);
    println!();
    support::table_header();
    let row = support::row;
    row("submissions/s", submits, r.per_s(), ">= 2000/s", Some(submits >= TARGET_SUBMITS_PER_S));
    row("requests/s (pages + submits)", requests, r.per_s(), "", None);
    row("submit p50 (ms)", load.submit.ms(50.0), r.latency.ms(50.0), "", None);
    row(
        "submit p99 (ms)",
        load.submit.ms(99.0),
        r.latency.ms(99.0),
        "<= 50 ms",
        Some(load.submit.ms(99.0) <= TARGET_P99_MS),
    );
    // One page per rater (the first task; the others come with the acknowledgements).
    row("first page p50 (ms)", load.page.ms(50.0), r.latency.ms(50.0), "", None);
    row("first page max (ms)", load.page.ms(100.0), r.latency.ms(100.0), "", None);
    row("submit max (ms)", load.submit.ms(100.0), r.latency.ms(100.0), "", None);
    println!();
}

#[tokio::main]
async fn main() {
    let size = Sizing::from_env();
    let mut server = Server::start("study_load").await;
    let db_path = server.db_path();
    let t = Instant::now();
    let tokens = {
        let db = open_db(&db_path).await;
        let tokens = seed(&db, &size).await;
        db.close().await;
        tokens
    };
    println!("study_load: server {} up; study seeded in {:.1} s", server.base, t.elapsed().as_secs_f64());
    // The server inherits the environment: DND__STUDY__DURABLE_RATINGS=false measures the cost
    // of syncing each group commit (config `study.durable_ratings`, default true).
    let durable = std::env::var("DND__STUDY__DURABLE_RATINGS").map_or(true, |v| v != "false");
    println!(
        "study_load: answers acknowledged after {}",
        if durable {
            "a synced commit (study.durable_ratings = true)"
        } else {
            "a commit, unsynced (study.durable_ratings = false)"
        }
    );

    let reference = support::healthz_reference(&server.base, size.common.clients, size.common.reference).await;
    let load = rater_load(&mut server, &tokens, 1, size.common.load, None).await;
    report(&size, &reference, &load);
    if load.acks.is_empty() {
        eprintln!("study_load: no submission was acknowledged; server log:\n{}", server.log_tail());
        drop(server);
        std::process::exit(1);
    }

    // kill -9 mid-load: a phase long enough that the kill lands while every rater is busy.
    let killed =
        rater_load(&mut server, &tokens, 2, size.kill_after + Duration::from_secs(30), Some(size.kill_after)).await;
    let acks: Vec<Ack> = load.acks.iter().chain(&killed.acks).copied().collect();
    let db = open_db(&db_path).await;
    let missing = verify(&db, &acks).await;
    db.close().await;
    println!(
        "kill -9 check: {} acknowledged ({} of them in the {:.1} s before the kill), {} found, {} missing; {} requests cut off by the kill",
        acks.len(),
        killed.acks.len(),
        size.kill_after.as_secs_f64(),
        acks.len() - missing.len(),
        missing.len(),
        killed.transport_errors
    );
    println!("study_load: load average at the end: {}", support::loadavg());
    drop(server);
    if killed.acks.is_empty() {
        eprintln!("study_load: no submission was acknowledged in the kill phase, so the kill -9 check proved nothing; raise DND_LOAD_ITEMS");
        std::process::exit(1);
    }
    if !missing.is_empty() || load.http_errors + killed.http_errors > 0 {
        for m in missing.iter().take(20) {
            eprintln!("  missing: {m}");
        }
        if let Some(e) = &killed.first_http_error {
            eprintln!("  http error during the kill phase: {e}");
        }
        std::process::exit(1);
    }
}
