//! `[log] file`: `btic run` writes its log there, not to stderr, as text or JSON lines
//! (`--log-format`) without colours, and removes rotated files older than `keep_days`
//! when it starts. Rotation at midnight itself is tested with a set clock in
//! `log_file`'s unit tests.

mod rig;

use std::path::Path;
use std::time::Duration;

use rig::{btic, eventually, free_port};

/// Runs `btic --log-format FORMAT run` until the log file says it runs, stops it with
/// SIGTERM, checks that it exited cleanly with nothing on stderr and no colour codes
/// in the file, and returns what this run added to the file.
async fn run_until_running(config: &Path, format: &str, log: &Path) -> String {
    let before = std::fs::read_to_string(log).unwrap_or_default().len();
    let child = btic()
        .args(["--log-format", format, "run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let running = eventually(Duration::from_secs(30), async || {
        std::fs::read_to_string(log).is_ok_and(|t| t[before..].contains("btic is running"))
    })
    .await;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    let text = std::fs::read_to_string(log).unwrap_or_default()[before..].to_string();
    assert!(running, "the log file never said the daemon runs:\n{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "stderr stays quiet"
    );
    assert!(text.contains("stopped"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in the file:\n{text}"
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_logs_text_or_json_lines_to_the_file_and_removes_rotated_files_past_keep_days() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let today = chrono::Utc::now().date_naive();
    let dated = |days: u64| {
        let day = today.checked_sub_days(chrono::Days::new(days)).unwrap();
        format!("btic.log.{}", day.format("%Y-%m-%d"))
    };
    // Within keep_days = 3: yesterday and three days ago; past it: four and forty days
    // ago (and a numbered one). Files that are not btic's rotated logs stay whatever
    // their names say.
    let kept = [dated(1), dated(3)];
    let removed = [dated(4), dated(40), format!("{}.1", dated(40))];
    let foreign = ["btic.log.keep-me", "other.log.2001-01-01"];
    for name in kept
        .iter()
        .chain(&removed)
        .map(String::as_str)
        .chain(foreign)
    {
        std::fs::write(logs.join(name), "old\n").unwrap();
    }
    let log = logs.join("btic.log");
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{}\"\n[log]\nfile = \"{}\"\nkeep_days = 3\n",
            dir.path().join("state").display(),
            free_port(),
            log.display()
        ),
    )
    .unwrap();
    let text = run_until_running(&config, "json", &log).await;
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
    }
    let mut names: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected: Vec<String> = kept
        .iter()
        .cloned()
        .chain(foreign.iter().map(|s| s.to_string()))
        .chain(["btic.log".to_string()])
        .collect();
    expected.sort();
    assert_eq!(names, expected);

    // Text lines go to the same file (appended: it is still today's).
    let text = run_until_running(&config, "text", &log).await;
    let line = text
        .lines()
        .find(|l| l.contains("btic is running"))
        .unwrap();
    assert!(line.contains(" INFO "), "{line}");
    assert!(
        serde_json::from_str::<serde_json::Value>(line).is_err(),
        "{line}"
    );
}
