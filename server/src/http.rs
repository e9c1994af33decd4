//! The HTTP surface: Leptos pages and server functions, static files, `/healthz`, `/img/…`, and the
//! cross-cutting layers (request logs, compression, timeouts, body limits).

use app::state::ServerContext;
use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Json, Router};
use leptos::prelude::*;
use leptos_axum::{generate_route_list, LeptosRoutes};
use std::time::Duration;
use studio::config::Config;
use tower_http::{
    compression::CompressionLayer,
    limit::RequestBodyLimitLayer,
    timeout::TimeoutLayer,
    trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer},
};
use tracing::Level;

#[derive(Clone, axum::extract::FromRef)]
pub struct HttpState {
    pub leptos: LeptosOptions,
    pub ctx: ServerContext,
}

pub fn leptos_options(config: &Config) -> LeptosOptions {
    LeptosOptions::builder()
        .output_name(app::BUNDLE_NAME)
        .site_root(config.server.site_root.to_string_lossy().to_string())
        .site_pkg_dir("pkg")
        .site_addr(config.server.bind)
        .build()
}

pub fn router(config: &Config, ctx: ServerContext) -> Router {
    let leptos = leptos_options(config);
    let routes = generate_route_list(app::App);
    let state = HttpState { leptos: leptos.clone(), ctx: ctx.clone() };
    let provide = {
        let ctx = ctx.clone();
        move || {
            provide_context(ctx.clone());
            crate::security::provide_request_nonce();
        }
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/export/{model}/{layer}", get(export_labels))
        .merge(crate::images::router(ctx.db.clone(), config.storage.data_dir.clone()))
        .merge(crate::study_http::router(ctx.db.clone(), config.server.secure_cookies()))
        .merge(crate::job_events::router(ctx.db.clone(), ctx.jobs.clone()))
        .leptos_routes_with_context(&state, routes, provide.clone(), {
            let leptos = leptos.clone();
            move || app::shell(leptos.clone())
        })
        .fallback(leptos_axum::file_and_error_handler_with_context::<HttpState, _>(provide, app::shell))
        .with_state(state)
        .layer(axum::middleware::from_fn(undecodable_arguments_are_bad_requests))
        .layer(RequestBodyLimitLayer::new((config.server.max_body_mib as usize) << 20))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(config.server.request_timeout_secs),
        ))
        // Rendered gallery pages served again while the gallery is unchanged (inside
        // compression, so what clients receive is the same).
        .layer(axum::middleware::from_fn_with_state(
            crate::page_cache::PageCache::new(ctx.db.clone()),
            crate::page_cache::serve,
        ))
        .layer(CompressionLayer::new())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        // Uploads stream gigabytes: outside the body limit and timeout above, with their own limits.
        .merge(crate::uploads::router(config, ctx.db.clone(), ctx.jobs.clone()))
        .layer(axum::middleware::from_fn(crate::security::headers))
}

/// Largest body a server-function call may send (their arguments are small; uploads have their
/// own routes and limits).
const MAX_CALL_BODY: usize = 16 << 20;

/// Server functions answer 500 when their arguments cannot be decoded (wrong encoding, missing,
/// repeated or mistyped fields); that is the caller's mistake, so it becomes a 400 naming the
/// problem and the fields the request sent. Only `/api/` requests are looked at.
async fn undecodable_arguments_are_bad_requests(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if !req.uri().path().starts_with("/api/") {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let Ok(sent) = axum::body::to_bytes(body, MAX_CALL_BODY).await else {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body could not be read in full (a call sends at most {} MiB)", MAX_CALL_BODY >> 20),
        )
            .into_response();
    };
    let query = parts.uri.query().map(str::to_string);
    let res = next.run(axum::extract::Request::from_parts(parts, axum::body::Body::from(sent.clone()))).await;
    if res.status() != StatusCode::INTERNAL_SERVER_ERROR {
        return res;
    }
    let (parts, body) = res.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    // server_fn's own error codes for arguments it could not read.
    let reason = std::str::from_utf8(&bytes)
        .ok()
        .and_then(|b| ["Args|", "MissingArg|", "Deserialization|"].iter().find_map(|prefix| b.strip_prefix(prefix)));
    match reason {
        Some(reason) => {
            let fields = sent_fields(query.as_deref(), &sent);
            let sent =
                if fields.is_empty() { "no fields".to_string() } else { format!("fields sent: {}", fields.join(", ")) };
            let reason = studio::labels::import::excerpt(reason);
            (
                StatusCode::BAD_REQUEST,
                format!("the request's arguments could not be read ({reason}; {sent}); this call takes the arguments its API documents"),
            )
                .into_response()
        }
        None => axum::response::Response::from_parts(parts, axum::body::Body::from(bytes)),
    }
}

/// The first 20 distinct field names of a form-encoded query and body, or the keys of a JSON
/// object body, each bounded and escaped for quoting in an error. Reads at most 64 KiB.
fn sent_fields(query: Option<&str>, body: &[u8]) -> Vec<String> {
    const MAX_FIELDS: usize = 20;
    let head = &body[..body.len().min(64 << 10)];
    let mut names: Vec<String> = Vec::new();
    let mut add = |name: &str| {
        let name = studio::labels::import::excerpt(name);
        if names.len() < MAX_FIELDS && !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    };
    match serde_json::from_slice::<serde_json::Value>(head) {
        Ok(serde_json::Value::Object(o)) => o.keys().for_each(|k| add(k)),
        _ => {
            let text = String::from_utf8_lossy(head);
            for pair in query.unwrap_or("").split('&').chain(text.split('&')).take(1000) {
                add(pair.split('=').next().unwrap_or(""));
            }
        }
    }
    names
}

/// Liveness and readiness: answers 200 with `{"status":"ok"}` when the database answers.
async fn healthz(State(state): State<HttpState>) -> impl IntoResponse {
    match studio::db::ping(&state.ctx.db).await {
        Ok(()) => (StatusCode::OK, Json(serde_json::json!({ "status": "ok" }))),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "error", "error": format!("database: {e}") })),
        ),
    }
}

#[derive(serde::Deserialize)]
struct ExportQuery {
    method: String,
    #[serde(default)]
    source: String,
    /// `json` (default) or a CSV format: clip-dissect, milan, netdissect-tally, dnd-top3, dnd.
    #[serde(default)]
    format: Option<String>,
}

/// `GET /export/{model}/{layer}?method=…&format=…`: one method's current labels of a layer.
async fn export_labels(
    State(state): State<HttpState>,
    axum::extract::Path((model, layer)): axum::extract::Path<(String, String)>,
    axum::extract::Query(q): axum::extract::Query<ExportQuery>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::http::header;
    use studio::labels::export;
    // Not while an open study rates the layer, unless the caller is an admin (module
    // `studio::gallery::blinding`).
    let cookie = app::api::study::cookie_value(&headers, app::api::study::ADMIN_COOKIE);
    let blinded = async {
        let audience = state.ctx.audience(cookie).await?;
        let mut conn = state.ctx.db.acquire().await?;
        studio::gallery::blinding::of_layer_named(&mut conn, &model, &layer, audience).await
    }
    .await;
    match blinded {
        Ok(None) => {}
        Ok(Some(b)) => return (StatusCode::FORBIDDEN, b.notice()).into_response(),
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("export failed: {e}")).into_response(),
    }
    let format = q.format.as_deref();
    match export::layer_file(&state.ctx.db, &model, &layer, &q.method, &q.source, format).await {
        Ok(file) => {
            let mut resp = (
                [
                    (header::CONTENT_TYPE, file.content_type.to_string()),
                    (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{}\"", file.file_name)),
                ],
                file.bytes,
            )
                .into_response();
            if let Some(v) = file.substitutes.and_then(|s| axum::http::HeaderValue::from_str(&s).ok()) {
                resp.headers_mut().insert("x-dnd-provenance", v);
            }
            resp
        }
        Err(e @ export::ExportError::BadRequest(_)) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        Err(e @ export::ExportError::NotFound(_)) => (StatusCode::NOT_FOUND, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    /// The comparison view says how to get CLIP-Dissect labels where a neuron has none (the
    /// fixture's CLIP-Dissect labels cover the even units only).
    #[tokio::test]
    async fn the_neuron_page_says_how_to_get_a_missing_clip_dissect_label() {
        use tower::ServiceExt;
        let s = crate::study_http::tests::site().await;
        let body = |uri: &'static str| {
            let app = s.app.clone();
            async move {
                let req = axum::http::Request::get(uri).body(axum::body::Body::empty()).unwrap();
                let res = app.oneshot(req).await.unwrap();
                assert_eq!(res.status(), axum::http::StatusCode::OK, "{uri}");
                String::from_utf8(axum::body::to_bytes(res.into_body(), 1 << 24).await.unwrap().to_vec()).unwrap()
            }
        };
        let note = "configure services.clip_torchscript and services.clip_tokenizer and run `dnd clip-dissect`, \
                    or import a CLIP-Dissect CSV";
        let odd = body("/m/toy/block3/1").await;
        assert!(odd.contains("id=\"clip-dissect-note\"") && odd.contains(note), "{odd}");
        let even = body("/m/toy/block3/2").await;
        assert!(!even.contains("clip-dissect-note"), "a labelled neuron has no note");
        assert!(!body("/m/toy/block3").await.contains("clip-dissect-note"), "the layer has CLIP-Dissect labels");
    }

    /// A layer without DnD runs shows, per unit, the recording's top probing image and its
    /// activation, and a neuron page its top ten (the fixture's image source stands for the recording: unit u's top image is
    /// the u-th image by hash, at activation 10).
    #[tokio::test]
    async fn units_without_a_run_show_the_recordings_top_image() {
        use tower::ServiceExt;
        let s = crate::study_http::tests::site().await;
        let req = axum::http::Request::get("/m/toy/block3").body(axum::body::Body::empty()).unwrap();
        let res = s.app.clone().oneshot(req).await.unwrap();
        let grid = String::from_utf8(axum::body::to_bytes(res.into_body(), 1 << 24).await.unwrap().to_vec()).unwrap();
        assert_eq!(grid.matches("data-from=\"recording\"").count(), 8, "{grid}");
        assert_eq!(grid.matches(">act 10.00<").count(), 8, "{grid}");
        let shas: Vec<String> =
            sqlx::query_scalar("SELECT sha256 FROM images ORDER BY sha256").fetch_all(&s.db).await.unwrap();
        assert!(grid.contains(&format!("/img/{}?w=96", shas[3])), "unit 3's top image");
        assert!(!grid.contains("data-from=\"run\""));
        // The neuron page shows its ten top probing images in place of a run's D_top.
        let req = axum::http::Request::get("/m/toy/block3/3").body(axum::body::Body::empty()).unwrap();
        let res = s.app.clone().oneshot(req).await.unwrap();
        let page = String::from_utf8(axum::body::to_bytes(res.into_body(), 1 << 24).await.unwrap().to_vec()).unwrap();
        assert!(page.contains("id=\"recorded-top-images\""), "{page}");
        assert_eq!(page.matches(">act 10.000<").count(), 1, "the best image, at activation 10");
        assert!(page.contains(&format!("/img/{}?w=160", shas[3])) && page.contains(&format!("/img/{}?w=160", shas[0])));
    }
}
