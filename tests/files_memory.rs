//! A large spool file is delivered with constant memory: the peak resident set
//! (`VmHWM` in /proc/self/status) of this test binary, which runs only this test, grows by
//! far less than the file's size. Covers the copy path (forced, as across file systems), the
//! link path and the redelivery check, which hashes both files streaming.
//!
//! Runs with 256 MiB in `cargo test`; `BTIC_FILES_1GB=1` uses 1 GiB and prints the figures.

mod skip;

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use btic::config::{FilesDestination, OnConflict, SessionFormat};
use btic::deliver::files::{FilesSink, Outcome, SpoolTransfer};
use btic::model::{Naming, Recording};

const MIB: u64 = 1 << 20;

/// Peak resident set size so far, in bytes; `None` where /proc is not available.
fn peak_rss() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Writes `size` bytes of varied content (not sparse: the copy has to move real data).
fn make_spool(path: &Path, size: u64) {
    let mut file = File::create(path).unwrap();
    let mut block: Vec<u8> = (0..MIB).map(|i| (i * 7 % 253) as u8).collect();
    for n in 0..size / MIB {
        block[0..8].copy_from_slice(&n.to_le_bytes());
        file.write_all(&block).unwrap();
    }
    file.sync_all().unwrap();
}

#[test]
fn a_large_spool_is_delivered_with_constant_memory() {
    let Some(before) = peak_rss() else {
        skip::missing(
            "a_large_spool_is_delivered_with_constant_memory",
            "/proc/self/status is not available, so memory cannot be measured",
        );
        return;
    };
    let size = if std::env::var_os("BTIC_FILES_1GB").is_some() {
        1024 * MIB
    } else {
        256 * MIB
    };
    let work = tempfile::tempdir().unwrap();
    let spool = work.path().join("recording.spool");
    make_spool(&spool, size);
    let after_spool = peak_rss().unwrap();

    let naming = Naming {
        host: "support.example.com".into(),
        lsid: "big".into(),
        session_type: "support".into(),
        ..Naming::default()
    };
    let destination = |name: &str| FilesDestination {
        directory: work.path().join(name),
        file_name_format: None,
        on_conflict: OnConflict::AppendNumber,
        retention_count: None,
        format: SessionFormat::Xml,
    };

    let copying = FilesSink::open(&destination("copied"))
        .unwrap()
        .with_spool_transfer(SpoolTransfer::Copy);
    let started = std::time::Instant::now();
    let d = copying
        .deliver_recording(&naming, Recording::Screen, "flv", &spool)
        .unwrap();
    let copy_time = started.elapsed();
    assert_eq!(d.outcome, Outcome::Written);
    assert_eq!(fs::metadata(&d.path).unwrap().len(), size);

    // Redelivery: same size, different inode, so both files are hashed in full.
    let started = std::time::Instant::now();
    let again = copying
        .deliver_recording(&naming, Recording::Screen, "flv", &spool)
        .unwrap();
    let compare_time = started.elapsed();
    assert_eq!(again.outcome, Outcome::AlreadyPresent);

    let linking = FilesSink::open(&destination("linked")).unwrap();
    let started = std::time::Instant::now();
    let linked = linking
        .deliver_recording(&naming, Recording::Screen, "flv", &spool)
        .unwrap();
    let link_time = started.elapsed();
    assert_eq!(fs::metadata(&linked.path).unwrap().len(), size);

    let after = peak_rss().unwrap();
    let growth = after.saturating_sub(after_spool.max(before));
    println!(
        "{} MiB spool: copy {:.2?} ({:.0} MB/s), redelivery check {:.2?}, link {:.2?}; peak RSS {} MiB before, {} MiB after, growth {} KiB",
        size / MIB,
        copy_time,
        size as f64 / 1e6 / copy_time.as_secs_f64(),
        compare_time,
        link_time,
        before / MIB,
        after / MIB,
        growth / 1024
    );
    assert!(
        growth < 16 * MIB,
        "peak memory grew by {} KiB delivering {} MiB",
        growth / 1024,
        size / MIB
    );
}
