//! The fetch stage: plans report windows from watermarks (in appliance time), runs the
//! requests through the appliance client, and hands each spooled body to the parse stage
//! in the same queue transaction that advances the watermark past its window
//! (invariant 2). A window whose body is larger than `max_body_bytes`, or that times out,
//! is split in halves and fetched again.

pub mod plan;
mod request;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::appliance::{self, ApplianceClient, ApplianceError, Fetched, WindowBy};
use crate::config::{PipelineConfig, Site, StartFrom};
use crate::metrics;
use crate::model::Report;
use crate::pipeline::backfill;
use crate::pipeline::items::{FETCHED, FetchTask, FetchedBody, Lane, Routes, fetch_queue};
use crate::queue::{Changes, Queue, QueueError};
use plan::{Window, plan_windows};
pub use request::{FetchRequest, Selection, UnknownRequest};

/// The state key of the live watermark of (site, report).
pub fn watermark_key(site: &str, report: Report) -> String {
    format!("watermark/{site}/{}", report.as_str())
}

/// The state key of a site's last measured clock skew.
pub fn skew_key(site: &str) -> String {
    format!("skew/{site}")
}

/// A site's clock as last measured, kept so `status` can show it without a daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkewRecord {
    /// Appliance clock minus host clock, in milliseconds.
    pub skew_ms: i64,
    /// When it was measured (host clock, UNIX seconds).
    pub measured_at: i64,
}

/// Why a fetch did not finish.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The appliance could not answer (after the client's own retries).
    #[error(transparent)]
    Appliance(#[from] ApplianceError),
    /// The queue could not record the result.
    #[error("recording fetched bodies: {0}")]
    Queue(#[from] QueueError),
}

impl FetchError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            FetchError::Appliance(e) => e.is_retryable(),
            FetchError::Queue(_) => true,
        }
    }
}

/// What one fetch run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchSummary {
    /// Bodies handed to the parse stage.
    pub bodies: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Windows fetched (after splitting).
    pub windows: u64,
    /// The watermark after the run, if it moved.
    pub watermark: Option<DateTime<Utc>>,
    /// Requests the appliance refused for good, now in the dead letter.
    pub refused: u64,
}

/// Fetches the reports of one site.
#[derive(Debug, Clone)]
pub struct Fetcher {
    site: Site,
    client: ApplianceClient,
    queue: Queue,
    pipeline: PipelineConfig,
    start_from: StartFrom,
}

impl Fetcher {
    /// A fetcher for `site` that writes to `queue`.
    pub fn new(
        site: Site,
        client: ApplianceClient,
        queue: Queue,
        pipeline: PipelineConfig,
        start_from: StartFrom,
    ) -> Fetcher {
        Fetcher {
            site,
            client,
            queue,
            pipeline,
            start_from,
        }
    }

    /// The site it fetches from.
    pub fn site(&self) -> &Site {
        &self.site
    }

    /// The site's client (shared with the download stage, so limits are shared too).
    pub fn client(&self) -> &ApplianceClient {
        &self.client
    }

    /// Reads the appliance's clock (`get_api_info`) and records the skew.
    pub async fn measure_skew(&self) -> Result<TimeDelta, FetchError> {
        let started = std::time::Instant::now();
        let outcome = self.client.api_info().await;
        metrics::fetch_request(
            &self.site.name,
            "get_api_info",
            outcome_label(&outcome),
            started.elapsed(),
        );
        outcome?;
        let skew = self.client.skew().unwrap_or_default();
        metrics::clock_skew(&self.site.name, skew.num_milliseconds() as f64 / 1000.0);
        self.queue
            .state_put(
                &skew_key(&self.site.name),
                &SkewRecord {
                    skew_ms: skew.num_milliseconds(),
                    measured_at: Utc::now().timestamp(),
                },
            )
            .await?;
        Ok(skew)
    }

    /// Fetches every closed session since the live watermark of `report`, up to
    /// appliance-now minus the settle lag, and moves the watermark with each body.
    pub async fn fetch_live(
        &self,
        report: Report,
        routes: &Routes,
    ) -> Result<FetchSummary, FetchError> {
        self.measure_skew().await?;
        let key = watermark_key(&self.site.name, report);
        let watermark: Option<i64> = self.queue.state_get(&key).await?;
        let watermark = watermark.and_then(|t| DateTime::from_timestamp(t, 0));
        let now = self.client.appliance_now();
        let windows = plan_windows(watermark, self.start_from, now, &self.pipeline);
        let mut summary = FetchSummary::default();
        for window in windows {
            self.fetch_window(report, window, routes, &Lane::Live, &key, &mut summary)
                .await?;
            if let Some(w) = summary.watermark {
                let lag = (self.client.appliance_now() - w)
                    .to_std()
                    .unwrap_or_default();
                metrics::watermark(&self.site.name, report.as_str(), w.timestamp(), lag);
            }
        }
        Ok(summary)
    }

    /// Fetches `window` (split as needed) and records each piece in the queue together
    /// with `progress_key` set to the piece's end: the live watermark or a backfill's
    /// progress.
    pub async fn fetch_window(
        &self,
        report: Report,
        window: Window,
        routes: &Routes,
        lane: &Lane,
        progress_key: &str,
        summary: &mut FetchSummary,
    ) -> Result<(), FetchError> {
        self.fetch_window_by(
            WindowBy::End,
            report,
            window,
            routes,
            lane,
            progress_key,
            summary,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn fetch_window_by(
        &self,
        by: WindowBy,
        report: Report,
        window: Window,
        routes: &Routes,
        lane: &Lane,
        progress_key: &str,
        summary: &mut FetchSummary,
    ) -> Result<(), FetchError> {
        // Depth-first over halves keeps the pieces in time order, so the progress key
        // only ever moves forward.
        let mut pending = vec![window];
        while let Some(w) = pending.pop() {
            let request = FetchRequest {
                report,
                selection: Selection::Window(by, w),
            };
            let progress = Some((progress_key, w.end.timestamp()));
            match self.request(&request).await {
                Ok(fetched)
                    if fetched.bytes() > self.pipeline.max_body_bytes && w.split().is_some() =>
                {
                    if let Some(body) = &fetched.body {
                        let _ = std::fs::remove_file(&body.path);
                    }
                    let (a, b) = w.split().expect("checked above");
                    tracing::info!(
                        site = %self.site.name,
                        bytes = fetched.bytes(),
                        "report body larger than max_body_bytes; splitting the window"
                    );
                    pending.push(b);
                    pending.push(a);
                }
                Ok(fetched) => {
                    self.record(&request, fetched, routes, lane, progress, summary)
                        .await?;
                    summary.watermark = Some(w.end);
                }
                Err(ApplianceError::Timeout { .. }) if w.split().is_some() => {
                    let (a, b) = w.split().expect("checked above");
                    tracing::warn!(site = %self.site.name, "report request timed out; splitting the window");
                    pending.push(b);
                    pending.push(a);
                }
                Err(e) => {
                    let settled = self
                        .settle_failure(request, e, routes, lane, progress, summary)
                        .await?;
                    summary.watermark = Some(w.end);
                    // A request refused for good does not stop the run; one that kept
                    // failing for a passing reason does: the appliance is in trouble, and
                    // the next run (after a backoff) goes on from the moved watermark.
                    if let Settled::Deferred(e) = settled {
                        return Err(e.into());
                    }
                }
            }
        }
        Ok(())
    }

    /// Fetches the sessions `lsids` (in one request), moving `progress` with the body.
    /// A request refused as a whole goes to the site's fetch queue, where it is split
    /// until the LSID the appliance refuses is alone in the dead letter.
    pub async fn fetch_lsids(
        &self,
        lsids: &[String],
        routes: &Routes,
        lane: &Lane,
        progress: Option<(&str, i64)>,
        summary: &mut FetchSummary,
    ) -> Result<(), FetchError> {
        let request = FetchRequest::lsids(lsids);
        match self.request(&request).await {
            Ok(fetched) => {
                self.record(&request, fetched, routes, lane, progress, summary)
                    .await
            }
            Err(e) => match self
                .settle_failure(request, e, routes, lane, progress, summary)
                .await?
            {
                Settled::Deferred(e) => Err(e.into()),
                Settled::Refused | Settled::Split => Ok(()),
            },
        }
    }

    /// One request to the appliance (with the client's retries), counted in the metrics.
    pub async fn request(&self, request: &FetchRequest) -> Result<Fetched, ApplianceError> {
        let started = std::time::Instant::now();
        let outcome = match &request.selection {
            Selection::Window(by, w) => {
                let window = appliance::Window {
                    by: *by,
                    from: w.start,
                    duration: Duration::from_secs(w.duration_secs()),
                };
                match request.report {
                    Report::SupportSession => self.client.support_sessions(window).await,
                    Report::PresentationSession => self.client.presentation_sessions(window).await,
                }
            }
            Selection::Lsids(lsids) => self.client.support_sessions_by_lsid(lsids).await,
        };
        let report = request.report.as_str();
        metrics::fetch_request(
            &self.site.name,
            report,
            outcome_label(&outcome),
            started.elapsed(),
        );
        if let Ok(f) = &outcome {
            metrics::downloaded_bytes(&self.site.name, report, f.bytes());
        }
        outcome
    }

    /// Adds to `changes` the parse stage's item for a spooled body (and, for a backfill
    /// job, that it waits for the body).
    pub fn add_body(
        &self,
        changes: &mut Changes,
        request: &FetchRequest,
        body: &appliance::Spooled,
        routes: &Routes,
        lane: &Lane,
    ) -> Result<(), QueueError> {
        let request = request.to_string();
        if let Some(job) = lane.backfill_job() {
            // Keyed by its request, so a repeated window counts once.
            changes.put_state(&backfill::pushed_key(job, &format!("w {request}")), &1u64)?;
        }
        let item = FetchedBody {
            site: self.site.name.clone(),
            host: self.site.host_name().to_string(),
            request,
            body: body.path.clone(),
            bytes: body.bytes,
            routes: routes.clone(),
            lane: lane.clone(),
        };
        changes.push(FETCHED, &item)?;
        Ok(())
    }

    /// Hands a spooled body to the parse stage, in one transaction with `progress`
    /// (a state key and the value it moves to), when given.
    async fn record(
        &self,
        request: &FetchRequest,
        fetched: Fetched,
        routes: &Routes,
        lane: &Lane,
        progress: Option<(&str, i64)>,
        summary: &mut FetchSummary,
    ) -> Result<(), FetchError> {
        let mut changes = Changes::new();
        if let Some((key, value)) = progress {
            changes.put_state(key, &value)?;
        }
        if let Some(body) = &fetched.body {
            self.add_body(&mut changes, request, body, routes, lane)?;
            summary.bodies += 1;
            summary.bytes += body.bytes;
        }
        if let Err(e) = self.queue.commit(changes).await {
            // Not recorded, so nobody will read the spool file.
            if let Some(body) = &fetched.body {
                let _ = std::fs::remove_file(&body.path);
            }
            return Err(e.into());
        }
        summary.windows += 1;
        Ok(())
    }

    /// A request failed after the client's retries. Unless the site itself cannot be
    /// worked with (unreachable, credentials, TLS: then nothing moves and the caller
    /// stops), the request leaves the run in one transaction with `progress`: to the
    /// site's fetch queue when the failure may pass (retried there within the retry
    /// budget) or when it is an LSID list to split, else straight to the dead letter
    /// with the appliance's text, for `btic replay`.
    async fn settle_failure(
        &self,
        request: FetchRequest,
        error: ApplianceError,
        routes: &Routes,
        lane: &Lane,
        progress: Option<(&str, i64)>,
        summary: &mut FetchSummary,
    ) -> Result<Settled, FetchError> {
        if site_level(&error) {
            return Err(error.into());
        }
        let queue = fetch_queue(&self.site.name);
        let task = |request: FetchRequest| FetchTask {
            site: self.site.name.clone(),
            request,
            routes: routes.clone(),
            lane: lane.clone(),
        };
        let mut changes = Changes::new();
        if let Some((key, value)) = progress {
            changes.put_state(key, &value)?;
        }
        let described = request.describe();
        let settled = if error.is_retryable() {
            tracing::warn!(site = %self.site.name, "{described}: {error}; the request waits in {queue} to be tried again, the run moves on");
            backfill::add_task(&mut changes, lane, &request)?;
            changes.push(&queue, &task(request))?;
            Settled::Deferred(error)
        } else if let Some((a, b)) = request.split() {
            tracing::warn!(site = %self.site.name, "{described}: {error}; splitting the list to find the LSID refused");
            for half in [a, b] {
                backfill::add_task(&mut changes, lane, &half)?;
                changes.push(&queue, &task(half))?;
            }
            Settled::Split
        } else {
            tracing::error!(site = %self.site.name, "{described}: {error}; moved to the dead letter (`btic replay` asks again), the run moves on");
            let metadata = task_metadata(&self.site.name, &request, lane);
            let metadata: Vec<(&str, &str)> =
                metadata.iter().map(|(k, v)| (*k, v.as_str())).collect();
            backfill::add_task(&mut changes, lane, &request)?;
            backfill::finish_task(
                &mut changes,
                lane,
                &request,
                backfill::Finished::DeadLettered,
            )?;
            changes.bury(&queue, &task(request), &error.to_string(), 1, &metadata)?;
            summary.refused += 1;
            Settled::Refused
        };
        self.queue.commit(changes).await?;
        summary.windows += 1;
        Ok(settled)
    }

    /// Sessions still in progress: fetches `start_time` windows from their own watermark
    /// (they include sessions that have not ended), then fetches again, by LSID, every
    /// session the parse stage has seen in progress, until it ends or is older than
    /// `in_progress_max_age`. The parse stage keeps the set of open sessions.
    pub async fn fetch_in_progress(&self, routes: &Routes) -> Result<FetchSummary, FetchError> {
        let report = Report::SupportSession;
        let key = started_watermark_key(&self.site.name);
        let watermark: Option<i64> = self.queue.state_get(&key).await?;
        let watermark = watermark.and_then(|t| DateTime::from_timestamp(t, 0));
        let now = self.client.appliance_now();
        let mut summary = FetchSummary::default();
        for window in plan_windows(watermark, self.start_from, now, &self.pipeline) {
            self.fetch_window_by(
                WindowBy::Start,
                report,
                window,
                routes,
                &Lane::Live,
                &key,
                &mut summary,
            )
            .await?;
        }

        let open: Vec<(String, i64)> = self.queue.state_list(&open_prefix(&self.site.name)).await?;
        let oldest = (now
            - TimeDelta::from_std(self.pipeline.in_progress_max_age).unwrap_or(TimeDelta::MAX))
        .timestamp();
        let mut expired = Changes::new();
        let mut lsids = Vec::new();
        for (key, started) in open {
            if started < oldest {
                expired.delete_state(&key);
            } else if let Some(lsid) = key.rsplit('/').next() {
                lsids.push(lsid.to_string());
            }
        }
        if !expired.is_empty() {
            tracing::info!(site = %self.site.name, "giving up on sessions in progress for longer than in_progress_max_age");
            self.queue.commit(expired).await?;
        }
        for chunk in lsids.chunks(OPEN_LSIDS_PER_REQUEST) {
            self.fetch_lsids(chunk, routes, &Lane::Live, None, &mut summary)
                .await?;
        }
        Ok(summary)
    }
}

/// How a failed request left the run.
#[derive(Debug)]
enum Settled {
    /// It failed for a passing reason and waits in the site's fetch queue.
    Deferred(ApplianceError),
    /// An LSID list, split in halves into the site's fetch queue.
    Split,
    /// It was refused for good and is in the dead letter.
    Refused,
}

/// Whether a failure is the site's rather than one request's: it cannot be reached or
/// worked with at all (network, TLS, credentials, an HTTP status other than 429/5xx, the
/// spool), so moving past the request would only move past every other one too.
pub fn site_level(error: &ApplianceError) -> bool {
    match error {
        ApplianceError::Setup { .. }
        | ApplianceError::Credentials { .. }
        | ApplianceError::Token { .. }
        | ApplianceError::Tls { .. }
        | ApplianceError::Connect { .. }
        | ApplianceError::Spool { .. } => true,
        ApplianceError::Status { .. } => !error.is_retryable(),
        ApplianceError::Timeout { .. }
        | ApplianceError::Interrupted { .. }
        | ApplianceError::ErrorBody { .. }
        | ApplianceError::RecordingExpired { .. }
        | ApplianceError::BadAnswer { .. } => false,
    }
}

/// The dead-letter metadata of a report request: stage, site, report, what it selects
/// (`window` or `lsids`), the request's text and, in a backfill lane, the job.
pub fn task_metadata(
    site: &str,
    request: &FetchRequest,
    lane: &Lane,
) -> Vec<(&'static str, String)> {
    let mut metadata = vec![
        ("stage", "fetch".to_string()),
        ("site", site.to_string()),
        ("report", request.report.as_str().to_string()),
    ];
    match &request.selection {
        Selection::Window(by, w) => metadata.push((
            "window",
            format!(
                "{} in [{}, {})",
                match by {
                    WindowBy::End => "ended",
                    WindowBy::Start => "started",
                },
                w.start.to_rfc3339(),
                w.end.to_rfc3339()
            ),
        )),
        Selection::Lsids(lsids) => metadata.push(("lsids", lsids.join(","))),
    }
    metadata.push(("request", request.to_string()));
    if let Some(job) = lane.backfill_job() {
        metadata.push((backfill::JOB_METADATA, job.to_string()));
    }
    metadata
}

/// Sessions in progress fetched again per request.
const OPEN_LSIDS_PER_REQUEST: usize = 50;

/// The state key of the `start_time` watermark of a site (sessions in progress).
pub fn started_watermark_key(site: &str) -> String {
    format!("watermark/{site}/SupportSession/started")
}

/// The state key prefix of a site's sessions in progress.
pub fn open_prefix(site: &str) -> String {
    format!("open/{site}/")
}

/// The state key of one session in progress; its value is its start time (UNIX seconds,
/// appliance time).
pub fn open_key(site: &str, lsid: &str) -> String {
    format!("{}{lsid}", open_prefix(site))
}

fn outcome_label<T>(outcome: &Result<T, ApplianceError>) -> &'static str {
    match outcome {
        Ok(_) => "ok",
        Err(e) if e.is_retryable() => "retryable_error",
        Err(_) => "error",
    }
}
