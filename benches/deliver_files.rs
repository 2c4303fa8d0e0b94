//! The `files` destination: session files written per second (each with its fsyncs) and
//! MB/s for copying a recording spool. Figures go to benches/README.md.

use std::fs;
use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use btic::config::{FilesDestination, OnConflict, SessionFormat};
use btic::deliver::files::{FilesSink, Outcome, SpoolTransfer};
use btic::model::Session;
use btic::model::{Naming, Recording, ReportRoot};

const RECORDING_BYTES: u64 = 64 << 20;

fn destination(dir: &Path) -> FilesDestination {
    FilesDestination {
        directory: dir.to_path_buf(),
        file_name_format: None,
        on_conflict: OnConflict::AppendNumber,
        retention_count: None,
        format: SessionFormat::Xml,
    }
}

fn naming(lsid: String) -> Naming {
    Naming {
        host: "support.example.com".into(),
        lsid,
        lseq: Some(1),
        external_key: None,
        session_type: "support".into(),
    }
}

fn sessions(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let sink = FilesSink::open(&destination(dir.path())).unwrap();
    // About the size of a typical session element with a few dozen events.
    let raw = format!("<session lsid=\"x\">{}</session>", "<event/>".repeat(500));
    let session = Session::default();
    let mut group = c.benchmark_group("files");
    group.throughput(Throughput::Elements(1));
    let mut n = 0u64;
    group.bench_function("session_file_written", |b| {
        b.iter(|| {
            n += 1;
            let d = sink
                .deliver_session(
                    &naming(format!("{n:032x}")),
                    &session,
                    raw.as_bytes(),
                    &ReportRoot::default(),
                )
                .unwrap();
            assert_eq!(d.outcome, Outcome::Written);
        })
    });
    group.bench_function("session_redelivered_unchanged", |b| {
        let naming = naming(format!("{:032x}", 1));
        b.iter(|| {
            let d = sink
                .deliver_session(&naming, &session, raw.as_bytes(), &ReportRoot::default())
                .unwrap();
            assert_eq!(black_box(d.outcome), Outcome::AlreadyPresent);
        })
    });
    group.finish();
}

fn recordings(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("recording.spool");
    let mut file = fs::File::create(&spool).unwrap();
    let block: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    for _ in 0..RECORDING_BYTES >> 20 {
        file.write_all(&block).unwrap();
    }
    file.sync_all().unwrap();
    let copying = FilesSink::open(&destination(&dir.path().join("copied")))
        .unwrap()
        .with_spool_transfer(SpoolTransfer::Copy);
    let linking = FilesSink::open(&destination(&dir.path().join("linked"))).unwrap();

    let mut group = c.benchmark_group("files");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Bytes(RECORDING_BYTES));
    for (name, sink) in [("recording_copy", &copying), ("recording_link", &linking)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let naming = naming("rec".into());
                    let start = Instant::now();
                    let d = sink
                        .deliver_recording(&naming, Recording::Screen, "flv", &spool)
                        .unwrap();
                    total += start.elapsed();
                    // Keep the disk from filling: the next delivery writes the same name.
                    fs::remove_file(&d.path).unwrap();
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, sessions, recordings);
criterion_main!(benches);
