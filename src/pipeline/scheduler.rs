//! The scheduler: every second it looks for due schedules and runs them. A run fetches
//! every (site, report) its transfers name, from the live watermark up to appliance-now
//! minus the settle lag, and enqueues the backups they ask for. A (site, report) has one
//! watermark, so its sessions go to every destination that any schedule's transfer names
//! for it, whichever schedule ran. A run that could not reach the appliance or a
//! destination is not a successful run: `last_success` stays, and the schedule is tried
//! again after a backoff (never later than its period).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::fetch_worker::{FetchError, FetchStage, FetchSummary};
use super::history;
use super::items::{DownloadTask, download_queue};
use super::reachability::Reachability;
use super::routes;
use super::schedule::is_due;
use crate::config::{Config, DataKind, Schedule};
use crate::keys::{self, RunKind, RunRecord, ScheduleRun};
use crate::metrics;
use crate::model::Report;
use crate::queue::Queue;

/// What kept a schedule's run from completing.
#[derive(Debug, thiserror::Error)]
enum Problem {
    /// A destination of a transfer cannot be reached (as its deliver worker saw it).
    #[error("destination {destination:?} unreachable: {reason}")]
    Unreachable {
        /// The destination.
        destination: String,
        /// Its last error.
        reason: String,
    },
    /// A site's reports could not all be fetched.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// A backup task could not be queued.
    #[error("enqueuing the backup of site {site:?}: {source}")]
    Backup {
        /// The site.
        site: String,
        /// The queue's error.
        source: crate::queue::QueueError,
    },
}

/// A run that did not reach every site and destination: each problem, in order.
#[derive(Debug)]
struct RunIncomplete(Vec<Problem>);

impl std::fmt::Display for RunIncomplete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// Runs schedules until `shutdown`.
#[derive(Debug)]
pub struct Scheduler {
    /// The pipeline file.
    pub config: Arc<Config>,
    /// One fetch stage per site.
    pub fetchers: BTreeMap<String, FetchStage>,
    /// The shared queue.
    pub queue: Queue,
    /// Destinations' reachability, from the deliver workers.
    pub reachability: Arc<Reachability>,
}

impl Scheduler {
    /// Checks for due schedules every second until `shutdown`. A run in progress when
    /// it fires stops between two windows (each window is handed off whole).
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            for schedule in &self.config.schedules {
                if shutdown.is_cancelled() {
                    return;
                }
                let key = keys::schedule(&schedule.name);
                let run: ScheduleRun = match self.queue.state_get(&key).await {
                    Ok(r) => r.unwrap_or_default(),
                    Err(e) => {
                        tracing::error!("scheduler: reading {key}: {e}");
                        continue;
                    }
                };
                if !self.due(schedule, &run) {
                    continue;
                }
                let started_at = Utc::now();
                let started = started_at.timestamp();
                let mut fetched = FetchSummary::default();
                let outcome = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    o = self.run_schedule(schedule, &mut fetched) => o,
                };
                self.remember(schedule, started_at, &fetched, &outcome)
                    .await;
                let mut next = run.clone();
                next.last_attempt = Some(started);
                match outcome {
                    Ok(()) => {
                        next.last_success = Some(started);
                        next.outcome = "ok".into();
                        next.failures = 0;
                        metrics::schedule_succeeded(&schedule.name, started);
                        if run.failures > 0 {
                            tracing::info!(schedule = %schedule.name, failures = run.failures, "schedule ran, after failed attempts");
                        } else {
                            tracing::info!(schedule = %schedule.name, "schedule ran");
                        }
                    }
                    Err(e) => {
                        let e = e.to_string();
                        next.failures += 1;
                        // Said once per reason: a site that stays down for hours is one
                        // warning (and the failure count in `status`), not one per retry.
                        if next.failures == 1 || e != run.outcome {
                            tracing::warn!(schedule = %schedule.name, failures = next.failures, "schedule run incomplete: {e}; retrying with backoff");
                        } else {
                            tracing::debug!(schedule = %schedule.name, failures = next.failures, "schedule run incomplete again: {e}");
                        }
                        next.outcome = e;
                    }
                }
                if let Err(e) = self.queue.state_put(&key, &next).await {
                    tracing::error!("scheduler: recording the run of {:?}: {e}", schedule.name);
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Adds the run to the history.
    async fn remember(
        &self,
        schedule: &Schedule,
        started: chrono::DateTime<Utc>,
        fetched: &FetchSummary,
        outcome: &Result<(), RunIncomplete>,
    ) {
        let run = RunRecord {
            kind: RunKind::Schedule,
            name: schedule.name.clone(),
            started_ms: started.timestamp_millis(),
            duration_ms: (Utc::now() - started).num_milliseconds().max(0) as u64,
            windows: fetched.windows,
            bodies: fetched.bodies,
            bytes: fetched.bytes,
            sessions: None,
            dead_lettered: fetched.refused,
            outcome: outcome
                .as_ref()
                .map_or_else(ToString::to_string, |()| "ok".to_string()),
        };
        if let Err(e) = history::record(&self.queue, &run).await {
            tracing::error!(
                "scheduler: recording the run of {:?} in the history: {e}",
                schedule.name
            );
        }
    }

    fn due(&self, schedule: &Schedule, run: &ScheduleRun) -> bool {
        let now = Utc::now();
        let last_success = run
            .last_success
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0));
        if !is_due(schedule, last_success, now) {
            return false;
        }
        // After failures, wait a backoff (at most the period) before trying again.
        match (run.failures, run.last_attempt) {
            (0, _) | (_, None) => true,
            (failures, Some(last)) => {
                let wait = self
                    .config
                    .pipeline
                    .retry
                    .delay_after(failures)
                    .min(schedule.every);
                now.timestamp() >= last + wait.as_secs() as i64
            }
        }
    }

    /// Runs `schedule` once, adding what its sites' fetches did to `fetched`.
    async fn run_schedule(
        &self,
        schedule: &Schedule,
        fetched: &mut FetchSummary,
    ) -> Result<(), RunIncomplete> {
        let mut problems = Vec::new();
        let mut reports = BTreeSet::new();
        let mut backups: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for t in &schedule.transfers {
            for kind in &t.data {
                match kind {
                    DataKind::Sessions | DataKind::Recordings => {
                        reports.insert((t.site.as_str(), Report::SupportSession));
                    }
                    DataKind::Presentations | DataKind::PresentationRecordings => {
                        reports.insert((t.site.as_str(), Report::PresentationSession));
                    }
                    DataKind::Backups => backups
                        .entry(t.site.as_str())
                        .or_default()
                        .push(t.destination.clone()),
                }
            }
            if let Some(e) = self.reachability.error(&t.destination) {
                problems.push(Problem::Unreachable {
                    destination: t.destination.clone(),
                    reason: e,
                });
            }
        }
        for (site, report) in reports {
            let Some(fetcher) = self.fetchers.get(site) else {
                continue;
            };
            let routes = routes::live(&self.config, site, report);
            match fetcher.fetch_live(report, &routes).await {
                Ok(summary) => {
                    tracing::debug!(
                        site,
                        bodies = summary.bodies,
                        bytes = summary.bytes,
                        windows = summary.windows,
                        "fetched"
                    );
                    fetched.bodies += summary.bodies;
                    fetched.bytes += summary.bytes;
                    fetched.windows += summary.windows;
                    fetched.refused += summary.refused;
                }
                Err(e) => problems.push(Problem::Fetch(e)),
            }
            if routes.track_open
                && let Err(e) = fetcher.fetch_in_progress(&routes).await
            {
                problems.push(Problem::Fetch(e));
            }
        }
        for (site, destinations) in backups {
            let Some(config_site) = self.config.site(site) else {
                continue;
            };
            let task = DownloadTask::Backup {
                site: site.to_string(),
                host: config_site.host_name().to_string(),
                destinations,
            };
            if let Err(e) = self.queue.push(&download_queue(site), &task).await {
                problems.push(Problem::Backup {
                    site: site.to_string(),
                    source: e,
                });
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(RunIncomplete(problems))
        }
    }
}
