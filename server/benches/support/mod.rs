//! What the server's load benchmarks share (`mod support;` in each): the release server under
//! test on a free loopback port with a throw-away data folder, the HTTP client, a closed-loop load
//! generator, latency percentiles and the report table.

// Each benchmark uses its own part of this module.
#![allow(dead_code)]

use reqwest::Client;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::SqlitePool;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A whole number from the environment, else `default`; a malformed value stops the bench.
pub fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

/// The sizing every load benchmark has, from the environment: concurrent clients (`clients_var`,
/// default 64), seconds of each measured phase (`DND_LOAD_SECS`, 8) and of the reference
/// (`DND_LOAD_REF_SECS`, 3).
pub struct Sizing {
    pub clients: usize,
    pub load: Duration,
    pub reference: Duration,
}

impl Sizing {
    pub fn from_env(clients_var: &str) -> Sizing {
        Sizing {
            clients: env_u64(clients_var, 64).clamp(1, 1000) as usize,
            load: Duration::from_secs(env_u64("DND_LOAD_SECS", 8).max(1)),
            reference: Duration::from_secs(env_u64("DND_LOAD_REF_SECS", 3).max(1)),
        }
    }
}

// ------------------------------------------------------------------------------------------
// The server under test
// ------------------------------------------------------------------------------------------

/// A running `dnd serve` with its own data folder; killed (SIGKILL) when dropped.
pub struct Server {
    child: Child,
    pub base: String,
    data: tempfile::TempDir,
}

impl Server {
    /// The release binary: `$DND_BIN`, else the `dnd` that `cargo bench` built with this bench
    /// (`target/release/dnd`), else that path in the workspace.
    pub fn binary() -> PathBuf {
        if let Some(bin) = std::env::var_os("DND_BIN") {
            return PathBuf::from(bin);
        }
        match option_env!("CARGO_BIN_EXE_dnd") {
            Some(bin) => PathBuf::from(bin),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/dnd"),
        }
    }

    /// Prepares the bench's HTTP client, reports the host's load, starts the server and waits
    /// until `/healthz` answers (the server registers the built-in model and probing set before
    /// it listens). `bench` names the caller in messages.
    pub async fn start(bench: &str) -> Server {
        install_crypto_provider();
        println!("{bench}: load average before start: {}", loadavg());
        let bin = Self::binary();
        if !bin.is_file() {
            eprintln!(
                "{bench}: server binary {} not found; build it with `cargo build --release -p server` or set DND_BIN",
                bin.display()
            );
            std::process::exit(2);
        }
        // Bind-then-release picks a free port; the server binds it right after.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let data = tempfile::tempdir().unwrap();
        // The server logs every request at INFO: to a file, as a deployment would, not a pipe
        // nobody drains.
        let log = std::fs::File::create(data.path().join("server.log")).unwrap();
        let child = Self::command(&bin, data.path())
            .arg("serve")
            .env("DND__SERVER__BIND", format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut server = Server { child, base: format!("http://127.0.0.1:{port}"), data };
        server.wait_healthy().await;
        server
    }

    /// `dnd` on the given data folder (no subcommand yet).
    fn command(bin: &Path, data: &Path) -> Command {
        let mut cmd = Command::new(bin);
        cmd.env("DND__STORAGE__DATA_DIR", data);
        cmd
    }

    /// Runs another `dnd` command (e.g. `import-labels`) on this server's data folder, as an
    /// operator would beside the running server; its output when it fails.
    pub fn run_cli(&self, args: &[&str]) -> Result<String, String> {
        let out = Self::command(&Self::binary(), self.data.path())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run dnd {}: {e}", args.join(" ")))?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!("dnd {} failed ({}):\n{text}", args.join(" "), out.status))
        }
    }

    async fn wait_healthy(&mut self) {
        let client = Client::builder().no_proxy().timeout(Duration::from_secs(2)).build().unwrap();
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("server exited during start-up ({status}):\n{}", self.log_tail());
            }
            if let Ok(r) = client.get(format!("{}/healthz", self.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("server did not answer /healthz within 60 s:\n{}", self.log_tail());
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    pub fn db_path(&self) -> PathBuf {
        self.data.path().join("dnd-studio.db")
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.data.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGKILL (std's `Child::kill`), then reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A pool on the database file, separate from the server's (seeding, checks).
pub async fn open_db(path: &Path) -> SqlitePool {
    let options = SqliteConnectOptions::new().filename(path).foreign_keys(true).busy_timeout(Duration::from_secs(10));
    SqlitePoolOptions::new().max_connections(2).connect_with(options).await.unwrap()
}

// ------------------------------------------------------------------------------------------
// Load generation
// ------------------------------------------------------------------------------------------

/// Every latency of one kind; percentiles by nearest rank on the sorted samples (exact, and
/// cheap at these sample counts).
#[derive(Default)]
pub struct Latencies(pub Vec<Duration>);

impl Latencies {
    pub fn merge(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    pub fn finish(&mut self) {
        self.0.sort_unstable();
    }

    /// The `p`-th percentile in ms (after `finish`); NaN without samples.
    pub fn ms(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.0.len() as f64).ceil().max(1.0) as usize;
        self.0[rank.min(self.0.len()) - 1].as_secs_f64() * 1000.0
    }
}

/// reqwest (built without a TLS provider feature) needs a process-wide rustls provider even for
/// plain HTTP; `ring`, as the workspace uses elsewhere.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn client(concurrency: usize) -> Client {
    Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

/// `GET url`; an error unless the answer is 200 and its body contains every one of `expect`
/// (so a broken or empty page cannot pass for a fast one).
pub async fn get_expecting(http: &Client, url: &str, expect: &[String]) -> Result<(), String> {
    let resp = http.get(url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status();
    let body = resp.text().await.map_err(|e| format!("GET {url}: reading the body: {e}"))?;
    if status != reqwest::StatusCode::OK {
        let head: String = body.chars().take(300).collect();
        return Err(format!("GET {url}: {status}: {head}"));
    }
    match expect.iter().find(|e| !body.contains(e.as_str())) {
        Some(missing) => Err(format!("GET {url}: 200 but the page lacks {missing:?} ({} bytes)", body.len())),
        None => Ok(()),
    }
}

/// When a closed-loop phase ends.
#[derive(Clone, Copy)]
pub enum Until {
    /// After this long (requests in flight finish and count).
    Elapsed(Duration),
    /// After this many requests in all.
    Requests(u64),
}

/// What one closed-loop phase measured.
#[derive(Default)]
pub struct Phase {
    pub elapsed: f64,
    /// Latencies of the successful requests (sorted).
    pub latency: Latencies,
    pub errors: usize,
    pub first_error: Option<String>,
}

impl Phase {
    /// Successful requests per second.
    pub fn per_s(&self) -> f64 {
        self.latency.0.len() as f64 / self.elapsed
    }
}

/// `clients` concurrent loops, each sending its next request as soon as the last one answered.
/// `request(n)` makes the n-th request of the phase (0, 1, 2, … across all clients), so a list
/// of URLs is covered in turn; its error is counted and the loop goes on.
pub async fn closed_loop<F, Fut>(clients: usize, until: Until, request: F) -> Phase
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let request = Arc::new(request);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (request, next) = (request.clone(), next.clone());
            tokio::spawn(async move {
                let mut out = Phase::default();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let more = match until {
                        Until::Elapsed(span) => start.elapsed() < span,
                        Until::Requests(total) => n < total,
                    };
                    if !more {
                        break;
                    }
                    let t = Instant::now();
                    match request(n).await {
                        Ok(()) => out.latency.0.push(t.elapsed()),
                        Err(e) => {
                            out.errors += 1;
                            out.first_error.get_or_insert(e);
                        }
                    }
                }
                out
            })
        })
        .collect();
    let mut phase = Phase::default();
    for w in workers {
        let r = w.await.unwrap();
        phase.latency.merge(r.latency);
        phase.errors += r.errors;
        if phase.first_error.is_none() {
            phase.first_error = r.first_error;
        }
    }
    phase.elapsed = start.elapsed().as_secs_f64();
    phase.latency.finish();
    phase
}

/// The reference floor: `clients` loops of `GET /healthz` (HTTP, routing, layers and one pooled
/// SQLite read: what any request pays) for `span`.
pub async fn healthz_reference(base: &str, clients: usize, span: Duration) -> Phase {
    let http = client(clients);
    let url = format!("{base}/healthz");
    let expect = vec![r#""status":"ok""#.to_string()];
    closed_loop(clients, Until::Elapsed(span), move |_| {
        let (http, url, expect) = (http.clone(), url.clone(), expect.clone());
        async move { get_expecting(&http, &url, &expect).await }
    })
    .await
}

// ------------------------------------------------------------------------------------------
// Report
// ------------------------------------------------------------------------------------------

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The head of the comparison table printed by [`row`].
pub fn table_header() {
    println!(
        "| measure                          |      value | reference (healthz) |      ratio | target     | verdict |"
    );
    println!(
        "|----------------------------------|-----------:|--------------------:|-----------:|------------|---------|"
    );
}

/// One measure against its reference measured in the same run, with its target (reported, not
/// enforced) when it has one.
pub fn row(name: &str, v: f64, reference: f64, target: &str, ok: Option<bool>) {
    let ratio = v / reference;
    let ratio = if ratio >= 10.0 {
        format!("{ratio:.0}x")
    } else if ratio >= 1.0 {
        format!("{ratio:.2}x")
    } else {
        format!("{ratio:.4}x")
    };
    let verdict = match ok {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "",
    };
    println!("| {name:<32} | {v:>10.1} | {reference:>19.1} | {ratio:>10} | {target:<10} | {verdict:<7} |");
}
