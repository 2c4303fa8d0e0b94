//! Per-site politeness: at most `requests_per_second` request starts and at most
//! `max_in_flight` requests at once.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

/// The limits of one site, shared by all its requests.
#[derive(Debug)]
pub(crate) struct Limiter {
    /// One permit per request in flight; a permit is held from before the request is sent
    /// until its body is on disk. Never closed.
    in_flight: Semaphore,
    /// Time between two request starts (zero: no rate limit).
    interval: Duration,
    /// The earliest instant the next request may start.
    next_start: Mutex<Instant>,
}

impl Limiter {
    pub(crate) fn new(requests_per_second: f64, max_in_flight: usize) -> Self {
        let interval = if requests_per_second.is_finite() && requests_per_second > 0.0 {
            Duration::from_secs_f64(1.0 / requests_per_second)
        } else {
            Duration::ZERO
        };
        Limiter {
            in_flight: Semaphore::new(max_in_flight.max(1)),
            interval,
            next_start: Mutex::new(Instant::now()),
        }
    }

    /// Waits for a free slot and for the rate limit; the permit ends the slot when dropped.
    pub(crate) async fn acquire(&self) -> SemaphorePermit<'_> {
        let permit = self
            .in_flight
            .acquire()
            .await
            .expect("the in-flight semaphore is never closed");
        let start = {
            let mut next = self.next_start.lock().unwrap_or_else(|e| e.into_inner());
            let start = (*next).max(Instant::now());
            *next = start + self.interval;
            start
        };
        tokio::time::sleep_until(start).await;
        permit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn request_starts_are_spaced_by_the_rate() {
        let limiter = Limiter::new(4.0, 8);
        let t0 = Instant::now();
        for _ in 0..5 {
            drop(limiter.acquire().await);
        }
        assert_eq!(Instant::now() - t0, Duration::from_secs(1));
    }
}
