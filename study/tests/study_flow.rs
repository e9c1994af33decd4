//! A whole study on the database: set-up checks, task assignment, submissions (valid, invalid,
//! rejected, retried), attention checks, results by hand, rater exclusion, exports.

mod fixture;

use fixture::{label, labelled_db, FixedImages};
use sqlx::SqlitePool;
use study::types::{LayerChoice, MethodRef, NewStudy, Submission};
use study::{assign, raters, results, setup, submit, StudyError};

fn methods(names: &[&str]) -> Vec<MethodRef> {
    names.iter().map(|m| MethodRef { method: m.to_string(), source: String::new() }).collect()
}

fn layers(specs: &[(&str, &str)]) -> Vec<LayerChoice> {
    specs.iter().map(|(l, u)| LayerChoice { layer: l.to_string(), units: u.to_string() }).collect()
}

fn new_study() -> NewStudy {
    let mut s = NewStudy::with_defaults(
        "pilot",
        fixture::MODEL,
        layers(&[("block3", "random:3"), ("block5", "0,2")]),
        methods(&["dnd", "milan", "clip-dissect"]),
    );
    s.raters_per_item = 2;
    s.attention_checks = 1;
    s.seed = 7;
    s
}

async fn create(db: &SqlitePool, s: &NewStudy) -> Result<i64, StudyError> {
    setup::create_study(db, &FixedImages { db: db.clone() }, s).await
}

/// Creates `s` and opens it to raters.
async fn create_open(db: &SqlitePool, s: &NewStudy) -> i64 {
    let study_id = create(db, s).await.unwrap();
    setup::set_status(db, study_id, "open").await.unwrap();
    study_id
}

fn err_text(e: StudyError) -> String {
    e.to_string()
}

#[tokio::test]
async fn set_up_errors_name_the_problem_and_store_nothing() {
    let (_dir, db) = labelled_db().await;
    let mut s = new_study();
    s.methods = methods(&["dnd"]);
    assert!(err_text(create(&db, &s).await.unwrap_err()).contains("2 to 6 methods"));
    let mut s = new_study();
    s.layers = layers(&[("block4", "0")]);
    let e = err_text(create(&db, &s).await.unwrap_err());
    assert!(e.contains("no layer `block4`") && e.contains("block3, block5"), "{e}");
    // clip-dissect labels only even units.
    let mut s = new_study();
    s.layers = layers(&[("block3", "0-3")]);
    let e = err_text(create(&db, &s).await.unwrap_err());
    assert!(e.contains("units 1, 3 lack a label"), "{e}");
    let mut s = new_study();
    s.layers = layers(&[("block3", "random:5")]);
    let e = err_text(create(&db, &s).await.unwrap_err());
    assert!(e.contains("4 are labelled by every chosen method"), "{e}");
    let mut s = new_study();
    s.methods = methods(&["dnd", "tcav"]);
    assert!(err_text(create(&db, &s).await.unwrap_err()).contains("unknown method `tcav`"));
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM studies").fetch_one(&db).await.unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn set_up_snapshots_eligible_neurons_images_and_hidden_descriptions() {
    let (_dir, db) = labelled_db().await;
    let id = create(&db, &new_study()).await.unwrap();
    let units: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT l.name, n.unit, i.is_attention_check FROM study_items i JOIN neurons n ON n.id = i.neuron_id
         JOIN layers l ON l.id = n.layer_id WHERE i.study_id = ? ORDER BY l.name, n.unit",
    )
    .bind(id)
    .fetch_all(&db)
    .await
    .unwrap();
    let ordinary: Vec<_> = units.iter().filter(|u| u.2 == 0).collect();
    assert_eq!(ordinary.len(), 5);
    // Only units every method labelled (clip-dissect: even units) are drawn.
    assert!(units.iter().all(|u| u.1 % 2 == 0), "{units:?}");
    assert_eq!(ordinary.iter().filter(|u| u.0 == "block5").map(|u| u.1).collect::<Vec<_>>(), vec![0, 2]);
    // The attention check uses the one eligible block3 neuron left out of the sample.
    let checks: Vec<_> = units.iter().filter(|u| u.2 == 1).collect();
    assert_eq!(checks.len(), 1);
    assert!(!ordinary.iter().any(|u| u.0 == checks[0].0 && u.1 == checks[0].1));
    // Same seed, same sample.
    let again = create(&db, &new_study()).await.unwrap();
    let sample = |sid: i64| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT neuron_id FROM study_items WHERE study_id = ? ORDER BY neuron_id, is_attention_check",
            )
            .bind(sid)
            .fetch_all(&db)
            .await
            .unwrap()
        }
    };
    assert_eq!(sample(id).await, sample(again).await);
    let per_item: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM study_item_images m WHERE m.item_id = i.id),
                (SELECT COUNT(*) FROM study_descriptions d WHERE d.item_id = i.id AND d.is_decoy = 0),
                (SELECT COUNT(*) FROM study_descriptions d WHERE d.item_id = i.id AND d.is_decoy = 1)
         FROM study_items i WHERE i.study_id = ? ORDER BY i.is_attention_check",
    )
    .bind(id)
    .fetch_all(&db)
    .await
    .unwrap();
    assert!(per_item[..5].iter().all(|c| *c == (10, 3, 0)), "{per_item:?}");
    assert_eq!(per_item[5], (10, 3, 1));
    // The decoy is another neuron's label, never one of the check's own.
    let (decoy, own): (String, String) = sqlx::query_as(
        "SELECT d.text, (SELECT group_concat(o.text, '|') FROM study_descriptions o WHERE o.item_id = d.item_id AND o.is_decoy = 0)
         FROM study_descriptions d JOIN study_items i ON i.id = d.item_id WHERE i.study_id = ? AND d.is_decoy = 1",
    )
    .bind(id)
    .fetch_one(&db)
    .await
    .unwrap();
    assert!(!own.split('|').any(|o| o == decoy) && decoy.contains("concept"), "{decoy} vs {own}");
}

/// The method of each description id of a task (the test may look; raters cannot).
async fn methods_of(db: &SqlitePool, assignment_id: i64) -> Vec<(i64, String)> {
    sqlx::query_as(
        "SELECT d.id, COALESCE(m.method, 'decoy') FROM assignments a JOIN study_descriptions d ON d.item_id = a.item_id
         LEFT JOIN study_methods m ON m.id = d.study_method_id WHERE a.id = ?",
    )
    .bind(assignment_id)
    .fetch_all(db)
    .await
    .unwrap()
}

/// A rater's answer: a rating per method and the method picked as best.
fn answer(assignment_id: i64, methods: &[(i64, String)], rate: &[(&str, i64)], best: &str, key: &str) -> Submission {
    let rating_of = |m: &str| rate.iter().find(|r| r.0 == m).map(|r| r.1).unwrap_or(1);
    Submission {
        assignment_id,
        ratings: methods.iter().map(|(id, m)| (*id, rating_of(m))).collect(),
        best: methods.iter().find(|(_, m)| m == best).unwrap().0,
        client_time_ms: Some(1000),
        idempotency_key: key.to_string(),
    }
}

#[tokio::test]
async fn a_whole_study_gives_the_hand_computed_table() {
    let (_dir, db) = labelled_db().await;
    let study_id = create(&db, &new_study()).await.unwrap();
    let tokens = raters::invite(&db, study_id, 3, "lab").await.unwrap();
    // A draft study hands out no tasks.
    let page = assign::rater_page(&db, &tokens[0]).await.unwrap();
    assert_eq!((page.study_status.as_str(), page.task.is_none()), ("draft", true));
    setup::set_status(&db, study_id, "open").await.unwrap();

    // Rater 1 rates dnd 5, milan 2, clip 3 and picks dnd; rater 2 rates dnd 4, milan 1, clip 4
    // and picks dnd, except on their first task where they pick milan (invalid), and fails the
    // attention check (decoy rated 4 > 2); rater 3 comes last and finds nothing left: every
    // neuron has its two raters, and an attention check alone is no task.
    let plans: [(&[(&str, i64)], &str); 3] = [
        (&[("dnd", 5), ("milan", 2), ("clip-dissect", 3), ("decoy", 1)], "dnd"),
        (&[("dnd", 4), ("milan", 1), ("clip-dissect", 4), ("decoy", 4)], "dnd"),
        (&[("dnd", 3), ("milan", 3), ("clip-dissect", 5), ("decoy", 4)], "clip-dissect"),
    ];
    let mut seen_neurons = vec![Vec::new(); 3];
    for (r, token) in tokens.iter().enumerate() {
        let mut n = 0;
        while let Some(task) = assign::rater_page(&db, token).await.unwrap().task {
            n += 1;
            assert_eq!(task.number, n);
            // Rater 1 can do all 5 neurons and the check; rater 2 too, since quota is 2.
            assert_eq!(task.total, 6, "rater {r} task {n}");
            assert_eq!(task.images.len(), 10);
            // Resuming before answering gives the same task.
            assert_eq!(assign::rater_page(&db, token).await.unwrap().task.unwrap().assignment_id, task.assignment_id);
            let methods = methods_of(&db, task.assignment_id).await;
            let neuron: i64 = sqlx::query_scalar(
                "SELECT i.neuron_id FROM assignments a JOIN study_items i ON i.id = a.item_id WHERE a.id = ?",
            )
            .bind(task.assignment_id)
            .fetch_one(&db)
            .await
            .unwrap();
            assert!(!seen_neurons[r].contains(&neuron), "rater {r} saw neuron {neuron} twice");
            seen_neurons[r].push(neuron);
            let is_check = methods.iter().any(|m| m.1 == "decoy");
            let best = if r == 1 && n == 1 && !is_check { "milan" } else { plans[r].1 };
            let sub = answer(task.assignment_id, &methods, plans[r].0, best, &format!("task-key-{r}-{n}"));
            let ack = submit::submit(&db, token, &sub).await.unwrap();
            assert!(!ack.duplicate);
            // The next task the acknowledgement announces is the one the page then shows, with
            // the same progress (counted when it was assigned, and when it was read back).
            let page = assign::rater_page(&db, token).await.unwrap().task;
            let progress =
                |t: &Option<study::types::RaterTask>| t.as_ref().map(|t| (t.assignment_id, t.number, t.total));
            assert_eq!(progress(&ack.next), progress(&page), "rater {r} after task {n}");
            // A retry of the same submission is acknowledged again, not stored twice.
            let again = submit::submit(&db, token, &sub).await.unwrap();
            assert_eq!((again.response_id, again.duplicate), (ack.response_id, true));
        }
        let page = assign::rater_page(&db, token).await.unwrap();
        assert_eq!(page.completed, n);
    }
    assert_eq!(seen_neurons.iter().map(Vec::len).collect::<Vec<_>>(), vec![6, 6, 0]);
    // Every ordinary item got exactly two raters.
    let coverage: Vec<i64> = sqlx::query_scalar(
        "SELECT COUNT(p.id) FROM study_items i LEFT JOIN responses p ON p.item_id = i.id
         WHERE i.study_id = ? AND i.is_attention_check = 0 GROUP BY i.id",
    )
    .bind(study_id)
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(coverage, vec![2; 5]);

    let res = results::results(&db, study_id).await.unwrap();
    let all = res.rows.last().unwrap();
    assert_eq!(all.layer, None);
    assert_eq!((all.valid, all.total), (9, 10));
    let by = |m: &str| all.methods.iter().find(|x| x.method.method == m).unwrap().clone();
    // dnd over the 9 valid responses: five 5s (rater 1) and four 4s (rater 2).
    let dnd = by("dnd");
    assert!((dnd.mean.unwrap() - 41.0 / 9.0).abs() < 1e-9);
    let sd = ((5.0 * (5.0 - 41.0 / 9.0f64).powi(2) + 4.0 * (4.0 - 41.0 / 9.0f64).powi(2)) / 8.0).sqrt();
    assert!((dnd.sem.unwrap() - sd / 3.0).abs() < 1e-9);
    assert_eq!((dnd.ratings, dnd.best_count, dnd.best_share), (9, 9, Some(1.0)));
    let milan = by("milan");
    assert!((milan.mean.unwrap() - 14.0 / 9.0).abs() < 1e-9);
    assert_eq!((milan.best_count, milan.best_share), (0, Some(0.0)));
    let clip = by("clip-dissect");
    assert!((clip.mean.unwrap() - 31.0 / 9.0).abs() < 1e-9);
    // Per layer: 3 block3 neurons and 2 block5 neurons, two responses each.
    assert_eq!(
        res.rows.iter().map(|r| (r.layer.clone(), r.total)).collect::<Vec<_>>(),
        vec![(Some("block3".into()), 6), (Some("block5".into()), 4), (None, 10)]
    );
    assert_eq!(res.rows[0].valid + res.rows[1].valid, 9);
    // Agreement: raters 1 and 2 disagree on every method but keep the order dnd > clip > milan.
    assert_eq!(res.agreement.len(), 4);
    assert!(res.agreement[3].alpha.unwrap() > 0.5, "{:?}", res.agreement);
    // Rater stats: attention checks and the failure of rater 2.
    let stats: Vec<(i64, i64, i64, i64)> =
        res.raters.iter().map(|r| (r.responses, r.invalid, r.attention_checks, r.attention_failures)).collect();
    assert_eq!(stats, vec![(6, 0, 1, 0), (6, 1, 1, 1), (0, 0, 0, 0)]);
    assert_eq!(res.raters[0].median_time_ms, Some(1000));
    // Flags: 1 s per task is too fast for anyone; rater 2 also failed their attention check.
    use study::types::RaterFlag::{FailedAttentionChecks, TooFast};
    let flags: Vec<_> = res.raters.iter().map(|r| r.flags()).collect();
    assert_eq!(
        flags,
        vec![
            vec![TooFast { median_ms: 1000 }],
            vec![FailedAttentionChecks { failed: 1, checks: 1 }, TooFast { median_ms: 1000 }],
            vec![],
        ]
    );
    // Per neuron: every rated neuron in layer order then unit, two responses each; where both
    // are valid, dnd's mean is (5 + 4) / 2.
    let neurons: Vec<(&str, i64, i64)> = res.neurons.iter().map(|n| (n.layer.as_str(), n.unit, n.total)).collect();
    assert_eq!(
        neurons.iter().map(|n| (n.0, n.2)).collect::<Vec<_>>(),
        [("block3", 2); 3].into_iter().chain([("block5", 2); 2]).collect::<Vec<_>>()
    );
    assert!(neurons.windows(2).all(|w| w[0].0 != w[1].0 || w[0].1 < w[1].1), "{neurons:?}");
    assert_eq!(res.neurons.iter().map(|n| n.valid).sum::<i64>(), 9);
    for n in res.neurons.iter().filter(|n| n.valid == 2) {
        assert_eq!(n.methods[0].mean, Some(4.5), "{n:?}");
    }

    // Excluding rater 2 recomputes the table from rater 1 alone.
    raters::set_excluded(&db, study_id, res.raters[1].rater_id, Some("too fast")).await.unwrap();
    let res = results::results(&db, study_id).await.unwrap();
    let all = res.rows.last().unwrap();
    assert_eq!((all.valid, all.total), (5, 5));
    assert_eq!(all.methods[0].mean, Some(5.0));

    // Exports reveal methods: 3 rows per ordinary response, 4 per attention check.
    let rows = study::export::response_rows(&db, study_id).await.unwrap();
    assert_eq!(rows.len(), 10 * 3 + 2 * 4);
    assert_eq!(rows.iter().filter(|r| r.method == "decoy").count(), 2);
    assert!(rows.iter().any(|r| r.description == label("dnd", "block5", 2)));
    let csv = study::export::responses_csv(&rows);
    assert!(csv.starts_with("response_id,rater_id,worker_id,rater_excluded,layer,unit"), "{csv}");
    assert_eq!(csv.lines().count(), rows.len() + 1);
    let table = study::export::results_csv(&res);
    assert_eq!(table.lines().count(), 1 + 3 * 3);
    assert!(table.starts_with("layer,method,source,mean_rating"), "{table}");
    // Rater 1 alone now: 5 neurons × 3 methods, dnd rated 5 on each.
    let per_neuron = study::export::neurons_csv(&res);
    assert!(per_neuron.starts_with("layer,unit,method,source,mean_rating"), "{per_neuron}");
    assert_eq!(per_neuron.lines().count(), 1 + 5 * 3);
    assert_eq!(per_neuron.lines().filter(|l| l.contains(",dnd,") && l.contains(",5.0,")).count(), 5, "{per_neuron}");
}

#[tokio::test]
async fn bad_submissions_are_rejected_with_a_reason() {
    let (_dir, db) = labelled_db().await;
    let study_id = create_open(&db, &new_study()).await;
    let tokens = raters::invite(&db, study_id, 2, "").await.unwrap();
    let task = assign::rater_page(&db, &tokens[0]).await.unwrap().task.unwrap();
    let methods = methods_of(&db, task.assignment_id).await;
    let good = answer(task.assignment_id, &methods, &[("dnd", 5)], "dnd", "key-good-1");
    let reject = |mut change: Box<dyn FnMut(&mut Submission)>| {
        let mut s = good.clone();
        change(&mut s);
        s
    };
    let cases: Vec<(Submission, &str)> = vec![
        (reject(Box::new(|s| s.ratings[0].1 = 6)), "outside the 1-5 scale"),
        (reject(Box::new(|s| s.ratings[0].1 = 0)), "outside the 1-5 scale"),
        (reject(Box::new(|s| s.ratings[0].0 = 999_999)), "is not one of this task's descriptions"),
        (
            reject(Box::new(|s| {
                s.ratings.pop();
            })),
            "has no rating",
        ),
        (reject(Box::new(|s| s.ratings.push(s.ratings[0]))), "rated twice"),
        (reject(Box::new(|s| s.best = 999_999)), "best pick 999999 is not one of"),
        (reject(Box::new(|s| s.idempotency_key = "x".into())), "idempotency key"),
    ];
    for (sub, expect) in cases {
        let e = submit::submit(&db, &tokens[0], &sub).await.unwrap_err();
        assert!(matches!(e, StudyError::Invalid(_)) && e.to_string().contains(expect), "{e} / {expect}");
    }
    // Another rater cannot answer this task, an unknown token is unknown.
    let e = submit::submit(&db, &tokens[1], &good).await.unwrap_err();
    assert!(matches!(e, StudyError::NotFound(_)), "{e}");
    assert!(matches!(submit::submit(&db, "nope", &good).await.unwrap_err(), StudyError::NotFound(_)));
    // Accepted once; a second, different answer to the same task is a conflict.
    submit::submit(&db, &tokens[0], &good).await.unwrap();
    let mut other = good.clone();
    other.idempotency_key = "key-other-2".into();
    assert!(matches!(submit::submit(&db, &tokens[0], &other).await.unwrap_err(), StudyError::Conflict(_)));
    // Closed studies and revoked links take nothing.
    let task = assign::rater_page(&db, &tokens[0]).await.unwrap().task.unwrap();
    let next = answer(task.assignment_id, &methods_of(&db, task.assignment_id).await, &[], "dnd", "key-next-3");
    setup::set_status(&db, study_id, "closed").await.unwrap();
    assert!(matches!(submit::submit(&db, &tokens[0], &next).await.unwrap_err(), StudyError::Forbidden(_)));
    setup::set_status(&db, study_id, "open").await.unwrap();
    let rater_id: i64 = sqlx::query_scalar("SELECT rater_id FROM assignments WHERE id = ?")
        .bind(task.assignment_id)
        .fetch_one(&db)
        .await
        .unwrap();
    raters::revoke(&db, study_id, rater_id).await.unwrap();
    let e = submit::submit(&db, &tokens[0], &next).await.unwrap_err();
    assert!(matches!(e, StudyError::Forbidden(_)) && e.to_string().contains("revoked"), "{e}");
    assert!(matches!(assign::rater_page(&db, &tokens[0]).await.unwrap_err(), StudyError::Forbidden(_)));
    // Nothing already stored was lost on the way.
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM responses").fetch_one(&db).await.unwrap();
    assert_eq!(stored, 1);
    // And research data cannot be deleted.
    assert!(sqlx::query("DELETE FROM responses").execute(&db).await.is_err());
}

/// The per-rater counters kept by triggers (migrations/0006) equal what the rater's history says.
async fn assert_counters_match_history(db: &SqlitePool) {
    let rows: Vec<(i64, i64, i64, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT r.id, r.tasks_given, r.tasks_completed, r.seen_open_items,
                (SELECT COUNT(*) FROM assignments a WHERE a.rater_id = r.id),
                (SELECT COUNT(*) FROM assignments a WHERE a.rater_id = r.id AND a.completed_at IS NOT NULL),
                (SELECT COUNT(DISTINCT i.id) FROM assignments a JOIN study_items j ON j.id = a.item_id
                 JOIN study_items i ON i.neuron_id = j.neuron_id JOIN studies s ON s.id = i.study_id
                 WHERE a.rater_id = r.id AND i.study_id = r.study_id AND i.is_attention_check = 0
                   AND i.slots_taken < s.raters_per_item)
         FROM raters r",
    )
    .fetch_all(db)
    .await
    .unwrap();
    assert!(!rows.is_empty());
    for (id, given, completed, seen_open, given_h, completed_h, seen_open_h) in rows {
        assert_eq!(
            (given, completed, seen_open),
            (given_h, completed_h, seen_open_h),
            "rater {id}: counters vs history"
        );
    }
    let seen: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT DISTINCT a.rater_id, i.neuron_id FROM assignments a JOIN study_items i ON i.id = a.item_id)",
    )
    .fetch_one(db)
    .await
    .unwrap();
    let kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rater_neurons").fetch_one(db).await.unwrap();
    assert_eq!(kept, seen, "rater_neurons holds exactly the neurons shown to each rater");
}

#[tokio::test]
async fn the_open_link_issues_tokens_and_concurrent_raters_never_overfill_an_item() {
    let (_dir, db) = labelled_db().await;
    let mut s = new_study();
    s.attention_checks = 0;
    let study_id = create_open(&db, &s).await;
    let link = raters::open_link(&db, study_id).await.unwrap();
    assert_eq!(raters::open_link(&db, study_id).await.unwrap(), link, "the open link is stable");
    assert!(matches!(raters::claim_open_link(&db, "wrong").await.unwrap_err(), StudyError::NotFound(_)));
    // Submissions go through the group-commit queue, as the server sends them; every answer is
    // also sent twice at once, as a client retrying too early would.
    let queue = submit::SubmissionQueue::start(db.clone());
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let token = raters::claim_open_link(&db, &link).await.unwrap();
        let (db, queue) = (db.clone(), queue.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            while let Some(task) = assign::rater_page(&db, &token).await.unwrap().task {
                let methods = methods_of(&db, task.assignment_id).await;
                let sub = answer(task.assignment_id, &methods, &[("dnd", 4)], "dnd", &format!("{token}-{done}"));
                let (a, b) = tokio::join!(queue.submit(&token, &sub), queue.submit(&token, &sub));
                let (a, b) = (a.unwrap(), b.unwrap());
                assert_eq!(a.response_id, b.response_id);
                assert!(a.duplicate != b.duplicate, "one stored, one acknowledged as a retry: {a:?} {b:?}");
                done += 1;
            }
            done
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 5 * 2, "5 neurons × 2 raters");
    let over: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT item_id FROM responses WHERE study_id = ? GROUP BY item_id HAVING COUNT(*) <> 2)",
    )
    .bind(study_id)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(over, 0);
    let origins: Vec<String> = sqlx::query_scalar("SELECT DISTINCT origin FROM raters WHERE study_id = ?")
        .bind(study_id)
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(origins, vec!["open_link".to_string()]);
    assert_counters_match_history(&db).await;
}

#[tokio::test]
async fn an_abandoned_slot_goes_to_another_rater_and_a_late_answer_is_kept() {
    let (_dir, db) = labelled_db().await;
    let mut s =
        NewStudy::with_defaults("slots", fixture::MODEL, layers(&[("block5", "0,2")]), methods(&["dnd", "milan"]));
    s.raters_per_item = 1;
    let study_id = create_open(&db, &s).await;
    let t = raters::invite(&db, study_id, 3, "").await.unwrap();
    let a = assign::rater_page(&db, &t[0]).await.unwrap().task.unwrap();
    let b = assign::rater_page(&db, &t[1]).await.unwrap().task.unwrap();
    assert_eq!(b.total, 1, "the other item is held by rater A");
    // Both items are held: rater C gets nothing while A's hold is fresh...
    assert!(assign::rater_page(&db, &t[2]).await.unwrap().task.is_none());
    // ...and A's item once A has been away longer than the abandonment delay.
    sqlx::query("UPDATE assignments SET assigned_at = strftime('%Y-%m-%dT%H:%M:%fZ','now','-31 minutes') WHERE id = ?")
        .bind(a.assignment_id)
        .execute(&db)
        .await
        .unwrap();
    let c = assign::rater_page(&db, &t[2]).await.unwrap().task.unwrap();
    let item = |id: i64| {
        let db = db.clone();
        async move {
            sqlx::query_as::<_, (i64, i64)>(
                "SELECT i.id, i.slots_taken FROM assignments a JOIN study_items i ON i.id = a.item_id WHERE a.id = ?",
            )
            .bind(id)
            .fetch_one(&db)
            .await
            .unwrap()
        }
    };
    assert_eq!(item(c.assignment_id).await, (item(a.assignment_id).await.0, 1));
    // A answers after all: kept, and the slot counts again.
    let late = answer(a.assignment_id, &methods_of(&db, a.assignment_id).await, &[("dnd", 4)], "dnd", "late-answer-1");
    submit::submit(&db, &t[0], &late).await.unwrap();
    assert_eq!(item(a.assignment_id).await.1, 2);
    let completed: Option<String> = sqlx::query_scalar("SELECT completed_at FROM assignments WHERE id = ?")
        .bind(a.assignment_id)
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(completed.is_some(), "a stored response completes its assignment");
    // Releasing a slot and answering late both moved the counters the way the history did.
    assert_counters_match_history(&db).await;
}

#[tokio::test]
async fn one_batch_with_a_retry_and_a_bad_answer_stores_each_good_answer_once() {
    let (_dir, db) = labelled_db().await;
    let study_id = create_open(&db, &new_study()).await;
    let tokens = raters::invite(&db, study_id, 2, "").await.unwrap();
    let queue = submit::SubmissionQueue::start(db.clone());
    let mut subs = Vec::new();
    for (r, token) in tokens.iter().enumerate() {
        let task = assign::rater_page(&db, token).await.unwrap().task.unwrap();
        let methods = methods_of(&db, task.assignment_id).await;
        subs.push((
            token.clone(),
            answer(task.assignment_id, &methods, &[("dnd", 5)], "dnd", &format!("batch-answer-{r}")),
        ));
    }
    let mut bad = subs[1].1.clone();
    bad.ratings[0].1 = 9;
    // Sent at once, so the writer gets them in one batch: answer 0 twice, a bad one, answer 1.
    let (a, a_again, refused, b) = tokio::join!(
        queue.submit(&subs[0].0, &subs[0].1),
        queue.submit(&subs[0].0, &subs[0].1),
        queue.submit(&subs[1].0, &bad),
        queue.submit(&subs[1].0, &subs[1].1),
    );
    let (a, a_again, b) = (a.unwrap(), a_again.unwrap(), b.unwrap());
    assert_eq!(a.response_id, a_again.response_id);
    assert!(a.duplicate != a_again.duplicate);
    assert!(!b.duplicate && b.response_id != a.response_id);
    assert!(refused.unwrap_err().to_string().contains("outside the 1-5 scale"));
    let counts: (i64, i64) = sqlx::query_as("SELECT (SELECT COUNT(*) FROM responses), (SELECT COUNT(*) FROM ratings)")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(counts, (2, 2 * 3));
}

#[tokio::test]
async fn a_key_reused_with_another_answer_is_refused_and_the_first_answer_stands() {
    let (_dir, db) = labelled_db().await;
    let mut s = new_study();
    s.attention_checks = 0;
    let study_id = create_open(&db, &s).await;
    let token = raters::invite(&db, study_id, 1, "").await.unwrap().remove(0);
    let task = assign::rater_page(&db, &token).await.unwrap().task.unwrap();
    let methods = methods_of(&db, task.assignment_id).await;
    let first = answer(task.assignment_id, &methods, &[("dnd", 5)], "dnd", "reused-key-1");
    let mut other_rating = first.clone();
    other_rating.ratings[0].1 = if first.ratings[0].1 == 1 { 2 } else { 1 };
    let other_best = answer(task.assignment_id, &methods, &[("dnd", 5)], "milan", "reused-key-1");
    let stored = submit::submit(&db, &token, &first).await.unwrap();
    // The same answer again (ratings in another order included) is a retry.
    let mut reordered = first.clone();
    reordered.ratings.reverse();
    for retry in [&first, &reordered] {
        let again = submit::submit(&db, &token, retry).await.unwrap();
        assert!(again.duplicate && again.response_id == stored.response_id);
    }
    // Another answer under the same key is refused, and the first answer stands.
    for changed in [&other_rating, &other_best] {
        let e = submit::submit(&db, &token, changed).await.unwrap_err();
        assert_eq!(e.status(), 409, "{e}");
        assert!(e.to_string().contains("same idempotency key"), "{e}");
    }
    let stored_answer = |response_id: i64| {
        let db = db.clone();
        async move {
            let best: i64 = sqlx::query_scalar("SELECT best_description_id FROM responses WHERE id = ?")
                .bind(response_id)
                .fetch_one(&db)
                .await
                .unwrap();
            let ratings: Vec<(i64, i64)> = sqlx::query_as(
                "SELECT description_id, rating FROM ratings WHERE response_id = ? ORDER BY description_id",
            )
            .bind(response_id)
            .fetch_all(&db)
            .await
            .unwrap();
            (best, ratings)
        }
    };
    let sorted = |sub: &Submission| {
        let mut r = sub.ratings.clone();
        r.sort_unstable();
        (sub.best, r)
    };
    assert_eq!(stored_answer(stored.response_id).await, sorted(&first));
    // Two answers to the next task under one key, sent together so the group writer gets them
    // in one batch: one is stored, the other refused.
    let next = assign::rater_page(&db, &token).await.unwrap().task.unwrap();
    let methods = methods_of(&db, next.assignment_id).await;
    let a = answer(next.assignment_id, &methods, &[("dnd", 5)], "dnd", "reused-key-2");
    let b = answer(next.assignment_id, &methods, &[("milan", 5)], "milan", "reused-key-2");
    let queue = submit::SubmissionQueue::start(db.clone());
    let (ra, rb) = tokio::join!(queue.submit(&token, &a), queue.submit(&token, &b));
    let (ack, kept, refused) = match (ra, rb) {
        (Ok(ack), Err(e)) => (ack, &a, e),
        (Err(e), Ok(ack)) => (ack, &b, e),
        other => panic!("one answer must be stored and one refused: {other:?}"),
    };
    assert!(!ack.duplicate);
    assert_eq!(refused.status(), 409, "{refused}");
    assert_eq!(stored_answer(ack.response_id).await, sorted(kept));
}

#[tokio::test]
async fn results_and_exports_say_when_dnd_labels_come_from_substitutes() {
    let (_dir, db) = labelled_db().await;
    // The fixture's dnd labels become those of a run with the embedded (substitute) components.
    let set: i64 = sqlx::query_scalar(
        "INSERT INTO probe_sets (slug, name, source, root_path) VALUES ('p', 'P', 'folder', '/p') RETURNING id",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    let run: i64 = sqlx::query_scalar(
        "INSERT INTO dissection_runs (model_id, layer_id, probe_set_id, scoring, neurons_spec, uses_substitutes, status)
         SELECT model_id, id, ?, 'topk_squared_image_products', '0-5', 1, 'done' FROM layers WHERE name = 'block5' RETURNING id",
    )
    .bind(set)
    .fetch_one(&db)
    .await
    .unwrap();
    sqlx::query("UPDATE labels SET run_id = ?, import_id = NULL WHERE method = 'dnd'")
        .bind(run)
        .execute(&db)
        .await
        .unwrap();
    let s = NewStudy::with_defaults("honest", fixture::MODEL, layers(&[("block5", "0,2")]), methods(&["dnd", "milan"]));
    let study_id = create_open(&db, &s).await;
    let token = raters::invite(&db, study_id, 1, "").await.unwrap().remove(0);
    let task = assign::rater_page(&db, &token).await.unwrap().task.unwrap();
    let sub =
        answer(task.assignment_id, &methods_of(&db, task.assignment_id).await, &[("dnd", 4)], "dnd", "honest-answer-1");
    submit::submit(&db, &token, &sub).await.unwrap();

    let res = results::results(&db, study_id).await.unwrap();
    assert_eq!(res.substituted, methods(&["dnd"]));
    let table = study::export::results_csv(&res);
    assert!(table.lines().next().unwrap().contains("uses_substitutes"), "{table}");
    assert!(table.lines().any(|l| l.contains(",dnd,") && l.contains(",true,")), "{table}");
    assert!(table.lines().any(|l| l.contains(",milan,") && l.contains(",false,")), "{table}");
    let rows = study::export::response_rows(&db, study_id).await.unwrap();
    assert!(rows.iter().all(|r| r.label_uses_substitutes == (r.method == "dnd")), "{rows:?}");
}

/// The neuron behind an assignment (the test may look; raters cannot).
async fn neuron_of(db: &SqlitePool, assignment_id: i64) -> i64 {
    sqlx::query_scalar("SELECT i.neuron_id FROM assignments a JOIN study_items i ON i.id = a.item_id WHERE a.id = ?")
        .bind(assignment_id)
        .fetch_one(db)
        .await
        .unwrap()
}

#[tokio::test]
async fn each_acknowledgement_carries_the_next_task_under_the_assignment_rules() {
    let (_dir, db) = labelled_db().await;
    let study_id = create_open(&db, &new_study()).await;
    let tokens = raters::invite(&db, study_id, 3, "").await.unwrap();
    let queue = submit::SubmissionQueue::start(db.clone());
    // Three raters at once, each asking for their page once and then living on acknowledgements.
    let mut runs = Vec::new();
    for (r, token) in tokens.into_iter().enumerate() {
        let (db, queue) = (db.clone(), queue.clone());
        runs.push(tokio::spawn(async move {
            let mut next = queue.page(&token).await.unwrap().task;
            let (mut neurons, mut number) = (Vec::new(), 0);
            while let Some(task) = next {
                number += 1;
                assert_eq!(task.number, number, "rater {r}: progress counts every answered task");
                assert_eq!(task.images.len(), 10);
                let methods = methods_of(&db, task.assignment_id).await;
                // The task shows each of its item's descriptions once, by id and text.
                let mut shown: Vec<i64> = task.descriptions.iter().map(|d| d.id).collect();
                shown.sort_unstable();
                let mut stored: Vec<i64> = methods.iter().map(|m| m.0).collect();
                stored.sort_unstable();
                assert_eq!(shown, stored);
                let neuron = neuron_of(&db, task.assignment_id).await;
                assert!(!neurons.contains(&neuron), "rater {r} got neuron {neuron} twice");
                neurons.push(neuron);
                // Leaving and coming back shows the task the last acknowledgement announced.
                // ("of n" may shrink meanwhile: other raters fill the items.)
                let resumed = queue.page(&token).await.unwrap().task.unwrap();
                assert_eq!(
                    (resumed.assignment_id, resumed.number, &resumed.descriptions),
                    (task.assignment_id, number, &task.descriptions)
                );
                let sub = answer(task.assignment_id, &methods, &[("dnd", 4)], "dnd", &format!("ack-next-{r}-{number}"));
                let ack = queue.submit(&token, &sub).await.unwrap();
                assert!(!ack.duplicate);
                // A retry is acknowledged with the same next task, not a second one.
                let retry = queue.submit(&token, &sub).await.unwrap();
                let announced = |t: &Option<study::types::RaterTask>| {
                    t.as_ref().map(|t| (t.assignment_id, t.number, t.descriptions.clone()))
                };
                assert_eq!((retry.response_id, retry.duplicate), (ack.response_id, true));
                assert_eq!(announced(&retry.next), announced(&ack.next));
                next = ack.next;
            }
            (neurons.len(), queue.page(&token).await.unwrap().completed)
        }));
    }
    let mut done = 0;
    for run in runs {
        let (tasks, completed) = run.await.unwrap();
        assert_eq!(tasks as i64, completed);
        done += tasks;
    }
    // 5 neurons × 2 raters, plus one attention check for each rater who had ordinary tasks.
    let (ordinary, checks): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE(SUM(i.is_attention_check = 0), 0), COALESCE(SUM(i.is_attention_check = 1), 0)
         FROM responses p JOIN study_items i ON i.id = p.item_id WHERE p.study_id = ?",
    )
    .bind(study_id)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(ordinary, 10);
    assert_eq!(done as i64, ordinary + checks);
    let coverage: Vec<i64> = sqlx::query_scalar(
        "SELECT COUNT(p.id) FROM study_items i LEFT JOIN responses p ON p.item_id = i.id
         WHERE i.study_id = ? AND i.is_attention_check = 0 GROUP BY i.id",
    )
    .bind(study_id)
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(coverage, vec![2; 5], "each neuron gets exactly its two distinct raters");
    // A rater joining now finds every neuron with its two raters.
    let token = raters::invite(&db, study_id, 1, "").await.unwrap().remove(0);
    assert!(queue.page(&token).await.unwrap().task.is_none(), "nothing left for a fourth rater");
    assert_counters_match_history(&db).await;
}

#[tokio::test]
async fn no_next_task_once_the_study_closes() {
    let (_dir, db) = labelled_db().await;
    let study_id = create_open(&db, &new_study()).await;
    let token = raters::invite(&db, study_id, 1, "").await.unwrap().remove(0);
    let queue = submit::SubmissionQueue::start(db.clone());
    let first = queue.page(&token).await.unwrap().task.unwrap();
    let sub = answer(
        first.assignment_id,
        &methods_of(&db, first.assignment_id).await,
        &[("dnd", 4)],
        "dnd",
        "close-answer-1",
    );
    let second = queue.submit(&token, &sub).await.unwrap().next.expect("four neurons are left");
    assert_eq!(second.number, 2);
    setup::set_status(&db, study_id, "closed").await.unwrap();
    let sub = answer(
        second.assignment_id,
        &methods_of(&db, second.assignment_id).await,
        &[("dnd", 4)],
        "dnd",
        "close-answer-2",
    );
    let refused = queue.submit(&token, &sub).await.unwrap_err();
    assert!(refused.to_string().contains("closed"), "{refused}");
    // The retry of the first answer is still acknowledged, with nothing to do next.
    let sub = answer(
        first.assignment_id,
        &methods_of(&db, first.assignment_id).await,
        &[("dnd", 4)],
        "dnd",
        "close-answer-1",
    );
    let retry = queue.submit(&token, &sub).await.unwrap();
    assert!(retry.duplicate && retry.next.is_none(), "{retry:?}");
}

#[tokio::test]
async fn each_task_shows_its_descriptions_in_its_own_random_order() {
    let (_dir, db) = labelled_db().await;
    let mut s = new_study();
    s.attention_checks = 0;
    s.raters_per_item = 16;
    let study_id = create_open(&db, &s).await;
    let queue = submit::SubmissionQueue::start(db.clone());
    // Per item (by its description ids), the orders its tasks showed them in.
    let mut orders: std::collections::HashMap<Vec<i64>, Vec<Vec<i64>>> = Default::default();
    for (r, token) in raters::invite(&db, study_id, 16, "").await.unwrap().into_iter().enumerate() {
        // The first task comes from the page, the second from an acknowledgement.
        let first = queue.page(&token).await.unwrap().task.unwrap();
        let methods = methods_of(&db, first.assignment_id).await;
        let ack = queue
            .submit(&token, &answer(first.assignment_id, &methods, &[], "dnd", &format!("order-answer-{r}")))
            .await
            .unwrap();
        for task in [first, ack.next.unwrap()] {
            let shown: Vec<i64> = task.descriptions.iter().map(|d| d.id).collect();
            let mut item: Vec<i64> = methods_of(&db, task.assignment_id).await.iter().map(|m| m.0).collect();
            item.sort_unstable();
            let mut sorted = shown.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, item, "each of the item's descriptions once");
            orders.entry(item).or_default().push(shown);
        }
    }
    // 32 tasks over 5 items of 3 descriptions: an order fixed per item would show one per item.
    let varied = orders.values().filter(|o| o.iter().any(|x| *x != o[0])).count();
    assert!(varied >= 3, "items whose tasks showed different orders: {varied} of {}: {orders:?}", orders.len());
}

/// The study lists count neurons, not tasks: attention-check tasks are counted apart.
#[tokio::test]
async fn summaries_count_neurons_and_attention_checks_apart() {
    let (_dir, db) = labelled_db().await;
    let id = create(&db, &new_study()).await.unwrap();
    let summary = setup::study_summary(&db, id).await.unwrap().unwrap();
    assert_eq!((summary.neurons, summary.attention_checks), (5, 1), "3 of block3 and 2 of block5, and 1 check");
    let tasks: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM study_items WHERE study_id = ?")
        .bind(id)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(tasks, 6, "the check is a task of its own");
    let listed = setup::list_studies(&db).await.unwrap();
    assert_eq!(listed[0].neurons, 5);
}
