//! The fetch stage: asks a site for its reports (`fetch::Fetcher`) and hands each body
//! on to the parse stage (`fetched`) in the transaction that moves the watermark — or a
//! backfill job's cursor — past its window.
//!
//! [`FetchStage`] runs a site's windows for the scheduler and for backfill jobs. A window
//! whose body is too large, or that times out, is split in halves and fetched again. A
//! request that fails settles in the same transaction as the watermark, so no request
//! can stall a site:
//!
//! - refused for good (an `<error>` btic does not know, a body that is not XML): buried
//!   in the dead letter as a [`FetchTask`] of `fetch/<site>`, for `btic replay`;
//! - failing for a passing reason after the client's retries (5xx, 429, a cut answer), or
//!   an LSID list refused as a whole: to `fetch/<site>` (a list in halves), and the run
//!   stops there when it was a passing failure (the appliance is in trouble; the next run
//!   goes on from the moved watermark);
//! - the site itself cannot be worked with (`fetch::site_level`): nothing moves, the run
//!   fails and is tried again later.
//!
//! [`FetchWorker`], one per site, takes the requests of `fetch/<site>` and makes each again:
//! a body is handed on, a window too large or an LSID list refused becomes two tasks,
//! anything else settles through the one retry settlement (`settle`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use tokio_util::sync::CancellationToken;

use super::budget::DiskBudget;
use super::handoff::{Finished, HandOff, Step};
use super::items::{
    FETCHED, FetchTask, FetchedBody, Lane, Routes, borrowed, fetch_queue, request_metadata,
};
use super::settle::{self, Failed, Retry};
use super::worker::{self, Progress, Worker};
use crate::appliance::{ApplianceError, Fetched, WindowBy};
use crate::config::{PipelineConfig, RetryPolicy, StartFrom};
use crate::fetch::plan::{Marks, Pass, Sizing, Window, fresh_stretch, plan_stretches};
use crate::fetch::{FetchRequest, Fetcher, Selection, halves_after, site_level};
use crate::keys::{self, SkewRecord};
use crate::metrics::{self, Health};
use crate::model::Report;
use crate::queue::{Claimed, Queue, QueueError};

/// Sessions in progress fetched again per request.
const OPEN_LSIDS_PER_REQUEST: usize = 50;

/// How long after the overlap horizon a session's digest is kept: a request of the
/// live lane that waited in `fetch/<site>` (or a replay) within that time still finds
/// what was handed on unchanged.
const SEEN_MARGIN_SECONDS: i64 = 3600;

/// Digests forgotten per queue transaction.
const FORGET_PER_TRANSACTION: usize = 1000;

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

/// The fetch stage of one site.
#[derive(Debug, Clone)]
pub struct FetchStage {
    fetcher: Fetcher,
    queue: Queue,
    pipeline: PipelineConfig,
    start_from: StartFrom,
    budget: Arc<DiskBudget>,
}

impl FetchStage {
    /// The stage of `fetcher`'s site, writing to `queue`.
    pub fn new(
        fetcher: Fetcher,
        queue: Queue,
        pipeline: PipelineConfig,
        start_from: StartFrom,
        budget: Arc<DiskBudget>,
    ) -> FetchStage {
        FetchStage {
            fetcher,
            queue,
            pipeline,
            start_from,
            budget,
        }
    }

    /// Waits while the disk budget pauses fetching (the run waiting is cancelled with
    /// its caller).
    async fn within_budget(&self) {
        self.budget.wait_clear(&CancellationToken::new()).await;
    }

    /// The site's fetcher.
    pub fn fetcher(&self) -> &Fetcher {
        &self.fetcher
    }

    fn site(&self) -> &str {
        &self.fetcher.site().name
    }

    /// Reads the appliance's clock and records the skew (for `status`).
    pub async fn measure_skew(&self) -> Result<TimeDelta, FetchError> {
        let skew = self.fetcher.measure_skew().await?;
        let record = SkewRecord {
            skew_ms: skew.num_milliseconds(),
            measured_at: Utc::now().timestamp(),
        };
        self.queue
            .state_put(&keys::skew(self.site()), &record)
            .await?;
        Ok(skew)
    }

    /// Reads a time mark (UNIX seconds) from the state area.
    async fn mark(&self, key: &str) -> Result<Option<DateTime<Utc>>, FetchError> {
        let at: Option<i64> = self.queue.state_get(key).await?;
        Ok(at.and_then(|t| DateTime::from_timestamp(t, 0)))
    }

    /// The live lane's run of `report`: asks once more for what has left the `overlap`
    /// horizon since it was first asked for, then for what ended since the watermark,
    /// up to appliance-now minus the settle lag (`plan::plan_stretches`: each stretch
    /// is asked for at most twice). Each window's body is handed on in the transaction
    /// that moves the marks past it.
    pub async fn fetch_live(
        &self,
        report: Report,
        routes: &Routes,
    ) -> Result<FetchSummary, FetchError> {
        self.measure_skew().await?;
        let site = self.site().to_string();
        let watermark_key = keys::watermark(&site, report);
        let recheck_key = keys::rechecked(&site, report);
        let marks = Marks {
            watermark: self.mark(&watermark_key).await?,
            rechecked: self.mark(&recheck_key).await?,
        };
        let now = self.fetcher.client().appliance_now();
        let length_key = keys::window_length(&site, report);
        let kept: Option<u64> = self.queue.state_get(&length_key).await?;
        let mut sizing = Sizing::new(kept.map(Duration::from_secs), &self.pipeline);
        let mut summary = FetchSummary::default();
        let mut outcome = Ok(());
        for stretch in plan_stretches(marks, self.start_from, now, &self.pipeline) {
            let moves: &[&str] = match stretch.pass {
                Pass::Recheck => &[&recheck_key],
                Pass::Final => &[&watermark_key, &recheck_key],
                Pass::First => &[&watermark_key],
            };
            outcome = self
                .fetch_stretch(
                    report,
                    WindowBy::End,
                    stretch.window,
                    &mut sizing,
                    routes,
                    &Lane::Live,
                    moves,
                    &mut summary,
                )
                .await;
            if stretch.pass != Pass::Recheck
                && let Some(w) = summary.watermark
            {
                let lag = (self.fetcher.client().appliance_now() - w)
                    .to_std()
                    .unwrap_or_default();
                metrics::watermark(&site, report.as_str(), w.timestamp(), lag);
            }
            if outcome.is_err() {
                break;
            }
        }
        // The length learnt is kept for the next run (and a catch-up after a restart).
        if kept != Some(sizing.length().as_secs()) {
            self.queue
                .state_put(&length_key, &sizing.length().as_secs())
                .await?;
        }
        outcome?;
        self.forget_seen().await?;
        Ok(summary)
    }

    /// Forgets the digests of sessions that ended long before the recheck marks: no
    /// scheduled run asks for them again.
    async fn forget_seen(&self) -> Result<(), FetchError> {
        let site = self.site();
        let mut oldest = i64::MAX;
        for report in Report::ALL {
            if let Some(r) = self.mark(&keys::rechecked(site, report)).await? {
                oldest = oldest.min(r.timestamp());
            }
        }
        if oldest == i64::MAX {
            return Ok(());
        }
        let keep = TimeDelta::from_std(self.pipeline.overlap).unwrap_or_default()
            + TimeDelta::seconds(SEEN_MARGIN_SECONDS);
        let before = oldest - keep.num_seconds();
        // Digests are keyed by time: the old ones are a range at the front, read and
        // deleted a bounded number at a time (the first run after a catch-up forgets
        // nearly the whole history, and one transaction holds all it writes in memory
        // until it commits).
        let bound = keys::seen_before(site, before);
        self.forget_keys(&keys::seen_prefix(site), Some(&bound))
            .await?;
        // The digests of builds that kept them by session id, all at once.
        self.forget_keys(&keys::seen_by_lsid_prefix(site), None)
            .await?;
        Ok(())
    }

    /// Deletes the state keys under `prefix` (those below `below`, if given), a
    /// transaction of at most `FORGET_PER_TRANSACTION` at a time.
    async fn forget_keys(&self, prefix: &str, below: Option<&str>) -> Result<(), FetchError> {
        loop {
            let keys = self
                .queue
                .state_keys_range(prefix, below, FORGET_PER_TRANSACTION)
                .await?;
            if keys.is_empty() {
                return Ok(());
            }
            let mut step = HandOff::new(&Lane::Live, Step::Request("forget seen".into()));
            for key in &keys {
                step.delete_state(key);
            }
            step.commit(&self.queue, Vec::new()).await?;
            if keys.len() < FORGET_PER_TRANSACTION {
                return Ok(());
            }
        }
    }

    /// Asks for the sessions selected `by` their end or start in `stretch`, window after
    /// window as long as `sizing` says, moving the state keys `moves` to each window's
    /// end with its body.
    #[allow(clippy::too_many_arguments)]
    pub async fn fetch_stretch(
        &self,
        report: Report,
        by: WindowBy,
        stretch: Window,
        sizing: &mut Sizing,
        routes: &Routes,
        lane: &Lane,
        moves: &[&str],
        summary: &mut FetchSummary,
    ) -> Result<(), FetchError> {
        let mut cursor = stretch.start;
        while cursor < stretch.end {
            let length = TimeDelta::from_std(sizing.length()).unwrap_or(TimeDelta::hours(1));
            let end = (cursor + length).min(stretch.end);
            let window = Window { start: cursor, end };
            self.fetch_window(report, by, window, routes, lane, moves, sizing, summary)
                .await?;
            cursor = end;
            if *lane == Lane::Live && moves.iter().any(|k| k.starts_with(keys::RECHECKED)) {
                // The recheck mark moved: a catch-up of a long history forgets as it
                // goes rather than holding a digest of every session until it ends.
                self.forget_seen().await?;
            }
        }
        Ok(())
    }

    /// Fetches the sessions selected `by` their end or start in `window` (split as
    /// needed: a body too large or a timeout, and a window the appliance refuses for
    /// good down to a minute, so that only the narrowest window holding the cause
    /// waits in the dead letter), depth-first over halves, which keeps the pieces in
    /// time order, so the state keys `moves` only ever move forward, to each piece's end
    /// with its body. `sizing` learns from each body.
    #[allow(clippy::too_many_arguments)]
    pub async fn fetch_window(
        &self,
        report: Report,
        by: WindowBy,
        window: Window,
        routes: &Routes,
        lane: &Lane,
        moves: &[&str],
        sizing: &mut Sizing,
        summary: &mut FetchSummary,
    ) -> Result<(), FetchError> {
        let fetcher = self.fetcher.at(lane.report_priority());
        let mut pending = vec![FetchRequest {
            report,
            selection: Selection::Window(by, window),
        }];
        while let Some(request) = pending.pop() {
            let Selection::Window(_, w) = &request.selection else {
                continue;
            };
            let (end, length) = (w.end, Duration::from_secs(w.duration_secs()));
            let progress: Vec<(&str, i64)> = moves.iter().map(|k| (*k, end.timestamp())).collect();
            self.within_budget().await;
            let outcome = fetcher.request(&request).await;
            let halves = halves_after(&request, &outcome, self.pipeline.max_body_bytes)
                .map(|h| (h, "split"))
                .or_else(|| match &outcome {
                    Err(e) if !site_level(e) && !e.is_retryable() => {
                        request.split_refused().map(|h| (h, "refused"))
                    }
                    _ => None,
                });
            if let Some(((a, b), why)) = halves {
                match &outcome {
                    Ok(fetched) => {
                        sizing.observe(length, fetched.bytes());
                        if let Some(body) = &fetched.body {
                            crate::durable::discard(&body.path).await;
                        }
                        tracing::info!(site = %self.site(), bytes = fetched.bytes(), "report body larger than max_body_bytes; splitting the window");
                    }
                    Err(e) if why == "refused" => {
                        tracing::warn!(site = %self.site(), "{}: {e}; halving the window to narrow down what the appliance refuses", request.describe());
                    }
                    Err(_) => {
                        sizing.observe(length, self.pipeline.max_body_bytes.saturating_mul(2));
                        tracing::warn!(site = %self.site(), "report request timed out; splitting the window");
                    }
                }
                pending.push(b);
                pending.push(a);
                continue;
            }
            match outcome {
                Ok(fetched) => {
                    sizing.observe(length, fetched.bytes());
                    self.record(&request, fetched, routes, lane, &progress, summary)
                        .await?;
                }
                Err(e) => {
                    let settled = self
                        .settle_failure(request, e, routes, lane, &progress, summary)
                        .await?;
                    // A request refused for good does not stop the run; one that kept
                    // failing for a passing reason does: the appliance is in trouble,
                    // and the next run (after a backoff) goes on from the moved
                    // watermark.
                    if let Settled::Deferred(e) = settled {
                        summary.watermark = Some(end);
                        return Err(e.into());
                    }
                }
            }
            summary.watermark = Some(end);
        }
        Ok(())
    }

    /// Fetches the sessions `lsids` (in one request), moving `progress` with the body.
    /// A request refused as a whole goes to the site's fetch queue in halves, until the
    /// LSID the appliance refuses is alone in the dead letter.
    pub async fn fetch_lsids(
        &self,
        lsids: &[String],
        routes: &Routes,
        lane: &Lane,
        progress: &[(&str, i64)],
        summary: &mut FetchSummary,
    ) -> Result<(), FetchError> {
        let request = FetchRequest::lsids(lsids);
        self.within_budget().await;
        let fetcher = self.fetcher.at(lane.report_priority());
        match fetcher.request(&request).await {
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

    /// Hands a spooled body to the parse stage, in one transaction with `progress`
    /// (state keys and the values they move to).
    async fn record(
        &self,
        request: &FetchRequest,
        fetched: Fetched,
        routes: &Routes,
        lane: &Lane,
        progress: &[(&str, i64)],
        summary: &mut FetchSummary,
    ) -> Result<(), FetchError> {
        let mut step = HandOff::new(lane, Step::Request(request.to_string()));
        for (key, value) in progress {
            step.put_state(key, value)?;
        }
        if let Some(body) = &fetched.body {
            add_body(&mut step, &self.fetcher, request, body, routes, lane)?;
            summary.bodies += 1;
            summary.bytes += body.bytes;
        }
        if let Err(e) = step.commit(&self.queue, Vec::new()).await {
            // Not recorded, so nobody will read the spool file.
            if let Some(body) = &fetched.body {
                crate::durable::discard(&body.path).await;
            }
            return Err(e.into());
        }
        summary.windows += 1;
        Ok(())
    }

    /// Settles a request that failed after the client's retries, in one transaction
    /// with `progress` (see the module doc).
    async fn settle_failure(
        &self,
        request: FetchRequest,
        error: ApplianceError,
        routes: &Routes,
        lane: &Lane,
        progress: &[(&str, i64)],
        summary: &mut FetchSummary,
    ) -> Result<Settled, FetchError> {
        if site_level(&error) {
            return Err(error.into());
        }
        let site = self.site().to_string();
        let queue = fetch_queue(&site);
        let task = |request: FetchRequest| FetchTask {
            site: site.clone(),
            request,
            routes: routes.clone(),
            lane: lane.clone(),
        };
        let mut step = HandOff::new(lane, Step::Request(request.to_string()));
        for (key, value) in progress {
            step.put_state(key, value)?;
        }
        let described = request.describe();
        let settled = if error.is_retryable() {
            tracing::warn!(site = %site, "{described}: {error}; the request waits in {queue} to be tried again, the run moves on");
            step.push(&queue, &task(request))?;
            Settled::Deferred(error)
        } else if let Some((a, b)) = request.split_list() {
            tracing::warn!(site = %site, "{described}: {error}; splitting the list to find the LSID refused");
            step.push(&queue, &task(a))?;
            step.push(&queue, &task(b))?;
            Settled::Split
        } else {
            tracing::error!(site = %site, "{described}: {error}; moved to the dead letter (`btic replay` asks again), the run moves on");
            let metadata = request_metadata(&site, &request);
            let finishes = Step::Request(request.to_string());
            step.bury(
                &queue,
                &task(request),
                &error.to_string(),
                &borrowed(&metadata),
                finishes,
            )?;
            summary.refused += 1;
            Settled::Refused
        };
        step.commit(&self.queue, Vec::new()).await?;
        summary.windows += 1;
        Ok(settled)
    }

    /// Sessions still in progress: asks once for the `start_time` stretch since its own
    /// mark (it includes sessions that have not ended), then asks again, by LSID, for
    /// every session the parse stage has seen in progress, until it ends or is older
    /// than `in_progress_max_age`. The parse stage keeps the set of open sessions.
    pub async fn fetch_in_progress(&self, routes: &Routes) -> Result<FetchSummary, FetchError> {
        let key = keys::started_watermark(self.site());
        let mark = self.mark(&key).await?;
        let now = self.fetcher.client().appliance_now();
        let mut summary = FetchSummary::default();
        if let Some(stretch) = fresh_stretch(mark, self.start_from, now, &self.pipeline) {
            let mut sizing = Sizing::new(None, &self.pipeline);
            self.fetch_stretch(
                Report::SupportSession,
                WindowBy::Start,
                stretch,
                &mut sizing,
                routes,
                &Lane::Live,
                &[&key],
                &mut summary,
            )
            .await?;
        }

        let open: Vec<(String, i64)> = self
            .queue
            .state_list(&keys::open_prefix(self.site()))
            .await?;
        let oldest = (now
            - TimeDelta::from_std(self.pipeline.in_progress_max_age).unwrap_or(TimeDelta::MAX))
        .timestamp();
        let mut expired = HandOff::new(&Lane::Live, Step::Request("expired".into()));
        let mut any_expired = false;
        let mut lsids = Vec::new();
        for (key, started) in open {
            if started < oldest {
                expired.delete_state(&key);
                any_expired = true;
            } else if let Some(lsid) = key.rsplit('/').next() {
                lsids.push(lsid.to_string());
            }
        }
        if any_expired {
            tracing::info!(site = %self.site(), "giving up on sessions in progress for longer than in_progress_max_age");
            expired.commit(&self.queue, Vec::new()).await?;
        }
        for chunk in lsids.chunks(OPEN_LSIDS_PER_REQUEST) {
            self.fetch_lsids(chunk, routes, &Lane::Live, &[], &mut summary)
                .await?;
        }
        Ok(summary)
    }
}

/// Adds to `step` the parse stage's item for a spooled body.
fn add_body(
    step: &mut HandOff,
    fetcher: &Fetcher,
    request: &FetchRequest,
    body: &crate::appliance::Spooled,
    routes: &Routes,
    lane: &Lane,
) -> Result<(), QueueError> {
    let site = fetcher.site();
    let item = FetchedBody {
        site: site.name.clone(),
        host: site.host_name().to_string(),
        request: request.to_string(),
        body: body.path.clone(),
        bytes: body.bytes,
        routes: routes.clone(),
        lane: lane.clone(),
    };
    step.push(FETCHED, &item)
}

/// Everything a fetch worker needs.
#[derive(Debug, Clone)]
pub struct FetchWorker {
    /// The site's fetcher (its client is shared with the scheduler and the downloads,
    /// so the site's limits cover them all).
    pub fetcher: Fetcher,
    /// The shared queue.
    pub queue: Queue,
    /// The retry budget.
    pub retry: RetryPolicy,
    /// The most bytes a window's body may have before it is split.
    pub max_body_bytes: u64,
    /// Liveness of the stages.
    pub health: Arc<Health>,
    /// The disk budget it waits for before each request.
    pub budget: Arc<DiskBudget>,
}

impl FetchWorker {
    /// Runs until `shutdown`; a request in progress when it fires is finished first.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let worker = Worker {
            queue: self.queue.clone(),
            from: fetch_queue(&self.fetcher.site().name),
            stage: "fetch",
            health: Some(self.health.clone()),
            gate: Some(self.budget.clone()),
        };
        worker.run(&shutdown, &mut self).await
    }

    async fn fetch_one(&self, claimed: Claimed<FetchTask>) -> Result<(), QueueError> {
        let Claimed { item: task, ticket } = claimed;
        let started = Instant::now();
        let site = task.site.clone();
        let described = task.request.describe();
        // What the task creates is counted under the task's item; the task itself is
        // finished under its request, as it was counted when it was created or buried.
        let mut step = HandOff::new(&task.lane, Step::Item(ticket.id()));
        let finishes = Step::Request(task.request.to_string());
        let outcome = self
            .fetcher
            .at(task.lane.report_priority())
            .request(&task.request)
            .await;
        let halves = halves_after(&task.request, &outcome, self.max_body_bytes);
        let retry = match outcome {
            Ok(fetched) if halves.is_none() => {
                if let Some(body) = &fetched.body {
                    add_body(
                        &mut step,
                        &self.fetcher,
                        &task.request,
                        body,
                        &task.routes,
                        &task.lane,
                    )?;
                }
                step.finish(&task.lane, finishes, Finished::Other);
                if let Err(e) = step.commit(&self.queue, vec![ticket]).await {
                    if let Some(body) = &fetched.body {
                        crate::durable::discard(&body.path).await;
                    }
                    return Err(e);
                }
                tracing::info!(site = %site, "{described}: fetched again");
                let bodies = u64::from(fetched.body.is_some());
                metrics::stage_progress("fetch", 1, bodies, started.elapsed());
                return Ok(());
            }
            Ok(fetched) => {
                if let Some(body) = &fetched.body {
                    crate::durable::discard(&body.path).await;
                }
                None
            }
            Err(e) if halves.is_some() => {
                tracing::warn!(site = %site, "{described}: {e}; splitting the window");
                None
            }
            Err(e) => match task.request.split_refused() {
                Some(halves) if !e.is_retryable() && !site_level(&e) => {
                    tracing::warn!(site = %site, "{described}: {e}; halving the request to narrow down what the appliance refuses");
                    self.push_halves(step, ticket, &task, halves, finishes)
                        .await?;
                    return Ok(());
                }
                _ => Some(e),
            },
        };
        if let Some(e) = retry {
            return self.failed(ticket, &task, e).await;
        }
        let Some(halves) = halves else {
            return Ok(());
        };
        tracing::info!(site = %site, "{described}: splitting the window");
        self.push_halves(step, ticket, &task, halves, finishes)
            .await
    }

    /// Replaces the task by one for each half, in one transaction.
    async fn push_halves(
        &self,
        mut step: HandOff,
        ticket: crate::queue::Ticket,
        task: &FetchTask,
        (a, b): (FetchRequest, FetchRequest),
        finishes: Step,
    ) -> Result<(), QueueError> {
        let queue = fetch_queue(&task.site);
        for request in [a, b] {
            step.push(
                &queue,
                &FetchTask {
                    request,
                    ..task.clone()
                },
            )?;
        }
        step.finish(&task.lane, finishes, Finished::Other);
        step.commit(&self.queue, vec![ticket]).await?;
        metrics::stage_progress("fetch", 1, 2, Duration::ZERO);
        Ok(())
    }

    /// Settles a request that failed again: it waits while the site cannot be worked
    /// with, is retried within the budget when the failure may pass, else dead-lettered.
    async fn failed(
        &self,
        ticket: crate::queue::Ticket,
        task: &FetchTask,
        e: ApplianceError,
    ) -> Result<(), QueueError> {
        let retry = if site_level(&e) {
            Retry::WhenReachable
        } else if e.is_retryable() {
            Retry::Later {
                after: e.retry_after(),
            }
        } else {
            Retry::Never
        };
        let reason = e.to_string();
        let metadata = request_metadata(&task.site, &task.request);
        let attempts = ticket.attempts() + 1;
        let failed = Failed {
            stage: "fetch",
            reason: &reason,
            retry,
            lane: &task.lane,
            step: Step::Request(task.request.to_string()),
            metadata: &borrowed(&metadata),
        };
        let described = task.request.describe();
        match settle::settle(&self.queue, ticket, failed, &self.retry).await? {
            settle::Settled::Retried(delay) => {
                tracing::warn!(site = %task.site, attempts, "{described}: {reason}; trying again in {delay:?}");
            }
            settle::Settled::DeadLettered => {
                metrics::stage_error("fetch");
                tracing::error!(site = %task.site, attempts, "{described}: {reason}; moved to the dead letter (`btic replay` asks again)");
            }
        }
        Ok(())
    }
}

impl worker::Step<FetchTask> for FetchWorker {
    type Error = String;

    async fn step(&mut self, claimed: Claimed<FetchTask>) -> Result<Progress, String> {
        self.fetch_one(claimed)
            .await
            .map(|()| Progress::Made)
            .map_err(|e| format!("recording a request's outcome: {e}"))
    }
}
