//! `btic inspect` on hand-written XML fixtures (`tests/fixtures/xml/*.xml`), compared
//! with golden files beside them (`*.golden`: stdout, then stderr and the exit code).
//! Run with `BTIC_BLESS=1` to rewrite the goldens after a deliberate change.

mod golden;
mod skip;

use std::path::Path;
use std::process::Command;

const FIXTURES: &str = "tests/fixtures/xml";

/// Runs `btic inspect` on `files` (relative to the crate root) and renders what it did.
fn inspect(files: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_btic"))
        .arg("inspect")
        .args(files)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "off")
        .output()
        .expect("running btic inspect");
    let mut text = String::from_utf8(output.stdout).expect("stdout is UTF-8");
    let stderr = String::from_utf8(output.stderr).expect("stderr is UTF-8");
    text.push_str(&format!(
        "--- exit {} ---\n{stderr}",
        output
            .status
            .code()
            .map_or("signal".into(), |c| c.to_string())
    ));
    text
}

#[test]
fn every_fixture_matches_its_golden_output() {
    let mut fixtures: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURES))
            .expect("reading the fixture directory")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".xml"))
            .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 14, "fixtures missing: {fixtures:?}");
    for name in fixtures {
        let xml = format!("{FIXTURES}/{name}");
        let golden = format!("{FIXTURES}/{}.golden", name.trim_end_matches(".xml"));
        golden::check(&golden, &inspect(&[&xml]));
    }
}

#[test]
fn several_files_print_in_order_and_a_bad_one_does_not_hide_the_others() {
    let out = inspect(&[
        "tests/fixtures/xml/namespace_none.xml",
        "tests/fixtures/xml/malformed.xml",
        "tests/fixtures/xml/does_not_exist.xml",
        "tests/fixtures/xml/namespace_sra.xml",
    ]);
    let (stdout, stderr) = out.split_once("--- exit ").unwrap();
    let lsids: Vec<&str> = stdout
        .lines()
        .map(|l| l.split('"').nth(3).unwrap())
        .collect();
    assert_eq!(
        lsids,
        [
            "e9e99aeb9ad54fb381634498502c5a1b",
            "good-1",
            "good-2",
            "e9e99aeb9ad54fb381634498502c5a1b"
        ]
    );
    assert!(stderr.starts_with("1 ---"), "{stderr}");
    assert!(
        stderr.contains("malformed.xml: parsing XML body at byte"),
        "{stderr}"
    );
    assert!(
        stderr.contains("does_not_exist.xml: opening file"),
        "{stderr}"
    );
}

#[test]
fn inspect_without_files_is_a_usage_error() {
    let status = Command::new(env!("CARGO_BIN_EXE_btic"))
        .arg("inspect")
        .output()
        .unwrap()
        .status;
    assert_eq!(status.code(), Some(2));
}

/// The sample bodies collected from public clients (see the API reference) must never
/// crash `inspect`: each ends with exit 0 or 1 and one stderr line per problem.
#[test]
fn the_reference_samples_never_crash_inspect() {
    let dir = Path::new("/work/shared/reference/appliance-samples");
    let Ok(entries) = std::fs::read_dir(dir) else {
        skip::opt_in(
            "the_reference_samples_never_crash_inspect",
            &format!("{} is not present on this machine", dir.display()),
        );
        return;
    };
    let mut count = 0;
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "xml") {
            continue;
        }
        count += 1;
        let output = Command::new(env!("CARGO_BIN_EXE_btic"))
            .arg("inspect")
            .arg(&path)
            .output()
            .unwrap();
        let code = output.status.code();
        assert!(matches!(code, Some(0 | 1)), "{}: {code:?}", path.display());
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            serde_json::from_str::<btic::model::Session>(line).unwrap();
        }
    }
    assert!(count > 0);
}

/// `btic inspect … | head`: the reader goes away after its first bytes; inspect stops
/// quietly, with status 0, instead of reporting the closed pipe as an error.
#[test]
fn a_reader_that_goes_away_ends_it_quietly() {
    use std::io::Read;
    use std::process::Stdio;
    let file = format!("{FIXTURES}/namespace_none.xml");
    // Far more output than a pipe holds, so the writer meets the closed end.
    let files: Vec<&str> = std::iter::repeat_n(file.as_str(), 3000).collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_btic"))
        .arg("inspect")
        .args(&files)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running btic inspect");
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    stdout.read_exact(&mut first).expect("the first bytes");
    drop(stdout);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stderr.is_empty(),
        "{:?}: {stderr}",
        output.status
    );
}

/// A body of many read chunks prints exactly what the library reads from it: the same
/// sessions as the same JSON, in order, and for a body cut off in the middle of a chunk
/// the same error.
#[test]
fn a_large_body_is_printed_whole_across_read_chunks() {
    use btic::simulator::render::{Namespace, session_list_of_size};
    let body = session_list_of_size(7, Namespace::BeyondTrust, 3 << 20);
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("whole.xml", &body[..]),
        ("truncated.xml", &body[..body.len() * 2 / 3 + 1000]),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let (mut stdout, mut problems) = (String::new(), Vec::new());
        for parsed in btic::parse::SessionReader::new(bytes) {
            match parsed {
                Ok(p) => stdout += &(serde_json::to_string(&p.session).unwrap() + "\n"),
                Err(e) => problems.push(format!("btic: {}: {e}\n", path.display())),
            }
        }
        assert!(stdout.lines().count() > 100, "{name}");
        let expected = match problems.len() {
            0 => format!("{stdout}--- exit 0 ---\n"),
            n => format!(
                "{stdout}--- exit 1 ---\n{}btic: {n} problem(s) while inspecting 1 file(s); the sessions that could be read were printed\n",
                problems.concat()
            ),
        };
        assert_eq!(inspect(&[path.to_str().unwrap()]), expected, "{name}");
        assert_eq!(problems.len(), usize::from(name == "truncated.xml"));
    }
}
/// A file that opens but cannot be read (a directory) is that file's problem, reported
/// with the reason, and the files after it are still printed.
#[test]
fn a_file_that_cannot_be_read_is_reported_and_the_rest_printed() {
    let out = inspect(&["tests/fixtures", "tests/fixtures/xml/namespace_none.xml"]);
    let (stdout, stderr) = out.split_once("--- exit ").unwrap();
    assert_eq!(stdout.lines().count(), 1, "{out}");
    assert!(
        stderr.starts_with("1 ---\n")
            && stderr.contains(
                "tests/fixtures: parsing XML body at byte 0, line 1: I/O error: Is a directory"
            ),
        "{stderr}"
    );
}
