//! Golden files: compares an actual output with the file's content; with `BTIC_BLESS=1`
//! in the environment, rewrites the file instead (then review the diff before
//! committing).

use std::path::Path;

/// Checks `actual` against the golden file at `path` (relative to the crate root).
pub fn check(path: &str, actual: &str) {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    if std::env::var_os("BTIC_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&full, actual).unwrap_or_else(|e| panic!("writing {path}: {e}"));
        return;
    }
    let expected = std::fs::read_to_string(&full).unwrap_or_else(|e| {
        panic!("reading golden file {path}: {e} (run with BTIC_BLESS=1 to create it)")
    });
    pretty_assertions::assert_eq!(
        expected,
        actual,
        "output differs from {path} (run with BTIC_BLESS=1 to accept the new output)"
    );
}
