//! The one way a test says it cannot run here. [`missing`]: something the suite needs
//! is not on this machine (PostgreSQL, promtool, aiosmtpd, curl, FUSE, a tmpfs mount,
//! `/proc`): the test prints the line the harness prints for an ignored test, with the
//! reason — `test NAME ... ignored, SKIPPED: why` — and returns; under `CI`, which
//! provides all of these, it fails instead. [`opt_in`]: a live test for something CI does
//! not have (a SQL Server, files outside the repository): skipped everywhere, CI
//! included.
#![allow(dead_code)]

use std::io::Write;

/// `test` cannot run because `why`: skipped here, a failure under `CI`.
pub fn missing(test: &str, why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} cannot run under CI: {why}"
    );
    say(test, why);
}

/// `test` is a live test that needs what `why` says: skipped unless it is given.
pub fn opt_in(test: &str, why: &str) {
    say(test, why);
}

/// Written to the real stdout, past the harness's capture, so the line shows in the
/// run's output beside the others.
fn say(test: &str, why: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "test {test} ... ignored, SKIPPED: {why}");
}
