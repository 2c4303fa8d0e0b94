//! Report windows, planned in appliance time.
//!
//! A watermark is the appliance-time instant up to which every closed session of one
//! (site, data kind) has been enqueued. The next windows start `overlap` before it (late
//! writers are caught; duplicates are absorbed by idempotent delivery) and end
//! `settle_lag` before appliance-now. Windows are half-open `[start, end)` and at most
//! `max_window` long; a window whose body is too large or times out is split in halves.
//! Nothing here reads a clock: callers pass appliance-now.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::config::{PipelineConfig, StartFrom};

/// A half-open range of appliance time `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Window {
    /// First instant covered.
    pub start: DateTime<Utc>,
    /// First instant not covered.
    pub end: DateTime<Utc>,
}

impl Window {
    /// Length in whole seconds (at least 1: the API's `duration=0` means "up to now").
    pub fn duration_secs(&self) -> u64 {
        (self.end - self.start).num_seconds().max(1) as u64
    }

    /// Two halves, or `None` when the window is too short to split (one second).
    pub fn split(&self) -> Option<(Window, Window)> {
        let secs = (self.end - self.start).num_seconds();
        if secs < 2 {
            return None;
        }
        let mid = self.start + TimeDelta::seconds(secs / 2);
        Some((
            Window {
                start: self.start,
                end: mid,
            },
            Window {
                start: mid,
                end: self.end,
            },
        ))
    }
}

/// Where a watermark starts the first time.
pub fn initial_watermark(start_from: StartFrom, appliance_now: DateTime<Utc>) -> DateTime<Utc> {
    match start_from {
        StartFrom::Ago(d) => appliance_now - delta(d),
        StartFrom::At(t) => t,
    }
}

/// The windows to fetch now. The last window's `end` is the watermark once all are
/// enqueued; no window ends after `appliance_now - settle_lag`, whatever the host clock
/// says, because `appliance_now` is measured from the appliance.
pub fn plan_windows(
    watermark: Option<DateTime<Utc>>,
    start_from: StartFrom,
    appliance_now: DateTime<Utc>,
    pipeline: &PipelineConfig,
) -> Vec<Window> {
    let limit = appliance_now - delta(pipeline.settle_lag);
    let start = match watermark {
        Some(w) => w - delta(pipeline.overlap),
        None => initial_watermark(start_from, appliance_now),
    };
    // A watermark from the future (the appliance clock was moved back) must not produce
    // windows from the future; it waits until appliance time catches up.
    if start >= limit {
        return Vec::new();
    }
    let step = delta(pipeline.max_window.max(Duration::from_secs(1)));
    let mut windows = Vec::new();
    let mut cursor = start;
    while cursor < limit {
        let end = (cursor + step).min(limit);
        windows.push(Window { start: cursor, end });
        cursor = end;
    }
    windows
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RetryPolicy;

    fn pipeline(overlap: u64, settle: u64, max_window: u64) -> PipelineConfig {
        PipelineConfig {
            overlap: Duration::from_secs(overlap),
            settle_lag: Duration::from_secs(settle),
            max_window: Duration::from_secs(max_window),
            max_body_bytes: 1 << 20,
            in_progress_max_age: Duration::from_secs(86_400),
            stall_after: Duration::from_secs(900),
            retry: RetryPolicy {
                max_attempts: 3,
                initial: Duration::from_secs(1),
                max_interval: Duration::from_secs(10),
            },
            max_state_bytes: None,
            min_free_bytes: 0,
        }
    }

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    #[test]
    fn first_run_starts_at_start_from_and_stops_before_settle_lag() {
        let w = plan_windows(
            None,
            StartFrom::Ago(Duration::from_secs(7200)),
            t(100_000),
            &pipeline(900, 120, 3600),
        );
        assert_eq!(
            w,
            vec![
                Window {
                    start: t(92_800),
                    end: t(96_400)
                },
                Window {
                    start: t(96_400),
                    end: t(99_880)
                },
            ]
        );
    }

    #[test]
    fn later_runs_start_overlap_before_the_watermark() {
        let w = plan_windows(
            Some(t(99_000)),
            StartFrom::Ago(Duration::ZERO),
            t(100_000),
            &pipeline(900, 120, 3600),
        );
        assert_eq!(
            w,
            vec![Window {
                start: t(98_100),
                end: t(99_880)
            }]
        );
    }

    #[test]
    fn a_watermark_ahead_of_the_appliance_plans_nothing() {
        let w = plan_windows(
            Some(t(200_000)),
            StartFrom::Ago(Duration::ZERO),
            t(100_000),
            &pipeline(900, 120, 3600),
        );
        assert!(w.is_empty());
    }

    #[test]
    fn windows_tile_the_range_without_gaps() {
        let w = plan_windows(None, StartFrom::At(t(0)), t(50_000), &pipeline(0, 0, 7000));
        assert_eq!(w.first().unwrap().start, t(0));
        assert_eq!(w.last().unwrap().end, t(50_000));
        assert!(w.windows(2).all(|p| p[0].end == p[1].start));
        assert!(w.iter().all(|x| x.duration_secs() <= 7000));
    }

    #[test]
    fn splitting_halves_a_window_until_one_second() {
        let (a, b) = Window {
            start: t(0),
            end: t(11),
        }
        .split()
        .unwrap();
        assert_eq!((a.end, b.start, b.end), (t(5), t(5), t(11)));
        assert!(
            Window {
                start: t(0),
                end: t(1)
            }
            .split()
            .is_none()
        );
    }
}
