//! Resident memory of one `btic run` (release build) through a destination outage with
//! the appliance live: a simulator with a day of `BTIC_BENCH_SESSIONS` sessions per day
//! (default 200 000) that keeps adding sessions at that rate, a PostgreSQL destination
//! behind a relay that is down for `BTIC_BENCH_OUTAGE_SECONDS` (default 600), and a disk
//! budget of `BTIC_BENCH_MAX_STATE_MIB` (default 256) so that fetching pauses during the
//! outage. `VmRSS` is sampled every 5 s; then the relay comes up and the same daemon
//! drains its backlog until PostgreSQL holds the ground truth. Prints the curve and the
//! peak (`VmHWM`) of each phase. See benches/README.md.

mod e2e_support;

#[path = "../tests/rig/relay.rs"]
mod relay;

use std::time::{Duration, Instant};

use e2e_support::{
    Daemon, Pg, Sim, env_number, free_port, load_average, mib, pipeline, queue_depths, vm_kib,
};
use relay::Relay;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sessions = env_number("BTIC_BENCH_SESSIONS", 200_000);
    let outage = Duration::from_secs(env_number("BTIC_BENCH_OUTAGE_SECONDS", 600));
    let max_state = env_number("BTIC_BENCH_MAX_STATE_MIB", 256) << 20;
    let Some(pg) = Pg::create("outage_rss").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let sim = Sim::start(dir.path(), sessions);
    let mut relay = Relay::down();
    let metrics_port = free_port();
    let config = pipeline(dir.path(), &sim, metrics_port, &relay.url(&pg.url));
    let text = std::fs::read_to_string(&config)
        .expect("the pipeline file")
        .replace(
            "[pipeline]\n",
            &format!("[pipeline]\nmax_state_bytes = {max_state}\n"),
        );
    std::fs::write(&config, text).expect("writing the pipeline file");
    let log = dir.path().join("run.log");
    let daemon = Daemon::start(&config, &log);
    let pid = daemon.pid();
    println!(
        "outage of {} s, {sessions} sessions per day, budget {} MiB; load average {}",
        outage.as_secs(),
        max_state >> 20,
        load_average()
    );
    println!("  phase     t(s)  fetched  deliver/pg  paused  VmRSS MiB  VmHWM MiB");
    let started = Instant::now();
    let mut min_rss = u64::MAX;
    let mut max_rss = 0;
    let mut paused_samples = 0;
    let mut samples = 0;
    while started.elapsed() < outage {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let depths = queue_depths(metrics_port).await;
        let rss = vm_kib(pid, "VmRSS").unwrap_or(0);
        // The first half minute is the daemon starting and the backlog arriving.
        if started.elapsed() > Duration::from_secs(30) {
            min_rss = min_rss.min(rss);
            max_rss = max_rss.max(rss);
        }
        let paused = paused(metrics_port).await;
        samples += 1;
        paused_samples += u32::from(paused);
        if samples % 6 == 0 {
            println!(
                "  outage {:>7.0} {:>8} {:>11} {:>7} {:>10} {:>10}",
                started.elapsed().as_secs_f64(),
                depths.get("fetched").copied().unwrap_or(0),
                depths.get("deliver/pg").copied().unwrap_or(0),
                paused,
                mib(rss),
                mib(vm_kib(pid, "VmHWM").unwrap_or(0)),
            );
        }
    }
    let outage_hwm = vm_kib(pid, "VmHWM").unwrap_or(0);
    let backlog = queue_depths(metrics_port)
        .await
        .get("deliver/pg")
        .copied()
        .unwrap_or(0);

    relay.up().await;
    let back = Instant::now();
    let (_, truth) = sim.settled_truth().await;
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let rows = pg.lsids().await;
        let depths = queue_depths(metrics_port).await;
        println!(
            "  drain  {:>7.0} {:>8} {:>11} {:>7} {:>10} {:>10}  ({} rows)",
            started.elapsed().as_secs_f64(),
            depths.get("fetched").copied().unwrap_or(0),
            depths.get("deliver/pg").copied().unwrap_or(0),
            paused(metrics_port).await,
            mib(vm_kib(pid, "VmRSS").unwrap_or(0)),
            mib(vm_kib(pid, "VmHWM").unwrap_or(0)),
            rows.len()
        );
        if truth.iter().all(|l| rows.contains_key(l)) || back.elapsed() > outage * 2 {
            break;
        }
    }
    let drain = back.elapsed();
    let drain_hwm = vm_kib(pid, "VmHWM").unwrap_or(0);
    let rows = pg.lsids().await;
    let delivered = truth.iter().filter(|l| rows.contains_key(*l)).count();
    let twice = rows.values().filter(|n| **n > 1).count();
    daemon.terminate();
    pg.drop_now().await;
    println!(
        "| outage | sessions per day | backlog at the end (items) | paused samples | RSS after 30 s, min–max MiB | peak RSS outage MiB | drain s | delivered / truth | twice | peak RSS whole run MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} s | {sessions} | {backlog} | {paused_samples}/{samples} | {}–{} | {} | {:.0} | {delivered}/{} | {twice} | {} |",
        outage.as_secs(),
        mib(min_rss),
        mib(max_rss),
        mib(outage_hwm),
        drain.as_secs_f64(),
        truth.len(),
        mib(drain_hwm)
    );
    println!("load average {}", load_average());
}

/// Whether `btic_fetch_paused` reads 1 for a reason.
async fn paused(metrics_port: u16) -> bool {
    let Ok(answer) = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics")).await else {
        return false;
    };
    let text = answer.text().await.unwrap_or_default();
    text.lines()
        .any(|l| l.starts_with("btic_fetch_paused{") && l.ends_with(" 1"))
}
