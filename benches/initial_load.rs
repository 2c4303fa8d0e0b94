//! A first install's initial load (issue 27): `btic import` of one saved body of
//! `BTIC_BENCH_SESSIONS` sessions (default 1,000,000; seed 7, about 90 rows each with
//! system information) into a fresh PostgreSQL database and a fresh SQLite file, as a
//! whole process each: rows a second and the process's peak RSS (`VmHWM`, polled every
//! 100 ms). The body is written once to `target/initial-load-<N>.xml` and kept for
//! later runs (a million sessions are several GiB). PostgreSQL is skipped, saying so,
//! when `psql` cannot create a database at 127.0.0.1:5432.
//!
//! PostgreSQL's anchor is its own loader on the same rows: the first import's tables
//! are written out as CSV, then `psql \copy` loads them into a fresh database with
//! btic's schema (its keys and indexes) and, for reference, into plain tables (same
//! columns, no keys, no indexes). `BTIC_BENCH_ROUNDS` rounds (default 3) alternate the
//! import and both loads, each into a fresh database; the medians and their ratios are
//! printed.
//!
//! Run: `cargo bench --bench initial_load` (`BTIC_BENCH_SESSIONS=100000` for a shorter
//! one). Figures are in `benches/README.md`.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use btic::deliver::sql::schema::{Dialect, TABLES, schema_v1};
use btic::simulator::render::{Namespace, SessionListReader};
use btic::simulator::sessions::{Sessions, epoch};

fn rounds() -> usize {
    std::env::var("BTIC_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1)
}

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

/// Runs `script` with `psql -f` in `db`, stopping at the first error.
fn psql_script(db: &str, dir: &Path, name: &str, script: &str) {
    let path = dir.join(name);
    std::fs::write(&path, script).unwrap();
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-q"])
        .args(["-v", "ON_ERROR_STOP=1", "-d", db, "-f"])
        .arg(&path)
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A new empty database `db`.
fn fresh_database(db: &str) {
    psql(
        "postgres",
        &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
    );
    assert!(
        psql("postgres", &format!("CREATE DATABASE {db}")),
        "creating {db}"
    );
}

/// Writes every btic table of `db` as CSV into `dir`.
fn export_csv(db: &str, dir: &Path) {
    let script: String = TABLES
        .iter()
        .map(|t| {
            format!(
                "\\copy (SELECT * FROM \"{0}\") TO '{1}' CSV\n",
                t.name,
                dir.join(format!("{}.csv", t.name)).display()
            )
        })
        .collect();
    psql_script(db, dir, "export.sql", &script);
}

/// `psql \copy` of the CSV files in `dir` into a fresh database `db`: into tables with
/// btic's schema (`keyed`) or into plain tables of the same columns. Only the loading
/// script is timed.
fn copy_load(db: &str, dir: &Path, keyed: bool) -> Duration {
    fresh_database(db);
    let mut ddl = schema_v1(Dialect::Postgres).join(";\n") + ";\n";
    let mut load = String::new();
    for t in TABLES {
        let target = if keyed {
            format!("\"{}\"", t.name)
        } else {
            ddl.push_str(&format!("CREATE TABLE plain_{0} (LIKE \"{0}\");\n", t.name));
            format!("plain_{}", t.name)
        };
        load.push_str(&format!(
            "\\copy {target} FROM '{}' CSV\n",
            dir.join(format!("{}.csv", t.name)).display()
        ));
    }
    psql_script(db, dir, "schema.sql", &ddl);
    let started = Instant::now();
    psql_script(db, dir, "load.sql", &load);
    let took = started.elapsed();
    psql("postgres", &format!("DROP DATABASE {db} WITH (FORCE)"));
    took
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

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Rounds of `btic import`, `\copy` into btic's schema and `\copy` into plain tables,
/// alternating; prints each and the medians' ratios.
fn postgres(n: u64, body: &Path, db: &str) {
    let csv = tempfile::tempdir_in(Path::new(env!("CARGO_MANIFEST_DIR")).join("target")).unwrap();
    let (mut ours, mut keyed, mut plain) = (Vec::new(), Vec::new(), Vec::new());
    let mut total_rows = 0;
    for round in 0..rounds() {
        if round > 0 {
            fresh_database(db);
        }
        let dir = tempfile::tempdir().unwrap();
        let url = format!("postgres://postgres@127.0.0.1:5432/{db}");
        let config = pipeline(dir.path(), &format!("type = \"postgres\"\nurl = \"{url}\""));
        let run = import(&config, body);
        report("PostgreSQL", n, run);
        let (rows, took, _) = run;
        total_rows = rows;
        ours.push(rows as f64 / took.as_secs_f64());
        if round == 0 {
            export_csv(db, csv.path());
        }
        psql("postgres", &format!("DROP DATABASE {db} WITH (FORCE)"));
        let rate = |took: Duration| total_rows as f64 / took.as_secs_f64();
        let took = copy_load(&format!("{db}_keyed"), csv.path(), true);
        println!(
            "psql \\copy into btic's schema: {:.1} s, {:.0} rows/s",
            took.as_secs_f64(),
            rate(took)
        );
        keyed.push(rate(took));
        let took = copy_load(&format!("{db}_plain"), csv.path(), false);
        println!(
            "psql \\copy into plain tables: {:.1} s, {:.0} rows/s",
            took.as_secs_f64(),
            rate(took)
        );
        plain.push(rate(took));
    }
    let rounds = ours.len();
    let (ours, keyed, plain) = (median(ours), median(keyed), median(plain));
    println!(
        "summary (medians of {rounds} rounds, {total_rows} rows): btic import {ours:.0} rows/s, psql \\copy into btic's schema {keyed:.0}, into plain tables {plain:.0}"
    );
    println!(
        "summary: ratio btic / \\copy into btic's schema {:.2} (goal >= 1.0), / \\copy into plain tables {:.2}",
        ours / keyed,
        ours / plain
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
        postgres(n, &body, &db);
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
