//! End to end: `BTIC_BENCH_SESSIONS` sessions (default 100 000) from a `btic simulate`
//! child into a fresh PostgreSQL database through `btic run` (release build), timed
//! until the database holds every session of the simulator's ground truth. Then, in
//! the same run and on the same data, each stage alone: fetch (the appliance client
//! spooling the same one-hour windows), parse (`SessionReader` over the spooled bodies)
//! and deliver (`SqlSink::deliver` in batches of the destination's `batch_size` into
//! another fresh database). Prints sessions/s of each and the ratio end to end /
//! slowest stage, and the CPU time btic, the simulator and PostgreSQL used end to end
//! with the best time those would allow on this machine's CPUs. See benches/README.md.

mod e2e_support;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use btic::appliance::{ApplianceClient, Window, WindowBy};
use btic::config::{Config, DestinationKind, Secret};
use btic::deliver::sql::SqlSink;
use btic::parse::SessionReader;
use chrono::{DateTime, TimeDelta};
use e2e_support::{
    Daemon, Pg, SECRET, Sim, cpu_seconds, cpus, env_number, free_port, load_average,
    machine_busy_seconds, mib, pipeline, postgres_cpu_seconds, queue_depths, vm_kib,
};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sessions = env_number("BTIC_BENCH_SESSIONS", 100_000);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let Some(pg) = Pg::create("e2e").await else {
        return;
    };
    let sim = Sim::start(dir.path(), sessions);
    let (now, truth) = sim.settled_truth().await;
    let truth_set: BTreeSet<String> = truth.iter().cloned().collect();
    println!(
        "simulator: {sessions} sessions per day, 1 day; ground truth: {} closed sessions; load average {}",
        truth.len(),
        load_average()
    );

    // End to end.
    let metrics_port = free_port();
    let config_path = pipeline(dir.path(), &sim, metrics_port, &pg.url);
    let log = dir.path().join("run.log");
    let cpu_before = (
        cpu_seconds(sim.pid()),
        postgres_cpu_seconds(),
        cpu_seconds(std::process::id()),
        machine_busy_seconds(),
    );
    let started = Instant::now();
    let daemon = Daemon::start(&config_path, &log);
    let pid = daemon.pid();
    let mut last_report = Instant::now();
    let mut peak_rss = 0;
    println!("   t(s)  in pg   fetched  deliver/pg  RSS MiB");
    let e2e = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let count = pg.count().await;
        peak_rss = peak_rss.max(vm_kib(pid, "VmHWM").unwrap_or(0));
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            let depths = queue_depths(metrics_port).await;
            println!(
                "{:>7.0} {:>6} {:>9} {:>11} {:>8}",
                started.elapsed().as_secs_f64(),
                count,
                depths.get("fetched").copied().unwrap_or(0),
                depths.get("deliver/pg").copied().unwrap_or(0),
                mib(vm_kib(pid, "VmRSS").unwrap_or(0)),
            );
        }
        if count as usize >= truth.len() {
            let held = pg.lsids().await;
            if truth_set.iter().all(|l| held.contains_key(l)) {
                break started.elapsed();
            }
        }
        if started.elapsed() > Duration::from_secs(3600) {
            panic!(
                "the destination did not receive the ground truth within an hour; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
    };
    let cpu = Cpu {
        btic: cpu_seconds(pid),
        simulator: cpu_seconds(sim.pid()) - cpu_before.0,
        postgres: postgres_cpu_seconds() - cpu_before.1,
        bench: cpu_seconds(std::process::id()) - cpu_before.2,
        machine: machine_busy_seconds() - cpu_before.3,
    };
    let duplicates = pg.lsids().await.values().filter(|n| **n > 1).count();
    let exit = daemon.terminate();
    let e2e_rate = truth.len() as f64 / e2e.as_secs_f64();
    println!(
        "end to end: {} sessions in {:.1} s = {:.0} sessions/s (daemon peak RSS {} MiB, duplicates {duplicates}, exit {exit:?}); load average {}",
        truth.len(),
        e2e.as_secs_f64(),
        e2e_rate,
        mib(peak_rss),
        load_average()
    );
    let cores = cpus() as f64;
    // The daemon, the simulator and PostgreSQL cannot finish sooner than their CPU time
    // spread over every CPU.
    let cpu_bound = (cpu.btic + cpu.simulator + cpu.postgres) / cores;
    println!(
        "CPU end to end: btic {:.1} s, simulator {:.1} s, PostgreSQL {:.1} s, this bench {:.1} s; machine busy {:.1} of {:.1} CPU-seconds ({cores} CPUs); btic + simulator + PostgreSQL need at least {cpu_bound:.1} s on {cores} CPUs",
        cpu.btic,
        cpu.simulator,
        cpu.postgres,
        cpu.bench,
        cpu.machine,
        cores * e2e.as_secs_f64(),
    );

    // The daemon's queue is not needed any more; the stages alone need the disk space.
    let _ = std::fs::remove_dir_all(dir.path().join("state"));

    // Each stage alone, on the same simulator and the same windows.
    let config = Config::load(&config_path).expect("the pipeline file is valid");
    let site = config.site("sim").expect("site sim").clone();
    let spool = dir.path().join("bench-spool");
    std::fs::create_dir_all(&spool).expect("a spool directory");
    let client =
        ApplianceClient::new(&site, Secret::new(SECRET), &spool).expect("an appliance client");
    let end = DateTime::from_timestamp(now - 10, 0).expect("a time");
    let mut from = end - TimeDelta::hours(26);
    let mut bodies: Vec<PathBuf> = Vec::new();
    let mut bytes = 0u64;
    let fetch_started = Instant::now();
    while from < end {
        let duration = (end - from).min(TimeDelta::hours(1));
        let fetched = client
            .support_sessions(Window {
                by: WindowBy::End,
                from,
                duration: duration.to_std().expect("a positive window"),
            })
            .await
            .expect("fetching a window");
        bytes += fetched.bytes();
        if let Some(body) = fetched.body {
            bodies.push(body.path);
        }
        from += duration;
    }
    let fetch = fetch_started.elapsed();

    let parse_started = Instant::now();
    let mut parsed = 0u64;
    for body in &bodies {
        let file = File::open(body).expect("a spooled body");
        for outcome in SessionReader::new(BufReader::with_capacity(256 << 10, file)) {
            outcome.expect("a well-formed session");
            parsed += 1;
        }
    }
    let parse = parse_started.elapsed();

    let Some(pg2) = Pg::create("e2e_deliver").await else {
        return;
    };
    let destination = config.destination("pg").expect("destination pg");
    let DestinationKind::Sql(sql) = &destination.kind else {
        panic!("pg is a SQL destination");
    };
    let sink = SqlSink::connect("pg", sql, Some(&Secret::new(pg2.url.clone())))
        .await
        .expect("connecting to the second database");
    let mut deliver = Duration::ZERO;
    let mut delivered = 0usize;
    for body in &bodies {
        let file = File::open(body).expect("a spooled body");
        let sessions: Vec<_> = SessionReader::new(BufReader::with_capacity(256 << 10, file))
            .map(|s| s.expect("a well-formed session").session)
            .collect();
        for batch in sessions.chunks(sql.batch_size.max(1)) {
            let started = Instant::now();
            let outcome = sink.deliver(site.host_name(), batch).await;
            deliver += started.elapsed();
            delivered += outcome.delivered();
        }
    }
    drop(sink);

    let rate = |n: f64, d: Duration| n / d.as_secs_f64();
    let stages = [
        ("fetch", rate(parsed as f64, fetch)),
        ("parse", rate(parsed as f64, parse)),
        ("deliver", rate(delivered as f64, deliver)),
    ];
    let (slowest, slowest_rate) = stages
        .iter()
        .copied()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .expect("three stages");
    println!(
        "stages alone over {} windows, {} bodies, {:.1} MiB, {parsed} sessions ({delivered} delivered, batch_size {}):",
        26,
        bodies.len(),
        bytes as f64 / (1 << 20) as f64,
        sql.batch_size
    );
    println!("| stage | seconds | sessions/s |");
    println!("|---|---|---|");
    println!(
        "| fetch | {:.1} | {:.0} |",
        fetch.as_secs_f64(),
        stages[0].1
    );
    println!(
        "| parse | {:.1} | {:.0} |",
        parse.as_secs_f64(),
        stages[1].1
    );
    println!(
        "| deliver | {:.1} | {:.0} |",
        deliver.as_secs_f64(),
        stages[2].1
    );
    println!(
        "| end to end | {:.1} | {:.0} |",
        e2e.as_secs_f64(),
        e2e_rate
    );
    println!(
        "ratio end to end / slowest stage ({slowest}): {:.2} (goal >= 0.8); load average {}",
        e2e_rate / slowest_rate,
        load_average()
    );
    let best_rate = truth.len() as f64 / cpu_bound;
    println!(
        "CPU-bound best end to end: {cpu_bound:.1} s = {best_rate:.0} sessions/s, a ratio of {:.2} to the slowest stage; end to end reached {:.2} of that best",
        best_rate / slowest_rate,
        cpu_bound / e2e.as_secs_f64(),
    );
    for body in &bodies {
        let _ = std::fs::remove_file(body);
    }
    pg.drop_now().await;
    pg2.drop_now().await;
}

/// CPU seconds used during the end-to-end run.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    btic: f64,
    simulator: f64,
    postgres: f64,
    bench: f64,
    machine: f64,
}
