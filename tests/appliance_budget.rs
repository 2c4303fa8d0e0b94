//! The appliance is shared: `btic run` against `btic simulate` enforcing the vendor's
//! documented limits per API account (20 a second, an hour's budget, `X-RateLimit-*`
//! headers on every answer, 429 when spent), with another client spending the same
//! account. The rolling hour is shortened for both (the simulator's
//! `--budget-hour-seconds`, btic's `BTIC_BUDGET_HOUR_SECONDS`), so an "hour" passes in
//! seconds. The oracle: the simulator's counts of what it was asked and refused, and
//! the ground truth in the files destination, each session and recording once.

mod rig;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use rig::{Daemon, Sim, eventually, free_port, json_files, other_files, pipeline, scrape};

/// The rolling "hour" of the simulator and of btic in these tests, in seconds.
const HOUR: &str = "30";

fn files_destination(dir: &Path) -> String {
    format!(
        "[[destination]]\nname = \"archive\"\ntype = \"files\"\ndirectory = \"{}\"\nformat = \"json\"\n",
        dir.join("archive").display()
    )
}

const TRANSFER: &str = "[[schedule.transfer]]\nsite = \"sim\"\ndestination = \"archive\"\ndata = [\"sessions\", \"recordings\"]\n";

/// Sets the site's budget in a rig pipeline file.
fn set_budget(config: &Path, per_second: u32, per_hour: u32, live_reserve: u32) {
    let text = std::fs::read_to_string(config).unwrap().replace(
        "requests_per_second = 15\n",
        &format!(
            "requests_per_second = {per_second}\nrequests_per_hour = {per_hour}\nlive_reserve = {live_reserve}\n"
        ),
    );
    std::fs::write(config, text).unwrap();
}

fn stat(stats: &serde_json::Value, key: &str) -> u64 {
    stats[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {stats}"))
}

/// Waits until the archive holds every session of `truth` and a recording of every
/// session in `recorded`; panics with the log otherwise.
async fn wait_for_everything(
    dir: &Path,
    sim: &Sim,
    closed_before: i64,
    log: &Path,
    limit: Duration,
) {
    let (_, truth) = sim.truth(Some(closed_before)).await;
    let recorded = sim.recorded(closed_before).await;
    assert!(!recorded.is_empty(), "the simulator recorded nothing");
    let archive = dir.join("archive");
    let done = eventually(limit, async || {
        let (sessions, _) = json_files(&archive);
        let (recordings, _) = other_files(&archive);
        truth.keys().all(|l| sessions.contains_key(l))
            && recorded
                .iter()
                .all(|l| recordings.iter().any(|name| name.contains(l.as_str())))
    })
    .await;
    let (sessions, _) = json_files(&archive);
    let (recordings, _) = other_files(&archive);
    assert!(
        done,
        "{} of {} sessions and {} recording files for {} recorded sessions; log:\n{}",
        truth.keys().filter(|l| sessions.contains_key(*l)).count(),
        truth.len(),
        recordings.len(),
        recorded.len(),
        std::fs::read_to_string(log).unwrap_or_default()
    );
    // Each once: a second copy would carry a conflict number.
    let (_, numbered) = json_files(&archive);
    let (_, numbered_recordings) = other_files(&archive);
    assert!(numbered.is_empty(), "{numbered:?}");
    assert!(numbered_recordings.is_empty(), "{numbered_recordings:?}");
}

fn dead_letters(config: &Path) -> Vec<serde_json::Value> {
    rig::dead_letters(config)
}

fn backfill(config: &Path, args: &[&str]) -> Output {
    rig::btic()
        .args(["backfill", "--config"])
        .arg(config)
        .args(["--site", "sim"])
        .args(args)
        .env("BTIC_TEST_SECRET", "demo-secret")
        .env("BTIC_BUDGET_HOUR_SECONDS", HOUR)
        .output()
        .unwrap()
}

/// A budget well below what the work needs, another client spending the account
/// beside it: btic never sends more than its budget in any rolling hour, the appliance
/// never refuses it, the other client is never refused, every session and recording
/// arrives once (the recordings wait for the next hours); and a backfill of a year with
/// recordings says before it starts how long the budget makes it take, and starts only
/// with `--yes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_below_the_work_is_never_exceeded_and_everything_arrives_once() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(
        dir.path(),
        &[
            "--days",
            "1",
            "--sessions-per-day",
            "60",
            "--recording-bytes",
            "4096",
            "--requests-per-hour",
            "60",
            "--budget-hour-seconds",
            HOUR,
            "--other-client-per-minute",
            "20",
        ],
    );
    let port = free_port();
    let config = pipeline(
        dir.path(),
        &sim,
        port,
        &files_destination(dir.path()),
        TRANSFER,
    );
    set_budget(&config, 10, 40, 6);
    let (now, _) = sim.truth(None).await;
    let log = dir.path().join("run.log");
    let started = Instant::now();
    let daemon = Daemon::start_with(&config, &log, &[("BTIC_BUDGET_HOUR_SECONDS", HOUR)]);
    wait_for_everything(dir.path(), &sim, now, &log, Duration::from_secs(300)).await;
    let took = started.elapsed();
    let metrics = scrape(port).await;
    daemon.terminate();

    let stats = sim.stats().await;
    assert_eq!(stat(&stats, "rate_limited"), 0, "btic was refused: {stats}");
    assert!(stat(&stats, "client_max_in_hour") <= 40, "{stats}");
    assert_eq!(stat(&stats, "other_refused"), 0, "{stats}");
    assert!(stat(&stats, "other_requests") > 0, "{stats}");
    // The work needed more than one hour's budget: the recordings waited.
    let sent: u64 = stats["requests"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum::<u64>()
        - stat(&stats, "other_requests");
    assert!(
        sent > 40,
        "{sent} requests: the work fits one hour: {stats}"
    );
    assert!(took > Duration::from_secs(30), "{took:?}");
    assert!(dead_letters(&config).is_empty());
    assert!(
        metrics["btic_api_budget_used{site=\"sim\"}"] <= 40.0,
        "{metrics:?}"
    );

    // A year with recordings: the estimate says how long, and nothing starts. The range
    // ends now, not at midnight: the estimate samples the range's last day, which must
    // lie inside the simulator's day of history whatever the time of day.
    let at = |t: i64| chrono::DateTime::from_timestamp(t, 0).unwrap().to_rfc3339();
    let (from, to) = (at(now - 365 * 86_400), at(now));
    let args = [
        "--from",
        &from,
        "--to",
        &to,
        "--data",
        "sessions,recordings",
    ];
    let out = backfill(&config, &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("requests to the appliance"), "{stderr}");
    assert!(
        stderr.contains("34 requests an hour for backfills"),
        "{stderr}"
    );
    assert!(
        stderr.contains("takes about") && stderr.contains("hours"),
        "{stderr}"
    );
    assert!(stderr.contains("run again with --yes"), "{stderr}");
    assert!(!stderr.contains("fetching"), "{stderr}");
}

/// Another client spends most of the account: the appliance's `X-RateLimit-Remaining`
/// drops below what btic's own count allows, and btic slows down and holds back its
/// downloads before the appliance refuses — a handful of 429s at most, nothing in the
/// dead letter, everything arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_client_spending_the_account_slows_btic_down_before_the_appliance_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(
        dir.path(),
        &[
            "--days",
            "1",
            "--sessions-per-day",
            "120",
            "--recording-bytes",
            "4096",
            "--requests-per-hour",
            "200",
            "--budget-hour-seconds",
            HOUR,
            "--other-client-per-minute",
            "240",
        ],
    );
    let port = free_port();
    let config = pipeline(
        dir.path(),
        &sim,
        port,
        &files_destination(dir.path()),
        TRANSFER,
    );
    // By its own count btic could spend 180 of the 200; the other client leaves about 80.
    set_budget(&config, 10, 180, 10);
    // Let the other client spend first.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (now, _) = sim.truth(None).await;
    let log = dir.path().join("run.log");
    let daemon = Daemon::start_with(&config, &log, &[("BTIC_BUDGET_HOUR_SECONDS", HOUR)]);
    wait_for_everything(dir.path(), &sim, now, &log, Duration::from_secs(300)).await;
    let metrics = scrape(port).await;
    daemon.terminate();

    let stats = sim.stats().await;
    let refused = stat(&stats, "rate_limited");
    assert!(refused <= 5, "{refused} refusals: {stats}");
    assert!(
        stat(&stats, "other_refused") <= 5,
        "btic took the other client's share: {stats}"
    );
    assert!(
        stat(&stats, "max_in_hour") <= 200,
        "the account was overspent: {stats}"
    );
    assert!(dead_letters(&config).is_empty());
    let left = metrics["btic_api_budget_remaining{site=\"sim\"}"];
    assert!(left < 180.0, "the appliance's count was believed: {left}");
}

/// A two-minute storm of 429s without `Retry-After`, with `max_attempts = 3`: nothing is
/// dead-lettered (a refusal pauses the account and costs no attempt), the daemon says
/// so in its gauges and resumes by itself, and every session and recording arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_minute_storm_of_429s_costs_no_attempts_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(
        dir.path(),
        &[
            "--days",
            "1",
            "--sessions-per-day",
            "150",
            "--recording-bytes",
            "4096",
        ],
    );
    let port = free_port();
    let config = pipeline(
        dir.path(),
        &sim,
        port,
        &files_destination(dir.path()),
        TRANSFER,
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("max_attempts = 4", "max_attempts = 3");
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("run.log");
    let daemon = Daemon::start(&config, &log);
    // The storm begins while the catch-up downloads recordings.
    assert!(
        eventually(Duration::from_secs(60), async || {
            other_files(&dir.path().join("archive")).0.len() >= 3
        })
        .await
    );
    sim.budget(serde_json::json!({ "storm_seconds": 120 }))
        .await;
    let storm = Instant::now();
    let paused = eventually(Duration::from_secs(30), async || {
        scrape(port)
            .await
            .get("btic_api_budget_paused{site=\"sim\"}")
            == Some(&1.0)
    })
    .await;
    assert!(
        paused,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let during = rig::scrape_text(port).await;
    println!("a scrape during the storm:");
    for line in during.lines().filter(|l| l.contains("btic_api_")) {
        println!("  {line}");
    }
    tokio::time::sleep(Duration::from_secs(120).saturating_sub(storm.elapsed())).await;
    let (now, _) = sim.truth(None).await;
    wait_for_everything(dir.path(), &sim, now, &log, Duration::from_secs(240)).await;
    let metrics = scrape(port).await;
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    daemon.terminate();

    assert!(
        dead_letters(&config).is_empty(),
        "{:?}",
        dead_letters(&config)
    );
    let stats = sim.stats().await;
    let refused = stat(&stats, "rate_limited");
    assert!(refused > 0, "{stats}");
    // Pauses double: a two-minute storm costs a few requests, not one a second.
    assert!(refused <= 20, "{refused} refusals in two minutes: {stats}");
    assert_eq!(metrics["btic_api_budget_paused{site=\"sim\"}"], 0.0);
    assert!(metrics["btic_api_rate_limited_total{site=\"sim\"}"] >= 1.0);
    // One WARN when a run of refusals begins, not one per refusal.
    let warns = log_text
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("request budget is spent"))
        .count() as u64;
    assert!(
        (1..=2).contains(&warns) && warns < refused,
        "{warns} WARNs for {refused} refusals:
{log_text}"
    );
    assert!(
        log_text.contains("the appliance takes requests again"),
        "{log_text}"
    );
}
