//! Peak memory while streaming a large generated body through the session parser: the
//! body is rendered on the fly by the simulator (never held whole, never written to
//! disk) and the parser keeps one session at a time, so the process's peak resident
//! size (VmHWM) must grow by far less than the body.
//!
//! The default size is 100 MB (enough to show that nothing grows with the body, and
//! quick in a debug build); `BTIC_BIG=1` streams 1 GB instead (slow in a debug
//! build: run it with `cargo test --release --test parse_memory`).
//! This file holds a single test so that no other test shares the process's memory.

mod skip;

use std::io::BufReader;

use btic::parse::SessionReader;
use btic::simulator::render::{Namespace, SessionListReader};
use btic::simulator::sessions::{self, Sessions};

/// The process's peak resident set size in bytes, from /proc/self/status.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[test]
fn a_large_body_streams_through_the_parser_in_bounded_memory() {
    let Some(before) = peak_rss() else {
        skip::missing(
            "a_large_body_streams_through_the_parser_in_bounded_memory",
            "/proc/self/status has no VmHWM on this system",
        );
        return;
    };
    let big = std::env::var_os("BTIC_BIG").is_some_and(|v| v == "1");
    let size: u64 = if big { 1 << 30 } else { 100 << 20 };
    let body = SessionListReader::new(Namespace::BeyondTrust, Sessions::new(42, sessions::epoch()))
        .with_limit(size);
    let started = std::time::Instant::now();
    let mut count = 0u64;
    let mut raw_bytes = 0u64;
    for item in SessionReader::new(BufReader::with_capacity(64 * 1024, body)) {
        let parsed = item.expect("generated sessions parse");
        count += 1;
        raw_bytes += parsed.raw.len() as u64;
    }
    let after = peak_rss().unwrap();
    let growth = after.saturating_sub(before);
    println!(
        "streamed {} MB: {count} sessions, {} MB of session elements in {:.1?}; peak RSS {} MB before, {} MB after (growth {} MB)",
        size >> 20,
        raw_bytes >> 20,
        started.elapsed(),
        before >> 20,
        after >> 20,
        growth >> 20
    );
    assert!(
        raw_bytes >= size * 9 / 10,
        "the body was not streamed whole"
    );
    assert!(growth < 50 << 20, "peak RSS grew by {} MB", growth >> 20);
}
