//! The download stage: one worker per site takes recording and backup tasks from
//! `download/<site>`, streams each file to the spool through the site's client (so the
//! site's rate limits cover reports and downloads together), and hands one
//! `deliver/<destination>` item per files destination on in the same transaction that
//! removes the task. Each destination gets its own spool file (a hard link where the
//! file system allows), because a delivery consumes its spool file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::budget::DiskBudget;
use super::handoff::{Finished, HandOff, Step};
use super::items::{DeliverItem, DownloadTask, Lane, deliver_queue, download_queue};
use super::settle::{Failed, Retry, Settled, settle};
use super::worker::{self, Progress, Worker};
use crate::appliance::{ApplianceClient, ApplianceError, Fetched};
use crate::config::RetryPolicy;
use crate::metrics::{self, Health};
use crate::queue::{Claimed, Queue};

/// Everything a download worker needs.
#[derive(Debug, Clone)]
pub struct DownloadWorker {
    /// The site's name.
    pub site: String,
    /// The site's client (shared with the fetch stage).
    pub client: ApplianceClient,
    /// The shared queue.
    pub queue: Queue,
    /// The retry budget.
    pub retry: RetryPolicy,
    /// Liveness of the stages.
    pub health: Arc<Health>,
    /// The disk budget it waits for before each download.
    pub budget: Arc<DiskBudget>,
}

impl DownloadWorker {
    /// Runs until `shutdown`; a download in progress when it fires is finished first.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let worker = Worker {
            queue: self.queue.clone(),
            from: download_queue(&self.site),
            stage: "download",
            health: Some(self.health.clone()),
            gate: Some(self.budget.clone()),
        };
        worker.run(&shutdown, &mut self).await
    }

    async fn download_one(&self, claimed: Claimed<DownloadTask>) {
        let Claimed { item, ticket } = claimed;
        let started = Instant::now();
        let client = self.client.at(item.lane().download_priority());
        let (what, kind, outcome) = match &item {
            DownloadTask::Recording {
                naming, recording, ..
            } => (
                format!("recording {} of session {}", recording.label(), naming.lsid),
                "recordings",
                client.recording(*recording, &naming.lsid).await,
            ),
            DownloadTask::Backup { .. } => ("backup".to_string(), "backups", client.backup().await),
        };
        metrics::fetch_request(
            &self.site,
            kind,
            if outcome.is_ok() { "ok" } else { "error" },
            started.elapsed(),
        );
        let lane = item.lane();
        let fetched = match outcome {
            Ok(f) => f,
            Err(e) => return self.failed(ticket, &what, &lane, e).await,
        };
        metrics::downloaded_bytes(&self.site, kind, fetched.bytes());
        let mut step = HandOff::new(&lane, Step::Item(ticket.id()));
        let spools = match outputs(&mut step, &item, &fetched) {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(site = %self.site, "{what}: preparing spool files: {e}");
                remove_all(fetched.body.as_ref().map(|b| b.path.as_path()), &[]).await;
                let reason = format!("{what}: preparing spool files: {e}");
                let failed = Failed {
                    stage: "download",
                    reason: &reason,
                    retry: Retry::Later { after: None },
                    lane: &lane,
                    step: Step::Item(ticket.id()),
                    metadata: &[("stage", "download"), ("site", self.site.as_str())],
                };
                if let Err(e) = settle(&self.queue, ticket, failed, &self.retry).await {
                    tracing::error!(site = %self.site, "recording a failed download: {e}");
                }
                return;
            }
        };
        let pushed = spools.len() as u64;
        step.finish(&lane, Step::Item(ticket.id()), Finished::Other);
        match step.commit(&self.queue, vec![ticket]).await {
            Ok(_) => {
                // The per-destination links hold the data now.
                if let Some(body) = &fetched.body
                    && !spools.contains(&body.path)
                {
                    crate::durable::discard(&body.path).await;
                }
                metrics::stage_progress("download", 1, pushed, started.elapsed());
            }
            Err(e) => {
                tracing::error!(site = %self.site, "{what}: recording the download: {e}");
                remove_all(fetched.body.as_ref().map(|b| b.path.as_path()), &spools).await;
            }
        }
    }

    async fn failed(
        &self,
        ticket: crate::queue::Ticket,
        what: &str,
        lane: &Lane,
        e: ApplianceError,
    ) {
        metrics::stage_error("download");
        let attempts = ticket.attempts() + 1;
        let reason = format!("{what}: {e}");
        let failed = Failed {
            stage: "download",
            reason: &reason,
            retry: if e.is_retryable() {
                Retry::Later {
                    after: e.retry_after(),
                }
            } else {
                Retry::Never
            },
            lane,
            step: Step::Item(ticket.id()),
            metadata: &[("stage", "download"), ("site", self.site.as_str())],
        };
        match settle(&self.queue, ticket, failed, &self.retry).await {
            Ok(Settled::Retried(delay)) => {
                tracing::warn!(site = %self.site, attempts, "{reason}; retrying in {delay:?}");
            }
            Ok(Settled::DeadLettered) => {
                tracing::error!(site = %self.site, attempts, "moved to the dead letter: {reason}");
            }
            Err(e) => tracing::error!(site = %self.site, "recording a failed download: {e}"),
        }
    }
}

/// Adds to `step` the deliver items for a finished download; returns the spool files
/// they own.
fn outputs(
    step: &mut HandOff,
    task: &DownloadTask,
    fetched: &Fetched,
) -> std::io::Result<Vec<PathBuf>> {
    let mut spools = Vec::new();
    // "No data": nothing to deliver, the task is done.
    let Some(body) = &fetched.body else {
        return Ok(spools);
    };
    let destinations = match task {
        DownloadTask::Recording { destinations, .. }
        | DownloadTask::Backup { destinations, .. } => destinations,
    };
    for (i, destination) in destinations.iter().enumerate() {
        let spool = if i == 0 {
            body.path.clone()
        } else {
            let copy = body.path.with_extension(format!("{i}.part"));
            link_or_copy(&body.path, &copy)?;
            copy
        };
        let item = match task {
            DownloadTask::Recording {
                site,
                naming,
                recording,
                lane,
                ..
            } => DeliverItem::Recording {
                site: site.clone(),
                naming: naming.clone(),
                recording: *recording,
                extension: fetched.extension.clone(),
                spool: spool.clone(),
                lane: lane.clone(),
            },
            DownloadTask::Backup { site, host, .. } => DeliverItem::Backup {
                site: site.clone(),
                host: host.clone(),
                spool: spool.clone(),
            },
        };
        step.push(&deliver_queue(destination), &item)
            .map_err(std::io::Error::other)?;
        spools.push(spool);
    }
    // The hand-off names the copies: their names must be durable before it is.
    if spools.len() > 1 {
        crate::durable::sync_parent(&body.path)?;
    }
    Ok(spools)
}

/// A second name for a spool file, or a copy (fsynced) where links do not work.
fn link_or_copy(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::hard_link(from, to) {
        Ok(()) => Ok(()),
        Err(_) => {
            std::fs::copy(from, to)?;
            std::fs::File::open(to)?.sync_all()
        }
    }
}

async fn remove_all(body: Option<&Path>, spools: &[PathBuf]) {
    for p in body.into_iter().chain(spools.iter().map(PathBuf::as_path)) {
        crate::durable::discard(p).await;
    }
}

impl worker::Step<DownloadTask> for DownloadWorker {
    type Error = std::convert::Infallible;

    async fn step(&mut self, claimed: Claimed<DownloadTask>) -> Result<Progress, Self::Error> {
        self.download_one(claimed).await;
        Ok(Progress::Made)
    }
}
