//! Telling the operator: mail (SMTP) and webhook digests of what went wrong and what
//! recovered, for sites without Prometheus, where a mail is the only alarm.
//!
//! # Where events come from
//!
//! The stages know nothing of this module. `Notifications` is one task in the daemon
//! that looks, every `OBSERVE_EVERY` (5 s), at what the daemon already records:
//!
//! - **the dead letter** (`Queue::fold_dead_letters`): letters last tried after the
//!   observer's cursor are new; they become one `DeadLettered` event per queue (how
//!   many, the first one's error, the times). A queue whose dead letter empties (replay,
//!   purge) is a `DeadLetterCleared` recovery;
//! - **the schedules' run records** (`schedule/<name>`, written by the scheduler): a
//!   schedule with failed runs since its last success is failing from the moment the
//!   observer first saw it so; once that is longer than the notifier's `failing_after`
//!   it is a `ScheduleFailing` event, and its next good run a `ScheduleRecovered`;
//! - **`metrics::Health`**: a stage with work and no progress for `stall_after` (what
//!   turns `/healthz` 503) is `StageStalled`, and `StageRecovered` when it moves;
//! - **the `NotifyHandle`**, for what only other parts know: `condition` reports a
//!   condition that holds or not (the disk budget: call it at every check, with
//!   `Some(detail)` while over budget and `None` when under; the task turns changes into
//!   `DiskBudgetReached` / `DiskBudgetRecovered`), and `raise` an event that happened
//!   (`Event::storage_fail_stop` just before the daemon stops for a storage error,
//!   sent at once; `Event::storage_recovered` from the start after it).
//!
//! # Digests and what is stored
//!
//! Each notifier has a record in the queue's state area (`notify/notifier/<name>`): the
//! conditions it was told hold, its pending `Digest` (events merged per subject, at
//! most `MAX_EVENTS` listed), when its last message went out and its failed attempts.
//! The observer's cursor (`notify/observed`: the last dead letter seen, when each
//! failing schedule started failing) is stored in the same transaction as the digests
//! its events went into, so a restart neither repeats nor misses an event. A digest goes
//! out when it is not empty and `min_interval` has passed since the last message (the
//! first one at once; a fail-stop at once, always); a failed send keeps it whole and is
//! tried again after 10 s, doubling up to `min_interval` (at most 5 min). So a notifier
//! that is down loses nothing and, when it answers again, gets one message with
//! everything since the last.
//!
//! # Secrets
//!
//! Events are written without secrets, and every message and send error also passes
//! through `Redactor`, which replaces each secret value the pipeline file refers to by
//! `***`. The webhook URL (it holds the hook's token) is never printed: errors and
//! `describe` name its host only.

mod event;
mod hub;
mod message;
mod transport;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

pub use event::{Digest, Event, EventKind, MAX_DETAIL_CHARS, MAX_EVENTS};
pub use hub::{Notifications, OBSERVE_EVERY};
pub use message::{Message, Origin, Redactor, compose, host_name};
pub use transport::{NotifyError, SEND_TIMEOUT, Transport};

use crate::config::EventClass;

/// How other parts of the daemon tell the notifier task about what the observer cannot
/// see. Cheap to clone; every call returns at once and never fails. A handle of a daemon
/// without notifiers does nothing.
#[derive(Debug, Clone, Default)]
pub struct NotifyHandle {
    inner: Option<Arc<Inbox>>,
}

/// What was raised and reported since the task last looked.
#[derive(Debug, Default)]
struct Inbox {
    /// Events raised, merged like a digest, so the inbox stays bounded.
    raised: Mutex<Digest>,
    /// The latest report of each condition (`None`: it stopped holding); one entry per
    /// (class, subject) ever reported.
    conditions: Mutex<BTreeMap<(EventClass, String), Option<String>>>,
    /// Wakes the task for an urgent event.
    wake: tokio::sync::Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl NotifyHandle {
    /// A handle whose calls go nowhere.
    pub fn disabled() -> NotifyHandle {
        NotifyHandle::default()
    }

    fn new() -> NotifyHandle {
        NotifyHandle {
            inner: Some(Arc::new(Inbox::default())),
        }
    }

    /// Raises an event. An urgent one (a fail-stop) wakes the task, which sends it at
    /// once; the others go into the digests at the task's next look.
    pub fn raise(&self, event: Event) {
        let Some(inbox) = &self.inner else {
            return;
        };
        let urgent = event.kind.is_urgent();
        lock(&inbox.raised).add(event);
        if urgent {
            inbox.wake.notify_one();
        }
    }

    /// Reports whether a condition of `class` about `subject` holds (`Some(detail)`) or
    /// not (`None`). Report it at every check, not only on changes: the task tells the
    /// notifiers when it starts and stops holding, and after a restart it keeps what it
    /// last told until the condition is reported again. For classes the task does not
    /// watch itself (`DiskBudget`; `StorageFailStop` if it is ever a lasting state).
    pub fn condition(&self, class: EventClass, subject: &str, detail: Option<&str>) {
        if let Some(inbox) = &self.inner {
            lock(&inbox.conditions).insert((class, subject.to_string()), detail.map(String::from));
        }
    }

    /// Takes the raised events and reads the reported conditions.
    fn take(&self) -> (Digest, BTreeMap<(EventClass, String), Option<String>>) {
        match &self.inner {
            None => Default::default(),
            Some(inbox) => (
                std::mem::take(&mut *lock(&inbox.raised)),
                lock(&inbox.conditions).clone(),
            ),
        }
    }

    /// Returns when an urgent event was raised (never, for a disabled handle).
    async fn woken(&self) {
        match &self.inner {
            Some(inbox) => inbox.wake.notified().await,
            None => std::future::pending().await,
        }
    }
}
