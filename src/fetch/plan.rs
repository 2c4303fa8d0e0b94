//! Report windows, planned in appliance time.
//!
//! Two marks per (site, report): the watermark `W`, up to which every stretch of
//! appliance time has been asked for once, and the recheck mark `R <= W`, up to which
//! every stretch has been asked for the last time. A stretch asked for while it was
//! younger than `overlap` (late writers may still add to it) is asked for once more
//! when it leaves that horizon; one that was already older is final at the first
//! asking. So each stretch is asked for at most twice, whatever the schedule: a run
//! asks for `[R, min(W, horizon))` again, then for `[W, now - settle_lag)` for the
//! first time ([`plan_stretches`]). Windows never end after appliance-now minus
//! `settle_lag`, and nothing here reads a clock: callers pass appliance-now.
//!
//! How long each request's window is adapts to the bodies ([`Sizing`]): it grows while
//! bodies are small, so a quiet night is one request, and shrinks when they are large;
//! a body over `max_body_bytes`, or a request that times out, is split in halves.

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
    /// The first whole second the appliance is asked for: `start` rounded up. The API
    /// takes UNIX seconds and a session's times are whole seconds, so the window holds
    /// the seconds `s` with `start <= s < end`: from `start` rounded up to `end` rounded
    /// up. Windows that meet (one's `end` the next one's `start`) are asked for seconds
    /// that meet too, whatever fractions of a second the marks carry (appliance time is
    /// the local clock plus a skew measured in milliseconds).
    pub fn first_second(&self) -> DateTime<Utc> {
        ceil_second(self.start)
    }

    /// How many whole seconds from [`first_second`](Self::first_second) on the
    /// appliance is asked for, at least 1 (the API's `duration=0` means "up to now").
    pub fn duration_secs(&self) -> u64 {
        (ceil_second(self.end) - ceil_second(self.start))
            .num_seconds()
            .max(1) as u64
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

/// `t` rounded up to a whole second.
fn ceil_second(t: DateTime<Utc>) -> DateTime<Utc> {
    let whole = t - TimeDelta::nanoseconds(i64::from(t.timestamp_subsec_nanos()));
    if whole == t {
        t
    } else {
        whole + TimeDelta::seconds(1)
    }
}

/// Where a watermark starts the first time.
pub fn initial_watermark(start_from: StartFrom, appliance_now: DateTime<Utc>) -> DateTime<Utc> {
    match start_from {
        StartFrom::Ago(d) => appliance_now - delta(d),
        StartFrom::At(t) => t,
    }
}

/// Which asking of its stretch a window is, and so which marks move past it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// The second and last asking: moves `R`.
    Recheck,
    /// The first asking of a stretch already older than `overlap`, which is also its
    /// last: moves `W` and `R`.
    Final,
    /// The first asking of a young stretch: moves `W`; it is asked again later.
    First,
}

/// A stretch of appliance time to ask for, and which asking it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stretch {
    /// `[start, end)`.
    pub window: Window,
    /// Which marks move past it.
    pub pass: Pass,
}

/// The marks of one (site, report) as stored; `None` when never written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Marks {
    /// `W`: everything before it has been asked for at least once.
    pub watermark: Option<DateTime<Utc>>,
    /// `R`: everything before it has been asked for the last time.
    pub rechecked: Option<DateTime<Utc>>,
}

/// The stretches a run asks for, oldest first: the recheck of what has left the
/// `overlap` horizon since it was first asked for, then what is new (split at the
/// horizon: older is final at once). A site without marks starts at `start_from` with
/// nothing to recheck; marks written before the recheck mark existed recheck the last
/// `overlap` before the watermark, as every run used to ask for it.
pub fn plan_stretches(
    marks: Marks,
    start_from: StartFrom,
    appliance_now: DateTime<Utc>,
    pipeline: &PipelineConfig,
) -> Vec<Stretch> {
    let overlap = delta(pipeline.overlap);
    let limit = appliance_now - delta(pipeline.settle_lag);
    let horizon = limit - overlap;
    let watermark = marks
        .watermark
        .unwrap_or_else(|| initial_watermark(start_from, appliance_now));
    let rechecked = match (marks.rechecked, marks.watermark) {
        (Some(r), _) => r,
        (None, Some(w)) => w - overlap,
        (None, None) => watermark,
    }
    .min(watermark);
    let mut stretches = Vec::new();
    let mut push = |start: DateTime<Utc>, end: DateTime<Utc>, pass| {
        if start < end {
            stretches.push(Stretch {
                window: Window { start, end },
                pass,
            });
        }
    };
    push(rechecked, watermark.min(horizon), Pass::Recheck);
    push(watermark, horizon.min(limit), Pass::Final);
    push(watermark.max(horizon), limit, Pass::First);
    stretches
}

/// The length of the next report window of a (site, report): it starts at an hour (or
/// `max_window` if shorter) and follows the bodies, aiming at a quarter of
/// `max_body_bytes` — at most doubling, at most quartering per body — within a minute
/// and `max_window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizing {
    length: Duration,
    max: Duration,
    target_bytes: u64,
}

/// The shortest window [`Sizing`] plans (splits of a too-large body go shorter).
const MIN_WINDOW: Duration = Duration::from_secs(60);

impl Sizing {
    /// A sizing for `pipeline`, starting from a length kept from before.
    pub fn new(kept: Option<Duration>, pipeline: &PipelineConfig) -> Sizing {
        let max = pipeline.max_window.max(Duration::from_secs(1));
        Sizing {
            length: kept
                .unwrap_or(Duration::from_secs(3600))
                .clamp(MIN_WINDOW.min(max), max),
            max,
            target_bytes: (pipeline.max_body_bytes / 4).max(1),
        }
    }

    /// The next window's length.
    pub fn length(&self) -> Duration {
        self.length
    }

    /// Learns from a body of `bytes` (0: no data) for a window of `window`.
    pub fn observe(&mut self, window: Duration, bytes: u64) {
        let grown = self.length.saturating_mul(2);
        let ideal = if bytes == 0 {
            grown
        } else {
            let secs = window.as_secs_f64() * self.target_bytes as f64 / bytes as f64;
            Duration::from_secs_f64(secs.min(grown.as_secs_f64()))
        };
        self.length = ideal
            .max(self.length / 4)
            .min(grown)
            .clamp(MIN_WINDOW.min(self.max), self.max);
    }
}

/// The stretch of start times to ask for once (sessions in progress are fetched again by
/// LSID, and once ended through the end-time stretches): from the mark, or `start_from`,
/// up to appliance-now minus `settle_lag`; `None` when there is nothing new.
pub fn fresh_stretch(
    mark: Option<DateTime<Utc>>,
    start_from: StartFrom,
    appliance_now: DateTime<Utc>,
    pipeline: &PipelineConfig,
) -> Option<Window> {
    let limit = appliance_now - delta(pipeline.settle_lag);
    let start = mark.unwrap_or_else(|| initial_watermark(start_from, appliance_now));
    (start < limit).then_some(Window { start, end: limit })
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

    fn w(start: i64, end: i64) -> Window {
        Window {
            start: t(start),
            end: t(end),
        }
    }

    fn stretch(start: i64, end: i64, pass: Pass) -> Stretch {
        Stretch {
            window: w(start, end),
            pass,
        }
    }

    #[test]
    fn a_first_run_starts_at_start_from_and_what_is_old_enough_is_final_at_once() {
        let marks = Marks::default();
        let plan = plan_stretches(
            marks,
            StartFrom::Ago(Duration::from_secs(7200)),
            t(100_000),
            &pipeline(900, 120, 3600),
        );
        assert_eq!(
            plan,
            [
                stretch(92_800, 98_980, Pass::Final),
                stretch(98_980, 99_880, Pass::First)
            ]
        );
    }

    #[test]
    fn a_later_run_rechecks_what_left_the_horizon_and_asks_for_what_is_new() {
        let marks = Marks {
            watermark: Some(t(99_820)),
            rechecked: Some(t(98_920)),
        };
        let plan = plan_stretches(
            marks,
            StartFrom::Ago(Duration::ZERO),
            t(100_000),
            &pipeline(900, 120, 3600),
        );
        assert_eq!(
            plan,
            [
                stretch(98_920, 98_980, Pass::Recheck),
                stretch(99_820, 99_880, Pass::First)
            ]
        );
    }

    #[test]
    fn marks_from_before_the_recheck_mark_recheck_the_last_overlap() {
        let marks = Marks {
            watermark: Some(t(99_000)),
            rechecked: None,
        };
        let plan = plan_stretches(
            marks,
            StartFrom::Ago(Duration::ZERO),
            t(100_000),
            &pipeline(900, 120, 3600),
        );
        assert_eq!(
            plan,
            [
                stretch(98_100, 98_980, Pass::Recheck),
                stretch(99_000, 99_880, Pass::First)
            ]
        );
    }

    #[test]
    fn windows_whose_marks_carry_fractions_of_a_second_ask_for_every_second() {
        let ms = |v: i64| DateTime::from_timestamp_millis(v).unwrap();
        // [10.7 s, 3610.2 s) holds the sessions that ended at 11 ..= 3610 s.
        let w = Window {
            start: ms(10_700),
            end: ms(3_610_200),
        };
        assert_eq!((w.first_second(), w.duration_secs()), (t(11), 3600));
        // Marks anywhere in a second (appliance time is the clock plus a skew in
        // milliseconds): windows that meet ask for seconds that meet.
        let marks = [
            10_700, 70_300, 70_900, 131_100, 191_100, 250_000, 250_001, 311_999,
        ];
        let mut asked = Vec::new();
        for pair in marks.windows(2) {
            let w = Window {
                start: ms(pair[0]),
                end: ms(pair[1]),
            };
            let from = w.first_second().timestamp();
            asked.extend(from..from + w.duration_secs() as i64);
        }
        let wanted: Vec<i64> = (11..312).collect();
        assert!(wanted.iter().all(|s| asked.contains(s)), "{asked:?}");
        assert!(asked.iter().all(|s| wanted.contains(s)), "{asked:?}");
    }

    #[test]
    fn a_watermark_ahead_of_the_appliance_plans_nothing() {
        let marks = Marks {
            watermark: Some(t(200_000)),
            rechecked: Some(t(200_000)),
        };
        let plan = plan_stretches(
            marks,
            StartFrom::Ago(Duration::ZERO),
            t(100_000),
            &pipeline(900, 120, 3600),
        );
        assert!(plan.is_empty());
        assert_eq!(
            fresh_stretch(
                Some(t(200_000)),
                StartFrom::Ago(Duration::ZERO),
                t(100_000),
                &pipeline(900, 120, 3600)
            ),
            None
        );
    }

    /// Runs the planner every `every` seconds for a day (moving the marks as the fetch
    /// stage does) and counts the askings of every second of appliance time.
    fn askings(every: i64, overlap: u64, settle: u64) -> (Vec<u8>, Vec<bool>) {
        let p = pipeline(overlap, settle, 3600);
        let day = 86_400;
        let mut marks = Marks::default();
        let mut asked = vec![0u8; day as usize * 2];
        let mut last_old = vec![false; day as usize * 2];
        let mut now = day;
        while now < 2 * day {
            for s in plan_stretches(marks, StartFrom::At(t(day - 3600)), t(now), &p) {
                for sec in s.window.start.timestamp()..s.window.end.timestamp() {
                    asked[sec as usize] += 1;
                    // Whether this asking came when the second was older than overlap.
                    last_old[sec as usize] = now - settle as i64 - sec >= overlap as i64;
                }
                let end = Some(s.window.end);
                match s.pass {
                    Pass::Recheck => marks.rechecked = end,
                    Pass::Final => (marks.watermark, marks.rechecked) = (end, end),
                    Pass::First => marks.watermark = end,
                }
            }
            now += every;
        }
        // From the first run's horizon (what was older then was final at once) to what
        // the last runs have had time to recheck.
        let first_horizon = day - settle as i64 - overlap as i64;
        let settled = first_horizon as usize..(2 * day - 2 * overlap as i64 - 2 * every) as usize;
        (asked[settled.clone()].to_vec(), last_old[settled].to_vec())
    }

    #[test]
    fn every_second_is_asked_for_once_or_twice_and_last_when_older_than_the_overlap() {
        for (every, overlap, settle) in [
            (60, 900, 120),
            (300, 900, 120),
            (3600, 900, 120),
            (60, 0, 0),
        ] {
            let (asked, last_old) = askings(every, overlap, settle);
            assert!(
                asked.iter().all(|n| (1..=2).contains(n)),
                "every {every}: {:?}",
                asked.iter().max()
            );
            assert!(
                last_old.iter().all(|o| *o),
                "every {every}: a last asking came too early"
            );
            let twice = asked.iter().filter(|n| **n == 2).count() as f64 / asked.len() as f64;
            if every < overlap as i64 {
                assert!(twice > 0.99, "every {every}: {twice}");
            }
        }
    }

    #[test]
    fn windows_grow_while_bodies_are_small_and_shrink_when_large() {
        let p = pipeline(900, 120, 86_400);
        let target = p.max_body_bytes / 4;
        let mut s = Sizing::new(None, &p);
        assert_eq!(s.length(), Duration::from_secs(3600));
        s.observe(Duration::from_secs(3600), 0);
        assert_eq!(s.length(), Duration::from_secs(7200));
        s.observe(Duration::from_secs(7200), target / 100);
        assert_eq!(s.length(), Duration::from_secs(14_400));
        for _ in 0..10 {
            let length = s.length();
            s.observe(length, 1);
        }
        assert_eq!(
            s.length(),
            Duration::from_secs(86_400),
            "capped at max_window"
        );
        s.observe(Duration::from_secs(86_400), target * 8);
        assert_eq!(
            s.length(),
            Duration::from_secs(21_600),
            "at most a quarter per body"
        );
        s.observe(Duration::from_secs(21_600), target * 2);
        assert_eq!(s.length(), Duration::from_secs(10_800));
        for _ in 0..20 {
            s.observe(Duration::from_secs(60), target * 4);
        }
        assert_eq!(s.length(), Duration::from_secs(60), "at least a minute");
        assert_eq!(
            Sizing::new(Some(Duration::from_secs(1)), &pipeline(0, 0, 30)).length(),
            Duration::from_secs(30)
        );
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
