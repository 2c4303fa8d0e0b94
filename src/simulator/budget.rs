//! The API account's request budget, as the vendor documents it: "Requests are limited
//! to 20 per second and 15,000 per hour. This limit applies to all API endpoints and is
//! per API account." The simulator has one API account, so one `Budget` counts every
//! request of every client using it: btic's HTTP requests and, when set, another client
//! of the same account (a SIEM connector) that spends requests in the background.
//!
//! Both limits are rolling windows (the last second, the last `hour`), kept as queues of
//! the instants of the requests they counted. A request refused for want of budget costs
//! nothing, so a full window never grows: the hour's queue holds at most `per_hour`
//! entries while that limit is on. What the vendor does once the budget is spent is not
//! documented; the simulator refuses with HTTP 429 (see `server`), with or without
//! `Retry-After`. A storm refuses everything for a while without counting it, as an
//! appliance under someone else's load might.
//!
//! Time is tokio's, and every method takes `now`, so tests can pause the clock.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The rate limits of the simulated API account (0 turns a limit off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateBudget {
    /// Requests counted in any rolling second. Default 20, the vendor's.
    pub per_second: u32,
    /// Requests counted in any rolling `hour`. Default 15,000, the vendor's. Also the
    /// `X-RateLimit-Limit` every counted answer carries (none when 0).
    pub per_hour: u32,
    /// The length of the "hour" window: 3600 s by default, shorter in tests.
    pub hour: Duration,
    /// Whether a refusal carries `Retry-After` (whole seconds until a slot frees). The
    /// vendor does not document it, so it is off by default.
    pub retry_after: bool,
}

impl Default for RateBudget {
    fn default() -> Self {
        RateBudget {
            per_second: 20,
            per_hour: 15_000,
            hour: Duration::from_secs(3600),
            retry_after: false,
        }
    }
}

impl RateBudget {
    /// No limit at all (for tests about something else that send requests in bursts).
    pub fn unlimited() -> Self {
        RateBudget {
            per_second: 0,
            per_hour: 0,
            ..RateBudget::default()
        }
    }
}

/// Who spends a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller {
    /// A request over HTTP (btic, curl, a test).
    Http,
    /// The other client of the same account (`Options::other_client_per_minute`).
    Other,
}

/// A request the budget refused (and did not count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The `Retry-After` to send, in seconds, if any.
    pub(crate) retry_after: Option<u64>,
}

/// What the budget made of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admission {
    /// `None`: counted, go ahead.
    pub(crate) refused: Option<Refusal>,
    /// `per_hour` (the `X-RateLimit-Limit`; 0: no header).
    pub(crate) limit: u32,
    /// `per_hour` minus the requests counted in the rolling hour, this one included,
    /// never below 0 (the `X-RateLimit-Remaining`).
    pub(crate) remaining: u32,
}

/// Counters of what the budget has done, for `Stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct BudgetCounts {
    /// HTTP requests refused with 429, for want of budget or in a storm.
    pub(crate) rate_limited: u64,
    /// The other client's requests counted.
    pub(crate) other_requests: u64,
    /// The other client's requests refused.
    pub(crate) other_refused: u64,
    /// The most requests counted in any rolling second, all callers.
    pub(crate) max_in_second: u64,
    /// The most requests counted in any rolling hour, all callers.
    pub(crate) max_in_hour: u64,
    /// The most HTTP requests counted in any rolling hour (the other client's left out).
    pub(crate) client_max_in_hour: u64,
}

/// The account's budget: the limits, the two rolling windows and a storm.
#[derive(Debug)]
pub(crate) struct Budget {
    limits: RateBudget,
    /// Instants of the requests counted in the last second (kept with the limit off
    /// too, for `max_in_second`; a second's worth is small).
    second: VecDeque<Instant>,
    /// Instants and callers of the requests counted in the last `hour`; at most
    /// `per_hour` entries while that limit is on.
    hour: VecDeque<(Instant, Caller)>,
    /// How many entries of `hour` are HTTP requests.
    http_in_hour: u64,
    /// Until when everything is refused, and the `Retry-After` to send meanwhile.
    storm: Option<(Instant, Option<u64>)>,
    counts: BudgetCounts,
}

impl Budget {
    pub(crate) fn new(limits: RateBudget) -> Self {
        Budget {
            limits,
            second: VecDeque::new(),
            hour: VecDeque::new(),
            http_in_hour: 0,
            storm: None,
            counts: BudgetCounts::default(),
        }
    }

    /// The limits in force.
    pub(crate) fn limits(&self) -> RateBudget {
        self.limits
    }

    /// New limits from now on; what the windows hold stays counted.
    pub(crate) fn set_limits(&mut self, limits: RateBudget) {
        self.limits = limits;
    }

    /// Refuses every request for `duration` from `now` (zero ends a storm).
    pub(crate) fn storm(&mut self, now: Instant, duration: Duration, retry_after: Option<u64>) {
        self.storm = (!duration.is_zero()).then(|| (now + duration, retry_after));
    }

    pub(crate) fn counts(&self) -> BudgetCounts {
        self.counts
    }

    /// Counts a request at `now`, or refuses it without counting it.
    pub(crate) fn admit(&mut self, now: Instant, caller: Caller) -> Admission {
        self.forget_before(now);
        let refused = self.refusal(now);
        if refused.is_none() {
            self.second.push_back(now);
            self.hour.push_back((now, caller));
            if caller == Caller::Http {
                self.http_in_hour += 1;
            }
            let c = &mut self.counts;
            c.max_in_second = c.max_in_second.max(self.second.len() as u64);
            c.max_in_hour = c.max_in_hour.max(self.hour.len() as u64);
            c.client_max_in_hour = c.client_max_in_hour.max(self.http_in_hour);
        }
        match (caller, refused.is_some()) {
            (Caller::Http, true) => self.counts.rate_limited += 1,
            (Caller::Other, true) => self.counts.other_refused += 1,
            (Caller::Other, false) => self.counts.other_requests += 1,
            (Caller::Http, false) => {}
        }
        let limit = self.limits.per_hour;
        Admission {
            refused,
            limit,
            remaining: limit.saturating_sub(u32::try_from(self.hour.len()).unwrap_or(u32::MAX)),
        }
    }

    /// Whether a request at `now` is refused: `None` when it may be counted.
    fn refusal(&self, now: Instant) -> Option<Refusal> {
        if let Some((until, retry_after)) = self.storm
            && now < until
        {
            return Some(Refusal { retry_after });
        }
        let second = wait_for_room(
            self.second.iter().copied(),
            self.second.len(),
            self.limits.per_second,
            Duration::from_secs(1),
            now,
        );
        let hour = wait_for_room(
            self.hour.iter().map(|(t, _)| *t),
            self.hour.len(),
            self.limits.per_hour,
            self.limits.hour,
            now,
        );
        // A request needs a slot in both windows: the later one decides.
        let wait = match (second, hour) {
            (None, None) => return None,
            (a, b) => a.max(b).unwrap_or_default(),
        };
        // Whole seconds, rounded up, and at least one: a client that waits that long
        // finds a slot.
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Some(Refusal {
            retry_after: self.limits.retry_after.then_some(seconds.max(1)),
        })
    }

    /// Drops what has left the windows at `now`.
    fn forget_before(&mut self, now: Instant) {
        let second = Duration::from_secs(1);
        while self
            .second
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= second)
        {
            self.second.pop_front();
        }
        let hour = self.limits.hour;
        while let Some((t, caller)) = self.hour.front()
            && now.saturating_duration_since(*t) >= hour
        {
            if *caller == Caller::Http {
                self.http_in_hour -= 1;
            }
            self.hour.pop_front();
        }
    }
}

/// How long until a window of `length` holding `len` entries (oldest first) has
/// room under `limit`; `None` when it has room now or the limit is off.
fn wait_for_room(
    mut entries: impl Iterator<Item = Instant>,
    len: usize,
    limit: u32,
    length: Duration,
    now: Instant,
) -> Option<Duration> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if limit == 0 || len < limit {
        return None;
    }
    // Room comes when all but `limit - 1` entries have left the window (the limit
    // may have been lowered below what the window holds).
    let freeing = entries.nth(len - limit)?;
    Some((freeing + length).saturating_duration_since(now))
}

/// The other client of the account: spends one request of `budget` every
/// `60 / per_minute` seconds (none while the rate is 0) until `stop`. Its refused
/// attempts are only counted; it does not retry them.
pub(crate) async fn other_client(
    budget: Arc<Mutex<Budget>>,
    mut per_minute: watch::Receiver<f64>,
    stop: CancellationToken,
) {
    loop {
        let rate = *per_minute.borrow_and_update();
        // A rate that is not a positive number means no other client: wait for a change.
        let period = (rate.is_finite() && rate > 0.0)
            .then(|| Duration::from_secs_f64((60.0 / rate).clamp(0.001, 1e9)));
        let attempt = async {
            match period {
                Some(p) => tokio::time::sleep(p).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            changed = per_minute.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = attempt => {
                budget
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .admit(Instant::now(), Caller::Other);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(per_second: u32, per_hour: u32, hour_seconds: u64, retry_after: bool) -> Budget {
        Budget::new(RateBudget {
            per_second,
            per_hour,
            hour: Duration::from_secs(hour_seconds),
            retry_after,
        })
    }

    fn refusal(retry_after: impl Into<Option<u64>>) -> Refusal {
        Refusal {
            retry_after: retry_after.into(),
        }
    }

    fn ms(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn the_default_is_the_vendors_budget() {
        let b = RateBudget::default();
        assert_eq!(
            (b.per_second, b.per_hour, b.hour.as_secs()),
            (20, 15_000, 3600)
        );
        assert!(!b.retry_after);
    }

    #[test]
    fn remaining_goes_down_by_one_per_counted_request_and_never_below_zero() {
        let t0 = Instant::now();
        let mut b = budget(0, 3, 3600, false);
        let remaining: Vec<_> = (0..5)
            .map(|i| b.admit(ms(t0, i), Caller::Http))
            .map(|a| (a.refused.is_some(), a.remaining))
            .collect();
        assert_eq!(
            remaining,
            [(false, 2), (false, 1), (false, 0), (true, 0), (true, 0)]
        );
        assert_eq!(b.counts().rate_limited, 2);
    }

    #[test]
    fn the_second_window_refuses_the_21st_request_and_frees_a_second_later() {
        let t0 = Instant::now();
        let mut b = budget(20, 0, 3600, true);
        for i in 0..20 {
            assert_eq!(b.admit(ms(t0, i * 10), Caller::Http).refused, None);
        }
        let a = b.admit(ms(t0, 500), Caller::Http);
        assert_eq!(
            a.refused,
            Some(refusal(1)),
            "Retry-After is at least one second"
        );
        assert_eq!(a.limit, 0, "no hour limit, no header");
        // The first request leaves the window at 1000 ms.
        assert!(b.admit(ms(t0, 999), Caller::Http).refused.is_some());
        assert_eq!(b.admit(ms(t0, 1000), Caller::Http).refused, None);
        assert_eq!(b.counts().max_in_second, 20);
    }

    #[test]
    fn retry_after_counts_whole_seconds_until_the_hour_frees_a_slot() {
        let t0 = Instant::now();
        let mut b = budget(0, 2, 10, true);
        b.admit(t0, Caller::Http);
        b.admit(ms(t0, 1000), Caller::Http);
        // The first slot frees at 10 s: 7.5 s from 2.5 s, rounded up.
        assert_eq!(
            b.admit(ms(t0, 2500), Caller::Http).refused,
            Some(refusal(8))
        );
        let mut quiet = budget(0, 2, 10, false);
        quiet.admit(t0, Caller::Http);
        quiet.admit(t0, Caller::Http);
        assert_eq!(
            quiet.admit(ms(t0, 1), Caller::Http).refused,
            Some(refusal(None))
        );
    }

    #[test]
    fn refused_requests_cost_nothing() {
        let t0 = Instant::now();
        let mut b = budget(1, 0, 3600, false);
        assert_eq!(b.admit(t0, Caller::Http).refused, None);
        for i in 1..50 {
            assert!(b.admit(ms(t0, i * 10), Caller::Http).refused.is_some());
        }
        // Had the refusals counted, the window would still be full.
        assert_eq!(b.admit(ms(t0, 1000), Caller::Http).refused, None);
    }

    #[test]
    fn the_other_client_shares_the_budget_and_is_left_out_of_the_clients_maximum() {
        let t0 = Instant::now();
        let mut b = budget(0, 4, 3600, false);
        for i in 0..3 {
            b.admit(ms(t0, i), Caller::Other);
        }
        assert_eq!(b.admit(ms(t0, 5), Caller::Http).remaining, 0);
        assert!(b.admit(ms(t0, 6), Caller::Http).refused.is_some());
        assert!(b.admit(ms(t0, 7), Caller::Other).refused.is_some());
        let c = b.counts();
        assert_eq!((c.other_requests, c.other_refused), (3, 1));
        assert_eq!(
            (c.max_in_hour, c.client_max_in_hour, c.rate_limited),
            (4, 1, 1)
        );
    }

    #[test]
    fn a_storm_refuses_everything_uncounted_until_it_passes() {
        let t0 = Instant::now();
        let mut b = budget(0, 100, 3600, false);
        b.storm(t0, Duration::from_secs(2), Some(7));
        let a = b.admit(ms(t0, 100), Caller::Http);
        assert_eq!((a.refused, a.remaining), (Some(refusal(7)), 100));
        assert_eq!(b.admit(ms(t0, 2000), Caller::Http).refused, None);
        assert_eq!(b.counts().rate_limited, 1);
    }

    #[test]
    fn a_lowered_limit_waits_for_enough_entries_to_leave() {
        let t0 = Instant::now();
        let mut b = budget(0, 10, 10, true);
        for i in 0..4 {
            b.admit(ms(t0, i * 1000), Caller::Http);
        }
        b.set_limits(RateBudget {
            per_second: 0,
            per_hour: 2,
            hour: Duration::from_secs(10),
            retry_after: true,
        });
        // Entries at 0, 1, 2 and 3 s: room for a third once the one at 2 s has left (12 s).
        assert_eq!(
            b.admit(ms(t0, 5000), Caller::Http).refused,
            Some(refusal(7))
        );
        assert_eq!(b.admit(ms(t0, 12_000), Caller::Http).refused, None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_other_client_spends_at_its_rate_and_follows_changes() {
        let b = Arc::new(Mutex::new(budget(0, 0, 3600, false)));
        let (rate, receiver) = watch::channel(60.0);
        let stop = CancellationToken::new();
        let task = tokio::spawn(other_client(b.clone(), receiver, stop.clone()));
        tokio::time::sleep(Duration::from_millis(10_500)).await;
        let spent = || b.lock().unwrap().counts().other_requests;
        assert_eq!(spent(), 10);
        rate.send(0.0).unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(spent(), 10);
        rate.send(600.0).unwrap();
        tokio::time::sleep(Duration::from_millis(1050)).await;
        assert_eq!(spent(), 20);
        stop.cancel();
        task.await.unwrap();
    }
}
