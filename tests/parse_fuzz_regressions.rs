//! Inputs the fuzz target (`fuzz/fuzz_targets/parse_sessions.rs`) once failed on, kept in
//! `tests/fixtures/fuzz/` and checked against the same properties: no panic, each
//! session's `raw` bytes are exactly the input at its `offset`, nothing after a fatal
//! error.

use std::path::Path;

use btic::parse::{SessionReader, find_error, parse_api_info, parse_listing};

fn check(data: &[u8]) {
    let mut ended = false;
    for item in SessionReader::new(data) {
        assert!(!ended, "an item followed a fatal error");
        match item {
            Ok(parsed) => {
                let at = parsed.offset as usize;
                assert!(
                    data[at..].starts_with(&parsed.raw),
                    "raw bytes differ from the input"
                );
                assert!(parsed.raw.starts_with(b"<"));
            }
            Err(e) => ended = e.is_fatal(),
        }
    }
    let _ = find_error(data);
    let _ = parse_listing(data);
    let _ = parse_api_info(data);
}

#[test]
fn inputs_the_fuzzer_found_keep_passing() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("reading tests/fixtures/fuzz") {
        let path = entry.unwrap().path();
        check(&std::fs::read(&path).unwrap());
        count += 1;
    }
    assert!(count > 0);
}
