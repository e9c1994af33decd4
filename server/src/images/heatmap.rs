//! `GET /heatmap/{map_sha256}?w=96|160|320`: a D_top image's stored activation map
//! (`top_images.map_*`, migration 0005) drawn as a transparent PNG the size of that image's
//! thumbnail at width `w`, to lay over it on the neuron page.
//!
//! Why a PNG route rather than an SVG/CSS grid in the page: the overlay is then a plain `<img>`
//! stacked on the thumbnail, which server-side rendering and hydration produce identically and
//! which shows without JavaScript; the map is upsampled bilinearly here (the same half-pixel
//! convention the attention crops are cut with) instead of showing blocky 7×7 cells; and the
//! response is content-addressed, so browsers keep it forever and the page's HTML stays small.
//!
//! Drawing: the map covers only the region the model saw (the centre crop, `map_x0..map_y1`);
//! outside it the overlay is transparent. Each map is scaled to its own min–max — the same
//! scaling the Otsu threshold of the attention crops works on — so the overlay shows where this
//! image excited the unit most, not how strongly compared with other images (the page prints the
//! activation values). Heat `t` ∈ [0, 1] sets both the colour (dark blue → red) and the opacity
//! (transparent → [`MAX_ALPHA`]), so cold regions leave the photo visible. A constant map has no
//! hotter place: it is drawn fully transparent.

use super::{problem, Service, CACHE_CONTROL, WIDTHS};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use dissect::crops::{ActivationMap, CropBox};
use image::{Rgba, RgbaImage};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bumped when the drawing changes, so old cached files and ETags are not reused.
const HEATMAP_VERSION: u32 = 1;
/// Opacity of the hottest point.
pub const MAX_ALPHA: f32 = 0.8;

/// Colour stops of the heat scale, cold to hot.
const RAMP: [[f32; 3]; 5] =
    [[40.0, 30.0, 140.0], [30.0, 120.0, 240.0], [40.0, 210.0, 120.0], [250.0, 210.0, 40.0], [230.0, 30.0, 20.0]];

/// The colour (with opacity) of heat `t` ∈ [0, 1]; opacity grows strictly with `t`.
pub fn heat_colour(t: f32) -> Rgba<u8> {
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 };
    let pos = t * (RAMP.len() - 1) as f32;
    let i = (pos.floor() as usize).min(RAMP.len() - 2);
    let f = pos - i as f32;
    let c = |k: usize| (RAMP[i][k] + (RAMP[i + 1][k] - RAMP[i][k]) * f).round() as u8;
    Rgba([c(0), c(1), c(2), (t * MAX_ALPHA * 255.0).round() as u8])
}

/// Pixel size of a `width`×`height` image shown at thumbnail width `w` (never enlarged), as
/// `/img/…?w=` makes it.
pub fn thumbnail_size(width: u32, height: u32, w: u32) -> (u32, u32) {
    if w >= width {
        (width, height)
    } else {
        (w, ((height as f64 * w as f64 / width as f64).round() as u32).max(1))
    }
}

/// Draws `map`, which covers `view` of a `width`×`height` source image, over that whole image at
/// `out_w`×`out_h` pixels: each output pixel's centre is taken back to source pixels and, inside
/// the view, to the map, sampled bilinearly and scaled by the map's min–max.
pub fn render_overlay(
    map: &ActivationMap,
    view: CropBox,
    width: u32,
    height: u32,
    out_w: u32,
    out_h: u32,
) -> RgbaImage {
    let finite = map.values.iter().copied().filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let range = hi - lo;
    let (sx, sy) = (width as f64 / out_w as f64, height as f64 / out_h as f64);
    let (vw, vh) = (view.width().max(1) as f64, view.height().max(1) as f64);
    RgbaImage::from_fn(out_w, out_h, |px, py| {
        let (x, y) = ((px as f64 + 0.5) * sx, (py as f64 + 0.5) * sy);
        let inside = x >= view.x0 as f64 && x < view.x1 as f64 && y >= view.y0 as f64 && y < view.y1 as f64;
        if !inside || !(range > 0.0) {
            return Rgba([0, 0, 0, 0]);
        }
        let v = map.sample((x - view.x0 as f64) / vw, (y - view.y0 as f64) / vh);
        heat_colour((v - lo) / range)
    })
}

fn encode_png(img: &RgbaImage) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .map_err(|e| format!("encoding a heatmap as PNG failed: {e}"))?;
    Ok(out)
}

#[derive(serde::Deserialize)]
pub(super) struct HeatmapQuery {
    w: Option<String>,
}

fn parse_key(s: &str) -> Result<String, String> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err("a heatmap is named by its map's sha256: 64 hexadecimal digits".to_string())
    }
}

fn parse_width(w: Option<&str>) -> Result<u32, String> {
    let text = w.unwrap_or("");
    match text.parse::<u32>() {
        Ok(n) if WIDTHS.contains(&n) => Ok(n),
        _ => Err(format!("heatmap width w=`{text}` must be one of 96, 160, 320 (the thumbnail widths)")),
    }
}

fn etag(key: &str, w: u32) -> String {
    format!("\"heatmap_{key}_w{w}_v{HEATMAP_VERSION}\"")
}

/// `<data_dir>/heatmaps/<first two hex digits>/<key>_w<w>_v<version>.png`.
fn cache_path(data_dir: &Path, key: &str, w: u32) -> PathBuf {
    data_dir.join("heatmaps").join(&key[..2]).join(format!("{key}_w{w}_v{HEATMAP_VERSION}.png"))
}

fn png_response(key: &str, w: u32, bytes: Option<Vec<u8>>) -> Response {
    let mut response = match bytes {
        Some(b) => b.into_response(),
        None => StatusCode::NOT_MODIFIED.into_response(),
    };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(CACHE_CONTROL));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if let Ok(etag) = HeaderValue::from_str(&etag(key, w)) {
        h.insert(header::ETAG, etag);
    }
    response
}

pub(super) async fn serve_heatmap(
    State(service): State<Arc<Service>>,
    UrlPath(key): UrlPath<String>,
    Query(q): Query<HeatmapQuery>,
    headers: HeaderMap,
) -> Response {
    let (key, w) = match parse_key(&key).and_then(|k| Ok((k, parse_width(q.w.as_deref())?))) {
        Ok(v) => v,
        Err(message) => return problem(StatusCode::BAD_REQUEST, message),
    };
    let tag = etag(&key, w);
    let revalidating = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    if revalidating {
        return png_response(&key, w, None);
    }
    let cached = cache_path(&service.data_dir, &key, w);
    if let Ok(bytes) = tokio::fs::read(&cached).await {
        return png_response(&key, w, Some(bytes));
    }
    let stored = match studio::gallery::queries::stored_map(&service.db, &key).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "heatmap lookup failed");
            return problem(StatusCode::INTERNAL_SERVER_ERROR, format!("database error: {e}"));
        }
    };
    let Some(m) = stored else {
        return problem(StatusCode::NOT_FOUND, format!("no stored activation map with sha256 {key}"));
    };
    let Ok(_permit) = service.workers.acquire().await else {
        return problem(StatusCode::SERVICE_UNAVAILABLE, "shutting down".into());
    };
    let job = move || -> Result<Vec<u8>, String> {
        let map = ActivationMap::from_le_bytes(m.map_height, m.map_width, &m.map_f32)?;
        let [x0, y0, x1, y1] = m.view;
        let view = CropBox::new(x0, y0, x1, y1);
        let (width, height) = (m.image_width, m.image_height);
        let (out_w, out_h) = thumbnail_size(width, height, w);
        let png = encode_png(&render_overlay(&map, view, width, height, out_w, out_h))?;
        if let Err(e) = super::store(&cached, &png) {
            // Still serve it; the next request simply draws it again.
            tracing::warn!(path = %cached.display(), error = %e, "cannot cache a heatmap");
        }
        Ok(png)
    };
    match tokio::task::spawn_blocking(job).await {
        Ok(Ok(png)) => png_response(&key, w, Some(png)),
        Ok(Err(message)) => {
            tracing::error!(key = %key, "{message}");
            problem(StatusCode::INTERNAL_SERVER_ERROR, message)
        }
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, format!("heatmap worker failed: {e}")),
    }
}

#[cfg(test)]
mod tests;
