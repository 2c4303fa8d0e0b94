//! The vocabulary of notifications: `Event` (what happened, to what, how often, when)
//! and `Digest` (the events a notifier has not been told about yet, merged and bounded).
//! Both are stored in the state area, so their postcard form is pinned by a test below.

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::config::EventClass;

/// A digest lists at most this many events; later ones are only counted (`omitted`), so
/// a notifier that is down for days holds a bounded record.
pub const MAX_EVENTS: usize = 100;
/// An event's detail (an error text, say) is cut to this many characters.
pub const MAX_DETAIL_CHARS: usize = 500;

/// What happened. Every kind but `Test` belongs to an `EventClass`, as its event or as
/// its recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// Items went to the dead letter of a queue (`count` of them).
    DeadLettered,
    /// A queue's dead letter is empty again (replayed or purged).
    DeadLetterCleared,
    /// A schedule's runs have failed for longer than the notifier's `failing_after`.
    ScheduleFailing,
    /// A failing schedule ran successfully.
    ScheduleRecovered,
    /// A stage has work waiting and made no progress for `pipeline.stall_after`.
    StageStalled,
    /// A stalled stage made progress again.
    StageRecovered,
    /// The state directory reached its disk budget; fetching pauses.
    DiskBudgetReached,
    /// The state directory is under its budget again; fetching goes on.
    DiskBudgetRecovered,
    /// A storage error stopped the daemon. Sent at once, whatever `min_interval` says.
    StorageFailStop,
    /// Storage works again after a fail-stop.
    StorageRecovered,
    /// A message sent by `btic notify test`.
    Test,
}

impl EventKind {
    /// The class it belongs to (`None` for `Test`, which every notifier takes).
    pub fn class(self) -> Option<EventClass> {
        Some(match self {
            EventKind::DeadLettered | EventKind::DeadLetterCleared => EventClass::DeadLetter,
            EventKind::ScheduleFailing | EventKind::ScheduleRecovered => {
                EventClass::ScheduleFailing
            }
            EventKind::StageStalled | EventKind::StageRecovered => EventClass::StageStalled,
            EventKind::DiskBudgetReached | EventKind::DiskBudgetRecovered => EventClass::DiskBudget,
            EventKind::StorageFailStop | EventKind::StorageRecovered => EventClass::StorageFailStop,
            EventKind::Test => return None,
        })
    }

    /// The event of a class.
    pub fn raised(class: EventClass) -> EventKind {
        match class {
            EventClass::DeadLetter => EventKind::DeadLettered,
            EventClass::ScheduleFailing => EventKind::ScheduleFailing,
            EventClass::StageStalled => EventKind::StageStalled,
            EventClass::DiskBudget => EventKind::DiskBudgetReached,
            EventClass::StorageFailStop => EventKind::StorageFailStop,
        }
    }

    /// The recovery of a class.
    pub fn recovered(class: EventClass) -> EventKind {
        match class {
            EventClass::DeadLetter => EventKind::DeadLetterCleared,
            EventClass::ScheduleFailing => EventKind::ScheduleRecovered,
            EventClass::StageStalled => EventKind::StageRecovered,
            EventClass::DiskBudget => EventKind::DiskBudgetRecovered,
            EventClass::StorageFailStop => EventKind::StorageRecovered,
        }
    }

    /// Whether this is a recovery.
    pub fn is_recovery(self) -> bool {
        self.class()
            .is_some_and(|c| EventKind::recovered(c) == self)
    }

    /// Whether it is sent at once rather than after `min_interval`: a fail-stop is
    /// followed by the daemon's exit, and nobody may restart it for a long time.
    pub fn is_urgent(self) -> bool {
        self == EventKind::StorageFailStop
    }

    /// Its name in a webhook body.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::DeadLettered => "dead_letter",
            EventKind::DeadLetterCleared => "dead_letter_cleared",
            EventKind::ScheduleFailing => "schedule_failing",
            EventKind::ScheduleRecovered => "schedule_recovered",
            EventKind::StageStalled => "stage_stalled",
            EventKind::StageRecovered => "stage_recovered",
            EventKind::DiskBudgetReached => "disk_budget_reached",
            EventKind::DiskBudgetRecovered => "disk_budget_recovered",
            EventKind::StorageFailStop => "storage_fail_stop",
            EventKind::StorageRecovered => "storage_recovered",
            EventKind::Test => "test",
        }
    }
}

/// One thing to tell: `count` occurrences of `kind` about `subject` between `first_at`
/// and `last_at` (UNIX seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// To what: a queue (`deliver/reports`), a schedule's name, a stage's queue, the
    /// state directory.
    pub subject: String,
    /// How many: items for dead letters, occurrences otherwise.
    pub count: u64,
    /// The first error of dead-lettered items, a failing schedule's last outcome, how
    /// long a recovered condition lasted, ...; may be empty.
    pub detail: String,
    /// When it (first) happened.
    pub first_at: i64,
    /// When it last happened.
    pub last_at: i64,
}

impl Event {
    /// One occurrence, now.
    pub fn new(kind: EventKind, subject: impl Into<String>, detail: impl Into<String>) -> Event {
        let now = Utc::now().timestamp();
        Event {
            kind,
            subject: subject.into(),
            count: 1,
            detail: cut(detail.into()),
            first_at: now,
            last_at: now,
        }
    }

    /// The daemon stops because its storage failed (`reason`: the error, which names
    /// the file or directory). Raised through `NotifyHandle::raise` before the daemon
    /// shuts down; sent at once.
    pub fn storage_fail_stop(subject: impl Into<String>, reason: impl Into<String>) -> Event {
        Event::new(EventKind::StorageFailStop, subject, reason)
    }

    /// Storage is written again after a fail-stop (raised by a later start).
    pub fn storage_recovered(subject: impl Into<String>, detail: impl Into<String>) -> Event {
        Event::new(EventKind::StorageRecovered, subject, detail)
    }
}

/// Cuts a detail to `MAX_DETAIL_CHARS`.
pub(crate) fn cut(mut text: String) -> String {
    if let Some((at, _)) = text.char_indices().nth(MAX_DETAIL_CHARS) {
        text.truncate(at);
        text.push_str(" ...");
    }
    text
}

/// The events a notifier has not been told about yet, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// At most `MAX_EVENTS`.
    pub events: Vec<Event>,
    /// Events left out because the digest was full.
    pub omitted: u64,
}

impl Digest {
    /// Adds an event. It merges into the latest event of its class and subject when that
    /// is of the same kind (three dead-letter events for one queue are one line with the
    /// sum, the first error kept); a change of kind in between (cleared, then new dead
    /// letters) starts a new line, so the digest tells the story in order.
    pub fn add(&mut self, event: Event) {
        let latest = self
            .events
            .iter_mut()
            .rev()
            .find(|e| e.kind.class() == event.kind.class() && e.subject == event.subject);
        if let Some(latest) = latest
            && latest.kind == event.kind
        {
            latest.count += event.count;
            latest.first_at = latest.first_at.min(event.first_at);
            latest.last_at = latest.last_at.max(event.last_at);
            if latest.detail.is_empty() {
                latest.detail = event.detail;
            }
            return;
        }
        if self.events.len() >= MAX_EVENTS {
            self.omitted += 1;
            return;
        }
        self.events.push(event);
    }

    /// Adds every event of `other`.
    pub fn absorb(&mut self, other: Digest) {
        for e in other.events {
            self.add(e);
        }
        self.omitted += other.omitted;
    }

    /// Whether there is nothing to tell.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.omitted == 0
    }

    /// Whether it holds an event that must go out at once.
    pub fn is_urgent(&self) -> bool {
        self.events.iter().any(|e| e.kind.is_urgent())
    }

    /// When its oldest event happened.
    pub fn since(&self) -> Option<i64> {
        self.events.iter().map(|e| e.first_at).min()
    }
}

/// An event of `count` occurrences at `at`, for tests.
#[cfg(test)]
pub(crate) fn event(kind: EventKind, subject: &str, count: u64, detail: &str, at: i64) -> Event {
    Event {
        kind,
        subject: subject.into(),
        count,
        detail: detail.into(),
        first_at: at,
        last_at: at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_of_one_kind_and_subject_merge_and_a_change_of_kind_starts_a_new_line() {
        use EventKind::*;
        let mut d = Digest::default();
        d.add(event(DeadLettered, "deliver/a", 2, "first error", 10));
        d.add(event(DeadLettered, "deliver/b", 1, "other", 11));
        d.add(event(DeadLettered, "deliver/a", 3, "later error", 12));
        d.add(event(DeadLetterCleared, "deliver/a", 1, "", 13));
        d.add(event(DeadLettered, "deliver/a", 1, "again", 14));
        let lines: Vec<(EventKind, &str, u64, &str, i64, i64)> = d
            .events
            .iter()
            .map(|e| {
                (
                    e.kind,
                    e.subject.as_str(),
                    e.count,
                    e.detail.as_str(),
                    e.first_at,
                    e.last_at,
                )
            })
            .collect();
        assert_eq!(
            lines,
            vec![
                (DeadLettered, "deliver/a", 5, "first error", 10, 12),
                (DeadLettered, "deliver/b", 1, "other", 11, 11),
                (DeadLetterCleared, "deliver/a", 1, "", 13, 13),
                (DeadLettered, "deliver/a", 1, "again", 14, 14),
            ]
        );
    }

    #[test]
    fn a_full_digest_counts_what_it_leaves_out() {
        let mut d = Digest::default();
        for i in 0..MAX_EVENTS + 7 {
            d.add(event(
                EventKind::StageStalled,
                &format!("q{i}"),
                1,
                "",
                i as i64,
            ));
        }
        assert_eq!(d.events.len(), MAX_EVENTS);
        assert_eq!(d.omitted, 7);
        // An event that merges into a listed one still counts in full.
        d.add(event(EventKind::StageStalled, "q0", 1, "", 500));
        assert_eq!((d.events[0].count, d.omitted), (2, 7));
    }

    #[test]
    fn every_class_has_an_event_and_a_recovery() {
        for class in EventClass::ALL {
            let (up, down) = (EventKind::raised(class), EventKind::recovered(class));
            assert_eq!((up.class(), down.class()), (Some(class), Some(class)));
            assert!(!up.is_recovery() && down.is_recovery(), "{class:?}");
        }
        assert_eq!(EventKind::Test.class(), None);
    }

    #[test]
    fn long_details_are_cut() {
        let e = Event::new(EventKind::DeadLettered, "q", "x".repeat(2000));
        assert_eq!(e.detail.chars().count(), MAX_DETAIL_CHARS + 4);
        assert_eq!(Event::new(EventKind::Test, "q", "short").detail, "short");
    }

    /// The digest lives in the state area across upgrades: its postcard form must not
    /// change by accident.
    #[test]
    fn the_stored_form_of_a_digest_is_pinned() {
        let mut d = Digest::default();
        d.add(event(
            EventKind::DeadLettered,
            "deliver/a",
            2,
            "boom",
            1_700_000_000,
        ));
        d.add(event(
            EventKind::StorageFailStop,
            "state",
            1,
            "",
            1_700_000_001,
        ));
        d.omitted = 3;
        let bytes = postcard::to_allocvec(&d).unwrap();
        assert_eq!(
            hex::encode(&bytes),
            "02000964656c697665722f610204626f6f6d80c49fd50c80c49fd50c08\
             057374617465010082c49fd50c82c49fd50c03"
        );
        assert_eq!(postcard::from_bytes::<Digest>(&bytes).unwrap(), d);
    }
}
