//! Each session fetched twice at most, written once: a day (two with
//! `BTIC_FETCH_TWICE_DAYS=2`; the benchmark `appliance_cost` runs two in release) of a
//! site closing 20,000 sessions a day, run with the default schedule (a run every minute), `overlap` and
//! `settle_lag`, through the real fetch, parse and deliver stages into a real SQLite
//! file, against the simulator over HTTPS. Two days cannot pass in a test, so the
//! simulated appliance's clock is moved a minute forward before each run (btic measures
//! it from `get_api_info` at every run, as always) and the runs are made one after the
//! other. Some sessions are written late (ten minutes after they end, inside
//! `overlap`); they must arrive too.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use btic::config::Config;
use btic::keys;
use btic::metrics::Health;
use btic::model::Report;
use btic::pipeline::budget::DiskBudget;
use btic::pipeline::reachability::Reachability;
use btic::pipeline::routes;
use btic::pipeline::stages::{self, Scope, Shared};
use btic::queue::Queue;
use btic::simulator::{Options, RateBudget, Simulator};

/// Runs: one a minute for `BTIC_FETCH_TWICE_DAYS` days (default 1: a debug build
/// takes about 0.15 s a run).
fn runs() -> u32 {
    let days: u32 = std::env::var("BTIC_FETCH_TWICE_DAYS")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(1);
    days.max(1) * 24 * 60
}
const SESSIONS_PER_DAY: u32 = 20_000;
/// Every Nth session is written late, by `LATE_SECONDS` (inside the 15-minute overlap).
const LATE_EVERY: u64 = 37;
const LATE_SECONDS: u64 = 600;

fn pipeline_file(dir: &Path, sim: &Simulator) -> Config {
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, sim.ca_pem.as_deref().unwrap()).unwrap();
    let text = format!(
        r#"state_dir = "{state}"
start_from = "10m"

[[site]]
name = "sim"
host = "{host}"
client_id = "demo"
client_secret = "demo-secret"
ca_file = "{ca}"
requests_per_second = 20
requests_per_hour = 1000000

[[destination]]
name = "lite"
type = "sqlite"
path = "{db}"

[[schedule]]
name = "every minute"
every = "1m"
[[schedule.transfer]]
site = "sim"
destination = "lite"
data = ["sessions"]
"#,
        state = dir.join("state").display(),
        host = sim.host(),
        ca = ca.display(),
        db = dir.join("lite.sqlite").display(),
    );
    Config::from_toml(&dir.join("pipeline.toml"), &text).unwrap()
}

/// Waits until the parse and deliver queues are empty.
async fn drain(queue: &Queue) {
    let limit = Instant::now() + Duration::from_secs(120);
    loop {
        let fetched = queue.depth("fetched").await.unwrap();
        let deliver = queue.depth("deliver/lite").await.unwrap();
        if fetched == 0 && deliver == 0 {
            return;
        }
        assert!(
            Instant::now() < limit,
            "{fetched} bodies and {deliver} items stuck"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Counts every write of a `session` row from now on (inserts and the upsert's updates);
/// returns the rows written so far (each once: the first run).
fn count_writes(db: &Path) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch(
        "CREATE TABLE writes (n INTEGER NOT NULL);
         INSERT INTO writes VALUES (0);
         CREATE TRIGGER session_inserted AFTER INSERT ON session BEGIN UPDATE writes SET n = n + 1; END;
         CREATE TRIGGER session_updated AFTER UPDATE ON session BEGIN UPDATE writes SET n = n + 1; END;",
    )
    .unwrap();
    conn.query_row("SELECT COUNT(*) FROM session", [], |r| r.get(0))
        .unwrap()
}

fn rows(db: &Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_at_twenty_thousand_sessions_a_day_fetches_each_twice_at_most_and_writes_it_once() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    // The state and the database in memory when /dev/shm exists: this test counts
    // requests and writes, and two days of fsyncs would only make it slower.
    let dir = match Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    };
    let sim = Simulator::start(Options {
        sessions_per_day: SESSIONS_PER_DAY,
        days: 1,
        truth: true,
        budget: RateBudget::unlimited(),
        late_every: LATE_EVERY,
        late_seconds: LATE_SECONDS,
        ..Options::default()
    })
    .await
    .unwrap();
    let config = Arc::new(pipeline_file(dir.path(), &sim));
    let secrets = config.resolve_secrets().unwrap();
    let queue = Queue::open(dir.path().join("state/queue")).unwrap();
    // Digests as builds before 2026-12-07 kept them (by session id): forgotten.
    for lsid in ["0001a0b1c2", "ffee0011"] {
        let key = format!("{}{lsid}", keys::seen_by_lsid_prefix("sim"));
        let record = keys::SeenRecord {
            digest: [7; 16],
            at: 1_700_000_000,
        };
        queue.state_put(&key, &record).await.unwrap();
    }
    let spool = dir.path().join("state/spool");
    std::fs::create_dir_all(&spool).unwrap();
    let shared = Shared {
        config: config.clone(),
        secrets: Arc::new(secrets),
        queue: queue.clone(),
        health: Arc::new(Health::new(Duration::from_secs(900))),
        reachability: Arc::new(Reachability::default()),
        budget: DiskBudget::of(&config),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    // A failed assertion must stop the workers too, or the runtime waits for them.
    let _stop_on_panic = stop.clone().drop_guard();
    let stages = stages::start(&shared, Scope::All, &spool, &stop).unwrap();
    let fetch = &stages.fetch["sim"];
    let routes = routes::live(&config, "sim", Report::SupportSession);
    let db = dir.path().join("lite.sqlite");

    let first = sim.appliance_now().timestamp();
    let started = Instant::now();
    let before = sim.stats();
    let mut first_run_rows = 0;
    let runs = runs();
    for run in 0..runs {
        if run > 0 {
            sim.advance(Duration::from_secs(60));
        }
        tokio::time::timeout(
            Duration::from_secs(120),
            fetch.fetch_live(Report::SupportSession, &routes),
        )
        .await
        .unwrap_or_else(|_| panic!("run {run} is stuck"))
        .unwrap_or_else(|e| panic!("run {run}: {e}"));
        if run == 0 {
            drain(&queue).await;
            first_run_rows = count_writes(&db);
        }
        if run % 60 == 0 {
            drain(&queue).await;
        }
    }
    drain(&queue).await;
    let elapsed = started.elapsed();
    let after = sim.stats();

    // Every session that ended before the last run's horizon (so was asked for twice
    // when young, the late ones included) is in the database, once.
    let now = sim.appliance_now().timestamp();
    let horizon = now - 120 - 900 - 60;
    let truth: serde_json::Value = reqwest::Client::builder()
        .tls_certs_merge([reqwest::Certificate::from_pem(
            sim.ca_pem.as_deref().unwrap().as_bytes(),
        )
        .unwrap()])
        .build()
        .unwrap()
        .get(format!(
            "https://{}/_sim/sessions?closed_before={horizon}",
            sim.host()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let start = first - 600;
    let wanted: Vec<&serde_json::Value> = truth["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["end_time"].as_i64().unwrap() >= start)
        .collect();
    let late = wanted.iter().filter(|s| s["late"] == true).count();
    assert!(late > 100, "{late} late sessions");
    let held: std::collections::BTreeMap<String, i64> = {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let mut statement = conn
            .prepare("SELECT lsid, COUNT(*) FROM session GROUP BY lsid")
            .unwrap();
        statement
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert!(held.values().all(|n| *n == 1));
    let mut missing = 0;
    for s in &wanted {
        missing += usize::from(!held.contains_key(s["lsid"].as_str().unwrap()));
    }
    assert_eq!(missing, 0, "{missing} of {} sessions missing", wanted.len());

    // The digests of sessions long past the recheck mark are forgotten: what is kept is
    // about the last overlap and an hour of sessions, not the day.
    let kept = queue
        .state_keys(&keys::seen_prefix("sim"))
        .await
        .unwrap()
        .len();
    assert!(
        kept < SESSIONS_PER_DAY as usize / 8,
        "{kept} session digests kept"
    );
    let by_lsid = queue
        .state_keys(&keys::seen_by_lsid_prefix("sim"))
        .await
        .unwrap();
    assert!(by_lsid.is_empty(), "{by_lsid:?} kept");

    // What it cost: sessions fetched and written per new session.
    let new = rows(&db, "SELECT COUNT(*) FROM session") as f64;
    let fetched = (after.sessions_returned - before.sessions_returned) as f64;
    let written = (rows(&db, "SELECT n FROM writes") + first_run_rows) as f64;
    let report_requests = after.requests.get("SupportSession").copied().unwrap_or(0)
        - before.requests.get("SupportSession").copied().unwrap_or(0);
    println!(
        "{runs} runs in {elapsed:?}: {new} sessions, {:.3} fetched and {:.3} written per session, {:.2} report requests per run, {:.0} report bytes per session",
        fetched / new,
        written / new,
        report_requests as f64 / f64::from(runs),
        (after.report_bytes - before.report_bytes) as f64 / new,
    );
    assert!(fetched / new <= 2.05, "fetched {fetched} for {new}");
    assert!(written / new <= 1.05, "written {written} for {new}");
    // Two requests a run (the recheck and what is new), not more.
    assert!(
        report_requests <= u64::from(runs) * 2 + 10,
        "{report_requests}"
    );
    // The window length followed the bodies: about what holds a quarter of
    // max_body_bytes (64 MiB) at the rate the appliance wrote (each second asked twice).
    let length = queue
        .state_get::<u64>(&keys::window_length("sim", Report::SupportSession))
        .await
        .unwrap()
        .expect("a learnt length") as f64;
    let per_second =
        (after.report_bytes - before.report_bytes) as f64 / (2.0 * 60.0 * f64::from(runs));
    let ideal = (16 << 20) as f64 / per_second;
    assert!(
        length > ideal / 2.0 && length < ideal * 2.0,
        "learnt {length} s for {per_second:.0} bytes a second (ideal {ideal:.0} s)"
    );

    stop.cancel();
    let mut tasks = stages.tasks;
    while tasks.join_next().await.is_some() {}
    sim.shutdown().await;
}
