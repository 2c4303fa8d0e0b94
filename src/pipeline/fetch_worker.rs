//! The fetch worker: one per site takes the report requests of `fetch/<site>` — requests
//! a scheduled or backfill run could not complete (the watermark or the job's cursor
//! moved past them in the transaction that queued them), halves of refused LSID lists,
//! and requests replayed from the dead letter — and makes each again. Each outcome is
//! one transaction that removes the task:
//!
//! - a body: hands it to the parse stage (`fetched`), like a scheduled fetch;
//! - a body larger than `max_body_bytes`, for a window: two tasks, one per half;
//! - refused for good: an LSID list becomes two tasks (halves), so the LSID the appliance
//!   refuses ends up alone; anything else goes to the dead letter with the appliance's
//!   text, for `btic replay`;
//! - failed for a passing reason: tried again after a backoff, until `max_attempts`,
//!   then the dead letter; while the site cannot be reached at all the task waits
//!   without spending its budget, like a destination's backlog while it is down.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::backfill::{self, Finished};
use super::items::{FetchTask, fetch_queue};
use crate::config::RetryPolicy;
use crate::fetch::{FetchRequest, Fetcher, Selection, site_level, task_metadata};
use crate::metrics::{self, Health};
use crate::queue::{Changes, Claimed, Queue, QueueError, Ticket};

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
}

impl FetchWorker {
    /// Runs until `shutdown`; a request in progress when it fires is finished first.
    pub async fn run(self, shutdown: CancellationToken) {
        let queue_name = fetch_queue(&self.fetcher.site().name);
        loop {
            let claimed = tokio::select! {
                _ = shutdown.cancelled() => return,
                c = self.queue.wait_ready::<FetchTask>(&queue_name) => c,
            };
            let claimed = match claimed {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("{queue_name}: reading the queue: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            self.health.pending(&queue_name);
            if let Err(e) = self.fetch_one(claimed).await {
                metrics::stage_error("fetch");
                tracing::error!("{queue_name}: recording a request's outcome: {e}");
                // The task stays where it was; wait a moment before trying again.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            self.health.progress(&queue_name, false);
        }
    }

    async fn fetch_one(&self, claimed: Claimed<FetchTask>) -> Result<(), QueueError> {
        let Claimed { item: task, ticket } = claimed;
        let started = Instant::now();
        let site = self.fetcher.site().name.clone();
        let described = task.request.describe();
        let mut changes = Changes::new();
        let outcome = self.fetcher.request(&task.request).await;
        let pushed = match outcome {
            Ok(fetched) => {
                if let Some(halves) = self.too_large(&task.request, fetched.bytes()) {
                    if let Some(body) = &fetched.body {
                        let _ = std::fs::remove_file(&body.path);
                    }
                    tracing::info!(site = %site, "{described}: body larger than max_body_bytes; splitting the window");
                    self.push_tasks(&mut changes, &task, halves)?
                } else {
                    if let Some(body) = &fetched.body {
                        self.fetcher.add_body(
                            &mut changes,
                            &task.request,
                            body,
                            &task.routes,
                            &task.lane,
                        )?;
                    }
                    backfill::finish_task(
                        &mut changes,
                        &task.lane,
                        &task.request,
                        Finished::Other,
                    )?;
                    if let Err(e) = self.queue.hand_off(ticket, changes).await {
                        if let Some(body) = &fetched.body {
                            let _ = std::fs::remove_file(&body.path);
                        }
                        return Err(e);
                    }
                    tracing::info!(site = %site, "{described}: fetched again");
                    let bodies = u64::from(fetched.body.is_some());
                    metrics::stage_progress("fetch", 1, bodies, started.elapsed());
                    return Ok(());
                }
            }
            Err(e) if site_level(&e) => {
                // The site is down or refuses the account: nothing to judge the request
                // by. It waits without spending its budget.
                let delay = self.retry.max_interval;
                tracing::warn!(site = %site, "{described}: {e}; trying again in {delay:?}");
                return self.queue.retry_later(ticket, &e.to_string(), delay).await;
            }
            Err(e) if e.is_retryable() => {
                let attempts = ticket.attempts() + 1;
                if attempts < self.retry.max_attempts {
                    let delay = e
                        .retry_after()
                        .unwrap_or_else(|| self.retry.delay_after(attempts));
                    tracing::warn!(site = %site, attempts, "{described}: {e}; retrying in {delay:?}");
                    metrics::retried("fetch");
                    return self.queue.retry_later(ticket, &e.to_string(), delay).await;
                }
                return self.dead_letter(ticket, &task, &e.to_string()).await;
            }
            Err(e) => match task.request.split() {
                Some((a, b)) => {
                    tracing::warn!(site = %site, "{described}: {e}; splitting the list to find the LSID refused");
                    self.push_tasks(&mut changes, &task, [a, b])?
                }
                None => return self.dead_letter(ticket, &task, &e.to_string()).await,
            },
        };
        backfill::finish_task(&mut changes, &task.lane, &task.request, Finished::Other)?;
        self.queue.hand_off(ticket, changes).await?;
        metrics::stage_progress("fetch", 1, pushed, started.elapsed());
        Ok(())
    }

    /// The halves of a window whose body is too large, when it can be split.
    fn too_large(&self, request: &FetchRequest, bytes: u64) -> Option<[FetchRequest; 2]> {
        let Selection::Window(by, w) = &request.selection else {
            return None;
        };
        if bytes <= self.max_body_bytes {
            return None;
        }
        let (a, b) = w.split()?;
        let half = |w| FetchRequest {
            report: request.report,
            selection: Selection::Window(*by, w),
        };
        Some([half(a), half(b)])
    }

    /// Adds a task per request to `changes`, in the lane of `parent`; returns how many.
    fn push_tasks(
        &self,
        changes: &mut Changes,
        parent: &FetchTask,
        requests: [FetchRequest; 2],
    ) -> Result<u64, QueueError> {
        let queue = fetch_queue(&parent.site);
        for request in requests {
            backfill::add_task(changes, &parent.lane, &request)?;
            changes.push(
                &queue,
                &FetchTask {
                    request,
                    ..parent.clone()
                },
            )?;
        }
        Ok(2)
    }

    async fn dead_letter(
        &self,
        ticket: Ticket,
        task: &FetchTask,
        reason: &str,
    ) -> Result<(), QueueError> {
        metrics::stage_error("fetch");
        tracing::error!(
            site = %task.site,
            attempts = ticket.attempts() + 1,
            "{}: {reason}; moved to the dead letter (`btic replay` asks again)",
            task.request.describe()
        );
        let metadata = task_metadata(&task.site, &task.request, &task.lane);
        let metadata: Vec<(&str, &str)> = metadata.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut state = Changes::new();
        backfill::finish_task(
            &mut state,
            &task.lane,
            &task.request,
            Finished::DeadLettered,
        )?;
        self.queue
            .dead_letter_with(ticket, reason, &metadata, state)
            .await
    }
}
