//! Peak resident memory of `btic run` (release build) holding a backlog and draining it.
//! For each size in `BTIC_BENCH_BACKLOG` (default `10000,1000000`): a simulator with one
//! day of that many sessions, a daemon whose PostgreSQL destination points at a closed
//! port, so every session waits in `deliver/pg`; its `VmHWM` while the backlog builds
//! (at most `BTIC_BENCH_FILL_SECONDS`, default 900) and is held; then a new daemon on the
//! same state directory with a reachable database, and its `VmHWM` until the database
//! holds the ground truth's sessions. Prints the RSS curve and a table. See benches/README.md.

mod e2e_support;

use std::time::{Duration, Instant};

use e2e_support::{
    Daemon, Pg, Sim, env_number, free_port, load_average, mib, open_sessions_and_requests,
    pipeline, queue_depths, sessions_parsed, vm_kib,
};

const CLOSED_PORT_URL: &str = "postgres://postgres@127.0.0.1:1/unreachable";

#[derive(Debug)]
struct Outcome {
    size: u64,
    truth: usize,
    backlog: u64,
    sessions: u64,
    fill: Duration,
    hold_hwm: u64,
    drained: i64,
    drain: Duration,
    drain_hwm: u64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sizes: Vec<u64> = std::env::var("BTIC_BENCH_BACKLOG")
        .unwrap_or_else(|_| "10000,1000000".into())
        .split(',')
        .filter_map(|s| s.trim().replace('_', "").parse().ok())
        .collect();
    let fill_limit = Duration::from_secs(env_number("BTIC_BENCH_FILL_SECONDS", 900));
    let mut outcomes = Vec::new();
    for size in sizes {
        match backlog(size, fill_limit).await {
            Some(o) => outcomes.push(o),
            None => return,
        }
    }
    println!(
        "| sessions per day | closed in truth | sessions queued (items) | fill s | peak RSS holding MiB | drained | drain s | peak RSS draining MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for o in &outcomes {
        println!(
            "| {} | {} | {} ({}) | {:.0} | {} | {} | {:.0} | {} |",
            o.size,
            o.truth,
            o.sessions,
            o.backlog,
            o.fill.as_secs_f64(),
            mib(o.hold_hwm),
            o.drained,
            o.drain.as_secs_f64(),
            mib(o.drain_hwm)
        );
    }
    println!("load average {}", load_average());
}

async fn backlog(size: u64, fill_limit: Duration) -> Option<Outcome> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let pg = Pg::create(&format!("backlog_{size}")).await?;
    let sim = Sim::start(dir.path(), size);
    let (_, truth) = sim.settled_truth().await;
    println!(
        "backlog of {size} sessions per day: {} closed in the ground truth; load average {}",
        truth.len(),
        load_average()
    );

    // Fill: the destination cannot be reached, so the deliver queue only grows.
    let metrics_port = free_port();
    let config = pipeline(dir.path(), &sim, metrics_port, CLOSED_PORT_URL);
    let log = dir.path().join("run.log");
    let daemon = Daemon::start(&config, &log);
    let pid = daemon.pid();
    let started = Instant::now();
    println!(
        "  phase    t(s)  fetched  deliver/pg   sessions  VmRSS MiB  VmHWM MiB  (anon + file)"
    );
    let mut last_print = Instant::now();
    let mut backlog = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let depths = queue_depths(metrics_port).await;
        backlog = depths.get("deliver/pg").copied().unwrap_or(backlog);
        let fetched = depths.get("fetched").copied().unwrap_or(0);
        // Sessions wait in bundles (up to 4 per item), so the queued sessions are the
        // parsed ones. The simulator keeps adding live sessions, so they pass the truth.
        let sessions = sessions_parsed(metrics_port).await;
        let full = sessions as usize >= truth.len();
        if last_print.elapsed() >= Duration::from_secs(15) || full {
            last_print = Instant::now();
            println!(
                "  fill  {:>7.0} {:>8} {:>11} {:>10} {:>10} {:>10}  ({} + {})",
                started.elapsed().as_secs_f64(),
                fetched,
                backlog,
                sessions,
                mib(vm_kib(pid, "VmRSS").unwrap_or(0)),
                mib(vm_kib(pid, "VmHWM").unwrap_or(0)),
                mib(vm_kib(pid, "RssAnon").unwrap_or(0)),
                mib(vm_kib(pid, "RssFile").unwrap_or(0)),
            );
        }
        if full || started.elapsed() > fill_limit {
            break;
        }
    }
    let fill = started.elapsed();
    // Hold the backlog a little: the daemon keeps retrying the destination.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let depths = queue_depths(metrics_port).await;
    backlog = depths.get("deliver/pg").copied().unwrap_or(backlog);
    let hold_hwm = vm_kib(pid, "VmHWM").unwrap_or(0);
    let sessions = sessions_parsed(metrics_port).await;
    println!(
        "  hold  {:>7.0} {:>8} {:>11} {:>10} {:>10} {:>10}  ({} + {})",
        started.elapsed().as_secs_f64(),
        depths.get("fetched").copied().unwrap_or(0),
        backlog,
        sessions,
        mib(vm_kib(pid, "VmRSS").unwrap_or(0)),
        mib(hold_hwm),
        mib(vm_kib(pid, "RssAnon").unwrap_or(0)),
        mib(vm_kib(pid, "RssFile").unwrap_or(0)),
    );
    println!(
        "  state directory {} MiB",
        mib(dir_bytes(&dir.path().join("state")) / 1024)
    );
    daemon.terminate();

    // Drain: the same state directory, now with a reachable database.
    let metrics_port = free_port();
    let config = pipeline(dir.path(), &sim, metrics_port, &pg.url);
    let daemon = Daemon::start(&config, &log);
    let pid = daemon.pid();
    let started = Instant::now();
    let mut drain_hwm = 0;
    let mut last_print = Instant::now();
    let drained = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        drain_hwm = drain_hwm.max(vm_kib(pid, "VmHWM").unwrap_or(0));
        let count = pg.count().await;
        // The backlog also holds copies of sessions (overlapping windows) and live
        // sessions added meanwhile; the ground truth's sessions arriving is the end.
        let done = count as usize >= truth.len();
        if last_print.elapsed() >= Duration::from_secs(15) || done {
            last_print = Instant::now();
            let depths = queue_depths(metrics_port).await;
            let (open, requests) = open_sessions_and_requests(metrics_port).await;
            println!(
                "  drain {:>7.0} {:>8} {:>11} {:>10} {:>10}  ({count} in pg, {open} in progress, {requests} requests in the hour)",
                started.elapsed().as_secs_f64(),
                depths.get("fetched").copied().unwrap_or(0),
                depths.get("deliver/pg").copied().unwrap_or(0),
                mib(vm_kib(pid, "VmRSS").unwrap_or(0)),
                mib(drain_hwm),
            );
        }
        if done || started.elapsed() > Duration::from_secs(3600) {
            break count;
        }
    };
    let drain = started.elapsed();
    daemon.terminate();
    pg.drop_now().await;
    Some(Outcome {
        size,
        truth: truth.len(),
        sessions,
        backlog,
        fill,
        hold_hwm,
        drained,
        drain,
        drain_hwm,
    })
}

/// The bytes of the files under `path`.
fn dir_bytes(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
