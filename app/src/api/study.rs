//! The rating study's server functions. Rater functions take the rater's token (from the link)
//! and only ever see that rater's tasks; admin functions need the admin session cookie, and the
//! state-changing ones also the session's CSRF token and a JSON body (which a cross-site form
//! cannot send). Failures answer with the study error's HTTP status (400/403/404/409).

use leptos::prelude::*;
use leptos::server_fn::codec::Json;
use serde::{Deserialize, Serialize};
pub use study::types::*;

/// Name of the admin session cookie.
pub const ADMIN_COOKIE: &str = "dnd_admin";

/// What the admin pages need to know about the visitor's session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdminInfo {
    /// Echoed by every state-changing admin call.
    pub csrf: String,
}

/// The value of cookie `name` in a request's headers (shared with the server's study routes).
#[cfg(feature = "ssr")]
pub fn cookie_value<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The admin session guard and cookie, for other areas' admin-only server functions.
#[cfg(feature = "ssr")]
pub(crate) use guard::{admin as admin_guard, admin_cookie};

#[cfg(feature = "ssr")]
mod guard {
    use leptos::prelude::*;
    use study::StudyError;

    /// Turns a study error into a server-function error with the matching HTTP status.
    pub fn fail(e: StudyError) -> ServerFnError {
        if let Some(resp) = use_context::<leptos_axum::ResponseOptions>() {
            resp.set_status(http::StatusCode::from_u16(e.status()).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR));
        }
        if let StudyError::Db(db) = &e {
            tracing::error!(error = %db, "study database query failed");
        }
        ServerFnError::new(e.to_string())
    }

    /// The admin cookie of this request, if any.
    pub async fn admin_cookie() -> Option<String> {
        let headers: http::HeaderMap = leptos_axum::extract().await.ok()?;
        super::cookie_value(&headers, super::ADMIN_COOKIE).map(str::to_string)
    }

    /// The admin session (403 without one); with `csrf`, also checks the CSRF token.
    pub async fn admin(csrf: Option<&str>) -> Result<(studio::db::Pool, study::admin::AdminSession), ServerFnError> {
        let ctx = crate::state::server_context()?;
        let cookie = admin_cookie().await;
        let session = study::admin::authorize(&ctx.db, cookie.as_deref(), csrf).await.map_err(fail)?;
        Ok((ctx.db, session))
    }

    /// Sets a cookie, marked `Secure` when the server is reached over HTTPS.
    pub fn set_cookie(value: &str) {
        let secure = crate::state::server_context().is_ok_and(|c| c.secure_cookies);
        let value = if secure { format!("{value}; Secure") } else { value.to_string() };
        set_header(http::header::SET_COOKIE, &value);
    }

    pub fn set_header(name: http::HeaderName, value: &str) {
        if let Some(resp) = use_context::<leptos_axum::ResponseOptions>() {
            if let Ok(v) = http::HeaderValue::from_str(value) {
                resp.append_header(name, v);
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Raters
// ------------------------------------------------------------------------------------------

/// The rater's page: study, instructions, progress and the current task (on first load and
/// when resuming; after that each acknowledgement brings the next task).
#[server(prefix = "/api", endpoint = "rate/page")]
pub async fn load_rater_page(token: String) -> Result<RaterPage, ServerFnError> {
    let queue = crate::state::server_context()?.submissions;
    queue.page(&token).await.map_err(guard::fail)
}

/// Submits one task; acknowledged only once stored, with the rater's next task.
#[server(prefix = "/api", endpoint = "rate/submit", input = Json)]
pub async fn submit_task(token: String, submission: study::types::Submission) -> Result<SubmitAck, ServerFnError> {
    let queue = crate::state::server_context()?.submissions;
    queue.submit(&token, &submission).await.map_err(guard::fail)
}

#[server(prefix = "/api", endpoint = "rate/worker", input = Json)]
pub async fn set_worker_id(token: String, worker_id: String) -> Result<(), ServerFnError> {
    let db = crate::state::server_context()?.db;
    study::raters::set_worker_id(&db, &token, &worker_id).await.map_err(guard::fail)
}

// ------------------------------------------------------------------------------------------
// Admin
// ------------------------------------------------------------------------------------------

/// The visitor's admin session, or `None` (then the admin pages show the login form).
#[server(prefix = "/api", endpoint = "admin/session")]
pub async fn admin_session() -> Result<Option<AdminInfo>, ServerFnError> {
    let db = crate::state::server_context()?.db;
    let Some(cookie) = guard::admin_cookie().await else { return Ok(None) };
    let session = study::admin::session(&db, &cookie).await.map_err(guard::fail)?;
    Ok(session.map(|s| AdminInfo { csrf: s.csrf_token }))
}

#[server(prefix = "/api", endpoint = "admin/login", input = Json)]
pub async fn admin_login(secret: String) -> Result<AdminInfo, ServerFnError> {
    let ctx = crate::state::server_context()?;
    let parts = use_context::<http::request::Parts>();
    let agent = parts
        .as_ref()
        .and_then(|p| p.headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_string));
    let client = parts
        .as_ref()
        .and_then(|p| p.extensions.get::<crate::state::ClientAddr>().map(|c| c.0.clone()))
        .unwrap_or_default();
    let now = std::time::Instant::now();
    if let Err(retry_after) = ctx.login_limiter.check(&client, now) {
        guard::set_header(http::header::RETRY_AFTER, &retry_after.as_secs().max(1).to_string());
        return Err(guard::fail(study::StudyError::TooManyAttempts { retry_after }));
    }
    let (cookie, csrf) = match study::admin::login(&ctx.db, &ctx.admin_secret_digest, &secret, agent.as_deref()).await {
        Ok(ok) => ok,
        Err(e) => {
            if matches!(e, study::StudyError::Forbidden(_)) {
                ctx.login_limiter.failed(&client, now);
            }
            return Err(guard::fail(e));
        }
    };
    ctx.login_limiter.succeeded(&client);
    // HttpOnly: scripts never see it; SameSite=Strict: other sites cannot make the browser send it.
    guard::set_cookie(&format!(
        "{ADMIN_COOKIE}={cookie}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        study::admin::SESSION_HOURS * 3600
    ));
    Ok(AdminInfo { csrf })
}

#[server(prefix = "/api", endpoint = "admin/logout", input = Json)]
pub async fn admin_logout(csrf: String) -> Result<(), ServerFnError> {
    let (db, _) = guard::admin(Some(&csrf)).await?;
    if let Some(cookie) = guard::admin_cookie().await {
        study::admin::logout(&db, &cookie).await.map_err(guard::fail)?;
    }
    guard::set_cookie(&format!("{ADMIN_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"));
    Ok(())
}

#[server(prefix = "/api", endpoint = "admin/studies")]
pub async fn list_studies() -> Result<Vec<StudySummary>, ServerFnError> {
    let (db, _) = guard::admin(None).await?;
    study::setup::list_studies(&db).await.map_err(guard::fail)
}

/// Models, and for `model` (or the first model) its layers with what each method labelled.
#[server(prefix = "/api", endpoint = "admin/study-options")]
pub async fn study_form_options(model: Option<String>) -> Result<NewStudyOptions, ServerFnError> {
    let (db, _) = guard::admin(None).await?;
    study::setup::form_options(&db, model).await.map_err(guard::fail)
}

#[server(prefix = "/api", endpoint = "admin/create-study", input = Json)]
pub async fn create_study(csrf: String, study: NewStudy) -> Result<i64, ServerFnError> {
    let (db, _) = guard::admin(Some(&csrf)).await?;
    let images = crate::state::server_context()?.top_images;
    study::setup::create_study(&db, images.as_ref(), &study).await.map_err(guard::fail)
}

/// `None` when there is no such study (the page answers 404).
#[server(prefix = "/api", endpoint = "admin/study")]
pub async fn load_study(id: i64) -> Result<Option<StudyDetail>, ServerFnError> {
    let (db, _) = guard::admin(None).await?;
    study::setup::study_detail(&db, id).await.map_err(guard::fail)
}

/// `open` or `closed`.
#[server(prefix = "/api", endpoint = "admin/study-status", input = Json)]
pub async fn set_study_status(csrf: String, id: i64, status: String) -> Result<(), ServerFnError> {
    let (db, _) = guard::admin(Some(&csrf)).await?;
    study::setup::set_status(&db, id, &status).await.map_err(guard::fail)
}

/// New per-rater tokens (shown once; build links as `/rate/{token}`).
#[server(prefix = "/api", endpoint = "admin/invite", input = Json)]
pub async fn invite_raters(csrf: String, id: i64, count: i64, note: String) -> Result<Vec<String>, ServerFnError> {
    let (db, _) = guard::admin(Some(&csrf)).await?;
    study::raters::invite(&db, id, count.clamp(0, 1000) as usize, &note).await.map_err(guard::fail)
}

/// The study's open link token (created on first call; links are `/join/{token}`).
#[server(prefix = "/api", endpoint = "admin/open-link", input = Json)]
pub async fn create_open_link(csrf: String, id: i64) -> Result<String, ServerFnError> {
    let (db, _) = guard::admin(Some(&csrf)).await?;
    study::raters::open_link(&db, id).await.map_err(guard::fail)
}

#[server(prefix = "/api", endpoint = "admin/revoke", input = Json)]
pub async fn revoke_rater(csrf: String, id: i64, rater: i64) -> Result<(), ServerFnError> {
    let (db, _) = guard::admin(Some(&csrf)).await?;
    study::raters::revoke(&db, id, rater).await.map_err(guard::fail)
}

/// Excludes a rater from the results (`reason` given) or includes them again (`None`).
#[server(prefix = "/api", endpoint = "admin/exclude", input = Json)]
pub async fn exclude_rater(csrf: String, id: i64, rater: i64, reason: Option<String>) -> Result<(), ServerFnError> {
    let (db, _) = guard::admin(Some(&csrf)).await?;
    let reason = reason.map(|r| if r.trim().is_empty() { "excluded by the admin".to_string() } else { r });
    study::raters::set_excluded(&db, id, rater, reason.as_deref()).await.map_err(guard::fail)
}
