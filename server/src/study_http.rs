//! Study routes outside the Leptos pages: the open link (`/join/{link}` issues a rater token and
//! redirects to the rater's page; the same browser gets its token back on a second visit) and
//! the admin's exports (`/admin/studies/{id}/export/{responses|results}.{csv|json}`).

use app::api::study::{cookie_value as cookie, ADMIN_COOKIE};
use axum::{
    extract::{Path, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
    routing::get,
    Json, Router,
};
use studio::db::Pool;
use study::StudyError;

/// Cookie remembering the token an open link gave this browser (path-scoped to that link).
const JOIN_COOKIE: &str = "dnd_rater";

#[derive(Clone)]
struct Routes {
    db: Pool,
    /// Cookies carry `Secure` (config `server.public_url` is https).
    secure_cookies: bool,
}

pub fn router<S: Clone + Send + Sync + 'static>(db: Pool, secure_cookies: bool) -> Router<S> {
    Router::new()
        .route("/join/{link}", get(join))
        .route("/admin/studies/{id}/export/{file}", get(export))
        .with_state(Routes { db, secure_cookies })
}

fn error_response(e: StudyError) -> Response {
    if let StudyError::Db(db) = &e {
        tracing::error!(error = %db, "study request failed");
    }
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, e.to_string()).into_response()
}

async fn join(
    State(Routes { db, secure_cookies }): State<Routes>,
    Path(link): Path<String>,
    headers: HeaderMap,
) -> Response {
    // A returning rater keeps their token (and their progress) unless it was revoked.
    if let Some(token) = cookie(&headers, JOIN_COOKIE) {
        let study_of_link = study::raters::study_of_open_link(&db, &link).await.ok().flatten();
        if let (Ok(rater), Some(study)) = (study::raters::rater_by_token(&db, token).await, study_of_link) {
            if rater.study_id == study {
                return Redirect::to(&format!("/rate/{token}")).into_response();
            }
        }
    }
    match study::raters::claim_open_link(&db, &link).await {
        Ok(token) => {
            let mut cookie =
                format!("{JOIN_COOKIE}={token}; HttpOnly; SameSite=Lax; Path=/join/{link}; Max-Age=2592000");
            if secure_cookies {
                cookie.push_str("; Secure");
            }
            ([(header::SET_COOKIE, cookie)], Redirect::to(&format!("/rate/{token}"))).into_response()
        }
        Err(e) => error_response(e),
    }
}

async fn export(
    State(Routes { db, .. }): State<Routes>,
    Path((id, file)): Path<(i64, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = study::admin::authorize(&db, cookie(&headers, ADMIN_COOKIE), None).await {
        return error_response(e);
    }
    if let Err(e) = study::raters::study_exists(&db, id).await {
        return error_response(e);
    }
    let attachment = |name: &str| format!("attachment; filename=\"study-{id}-{name}\"");
    let csv = |body: String, name: &str| {
        (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (header::CONTENT_DISPOSITION, attachment(name)),
            ],
            body,
        )
            .into_response()
    };
    let result = async {
        Ok::<Response, StudyError>(match file.as_str() {
            "responses.csv" => csv(study::export::responses_csv(&study::export::response_rows(&db, id).await?), &file),
            "responses.json" => {
                let rows = study::export::response_rows(&db, id).await?;
                ([(header::CONTENT_DISPOSITION, attachment(&file))], Json(rows)).into_response()
            }
            "results.csv" => csv(study::export::results_csv(&study::results::results(&db, id).await?), &file),
            "neurons.csv" => csv(study::export::neurons_csv(&study::results::results(&db, id).await?), &file),
            "results.json" => {
                let results = study::results::results(&db, id).await?;
                ([(header::CONTENT_DISPOSITION, attachment(&file))], Json(results)).into_response()
            }
            other => {
                return Err(StudyError::NotFound(format!(
                    "no export `{other}`: responses.csv, responses.json, results.csv, results.json or neurons.csv"
                )))
            }
        })
    }
    .await;
    result.unwrap_or_else(error_response)
}

#[cfg(test)]
pub(crate) mod tests {
    //! The study's access rules through the real router: what a rater token, a missing or
    //! forged admin session, and a cross-site form can and cannot reach.

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::Router;
    use std::sync::Arc;
    use studio::config::Config;
    use study::fixture::{self, FixedImages};
    use study::types::{LayerChoice, MethodRef, NewStudy};
    use tower::ServiceExt;

    pub(crate) const SECRET: &str = "test-admin-secret-0123456789";

    /// The study fixture's model `toy` with an open study of two raters (on layer block5) behind
    /// the real router (the gallery cache's tests use it too).
    pub(crate) struct Site {
        pub(crate) dir: tempfile::TempDir,
        pub(crate) db: studio::db::Pool,
        pub(crate) app: Router,
        pub(crate) study_id: i64,
        pub(crate) raters: Vec<String>,
    }

    pub(crate) async fn site() -> Site {
        site_at("").await
    }

    /// The site, as reached at `public_url` (config `server.public_url`).
    async fn site_at(public_url: &str) -> Site {
        let (dir, db) = studio::test_support::temp_db().await;
        fixture::seed(&db).await;
        let images = FixedImages { db: db.clone() };
        let mut s = NewStudy::with_defaults(
            "security",
            fixture::MODEL,
            // block5: the gallery tests read block3's labels as the public sees them.
            vec![LayerChoice { layer: "block5".into(), units: "0,2".into() }],
            ["dnd", "milan"].iter().map(|m| MethodRef { method: m.to_string(), source: String::new() }).collect(),
        );
        s.raters_per_item = 2;
        let study_id = study::setup::create_study(&db, &images, &s).await.unwrap();
        study::setup::set_status(&db, study_id, "open").await.unwrap();
        let raters = study::raters::invite(&db, study_id, 2, "").await.unwrap();
        let mut config = Config::default();
        config.storage.data_dir = dir.path().to_path_buf();
        config.server.public_url = public_url.to_string();
        let ctx = app::state::ServerContext {
            jobs: Default::default(),
            db: db.clone(),
            admin_secret_digest: study::tokens::hash_token(SECRET).into(),
            top_images: Arc::new(images),
            submissions: study::submit::SubmissionQueue::start(db.clone()),
            login_limiter: Default::default(),
            secure_cookies: config.server.secure_cookies(),
            concepts: Default::default(),
            blind_gallery: config.study.blind_gallery,
        };
        Site { app: crate::http::router(&config, ctx), db, dir, study_id, raters }
    }

    struct Reply {
        status: StatusCode,
        headers: axum::http::HeaderMap,
        body: String,
    }

    async fn call(app: &Router, req: Request<Body>) -> Reply {
        let res = app.clone().oneshot(req).await.unwrap();
        let (parts, body) = res.into_parts();
        let body = String::from_utf8_lossy(&axum::body::to_bytes(body, 1 << 24).await.unwrap()).into_owned();
        Reply { status: parts.status, headers: parts.headers, body }
    }

    fn json(uri: &str, cookie: Option<&str>, body: serde_json::Value) -> Request<Body> {
        let mut req = Request::post(uri).header("content-type", "application/json");
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        req.body(Body::from(body.to_string())).unwrap()
    }

    fn form(uri: &str, cookie: Option<&str>, body: &str) -> Request<Body> {
        let mut req = Request::post(uri).header("content-type", "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        req.body(Body::from(body.to_string())).unwrap()
    }

    fn get(uri: &str, cookie: Option<&str>) -> Request<Body> {
        let mut req = Request::get(uri);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        req.body(Body::empty()).unwrap()
    }

    /// Logs in; returns (cookie header value, csrf token).
    async fn login(app: &Router) -> (String, String) {
        let r = call(app, json("/api/admin/login", None, serde_json::json!({ "secret": SECRET }))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let set = r.headers.get("set-cookie").unwrap().to_str().unwrap().to_string();
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
        let cookie = set.split(';').next().unwrap().to_string();
        let csrf = serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["csrf"].as_str().unwrap().to_string();
        (cookie, csrf)
    }

    #[tokio::test]
    async fn wrong_admin_secrets_are_held_back_with_429_then_even_the_right_one_waits() {
        let s = site().await;
        let attempt = |secret: &str| json("/api/admin/login", None, serde_json::json!({ "secret": secret }));
        for i in 0..study::login_limit::MAX_FAILURES {
            let r = call(&s.app, attempt(&format!("guess-number-{i}-abcdefgh"))).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "attempt {i}: {}", r.body);
        }
        for secret in ["one-more-guess-abcdefgh", SECRET] {
            let r = call(&s.app, attempt(secret)).await;
            assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
            assert!(r.body.contains("too many wrong admin secrets"), "{}", r.body);
            let wait: u64 = r.headers.get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
            assert!(wait > 0 && wait <= study::login_limit::WINDOW.as_secs(), "{wait}");
            assert!(r.headers.get("set-cookie").is_none());
        }
    }

    #[tokio::test]
    async fn cookies_are_secure_when_the_public_url_is_https() {
        for (url, secure) in [("", false), ("http://dnd.example.org", false), ("https://dnd.example.org", true)] {
            let s = site_at(url).await;
            let r = call(&s.app, json("/api/admin/login", None, serde_json::json!({ "secret": SECRET }))).await;
            let set = r.headers.get("set-cookie").unwrap().to_str().unwrap();
            assert_eq!(set.contains("; Secure"), secure, "{url}: {set}");
            let link = study::raters::open_link(&s.db, s.study_id).await.unwrap();
            let r = call(&s.app, get(&format!("/join/{link}"), None)).await;
            let set = r.headers.get("set-cookie").unwrap().to_str().unwrap();
            assert_eq!(set.contains("; Secure"), secure, "{url}: {set}");
        }
    }

    #[tokio::test]
    async fn every_answer_carries_the_security_headers_and_pages_name_their_own_nonce() {
        let s = site().await;
        let mut nonces = Vec::new();
        // The second `/` is the page cache's copy: it must carry the new answer's nonce.
        for uri in ["/", "/", "/m/toy/block3/1", "/no-such-page"] {
            let r = call(&s.app, get(uri, None)).await;
            let csp = r.headers.get("content-security-policy").expect(uri).to_str().unwrap();
            let nonce = csp.split("'nonce-").nth(1).and_then(|t| t.split('\'').next()).expect(csp);
            assert!(csp.contains("frame-ancestors 'none'") && csp.contains("object-src 'none'"), "{csp}");
            let scripts = r.body.matches("<script").count();
            assert!(scripts > 0, "{uri}");
            assert_eq!(
                r.body.matches(&format!("nonce=\"{nonce}\"")).count(),
                scripts,
                "{uri}: every script carries it"
            );
            nonces.push(nonce.to_string());
        }
        nonces.sort();
        nonces.dedup();
        assert_eq!(nonces.len(), 4, "one nonce per answer");
        for uri in ["/", "/healthz", "/no-such-page"] {
            let r = call(&s.app, get(uri, None)).await;
            assert_eq!(r.headers.get("referrer-policy").unwrap(), "no-referrer", "{uri}");
            assert_eq!(r.headers.get("x-frame-options").unwrap(), "DENY", "{uri}");
            assert_eq!(r.headers.get("x-content-type-options").unwrap(), "nosniff", "{uri}");
        }
        let r = call(&s.app, json("/api/admin/login", None, serde_json::json!({ "secret": SECRET }))).await;
        assert_eq!(r.headers.get("referrer-policy").unwrap(), "no-referrer");
    }

    #[tokio::test]
    async fn a_rater_token_reaches_only_its_own_tasks() {
        let s = site().await;
        let token = &s.raters[0];
        let page = call(&s.app, form("/api/rate/page", None, &format!("token={token}"))).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        // Descriptions without the methods behind them.
        let v: serde_json::Value = serde_json::from_str(&page.body).unwrap();
        assert_eq!(v["task"]["descriptions"].as_array().unwrap().len(), 2);
        for word in ["\"method\"", "dnd\"", "\"milan\"", "study_method", "label_id"] {
            assert!(!page.body.contains(word), "rater page leaks {word}: {}", page.body);
        }
        // The token is no admin credential, in any form.
        let as_cookie = format!("{}={token}", app::api::study::ADMIN_COOKIE);
        for (uri, cookie) in [
            ("/api/admin/studies", None),
            ("/api/admin/studies", Some(as_cookie.as_str())),
            ("/api/admin/study", Some(as_cookie.as_str())),
        ] {
            let r = call(&s.app, form(uri, cookie, &format!("id={}", s.study_id))).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{uri}: {}", r.body);
        }
        for file in ["responses.csv", "responses.json", "results.csv", "results.json"] {
            let uri = format!("/admin/studies/{}/export/{file}", s.study_id);
            assert_eq!(call(&s.app, get(&uri, Some(&as_cookie))).await.status, StatusCode::FORBIDDEN, "{uri}");
        }
        // Another rater's task is not found for this token; unknown tokens are unknown.
        let other = call(&s.app, form("/api/rate/page", None, &format!("token={}", s.raters[1]))).await;
        let other: serde_json::Value = serde_json::from_str(&other.body).unwrap();
        let sub = serde_json::json!({ "token": token, "submission": {
            "assignment_id": other["task"]["assignment_id"], "ratings": [], "best": 0,
            "client_time_ms": 5, "idempotency_key": "cross-rater-1" } });
        assert_eq!(call(&s.app, json("/api/rate/submit", None, sub)).await.status, StatusCode::NOT_FOUND);
        let r = call(&s.app, form("/api/rate/page", None, "token=not-a-token")).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        // Revoked: 403 at once.
        let rater_id: i64 = sqlx::query_scalar("SELECT rater_id FROM assignments WHERE id = ?")
            .bind(v["task"]["assignment_id"].as_i64().unwrap())
            .fetch_one(&s.db)
            .await
            .unwrap();
        study::raters::revoke(&s.db, s.study_id, rater_id).await.unwrap();
        let r = call(&s.app, form("/api/rate/page", None, &format!("token={token}"))).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert!(r.body.contains("revoked"), "{}", r.body);
    }

    #[tokio::test]
    async fn submissions_are_checked_and_idempotent_over_http() {
        let s = site().await;
        let token = &s.raters[0];
        let page = call(&s.app, form("/api/rate/page", None, &format!("token={token}"))).await;
        let v: serde_json::Value = serde_json::from_str(&page.body).unwrap();
        let task = &v["task"];
        let ids: Vec<i64> =
            task["descriptions"].as_array().unwrap().iter().map(|d| d["id"].as_i64().unwrap()).collect();
        let submit = |ratings: serde_json::Value, best: i64, key: &str| {
            json(
                "/api/rate/submit",
                None,
                serde_json::json!({ "token": token, "submission": {
                "assignment_id": task["assignment_id"], "ratings": ratings, "best": best,
                "client_time_ms": 2500, "idempotency_key": key } }),
            )
        };
        let bad = [
            (serde_json::json!([[ids[0], 6], [ids[1], 3]]), ids[0], "outside the 1-5 scale"),
            (serde_json::json!([[ids[0], 5], [424242, 3]]), ids[0], "not one of this task's descriptions"),
            (serde_json::json!([[ids[0], 5], [ids[1], 3]]), 424242, "best pick 424242"),
            (serde_json::json!([[ids[0], 5]]), ids[0], "has no rating"),
        ];
        for (ratings, best, expect) in bad {
            let r = call(&s.app, submit(ratings, best, "bad-answer-1")).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
            assert!(r.body.contains(expect), "{expect}: {}", r.body);
        }
        let good = serde_json::json!([[ids[0], 4], [ids[1], 2]]);
        let first = call(&s.app, submit(good.clone(), ids[0], "good-answer-1")).await;
        assert_eq!(first.status, StatusCode::OK, "{}", first.body);
        let retry = call(&s.app, submit(good.clone(), ids[0], "good-answer-1")).await;
        let (a, b): (serde_json::Value, serde_json::Value) =
            (serde_json::from_str(&first.body).unwrap(), serde_json::from_str(&retry.body).unwrap());
        assert_eq!(
            (a["response_id"].clone(), b["duplicate"].clone()),
            (b["response_id"].clone(), serde_json::json!(true))
        );
        // The acknowledgement carries the rater's next task (the other neuron), method-blind, and
        // the rater's page resumes exactly that task.
        let next = &a["next"];
        assert_ne!(next["assignment_id"], task["assignment_id"]);
        assert_eq!(
            (next["number"].as_i64(), next["descriptions"].as_array().map(Vec::len)),
            (Some(2), Some(2)),
            "{}",
            first.body
        );
        for word in ["\"method\"", "dnd\"", "\"milan\"", "study_method", "label_id"] {
            assert!(!first.body.contains(word), "acknowledgement leaks {word}: {}", first.body);
        }
        assert_eq!(b["next"]["assignment_id"], next["assignment_id"], "a retry announces the same next task");
        let resumed = call(&s.app, form("/api/rate/page", None, &format!("token={token}"))).await;
        let resumed: serde_json::Value = serde_json::from_str(&resumed.body).unwrap();
        assert_eq!(resumed["task"]["assignment_id"], next["assignment_id"]);
        let again = call(&s.app, submit(good, ids[0], "another-answer-2")).await;
        assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM responses").fetch_one(&s.db).await.unwrap();
        assert_eq!(n, 1);
    }

    #[tokio::test]
    async fn admin_calls_need_the_session_and_its_csrf_token() {
        let s = site().await;
        let wrong =
            call(&s.app, json("/api/admin/login", None, serde_json::json!({ "secret": "guess-guess-guess" }))).await;
        assert_eq!(wrong.status, StatusCode::FORBIDDEN);
        assert!(wrong.headers.get("set-cookie").is_none());
        let (cookie, csrf) = login(&s.app).await;
        let status = |csrf: &str| {
            json(
                "/api/admin/study-status",
                Some(&cookie),
                serde_json::json!({ "csrf": csrf, "id": s.study_id, "status": "closed" }),
            )
        };
        assert_eq!(call(&s.app, status("forged-token-000000")).await.status, StatusCode::FORBIDDEN);
        // A cross-site HTML form can only send form encodings, which state-changing calls refuse.
        let r = call(
            &s.app,
            form("/api/admin/study-status", Some(&cookie), &format!("csrf={csrf}&id={}&status=closed", s.study_id)),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        assert!(r.body.contains("could not be read"), "{}", r.body);
        let open: String = sqlx::query_scalar("SELECT status FROM studies").fetch_one(&s.db).await.unwrap();
        assert_eq!(open, "open", "nothing changed so far");
        assert_eq!(call(&s.app, status(&csrf)).await.status, StatusCode::OK);
        let closed: String = sqlx::query_scalar("SELECT status FROM studies").fetch_one(&s.db).await.unwrap();
        assert_eq!(closed, "closed");
        // Exports with the session; unknown studies and files are 404.
        let csv = call(&s.app, get(&format!("/admin/studies/{}/export/results.csv", s.study_id), Some(&cookie))).await;
        assert_eq!(csv.status, StatusCode::OK);
        assert!(csv.body.starts_with("layer,method,source,mean_rating"), "{}", csv.body);
        assert_eq!(
            call(&s.app, get("/admin/studies/999/export/results.csv", Some(&cookie))).await.status,
            StatusCode::NOT_FOUND
        );
        let r = call(&s.app, get(&format!("/admin/studies/{}/export/secrets.txt", s.study_id), Some(&cookie))).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        // Logging out ends the session.
        let out = call(&s.app, json("/api/admin/logout", Some(&cookie), serde_json::json!({ "csrf": csrf }))).await;
        assert_eq!(out.status, StatusCode::OK);
        assert_eq!(call(&s.app, form("/api/admin/studies", Some(&cookie), "")).await.status, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn the_open_link_gives_a_browser_one_token() {
        let s = site().await;
        let link = study::raters::open_link(&s.db, s.study_id).await.unwrap();
        let first = call(&s.app, get(&format!("/join/{link}"), None)).await;
        assert!(first.status.is_redirection(), "{:?}", first.status);
        let to = first.headers.get("location").unwrap().to_str().unwrap().to_string();
        assert!(to.starts_with("/rate/"), "{to}");
        let cookie = first.headers.get("set-cookie").unwrap().to_str().unwrap().split(';').next().unwrap().to_string();
        let again = call(&s.app, get(&format!("/join/{link}"), Some(&cookie))).await;
        assert_eq!(again.headers.get("location").unwrap().to_str().unwrap(), to, "same browser, same token");
        assert_eq!(call(&s.app, get("/join/not-a-link", None)).await.status, StatusCode::NOT_FOUND);
        let raters: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM raters WHERE origin = 'open_link'")
            .fetch_one(&s.db)
            .await
            .unwrap();
        assert_eq!(raters, 1);
    }

    /// Every server function, with and without an admin session, called with arguments that
    /// cannot be right (none, repeated, mistyped, out of range, not the encoding): the caller's
    /// mistake is never answered with a 5xx.
    #[tokio::test]
    async fn no_server_function_answers_5xx_to_malformed_arguments() {
        let s = site().await;
        let (cookie, csrf) = login(&s.app).await;
        let paths: Vec<(&str, axum::http::Method)> = leptos::server_fn::axum::server_fn_paths().collect();
        assert!(paths.len() >= 20, "the walk must reach every server function: {paths:?}");
        // Field names the server functions take, each given a value of the wrong type.
        let fields = [
            "id", "study_id", "unit", "page", "units", "count", "limit", "rater_id", "status", "token", "model",
            "layer", "query", "secret", "summary", "scoring", "excluded", "after",
        ];
        let mistyped_form: String = fields.iter().map(|f| format!("{f}=abc")).collect::<Vec<_>>().join("&");
        let mistyped_json: serde_json::Value =
            fields.iter().map(|f| (f.to_string(), serde_json::json!({ "nested": [1] }))).collect();
        let forms = [
            String::new(),
            "id=1&id=2&token=a&token=b&query=a&query=b".into(),
            mistyped_form,
            format!("csrf={csrf}&id=99999999999999999999"),
            format!("csrf={csrf}&id=-1&unit=-1&page=-1"),
            "%zz=%%&=&&".into(),
            format!("model=toy&query={}", "a".repeat(300)),
        ];
        let jsons = [
            String::new(),
            "not json".into(),
            "[]".into(),
            "null".into(),
            "{\"id\": 1, \"id\": 2}".into(),
            mistyped_json.to_string(),
            serde_json::json!({ "csrf": csrf, "id": -1, "study_id": -1, "count": -1 }).to_string(),
        ];
        let mut failures = Vec::new();
        for (path, method) in &paths {
            for session in [None, Some(cookie.as_str())] {
                let mut requests = Vec::new();
                for body in &forms {
                    requests.push(if method == axum::http::Method::GET {
                        get(&format!("{path}?{body}"), session)
                    } else {
                        form(path, session, body)
                    });
                }
                for body in &jsons {
                    let mut req = Request::post(*path).header("content-type", "application/json");
                    if let Some(c) = session {
                        req = req.header("cookie", c);
                    }
                    requests.push(req.body(Body::from(body.clone())).unwrap());
                }
                for req in requests {
                    let what = format!("{} {} (session: {})", req.method(), req.uri(), session.is_some());
                    let r = call(&s.app, req).await;
                    if r.status.is_server_error() {
                        failures.push(format!("{what}: {} {}", r.status, r.body));
                    }
                }
            }
        }
        assert!(failures.is_empty(), "{} answers were 5xx:\n{}", failures.len(), failures.join("\n"));
        // What the caller reads: a 400 that names the problem and what was sent.
        for (body, says) in [
            ("id=abc", "invalid digit found in string; fields sent: id"),
            ("", "missing field `id`; no fields"),
            ("id=1&id=2", "Multiple values for one key: \\\"id\\\""),
        ] {
            let r = call(&s.app, form("/api/jobs/get", None, body)).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
            assert!(r.body.contains(says), "{body}: {}", r.body);
        }
        let search =
            paths.iter().find(|(p, _)| p.contains("search_concepts")).expect("concept search is a server function").0;
        let r = call(&s.app, form(search, None, &format!("model=toy&query={}", "a".repeat(300)))).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        assert!(r.body.contains("longer than 200 characters"), "{}", r.body);
    }

    /// While the site's study is open, a visitor without an admin session cannot learn which
    /// method wrote a description of its layer (block5): no labels on the grid or the neuron
    /// page, a filter that ignores label texts, a refused export. An admin sees everything,
    /// and the admin's pages never reach the cache. Closing the study shows the labels again
    /// (cached pages follow, migration 0008). block3, not in the study, is untouched.
    #[tokio::test]
    async fn an_open_study_hides_its_layers_labels_from_the_public() {
        let s = site().await;
        let text = |r: &Reply| r.body.clone();
        let public = |uri: &'static str| {
            let app = s.app.clone();
            async move { call(&app, get(uri, None)).await }
        };
        let label = fixture::label("milan", "block5", 0);
        let grid = public("/m/toy/block5").await;
        assert_eq!(grid.status, StatusCode::OK);
        assert!(
            grid.body.contains("id=\"blinded\"") && grid.body.contains("hidden while a rating study"),
            "{}",
            text(&grid)
        );
        assert!(!grid.body.contains("concept block5-"), "labels leak: {}", text(&grid));
        assert!(!grid.body.contains("/export/toy/block5"), "export links leak");
        let filtered = public("/m/toy/block5?q=milan%20concept").await;
        assert!(filtered.body.contains("0 of 6 neurons"), "the filter looked at hidden labels: {}", text(&filtered));
        let neuron = public("/m/toy/block5/0").await;
        assert!(neuron.body.contains("id=\"blinded\"") && !neuron.body.contains(&label), "{}", text(&neuron));
        let export = public("/export/toy/block5?method=milan&format=json").await;
        assert_eq!(export.status, StatusCode::FORBIDDEN, "{}", export.body);
        assert!(export.body.contains("hidden while a rating study"), "{}", export.body);
        // Server functions answer the same (the hydrated page calls them).
        let paths: Vec<(&str, axum::http::Method)> = leptos::server_fn::axum::server_fn_paths().collect();
        let get_neuron = paths.iter().find(|(p, _)| p.contains("get_neuron") && !p.contains("run")).unwrap().0;
        let call_fn = call(&s.app, form(get_neuron, None, "model=toy&layer=block5&unit=0")).await;
        assert_eq!(call_fn.status, StatusCode::OK, "{}", call_fn.body);
        assert!(!call_fn.body.contains(&label) && call_fn.body.contains("open_studies"), "{}", call_fn.body);
        // A layer outside the study is public as before.
        assert!(public("/m/toy/block3/0").await.body.contains(&fixture::label("milan", "block3", 0)));
        assert_eq!(public("/export/toy/block3?method=milan&format=json").await.status, StatusCode::OK);

        // The admin sees the labels, uncached; the public page after it is still blinded.
        let (cookie, _) = login(&s.app).await;
        let admin = call(&s.app, get("/m/toy/block5/0", Some(&cookie))).await;
        assert!(admin.body.contains(&label) && !admin.body.contains("id=\"blinded\""), "{}", admin.body);
        assert!(admin.headers.get("x-page-cache").is_none(), "an admin page went through the cache");
        let admin_export = call(&s.app, get("/export/toy/block5?method=milan&format=json", Some(&cookie))).await;
        assert_eq!(admin_export.status, StatusCode::OK, "{}", admin_export.body);
        let again = public("/m/toy/block5/0").await;
        assert!(!again.body.contains(&label), "the admin's page was served to the public");
        assert_eq!(again.headers.get("x-page-cache").unwrap(), "hit");

        // Closed: public again, at once (the cached blinded page is not served).
        study::setup::set_status(&s.db, s.study_id, "closed").await.unwrap();
        let after = public("/m/toy/block5/0").await;
        assert!(after.body.contains(&label) && !after.body.contains("id=\"blinded\""), "{}", after.body);
        assert_eq!(public("/export/toy/block5?method=milan&format=json").await.status, StatusCode::OK);
    }
}
