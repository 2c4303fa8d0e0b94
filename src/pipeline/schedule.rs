//! When schedules run. A schedule that never ran, or whose last successful run is older
//! than its period, runs at once; one with a time of day (`at`, UTC, whole-day periods
//! only) then keeps to that time. Runs that could not reach the appliance or a
//! destination are not successful runs, so they do not move `last_run`.

use chrono::{DateTime, Days, NaiveTime, TimeDelta, Utc};

use crate::config::Schedule;

/// The instant at which `schedule` is next due, given its last successful run.
pub fn next_due(schedule: &Schedule, last_run: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    let last = last_run?;
    let every = TimeDelta::from_std(schedule.every).unwrap_or(TimeDelta::MAX);
    let Some(at) = schedule.at else {
        return Some(last + every);
    };
    // The first `at` on or after (last + every - 1 day + 1 minute): a daily 02:00 run
    // that ran at 02:00:05 is next due tomorrow at 02:00, and a first run made at once
    // at 15:00 falls back into step at the next 02:00.
    let earliest = last + every - TimeDelta::days(1) + TimeDelta::minutes(1);
    Some(first_at_on_or_after(earliest, at))
}

/// Whether `schedule` should run at `now`.
pub fn is_due(schedule: &Schedule, last_run: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    next_due(schedule, last_run).is_none_or(|due| due <= now)
}

fn first_at_on_or_after(t: DateTime<Utc>, at: NaiveTime) -> DateTime<Utc> {
    let same_day = t.date_naive().and_time(at).and_utc();
    if same_day >= t {
        same_day
    } else {
        (t.date_naive() + Days::new(1)).and_time(at).and_utc()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn schedule(every_secs: u64, at: Option<&str>) -> Schedule {
        Schedule {
            name: "s".into(),
            every: Duration::from_secs(every_secs),
            at: at.map(|a| NaiveTime::parse_from_str(a, "%H:%M").unwrap()),
            transfers: Vec::new(),
        }
    }

    fn t(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().into()
    }

    #[test]
    fn a_schedule_that_never_ran_is_due_at_once() {
        assert!(is_due(
            &schedule(300, None),
            None,
            t("2026-01-01T00:00:00Z")
        ));
    }

    #[test]
    fn periodic_schedules_run_one_period_after_the_last_run() {
        let s = schedule(300, None);
        let last = t("2026-01-01T10:00:00Z");
        assert_eq!(next_due(&s, Some(last)), Some(t("2026-01-01T10:05:00Z")));
        assert!(!is_due(&s, Some(last), t("2026-01-01T10:04:59Z")));
        assert!(is_due(&s, Some(last), t("2026-01-01T10:05:00Z")));
    }

    #[test]
    fn daily_schedules_keep_their_time_of_day() {
        let cases = [
            (
                86_400,
                "02:00",
                "2026-01-01T02:00:05Z",
                "2026-01-02T02:00:00Z",
            ),
            (
                86_400,
                "02:00",
                "2026-01-01T15:00:00Z",
                "2026-01-02T02:00:00Z",
            ),
            // A first run made at once shortly before the time of day: back in step the same day.
            (
                86_400,
                "02:00",
                "2026-01-01T01:00:00Z",
                "2026-01-01T02:00:00Z",
            ),
            (
                7 * 86_400,
                "03:00",
                "2026-01-01T03:00:00Z",
                "2026-01-08T03:00:00Z",
            ),
            (
                2 * 86_400,
                "23:30",
                "2026-01-01T23:30:10Z",
                "2026-01-03T23:30:00Z",
            ),
        ];
        for (every, at, last, expected) in cases {
            assert_eq!(
                next_due(&schedule(every, Some(at)), Some(t(last))),
                Some(t(expected)),
                "every {every}s at {at}, last {last}"
            );
        }
    }

    #[test]
    fn a_missed_daily_run_is_due_at_once() {
        let s = schedule(86_400, Some("02:00"));
        assert!(is_due(
            &s,
            Some(t("2026-01-01T02:00:00Z")),
            t("2026-01-03T10:00:00Z")
        ));
    }
}
