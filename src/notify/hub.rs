//! The notifier task: every `OBSERVE_EVERY` it reads what the daemon already knows (the
//! dead letter, the schedules' run records, `Health`'s stalled stages, and what other
//! parts reported through the `NotifyHandle`), turns changes into events in each
//! notifier's pending digest, and sends the digests that are due.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::NotifyHandle;
use super::event::{Digest, Event, EventKind, cut};
use super::message::{Origin, Redactor, compose, lasted};
use super::transport::{NotifyError, Transport};
use crate::config::units::format_duration;
use crate::config::{Config, EventClass, Notifier, ResolvedSecrets};
use crate::keys;
use crate::keys::ScheduleRun;
use crate::metrics::Health;
use crate::queue::{Changes, DeadLetter, Queue};

/// How often the daemon's state is looked at. A dead letter is in a digest within this
/// (plus the notifier's `min_interval` when a message went out shortly before).
pub const OBSERVE_EVERY: Duration = Duration::from_secs(5);
/// First wait after a failed send; it doubles up to the notifier's `min_interval`
/// (at least this, at most `RETRY_MAX`).
const RETRY_FIRST: Duration = Duration::from_secs(10);
/// Longest wait between two tries of a notifier that is down.
const RETRY_MAX: Duration = Duration::from_secs(300);
/// At shutdown, how long an urgent digest (a fail-stop) may take to go out: the daemon
/// gives its tasks `pipeline::daemon::DRAIN` in all.
const LAST_WORDS: Duration = Duration::from_secs(5);

/// State key of what the observer has seen.
const OBSERVED_KEY: &str = keys::NOTIFY_OBSERVED;
/// Prefix of the notifiers' records.
const RECORD_PREFIX: &str = keys::NOTIFY_RECORD_PREFIX;

fn record_key(name: &str) -> String {
    format!("{RECORD_PREFIX}{name}")
}

/// What the observer has seen, kept in the state area so that a restart neither repeats
/// nor misses an event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Observed {
    /// Dead letters last tried before this time (UNIX ms) have been reported...
    pub dead_seen_ms: u64,
    /// ... and so have these ones, last tried exactly then.
    pub dead_seen_ids: Vec<u64>,
    /// When each failing schedule was first seen failing (UNIX seconds).
    pub failing_since: BTreeMap<String, i64>,
}

/// A condition that holds (a schedule failing, a stage stalled, a dead letter not
/// empty): its recovery is reported when it stops holding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Condition {
    pub class: EventClass,
    pub subject: String,
    /// Since when (UNIX seconds).
    pub since: i64,
    pub detail: String,
}

impl Condition {
    fn key(&self) -> String {
        format!("{}/{}", self.class.as_str(), self.subject)
    }
}

/// One notifier's durable record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// The conditions this notifier was told hold, by `Condition::key`.
    pub active: BTreeMap<String, Condition>,
    /// What it has not been told yet.
    pub pending: Digest,
    /// When its last message went out (UNIX seconds).
    pub last_sent: Option<i64>,
    /// Failed sends since the last good one.
    pub failures: u32,
    /// No send before this (UNIX seconds), after a failure.
    pub next_attempt: Option<i64>,
    /// The last send error (redacted), to log a change of reason once.
    pub last_error: String,
}

/// What the daemon knows at one moment. `None` means "not known now" (a read failed,
/// or the daemon has not run long enough to tell): the conditions of that class stay
/// as they were.
#[derive(Debug, Default)]
pub(crate) struct Facts {
    pub now: i64,
    /// Dead letters not reported before, one event per queue.
    pub new_dead: Vec<Event>,
    /// Dead letters per queue.
    pub dead_counts: Option<BTreeMap<String, u64>>,
    /// Failing schedules: since when, and their last outcome.
    pub failing: Option<BTreeMap<String, (i64, String)>>,
    /// Stalled stages (by queue name).
    pub stalled: Option<BTreeSet<String>>,
    /// Conditions other parts reported through the handle (`None`: cleared).
    pub reported: BTreeMap<(EventClass, String), Option<String>>,
    /// Events other parts raised through the handle.
    pub raised: Digest,
}

/// Folds `facts` into one notifier's record: new events into its digest, and an event
/// for each condition that starts or stops holding.
pub(crate) fn fold(record: &mut Record, notifier: &Notifier, facts: &Facts, stall_detail: &str) {
    let wants = |c: EventClass| notifier.events.contains(&c);
    let now = facts.now;
    if wants(EventClass::DeadLetter) {
        for e in &facts.new_dead {
            record.pending.add(e.clone());
        }
    }
    for e in &facts.raised.events {
        if e.kind.class().is_none_or(wants) {
            record.pending.add(e.clone());
        }
    }
    record.pending.omitted += facts.raised.omitted;

    let condition = |class, subject: &str, since, detail: &str| Condition {
        class,
        subject: subject.to_string(),
        since,
        detail: detail.to_string(),
    };
    let mut known: Vec<(EventClass, Vec<Condition>)> = Vec::new();
    if let Some(counts) = &facts.dead_counts {
        let now_holding = counts.iter().filter(|(_, n)| **n > 0);
        let list = now_holding
            .map(|(q, _)| condition(EventClass::DeadLetter, q, now, ""))
            .collect();
        known.push((EventClass::DeadLetter, list));
    }
    if let Some(failing) = &facts.failing {
        let threshold = notifier.failing_after.as_secs() as i64;
        let list = failing
            .iter()
            .filter(|(_, (since, _))| now - since >= threshold)
            .map(|(s, (since, outcome))| condition(EventClass::ScheduleFailing, s, *since, outcome))
            .collect();
        known.push((EventClass::ScheduleFailing, list));
    }
    if let Some(stalled) = &facts.stalled {
        let list = stalled
            .iter()
            .map(|q| condition(EventClass::StageStalled, q, now, stall_detail))
            .collect();
        known.push((EventClass::StageStalled, list));
    }
    // What holds now: what was, with every class known now replaced by what is known.
    let mut desired: BTreeMap<String, Condition> = record
        .active
        .iter()
        .filter(|(_, c)| wants(c.class) && !known.iter().any(|(k, _)| *k == c.class))
        .map(|(k, c)| (k.clone(), c.clone()))
        .collect();
    for c in known.into_iter().flat_map(|(_, list)| list) {
        desired.insert(c.key(), c);
    }
    for ((class, subject), detail) in &facts.reported {
        let c = condition(*class, subject, now, detail.as_deref().unwrap_or(""));
        match detail {
            Some(_) => desired.insert(c.key(), c),
            None => desired.remove(&c.key()),
        };
    }
    desired.retain(|_, c| wants(c.class));

    for (key, c) in desired.iter_mut() {
        match record.active.get(key) {
            Some(old) => c.since = old.since,
            // New dead letters are told by `new_dead`, with their count and error.
            None if c.class == EventClass::DeadLetter => {}
            None => record.pending.add(Event {
                kind: EventKind::raised(c.class),
                subject: c.subject.clone(),
                count: 1,
                detail: cut(c.detail.clone()),
                first_at: c.since,
                last_at: now,
            }),
        }
    }
    for (key, old) in &record.active {
        // A class the notifier no longer takes is dropped without a word.
        if !desired.contains_key(key) && wants(old.class) {
            record.pending.add(Event {
                kind: EventKind::recovered(old.class),
                subject: old.subject.clone(),
                count: 1,
                detail: lasted(old.since, now),
                first_at: now,
                last_at: now,
            });
        }
    }
    record.active = desired;
}

/// Whether a notifier's digest should go out now.
pub(crate) fn due(record: &Record, notifier: &Notifier, now: i64) -> bool {
    if record.pending.is_empty() || record.next_attempt.is_some_and(|t| now < t) {
        return false;
    }
    record.pending.is_urgent()
        || record
            .last_sent
            .is_none_or(|t| now >= t + notifier.min_interval.as_secs() as i64)
}

/// The wait after `failures` failed sends in a row.
pub(crate) fn retry_after(failures: u32, min_interval: Duration) -> Duration {
    let cap = min_interval.clamp(RETRY_FIRST, RETRY_MAX);
    RETRY_FIRST
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(16)))
        .min(cap)
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// One walk over the dead letter: counts per queue, and the letters not reported yet.
#[derive(Debug, Default)]
pub(crate) struct DeadScan {
    seen_ms: u64,
    seen_ids: Vec<u64>,
    counts: BTreeMap<String, u64>,
    /// Per queue: count, first and last time (ms), and the reason of the earliest.
    new: BTreeMap<String, (u64, u64, u64, String)>,
    max_ms: u64,
    ids_at_max: Vec<u64>,
}

impl DeadScan {
    pub(crate) fn after(observed: &Observed) -> DeadScan {
        DeadScan {
            seen_ms: observed.dead_seen_ms,
            seen_ids: observed.dead_seen_ids.clone(),
            max_ms: observed.dead_seen_ms,
            ids_at_max: observed.dead_seen_ids.clone(),
            ..DeadScan::default()
        }
    }

    pub(crate) fn add(&mut self, letter: DeadLetter) {
        *self.counts.entry(letter.queue.clone()).or_default() += 1;
        let ms = unix_ms(letter.last_tried);
        let id = letter.id.0;
        // A replayed item that fails again keeps its id but has a new `last_tried`,
        // so it counts as new again.
        let new = ms > self.seen_ms || (ms == self.seen_ms && !self.seen_ids.contains(&id));
        if new {
            let entry = self.new.entry(letter.queue.clone()).or_insert((
                0,
                ms,
                ms,
                letter.last_error.clone(),
            ));
            entry.0 += 1;
            if ms < entry.1 {
                entry.1 = ms;
                entry.3 = letter.last_error.clone();
            }
            entry.2 = entry.2.max(ms);
        }
        if ms > self.max_ms {
            self.max_ms = ms;
            self.ids_at_max = vec![id];
        } else if ms == self.max_ms && !self.ids_at_max.contains(&id) {
            self.ids_at_max.push(id);
        }
    }

    /// The facts it found, and the observer's cursor moved past them.
    fn finish(self, observed: &mut Observed) -> (Vec<Event>, BTreeMap<String, u64>) {
        observed.dead_seen_ms = self.max_ms;
        observed.dead_seen_ids = self.ids_at_max;
        let events = self
            .new
            .into_iter()
            .map(|(queue, (count, first, last, error))| Event {
                kind: EventKind::DeadLettered,
                subject: queue,
                count,
                detail: cut(error),
                first_at: (first / 1000) as i64,
                last_at: (last / 1000) as i64,
            })
            .collect();
        (events, self.counts)
    }
}

/// Wall-clock seconds that follow tokio's clock, so tests can pause and advance it.
#[derive(Debug, Clone, Copy)]
struct Clock {
    wall: i64,
    at: tokio::time::Instant,
}

impl Clock {
    fn start() -> Clock {
        Clock {
            wall: Utc::now().timestamp(),
            at: tokio::time::Instant::now(),
        }
    }

    fn now(&self) -> i64 {
        self.wall + self.at.elapsed().as_secs() as i64
    }
}

/// A notifier with its way out.
#[derive(Debug)]
struct Outlet {
    notifier: Notifier,
    transport: Transport,
    origin: Origin,
}

/// The notifier task of a daemon.
#[derive(Debug)]
pub struct Notifications {
    outlets: Vec<Outlet>,
    queue: Queue,
    health: Arc<Health>,
    handle: NotifyHandle,
    redactor: Redactor,
    schedules: Vec<String>,
    stall_after: Duration,
}

/// What the task holds between rounds: the records as they are and as last stored.
#[derive(Debug, Default)]
struct State {
    observed: Observed,
    records: BTreeMap<String, Record>,
    stored_observed: Observed,
    stored_records: BTreeMap<String, Record>,
    /// Records of notifiers no longer in the pipeline file, deleted at the next store.
    stale: Vec<String>,
}

impl Notifications {
    /// Sets up every notifier of `config` (reading CA files, checking URLs; contacting
    /// nobody). With no notifier, `run` returns at once and the handle does nothing.
    pub fn new(
        config: &Config,
        secrets: &ResolvedSecrets,
        queue: Queue,
        health: Arc<Health>,
    ) -> Result<Notifications, NotifyError> {
        let redactor = Redactor::new(secrets);
        let mut outlets = Vec::new();
        for notifier in &config.notifiers {
            let own = secrets
                .notifiers
                .get(&notifier.name)
                .cloned()
                .unwrap_or_default();
            outlets.push(Outlet {
                transport: Transport::build(notifier, &own, &redactor)?,
                origin: Origin::here(&notifier.name, &config.source),
                notifier: notifier.clone(),
            });
        }
        let handle = if outlets.is_empty() {
            NotifyHandle::disabled()
        } else {
            NotifyHandle::new()
        };
        Ok(Notifications {
            outlets,
            queue,
            health,
            handle,
            redactor,
            schedules: config.schedules.iter().map(|s| s.name.clone()).collect(),
            stall_after: config.pipeline.stall_after,
        })
    }

    /// The handle through which other parts of the daemon raise events (a storage
    /// fail-stop) and report conditions (the disk budget).
    pub fn handle(&self) -> NotifyHandle {
        self.handle.clone()
    }

    /// Observes and sends until `shutdown`; then gives an urgent digest (a fail-stop
    /// raised just before) up to `LAST_WORDS` to go out.
    pub async fn run(self, shutdown: CancellationToken) {
        if self.outlets.is_empty() {
            return;
        }
        let clock = Clock::start();
        let mut state = self.load().await;
        let names: Vec<&str> = self
            .outlets
            .iter()
            .map(|o| o.notifier.name.as_str())
            .collect();
        tracing::info!(notifiers = %names.join(", "), "notifications on");
        loop {
            // A send in flight when shutdown comes is dropped: its digest is stored and
            // goes out after the next start.
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.round(&mut state, &clock) => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(OBSERVE_EVERY) => {}
                _ = self.handle.woken() => {}
            }
        }
        self.last_words(&mut state, &clock).await;
    }

    async fn load(&self) -> State {
        let mut state = State::default();
        match self.queue.state_get::<Observed>(OBSERVED_KEY).await {
            Ok(found) => state.observed = found.unwrap_or_default(),
            Err(e) => tracing::warn!("notifications: reading {OBSERVED_KEY}, starting afresh: {e}"),
        }
        for outlet in &self.outlets {
            let key = record_key(&outlet.notifier.name);
            let record = match self.queue.state_get::<Record>(&key).await {
                Ok(found) => found.unwrap_or_default(),
                Err(e) => {
                    tracing::warn!("notifications: reading {key}, starting afresh: {e}");
                    Record::default()
                }
            };
            state.records.insert(outlet.notifier.name.clone(), record);
        }
        match self.queue.state_keys(RECORD_PREFIX).await {
            Ok(keys) => {
                state.stale = keys
                    .into_iter()
                    .filter(|k| {
                        !state
                            .records
                            .contains_key(k.trim_start_matches(RECORD_PREFIX))
                    })
                    .collect()
            }
            Err(e) => tracing::warn!("notifications: listing {RECORD_PREFIX}: {e}"),
        }
        state.stored_observed = state.observed.clone();
        state.stored_records = state.records.clone();
        state
    }

    /// What the daemon knows now; moves the observer's cursor in `observed`.
    async fn observe(&self, observed: &mut Observed, now: i64, clock: &Clock) -> Facts {
        let mut facts = Facts {
            now,
            ..Facts::default()
        };
        let scan = DeadScan::after(observed);
        match self
            .queue
            .fold_dead_letters(scan, |scan, letter| scan.add(letter))
            .await
        {
            Ok(scan) => {
                let (events, counts) = scan.finish(observed);
                facts.new_dead = events;
                facts.dead_counts = Some(counts);
            }
            Err(e) => tracing::warn!("notifications: reading the dead letter: {e}"),
        }
        let mut failing = BTreeMap::new();
        let mut known = true;
        for name in &self.schedules {
            match self
                .queue
                .state_get::<ScheduleRun>(&keys::schedule(name))
                .await
            {
                Ok(run) => {
                    let run = run.unwrap_or_default();
                    if run.failures == 0 {
                        observed.failing_since.remove(name);
                        continue;
                    }
                    let since = *observed
                        .failing_since
                        .entry(name.clone())
                        .or_insert(run.last_attempt.unwrap_or(now));
                    failing.insert(name.clone(), (since, run.outcome));
                }
                Err(e) => {
                    tracing::warn!("notifications: reading the runs of schedule {name:?}: {e}");
                    known = false;
                }
            }
        }
        observed
            .failing_since
            .retain(|name, _| self.schedules.contains(name));
        facts.failing = known.then_some(failing);
        // Right after a start every stage looks healthy (`Health` starts afresh), so a
        // stall told before the restart is judged only once a stall could show again.
        if clock.at.elapsed() >= self.stall_after {
            facts.stalled = Some(self.health.stalled().into_iter().collect());
        }
        (facts.raised, facts.reported) = self.handle.take();
        facts
    }

    /// Folds `facts` into every notifier's record.
    fn fold_all(&self, state: &mut State, facts: &Facts) {
        let stall_detail = format!(
            "work waiting and no progress for {} (pipeline.stall_after); /healthz answers 503",
            format_duration(self.stall_after)
        );
        for outlet in &self.outlets {
            let record = state
                .records
                .entry(outlet.notifier.name.clone())
                .or_default();
            fold(record, &outlet.notifier, facts, &stall_detail);
        }
    }

    async fn round(&self, state: &mut State, clock: &Clock) {
        let now = clock.now();
        let facts = self.observe(&mut state.observed, now, clock).await;
        self.fold_all(state, &facts);
        self.store(state).await;
        self.send_due(state, now, |_| true).await;
        self.store(state).await;
    }

    /// At shutdown: what was raised last (a fail-stop), sent at once if urgent.
    async fn last_words(&self, state: &mut State, clock: &Clock) {
        let now = clock.now();
        let mut facts = Facts {
            now,
            ..Facts::default()
        };
        (facts.raised, facts.reported) = self.handle.take();
        self.fold_all(state, &facts);
        self.store(state).await;
        let urgent = |r: &Record| r.pending.is_urgent();
        if state.records.values().any(urgent) {
            let sent = tokio::time::timeout(LAST_WORDS, self.send_due(state, now, urgent)).await;
            if sent.is_err() {
                tracing::warn!(
                    "notifications: the urgent digest did not go out within {LAST_WORDS:?}; it is sent after the next start"
                );
            }
            self.store(state).await;
        }
    }

    /// Sends every digest that is due (and that `only` selects), all at once.
    async fn send_due(&self, state: &mut State, now: i64, only: impl Fn(&Record) -> bool) {
        let at = DateTime::from_timestamp(now, 0).unwrap_or_else(Utc::now);
        let mut sends = Vec::new();
        for outlet in &self.outlets {
            let Some(record) = state.records.get(&outlet.notifier.name) else {
                continue;
            };
            if !due(record, &outlet.notifier, now) || !only(record) {
                continue;
            }
            let message = self
                .redactor
                .message(compose(&record.pending, &outlet.origin, at));
            let events = record.pending.events.len() as u64 + record.pending.omitted;
            sends.push(async move {
                let outcome = outlet.transport.send(&message).await;
                (outlet, events, outcome)
            });
        }
        for (outlet, events, outcome) in futures::future::join_all(sends).await {
            let name = &outlet.notifier.name;
            let Some(record) = state.records.get_mut(name) else {
                continue;
            };
            match outcome {
                Ok(how) => {
                    if record.failures > 0 {
                        tracing::info!(notifier = %name, events, failures = record.failures, "digest sent after failed attempts: {how}");
                    } else {
                        tracing::info!(notifier = %name, events, "digest sent: {how}");
                    }
                    record.pending = Digest::default();
                    record.last_sent = Some(now);
                    record.failures = 0;
                    record.next_attempt = None;
                    record.last_error.clear();
                }
                Err(e) => {
                    let error = e.to_string();
                    record.failures += 1;
                    let wait = retry_after(record.failures, outlet.notifier.min_interval);
                    record.next_attempt = Some(now + wait.as_secs() as i64);
                    // Said once per reason: a mail server down for hours is one warning.
                    if record.failures == 1 || error != record.last_error {
                        tracing::warn!(notifier = %name, events, "{error}; the digest is kept and tried again in {}", format_duration(wait));
                    } else {
                        tracing::debug!(notifier = %name, failures = record.failures, "{error}");
                    }
                    record.last_error = error;
                }
            }
        }
    }

    /// Writes the records that changed since the last store, in one transaction. If that
    /// fails the task goes on from memory (the digest still goes out); a restart then
    /// reports again what it had not stored, so nothing is lost.
    async fn store(&self, state: &mut State) {
        let mut changes = Changes::new();
        let mut encoded = Ok(());
        if state.observed != state.stored_observed {
            encoded = encoded.and(changes.put_state(OBSERVED_KEY, &state.observed).map(drop));
        }
        for (name, record) in &state.records {
            if state.stored_records.get(name) != Some(record) {
                encoded = encoded.and(changes.put_state(&record_key(name), record).map(drop));
            }
        }
        for key in &state.stale {
            changes.delete_state(key);
        }
        if changes.is_empty() {
            return;
        }
        match encoded {
            Ok(()) => match self.queue.commit(changes).await {
                Ok(_) => {
                    state.stored_observed = state.observed.clone();
                    state.stored_records = state.records.clone();
                    state.stale.clear();
                }
                Err(e) => tracing::error!(
                    "notifications: storing the pending digests: {e}; they stay in memory"
                ),
            },
            Err(e) => tracing::error!("notifications: encoding the pending digests: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EventClass::{DiskBudget, StageStalled};
    use crate::config::SecretSource;
    use crate::config::{NotifierKind, WebhookNotifier};

    fn notifier(events: &[EventClass], failing_after: u64) -> Notifier {
        Notifier {
            name: "n".into(),
            kind: NotifierKind::Webhook(WebhookNotifier {
                url: SecretSource::Env("X".into()),
                headers: Vec::new(),
            }),
            min_interval: Duration::from_secs(60),
            events: events.to_vec(),
            failing_after: Duration::from_secs(failing_after),
        }
    }

    fn kinds(record: &Record) -> Vec<(EventKind, String)> {
        record
            .pending
            .events
            .iter()
            .map(|e| (e.kind, e.subject.clone()))
            .collect()
    }

    fn facts(now: i64) -> Facts {
        Facts {
            now,
            ..Facts::default()
        }
    }

    #[test]
    fn a_schedule_is_reported_once_it_failed_for_failing_after_and_again_when_it_recovers() {
        let n = notifier(&EventClass::ALL, 600);
        let mut r = Record::default();
        let failing = |since| {
            Some(BTreeMap::from([(
                "often".to_string(),
                (since, "HTTP 503".to_string()),
            )]))
        };
        fold(
            &mut r,
            &n,
            &Facts {
                failing: failing(1000),
                ..facts(1300)
            },
            "",
        );
        assert!(r.pending.is_empty(), "not failing long enough yet");
        fold(
            &mut r,
            &n,
            &Facts {
                failing: failing(1000),
                ..facts(1600)
            },
            "",
        );
        fold(
            &mut r,
            &n,
            &Facts {
                failing: failing(1000),
                ..facts(1700)
            },
            "",
        );
        assert_eq!(
            kinds(&r),
            vec![(EventKind::ScheduleFailing, "often".into())]
        );
        assert_eq!(r.pending.events[0].detail, "HTTP 503");
        assert_eq!(r.pending.events[0].first_at, 1000);
        // Unknown (a read failed): nothing changes.
        fold(&mut r, &n, &facts(1800), "");
        assert_eq!(r.pending.events.len(), 1);
        fold(
            &mut r,
            &n,
            &Facts {
                failing: Some(BTreeMap::new()),
                ..facts(3100)
            },
            "",
        );
        assert_eq!(
            kinds(&r),
            vec![
                (EventKind::ScheduleFailing, "often".into()),
                (EventKind::ScheduleRecovered, "often".into())
            ]
        );
        assert_eq!(r.pending.events[1].detail, "after 35m");
        assert!(r.active.is_empty());
    }

    #[test]
    fn new_dead_letters_are_told_with_their_count_and_a_cleared_queue_as_a_recovery() {
        let n = notifier(&EventClass::ALL, 0);
        let mut r = Record::default();
        let dead = Event {
            kind: EventKind::DeadLettered,
            subject: "deliver/a".into(),
            count: 3,
            detail: "expired".into(),
            first_at: 5,
            last_at: 9,
        };
        let counts = |n| Some(BTreeMap::from([("deliver/a".to_string(), n)]));
        fold(
            &mut r,
            &n,
            &Facts {
                new_dead: vec![dead.clone()],
                dead_counts: counts(3),
                ..facts(10)
            },
            "",
        );
        fold(
            &mut r,
            &n,
            &Facts {
                dead_counts: counts(3),
                ..facts(20)
            },
            "",
        );
        assert_eq!(r.pending.events, vec![dead]);
        fold(
            &mut r,
            &n,
            &Facts {
                dead_counts: Some(BTreeMap::new()),
                ..facts(30)
            },
            "",
        );
        assert_eq!(
            kinds(&r)[1],
            (EventKind::DeadLetterCleared, "deliver/a".into())
        );
    }

    #[test]
    fn a_notifier_hears_only_the_classes_it_asked_for() {
        let n = notifier(&[StageStalled], 0);
        let mut r = Record::default();
        let dead = Event::new(EventKind::DeadLettered, "deliver/a", "x");
        let mut raised = Digest::default();
        raised.add(Event::new(EventKind::DiskBudgetReached, "state", "full"));
        raised.add(Event::new(EventKind::Test, "n", ""));
        let f = Facts {
            new_dead: vec![dead],
            dead_counts: Some(BTreeMap::from([("deliver/a".to_string(), 1)])),
            stalled: Some(BTreeSet::from(["deliver/a".to_string()])),
            raised,
            ..facts(10)
        };
        fold(&mut r, &n, &f, "stuck");
        assert_eq!(
            kinds(&r),
            vec![
                (EventKind::Test, "n".into()),
                (EventKind::StageStalled, "deliver/a".into())
            ]
        );
    }

    #[test]
    fn reported_conditions_hold_until_cleared_and_survive_rounds_without_reports() {
        let n = notifier(&EventClass::ALL, 0);
        let mut r = Record::default();
        let key = (DiskBudget, "state directory".to_string());
        let reported = |d: Option<&str>| BTreeMap::from([(key.clone(), d.map(String::from))]);
        fold(
            &mut r,
            &n,
            &Facts {
                reported: reported(Some("21 GB of 20 GB")),
                ..facts(10)
            },
            "",
        );
        fold(&mut r, &n, &facts(20), "");
        fold(
            &mut r,
            &n,
            &Facts {
                reported: reported(Some("21 GB of 20 GB")),
                ..facts(30)
            },
            "",
        );
        assert_eq!(
            kinds(&r),
            vec![(EventKind::DiskBudgetReached, "state directory".into())]
        );
        fold(
            &mut r,
            &n,
            &Facts {
                reported: reported(None),
                ..facts(70)
            },
            "",
        );
        assert_eq!(
            kinds(&r)[1],
            (EventKind::DiskBudgetRecovered, "state directory".into())
        );
        assert_eq!(r.pending.events[1].detail, "after 1m");
    }

    #[test]
    fn a_digest_is_due_at_once_then_once_per_min_interval_and_after_a_failure_backs_off() {
        let n = notifier(&EventClass::ALL, 0);
        let mut r = Record::default();
        assert!(!due(&r, &n, 100), "nothing to send");
        r.pending.add(Event::new(EventKind::StageStalled, "q", ""));
        assert!(due(&r, &n, 100), "first message goes at once");
        r.last_sent = Some(100);
        assert!(!due(&r, &n, 159));
        assert!(due(&r, &n, 160));
        r.next_attempt = Some(200);
        assert!(!due(&r, &n, 199));
        assert!(due(&r, &n, 200));
        r.next_attempt = None;
        r.pending
            .add(Event::storage_fail_stop("state", "No space left on device"));
        assert!(
            due(&r, &n, 101),
            "a fail-stop goes out whatever min_interval says"
        );
        let waits: Vec<u64> = (1..=7)
            .map(|f| retry_after(f, Duration::from_secs(900)).as_secs())
            .collect();
        assert_eq!(waits, vec![10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(retry_after(5, Duration::from_secs(30)).as_secs(), 30);
    }

    #[test]
    fn the_dead_letter_scan_reports_each_letter_once_even_at_the_same_millisecond() {
        let letter = |id: u64, queue: &str, ms: u64, error: &str| DeadLetter {
            id: crate::queue::ItemId(id),
            queue: queue.into(),
            attempts: 1,
            first_error: String::new(),
            last_error: error.into(),
            first_seen: UNIX_EPOCH,
            last_tried: UNIX_EPOCH + Duration::from_millis(ms),
            metadata: Vec::new(),
            payload_bytes: 0,
        };
        let mut observed = Observed::default();
        let mut scan = DeadScan::after(&observed);
        scan.add(letter(1, "deliver/a", 5000, "late"));
        scan.add(letter(2, "deliver/a", 2000, "early"));
        scan.add(letter(3, "fetched", 5000, "bad body"));
        let (events, counts) = scan.finish(&mut observed);
        assert_eq!(
            counts,
            BTreeMap::from([("deliver/a".into(), 2), ("fetched".into(), 1)])
        );
        let summary: Vec<(&str, u64, &str, i64, i64)> = events
            .iter()
            .map(|e| {
                (
                    e.subject.as_str(),
                    e.count,
                    e.detail.as_str(),
                    e.first_at,
                    e.last_at,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("deliver/a", 2, "early", 2, 5),
                ("fetched", 1, "bad body", 5, 5)
            ]
        );
        assert_eq!(
            (observed.dead_seen_ms, observed.dead_seen_ids.clone()),
            (5000, vec![1, 3])
        );
        // The same letters again, plus one more at the same millisecond: only it is new.
        let mut scan = DeadScan::after(&observed);
        for l in [
            letter(1, "deliver/a", 5000, ""),
            letter(2, "deliver/a", 2000, ""),
            letter(3, "fetched", 5000, ""),
            letter(4, "fetched", 5000, "x"),
        ] {
            scan.add(l);
        }
        let (events, _) = scan.finish(&mut observed);
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].subject.as_str(), events[0].count),
            ("fetched", 1)
        );
        assert_eq!(observed.dead_seen_ids, vec![1, 3, 4]);
    }

    /// The records live in the state area across upgrades: their postcard form must
    /// not change by accident.
    #[test]
    fn the_stored_form_of_the_records_is_pinned() {
        let mut record = Record {
            last_sent: Some(1_700_000_000),
            failures: 2,
            next_attempt: Some(1_700_000_040),
            last_error: "refused".into(),
            ..Record::default()
        };
        let c = Condition {
            class: EventClass::ScheduleFailing,
            subject: "often".into(),
            since: 1_699_999_000,
            detail: "HTTP 503".into(),
        };
        record.active.insert(c.key(), c);
        record
            .pending
            .add(Event::storage_fail_stop("state", "No space left on device"));
        record.pending.events[0].first_at = 1_700_000_001;
        record.pending.events[0].last_at = 1_700_000_001;
        let observed = Observed {
            dead_seen_ms: 1_700_000_000_123,
            dead_seen_ids: vec![7, 9],
            failing_since: BTreeMap::from([("often".to_string(), 1_699_999_000)]),
        };
        let bytes = (
            hex::encode(postcard::to_allocvec(&record).unwrap()),
            hex::encode(postcard::to_allocvec(&observed).unwrap()),
        );
        assert_eq!(
            bytes,
            (
                "01167363686564756c655f6661696c696e672f6f6674656e01056f6674656eb0b49fd50c08485454\
                 5020353033010805737461746501174e6f207370616365206c656674206f6e2064657669636582c4\
                 9fd50c82c49fd50c000180c49fd50c0201d0c49fd50c0772656675736564"
                    .to_string(),
                "fbd095ffbc3102070901056f6674656eb0b49fd50c".to_string()
            )
        );
        assert_eq!(
            postcard::from_bytes::<Record>(&postcard::to_allocvec(&record).unwrap()).unwrap(),
            record
        );
    }

    /// A webhook receiver in the test: every POST's JSON body, in order.
    async fn receiver() -> (u16, Arc<std::sync::Mutex<Vec<serde_json::Value>>>) {
        let got: Arc<std::sync::Mutex<Vec<serde_json::Value>>> = Arc::default();
        let seen = got.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push(body);
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (port, got)
    }

    fn kinds_of(body: &serde_json::Value) -> Vec<String> {
        body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_string())
            .collect()
    }

    async fn wait_for(
        got: &std::sync::Mutex<Vec<serde_json::Value>>,
        n: usize,
        limit: Duration,
    ) -> Vec<serde_json::Value> {
        let started = tokio::time::Instant::now();
        while got.lock().unwrap().len() < n && started.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        got.lock().unwrap().clone()
    }

    /// The disk budget and the fail-stop do not exist in the daemon yet: this is how
    /// they will be told, through the handle.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conditions_and_fail_stops_raised_through_the_handle_reach_the_webhook() {
        let dir = tempfile::tempdir().unwrap();
        let (port, got) = receiver().await;
        let source = dir.path().join("p.toml");
        let text = format!(
            "state_dir = \"{}\"\n[[notify]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{port}/hook\"\nmin_interval = \"1h\"\n",
            dir.path().display()
        );
        std::fs::write(&source, &text).unwrap();
        let config = Config::from_toml(&source, &text).unwrap();
        let secrets = config.resolve_secrets().unwrap();
        let queue = Queue::open(dir.path().join("queue")).unwrap();
        let health = Arc::new(Health::new(Duration::from_secs(600)));
        let start = |queue: Queue| {
            let n = Notifications::new(&config, &secrets, queue, health.clone()).unwrap();
            let handle = n.handle();
            let stop = CancellationToken::new();
            (handle, stop.clone(), tokio::spawn(n.run(stop)))
        };

        let (handle, stop, task) = start(queue.clone());
        handle.condition(DiskBudget, "state directory", Some("20.1 GB of 20 GB used"));
        let bodies = wait_for(&got, 1, OBSERVE_EVERY * 3).await;
        assert_eq!(bodies.len(), 1, "the first message goes at once");
        assert_eq!(kinds_of(&bodies[0]), ["disk_budget_reached"]);
        assert_eq!(bodies[0]["events"][0]["detail"], "20.1 GB of 20 GB used");
        // Reported again at every check: nothing new to tell.
        handle.condition(DiskBudget, "state directory", Some("20.1 GB of 20 GB used"));
        // A fail-stop does not wait for min_interval (an hour) nor for the next look.
        let raised = tokio::time::Instant::now();
        handle.raise(Event::storage_fail_stop(
            "state directory",
            "No space left on device (os error 28)",
        ));
        let bodies = wait_for(&got, 2, Duration::from_secs(3)).await;
        assert_eq!(bodies.len(), 2, "the fail-stop came at once");
        assert!(raised.elapsed() < OBSERVE_EVERY);
        assert_eq!(kinds_of(&bodies[1]), ["storage_fail_stop"]);
        // The recovery waits for min_interval; at shutdown it stays stored, unsent.
        handle.condition(DiskBudget, "state directory", None);
        tokio::time::sleep(OBSERVE_EVERY + Duration::from_secs(1)).await;
        stop.cancel();
        task.await.unwrap();
        let record: Record = queue.state_get(&record_key("hook")).await.unwrap().unwrap();
        let pending: Vec<EventKind> = record.pending.events.iter().map(|e| e.kind).collect();
        assert_eq!(pending, [EventKind::DiskBudgetRecovered]);
        assert_eq!(got.lock().unwrap().len(), 2);

        // The next start: a fail-stop raised just before shutdown goes out as its last
        // words, with what was pending.
        let (handle, stop, task) = start(queue.clone());
        tokio::time::sleep(Duration::from_millis(200)).await;
        handle.raise(Event::storage_fail_stop(
            "state directory",
            "Input/output error (os error 5)",
        ));
        stop.cancel();
        task.await.unwrap();
        let bodies = wait_for(&got, 3, Duration::from_secs(1)).await;
        assert_eq!(bodies.len(), 3);
        assert_eq!(
            kinds_of(&bodies[2]),
            ["disk_budget_recovered", "storage_fail_stop"]
        );
        let record: Record = queue.state_get(&record_key("hook")).await.unwrap().unwrap();
        assert!(record.pending.is_empty());
    }
}
