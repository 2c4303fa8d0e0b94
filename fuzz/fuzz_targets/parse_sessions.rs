//! Any byte string through every parser: none may panic or hang, a session's `raw`
//! bytes are exactly the input at its `offset`, and nothing follows a fatal error.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut ended = false;
    for item in btic::parse::SessionReader::new(data) {
        assert!(!ended, "an item followed a fatal error");
        match item {
            Ok(parsed) => {
                let at = parsed.offset as usize;
                assert!(data[at..].starts_with(&parsed.raw), "raw bytes differ from the input");
                assert!(parsed.raw.starts_with(b"<"));
            }
            Err(e) => ended = e.is_fatal(),
        }
    }
    let _ = btic::parse::find_error(data);
    let _ = btic::parse::parse_listing(data);
    let _ = btic::parse::parse_api_info(data);
});
