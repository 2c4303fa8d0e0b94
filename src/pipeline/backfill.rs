//! Backfill jobs: `btic backfill` fetches a past range (or given LSIDs) of one site into
//! chosen destinations, in a lane of its own, without touching the live watermark.
//!
//! # Job id
//!
//! A job is identified by a hash of its request (site, range or LSIDs, session and
//! recording destinations), so running the same command again names the same job: an
//! unfinished job resumes where it stopped, a finished one reports its summary again.
//!
//! # State (all in the queue's state area; `keys` has the whole table)
//!
//! | key                                | value      | written                                   |
//! |------------------------------------|------------|-------------------------------------------|
//! | `backfill/<job>`                   | `JobRecord`| at start, and with the summary at the end |
//! | `backfill/<job>/next`              | i64        | with each fetched body (fetch progress)   |
//! | `backfill/<job>/next-presentations`| i64        | the same for a job's presentations        |
//! | `backfill/<job>/fetched`           | bool       | once every window (or LSID) is fetched    |
//! | `backfill/<job>/pushed/<step>`     | u64        | items a step created for the job          |
//! | `backfill/<job>/done/<step>`       | `Finished` | when one of the job's steps is through    |
//!
//! # Knowing when everything is through
//!
//! Every item of the job carries `Lane::Backfill(job)`, and every step that handles one
//! commits through a `handoff::HandOff`, which writes in the step's own transaction what
//! it created (`pushed/<step>`, by the identity of the step: the item it consumed, or the
//! request it made) and what it finished (`done/<step>`, with how: a session or recording
//! delivered, a body parsed, a request or item dead-lettered). An item moved to the dead
//! letter carries the metadata `backfill = <job>` and counts as finished, so purging the
//! dead letter cannot strand the job; replayed and delivered later, its `done` record is
//! written again with how it finished. The job is through when its fetching is finished
//! and the items created add up to the steps finished; the check reads the finished
//! records before the created ones, so items created meanwhile cannot make it pass early.
//! The records are keyed by identity, so an at-least-once redo after a crash rewrites the
//! same keys: the counts stay exact, and a crash anywhere only delays the moment the sums
//! meet. (An item that cannot even be decoded is dead-lettered by the queue without the
//! metadata; such a job would keep waiting and says so in its progress.)
//!
//! At the end the per-step records are deleted and the summary is kept in the job record.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::fetch_worker::{FetchError, FetchStage, FetchSummary};
use super::handoff::Finished;
use super::items::{Lane, Routes};
use crate::appliance::WindowBy;
use crate::config::{Config, DataKind, PipelineConfig};
use crate::fetch::plan::{Sizing, Window};
use crate::keys::{self, RunKind, RunRecord};
use crate::model::Report;
use crate::queue::{Changes, Queue, QueueError};
/// LSIDs per report request.
const LSIDS_PER_REQUEST: usize = 100;
/// How often a job checks whether its items are through.
const POLL: Duration = Duration::from_millis(300);

/// What a backfill asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillRequest {
    /// The `[[site]]`.
    pub site: String,
    /// Start of the `end_time` range (UNIX seconds), for a range.
    pub from: Option<i64>,
    /// End of the range, exclusive.
    pub to: Option<i64>,
    /// LSIDs to fetch instead of a range.
    pub lsids: Vec<String>,
    /// Where the sessions and recordings go.
    pub routes: Routes,
    /// Where the range's presentations (`sessions`) and their recordings (`recordings`)
    /// go: files destinations, or none. Ranges only.
    pub presentations: Routes,
}

impl BackfillRequest {
    /// Every destination the job writes to, sorted, each once.
    pub fn destinations(&self) -> Vec<&String> {
        let mut all: Vec<&String> = [&self.routes, &self.presentations]
            .into_iter()
            .flat_map(|r| r.sessions.iter().chain(&r.recordings))
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// The job id: the first 16 hex digits of a SHA-256 over the request.
    pub fn job_id(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(serde_json::to_vec(self).unwrap_or_default());
        hex::encode(&hash.finalize()[..8])
    }
}

/// What an operator asks a backfill for (`btic backfill`'s arguments, the console's
/// API tester), before it is checked against the pipeline file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ask {
    /// The `[[site]]`.
    pub site: String,
    /// `[from, to)` of the sessions' end times (UNIX seconds), or none for LSIDs.
    pub range: Option<(i64, i64)>,
    /// LSIDs instead of a range.
    pub lsids: Vec<String>,
    /// Destinations; none: every destination a transfer names for the site.
    pub destinations: Vec<String>,
    /// Data kinds: sessions, recordings, presentations, presentation recordings.
    pub kinds: Vec<DataKind>,
}

/// Why an [`Ask`] cannot be a backfill.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AskError {
    /// It names something the pipeline file does not have.
    #[error(transparent)]
    Unknown(#[from] UnknownName),
    /// Neither a range nor LSIDs, or both, or an empty range.
    #[error("give a range (--from before --to) or --lsid, not both")]
    Shape,
    /// A kind that is not backfilled.
    #[error(
        "{0} cannot be backfilled (sessions, recordings, presentations, presentation_recordings)"
    )]
    Kind(&'static str),
    /// Presentations asked for by LSID.
    #[error("presentations are backfilled by range (--from, --to), not by --lsid")]
    PresentationsByLsid,
    /// A named destination cannot take a kind asked for.
    #[error("{0}")]
    CannotTake(String),
    /// No destination takes anything asked for.
    #[error(
        "nothing to backfill: no destination takes {kinds} from site {site:?} (name one with --destination)"
    )]
    Nothing {
        /// The kinds asked for.
        kinds: String,
        /// The site.
        site: String,
    },
}

impl BackfillRequest {
    /// Checks `ask` against `config` and makes the request.
    pub fn from_ask(config: &Config, ask: &Ask) -> Result<BackfillRequest, AskError> {
        if config.site(&ask.site).is_none() {
            return Err(UnknownName::Site(ask.site.clone()).into());
        }
        match (ask.range, ask.lsids.is_empty()) {
            (Some((from, to)), true) if from < to => {}
            (None, false) => {}
            _ => return Err(AskError::Shape),
        }
        if let Some(kind) = ask.kinds.iter().find(|k| {
            !matches!(
                k,
                DataKind::Sessions
                    | DataKind::Recordings
                    | DataKind::Presentations
                    | DataKind::PresentationRecordings
            )
        }) {
            return Err(AskError::Kind(kind.as_str()));
        }
        let presentations_wanted = ask.kinds.iter().any(|k| {
            matches!(
                k,
                DataKind::Presentations | DataKind::PresentationRecordings
            )
        });
        if presentations_wanted && !ask.lsids.is_empty() {
            return Err(AskError::PresentationsByLsid);
        }
        let destinations = if ask.destinations.is_empty() {
            let mut all = Vec::new();
            for t in config.schedules.iter().flat_map(|s| &s.transfers) {
                if t.site == ask.site && !all.contains(&t.destination) {
                    all.push(t.destination.clone());
                }
            }
            all
        } else {
            if let Some(d) = ask
                .destinations
                .iter()
                .find(|d| config.destination(d).is_none())
            {
                return Err(UnknownName::Destination(d.clone()).into());
            }
            ask.destinations.clone()
        };
        let named = !ask.destinations.is_empty();
        let (routes, presentations) =
            super::routes::backfill(config, &destinations, &ask.kinds, named)
                .map_err(|e| AskError::CannotTake(e.to_string()))?;
        let nothing = |r: &Routes| r.sessions.is_empty() && r.recordings.is_empty();
        if nothing(&routes) && nothing(&presentations) {
            let kinds: Vec<&str> = ask.kinds.iter().map(|k| k.as_str()).collect();
            return Err(AskError::Nothing {
                kinds: kinds.join(","),
                site: ask.site.clone(),
            });
        }
        Ok(BackfillRequest {
            site: ask.site.clone(),
            from: ask.range.map(|(from, _)| from),
            to: ask.range.map(|(_, to)| to),
            lsids: ask.lsids.clone(),
            routes,
            presentations,
        })
    }
}

/// A job's stored record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// What was asked.
    pub request: BackfillRequest,
    /// The summary, once finished.
    pub summary: Option<Summary>,
}

/// What a finished job did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Sessions written to destinations (one per session and destination).
    pub sessions_delivered: u64,
    /// Recordings written to destinations.
    pub recordings_delivered: u64,
    /// Items of the job in the dead letter.
    pub dead_lettered: u64,
    /// Report bodies fetched.
    pub bodies: u64,
    /// Bytes of report bodies fetched in this run (not counting runs before a restart).
    pub bytes: u64,
    /// Presentations written to destinations.
    pub presentations_delivered: u64,
}

/// Where a job stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The job id.
    pub job: String,
    /// Whether every window or LSID is fetched.
    pub fetched: bool,
    /// Seconds of the range fetched so far (0 for LSIDs).
    pub range_done: u64,
    /// The range's length in seconds (0 for LSIDs).
    pub range_total: u64,
    /// Items the job has created.
    pub items: u64,
    /// Items through (delivered, parsed, downloaded or dead-lettered).
    pub through: u64,
    /// The summary, once finished.
    pub summary: Option<Summary>,
    /// Why the job stopped, if it failed.
    pub error: Option<String>,
    /// Whether an operator cancelled it (its summary then counts what got through).
    #[serde(default)]
    pub cancelled: bool,
}

/// Why a backfill failed.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// Fetching from the appliance failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The queue failed.
    #[error("recording the backfill: {0}")]
    Queue(#[from] QueueError),
    /// It was stopped before it finished.
    #[error("stopped before it finished; run the same command again to resume")]
    Stopped,
}

impl BackfillError {
    /// Whether running it again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            BackfillError::Fetch(e) => e.is_retryable(),
            BackfillError::Queue(_) | BackfillError::Stopped => true,
        }
    }
}

/// Reads where job `job` stands.
pub async fn progress(queue: &Queue, job: &str) -> Result<Progress, QueueError> {
    let record: Option<JobRecord> = queue.state_get(&keys::job(job)).await?;
    let mut p = Progress {
        job: job.to_string(),
        ..Progress::default()
    };
    let Some(record) = record else {
        return Ok(p);
    };
    if let Some(summary) = record.summary {
        p.fetched = true;
        p.summary = Some(summary);
        return Ok(p);
    }
    p.fetched = queue
        .state_get::<bool>(&keys::job_fetched(job))
        .await?
        .unwrap_or(false);
    if let (Some(from), Some(to)) = (record.request.from, record.request.to) {
        // The range is done as far as the report that is furthest behind.
        let mut next = to;
        for report in range_reports(&record.request) {
            let key = keys::job_cursor(job, report);
            next = next.min(queue.state_get(&key).await?.unwrap_or(from));
        }
        p.range_total = (to - from).max(0) as u64;
        p.range_done = if p.fetched {
            p.range_total
        } else {
            (next - from).clamp(0, to - from) as u64
        };
    }
    // Finished items first, created items last: every item counted as through was
    // created (and counted in `pushed`) before it finished, so reading `pushed` last can
    // only overcount the items still to come, never declare the job through early.
    let done: Vec<(String, Finished)> = queue.state_list(&keys::finished_prefix(job)).await?;
    let pushed: Vec<(String, u64)> = queue.state_list(&keys::created_prefix(job)).await?;
    p.items = pushed.iter().map(|(_, n)| n).sum();
    p.through = done.len() as u64;
    Ok(p)
}

/// Runs (or resumes) a job until everything it enqueued is through, reporting progress
/// to `on_progress`; the stage workers must be running. Returns the summary.
pub async fn run(
    queue: &Queue,
    fetcher: &FetchStage,
    pipeline: &PipelineConfig,
    request: &BackfillRequest,
    stop: &CancellationToken,
    mut on_progress: impl FnMut(&Progress),
) -> Result<Summary, BackfillError> {
    let job = request.job_id();
    let existing: Option<JobRecord> = queue.state_get(&keys::job(&job)).await?;
    if let Some(summary) = existing.as_ref().and_then(|r| r.summary.clone()) {
        return Ok(summary);
    }
    if existing.is_none() {
        queue
            .state_put(
                &keys::job(&job),
                &JobRecord {
                    request: request.clone(),
                    summary: None,
                },
            )
            .await?;
    }
    let lane = Lane::Backfill(job.clone());
    let mut fetched = FetchSummary::default();
    let done_fetching: bool = queue
        .state_get(&keys::job_fetched(&job))
        .await?
        .unwrap_or(false);
    if !done_fetching {
        if request.lsids.is_empty() {
            fetch_range(
                queue,
                fetcher,
                pipeline,
                request,
                &lane,
                stop,
                &mut fetched,
                |p| on_progress(p),
            )
            .await?;
        } else {
            fetch_lsids(queue, fetcher, request, &lane, &mut fetched).await?;
        }
        queue.state_put(&keys::job_fetched(&job), &true).await?;
    }
    loop {
        let p = progress(queue, &job).await?;
        on_progress(&p);
        if p.fetched && p.through >= p.items {
            break;
        }
        tokio::select! {
            _ = stop.cancelled() => return Err(BackfillError::Stopped),
            _ = tokio::time::sleep(POLL) => {}
        }
    }
    finish(queue, &job, request, fetched.bytes).await
}

/// The reports a range job fetches, one after the other, each with a cursor of its own
/// (`keys::job_cursor`).
fn range_reports(request: &BackfillRequest) -> Vec<Report> {
    let mut reports = Vec::new();
    if !request.routes.sessions.is_empty() || !request.routes.recordings.is_empty() {
        reports.push(Report::SupportSession);
    }
    if !request.presentations.sessions.is_empty() || !request.presentations.recordings.is_empty() {
        reports.push(Report::PresentationSession);
    }
    reports
}

#[allow(clippy::too_many_arguments)]
async fn fetch_range(
    queue: &Queue,
    fetcher: &FetchStage,
    pipeline: &PipelineConfig,
    request: &BackfillRequest,
    lane: &Lane,
    stop: &CancellationToken,
    summary: &mut FetchSummary,
    mut on_progress: impl FnMut(&Progress),
) -> Result<(), BackfillError> {
    let job = lane.backfill_job().unwrap_or_default().to_string();
    let (Some(from), Some(to)) = (request.from, request.to) else {
        return Ok(());
    };
    fetcher.measure_skew().await?;
    // Sessions that end after appliance-now minus the settle lag may still change.
    let limit = fetcher.fetcher().client().appliance_now()
        - TimeDelta::from_std(pipeline.settle_lag).unwrap_or_default();
    let to = DateTime::from_timestamp(to, 0).unwrap_or(limit).min(limit);
    // One report after the other, each with its own cursor, so a restart resumes each
    // where it stopped; windows start at the length the live lane learnt.
    let site = fetcher.fetcher().site().name.clone();
    for report in range_reports(request) {
        let cursor_key = keys::job_cursor(&job, report);
        let routes = match report {
            Report::SupportSession => &request.routes,
            Report::PresentationSession => &request.presentations,
        };
        let kept: Option<u64> = queue.state_get(&keys::window_length(&site, report)).await?;
        let mut sizing = Sizing::new(kept.map(Duration::from_secs), pipeline);
        let next: Option<i64> = queue.state_get(&cursor_key).await?;
        let mut cursor = DateTime::from_timestamp(next.unwrap_or(from).max(from), 0).unwrap_or(to);
        while cursor < to {
            if stop.is_cancelled() {
                return Err(BackfillError::Stopped);
            }
            let length = TimeDelta::from_std(sizing.length()).unwrap_or(TimeDelta::hours(1));
            let end = (cursor + length).min(to);
            let window = Window { start: cursor, end };
            fetcher
                .fetch_window(
                    report,
                    WindowBy::End,
                    window,
                    routes,
                    lane,
                    &[&cursor_key],
                    &mut sizing,
                    summary,
                )
                .await?;
            cursor = end;
            on_progress(&progress(queue, &job).await?);
        }
    }
    Ok(())
}

async fn fetch_lsids(
    queue: &Queue,
    fetcher: &FetchStage,
    request: &BackfillRequest,
    lane: &Lane,
    summary: &mut FetchSummary,
) -> Result<(), BackfillError> {
    let job = lane.backfill_job().unwrap_or_default().to_string();
    // `next` counts the LSID batches already fetched.
    let cursor = keys::job_cursor(&job, Report::SupportSession);
    let first: i64 = queue.state_get(&cursor).await?.unwrap_or(0);
    for (i, batch) in request.lsids.chunks(LSIDS_PER_REQUEST).enumerate() {
        if (i as i64) < first {
            continue;
        }
        let progress = [(cursor.as_str(), i as i64 + 1)];
        fetcher
            .fetch_lsids(batch, &request.routes, lane, &progress, summary)
            .await?;
    }
    Ok(())
}

/// What a backfill will cost the API account, estimated before it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// Report requests (windows or LSID lists).
    pub reports: u64,
    /// Recording downloads.
    pub recordings: u64,
    /// Sessions expected.
    pub sessions: u64,
    /// Requests an hour the job may spend (`requests_per_hour` less the live reserve).
    pub per_hour: u32,
    /// Hours the job takes at that rate (at least its per-second pace).
    pub hours: f64,
}

impl Estimate {
    /// All requests.
    pub fn requests(&self) -> u64 {
        self.reports + self.recordings
    }
}

/// What the appliance says of a sample of the range: its length, the sessions that
/// ended in it and those of them recorded (a `SupportSessionListing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Seconds sampled.
    pub seconds: u64,
    /// Sessions that ended in it.
    pub sessions: u64,
    /// Of them, those with a recording.
    pub recorded: u64,
}

/// Bytes of a report session, for planning only: real sessions run from 2 to 20 KB
/// (events, chat, system information), the simulator's average about 5.
const SESSION_BYTES: u64 = 8 * 1024;

/// Estimates what `request` costs the budget of `site`, from a `sample` of its range.
pub fn estimate(
    request: &BackfillRequest,
    site: &crate::config::Site,
    pipeline: &PipelineConfig,
    sample: Option<Sample>,
) -> Estimate {
    let wants_recordings = !request.routes.recordings.is_empty();
    let (reports, recordings, sessions) = match (request.from, request.to) {
        (Some(from), Some(to)) => {
            let range = (to - from).max(1) as u64;
            let sample = sample.unwrap_or(Sample {
                seconds: 1,
                sessions: 0,
                recorded: 0,
            });
            let scale = range as f64 / sample.seconds.max(1) as f64;
            let sessions = (sample.sessions as f64 * scale).ceil() as u64;
            let recorded = (sample.recorded as f64 * scale).ceil() as u64;
            let target = (pipeline.max_body_bytes / 4).max(1);
            let windows = range
                .div_ceil(pipeline.max_window.as_secs().max(1))
                .max((sessions * SESSION_BYTES).div_ceil(target));
            let reports = range_reports(request).len() as u64 * windows;
            (
                reports,
                if wants_recordings { recorded } else { 0 },
                sessions,
            )
        }
        _ => {
            let n = request.lsids.len() as u64;
            let recordings = if wants_recordings { n } else { 0 };
            (n.div_ceil(LSIDS_PER_REQUEST as u64), recordings, n)
        }
    };
    let per_hour = site
        .requests_per_hour
        .saturating_sub(site.live_reserve)
        .max(1);
    let requests = reports + recordings + 2;
    // In hours of the budget's window (an hour, unless a test rig shortens it).
    let window_hours = crate::appliance::BudgetLimits::hour_from_env().as_secs_f64() / 3600.0;
    let by_hour = requests as f64 / f64::from(per_hour) * window_hours;
    let by_second = requests as f64 / site.requests_per_second.max(0.001) / 3600.0;
    Estimate {
        reports,
        recordings,
        sessions,
        per_hour,
        hours: by_hour.max(by_second),
    }
}

/// Counts the outcome, stores the summary and deletes the per-item keys.
async fn finish(
    queue: &Queue,
    job: &str,
    request: &BackfillRequest,
    bytes: u64,
) -> Result<Summary, BackfillError> {
    let done: Vec<(String, Finished)> = queue.state_list(&keys::finished_prefix(job)).await?;
    let pushed: Vec<(String, u64)> = queue.state_list(&keys::created_prefix(job)).await?;
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for (_, f) in &done {
        let (name, n) = match f {
            Finished::Session => ("sessions", 1),
            Finished::Sessions(n) => ("sessions", *n),
            Finished::Recording => ("recordings", 1),
            Finished::Presentation => ("presentations", 1),
            Finished::Other => ("other", 1),
            Finished::DeadLettered => ("dead", 1),
            Finished::Body => ("bodies", 1),
        };
        *counts.entry(name).or_default() += n;
    }
    let summary = Summary {
        sessions_delivered: counts.get("sessions").copied().unwrap_or(0),
        recordings_delivered: counts.get("recordings").copied().unwrap_or(0),
        dead_lettered: counts.get("dead").copied().unwrap_or(0),
        bodies: counts.get("bodies").copied().unwrap_or(0),
        bytes,
        presentations_delivered: counts.get("presentations").copied().unwrap_or(0),
    };
    let mut changes = Changes::new();
    changes.put_state(
        &keys::job(job),
        &JobRecord {
            request: request.clone(),
            summary: Some(summary.clone()),
        },
    )?;
    for (key, _) in &pushed {
        changes.delete_state(key);
    }
    for (key, _) in &done {
        changes.delete_state(key);
    }
    for report in Report::ALL {
        changes.delete_state(&keys::job_cursor(job, report));
    }
    changes.delete_state(&keys::job_fetched(job));
    queue.commit(changes).await?;
    Ok(summary)
}

/// The daemon's backfill jobs: started through the admin API, run beside the live lane
/// by the daemon's own stage workers.
#[derive(Debug)]
pub struct Backfills {
    /// The shared queue.
    pub queue: Queue,
    /// The pipeline file the daemon runs.
    pub config: std::sync::Arc<crate::config::Config>,
    /// One fetch stage per site.
    pub fetchers: BTreeMap<String, FetchStage>,
    /// Cancelled when the daemon stops.
    pub stop: CancellationToken,
    /// Jobs started by this process: `None` while running or finished, else the error.
    pub jobs: std::sync::Mutex<BTreeMap<String, JobRun>>,
    /// What cancels each job this process started.
    pub cancels: std::sync::Mutex<BTreeMap<String, CancellationToken>>,
}

/// A backfill request names something the pipeline file does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnknownName {
    /// No such site.
    #[error("no site named {0:?}")]
    Site(String),
    /// No such destination.
    #[error("no destination named {0:?}")]
    Destination(String),
}

/// A job as this daemon ran it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobRun {
    /// Its task is running.
    Running,
    /// Its task ended (the summary is in the state).
    Ended,
    /// Its task failed with this reason.
    Failed(String),
    /// An operator cancelled it.
    Cancelled,
}

impl Backfills {
    /// Starts `request` unless its job is running already; returns the job id.
    pub fn start(
        self: &std::sync::Arc<Self>,
        request: BackfillRequest,
    ) -> Result<String, UnknownName> {
        let Some(fetcher) = self.fetchers.get(&request.site).cloned() else {
            return Err(UnknownName::Site(request.site.clone()));
        };
        if let Some(d) = request
            .destinations()
            .into_iter()
            .find(|d| self.config.destination(d).is_none())
        {
            return Err(UnknownName::Destination(d.clone()));
        }
        let job = request.job_id();
        {
            let mut jobs = self.jobs.lock().expect("backfill jobs lock");
            if jobs.get(&job) == Some(&JobRun::Running) {
                return Ok(job);
            }
            jobs.insert(job.clone(), JobRun::Running);
        }
        let cancel = self.stop.child_token();
        self.cancels
            .lock()
            .expect("backfill cancels lock")
            .insert(job.clone(), cancel.clone());
        let me = self.clone();
        let id = job.clone();
        tokio::spawn(async move {
            let started = chrono::Utc::now();
            let outcome = run(
                &me.queue,
                &fetcher,
                &me.config.pipeline,
                &request,
                &cancel,
                |_| {},
            )
            .await;
            let state = match outcome {
                Ok(s) => {
                    tracing::info!(job = %id, sessions = s.sessions_delivered, dead_lettered = s.dead_lettered, "backfill finished");
                    JobRun::Ended
                }
                Err(BackfillError::Stopped) if !me.stop.is_cancelled() => {
                    // Cancelled: it asks for nothing more, and its record is closed
                    // with what got through, so a restart does not resume it. What it
                    // queued still travels.
                    match finish(&me.queue, &id, &request, 0).await {
                        Ok(s) => {
                            tracing::warn!(job = %id, sessions = s.sessions_delivered, "backfill cancelled")
                        }
                        Err(e) => {
                            tracing::error!(job = %id, "closing the cancelled backfill's record: {e}")
                        }
                    }
                    JobRun::Cancelled
                }
                Err(e) => {
                    tracing::warn!(job = %id, "backfill stopped: {e}");
                    JobRun::Failed(e.to_string())
                }
            };
            me.remember(&id, started, &state).await;
            me.jobs
                .lock()
                .expect("backfill jobs lock")
                .insert(id, state);
        });
        Ok(job)
    }

    /// At the daemon's start: starts again every job whose record has no summary yet (a
    /// job started through the admin API keeps going after a restart, whether or not
    /// its `btic backfill` still follows it), and deletes per-item keys left behind by
    /// finished jobs (an item replayed from the dead letter and delivered after its job
    /// finished). Returns the ids of the jobs started.
    pub async fn resume_unfinished(self: &std::sync::Arc<Self>) -> Result<Vec<String>, QueueError> {
        let keys = self.queue.state_keys("backfill/").await?;
        let jobs: Vec<&str> = keys
            .iter()
            .filter_map(|k| k.strip_prefix("backfill/"))
            .filter(|job| !job.contains('/'))
            .collect();
        let mut started = Vec::new();
        for job in jobs {
            let record = match self.queue.state_get::<JobRecord>(&keys::job(job)).await {
                Ok(Some(record)) => record,
                Ok(None) => continue,
                // Written by a version whose record had another layout: that job is
                // not resumed (running its command again starts it afresh); the others are.
                Err(e @ QueueError::Decode { .. }) => {
                    tracing::warn!(job = %job, "cannot resume backfill job: {e}");
                    continue;
                }
                Err(e) => return Err(e),
            };
            if record.summary.is_some() {
                let leftovers = keys::job_prefix(job);
                let mut changes = Changes::new();
                let mut any = false;
                for key in keys.iter().filter(|k| k.starts_with(&leftovers)) {
                    changes.delete_state(key);
                    any = true;
                }
                if any {
                    self.queue.commit(changes).await?;
                }
                continue;
            }
            match self.start(record.request) {
                Ok(id) => {
                    tracing::info!(job = %id, "resuming an unfinished backfill job");
                    started.push(id);
                }
                Err(reason) => {
                    tracing::warn!(job = %job, "cannot resume backfill job: {reason}");
                }
            }
        }
        Ok(started)
    }

    /// Where `job` stands, with the error if its task failed here.
    pub async fn progress(&self, job: &str) -> Result<Progress, QueueError> {
        let mut p = progress(&self.queue, job).await?;
        match self.jobs.lock().expect("backfill jobs lock").get(job) {
            Some(JobRun::Failed(e)) => p.error = Some(e.clone()),
            Some(JobRun::Cancelled) => p.cancelled = true,
            _ => {}
        }
        Ok(p)
    }

    /// Adds a job's run in this process to the history, with its summary when it has
    /// one.
    async fn remember(&self, job: &str, started: chrono::DateTime<chrono::Utc>, state: &JobRun) {
        let summary = match progress(&self.queue, job).await {
            Ok(p) => p.summary.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(job, "reading the backfill's summary for the history: {e}");
                Summary::default()
            }
        };
        let run = RunRecord {
            kind: RunKind::Backfill,
            name: job.to_string(),
            started_ms: started.timestamp_millis(),
            duration_ms: (chrono::Utc::now() - started).num_milliseconds().max(0) as u64,
            // One report request (a window, or a list of LSIDs) per body.
            windows: summary.bodies,
            bodies: summary.bodies,
            bytes: summary.bytes,
            sessions: Some(summary.sessions_delivered),
            dead_lettered: summary.dead_lettered,
            outcome: match state {
                JobRun::Running | JobRun::Ended => "ok".to_string(),
                JobRun::Cancelled => "cancelled".to_string(),
                JobRun::Failed(e) => e.clone(),
            },
        };
        if let Err(e) = super::history::record(&self.queue, &run).await {
            tracing::error!(job, "recording the backfill in the history: {e}");
        }
    }

    /// Whether this process started (or resumed) `job`.
    pub fn started_here(&self, job: &str) -> bool {
        self.jobs
            .lock()
            .expect("backfill jobs lock")
            .contains_key(job)
    }

    /// Cancels `job` if this process runs it: it fetches nothing more; what it queued
    /// already is still delivered. Returns whether it was running.
    pub fn cancel(&self, job: &str) -> bool {
        let running =
            self.jobs.lock().expect("backfill jobs lock").get(job) == Some(&JobRun::Running);
        if let Some(token) = self.cancels.lock().expect("backfill cancels lock").get(job)
            && running
        {
            token.cancel();
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> BackfillRequest {
        BackfillRequest {
            site: "main".into(),
            from: Some(1_700_000_000),
            to: Some(1_700_086_400),
            lsids: Vec::new(),
            routes: Routes {
                sessions: vec!["pg".into()],
                ..Routes::default()
            },
            presentations: Routes::default(),
        }
    }

    #[test]
    fn a_year_with_recordings_takes_more_than_a_week_under_the_default_budget() {
        let config = crate::config::Config::from_toml(
            std::path::Path::new("t.toml"),
            "state_dir = \"/tmp/x\"\n[[site]]\nname = \"s\"\nhost = \"h\"\nclient_id = \"c\"\nclient_secret = \"x\"\n",
        )
        .unwrap();
        let site = &config.sites[0];
        let request = |recordings: bool| BackfillRequest {
            site: "s".into(),
            from: Some(0),
            to: Some(365 * 86_400),
            lsids: Vec::new(),
            routes: Routes {
                sessions: vec!["db".into()],
                recordings: if recordings {
                    vec!["files".into()]
                } else {
                    Vec::new()
                },
                ..Routes::default()
            },
            presentations: Routes::default(),
        };
        // A day of 20,000 sessions, a third recorded.
        let sample = Some(Sample {
            seconds: 86_400,
            sessions: 20_000,
            recorded: 6_667,
        });
        let e = estimate(&request(true), site, &config.pipeline, sample);
        assert_eq!(e.per_hour, 9_000);
        assert_eq!(e.sessions, 7_300_000);
        assert!(e.recordings > 2_400_000);
        assert!(e.hours > 24.0 * 7.0, "more than a week: {} hours", e.hours);
        let e = estimate(&request(false), site, &config.pipeline, sample);
        assert_eq!(e.recordings, 0);
        assert!(e.hours < 1.0, "{} hours", e.hours);
    }

    #[test]
    fn the_same_request_names_the_same_job_and_any_change_another() {
        assert_eq!(request().job_id(), request().job_id());
        assert_eq!(request().job_id().len(), 16);
        let mut other = request();
        other.routes.sessions.push("lite".into());
        assert_ne!(other.job_id(), request().job_id());
        let mut other = request();
        other.to = Some(1_700_086_401);
        assert_ne!(other.job_id(), request().job_id());
        let mut other = request();
        other.presentations.sessions.push("archive".into());
        assert_ne!(other.job_id(), request().job_id());
    }

    #[test]
    fn a_range_job_fetches_each_report_it_routes_with_a_cursor_of_its_own() {
        let cursors = |r: &BackfillRequest| -> Vec<String> {
            range_reports(r)
                .into_iter()
                .map(|report| keys::job_cursor("j", report))
                .collect()
        };
        assert_eq!(cursors(&request()), ["backfill/j/next"]);
        let mut both = request();
        both.presentations.recordings.push("archive".into());
        assert_eq!(
            cursors(&both),
            ["backfill/j/next", "backfill/j/next-presentations"]
        );
        let mut only = both.clone();
        only.routes = Routes::default();
        assert_eq!(cursors(&only), ["backfill/j/next-presentations"]);
    }

    #[test]
    fn job_keys_of_one_job_are_not_prefixes_of_another_jobs() {
        let a = keys::finished_prefix("abc");
        assert!(a.starts_with("backfill/abc/done/"));
        assert!(!a.starts_with("backfill/ab/"));
        assert_eq!(keys::created_prefix("abc"), "backfill/abc/pushed/");
    }
}
