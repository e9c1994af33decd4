use super::*;
use axum::body::Body;
use axum::http::Request;
use dissect::concepts::pipeline::{ConceptEntry, DissectOptions, NeuronOutcome, NeuronResult, TopEntry};
use dissect::concepts::scoring::ConceptScores;
use dissect::concepts::summarize::Candidates;
use dissect::crops::{ImageMap, Summary};
use sqlx::Row;
use std::collections::HashMap;
use studio::dissection::store::{self, heatmap_key, NeuronWriter, RunSpec};
use tower::ServiceExt;

/// Output pixels whose opacity is the image's highest.
fn hottest(img: &RgbaImage) -> (u8, Vec<(u32, u32)>) {
    let top = img.pixels().map(|p| p.0[3]).max().unwrap_or(0);
    (top, img.enumerate_pixels().filter(|(_, _, p)| p.0[3] == top).map(|(x, y, _)| (x, y)).collect())
}

/// Whether output pixel (`px`, `py`) of an `out_w`×`out_h` overlay of a `width`×`height` image
/// lies over cell (`row`, `col`) of a map covering `view` (with one output pixel of slack).
#[allow(clippy::too_many_arguments)]
fn over_cell(
    px: u32,
    py: u32,
    (out_w, out_h): (u32, u32),
    (width, height): (u32, u32),
    view: CropBox,
    m: &ActivationMap,
    row: usize,
    col: usize,
) -> bool {
    let (sx, sy) = (width as f64 / out_w as f64, height as f64 / out_h as f64);
    let (x, y) = ((px as f64 + 0.5) * sx, (py as f64 + 0.5) * sy);
    let (cw, ch) = (view.width() as f64 / m.width as f64, view.height() as f64 / m.height as f64);
    let (cx0, cy0) = (view.x0 as f64 + col as f64 * cw, view.y0 as f64 + row as f64 * ch);
    x >= cx0 - sx && x < cx0 + cw + sx && y >= cy0 - sy && y < cy0 + ch + sy
}

fn argmax(m: &ActivationMap) -> (usize, usize) {
    let i = (0..m.values.len()).max_by(|&a, &b| m.values[a].total_cmp(&m.values[b])).unwrap();
    (i / m.width, i % m.width)
}

#[test]
fn heat_colour_grows_in_opacity_from_transparent_blue_to_red() {
    assert_eq!(heat_colour(0.0).0[3], 0);
    assert_eq!(heat_colour(1.0).0[3], (MAX_ALPHA * 255.0).round() as u8);
    let alphas: Vec<u8> = (0..=100).map(|i| heat_colour(i as f32 / 100.0).0[3]).collect();
    assert!(alphas.windows(2).all(|w| w[0] < w[1]), "{alphas:?}");
    let [r, g, b, _] = heat_colour(1.0).0;
    assert!(r > 200 && g < 60 && b < 60, "hot is red");
    let [r, _, b, _] = heat_colour(0.25).0;
    assert!(b > 200 && r < 60, "cool is blue");
    assert_eq!(heat_colour(f32::NAN), heat_colour(0.0));
}

#[test]
fn overlay_peaks_over_the_maps_maximum_and_is_clear_outside_the_view() {
    // 4×5 map, maximum in row 1, column 3; the view is an off-centre part of a 150×100 image.
    let mut values: Vec<f32> = (0..20).map(|i| (i % 7) as f32 * 0.3).collect();
    values[5 + 3] = 9.0;
    let m = ActivationMap::new(4, 5, values);
    let view = CropBox::new(30, 10, 130, 90);
    for (out_w, out_h) in [(150, 100), (96, 64)] {
        let img = render_overlay(&m, view, 150, 100, out_w, out_h);
        assert_eq!(img.dimensions(), (out_w, out_h));
        let (top, at) = hottest(&img);
        assert!(top as f32 >= 0.9 * MAX_ALPHA * 255.0, "{top}");
        assert!(
            !at.is_empty() && at.iter().all(|&(x, y)| over_cell(x, y, (out_w, out_h), (150, 100), view, &m, 1, 3)),
            "{at:?}"
        );
        // Outside the region the model saw, nothing is drawn.
        for (x, y, p) in img.enumerate_pixels() {
            let (sx, sy) = ((x as f64 + 0.5) * 150.0 / out_w as f64, (y as f64 + 0.5) * 100.0 / out_h as f64);
            if sx < 30.0 || sx >= 130.0 || sy < 10.0 || sy >= 90.0 {
                assert_eq!(p.0[3], 0, "({x},{y}) outside the view");
            }
        }
    }
    // A constant map has no hotter place.
    let flat = render_overlay(&ActivationMap::new(2, 2, vec![3.0; 4]), view, 150, 100, 96, 64);
    assert!(flat.pixels().all(|p| p.0[3] == 0));
    assert_eq!(thumbnail_size(150, 100, 96), (96, 64));
    assert_eq!(thumbnail_size(150, 100, 320), (150, 100), "never enlarged");
}

async fn get(app: &axum::Router, uri: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut req = Request::get(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let (parts, body) = res.into_parts();
    (parts.status, parts.headers, axum::body::to_bytes(body, 1 << 24).await.unwrap().to_vec())
}

/// The real model on real photos: a stage6 unit's D_top is computed by the engine, stored through
/// the run store with its maps, read back bit for bit, and drawn by the route with the hot spot
/// over the map's maximum.
#[tokio::test]
async fn a_real_neurons_maps_are_stored_with_d_top_and_drawn_where_they_peak() {
    let assets = dissect::assets::assets_dir();
    let (dir, db) = studio::test_support::temp_db().await;
    let root = dir.path().join("photos");
    std::fs::create_dir_all(&root).unwrap();
    for name in ["coffee.png", "chelsea.png", "rocket.jpg", "astronaut.png"] {
        let from = assets.join("probe/builtin/skimage").join(name);
        std::fs::copy(&from, root.join(name))
            .unwrap_or_else(|e| panic!("{}: {e} (run scripts/setup.sh)", from.display()));
    }
    let loaded = studio::engine::load_model("efficientnet-lite0", &assets).unwrap();
    let model = loaded.model.as_ref();
    let layer = model.layer_index("stage6").unwrap();
    let set = studio::engine::scan_probe(root.to_str().unwrap(), &assets).unwrap();
    let (images, recording) =
        studio::engine::record(&loaded, &set, &["stage6".to_string()], &dir.path().join("acts"), 4, None, &mut |_| {})
            .unwrap();
    let summaries = &recording.layers[0];
    // The unit with the strongest single-image mean: not a dead one.
    let peak = |u: usize| (0..images.len()).map(|i| summaries.get(i, u, Summary::Mean)).fold(f32::MIN, f32::max);
    let unit = (0..summaries.channels).max_by(|&a, &b| peak(a).total_cmp(&peak(b))).unwrap();
    let top = dissect::dtop::neuron_top(model, &images, summaries, layer, unit, Summary::Mean, 4).unwrap();
    assert_eq!(top.maps.len(), 4, "one map per top image");

    let (model_id, _) =
        studio::dissection::register_loaded_model(&db, &loaded, "efficientnet-lite0", &assets).await.unwrap();
    let set_id = studio::dissection::register_folder_set(&db, &root).await.unwrap();
    let layer_id: i64 = sqlx::query_scalar("SELECT id FROM layers WHERE model_id = ? AND name = 'stage6'")
        .bind(model_id)
        .fetch_one(&db)
        .await
        .unwrap();
    let options = DissectOptions::default();
    let neurons = unit.to_string();
    let spec = RunSpec {
        model_id,
        layer_id,
        probe_set_id: set_id,
        neurons_spec: &neurons,
        neuron_seed: None,
        units: &[unit],
        options: &options,
        provenance: &[],
        job_id: None,
    };
    let run = store::open_run(&db, &spec).await.unwrap();
    let recorded = summaries.clone();
    let writer = NeuronWriter {
        run_id: run.run_id,
        layer_id,
        captioner_id: "test captioner".into(),
        llm_id: "test llm".into(),
        options: options.clone(),
        image_sha256: images.iter().map(|i| i.sha256.clone()).collect(),
        recorded: Box::new(move |i, u| (recorded.get(i, u, Summary::Mean), recorded.get(i, u, Summary::Max))),
        unit_stats: Box::new(|_| [0.0; 4]),
    };
    // D_top entries carry their source image's map, as the pipeline attaches them.
    let maps: HashMap<usize, ImageMap> = top.top_images.iter().map(|&(i, _)| i).zip(top.maps.iter().cloned()).collect();
    let entries: Vec<TopEntry> = top
        .d_top
        .iter()
        .map(|c| TopEntry {
            image_index: c.image_index,
            crop: c.crop,
            activation: c.activation,
            caption: format!("image {}", c.image_index),
            map: maps.get(&c.image_index).cloned(),
        })
        .collect();
    let scores = ConceptScores { mean: -1.0, topk_squared: -1.0, image_products: 0.5, combined: 0.5, ranks: vec![1.0] };
    let result = NeuronResult {
        unit,
        top: entries.clone(),
        candidates: Candidates {
            labels: vec!["thing".into()],
            simplified: vec![],
            answers: vec![],
            fell_back: false,
            support: vec![],
            grounded: vec![],
        },
        concepts: vec![ConceptEntry { label: "thing".into(), scores, images: vec![] }],
        best: Some(0),
        top3: vec![0],
        best_by_scoring: Vec::new(),
    };
    writer.write(&db, &NeuronOutcome::Done(Box::new(result))).await.unwrap();

    let rows = sqlx::query(
        "SELECT t.rank, t.is_crop, t.act_mean, i.sha256, i.width, i.height, t.map_h, t.map_w, t.map_f32,
                t.map_x0, t.map_y0, t.map_x1, t.map_y1, t.map_sha256
         FROM top_images t JOIN images i ON i.id = t.image_id ORDER BY t.rank",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(rows.len(), entries.len());
    let mut stored = Vec::new();
    for (r, e) in rows.iter().zip(&entries) {
        let want = e.map.as_ref().expect("a conv layer's D_top image has a map");
        let (h, w): (i64, i64) = (r.get("map_h"), r.get("map_w"));
        let m = ActivationMap::from_le_bytes(h as usize, w as usize, &r.get::<Vec<u8>, _>("map_f32")).unwrap();
        assert_eq!(m, want.map, "rank {} round-trips bit for bit", r.get::<i64, _>("rank"));
        assert_eq!((h, w), (7, 7), "stage6 of Lite0 at 224 pixels");
        let view = CropBox::new(
            r.get::<i64, _>("map_x0") as u32,
            r.get::<i64, _>("map_y0") as u32,
            r.get::<i64, _>("map_x1") as u32,
            r.get::<i64, _>("map_y1") as u32,
        );
        assert_eq!(view, want.view);
        let (sha, width, height): (String, i64, i64) = (r.get("sha256"), r.get("width"), r.get("height"));
        assert!(view.is_within(width as u32, height as u32), "{view:?} on {width}×{height}");
        let key: String = r.get("map_sha256");
        assert_eq!(key, heatmap_key(&sha, want));
        // It is this unit's map on this image: its mean is the recorded summary.
        if r.get::<i64, _>("is_crop") == 0 {
            let act: f64 = r.get("act_mean");
            assert!(
                (m.summary(Summary::Mean) as f64 - act).abs() <= 1e-3 * (1.0 + act.abs()),
                "{} vs {act}",
                m.summary(Summary::Mean)
            );
        }
        stored.push((key, m, view, width as u32, height as u32));
    }

    // Draw the map with the clearest single peak (so 8-bit opacity cannot tie two cells).
    let margin = |m: &ActivationMap| {
        let mut v = m.values.clone();
        v.sort_by(|a, b| b.total_cmp(a));
        (v[0] - v[1]) / (v[0] - v[v.len() - 1])
    };
    let (key, m, view, width, height) =
        stored.iter().max_by(|a, b| margin(&a.1).total_cmp(&margin(&b.1))).unwrap().clone();
    let app: axum::Router = super::super::router(db.clone(), dir.path().join("data"));
    let uri = format!("/heatmap/{key}?w=320");
    let (status, headers, body) = get(&app, &uri, &[]).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers[header::CONTENT_TYPE], "image/png");
    assert_eq!(headers[header::CACHE_CONTROL], "public, max-age=31536000, immutable");
    let img = image::load_from_memory_with_format(&body, image::ImageFormat::Png).unwrap().to_rgba8();
    let out = thumbnail_size(width, height, 320);
    assert_eq!(img.dimensions(), out);
    let (row, col) = argmax(&m);
    let (top_alpha, at) = hottest(&img);
    assert!(top_alpha as f32 >= 0.9 * MAX_ALPHA * 255.0, "{top_alpha}");
    assert!(
        at.iter().all(|&(x, y)| over_cell(x, y, out, (width, height), view, &m, row, col)),
        "hottest {at:?}, max at cell ({row},{col})"
    );
    assert!(std::fs::read_dir(dir.path().join("data/heatmaps")).unwrap().count() == 1, "drawn once, cached");

    let etag = headers[header::ETAG].to_str().unwrap().to_string();
    let (status, _, _) = get(&app, &uri, &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    let (status, _, body) = get(&app, &format!("/heatmap/{key}?w=1000"), &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("96, 160, 320"));
    let (status, _, body) = get(&app, "/heatmap/not-a-key?w=96", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("sha256"));
    let (status, h, _) = get(&app, &format!("/heatmap/{}?w=96", "0".repeat(64)), &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(h[header::CACHE_CONTROL], "no-store");

    // The schema keeps a map whole: a size that does not match its bytes, or half a map, is refused;
    // no map at all (an older run, a layer without spatial maps) is fine.
    let bad = sqlx::query("UPDATE top_images SET map_w = map_w + 1 WHERE rank = 1").execute(&db).await;
    assert!(bad.is_err(), "map size must match its bytes");
    let bad = sqlx::query("UPDATE top_images SET map_f32 = NULL WHERE rank = 1").execute(&db).await;
    assert!(bad.is_err(), "half a map");
    sqlx::query(
        "UPDATE top_images SET map_h = NULL, map_w = NULL, map_f32 = NULL, map_x0 = NULL, map_y0 = NULL, map_x1 = NULL,
             map_y1 = NULL, map_sha256 = NULL WHERE rank = 1",
    )
    .execute(&db)
    .await
    .unwrap();
}
