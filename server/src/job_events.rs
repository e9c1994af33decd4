//! `GET /events/jobs`: the job queue as server-sent events. Each `jobs` event carries the newest
//! jobs as JSON (the same list as the `list_jobs` server function), sent on connect and after
//! every change, at most a few times a second (changes by `dnd dissect` runs, in other
//! processes, within a second); the stream ends when the server stops.

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::Router;
use futures::stream::{self, Stream};
use std::convert::Infallible;
use std::time::Duration;
use studio::db::Pool;
use studio::jobs::queue;
use studio::jobs::JobSignals;

/// Changes closer together than this are sent as one event.
const COALESCE: Duration = Duration::from_millis(150);

/// How often the stream looks for changes written by other processes (command-line runs).
const OTHER_PROCESSES_POLL: Duration = Duration::from_secs(1);

#[derive(Clone)]
struct EventsState {
    db: Pool,
    signals: JobSignals,
}

pub fn router<S: Clone + Send + Sync + 'static>(db: Pool, signals: JobSignals) -> Router<S> {
    Router::new().route("/events/jobs", get(job_events)).with_state(EventsState { db, signals })
}

async fn job_events(State(s): State<EventsState>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let changes = s.signals.subscribe();
    let others = queue::command_line_jobs_state(&s.db).await.unwrap_or_default();
    let stream = stream::unfold((s, changes, true, others), |(s, mut changes, first, mut others)| async move {
        if !first {
            loop {
                tokio::select! {
                    r = changes.changed() => {
                        r.ok()?;
                        tokio::time::sleep(COALESCE).await;
                        changes.borrow_and_update();
                        break;
                    }
                    _ = s.signals.closed() => return None,
                    // `dnd dissect` runs write from their own processes.
                    _ = tokio::time::sleep(OTHER_PROCESSES_POLL) => {
                        let now = queue::command_line_jobs_state(&s.db).await.unwrap_or_default();
                        if now != others {
                            others = now;
                            break;
                        }
                    }
                }
            }
        }
        let event = match queue::list(&s.db, queue::LIST_LIMIT).await {
            Ok(jobs) => {
                Event::default().event("jobs").data(serde_json::to_string(&jobs).unwrap_or_else(|_| "[]".into()))
            }
            Err(e) => Event::default().event("error").data(format!("the job queue cannot be read: {e}")),
        };
        Some((Ok(event), (s, changes, false, others)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
