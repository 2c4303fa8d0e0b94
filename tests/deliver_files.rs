//! The `files` destination against real temporary directories: names, formats, conflict
//! rules, redelivery, spool transfer, retention and errors.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use btic::config::{FileNameFormat, FilesDestination, OnConflict, SessionFormat};
use btic::deliver::files::{FilesError, FilesSink, Item, Outcome, STAGING_DIR, SpoolTransfer};
use btic::model::Session;
use btic::model::{Naming, Recording, ReportRoot};

const NS: &str = "http://www.beyondtrust.com/sra/namespaces/API/reporting";

fn destination(dir: &Path, format: Option<&str>, on_conflict: OnConflict) -> FilesDestination {
    FilesDestination {
        directory: dir.to_path_buf(),
        file_name_format: format.map(|f| FileNameFormat::parse(f).unwrap()),
        on_conflict,
        retention_count: None,
        format: SessionFormat::Xml,
    }
}

fn sink(dir: &Path, format: Option<&str>, on_conflict: OnConflict) -> FilesSink {
    FilesSink::open(&destination(dir, format, on_conflict)).unwrap()
}

fn naming(lsid: &str) -> Naming {
    Naming {
        host: "support.example.com".into(),
        lsid: lsid.into(),
        lseq: Some(8),
        external_key: None,
        session_type: "support".into(),
    }
}

fn session(lsid: &str) -> Session {
    Session {
        lsid: lsid.into(),
        session_type: "support".into(),
        lseq: Some(8),
        ..Session::default()
    }
}

/// Every file below `dir` (outside the staging directory), relative, sorted.
fn listing(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap() == STAGING_DIR {
                continue;
            }
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn staging_is_empty(dir: &Path) -> bool {
    fs::read_dir(dir.join(STAGING_DIR))
        .unwrap()
        .next()
        .is_none()
}

fn spool(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, content).unwrap();
    path
}

#[test]
fn default_names_follow_the_documented_format_per_kind() {
    let dir = tempfile::tempdir().unwrap();
    let s = sink(dir.path(), None, OnConflict::AppendNumber);
    let n = naming("e9e99aeb");
    let cases: [(Item<'_>, &str); 6] = [
        (
            Item::Session(&n),
            "support.example.com-support-e9e99aeb.xml",
        ),
        (
            Item::Recording(&n, Recording::Screen, "flv"),
            "support.example.com-support-e9e99aeb.flv",
        ),
        (
            Item::Recording(&n, Recording::ShowMyScreen(1), "flv"),
            "support.example.com-support-e9e99aeb-show_my_screen-1.flv",
        ),
        (
            Item::Recording(&n, Recording::CommandShell(0), "flv"),
            "support.example.com-support-e9e99aeb-command_shell-0.flv",
        ),
        (
            Item::Recording(&n, Recording::Presentation, "mp4"),
            "support.example.com-support-e9e99aeb.mp4",
        ),
        (
            Item::Backup("support.example.com"),
            "support.example.com-backup.nsb",
        ),
    ];
    for (item, expected) in cases {
        assert_eq!(
            s.file_name(&item).unwrap(),
            PathBuf::from(expected),
            "{item:?}"
        );
    }
}

#[test]
fn configured_formats_with_hostile_values_name_files_inside_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let long = "k".repeat(300);
    // (format, lsid, external key, expected relative path)
    let cases: &[(&str, &str, Option<&str>, &str)] = &[
        (
            "%SUPPORT_SITE_HOST%/%LSID%.%EXTENSION%",
            "abc",
            None,
            "support.example.com/abc.xml",
        ),
        (
            "%LSID%.%EXTENSION%",
            "../../etc/passwd",
            None,
            "_.._.._etc_passwd.xml",
        ),
        (
            "%LSID%/%EXTERNAL_KEY%.%EXTENSION%",
            "..",
            Some("a/b"),
            "__/a_b.xml",
        ),
        (
            "%EXTERNAL_KEY%-%LSID%.%EXTENSION%",
            "x",
            Some("C:\\x"),
            "C__x-x.xml",
        ),
        (
            "%EXTERNAL_KEY%-%LSID%.%EXTENSION%",
            "x",
            Some("nul\0byte"),
            "nul_byte-x.xml",
        ),
        (
            "%EXTERNAL_KEY%-%LSID%.%EXTENSION%",
            "x",
            Some(""),
            "_-x.xml",
        ),
        ("%EXTERNAL_KEY%-%LSID%.%EXTENSION%", "x", None, "_-x.xml"),
        (
            "%LSEQ%-%SESSION_TYPE%-%INSTANCE%.%EXTENSION%",
            "x",
            None,
            "8-support-_.xml",
        ),
        ("/%LSID%.%EXTENSION%", "x", None, "x.xml"),
    ];
    for (format, lsid, key, expected) in cases {
        let s = sink(dir.path(), Some(format), OnConflict::AppendNumber);
        let mut n = naming(lsid);
        n.external_key = key.map(str::to_string);
        assert_eq!(
            s.file_name(&Item::Session(&n)).unwrap(),
            PathBuf::from(expected),
            "{format} with lsid {lsid:?} and key {key:?}"
        );
        let d = s
            .deliver_session(&n, &session(lsid), b"<session/>", &ReportRoot::default())
            .unwrap();
        assert!(d.path.starts_with(dir.path()), "{}", d.path.display());
        assert!(d.path.is_file());
    }

    let s = sink(
        dir.path(),
        Some("%EXTERNAL_KEY%.%EXTENSION%"),
        OnConflict::AppendNumber,
    );
    let mut n = naming("x");
    n.external_key = Some(long);
    let d = s
        .deliver_session(&n, &session("x"), b"<session/>", &ReportRoot::default())
        .unwrap();
    let name = d.path.file_name().unwrap().to_str().unwrap();
    assert!(name.len() <= 240 && name.ends_with(".xml"), "{name}");
    assert!(d.path.is_file());
}

#[test]
fn session_xml_is_the_fragment_wrapped_with_its_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let s = sink(dir.path(), None, OnConflict::AppendNumber);
    let raw = b"<session lsid=\"e9\">\n    <session_type>support</session_type>\n</session>";
    let d = s
        .deliver_session(
            &naming("e9"),
            &session("e9"),
            raw,
            &ReportRoot::with_default_namespace(NS),
        )
        .unwrap();
    assert_eq!(d.outcome, Outcome::Written);
    let written = fs::read(&d.path).unwrap();
    let expected = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<session_list xmlns=\"{NS}\">\n{}\n</session_list>\n",
        std::str::from_utf8(raw).unwrap()
    );
    assert_eq!(String::from_utf8(written).unwrap(), expected);
    assert_eq!(d.bytes, expected.len() as u64);

    let d = s
        .deliver_session(
            &naming("e8"),
            &session("e8"),
            b"<session/>",
            &ReportRoot::default(),
        )
        .unwrap();
    let written = fs::read_to_string(&d.path).unwrap();
    assert!(
        written.contains("\n<session_list>\n<session/>\n</session_list>\n"),
        "{written}"
    );
    assert!(staging_is_empty(dir.path()));
}

#[test]
fn session_json_is_the_inspect_object() {
    let dir = tempfile::tempdir().unwrap();
    let mut dest = destination(dir.path(), None, OnConflict::AppendNumber);
    dest.format = SessionFormat::Json;
    let s = FilesSink::open(&dest).unwrap();
    let mut session = session("e9");
    session.external_key = Some("TICKET-1".into());
    let d = s
        .deliver_session(
            &naming("e9"),
            &session,
            b"<ignored/>",
            &ReportRoot::with_default_namespace(NS),
        )
        .unwrap();
    assert_eq!(
        d.path,
        dir.path().join("support.example.com-support-e9.json")
    );
    let text = fs::read_to_string(&d.path).unwrap();
    assert!(text.ends_with('\n'));
    let back: Session = serde_json::from_str(&text).unwrap();
    assert_eq!(back, session);
}

#[test]
fn append_number_counts_up_and_redelivery_of_identical_content_adds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = sink(
        dir.path(),
        Some("%LSID%.%EXTENSION%"),
        OnConflict::AppendNumber,
    );
    let n = naming("x");
    let deliver = |raw: &[u8]| {
        s.deliver_session(&n, &session("x"), raw, &ReportRoot::default())
            .unwrap()
    };

    let first = deliver(b"<session>one</session>");
    assert_eq!(
        (first.outcome, first.path.clone()),
        (Outcome::Written, dir.path().join("x.xml"))
    );
    let again = deliver(b"<session>one</session>");
    assert_eq!(
        (again.outcome, again.path),
        (Outcome::AlreadyPresent, first.path)
    );
    assert_eq!(listing(dir.path()), ["x.xml"]);

    let changed = deliver(b"<session>two</session>");
    assert_eq!(
        (changed.outcome, changed.path),
        (Outcome::Written, dir.path().join("x.1.xml"))
    );
    let third = deliver(b"<session>three</session>");
    assert_eq!(third.path, dir.path().join("x.2.xml"));
    // Same size as "one" and "two": the hash decides.
    let same_size = deliver(b"<session>owt</session>");
    assert_eq!(same_size.path, dir.path().join("x.3.xml"));
    for (raw, name) in [
        (&b"<session>one</session>"[..], "x.xml"),
        (b"<session>two</session>", "x.1.xml"),
        (b"<session>three</session>", "x.2.xml"),
    ] {
        let d = deliver(raw);
        assert_eq!(
            (d.outcome, d.path),
            (Outcome::AlreadyPresent, dir.path().join(name))
        );
    }
    assert_eq!(
        listing(dir.path()),
        ["x.1.xml", "x.2.xml", "x.3.xml", "x.xml"]
    );

    // The smallest free number, as the guide says: a gap is filled first.
    fs::remove_file(dir.path().join("x.1.xml")).unwrap();
    let refill = deliver(b"<session>four</session>");
    assert_eq!(refill.path, dir.path().join("x.1.xml"));
    assert!(staging_is_empty(dir.path()));
}

#[test]
fn overwrite_replaces_changed_content_and_leaves_identical_content_alone() {
    let dir = tempfile::tempdir().unwrap();
    let s = sink(
        dir.path(),
        Some("%LSID%.%EXTENSION%"),
        OnConflict::Overwrite,
    );
    let n = naming("x");
    let d = s
        .deliver_session(&n, &session("x"), b"<a/>", &ReportRoot::default())
        .unwrap();
    assert_eq!(d.outcome, Outcome::Written);
    let inode = fs::metadata(&d.path).unwrap().ino();
    let d = s
        .deliver_session(&n, &session("x"), b"<a/>", &ReportRoot::default())
        .unwrap();
    assert_eq!(d.outcome, Outcome::AlreadyPresent);
    assert_eq!(fs::metadata(&d.path).unwrap().ino(), inode);
    let d = s
        .deliver_session(&n, &session("x"), b"<b>longer</b>", &ReportRoot::default())
        .unwrap();
    assert_eq!(d.outcome, Outcome::Replaced);
    assert!(
        fs::read_to_string(&d.path)
            .unwrap()
            .contains("<b>longer</b>")
    );
    assert_eq!(listing(dir.path()), ["x.xml"]);
}

#[test]
fn skip_keeps_the_existing_file_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = sink(dir.path(), Some("%LSID%.%EXTENSION%"), OnConflict::Skip);
    let n = naming("x");
    let d = s
        .deliver_session(&n, &session("x"), b"<first/>", &ReportRoot::default())
        .unwrap();
    assert_eq!(d.outcome, Outcome::Written);
    let d = s
        .deliver_session(&n, &session("x"), b"<second/>", &ReportRoot::default())
        .unwrap();
    assert_eq!(d.outcome, Outcome::Skipped);
    assert!(fs::read_to_string(&d.path).unwrap().contains("<first/>"));
    assert_eq!(listing(dir.path()), ["x.xml"]);
    assert!(staging_is_empty(dir.path()));
}

#[test]
fn subdirectories_in_the_format_are_created() {
    let dir = tempfile::tempdir().unwrap();
    let s = sink(
        dir.path(),
        Some("%SUPPORT_SITE_HOST%/%SESSION_TYPE%/%LSID%-%INSTANCE%.%EXTENSION%"),
        OnConflict::AppendNumber,
    );
    let spools = tempfile::tempdir_in(dir.path()).unwrap();
    let rec = spool(spools.path(), "r", b"FLV recording");
    let n = naming("e9");
    s.deliver_recording(&n, Recording::CommandShell(2), "flv", &rec)
        .unwrap();
    s.deliver_session(&n, &session("e9"), b"<session/>", &ReportRoot::default())
        .unwrap();
    let files: Vec<String> = listing(dir.path())
        .into_iter()
        .filter(|f| f.starts_with("support.example.com"))
        .collect();
    assert_eq!(
        files,
        [
            "support.example.com/support/e9-2.flv",
            "support.example.com/support/e9-_.xml"
        ]
    );
}

#[test]
fn recordings_are_linked_on_the_same_file_system_and_copied_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let spools = tempfile::tempdir_in(dir.path()).unwrap();
    let content: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let rec = spool(spools.path(), "screen.spool", &content);
    let n = naming("e9");

    let linked = sink(dir.path(), None, OnConflict::AppendNumber);
    let d = linked
        .deliver_recording(&n, Recording::Screen, "flv", &rec)
        .unwrap();
    assert_eq!(d.outcome, Outcome::Written);
    assert_eq!(d.bytes, content.len() as u64);
    assert_eq!(
        fs::metadata(&d.path).unwrap().ino(),
        fs::metadata(&rec).unwrap().ino()
    );
    // Redelivery recognises its own link without reading anything.
    let again = linked
        .deliver_recording(&n, Recording::Screen, "flv", &rec)
        .unwrap();
    assert_eq!(
        (again.outcome, again.path),
        (Outcome::AlreadyPresent, d.path.clone())
    );

    let copied = sink(
        dir.path(),
        Some("copy-%LSID%.%EXTENSION%"),
        OnConflict::AppendNumber,
    )
    .with_spool_transfer(SpoolTransfer::Copy);
    let c = copied
        .deliver_recording(&n, Recording::Screen, "flv", &rec)
        .unwrap();
    assert_ne!(
        fs::metadata(&c.path).unwrap().ino(),
        fs::metadata(&rec).unwrap().ino()
    );
    assert_eq!(fs::read(&c.path).unwrap(), content);
    // A copy of the same content is recognised by size and hash.
    let again = copied
        .deliver_recording(&n, Recording::Screen, "flv", &rec)
        .unwrap();
    assert_eq!(again.outcome, Outcome::AlreadyPresent);

    // The spool is the caller's: untouched either way.
    assert_eq!(fs::read(&rec).unwrap(), content);
    assert!(staging_is_empty(dir.path()));
}

#[test]
fn a_missing_spool_is_a_permanent_error() {
    let dir = tempfile::tempdir().unwrap();
    let s = sink(dir.path(), None, OnConflict::AppendNumber);
    let err = s
        .deliver_recording(
            &naming("e9"),
            Recording::Screen,
            "flv",
            &dir.path().join("gone"),
        )
        .unwrap_err();
    assert!(matches!(err, FilesError::SpoolMissing { .. }), "{err}");
    assert!(!err.is_retryable());
}

#[test]
fn retention_keeps_exactly_the_newest_backups() {
    let dir = tempfile::tempdir().unwrap();
    let spools = tempfile::tempdir().unwrap();
    let mut dest = destination(dir.path(), None, OnConflict::AppendNumber);
    dest.retention_count = Some(3);
    let s = FilesSink::open(&dest).unwrap();
    // Another site's backups and other files are not this rule's to delete.
    fs::write(
        dir.path().join("other.example.com-backup.nsb"),
        b"other site",
    )
    .unwrap();
    fs::write(
        dir.path().join("support.example.com-backup.notes"),
        b"notes",
    )
    .unwrap();

    let mut delivered = Vec::new();
    for day in 0..7 {
        let backup = spool(
            spools.path(),
            &format!("b{day}"),
            format!("backup of day {day}").as_bytes(),
        );
        let d = s.deliver_backup("support.example.com", &backup).unwrap();
        assert_eq!(d.outcome, Outcome::Written, "day {day}");
        delivered.push(d);
    }
    assert_eq!(
        delivered[3].retired,
        [dir.path().join("support.example.com-backup.nsb")]
    );
    let mut kept: Vec<String> = Vec::new();
    for name in listing(dir.path()) {
        if name.starts_with("support.example.com-backup") && name.ends_with(".nsb") {
            kept.push(fs::read_to_string(dir.path().join(&name)).unwrap());
        }
    }
    kept.sort();
    assert_eq!(
        kept,
        ["backup of day 4", "backup of day 5", "backup of day 6"]
    );
    assert!(dir.path().join("other.example.com-backup.nsb").exists());
    assert!(dir.path().join("support.example.com-backup.notes").exists());

    // Redelivering the newest backup (gaps and all) stores nothing new and deletes nothing.
    let newest = spool(spools.path(), "again", b"backup of day 6");
    let d = s.deliver_backup("support.example.com", &newest).unwrap();
    assert_eq!(d.outcome, Outcome::AlreadyPresent);
    assert_eq!(d.path, delivered[6].path);
    assert_eq!(listing(dir.path()).len(), 5);
}

#[test]
fn a_missing_directory_is_created_when_its_parent_exists() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("archive");
    let s = sink(&target, None, OnConflict::AppendNumber);
    assert!(target.is_dir());
    s.probe().unwrap();
    assert_eq!(listing(&target), Vec::<String>::new());

    let err = FilesSink::open(&destination(
        &dir.path().join("no/such/archive"),
        None,
        OnConflict::AppendNumber,
    ))
    .unwrap_err();
    assert!(matches!(err, FilesError::DirectoryMissing { .. }), "{err}");
    assert!(err.is_retryable());
    assert!(
        err.to_string()
            .contains("does not exist and neither does its parent"),
        "{err}"
    );
}

#[test]
fn a_name_that_cannot_be_made_valid_is_permanent() {
    let dir = tempfile::tempdir().unwrap();
    let s = sink(dir.path(), Some("%LSID%/"), OnConflict::AppendNumber);
    let err = s
        .deliver_session(&naming("x"), &session("x"), b"<s/>", &ReportRoot::default())
        .unwrap_err();
    assert!(matches!(err, FilesError::InvalidName { .. }), "{err}");
    assert!(!err.is_retryable());

    // A directory where the file should go.
    let s = sink(
        dir.path(),
        Some("%LSID%.%EXTENSION%"),
        OnConflict::Overwrite,
    );
    fs::create_dir(dir.path().join("taken.xml")).unwrap();
    let err = s
        .deliver_session(
            &naming("taken"),
            &session("taken"),
            b"<s/>",
            &ReportRoot::default(),
        )
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(staging_is_empty(dir.path()));
}

/// `chattr +i` makes even root get "operation not permitted"; on file systems without
/// attributes the test says it is skipped.
#[test]
fn permission_denied_is_retryable_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let s = sink(
        dir.path(),
        Some("locked/%LSID%.%EXTENSION%"),
        OnConflict::AppendNumber,
    );
    let locked = dir.path().join("locked");
    fs::create_dir(&locked).unwrap();
    let immutable = std::process::Command::new("chattr")
        .arg("+i")
        .arg(&locked)
        .status();
    if !matches!(immutable, Ok(status) if status.success()) {
        println!(
            "SKIPPED: chattr +i is not available here, so permission errors cannot be provoked"
        );
        return;
    }
    let result = s.deliver_session(&naming("x"), &session("x"), b"<s/>", &ReportRoot::default());
    let _ = std::process::Command::new("chattr")
        .arg("-i")
        .arg(&locked)
        .status();
    let err = result.unwrap_err();
    assert!(matches!(err, FilesError::PermissionDenied { .. }), "{err}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains("permission denied"), "{err}");
    assert!(staging_is_empty(dir.path()));
}

fn pipeline_with_files_destination(dir: &Path, archive: &Path) -> PathBuf {
    let text = format!(
        r#"state_dir = "{state}"
[[site]]
name = "s"
host = "support.example.com"
client_id = "id"
client_secret = {{ env = "BTIC_TEST_UNSET_SECRET" }}
[[destination]]
name = "archive"
type = "files"
directory = "{archive}"
[[schedule]]
name = "hourly"
every = "1h"
[[schedule.transfer]]
site = "s"
destination = "archive"
data = ["sessions"]
"#,
        state = dir.join("state").display(),
        archive = archive.display()
    );
    let path = dir.join("pipeline.toml");
    fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_online_reports_whether_each_files_destination_is_writable() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    let config = pipeline_with_files_destination(dir.path(), &archive);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_btic"))
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "destination archive: {} is writable",
            archive.display()
        )),
        "{stdout}"
    );
    assert!(archive.is_dir());
    assert_eq!(
        fs::read_dir(&archive).unwrap().count(),
        1,
        "only the staging directory"
    );

    let missing = dir.path().join("no/such/archive");
    let config = pipeline_with_files_destination(dir.path(), &missing);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_btic"))
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("error: destination archive: destination directory"),
        "{stderr}"
    );
    assert!(
        stderr.contains("1 destination failed the check"),
        "{stderr}"
    );
}

#[test]
fn import_writes_one_file_per_session_and_importing_again_adds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    let config = pipeline_with_files_destination(dir.path(), &archive);
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sql/sessions.xml"
    );
    let import = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_btic"))
            .args(["import", "--config"])
            .arg(&config)
            .args(["--destination", "archive", fixture])
            .output()
            .unwrap()
    };
    let out = import();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("imported 2 sessions (2 new files)"),
        "{stdout}"
    );
    let files = listing(&archive);
    assert_eq!(
        files,
        [
            "support.example.com-support-0a1b2c3d4e5f60718293a4b5c6d7e8f9.xml",
            "support.example.com-support-3f2c9a7e5b1d4c8e9a0b1c2d3e4f5a6b.xml",
        ]
    );

    // Each file is a report of one session that parses back to the same session.
    let originals: Vec<_> = btic::parse::SessionReader::new(&fs::read(fixture).unwrap()[..])
        .map(|p| p.unwrap())
        .collect();
    for original in &originals {
        let name = format!("support.example.com-support-{}.xml", original.session.lsid);
        let text = fs::read(archive.join(name)).unwrap();
        assert!(text.starts_with(
            b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<session_list xmlns=\"https://www.beyondtrust.com/namespaces/API/reporting\">\n"
        ));
        let back: Vec<_> = btic::parse::SessionReader::new(&text[..])
            .map(|p| p.unwrap())
            .collect();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].session, original.session);
        assert_eq!(
            back[0].raw, original.raw,
            "the fragment is kept byte for byte"
        );
    }

    let out = import();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        stdout.contains("imported 2 sessions (0 new files)"),
        "{stdout}"
    );
    assert_eq!(listing(&archive), files);
}

#[test]
fn a_prefixed_report_gives_session_files_that_parse_to_the_same_session() {
    let report = br#"<?xml version="1.0" encoding="UTF-8"?>
<r:session_list xmlns:r="https://www.beyondtrust.com/namespaces/API/reporting">
<r:session lsid="e9e99aeb">
    <r:session_type>support</r:session_type>
    <r:lseq>8</r:lseq>
    <r:external_key>T-1</r:external_key>
</r:session>
</r:session_list>
"#;
    let dir = tempfile::tempdir().unwrap();
    let s = sink(dir.path(), None, OnConflict::AppendNumber);
    let mut reader = btic::parse::SessionReader::new(&report[..]);
    let parsed: Vec<_> = reader.by_ref().map(|p| p.unwrap()).collect();
    let root = reader.root().cloned().unwrap();
    assert_eq!(root.prefix.as_deref(), Some("r"));
    let host = "support.example.com";
    let d = s
        .deliver_session(
            &Naming::of(host, &parsed[0].session),
            &parsed[0].session,
            &parsed[0].raw,
            &root,
        )
        .unwrap();
    assert_eq!(
        d.path,
        dir.path().join("support.example.com-support-e9e99aeb.xml")
    );
    let text = fs::read(&d.path).unwrap();
    assert!(String::from_utf8_lossy(&text).contains(
        "<r:session_list xmlns:r=\"https://www.beyondtrust.com/namespaces/API/reporting\">"
    ));
    assert_every_element_is_in_the_reporting_namespace(&text);
    let back: Vec<_> = btic::parse::SessionReader::new(&text[..])
        .map(|p| p.unwrap())
        .collect();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].session, parsed[0].session);
    assert_eq!(back[0].raw, parsed[0].raw);
}

/// A namespace-aware reader binds every element of the file (no unknown prefix).
fn assert_every_element_is_in_the_reporting_namespace(xml: &[u8]) {
    use quick_xml::events::Event;
    use quick_xml::name::ResolveResult;
    let mut reader = quick_xml::NsReader::from_reader(xml);
    let mut buf = Vec::new();
    let mut elements = 0;
    loop {
        match reader.read_resolved_event_into(&mut buf).unwrap() {
            (ResolveResult::Bound(ns), Event::Start(_) | Event::Empty(_)) => {
                assert_eq!(
                    ns.as_ref(),
                    "https://www.beyondtrust.com/namespaces/API/reporting"
                );
                elements += 1;
            }
            (other, Event::Start(e) | Event::Empty(e)) => {
                panic!("{:?} is not in the namespace: {other:?}", e.name())
            }
            (_, Event::Eof) => break,
            _ => {}
        }
        buf.clear();
    }
    assert!(elements > 2);
}
