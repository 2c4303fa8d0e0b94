//! Crash tests of the `files` destination with real processes: this binary re-executes
//! itself as a child that delivers, the parent kills it with SIGKILL, then checks the
//! directory and restarts. (`harness = false`: `main` runs the cases.)
//!
//! - stopped between write and rename (the `before_commit` hook parks the child there):
//!   no file under the final name (or the old one intact, for `overwrite`), a complete
//!   temporary in `.btic-tmp/`, which the next start removes;
//! - killed at random moments while delivering many sessions: every final file that
//!   exists is complete.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use btic::config::{FileNameFormat, FilesDestination, OnConflict, SessionFormat};
use btic::deliver::files::{FilesSink, Outcome, STAGING_DIR, SpoolTransfer};
use btic::model::Session;
use btic::model::{Naming, Recording, ReportRoot};

const CHILD: &str = "BTIC_FILES_CRASH_CHILD";
const SESSION_BYTES: usize = 1 << 20;

fn destination(dir: &Path, on_conflict: OnConflict) -> FilesDestination {
    FilesDestination {
        directory: dir.to_path_buf(),
        file_name_format: Some(FileNameFormat::parse("%LSID%.%EXTENSION%").unwrap()),
        on_conflict,
        retention_count: None,
        format: SessionFormat::Xml,
    }
}

fn naming(lsid: &str) -> Naming {
    Naming {
        host: "support.example.com".into(),
        lsid: lsid.into(),
        lseq: None,
        external_key: None,
        session_type: "support".into(),
    }
}

/// A session body whose every byte depends on the lsid, so a partial or mixed file shows.
fn body(lsid: &str, len: usize) -> Vec<u8> {
    let mut raw = format!("<session lsid=\"{lsid}\">").into_bytes();
    let filler = lsid.as_bytes();
    while raw.len() < len - 10 {
        raw.push(filler[raw.len() % filler.len()]);
    }
    raw.extend_from_slice(b"</session>");
    raw
}

fn expected_file(lsid: &str, len: usize) -> Vec<u8> {
    let mut out = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<session_list>\n".to_vec();
    out.extend(body(lsid, len));
    out.extend_from_slice(b"\n</session_list>\n");
    out
}

fn session(lsid: &str) -> Session {
    Session {
        lsid: lsid.into(),
        ..Session::default()
    }
}

/// The child: `park <mode> <dir> [spool]` delivers one item and parks before commit;
/// `many <dir>` delivers sessions until killed.
fn child(args: &[String]) {
    let dir = PathBuf::from(&args[2]);
    match args[0].as_str() {
        "park" => {
            let on_conflict = match args[1].as_str() {
                "overwrite" => OnConflict::Overwrite,
                _ => OnConflict::AppendNumber,
            };
            let sink = FilesSink::open(&destination(&dir, on_conflict))
                .unwrap()
                .with_spool_transfer(SpoolTransfer::Copy)
                .with_before_commit(|temp| {
                    println!("staged {}", temp.display());
                    std::io::stdout().flush().unwrap();
                    loop {
                        std::thread::sleep(Duration::from_secs(60));
                    }
                });
            if args[1] == "recording" {
                let spool = Path::new(&args[3]);
                sink.deliver_recording(&naming("rec"), Recording::Screen, "flv", spool)
                    .unwrap();
            } else {
                sink.deliver_session(
                    &naming("s1"),
                    &session("s1"),
                    &body("s1", SESSION_BYTES),
                    &ReportRoot::default(),
                )
                .unwrap();
            }
            unreachable!("the hook never returns");
        }
        "many" => {
            let sink = FilesSink::open(&destination(&dir, OnConflict::AppendNumber)).unwrap();
            for i in 0.. {
                let lsid = format!("m{i:05}");
                sink.deliver_session(
                    &naming(&lsid),
                    &session(&lsid),
                    &body(&lsid, 64 * 1024),
                    &ReportRoot::default(),
                )
                .unwrap();
            }
        }
        other => panic!("unknown child mode {other}"),
    }
}

fn spawn_parked(mode: &str, dir: &Path, extra: Option<&Path>) -> (std::process::Child, PathBuf) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env(CHILD, "1").arg("park").arg(mode).arg(dir);
    if let Some(extra) = extra {
        cmd.arg(extra);
    }
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let temp = PathBuf::from(
        line.trim()
            .strip_prefix("staged ")
            .expect("the child reports its temporary"),
    );
    (child, temp)
}

fn kill(mut child: std::process::Child) {
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap(); // reaped: its pid is gone
}

fn staging_entries(dir: &Path) -> usize {
    fs::read_dir(dir.join(STAGING_DIR)).unwrap().count()
}

fn a_kill_between_write_and_rename_leaves_no_partial_final_file() {
    let dir = tempfile::tempdir().unwrap();
    let (child, temp) = spawn_parked("append", dir.path(), None);
    assert_eq!(
        fs::read(&temp).unwrap(),
        expected_file("s1", SESSION_BYTES),
        "the temporary is complete"
    );
    kill(child);
    assert!(
        !dir.path().join("s1.xml").exists(),
        "nothing under the final name"
    );
    assert_eq!(staging_entries(dir.path()), 1);

    // Restart: the stale temporary goes, the redelivery writes the whole file once.
    let sink = FilesSink::open(&destination(dir.path(), OnConflict::AppendNumber)).unwrap();
    assert_eq!(
        staging_entries(dir.path()),
        0,
        "the restart removed the stale temporary"
    );
    let d = sink
        .deliver_session(
            &naming("s1"),
            &session("s1"),
            &body("s1", SESSION_BYTES),
            &ReportRoot::default(),
        )
        .unwrap();
    assert_eq!(d.outcome, Outcome::Written);
    assert_eq!(
        fs::read(&d.path).unwrap(),
        expected_file("s1", SESSION_BYTES)
    );
}

fn a_kill_before_an_overwrite_keeps_the_old_file_whole() {
    let dir = tempfile::tempdir().unwrap();
    let old =
        b"<?xml version=\"1.0\"?><session_list><session lsid=\"s1\">old</session></session_list>";
    fs::write(dir.path().join("s1.xml"), old).unwrap();
    let (child, _temp) = spawn_parked("overwrite", dir.path(), None);
    kill(child);
    assert_eq!(fs::read(dir.path().join("s1.xml")).unwrap(), old);
    FilesSink::open(&destination(dir.path(), OnConflict::Overwrite)).unwrap();
    assert_eq!(staging_entries(dir.path()), 0);
}

fn a_kill_while_a_recording_is_staged_leaves_the_spool_and_no_final_file() {
    let dir = tempfile::tempdir().unwrap();
    let spools = tempfile::tempdir().unwrap();
    let spool = spools.path().join("rec.spool");
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(&spool, &content).unwrap();
    let (child, temp) = spawn_parked("recording", dir.path(), Some(&spool));
    assert_eq!(fs::metadata(&temp).unwrap().len(), content.len() as u64);
    kill(child);
    assert!(!dir.path().join("rec.flv").exists());
    assert_eq!(
        fs::read(&spool).unwrap(),
        content,
        "the spool is intact for the retry"
    );
    let sink = FilesSink::open(&destination(dir.path(), OnConflict::AppendNumber)).unwrap();
    assert_eq!(staging_entries(dir.path()), 0);
    let d = sink
        .deliver_recording(&naming("rec"), Recording::Screen, "flv", &spool)
        .unwrap();
    assert_eq!(fs::read(&d.path).unwrap(), content);
}

fn kills_at_random_moments_never_leave_an_incomplete_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut seed: u64 = std::env::var("BTIC_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand_seed);
    println!("    seed {seed} (set BTIC_CRASH_SEED to repeat)");
    for round in 0..6 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = Duration::from_millis(20 + (seed >> 33) % 200);
        let child = Command::new(std::env::current_exe().unwrap())
            .env(CHILD, "1")
            .arg("many")
            .arg("-")
            .arg(dir.path())
            .spawn()
            .unwrap();
        let start = Instant::now();
        std::thread::sleep(delay);
        kill(child);
        let mut count = 0;
        for entry in fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            if name == STAGING_DIR {
                continue;
            }
            let lsid = name.split('.').next().unwrap();
            assert_eq!(
                fs::read(&path).unwrap(),
                expected_file(lsid, 64 * 1024),
                "round {round}: {name} is incomplete"
            );
            count += 1;
        }
        println!(
            "    round {round}: killed after {:?}, {count} complete files, {} temporaries",
            start.elapsed(),
            staging_entries(dir.path())
        );
    }
    FilesSink::open(&destination(dir.path(), OnConflict::AppendNumber)).unwrap();
    assert_eq!(staging_entries(dir.path()), 0);
    // Every round restarts from m00000: redelivery never made a numbered duplicate.
    for entry in fs::read_dir(dir.path()).unwrap() {
        let name = entry.unwrap().file_name();
        let name = name.to_str().unwrap();
        assert!(
            name == STAGING_DIR || name.matches('.').count() == 1,
            "duplicate {name}"
        );
    }
}

fn rand_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if std::env::var_os(CHILD).is_some() {
        child(&args);
        return;
    }
    let cases: [(&str, fn()); 4] = [
        (
            "a_kill_between_write_and_rename_leaves_no_partial_final_file",
            a_kill_between_write_and_rename_leaves_no_partial_final_file,
        ),
        (
            "a_kill_before_an_overwrite_keeps_the_old_file_whole",
            a_kill_before_an_overwrite_keeps_the_old_file_whole,
        ),
        (
            "a_kill_while_a_recording_is_staged_leaves_the_spool_and_no_final_file",
            a_kill_while_a_recording_is_staged_leaves_the_spool_and_no_final_file,
        ),
        (
            "kills_at_random_moments_never_leave_an_incomplete_file",
            kills_at_random_moments_never_leave_an_incomplete_file,
        ),
    ];
    // `cargo test -- NAME` filters like the standard harness.
    let filter = args.iter().find(|a| !a.starts_with('-'));
    let mut ran = 0;
    for (name, case) in cases {
        if filter.is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        println!("test {name} ...");
        case();
        println!("test {name} ... ok");
        ran += 1;
    }
    println!("\ntest result: ok. {ran} passed; 0 failed");
}
