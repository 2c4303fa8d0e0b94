//! `btic run`: opens the state directory, starts the stage workers (`stages`), the
//! scheduler, the gauge updater and the metrics/admin listener, and stops them all when
//! the shutdown token fires.
//!
//! Besides the stage workers, one scheduler, one gauge updater, one notifier task
//! (`notify::Notifications`, when the file has `[[notify]]`) and one HTTP server. Each
//! task ends when `shutdown` is cancelled, after finishing the item it holds (its hand-off
//! either happens whole or not at all), and the daemon waits for them at most `DRAIN`
//! before it flushes the queue and returns.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use super::access::{self, Access};
use super::accounts;
use super::admin::{self, queue_dir};
use super::backfill::Backfills;
use super::budget::{DiskBudget, Pause};
use super::gauges::Gauges;
use super::items::{DeliverItem, FETCHED, FetchedBody, deliver_queue};
use super::reachability::Reachability;
use super::scheduler::Scheduler;
use super::stages::{self, Scope, Stages};
use super::trends::Trends;
use crate::config::Config;
use crate::config::EventClass;
use crate::metrics::{self, Health};
use crate::notify::NotifyHandle;
use crate::queue::Queue;

/// How long stage workers get to finish their items after shutdown is asked for.
pub const DRAIN: Duration = Duration::from_secs(8);

/// Why the daemon could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The pipeline file's secrets could not be read (each error names its key).
    #[error("{0}")]
    Secrets(#[from] crate::config::ConfigErrors),
    /// The state directory could not be prepared.
    #[error("preparing the state directory {path}: {reason}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The metrics listener could not be opened.
    #[error("listening on {addr} for metrics: {reason}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        reason: String,
    },
    /// The state directory refused a write or an fsync: the daemon stopped.
    #[error("the state directory {path} refused a write or an fsync: {reason}")]
    Storage {
        /// The state directory.
        path: PathBuf,
        /// What the queue said.
        reason: String,
    },
    /// The stage workers could not start (a site's client could not be set up).
    #[error(transparent)]
    Stages(#[from] stages::StartError),
    /// A notifier could not be set up.
    #[error(transparent)]
    Notify(#[from] crate::notify::NotifyError),
}

/// The spool directory under a state directory.
pub fn spool_dir(config: &Config) -> PathBuf {
    config.state_dir.join("spool")
}

/// What runs while the daemon does: the tasks to drain at shutdown, the notifier's
/// handle and the HTTP server.
struct Running {
    tasks: tokio::task::JoinSet<()>,
    notify: NotifyHandle,
    server: tokio::task::JoinHandle<()>,
    server_stop: CancellationToken,
}

/// What mounts the operator's console beside the admin API (the console lives above
/// `pipeline`, so the caller hands it in).
pub type Console = fn(admin::Context) -> axum::Router;

/// Runs the daemon until `shutdown` fires: opens the state, starts everything, waits
/// for the shutdown (or a disk that refuses a write), drains. `console` is served at
/// `/` unless `[console] enabled = false`.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    console: Option<Console>,
) -> Result<(), RunError> {
    let config = Arc::new(config);
    let secrets = config.resolve_secrets()?;
    let (queue, spool) = open_state(&config)?;
    let handle = metrics::install();
    let health = Arc::new(Health::new(config.pipeline.stall_after));
    let listener = tokio::net::TcpListener::bind(config.metrics.listen)
        .await
        .map_err(|e| RunError::Listen {
            addr: config.metrics.listen,
            reason: e.to_string(),
        })?;
    let shared = stages::Shared {
        config: config.clone(),
        secrets: Arc::new(secrets),
        queue: queue.clone(),
        health: health.clone(),
        reachability: Arc::new(Reachability::default()),
        budget: DiskBudget::of(&config),
    };
    let stop = CancellationToken::new();
    let running = start(&shared, &spool, (listener, handle, console), &stop).await?;

    health.set_ready(true);
    tracing::info!(
        sites = config.sites.len(),
        destinations = config.destinations.len(),
        schedules = config.schedules.len(),
        metrics = %config.metrics.listen,
        "btic is running"
    );
    // A write or fsync the disk refuses stops the daemon: nothing could be called
    // durable any more. The state is intact as of the last fsync; the next start resumes.
    let failure = tokio::select! {
        _ = shutdown.cancelled() => None,
        reason = queue.storage_failed() => Some(reason),
    };
    if let Some(reason) = &failure {
        tracing::error!(
            state_dir = %config.state_dir.display(),
            "the state directory {} refused a write or an fsync ({reason}); stopping (systemd restarts btic; nothing is lost up to the last fsync, free space or fix the disk and it resumes)",
            config.state_dir.display()
        );
        health.fail(reason);
        running
            .notify
            .raise(crate::notify::Event::storage_fail_stop(
                config.state_dir.display().to_string(),
                reason.clone(),
            ));
    }
    tracing::info!("shutting down: finishing the items in hand");
    health.set_ready(false);
    stop.cancel();
    drain(running, queue).await;
    tracing::info!("stopped");
    match failure {
        Some(reason) => Err(RunError::Storage {
            path: config.state_dir.clone(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Creates the spool, opens the queue and sweeps, in the background, the spool files a
/// crash left behind (so a restart with a long backlog starts working at once).
fn open_state(config: &Config) -> Result<(Queue, PathBuf), RunError> {
    let state_err = |path: &Path, reason: String| RunError::StateDir {
        path: path.to_path_buf(),
        reason,
    };
    let spool = spool_dir(config);
    crate::durable::create_dir_all(&spool).map_err(|e| state_err(&spool, e.to_string()))?;
    let queue =
        Queue::open(queue_dir(config)).map_err(|e| state_err(&config.state_dir, e.to_string()))?;
    let started = std::time::SystemTime::now();
    // Only these queues' items (and dead letters) can own a spool file: report bodies,
    // and recordings and backups on their way to a files destination.
    let owners: BTreeSet<String> = std::iter::once(FETCHED.to_string())
        .chain(
            config
                .destinations
                .iter()
                .filter(|d| d.owns_spool_files())
                .map(|d| deliver_queue(&d.name)),
        )
        .collect();
    tokio::spawn({
        let (queue, spool) = (queue.clone(), spool.clone());
        async move { sweep_spool(&queue, &spool, owners, started).await }
    });
    Ok((queue, spool))
}

/// Starts the stage workers, the backfill jobs left unfinished, the API budgets'
/// keeper, the metrics/admin server, the gauges, the notifier, the disk budget's
/// monitor and the scheduler; all stop on `stop`.
async fn start(
    shared: &stages::Shared,
    spool: &Path,
    (listener, handle, console): (tokio::net::TcpListener, PrometheusHandle, Option<Console>),
    stop: &CancellationToken,
) -> Result<Running, RunError> {
    let (config, queue, health) = (&shared.config, &shared.queue, &shared.health);
    let Stages {
        fetch: fetchers,
        mut tasks,
    } = stages::start(shared, Scope::All, spool, stop)?;
    let backfills = Arc::new(Backfills {
        queue: queue.clone(),
        config: config.clone(),
        fetchers: fetchers.clone(),
        stop: stop.clone(),
        jobs: Default::default(),
        cancels: Default::default(),
    });
    // The requests of the last hour, as recorded before a restart, still count.
    if let Err(e) = accounts::restore(queue, &fetchers).await {
        tracing::warn!("reading the API budgets recorded before the restart: {e}");
    }
    tasks.spawn(accounts::keep(
        queue.clone(),
        fetchers.clone(),
        stop.clone(),
    ));
    if let Err(e) = backfills.resume_unfinished().await {
        tracing::error!("looking for unfinished backfill jobs: {e}");
    }
    // The gauges are computed at every scrape (and every 5 s for health).
    let gauges = Arc::new(Gauges::new(queue.clone(), config, fetchers.clone()));
    let trends = Arc::new(Trends::default());
    tasks.spawn(
        trends
            .clone()
            .run(queue.clone(), config.clone(), stop.clone()),
    );
    let (server, server_stop) = serve(
        shared,
        (listener, handle, console),
        gauges.clone(),
        (backfills, trends),
    );
    tasks.spawn(update_gauges(
        gauges,
        health.clone(),
        config.pipeline.stall_after,
        stop.clone(),
    ));
    // It only reads what the stages record; its handle is how the disk budget reports
    // its condition and a storage failure raises the fail-stop.
    let notifications =
        crate::notify::Notifications::new(config, &shared.secrets, queue.clone(), health.clone())?;
    let notify = notifications.handle();
    tasks.spawn(notifications.run(stop.clone()));
    tasks.spawn(watch_disk(shared, notify.clone(), stop.clone()));
    let scheduler = Scheduler {
        config: config.clone(),
        fetchers,
        queue: queue.clone(),
        reachability: shared.reachability.clone(),
    };
    tasks.spawn(scheduler.run(stop.clone()));
    Ok(Running {
        tasks,
        notify,
        server,
        server_stop,
    })
}

/// Serves `/metrics`, `/healthz`, `/readyz`, the admin API and the console (the last two
/// to the peers `access` admits) until the returned token is cancelled.
fn serve(
    shared: &stages::Shared,
    (listener, handle, console): (tokio::net::TcpListener, PrometheusHandle, Option<Console>),
    gauges: Arc<Gauges>,
    (backfills, trends): (Arc<Backfills>, Arc<Trends>),
) -> (tokio::task::JoinHandle<()>, CancellationToken) {
    let refresh: metrics::Refresh = Arc::new(move || {
        let gauges = gauges.clone();
        Box::pin(async move {
            gauges.publish().await;
        })
    });
    let server_stop = CancellationToken::new();
    let config = &shared.config;
    let access = Arc::new(Access::new(shared.secrets.console_token.clone()));
    let context = admin::Context {
        queue: shared.queue.clone(),
        config: config.clone(),
        secrets: shared.secrets.clone(),
        backfills,
        access: access.clone(),
        health: shared.health.clone(),
        trends,
        stop: server_stop.clone(),
    };
    let mut router = metrics::router(handle, shared.health.clone(), Some(refresh))
        .merge(admin::router(context.clone()));
    if let Some(mount) = console.filter(|_| config.console.enabled) {
        router = router.merge(mount(context));
    }
    if !access::is_loopback(config.metrics.listen.ip()) && !access.has_token() {
        tracing::warn!(
            listen = %config.metrics.listen,
            "the console and the admin API answer this host (loopback) only: set [console] token to admit other hosts; /metrics, /healthz and /readyz answer everyone"
        );
    }
    let router = router.layer(axum::middleware::from_fn_with_state(access, access::guard));
    let stop = server_stop.clone();
    let server = tokio::spawn(async move {
        let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
        let _ = axum::serve(listener, service)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
    (server, server_stop)
}

/// The disk budget's monitor, reporting each change of its verdict as the notifier's
/// condition.
fn watch_disk(
    shared: &stages::Shared,
    notify: NotifyHandle,
    stop: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    shared.budget.clone().monitor(shared.queue.clone(), stop, move |paused, m| {
        let detail = paused.map(|p| match p {
            Pause::StateBytes => format!(
                "the state directory takes {} bytes, over pipeline.max_state_bytes: fetching and downloading pause until the backlog drains",
                m.state_bytes
            ),
            Pause::FreeBytes => format!(
                "its file system has {} bytes free, under pipeline.min_free_bytes: fetching and downloading pause",
                m.free_bytes
            ),
        });
        notify.condition(EventClass::DiskBudget, "state directory", detail.as_deref());
    })
}

/// Gives the tasks `DRAIN` to finish the items in hand (the rest stays queued), stops
/// the server and flushes the queue.
async fn drain(running: Running, queue: Queue) {
    let Running {
        mut tasks,
        server,
        server_stop,
        ..
    } = running;
    let drained =
        tokio::time::timeout(DRAIN, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            "stage workers still busy after {DRAIN:?}; their items stay queued and are redone at the next start"
        );
        tasks.abort_all();
    }
    server_stop.cancel();
    let _ = server.await;
    if let Err(e) = queue.close().await {
        tracing::error!("flushing the queue at shutdown: {e}");
    }
}

/// Publishes the gauges every few seconds and judges the stages' health from the depths.
async fn update_gauges(
    gauges: Arc<Gauges>,
    health: Arc<Health>,
    stall_after: Duration,
    shutdown: CancellationToken,
) {
    // Logged once each time the set of stalled queues changes, not every round.
    let mut reported_stalled: Vec<String> = Vec::new();
    loop {
        for q in gauges.publish().await {
            // Health is kept per queue, under the names the stage workers report
            // progress with; a queue nobody reports on (`rejected`) is not judged.
            if q.depth > 0 && q.name != super::items::REJECTED {
                health.pending(&q.name);
            }
        }
        let stalled = health.stalled();
        if stalled != reported_stalled && !stalled.is_empty() {
            tracing::error!(
                queues = %stalled.join(", "),
                "work is waiting and its stage has made no progress for {}s (pipeline.stall_after); /healthz answers 503",
                stall_after.as_secs()
            );
        }
        reported_stalled = stalled;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// Removes spool files no queue item or dead letter refers to: left behind by a crash
/// between a hand-off and the file's removal, or by a download that was never recorded.
/// Only files last modified before `started` are candidates: the stages running
/// meanwhile create new files, and every item that refers to an older file existed
/// before the scan began.
async fn sweep_spool(
    queue: &Queue,
    spool: &Path,
    owners: BTreeSet<String>,
    started: std::time::SystemTime,
) {
    let referenced = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let seen = referenced.clone();
    let report = queue
        .visit_items(
            move |name| owners.contains(name),
            move |entry| {
                let path = if entry.queue == FETCHED {
                    entry.decode::<FetchedBody>().ok().map(|f| f.body)
                } else {
                    entry
                        .decode::<DeliverItem>()
                        .ok()
                        .and_then(|d| d.spool().cloned())
                };
                if let Some(p) = path {
                    seen.lock().expect("sweep lock").insert(p);
                }
            },
        )
        .await;
    if let Err(e) = report {
        tracing::warn!("checking the queue before sweeping the spool: {e}");
        return;
    }
    let referenced = referenced.lock().expect("sweep lock").clone();
    let Ok(entries) = std::fs::read_dir(spool) else {
        return;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|modified| modified < started);
        if old
            && path.is_file()
            && !referenced.contains(&path)
            && std::fs::remove_file(&path).is_ok()
        {
            removed += 1;
        }
    }
    if removed > 0 {
        if let Err(e) = crate::durable::sync_dir(spool) {
            tracing::warn!("syncing {}: {e}", spool.display());
        }
        tracing::info!(removed, "removed spool files no queue item refers to");
    }
}
