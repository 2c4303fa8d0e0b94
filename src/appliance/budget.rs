//! The request budget of one API account, shared by every request its sites make.
//!
//! The appliance is shared: the vendor allows an API account 20 requests a second and
//! 15,000 an hour, for every client that uses it (a SIEM connector, the Integration
//! Client during a migration), and refuses the rest. So btic spends at most its own
//! share and believes the appliance over its own count:
//!
//! - **Its own count.** At most `per_second` request starts a second and `per_hour` in
//!   any rolling hour. The last `live_reserve` of the hour are only for the live lane's
//!   report requests ([`Priority::Live`]), so downloads and backfills can never starve
//!   the live export; among waiting requests the live lane goes first, then downloads,
//!   then backfills.
//! - **The appliance's count.** Every answer's `X-RateLimit-Remaining` says what the
//!   account has left, other clients included. When that is less than btic's own count
//!   allows, requests are spaced so that what is left lasts the hour; at the reserve
//!   only the live lane goes on, at a small margin nothing does, until a single probe
//!   request (one a minute, scaled to the hour) reads the header again.
//! - **A refusal.** A 429 (or a 503 with `Retry-After`) means the account's window is
//!   spent: every request of the account pauses until the `Retry-After`, or, without
//!   one, for 15 s (1 s when the header says requests remain, which points at the
//!   per-second limit), doubling with each refusal in a row up to 5 minutes. The request that was
//!   refused is sent again after the pause and spends none of its retry attempts. When
//!   the pause ends one probe goes first; the rest follow once it is answered. One WARN
//!   per pause, one INFO when requests pass again.
//!
//! Time is tokio's, so tests run the budget on a paused clock.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio::time::Instant;

/// Who a request is for, in the order the budget serves them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// The live lane's report requests, its clock readings and tokens.
    Live = 0,
    /// Recordings and backups of the live lane.
    Download = 1,
    /// Backfill jobs' reports and recordings.
    Backfill = 2,
}

impl Priority {
    const ALL: [Priority; 3] = [Priority::Live, Priority::Download, Priority::Backfill];
}

/// The limits of one account.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetLimits {
    /// Request starts per second (0 or less: unlimited).
    pub per_second: f64,
    /// Requests per rolling `hour`.
    pub per_hour: u32,
    /// The part of `per_hour` only [`Priority::Live`] may use.
    pub live_reserve: u32,
    /// The rolling window: an hour (test rigs shorten it with `BTIC_BUDGET_HOUR_SECONDS`,
    /// together with their simulated appliance's).
    pub hour: Duration,
}

impl BudgetLimits {
    /// The rolling window btic counts in: an hour, unless a test rig shortens it.
    pub fn hour_from_env() -> Duration {
        std::env::var("BTIC_BUDGET_HOUR_SECONDS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|s| *s > 0)
            .map_or(Duration::from_secs(3600), Duration::from_secs)
    }

    fn interval(&self) -> Duration {
        if self.per_second.is_finite() && self.per_second > 0.0 {
            Duration::from_secs_f64(1.0 / self.per_second)
        } else {
            Duration::ZERO
        }
    }

    /// What `priority` may spend of the hour.
    fn cap(&self, priority: Priority) -> usize {
        match priority {
            Priority::Live => self.per_hour as usize,
            Priority::Download | Priority::Backfill => {
                self.per_hour.saturating_sub(self.live_reserve) as usize
            }
        }
    }
}

/// What an answer said about the account's budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Answered {
    /// The HTTP status.
    pub status: u16,
    /// `X-RateLimit-Limit`.
    pub limit: Option<u32>,
    /// `X-RateLimit-Remaining`.
    pub remaining: Option<u32>,
    /// `Retry-After`.
    pub retry_after: Option<Duration>,
}

impl Answered {
    /// Whether the appliance refused the request because the account's window is spent.
    pub fn throttled(&self) -> bool {
        self.status == 429 || (self.status == 503 && self.retry_after.is_some())
    }
}

/// Why the account is paused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PauseReason {
    /// The appliance refused a request (429, or 503 with `Retry-After`).
    Refused {
        /// The status.
        status: u16,
        /// Whether it said how long to wait.
        retry_after: bool,
    },
}

impl std::fmt::Display for PauseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PauseReason::Refused {
                status,
                retry_after: true,
            } => write!(f, "the appliance answered HTTP {status} with Retry-After"),
            PauseReason::Refused { status, .. } => write!(
                f,
                "the appliance answered HTTP {status} (no Retry-After: waiting longer after each refusal)"
            ),
        }
    }
}

/// The account's budget as an operator reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetSnapshot {
    /// Requests sent in the rolling hour.
    pub used: u32,
    /// `per_hour`.
    pub per_hour: u32,
    /// `live_reserve`.
    pub live_reserve: u32,
    /// The appliance's `X-RateLimit-Limit`, as last read.
    pub appliance_limit: Option<u32>,
    /// The appliance's `X-RateLimit-Remaining` as last read, less the requests sent since.
    pub appliance_remaining: Option<u32>,
    /// When the header was last read (host clock).
    pub appliance_seen_at: Option<SystemTime>,
    /// The lower of btic's own remaining count and the appliance's.
    pub remaining: u32,
    /// Until when every request waits, and why.
    pub paused: Option<(SystemTime, String)>,
    /// Whether the appliance's count holds requests back (other clients spend it).
    pub held_by_appliance: bool,
    /// Requests the appliance refused with 429 (or 503 with `Retry-After`) so far.
    pub refused: u64,
    /// Send times in the rolling hour, oldest first (host clock), for a restart.
    pub sent_at: Vec<SystemTime>,
}

/// The appliance's view, from the last answer that carried the headers.
#[derive(Debug, Clone, Copy)]
struct Seen {
    limit: u32,
    remaining: u32,
    at: Instant,
    /// Requests granted since the header was read.
    since: u32,
}

impl Seen {
    fn estimate(&self) -> u32 {
        self.remaining.saturating_sub(self.since)
    }

    /// Below this nothing is sent but a probe: a small margin of the appliance's limit.
    fn margin(&self) -> u32 {
        (self.limit / 200).max(2)
    }
}

#[derive(Debug)]
struct Pause {
    until: Instant,
    reason: PauseReason,
}

#[derive(Debug)]
struct State {
    /// Send times in the rolling hour, oldest first.
    sent: VecDeque<Instant>,
    /// The earliest the next request may start (per-second spacing and pacing).
    next_start: Instant,
    seen: Option<Seen>,
    pause: Option<Pause>,
    /// A request is out to read the appliance's count again; the others wait for it.
    probe_out: bool,
    /// The next request must be a probe (a pause ended, or the appliance's margin).
    probe_next: bool,
    /// Refusals in a row without `Retry-After` (the pause doubles with each).
    strikes: u32,
    /// When the current run of refusals began (for the INFO once requests pass).
    refused_since: Option<Instant>,
    refused_total: u64,
    /// Requests waiting, per priority.
    waiting: [usize; 3],
}

/// The budget of one API account. Shared (`Arc`) by the clients of its sites.
#[derive(Debug)]
pub struct AccountBudget {
    /// For messages: `client_id@host`.
    account: String,
    limits: BudgetLimits,
    state: Mutex<State>,
    /// Woken on every change a waiting request may care about: a grant, an answer, a
    /// waiter leaving. Waiters also sleep until the instant they computed.
    changed: Notify,
}

/// The first pause after a refusal without `Retry-After` when the appliance's header
/// says requests remain (the per-second limit).
const SECOND_PAUSE: Duration = Duration::from_secs(1);
/// The first pause after a refusal without `Retry-After` otherwise; it doubles with each
/// refusal in a row.
const FIRST_PAUSE: Duration = Duration::from_secs(15);
/// The longest pause without `Retry-After`.
const MAX_PAUSE: Duration = Duration::from_secs(300);

/// Permission to send one request. Tell the budget what the appliance answered with
/// [`Grant::answered`]; dropping it unanswered (a network error) ends a probe.
#[derive(Debug)]
pub struct Grant<'a> {
    budget: &'a AccountBudget,
    probe: bool,
}

impl AccountBudget {
    /// A budget for `account` (`client_id@host`, for messages).
    pub fn new(account: impl Into<String>, limits: BudgetLimits) -> AccountBudget {
        let now = Instant::now();
        AccountBudget {
            account: account.into(),
            limits,
            state: Mutex::new(State {
                sent: VecDeque::new(),
                next_start: now,
                seen: None,
                pause: None,
                probe_out: false,
                probe_next: false,
                strikes: 0,
                refused_since: None,
                refused_total: 0,
                waiting: [0; 3],
            }),
            changed: Notify::new(),
        }
    }

    /// The limits.
    pub fn limits(&self) -> BudgetLimits {
        self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts requests sent before a restart (host clock), so a restart does not
    /// start the hour afresh.
    pub fn restore(&self, sent_at: &[SystemTime]) {
        let now = Instant::now();
        let wall = SystemTime::now();
        let mut state = self.lock();
        let mut restored: Vec<Instant> = sent_at
            .iter()
            .filter_map(|t| {
                let age = wall.duration_since(*t).ok()?;
                (age < self.limits.hour).then(|| now.checked_sub(age).unwrap_or(now))
            })
            .collect();
        restored.extend(state.sent.drain(..));
        restored.sort();
        state.sent = restored.into();
    }

    /// Waits until a request of `priority` may be sent.
    pub async fn acquire(&self, priority: Priority) -> Grant<'_> {
        // Counts this request among the waiting while it waits; dropped (granted or
        // cancelled) it uncounts it.
        let mut waiting: Option<Waiting<'_>> = None;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before the state is read, so no change is missed between the
            // decision and the wait.
            notified.as_mut().enable();
            let decision = {
                let mut state = self.lock();
                let decision = self.decide(&mut state, priority, Instant::now());
                if matches!(decision, Decision::Wait(_)) && waiting.is_none() {
                    state.waiting[priority as usize] += 1;
                    waiting = Some(Waiting {
                        budget: self,
                        priority,
                    });
                }
                decision
            };
            match decision {
                Decision::Go { probe } => {
                    drop(waiting);
                    // Lower priorities may have waited for this one.
                    self.changed.notify_waiters();
                    return Grant {
                        budget: self,
                        probe,
                    };
                }
                Decision::Wait(Some(until)) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => {}
                        _ = notified => {}
                    }
                }
                Decision::Wait(None) => notified.await,
            }
        }
    }

    /// Whether a request of `priority` may go now, and if not, until when to wait
    /// (`None`: until something changes).
    fn decide(&self, state: &mut State, priority: Priority, now: Instant) -> Decision {
        let hour = self.limits.hour;
        while state.sent.front().is_some_and(|t| *t + hour <= now) {
            state.sent.pop_front();
        }
        if let Some(pause) = &state.pause {
            if now < pause.until {
                return Decision::Wait(Some(pause.until));
            }
            state.pause = None;
            state.probe_next = true;
        }
        if state.probe_out {
            return Decision::Wait(None);
        }
        if Priority::ALL
            .iter()
            .any(|p| *p < priority && state.waiting[*p as usize] > 0)
        {
            return Decision::Wait(None);
        }
        let cap = self.limits.cap(priority);
        let used = state.sent.len();
        if used >= cap {
            // The oldest sends that must leave the hour first.
            let frees = state.sent[used - cap] + hour;
            return Decision::Wait(Some(frees));
        }
        let mut start = state.next_start.max(now);
        let mut probe = state.probe_next;
        // A probe after a pause goes whatever the last header said: it reads it again.
        if let Some(seen) = state.seen.filter(|_| !probe) {
            let left = seen.estimate();
            let floor = match priority {
                Priority::Live => seen.margin(),
                _ => seen.margin() + self.limits.live_reserve,
            };
            if left <= floor {
                // Nothing more until the header is read again, by one probe.
                let probe_at = seen.at + hour / 60;
                if now < probe_at {
                    return Decision::Wait(Some(probe_at));
                }
                probe = true;
            } else if (left as usize) < cap - used {
                // Others spend the account: make what is left last the hour.
                let pace = hour / (left - floor).max(1);
                start = start.max(seen.at + pace * (seen.since + 1));
            }
        }
        if start > now {
            return Decision::Wait(Some(start));
        }
        state.sent.push_back(now);
        state.next_start = now + self.limits.interval();
        if let Some(seen) = &mut state.seen {
            seen.since += 1;
        }
        if probe {
            state.probe_next = false;
            state.probe_out = true;
        }
        Decision::Go { probe }
    }

    fn answered(&self, probe: bool, answer: &Answered) {
        let now = Instant::now();
        let mut state = self.lock();
        if probe {
            state.probe_out = false;
        }
        if let (Some(limit), Some(remaining)) = (answer.limit, answer.remaining) {
            state.seen = Some(Seen {
                limit,
                remaining,
                at: now,
                since: 0,
            });
        }
        if answer.throttled() {
            state.refused_total += 1;
            let wait = match answer.retry_after {
                Some(after) => after.min(self.limits.hour),
                None => {
                    // Requests remain by the header: the second was spent, not the hour.
                    let first = match answer.remaining {
                        Some(r) if r > 0 => SECOND_PAUSE,
                        _ => FIRST_PAUSE,
                    };
                    first
                        .saturating_mul(2u32.saturating_pow(state.strikes.min(16)))
                        .min(MAX_PAUSE)
                }
            };
            if answer.retry_after.is_none() {
                state.strikes += 1;
            }
            let until = now + wait;
            let reason = PauseReason::Refused {
                status: answer.status,
                retry_after: answer.retry_after.is_some(),
            };
            if state.refused_since.is_none() {
                state.refused_since = Some(now);
                tracing::warn!(
                    account = %self.account,
                    "{reason}: the API account's request budget is spent; every request of the account pauses for {wait:?} (no retry attempt is spent, nothing is dead-lettered)"
                );
            } else {
                tracing::debug!(account = %self.account, "{reason} again; pausing for {wait:?}");
            }
            if state.pause.as_ref().is_none_or(|p| p.until < until) {
                state.pause = Some(Pause { until, reason });
            }
        } else {
            state.strikes = 0;
            if let Some(since) = state.refused_since.take() {
                tracing::info!(
                    account = %self.account,
                    "the appliance takes requests again after {:?} of refusals",
                    now.saturating_duration_since(since)
                );
            }
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// The budget now, for gauges and `status`.
    pub fn snapshot(&self) -> BudgetSnapshot {
        let now = Instant::now();
        let wall = SystemTime::now();
        let to_wall = |i: Instant| {
            if i >= now {
                wall + (i - now)
            } else {
                wall - (now - i)
            }
        };
        let mut state = self.lock();
        let hour = self.limits.hour;
        while state.sent.front().is_some_and(|t| *t + hour <= now) {
            state.sent.pop_front();
        }
        let used = state.sent.len() as u32;
        let own = self.limits.per_hour.saturating_sub(used);
        let appliance = state.seen.map(|s| s.estimate());
        let held = state.seen.is_some_and(|s| s.estimate() < own);
        BudgetSnapshot {
            used,
            per_hour: self.limits.per_hour,
            live_reserve: self.limits.live_reserve,
            appliance_limit: state.seen.map(|s| s.limit),
            appliance_remaining: appliance,
            appliance_seen_at: state.seen.map(|s| to_wall(s.at)),
            remaining: appliance.map_or(own, |a| a.min(own)),
            paused: state
                .pause
                .as_ref()
                .filter(|p| p.until > now)
                .map(|p| (to_wall(p.until), p.reason.to_string())),
            held_by_appliance: held,
            refused: state.refused_total,
            sent_at: state.sent.iter().map(|i| to_wall(*i)).collect(),
        }
    }
}

enum Decision {
    Go { probe: bool },
    Wait(Option<Instant>),
}

/// A request counted as waiting; leaving (granted or cancelled) uncounts it.
struct Waiting<'a> {
    budget: &'a AccountBudget,
    priority: Priority,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.budget.lock().waiting[self.priority as usize] -= 1;
        self.budget.changed.notify_waiters();
    }
}

impl Grant<'_> {
    /// Tells the budget what the appliance answered.
    pub fn answered(mut self, answer: &Answered) {
        let probe = std::mem::take(&mut self.probe);
        self.budget.answered(probe, answer);
    }
}

impl Drop for Grant<'_> {
    fn drop(&mut self) {
        if self.probe {
            // No answer came (a network error): let the next request probe instead.
            let mut state = self.budget.lock();
            state.probe_out = false;
            state.probe_next = true;
            drop(state);
            self.budget.changed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn budget(per_hour: u32, live_reserve: u32) -> Arc<AccountBudget> {
        Arc::new(AccountBudget::new(
            "demo@sim",
            BudgetLimits {
                per_second: 1000.0,
                per_hour,
                live_reserve,
                hour: Duration::from_secs(3600),
            },
        ))
    }

    fn ok(limit: u32, remaining: u32) -> Answered {
        Answered {
            status: 200,
            limit: Some(limit),
            remaining: Some(remaining),
            retry_after: None,
        }
    }

    fn refused(retry_after: Option<u64>, remaining: Option<u32>) -> Answered {
        Answered {
            status: 429,
            limit: remaining.map(|_| 15_000),
            remaining,
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    /// Seconds (paused clock) until a request of `priority` is granted.
    async fn wait_for(budget: &AccountBudget, priority: Priority) -> u64 {
        let t0 = Instant::now();
        budget.acquire(priority).await.answered(&Answered {
            status: 200,
            ..Answered::default()
        });
        ((Instant::now() - t0).as_millis() as u64 + 500) / 1000
    }

    #[tokio::test(start_paused = true)]
    async fn request_starts_are_spaced_by_the_rate() {
        let b = AccountBudget::new(
            "a",
            BudgetLimits {
                per_second: 4.0,
                per_hour: 1000,
                live_reserve: 0,
                hour: Duration::from_secs(3600),
            },
        );
        let t0 = Instant::now();
        for _ in 0..5 {
            drop(b.acquire(Priority::Live).await);
        }
        assert_eq!(Instant::now() - t0, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn the_hour_is_rolling_and_the_reserve_is_the_live_lanes() {
        let b = budget(10, 4);
        for _ in 0..6 {
            assert_eq!(wait_for(&b, Priority::Backfill).await, 0);
        }
        // Backfill and downloads have spent their share; the live lane has its reserve.
        let waiting = tokio::spawn({
            let b = b.clone();
            async move { wait_for(&b, Priority::Download).await }
        });
        tokio::time::sleep(Duration::from_secs(10)).await;
        for _ in 0..4 {
            assert_eq!(wait_for(&b, Priority::Live).await, 0);
        }
        assert_eq!(b.snapshot().used, 10);
        assert_eq!(b.snapshot().remaining, 0);
        // The download goes when the first request leaves the hour.
        assert_eq!(waiting.await.unwrap(), 3600);
        let live = wait_for(&b, Priority::Live).await;
        assert!(
            live <= 1,
            "the second request leaves the hour with the first: {live}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_requests_go_live_first_then_downloads_then_backfill() {
        let b = budget(100, 10);
        drop(b.acquire(Priority::Live).await);
        b.acquire(Priority::Live)
            .await
            .answered(&refused(Some(30), Some(0)));
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for p in [Priority::Backfill, Priority::Download, Priority::Live] {
            let (b, order) = (b.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let grant = b.acquire(p).await;
                order.lock().unwrap().push(p);
                tokio::time::sleep(Duration::from_millis(100)).await;
                grant.answered(&ok(15_000, 5000));
            }));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            [Priority::Live, Priority::Download, Priority::Backfill]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_pauses_the_account_and_one_probe_goes_first() {
        let b = budget(1000, 0);
        b.acquire(Priority::Live)
            .await
            .answered(&refused(Some(20), Some(0)));
        assert!(b.snapshot().paused.is_some());
        assert_eq!(b.snapshot().refused, 1);
        let t0 = Instant::now();
        // The probe, then (once it is answered) the next.
        let probe = b.acquire(Priority::Live).await;
        assert_eq!((Instant::now() - t0).as_secs(), 20);
        let next = tokio::spawn({
            let b = b.clone();
            async move { wait_for(&b, Priority::Live).await }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            !next.is_finished(),
            "nothing passes before the probe's answer"
        );
        probe.answered(&ok(15_000, 14_000));
        assert_eq!(next.await.unwrap(), 5);
        assert!(b.snapshot().paused.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_without_retry_after_pause_longer_each_time_and_a_second_when_requests_remain()
    {
        let b = budget(1000, 0);
        let mut pauses = Vec::new();
        for _ in 0..3 {
            b.acquire(Priority::Live)
                .await
                .answered(&refused(None, Some(0)));
            let t0 = Instant::now();
            let probe = b.acquire(Priority::Live).await;
            pauses.push((Instant::now() - t0).as_secs());
            drop(probe);
        }
        assert_eq!(pauses, [15, 30, 60]);
        // An answer that passes ends the run of refusals.
        b.acquire(Priority::Live).await.answered(&ok(15_000, 10));
        b.acquire(Priority::Live)
            .await
            .answered(&refused(None, Some(7)));
        let t0 = Instant::now();
        drop(b.acquire(Priority::Live).await);
        assert_eq!((Instant::now() - t0).as_secs(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_appliances_count_holds_back_the_others_before_the_live_lane() {
        let b = budget(10_000, 1000);
        // Another client has spent the account: 1,050 remain of 15,000.
        b.acquire(Priority::Live).await.answered(&ok(15_000, 1050));
        let backfill = tokio::spawn({
            let b = b.clone();
            async move { wait_for(&b, Priority::Backfill).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!backfill.is_finished(), "the reserve is the live lane's");
        assert!(b.snapshot().held_by_appliance);
        assert_eq!(b.snapshot().remaining, 1050);
        // The live lane goes on, paced so that what is left lasts the hour.
        let live = wait_for(&b, Priority::Live).await;
        assert!((1..=4).contains(&live), "{live}");
        // A probe reads the header again a minute later: the account has freed.
        backfill.abort();
        let b2 = budget(10_000, 1000);
        b2.acquire(Priority::Live).await.answered(&ok(15_000, 2));
        let t0 = Instant::now();
        let probe = b2.acquire(Priority::Live).await;
        assert_eq!((Instant::now() - t0).as_secs(), 60);
        probe.answered(&ok(15_000, 9000));
        assert_eq!(wait_for(&b2, Priority::Backfill).await, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_counts_the_requests_of_the_last_hour() {
        let b = budget(5, 0);
        let now = SystemTime::now();
        let sent: Vec<SystemTime> = (0..5)
            .map(|i| now - Duration::from_secs(3000 - i * 10))
            .chain([now - Duration::from_secs(4000)])
            .collect();
        b.restore(&sent);
        assert_eq!(b.snapshot().used, 5);
        assert_eq!(wait_for(&b, Priority::Live).await, 600);
    }
}
