//! The appliance's clock as seen from here: `skew = appliance time - local time`, and
//! `appliance_now()` = the local monotonic clock, anchored once to the wall clock, plus
//! the skew. Windows are planned with it, so a wrong host clock cannot lose data.

use std::sync::Mutex;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::time::Instant;

/// Where a skew reading came from; an API timestamp beats a `Date` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SkewSource {
    /// The HTTP `Date` header of an answer.
    DateHeader,
    /// The `timestamp` of `get_api_info`.
    ApiInfo,
}

/// One site's clock.
#[derive(Debug)]
pub struct ApplianceClock {
    /// The monotonic instant at which `anchor_wall` was read.
    anchor: Instant,
    /// The local wall clock at `anchor`.
    anchor_wall: DateTime<Utc>,
    /// The latest reading and its source.
    skew: Mutex<Option<(TimeDelta, SkewSource)>>,
}

impl Default for ApplianceClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ApplianceClock {
    /// Anchors the monotonic clock to the wall clock now.
    pub fn new() -> Self {
        ApplianceClock {
            anchor: Instant::now(),
            anchor_wall: Utc::now(),
            skew: Mutex::new(None),
        }
    }

    /// The local time by the monotonic clock (immune to wall-clock jumps after start).
    pub fn local_now(&self) -> DateTime<Utc> {
        let elapsed = Instant::now().saturating_duration_since(self.anchor);
        self.anchor_wall + TimeDelta::from_std(elapsed).unwrap_or(TimeDelta::MAX)
    }

    /// Records that the appliance said `appliance` while our clock read `local`. A `Date`
    /// header reading never replaces an API reading.
    pub fn observe(&self, appliance: DateTime<Utc>, local: DateTime<Utc>, source: SkewSource) {
        let mut skew = self.skew.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(*skew, Some((_, current)) if current > source) {
            return;
        }
        *skew = Some((appliance - local, source));
    }

    /// The latest measured skew, if any call has measured it yet.
    pub fn skew(&self) -> Option<TimeDelta> {
        self.skew
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|(s, _)| s)
    }

    /// The appliance's current time (the local time when no skew is known yet).
    pub fn appliance_now(&self) -> DateTime<Utc> {
        self.local_now() + self.skew().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn appliance_now_follows_the_monotonic_clock_plus_skew() {
        let clock = ApplianceClock::new();
        let local = clock.local_now();
        clock.observe(local - TimeDelta::hours(2), local, SkewSource::ApiInfo);
        // A Date header reading does not override the API's.
        clock.observe(local, local, SkewSource::DateHeader);
        assert_eq!(clock.skew(), Some(TimeDelta::hours(-2)));
        tokio::time::advance(std::time::Duration::from_secs(90)).await;
        let now = clock.appliance_now();
        assert_eq!(now - local, TimeDelta::seconds(90) - TimeDelta::hours(2));
    }
}
