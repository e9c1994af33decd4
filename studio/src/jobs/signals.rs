//! Wake-ups between the job queue's writers, the runner and live views.

use std::sync::Arc;

/// "The job queue changed": wakes the runner (a job was queued) and every `/events/jobs` stream.
#[derive(Clone)]
pub struct JobSignals {
    wake: Arc<tokio::sync::Notify>,
    version: Arc<tokio::sync::watch::Sender<u64>>,
    closing: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for JobSignals {
    fn default() -> Self {
        JobSignals {
            wake: Arc::new(tokio::sync::Notify::new()),
            version: Arc::new(tokio::sync::watch::channel(0).0),
            closing: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }
}

impl JobSignals {
    /// Something about the queue changed (a job queued, cancelled, progressed or finished).
    pub fn changed(&self) {
        self.wake.notify_one();
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Resolves when a job may be waiting (or at once if one was signalled since the last wait).
    pub async fn wait_for_work(&self) {
        self.wake.notified().await
    }

    /// The server is stopping: live views end their streams so the HTTP server can drain.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves once [`JobSignals::close`] was called.
    pub async fn closed(&self) {
        let _ = self.closing.subscribe().wait_for(|c| *c).await;
    }

    /// Follows the queue's changes (for live views).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.version.subscribe()
    }
}
