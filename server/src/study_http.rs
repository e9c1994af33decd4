//! Study routes outside the Leptos pages: the open link (`/join/{link}` issues a rater token and
//! redirects to the rater's page; the same browser gets its token back on a second visit) and
//! the admin's exports (`/admin/studies/{id}/export/{responses|results}.{csv|json}`).

use app::api::study::ADMIN_COOKIE;
use axum::{
    extract::{Path, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
    routing::get,
    Json, Router,
};
use sqlx::SqlitePool;
use study::StudyError;

/// Cookie remembering the token an open link gave this browser (path-scoped to that link).
const JOIN_COOKIE: &str = "dnd_rater";

pub fn router<S: Clone + Send + Sync + 'static>(db: SqlitePool) -> Router<S> {
    Router::new()
        .route("/join/{link}", get(join))
        .route("/admin/studies/{id}/export/{file}", get(export))
        .with_state(db)
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn error_response(e: StudyError) -> Response {
    if let StudyError::Db(db) = &e {
        tracing::error!(error = %db, "study request failed");
    }
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, e.to_string()).into_response()
}

async fn join(State(db): State<SqlitePool>, Path(link): Path<String>, headers: HeaderMap) -> Response {
    // A returning rater keeps their token (and their progress) unless it was revoked.
    if let Some(token) = cookie(&headers, JOIN_COOKIE) {
        let study_of_link: Option<i64> =
            sqlx::query_scalar("SELECT id FROM studies WHERE open_link_token = ?").bind(&link).fetch_optional(&db).await.ok().flatten();
        if let (Ok(rater), Some(study)) = (study::raters::rater_by_token(&db, token).await, study_of_link) {
            if rater.study_id == study {
                return Redirect::to(&format!("/rate/{token}")).into_response();
            }
        }
    }
    match study::raters::claim_open_link(&db, &link).await {
        Ok(token) => {
            let cookie = format!("{JOIN_COOKIE}={token}; HttpOnly; SameSite=Lax; Path=/join/{link}; Max-Age=2592000");
            ([(header::SET_COOKIE, cookie)], Redirect::to(&format!("/rate/{token}"))).into_response()
        }
        Err(e) => error_response(e),
    }
}

async fn export(State(db): State<SqlitePool>, Path((id, file)): Path<(i64, String)>, headers: HeaderMap) -> Response {
    if let Err(e) = study::admin::authorize(&db, cookie(&headers, ADMIN_COOKIE), None).await {
        return error_response(e);
    }
    let exists: Option<i64> = match sqlx::query_scalar("SELECT id FROM studies WHERE id = ?").bind(id).fetch_optional(&db).await {
        Ok(found) => found,
        Err(e) => return error_response(e.into()),
    };
    if exists.is_none() {
        return error_response(StudyError::NotFound(format!("no study {id}")));
    }
    let attachment = |name: &str| format!("attachment; filename=\"study-{id}-{name}\"");
    let csv = |body: String, name: &str| {
        ([(header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()), (header::CONTENT_DISPOSITION, attachment(name))], body)
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
            "results.json" => {
                let results = study::results::results(&db, id).await?;
                ([(header::CONTENT_DISPOSITION, attachment(&file))], Json(results)).into_response()
            }
            other => {
                return Err(StudyError::NotFound(format!(
                    "no export `{other}`: responses.csv, responses.json, results.csv or results.json"
                )))
            }
        })
    }
    .await;
    result.unwrap_or_else(error_response)
}
