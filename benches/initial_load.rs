//! A first install's initial load (issue 27): `btic import` of one saved body of
//! `BTIC_BENCH_SESSIONS` sessions (default 1,000,000; seed 7, about 90 rows each with
//! system information) into a fresh PostgreSQL database and a fresh SQLite file, as a
//! whole process each: rows a second and the process's peak RSS (`VmHWM`, polled every
//! 100 ms). The body is written once to `target/initial-load-<N>.xml` and kept for
//! later runs (a million sessions are several GiB). PostgreSQL is skipped, saying so,
//! when `psql` cannot create a database at 127.0.0.1:5432.
//!
//! Run: `cargo bench --bench initial_load` (`BTIC_BENCH_SESSIONS=100000` for a shorter
//! one). Figures are in `benches/README.md`.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use btic::simulator::render::{Namespace, SessionListReader};
use btic::simulator::sessions::{Sessions, epoch};

fn sessions_wanted() -> u64 {
    std::env::var("BTIC_BENCH_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// The saved body of `n` sessions, written unless it is there already.
fn body(n: u64) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("target/initial-load-{n}.xml"));
    if path.exists() {
        return path;
    }
    let partial = path.with_extension("partial");
    let file = std::fs::File::create(&partial).unwrap();
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let sessions = Sessions::new(7, epoch()).take(n as usize);
    std::io::copy(
        &mut SessionListReader::new(Namespace::BeyondTrust, sessions),
        &mut out,
    )
    .unwrap();
    out.flush().unwrap();
    drop(out);
    std::fs::rename(&partial, &path).unwrap();
    path
}

fn psql(db: &str, script: &str) -> bool {
    Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-q",
            "-d",
            db,
            "-c",
            script,
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn pipeline(dir: &Path, destination: &str) -> PathBuf {
    let text = format!(
        "state_dir = \"{}\"\n\n[[site]]\nname = \"support\"\nhost = \"support.example.com\"\nclient_id = \"id\"\nclient_secret = \"unused\"\n\n[[destination]]\nname = \"db\"\n{destination}\nstore_system_information = true\n",
        dir.join("state").display()
    );
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The `VmHWM` of process `pid`, in KiB, while it runs.
fn peak_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `btic import` of `body` into the pipeline's `db`: rows, seconds, peak RSS in KiB.
fn import(config: &Path, body: &Path) -> (u64, Duration, u64) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_btic"))
        .args(["import", "--config"])
        .arg(config)
        .args(["--destination", "db"])
        .arg(body)
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting btic import");
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        peak = peak.max(peak_kib(child.id()).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(100));
    }
    let elapsed = started.elapsed();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "btic import failed");
    // "imported N sessions (R rows) into destination ..."
    let text = String::from_utf8_lossy(&out.stdout);
    let rows = text
        .split(" sessions (")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no row count in {text:?}"));
    (rows, elapsed, peak)
}

fn report(target: &str, n: u64, (rows, elapsed, peak): (u64, Duration, u64)) {
    println!(
        "initial load into {target}: {n} sessions, {rows} rows in {:.1} s: {:.0} rows/s, {:.0} sessions/s, peak RSS {:.1} MiB",
        elapsed.as_secs_f64(),
        rows as f64 / elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        peak as f64 / 1024.0
    );
}

fn main() {
    let n = sessions_wanted();
    let started = Instant::now();
    let body = body(n);
    println!(
        "body: {} ({:.1} GiB, ready in {:.0} s)",
        body.display(),
        std::fs::metadata(&body).unwrap().len() as f64 / f64::from(1 << 30),
        started.elapsed().as_secs_f64()
    );
    let db = format!("btic_initial_load_{}", std::process::id());
    if psql("postgres", &format!("CREATE DATABASE {db}")) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("postgres://postgres@127.0.0.1:5432/{db}");
        let config = pipeline(dir.path(), &format!("type = \"postgres\"\nurl = \"{url}\""));
        report("PostgreSQL", n, import(&config, &body));
        psql("postgres", &format!("DROP DATABASE {db} WITH (FORCE)"));
    } else {
        println!(
            "initial load into PostgreSQL: skipped, psql cannot create a database at 127.0.0.1:5432"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("btic.sqlite");
    let config = pipeline(
        dir.path(),
        &format!("type = \"sqlite\"\npath = \"{}\"", file.display()),
    );
    report("SQLite", n, import(&config, &body));
}
