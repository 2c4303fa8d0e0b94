//! `btic backfill` as operators run it: beside a live `btic run` (through its admin API)
//! and on its own (stage workers in the command's process), with `btic simulate` as the
//! appliance and its ground truth as the oracle.

mod rig;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use rig::{Daemon, Sim, btic, eventually, free_port, json_files, pipeline, sqlite_lsids};

const SIM_ARGS: &[&str] = &["--days", "1", "--sessions-per-day", "150"];
/// 20 presentations a day, every other one recorded.
const PRESENTATIONS_SIM_ARGS: &[&str] = &[
    "--days=2",
    "--sessions-per-day=400",
    "--recording-bytes=4096",
];

fn sqlite_destination(dir: &Path, name: &str) -> String {
    format!(
        "[[destination]]\nname = \"{name}\"\ntype = \"sqlite\"\npath = \"{}\"\n",
        dir.join(format!("{name}.sqlite")).display()
    )
}

fn files_destination(dir: &Path, name: &str) -> String {
    format!(
        "[[destination]]\nname = \"{name}\"\ntype = \"files\"\ndirectory = \"{}\"\nformat = \"json\"\n",
        dir.join(name).display()
    )
}

fn transfer(destination: &str) -> String {
    format!(
        "[[schedule.transfer]]\nsite = \"sim\"\ndestination = \"{destination}\"\ndata = [\"sessions\"]\n"
    )
}

/// The pipeline file with the live lane starting `start_from` back.
fn config(dir: &Path, sim: &Sim, destinations: &str, transfers: &str, start_from: &str) -> PathBuf {
    let path = pipeline(dir, sim, free_port(), destinations, transfers);
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "start_from = \"3d\"",
        &format!("start_from = \"{start_from}\""),
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn rfc3339(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0).unwrap().to_rfc3339()
}

/// The pipeline file with one files destination, `archive`, taking the site's sessions.
fn archive_config(dir: &Path, sim: &Sim) -> PathBuf {
    config(
        dir,
        sim,
        &files_destination(dir, "archive"),
        &transfer("archive"),
        "3d",
    )
}

/// `--site sim --from FROM --to TO` followed by `more`.
fn range_args(from: i64, to: i64, more: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--site",
        "sim",
        "--from",
        &rfc3339(from),
        "--to",
        &rfc3339(to),
    ]
    .map(String::from)
    .to_vec();
    args.extend(more.iter().map(|a| a.to_string()));
    args
}

/// Runs `btic backfill` with `args` and waits for it (at most `limit`).
fn backfill<S: AsRef<std::ffi::OsStr>>(config: &Path, args: &[S], limit: Duration) -> Output {
    let mut child = btic()
        .arg("backfill")
        .arg("--config")
        .arg(config)
        .args(args)
        .env("BTIC_TEST_SECRET", "demo-secret")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// The truth's sessions that ended in `[from, to)`: lsid -> digest.
fn in_range(
    truth: &BTreeMap<String, (String, i64)>,
    from: i64,
    to: i64,
) -> BTreeMap<String, String> {
    truth
        .iter()
        .filter(|(_, (_, end))| *end >= from && *end < to)
        .map(|(lsid, (digest, _))| (lsid.clone(), digest.clone()))
        .collect()
}

fn status_json(config: &Path) -> Option<serde_json::Value> {
    let out = btic()
        .args(["status", "--json", "--config"])
        .arg(config)
        .output()
        .unwrap();
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// The live `SupportSession` watermark (UNIX seconds), if there is one.
fn live_watermark(status: &serde_json::Value) -> Option<i64> {
    let w = status["sites"][0]["watermarks"]
        .as_array()?
        .iter()
        .find(|w| w["report"] == "SupportSession")?;
    let t = w["appliance_time"].as_str()?;
    Some(chrono::DateTime::parse_from_rfc3339(t).ok()?.timestamp())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_beside_the_live_daemon_delivers_its_range_once_and_leaves_the_live_watermark_alone()
 {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), SIM_ARGS);
    let destinations = [
        sqlite_destination(dir.path(), "live"),
        sqlite_destination(dir.path(), "back"),
    ]
    .join("\n");
    let config = config(dir.path(), &sim, &destinations, &transfer("live"), "3h");
    let (now, _) = sim.truth(None).await;
    let log = dir.path().join("run.log");
    let _daemon = Daemon::start(&config, &log);
    assert!(
        eventually(Duration::from_secs(60), async || {
            status_json(&config).is_some_and(|s| live_watermark(&s).is_some())
        })
        .await,
        "the daemon did not start its live lane: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    let (from, to) = (now - 20 * 3600, now - 6 * 3600);
    let started = Instant::now();
    let out = backfill(
        &config,
        &range_args(from, to, &["--destination", "back"]),
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "backfill failed: {stdout}\n{stderr}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    println!("backfill beside the daemon took {:?}", started.elapsed());
    assert!(stderr.contains("run by the daemon"), "{stderr}");

    let truth = sim.truth_with_end(now).await;
    let wanted = in_range(&truth, from, to);
    assert!(
        wanted.len() > 50,
        "the range should hold sessions: {}",
        wanted.len()
    );
    let back = sqlite_lsids(&dir.path().join("back.sqlite"));
    assert!(back.values().all(|n| *n == 1), "duplicated rows in back");
    assert_eq!(
        back.keys().collect::<Vec<_>>(),
        wanted.keys().collect::<Vec<_>>(),
        "the backfilled destination must hold exactly the range"
    );
    assert!(
        stdout.contains(&format!("{} sessions delivered", wanted.len())),
        "{stdout}"
    );

    // The live lane went on: it holds its own range, once, and none of the backfill's.
    let live_wanted = in_range(&truth, now - 3 * 3600 + 60, now - 10);
    assert!(
        eventually(Duration::from_secs(60), async || {
            let live = sqlite_lsids(&dir.path().join("live.sqlite"));
            live_wanted.keys().all(|l| live.contains_key(l))
        })
        .await,
        "the live lane did not deliver its range"
    );
    let live = sqlite_lsids(&dir.path().join("live.sqlite"));
    assert!(live.values().all(|n| *n == 1), "duplicated rows in live");
    assert!(
        live.keys().all(|l| !wanted.contains_key(l)),
        "the backfill's sessions reached the live destination"
    );

    // The backfill's windows end at `to`; had it moved the live watermark, the
    // watermark would be at or before `to` until the next live run (a minute away).
    let status = status_json(&config).unwrap();
    let watermark = live_watermark(&status).unwrap();
    assert!(
        watermark > to + 3600,
        "the live watermark moved back to {watermark} (backfill ended at {to})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_without_a_daemon_runs_the_stages_itself_and_a_second_run_reports_the_same_job()
{
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), SIM_ARGS);
    let config = archive_config(dir.path(), &sim);
    let (now, _) = sim.truth(None).await;
    let (from, to) = (now - 22 * 3600, now - 2 * 3600);
    let args = range_args(from, to, &[]);
    let started = Instant::now();
    let out = backfill(&config, &args, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "backfill failed: {stdout}\n{stderr}");
    println!("backfill in process took {:?}", started.elapsed());
    assert!(stderr.contains("working in this process"), "{stderr}");

    let truth = sim.truth_with_end(now).await;
    let wanted = in_range(&truth, from, to);
    assert!(
        wanted.len() > 50,
        "the range should hold sessions: {}",
        wanted.len()
    );
    let (files, numbered) = json_files(&dir.path().join("archive"));
    assert!(numbered.is_empty(), "numbered duplicates: {numbered:?}");
    assert_eq!(
        files, wanted,
        "the files must be the ground truth of the range"
    );
    assert!(
        stdout.contains(&format!(
            "{} sessions delivered, 0 recordings delivered, 0 dead-lettered",
            wanted.len()
        )),
        "{stdout}"
    );

    // The same command names the same, finished job: nothing is fetched again.
    let again = backfill(&config, &args, Duration::from_secs(60));
    assert!(again.status.success());
    assert_eq!(String::from_utf8_lossy(&again.stdout), stdout);
    let (_, numbered) = json_files(&dir.path().join("archive"));
    assert!(numbered.is_empty());

    // A backfill has no live watermark to move.
    let status = status_json(&config).unwrap();
    assert_eq!(live_watermark(&status), None, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_of_presentations_writes_those_of_its_range_and_their_recordings_once() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), PRESENTATIONS_SIM_ARGS);
    let config = archive_config(dir.path(), &sim);
    let (now, _) = sim.truth(None).await;
    let (from, to) = (now - 30 * 3600, now - 2 * 3600);
    let args = range_args(
        from,
        to,
        &["--data", "presentations,presentation_recordings"],
    );
    let out = backfill(&config, &args, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "backfill failed: {stdout}\n{stderr}");

    let wanted: BTreeMap<String, rig::Presentation> = sim
        .presentations(now)
        .await
        .into_iter()
        .filter(|(_, p)| p.end_time >= from && p.end_time < to)
        .collect();
    assert!(
        wanted.len() >= 10,
        "presentations in range: {}",
        wanted.len()
    );
    let recorded = wanted.values().filter(|p| p.recorded).count();
    assert!(recorded > 0 && recorded < wanted.len());
    let archive = dir.path().join("archive");
    let mut names: Vec<String> = std::fs::read_dir(&archive)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    let mut expected: Vec<String> = Vec::new();
    for (lsid, p) in &wanted {
        let xml = names
            .iter()
            .find(|n| n.ends_with(&format!("-presentation-{lsid}.xml")))
            .unwrap_or_else(|| panic!("no file for presentation {lsid}: {names:?}"));
        let text = std::fs::read_to_string(archive.join(xml)).unwrap();
        assert!(
            text.contains(&p.xml),
            "{xml} holds another element:\n{text}"
        );
        expected.push(xml.clone());
        if p.recorded {
            expected.push(xml.replace(".xml", ".mp4"));
        }
    }
    expected.sort();
    // Exactly the range's presentations and recordings: no sessions, no numbered copies.
    assert_eq!(names, expected);
    assert!(
        stdout.contains(&format!(
            "0 sessions delivered, {recorded} recordings delivered, 0 dead-lettered"
        )) && stdout.contains(&format!("{} presentations delivered", wanted.len())),
        "{stdout}"
    );

    // The same command names the same finished job and writes nothing again.
    let again = backfill(&config, &args, Duration::from_secs(60));
    assert!(again.status.success());
    assert_eq!(String::from_utf8_lossy(&again.stdout), stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_backfill_arguments_exit_with_code_two_and_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), &["--days", "1", "--sessions-per-day", "5"]);
    let destinations = [
        sqlite_destination(dir.path(), "lite"),
        files_destination(dir.path(), "archive"),
    ]
    .join("\n");
    let config = config(dir.path(), &sim, &destinations, &transfer("lite"), "3d");
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "--site",
                "nope",
                "--from",
                "2024-01-01",
                "--to",
                "2024-01-02",
            ],
            "no site named \"nope\"",
        ),
        (&["--site", "sim"], "give a range"),
        (&["--site", "sim", "--from", "2024-01-01"], "--to"),
        (
            &[
                "--site",
                "sim",
                "--from",
                "2024-01-02",
                "--to",
                "2024-01-01",
            ],
            "--from must be before --to",
        ),
        (
            &["--site", "sim", "--from", "yesterday", "--to", "2024-01-01"],
            "--from",
        ),
        (
            &[
                "--site",
                "sim",
                "--from",
                "2024-01-01",
                "--to",
                "2024-01-02",
                "--lsid",
                "x",
            ],
            "cannot be used with",
        ),
        (
            &["--site", "sim", "--lsid", "x", "--destination", "gone"],
            "no destination named \"gone\"",
        ),
        (
            &["--site", "sim", "--lsid", "x", "--data", "backups"],
            "cannot be backfilled",
        ),
        (
            &[
                "--site",
                "sim",
                "--lsid",
                "x",
                "--destination",
                "lite",
                "--data",
                "recordings",
            ],
            "only to files destinations",
        ),
        (
            &["--site", "sim", "--lsid", "x", "--data", "presentations"],
            "not by --lsid",
        ),
        (
            &[
                "--site",
                "sim",
                "--from",
                "2024-01-01",
                "--to",
                "2024-01-02",
                "--destination",
                "lite",
                "--data",
                "presentations",
            ],
            "presentations go only to files destinations",
        ),
    ];
    for (args, message) in cases {
        let out = backfill(&config, args, Duration::from_secs(30));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    // Nothing was started: no state directory.
    assert!(!dir.path().join("state").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_killed_at_any_moment_resumes_when_run_again_and_delivers_each_session_once() {
    let dir = tempfile::tempdir().unwrap();
    // Slow answers and short windows stretch the job so the kills land inside it.
    let mut args = SIM_ARGS.to_vec();
    args.extend(["--fault-slow", "0.3", "--slow-seconds", "0.2"]);
    let sim = Sim::start(dir.path(), &args);
    let config = archive_config(dir.path(), &sim);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("max_window = \"12h\"", "max_window = \"20m\"");
    std::fs::write(&config, text).unwrap();
    let (now, _) = sim.truth(None).await;
    let (from, to) = (now - 22 * 3600, now - 2 * 3600);
    let args = range_args(from, to, &[]);

    let mut interrupted = 0;
    for delay_ms in [300, 700, 1200, 1800] {
        let mut child = btic()
            .arg("backfill")
            .arg("--config")
            .arg(&config)
            .args(&args)
            .env("BTIC_TEST_SECRET", "demo-secret")
            .env("RUST_LOG", "off")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        if child.try_wait().unwrap().is_none() {
            interrupted += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    println!("{interrupted} of 4 runs were killed before they finished");
    assert!(interrupted > 0, "the job was too quick to interrupt");

    let out = backfill(&config, &args, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let truth = sim.truth_with_end(now).await;
    let wanted = in_range(&truth, from, to);
    let (files, numbered) = json_files(&dir.path().join("archive"));
    assert!(numbered.is_empty(), "numbered duplicates: {numbered:?}");
    assert_eq!(
        files, wanted,
        "the files must be the ground truth of the range"
    );
    // The count survives the kills exactly: each delivery is counted once.
    assert!(
        stdout.contains(&format!(
            "{} sessions delivered, 0 recordings delivered, 0 dead-lettered",
            wanted.len()
        )),
        "{stdout}"
    );
}

/// Backfills `count` of the simulator's closed sessions (every `step`th) by LSID, and
/// `extra` LSIDs, into a SQLite destination `lite`; asserts that exactly the picked ones
/// arrived, once each. Returns the pipeline file, the command's stdout and the picks.
async fn backfill_by_lsid(
    dir: &Path,
    step: usize,
    count: usize,
    extra: &[&str],
) -> (PathBuf, String, Vec<String>) {
    let sim = Sim::start(dir, SIM_ARGS);
    let config = config(
        dir,
        &sim,
        &sqlite_destination(dir, "lite"),
        &transfer("lite"),
        "3d",
    );
    let (now, _) = sim.truth(None).await;
    let truth = sim.truth_with_end(now - 60).await;
    let picked: Vec<String> = truth.keys().step_by(step).take(count).cloned().collect();
    let mut args = vec!["--site", "sim", "--destination", "lite"];
    for lsid in picked
        .iter()
        .map(String::as_str)
        .chain(extra.iter().copied())
    {
        args.extend(["--lsid", lsid]);
    }
    let out = backfill(&config, &args, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = sqlite_lsids(&dir.join("lite.sqlite"));
    let mut expected = picked.clone();
    expected.sort();
    assert_eq!(
        rows.keys().cloned().collect::<Vec<_>>(),
        expected,
        "only the named sessions"
    );
    assert!(rows.values().all(|n| *n == 1));
    (config, stdout, picked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_by_lsid_delivers_exactly_those_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let (_, stdout, _) = backfill_by_lsid(dir.path(), 7, 5, &[]).await;
    assert!(stdout.contains("5 sessions delivered"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_survives_a_killed_daemon_which_finishes_it_after_its_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = SIM_ARGS.to_vec();
    args.extend(["--fault-slow", "0.3", "--slow-seconds", "0.2"]);
    let sim = Sim::start(dir.path(), &args);
    let destinations = [
        sqlite_destination(dir.path(), "live"),
        sqlite_destination(dir.path(), "back"),
    ]
    .join("\n");
    let config = config(dir.path(), &sim, &destinations, &transfer("live"), "1h");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("max_window = \"12h\"", "max_window = \"20m\"");
    std::fs::write(&config, text).unwrap();
    let (now, _) = sim.truth(None).await;
    let (from, to) = (now - 22 * 3600, now - 2 * 3600);
    let args = range_args(from, to, &["--destination", "back"]);
    let log = dir.path().join("run.log");
    let started = || async {
        assert!(
            eventually(Duration::from_secs(60), async || {
                status_json(&config).is_some_and(|s| live_watermark(&s).is_some())
            })
            .await,
            "the daemon did not start"
        );
    };

    let daemon = Daemon::start(&config, &log);
    started().await;
    let mut follower = btic()
        .arg("backfill")
        .arg("--config")
        .arg(&config)
        .args(&args)
        .env("RUST_LOG", "off")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let unfinished = follower.try_wait().unwrap().is_none();
    daemon.kill();
    let status = follower.wait().unwrap();
    println!("killed the daemon with the job unfinished: {unfinished}");
    assert!(unfinished, "the job was too quick to interrupt");
    assert!(
        !status.success(),
        "the follower cannot succeed without its daemon"
    );

    // The restarted daemon resumes the unfinished job by itself, with nobody following.
    let _daemon = Daemon::start(&config, &log);
    started().await;
    let truth = sim.truth_with_end(now).await;
    let wanted = in_range(&truth, from, to);
    assert!(
        eventually(Duration::from_secs(120), async || {
            sqlite_lsids(&dir.path().join("back.sqlite")).len() >= wanted.len()
        })
        .await,
        "the restarted daemon did not finish the job on its own: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("resuming an unfinished backfill job"),
        "the daemon did not say it resumed the job"
    );
    // Running the command again follows (or reports) the same job.
    let out = backfill(&config, &args, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = sqlite_lsids(&dir.path().join("back.sqlite"));
    assert!(back.values().all(|n| *n == 1), "duplicated rows in back");
    assert_eq!(
        back.keys().collect::<Vec<_>>(),
        wanted.keys().collect::<Vec<_>>()
    );
    assert!(
        stdout.contains(&format!("{} sessions delivered", wanted.len())),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_whose_destination_refuses_every_session_ends_with_them_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path(), SIM_ARGS);
    let config = config(
        dir.path(),
        &sim,
        &sqlite_destination(dir.path(), "back"),
        &transfer("back"),
        "1h",
    );
    // btic's own schema, then a trigger that refuses every session: a permanent error.
    let out = btic()
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
    let database = dir.path().join("back.sqlite");
    rusqlite::Connection::open(&database)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER refuse_all BEFORE INSERT ON session \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
        )
        .unwrap();

    let (now, _) = sim.truth(None).await;
    let (from, to) = (now - 22 * 3600, now - 2 * 3600);
    let args = range_args(from, to, &[]);
    let out = backfill(&config, &args, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "a job whose items are all dead-lettered is finished: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let truth = sim.truth_with_end(now).await;
    let wanted = in_range(&truth, from, to);
    assert!(!wanted.is_empty());
    assert!(
        stdout.contains(&format!(
            "0 sessions delivered, 0 recordings delivered, {} dead-lettered",
            wanted.len()
        )),
        "{stdout}"
    );
    assert!(sqlite_lsids(&database).is_empty());
    let letters = rig::dead_letters(&config);
    assert_eq!(letters.len(), wanted.len(), "{letters:?}");
}

/// The backfill lane treats a refused window as the live one does: the job goes on and
/// ends with the narrowest window that holds the cause (a minute) in the dead letter
/// (counted as dead-lettered), and `btic replay` delivers its sessions once the
/// appliance answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_window_the_appliance_refuses_ends_in_the_dead_letter_and_replays() {
    let dir = tempfile::tempdir().unwrap();
    let refused_at = chrono::Utc::now().timestamp() - 10 * 3600;
    let mut args = SIM_ARGS.to_vec();
    let refused = refused_at.to_string();
    args.extend(["--refuse-window", &refused]);
    let sim = Sim::start(dir.path(), &args);
    let config = config(
        dir.path(),
        &sim,
        &sqlite_destination(dir.path(), "lite"),
        &transfer("lite"),
        "1h",
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("max_window = \"12h\"", "max_window = \"1h\"");
    std::fs::write(&config, text).unwrap();
    let (now, _) = sim.truth(None).await;
    let (from, to) = (now - 20 * 3600, now - 2 * 3600);
    let out = backfill(
        &config,
        &range_args(from, to, &[]),
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let letters = rig::dead_letters(&config);
    let fetch: Vec<&serde_json::Value> = letters
        .iter()
        .filter(|l| l["metadata"]["stage"] == "fetch")
        .collect();
    assert_eq!(fetch.len(), 1, "{letters:?}");
    let job = fetch[0]["metadata"]["backfill"].as_str().expect("its job");
    assert!(stdout.contains(job), "{stdout}");
    assert!(stdout.contains("1 dead-lettered"), "{stdout}");
    // The refused window was halved down to the minute that holds the refused time:
    // only that minute waits in the dead letter, everything around it is delivered.
    let request = fetch[0]["metadata"]["request"]
        .as_str()
        .expect("its request");
    let field = |name: &str| -> i64 {
        request
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {request}"))
    };
    let (start, duration) = (field("end_time="), field("duration="));
    assert!(duration <= 60, "{request}");
    assert!((start..start + duration).contains(&refused_at), "{request}");
    let truth = sim.truth_with_end(now).await;
    let wanted = in_range(&truth, from, to);
    let database = dir.path().join("lite.sqlite");
    let delivered = sqlite_lsids(&database);
    let outside: Vec<&String> = truth
        .iter()
        .filter(|(l, (_, end))| wanted.contains_key(*l) && !(start..start + duration).contains(end))
        .map(|(l, _)| l)
        .collect();
    assert!(outside.iter().all(|l| delivered.contains_key(*l)));

    sim.window_faults(&[], &[]).await;
    rig::replay_all(&config);
    // No daemon runs: the replayed request waits in `fetch/sim` for the next process
    // with a fetch worker; running the same backfill again (it is finished, so it
    // fetches nothing) starts one and waits for nothing, so run the daemon instead.
    let log = dir.path().join("run.log");
    let daemon = Daemon::start(&config, &log);
    assert!(
        eventually(Duration::from_secs(60), async || {
            let rows = sqlite_lsids(&database);
            wanted.keys().all(|l| rows.contains_key(l))
        })
        .await,
        "replayed window not delivered: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    daemon.terminate();
    assert!(sqlite_lsids(&database).values().all(|n| *n == 1));
}

/// An LSID list the appliance refuses as a whole because one LSID is unknown is split
/// until that LSID is alone: the others are delivered, it waits in the dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_by_lsid_with_an_unknown_lsid_delivers_the_others_and_dead_letters_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let unknown = "0123456789abcdef0123456789abcdef";
    let (config, stdout, _) = backfill_by_lsid(dir.path(), 5, 6, &[unknown]).await;
    let letters = rig::dead_letters(&config);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["metadata"]["lsids"], unknown);
    assert!(
        letters[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("Invalid lsid."),
        "{letters:?}"
    );
    assert!(stdout.contains("6 sessions delivered"), "{stdout}");
    assert!(stdout.contains("1 dead-lettered"), "{stdout}");
}
