//! Uploads from `/jobs` (admin session and its CSRF token required):
//!
//! - `POST /api/uploads/probe-set`: multipart fields `csrf`, `name` (optional; else the zip's
//!   file name) and `zip`. The zip is unpacked into `<data_dir>/probe_sets/<name>/` and the
//!   usual `register_probe_set` job is queued on that folder.
//! - `POST /api/uploads/model`: fields `csrf`, `name` (optional; else the model's file name),
//!   `model` (the TorchScript `.pt`) and `manifest` (its JSON manifest). Both are saved as
//!   `<data_dir>/models/<name>/<name>.pt` and `<name>.json` (where the loader looks for a
//!   manifest) and `register_model` is queued.
//!
//! Both answer `{"job": id, "name": …, …}`; refusals are plain text naming the problem (the
//! limit's config key for a 413). The CSRF token comes in the `x-csrf-token` header or as a
//! field before the files, so nothing is written for a forged form. Bodies stream to a staging
//! folder that is removed on any failure; these routes sit outside the server-wide body limit
//! and request timeout, which are sized for ordinary requests, and apply `uploads.*` instead.

mod staging;
pub mod unzip;

use app::api::study::{cookie_value, ADMIN_COOKIE};
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use staging::{stream_field, text_field, Staging};
use std::path::{Path, PathBuf};
use std::time::Duration;
use studio::config::{Config, UploadsSection};
use studio::db::Pool;
use studio::jobs::JobSignals;
use studio::jobs::{queue, RegisterRequest};

/// Largest manifest accepted (inline class names of a 21k-class model fit easily).
const MAX_MANIFEST_BYTES: u64 = 16 << 20;
/// Room for the form's own fields and multipart framing around the files.
const FORM_SLACK: u64 = 1 << 20;
/// After a refusal the rest of the body is read and thrown away (up to this much, for this long)
/// so that the client, still sending, gets the answer rather than a reset connection.
const DRAIN_BYTES: u64 = 64 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Internal(String),
}

impl UploadError {
    fn status(&self) -> StatusCode {
        match self {
            UploadError::Forbidden(_) => StatusCode::FORBIDDEN,
            UploadError::Invalid(_) => StatusCode::BAD_REQUEST,
            UploadError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            UploadError::Conflict(_) => StatusCode::CONFLICT,
            UploadError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for UploadError {
    fn into_response(self) -> Response {
        if let UploadError::Internal(e) = &self {
            tracing::error!(error = %e, "upload failed");
        }
        (self.status(), self.to_string()).into_response()
    }
}

fn body_error(e: axum::extract::multipart::MultipartError) -> UploadError {
    UploadError::Invalid(format!("the upload could not be read as a multipart form: {}", e.body_text()))
}

#[derive(Clone)]
struct UploadState {
    db: Pool,
    signals: JobSignals,
    data_dir: PathBuf,
    limits: UploadsSection,
}

pub fn router(config: &Config, db: Pool, signals: JobSignals) -> Router {
    Router::new()
        .route("/api/uploads/probe-set", post(probe_set))
        .route("/api/uploads/model", post(model))
        // The handlers count every byte themselves, against the `uploads` limits.
        .layer(DefaultBodyLimit::disable())
        .with_state(UploadState {
            db,
            signals,
            data_dir: config.storage.data_dir.clone(),
            limits: config.uploads.clone(),
        })
}

/// The admin session of the request (403 without one); checks `csrf` when given.
async fn authorize(s: &UploadState, headers: &HeaderMap, csrf: Option<&str>) -> Result<(), UploadError> {
    study::admin::authorize(&s.db, cookie_value(headers, ADMIN_COOKIE), csrf).await.map(|_| ()).map_err(|e| match e {
        study::StudyError::Db(db) => UploadError::Internal(format!("database error: {db}")),
        other => UploadError::Forbidden(other.to_string()),
    })
}

/// A declared body far over the limit is refused before reading it.
fn check_declared_length(headers: &HeaderMap, max: u64, key: &str) -> Result<(), UploadError> {
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > max + FORM_SLACK + DRAIN_BYTES => {
            Err(UploadError::TooLarge(format!("the upload is {n} bytes, more than {max} (limit `uploads.{key}`)")))
        }
        _ => Ok(()),
    }
}

/// Reads and discards what is left of the body, within [`DRAIN_BYTES`] and [`DRAIN_TIME`].
async fn drain(multipart: &mut Multipart) {
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut read: u64 = 0;
        while let Ok(Some(mut field)) = multipart.next_field().await {
            while let Ok(Some(chunk)) = field.chunk().await {
                read += chunk.len() as u64;
                if read > DRAIN_BYTES {
                    return;
                }
            }
        }
    })
    .await;
}

/// Checks a name given for an upload (or derived from its file name): it becomes a slug in URLs
/// and a folder name.
fn check_name(name: &str, what: &str, reserved: &[&str]) -> Result<String, UploadError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if !ok {
        return Err(UploadError::Invalid(format!(
            "the {what} name `{name}` is not usable: use 1–64 lower-case letters, digits and `-`, not starting with `-`"
        )));
    }
    if reserved.contains(&name) {
        return Err(UploadError::Conflict(format!(
            "the {what} name `{name}` is reserved for a built-in one; choose another"
        )));
    }
    Ok(name.to_string())
}

/// A name from an uploaded file's name: its stem, lower-cased, other characters as `-`.
fn name_from_file(file_name: &str) -> String {
    let stem = Path::new(file_name).file_stem().map(|s| s.to_string_lossy().to_lowercase()).unwrap_or_default();
    let mut out = String::new();
    for c in stem.chars() {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' };
        if !(c == '-' && (out.is_empty() || out.ends_with('-'))) {
            out.push(c);
        }
    }
    out.trim_end_matches('-').chars().take(64).collect()
}

/// The destination folder, which must not exist yet.
fn fresh_destination(root: &Path, name: &str, what: &str) -> Result<PathBuf, UploadError> {
    let dest = root.join(name);
    if dest.exists() {
        return Err(UploadError::Conflict(format!(
            "a {what} named `{name}` was already uploaded; choose another name"
        )));
    }
    std::fs::create_dir_all(root).map_err(|e| UploadError::Internal(format!("creating {}: {e}", root.display())))?;
    Ok(dest)
}

/// Moves the staged folder to `dest` and queues its registration; on failure `dest` goes too.
async fn place_and_queue(
    s: &UploadState,
    staged: &Path,
    dest: &Path,
    kind: &str,
    registered: &Path,
) -> Result<i64, UploadError> {
    std::fs::rename(staged, dest).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::DirectoryNotEmpty => {
            UploadError::Conflict(format!("{} appeared while uploading; choose another name", dest.display()))
        }
        _ => UploadError::Internal(format!("moving the upload to {}: {e}", dest.display())),
    })?;
    let queued = async {
        let path = std::fs::canonicalize(registered)
            .map_err(|e| UploadError::Internal(format!("{}: {e}", registered.display())))?;
        let request = RegisterRequest { path: path.display().to_string() };
        queue::enqueue_registration(&s.db, kind, &request).await.map_err(|e| match e {
            queue::JobError::Db(db) => UploadError::Internal(format!("database error: {db}")),
            other => UploadError::Invalid(other.to_string()),
        })
    }
    .await;
    match queued {
        Ok(id) => {
            s.signals.changed();
            Ok(id)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(dest);
            Err(e)
        }
    }
}

async fn probe_set(State(s): State<UploadState>, headers: HeaderMap, mut multipart: Multipart) -> Response {
    let result = probe_set_upload(&s, &headers, &mut multipart).await;
    if result.is_err() {
        drain(&mut multipart).await;
    }
    match result {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn probe_set_upload(
    s: &UploadState,
    headers: &HeaderMap,
    multipart: &mut Multipart,
) -> Result<serde_json::Value, UploadError> {
    let header_csrf = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
    authorize(s, headers, header_csrf).await?;
    let max = s.limits.max_zip_bytes;
    check_declared_length(headers, max, "max_zip_bytes")?;
    let mut csrf_checked = header_csrf.is_some();
    let staging = Staging::new(&s.data_dir)?;
    let zip_path = staging.path("upload.zip");
    let (mut name, mut file_name, mut got_zip) = (None::<String>, String::new(), false);
    while let Some(field) = multipart.next_field().await.map_err(body_error)? {
        match field.name().unwrap_or("") {
            "csrf" => {
                let token = text_field(field).await?;
                authorize(s, headers, Some(&token)).await?;
                csrf_checked = true;
            }
            "name" => name = Some(text_field(field).await?.trim().to_string()),
            "zip" => {
                if !csrf_checked {
                    return Err(UploadError::Forbidden(
                        "the CSRF token must come before the file (field `csrf`)".into(),
                    ));
                }
                if got_zip {
                    return Err(UploadError::Invalid("one zip per upload".into()));
                }
                file_name = field.file_name().unwrap_or("").to_string();
                stream_field(field, &zip_path, max, "max_zip_bytes").await?;
                got_zip = true;
            }
            other => {
                return Err(UploadError::Invalid(format!("unexpected form field `{other}` (expected csrf, name, zip)")))
            }
        }
    }
    if !csrf_checked {
        return Err(UploadError::Forbidden("the form has no CSRF token (field `csrf`)".into()));
    }
    if !got_zip {
        return Err(UploadError::Invalid("no zip in the upload (field `zip`)".into()));
    }
    let name = match name.filter(|n| !n.is_empty()) {
        Some(n) => n,
        None => name_from_file(&file_name),
    };
    let name = check_name(&name, "probing set", &[studio::builtin::BUILTIN_SET_SLUG])?;
    let root = s.data_dir.join("probe_sets");
    let dest = fresh_destination(&root, &name, "probing set")?;

    // The set is unpacked inside the staging folder, in a folder already bearing its name,
    // and only moved into place once whole.
    let staged = staging.path(&name);
    let limits = unzip::ZipLimits {
        max_files: s.limits.max_files,
        max_unpacked_bytes: s.limits.max_unpacked_bytes,
        max_ratio: s.limits.max_ratio,
    };
    let unpacked = {
        let (zip_path, staged) = (zip_path.clone(), staged.clone());
        tokio::task::spawn_blocking(move || unzip::unpack(&zip_path, &staged, limits))
            .await
            .map_err(|e| UploadError::Internal(format!("unpacking stopped unexpectedly: {e}")))??
    };
    let _ = std::fs::remove_file(&zip_path);
    let job = place_and_queue(s, &staged, &dest, "register_probe_set", &dest).await?;
    tracing::info!(job, name = %name, images = unpacked.images, "probing-set zip uploaded");
    Ok(serde_json::json!({
        "job": job,
        "name": name,
        "images": unpacked.images,
        "descriptions": unpacked.descriptions,
        "skipped": unpacked.skipped,
        "bytes": unpacked.bytes,
    }))
}

async fn model(State(s): State<UploadState>, headers: HeaderMap, mut multipart: Multipart) -> Response {
    let result = model_upload(&s, &headers, &mut multipart).await;
    if result.is_err() {
        drain(&mut multipart).await;
    }
    match result {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn model_upload(
    s: &UploadState,
    headers: &HeaderMap,
    multipart: &mut Multipart,
) -> Result<serde_json::Value, UploadError> {
    let header_csrf = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
    authorize(s, headers, header_csrf).await?;
    let max = s.limits.max_model_bytes;
    check_declared_length(headers, max + MAX_MANIFEST_BYTES, "max_model_bytes")?;
    let mut csrf_checked = header_csrf.is_some();
    let staging = Staging::new(&s.data_dir)?;
    let (model_path, manifest_path) = (staging.path("model.pt"), staging.path("manifest.json"));
    let (mut name, mut file_name, mut got_model, mut got_manifest) = (None::<String>, String::new(), false, false);
    while let Some(field) = multipart.next_field().await.map_err(body_error)? {
        let field_name = field.name().unwrap_or("").to_string();
        if matches!(field_name.as_str(), "model" | "manifest") && !csrf_checked {
            return Err(UploadError::Forbidden("the CSRF token must come before the files (field `csrf`)".into()));
        }
        match field_name.as_str() {
            "csrf" => {
                let token = text_field(field).await?;
                authorize(s, headers, Some(&token)).await?;
                csrf_checked = true;
            }
            "name" => name = Some(text_field(field).await?.trim().to_string()),
            "model" if !got_model => {
                file_name = field.file_name().unwrap_or("").to_string();
                stream_field(field, &model_path, max, "max_model_bytes").await?;
                got_model = true;
            }
            "manifest" if !got_manifest => {
                stream_field(field, &manifest_path, MAX_MANIFEST_BYTES, "manifest (16 MiB)").await?;
                got_manifest = true;
            }
            "model" | "manifest" => return Err(UploadError::Invalid(format!("one `{field_name}` file per upload"))),
            other => {
                return Err(UploadError::Invalid(format!(
                    "unexpected form field `{other}` (expected csrf, name, model, manifest)"
                )))
            }
        }
    }
    if !csrf_checked {
        return Err(UploadError::Forbidden("the form has no CSRF token (field `csrf`)".into()));
    }
    if !got_model || !got_manifest {
        return Err(UploadError::Invalid(
            "a model upload takes two files: the TorchScript model (field `model`) and its JSON manifest (field `manifest`)".into(),
        ));
    }
    let name = match name.filter(|n| !n.is_empty()) {
        Some(n) => n,
        None => name_from_file(&file_name),
    };
    let reserved: Vec<&str> = studio::engine::BUILTIN_MODELS.iter().map(|v| v.name()).collect();
    let name = check_name(&name, "model", &reserved)?;

    // TorchScript files are zip archives; anything else cannot load, so say so now.
    let mut magic = [0u8; 4];
    let head = std::fs::File::open(&model_path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic));
    if head.is_err() || magic != *b"PK\x03\x04" {
        return Err(UploadError::Invalid(format!(
            "`{file_name}` is not a TorchScript file (those are zip archives written by torch.jit.save; see tools/export_torchscript.py)"
        )));
    }
    let root = s.data_dir.join("models");
    let dest = fresh_destination(&root, &name, "model")?;
    let text = std::fs::read_to_string(&manifest_path)
        .map_err(|_| UploadError::Invalid("the manifest is not UTF-8 text".into()))?;
    // Validated where it will live, so a relative `class_names_file` is looked for there (and,
    // not being uploaded, refused with a message saying to inline `class_names`).
    let final_manifest = dest.join(format!("{name}.json"));
    studio::engine::check_manifest(&text, &final_manifest).map_err(|e| {
        let e = e.to_string();
        let hint = if e.contains("class_names_file") {
            " (an upload takes its class names inline, as `class_names`)"
        } else {
            ""
        };
        UploadError::Invalid(format!("the manifest is refused: {e}{hint}"))
    })?;

    let staged = staging.path(&name);
    std::fs::create_dir_all(&staged)
        .map_err(|e| UploadError::Internal(format!("creating {}: {e}", staged.display())))?;
    for (from, to) in [(&model_path, format!("{name}.pt")), (&manifest_path, format!("{name}.json"))] {
        std::fs::rename(from, staged.join(&to)).map_err(|e| UploadError::Internal(format!("staging {to}: {e}")))?;
    }
    let job = place_and_queue(s, &staged, &dest, "register_model", &dest.join(format!("{name}.pt"))).await?;
    tracing::info!(job, name = %name, "model uploaded");
    Ok(serde_json::json!({ "job": job, "name": name }))
}
