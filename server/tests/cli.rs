//! The `dnd` command line on the real embedded model (assets from scripts/setup.sh).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn assets() -> PathBuf {
    let dir = dissect::assets::assets_dir();
    assert!(
        dir.join("models/efficientnet-lite0.safetensors").is_file(),
        "embedded-default assets missing in {}: run scripts/setup.sh",
        dir.display()
    );
    dir
}

fn dnd(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dnd"))
        .args(args)
        .env("DND__STORAGE__DATA_DIR", data)
        .env("DND__STORAGE__ASSETS_DIR", assets())
        .output()
        .expect("run dnd")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A small probing folder: real photos plus files that must be skipped with a reason.
fn probe_folder(dir: &Path) -> PathBuf {
    let root = dir.join("probe");
    std::fs::create_dir_all(root.join("cups")).unwrap();
    let skimage = assets().join("probe/builtin/skimage");
    for name in ["coffee.png", "chelsea.png", "rocket.jpg", "astronaut.png"] {
        std::fs::copy(skimage.join(name), root.join("cups").join(name)).unwrap();
    }
    std::fs::write(root.join("empty.png"), b"").unwrap();
    std::fs::write(root.join("notes.jpg"), b"plain text").unwrap();
    root
}

#[test]
fn record_caches_and_reports_rejected_files() {
    let dir = tempfile::tempdir().unwrap();
    let probe = probe_folder(dir.path());
    let probe = probe.to_str().unwrap();
    let first = dnd(dir.path(), &["record", "--probe", probe, "--layer", "stage4", "--layer", "classifier"]);
    assert!(first.status.success(), "{}", text(&first));
    let out = text(&first);
    assert!(out.contains("recorded 4 images (0 skipped, 2 files rejected at scan)"), "{out}");
    assert!(out.contains("4 forwarded"), "{out}");
    assert!(out.contains("stage4") && out.contains("(computed)"), "{out}");
    assert!(out.contains("rejected: empty.png (empty file (0 bytes))"), "{out}");
    assert!(out.contains("rejected: notes.jpg (not an image"), "{out}");
    let second = dnd(dir.path(), &["record", "--probe", probe, "--layer", "stage4", "--layer", "classifier"]);
    let out = text(&second);
    assert!(out.contains("0 forwarded") && out.contains("(from cache)"), "{out}");
    // Registered from the command's own scan and load: only what it used (not the built-in
    // set), the model under the name the server gives it.
    let db = dir.path().join("dnd-studio.db");
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM probe_sets WHERE slug = 'probe' AND source = 'folder'"), 1);
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM probe_sets"), 1, "the built-in set is the server's to register");
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM probe_set_images"), 4);
    assert_eq!(
        query_i64(&db, "SELECT COUNT(*) FROM models WHERE name = 'EfficientNet-Lite0' AND description <> ''"),
        1
    );
}

#[test]
fn crops_show_d_top_and_the_classifier_gets_none() {
    let dir = tempfile::tempdir().unwrap();
    let probe = probe_folder(dir.path());
    let probe = probe.to_str().unwrap();
    // ImageNet class 967 is "espresso": coffee.png must lead its top images.
    let o = dnd(dir.path(), &["crops", "--probe", probe, "--layer", "classifier", "--unit", "967"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    // The folder is split as registered sets are: chelsea.png is held out, the other three probe.
    assert!(out.contains("of the 3 D_probe images (1 held out)"), "{out}");
    assert!(!out.contains("chelsea.png"), "a held-out image is never a top image: {out}");
    let first_top = out.lines().nth(1).unwrap_or_default();
    assert!(first_top.contains("cups/coffee.png") && first_top.contains("crops: none"), "{out}");
    assert!(!out.contains("crop ["), "classifier units get no crops: {out}");

    let o = dnd(dir.path(), &["crops", "--probe", probe, "--layer", "stage3", "--unit", "5", "--summary", "max"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("(Max activation)") && out.contains("D_top"), "{out}");
    let d_top = out.lines().skip_while(|l| !l.starts_with("D_top")).skip(1).count();
    assert!(d_top >= 3, "three D_probe images and their crops: {out}");
}

#[test]
fn typos_name_the_valid_choices() {
    let dir = tempfile::tempdir().unwrap();
    let o = dnd(dir.path(), &["record", "--layer", "stage9"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("valid layers: stem, stage1"), "{}", text(&o));
    let o = dnd(dir.path(), &["crops", "--layer", "stage1", "--unit", "999"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("unit 999 is outside layer `stage1`"), "{}", text(&o));
    let o = dnd(dir.path(), &["record", "--model", "/nonexistent.pt", "--layer", "x"]);
    assert!(text(&o).contains("neither a built-in model"), "{}", text(&o));
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = dnd(dir.path(), &["record", "--probe", empty.to_str().unwrap(), "--layer", "stem"]);
    assert!(text(&o).contains("holds no usable image"), "{}", text(&o));
}

fn query_i64(db: &Path, sql: &str) -> i64 {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(db);
        let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
        // Test queries, some formatted: no outside input.
        let v: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&pool).await.unwrap();
        pool.close().await;
        v
    })
}

fn exec(db: &Path, sql: &'static str) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(db);
        let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
        sqlx::query(sql).execute(&pool).await.unwrap();
        pool.close().await;
    })
}

/// The whole embedded default (Lite2 captions, in-process LLM, retrieval, MiniLM) on the real
/// built-in set, stored in SQLite; then a run interrupted after one neuron resumes with the other.
#[test]
fn dissect_stores_labels_with_provenance_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["dissect", "--layer", "classifier", "--neurons", "967,985"];
    let o = dnd(dir.path(), &args);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("unit  967: ") && out.contains("unit  985: "), "{out}");
    assert!(out.contains("substitute Llm: Qwen2.5"), "substitutes are announced: {out}");
    // Not on a terminal (here a pipe): plain progress lines instead of a hidden bar, the last
    // one when every neuron is done.
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("neurons: 0/2 neurons (0 %)"), "the start is reported: {err}");
    assert!(err.contains("neurons: 2/2 neurons (100 %) (0 failed), "), "the end is reported: {err}");
    let db = dir.path().join("dnd-studio.db");
    assert!(db.is_file(), "database at {}", db.display());
    // The run was a job on /jobs too: its own device, its progress and end, its run linked.
    assert_eq!(
        query_i64(
            &db,
            "SELECT COUNT(*) FROM jobs j JOIN dissection_runs r ON r.job_id = j.id
             WHERE j.kind = 'dissect' AND j.status = 'done' AND j.device LIKE 'cli:%' AND j.progress_done = 2
               AND json_extract(j.payload_json, '$.neurons') = '967,985'"
        ),
        1,
        "the command-line run is a finished job"
    );
    assert_eq!(
        query_i64(&db, "SELECT COUNT(*) FROM job_events WHERE message LIKE 'started from the command line%'"),
        1
    );

    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM run_neurons WHERE status = 'done'"), 2);
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM top_images"), 20, "D_top of 10 per neuron");
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM top_images WHERE is_crop = 1"), 0, "no crops on the classifier");
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM top_images WHERE caption_id IS NULL"), 0);
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM candidate_concepts WHERE selected = 1"), 2);
    assert_eq!(
        query_i64(
            &db,
            "SELECT COUNT(*) FROM candidate_concepts WHERE score_topk_squared IS NULL OR score_image_products IS NULL"
        ),
        0
    );
    assert!(query_i64(&db, "SELECT COUNT(*) FROM concept_images") >= 2);
    assert_eq!(
        query_i64(
            &db,
            "SELECT COUNT(*) FROM labels l JOIN candidate_concepts c ON c.id = l.concept_id
             WHERE l.method = 'dnd' AND l.source_name = '' AND l.rank = 1 AND l.is_current = 1 AND c.selected = 1"
        ),
        2,
        "the rank-1 DnD label is the selected concept"
    );
    // Each scoring function's best concept is a label source of its own (the paper's Table 4),
    // and the run's own function (the default) agrees with the run's label.
    for function in ["mean", "topk-squared", "image-products", "topk-squared-image-products"] {
        let sql = format!(
            "SELECT COUNT(*) FROM labels l JOIN candidate_concepts c ON c.id = l.concept_id
             WHERE l.source_name = '{function} scoring' AND l.is_variant = 1 AND l.rank = 1 AND l.is_current = 1
               AND l.score = c.score_{}",
            if function == "topk-squared-image-products" {
                "topk_squared_image_products".into()
            } else {
                function.replace('-', "_")
            }
        );
        assert_eq!(query_i64(&db, &sql), 2, "{function}: one label per neuron, scored by its function");
    }
    assert_eq!(
        query_i64(
            &db,
            "SELECT COUNT(*) FROM labels v JOIN labels l ON l.neuron_id = v.neuron_id AND l.source_name = '' AND l.rank = 1
             WHERE v.source_name = 'topk-squared-image-products scoring' AND v.concept_id = l.concept_id"
        ),
        2
    );
    assert_eq!(query_i64(&db, "SELECT uses_substitutes FROM dissection_runs"), 1);
    assert_eq!(
        query_i64(
            &db,
            "SELECT COUNT(*) FROM dissection_runs WHERE json_extract(provenance_json, '$.llm.paper_equivalent') = 0"
        ),
        1
    );
    assert_eq!(
        query_i64(
            &db,
            "SELECT COUNT(*) FROM activation_caches WHERE status = 'complete' AND layer_name = 'classifier'"
        ),
        1
    );
    // D_top is drawn from the probe split only, the same images the rating study shows …
    assert_eq!(
        query_i64(
            &db,
            "SELECT COUNT(*) FROM top_images t JOIN run_neurons rn ON rn.id = t.run_neuron_id
             JOIN dissection_runs r ON r.id = rn.run_id
             JOIN probe_set_images p ON p.probe_set_id = r.probe_set_id AND p.image_id = t.image_id
             WHERE p.split = 'probe'"
        ),
        20,
        "every D_top image is a probe-split image"
    );
    // … so no neuron's own top image comes back as one of its concept images (Step 3 is no check otherwise).
    assert_eq!(
        query_i64(
            &db,
            "SELECT COUNT(*) FROM concept_images ci JOIN candidate_concepts c ON c.id = ci.concept_id
             JOIN top_images t ON t.run_neuron_id = c.run_neuron_id AND t.image_id = ci.image_id"
        ),
        0
    );
    // The split and the top-3 threshold are part of the run's recorded settings.
    assert!(query_i64(&db, "SELECT json_extract(settings_json, '$.partition.probe') FROM dissection_runs") > 300);
    assert!(query_i64(&db, "SELECT json_extract(settings_json, '$.partition.evaluation') FROM dissection_runs") > 40);
    assert_eq!(
        query_i64(&db, "SELECT CAST(ROUND(json_extract(settings_json, '$.duplicate_label_cosine') * 100) AS INTEGER) FROM dissection_runs"),
        63,
        "MiniLM's calibrated threshold"
    );

    // Simulate a kill after the first neuron: the run is unfinished and 985 not done.
    exec(&db, "UPDATE dissection_runs SET status = 'running', finished_at = NULL");
    exec(&db, "UPDATE run_neurons SET status = 'pending' WHERE neuron_id = (SELECT n.id FROM neurons n JOIN layers l ON l.id = n.layer_id WHERE l.name = 'classifier' AND n.unit = 985)");
    let o = dnd(dir.path(), &args);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("resuming run #1: 1 of 2 neurons left"), "{out}");
    assert!(
        out.contains("unit  985: ") && !out.contains("unit  967: "),
        "only the unfinished neuron is recomputed: {out}"
    );
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM dissection_runs"), 1);
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM run_neurons WHERE status = 'done'"), 2);
    assert_eq!(
        query_i64(
            &db,
            "SELECT COUNT(*) FROM labels WHERE method = 'dnd' AND source_name = '' AND rank = 1 AND is_current = 1"
        ),
        2
    );
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM labels WHERE is_variant = 1 AND is_current = 1"), 8);

    // The quality report measures these labels on images no step saw.
    let o = dnd(dir.path(), &["quality", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    let p = &report["partition"];
    let evaluation = p["evaluation"].as_u64().unwrap();
    assert!(evaluation > 40 && p["concept_pool"].as_u64().unwrap() > 40, "{p}");
    assert_eq!(report["evaluation_images"].as_u64(), Some(evaluation));
    let final_layer = &report["final_layer"];
    let dnd_final = &final_layer["methods"][0];
    assert_eq!(dnd_final["method"], "dnd");
    assert_eq!(dnd_final["all"]["n"], 2, "{final_layer}");
    let cosine = dnd_final["all"]["mean"].as_f64().unwrap();
    assert!((-1.0..=1.0).contains(&cosine), "{cosine}");
    // Coverage is decided on D_probe: some classes, far from all 1000.
    let coverage = &final_layer["coverage"];
    assert_eq!(coverage["images"], p["probe"], "{coverage}");
    let covered = coverage["classes"].as_array().unwrap().len();
    assert!((1..200).contains(&covered), "{covered} covered classes");
    let layer = &report["layers"][0];
    assert_eq!(layer["layer"], "classifier");
    let m = &layer["methods"][0];
    assert_eq!(m["units"], 2);
    let sim = m["simulation"]["mean"].as_f64().unwrap();
    assert!((-1.0..=1.0).contains(&sim), "{m}");
    assert!(m["simulation_chance"]["n"].as_u64().unwrap() >= 1, "{m}");
    assert!(!report["classes"].as_array().unwrap().is_empty(), "evaluation images come in category folders");
    // One evaluation per label source: the run's labels and its four scoring variants.
    assert_eq!(dnd_final["source"], "", "the run's own labels come first");
    assert_eq!(final_layer["methods"].as_array().unwrap().len(), 5, "{final_layer}");
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM evaluations WHERE kind = 'final_layer_cosine'"), 5);

    // A labelled folder that is not one fails before any work, naming the flag.
    let o = dnd(dir.path(), &["quality", "--classes", "/nonexistent/classes"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("--classes /nonexistent/classes"), "{}", text(&o));
}

#[test]
fn dissect_rejects_bad_neuron_specs_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let o = dnd(dir.path(), &["dissect", "--layer", "stage3", "--neurons", "0-40"]);
    let out = text(&o);
    assert!(!o.status.success());
    assert!(out.contains("--neurons unit 40 is outside the layer, which has units 0-39"), "{out}");
    let o = dnd(dir.path(), &["dissect", "--layer", "stage3", "--neurons", "0-1", "--scoring", "median"]);
    assert!(
        text(&o).contains("--scoring `median`: expected one of mean, topk-squared, image-products"),
        "{}",
        text(&o)
    );
    let o = dnd(dir.path(), &["dissect", "--layer", "stage3", "--neurons", "0-1", "--leak-free"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("--leak-free applies to an ImageNet-1k classifier layer"), "{}", text(&o));
    assert_eq!(
        query_i64(&dir.path().join("dnd-studio.db"), "SELECT COUNT(*) FROM dissection_runs"),
        0,
        "no run was opened"
    );
}
