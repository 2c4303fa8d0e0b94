//! What `btic status` shows, gathered from the queue database: per site the clock skew
//! and watermarks (in appliance time, with their lag), per queue its depth and oldest
//! item, dead letters per destination, and the last run of every schedule. The same
//! code serves the daemon's admin API and a direct read when no daemon runs.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::keys::{self, BudgetRecord, ScheduleRun, SkewRecord};
use crate::model::Report;
use crate::queue::{Queue, QueueError};

/// The whole status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Whether a running daemon answered (false: read from the state directory).
    pub daemon: bool,
    /// Per site.
    pub sites: Vec<SiteStatus>,
    /// Per queue that holds or held items.
    pub queues: Vec<QueueStatus>,
    /// Dead letters per destination (or per stage for items that never reached one).
    pub dead_letters: Vec<DeadLetterCount>,
    /// Per schedule.
    pub schedules: Vec<ScheduleStatus>,
    /// The state directory's disk use and budget.
    pub disk: DiskStatus,
}

/// The state directory on disk, and whether its budget pauses fetching.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskStatus {
    /// Bytes the state directory takes on disk (when it could be measured).
    pub state_bytes: Option<u64>,
    /// Free bytes of its file system.
    pub free_bytes: Option<u64>,
    /// `pipeline.max_state_bytes`.
    pub max_state_bytes: Option<u64>,
    /// `pipeline.min_free_bytes` (0: off).
    pub min_free_bytes: u64,
    /// `state_bytes` or `free_bytes` while fetching and downloading are paused.
    pub paused: Option<String>,
}

impl DiskStatus {
    /// Measures `config`'s state directory against its budget.
    pub fn measure(config: &Config) -> DiskStatus {
        let budget = super::budget::DiskBudget::of(config);
        let (max_state_bytes, min_free_bytes) = budget.limits();
        let measured = budget.measure().ok();
        DiskStatus {
            state_bytes: measured.map(|m| m.state_bytes),
            free_bytes: measured.map(|m| m.free_bytes),
            max_state_bytes,
            min_free_bytes,
            paused: measured
                .and_then(|m| budget.judge(&m, None))
                .map(|p| p.as_str().to_string()),
        }
    }
}

/// A site's clock and watermarks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteStatus {
    /// The site's name.
    pub name: String,
    /// Appliance clock minus host clock, in seconds, as last measured.
    pub skew_seconds: Option<f64>,
    /// When it was measured (RFC 3339, host clock).
    pub skew_measured_at: Option<String>,
    /// One per report type fetched so far.
    pub watermarks: Vec<WatermarkStatus>,
    /// Sessions in progress being fetched again until they end (`include_in_progress`).
    pub open_sessions: usize,
    /// The site's API account budget, as last recorded (`None`: never used).
    pub budget: Option<BudgetStatus>,
}

/// A site's API account budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetStatus {
    /// Requests btic sent in the rolling hour.
    pub used: u32,
    /// `requests_per_hour`.
    pub per_hour: u32,
    /// `live_reserve`.
    pub live_reserve: u32,
    /// The lower of btic's own remaining count and the appliance's.
    pub remaining: u32,
    /// The appliance's `X-RateLimit-Limit`, as last read.
    pub appliance_limit: Option<u32>,
    /// The appliance's `X-RateLimit-Remaining` as last read, less btic's requests since.
    pub appliance_remaining: Option<u32>,
    /// When the appliance's header was last read (RFC 3339, host clock).
    pub appliance_seen_at: Option<String>,
    /// Until when every request of the account pauses (RFC 3339), if it does.
    pub paused_until: Option<String>,
    /// Why it pauses.
    pub paused_reason: Option<String>,
    /// Whether the appliance's count holds requests back (other clients spend it).
    pub held_by_appliance: bool,
    /// Requests the appliance refused (429) since the daemon started.
    pub refused: u64,
    /// When this was recorded (RFC 3339).
    pub recorded_at: Option<String>,
}

impl BudgetStatus {
    fn of(record: &BudgetRecord, now: DateTime<Utc>) -> BudgetStatus {
        let hour = crate::appliance::BudgetLimits::hour_from_env();
        let since = now.timestamp_millis() - hour.as_millis() as i64;
        let used = record.sent_ms.iter().filter(|ms| **ms > since).count() as u32;
        let own = record.per_hour.saturating_sub(used);
        let appliance_remaining = record.appliance.map(|(_, r, _)| r);
        let paused = record
            .paused
            .as_ref()
            .filter(|(until, _)| *until > now.timestamp());
        BudgetStatus {
            used,
            per_hour: record.per_hour,
            live_reserve: record.live_reserve,
            remaining: appliance_remaining.map_or(own, |a| a.min(own)),
            appliance_limit: record.appliance.map(|(l, _, _)| l),
            appliance_remaining,
            appliance_seen_at: record.appliance.and_then(|(_, _, at)| rfc3339(at)),
            paused_until: paused.and_then(|(until, _)| rfc3339(*until)),
            paused_reason: paused.map(|(_, why)| why.clone()),
            held_by_appliance: record.held_by_appliance,
            refused: record.refused,
            recorded_at: rfc3339(record.written_at),
        }
    }
}

/// One watermark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatermarkStatus {
    /// `SupportSession` or `PresentationSession`.
    pub report: String,
    /// Everything that ended before this appliance time is enqueued (RFC 3339).
    pub appliance_time: String,
    /// Appliance-now minus the watermark, in seconds.
    pub lag_seconds: f64,
}

/// One queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueStatus {
    /// The queue's name.
    pub name: String,
    /// Items in it.
    pub depth: u64,
    /// Age of the oldest item, in seconds.
    pub oldest_age_seconds: Option<f64>,
}

/// Dead letters of one destination or stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterCount {
    /// `deliver/<destination>`, `fetched`, `download/<site>`, `rejected`.
    pub queue: String,
    /// How many.
    pub count: u64,
}

/// One schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleStatus {
    /// The schedule's name.
    pub name: String,
    /// Last successful run (RFC 3339).
    pub last_success: Option<String>,
    /// Last run (RFC 3339).
    pub last_attempt: Option<String>,
    /// `ok`, what went wrong, or `never ran`.
    pub outcome: String,
}

fn rfc3339(unix: i64) -> Option<String> {
    DateTime::from_timestamp(unix, 0).map(|t| t.to_rfc3339())
}

impl Status {
    /// Reads the status from `queue` for the sites and schedules of `config`.
    pub async fn gather(
        config: &Config,
        queue: &Queue,
        daemon: bool,
    ) -> Result<Status, QueueError> {
        let now = Utc::now();
        let mut sites = Vec::new();
        for site in &config.sites {
            let skew: Option<SkewRecord> = queue.state_get(&keys::skew(&site.name)).await?;
            let skew_delta = TimeDelta::milliseconds(skew.map_or(0, |s| s.skew_ms));
            let mut watermarks = Vec::new();
            for report in Report::ALL {
                let at: Option<i64> = queue
                    .state_get(&keys::watermark(&site.name, report))
                    .await?;
                if let Some(at) = at.and_then(|t| DateTime::from_timestamp(t, 0)) {
                    watermarks.push(WatermarkStatus {
                        report: report.as_str().to_string(),
                        appliance_time: at.to_rfc3339(),
                        lag_seconds: (now + skew_delta - at).num_milliseconds() as f64 / 1000.0,
                    });
                }
            }
            let open: Vec<(String, i64)> = queue.state_list(&keys::open_prefix(&site.name)).await?;
            let budget: Option<BudgetRecord> = queue.state_get(&keys::budget(&site.name)).await?;
            sites.push(SiteStatus {
                budget: budget.map(|b| BudgetStatus::of(&b, now)),
                open_sessions: open.len(),
                name: site.name.clone(),
                skew_seconds: skew.map(|s| s.skew_ms as f64 / 1000.0),
                skew_measured_at: skew.and_then(|s| rfc3339(s.measured_at)),
                watermarks,
            });
        }
        let mut queues = Vec::new();
        for q in queue.queues().await? {
            let oldest = queue.oldest_age(&q.name).await?;
            queues.push(QueueStatus {
                name: q.name,
                depth: q.depth,
                oldest_age_seconds: oldest.map(|d| d.as_secs_f64()),
            });
        }
        let dead = queue.dead_letter_counts().await?;
        let mut schedules = Vec::new();
        for s in &config.schedules {
            let run: Option<ScheduleRun> = queue.state_get(&keys::schedule(&s.name)).await?;
            let run = run.unwrap_or_default();
            schedules.push(ScheduleStatus {
                name: s.name.clone(),
                last_success: run.last_success.and_then(rfc3339),
                last_attempt: run.last_attempt.and_then(rfc3339),
                outcome: if run.last_attempt.is_none() {
                    "never ran".into()
                } else {
                    run.outcome
                },
            });
        }
        Ok(Status {
            daemon,
            sites,
            queues,
            dead_letters: dead
                .into_iter()
                .map(|(queue, count)| DeadLetterCount { queue, count })
                .collect(),
            schedules,
            disk: DiskStatus::measure(config),
        })
    }
}
