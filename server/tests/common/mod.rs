//! A `dnd serve` started for one integration test (own data folder, free port, admin secret), with
//! the requests those tests share: admin login, server-function posts, the job stream, SQL reads.
#![allow(dead_code)] // each test file uses its own part of it

use app::api::jobs::{JobDetail, JobView};
use reqwest::{Client, StatusCode};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SECRET: &str = "integration-test-admin-secret";
/// Generous: the first job of a server loads the target model, the captioner and the LLM.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(600);

pub struct Server {
    pub child: Child,
    pub base: String,
    pub data: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder().no_proxy().build().unwrap()
}

impl Server {
    /// Starts `dnd serve` on `data` with the embedded assets and `env` (`DND__…` settings) added.
    pub async fn start_with(data: &Path, env: &[(&str, String)]) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(data.join("server.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_dnd"))
            .arg("serve")
            .env("DND__STORAGE__DATA_DIR", data)
            .env("DND__STORAGE__ASSETS_DIR", dissect::assets::assets_dir())
            .env("DND__SERVER__BIND", format!("127.0.0.1:{port}"))
            .env("DND__ADMIN__SECRET", SECRET)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dnd serve");
        let server = Server { child, base: format!("http://127.0.0.1:{port}"), data: data.to_path_buf() };
        let client = client();
        for _ in 0..600 {
            if client.get(format!("{}/healthz", server.base)).send().await.is_ok_and(|r| r.status().is_success()) {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("server did not start:\n{}", server.log());
    }

    pub async fn start(data: &Path) -> Server {
        Self::start_with(data, &[]).await
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.join("server.log")).unwrap_or_default()
    }

    /// Logs in as admin: (cookie header, CSRF token).
    pub async fn login(&self) -> (String, String) {
        let r = client()
            .post(format!("{}/api/admin/login", self.base))
            .json(&serde_json::json!({ "secret": SECRET }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
        let info: serde_json::Value = r.json().await.unwrap();
        (cookie, info["csrf"].as_str().unwrap().to_string())
    }

    /// A JSON post (server functions), with the session cookie when given.
    pub async fn post(&self, path: &str, cookie: Option<&str>, body: serde_json::Value) -> (StatusCode, String) {
        let mut req = client().post(format!("{}{path}", self.base)).json(&body);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        let r = req.send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    }

    pub async fn detail(&self, id: i64) -> JobDetail {
        let r = client()
            .post(format!("{}/api/jobs/get", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("id={id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json::<Option<JobDetail>>().await.unwrap().expect("the job exists")
    }

    /// Follows `/events/jobs` until job `id` satisfies `done`; answers every state of it seen.
    pub async fn follow(&self, id: i64, done: impl Fn(&JobView) -> bool) -> Vec<JobView> {
        let mut r = client().get(format!("{}/events/jobs", self.base)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        let (started, mut buf, mut seen) = (Instant::now(), String::new(), Vec::new());
        loop {
            let left = JOB_TIMEOUT
                .checked_sub(started.elapsed())
                .unwrap_or_else(|| panic!("job #{id} timed out; seen {seen:#?}\n{}", self.log()));
            let chunk =
                tokio::time::timeout(left, r.chunk()).await.expect("stream stalled").unwrap().expect("stream ended");
            buf.push_str(std::str::from_utf8(&chunk).unwrap());
            while let Some(end) = buf.find("\n\n") {
                let event: String = buf.drain(..end + 2).collect();
                let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) else { continue };
                if !event.lines().any(|l| l == "event: jobs") {
                    continue;
                }
                let jobs: Vec<JobView> = serde_json::from_str(data).unwrap();
                if let Some(j) = jobs.into_iter().find(|j| j.id == id) {
                    let finished = done(&j);
                    seen.push(j);
                    if finished {
                        return seen;
                    }
                }
            }
        }
    }

    /// Job `id`'s state once it has finished.
    pub async fn finished(&self, id: i64) -> JobView {
        self.follow(id, JobView::is_finished).await.pop().expect("seen finished")
    }
}

/// One value read from the server's database (by a second connection, as another process would).
pub async fn query<T>(data: &Path, sql: &str) -> T
where
    T: Send + Unpin + for<'r> sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(data.join("dnd-studio.db"));
    let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
    let v: T = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string())).fetch_one(&pool).await.unwrap();
    pool.close().await;
    v
}

pub async fn query_i64(data: &Path, sql: &str) -> i64 {
    query(data, sql).await
}
