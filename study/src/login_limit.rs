//! Failed admin logins, counted per client: after [`MAX_FAILURES`] wrong secrets within
//! [`WINDOW`], that client's next attempts are refused (429) until the oldest failure is older
//! than the window, even with the right secret — otherwise the limit would not slow guessing.
//! A successful login forgets the client's failures. Kept in memory: a restart forgets them too,
//! which costs an attacker a restart per ten guesses.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong secrets a client may send within [`WINDOW`].
pub const MAX_FAILURES: usize = 10;
/// How long a failure counts.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Clients remembered at most; beyond it the clients with no failure inside the window are
/// dropped, then (a flood of addresses) the table is cleared rather than grown.
const MAX_CLIENTS: usize = 10_000;

#[derive(Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl LoginLimiter {
    /// `Err(wait)` when `client` has used up its failures: how long until it may try again.
    pub fn check(&self, client: &str, now: Instant) -> Result<(), Duration> {
        let mut table = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let Some(times) = table.get_mut(client) else { return Ok(()) };
        forget_old(times, now);
        match times.front() {
            Some(&oldest) if times.len() >= MAX_FAILURES => Err(WINDOW.saturating_sub(now - oldest)),
            _ => Ok(()),
        }
    }

    /// Records a wrong secret from `client`.
    pub fn failed(&self, client: &str, now: Instant) {
        let mut table = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if table.len() >= MAX_CLIENTS && !table.contains_key(client) {
            table.retain(|_, times| {
                forget_old(times, now);
                !times.is_empty()
            });
            if table.len() >= MAX_CLIENTS {
                table.clear();
            }
        }
        let times = table.entry(client.to_string()).or_default();
        forget_old(times, now);
        times.push_back(now);
    }

    /// A right secret: the client's failures are forgotten.
    pub fn succeeded(&self, client: &str) {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(client);
    }
}

fn forget_old(times: &mut VecDeque<Instant>, now: Instant) {
    while times.front().is_some_and(|&t| now.duration_since(t) >= WINDOW) {
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_held_back_after_ten_failures_until_the_oldest_leaves_the_window() {
        let limiter = LoginLimiter::default();
        let start = Instant::now();
        let minute = Duration::from_secs(60);
        for i in 0..MAX_FAILURES as u32 {
            assert_eq!(limiter.check("a", start + minute * i), Ok(()), "attempt {i}");
            limiter.failed("a", start + minute * i);
        }
        // Ten failures at minutes 0..9: the eleventh attempt at minute 10 waits until minute 15.
        assert_eq!(limiter.check("a", start + minute * 10), Err(minute * 5));
        // Other clients are not affected.
        assert_eq!(limiter.check("b", start + minute * 10), Ok(()));
        // At minute 15 the first failure no longer counts.
        assert_eq!(limiter.check("a", start + minute * 15), Ok(()));
        // A success forgets the rest.
        limiter.failed("a", start + minute * 15);
        assert!(limiter.check("a", start + minute * 15).is_err());
        limiter.succeeded("a");
        assert_eq!(limiter.check("a", start + minute * 15), Ok(()));
    }

    #[test]
    fn the_table_stays_bounded_under_a_flood_of_clients() {
        let limiter = LoginLimiter::default();
        let now = Instant::now();
        for i in 0..MAX_CLIENTS + 5 {
            limiter.failed(&format!("client-{i}"), now);
        }
        assert!(limiter.failures.lock().unwrap().len() <= MAX_CLIENTS);
    }
}
