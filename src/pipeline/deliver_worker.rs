//! The deliver stage: one worker per destination takes items from `deliver/<name>` and
//! writes them. SQL destinations take batches (one transaction per batch, each session
//! upserted); files destinations take one item at a time on a blocking thread. An item
//! leaves its queue only after the destination has it; retryable failures wait with
//! backoff within the retry budget, anything else goes to the dead letter with the
//! reason. A destination that is down only slows its own queue.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::backfill;
use super::items::{DeliverItem, deliver_queue};
use super::scheduler::Reachability;
use crate::config::{Destination, DestinationKind, RetryPolicy, Secret};
use crate::deliver::files::{FilesError, FilesSink};
use crate::deliver::sql::SqlSink;
use crate::metrics::{self, Health};
use crate::queue::{Changes, Claimed, Queue, QueueError, Ticket};

/// Everything a deliver worker needs.
#[derive(Debug, Clone)]
pub struct DeliverWorker {
    /// The destination.
    pub destination: Destination,
    /// Its resolved `url`, for SQL destinations that have one.
    pub url: Option<Secret>,
    /// The shared queue.
    pub queue: Queue,
    /// The retry budget.
    pub retry: RetryPolicy,
    /// Liveness of the stages.
    pub health: Arc<Health>,
    /// Whether destinations can be reached, for the scheduler's run outcomes.
    pub reachability: Arc<Reachability>,
}

impl DeliverWorker {
    fn stage(&self) -> String {
        format!("deliver/{}", self.destination.name)
    }

    /// Runs until `shutdown`; an item being written when it fires is finished first.
    pub async fn run(self, shutdown: CancellationToken) {
        match &self.destination.kind {
            DestinationKind::Sql(_) => self.run_sql(shutdown).await,
            DestinationKind::Files(files) => {
                let files = files.clone();
                self.run_files(files, shutdown).await
            }
        }
    }

    async fn run_sql(self, shutdown: CancellationToken) {
        let DestinationKind::Sql(sql) = &self.destination.kind else {
            return;
        };
        let queue_name = deliver_queue(&self.destination.name);
        let mut sink: Option<SqlSink> = None;
        let mut connect_failures = 0u32;
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return,
                c = self.queue.wait_ready::<DeliverItem>(&queue_name) => c,
            };
            let first = match first {
                Ok(c) => c,
                Err(e) => {
                    self.queue_trouble(&e).await;
                    continue;
                }
            };
            self.health.pending(&self.stage());
            if sink.is_none() {
                match SqlSink::connect(&self.destination.name, sql, self.url.as_ref()).await {
                    Ok(s) => {
                        self.reachability.set(&self.destination.name, None);
                        if connect_failures > 0 {
                            tracing::info!(destination = %self.destination.name, "connected again");
                        }
                        connect_failures = 0;
                        sink = Some(s);
                    }
                    Err(e) => {
                        // The items stay where they are; only this destination waits.
                        connect_failures += 1;
                        drop(first);
                        self.reachability
                            .set(&self.destination.name, Some(e.to_string()));
                        let delay = self.retry.delay_after(connect_failures);
                        if e.is_retryable() {
                            tracing::warn!(destination = %self.destination.name, "{e}; trying again in {delay:?}");
                        } else {
                            tracing::error!(destination = %self.destination.name, "{e}; trying again in {delay:?}");
                        }
                        metrics::stage_error("deliver");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(delay) => {},
                        }
                        continue;
                    }
                }
            }
            let mut batch = vec![first];
            // The rest of the batch in one pass over the queue (taking items one by one
            // rescans the ones already held, and costs a thread hand-off each).
            match self
                .queue
                .next_ready_many::<DeliverItem>(&queue_name, sql.batch_size.saturating_sub(1))
                .await
            {
                Ok(more) => batch.extend(more),
                Err(e) => tracing::error!("deliver/{}: {e}", self.destination.name),
            }
            let healthy = self
                .deliver_sql_batch(sink.as_ref().expect("connected above"), batch)
                .await;
            if !healthy {
                // The connection may be gone; the next batch connects afresh.
                sink = None;
            }
            self.health.progress(&self.stage(), false);
        }
    }

    /// Delivers one batch; returns false when a retryable failure suggests reconnecting.
    async fn deliver_sql_batch(&self, sink: &SqlSink, batch: Vec<Claimed<DeliverItem>>) -> bool {
        let started = Instant::now();
        let name = &self.destination.name;
        // Group by host name: one `deliver` call per site host.
        type Entry = (Ticket, crate::model::Session, Option<String>);
        let mut by_host: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        for Claimed { item, ticket } in batch {
            let job = item.backfill_job().map(str::to_string);
            match item {
                DeliverItem::Session { host, session, .. } => {
                    by_host
                        .entry(host)
                        .or_default()
                        .push((ticket, *session, job));
                }
                other => {
                    let reason =
                        format!("{} cannot go to SQL destination {name:?}", other.describe());
                    self.finish_failed(ticket, &reason, false, job.as_deref())
                        .await;
                }
            }
        }
        let mut healthy = true;
        for (host, entries) in by_host {
            let mut tickets = Vec::new();
            let mut sessions = Vec::new();
            let mut jobs = Vec::new();
            for (ticket, session, job) in entries {
                tickets.push(ticket);
                sessions.push(session);
                jobs.push(job);
            }
            let outcome = sink.deliver(&host, &sessions).await;
            let mut done = Vec::new();
            let mut finished = Changes::new();
            let (mut ok, mut failed) = (0u64, 0u64);
            for (((ticket, session), job), result) in tickets
                .into_iter()
                .zip(&sessions)
                .zip(jobs)
                .zip(outcome.sessions)
            {
                match result {
                    Ok(()) => {
                        if let Some(job) = &job
                            && let Err(e) = finished.put_state(
                                &backfill::done_key(job, ticket.id()),
                                &backfill::Finished::Session,
                            )
                        {
                            tracing::error!("deliver/{name}: recording a backfill delivery: {e}");
                        }
                        done.push(ticket);
                        ok += 1;
                    }
                    Err(e) => {
                        failed += 1;
                        healthy &= !e.is_retryable();
                        if e.is_retryable() {
                            self.reachability.set(name, Some(e.to_string()));
                        }
                        let reason = format!("session {}: {e}", session.lsid);
                        self.finish_failed(ticket, &reason, e.is_retryable(), job.as_deref())
                            .await;
                    }
                }
            }
            if !done.is_empty() {
                self.reachability.set(name, None);
                if let Err(e) = self.queue.hand_off_many(done, finished).await {
                    // Not recorded as delivered: the sessions come again, harmlessly.
                    tracing::error!("deliver/{name}: recording a delivered batch: {e}");
                }
            }
            metrics::delivered(name, "ok", ok, started.elapsed());
            metrics::stage_progress("deliver", ok + failed, ok, started.elapsed());
        }
        healthy
    }

    async fn run_files(self, files: crate::config::FilesDestination, shutdown: CancellationToken) {
        let queue_name = deliver_queue(&self.destination.name);
        let sink = loop {
            match FilesSink::open(&files) {
                Ok(s) => break Arc::new(s),
                Err(e) => {
                    self.reachability
                        .set(&self.destination.name, Some(e.to_string()));
                    tracing::error!(destination = %self.destination.name, "{e}; trying again in 30s");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(30)) => {},
                    }
                }
            }
        };
        loop {
            let claimed = tokio::select! {
                _ = shutdown.cancelled() => return,
                c = self.queue.wait_ready::<DeliverItem>(&queue_name) => c,
            };
            let Claimed { item, ticket } = match claimed {
                Ok(c) => c,
                Err(e) => {
                    self.queue_trouble(&e).await;
                    continue;
                }
            };
            self.health.pending(&self.stage());
            let started = Instant::now();
            let spool = item.spool().cloned();
            let what = item.describe();
            let job = item.backfill_job().map(str::to_string);
            let mut finished = Changes::new();
            if let Some(job) = &job {
                let kind = match &item {
                    DeliverItem::Session { .. } => backfill::Finished::Session,
                    DeliverItem::Recording { .. } => backfill::Finished::Recording,
                    DeliverItem::Backup { .. } | DeliverItem::Presentation { .. } => {
                        backfill::Finished::Other
                    }
                };
                if let Err(e) = finished.put_state(&backfill::done_key(job, ticket.id()), &kind) {
                    tracing::error!("deliver/{}: {e}", self.destination.name);
                }
            }
            let sink2 = sink.clone();
            let outcome = tokio::task::spawn_blocking(move || write_file(&sink2, item))
                .await
                .unwrap_or_else(|e| {
                    Err(FilesError::Io {
                        action: "writing",
                        path: Default::default(),
                        source: std::io::Error::other(e.to_string()),
                    })
                });
            match outcome {
                Ok(()) => match self.queue.hand_off(ticket, finished).await {
                    Ok(_) => {
                        self.reachability.set(&self.destination.name, None);
                        if let Some(spool) = spool {
                            let _ = std::fs::remove_file(spool);
                        }
                        metrics::delivered(&self.destination.name, "ok", 1, started.elapsed());
                        metrics::stage_progress("deliver", 1, 1, started.elapsed());
                    }
                    Err(e) => tracing::error!(
                        "deliver/{}: recording a delivery: {e}",
                        self.destination.name
                    ),
                },
                Err(e) => {
                    if e.is_retryable() {
                        self.reachability
                            .set(&self.destination.name, Some(e.to_string()));
                    }
                    let reason = format!("{what}: {e}");
                    self.finish_failed(ticket, &reason, e.is_retryable(), job.as_deref())
                        .await;
                }
            }
            self.health.progress(&self.stage(), false);
        }
    }

    /// Retries later within the budget, or moves to the dead letter.
    async fn finish_failed(
        &self,
        ticket: Ticket,
        reason: &str,
        retryable: bool,
        job: Option<&str>,
    ) {
        let name = &self.destination.name;
        let attempts = ticket.attempts() + 1;
        let outcome = if retryable && attempts < self.retry.max_attempts {
            let delay = self.retry.delay_after(attempts);
            tracing::warn!(destination = %name, attempts, "{reason}; retrying in {delay:?}");
            metrics::retried("deliver");
            metrics::delivered(name, "retry", 1, Duration::ZERO);
            self.queue.retry_later(ticket, reason, delay).await
        } else {
            tracing::error!(destination = %name, attempts, "moved to the dead letter: {reason}");
            metrics::delivered(name, "dead_letter", 1, Duration::ZERO);
            let metadata = vec![("stage", "deliver"), ("destination", name.as_str())];
            backfill::dead_letter(&self.queue, ticket, reason, metadata, job).await
        };
        if let Err(e) = outcome {
            tracing::error!("deliver/{name}: recording a failed delivery: {e}");
        }
    }

    async fn queue_trouble(&self, e: &QueueError) {
        tracing::error!("deliver/{}: reading the queue: {e}", self.destination.name);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn write_file(sink: &FilesSink, item: DeliverItem) -> Result<(), FilesError> {
    match item {
        DeliverItem::Session {
            host,
            session,
            raw,
            root,
            ..
        } => {
            let naming = crate::deliver::files::SessionNaming::new(&host, &session);
            sink.deliver_session(&naming, &session, &raw, &root)?;
        }
        DeliverItem::Recording {
            naming,
            recording,
            extension,
            spool,
            ..
        } => {
            sink.deliver_recording(
                &naming.for_files(),
                recording.for_files(),
                &extension,
                &spool,
            )?;
        }
        DeliverItem::Backup { host, spool, .. } => {
            sink.deliver_backup(&host, &spool)?;
        }
        DeliverItem::Presentation {
            naming, raw, root, ..
        } => {
            sink.deliver_presentation(&naming.for_files(), &raw, &root)?;
        }
    }
    Ok(())
}
