//! The admin API, served by the daemon on its metrics listener when that listens on
//! loopback: `status`, `replay` and `dead-letter` reach the daemon through it while it
//! holds the queue database. `Admin` is the one interface those commands use: it talks
//! to a running daemon when one answers, and opens the state directory itself when not.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::access::Access;
use super::backfill::{BackfillRequest, Backfills, Progress};
use super::items::{DeliverItem, DownloadTask, FetchTask, FetchedBody, Rejected};
use super::status::Status;
use super::tap::{self, TapEvent, TapStage};
use crate::config::{Config, ResolvedSecrets};
use crate::keys::RunRecord;
use crate::metrics::Health;
use crate::queue::{DeadLetter, DeadLetterFilter, DeadLetterItem, ItemId, Queue, QueueError};

/// What `btic replay` and `btic dead-letter discard` ask for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayRequest {
    /// One dead letter, or all (within `destination`) when `None`.
    pub id: Option<u64>,
    /// Only dead letters of this destination.
    pub destination: Option<String>,
    /// Only dead letters of this queue (`fetch/<site>`, `rejected`, ...), when no
    /// destination is given.
    #[serde(default)]
    pub queue: Option<String>,
}

/// A failed admin operation.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The queue database failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The daemon answered with an error.
    #[error("the running daemon answered: {0}")]
    Daemon(String),
    /// Talking to the daemon failed.
    #[error("talking to the running daemon at {addr}: {reason}")]
    Http {
        /// Its admin address.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// No daemon answered, and the state directory's file system is too full to open it.
    #[error(
        "the state directory {dir} cannot be opened: its file system is full ({free} bytes free; No space left on device). Nothing in it is lost: free space or grow the file system, then btic status and btic run work again"
    )]
    DiskFull {
        /// The state directory.
        dir: String,
        /// Free bytes of its file system, as measured now.
        free: String,
    },
    /// Neither a daemon answered nor could the state directory be opened.
    #[error(
        "opening the state directory {dir}: {reason} (if btic run holds it, its admin API at {addr} did not answer)"
    )]
    Unreachable {
        /// The state directory.
        dir: String,
        /// The daemon's admin address.
        addr: SocketAddr,
        /// Why opening failed.
        reason: String,
    },
}

/// The queue directory under a state directory.
pub fn queue_dir(config: &Config) -> std::path::PathBuf {
    config.state_dir.join("queue")
}

/// A dead letter as the API and the CLI show it.
pub fn letter_json(letter: &DeadLetter) -> Value {
    let time = |t: SystemTime| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339();
    json!({
        "id": letter.id.0,
        "queue": letter.queue,
        "attempts": letter.attempts,
        "first_error": letter.first_error,
        "last_error": letter.last_error,
        "first_seen": time(letter.first_seen),
        "last_tried": time(letter.last_tried),
        "metadata": letter.metadata.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        "payload_bytes": letter.payload_bytes,
    })
}

/// A dead letter with what its payload holds, decoded by the queue it came from.
pub fn item_json(item: &DeadLetterItem) -> Value {
    let queue = item.letter.queue.as_str();
    let payload = if queue.starts_with("deliver/") {
        item.decode::<DeliverItem>().map(|d| match d {
            DeliverItem::Session {
                site,
                host,
                session,
                raw,
                ..
            } => {
                let mut value = json!({"kind": "session", "site": site, "host": host,
                                       "lsid": session.lsid, "end_time": session.end_time});
                // Items for SQL and JSON-files destinations carry the parsed session
                // only; XML-files destinations' items carry the element as written.
                value["session"] = json!(session);
                if !raw.is_empty() {
                    value["xml"] = json!(String::from_utf8_lossy(&raw));
                }
                value
            }
            DeliverItem::Recording {
                site,
                naming,
                recording,
                spool,
                ..
            } => json!({"kind": "recording", "site": site, "lsid": naming.lsid,
                        "recording": recording.label(), "spool": spool}),
            DeliverItem::Backup { site, spool, .. } => {
                json!({"kind": "backup", "site": site, "spool": spool})
            }
            DeliverItem::Presentation {
                site, naming, raw, ..
            } => json!({"kind": "presentation", "site": site, "lsid": naming.lsid,
                        "xml": String::from_utf8_lossy(&raw)}),
            DeliverItem::Sessions {
                site,
                host,
                sessions,
                ..
            } => {
                let lsids: Vec<&str> = sessions.iter().map(|s| s.lsid.as_str()).collect();
                json!({"kind": "sessions", "site": site, "host": host, "lsids": lsids,
                       "sessions": sessions})
            }
        })
    } else if queue.starts_with("download/") {
        item.decode::<DownloadTask>().map(|d| match d {
            DownloadTask::Recording {
                site,
                naming,
                recording,
                destinations,
                ..
            } => json!({"kind": "recording download", "site": site, "lsid": naming.lsid,
                        "recording": recording.label(), "destinations": destinations}),
            DownloadTask::Backup {
                site, destinations, ..
            } => {
                json!({"kind": "backup download", "site": site, "destinations": destinations})
            }
        })
    } else if queue == super::items::FETCHED {
        item.decode::<FetchedBody>().map(|f| {
            json!({"kind": "report body", "site": f.site, "request": f.request,
                   "body": f.body, "bytes": f.bytes})
        })
    } else if queue.starts_with("fetch/") {
        item.decode::<FetchTask>().map(|t| {
            json!({"kind": "report request", "site": t.site, "request": t.request.to_string(),
                   "selects": t.request.describe(), "routes": t.routes.sessions,
                   "backfill": t.lane.backfill_job()})
        })
    } else if queue == super::items::REJECTED {
        item.decode::<Rejected>().map(|r| {
            json!({"kind": "rejected session", "site": r.site, "request": r.request,
                   "xml": String::from_utf8_lossy(&r.raw)})
        })
    } else {
        Ok(json!({"kind": "unknown"}))
    };
    let mut out = letter_json(&item.letter);
    out["payload"] = payload.unwrap_or_else(|e| json!({"error": e.to_string()}));
    out
}

fn filter(request: &ReplayRequest) -> DeadLetterFilter {
    match (request.id, &request.destination, &request.queue) {
        (Some(id), _, _) => DeadLetterFilter::Id(ItemId(id)),
        (None, Some(d), _) => DeadLetterFilter::Queue(super::items::deliver_queue(d)),
        (None, None, Some(q)) => DeadLetterFilter::Queue(q.clone()),
        (None, None, None) => DeadLetterFilter::All,
    }
}

/// Replays dead letters; with both an id and a destination, the id must belong to it.
pub async fn replay(queue: &Queue, request: &ReplayRequest) -> Result<u64, QueueError> {
    if let (Some(id), Some(d)) = (request.id, &request.destination) {
        let item = queue.dead_letter_show(ItemId(id)).await?;
        if item.letter.queue != super::items::deliver_queue(d) {
            return Ok(0);
        }
    }
    queue.replay(filter(request)).await
}

/// Deletes dead letters for good; with both an id and a destination, the id must belong
/// to it. An id that is no dead letter is [`QueueError::DeadLetterNotFound`]. Spool files
/// only a discarded letter named are removed by the daemon's next start.
pub async fn discard(queue: &Queue, request: &ReplayRequest) -> Result<u64, QueueError> {
    if let Some(id) = request.id {
        let item = queue.dead_letter_show(ItemId(id)).await?;
        if let Some(d) = &request.destination
            && item.letter.queue != super::items::deliver_queue(d)
        {
            return Ok(0);
        }
    }
    let discarded = queue.purge(filter(request)).await?;
    tracing::warn!(
        id = request.id,
        destination = request.destination.as_deref(),
        "{discarded} dead letter(s) discarded"
    );
    Ok(discarded)
}

/// What the admin API, and the console mounted beside it, work with.
#[derive(Clone, Debug)]
pub struct Context {
    /// The queue database.
    pub queue: Queue,
    /// The pipeline file the daemon runs.
    pub config: Arc<Config>,
    /// Its secrets, read at the start.
    pub secrets: Arc<ResolvedSecrets>,
    /// The backfill jobs.
    pub backfills: Arc<Backfills>,
    /// Who may use the listener.
    pub access: Arc<Access>,
    /// The daemon's health and readiness.
    pub health: Arc<Health>,
    /// The last hours, sampled.
    pub trends: Arc<super::trends::Trends>,
    /// Cancelled when the listener stops: endless answers (the tap) end then.
    pub stop: CancellationToken,
}

/// The admin routes, to be merged into the metrics router.
pub fn router(context: Context) -> Router {
    Router::new()
        .route("/admin/status", get(status_handler))
        .route("/admin/history", get(history_handler))
        .route("/admin/dead-letters", get(list_handler))
        .route("/admin/dead-letters/{id}", get(show_handler))
        .route("/admin/replay", post(replay_handler))
        .route("/admin/discard", post(discard_handler))
        .route("/admin/tap", get(tap_handler))
        .route("/admin/backfill", post(backfill_start_handler))
        .route("/admin/backfill/{id}", get(backfill_progress_handler))
        .with_state(context)
}

/// `POST /admin/backfill` with a `BackfillRequest`: starts (or joins) the job and
/// answers `{"job": id}`.
async fn backfill_start_handler(
    State(s): State<Context>,
    axum::Json(request): axum::Json<BackfillRequest>,
) -> Response {
    match s.backfills.start(request) {
        Ok(job) => axum::Json(json!({ "job": job })).into_response(),
        Err(e) => failure(e, StatusCode::BAD_REQUEST),
    }
}

/// `GET /admin/backfill/{id}`: the job's `Progress`.
async fn backfill_progress_handler(State(s): State<Context>, Path(id): Path<String>) -> Response {
    match s.backfills.progress(&id).await {
        Ok(p) => axum::Json(p).into_response(),
        Err(e) => failure(e, StatusCode::INTERNAL_SERVER_ERROR),
    }
}

fn failure(e: impl std::fmt::Display, code: StatusCode) -> Response {
    (code, e.to_string()).into_response()
}

async fn status_handler(State(s): State<Context>) -> Response {
    // The budgets as the clients count them now, not as last written.
    if let Err(e) = super::accounts::record_all(&s.queue, &s.backfills.fetchers).await {
        return failure(e, StatusCode::INTERNAL_SERVER_ERROR);
    }
    match Status::gather(&s.config, &s.queue, true).await {
        Ok(status) => axum::Json(status).into_response(),
        Err(e) => failure(e, StatusCode::INTERNAL_SERVER_ERROR),
    }
}

async fn history_handler(State(s): State<Context>) -> Response {
    match super::history::list(&s.queue).await {
        Ok(runs) => axum::Json(runs).into_response(),
        Err(e) => failure(e, StatusCode::INTERNAL_SERVER_ERROR),
    }
}

async fn list_handler(State(s): State<Context>) -> Response {
    match s.queue.dead_letters(DeadLetterFilter::All).await {
        Ok(list) => axum::Json(list.iter().map(letter_json).collect::<Vec<_>>()).into_response(),
        Err(e) => failure(e, StatusCode::INTERNAL_SERVER_ERROR),
    }
}

async fn show_handler(State(s): State<Context>, Path(id): Path<u64>) -> Response {
    match s.queue.dead_letter_show(ItemId(id)).await {
        Ok(item) => axum::Json(item_json(&item)).into_response(),
        Err(e @ QueueError::DeadLetterNotFound { .. }) => failure(e, StatusCode::NOT_FOUND),
        Err(e) => failure(e, StatusCode::INTERNAL_SERVER_ERROR),
    }
}

async fn replay_handler(
    State(s): State<Context>,
    axum::Json(request): axum::Json<ReplayRequest>,
) -> Response {
    counted("replayed", replay(&s.queue, &request).await)
}

/// Which of the tap's events `GET /admin/tap` streams.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TapFilter {
    /// Only this `[[site]]`'s.
    pub site: Option<String>,
    /// Only this stage's.
    pub stage: Option<TapStage>,
}

impl TapFilter {
    /// Whether `event` is of the site and stage asked for.
    pub fn passes(&self, event: &TapEvent) -> bool {
        self.site.as_ref().is_none_or(|s| *s == event.site)
            && self.stage.is_none_or(|s| s == event.stage)
    }
}

/// The tap's events that pass `filter`, from now on, each as one JSON text, until
/// `stop`; a reader that fell behind gets `{"missed": n}`. `GET /admin/tap` and the
/// console's tap page both stream these.
pub fn tap_lines(
    filter: TapFilter,
    stop: CancellationToken,
) -> impl futures::Stream<Item = String> + Send + 'static {
    let events = tap::subscribe();
    futures::stream::unfold(
        (events, filter, stop),
        |(mut events, filter, stop)| async move {
            loop {
                let event = tokio::select! {
                    _ = stop.cancelled() => return None,
                    event = events.recv() => event,
                };
                let line = match event {
                    Ok(event) if filter.passes(&event) => serde_json::to_string(&event)
                        .unwrap_or_else(|e| json!({ "error": e.to_string() }).to_string()),
                    Ok(_) => continue,
                    Err(RecvError::Lagged(n)) => json!({ "missed": n }).to_string(),
                    Err(RecvError::Closed) => return None,
                };
                return Some((line, (events, filter, stop)));
            }
        },
    )
}

/// `GET /admin/tap[?site=S][&stage=parse|deliver]`: [`tap_lines`] as JSON Lines.
async fn tap_handler(State(s): State<Context>, Query(filter): Query<TapFilter>) -> Response {
    use futures::StreamExt as _;
    let lines = tap_lines(filter, s.stop)
        .map(|line| Ok::<_, std::convert::Infallible>(format!("{line}\n")));
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(lines),
    )
        .into_response()
}

async fn discard_handler(
    State(s): State<Context>,
    axum::Json(request): axum::Json<ReplayRequest>,
) -> Response {
    counted("discarded", discard(&s.queue, &request).await)
}

/// `{"<what>": n}`, or the error: 404 for a dead letter that does not exist.
fn counted(what: &str, outcome: Result<u64, QueueError>) -> Response {
    match outcome {
        Ok(n) => axum::Json(json!({ what: n })).into_response(),
        Err(e @ QueueError::DeadLetterNotFound { .. }) => failure(e, StatusCode::NOT_FOUND),
        Err(e) => failure(e, StatusCode::INTERNAL_SERVER_ERROR),
    }
}

/// How the commands reach the state: the daemon's API, or the queue database itself.
#[derive(Debug)]
pub enum Admin {
    /// A running daemon answers at this address.
    Daemon(SocketAddr, reqwest::Client),
    /// No daemon: the state directory is open in this process.
    Direct(Queue, Arc<Config>),
}

impl Admin {
    /// Asks the daemon first; opens the state directory if none answers.
    pub async fn connect(config: Arc<Config>) -> Result<Admin, AdminError> {
        let addr = super::access::local_address(config.metrics.listen);
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| AdminError::Http {
                addr,
                reason: e.to_string(),
            })?;
        if super::access::is_loopback(addr.ip()) {
            let probe = client
                .get(format!("http://{addr}/admin/status"))
                .send()
                .await;
            if matches!(&probe, Ok(r) if r.status().is_success()) {
                return Ok(Admin::Daemon(addr, client));
            }
        }
        let dir = queue_dir(&config);
        let queue = Queue::open(&dir).map_err(|e| {
            let dir = config.state_dir.display().to_string();
            if e.is_disk_full() {
                let free = super::budget::measure(&config.state_dir)
                    .map_or_else(|_| "unknown".to_string(), |m| m.free_bytes.to_string());
                AdminError::DiskFull { dir, free }
            } else {
                AdminError::Unreachable {
                    dir,
                    addr,
                    reason: e.to_string(),
                }
            }
        })?;
        Ok(Admin::Direct(queue, config))
    }

    async fn get(
        addr: &SocketAddr,
        client: &reqwest::Client,
        path: &str,
    ) -> Result<Value, AdminError> {
        Self::send(addr, client.get(format!("http://{addr}{path}"))).await
    }

    async fn post(
        addr: &SocketAddr,
        client: &reqwest::Client,
        path: &str,
        body: &impl Serialize,
    ) -> Result<Value, AdminError> {
        Self::send(addr, client.post(format!("http://{addr}{path}")).json(body)).await
    }

    /// Sends one admin request; a non-success status is the daemon's error text.
    async fn send(
        addr: &SocketAddr,
        request: reqwest::RequestBuilder,
    ) -> Result<Value, AdminError> {
        let http = |e: reqwest::Error| AdminError::Http {
            addr: *addr,
            reason: e.to_string(),
        };
        let response = request.send().await.map_err(http)?;
        if !response.status().is_success() {
            return Err(AdminError::Daemon(
                response.text().await.unwrap_or_default(),
            ));
        }
        response.json().await.map_err(http)
    }

    /// The status.
    pub async fn status(&self) -> Result<Status, AdminError> {
        match self {
            Admin::Direct(queue, config) => Ok(Status::gather(config, queue, false).await?),
            Admin::Daemon(addr, client) => {
                serde_json::from_value(Self::get(addr, client, "/admin/status").await?)
                    .map_err(|e| AdminError::Daemon(e.to_string()))
            }
        }
    }

    /// The last runs of schedules and backfill jobs, newest first.
    pub async fn history(&self) -> Result<Vec<RunRecord>, AdminError> {
        match self {
            Admin::Direct(queue, _) => Ok(super::history::list(queue).await?),
            Admin::Daemon(addr, client) => {
                serde_json::from_value(Self::get(addr, client, "/admin/history").await?)
                    .map_err(|e| AdminError::Daemon(e.to_string()))
            }
        }
    }

    /// Every dead letter, as JSON objects.
    pub async fn dead_letters(&self) -> Result<Vec<Value>, AdminError> {
        match self {
            Admin::Direct(queue, _) => Ok(queue
                .dead_letters(DeadLetterFilter::All)
                .await?
                .iter()
                .map(letter_json)
                .collect()),
            Admin::Daemon(addr, client) => {
                serde_json::from_value(Self::get(addr, client, "/admin/dead-letters").await?)
                    .map_err(|e| AdminError::Daemon(e.to_string()))
            }
        }
    }

    /// One dead letter with its payload.
    pub async fn dead_letter(&self, id: u64) -> Result<Value, AdminError> {
        match self {
            Admin::Direct(queue, _) => Ok(item_json(&queue.dead_letter_show(ItemId(id)).await?)),
            Admin::Daemon(addr, client) => {
                Self::get(addr, client, &format!("/admin/dead-letters/{id}")).await
            }
        }
    }

    /// Moves dead letters back to their queues; returns how many.
    pub async fn replay(&self, request: &ReplayRequest) -> Result<u64, AdminError> {
        match self {
            Admin::Direct(queue, _) => Ok(replay(queue, request).await?),
            Admin::Daemon(addr, client) => {
                let v = Self::post(addr, client, "/admin/replay", request).await?;
                Ok(v["replayed"].as_u64().unwrap_or(0))
            }
        }
    }

    /// Deletes dead letters for good; returns how many.
    pub async fn discard(&self, request: &ReplayRequest) -> Result<u64, AdminError> {
        match self {
            Admin::Direct(queue, _) => Ok(discard(queue, request).await?),
            Admin::Daemon(addr, client) => {
                let v = Self::post(addr, client, "/admin/discard", request).await?;
                Ok(v["discarded"].as_u64().unwrap_or(0))
            }
        }
    }

    /// Asks the daemon to start (or join) a backfill job; returns its id.
    pub async fn backfill_start(
        addr: &SocketAddr,
        client: &reqwest::Client,
        request: &BackfillRequest,
    ) -> Result<String, AdminError> {
        let v = Self::post(addr, client, "/admin/backfill", request).await?;
        Ok(v["job"].as_str().unwrap_or_default().to_string())
    }

    /// Where a backfill job the daemon runs stands.
    pub async fn backfill_progress(
        addr: &SocketAddr,
        client: &reqwest::Client,
        job: &str,
    ) -> Result<Progress, AdminError> {
        serde_json::from_value(Self::get(addr, client, &format!("/admin/backfill/{job}")).await?)
            .map_err(|e| AdminError::Daemon(e.to_string()))
    }

    /// Closes the state directory (flushing) when it was opened here.
    pub async fn close(self) -> Result<(), AdminError> {
        if let Admin::Direct(queue, _) = self {
            queue.close().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tap_filter_passes_its_site_and_stage_only() {
        let event = TapEvent::session_delivered("main", "a", "pg", None);
        let filter = |site: Option<&str>, stage| TapFilter {
            site: site.map(str::to_string),
            stage,
        };
        assert!(filter(None, None).passes(&event));
        assert!(filter(Some("main"), Some(TapStage::Deliver)).passes(&event));
        assert!(!filter(Some("other"), None).passes(&event));
        assert!(!filter(None, Some(TapStage::Parse)).passes(&event));
    }
}
