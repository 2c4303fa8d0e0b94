//! The session parser against quick-xml's own limit, on one generated body (~100 MB of
//! realistic sessions from the simulator, rendered once into memory):
//!
//! - `raw_quick_xml_scan`: quick-xml's event reader over the body through the same
//!   `BufRead` path btic uses, reusing one buffer and looking at nothing — no allocation
//!   per event; the practical limit.
//! - `btic_sessions`: `SessionReader` turning the body into `Session`s (with each
//!   session's raw bytes), dropping each.
//!
//! The body is also written to `target/parse-bench-body.xml` for `benches/parse_lxml.py`.
//! Size: `BTIC_BENCH_MB` (default 100). Run: `cargo bench --bench parse`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quick_xml::Reader;
use quick_xml::events::Event;

use btic::parse::SessionReader;
use btic::simulator::render::{Namespace, session_list_of_size};

fn body() -> Vec<u8> {
    let mb: u64 = std::env::var("BTIC_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let body = session_list_of_size(42, Namespace::BeyondTrust, mb << 20);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/parse-bench-body.xml");
    if let Err(e) = std::fs::write(&path, &body) {
        eprintln!("could not write {}: {e}", path.display());
    }
    body
}

fn raw_scan(body: &[u8]) -> u64 {
    let mut reader = Reader::from_reader(body);
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut events = 0u64;
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Eof) => break,
            Ok(_) => events += 1,
            Err(e) => panic!("generated body is well-formed: {e}"),
        }
        buf.clear();
    }
    events
}

fn sessions(body: &[u8]) -> u64 {
    let mut count = 0;
    for item in SessionReader::new(body) {
        black_box(item.expect("generated sessions parse"));
        count += 1;
    }
    count
}

/// CPU time this thread has run, from /proc/thread-self/schedstat (nanoseconds): on a
/// machine shared with other work, wall-clock figures swing with the load, CPU time
/// much less.
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(Duration::from_nanos(
        stat.split_whitespace().next()?.parse().ok()?,
    ))
}

/// Best CPU-time throughput (MiB per CPU second) of three runs of `f` over `body`.
fn cpu_throughput(body: &[u8], f: impl Fn(&[u8]) -> u64) -> Option<f64> {
    let mut best: Option<Duration> = None;
    for _ in 0..3 {
        let before = thread_cpu()?;
        black_box(f(black_box(body)));
        let spent = thread_cpu()? - before;
        best = Some(best.map_or(spent, |b| b.min(spent)));
    }
    Some(body.len() as f64 / (1 << 20) as f64 / best?.as_secs_f64())
}

fn parse(c: &mut Criterion) {
    let body = body();
    if let (Some(raw), Some(btic)) = (
        cpu_throughput(&body, raw_scan),
        cpu_throughput(&body, sessions),
    ) {
        println!(
            "CPU-time throughput on {} MiB: raw quick-xml scan {raw:.0} MiB/s, btic sessions {btic:.0} MiB/s, ratio {:.2}",
            body.len() >> 20,
            btic / raw
        );
    }
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("raw_quick_xml_scan", |b| {
        b.iter(|| raw_scan(black_box(&body)))
    });
    group.bench_function("btic_sessions", |b| b.iter(|| sessions(black_box(&body))));
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
