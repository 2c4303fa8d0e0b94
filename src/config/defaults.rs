//! The defaults of the pipeline file's keys, each named once. The validator takes them
//! from here, and `tests/docs.rs` holds README's table of keys to [`documented`].

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use super::units::format_duration;

const MINUTE: u64 = 60;
const DAY: u64 = 86_400;

/// `start_from`: where a watermark starts the first time, this long ago.
pub const START_FROM: Duration = Duration::from_secs(7 * DAY);
/// `metrics.listen`: loopback, so the admin API answers this host only.
pub const METRICS_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9464));
/// `console.enabled`: the console is served (to loopback peers unless a token is set).
pub const CONSOLE_ENABLED: bool = true;
/// `pipeline.overlap`: late writers' time.
pub const OVERLAP: Duration = Duration::from_secs(15 * MINUTE);
/// `pipeline.settle_lag`: a window ends this much before appliance-now.
pub const SETTLE_LAG: Duration = Duration::from_secs(2 * MINUTE);
/// `pipeline.max_window`: the longest report request.
pub const MAX_WINDOW: Duration = Duration::from_secs(DAY);
/// `pipeline.max_body_bytes`: a larger body splits its window in half.
pub const MAX_BODY_BYTES: u64 = 64 << 20;
/// `pipeline.in_progress_max_age`: sessions in progress are re-fetched until this old.
pub const IN_PROGRESS_MAX_AGE: Duration = Duration::from_secs(DAY);
/// `pipeline.stall_after`: no progress this long with work waiting turns `/healthz` to 503.
pub const STALL_AFTER: Duration = Duration::from_secs(15 * MINUTE);
/// `pipeline.min_free_bytes`: 1 GiB left free on the state directory's file system.
pub const MIN_FREE_BYTES: u64 = 1 << 30;
/// `pipeline.retry.max_attempts`.
pub const RETRY_MAX_ATTEMPTS: u32 = 10;
/// `pipeline.retry.initial`.
pub const RETRY_INITIAL: Duration = Duration::from_secs(1);
/// `pipeline.retry.max_interval`.
pub const RETRY_MAX_INTERVAL: Duration = Duration::from_secs(5 * MINUTE);
/// `site.requests_per_second`: half the 20 the vendor allows an API account.
pub const REQUESTS_PER_SECOND: f64 = 10.0;
/// `site.requests_per_hour`: two thirds of the 15,000 the vendor allows an API account,
/// so its other clients keep a third.
pub const REQUESTS_PER_HOUR: u32 = 10_000;
/// `site.max_in_flight`.
pub const MAX_IN_FLIGHT: usize = 1;
/// `site.timeout`: one whole API call.
pub const SITE_TIMEOUT: Duration = Duration::from_secs(5 * MINUTE);
/// `destination.batch_size` of SQL destinations: sessions per transaction.
pub const BATCH_SIZE: usize = 500;
/// `notify.min_interval`: at most one digest per interval.
pub const NOTIFY_MIN_INTERVAL: Duration = Duration::from_secs(15 * MINUTE);
/// `notify.failing_after`: a schedule failing this long is reported.
pub const NOTIFY_FAILING_AFTER: Duration = Duration::from_secs(15 * MINUTE);

/// Each default as README's table of keys writes it: the key, then the default cell
/// (durations in backticks as the pipeline file writes them, numbers bare).
pub fn documented() -> Vec<(&'static str, String)> {
    let duration = |d: Duration| format!("`{}`", format_duration(d));
    vec![
        ("start_from", duration(START_FROM)),
        ("metrics.listen", format!("`{METRICS_LISTEN}`")),
        ("console.enabled", CONSOLE_ENABLED.to_string()),
        ("pipeline.overlap", duration(OVERLAP)),
        ("pipeline.settle_lag", duration(SETTLE_LAG)),
        ("pipeline.max_window", duration(MAX_WINDOW)),
        ("pipeline.max_body_bytes", MAX_BODY_BYTES.to_string()),
        (
            "pipeline.in_progress_max_age",
            duration(IN_PROGRESS_MAX_AGE),
        ),
        ("pipeline.stall_after", duration(STALL_AFTER)),
        ("pipeline.min_free_bytes", MIN_FREE_BYTES.to_string()),
        (
            "pipeline.retry.max_attempts",
            RETRY_MAX_ATTEMPTS.to_string(),
        ),
        (
            "pipeline.retry.initial",
            format!(
                "{}, {}",
                duration(RETRY_INITIAL),
                duration(RETRY_MAX_INTERVAL)
            ),
        ),
        ("site.requests_per_second", REQUESTS_PER_SECOND.to_string()),
        ("site.requests_per_hour", REQUESTS_PER_HOUR.to_string()),
        ("site.max_in_flight", MAX_IN_FLIGHT.to_string()),
        ("site.timeout", duration(SITE_TIMEOUT)),
        ("destination.batch_size", BATCH_SIZE.to_string()),
        ("notify.min_interval", duration(NOTIFY_MIN_INTERVAL)),
        ("notify.failing_after", duration(NOTIFY_FAILING_AFTER)),
    ]
}
