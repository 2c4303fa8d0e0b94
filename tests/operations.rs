//! What an operator relies on, tried on a real daemon: the gauges at every scrape (a
//! drained queue reads 0, the lag grows while the appliance is away), the disk budget on
//! a real small file system (it never fills while the destination is down, and the
//! backlog is delivered exactly once when it is back), and the fail-stop on a full disk
//! without a budget (one clear error, exit 1, and a bigger disk resumes with nothing
//! lost). The file-system tests mount a tmpfs and so need root, as CI runs; elsewhere
//! they report themselves skipped. And the daemon tunes glibc's malloc for itself,
//! leaving alone what the operator set.

mod rig;

use rig::skip;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rig::{
    Daemon, Pg, Relay, Sim, Tmpfs, btic, eventually, free_port, pipeline, scrape, sqlite_lsids,
};

/// The series of `metric` in a scrape, by their label text.
fn series<'a>(scrape: &'a BTreeMap<String, f64>, metric: &str) -> BTreeMap<&'a str, f64> {
    scrape
        .iter()
        .filter_map(|(k, v)| {
            let labels = k.strip_prefix(metric)?;
            (labels.is_empty() || labels.starts_with('{')).then_some((labels, *v))
        })
        .collect()
}

fn print_scrape(when: &str, scrape: &BTreeMap<String, f64>) {
    println!("--- scrape {when}");
    for metric in [
        "btic_queue_depth",
        "btic_queue_oldest_age_seconds",
        "btic_watermark_lag_seconds",
        "btic_site_last_success_timestamp_seconds",
        "btic_state_bytes",
        "btic_state_free_bytes",
        "btic_fetch_paused",
    ] {
        for (labels, value) in series(scrape, metric) {
            println!("{metric}{labels} {value}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_queue_reads_zero_and_the_lag_grows_while_the_appliance_is_away() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(
        dir.path(),
        &[
            "--days",
            "1",
            "--sessions-per-day",
            "200",
            "--recording-bytes",
            "2048",
        ],
    );
    let sqlite = dir.path().join("btic.sqlite");
    let port = free_port();
    let config = pipeline(
        dir.path(),
        &sim,
        port,
        &format!(
            "[[destination]]\nname = \"lite\"\ntype = \"sqlite\"\npath = \"{}\"\n",
            sqlite.display()
        ),
        "[[schedule.transfer]]\nsite = \"sim\"\ndestination = \"lite\"\ndata = [\"sessions\"]\n",
    );
    let log = dir.path().join("run.log");
    // `btic healthcheck` asks the pipeline file's listener: nobody answers yet.
    let healthcheck = || {
        btic()
            .args(["healthcheck", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    };
    let before = healthcheck();
    assert_eq!(before.status.code(), Some(1), "{before:?}");
    assert!(
        String::from_utf8_lossy(&before.stderr).contains(&format!("127.0.0.1:{port}/healthz")),
        "{before:?}"
    );
    let daemon = Daemon::start(&config, &log);
    let healthy = eventually(Duration::from_secs(30), async || {
        healthcheck().status.success()
    })
    .await;
    assert!(
        healthy,
        "btic healthcheck never passed: {:?}",
        healthcheck()
    );

    // While the first windows are in hand, some queue holds items.
    let mut busy = BTreeMap::new();
    let saw_backlog = eventually(Duration::from_secs(60), async || {
        busy = scrape(port).await;
        series(&busy, "btic_queue_depth").values().any(|d| *d > 0.0)
    })
    .await;
    assert!(saw_backlog, "no queue ever held an item");
    print_scrape("with a backlog", &busy);

    let (now, _) = sim.truth(None).await;
    let (_, truth) = sim.truth(Some(now - 10)).await;
    let delivered = eventually(Duration::from_secs(120), async || {
        let rows = sqlite_lsids(&sqlite);
        truth.keys().all(|l| rows.contains_key(l))
    })
    .await;
    assert!(
        delivered,
        "not delivered:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // Drained: every queue the daemon knows reads 0, depth and age, not its last value.
    let mut drained = BTreeMap::new();
    let zero = eventually(Duration::from_secs(30), async || {
        drained = scrape(port).await;
        let depths = series(&drained, "btic_queue_depth");
        let ages = series(&drained, "btic_queue_oldest_age_seconds");
        !depths.is_empty() && depths.values().all(|d| *d == 0.0) && ages.values().all(|a| *a == 0.0)
    })
    .await;
    print_scrape("after the drain", &drained);
    assert!(zero, "a drained queue does not read 0");
    let depths = series(&drained, "btic_queue_depth");
    for queue in ["fetch/sim", "fetched", "deliver/lite", "dead_letter"] {
        let labels = format!("{{queue=\"{queue}\"}}");
        assert_eq!(
            depths.get(labels.as_str()),
            Some(&0.0),
            "queue {queue} not reported"
        );
    }
    let lag_key = |s: &BTreeMap<String, f64>| {
        series(s, "btic_watermark_lag_seconds")
            .into_iter()
            .find(|(labels, _)| labels.contains("site=\"sim\""))
            .map(|(_, v)| v)
    };
    let last_success = |s: &BTreeMap<String, f64>| {
        series(s, "btic_site_last_success_timestamp_seconds")
            .get("{site=\"sim\"}")
            .copied()
    };
    assert!(
        last_success(&drained).is_some(),
        "no last-success timestamp"
    );

    // `btic tap` shows sessions passing parse and deliver: a backfill of the day sends
    // them through again while it listens.
    let (events, tap) = tap_events(&config);
    let to = chrono::Utc::now() + chrono::TimeDelta::hours(2);
    let from = to - chrono::TimeDelta::days(2);
    let backfill = btic()
        .args([
            "backfill",
            "--site",
            "sim",
            "--destination",
            "lite",
            "--yes",
            "--config",
        ])
        .arg(&config)
        .args(["--from", &from.to_rfc3339(), "--to", &to.to_rfc3339()])
        .output()
        .unwrap();
    assert!(backfill.status.success(), "{backfill:?}");
    let mut seen: Vec<serde_json::Value> = Vec::new();
    let passed = |seen: &[serde_json::Value], stage: &str| {
        seen.iter()
            .filter(|e| {
                e["stage"] == stage && e["lsid"].as_str().is_some_and(|l| truth.contains_key(l))
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while passed(&seen, "parse") < truth.len() || passed(&seen, "deliver") < truth.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(line) => seen.push(serde_json::from_str(&line).expect("a JSON line")),
            Err(_) => break,
        }
    }
    drop(tap);
    println!(
        "tap: {} events, the first: {}",
        seen.len(),
        seen.first().map(ToString::to_string).unwrap_or_default()
    );
    assert!(
        passed(&seen, "parse") >= truth.len(),
        "parse events: {seen:?}"
    );
    assert!(
        passed(&seen, "deliver") >= truth.len(),
        "deliver events: {seen:?}"
    );
    let delivered = seen.iter().find(|e| e["stage"] == "deliver").unwrap();
    assert_eq!(delivered["destination"], "lite");
    assert_eq!(delivered["outcome"], "delivered");
    let parsed = seen.iter().find(|e| e["stage"] == "parse").unwrap();
    assert_eq!(parsed["destinations"], serde_json::json!(["lite"]));
    assert!(
        parsed["bytes"].as_u64().is_some_and(|b| b > 100),
        "{parsed}"
    );

    // The appliance goes away: the lag keeps growing with the clock, the last success
    // stays where it was.
    drop(sim);
    let before = scrape(port).await;
    let lag_before = lag_key(&before).expect("a lag series for the site");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = scrape(port).await;
    print_scrape("with the appliance away", &during);
    let lag_during = lag_key(&during).unwrap();
    assert!(
        lag_during >= lag_before + 3.0,
        "the lag did not grow while the appliance was away: {lag_before} -> {lag_during}"
    );
    assert_eq!(last_success(&during), last_success(&before));

    // A tap still listening does not hold the daemon's stop up, and ends with it.
    let (_, mut tap) = tap_events(&config);
    let (code, took) = daemon.terminate();
    assert_eq!(code, Some(0));
    assert!(
        took < Duration::from_secs(15),
        "the daemon took {took:?} to stop"
    );
    let ended = (0..500).find_map(|_| {
        std::thread::sleep(Duration::from_millis(20));
        tap.0.try_wait().unwrap()
    });
    assert!(
        ended.is_some_and(|s| s.success()),
        "btic tap did not end with the daemon: {ended:?}"
    );
}

/// A running `btic tap --config`, killed when dropped.
struct Tap(std::process::Child);

impl Drop for Tap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `btic tap` on the daemon of `config` and returns its lines as they come, once
/// it says it is tapping.
fn tap_events(config: &Path) -> (std::sync::mpsc::Receiver<String>, Tap) {
    use std::io::BufRead;
    let mut child = btic()
        .args(["tap", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    stderr.read_line(&mut said).unwrap();
    assert!(
        said.starts_with("tapping http://127.0.0.1:"),
        "btic tap said {said:?}"
    );
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (rx, Tap(child))
}

/// A simulator holding far more than a 64 MiB state file system can take, a PostgreSQL
/// destination behind a relay that is down, and the pipeline file with `pipeline_extra`
/// (budget keys) and the state directory on `state_fs`.
struct Outage {
    sim: Sim,
    pg: Pg,
    relay: Relay,
    config: std::path::PathBuf,
    log: std::path::PathBuf,
    port: u16,
}

async fn outage(dir: &Path, test: &str, state_fs: &Path, pipeline_extra: &str) -> Option<Outage> {
    let pg = Pg::create(test).await?;
    let sim = Sim::start(
        dir,
        &[
            "--days",
            "3",
            "--sessions-per-day",
            "4000",
            "--recording-bytes",
            "1024",
        ],
    );
    let relay = Relay::down();
    let port = free_port();
    let config = pipeline(
        dir,
        &sim,
        port,
        &format!(
            "[[destination]]\nname = \"pg\"\ntype = \"postgres\"\nurl = \"{}\"\n",
            relay.url(&pg.url)
        ),
        "[[schedule.transfer]]\nsite = \"sim\"\ndestination = \"pg\"\ndata = [\"sessions\"]\n",
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            &format!("state_dir = \"{}\"", dir.join("state").display()),
            &format!("state_dir = \"{}\"", state_fs.join("state").display()),
        )
        // Windows of an hour keep each body (and so what is in flight when the budget
        // pauses) small beside the file system.
        .replace("max_window = \"12h\"", "max_window = \"1h\"")
        .replace("[pipeline]\n", &format!("[pipeline]\n{pipeline_extra}"));
    std::fs::write(&config, text).unwrap();
    Some(Outage {
        sim,
        pg,
        relay,
        config,
        log: dir.join("run.log"),
        port,
    })
}

impl Outage {
    /// Waits until PostgreSQL holds every closed session of the simulator exactly once.
    async fn delivered_exactly_once(&self, within: Duration) {
        let (now, _) = self.sim.truth(None).await;
        let (_, truth) = self.sim.truth(Some(now - 10)).await;
        let complete = eventually(within, async || {
            let rows = self.pg.lsids().await;
            truth.keys().all(|l| rows.contains_key(l))
        })
        .await;
        assert!(
            complete,
            "PostgreSQL does not hold the {} sessions:\n{}",
            truth.len(),
            tail(&self.log)
        );
        let rows = self.pg.lsids().await;
        assert!(rows.values().all(|n| *n == 1), "a session delivered twice");
        let (_, closed) = self.sim.truth(None).await;
        assert!(rows.keys().all(|l| closed.contains_key(l)));
        println!("{} sessions delivered, each once", rows.len());
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_budget_keeps_a_small_file_system_from_filling_while_the_destination_is_down() {
    const TEST: &str = "the_disk_budget_keeps_a_small_file_system_from_filling";
    let dir = tempfile::tempdir().unwrap();
    let fs = match Tmpfs::mount(&dir.path().join("fs"), 64) {
        Ok(fs) => fs,
        Err(why) => {
            skip::missing(TEST, &why.to_string());
            return;
        }
    };
    let budget = "max_state_bytes = 25165824\nmin_free_bytes = 8388608\n";
    let Some(mut rig) = outage(dir.path(), TEST, &fs.path, budget).await else {
        return;
    };
    let mut daemon = Daemon::start(&rig.config, &rig.log);

    // The destination stays down for 40 s: the fetch runs into the budget and waits.
    let total = fs4::total_space(&fs.path).unwrap();
    let mut peak = 0;
    let mut paused = false;
    let mut during = BTreeMap::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(40) {
        peak = peak.max(fs.used());
        let s = scrape(rig.port).await;
        if series(&s, "btic_fetch_paused").values().any(|v| *v == 1.0) {
            paused = true;
            during = s;
        }
        assert!(
            daemon.child.try_wait().unwrap().is_none(),
            "the daemon stopped:\n{}",
            tail(&rig.log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    print_scrape("during the outage", &during);
    println!(
        "disk budget: peak use {peak} of {total} bytes ({} MiB of {} MiB)",
        peak >> 20,
        total >> 20
    );
    assert!(
        paused,
        "the budget never paused fetching:\n{}",
        tail(&rig.log)
    );
    assert!(
        peak < total - (4 << 20),
        "the file system came within 4 MiB of full: {peak} of {total}"
    );

    // The destination is back: the backlog drains, fetching resumes, all arrives once.
    rig.relay.up().await;
    rig.delivered_exactly_once(Duration::from_secs(300)).await;
    peak = peak.max(fs.used());
    println!("disk budget: peak use over the whole run {peak} bytes");
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
    let log = std::fs::read_to_string(&rig.log).unwrap();
    assert!(!log.contains("panicked"), "{}", tail(&rig.log));
    assert!(!log.contains("No space left"), "{}", tail(&rig.log));
    let pauses = log
        .matches("fetching and downloading pause until the backlog drains")
        .count()
        + log
            .matches("fetching and downloading pause until space is free")
            .count();
    println!("{pauses} pause warnings");
    rig.pg.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_without_a_budget_stops_the_daemon_and_a_bigger_one_resumes_it_exactly() {
    const TEST: &str = "a_full_disk_without_a_budget_stops_the_daemon";
    let dir = tempfile::tempdir().unwrap();
    let fs = match Tmpfs::mount(&dir.path().join("fs"), 24) {
        Ok(fs) => fs,
        Err(why) => {
            skip::missing(TEST, &why.to_string());
            return;
        }
    };
    let Some(mut rig) = outage(dir.path(), TEST, &fs.path, "min_free_bytes = 0\n").await else {
        return;
    };
    let mut daemon = Daemon::start(&rig.config, &rig.log);

    // The disk fills; the daemon says so, answers /healthz 503 while it stops, and exits 1.
    let client = reqwest::Client::new();
    let mut unhealthy = None;
    let started = Instant::now();
    let code = loop {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            break status.code();
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the daemon did not stop on a full disk:\n{}",
            tail(&rig.log)
        );
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{}/healthz", rig.port))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            && r.status() == 503
        {
            unhealthy = Some(r.text().await.unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let log = std::fs::read_to_string(&rig.log).unwrap();
    assert_eq!(code, Some(1), "{}", tail(&rig.log));
    assert!(!log.contains("panicked"), "{}", tail(&rig.log));
    let state_dir = fs.path.join("state");
    let message = format!(
        "the state directory {} refused a write or an fsync",
        state_dir.display()
    );
    assert_eq!(
        log.matches(&message).count(),
        2,
        "one ERROR, one last line:\n{log}"
    );
    assert!(
        log.contains("No space left on device"),
        "{}",
        tail(&rig.log)
    );
    let unhealthy = unhealthy.expect("/healthz never answered 503 while stopping");
    assert!(unhealthy.contains("failed"), "{unhealthy}");
    println!("/healthz while stopping: 503 {unhealthy}");

    // `btic status` on the full disk reads the state, or says plainly why it cannot.
    let out = rig::btic()
        .args(["status", "--config"])
        .arg(&rig.config)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "btic status on the full disk (exit {:?}):\n{said}",
        out.status.code()
    );
    if out.status.success() {
        assert!(said.contains("state directory"), "{said}");
    } else {
        assert!(said.contains("its file system is full"), "{said}");
    }

    // More space, a new start, the destination back: nothing lost, nothing twice.
    fs.resize(512);
    rig.relay.up().await;
    let daemon = Daemon::start(&rig.config, &rig.log);
    rig.delivered_exactly_once(Duration::from_secs(300)).await;
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
    rig.pg.drop_now().await;
}

/// The environment `btic run` runs with once it answers on its metrics port (it may have
/// executed itself again by then, keeping its process id), started with `set` and
/// without the malloc variables otherwise.
async fn environment_of_the_running_daemon(set: &[(&str, &str)]) -> BTreeMap<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let mut child = btic()
        .args(["run", "--config"])
        .arg(&config)
        .env_remove("MALLOC_ARENA_MAX")
        .env_remove("MALLOC_MMAP_THRESHOLD_")
        .envs(set.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let answered = eventually(Duration::from_secs(30), async || {
        !rig::scrape_text(port).await.is_empty()
    })
    .await;
    let environ = std::fs::read(format!("/proc/{}/environ", child.id())).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(answered, "the daemon never answered on its metrics port");
    environ
        .split(|b| *b == 0)
        .filter_map(|entry| {
            let entry = String::from_utf8_lossy(entry);
            let (name, value) = entry.split_once('=')?;
            ["MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_"]
                .contains(&name)
                .then(|| (name.to_owned(), value.to_owned()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_sets_the_malloc_variables_it_needs_and_keeps_the_operators_own() {
    let ours = BTreeMap::from([
        ("MALLOC_ARENA_MAX".to_owned(), "2".to_owned()),
        ("MALLOC_MMAP_THRESHOLD_".to_owned(), "131072".to_owned()),
    ]);
    assert_eq!(environment_of_the_running_daemon(&[]).await, ours);
    let operators = BTreeMap::from([
        ("MALLOC_ARENA_MAX".to_owned(), "8".to_owned()),
        ("MALLOC_MMAP_THRESHOLD_".to_owned(), "131072".to_owned()),
    ]);
    assert_eq!(
        environment_of_the_running_daemon(&[("MALLOC_ARENA_MAX", "8")]).await,
        operators
    );
    let both = [
        ("MALLOC_ARENA_MAX", "4"),
        ("MALLOC_MMAP_THRESHOLD_", "1048576"),
    ];
    assert_eq!(
        environment_of_the_running_daemon(&both).await,
        both.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>()
    );
}
