//! `btic inspect` against what an administrator would write instead (P2 of the
//! performance goals): `benches/inspect_lxml.py`, lxml `iterparse` turning each session
//! into a dict printed as a JSON line. Both run as whole processes on the same generated
//! body (~100 MB of realistic sessions, `BTIC_BENCH_MB`), their output to `/dev/null`,
//! in alternating rounds (`BTIC_BENCH_ROUNDS`, default 5); the medians and their ratio
//! are printed. Needs python3 with lxml (`pip install lxml`); says so and stops without.
//!
//! Run: `cargo bench --bench inspect`. Figures are in `benches/README.md`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use btic::simulator::render::{Namespace, session_list_of_size};

fn number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `command` with its output discarded; how long it took.
fn timed(command: &mut Command) -> Duration {
    let started = Instant::now();
    let status = command
        .stdout(Stdio::null())
        .status()
        .expect("starting the command");
    assert!(status.success(), "{command:?}: {status}");
    started.elapsed()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/inspect_lxml.py");
    let lxml = Command::new("python3")
        .args(["-c", "import lxml"])
        .status()
        .is_ok_and(|s| s.success());
    if !lxml {
        println!("inspect: skipped, python3 with lxml is needed (pip install lxml)");
        return;
    }
    let mb = number("BTIC_BENCH_MB", 100);
    let rounds = number("BTIC_BENCH_ROUNDS", 5) as usize;
    let body = session_list_of_size(42, Namespace::BeyondTrust, mb << 20);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("body.xml");
    std::fs::write(&path, &body).unwrap();
    let mib = body.len() as f64 / f64::from(1 << 20);
    drop(body);
    let (mut btic, mut python) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        btic.push(timed(
            Command::new(env!("CARGO_BIN_EXE_btic"))
                .arg("inspect")
                .arg(&path),
        ));
        python.push(timed(Command::new("python3").arg(&script).arg(&path)));
    }
    let (btic, python) = (median(btic), median(python));
    println!(
        "inspect: {mib:.1} MiB; btic inspect {:.2} s ({:.1} MiB/s), lxml script {:.2} s ({:.1} MiB/s); ratio {:.1}x (medians of {rounds} alternating rounds, whole processes)",
        btic.as_secs_f64(),
        mib / btic.as_secs_f64(),
        python.as_secs_f64(),
        mib / python.as_secs_f64(),
        python.as_secs_f64() / btic.as_secs_f64()
    );
}
