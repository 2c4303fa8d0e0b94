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

use super::counts;
use super::handoff::{Finished, HandOff, Step};
use super::items::{BUNDLE_SESSIONS, DeliverItem, Lane, deliver_queue};
use super::reachability::Reachability;
use super::settle::{Failed, Retry, Settled, settle};
use super::tap::{self, TapEvent};
use super::worker::{self, Progress, Worker};
use crate::config::{Destination, DestinationKind, RetryPolicy, Secret, SqlDestination};
use crate::deliver::files::{FilesError, FilesSink};
use crate::deliver::sql::{SessionRows, SqlError, SqlSink};
use crate::metrics::{self, Health};
use crate::model::{Naming, ReportRoot, Session};
use crate::queue::{Claimed, Packed, Queue, Ticket};

/// One claimed item of a SQL batch, its sessions already mapped to rows: a session, or
/// a bundle (with its site and lane, and where to find its sessions again should some
/// of them have to go on alone).
struct SqlClaim {
    ticket: Ticket,
    /// The `[[site]]` its sessions came from.
    site: String,
    lane: Lane,
    lsids: Vec<String>,
    bundle: Option<Bundle>,
}

struct Bundle {
    site: String,
    lane: Lane,
    sessions: BundleSessions,
}

/// Sessions of a batch delivered and failed, for the metrics.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    failed: u64,
}

/// An item of a batch as it was taken.
enum Taken {
    Decoded(DeliverItem),
    Packed(Packed),
}

/// A bundle's sessions: kept as decoded (the batch's first item), or as stored, to be
/// decoded again only in the rare case of a split.
enum BundleSessions {
    Kept(Vec<Session>),
    Packed(Packed),
}

impl BundleSessions {
    fn into_sessions(self) -> Result<Vec<Session>, String> {
        match self {
            BundleSessions::Kept(sessions) => Ok(sessions),
            BundleSessions::Packed(packed) => match packed.decode::<DeliverItem>() {
                Ok(DeliverItem::Sessions { sessions, .. }) => Ok(sessions),
                Ok(other) => Err(format!("{} is not a bundle", other.describe())),
                Err(e) => Err(e.to_string()),
            },
        }
    }
}

/// A SQL destination's connection and how reaching it went lately.
#[derive(Default)]
struct Connection {
    sink: Option<SqlSink>,
    /// Failed attempts since the last success.
    failures: u32,
    /// The last failure's text, so a repeat is logged quietly.
    last_error: Option<String>,
}

/// A SQL destination's step: a batch from the first item, over its connection.
struct SqlStep<'a> {
    worker: &'a DeliverWorker,
    sql: &'a SqlDestination,
    connection: Connection,
    shutdown: CancellationToken,
}

impl worker::Step<DeliverItem> for SqlStep<'_> {
    type Error = std::convert::Infallible;

    async fn step(&mut self, first: Claimed<DeliverItem>) -> Result<Progress, Self::Error> {
        let worker = self.worker;
        if self.connection.sink.is_none()
            && let Err(delay) = worker.connect(self.sql, &mut self.connection).await
        {
            // The items stay where they are; only this destination waits.
            drop(first);
            tokio::select! {
                _ = self.shutdown.cancelled() => {},
                _ = tokio::time::sleep(delay) => {},
            }
            return Ok(Progress::Blocked);
        }
        let sink = self.connection.sink.as_ref().expect("connected above");
        let more = worker.rest_of_batch(self.sql, &first).await;
        if !worker.deliver_sql_batch(sink, first, more).await {
            // The connection may be gone; the next batch connects afresh.
            self.connection.sink = None;
        }
        Ok(Progress::Made)
    }
}

/// A files destination's step: one item, written on a blocking thread.
struct FilesStep<'a> {
    worker: &'a DeliverWorker,
    sink: Arc<FilesSink>,
}

impl worker::Step<DeliverItem> for FilesStep<'_> {
    type Error = std::convert::Infallible;

    async fn step(&mut self, claimed: Claimed<DeliverItem>) -> Result<Progress, Self::Error> {
        self.worker.deliver_file(&self.sink, claimed).await;
        Ok(Progress::Made)
    }
}

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
    /// The loop over this destination's queue.
    fn worker(&self) -> Worker {
        Worker {
            queue: self.queue.clone(),
            from: deliver_queue(&self.destination.name),
            stage: "deliver",
            health: Some(self.health.clone()),
            gate: None,
        }
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
        let worker = self.worker();
        let mut step = SqlStep {
            worker: &self,
            sql,
            connection: Connection::default(),
            shutdown: shutdown.clone(),
        };
        worker.run(&shutdown, &mut step).await
    }

    /// Connects to the SQL destination; on failure records it (reachability, a log line
    /// once per reason, the stage error) and returns how long to wait.
    async fn connect(
        &self,
        sql: &SqlDestination,
        connection: &mut Connection,
    ) -> Result<(), Duration> {
        match SqlSink::connect(&self.destination.name, sql, self.url.as_ref()).await {
            Ok(sink) => {
                self.reachability.set(&self.destination.name, None);
                if connection.failures > 0 {
                    tracing::info!(destination = %self.destination.name, failures = connection.failures, "connected again");
                }
                *connection = Connection {
                    sink: Some(sink),
                    ..Connection::default()
                };
                Ok(())
            }
            Err(e) => {
                connection.failures += 1;
                self.reachability
                    .set(&self.destination.name, Some(e.to_string()));
                let delay = self.retry.delay_after(connection.failures);
                // Said once per reason; while it lasts, at debug level.
                let message = e.to_string();
                let name = &self.destination.name;
                let failures = connection.failures;
                if connection.last_error.as_deref() == Some(message.as_str()) {
                    tracing::debug!(destination = %name, failures, "{e}; trying again in {delay:?}");
                } else if e.is_retryable() {
                    tracing::warn!(destination = %name, "{e}; trying again in {delay:?} (repeats are logged at debug level)");
                } else {
                    tracing::error!(destination = %name, "{e}; trying again in {delay:?} (repeats are logged at debug level)");
                }
                connection.last_error = Some(message);
                metrics::stage_error("deliver");
                Err(delay)
            }
        }
    }

    /// The rest of the batch after `first`, up to `batch_size` sessions (reckoning full
    /// bundles), in one pass over the queue, left packed until each is mapped to rows.
    async fn rest_of_batch(
        &self,
        sql: &SqlDestination,
        first: &Claimed<DeliverItem>,
    ) -> Vec<Claimed<Packed>> {
        let sessions = first.item.session_count();
        if sessions >= sql.batch_size {
            return Vec::new();
        }
        let want = (sql.batch_size - sessions).div_ceil(BUNDLE_SESSIONS);
        match self
            .queue
            .next_ready_many_packed(&deliver_queue(&self.destination.name), want)
            .await
        {
            Ok(taken) => taken,
            Err(e) => {
                tracing::error!("deliver/{}: {e}", self.destination.name);
                Vec::new()
            }
        }
    }

    /// Delivers one batch: `first` as taken by `wait_ready`, `more` still packed. Each
    /// item is decoded, mapped to rows and dropped in turn, so the batch is never held as
    /// sessions and rows at once. Returns false when a retryable failure suggests
    /// reconnecting.
    async fn deliver_sql_batch(
        &self,
        sink: &SqlSink,
        first: Claimed<DeliverItem>,
        more: Vec<Claimed<Packed>>,
    ) -> bool {
        let started = Instant::now();
        let name = &self.destination.name;
        let mut healthy = true;
        for (host, (rows, claims)) in self.claim_batch(sink, first, more).await {
            let mut results = sink.deliver_rows(rows).await.sessions.into_iter();
            let mut done = Vec::new();
            // Nothing is created: the batch's items only finish, each in its own lane.
            let mut finished = HandOff::finishing();
            let mut tally = Tally::default();
            let mut tapped = Vec::new();
            for claim in claims {
                let outcomes: Vec<_> = results.by_ref().take(claim.lsids.len()).collect();
                let count = claim.lsids.len();
                if outcomes.iter().all(Result::is_ok) {
                    let how = match claim.bundle {
                        Some(_) => Finished::Sessions(count as u64),
                        None => Finished::Session,
                    };
                    finished.finish(&claim.lane, Step::Item(claim.ticket.id()), how);
                    if tap::listening() {
                        tapped.extend(claim.lsids.iter().map(|lsid| {
                            TapEvent::session_delivered(&claim.site, lsid, name, None)
                        }));
                    }
                    done.push(claim.ticket);
                    tally.ok += count as u64;
                    continue;
                }
                healthy &= !outcomes
                    .iter()
                    .any(|r| r.as_ref().is_err_and(|e| e.is_retryable()));
                self.settle_failed_claim(&host, claim, &outcomes, &mut tally)
                    .await;
            }
            if !done.is_empty() {
                self.reachability.set(name, None);
                match finished.commit(&self.queue, done).await {
                    Ok(_) => tap::publish(tapped),
                    // Not recorded as delivered: the sessions come again, harmlessly.
                    Err(e) => tracing::error!("deliver/{name}: recording a delivered batch: {e}"),
                }
            }
            metrics::delivered(name, "ok", tally.ok, started.elapsed());
            counts::delivered(name, tally.ok);
            let total = tally.ok + tally.failed;
            metrics::stage_progress("deliver", total, tally.ok, started.elapsed());
        }
        healthy
    }

    /// Decodes the batch's items and maps their sessions to rows, grouped by site host
    /// (one `deliver_rows` call each). An item that cannot be decoded, or that is no
    /// session, is settled at once (dead letter).
    async fn claim_batch(
        &self,
        sink: &SqlSink,
        first: Claimed<DeliverItem>,
        more: Vec<Claimed<Packed>>,
    ) -> BTreeMap<String, (Vec<SessionRows>, Vec<SqlClaim>)> {
        let name = &self.destination.name;
        let mut by_host: BTreeMap<String, (Vec<SessionRows>, Vec<SqlClaim>)> = BTreeMap::new();
        let first = std::iter::once((first.ticket, Taken::Decoded(first.item)));
        let rest = more
            .into_iter()
            .map(|Claimed { item, ticket }| (ticket, Taken::Packed(item)));
        for (ticket, taken) in first.chain(rest) {
            let (item, packed) = match taken {
                Taken::Decoded(item) => (item, None),
                Taken::Packed(packed) => match packed.decode::<DeliverItem>() {
                    Ok(item) => (item, Some(packed)),
                    Err(e) => {
                        if let Err(e) = self.queue.dead_letter_undecodable(ticket, &e).await {
                            tracing::error!("deliver/{name}: {e}");
                        }
                        continue;
                    }
                },
            };
            let lane = item.lane();
            let (site, host, sessions, bundle) = match item {
                DeliverItem::Session {
                    site,
                    host,
                    session,
                    ..
                } => (site, host, vec![*session], None),
                DeliverItem::Sessions {
                    site,
                    host,
                    sessions,
                    lane,
                } => (site.clone(), host, sessions, Some((site, lane))),
                other => {
                    let reason =
                        format!("{} cannot go to SQL destination {name:?}", other.describe());
                    self.finish_failed(ticket, &reason, false, &lane).await;
                    continue;
                }
            };
            let (rows, claims) = by_host.entry(host.clone()).or_default();
            rows.extend(sessions.iter().map(|s| sink.rows(&host, s)));
            let lsids = sessions.iter().map(|s| s.lsid.to_string()).collect();
            // A bundle taken packed is found again in its packed form; the sessions
            // themselves go now.
            let bundle = bundle.map(|(site, lane)| Bundle {
                site,
                lane,
                sessions: match packed {
                    Some(packed) => BundleSessions::Packed(packed),
                    None => BundleSessions::Kept(sessions),
                },
            });
            claims.push(SqlClaim {
                ticket,
                site,
                lane,
                lsids,
                bundle,
            });
        }
        by_host
    }

    /// Settles an item some of whose sessions failed (`outcomes`, one per session): a
    /// session, or a whole bundle that failed for a passing reason, retries within the
    /// budget or goes to the dead letter; otherwise a bundle's failed sessions go on
    /// alone and the rest counts as delivered.
    async fn settle_failed_claim(
        &self,
        host: &str,
        claim: SqlClaim,
        outcomes: &[Result<(), SqlError>],
        tally: &mut Tally,
    ) {
        let name = &self.destination.name;
        let SqlClaim {
            ticket,
            site,
            lane,
            lsids,
            bundle,
        } = claim;
        // Each session's own outcome; the item's settlement follows.
        tap::publish(lsids.iter().zip(outcomes).map(|(lsid, outcome)| {
            let error = outcome.as_ref().err().map(ToString::to_string);
            TapEvent::session_delivered(&site, lsid, name, error)
        }));
        let count = lsids.len();
        let errors: Vec<(usize, &SqlError)> = outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_ref().err().map(|e| (i, e)))
            .collect();
        let retryable = errors.iter().all(|(_, e)| e.is_retryable());
        if let Some((_, e)) = errors.iter().find(|(_, e)| e.is_retryable()) {
            self.reachability.set(name, Some(e.to_string()));
        }
        let (first, e) = errors[0];
        let reason = format!("session {}: {e}", lsids[first]);
        let bundle = match bundle {
            // A whole bundle that failed for a passing reason waits and comes again as
            // it is.
            Some(_) if retryable && errors.len() == count => {
                tally.failed += count as u64;
                return self.finish_failed(ticket, &reason, true, &lane).await;
            }
            Some(bundle) => bundle,
            None => {
                tally.failed += 1;
                return self.finish_failed(ticket, &reason, retryable, &lane).await;
            }
        };
        // Otherwise the sessions that failed go on alone (each then with its own retries
        // and, if need be, its own dead letter).
        let sessions = match bundle.sessions.into_sessions() {
            Ok(sessions) if sessions.len() == count => sessions,
            Ok(_) | Err(_) => {
                // It decoded a moment ago; should it not now, the bundle waits and
                // comes again whole.
                tally.failed += count as u64;
                return self.finish_failed(ticket, &reason, true, &lane).await;
            }
        };
        tally.failed += errors.len() as u64;
        tally.ok += (count - errors.len()) as u64;
        let alone: Vec<Session> = sessions
            .into_iter()
            .enumerate()
            .filter(|(i, _)| errors.iter().any(|(k, _)| k == i))
            .map(|(_, s)| s)
            .collect();
        tracing::warn!(
            destination = %name,
            "{} of {count} sessions of a bundle failed ({reason}); they go on one by one",
            alone.len()
        );
        self.split_bundle(ticket, &bundle.site, host, &bundle.lane, alone, count)
            .await;
    }

    /// Replaces a bundle of `count` sessions, some of which were delivered, by one item
    /// per session in `alone`, in one transaction. A backfill job counts the bundle's
    /// delivered sessions and waits for the new items.
    async fn split_bundle(
        &self,
        ticket: Ticket,
        site: &str,
        host: &str,
        lane: &Lane,
        alone: Vec<Session>,
        count: usize,
    ) {
        let name = &self.destination.name;
        let queue = deliver_queue(name);
        let delivered = (count - alone.len()) as u64;
        let mut step = HandOff::new(lane, Step::Item(ticket.id()));
        let mut outcome = Ok(());
        for session in alone {
            outcome = outcome.and_then(|()| {
                step.push(
                    &queue,
                    &DeliverItem::Session {
                        site: site.to_string(),
                        host: host.to_string(),
                        session: Box::new(session),
                        raw: Vec::new(),
                        root: ReportRoot::default(),
                        lane: lane.clone(),
                    },
                )
            });
        }
        step.finish(lane, Step::Item(ticket.id()), Finished::Sessions(delivered));
        let outcome = match outcome {
            Ok(()) => step.commit(&self.queue, vec![ticket]).await.map(drop),
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            // The bundle stays: it comes again, and the delivered sessions are upserted
            // once more, harmlessly.
            tracing::error!("deliver/{name}: splitting a bundle: {e}");
        }
    }

    async fn run_files(self, files: crate::config::FilesDestination, shutdown: CancellationToken) {
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
        let worker = self.worker();
        let mut step = FilesStep {
            worker: &self,
            sink,
        };
        worker.run(&shutdown, &mut step).await
    }

    /// Writes one item to a files destination and settles it.
    async fn deliver_file(&self, sink: &Arc<FilesSink>, claimed: Claimed<DeliverItem>) {
        let Claimed { item, ticket } = claimed;
        let started = Instant::now();
        let spool = item.spool().cloned();
        let what = item.describe();
        let lane = item.lane();
        let how = match &item {
            DeliverItem::Session { .. } => Finished::Session,
            DeliverItem::Recording { .. } => Finished::Recording,
            DeliverItem::Sessions { sessions, .. } => Finished::Sessions(sessions.len() as u64),
            DeliverItem::Presentation { .. } => Finished::Presentation,
            DeliverItem::Backup { .. } => Finished::Other,
        };
        let mut finished = HandOff::new(&lane, Step::Item(ticket.id()));
        finished.finish(&lane, Step::Item(ticket.id()), how);
        // The tap's events, built before the item goes to the writing thread.
        let tapped = match tap::listening() {
            true => TapEvent::item_delivered(&item, &self.destination.name),
            false => Vec::new(),
        };
        let sink2 = sink.clone();
        // What went wrong and whether it may pass: the write's own error, or the writing
        // thread's end (a panic), which a later attempt may not repeat.
        let outcome = match tokio::task::spawn_blocking(move || write_file(&sink2, item)).await {
            Ok(written) => written.map_err(|e| (e.to_string(), e.is_retryable())),
            Err(e) => Err((format!("the writing thread failed: {e}"), true)),
        };
        match outcome {
            Ok(()) => match finished.commit(&self.queue, vec![ticket]).await {
                Ok(_) => {
                    self.reachability.set(&self.destination.name, None);
                    if let Some(spool) = spool {
                        crate::durable::discard(&spool).await;
                    }
                    metrics::delivered(&self.destination.name, "ok", 1, started.elapsed());
                    counts::delivered(&self.destination.name, 1);
                    metrics::stage_progress("deliver", 1, 1, started.elapsed());
                    tap::publish(tapped);
                }
                Err(e) => tracing::error!(
                    "deliver/{}: recording a delivery: {e}",
                    self.destination.name
                ),
            },
            Err((error, retryable)) => {
                if retryable {
                    self.reachability
                        .set(&self.destination.name, Some(error.clone()));
                }
                tap::publish(tapped.into_iter().map(|e| e.failed(&error)));
                let reason = format!("{what}: {error}");
                self.finish_failed(ticket, &reason, retryable, &lane).await;
            }
        }
    }

    /// Retries later within the budget, or moves to the dead letter.
    async fn finish_failed(&self, ticket: Ticket, reason: &str, retryable: bool, lane: &Lane) {
        let name = &self.destination.name;
        let attempts = ticket.attempts() + 1;
        let failed = Failed {
            stage: "deliver",
            reason,
            retry: if retryable {
                Retry::Later { after: None }
            } else {
                Retry::Never
            },
            lane,
            step: Step::Item(ticket.id()),
            metadata: &[("stage", "deliver"), ("destination", name.as_str())],
        };
        match settle(&self.queue, ticket, failed, &self.retry).await {
            Ok(Settled::Retried(delay)) => {
                tracing::warn!(destination = %name, attempts, "{reason}; retrying in {delay:?}");
                metrics::delivered(name, "retry", 1, Duration::ZERO);
            }
            Ok(Settled::DeadLettered) => {
                tracing::error!(destination = %name, attempts, "moved to the dead letter: {reason}");
                metrics::delivered(name, "dead_letter", 1, Duration::ZERO);
            }
            Err(e) => tracing::error!("deliver/{name}: recording a failed delivery: {e}"),
        }
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
            let naming = Naming::of(&host, &session);
            sink.deliver_session(&naming, &session, &raw, &root)?;
        }
        DeliverItem::Recording {
            naming,
            recording,
            extension,
            spool,
            ..
        } => {
            sink.deliver_recording(&naming, recording, &extension, &spool)?;
        }
        DeliverItem::Backup { host, spool, .. } => {
            sink.deliver_backup(&host, &spool)?;
        }
        DeliverItem::Presentation {
            naming, raw, root, ..
        } => {
            sink.deliver_presentation(&naming, &raw, &root)?;
        }
        DeliverItem::Sessions { .. } => {
            // The parse stage bundles sessions for SQL destinations only.
            return Err(FilesError::InvalidName {
                item: item.describe(),
                reason: "bundles of sessions go to SQL destinations only".into(),
            });
        }
    }
    Ok(())
}
