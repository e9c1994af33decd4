//! Rendered gallery pages, kept in memory and served again while the gallery's data is unchanged.
//!
//! `GET /`, `/models`, `/m/{model}`, `/m/{model}/{layer}` and `/m/{model}/{layer}/{unit}` (with
//! their query strings) render the same HTML for every visitor without an admin session; an
//! admin may see labels that blinding hides from the public (`studio::gallery::blinding`), so
//! requests with the admin cookie bypass the cache. A 200 `text/html` answer is stored under its path and query together with the number in
//! `gallery_version` read before it was rendered (migration 0004: triggers on every table these
//! pages read bump it in the writer's own transaction, whichever process writes, e.g. `dnd
//! import-labels` beside the server). Each request reads that number once; an entry rendered under
//! another number is never served, and the first request that sees a new number drops them all.
//! Of the rating study's tables only `studies` carries triggers (creating or deleting one, for the home page's
//! first-run list, migration 0007; opening or closing one, which blinds or unblinds layers,
//! migration 0008), so raters answering never flush the gallery.
//!
//! Pages that show an error (a failed query renders an error note with status 200) are not kept. Memory is bounded by entry count and bytes; the least recently served
//! entries go first. The layer sits inside compression, so clients get exactly the headers and
//! bytes they got before, plus `x-page-cache: hit|miss`, except for the script nonce: a served
//! copy carries the nonce of its own answer, which that answer's Content-Security-Policy names.

use crate::security::CspNonce;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use studio::db::Pool;

/// What one cache may hold.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_entries: usize,
    /// Bodies, keys and headers of all entries together.
    pub max_bytes: usize,
    /// A larger page is served but not kept.
    pub max_entry_bytes: usize,
}

impl Default for Limits {
    /// Room for every neuron page of a few fully dissected layers (a neuron page with its run is
    /// tens of KiB).
    fn default() -> Self {
        Limits { max_entries: 8192, max_bytes: 192 << 20, max_entry_bytes: 4 << 20 }
    }
}

/// Longest path and query that is cached (longer ones are served uncached).
const MAX_KEY: usize = 2048;
/// What the app renders for a failed query (`ErrorNote` in app/src/components.rs: a `<p>` with
/// `class="error"` and `role="alert"`, in either order); such a page is not kept (the next request
/// tries again). Text from the database is HTML-escaped, so it cannot produce these by accident.
const ERROR_MARKERS: [&[u8]; 2] = [br#"<p class="error" role="alert">"#, br#"<p role="alert" class="error">"#];

const CACHE_HEADER: &str = "x-page-cache";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

struct Entry {
    headers: HeaderMap,
    body: Bytes,
    /// The script nonce the page was rendered with: each answer swaps in its own, which its
    /// Content-Security-Policy names (server/src/security.rs).
    nonce: Option<Arc<str>>,
    /// Accounted size: body, key and headers.
    size: usize,
    /// Tick of the last time it was served (for LRU eviction).
    used: AtomicU64,
}

#[derive(Default)]
struct Inner {
    /// The `gallery_version` every entry was rendered under.
    version: i64,
    entries: HashMap<String, Arc<Entry>>,
    bytes: usize,
}

pub struct PageCache {
    db: Pool,
    limits: Limits,
    inner: Mutex<Inner>,
    tick: AtomicU64,
}

impl PageCache {
    pub fn new(db: Pool) -> Arc<PageCache> {
        Self::with_limits(db, Limits::default())
    }

    pub fn with_limits(db: Pool, limits: Limits) -> Arc<PageCache> {
        Arc::new(PageCache { db, limits, inner: Mutex::new(Inner::default()), tick: AtomicU64::new(0) })
    }

    /// The gallery's data version (one indexed row, read once per request).
    async fn version(&self) -> Result<i64, sqlx::Error> {
        studio::gallery::queries::data_version(&self.db).await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The map stays consistent whatever panicked while holding it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lookup(&self, key: &str, version: i64) -> Option<Arc<Entry>> {
        let mut inner = self.lock();
        if version != inner.version {
            if version > inner.version {
                // The gallery changed: nothing kept can be served again.
                inner.entries.clear();
                inner.bytes = 0;
                inner.version = version;
            }
            return None;
        }
        let entry = inner.entries.get(key).cloned()?;
        entry.used.store(self.tick.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
        Some(entry)
    }

    fn store(&self, key: String, version: i64, headers: HeaderMap, body: Bytes, nonce: Option<Arc<str>>) {
        let header_bytes: usize = headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 32).sum();
        let size = body.len() + key.len() + header_bytes + 64;
        if body.len() > self.limits.max_entry_bytes || size > self.limits.max_bytes || self.limits.max_entries == 0 {
            return;
        }
        let entry = Arc::new(Entry {
            headers,
            body,
            nonce,
            size,
            used: AtomicU64::new(self.tick.fetch_add(1, Ordering::Relaxed)),
        });
        let mut inner = self.lock();
        if version < inner.version {
            // Rendered before a change another request has already seen.
            return;
        }
        if version > inner.version {
            inner.entries.clear();
            inner.bytes = 0;
            inner.version = version;
        }
        inner.bytes += size;
        if let Some(old) = inner.entries.insert(key, entry) {
            inner.bytes -= old.size;
        }
        if inner.entries.len() > self.limits.max_entries || inner.bytes > self.limits.max_bytes {
            self.evict(&mut inner);
        }
    }

    /// Drops the least recently served entries until the cache is at 7/8 of its limits (in one
    /// pass, so a full cache does not sort on every insert).
    fn evict(&self, inner: &mut Inner) {
        let (max_entries, max_bytes) = (self.limits.max_entries * 7 / 8, self.limits.max_bytes / 8 * 7);
        let mut by_age: Vec<(u64, String)> =
            inner.entries.iter().map(|(k, e)| (e.used.load(Ordering::Relaxed), k.clone())).collect();
        by_age.sort_unstable();
        for (_, key) in by_age {
            if inner.entries.len() <= max_entries && inner.bytes <= max_bytes {
                break;
            }
            if let Some(e) = inner.entries.remove(&key) {
                inner.bytes -= e.size;
            }
        }
    }

    #[cfg(test)]
    fn usage(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.entries.len(), inner.bytes)
    }
}

/// `/`, `/models` and `/m/` followed by one to three non-empty segments.
fn is_gallery_page(path: &str) -> bool {
    if path == "/" || path == "/models" {
        return true;
    }
    let Some(rest) = path.strip_prefix("/m/") else { return false };
    let segments = rest.split('/').count();
    (1..=3).contains(&segments) && rest.split('/').all(|s| !s.is_empty())
}

fn mark(res: &mut Response, how: &'static str) {
    res.headers_mut().insert(CACHE_HEADER, HeaderValue::from_static(how));
}

/// The cached page with `nonce` in place of the one it was rendered with.
fn with_nonce(entry: &Entry, nonce: Option<&str>) -> Bytes {
    match (entry.nonce.as_deref(), nonce, std::str::from_utf8(&entry.body)) {
        (Some(old), Some(new), Ok(text)) if old != new => Bytes::from(text.replace(old, new)),
        _ => entry.body.clone(),
    }
}

/// The middleware (`axum::middleware::from_fn_with_state(cache, page_cache::serve)`).
pub async fn serve(State(cache): State<Arc<PageCache>>, req: Request, next: Next) -> Response {
    if req.method() != Method::GET || !is_gallery_page(req.uri().path()) {
        return next.run(req).await;
    }
    let key = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
    // An admin may see labels the public does not (blinding during open studies): an admin's
    // request is neither served from nor kept in the cache.
    if key.len() > MAX_KEY || app::api::study::cookie_value(req.headers(), app::api::study::ADMIN_COOKIE).is_some() {
        return next.run(req).await;
    }
    let version = match cache.version().await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "page cache: cannot read the gallery version; rendering uncached");
            return next.run(req).await;
        }
    };
    let nonce = req.extensions().get::<CspNonce>().map(|n| n.0.clone());
    if let Some(entry) = cache.lookup(&key, version) {
        let mut res = Response::new(Body::from(with_nonce(&entry, nonce.as_deref())));
        *res.headers_mut() = entry.headers.clone();
        mark(&mut res, "hit");
        return res;
    }
    let res = next.run(req).await;
    let is_html = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/html"));
    let personal = res.headers().contains_key(header::SET_COOKIE);
    if res.status() != StatusCode::OK || !is_html || personal {
        let mut res = res;
        mark(&mut res, "miss");
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, path = %key, "page cache: rendering the page failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "rendering the page failed").into_response();
        }
    };
    // The body is whole now: its length replaces any streaming framing.
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::TRANSFER_ENCODING);
    if !ERROR_MARKERS.iter().any(|m| contains(&body, m)) {
        cache.store(key, version, parts.headers.clone(), body.clone(), nonce);
    }
    let mut res = Response::from_parts(parts, Body::from(body));
    mark(&mut res, "miss");
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::study_http::tests::{site, SECRET};
    use axum::http::Request as HttpRequest;
    use axum::Router;
    use study::fixture;
    use tower::ServiceExt;

    struct Reply {
        status: StatusCode,
        cache: Option<String>,
        content_type: Option<String>,
        set_cookie: Option<String>,
        body: String,
    }

    async fn send(app: &Router, req: HttpRequest<Body>) -> Reply {
        let res = app.clone().oneshot(req).await.unwrap();
        let (parts, body) = res.into_parts();
        let header = |name| parts.headers.get(name).map(|v: &HeaderValue| v.to_str().unwrap().to_string());
        Reply {
            status: parts.status,
            cache: header(CACHE_HEADER),
            content_type: header(header::CONTENT_TYPE.as_str()),
            set_cookie: header(header::SET_COOKIE.as_str()),
            body: String::from_utf8_lossy(&axum::body::to_bytes(body, 1 << 24).await.unwrap()).into_owned(),
        }
    }

    async fn get(app: &Router, uri: &str) -> Reply {
        send(app, HttpRequest::get(uri).body(Body::empty()).unwrap()).await
    }

    async fn post_json(app: &Router, uri: &str, body: serde_json::Value) -> Reply {
        let req = HttpRequest::post(uri).header("content-type", "application/json");
        send(app, req.body(Body::from(body.to_string())).unwrap()).await
    }

    /// A GET that must be answered 200 with `how` (`hit` or `miss`).
    async fn page(app: &Router, uri: &str, how: &str) -> String {
        let r = get(app, uri).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.body);
        assert_eq!(r.cache.as_deref(), Some(how), "{uri}");
        assert!(r.content_type.as_deref().is_some_and(|t| t.starts_with("text/html")), "{uri}: {:?}", r.content_type);
        r.body
    }

    fn shows_error(body: &str) -> bool {
        ERROR_MARKERS.iter().any(|m| contains(body.as_bytes(), m))
    }

    /// The page without its per-answer script nonce.
    fn without_nonce(body: &str) -> String {
        let Some(start) = body.find("nonce=\"").map(|i| i + 7) else { return body.to_string() };
        let nonce = &body[start..start + body[start..].find('"').unwrap()];
        assert!(nonce.len() >= 16, "{nonce}");
        body.replace(nonce, "NONCE")
    }

    const PAGES: [&str; 6] =
        ["/", "/models", "/m/toy", "/m/toy/block3", "/m/toy/block3?q=milan&sort=score&page=1", "/m/toy/block3/1"];

    #[tokio::test]
    async fn a_page_is_served_again_until_the_gallery_changes() {
        let s = site().await;
        for uri in PAGES {
            let first = page(&s.app, uri, "miss").await;
            let again = page(&s.app, uri, "hit").await;
            // The same page, under this answer's own script nonce.
            assert_ne!(first, again, "{uri}: the cached copy repeats the first answer's nonce");
            assert_eq!(without_nonce(&first), without_nonce(&again), "{uri}");
        }
        // Another query string is another page; other routes are not cached at all.
        page(&s.app, "/m/toy/block3?page=2", "miss").await;
        let r = get(&s.app, "/healthz").await;
        assert!(r.cache.is_none());
        let unknown = get(&s.app, "/m/toy/no-such-layer").await;
        assert_eq!((unknown.status, unknown.cache.as_deref()), (StatusCode::NOT_FOUND, Some("miss")));
        assert_eq!(get(&s.app, "/m/toy/no-such-layer").await.cache.as_deref(), Some("miss"), "a 404 is not kept");

        // A write that changes nothing shown still renders anew, and the new page is the same
        // bytes: rendering is deterministic, so a hit is exactly what a miss would have been.
        let before = page(&s.app, "/m/toy/block3/1", "hit").await;
        sqlx::query("UPDATE neurons SET class_name = class_name WHERE unit = 7").execute(&s.db).await.unwrap();
        assert_eq!(without_nonce(&page(&s.app, "/m/toy/block3/1", "miss").await), without_nonce(&before));
        page(&s.app, "/m/toy/block3/1", "hit").await;
    }

    #[tokio::test]
    async fn a_label_import_renders_the_pages_anew() {
        let s = site().await;
        for uri in PAGES {
            page(&s.app, uri, "miss").await;
        }
        let csv = "layer,unit,description\nblock3,1,freshly imported stripes\n";
        let options = studio::labels::ImportOptions::default();
        studio::labels::import_file(&s.db, fixture::MODEL, "milan.csv", csv.as_bytes(), &options).await.unwrap();
        for uri in PAGES {
            page(&s.app, uri, "miss").await;
        }
        assert!(page(&s.app, "/m/toy/block3/1", "hit").await.contains("freshly imported stripes"));
        assert!(page(&s.app, "/m/toy/block3?q=stripes", "miss").await.contains("1 of 8 neurons"));
    }

    #[tokio::test]
    async fn a_write_from_another_connection_renders_the_pages_anew() {
        let s = site().await;
        assert!(!page(&s.app, "/m/toy/block3/3", "miss").await.contains("zebra crossing"));
        page(&s.app, "/m/toy/block3/3", "hit").await;
        // Another process's connection (as the `dnd` command line opens one) on the same file.
        let other = sqlx::SqlitePool::connect_with(
            sqlx::sqlite::SqliteConnectOptions::new().filename(s.dir.path().join("t.db")).foreign_keys(true),
        )
        .await
        .unwrap();
        sqlx::query("UPDATE neurons SET class_name = 'zebra crossing' WHERE unit = 3 AND layer_id = (SELECT id FROM layers WHERE name = 'block3')")
            .execute(&other)
            .await
            .unwrap();
        other.close().await;
        assert!(page(&s.app, "/m/toy/block3/3", "miss").await.contains("zebra crossing"));
        assert!(page(&s.app, "/m/toy/block3/3", "hit").await.contains("zebra crossing"));
    }

    #[tokio::test]
    async fn the_rating_study_does_not_flush_the_gallery() {
        let s = site().await;
        for uri in PAGES {
            page(&s.app, uri, "miss").await;
        }
        // A rater takes a task and answers it (assignments, responses, ratings, raters, items).
        let token = &s.raters[0];
        let form = HttpRequest::post("/api/rate/page")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(format!("token={token}")))
            .unwrap();
        let task = send(&s.app, form).await;
        assert_eq!(task.status, StatusCode::OK, "{}", task.body);
        let task: serde_json::Value = serde_json::from_str(&task.body).unwrap();
        let task = &task["task"];
        let ids: Vec<i64> =
            task["descriptions"].as_array().unwrap().iter().map(|d| d["id"].as_i64().unwrap()).collect();
        let answer = serde_json::json!({ "token": token, "submission": {
            "assignment_id": task["assignment_id"], "ratings": [[ids[0], 4], [ids[1], 2]], "best": ids[0],
            "client_time_ms": 2500, "idempotency_key": "cache-answer-1" } });
        let r = post_json(&s.app, "/api/rate/submit", answer).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM responses").fetch_one(&s.db).await.unwrap();
        assert_eq!(n, 1);
        // An admin session is no gallery change either.
        let login = post_json(&s.app, "/api/admin/login", serde_json::json!({ "secret": SECRET })).await;
        assert_eq!(login.status, StatusCode::OK, "{}", login.body);
        for uri in PAGES {
            page(&s.app, uri, "hit").await;
        }
        // Closing (or opening) a study is: it shows (or hides) its layers' labels (blinding).
        study::setup::set_status(&s.db, s.study_id, "closed").await.unwrap();
        for uri in PAGES {
            page(&s.app, uri, "miss").await;
        }
    }

    /// Outside layers in open studies (blinding), a page is the same for an admin; an admin's
    /// request still bypasses the cache, since where blinding applies it differs.
    #[tokio::test]
    async fn the_pages_do_not_depend_on_the_session() {
        let s = site().await;
        let login = post_json(&s.app, "/api/admin/login", serde_json::json!({ "secret": SECRET })).await;
        let cookie = login.set_cookie.expect("an admin session").split(';').next().unwrap().to_string();
        // (`/` and `/models` stream out of order: how much arrives inline depends on timing, so
        // only the pages rendered whole are compared byte for byte; none reads a session.)
        for &uri in &PAGES[2..] {
            let anonymous = page(&s.app, uri, "miss").await;
            // Rendered for an admin from scratch: the same bytes as for anyone.
            sqlx::query("UPDATE gallery_version SET version = version + 1").execute(&s.db).await.unwrap();
            let admin =
                send(&s.app, HttpRequest::get(uri).header("cookie", &cookie).body(Body::empty()).unwrap()).await;
            assert_eq!(admin.cache.as_deref(), None, "{uri}: an admin's page went through the cache");
            assert_eq!(without_nonce(&admin.body), without_nonce(&anonymous), "{uri} differs for an admin");
        }
    }

    #[tokio::test]
    async fn a_page_showing_an_error_is_not_kept() {
        let s = site().await;
        // Every query of the neuron page's labels fails while the table has another name.
        sqlx::query("ALTER TABLE labels RENAME TO labels_away").execute(&s.db).await.unwrap();
        let broken = page(&s.app, "/m/toy/block3/1", "miss").await;
        assert!(shows_error(&broken), "{broken}");
        page(&s.app, "/m/toy/block3/1", "miss").await;
        sqlx::query("ALTER TABLE labels_away RENAME TO labels").execute(&s.db).await.unwrap();
        let fixed = page(&s.app, "/m/toy/block3/1", "miss").await;
        assert!(!shows_error(&fixed));
        page(&s.app, "/m/toy/block3/1", "hit").await;
    }

    /// Units of a layer grid page, in the order shown.
    fn grid_units(body: &str) -> Vec<i64> {
        body.split("class=\"unit\">unit ")
            .skip(1)
            .map(|rest| rest[..rest.find('<').unwrap()].parse().unwrap())
            .collect()
    }

    /// The layer grid's set-based queries (filter over every method's label and the class name,
    /// sort by the best DnD score over all DnD sources, pages past the end) through the router.
    #[tokio::test]
    async fn the_layer_grid_filters_sorts_and_pages() {
        let s = site().await;
        let db = &s.db;
        // DnD scores (unit 7 has none) and a second DnD source that ranks unit 0 first.
        sqlx::query(
            "UPDATE labels SET score = (SELECT (n.unit * 5) % 8 FROM neurons n WHERE n.id = labels.neuron_id AND n.unit < 7)
             WHERE method = 'dnd'",
        )
        .execute(db)
        .await
        .unwrap();
        let import: i64 = sqlx::query_scalar(
            "INSERT INTO label_imports (model_id, method, source_name, format, file_name, file_sha256, row_count)
             SELECT id, 'dnd', 'alt', 'dnd-csv', 'alt.csv', printf('%064d', 7), 1 FROM models RETURNING id",
        )
        .fetch_one(db)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO labels (neuron_id, layer_id, method, source_name, rank, text, score, import_id)
             SELECT n.id, n.layer_id, 'dnd', 'alt', 1, 'alternative view', 10.0, ? FROM neurons n
             JOIN layers l ON l.id = n.layer_id WHERE l.name = 'block3' AND n.unit = 0",
        )
        .bind(import)
        .execute(db)
        .await
        .unwrap();
        sqlx::query("UPDATE neurons SET class_name = 'zebra' WHERE unit = 5").execute(db).await.unwrap();

        let all = page(&s.app, "/m/toy/block3", "miss").await;
        assert_eq!(grid_units(&all), (0..8).collect::<Vec<_>>());
        assert!(all.contains("8 of 8 neurons") && all.contains("page 1 of 1"), "{all}");
        // Each card: rank-1 labels, DnD sources first, then the other methods in paper order.
        let card1 = &all[all.find("class=\"unit\">unit 1<").unwrap()..all.find("class=\"unit\">unit 2<").unwrap()];
        assert!(card1.find("data-method=\"dnd\"").unwrap() < card1.find("data-method=\"milan\"").unwrap(), "{card1}");
        assert!(!card1.contains("clip-dissect"), "{card1}");
        let card0 = &all[all.find("class=\"unit\">unit 0<").unwrap()..all.find("class=\"unit\">unit 1<").unwrap()];
        assert_eq!(card0.matches("data-method=").count(), 4, "{card0}");

        let by_score = page(&s.app, "/m/toy/block3?sort=score", "miss").await;
        assert_eq!(grid_units(&by_score), vec![0, 3, 6, 1, 4, 2, 5, 7]);
        // Any method's label text, or the class name, case-insensitively; LIKE's wildcards are text.
        for (q, units) in [
            ("clip-dissect", vec![0, 2, 4, 6]),
            ("CONCEPT%20block3-3", vec![3]),
            ("alternative", vec![0]),
            ("ZEBRA", vec![5]),
            ("%25", vec![]),
            ("_", vec![]),
        ] {
            let body = page(&s.app, &format!("/m/toy/block3?q={q}&sort=score"), "miss").await;
            let mut shown = grid_units(&body);
            shown.sort();
            assert_eq!(shown, units, "q={q}");
            assert!(body.contains(&format!("{} of 8 neurons", units.len())), "q={q}");
        }
        // A page past the end shows the last one; nothing matching is page 1 of 1.
        let past = page(&s.app, "/m/toy/block3?page=9&sort=score", "miss").await;
        assert_eq!(grid_units(&past), grid_units(&by_score));
        assert!(past.contains("page 1 of 1"));
        let none = page(&s.app, "/m/toy/block3?q=nothing-like-this&page=3", "miss").await;
        assert!(none.contains("0 of 8 neurons") && none.contains("page 1 of 1") && grid_units(&none).is_empty());
        // Each method and source with a current label in the layer gets export links, and each
        // link exports that source's labels (the second DnD source's only label is unit 0's).
        for m in ["dnd", "clip-dissect", "milan"] {
            assert!(all.contains(&format!("/export/toy/block3?method={m}&amp;format=json")), "{m}");
        }
        assert!(all.contains("class=\"export\">DnD (alt)<"), "{all}");
        let alt = get(&s.app, "/export/toy/block3?method=dnd&source=alt&format=json").await;
        assert!(all.contains("/export/toy/block3?method=dnd&amp;source=alt&amp;format=json"), "{all}");
        let labels: serde_json::Value = serde_json::from_str(&alt.body).unwrap();
        let texts: Vec<&str> =
            labels["labels"].as_array().unwrap().iter().map(|l| l["text"].as_str().unwrap()).collect();
        assert_eq!(texts, ["alternative view"]);
        // Asking for a source the layer lacks names the ones it has.
        let none = get(&s.app, "/export/toy/block3?method=dnd&source=other&format=json").await;
        assert_eq!(none.status, StatusCode::NOT_FOUND);
        assert!(none.body.contains("from source (none), `alt`"), "{}", none.body);
    }

    #[tokio::test]
    async fn memory_is_bounded_and_the_least_recently_served_go_first() {
        let (_dir, db) = studio::test_support::temp_db().await;
        let limits = Limits { max_entries: 8, max_bytes: 64 << 10, max_entry_bytes: 16 << 10 };
        let cache = PageCache::with_limits(db, limits);
        let body = |n: usize| Bytes::from(vec![b'x'; n]);
        for i in 0..8 {
            cache.store(format!("/m/a/{i}"), 1, HeaderMap::new(), body(100), None);
        }
        assert_eq!(cache.usage().0, 8);
        // Serve the first two again: they are the most recent now.
        assert!(cache.lookup("/m/a/0", 1).is_some() && cache.lookup("/m/a/1", 1).is_some());
        cache.store("/m/a/8".into(), 1, HeaderMap::new(), body(100), None);
        let (entries, bytes) = cache.usage();
        assert!(entries <= 8 && bytes <= limits.max_bytes, "{entries} entries, {bytes} bytes");
        assert!(
            cache.lookup("/m/a/0", 1).is_some()
                && cache.lookup("/m/a/1", 1).is_some()
                && cache.lookup("/m/a/8", 1).is_some()
        );
        assert!(cache.lookup("/m/a/2", 1).is_none(), "the least recently served went first");
        // Bytes bound the cache as well as the count; a page over the entry limit is not kept.
        for i in 0..20 {
            cache.store(format!("/m/b/{i}"), 1, HeaderMap::new(), body(15 << 10), None);
            let (entries, bytes) = cache.usage();
            assert!(entries <= limits.max_entries && bytes <= limits.max_bytes, "{entries} entries, {bytes} bytes");
        }
        cache.store("/m/big".into(), 1, HeaderMap::new(), body(17 << 10), None);
        assert!(cache.lookup("/m/big", 1).is_none());
        // A newer version drops everything; a page rendered under an older one is not kept.
        assert!(cache.lookup("/m/b/19", 2).is_none());
        assert_eq!(cache.usage(), (0, 0));
        cache.store("/m/late".into(), 1, HeaderMap::new(), body(10), None);
        assert_eq!(cache.usage(), (0, 0));
    }

    #[test]
    fn only_gallery_pages_are_cached() {
        for p in ["/", "/models", "/m/x", "/m/x/layer4", "/m/x/layer4/12"] {
            assert!(is_gallery_page(p), "{p}");
        }
        for p in [
            "/m",
            "/m/",
            "/m/x/",
            "/m//a",
            "/m/x/l/1/2",
            "/jobs",
            "/admin",
            "/rate/t",
            "/img/ab",
            "/api/get_layer",
            "/healthz",
        ] {
            assert!(!is_gallery_page(p), "{p}");
        }
    }
}
