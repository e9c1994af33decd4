//! Dissection jobs through a running `dnd serve` on the real embedded model: the admin starts one
//! over HTTP, `/events/jobs` streams its progress, its labels land; a server killed mid-job
//! resumes the job at its next start; a cancel stops a running job between neurons and a queued
//! one at once.

mod common;

use app::api::jobs::JobView;
use common::{client, query, query_i64, Server};
use reqwest::StatusCode;
use std::path::Path;

fn request(neurons: &str, layer: &str) -> serde_json::Value {
    serde_json::json!({
        "model": "efficientnet-lite0", "layer": layer, "neurons": neurons, "seed": 0,
        "probe_set": "builtin", "summary": "mean", "scoring": "topk-squared-image-products",
    })
}

async fn start_job(s: &Server, cookie: &str, csrf: &str, neurons: &str) -> i64 {
    let (status, body) = s
        .post(
            "/api/jobs/start",
            Some(cookie),
            serde_json::json!({ "csrf": csrf, "request": request(neurons, "classifier") }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body.trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_started_in_the_browser_streams_progress_and_stores_labels() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let (cookie, csrf) = s.login().await;

    // Only the admin starts jobs, and a wrong request names what is wrong.
    let body = serde_json::json!({ "csrf": csrf, "request": request("967", "classifier") });
    assert_eq!(s.post("/api/jobs/start", None, body.clone()).await.0, StatusCode::FORBIDDEN);
    let wrong_csrf = serde_json::json!({ "csrf": "not-the-token", "request": request("967", "classifier") });
    assert_eq!(s.post("/api/jobs/start", Some(&cookie), wrong_csrf).await.0, StatusCode::FORBIDDEN);
    let typo = serde_json::json!({ "csrf": csrf, "request": request("967", "clasifier") });
    let (status, text) = s.post("/api/jobs/start", Some(&cookie), typo).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("has no layer `clasifier`") && text.contains("classifier"), "{text}");
    let outside = serde_json::json!({ "csrf": csrf, "request": request("1000", "classifier") });
    let (status, text) = s.post("/api/jobs/start", Some(&cookie), outside).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("outside the layer"), "{text}");
    assert_eq!(query_i64(dir.path(), "SELECT count(*) FROM jobs").await, 0, "refused requests queue nothing");

    let id = start_job(&s, &cookie, &csrf, "967").await;
    assert_eq!(start_job(&s, &cookie, &csrf, "967").await, id, "the same request while it runs is the same job");

    let seen = s.follow(id, JobView::is_finished).await;
    let last = seen.last().unwrap();
    assert_eq!(last.status, "done", "{last:#?}\n{}", s.log());
    assert_eq!((last.done, last.total), (1, Some(1)));
    assert!(seen.len() >= 2, "progress arrives as the job runs, not only at its end: {seen:#?}");
    assert!(seen.iter().any(|j| j.status == "running"), "{seen:#?}");
    let run_id = last.run_id.expect("the job's run");

    let detail = s.detail(id).await;
    let log: Vec<&str> = detail.events.iter().map(|e| e.message.as_str()).collect();
    assert!(log.iter().any(|m| m.starts_with("done: 1 neurons")), "{log:?}");
    assert!(log.iter().any(|m| m.starts_with("substitute Llm")), "substitutes are logged: {log:?}");
    assert_eq!(query_i64(dir.path(), &format!("SELECT job_id FROM dissection_runs WHERE id = {run_id}")).await, id);
    let label: String = query(
        dir.path(),
        "SELECT l.text FROM labels l JOIN neurons n ON n.id = l.neuron_id JOIN layers y ON y.id = n.layer_id
         WHERE y.name = 'classifier' AND n.unit = 967 AND l.method = 'dnd' AND l.source_name = '' AND l.rank = 1
           AND l.is_current = 1",
    )
    .await;
    // The log lists the neuron's labels as it was stored, its rank-1 label first.
    let line =
        log.iter().find(|m| m.starts_with("unit  967: ")).unwrap_or_else(|| panic!("no line for unit 967: {log:?}"));
    assert!(line["unit  967: ".len()..].starts_with(&label), "{line} vs the stored label `{label}`");
    // The finished job's neuron page shows its label.
    let page = client()
        .get(format!("{}/m/efficientnet-lite0/classifier/967", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let escaped = label.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    assert!(page.contains(&escaped), "the neuron page shows the job's label `{label}`");

    // The next job on the same model and set neither reloads the model nor rescans the set.
    let next = start_job(&s, &cookie, &csrf, "966").await;
    let last = s.follow(next, JobView::is_finished).await.pop().unwrap();
    assert_eq!(last.status, "done", "{last:#?}\n{}", s.log());
    let log: Vec<String> = s.detail(next).await.events.into_iter().map(|e| e.message).collect();
    for kept in ["model `efficientnet-lite0` kept loaded", "probing set `builtin` kept scanned"] {
        assert!(log.iter().any(|m| m.starts_with(kept)), "{kept}: {log:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn folders_and_model_files_on_the_server_are_registered_by_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let (cookie, csrf) = s.login().await;
    let register = |kind: &str, path: &Path| serde_json::json!({ "csrf": csrf, "kind": kind, "request": { "path": path.display().to_string() } });

    // A folder of real photos, an empty file and a text file posing as a JPEG.
    let probe = dir.path().join("my-probe");
    std::fs::create_dir_all(probe.join("cups")).unwrap();
    for name in ["coffee.png", "chelsea.png", "rocket.jpg"] {
        std::fs::copy(
            dissect::assets::assets_dir().join("probe/builtin/skimage").join(name),
            probe.join("cups").join(name),
        )
        .unwrap();
    }
    std::fs::write(probe.join("empty.png"), b"").unwrap();
    std::fs::write(probe.join("notes.jpg"), b"plain text").unwrap();

    // Paths that cannot be what they should are refused before anything is queued.
    let (status, text) =
        s.post("/api/jobs/register", Some(&cookie), register("register_probe_set", Path::new("relative/dir"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("not an absolute path"), "{text}");
    let (status, text) = s.post("/api/jobs/register", Some(&cookie), register("register_model", &probe)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("is not a TorchScript file"), "{text}");
    assert_eq!(
        s.post("/api/jobs/register", None, register("register_probe_set", &probe)).await.0,
        StatusCode::FORBIDDEN
    );

    let (status, text) = s.post("/api/jobs/register", Some(&cookie), register("register_probe_set", &probe)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let id: i64 = text.trim().parse().unwrap();
    let last = s.follow(id, JobView::is_finished).await.pop().unwrap();
    assert_eq!(last.status, "done", "{last:#?}");
    assert_eq!(last.message.as_deref(), Some("probing set `my-probe`: 3 images, 2 files rejected"));
    assert_eq!(last.target, "probe set: my-probe", "the public queue names the folder, not its path");
    let form = client().post(format!("{}/api/jobs/form", s.base)).header("cookie", &cookie).send().await.unwrap();
    let form: serde_json::Value = form.json().await.unwrap();
    assert!(form["probe_sets"].as_array().unwrap().iter().any(|p| p[0] == "my-probe" && p[2] == 3), "{form}");

    // A file that is not TorchScript fails its job with the reason; nothing is registered.
    let fake = dir.path().join("model.pt");
    std::fs::write(&fake, b"not a model").unwrap();
    let (status, text) = s.post("/api/jobs/register", Some(&cookie), register("register_model", &fake)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let id: i64 = text.trim().parse().unwrap();
    let last = s.follow(id, JobView::is_finished).await.pop().unwrap();
    assert_eq!(last.status, "failed", "{last:#?}");
    assert!(last.error.as_deref().is_some_and(|e| e.contains("model.pt")), "the error names the file: {last:#?}");
    assert_eq!(query_i64(dir.path(), "SELECT count(*) FROM models WHERE source = 'torchscript'").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_server_resumes_its_job_and_cancel_stops_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path()).await;
    let (cookie, csrf) = s.login().await;
    let id = start_job(&s, &cookie, &csrf, "967,985").await;
    // A second job waits in the queue behind the first; cancelling it ends it at once.
    let queued = start_job(&s, &cookie, &csrf, "1,2").await;
    let (status, text) =
        s.post("/api/jobs/cancel", Some(&cookie), serde_json::json!({ "csrf": csrf, "id": queued })).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(s.detail(queued).await.job.status, "cancelled");
    let (status, text) =
        s.post("/api/jobs/cancel", Some(&cookie), serde_json::json!({ "csrf": csrf, "id": queued })).await;
    assert_eq!(status, StatusCode::CONFLICT, "{text}");
    assert!(text.contains("already cancelled"), "{text}");

    // Kill the server (no chance to checkpoint) while the job describes its neurons.
    s.follow(id, |j| j.stage.as_deref() == Some("neurons") || j.is_finished()).await;
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    drop(s);
    assert_eq!(query_i64(dir.path(), &format!("SELECT status = 'running' FROM jobs WHERE id = {id}")).await, 1);

    let s = Server::start(dir.path()).await;
    let seen = s.follow(id, JobView::is_finished).await;
    let last = seen.last().unwrap();
    assert_eq!(last.status, "done", "{last:#?}\n{}", s.log());
    assert_eq!(last.attempts, 2, "started again after the restart");
    let detail = s.detail(id).await;
    assert!(
        detail.events.iter().any(|e| e.message.contains("the server stopped while this job ran")),
        "{:#?}",
        detail.events
    );
    assert_eq!(query_i64(dir.path(), "SELECT count(*) FROM dissection_runs").await, 1, "the same run resumed");
    assert_eq!(query_i64(dir.path(), "SELECT count(*) FROM run_neurons WHERE status = 'done'").await, 2);

    // Cancelling a running job stops it between neurons and keeps those finished.
    let (cookie, csrf) = s.login().await;
    let id = start_job(&s, &cookie, &csrf, "0-7").await;
    s.follow(id, |j| j.stage.as_deref() == Some("neurons") || j.is_finished()).await;
    let (status, text) = s.post("/api/jobs/cancel", Some(&cookie), serde_json::json!({ "csrf": csrf, "id": id })).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let last = s.follow(id, JobView::is_finished).await.pop().unwrap();
    assert_eq!(last.status, "cancelled", "{last:#?}");
    assert!(last.message.as_deref().is_some_and(|m| m.starts_with("stopped after")), "{last:#?}");
}
