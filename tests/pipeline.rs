//! The whole pipeline as operators run it: `btic simulate` and `btic run` as child
//! processes, real PostgreSQL, SQLite and files. The oracle everywhere: the
//! destinations hold exactly the simulator's ground truth, each session once, and the
//! files carry the simulator's content digest.

mod rig;

use std::path::Path;
use std::time::Duration;

use rig::{
    Daemon, Pg, Sim, eventually, free_port, json_files, other_files, pipeline, sqlite_lsids,
};

const SIM_ARGS: &[&str] = &[
    "--days",
    "1",
    "--sessions-per-day",
    "150",
    "--recording-bytes",
    "4096",
];

fn files_destination(dir: &Path, name: &str) -> String {
    format!(
        "[[destination]]\nname = \"{name}\"\ntype = \"files\"\ndirectory = \"{}\"\nformat = \"json\"\n",
        dir.join(name).display()
    )
}

fn sqlite_destination(dir: &Path) -> String {
    format!(
        "[[destination]]\nname = \"lite\"\ntype = \"sqlite\"\npath = \"{}\"\nstore_system_information = true\n",
        dir.join("btic.sqlite").display()
    )
}

fn postgres_destination(pg: &Pg) -> String {
    format!(
        "[[destination]]\nname = \"pg\"\ntype = \"postgres\"\nurl = \"{}\"\nstore_system_information = true\n",
        pg.url
    )
}

fn transfer(destination: &str, data: &str) -> String {
    format!(
        "[[schedule.transfer]]\nsite = \"sim\"\ndestination = \"{destination}\"\ndata = {data}\n"
    )
}

/// Waits until the files destination `archive` holds every session of `truth` with its
/// digest; panics with the difference otherwise.
async fn wait_for_files(
    dir: &Path,
    truth: &std::collections::BTreeMap<String, String>,
    log: &Path,
) {
    let ok = eventually(Duration::from_secs(120), async || {
        let (files, _) = json_files(&dir.join("archive"));
        truth
            .iter()
            .all(|(lsid, digest)| files.get(lsid) == Some(digest))
    })
    .await;
    if !ok {
        let (files, _) = json_files(&dir.join("archive"));
        let missing: Vec<_> = truth
            .keys()
            .filter(|l| !files.contains_key(*l))
            .take(5)
            .collect();
        let wrong: Vec<_> = truth
            .iter()
            .filter(|(l, d)| files.get(*l).is_some_and(|f| f != *d))
            .map(|(l, _)| l)
            .take(5)
            .collect();
        panic!(
            "files destination lacks the truth: {} of {} missing (e.g. {missing:?}), wrong digest {wrong:?}\nlog:\n{}",
            truth.keys().filter(|l| !files.contains_key(*l)).count(),
            truth.len(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
}

/// The closed sessions at the end must include everything a destination holds.
async fn assert_nothing_extra(sim: &Sim, held: impl Iterator<Item = String>) {
    let (_, all_closed) = sim.truth(None).await;
    let extra: Vec<String> = held.filter(|l| !all_closed.contains_key(l)).collect();
    assert!(
        extra.is_empty(),
        "sessions not in the ground truth: {extra:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_delivers_the_ground_truth_to_postgres_sqlite_and_files_at_once() {
    let Some(pg) = Pg::create("the_daemon_delivers_the_ground_truth").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), SIM_ARGS);
    let destinations = [
        postgres_destination(&pg),
        sqlite_destination(dir.path()),
        files_destination(dir.path(), "archive"),
    ]
    .join("\n");
    let transfers = [
        transfer("pg", "[\"sessions\"]"),
        transfer("lite", "[\"sessions\"]"),
        transfer("archive", "[\"sessions\", \"recordings\"]"),
    ]
    .join("");
    let config = pipeline(dir.path(), &sim, free_port(), &destinations, &transfers);
    let log = dir.path().join("run.log");
    let daemon = Daemon::start(&config, &log);

    let (now, _) = sim.truth(None).await;
    let (_, truth) = sim.truth(Some(now - 10)).await;
    assert!(
        truth.len() > 100,
        "the simulator should have history: {}",
        truth.len()
    );
    wait_for_files(dir.path(), &truth, &log).await;
    let sqlite = dir.path().join("btic.sqlite");
    assert!(
        eventually(Duration::from_secs(60), async || {
            let rows = sqlite_lsids(&sqlite);
            truth.keys().all(|l| rows.contains_key(l))
        })
        .await,
        "sqlite lacks sessions"
    );
    assert!(
        eventually(Duration::from_secs(60), async || {
            let rows = pg.lsids().await;
            truth.keys().all(|l| rows.contains_key(l))
        })
        .await,
        "postgres lacks sessions"
    );
    // Recordings: every recording-bearing closed session has at least one file.
    assert!(
        eventually(Duration::from_secs(60), async || {
            let (files, _) = other_files(&dir.path().join("archive"));
            files
                .iter()
                .any(|f| f.ends_with(".flv") || f.ends_with(".mp4"))
        })
        .await,
        "no recordings arrived"
    );
    let (code, took) = daemon.terminate();
    assert_eq!(
        code,
        Some(0),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");

    let sqlite_rows = sqlite_lsids(&sqlite);
    let pg_rows = pg.lsids().await;
    assert!(sqlite_rows.values().all(|n| *n == 1));
    assert!(pg_rows.values().all(|n| *n == 1));
    let (files, numbered) = json_files(&dir.path().join("archive"));
    assert!(numbered.is_empty(), "numbered duplicates: {numbered:?}");
    let (_, numbered) = other_files(&dir.path().join("archive"));
    assert!(
        numbered.is_empty(),
        "numbered duplicate recordings: {numbered:?}"
    );
    assert_nothing_extra(&sim, sqlite_rows.into_keys()).await;
    assert_nothing_extra(&sim, pg_rows.into_keys()).await;
    assert_nothing_extra(&sim, files.into_keys()).await;
    pg.drop_now().await;
}

/// Runs the daemon against a simulator started with `SIM_ARGS` and `extra` into a files
/// destination taking `data`, until it holds the ground truth; then stops it cleanly.
async fn run_into_files(
    extra: &[&str],
    data: &str,
) -> (tempfile::TempDir, Sim, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = SIM_ARGS.to_vec();
    args.extend(extra);
    let sim = Sim::start(dir.path(), &args);
    let config = pipeline(
        dir.path(),
        &sim,
        free_port(),
        &files_destination(dir.path(), "archive"),
        &transfer("archive", data),
    );
    let log = dir.path().join("run.log");
    let daemon = Daemon::start(&config, &log);
    let (now, _) = sim.truth(None).await;
    let (_, truth) = sim.truth(Some(now - 10)).await;
    wait_for_files(dir.path(), &truth, &log).await;
    let (code, _) = daemon.terminate();
    assert_eq!(
        code,
        Some(0),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    (dir, sim, config)
}

async fn skewed_run(skew: &str) {
    let (dir, sim, _) = run_into_files(&["--skew", skew], "[\"sessions\"]").await;
    let (files, numbered) = json_files(&dir.path().join("archive"));
    assert!(numbered.is_empty());
    assert_nothing_extra(&sim, files.into_keys()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_appliance_clock_two_hours_behind_loses_nothing_and_fetches_nothing_from_the_future() {
    skewed_run("-7200").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_appliance_clock_two_hours_ahead_loses_nothing() {
    skewed_run("7200").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_at_twenty_percent_are_retried_and_never_dead_lettered() {
    let faults = [
        "--fault-5xx",
        "0.05",
        "--fault-429",
        "0.05",
        "--fault-reset",
        "0.05",
        "--fault-truncate",
        "0.05",
    ];
    let (_dir, _sim, config) = run_into_files(&faults, "[\"sessions\", \"recordings\"]").await;
    let letters = rig::dead_letters(&config);
    assert!(letters.is_empty(), "dead letters: {letters:?}");
}

/// `btic_dead_letter_items{destination="pg"}` as the daemon's `/metrics` shows it.
/// The value of the first sample of the daemon's `/metrics` whose line starts with
/// `series` (a metric name with its labels).
async fn metric(port: u16, series: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn dead_gauge(port: u16) -> Option<f64> {
    metric(port, "btic_dead_letter_items{destination=\"pg\"}").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_delivers_dead_letters_once_after_the_destination_is_fixed() {
    let Some(pg) = Pg::create("replay_delivers_dead_letters_once").await else {
        return;
    };
    // Make the destination refuse every session: the schema exists (btic's own), with
    // a constraint nothing satisfies.
    {
        let dir = tempfile::tempdir().unwrap();
        let sim = Sim::start(dir.path(), &["--days", "1", "--sessions-per-day", "10"]);
        let config = pipeline(
            dir.path(),
            &sim,
            free_port(),
            &postgres_destination(&pg),
            &transfer("pg", "[\"sessions\"]"),
        );
        let out = rig::btic()
            .args(["check", "--config"])
            .arg(&config)
            .env("BTIC_TEST_SECRET", "demo-secret")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let client = pg.client().await;
    client
        .batch_execute("ALTER TABLE session ADD CONSTRAINT refuse_all CHECK (lsid = 'none')")
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), SIM_ARGS);
    let port = free_port();
    let config = pipeline(
        dir.path(),
        &sim,
        port,
        &postgres_destination(&pg),
        &transfer("pg", "[\"sessions\"]"),
    );
    let log = dir.path().join("run.log");
    let daemon = Daemon::start(&config, &log);
    let (now, _) = sim.truth(None).await;
    let (_, truth) = sim.truth(Some(now - 10)).await;
    assert!(
        eventually(Duration::from_secs(90), async || {
            rig::dead_letters(&config).len() >= truth.len()
        })
        .await,
        "sessions did not reach the dead letter: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(pg.lsids().await.is_empty());

    assert!(
        eventually(Duration::from_secs(15), async || {
            dead_gauge(port)
                .await
                .is_some_and(|n| n as usize >= truth.len())
        })
        .await,
        "btic_dead_letter_items{{destination=\"pg\"}} is {:?}",
        dead_gauge(port).await
    );
    client
        .batch_execute("ALTER TABLE session DROP CONSTRAINT refuse_all")
        .await
        .unwrap();
    // Through the running daemon's admin API.
    let out = rig::btic()
        .args(["replay", "--all", "--destination", "pg", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("replayed "));
    assert!(
        eventually(Duration::from_secs(60), async || {
            let rows = pg.lsids().await;
            truth.keys().all(|l| rows.contains_key(l))
        })
        .await,
        "replayed sessions did not arrive"
    );
    // The dead-letter gauge follows the replay back to zero.
    assert!(
        eventually(Duration::from_secs(15), async || dead_gauge(port).await
            == Some(0.0))
        .await,
        "btic_dead_letter_items{{destination=\"pg\"}} stayed at {:?}",
        dead_gauge(port).await
    );
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
    assert!(pg.lsids().await.values().all(|n| *n == 1));
    assert!(rig::dead_letters(&config).is_empty());
    pg.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_keeps_the_backlog_and_delivers_it_when_the_database_is_back() {
    let Some(pg) = Pg::create("a_postgres_outage_keeps_the_backlog").await else {
        return;
    };
    let admin = pg.client().await;
    drop(admin);
    let block = |allow: bool| {
        let name = pg.name.clone();
        async move {
            let (client, connection) = tokio_postgres::connect(
                "host=127.0.0.1 port=5432 user=postgres dbname=postgres",
                tokio_postgres::NoTls,
            )
            .await
            .unwrap();
            tokio::spawn(connection);
            client
                .batch_execute(&format!(
                    "ALTER DATABASE {name} ALLOW_CONNECTIONS {allow}; SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
                ))
                .await
                .unwrap();
        }
    };
    block(false).await;
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), SIM_ARGS);
    let port = free_port();
    let config = pipeline(
        dir.path(),
        &sim,
        port,
        &postgres_destination(&pg),
        &transfer("pg", "[\"sessions\"]"),
    );
    let log = dir.path().join("run.log");
    let daemon = Daemon::start(&config, &log);
    let (now, _) = sim.truth(None).await;
    let (_, truth) = sim.truth(Some(now - 10)).await;
    // The backlog builds up on disk while the database refuses connections.
    let status = || {
        let out = rig::btic()
            .args(["status", "--json", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()
    };
    // Every session parsed and queued (in bundles of up to 4 for a SQL destination).
    assert!(
        eventually(Duration::from_secs(60), async || {
            let parsed = metric(port, "btic_sessions_parsed_total{site=\"sim\"}").await;
            let queued = status()["queues"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|q| {
                    q["name"] == "deliver/pg"
                        && q["depth"].as_u64().unwrap_or(0) as usize >= truth.len().div_ceil(16)
                });
            parsed.unwrap_or(0.0) as usize >= truth.len() && queued
        })
        .await,
        "the backlog did not build up: {}",
        status()
    );
    // Holding the backlog (retrying the database, new live sessions arriving) does not
    // make the daemon grow: it keeps the backlog on disk, not in memory.
    let at_backlog = daemon.rss_kib().expect("the daemon's VmRSS");
    let mut peak = at_backlog;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        peak = peak.max(daemon.rss_kib().unwrap_or(0));
    }
    println!("daemon VmRSS holding the backlog: {at_backlog} KiB, then at most {peak} KiB");
    assert!(
        peak <= at_backlog + 16 * 1024,
        "memory grew while holding the backlog: {at_backlog} KiB -> {peak} KiB"
    );
    block(true).await;
    assert!(
        eventually(Duration::from_secs(90), async || {
            let rows = pg.lsids().await;
            truth.keys().all(|l| rows.contains_key(l))
        })
        .await,
        "the backlog was not delivered: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
    assert!(pg.lsids().await.values().all(|n| *n == 1));
    pg.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_within_ten_seconds_and_a_restart_finishes_the_work() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(
        dir.path(),
        &[
            "--days",
            "2",
            "--sessions-per-day",
            "300",
            "--recording-bytes",
            "262144",
        ],
    );
    let config = pipeline(
        dir.path(),
        &sim,
        free_port(),
        &files_destination(dir.path(), "archive"),
        &transfer("archive", "[\"sessions\", \"recordings\"]"),
    );
    let log = dir.path().join("run.log");
    let daemon = Daemon::start(&config, &log);
    // Stop it in the middle of the work: some sessions written, recordings still coming.
    assert!(
        eventually(Duration::from_secs(60), async || {
            json_files(&dir.path().join("archive")).0.len() > 50
        })
        .await
    );
    let (code, took) = daemon.terminate();
    assert_eq!(
        code,
        Some(0),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(took < Duration::from_secs(10), "SIGTERM took {took:?}");

    let daemon = Daemon::start(&config, &log);
    let (now, _) = sim.truth(None).await;
    let (_, truth) = sim.truth(Some(now - 10)).await;
    wait_for_files(dir.path(), &truth, &log).await;
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
    let (_, numbered) = json_files(&dir.path().join("archive"));
    assert!(numbered.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_in_progress_reach_sql_destinations_and_files_get_only_ended_ones() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), SIM_ARGS);
    let destinations = [
        sqlite_destination(dir.path()),
        files_destination(dir.path(), "archive"),
    ]
    .join("\n");
    let transfers = [
        format!(
            "{}include_in_progress = true\n",
            transfer("lite", "[\"sessions\"]")
        ),
        format!(
            "{}include_in_progress = true\n",
            transfer("archive", "[\"sessions\"]")
        ),
    ]
    .join("");
    let config = pipeline(dir.path(), &sim, free_port(), &destinations, &transfers);
    let log = dir.path().join("run.log");
    let daemon = Daemon::start(&config, &log);
    let (now, _) = sim.truth(None).await;
    let (_, truth) = sim.truth(Some(now - 10)).await;
    wait_for_files(dir.path(), &truth, &log).await;
    let sqlite = dir.path().join("btic.sqlite");
    let open_rows = || {
        let conn = rusqlite::Connection::open(&sqlite).unwrap();
        let mut stmt = conn
            .prepare("SELECT lsid FROM session WHERE end_time IS NULL")
            .unwrap();
        stmt.query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .flatten()
            .collect::<Vec<String>>()
    };
    assert!(
        eventually(Duration::from_secs(60), async || !open_rows().is_empty()).await,
        "no session in progress reached SQLite: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
    let out = rig::btic()
        .args(["status", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        status["sites"][0]["open_sessions"].as_u64().unwrap_or(0) > 0,
        "the sessions in progress are not tracked: {status}"
    );
    // In progress in SQLite, and not (yet) a file; every closed session is both.
    let (files, numbered) = json_files(&dir.path().join("archive"));
    assert!(numbered.is_empty());
    let (_, closed) = sim.truth(None).await;
    for lsid in open_rows() {
        assert!(
            !files.contains_key(&lsid) || closed.contains_key(&lsid),
            "{lsid}"
        );
    }
    let rows = sqlite_lsids(&sqlite);
    assert!(truth.keys().all(|l| rows.contains_key(l)));
    assert!(rows.values().all(|n| *n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_removes_spool_files_that_no_item_refers_to() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), SIM_ARGS);
    let config = pipeline(
        dir.path(),
        &sim,
        free_port(),
        &files_destination(dir.path(), "archive"),
        &transfer("archive", "[\"sessions\", \"recordings\"]"),
    );
    // Left behind by a crash between a download and its hand-off.
    let spool = dir.path().join("state").join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let orphan = spool.join("orphan.flv");
    std::fs::write(&orphan, b"left behind").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let log = dir.path().join("run.log");
    let daemon = Daemon::start(&config, &log);
    assert!(
        eventually(Duration::from_secs(30), async || !orphan.exists()).await,
        "the orphan spool file is still there: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
    assert!(
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("removed spool files no queue item refers to")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presentations_and_their_recordings_reach_a_files_destination_once() {
    let dir = tempfile::tempdir().unwrap();
    // Two days of history at 300 sessions a day: 15 presentations a day.
    let sim = Sim::start(
        dir.path(),
        &[
            "--days",
            "2",
            "--sessions-per-day",
            "300",
            "--recording-bytes",
            "4096",
        ],
    );
    let config = pipeline(
        dir.path(),
        &sim,
        free_port(),
        &files_destination(dir.path(), "archive"),
        &transfer(
            "archive",
            "[\"presentations\", \"presentation_recordings\"]",
        ),
    );
    let log = dir.path().join("run.log");
    let daemon = Daemon::start(&config, &log);
    let (now, _) = sim.truth(None).await;
    let truth = sim.presentations(now - 10).await;
    assert!(truth.len() >= 20, "presentations: {}", truth.len());
    assert!(truth.values().any(|p| p.recorded));
    assert!(truth.values().any(|p| !p.recorded));
    let archive = dir.path().join("archive");
    // `<host>-presentation-<lsid>.xml` holding the element as the report wrote it, and
    // `<host>-presentation-<lsid>.mp4` for each recorded one.
    let complete = || {
        let names: Vec<String> = std::fs::read_dir(&archive)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        truth.iter().all(|(lsid, p)| {
            let data = names
                .iter()
                .find(|n| n.ends_with(&format!("-presentation-{lsid}.xml")))
                .and_then(|n| std::fs::read_to_string(archive.join(n)).ok());
            let has_file = names
                .iter()
                .any(|n| n.ends_with(&format!("-presentation-{lsid}.mp4")));
            data.is_some_and(|d| d.contains(p.xml.as_str())) && has_file == p.recorded
        })
    };
    let arrived = eventually(Duration::from_secs(120), async || complete()).await;
    assert!(
        arrived,
        "the files destination lacks presentations\nlog:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
    let names: Vec<String> = std::fs::read_dir(&archive)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    let recorded = truth.values().filter(|p| p.recorded).count();
    let (_, numbered) = other_files(&archive);
    assert!(numbered.is_empty(), "numbered duplicates: {numbered:?}");
    // Nothing but the presentations that ended (a few more may have ended meanwhile).
    let xml = names.iter().filter(|n| n.ends_with(".xml")).count();
    let mp4 = names.iter().filter(|n| n.ends_with(".mp4")).count();
    assert!(xml >= truth.len() && xml <= truth.len() + 2, "{names:?}");
    assert!(mp4 >= recorded && mp4 <= recorded + 2, "{names:?}");
    assert_eq!(names.len(), xml + mp4, "{names:?}");
    let sample = names.iter().find(|n| n.ends_with(".xml")).unwrap();
    let text = std::fs::read_to_string(archive.join(sample)).unwrap();
    assert!(
        text.starts_with(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presentation_session_list xmlns=\""
        ),
        "{text}"
    );
    assert!(
        rig::dead_letters(&config).is_empty(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_refused_inside_a_bundle_goes_alone_to_the_dead_letter_and_the_rest_arrive() {
    let Some(pg) = Pg::create("a_session_refused_inside_a_bundle").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), SIM_ARGS);
    let config = pipeline(
        dir.path(),
        &sim,
        free_port(),
        &postgres_destination(&pg),
        &transfer("pg", "[\"sessions\"]"),
    );
    // btic's schema, then a constraint that refuses about one session in sixteen (LSIDs
    // are hex), so most bundles hold both kinds.
    let out = rig::btic()
        .args(["check", "--config"])
        .arg(&config)
        .env("BTIC_TEST_SECRET", "demo-secret")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    pg.client()
        .await
        .batch_execute("ALTER TABLE session ADD CONSTRAINT refuse_zero CHECK (lsid NOT LIKE '0%')")
        .await
        .unwrap();
    let log = dir.path().join("run.log");
    let daemon = Daemon::start(&config, &log);
    let (now, _) = sim.truth(None).await;
    let (_, truth) = sim.truth(Some(now - 10)).await;
    let (refused, accepted): (Vec<&String>, Vec<&String>) =
        truth.keys().partition(|l| l.starts_with('0'));
    assert!(!refused.is_empty() && accepted.len() > 100);
    let dead_lsids = || {
        rig::dead_letters(&config)
            .iter()
            .filter_map(|d| {
                let out = rig::btic()
                    .args(["dead-letter", "show", "--config"])
                    .arg(&config)
                    .arg(d["id"].to_string())
                    .output()
                    .ok()?;
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
                Some((
                    v["payload"]["kind"].as_str()?.to_string(),
                    v["payload"]["lsid"].as_str()?.to_string(),
                ))
            })
            .collect::<Vec<_>>()
    };
    let arrived = eventually(Duration::from_secs(90), async || {
        let rows = pg.lsids().await;
        accepted.iter().all(|l| rows.contains_key(*l))
            && rig::dead_letters(&config).len() >= refused.len()
    })
    .await;
    assert!(
        arrived,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
    let rows = pg.lsids().await;
    assert!(rows.values().all(|n| *n == 1));
    assert!(rows.keys().all(|l| !l.starts_with('0')));
    // Each refused session is a dead letter of its own; no bundle is.
    let dead = dead_lsids();
    assert!(dead.iter().all(|(kind, _)| kind == "session"), "{dead:?}");
    let mut lsids: Vec<&str> = dead.iter().map(|(_, l)| l.as_str()).collect();
    lsids.sort();
    lsids.dedup();
    assert_eq!(
        lsids.len(),
        dead.len(),
        "a session dead-lettered twice: {dead:?}"
    );
    assert!(
        refused.iter().all(|l| lsids.contains(&l.as_str())),
        "refused {refused:?}, dead {lsids:?}"
    );

    // `btic dead-letter discard`: one by id through the running daemon's admin API, then
    // the rest of the destination's straight from the state directory; an id that is
    // gone is an error.
    let discard = |args: &[&str]| {
        rig::btic()
            .args(["dead-letter", "discard", "--config"])
            .arg(&config)
            .args(args)
            .output()
            .unwrap()
    };
    let ids = || -> Vec<String> {
        rig::dead_letters(&config)
            .iter()
            .map(|d| d["id"].to_string())
            .collect()
    };
    let daemon = Daemon::start(&config, &dir.path().join("run-again.log"));
    let answering = eventually(Duration::from_secs(30), async || {
        rig::btic()
            .args(["healthcheck", "--config"])
            .arg(&config)
            .output()
            .is_ok_and(|o| o.status.success())
    })
    .await;
    assert!(answering, "the daemon did not answer again");
    let first = ids()[0].clone();
    let one = discard(&[&first]);
    assert!(one.status.success(), "{one:?}");
    assert_eq!(
        String::from_utf8_lossy(&one.stdout).trim(),
        "discarded 1 dead letter"
    );
    assert!(!ids().contains(&first));
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
    let again = discard(&[&first]);
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    let left = ids().len();
    let rest = discard(&["--all", "--destination", "pg"]);
    assert!(rest.status.success(), "{rest:?}");
    assert_eq!(
        String::from_utf8_lossy(&rest.stdout).trim(),
        format!(
            "discarded {left} dead letter{}",
            if left == 1 { "" } else { "s" }
        )
    );
    assert!(ids().is_empty());
    pg.drop_now().await;
}

/// Rewrites a key of the `[pipeline]` table of `config` (`max_window = "12h"` by default).
fn set_pipeline_key(config: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(config).unwrap();
    assert!(text.contains(from), "{from} not in the pipeline file");
    std::fs::write(config, text.replace(from, to)).unwrap();
}

/// An appliance as real ones answer (the simulator's default: empty windows as a root
/// `<error>`, nested permissions, chunked answers), a clock an hour ahead, transient
/// faults, and hour-long windows of which most are empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_delivers_everything_through_empty_hours_from_an_appliance_answering_like_the_captures()
 {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(
        dir.path(),
        &[
            "--days",
            "1",
            "--sessions-per-day",
            "8",
            "--skew",
            "3600",
            "--fault-5xx",
            "0.05",
            "--fault-truncate",
            "0.05",
            "--fault-reset",
            "0.05",
        ],
    );
    let config = pipeline(
        dir.path(),
        &sim,
        free_port(),
        &sqlite_destination(dir.path()),
        &transfer("lite", "[\"sessions\"]"),
    );
    set_pipeline_key(&config, "max_window = \"12h\"", "max_window = \"1h\"");
    let log = dir.path().join("run.log");
    let daemon = Daemon::start(&config, &log);
    let (now, _) = sim.truth(None).await;
    let (_, truth) = sim.truth(Some(now - 10)).await;
    assert!(truth.len() >= 4, "too few sessions to mean anything");
    let db = dir.path().join("btic.sqlite");
    assert!(
        eventually(Duration::from_secs(120), async || {
            let rows = sqlite_lsids(&db);
            truth.keys().all(|l| rows.contains_key(l))
        })
        .await,
        "not every session arrived: {} of {}\nlog:\n{}",
        sqlite_lsids(&db).len(),
        truth.len(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    // About seventy windows of three days were fetched, most of them empty.
    assert!(
        !log_text.contains("moved to the dead letter"),
        "an empty window was taken for a failure:\n{log_text}"
    );
    assert!(rig::dead_letters(&config).is_empty());
    assert!(sqlite_lsids(&db).values().all(|n| *n == 1));
    assert_nothing_extra(&sim, sqlite_lsids(&db).into_keys()).await;
}

/// The windows `[start, end)` of the fetch items in the dead letter (UNIX seconds), from
/// the `window` metadata `btic dead-letter list` shows.
fn refused_windows(letters: &[serde_json::Value]) -> Vec<(i64, i64)> {
    letters
        .iter()
        .filter(|l| l["metadata"]["stage"] == "fetch")
        .map(|l| {
            let window = l["metadata"]["window"].as_str().expect("a window");
            let range = window
                .split_once('[')
                .and_then(|(_, r)| r.strip_suffix(')'))
                .expect("[start, end)");
            let (a, b) = range.split_once(", ").unwrap();
            let t = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp();
            (t(a), t(b))
        })
        .collect()
}

/// A window the appliance refuses with an `<error>` btic does not know: the site goes
/// on, the window waits in the dead letter with the appliance's text, and `btic replay`
/// asks for it again once the appliance answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_window_waits_in_the_dead_letter_and_replay_delivers_its_sessions_once() {
    a_bad_window_waits_in_the_dead_letter(
        "--refuse-window",
        "The report could not be generated for the requested range.",
    )
    .await;
}

/// A window whose body is not well-formed: the sessions before the fault are handed
/// on, the request waits in the dead letter with the byte offset, and `btic replay`
/// asks the appliance again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_body_sends_its_request_to_the_dead_letter_and_replay_fetches_it_again() {
    a_bad_window_waits_in_the_dead_letter("--malform-window", "parsing XML body at byte").await;
}

/// A daemon whose appliance answers one window wrongly (`flag`: the simulator option)
/// delivers everything else, keeps the window in the dead letter with a reason holding
/// `reason`, and delivers its sessions once after a replay.
async fn a_bad_window_waits_in_the_dead_letter(flag: &str, reason: &str) {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--days", "1", "--sessions-per-day", "300"]);
    // The end of a session about six hours ago: the window that holds it answers wrongly.
    let (now, _) = sim.truth(None).await;
    let refused_at = sim
        .truth_with_end(now)
        .await
        .values()
        .map(|(_, end)| *end)
        .filter(|end| *end < now - 6 * 3600)
        .max()
        .expect("a session six hours ago");
    match flag {
        "--refuse-window" => sim.window_faults(&[refused_at], &[]).await,
        _ => sim.window_faults(&[], &[refused_at]).await,
    }
    let destinations = [
        sqlite_destination(dir.path()),
        files_destination(dir.path(), "archive"),
    ]
    .join("\n");
    let transfers = [
        transfer("lite", "[\"sessions\"]"),
        transfer("archive", "[\"sessions\"]"),
    ]
    .join("");
    let port = free_port();
    let config = pipeline(dir.path(), &sim, port, &destinations, &transfers);
    set_pipeline_key(&config, "max_window = \"12h\"", "max_window = \"1h\"");
    let log = dir.path().join("run.log");
    let daemon = Daemon::start(&config, &log);
    let (now, _) = sim.truth(None).await;
    let truth = sim.truth_with_end(now - 10).await;
    let db = dir.path().join("btic.sqlite");

    // Every session outside the refused windows arrives; the windows wait.
    let mut windows = Vec::new();
    let arrived = eventually(Duration::from_secs(120), async || {
        windows = refused_windows(&rig::dead_letters(&config));
        let rows = sqlite_lsids(&db);
        !windows.is_empty()
            && truth.iter().all(|(lsid, (_, end))| {
                rows.contains_key(lsid) || windows.iter().any(|(a, b)| (*a..*b).contains(end))
            })
    })
    .await;
    assert!(
        arrived,
        "windows {windows:?}; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        windows.iter().any(|(a, b)| (*a..*b).contains(&refused_at)),
        "{windows:?} does not hold {refused_at}"
    );
    let letters = rig::dead_letters(&config);
    for letter in letters.iter().filter(|l| l["metadata"]["stage"] == "fetch") {
        assert!(letter["queue"] == "fetch/sim", "{letter}");
        assert_eq!(letter["metadata"]["report"], "SupportSession");
        let error = letter["last_error"].as_str().unwrap();
        assert!(error.contains(reason), "the reason: {error}");
    }
    // Sessions that only the refused window holds are missing (each stretch of a
    // catch-up is asked for once). A refused window is halved down to the minute that
    // holds the refusal, so only that minute waits.
    let rows = sqlite_lsids(&db);
    let only_refused: Vec<&String> = truth
        .iter()
        .filter(|(_, (_, end))| windows.iter().any(|(a, b)| (*a..*b).contains(end)))
        .map(|(lsid, _)| lsid)
        .collect();
    assert!(!only_refused.is_empty());
    if flag == "--refuse-window" {
        assert!(windows.iter().all(|(a, b)| b - a <= 60), "{windows:?}");
    }
    // A malformed body hands on the sessions before the fault, so only a refusal keeps
    // every one of them out.
    if flag == "--refuse-window" {
        assert!(only_refused.iter().all(|l| !rows.contains_key(*l)));
    } else {
        assert!(only_refused.iter().any(|l| !rows.contains_key(*l)));
    }
    // Its metric covers fetch items too.
    assert!(
        eventually(Duration::from_secs(15), async || {
            metric(port, "btic_dead_letter_items{destination=\"fetch/sim\"}")
                .await
                .is_some_and(|n| n as usize == windows.len())
        })
        .await
    );

    // The appliance answers again; replay asks for the windows once more.
    sim.window_faults(&[], &[]).await;
    rig::replay_all(&config);
    let files = dir.path().join("archive");
    assert!(
        eventually(Duration::from_secs(60), async || {
            let rows = sqlite_lsids(&db);
            let (held, _) = json_files(&files);
            truth
                .keys()
                .all(|l| rows.contains_key(l) && held.contains_key(l))
        })
        .await,
        "the replayed windows' sessions did not arrive; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
    assert!(rig::dead_letters(&config).is_empty());
    assert!(sqlite_lsids(&db).values().all(|n| *n == 1), "once each");
    let (held, numbered) = json_files(&files);
    assert!(numbered.is_empty(), "no second copy: {numbered:?}");
    for (lsid, (digest, _)) in &truth {
        assert_eq!(held.get(lsid), Some(digest), "{lsid}");
    }
}
