//! The simulated appliance's sessions: an endless, deterministic schedule.
//!
//! Session `i` of a seed starts at `origin + i * spacing + jitter(i)` (jitter below the
//! spacing, so starts are in order) and lasts `length(i)`; both come from a hash of the
//! seed and the index. At appliance time `t`, session `i` exists when it has started and
//! is closed when `start + length <= t`. History (`--days`) and live mode are therefore
//! the same thing: as the clock moves, new sessions start and in-progress ones end.
//! About one session in twenty lasts several hours, so some are always in progress.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, TimeDelta, Utc};
use sha2::{Digest, Sha256};

use crate::model::Session;

/// Longest session: bounds how far back an `end_time` window must look for starts.
pub const MAX_LENGTH_SECONDS: i64 = 6 * 3600;

/// One scheduled session, before its content is generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Its index in the seed's sequence.
    pub index: u64,
    /// When it starts (appliance time).
    pub start: DateTime<Utc>,
    /// When it ends (appliance time); may lie in the future (then it is in progress).
    pub end: DateTime<Utc>,
}

/// The schedule of one simulator.
#[derive(Debug)]
pub struct Catalog {
    seed: u64,
    origin: DateTime<Utc>,
    spacing_ms: i64,
    /// LSID -> index for every session that has started so far; filled on demand.
    /// Grows by one entry per session the simulator has ever exposed.
    lsids: Mutex<(u64, HashMap<String, u64>)>,
}

fn mix(seed: u64, index: u64, salt: u64) -> u64 {
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Catalog {
    /// `sessions_per_day` sessions a day, the first `days` days before `now`.
    pub fn new(seed: u64, sessions_per_day: u32, days: u32, now: DateTime<Utc>) -> Self {
        let per_day = i64::from(sessions_per_day.max(1));
        Catalog {
            seed,
            origin: now - TimeDelta::days(i64::from(days)),
            spacing_ms: (86_400_000 / per_day).max(1),
            lsids: Mutex::new((0, HashMap::new())),
        }
    }

    /// Session `index`'s times.
    pub fn slot(&self, index: u64) -> Slot {
        let jitter = (mix(self.seed, index, 1) % self.spacing_ms as u64) as i64;
        let start_ms = self.spacing_ms * index as i64 + jitter;
        // Whole seconds, as the appliance reports them.
        let start = self.origin + TimeDelta::seconds(start_ms / 1000);
        let r = mix(self.seed, index, 2);
        let length = if r.is_multiple_of(20) {
            3 * 3600 + (r >> 8) as i64 % (MAX_LENGTH_SECONDS - 3 * 3600)
        } else {
            20 + (r >> 8) as i64 % 5400
        };
        Slot {
            index,
            start,
            end: start + TimeDelta::seconds(length),
        }
    }

    /// The indexes of sessions starting in `[from, to)`.
    pub fn starting_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Slot> {
        let ms = |t: DateTime<Utc>| (t - self.origin).num_milliseconds();
        let first = (ms(from) / self.spacing_ms - 1).max(0) as u64;
        let last = ms(to) / self.spacing_ms + 1;
        if last < 0 {
            return Vec::new();
        }
        (first..=last as u64)
            .map(|i| self.slot(i))
            .filter(|s| s.start >= from && s.start < to)
            .collect()
    }

    /// Sessions started at or before `now`: how many exist.
    fn started_count(&self, now: DateTime<Utc>) -> u64 {
        let ms = (now - self.origin).num_milliseconds();
        if ms < 0 {
            return 0;
        }
        let mut n = (ms / self.spacing_ms) as u64 + 1;
        while n > 0 && self.slot(n - 1).start > now {
            n -= 1;
        }
        n
    }

    /// The session with this LSID, if it has started by `now`.
    pub fn find(&self, lsid: &str, now: DateTime<Utc>) -> Option<Slot> {
        let count = self.started_count(now);
        let mut known = self.lsids.lock().unwrap_or_else(|e| e.into_inner());
        while known.0 < count {
            let i = known.0;
            known.1.insert(super::content::lsid(self.seed, i), i);
            known.0 += 1;
        }
        let index = *known.1.get(lsid)?;
        (index < count).then(|| self.slot(index))
    }

    /// The session's content as the appliance reports it at `now`: in progress (no end
    /// time) until its end has passed.
    pub fn session(&self, slot: Slot, now: DateTime<Utc>) -> Session {
        let end = (slot.end <= now).then_some(slot.end);
        super::content::session(self.seed, slot.index, slot.start, end)
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }
}

/// The documented digest of a session: SHA-256 (lowercase hex) of the session's
/// `serde_json` encoding (`serde_json::to_vec(&model::Session)`, the same JSON object
/// `btic inspect` prints). A pipeline that parsed the appliance's XML back into a
/// `Session` gets the same digest when nothing was lost or changed.
pub fn digest(session: &Session) -> String {
    let json = serde_json::to_vec(session).unwrap_or_default();
    hex::encode(Sha256::digest(&json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_ordered_and_windows_find_every_start() {
        let now = DateTime::from_timestamp(1_717_412_400, 0).unwrap();
        let c = Catalog::new(7, 500, 2, now);
        let all = c.starting_between(now - TimeDelta::days(3), now);
        assert!(all.len() >= 999 && all.len() <= 1001, "{}", all.len());
        assert!(all.windows(2).all(|w| w[0].start <= w[1].start));
        let half = c.starting_between(now - TimeDelta::days(1), now);
        assert!(half.len() >= 499 && half.len() <= 501);
        let slot = all[17];
        let lsid = super::super::content::lsid(7, slot.index);
        assert_eq!(c.find(&lsid, now), Some(slot));
        assert!(all.iter().any(|s| s.end > now), "some are in progress");
    }

    #[test]
    fn a_session_in_progress_ends_once_the_clock_passes_its_end() {
        let now = DateTime::from_timestamp(1_717_412_400, 0).unwrap();
        let c = Catalog::new(3, 500, 1, now);
        let running = c
            .starting_between(now - TimeDelta::days(1), now)
            .into_iter()
            .find(|s| s.end > now)
            .expect("a session in progress");
        assert_eq!(c.session(running, now).end_time, None);
        let later = running.end + TimeDelta::seconds(1);
        assert_eq!(c.session(running, later).end_time, Some(running.end));
        // New sessions keep starting as the clock moves on (live mode).
        assert!(
            !c.starting_between(now, now + TimeDelta::hours(1))
                .is_empty()
        );
    }
}
