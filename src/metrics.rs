//! Every metric name and label key in one place, the Prometheus exporter, and the
//! `/metrics`, `/healthz` and `/readyz` endpoints.
//!
//! The rest of the code calls the small functions below (once per batch, not per row);
//! nothing else spells a metric name. Names follow Prometheus practice: `btic_` prefix,
//! base units (`_seconds`, `_bytes`), `_total` for counters, bounded label values (site,
//! destination, schedule and queue names come from the pipeline file).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use futures::future::BoxFuture;
use metrics::{Unit, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Report requests to appliances, by `site`, `report`, `outcome`.
pub const FETCH_REQUESTS: &str = "btic_fetch_requests_total";
/// Duration of report requests, by `site`, `report`.
pub const FETCH_DURATION: &str = "btic_fetch_duration_seconds";
/// Bytes downloaded from appliances, by `site`, `kind`.
pub const DOWNLOADED_BYTES: &str = "btic_downloaded_bytes_total";
/// Items taken into a stage, by `stage`.
pub const STAGE_ITEMS_IN: &str = "btic_stage_items_in_total";
/// Items handed on by a stage, by `stage`.
pub const STAGE_ITEMS_OUT: &str = "btic_stage_items_out_total";
/// Failures in a stage, by `stage`.
pub const STAGE_ERRORS: &str = "btic_stage_errors_total";
/// Time spent on one item in a stage, by `stage`.
pub const STAGE_DURATION: &str = "btic_stage_duration_seconds";
/// Sessions parsed from report bodies, by `site`.
pub const SESSIONS_PARSED: &str = "btic_sessions_parsed_total";
/// Report bodies or sessions that failed to parse, by `site`.
pub const PARSE_ERRORS: &str = "btic_parse_errors_total";
/// Deliveries, by `destination`, `outcome` (`ok`, `retry`, `dead_letter`).
pub const DELIVERIES: &str = "btic_deliveries_total";
/// Duration of one delivery batch, by `destination`.
pub const DELIVERY_DURATION: &str = "btic_delivery_duration_seconds";
/// Retries scheduled, by `stage`.
pub const RETRIES: &str = "btic_retries_total";
/// Items waiting in a queue, by `queue`.
pub const QUEUE_DEPTH: &str = "btic_queue_depth";
/// Age of the oldest item in a queue, by `queue`.
pub const QUEUE_OLDEST_AGE: &str = "btic_queue_oldest_age_seconds";
/// Items in the dead letter, by `destination` (or `stage` when not a delivery).
pub const DEAD_LETTERS: &str = "btic_dead_letter_items";
/// Watermark in appliance time (UNIX seconds), by `site`, `kind`.
pub const WATERMARK: &str = "btic_watermark_timestamp_seconds";
/// Appliance-now minus the watermark, by `site`, `kind`.
pub const WATERMARK_LAG: &str = "btic_watermark_lag_seconds";
/// Appliance clock minus host clock, by `site`.
pub const CLOCK_SKEW: &str = "btic_appliance_clock_skew_seconds";
/// Last successful run of a schedule (UNIX seconds), by `schedule`.
pub const SCHEDULE_LAST_SUCCESS: &str = "btic_schedule_last_success_timestamp_seconds";
/// Always 1, with the `version` label.
pub const BUILD_INFO: &str = "btic_build_info";
/// Last successful request to a site (UNIX seconds, host clock), by `site`.
pub const SITE_LAST_SUCCESS: &str = "btic_site_last_success_timestamp_seconds";
/// Bytes the state directory takes on disk (queue database and spool).
pub const STATE_BYTES: &str = "btic_state_bytes";
/// Free bytes of the state directory's file system.
pub const STATE_FREE_BYTES: &str = "btic_state_free_bytes";
/// 1 while fetching and downloading are paused for the disk budget, by `reason`.
pub const PAUSED: &str = "btic_fetch_paused";

/// Sessions fetched again unchanged and not handed on again, by `site`.
pub const SESSIONS_UNCHANGED: &str = "btic_sessions_unchanged_total";
/// Requests btic sent in the rolling hour to a site's API account, by `site`.
pub const API_BUDGET_USED: &str = "btic_api_budget_used";
/// Requests left in the API account's rolling hour: the lower of btic's own count
/// (`requests_per_hour` minus used) and the appliance's `X-RateLimit-Remaining`, by `site`.
pub const API_BUDGET_REMAINING: &str = "btic_api_budget_remaining";
/// 1 while every request of the site's API account pauses after the appliance refused
/// one (HTTP 429), by `site`.
pub const API_BUDGET_PAUSED: &str = "btic_api_budget_paused";
/// Requests the appliance refused because the API account's budget was spent (HTTP
/// 429, or 503 with `Retry-After`), by `site`.
pub const API_REFUSED: &str = "btic_api_rate_limited_total";

/// Every metric name above.
pub const ALL: [&str; 29] = [
    FETCH_REQUESTS,
    FETCH_DURATION,
    DOWNLOADED_BYTES,
    STAGE_ITEMS_IN,
    STAGE_ITEMS_OUT,
    STAGE_ERRORS,
    STAGE_DURATION,
    SESSIONS_PARSED,
    PARSE_ERRORS,
    DELIVERIES,
    DELIVERY_DURATION,
    RETRIES,
    QUEUE_DEPTH,
    QUEUE_OLDEST_AGE,
    DEAD_LETTERS,
    WATERMARK,
    WATERMARK_LAG,
    CLOCK_SKEW,
    SCHEDULE_LAST_SUCCESS,
    BUILD_INFO,
    SITE_LAST_SUCCESS,
    STATE_BYTES,
    STATE_FREE_BYTES,
    PAUSED,
    SESSIONS_UNCHANGED,
    API_BUDGET_USED,
    API_BUDGET_REMAINING,
    API_BUDGET_PAUSED,
    API_REFUSED,
];

/// Label keys.
pub mod label {
    /// A `[[site]]` name.
    pub const SITE: &str = "site";
    /// A report type (`SupportSession`, ...).
    pub const REPORT: &str = "report";
    /// How a call ended.
    pub const OUTCOME: &str = "outcome";
    /// A data kind (`sessions`, `recordings`, ...).
    pub const KIND: &str = "kind";
    /// `fetch`, `parse`, `download` or `deliver`.
    pub const STAGE: &str = "stage";
    /// A `[[destination]]` name.
    pub const DESTINATION: &str = "destination";
    /// A queue name.
    pub const QUEUE: &str = "queue";
    /// A `[[schedule]]` name.
    pub const SCHEDULE: &str = "schedule";
    /// The btic version.
    pub const VERSION: &str = "version";
    /// Why fetching is paused: `state_bytes` or `free_bytes`.
    pub const REASON: &str = "reason";
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls return the same handle) and
/// describes every metric so `promtool check metrics` accepts the output.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[0.005, 0.025, 0.1, 0.25, 1.0, 2.5, 10.0, 30.0, 120.0, 600.0],
                )
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may exist in tests that embed btic; the handle still renders.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            gauge!(BUILD_INFO, label::VERSION => env!("CARGO_PKG_VERSION")).set(1.0);
            handle
        })
        .clone()
}

/// What a metric is, for its `# TYPE` and `# HELP` lines.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric with its kind, unit and help text.
const DESCRIPTIONS: [(&str, Kind, Option<Unit>, &str); 29] = [
    (
        FETCH_REQUESTS,
        Kind::Counter,
        None,
        "Report and download requests to appliances.",
    ),
    (
        FETCH_DURATION,
        Kind::Histogram,
        Some(Unit::Seconds),
        "Duration of requests to appliances.",
    ),
    (
        DOWNLOADED_BYTES,
        Kind::Counter,
        Some(Unit::Bytes),
        "Bytes downloaded from appliances.",
    ),
    (
        STAGE_ITEMS_IN,
        Kind::Counter,
        None,
        "Items taken into a stage.",
    ),
    (
        STAGE_ITEMS_OUT,
        Kind::Counter,
        None,
        "Items handed on by a stage.",
    ),
    (STAGE_ERRORS, Kind::Counter, None, "Failures in a stage."),
    (
        STAGE_DURATION,
        Kind::Histogram,
        Some(Unit::Seconds),
        "Time spent on one item in a stage.",
    ),
    (
        SESSIONS_PARSED,
        Kind::Counter,
        None,
        "Sessions parsed from report bodies.",
    ),
    (
        PARSE_ERRORS,
        Kind::Counter,
        None,
        "Report bodies or sessions that failed to parse.",
    ),
    (
        DELIVERIES,
        Kind::Counter,
        None,
        "Items delivered, retried or dead-lettered per destination.",
    ),
    (
        DELIVERY_DURATION,
        Kind::Histogram,
        Some(Unit::Seconds),
        "Duration of one delivery batch.",
    ),
    (
        RETRIES,
        Kind::Counter,
        None,
        "Retries scheduled after retryable failures.",
    ),
    (QUEUE_DEPTH, Kind::Gauge, None, "Items waiting in a queue."),
    (
        QUEUE_OLDEST_AGE,
        Kind::Gauge,
        Some(Unit::Seconds),
        "Age of the oldest item in a queue.",
    ),
    (DEAD_LETTERS, Kind::Gauge, None, "Items in the dead letter."),
    (
        WATERMARK,
        Kind::Gauge,
        Some(Unit::Seconds),
        "Watermark in appliance time (UNIX seconds).",
    ),
    (
        WATERMARK_LAG,
        Kind::Gauge,
        Some(Unit::Seconds),
        "Appliance-now minus the watermark.",
    ),
    (
        CLOCK_SKEW,
        Kind::Gauge,
        Some(Unit::Seconds),
        "Appliance clock minus host clock.",
    ),
    (
        SCHEDULE_LAST_SUCCESS,
        Kind::Gauge,
        Some(Unit::Seconds),
        "Last successful run of a schedule (UNIX seconds).",
    ),
    (
        BUILD_INFO,
        Kind::Gauge,
        None,
        "Build information; always 1.",
    ),
    (
        SITE_LAST_SUCCESS,
        Kind::Gauge,
        Some(Unit::Seconds),
        "Last successful request to a site (UNIX seconds).",
    ),
    (
        STATE_BYTES,
        Kind::Gauge,
        Some(Unit::Bytes),
        "Bytes the state directory takes on disk.",
    ),
    (
        STATE_FREE_BYTES,
        Kind::Gauge,
        Some(Unit::Bytes),
        "Free bytes of the state directory's file system.",
    ),
    (
        PAUSED,
        Kind::Gauge,
        None,
        "1 while fetching and downloading are paused for the disk budget, by reason.",
    ),
    (
        SESSIONS_UNCHANGED,
        Kind::Counter,
        None,
        "Sessions fetched again unchanged, not handed on again.",
    ),
    (
        API_BUDGET_USED,
        Kind::Gauge,
        None,
        "Requests sent in the rolling hour to the site's API account.",
    ),
    (
        API_BUDGET_REMAINING,
        Kind::Gauge,
        None,
        "Requests left in the API account's rolling hour (the lower of btic's count and the appliance's X-RateLimit-Remaining).",
    ),
    (
        API_BUDGET_PAUSED,
        Kind::Gauge,
        None,
        "1 while every request of the API account pauses after the appliance refused one.",
    ),
    (
        API_REFUSED,
        Kind::Counter,
        None,
        "Requests the appliance refused because the API account's budget was spent.",
    ),
];

fn describe() {
    metrics::with_recorder(|recorder| {
        for (name, kind, unit, help) in DESCRIPTIONS {
            match kind {
                Kind::Counter => recorder.describe_counter(name.into(), unit, help.into()),
                Kind::Gauge => recorder.describe_gauge(name.into(), unit, help.into()),
                Kind::Histogram => recorder.describe_histogram(name.into(), unit, help.into()),
            }
        }
    });
}

/// The request budget of a site's API account, at a scrape.
pub fn api_budget(site: &str, used: u32, remaining: u32, paused: bool, refused: u64) {
    gauge!(API_BUDGET_USED, label::SITE => site.to_string()).set(f64::from(used));
    gauge!(API_BUDGET_REMAINING, label::SITE => site.to_string()).set(f64::from(remaining));
    gauge!(API_BUDGET_PAUSED, label::SITE => site.to_string()).set(if paused { 1.0 } else { 0.0 });
    counter!(API_REFUSED, label::SITE => site.to_string()).absolute(refused);
}

/// One request to an appliance finished.
pub fn fetch_request(site: &str, report: &str, outcome: &str, elapsed: Duration) {
    counter!(FETCH_REQUESTS, label::SITE => site.to_string(), label::REPORT => report.to_string(), label::OUTCOME => outcome.to_string()).increment(1);
    histogram!(FETCH_DURATION, label::SITE => site.to_string(), label::REPORT => report.to_string())
        .record(elapsed.as_secs_f64());
}

/// Bytes of one kind of data arrived from a site.
pub fn downloaded_bytes(site: &str, kind: &str, bytes: u64) {
    counter!(DOWNLOADED_BYTES, label::SITE => site.to_string(), label::KIND => kind.to_string())
        .increment(bytes);
}

/// A stage took `items_in` items and handed on `items_out`, in `elapsed`.
pub fn stage_progress(stage: &str, items_in: u64, items_out: u64, elapsed: Duration) {
    counter!(STAGE_ITEMS_IN, label::STAGE => stage.to_string()).increment(items_in);
    counter!(STAGE_ITEMS_OUT, label::STAGE => stage.to_string()).increment(items_out);
    histogram!(STAGE_DURATION, label::STAGE => stage.to_string()).record(elapsed.as_secs_f64());
}

/// A stage failed on an item.
pub fn stage_error(stage: &str) {
    counter!(STAGE_ERRORS, label::STAGE => stage.to_string()).increment(1);
}

/// Sessions parsed and parse failures of one body.
pub fn parsed(site: &str, sessions: u64, errors: u64) {
    counter!(SESSIONS_PARSED, label::SITE => site.to_string()).increment(sessions);
    if errors > 0 {
        counter!(PARSE_ERRORS, label::SITE => site.to_string()).increment(errors);
    }
}

/// Sessions of one body that were fetched again unchanged and not handed on.
pub fn unchanged(site: &str, sessions: u64) {
    counter!(SESSIONS_UNCHANGED, label::SITE => site.to_string()).increment(sessions);
}

/// A delivery batch ended: `items` items with `outcome`.
pub fn delivered(destination: &str, outcome: &str, items: u64, elapsed: Duration) {
    counter!(DELIVERIES, label::DESTINATION => destination.to_string(), label::OUTCOME => outcome.to_string())
        .increment(items);
    histogram!(DELIVERY_DURATION, label::DESTINATION => destination.to_string())
        .record(elapsed.as_secs_f64());
}

/// A retry was scheduled in a stage.
pub fn retried(stage: &str) {
    counter!(RETRIES, label::STAGE => stage.to_string()).increment(1);
}

/// Depth and oldest-item age of a queue.
pub fn queue_state(queue: &str, depth: u64, oldest_age: Option<Duration>) {
    gauge!(QUEUE_DEPTH, label::QUEUE => queue.to_string()).set(depth as f64);
    gauge!(QUEUE_OLDEST_AGE, label::QUEUE => queue.to_string())
        .set(oldest_age.map_or(0.0, |a| a.as_secs_f64()));
}

/// Items in the dead letter for one destination (or stage).
pub fn dead_letters(destination: &str, items: u64) {
    gauge!(DEAD_LETTERS, label::DESTINATION => destination.to_string()).set(items as f64);
}

/// A watermark moved: its appliance-time value and its lag behind appliance-now.
pub fn watermark(site: &str, kind: &str, at_unix: i64, lag: Duration) {
    gauge!(WATERMARK, label::SITE => site.to_string(), label::KIND => kind.to_string())
        .set(at_unix as f64);
    gauge!(WATERMARK_LAG, label::SITE => site.to_string(), label::KIND => kind.to_string())
        .set(lag.as_secs_f64());
}

/// The measured appliance clock skew of a site, in seconds (appliance minus host).
pub fn clock_skew(site: &str, skew_seconds: f64) {
    gauge!(CLOCK_SKEW, label::SITE => site.to_string()).set(skew_seconds);
}

/// A schedule completed a successful run.
pub fn schedule_succeeded(schedule: &str, at_unix: i64) {
    gauge!(SCHEDULE_LAST_SUCCESS, label::SCHEDULE => schedule.to_string()).set(at_unix as f64);
}

/// When a request to each site last succeeded (UNIX seconds), as the gauge holds it, for
/// the console (the recorder cannot be read back).
static SITE_SUCCESSES: std::sync::Mutex<std::collections::BTreeMap<String, i64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// A request to a site succeeded now.
pub fn site_succeeded(site: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    gauge!(SITE_LAST_SUCCESS, label::SITE => site.to_string()).set(now.as_secs_f64().floor());
    SITE_SUCCESSES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(site.to_string(), now.as_secs() as i64);
}

/// When a request to `site` last succeeded in this process (UNIX seconds).
pub fn site_last_success(site: &str) -> Option<i64> {
    SITE_SUCCESSES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(site)
        .copied()
}

/// The state directory's size on disk and its file system's free space.
pub fn state_disk(state_bytes: u64, free_bytes: u64) {
    gauge!(STATE_BYTES).set(state_bytes as f64);
    gauge!(STATE_FREE_BYTES).set(free_bytes as f64);
}

/// Whether fetching is paused for `reason` (`state_bytes`, `free_bytes`).
pub fn paused(reason: &str, paused: bool) {
    gauge!(PAUSED, label::REASON => reason.to_string()).set(if paused { 1.0 } else { 0.0 });
}

/// Liveness and readiness of the daemon, shared by the stages and the HTTP endpoints.
#[derive(Debug)]
pub struct Health {
    ready: AtomicBool,
    stall_after: Duration,
    stages: Mutex<BTreeMap<String, StageHealth>>,
    /// Why the daemon is stopping for good (a storage failure), once it is.
    failed: Mutex<Option<String>>,
}

#[derive(Debug, Clone, Copy)]
struct StageHealth {
    pending: bool,
    last_progress: Instant,
}

impl Health {
    /// Not ready; a stage with pending work and no progress for `stall_after` is unhealthy.
    pub fn new(stall_after: Duration) -> Self {
        Health {
            ready: AtomicBool::new(false),
            stall_after,
            stages: Mutex::new(BTreeMap::new()),
            failed: Mutex::new(None),
        }
    }

    /// Ready (started) or not (starting, draining).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// The daemon cannot go on (`reason`: what failed): `/healthz` answers 503 with it.
    pub fn fail(&self, reason: &str) {
        *self.failed.lock().expect("health lock") = Some(reason.to_string());
    }

    /// Why the daemon cannot go on, if it cannot.
    pub fn failure(&self) -> Option<String> {
        self.failed.lock().expect("health lock").clone()
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// A stage finished an item (or found nothing to do).
    pub fn progress(&self, stage: &str, pending: bool) {
        let mut stages = self.stages.lock().expect("health lock");
        stages.insert(
            stage.to_string(),
            StageHealth {
                pending,
                last_progress: Instant::now(),
            },
        );
    }

    /// A stage has work waiting (without having made progress).
    pub fn pending(&self, stage: &str) {
        let mut stages = self.stages.lock().expect("health lock");
        stages
            .entry(stage.to_string())
            .and_modify(|s| s.pending = true)
            .or_insert(StageHealth {
                pending: true,
                last_progress: Instant::now(),
            });
    }

    /// Stages with pending work and no progress for longer than `stall_after`.
    pub fn stalled(&self) -> Vec<String> {
        let stages = self.stages.lock().expect("health lock");
        stages
            .iter()
            .filter(|(_, s)| s.pending && s.last_progress.elapsed() > self.stall_after)
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// Work done before each `/metrics` rendering, so that gauges read from state (queue
/// depths, say) are those of the moment of the scrape.
pub type Refresh = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// `/metrics`, `/healthz` and `/readyz`; the daemon merges its admin API into this router.
/// `refresh`, if any, runs before every `/metrics` answer.
pub fn router(handle: PrometheusHandle, health: Arc<Health>, refresh: Option<Refresh>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                let refresh = refresh.clone();
                async move {
                    if let Some(refresh) = refresh {
                        refresh().await;
                    }
                    (
                        [("content-type", "text/plain; version=0.0.4")],
                        handle.render(),
                    )
                }
            }),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(health)
}

async fn healthz(State(health): State<Arc<Health>>) -> impl IntoResponse {
    if let Some(reason) = health.failure() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("failed: {reason}\n"),
        );
    }
    let stalled = health.stalled();
    if stalled.is_empty() {
        (StatusCode::OK, "ok\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("stalled: {}\n", stalled.join(", ")),
        )
    }
}

async fn readyz(State(health): State<Arc<Health>>) -> impl IntoResponse {
    if health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_described_once() {
        let mut described: Vec<&str> = DESCRIPTIONS.iter().map(|d| d.0).collect();
        let mut all = ALL.to_vec();
        described.sort_unstable();
        all.sort_unstable();
        assert_eq!(described, all);
    }

    #[test]
    fn a_stage_with_pending_work_and_no_progress_is_stalled() {
        let health = Health::new(Duration::ZERO);
        health.progress("parse", false);
        health.pending("deliver");
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(health.stalled(), vec!["deliver".to_string()]);
        health.progress("deliver", false);
        assert!(health.stalled().is_empty());
    }

    #[test]
    fn the_dashboard_and_alerts_query_only_metrics_btic_exports() {
        for file in [
            "deploy/grafana-dashboard.json",
            "deploy/prometheus-rules.yml",
        ] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
            let text = std::fs::read_to_string(&path).unwrap();
            let mut seen = 0;
            for (i, _) in text.match_indices("btic_") {
                let name: String = text[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let base = name.strip_suffix("_bucket").unwrap_or(&name);
                assert!(ALL.contains(&base), "{file} queries unknown metric {name}");
                seen += 1;
            }
            assert!(seen > 5, "{file} names only {seen} metrics");
        }
    }

    #[tokio::test]
    async fn every_scrape_runs_the_refresh_first() {
        let handle = install();
        let scrapes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = scrapes.clone();
        let refresh: Refresh = Arc::new(move || {
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            Box::pin(async move { queue_state("refresh-test", n, None) })
        });
        let app = router(
            handle,
            Arc::new(Health::new(Duration::from_secs(60))),
            Some(refresh),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        for n in 1..=2 {
            let text = reqwest::get(format!("http://{address}/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let line = format!("btic_queue_depth{{queue=\"refresh-test\"}} {n}\n");
            assert!(text.contains(&line), "scrape {n}: {text}");
        }
        assert_eq!(scrapes.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn the_exporter_renders_described_metrics() {
        let handle = install();
        queue_state("fetched", 3, Some(Duration::from_secs(2)));
        let text = handle.render();
        assert!(
            text.contains("# HELP btic_queue_depth Items waiting in a queue."),
            "{text}"
        );
        assert!(
            text.contains("btic_queue_depth{queue=\"fetched\"} 3"),
            "{text}"
        );
        assert!(text.contains("btic_build_info{version="), "{text}");
    }
}
