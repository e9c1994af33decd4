//! `GET /img/{sha256}?crop=x0,y0,x1,y1&w=96|160|320|full`: any registered image by its content
//! hash, optionally cropped (source pixels, `x1`/`y1` exclusive, as in the database) and shrunk to
//! one of a few widths, as JPEG.
//!
//! The file is found through `images.stored_path` (relative paths are inside the data folder),
//! else through every probing set holding the image (`probe_sets.root_path` +
//! `probe_set_images.rel_path`); its bytes must still hash to the requested sha256. Images are
//! decoded the way the engine decodes them (transparency composited onto the engine's grey), so a
//! crop shows exactly the region the model saw. Each (sha256, crop, width) is generated once and
//! kept under `<data_dir>/thumbs/`; the URL names the content, so responses are cacheable forever.
//! Only a 64-digit hex sha256 is accepted in the path: no file name ever comes from the request.
//!
//! `GET /heatmap/{map_sha256}?w=…`: the activation-map overlay of a D_top image ([`heatmap`]).

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use studio::db::Pool;
use tokio::sync::Semaphore;

mod heatmap;

/// Thumbnail widths a client may ask for (`w=`); `full` (or no `w`) keeps the source width.
pub const WIDTHS: [u32; 3] = [96, 160, 320];
/// Bumped when the encoding changes, so old cached files and ETags are not reused.
const CACHE_VERSION: u32 = 1;
const JPEG_QUALITY: u8 = 85;
const CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

struct Service {
    db: Pool,
    data_dir: PathBuf,
    /// Bounds how many images are decoded at once (a gallery page asks for dozens together).
    workers: Semaphore,
}

/// The image routes, to merge into the application's router.
pub fn router<S: Clone + Send + Sync + 'static>(db: Pool, data_dir: PathBuf) -> Router<S> {
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2);
    let service = Arc::new(Service { db, data_dir, workers: Semaphore::new(workers) });
    Router::new()
        .route("/img/{sha256}", get(serve_image))
        .route("/heatmap/{map_sha256}", get(heatmap::serve_heatmap))
        .with_state(service)
}

#[derive(serde::Deserialize)]
struct ImageQuery {
    crop: Option<String>,
    w: Option<String>,
}

/// A crop box in source pixels, `x1`/`y1` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Crop {
    x0: u32,
    y0: u32,
    x1: u32,
    y1: u32,
}

impl Crop {
    fn fits(&self, width: u32, height: u32) -> bool {
        self.x1 <= width && self.y1 <= height
    }
}

/// One variant of one image: what the cache file and the ETag are keyed by.
struct Variant {
    sha256: String,
    crop: Option<Crop>,
    width: Option<u32>,
}

impl Variant {
    fn key(&self) -> String {
        let crop = self.crop.map(|c| format!("{}-{}-{}-{}", c.x0, c.y0, c.x1, c.y1)).unwrap_or_else(|| "whole".into());
        let width = self.width.map(|w| w.to_string()).unwrap_or_else(|| "full".into());
        format!("{}_{crop}_w{width}_v{CACHE_VERSION}", self.sha256)
    }

    fn etag(&self) -> String {
        format!("\"{}\"", self.key())
    }

    /// `<data_dir>/thumbs/<first two hex digits>/<key>.jpg`.
    fn cache_path(&self, data_dir: &Path) -> PathBuf {
        data_dir.join("thumbs").join(&self.sha256[..2]).join(format!("{}.jpg", self.key()))
    }
}

fn parse_sha256(s: &str) -> Result<String, String> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err("the image must be named by its sha256: 64 hexadecimal digits".to_string())
    }
}

fn parse_width(w: Option<&str>) -> Result<Option<u32>, String> {
    match w {
        None | Some("full") => Ok(None),
        Some(v) => match v.parse::<u32>() {
            Ok(n) if WIDTHS.contains(&n) => Ok(Some(n)),
            _ => Err(format!("w=`{v}` is not an allowed width (96, 160, 320 or full)")),
        },
    }
}

fn parse_crop(c: Option<&str>) -> Result<Option<Crop>, String> {
    let Some(text) = c else { return Ok(None) };
    let bad = || format!("crop=`{text}` is not a crop box: expected x0,y0,x1,y1 in pixels with x1 > x0 and y1 > y0");
    let parts: Vec<u32> =
        text.split(',').map(|p| p.trim().parse::<u32>()).collect::<Result<_, _>>().map_err(|_| bad())?;
    let [x0, y0, x1, y1] = parts[..] else { return Err(bad()) };
    if x1 <= x0 || y1 <= y0 {
        return Err(bad());
    }
    Ok(Some(Crop { x0, y0, x1, y1 }))
}

fn problem(status: StatusCode, message: String) -> Response {
    // An unknown hash may become known later: never cache an error.
    (status, [(header::CACHE_CONTROL, "no-store")], message).into_response()
}

fn image_response(variant: &Variant, bytes: Vec<u8>) -> Response {
    let mut response = bytes.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(CACHE_CONTROL));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if let Ok(etag) = HeaderValue::from_str(&variant.etag()) {
        h.insert(header::ETAG, etag);
    }
    response
}

fn not_modified(variant: &Variant) -> Response {
    let mut response = StatusCode::NOT_MODIFIED.into_response();
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(CACHE_CONTROL));
    if let Ok(etag) = HeaderValue::from_str(&variant.etag()) {
        h.insert(header::ETAG, etag);
    }
    response
}

async fn serve_image(
    State(service): State<Arc<Service>>,
    UrlPath(sha256): UrlPath<String>,
    Query(q): Query<ImageQuery>,
    headers: HeaderMap,
) -> Response {
    let parsed = parse_sha256(&sha256).and_then(|sha256| {
        Ok(Variant { sha256, crop: parse_crop(q.crop.as_deref())?, width: parse_width(q.w.as_deref())? })
    });
    let variant = match parsed {
        Ok(v) => v,
        Err(message) => return problem(StatusCode::BAD_REQUEST, message),
    };
    let etag = variant.etag();
    let revalidating = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if revalidating {
        return not_modified(&variant);
    }
    let cached = variant.cache_path(&service.data_dir);
    if let Ok(bytes) = tokio::fs::read(&cached).await {
        return image_response(&variant, bytes);
    }

    let stored = match studio::gallery::queries::stored_image(&service.db, &variant.sha256, &service.data_dir).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "image lookup failed");
            return problem(StatusCode::INTERNAL_SERVER_ERROR, format!("database error: {e}"));
        }
    };
    let Some(stored) = stored else {
        return problem(StatusCode::NOT_FOUND, format!("no image with sha256 {}", variant.sha256));
    };
    if let Some(c) = variant.crop {
        if !c.fits(stored.width, stored.height) {
            return problem(StatusCode::BAD_REQUEST, crop_outside(c, stored.width, stored.height));
        }
    }
    let candidates = stored.files;

    let Ok(_permit) = service.workers.acquire().await else {
        return problem(StatusCode::SERVICE_UNAVAILABLE, "shutting down".into());
    };
    let job = {
        let sha256 = variant.sha256.clone();
        let (crop, width) = (variant.crop, variant.width);
        move || render(&sha256, &candidates, crop, width, &cached)
    };
    match tokio::task::spawn_blocking(job).await {
        Ok(Ok(bytes)) => image_response(&variant, bytes),
        Ok(Err(RenderError::Missing)) => problem(
            StatusCode::NOT_FOUND,
            format!("image {} is registered but its file is no longer on the server", variant.sha256),
        ),
        Ok(Err(RenderError::CropOutside(c, w, h))) => problem(StatusCode::BAD_REQUEST, crop_outside(c, w, h)),
        Ok(Err(RenderError::Failed(message))) => {
            tracing::error!(sha256 = %variant.sha256, "{message}");
            problem(StatusCode::INTERNAL_SERVER_ERROR, message)
        }
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, format!("image worker failed: {e}")),
    }
}

fn crop_outside(c: Crop, width: u32, height: u32) -> String {
    format!("crop={},{},{},{} is outside the image ({width}×{height} pixels)", c.x0, c.y0, c.x1, c.y1)
}

enum RenderError {
    Missing,
    CropOutside(Crop, u32, u32),
    Failed(String),
}

/// Reads the first candidate file whose bytes still hash to `sha256`, crops, shrinks, encodes
/// JPEG and stores the result at `cache` (atomically: written aside, then renamed).
fn render(
    sha256: &str,
    candidates: &[PathBuf],
    crop: Option<Crop>,
    width: Option<u32>,
    cache: &Path,
) -> Result<Vec<u8>, RenderError> {
    use sha2::{Digest, Sha256};
    let found = candidates.iter().find_map(|path| {
        let bytes = std::fs::read(path).ok()?;
        if hex::encode(Sha256::digest(&bytes)) == sha256 {
            Some((path, bytes))
        } else {
            tracing::warn!(path = %path.display(), sha256, "file no longer matches its registered sha256");
            None
        }
    });
    let Some((path, bytes)) = found else {
        tracing::warn!(sha256, candidates = ?candidates, "no file found for a registered image");
        return Err(RenderError::Missing);
    };
    let mut rgb = dissect::preprocess::decode_rgb(&bytes, path).map_err(|e| RenderError::Failed(e.to_string()))?;
    if let Some(c) = crop {
        if !c.fits(rgb.width(), rgb.height()) {
            return Err(RenderError::CropOutside(c, rgb.width(), rgb.height()));
        }
        rgb = image::imageops::crop_imm(&rgb, c.x0, c.y0, c.x1 - c.x0, c.y1 - c.y0).to_image();
    }
    if let Some(w) = width.filter(|&w| w < rgb.width()) {
        let h = ((rgb.height() as f64 * w as f64 / rgb.width() as f64).round() as u32).max(1);
        rgb = image::imageops::resize(&rgb, w, h, image::imageops::FilterType::CatmullRom);
    }
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY)
        .encode_image(&rgb)
        .map_err(|e| RenderError::Failed(format!("encoding image {sha256} as JPEG failed: {e}")))?;
    if let Err(e) = store(cache, &out) {
        // Still serve it; the next request simply renders it again.
        tracing::warn!(path = %cache.display(), error = %e, "cannot cache a rendered image");
    }
    Ok(out)
}

fn store(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("cache paths have a folder");
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.{:?}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("thumb"),
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use sha2::{Digest, Sha256};
    use tower::ServiceExt;

    struct Fixture {
        dir: tempfile::TempDir,
        app: Router,
        /// A 200×100 PNG of a folder probing set.
        in_set: String,
        /// A 60×40 PNG known only by its stored_path (relative to the data folder).
        stored: String,
    }

    fn png(width: u32, height: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, 90])
        });
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
        out
    }

    async fn insert_image(db: &Pool, bytes: &[u8], w: u32, h: u32, stored: Option<&str>) -> (i64, String) {
        let sha = hex::encode(Sha256::digest(bytes));
        let id = sqlx::query_scalar(
            "INSERT INTO images (sha256, width, height, format, byte_size, stored_path) VALUES (?, ?, ?, 'png', ?, ?) RETURNING id",
        )
        .bind(&sha)
        .bind(w as i64)
        .bind(h as i64)
        .bind(bytes.len() as i64)
        .bind(stored)
        .fetch_one(db)
        .await
        .unwrap();
        (id, sha)
    }

    async fn fixture() -> Fixture {
        let (dir, db) = studio::test_support::temp_db().await;
        let data = dir.path().join("data");
        let root = dir.path().join("probe");
        std::fs::create_dir_all(root.join("cats")).unwrap();
        let a = png(200, 100);
        std::fs::write(root.join("cats/a.png"), &a).unwrap();
        let set: i64 = sqlx::query_scalar(
            "INSERT INTO probe_sets (slug, name, source, root_path) VALUES ('s', 'S', 'folder', ?) RETURNING id",
        )
        .bind(root.to_string_lossy())
        .fetch_one(&db)
        .await
        .unwrap();
        let (a_id, in_set) = insert_image(&db, &a, 200, 100, None).await;
        sqlx::query("INSERT INTO probe_set_images (probe_set_id, image_id, rel_path, split) VALUES (?, ?, 'cats/a.png', 'probe')")
            .bind(set)
            .bind(a_id)
            .execute(&db)
            .await
            .unwrap();
        let b = png(60, 40);
        std::fs::create_dir_all(data.join("images")).unwrap();
        std::fs::write(data.join("images/b.png"), &b).unwrap();
        let (_, stored) = insert_image(&db, &b, 60, 40, Some("images/b.png")).await;
        Fixture { app: router(db, data), dir, in_set, stored }
    }

    async fn get(app: &Router, uri: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut req = Request::get(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let (parts, body) = res.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 24).await.unwrap().to_vec();
        (parts.status, parts.headers, bytes)
    }

    fn thumbs(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let Ok(subdirs) = std::fs::read_dir(dir.join("data/thumbs")) else { return found };
        for sub in subdirs.flatten() {
            for f in std::fs::read_dir(sub.path()).unwrap().flatten() {
                found.push(f.path());
            }
        }
        found
    }

    #[tokio::test]
    async fn serves_a_crop_thumbnail_caches_it_and_marks_it_immutable() {
        let f = fixture().await;
        let uri = format!("/img/{}?crop=20,10,120,60&w=96", f.in_set);
        let (status, headers, body) = get(&f.app, &uri, &[]).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        assert_eq!(headers[header::CONTENT_TYPE], "image/jpeg");
        assert_eq!(headers[header::CACHE_CONTROL], "public, max-age=31536000, immutable");
        let etag = headers[header::ETAG].to_str().unwrap().to_string();
        assert!(etag.starts_with('"') && etag.contains(&f.in_set), "{etag}");
        let img = image::load_from_memory_with_format(&body, image::ImageFormat::Jpeg).unwrap();
        // The 100×50 crop shrunk to 96 wide.
        assert_eq!((img.width(), img.height()), (96, 48));
        let cached = thumbs(f.dir.path());
        assert_eq!(cached.len(), 1, "{cached:?}");
        assert_eq!(std::fs::read(&cached[0]).unwrap(), body);

        // The second request is answered from the cache, even with the source gone.
        std::fs::remove_file(f.dir.path().join("probe/cats/a.png")).unwrap();
        let (status, _, again) = get(&f.app, &uri, &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(again, body);
        // A client holding the ETag revalidates without a body.
        let (status, headers, body) = get(&f.app, &uri, &[("if-none-match", &etag)]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert_eq!(headers[header::ETAG].to_str().unwrap(), etag);
        assert!(body.is_empty());
        // Another variant of the now missing file: registered, but nothing to read.
        let (status, _, body) = get(&f.app, &format!("/img/{}?w=160", f.in_set), &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{}", String::from_utf8_lossy(&body));
    }

    #[tokio::test]
    async fn full_size_and_stored_path_images() {
        let f = fixture().await;
        // No w: the source width; a thumbnail width larger than the image never enlarges it.
        for uri in
            [format!("/img/{}", f.in_set), format!("/img/{}?w=full", f.in_set), format!("/img/{}?w=320", f.in_set)]
        {
            let (status, _, body) = get(&f.app, &uri, &[]).await;
            assert_eq!(status, StatusCode::OK, "{uri}");
            let img = image::load_from_memory(&body).unwrap();
            assert_eq!((img.width(), img.height()), (200, 100), "{uri}");
        }
        // Upper-case hex names the same image.
        let (status, _, _) = get(&f.app, &format!("/img/{}", f.stored.to_uppercase()), &[]).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _, body) = get(&f.app, &format!("/img/{}?crop=0,0,60,40", f.stored), &[]).await;
        assert_eq!(status, StatusCode::OK);
        let img = image::load_from_memory(&body).unwrap();
        assert_eq!((img.width(), img.height()), (60, 40));
    }

    #[tokio::test]
    async fn malformed_requests_are_400_with_the_problem_named() {
        let f = fixture().await;
        let cases = [
            ("/img/abc".to_string(), "sha256"),
            (format!("/img/{}g", &f.in_set[..63]), "sha256"),
            ("/img/..%2F..%2Fetc%2Fpasswd".to_string(), "sha256"),
            (format!("/img/{}?w=100", f.in_set), "w=`100`"),
            (format!("/img/{}?w=-96", f.in_set), "w=`-96`"),
            (format!("/img/{}?crop=1,2,3", f.in_set), "crop=`1,2,3`"),
            (format!("/img/{}?crop=10,10,5,20", f.in_set), "crop=`10,10,5,20`"),
            (format!("/img/{}?crop=a,b,c,d", f.in_set), "crop=`a,b,c,d`"),
        ];
        for (uri, needle) in cases {
            let (status, headers, body) = get(&f.app, &uri, &[]).await;
            let text = String::from_utf8_lossy(&body);
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {text}");
            assert!(text.contains(needle), "{uri}: {text}");
            assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        }
        assert!(thumbs(f.dir.path()).is_empty());
    }

    #[tokio::test]
    async fn unknown_hash_is_404() {
        let f = fixture().await;
        let (status, headers, body) = get(&f.app, &format!("/img/{}", "ab".repeat(32)), &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(String::from_utf8_lossy(&body).contains("no image with sha256"));
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    }

    #[tokio::test]
    async fn crop_outside_the_image_is_400() {
        let f = fixture().await;
        for crop in ["0,0,201,50", "150,90,210,101", "0,0,200,101"] {
            let (status, _, body) = get(&f.app, &format!("/img/{}?crop={crop}", f.in_set), &[]).await;
            let text = String::from_utf8_lossy(&body);
            assert_eq!(status, StatusCode::BAD_REQUEST, "{crop}: {text}");
            assert!(text.contains("outside the image (200×100 pixels)"), "{text}");
        }
        // The edge itself is inside (x1/y1 are exclusive).
        let (status, _, _) = get(&f.app, &format!("/img/{}?crop=100,50,200,100", f.in_set), &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert!(thumbs(f.dir.path()).len() == 1);
    }
}
