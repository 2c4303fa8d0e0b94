//! `btic import` and the SQL part of `btic check` as real processes, against real
//! SQLite files and PostgreSQL databases.

mod skip;
mod sql_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sql_support::{Target, postgres, sqlite};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/sql/sessions.xml"
);
const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/golden/sql/fixture_rows.txt"
);

/// Writes a pipeline file whose destination `db` is the target, next to a files
/// destination `archive`.
fn pipeline(dir: &Path, target: &Target) -> PathBuf {
    let db = match target {
        Target::Postgres(db) => format!("type = \"postgres\"\nurl = \"{}\"", db.url()),
        Target::Sqlite(d) => format!(
            "type = \"sqlite\"\npath = \"{}\"",
            d.path().join("btic.db").display()
        ),
    };
    let text = format!(
        r#"state_dir = "{state}"

[[site]]
name = "support"
host = "support.example.com:8443"
client_id = "id"
client_secret = {{ env = "BTIC_TEST_UNUSED_SECRET" }}

[[destination]]
name = "db"
{db}
store_system_information = true

[[destination]]
name = "archive"
type = "files"
directory = "{files}"
"#,
        state = dir.join("state").display(),
        files = dir.join("files").display(),
    );
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn btic(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_btic"))
        .args(args)
        .output()
        .unwrap()
}

fn import(config: &Path, files: &[&str]) -> Output {
    let mut args = vec![
        "import",
        "--config",
        config.to_str().unwrap(),
        "--destination",
        "db",
    ];
    args.extend_from_slice(files);
    btic(&args)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn assert_ok(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

async fn fixture_gives_the_golden_rows(target: Target) {
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), &target);
    let out = import(&config, &[FIXTURE]);
    assert_ok(&out);
    assert_eq!(
        text(&out.stdout),
        "imported 2 sessions (35 rows) into destination \"db\" from 1 file: 0 skipped, 0 failed\n"
    );
    let dump = target.dump().await.join("\n") + "\n";
    if std::env::var_os("BTIC_BLESS").is_some() && !target.is_postgres() {
        std::fs::write(GOLDEN, &dump).unwrap();
    }
    pretty_assertions::assert_eq!(dump, std::fs::read_to_string(GOLDEN).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_import_of_the_fixture_writes_exactly_the_golden_rows_in_all_eight_tables() {
    fixture_gives_the_golden_rows(sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_import_of_the_fixture_writes_exactly_the_golden_rows_in_all_eight_tables() {
    let Some(target) = postgres("import_golden").await else {
        return;
    };
    fixture_gives_the_golden_rows(target).await;
}

async fn three_imports_then_a_changed_file(target: Target) {
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), &target);
    assert_ok(&import(&config, &[FIXTURE]));
    let counts = target.counts().await;
    let dump = target.dump().await;
    for _ in 0..2 {
        assert_ok(&import(&config, &[FIXTURE]));
        assert_eq!(target.counts().await, counts);
        assert_eq!(target.dump().await, dump);
    }
    // The session that was in progress has ended since.
    let changed = std::fs::read_to_string(FIXTURE)
        .unwrap()
        .replace(
            "<end_time></end_time>",
            "<end_time timestamp=\"1717416300\">2024-06-03T12:05:00+00:00</end_time>",
        )
        .replace(
            "</files>\n</event>\n",
            "</files>\n</event>\n<event timestamp=\"1717416300\" event_type=\"Session End\" ><performed_by type=\"system\">System</performed_by></event>\n",
        );
    let changed_path = dir.path().join("changed.xml");
    std::fs::write(&changed_path, changed).unwrap();
    assert_ok(&import(&config, &[changed_path.to_str().unwrap()]));
    let mut expected = counts.clone();
    expected[1] += 1; // the Session End event
    assert_eq!(target.counts().await, expected);
    let ended = target
        .query_strings("SELECT lsid FROM \"session\" WHERE end_time IS NOT NULL ORDER BY lsid")
        .await;
    assert_eq!(ended.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_importing_a_file_three_times_changes_nothing_and_an_ended_session_replaces_its_old_version()
 {
    three_imports_then_a_changed_file(sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_importing_a_file_three_times_changes_nothing_and_an_ended_session_replaces_its_old_version()
 {
    let Some(target) = postgres("import_three").await else {
        return;
    };
    three_imports_then_a_changed_file(target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_with_a_bad_value_is_skipped_and_the_rest_of_the_file_lands() {
    let target = sqlite();
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), &target);
    let bad = std::fs::read_to_string(FIXTURE)
        .unwrap()
        .replace("<lseq>4813</lseq>", "<lseq>not a number</lseq>");
    let bad_path = dir.path().join("bad.xml");
    std::fs::write(&bad_path, bad).unwrap();
    let out = import(&config, &[bad_path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("imported 1 sessions")
            && text(&out.stdout).contains("1 skipped, 0 failed"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("0a1b2c3d4e5f60718293a4b5c6d7e8f9"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(target.counts().await[0], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_file_is_reported_and_the_files_after_it_land() {
    let target = sqlite();
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), &target);
    let missing = dir.path().join("missing.xml");
    let out = import(&config, &[missing.to_str().unwrap(), FIXTURE, FIXTURE]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("imported 4 sessions (70 rows) into destination \"db\" from 3 files: 0 skipped, 0 failed"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains(&format!("error: reading {}", missing.display()))
            && text(&out.stderr).contains("1 file(s) unreadable"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(target.counts().await[0], 2);
}

#[test]
fn importing_into_an_unknown_destination_or_site_is_a_clear_usage_error() {
    // (Importing into a files destination works: tests/deliver_files.rs.)
    let target = sqlite();
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), &target);
    let c = config.to_str().unwrap();
    let out = btic(&["import", "--config", c, "--destination", "nope", FIXTURE]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no destination \"nope\""),
        "{}",
        text(&out.stderr)
    );
    let out = btic(&[
        "import",
        "--config",
        c,
        "--destination",
        "db",
        "--site",
        "other",
        FIXTURE,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no site \"other\""),
        "{}",
        text(&out.stderr)
    );
}

async fn check_probes(target: Target) {
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), &target);
    let out = btic(&["check", "--config", config.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("destination db: ")
            && stdout.contains("schema version 1, probe row written and rolled back"),
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    assert_eq!(target.counts().await, vec![0; 8], "the probe left nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_check_connects_migrates_and_rolls_back_a_probe_row() {
    check_probes(sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_check_connects_migrates_and_rolls_back_a_probe_row() {
    let Some(target) = postgres("cli_check").await else {
        return;
    };
    check_probes(target).await;
}

const PRA_CAPTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/captures/pra_access_session.xml"
);

/// The real PRA capture names its owner only as the session's `primary_rep` and
/// `primary_customer` (no flags under the representative or customer): the rows say
/// who was primary all the same, and the customer's display name is the one the
/// session gives.
async fn primaries_of_the_real_capture(target: Target) {
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), &target);
    assert_ok(&import(&config, &[PRA_CAPTURE]));
    let reps = target
        .query_strings(
            "SELECT gs_number, user_id, user_name, display_name, is_owner, is_primary, duration FROM representative",
        )
        .await;
    assert_eq!(
        reps,
        [["21", "1", "admin", "Admin", "1", "1", "901"].map(String::from)]
    );
    let customers = target
        .query_strings(
            "SELECT gs_number, display_name, user_name, host_name, public_ip, is_primary FROM customer",
        )
        .await;
    assert_eq!(
        customers,
        [[
            "22",
            "Sekoia.io integration",
            "Sekoia.io integration",
            "Windows2022",
            "4.231.237.19:61606",
            "1"
        ]
        .map(String::from)]
    );
    let sessions = target
        .query_strings(
            "SELECT lsid, lseq, duration, file_transfers, file_move_count, file_delete_count, jump_group_id, jump_group_name, jump_group_type, external_key FROM session",
        )
        .await;
    assert_eq!(
        sessions,
        [[
            "e9e99aeb9ad54fb381634498502c5a1b",
            "8",
            "00:15:02",
            "2",
            "0",
            "1",
            "1",
            "Sekoia.io integration",
            "shared",
            ""
        ]
        .map(String::from)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rows_of_the_real_pra_capture_say_who_was_primary() {
    primaries_of_the_real_capture(sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rows_of_the_real_pra_capture_say_who_was_primary() {
    let Some(target) = postgres("pra_capture_primaries").await else {
        return;
    };
    primaries_of_the_real_capture(target).await;
}
