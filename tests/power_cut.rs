//! Power cuts, not kills: `btic run` with its state directory (queue and spool), a
//! SQLite destination and a files destination (session JSON, recordings, backups) on
//! the power-cut file system (`tests/powercut/`), which forgets at each cut whatever
//! was not fsynced. The power is cut at random moments while the simulator feeds
//! sessions, recordings and backups and refuses a window (a dead letter); after each
//! cut btic starts again on what survived. It must start every time, resume from its
//! watermark and its dead letter (never from `start_from`: the appliance cannot give
//! those back), and in the end the destinations hold the simulator's ground truth:
//! every session once with all its rows, every recording and backup complete and once.
//!
//! Cuts: `BTIC_POWERCUT_CUTS` (default 20); the seed is printed and can be fixed with
//! `BTIC_POWERCUT_SEED`. Needs root and /dev/fuse: skipped with a reason elsewhere,
//! failed under `CI`.

mod powercut;
mod rig;

use rig::skip;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use powercut::PowerCut;
use rand::{Rng, SeedableRng};
use rig::{Daemon, Sim, eventually, free_port, json_files, other_files, sqlite_lsids};
use sha2::{Digest, Sha256};

/// The recordings' size: the simulator pads each one's magic bytes with 0x5a to this.
const RECORDING_BYTES: usize = 16 * 1024;
const BACKUP_BYTES: usize = 100_000;

fn skipped(test: &str) -> bool {
    match PowerCut::available() {
        Ok(()) => false,
        Err(why) => {
            skip::missing(test, &why);
            true
        }
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A pipeline file outside the mount whose state and destinations are on it.
fn pipeline(
    dir: &Path,
    mnt: &Path,
    sim: &Sim,
    port: u16,
    start_from: &str,
    extra: &str,
) -> PathBuf {
    let text = format!(
        r#"state_dir = "{mnt}/state"
start_from = "{start_from}"

[metrics]
listen = "127.0.0.1:{port}"

[pipeline]
overlap = "2m"
settle_lag = "5s"
max_window = "6h"
retry = {{ max_attempts = 6, initial = "200ms", max_interval = "1s" }}

[[site]]
name = "sim"
host = "{host}"
client_id = "demo"
client_secret = {{ env = "BTIC_TEST_SECRET" }}
ca_file = "{ca}"
requests_per_second = 15
max_in_flight = 4

{extra}
"#,
        mnt = mnt.display(),
        host = sim.host,
        ca = sim.ca.display(),
    );
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `btic status --json` (from the running daemon, else from the state directory).
fn status(config: &Path) -> Option<serde_json::Value> {
    let out = rig::btic()
        .args(["status", "--json", "--config"])
        .arg(config)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// What must never go back after a cut: the watermarks and the dead letters.
#[derive(Debug, Clone, Default, PartialEq)]
struct Progress {
    /// report -> watermark (RFC 3339 UTC sorts as time).
    watermarks: BTreeMap<String, String>,
    dead_letters: u64,
}

fn progress(status: &serde_json::Value) -> Progress {
    let mut p = Progress::default();
    for site in status["sites"].as_array().into_iter().flatten() {
        for w in site["watermarks"].as_array().into_iter().flatten() {
            p.watermarks.insert(
                w["report"].as_str().unwrap_or_default().to_string(),
                w["appliance_time"].as_str().unwrap_or_default().to_string(),
            );
        }
    }
    p.dead_letters = status["dead_letters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| d["count"].as_u64().unwrap_or(0))
        .sum();
    p
}

/// Fails unless `after` keeps every watermark of `before` (or a later one) and as many
/// dead letters.
fn assert_kept(before: &Progress, after: &Progress, what: &str) {
    for (report, mark) in &before.watermarks {
        let kept = after.watermarks.get(report);
        assert!(
            kept.is_some_and(|k| k >= mark),
            "{what}: the {report} watermark went back from {mark} to {kept:?}"
        );
    }
    assert!(
        after.dead_letters >= before.dead_letters,
        "{what}: {} dead letters before, {} after",
        before.dead_letters,
        after.dead_letters
    );
}

/// Whether a recording file is what the simulator sent: its size, a known magic, then
/// the simulator's padding.
fn recording_complete(bytes: &[u8]) -> bool {
    let magics: [&[u8]; 3] = [
        b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00",
        b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom",
        b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2",
    ];
    bytes.len() == RECORDING_BYTES
        && magics
            .iter()
            .any(|m| bytes.starts_with(m) && bytes[m.len()..].iter().all(|b| *b == 0x5a))
}

/// The expected backup body: the simulator's header padded to its chunk, then filler.
fn backup_sha256() -> String {
    const CHUNK: usize = 64 * 1024;
    let mut body = b"NSB\x00btic-simulator-backup\x00".to_vec();
    body.resize(CHUNK, 0);
    while body.len() < BACKUP_BYTES {
        let i = body.len() - CHUNK;
        body.push(((i % CHUNK) % 251) as u8);
    }
    body.truncate(BACKUP_BYTES);
    hex::encode(Sha256::digest(&body))
}

/// Every file under `dir` (recursively), by path relative to it.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// A random moment to cut at: sometimes right after the start, mostly while it works.
fn moment(rng: &mut rand::rngs::StdRng) -> Duration {
    Duration::from_millis(if rng.random_bool(0.2) {
        rng.random_range(50..400)
    } else {
        rng.random_range(400..3000)
    })
}

/// Runs the daemon until `wait` has passed, noting its progress shortly before the end,
/// then cuts the power. Returns the progress noted if it must have survived the cut: a
/// status shows what was committed, which is durable only once a flush begun after it
/// has ended. The queue's log is fsynced last in every flush and flushes run one at a
/// time, so the second fsync of the log after the status answered ends such a flush (the
/// first may end one begun before the commit). A note without it says nothing about
/// the cut and is dropped.
async fn run_and_cut(
    fs: PowerCut,
    config: &Path,
    log: &Path,
    wait: Duration,
) -> (Option<Progress>, powercut::Counts) {
    let margin = Duration::from_millis(300);
    let queue_log = fs.mountpoint.join("state/queue/db");
    let daemon = Daemon::start(config, log);
    tokio::time::sleep(wait.saturating_sub(margin)).await;
    let noted = if wait > margin * 2 {
        status(config)
            .filter(|s| s["daemon"] == true)
            .map(|s| (progress(&s), fs.fsyncs_of(&queue_log)))
    } else {
        None
    };
    tokio::time::sleep(margin).await;
    let mut daemon = daemon;
    if let Some(exit) = daemon.child.try_wait().unwrap() {
        panic!(
            "btic exited ({exit}) before the cut; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    let fsyncs_at_cut = fs.fsyncs_of(&queue_log);
    fs.cut();
    daemon.kill();
    let counts = fs.unmount().unwrap();
    let durable =
        noted.and_then(|(progress, fsyncs)| (fsyncs_at_cut >= fsyncs + 2).then_some(progress));
    (durable, counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cuts_at_random_moments_lose_nothing_and_duplicate_nothing() {
    if skipped("power_cuts_at_random_moments_lose_nothing_and_duplicate_nothing") {
        return;
    }
    let cuts = env_number("BTIC_POWERCUT_CUTS", 20);
    let seed = env_number(
        "BTIC_POWERCUT_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    println!("power-cut test: {cuts} cuts, BTIC_POWERCUT_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let dir = tempfile::tempdir().unwrap();
    let (backing, mnt) = (dir.path().join("backing"), dir.path().join("mnt"));
    // A window the appliance refuses meanwhile: its request waits in the dead letter,
    // which must survive every cut.
    let now = chrono::Utc::now().timestamp();
    let refused = (now - 10 * 3600).to_string();
    let sim = Sim::start(
        dir.path(),
        &[
            "--days",
            "1",
            "--sessions-per-day",
            "400",
            "--recording-bytes",
            &RECORDING_BYTES.to_string(),
            "--backup-bytes",
            &BACKUP_BYTES.to_string(),
            "--refuse-window",
            &refused,
        ],
    );
    let extra = format!(
        r#"[[destination]]
name = "archive"
type = "files"
directory = "{mnt}/archive"
format = "json"

[[destination]]
name = "lite"
type = "sqlite"
path = "{mnt}/btic.sqlite"

[[schedule]]
name = "often"
every = "1m"
[[schedule.transfer]]
site = "sim"
destination = "archive"
data = ["sessions", "recordings"]
[[schedule.transfer]]
site = "sim"
destination = "lite"
data = ["sessions"]

[[schedule]]
name = "backup"
every = "1m"
[[schedule.transfer]]
site = "sim"
destination = "archive"
data = ["backups"]
"#,
        mnt = mnt.display()
    );
    let config = pipeline(dir.path(), &mnt, &sim, free_port(), "1d", &extra);
    let log = dir.path().join("run.log");

    let mut kept = Progress::default();
    let mut fsyncs = (0, 0);
    let mut durable_notes = 0;
    for i in 0..cuts {
        let fs = PowerCut::mount(&backing, &mnt).unwrap();
        if i > 0 {
            // What survived the last cut, read with no daemon running.
            let after = status(&config).map(|s| progress(&s)).unwrap_or_else(|| {
                panic!(
                    "btic status cannot read the state after cut {i}; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
            assert_kept(&kept, &after, &format!("after cut {i} (seed {seed})"));
            kept = after;
        }
        let (noted, counts) = run_and_cut(fs, &config, &log, moment(&mut rng)).await;
        if let Some(noted) = noted {
            kept = noted;
            durable_notes += 1;
        }
        fsyncs = (fsyncs.0 + counts.file_fsyncs, fsyncs.1 + counts.dir_fsyncs);
        if i % 5 == 4 {
            let fs = PowerCut::mount(&backing, &mnt).unwrap();
            let (files, _) = json_files(&mnt.join("archive"));
            println!(
                "after {} cuts: {} session files, {} dead letters, watermarks {:?}",
                i + 1,
                files.len(),
                kept.dead_letters,
                kept.watermarks
            );
            fs.unmount().unwrap();
        }
    }
    println!(
        "{cuts} cuts ({durable_notes} with progress noted durable before the cut); the runs made {} file and {} directory fsyncs",
        fsyncs.0, fsyncs.1
    );
    assert!(
        kept.dead_letters >= 1,
        "the refused window should be in the dead letter: {kept:?}"
    );

    // The appliance answers the window again; the dead letter is replayed and the
    // daemon runs on the last surviving state until the destinations are complete.
    let fs = PowerCut::mount(&backing, &mnt).unwrap();
    sim.window_faults(&[], &[]).await;
    println!("{}", rig::replay_all(&config));
    let daemon = Daemon::start(&config, &log);
    let (now, _) = sim.truth(None).await;
    let (_, truth) = sim.truth(Some(now - 10)).await;
    let recorded = sim.recorded(now - 10).await;
    let archive = mnt.join("archive");
    let sqlite = mnt.join("btic.sqlite");
    let complete = eventually(Duration::from_secs(180), async || {
        let (files, _) = json_files(&archive);
        let (recordings, _) = other_files(&archive);
        let rows = sqlite_lsids(&sqlite);
        truth.iter().all(|(l, d)| files.get(l) == Some(d))
            && truth.keys().all(|l| rows.contains_key(l))
            && recorded
                .iter()
                .all(|l| recordings.iter().any(|name| name.contains(l.as_str())))
    })
    .await;
    let (code, _) = daemon.terminate();
    let (files, numbered) = json_files(&archive);
    let rows = sqlite_lsids(&sqlite);
    let missing = truth
        .iter()
        .filter(|(l, d)| files.get(*l) != Some(d) || !rows.contains_key(*l))
        .count();
    assert!(
        complete,
        "after {cuts} cuts (seed {seed}), {missing} of {} sessions are missing or incomplete; log:\n{}",
        truth.len(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(code, Some(0));

    // Once each, complete, and nothing unknown.
    assert!(numbered.is_empty(), "duplicate session files: {numbered:?}");
    let duplicated = rows.values().filter(|n| **n > 1).count();
    assert_eq!(duplicated, 0, "duplicate rows in SQLite (seed {seed})");
    let (_, closed) = sim.truth(None).await;
    assert!(
        files.keys().all(|l| closed.contains_key(l)),
        "unknown session files"
    );
    assert!(rows.keys().all(|l| closed.contains_key(l)), "unknown rows");
    // All its rows: each session's events in SQLite are those of its file, whose
    // digest is the ground truth's.
    let events = {
        let conn = rusqlite::Connection::open(&sqlite).unwrap();
        let mut stmt = conn
            .prepare("SELECT s.lsid, COUNT(e.id) FROM session s LEFT JOIN session_event e ON e.session_id = s.id GROUP BY s.lsid")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect::<BTreeMap<String, i64>>()
    };
    for lsid in truth.keys() {
        let file = std::fs::read_dir(&archive)
            .unwrap()
            .flatten()
            .find(|e| {
                e.file_name()
                    .to_string_lossy()
                    .ends_with(&format!("{lsid}.json"))
            })
            .unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(file.path()).unwrap()).unwrap();
        let expected = json["events"].as_array().map_or(0, Vec::len) as i64;
        assert_eq!(
            events.get(lsid),
            Some(&expected),
            "session {lsid}: its events in SQLite"
        );
    }
    let backup = backup_sha256();
    let mut recordings = 0;
    let mut backups = 0;
    for file in files_under(&archive) {
        let name = file.to_string_lossy().to_string();
        if name.ends_with(".json") || name.starts_with('.') {
            continue;
        }
        let bytes = std::fs::read(archive.join(&file)).unwrap();
        if name.contains("backup") || name.ends_with(".nsb") {
            assert_eq!(
                hex::encode(Sha256::digest(&bytes)),
                backup,
                "backup {name} is incomplete"
            );
            backups += 1;
        } else {
            assert!(
                recording_complete(&bytes),
                "recording {name} is incomplete ({} bytes)",
                bytes.len()
            );
            recordings += 1;
        }
    }
    // Backups of different runs are numbered by design (`host-backup.1.nsb`); a
    // recording never is.
    let (_, numbered) = other_files(&archive);
    let numbered: Vec<_> = numbered
        .iter()
        .filter(|n| !n.contains("-backup."))
        .collect();
    assert!(numbered.is_empty(), "duplicate recordings: {numbered:?}");
    assert!(backups >= 1, "no backup was delivered");
    assert!(rig::dead_letters(&config).is_empty(), "dead letters left");
    println!(
        "{cuts} cuts: {} sessions due, {} present in files and {} in SQLite, {missing} missing, {duplicated} duplicated; {recordings} recordings and {backups} backups checked complete",
        truth.len(),
        truth.keys().filter(|l| files.contains_key(*l)).count(),
        truth.keys().filter(|l| rows.contains_key(*l)).count(),
    );
    fs.unmount().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_older_than_start_from_survives_power_cuts_while_its_destination_is_down() {
    if skipped("a_backlog_older_than_start_from_survives_power_cuts_while_its_destination_is_down")
    {
        return;
    }
    let seed = env_number("BTIC_POWERCUT_SEED", 7);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let (backing, mnt) = (dir.path().join("backing"), dir.path().join("mnt"));
    let sim = Sim::start(dir.path(), &["--days", "1", "--sessions-per-day", "300"]);
    // The destination's directory does not exist: it cannot be opened, so its items wait
    // in the queue (a destination that is down spends no attempts).
    let extra = format!(
        r#"[[destination]]
name = "late"
type = "sqlite"
path = "{mnt}/down/late.sqlite"

[[schedule]]
name = "often"
every = "1m"
[[schedule.transfer]]
site = "sim"
destination = "late"
data = ["sessions"]
"#,
        mnt = mnt.display()
    );
    let port = free_port();
    let config = pipeline(dir.path(), &mnt, &sim, port, "1d", &extra);
    let log = dir.path().join("run.log");

    // Fetch the day while the destination is down.
    let fs = PowerCut::mount(&backing, &mnt).unwrap();
    let daemon = Daemon::start(&config, &log);
    let queued = eventually(Duration::from_secs(120), async || {
        status(&config).is_some_and(|s| {
            s["sites"][0]["watermarks"][0]["lag_seconds"]
                .as_f64()
                .is_some_and(|lag| lag < 600.0)
        })
    })
    .await;
    assert!(
        queued,
        "the day was not fetched; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let (now, truth) = sim.truth(None).await;
    let (_, due) = sim.truth(Some(now - 600)).await;
    let before = progress(&status(&config).unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    fs.cut();
    daemon.kill();
    fs.unmount().unwrap();

    // From now on a lost queue would start from a minute ago: the backlog is older.
    let config = pipeline(dir.path(), &mnt, &sim, port, "1m", &extra);
    for i in 0..3 {
        let fs = PowerCut::mount(&backing, &mnt).unwrap();
        let after = progress(&status(&config).expect("status after a cut"));
        assert_kept(&before, &after, &format!("after cut {}", i + 1));
        let depth = status(&config).unwrap()["queues"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|q| q["name"] == "deliver/late")
            .map(|q| q["depth"].as_u64().unwrap_or(0))
            .sum::<u64>();
        assert!(depth > 0, "after cut {}: the backlog is gone", i + 1);
        let wait = Duration::from_millis(rng.random_range(300..2000));
        run_and_cut(fs, &config, &log, wait).await;
    }

    // The destination comes up: everything of the day arrives, once.
    let fs = PowerCut::mount(&backing, &mnt).unwrap();
    std::fs::create_dir(mnt.join("down")).unwrap();
    let daemon = Daemon::start(&config, &log);
    let db = mnt.join("down/late.sqlite");
    let complete = eventually(Duration::from_secs(120), async || {
        let rows = sqlite_lsids(&db);
        due.keys().all(|l| rows.contains_key(l))
    })
    .await;
    let (code, _) = daemon.terminate();
    let rows = sqlite_lsids(&db);
    assert!(
        complete,
        "{} of {} sessions of the backlog arrived; log:\n{}",
        due.keys().filter(|l| rows.contains_key(*l)).count(),
        due.len(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(code, Some(0));
    assert!(rows.values().all(|n| *n == 1), "duplicate rows");
    assert!(
        rows.keys()
            .all(|l| truth.contains_key(l) || !due.contains_key(l))
    );
    println!(
        "a backlog of {} sessions older than start_from survived 4 cuts with its destination down; all arrived once",
        due.len()
    );
    fs.unmount().unwrap();
}
