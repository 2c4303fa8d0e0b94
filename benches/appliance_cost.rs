//! What btic costs the appliance: requests, bytes fetched and rows written per new
//! session, measured by the simulator (`/_sim/stats`) and by triggers on the SQLite
//! destination's `session` table. Three scenes, each printed as one line:
//!
//! - `live-day`: a day at 20,000 sessions a day with the default schedule (a run a
//!   minute), `overlap` and `settle_lag`, in this process (the simulated appliance's
//!   clock moved a minute before each run, as `tests/fetch_twice.rs` does); the stages
//!   are the daemon's own.
//! - `live-real`: `btic run` (the binary `BTIC_BIN`, default this build's) against
//!   `btic simulate` at 20,000 sessions a day for `BTIC_BENCH_LIVE_MINUTES` (default 8)
//!   minutes of real time, measured over the second half: this is how a build from
//!   before the per-account budget (which fetched the whole overlap at every run) is
//!   measured beside this one with the same command.
//! - `backfill-30d`: `btic backfill` of 30 days with recordings (`BTIC_BIN`) into files
//!   and SQLite, 400 sessions a day.
//!
//! Run: `cargo bench --bench appliance_cost` (`BTIC_BENCH_SCENES=live-day,backfill-30d`
//! picks scenes). Figures are in `benches/README.md`.

#[path = "e2e_support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use btic::config::Config;
use btic::metrics::Health;
use btic::model::Report;
use btic::pipeline::budget::DiskBudget;
use btic::pipeline::reachability::Reachability;
use btic::pipeline::routes;
use btic::pipeline::stages::{self, Scope, Shared};
use btic::queue::Queue;
use btic::simulator::{Options, RateBudget, Simulator};
use support::{env_number, free_port};

fn binary() -> PathBuf {
    std::env::var_os("BTIC_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_btic")))
}

/// Counts every write of a `session` row from now on; returns the rows written so far.
fn count_writes(db: &Path) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS writes (n INTEGER NOT NULL);
         INSERT INTO writes VALUES (0);
         CREATE TRIGGER session_inserted AFTER INSERT ON session BEGIN UPDATE writes SET n = n + 1; END;
         CREATE TRIGGER session_updated AFTER UPDATE ON session BEGIN UPDATE writes SET n = n + 1; END;",
    )
    .unwrap();
    scalar(db, "SELECT COUNT(*) FROM session")
}

fn scalar(db: &Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// What the simulator counted, as numbers.
#[derive(Debug, Clone, Default)]
struct Counts {
    requests: u64,
    reports: u64,
    recordings: u64,
    sessions_returned: u64,
    report_bytes: u64,
}

impl Counts {
    fn of(stats: &serde_json::Value) -> Counts {
        let by_kind = stats["requests"].as_object().cloned().unwrap_or_default();
        let kind = |k: &str| by_kind.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        Counts {
            requests: by_kind.values().filter_map(|v| v.as_u64()).sum(),
            reports: kind("SupportSession"),
            recordings: by_kind
                .iter()
                .filter(|(k, _)| k.ends_with("Recording"))
                .filter_map(|(_, v)| v.as_u64())
                .sum(),
            sessions_returned: stats["sessions_returned"].as_u64().unwrap_or(0),
            report_bytes: stats["report_bytes"].as_u64().unwrap_or(0),
        }
    }

    fn minus(&self, before: &Counts) -> Counts {
        Counts {
            requests: self.requests - before.requests,
            reports: self.reports - before.reports,
            recordings: self.recordings - before.recordings,
            sessions_returned: self.sessions_returned - before.sessions_returned,
            report_bytes: self.report_bytes - before.report_bytes,
        }
    }
}

fn report(scene: &str, counts: &Counts, new: f64, writes: f64, extra: &str) {
    println!(
        "{scene}: {new:.0} new sessions; per new session {:.3} requests ({:.3} report requests, {:.3} recordings), {:.3} sessions fetched, {:.0} report bytes, {:.3} session rows written{extra}",
        counts.requests as f64 / new,
        counts.reports as f64 / new,
        counts.recordings as f64 / new,
        counts.sessions_returned as f64 / new,
        counts.report_bytes as f64 / new,
        writes / new,
    );
}

async fn live_day() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start(Options {
        sessions_per_day: 20_000,
        days: 1,
        truth: true,
        budget: RateBudget::unlimited(),
        ..Options::default()
    })
    .await
    .unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, sim.ca_pem.as_deref().unwrap()).unwrap();
    let db = dir.path().join("lite.sqlite");
    let text = format!(
        "state_dir = \"{}\"\nstart_from = \"10m\"\n[[site]]\nname = \"sim\"\nhost = \"{}\"\nclient_id = \"demo\"\nclient_secret = \"demo-secret\"\nca_file = \"{}\"\nrequests_per_hour = 1000000\n[[destination]]\nname = \"lite\"\ntype = \"sqlite\"\npath = \"{}\"\n[[schedule]]\nname = \"m\"\nevery = \"1m\"\n[[schedule.transfer]]\nsite = \"sim\"\ndestination = \"lite\"\ndata = [\"sessions\"]\n",
        dir.path().join("state").display(),
        sim.host(),
        ca.display(),
        db.display()
    );
    let config = Arc::new(Config::from_toml(&dir.path().join("p.toml"), &text).unwrap());
    let queue = Queue::open(dir.path().join("state/queue")).unwrap();
    let spool = dir.path().join("state/spool");
    std::fs::create_dir_all(&spool).unwrap();
    let shared = Shared {
        config: config.clone(),
        secrets: Arc::new(config.resolve_secrets().unwrap()),
        queue: queue.clone(),
        health: Arc::new(Health::new(Duration::from_secs(900))),
        reachability: Arc::new(Reachability::default()),
        budget: DiskBudget::of(&config),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let stages = stages::start(&shared, Scope::All, &spool, &stop).unwrap();
    let fetch = &stages.fetch["sim"];
    let routes = routes::live(&config, "sim", Report::SupportSession);
    let drain = async || {
        while queue.depth("fetched").await.unwrap() + queue.depth("deliver/lite").await.unwrap() > 0
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let runs = env_number("BTIC_BENCH_DAY_RUNS", 1440) as u32;
    let started = Instant::now();
    let before = Counts::of(&serde_json::to_value(sim.stats()).unwrap());
    let mut baseline = 0;
    for run in 0..runs {
        if run > 0 {
            sim.advance(Duration::from_secs(60));
        }
        fetch
            .fetch_live(Report::SupportSession, &routes)
            .await
            .unwrap();
        if run == 0 {
            drain().await;
            baseline = count_writes(&db);
        }
    }
    drain().await;
    let counts = Counts::of(&serde_json::to_value(sim.stats()).unwrap()).minus(&before);
    let new = scalar(&db, "SELECT COUNT(*) FROM session") as f64;
    let writes = (scalar(&db, "SELECT n FROM writes") + baseline) as f64;
    report(
        "live-day",
        &counts,
        new,
        writes,
        &format!(", {runs} runs in {:.1?}", started.elapsed()),
    );
    stop.cancel();
    sim.shutdown().await;
}

/// `btic simulate` (this build's) with `args`; returns the child and its address.
fn simulate(dir: &Path, args: &[&str]) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_btic"))
        .args(["simulate", "--listen", "127.0.0.1:0", "--truth", "--ca-out"])
        .arg(dir.join("ca.pem"))
        .args(["--requests-per-second", "0", "--requests-per-hour", "0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let host = line.trim().rsplit("://").next().unwrap().to_string();
    (child, host)
}

async fn stats(client: &reqwest::Client, host: &str) -> Counts {
    let v: serde_json::Value = client
        .get(format!("https://{host}/_sim/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    Counts::of(&v)
}

fn trusting(dir: &Path) -> reqwest::Client {
    let pem = std::fs::read(dir.join("ca.pem")).unwrap();
    reqwest::Client::builder()
        .tls_certs_merge([reqwest::Certificate::from_pem(&pem).unwrap()])
        .build()
        .unwrap()
}

/// A pipeline file both older and newer builds read (no key they lack).
fn pipeline(
    dir: &Path,
    host: &str,
    start_from: &str,
    extra_destination: &str,
    extra_transfer: &str,
) -> PathBuf {
    let text = format!(
        "state_dir = \"{state}\"\nstart_from = \"{start_from}\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n[[site]]\nname = \"sim\"\nhost = \"{host}\"\nclient_id = \"demo\"\nclient_secret = {{ env = \"BTIC_BENCH_SECRET\" }}\nca_file = \"{ca}\"\nrequests_per_second = 20\n[[destination]]\nname = \"lite\"\ntype = \"sqlite\"\npath = \"{db}\"\n{extra_destination}[[schedule]]\nname = \"m\"\nevery = \"1m\"\n[[schedule.transfer]]\nsite = \"sim\"\ndestination = \"lite\"\ndata = [\"sessions\"]\n{extra_transfer}",
        state = dir.join("state").display(),
        port = free_port(),
        ca = dir.join("ca.pem").display(),
        db = dir.join("lite.sqlite").display(),
    );
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn live_real() {
    let minutes = env_number("BTIC_BENCH_LIVE_MINUTES", 8);
    let dir = tempfile::tempdir().unwrap();
    let (mut sim, host) = simulate(dir.path(), &["--sessions-per-day", "20000", "--days", "1"]);
    let client = trusting(dir.path());
    let config = pipeline(dir.path(), &host, "20m", "", "");
    let mut daemon = Command::new(binary())
        .args(["run", "--config"])
        .arg(&config)
        .env("BTIC_BENCH_SECRET", "demo-secret")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let db = dir.path().join("lite.sqlite");
    // The first half: the catch-up and the overlap filling; then measure.
    let half = Duration::from_secs(minutes * 30);
    tokio::time::sleep(half).await;
    let baseline = count_writes(&db);
    let rows_before = baseline;
    let before = stats(&client, &host).await;
    tokio::time::sleep(half).await;
    let counts = stats(&client, &host).await.minus(&before);
    let rows = scalar(&db, "SELECT COUNT(*) FROM session");
    let writes = scalar(&db, "SELECT n FROM writes") as f64;
    let _ = daemon.kill();
    let _ = daemon.wait();
    let _ = sim.kill();
    let _ = sim.wait();
    report(
        "live-real",
        &counts,
        (rows - rows_before) as f64,
        writes,
        &format!(
            ", {} over {} minutes, {}",
            binary().display(),
            minutes / 2,
            load()
        ),
    );
}

async fn backfill_30d() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sim, host) = simulate(
        dir.path(),
        &[
            "--sessions-per-day",
            "400",
            "--days",
            "31",
            "--recording-bytes",
            "4096",
        ],
    );
    let client = trusting(dir.path());
    let files = format!(
        "[[destination]]\nname = \"archive\"\ntype = \"files\"\ndirectory = \"{}\"\n",
        dir.path().join("archive").display()
    );
    let transfer = "[[schedule.transfer]]\nsite = \"sim\"\ndestination = \"archive\"\ndata = [\"sessions\", \"recordings\"]\n";
    let config = pipeline(dir.path(), &host, "1m", &files, transfer);
    let now = chrono::Utc::now();
    let day = |d: i64| {
        (now - chrono::TimeDelta::days(d))
            .format("%Y-%m-%d")
            .to_string()
    };
    let yes = Command::new(binary())
        .args(["backfill", "--help"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--yes"));
    // `check` creates the tables (and contacts the site), so writes can be counted.
    let checked = Command::new(binary())
        .args(["check", "--config"])
        .arg(&config)
        .env("BTIC_BENCH_SECRET", "demo-secret")
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let db = dir.path().join("lite.sqlite");
    count_writes(&db);
    let before = stats(&client, &host).await;
    let started = Instant::now();
    let mut command = Command::new(binary());
    command
        .args(["backfill", "--config"])
        .arg(&config)
        .args(["--site", "sim", "--from", &day(31), "--to", &day(1)])
        .args(["--data", "sessions,recordings"])
        .env("BTIC_BENCH_SECRET", "demo-secret")
        // What the job costs, not how the budget paces it (builds before the budget
        // ignore this): the default 9,000 an hour for backfills would make it wait.
        .env("BTIC_BUDGET_HOUR_SECONDS", "30");
    if yes {
        command.arg("--yes");
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counts = stats(&client, &host).await.minus(&before);
    let new = scalar(&db, "SELECT COUNT(*) FROM session") as f64;
    let writes = scalar(&db, "SELECT n FROM writes") as f64;
    let _ = sim.kill();
    let _ = sim.wait();
    report(
        "backfill-30d",
        &counts,
        new,
        writes,
        &format!(", {} in {:.1?}", binary().display(), started.elapsed()),
    );
}

fn load() -> String {
    format!("load {}", support::load_average())
}

fn main() {
    let scenes = std::env::var("BTIC_BENCH_SCENES")
        .unwrap_or_else(|_| "live-day,backfill-30d,live-real".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for scene in scenes.split(',') {
        runtime.block_on(async {
            match scene.trim() {
                "live-day" => live_day().await,
                "live-real" => live_real().await,
                "backfill-30d" => backfill_30d().await,
                other => eprintln!("unknown scene {other:?}"),
            }
        });
    }
}
