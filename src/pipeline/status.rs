//! What `btic status` shows, gathered from the queue database: per site the clock skew
//! and watermarks (in appliance time, with their lag), per queue its depth and oldest
//! item, dead letters per destination, and the last run of every schedule. The same
//! code serves the daemon's admin API and a direct read when no daemon runs.

use std::fmt::Write as _;

use chrono::{DateTime, TimeDelta, Utc};
use indicatif::HumanBytes;
use serde::{Deserialize, Serialize};

use super::keys::{self, SkewRecord};
use crate::config::Config;
use crate::model::Report;
use crate::queue::{Queue, QueueError};

/// A schedule's last runs, kept in the state area.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleRun {
    /// Last run that reached every site and destination (UNIX seconds).
    pub last_success: Option<i64>,
    /// Last run, successful or not (UNIX seconds).
    pub last_attempt: Option<i64>,
    /// `ok`, or what went wrong.
    pub outcome: String,
    /// Failed runs since the last success.
    pub failures: u32,
}

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
        let budget = super::stages::budget(config);
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
            for report in [Report::SupportSession, Report::PresentationSession] {
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
            sites.push(SiteStatus {
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

    /// The status for a person.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}",
            if self.daemon {
                "daemon: running"
            } else {
                "daemon: not running (read from the state directory)"
            }
        );
        let _ = writeln!(out, "\nsites");
        for s in &self.sites {
            let skew = s
                .skew_seconds
                .map_or("not measured yet".to_string(), |v| format!("{v:+.1} s"));
            let _ = writeln!(out, "  {:<16} clock skew {skew}", s.name);
            if s.watermarks.is_empty() {
                let _ = writeln!(out, "    no watermark yet");
            }
            if s.open_sessions > 0 {
                let _ = writeln!(
                    out,
                    "    {} sessions in progress, fetched again until they end",
                    s.open_sessions
                );
            }
            for w in &s.watermarks {
                let _ = writeln!(
                    out,
                    "    {:<20} watermark {} (appliance time), lag {:.0} s",
                    w.report, w.appliance_time, w.lag_seconds
                );
            }
        }
        let _ = writeln!(out, "\nqueues");
        if self.queues.iter().all(|q| q.depth == 0) {
            let _ = writeln!(out, "  all empty");
        }
        for q in self.queues.iter().filter(|q| q.depth > 0) {
            let age = q
                .oldest_age_seconds
                .map_or(String::new(), |a| format!(", oldest {a:.0} s"));
            let _ = writeln!(out, "  {:<28} {} items{age}", q.name, q.depth);
        }
        let _ = writeln!(out, "\ndead letters");
        if self.dead_letters.is_empty() {
            let _ = writeln!(out, "  none");
        }
        for d in &self.dead_letters {
            let _ = writeln!(out, "  {:<28} {}", d.queue, d.count);
        }
        let d = &self.disk;
        let _ = writeln!(out, "\nstate directory");
        match (d.state_bytes, d.free_bytes) {
            (Some(used), Some(free)) => {
                let _ = writeln!(
                    out,
                    "  {} on disk (budget {}), {} free (floor {})",
                    HumanBytes(used),
                    d.max_state_bytes
                        .map_or("none".to_string(), |b| HumanBytes(b).to_string()),
                    HumanBytes(free),
                    match d.min_free_bytes {
                        0 => "none".to_string(),
                        b => HumanBytes(b).to_string(),
                    }
                );
            }
            _ => {
                let _ = writeln!(out, "  could not be measured");
            }
        }
        match d.paused.as_deref() {
            Some("state_bytes") => {
                let _ = writeln!(
                    out,
                    "  fetching and downloading paused: over pipeline.max_state_bytes until the backlog drains"
                );
            }
            Some(_) => {
                let _ = writeln!(
                    out,
                    "  fetching and downloading paused: under pipeline.min_free_bytes free"
                );
            }
            None => {}
        }
        let _ = writeln!(out, "\nschedules");
        for s in &self.schedules {
            let _ = writeln!(
                out,
                "  {:<24} last success {}, last run {}: {}",
                s.name,
                s.last_success.as_deref().unwrap_or("never"),
                s.last_attempt.as_deref().unwrap_or("never"),
                s.outcome
            );
        }
        out
    }
}
